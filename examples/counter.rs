//! Increment a counter with compare-and-swap, retrying when another writer wins.
//!
//! Run a cluster (`meridian cluster up`), then:
//! `cargo run --example counter -- [KEY]` (endpoints from MERIDIAN_ENDPOINTS, else
//! the local defaults). Start several at once: every increment lands exactly once.

use anyhow::{bail, Context};
use meridian::client::{Client, ClientConfig, ReadOptions};

/// Give up after this many lost races.
const MAX_CAS_ATTEMPTS: u32 = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let key = std::env::args().nth(1).unwrap_or_else(|| "counter".to_string());
    let client = Client::connect(ClientConfig::from_env()?)?;

    for attempt in 1..=MAX_CAS_ATTEMPTS {
        // Read the current value and version (version 0: the key does not exist yet).
        let current = client.get(key.as_str(), ReadOptions::linearizable()).await?;
        let (version, count) = match current.record {
            Some(r) => {
                let text = String::from_utf8(r.value).context("counter is not UTF-8")?;
                (r.version, text.parse::<u64>().context("counter is not a number")?)
            }
            None => (0, 0),
        };

        // Write count + 1 only if nobody wrote since we read. The client retries
        // transient failures itself, reusing one request id, so this is exactly-once.
        let next = count + 1;
        let written = client.cas(key.as_str(), version, next.to_string()).await?;
        if written.succeeded {
            println!("{key} = {next} (after {attempt} attempt(s))");
            return Ok(());
        }
        // Lost the race: someone else incremented first. Read again and retry.
    }
    bail!("gave up after {MAX_CAS_ATTEMPTS} conflicting attempts")
}

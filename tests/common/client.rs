//! Helpers for tests that drive the Rust client library ([`meridian::client`]) against
//! a real [`TestCluster`](super::TestCluster): seeded client configs with short
//! timings, and small readers of the state the assertions compare.
//!
//! Seeds: every test draws one seed ([`test_seed`]), prints it, and derives the
//! client's backoff jitter and any nemesis schedule from it, so a failing run can be
//! replayed with `MERIDIAN_TEST_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian::client::{Client, ClientConfig, RangeOptions, ReadOptions};
use meridian::cluster::LocalCluster;
use meridian::pb::v1 as pb;

/// Environment variable that fixes the seed of a test run.
pub const SEED_ENV: &str = "MERIDIAN_TEST_SEED";
/// Deadline of one attempt in [`test_config`], ms: long enough for a write that waits
/// out a new leader's lease, short enough that a dead or frozen node costs little.
pub const ATTEMPT_TIMEOUT_MS: u64 = 2_000;
/// Budget of one logical call in [`test_config`], ms.
pub const CALL_BUDGET_MS: u64 = 20_000;
/// Attempts per logical call in [`test_config`].
pub const MAX_ATTEMPTS: u32 = 40;
/// Most records one state read collects.
pub const MAX_STATE_RECORDS: usize = 10_000;

/// The seed of this test: `MERIDIAN_TEST_SEED` if set, else random; printed either way.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{SEED_ENV}={v:?} is not a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// The API address (`127.0.0.1:port`) of each node in `ids`.
pub fn api_addrs(cluster: &LocalCluster, ids: &[u64]) -> Vec<String> {
    ids.iter().map(|id| cluster.api_addr(*id).expect("api addr").to_string()).collect()
}

/// A client config for tests: the given endpoints, seeded jitter, 1 s connect timeout,
/// [`ATTEMPT_TIMEOUT_MS`] per attempt, [`CALL_BUDGET_MS`] per call, fast backoff
/// (20 ms doubling to 500 ms), [`MAX_ATTEMPTS`] attempts; breaker defaults.
pub fn test_config(endpoints: Vec<String>, seed: u64) -> ClientConfig {
    let mut c = ClientConfig::with_endpoints(endpoints);
    c.connect_timeout_ms = 1_000;
    c.request_timeout_ms = ATTEMPT_TIMEOUT_MS;
    c.retry.max_attempts = MAX_ATTEMPTS;
    c.retry.initial_backoff_ms = 20;
    c.retry.max_backoff_ms = 500;
    c.retry.max_elapsed_ms = CALL_BUDGET_MS;
    c.retry.jitter_seed = Some(seed);
    c
}

/// A client of every node of `cluster` with [`test_config`].
pub fn cluster_client(cluster: &LocalCluster, seed: u64) -> Client {
    Client::connect(test_config(api_addrs(cluster, &cluster.ids()), seed)).expect("client")
}

/// A client whose only endpoint is node `id` (writes and linearizable reads are then
/// forwarded by that node; serializable reads are served by it).
pub fn node_client(cluster: &LocalCluster, id: u64, seed: u64) -> Client {
    Client::connect(test_config(api_addrs(cluster, &[id]), seed)).expect("client")
}

/// Every record under `prefix`, by key, read with `read` (LINEARIZABLE or
/// SERIALIZABLE). Panics if the read fails or the range is larger than
/// [`MAX_STATE_RECORDS`].
pub async fn records_under(
    client: &Client,
    prefix: &str,
    read: ReadOptions,
) -> BTreeMap<Vec<u8>, pb::Record> {
    let options = RangeOptions {
        consistency: read.consistency,
        max_staleness: read.max_staleness,
        timeout: read.timeout,
        ..RangeOptions::prefix(prefix)
    };
    let all = client
        .range_all(options, MAX_STATE_RECORDS)
        .await
        .unwrap_or_else(|e| panic!("range over {prefix:?} failed: {e}"));
    assert!(!all.more, "more than {MAX_STATE_RECORDS} records under {prefix:?}");
    all.records.into_iter().map(|r| (r.key.clone(), r)).collect()
}

/// The node that served a read, from its response header.
pub fn served_by(header: Option<&pb::ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.node_id)
}

/// `elapsed` rounded to ms, for test output.
pub fn ms(elapsed: Duration) -> u128 {
    elapsed.as_millis()
}

/// Run a test body under an overall deadline; panics (keeping the cluster's logs, since
/// the cluster outlives the body) if it does not finish in time.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    body: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

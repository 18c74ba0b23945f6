//! Checker lag under a sustained write load: a 3-node cluster (release `meridian`
//! binaries), writers issuing Puts for a fixed time at a bounded rate, and the
//! checker (`meridian::checker::run`, in this process) subscribed to all three
//! replicas. Reports writes/s, events checked and the lag from each event's HLC
//! (stamped when the write was proposed) to the moment the checker checked it:
//! p50 / p99 / max.
//!
//! `cargo bench --bench checker_lag` (bounded: [`LOAD_DURATION`] of load, at most
//! [`MAX_WRITES`] writes, then at most [`DRAIN_DEADLINE`] for the checker to finish).
//! `CHECKER_LAG_SECS` and `CHECKER_LAG_WRITERS` override the duration and writer count.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::checker::run::StopAt;
use meridian::checker::{run, CheckOptions};
use meridian::client::{Client, ClientConfig};
use meridian::cluster::testing::{TestCluster, TestOptions};

/// Default load duration.
const LOAD_DURATION: Duration = Duration::from_secs(20);
/// Default concurrent writers.
const WRITERS: usize = 16;
/// Writes at most, over all writers.
const MAX_WRITES: u64 = 200_000;
/// Keys written (round robin per writer).
const KEYS: u64 = 1_000;
/// Longest wait for the checker to check everything after the load.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: skip the load there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("checker_lag: skipped (run it with `cargo bench --bench checker_lag`)");
        return Ok(());
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let duration = Duration::from_secs(env_or("CHECKER_LAG_SECS", LOAD_DURATION.as_secs()));
    let writers = env_or("CHECKER_LAG_WRITERS", WRITERS);
    let cluster = TestCluster::start(3, TestOptions::new(env!("CARGO_BIN_EXE_meridian"))).await?;
    let endpoints: Vec<String> = cluster.endpoints().into_values().collect();
    let state = tempfile::tempdir()?;
    let options = CheckOptions {
        findings_stdout: false,
        stop: StopAt::Never,
        ..CheckOptions::new(endpoints.clone(), state.path().to_path_buf())
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let checker = tokio::spawn(run(options, async move {
        let _ = stop_rx.await;
    }));

    let client = Client::connect(ClientConfig::with_endpoints(endpoints.clone()))?;
    let written = Arc::new(AtomicU64::new(0));
    let last_revision = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + duration;
    let mut tasks = Vec::new();
    for w in 0..writers as u64 {
        let (client, written, last) = (client.clone(), written.clone(), last_revision.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop_at && written.load(Ordering::Relaxed) < MAX_WRITES {
                let key = format!("bench/{}", (w * 7919 + i) % KEYS);
                if let Ok(resp) = client.put(key, i.to_string()).await {
                    written.fetch_add(1, Ordering::Relaxed);
                    let revision = resp.record.map_or(0, |r| r.revision);
                    last.fetch_max(revision, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let writes = written.load(Ordering::Relaxed);
    // Let the checker finish: poll its saved state until every replica's cursor has
    // passed the last acknowledged write (bounded by DRAIN_DEADLINE).
    let last = last_revision.load(Ordering::Relaxed);
    let state_dir = meridian::checker::state::StateDir::open(state.path())?;
    let drain_end = Instant::now() + DRAIN_DEADLINE;
    let mut drained = false;
    while Instant::now() < drain_end {
        if let Some(s) = state_dir.load()? {
            let caught = s.replicas.values().filter(|t| t.last.is_some_and(|p| p.revision >= last));
            if caught.count() == endpoints.len() {
                drained = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval, deadline-bound
    }
    let _ = stop_tx.send(());
    let outcome = checker.await??;
    println!(
        "checker_lag: {writes} writes in {load_secs:.1} s ({:.0} writes/s, {writers} writers, 3 \
         replicas); checked {} events (expected {}), findings {}; lag p50 {} ms, p99 {} ms, max \
         {} ms{}",
        writes as f64 / load_secs,
        outcome.events,
        writes * 3,
        outcome.total_findings(),
        outcome.lag.p50_ms,
        outcome.lag.p99_ms,
        outcome.lag.max_ms,
        if drained { "" } else { " (the checker did not catch up within the drain deadline)" }
    );
    Ok(())
}

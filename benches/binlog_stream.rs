//! Binlog delivery benchmark on a real 3-node cluster (release build:
//! `cargo bench --bench binlog_stream`).
//!
//! For 1 and then 4 subscribers on the leader:
//! - live: subscribers tail the binlog while [`WRITERS`] concurrent clients write
//!   [`LIVE_WRITES`] keys; reported: write rate and events/s delivered per subscriber
//!   and in total (each subscriber must receive every write);
//! - replay: subscribers read the whole retained binlog from the oldest revision with
//!   no writes running (pure delivery rate).
//!
//! Every phase is bounded by [`PHASE_DEADLINE`]; the cluster is killed on exit. Under
//! `cargo test --all-targets` (no `--bench` argument) it does nothing.
#![allow(missing_docs, clippy::unwrap_used)] // a bench binary: panics are its error path

use std::time::{Duration, Instant};

use meridian::client::{Client, ClientConfig, SubscribeOptions};
use meridian::cluster::testing::{TestCluster, TestOptions};

/// Concurrent writers of the live phase.
const WRITERS: usize = 16;
/// Writes per live phase.
const LIVE_WRITES: u64 = 4_000;
/// Longest one phase may take.
const PHASE_DEADLINE: Duration = Duration::from_secs(120);
/// Value size of every write, bytes.
const VALUE_BYTES: usize = 100;

async fn subscriber(client: Client, addr: String, from: u64, until: u64) -> (u64, Duration) {
    let options = SubscribeOptions { from_revision: from, ..Default::default() };
    let mut sub = client.subscribe(&addr, options).await.unwrap();
    let started = Instant::now();
    let mut events = 0u64;
    let mut last = 0u64;
    while last < until {
        assert!(started.elapsed() < PHASE_DEADLINE, "subscriber did not reach {until}");
        let msg = sub.next().await.unwrap().unwrap();
        if let Some(e) = msg.events.last() {
            last = e.revision;
            sub.ack(e.revision, e.index).await.unwrap();
        }
        events += msg.events.len() as u64;
    }
    (events, started.elapsed())
}

async fn write_load(client: Client, writes: u64, tag: &str) -> (u64, Duration) {
    let started = Instant::now();
    let per_writer = writes / WRITERS as u64;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let c = client.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..per_writer {
                if started.elapsed() > PHASE_DEADLINE {
                    break;
                }
                let key = format!("{tag}/{w}/{i}");
                let r = c.put(key, vec![b'v'; VALUE_BYTES]).await.unwrap();
                last = last.max(r.header.map_or(0, |h| h.revision));
            }
            last
        }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.unwrap());
    }
    (last, started.elapsed())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: skip the
    // minutes-long cluster run there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("binlog_stream: skipped (run it with `cargo bench --bench binlog_stream`)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut options = TestOptions::new(env!("CARGO_BIN_EXE_meridian"));
        options.name = "bench-binlog".into();
        let cluster = TestCluster::start(3, options).await.unwrap();
        let leader = cluster.leader().await.unwrap();
        let addr = cluster.api_addr(leader).unwrap().to_string();
        let endpoints: Vec<String> =
            cluster.ids().iter().map(|id| cluster.api_addr(*id).unwrap().to_string()).collect();
        let client = Client::connect(ClientConfig::with_endpoints(endpoints)).unwrap();
        println!("binlog delivery, 3 nodes, subscribers on the leader, {VALUE_BYTES} B values");
        for subs in [1usize, 4] {
            let start = cluster.status(leader).await.unwrap().applied_index + 1;
            // Each subscriber runs until it has seen the last write's revision; the
            // target is only known when the writers finish, so they get a generous
            // bound first and the real one through a watch.
            let (tx, rx) = tokio::sync::watch::channel(u64::MAX);
            let mut handles = Vec::new();
            for _ in 0..subs {
                let (c, a, mut rx) = (client.clone(), addr.clone(), rx.clone());
                handles.push(tokio::spawn(async move {
                    let options = SubscribeOptions { from_revision: start, ..Default::default() };
                    let mut sub = c.subscribe(&a, options).await.unwrap();
                    let mut first: Option<Instant> = None;
                    let (mut events, mut last) = (0u64, 0u64);
                    let began = Instant::now();
                    loop {
                        let until = *rx.borrow_and_update();
                        if last >= until {
                            break;
                        }
                        assert!(began.elapsed() < PHASE_DEADLINE, "live subscriber stalled");
                        let msg = tokio::select! {
                            m = sub.next() => m.unwrap().unwrap(),
                            _ = rx.changed() => continue,
                        };
                        if let Some(e) = msg.events.last() {
                            first.get_or_insert_with(Instant::now);
                            last = e.revision;
                            sub.ack(e.revision, e.index).await.unwrap();
                        }
                        events += msg.events.len() as u64;
                    }
                    (events, first.map_or(Duration::ZERO, |f| f.elapsed()))
                }));
            }
            let (last, took) = write_load(client.clone(), LIVE_WRITES, &format!("live{subs}")).await;
            tx.send(last).unwrap();
            let writes = LIVE_WRITES / WRITERS as u64 * WRITERS as u64;
            let mut total = 0.0;
            for h in handles {
                let (events, elapsed) = h.await.unwrap();
                assert_eq!(events, writes, "every write delivered to every subscriber");
                total += events as f64 / elapsed.as_secs_f64();
            }
            println!(
                "live   subscribers={subs}: writes {:.0}/s; delivered {:.0} events/s per subscriber, {:.0} events/s total",
                writes as f64 / took.as_secs_f64(),
                total / subs as f64,
                total
            );
            let until = last;
            let started = Instant::now();
            let readers: Vec<_> = (0..subs)
                .map(|_| tokio::spawn(subscriber(client.clone(), addr.clone(), 0, until)))
                .collect();
            let mut events = 0u64;
            for r in readers {
                events += r.await.unwrap().0;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replay subscribers={subs}: {events} events in {secs:.2} s = {:.0} events/s total, {:.0} per subscriber",
                events as f64 / secs,
                events as f64 / secs / subs as f64
            );
        }
    });
}

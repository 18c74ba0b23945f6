//! Read and write latency from each region of cluster/three-regions.toml: put,
//! linearizable get (through the leader), follower linearizable get (read index from
//! the leader, data served by the nearest replica) and bounded-staleness get (served
//! by the nearest replica from a freshness proof), p50/p99 per region, as a Markdown
//! table on stdout.
//!
//! `cargo bench --bench regions` (release build). Real node processes with the fault
//! proxy adding the inter-region latency; clients pinned to a region reach every node
//! through that region's client links. Bounded: [`WORKERS`] x [`OPS_PER_WORKER`]
//! operations per row, each with a deadline.
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meridian::client::{Client, ClientConfig, PutOptions, ReadOptions};
use meridian::cluster::manifest::Manifest;
use meridian::cluster::testing::{TestCluster, TestOptions};

/// Concurrent workers per row.
const WORKERS: usize = 4;
/// Operations per worker per row.
const OPS_PER_WORKER: usize = 50;
/// Staleness bound of the bounded-staleness reads.
const BOUND: Duration = Duration::from_millis(1_000);
/// Longest the leader may take to settle in the preferred region.
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Op {
    Put,
    Linearizable,
    FollowerLinearizable,
    Bounded,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Linearizable => "get linearizable (leader)",
            Op::FollowerLinearizable => "get linearizable (follower read)",
            Op::Bounded => "get bounded-staleness 1 s",
        }
    }
}

fn client(cluster: &TestCluster, region: &str, follower_reads: bool) -> anyhow::Result<Client> {
    let mut endpoints = Vec::new();
    for id in cluster.ids() {
        endpoints.push(cluster.region_client_addr(region, id)?.to_string());
    }
    let mut config = ClientConfig::with_endpoints(endpoints);
    config.region = Some(region.to_string());
    config.follower_reads = follower_reads;
    Ok(Client::connect(config)?)
}

async fn row(cluster: &TestCluster, region: &str, op: Op) -> anyhow::Result<Histogram<u64>> {
    let c = client(cluster, region, matches!(op, Op::FollowerLinearizable))?;
    c.probe().await;
    let workers = (0..WORKERS).map(|w| {
        let c = c.clone();
        async move {
            let mut h = Histogram::<u64>::new(3)?;
            for i in 0..OPS_PER_WORKER {
                let key = format!("bench/{region}/{w}/{}", i % 8);
                let started = Instant::now();
                match op {
                    Op::Put => {
                        c.put_with(key, "x".repeat(100), PutOptions::default()).await?;
                    }
                    Op::Linearizable | Op::FollowerLinearizable => {
                        c.get(key, ReadOptions::linearizable()).await?;
                    }
                    Op::Bounded => {
                        c.get(key, ReadOptions::bounded(BOUND)).await?;
                    }
                }
                h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            }
            anyhow::Ok(h)
        }
    });
    let mut total = Histogram::<u64>::new(3)?;
    for h in futures::future::try_join_all(workers).await? {
        total.add(h)?;
    }
    Ok(total)
}

async fn run() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/three-regions.toml");
    let layout = Manifest::load(&path)?;
    let regions = layout.regions();
    let mut options = TestOptions::new(env!("CARGO_BIN_EXE_meridian"));
    options.name = "bench-regions".into();
    let cluster = TestCluster::start_layout(layout, options).await?;
    let deadline = Instant::now() + SETTLE;
    let leader = loop {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let region = cluster.manifest().node(leader).map(|n| n.region.clone());
        if region.as_deref() == Some("us-east") {
            break leader;
        }
        anyhow::ensure!(Instant::now() < deadline, "leader did not settle in us-east");
        tokio::time::sleep(Duration::from_millis(200)).await; // poll interval
    };
    println!("leader: node {leader} (us-east); {WORKERS} workers x {OPS_PER_WORKER} ops per row");
    println!();
    println!("| client region | operation | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for region in &regions {
        for op in [Op::Put, Op::Linearizable, Op::FollowerLinearizable, Op::Bounded] {
            let h = row(&cluster, region, op).await?;
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!("| {region} | {} | {:.1} | {:.1} |", op.name(), ms(0.5), ms(0.99));
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs benches with --bench absent: skip the slow run then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("regions: run with `cargo bench --bench regions`");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

//! Multi-region behaviour on cluster/three-regions.toml (5 voters: 2 us-east, 2
//! eu-west, 1 ap-south; one-way 40/110/80 ms between regions, applied by the fault
//! proxy to every peer link and to the client links of a client pinned to a region).
//!
//! - Bounded-staleness reads from the far region (ap-south) are served by the local
//!   replica, and never miss a write acknowledged more than the bound before the read
//!   started.
//! - Follower linearizable reads from ap-south never miss a write acknowledged before
//!   the read started.
//! - The leader settles in the preferred region (us-east), comes back there after a
//!   TransferLeader away, and then stays.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::client::test_config;
use common::*;
use meridian::client::{Client, PutOptions, ReadOptions};
use meridian::cluster::manifest::Manifest;
use meridian::cluster::testing::TestCluster;
use meridian::cluster::LocalCluster;

/// The bound of the bounded-staleness reads: comfortably above the best provable
/// staleness in ap-south (one ap-south <-> us-east round trip, 220 ms, plus the
/// leader's quorum round and the proof interval).
const BOUND: Duration = Duration::from_millis(1_500);
/// Longest the leader may take to settle in the preferred region.
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(40);
/// Writes (and read pairs) of the staleness test.
const ROUNDS: usize = 40;

fn three_regions() -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/three-regions.toml");
    Manifest::load(&path).expect("three-regions.toml")
}

async fn start_three_regions() -> TestCluster {
    TestCluster::start_layout(three_regions(), options()).await.expect("three-region cluster")
}

/// A client pinned to `region`: it reaches every node through that region's links.
fn regional_client(cluster: &LocalCluster, region: &str, follower_reads: bool) -> Client {
    let endpoints = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.region_client_addr(region, id).expect("client link").to_string())
        .collect();
    let mut config = test_config(endpoints, 7);
    config.region = Some(region.to_string());
    config.follower_reads = follower_reads;
    Client::connect(config).expect("client")
}

fn region_of(cluster: &LocalCluster, id: u64) -> String {
    cluster.manifest().node(id).map(|n| n.region.clone()).unwrap_or_default()
}

/// Poll until every node agrees on a leader in `region`; returns it.
async fn leader_in(cluster: &LocalCluster, region: &str, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(leader) = cluster.wait_for_leader(Duration::from_secs(5)).await {
            if region_of(cluster, leader) == region {
                return leader;
            }
        }
        assert!(Instant::now() < deadline, "no leader in {region} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval, deadline-bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_region_reads_are_local_when_bounded_and_never_stale() {
    let cluster = start_three_regions().await;
    leader_in(&cluster, "us-east", PLACEMENT_DEADLINE).await;
    let writer = regional_client(&cluster, "us-east", false);
    let far = regional_client(&cluster, "ap-south", false);
    let far_follower = regional_client(&cluster, "ap-south", true);
    // (acknowledged at, version) of every write, in order.
    let mut acked: Vec<(Instant, u64)> = Vec::new();
    let mut bounded_latencies = Vec::new();
    let latest_before = |acked: &[(Instant, u64)], t: Instant| {
        acked.iter().filter(|(at, _)| *at <= t).map(|(_, v)| *v).max().unwrap_or(0)
    };
    for round in 0..ROUNDS {
        let value = format!("v{round}");
        let put = writer.put_with("fresh", value, PutOptions::default()).await.expect("put");
        acked.push((Instant::now(), put.record.expect("record").version));

        let started = Instant::now();
        let got = far.get("fresh", ReadOptions::bounded(BOUND)).await.expect("bounded get");
        bounded_latencies.push(started.elapsed());
        let header = got.header.expect("header");
        assert_eq!(header.node_id, 5, "the ap-south replica must serve ap-south reads");
        assert!(header.revision > 0 && header.hlc.is_some(), "reads carry revision and HLC");
        let version = got.record.map_or(0, |r| r.version);
        let required = started.checked_sub(BOUND).map_or(0, |t| latest_before(&acked, t));
        assert!(
            version >= required,
            "round {round}: bounded read returned version {version}, but version {required} \
             was acknowledged more than {BOUND:?} before the read started"
        );

        let started = Instant::now();
        let got = far_follower.get("fresh", ReadOptions::linearizable()).await.expect("lin get");
        assert_eq!(got.header.expect("header").node_id, 5, "follower read served in ap-south");
        let version = got.record.map_or(0, |r| r.version);
        let required = latest_before(&acked, started);
        assert!(
            version >= required,
            "round {round}: follower linearizable read returned version {version} after \
             version {required} was acknowledged"
        );
    }
    bounded_latencies.sort();
    let median = bounded_latencies[bounded_latencies.len() / 2];
    // Not a speed assertion: the leader is at least 220 ms (one round trip) away, so a
    // median under half of that can only come from reads served in the region.
    assert!(
        median < Duration::from_millis(110),
        "bounded-staleness reads in ap-south were not served locally (median {median:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_returns_to_the_preferred_region_and_stays() {
    let cluster = start_three_regions().await;
    let first = leader_in(&cluster, "us-east", PLACEMENT_DEADLINE).await;
    let admin = regional_client(&cluster, "us-east", false);
    // Move leadership away on purpose: to eu-west.
    admin.transfer_leader(3, None).await.expect("transfer to node 3");
    let moved = leader_in(&cluster, "eu-west", PLACEMENT_DEADLINE).await;
    assert_eq!(moved, 3, "TransferLeader(3) made node {moved} leader");
    // The placement rule brings it back to us-east once node 3 has led for its tenure.
    let back = leader_in(&cluster, "us-east", PLACEMENT_DEADLINE).await;
    // Stable: the same leader for a while (no back-and-forth).
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let leader = cluster.wait_for_leader(Duration::from_secs(5)).await.expect("leader");
        assert_eq!(leader, back, "leadership moved again after settling (first leader {first})");
        tokio::time::sleep(Duration::from_millis(200)).await; // observation interval
    }
}

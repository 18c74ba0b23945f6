//! Membership changes under load: a voter is replaced and a learner added and removed
//! while a client writes continuously. No acknowledged write is lost, the writes never
//! stall longer than an election, removed nodes stop serving, and TransferLeader moves
//! leadership within a bounded time and it stays there.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{api_addrs, test_config};
use common::*;
use meridian::client::{Client, PutOptions, ReadOptions};
use meridian::cluster::testing::TestCluster;

/// Most writes the background writer makes (a bound, not a target).
const MAX_WRITES: usize = 20_000;
/// Writes acknowledged between two membership steps.
const WRITES_BETWEEN_STEPS: usize = 30;
/// Longest the background writer runs.
const MAX_WRITE_TIME: Duration = Duration::from_secs(90);
/// The longest pause between two acknowledged writes that counts as "no unavailability
/// beyond an election" (test election timeouts are 300-600 ms; this leaves room for a
/// loaded CI machine).
const MAX_STALL: Duration = Duration::from_secs(5);

fn member(cluster: &TestCluster, id: u64) -> pb::Member {
    pb::Member {
        id,
        api_addr: cluster.api_addr(id).expect("api").to_string(),
        raft_addr: cluster.manifest().node(id).expect("node").raft_addr.to_string(),
        region: "local".into(),
        voter: false,
    }
}

/// Poll node `id` until it refuses requests with FAILED_PRECONDITION.
async fn stops_serving(cluster: &TestCluster, id: u64) {
    let kv = cluster.kv(id).expect("kv");
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    loop {
        let mut client = kv.clone();
        let req = pb::GetRequest {
            key: b"k".to_vec(),
            consistency: pb::Consistency::Serializable as i32,
            max_staleness_ms: 0,
        };
        match client.get(req).await {
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                assert!(s.message().contains("removed"), "{}", s.message());
                return;
            }
            other => {
                assert!(Instant::now() < deadline, "removed node {id} still serves: {other:?}")
            }
        }
        tokio::time::sleep(RETRY_INTERVAL).await; // poll interval, deadline-bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voter_replacement_and_learner_churn_under_load_lose_no_write() {
    let mut opts = options();
    opts.standby = vec![4, 5];
    let cluster = TestCluster::start(5, opts).await.expect("cluster");
    let all = api_addrs(&cluster, &cluster.ids());
    let writer = Client::connect(test_config(all.clone(), 11)).expect("writer");
    let admin = Client::connect(test_config(all, 12)).expect("admin");

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writes = tokio::spawn({
        let stop = stop.clone();
        let progress = progress.clone();
        async move {
            let started = Instant::now();
            let mut acked: Vec<(String, Instant)> = Vec::new();
            let mut failed = 0usize;
            for i in 0..MAX_WRITES {
                if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_WRITE_TIME {
                    break;
                }
                let key = format!("w/{i:05}");
                match writer.put_with(key.as_bytes(), key.as_bytes(), PutOptions::default()).await {
                    Ok(_) => {
                        acked.push((key, Instant::now()));
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        }
    });

    // Every step runs while writes keep being acknowledged around it.
    let more_writes = |n: usize| {
        let progress = progress.clone();
        async move {
            let target = progress.load(Ordering::Relaxed) + n;
            let deadline = Instant::now() + CLUSTER_DEADLINE;
            while progress.load(Ordering::Relaxed) < target {
                assert!(Instant::now() < deadline, "writes stopped making progress");
                tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
            }
        }
    };
    more_writes(WRITES_BETWEEN_STEPS).await;
    // Replace voter 3 with node 4 (joint consensus).
    admin.add_learner(member(&cluster, 4), true, None).await.expect("add learner 4");
    more_writes(WRITES_BETWEEN_STEPS).await;
    admin.change_membership(vec![1, 2, 4], false, None).await.expect("replace 3 with 4");
    more_writes(WRITES_BETWEEN_STEPS).await;
    // Add and remove a learner.
    admin.add_learner(member(&cluster, 5), true, None).await.expect("add learner 5");
    more_writes(WRITES_BETWEEN_STEPS).await;
    admin.remove_learner(5, None).await.expect("remove learner 5");
    more_writes(WRITES_BETWEEN_STEPS).await;
    let voter = admin.remove_learner(1, None).await.expect_err("a voter is not a learner");
    assert_eq!(voter.code(), tonic::Code::InvalidArgument, "{voter}");

    stops_serving(&cluster, 3).await;
    stops_serving(&cluster, 5).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writes.await.expect("writer");
    assert_eq!(failed, 0, "writes failed during membership changes");
    let worst = acked.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap_or_default();
    assert!(worst < MAX_STALL, "writes stalled for {worst:?}");

    let members = admin.members().await.expect("members");
    let mut ids: Vec<(u64, bool)> = members.members.iter().map(|m| (m.id, m.voter)).collect();
    ids.sort();
    assert_eq!(ids, vec![(1, true), (2, true), (4, true)]);

    // Nothing acknowledged was lost: every write reads back, through the new voters.
    let reader = Client::connect(test_config(api_addrs(&cluster, &[1, 2, 4]), 13)).expect("reader");
    for (key, _) in &acked {
        let got = reader.get(key.as_bytes(), ReadOptions::linearizable()).await.expect("get");
        let record = got.record.unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(record.value, key.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_moves_leadership_within_bounded_time_and_it_stays() {
    let cluster = start(3).await;
    let leader = cluster.leader().await.expect("leader");
    let target = follower(&cluster).await;
    let admin = Client::connect(test_config(api_addrs(&cluster, &cluster.ids()), 21)).expect("c");
    admin.transfer_leader(target, None).await.expect("transfer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now_leader = cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
        if now_leader == target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader still {now_leader} (was {leader}), not {target}"
        );
        tokio::time::sleep(RETRY_INTERVAL).await; // poll interval, deadline-bound
    }
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert_eq!(cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader"), target);
        tokio::time::sleep(Duration::from_millis(100)).await; // observation interval
    }
    let bad = admin.transfer_leader(99, None).await.expect_err("unknown node");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
}

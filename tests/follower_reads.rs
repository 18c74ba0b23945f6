//! Follower linearizable reads: a follower asks the leader only for a read index, waits
//! until it has applied it, and serves the read from its own state. The read must
//! never miss a write acknowledged before it started, and it must be served by the
//! follower itself (not forwarded).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_linearizable_reads_are_served_locally_and_never_stale() {
    const ROUNDS: u64 = 40;
    let cluster = start(3).await;
    let kvs = clients(&cluster);
    let leader = cluster.leader().await.expect("leader");
    let leader_kv = &kvs[&leader];
    let followers: Vec<u64> = kvs.keys().copied().filter(|id| *id != leader).collect();
    for round in 1..=ROUNDS {
        let value = format!("v{round}");
        let written = put_ok(leader_kv, b"fresh", value.as_bytes()).await.record.expect("record");
        // The write is acknowledged; every linearizable read that starts now must see it.
        for &f in &followers {
            let got = get(&kvs[&f], b"fresh", pb::Consistency::Linearizable).await.expect("get");
            let header = got.header.expect("header");
            assert_eq!(header.node_id, f, "follower {f} forwarded the read instead of serving it");
            let record = got.record.expect("record");
            assert!(
                record.version >= written.version,
                "follower {f} returned version {} after version {} was acknowledged",
                record.version,
                written.version
            );
            assert_eq!(record.value, value.as_bytes(), "follower {f} read a stale value");
        }
    }
}

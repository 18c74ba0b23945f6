//! The binlog on real node processes: every write appears once, in order, on every
//! replica with equal chain hashes (also on a node that caught up by snapshot);
//! flow control by the ack window; retention and OUT_OF_RANGE; Watch; and divergence
//! made visible by CorruptKey.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::client::{api_addrs, test_config, test_seed};
use common::*;
use meridian::client::{Client, StreamError, SubscribeOptions, WatchOptions};

/// Longest a binlog read in these tests may take.
const READ_DEADLINE: Duration = Duration::from_secs(20);

fn client_of(cluster: &LocalCluster, test: &str) -> Client {
    Client::connect(test_config(api_addrs(cluster, &cluster.ids()), test_seed(test)))
        .expect("client")
}

/// Read node `id`'s binlog from `from` until an event at or after `until` has arrived,
/// acking every batch. Fails the test after [`READ_DEADLINE`].
async fn read_binlog(
    client: &Client,
    cluster: &LocalCluster,
    id: u64,
    from: u64,
    until: u64,
) -> Vec<pb::BinlogEvent> {
    let addr = cluster.api_addr(id).expect("addr").to_string();
    let options = SubscribeOptions { from_revision: from, ..Default::default() };
    let mut sub = client.subscribe(&addr, options).await.expect("subscribe");
    let deadline = Instant::now() + READ_DEADLINE;
    let mut out: Vec<pb::BinlogEvent> = Vec::new();
    while out.last().is_none_or(|e| e.revision < until) {
        assert!(Instant::now() < deadline, "node {id}: binlog did not reach {until} in time");
        let msg = tokio::time::timeout(READ_DEADLINE, sub.next())
            .await
            .expect("a message before the deadline")
            .expect("stream ok")
            .expect("stream open");
        assert_eq!(msg.node_id, id, "served by the replica asked");
        if let Some(last) = msg.events.last() {
            sub.ack(last.revision, last.index).await.expect("ack");
        }
        out.extend(msg.events);
    }
    out
}

/// Positions strictly increase and indexes count from 0 within a revision.
fn assert_ordered(events: &[pb::BinlogEvent]) {
    for w in events.windows(2) {
        let (a, b) = ((w[0].revision, w[0].index), (w[1].revision, w[1].index));
        assert!(a < b, "binlog out of order: {a:?} then {b:?}");
        if b.0 != a.0 {
            assert_eq!(b.1, 0, "a revision's events start at index 0");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_appears_once_in_order_on_every_replica_with_equal_chains() {
    let mut options = options();
    options.raft.snapshot_logs_since_last = 40;
    // The entry count alone decides, whatever the log size: this test needs snapshots.
    options.raft.snapshot_log_size_percent = 0;
    options.raft.max_in_snapshot_log_to_keep = 0;
    let cluster = TestCluster::start(3, options).await.expect("cluster");
    let client = client_of(&cluster, "every_write_appears_once");
    let leader = cluster.leader().await.expect("leader");
    let kv = cluster.kv(leader).expect("kv");

    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for i in 0..10 {
        let r = put_ok(&kv, format!("k{i}").as_bytes(), b"v").await;
        acked.insert(r.record.expect("record").revision, format!("k{i}").into_bytes());
    }
    // A failed CAS and a delete of a missing key change nothing: no event.
    let cas = put(&kv, b"k0", b"x", Some(99)).await.expect("cas");
    assert!(!cas.succeeded);
    let del = delete(&kv, b"missing", None).await.expect("delete");
    assert!(!del.succeeded);

    // A follower misses writes and comes back by snapshot.
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).expect("follower");
    cluster.stop(lagging).await.expect("stop follower");
    for i in 10..130 {
        let r = put_ok(&kv, format!("k{i}").as_bytes(), b"w").await;
        acked.insert(r.record.expect("record").revision, format!("k{i}").into_bytes());
    }
    cluster
        .wait_for("the leader to purge its log", CLUSTER_DEADLINE, || async {
            let s = cluster.status(leader).await.map_err(|e| e.to_string())?;
            (s.purged_index > 20).then_some(()).ok_or(format!("purged {}", s.purged_index))
        })
        .await
        .expect("purge");
    cluster.start(lagging).await.expect("restart follower");
    let last = *acked.keys().last().expect("writes");
    cluster.wait_applied(last, CLUSTER_DEADLINE).await.expect("all applied");
    cluster
        .wait_snapshot(lagging, 1, CLUSTER_DEADLINE)
        .await
        .expect("the lagging node must have installed a snapshot");

    let mut binlogs = BTreeMap::new();
    for id in cluster.ids() {
        binlogs.insert(id, read_binlog(&client, &cluster, id, 0, last).await);
    }
    let reference = &binlogs[&leader];
    assert_ordered(reference);
    let puts: Vec<_> = reference.iter().filter(|e| e.op == pb::BinlogOp::Put as i32).collect();
    assert_eq!(puts.len(), acked.len(), "one event per acknowledged write, no more");
    for (rev, key) in &acked {
        let found: Vec<_> = reference.iter().filter(|e| e.revision == *rev).collect();
        assert_eq!(found.len(), 1, "revision {rev} appears exactly once");
        assert_eq!(&found[0].key, key);
        assert_eq!(found[0].chain_hash.len(), 16);
    }
    for (id, events) in &binlogs {
        assert_eq!(events, reference, "node {id}'s binlog differs from the leader's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_only_its_window_and_does_not_block_writers() {
    const WINDOW: u32 = 10;
    let cluster = start(3).await;
    let client = client_of(&cluster, "slow_subscriber");
    let leader = cluster.leader().await.expect("leader");
    let kv = cluster.kv(leader).expect("kv");
    let addr = cluster.api_addr(leader).expect("addr").to_string();
    let options = SubscribeOptions { window_events: WINDOW, ..Default::default() };
    let mut sub = client.subscribe(&addr, options).await.expect("subscribe");

    // Writers finish while the subscriber acks nothing.
    let started = Instant::now();
    let mut last = 0;
    for i in 0..100 {
        last = put_ok(&kv, format!("s{i}").as_bytes(), b"v").await.header.expect("h").revision;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "writers were held back");

    // Read until a progress message shows every write applied: only WINDOW events.
    let mut got = Vec::new();
    let deadline = Instant::now() + READ_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "no progress message after the writes");
        let msg = sub.next().await.expect("stream ok").expect("open");
        if msg.events.is_empty() && msg.applied_revision >= last {
            break;
        }
        got.extend(msg.events);
    }
    assert_eq!(got.len(), WINDOW as usize, "a subscriber that never acks gets its window");
    // Acking the window releases the next window.
    let tail = got.last().expect("events");
    sub.ack(tail.revision, tail.index).await.expect("ack");
    let mut more = 0;
    while more < WINDOW as usize {
        let msg = tokio::time::timeout(READ_DEADLINE, sub.next())
            .await
            .expect("events after the ack")
            .expect("ok")
            .expect("open");
        if let Some(first) = msg.events.first() {
            assert!((first.revision, first.index) > (tail.revision, tail.index));
        }
        more += msg.events.len();
    }
    assert_eq!(more, WINDOW as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_is_out_of_range_and_restarts_from_the_oldest_revision() {
    let mut options = options();
    options.extra_args = vec!["--binlog-retention-events".into(), "20".into()];
    let cluster = TestCluster::start(3, options).await.expect("cluster");
    let client = client_of(&cluster, "compacted_start");
    let leader = cluster.leader().await.expect("leader");
    let kv = cluster.kv(leader).expect("kv");
    let mut last = 0;
    for i in 0..60 {
        last = put_ok(&kv, format!("r{i}").as_bytes(), b"v").await.header.expect("h").revision;
    }
    let addr = cluster.api_addr(leader).expect("addr").to_string();
    let options = SubscribeOptions { from_revision: 1, ..Default::default() };
    let oldest = match client.subscribe(&addr, options).await {
        Err(StreamError::Compacted { oldest_revision, .. }) => oldest_revision,
        Err(e) => panic!("expected OUT_OF_RANGE, got {e}"),
        Ok(_) => panic!("a compacted start must fail"),
    };
    assert!(oldest > 1 && oldest <= last, "oldest {oldest} within (1, {last}]");
    let events = read_binlog(&client, &cluster, leader, oldest, last).await;
    assert!(events.len() <= 21 && events.len() >= 19, "about 20 retained: {}", events.len());
    assert!(events[0].revision >= oldest);
    assert_ordered(&events);
    // from_revision 0 means the oldest retained.
    let from_zero = read_binlog(&client, &cluster, leader, 0, last).await;
    assert_eq!(from_zero.first().map(|e| e.revision), events.first().map(|e| e.revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_only_the_watched_prefix() {
    let cluster = start(3).await;
    let client = client_of(&cluster, "watch");
    let leader = cluster.leader().await.expect("leader");
    let kv = cluster.kv(leader).expect("kv");
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("follower");
    let addr = cluster.api_addr(follower).expect("addr").to_string();
    let before = put_ok(&kv, b"w/before", b"old").await.record.expect("record").revision;
    // "From now" is the serving replica's now: let the follower apply the earlier write
    // first, or it would (rightly) stream it.
    cluster.wait_applied(before, CLUSTER_DEADLINE).await.expect("follower applied");
    let options = WatchOptions { prefix: b"w/".to_vec(), ..Default::default() };
    let mut stream = client.watch(&addr, options).await.expect("watch");
    put_ok(&kv, b"w/1", b"a").await;
    put_ok(&kv, b"x/1", b"ignored").await;
    delete(&kv, b"w/1", None).await.expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(READ_DEADLINE, stream.message())
            .await
            .expect("watch events in time")
            .expect("ok")
            .expect("open");
        seen.extend(msg.events.into_iter().map(|e| (e.key, e.op)));
    }
    assert_eq!(
        seen,
        vec![
            (b"w/1".to_vec(), pb::BinlogOp::Put as i32),
            (b"w/1".to_vec(), pb::BinlogOp::Delete as i32)
        ],
        "changes before the watch and outside the prefix are not streamed"
    );
    let both = WatchOptions { key: b"a".to_vec(), prefix: b"b".to_vec(), ..Default::default() };
    assert!(client.watch(&addr, both).await.is_err(), "key and prefix together are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_key_makes_only_that_replica_diverge_from_the_next_write_on() {
    let mut options = options();
    options.extra_args = vec!["--allow-fault-injection".into()];
    let cluster = TestCluster::start(3, options).await.expect("cluster");
    let client = client_of(&cluster, "corrupt_key");
    let leader = cluster.leader().await.expect("leader");
    let kv = cluster.kv(leader).expect("kv");
    put_ok(&kv, b"victim", b"1").await;
    let before = put_ok(&kv, b"other", b"1").await.header.expect("h").revision;
    cluster.wait_applied(before, CLUSTER_DEADLINE).await.expect("applied");

    let bad = cluster.ids().into_iter().find(|id| *id != leader).expect("follower");
    let mut admin = cluster.cluster_client(bad).expect("cluster client");
    let req = pb::CorruptKeyRequest { key: b"victim".to_vec(), value: b"evil".to_vec() };
    let resp = admin.corrupt_key(req).await.expect("corrupt").into_inner();
    assert!(resp.existed);

    let hit = put_ok(&kv, b"victim", b"2").await.header.expect("h").revision;
    let last = put_ok(&kv, b"after", b"1").await.header.expect("h").revision;
    cluster.wait_applied(last, CLUSTER_DEADLINE).await.expect("applied");

    let mut logs = BTreeMap::new();
    for id in cluster.ids() {
        logs.insert(id, read_binlog(&client, &cluster, id, 0, last).await);
    }
    let good_id = cluster.ids().into_iter().find(|id| *id != bad).expect("good");
    let good = &logs[&good_id];
    for (id, events) in &logs {
        assert_eq!(events.len(), good.len());
        for (e, g) in events.iter().zip(good) {
            let diverged = e.chain_hash != g.chain_hash;
            let expect = *id == bad && e.revision >= hit;
            assert_eq!(
                diverged, expect,
                "node {id} revision {}: diverged={diverged}, expected {expect}",
                e.revision
            );
        }
    }
    let corrupted = logs[&bad].iter().find(|e| e.revision == hit).expect("event");
    let value = corrupted.before.as_ref().map(|r| r.value.clone());
    assert_eq!(value, Some(b"evil".to_vec()), "the before-image shows the corruption");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_key_without_fault_injection_is_unimplemented() {
    let cluster = start(1).await;
    let mut admin = cluster.cluster_client(1).expect("cluster client");
    let req = pb::CorruptKeyRequest { key: b"k".to_vec(), value: b"v".to_vec() };
    let err = admin.corrupt_key(req).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_trace_id_lands_in_the_binlog_event_on_every_replica() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let cluster = start(3).await;
    let client = client_of(&cluster, "binlog-trace-id");
    // Send the write through a follower so the trace id also crosses the forward.
    let via = follower(&cluster).await;
    let mut kv = cluster.kv(via).expect("kv");
    let mut req = tonic::Request::new(pb::PutRequest {
        key: b"traced".to_vec(),
        value: b"v".to_vec(),
        request_id: request_id(),
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    req.metadata_mut().insert("traceparent", traceparent.parse().expect("ascii"));
    let put = kv.put(req).await.expect("put").into_inner();
    let revision = put.record.expect("record").revision;
    for id in cluster.ids() {
        let events = read_binlog(&client, &cluster, id, revision, revision).await;
        let event = events.iter().find(|e| e.revision == revision).expect("the write's event");
        assert_eq!(event.trace_id, TRACE_ID, "node {id}: trace id of the write's binlog event");
    }
}

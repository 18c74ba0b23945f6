//! Exactly-once writes end to end (DESIGN.md §5), on real node processes through the
//! Rust client library: a write sent again with its request id changes nothing and
//! gets the original response back (`duplicate = true`), after a leader kill, after a
//! restart of every node, through and by a node that caught up by snapshot, and when
//! the first response was lost on the wire.
//!
//! What proves "applied once": a replayed create-only or CAS write still reports
//! success (re-executing it would fail its version check), a replayed unconditional
//! put leaves the key at version 1 (re-executing it would make it 2), and the whole
//! keyspace under test is record-for-record identical before and after each replay.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::client::*;
use common::response_dropper::ResponseDropper;
use common::*;
use meridian::client::{txn, Client, ClientError, DeleteOptions, PutOptions, ReadOptions, Txn};

/// Prefix of every key whose state the replays must not change.
const PREFIX: &str = "eo/";
/// The CAS counter.
const COUNTER: &str = "eo/counter";
/// CAS increments of the counter (the first one creates it).
const INCREMENTS: u64 = 40;
/// Distinct unconditional puts.
const PUTS: usize = 20;
/// Snapshot after this many log entries, so a stopped follower needs a snapshot.
const SNAPSHOT_EVERY: u64 = 50;
/// Writes made while the follower is down: three snapshot intervals.
const FILLER_WRITES: usize = 150;
/// Times to ask the leader to hand over before giving up.
const TRANSFER_ATTEMPTS: u32 = 5;
/// How long one leadership transfer may take to show.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// Overall deadline of `duplicate_writes_are_applied_once`.
const DUPLICATES_TEST_DEADLINE: Duration = Duration::from_secs(240);
/// Overall deadline of `lost_response_is_retried_and_applied_once`.
const LOST_RESPONSE_TEST_DEADLINE: Duration = Duration::from_secs(120);

/// One logical write, sent again with the same request id to replay it.
#[derive(Debug, Clone)]
enum Write {
    Put { key: String, value: String, expected_version: Option<u64> },
    Delete { key: String, expected_version: Option<u64> },
    Txn(Txn),
}

/// The parts of a write's response a replay must reproduce exactly.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    succeeded: bool,
    /// Put/Delete: the record written or removed; Txn: the records of its results.
    records: Vec<pb::Record>,
    /// The current record of a failed version check.
    current: Option<pb::Record>,
    /// Revision in the response header: the log index of the original write.
    revision: u64,
}

/// A write, its request id, and its original outcome.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    write: Write,
    original: Outcome,
}

/// Send `write` once with request id `id`; returns the outcome and the duplicate flag.
async fn send(client: &Client, id: &str, write: &Write) -> (Outcome, bool) {
    match write {
        Write::Put { key, value, expected_version } => {
            let options = PutOptions {
                expected_version: *expected_version,
                request_id: Some(id.to_string()),
                ..PutOptions::default()
            };
            let r = client.put_with(key.as_str(), value.as_str(), options);
            let r = or_fail(r.await, id, write);
            let outcome = Outcome {
                succeeded: r.succeeded,
                records: r.record.into_iter().collect(),
                current: r.current,
                revision: r.header.map_or(0, |h| h.revision),
            };
            (outcome, r.duplicate)
        }
        Write::Delete { key, expected_version } => {
            let options = DeleteOptions {
                expected_version: *expected_version,
                request_id: Some(id.to_string()),
                ..DeleteOptions::default()
            };
            let r = or_fail(client.delete(key.as_str(), options).await, id, write);
            let outcome = Outcome {
                succeeded: r.succeeded,
                records: r.record.into_iter().collect(),
                current: r.current,
                revision: r.header.map_or(0, |h| h.revision),
            };
            (outcome, r.duplicate)
        }
        Write::Txn(t) => {
            let r = or_fail(client.txn(t.clone().request_id(id)).await, id, write);
            let outcome = Outcome {
                succeeded: r.succeeded,
                records: r.results.into_iter().filter_map(|o| o.record).collect(),
                current: None,
                revision: r.header.map_or(0, |h| h.revision),
            };
            (outcome, r.duplicate)
        }
    }
}

/// The response, or a panic naming the write.
fn or_fail<T>(result: Result<T, ClientError>, id: &str, write: &Write) -> T {
    result.unwrap_or_else(|e| panic!("write {id} ({write:?}) failed: {e}"))
}

/// Send `write` twice with one request id: the first is applied, the second must be
/// a replay of the first's response.
async fn send_twice(client: &Client, id: String, write: Write) -> Sent {
    let (original, duplicate) = send(client, &id, &write).await;
    assert!(!duplicate, "{id}: a first send must not be a duplicate: {original:?}");
    assert!(original.revision > 0, "{id}: response without a header revision");
    let (again, duplicate) = send(client, &id, &write).await;
    assert!(duplicate, "{id}: the second send must be replayed (duplicate=true): {again:?}");
    assert_eq!(again, original, "{id}: the replay must return the original response");
    Sent { id, write, original }
}

/// Send every write again; each must be a duplicate with its original response.
async fn replay_all(client: &Client, sent: &[Sent], when: &str) {
    let started = Instant::now();
    for s in sent {
        let (outcome, duplicate) = send(client, &s.id, &s.write).await;
        assert!(duplicate, "{when}: {} was not recognised as a duplicate: {outcome:?}", s.id);
        assert_eq!(outcome, s.original, "{when}: {} replayed another response", s.id);
    }
    eprintln!("{when}: {} replays, all duplicates, in {} ms", sent.len(), ms(started.elapsed()));
}

/// Every logical write of the scenario, each sent twice; returns them for replays.
async fn write_everything_twice(client: &Client, seed: u64) -> Vec<Sent> {
    let mut sent = Vec::new();
    for i in 1..=INCREMENTS {
        let write =
            Write::Put { key: COUNTER.into(), value: i.to_string(), expected_version: Some(i - 1) };
        let s = send_twice(client, format!("eo-{seed:x}-cas-{i}"), write).await;
        assert!(s.original.succeeded, "increment {i} lost a race nobody else runs: {s:?}");
        assert_eq!(s.original.records[0].version, i, "increment {i}");
        sent.push(s);
    }
    for i in 0..PUTS {
        let write = Write::Put {
            key: format!("eo/put/{i:02}"),
            value: format!("v{i}"),
            expected_version: None,
        };
        let s = send_twice(client, format!("eo-{seed:x}-put-{i}"), write).await;
        assert_eq!(s.original.records[0].version, 1, "put {i}: {s:?}");
        sent.push(s);
    }
    let create =
        Write::Put { key: "eo/del".into(), value: "doomed".into(), expected_version: Some(0) };
    sent.push(send_twice(client, format!("eo-{seed:x}-del-create"), create).await);
    let delete = Write::Delete { key: "eo/del".into(), expected_version: Some(1) };
    let s = send_twice(client, format!("eo-{seed:x}-del"), delete).await;
    assert!(s.original.succeeded, "the delete removed the key: {s:?}");
    sent.push(s);
    let t = Txn::new()
        .when(txn::missing("eo/txn/a"))
        .then(txn::put("eo/txn/a", "a"))
        .then(txn::put("eo/txn/b", "b"));
    let s = send_twice(client, format!("eo-{seed:x}-txn"), Write::Txn(t)).await;
    assert!(s.original.succeeded, "the create-only txn ran its success branch: {s:?}");
    sent.push(s);
    sent
}

/// Send every id again with another write: other values, the same values on another
/// key or under another version condition, or another kind of write. Each must be
/// refused with INVALID_ARGUMENT, never answered with the first write's response (a
/// saved response remembers a hash of its whole request).
async fn reuse_ids_for_other_writes(client: &Client, sent: &[Sent]) {
    for s in sent {
        let others = match &s.write {
            Write::Put { key, value, expected_version } => vec![
                Write::Put {
                    key: key.clone(),
                    value: format!("{value}-other"),
                    expected_version: *expected_version,
                },
                Write::Put {
                    key: format!("{key}-other"),
                    value: value.clone(),
                    expected_version: *expected_version,
                },
                Write::Put {
                    key: key.clone(),
                    value: value.clone(),
                    expected_version: match expected_version {
                        None => Some(0),
                        Some(_) => None,
                    },
                },
            ],
            Write::Delete { key, expected_version } => vec![
                Write::Put { key: key.clone(), value: "x".into(), expected_version: None },
                Write::Delete { key: format!("{key}-other"), expected_version: *expected_version },
            ],
            Write::Txn(_) => vec![
                Write::Txn(
                    Txn::new()
                        .when(txn::missing("eo/txn/a"))
                        .then(txn::put("eo/txn/a", "a"))
                        .then(txn::put("eo/txn/b", "other")),
                ),
                Write::Txn(
                    Txn::new()
                        .when(txn::missing("eo/txn/other"))
                        .then(txn::put("eo/txn/a", "a"))
                        .then(txn::put("eo/txn/b", "b")),
                ),
            ],
        };
        for other in others {
            let refused = match &other {
                Write::Put { key, value, expected_version } => {
                    let options = PutOptions {
                        expected_version: *expected_version,
                        request_id: Some(s.id.clone()),
                        ..PutOptions::default()
                    };
                    client.put_with(key.as_str(), value.as_str(), options).await.err()
                }
                Write::Delete { key, expected_version } => {
                    let options = DeleteOptions {
                        expected_version: *expected_version,
                        request_id: Some(s.id.clone()),
                        ..DeleteOptions::default()
                    };
                    client.delete(key.as_str(), options).await.err()
                }
                Write::Txn(t) => client.txn(t.clone().request_id(&s.id)).await.err(),
            };
            match refused {
                Some(ClientError::Rpc(e)) if e.code == tonic::Code::InvalidArgument => {
                    assert!(e.message.contains("request_id"), "{}: {e}", s.id);
                }
                got => panic!("{}: reusing the id for {other:?} was not refused: {got:?}", s.id),
            }
        }
    }
}

/// The state every write applied exactly once leaves under [`PREFIX`].
fn assert_applied_once(state: &BTreeMap<Vec<u8>, pb::Record>, when: &str) {
    let get = |key: &str| state.get(key.as_bytes());
    let counter = get(COUNTER).unwrap_or_else(|| panic!("{when}: the counter is missing"));
    assert_eq!(counter.value, INCREMENTS.to_string().as_bytes(), "{when}: counter value");
    assert_eq!(counter.version, INCREMENTS, "{when}: one version per increment");
    for i in 0..PUTS {
        let key = format!("eo/put/{i:02}");
        let r = get(&key).unwrap_or_else(|| panic!("{when}: {key} is missing"));
        assert_eq!(r.version, 1, "{when}: {key} was applied more than once: {r:?}");
    }
    assert!(get("eo/del").is_none(), "{when}: the deleted key is back");
    for key in ["eo/txn/a", "eo/txn/b"] {
        assert_eq!(get(key).map(|r| r.version), Some(1), "{when}: {key}");
    }
    assert_eq!(state.len(), 1 + PUTS + 2, "{when}: unexpected keys: {:?}", state.keys());
}

/// The keyspace under test, read linearizably.
async fn state(client: &Client) -> BTreeMap<Vec<u8>, pb::Record> {
    records_under(client, PREFIX, ReadOptions::linearizable()).await
}

/// Ask the leader to hand leadership to `id` until it has.
async fn make_leader(cluster: &LocalCluster, id: u64) {
    for _ in 0..TRANSFER_ATTEMPTS {
        let leader = cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
        if leader == id {
            return;
        }
        let mut admin = cluster.cluster_client(leader).expect("cluster client");
        if let Err(e) = admin.transfer_leader(pb::TransferLeaderRequest { to: id }).await {
            eprintln!("transfer_leader {leader} -> {id}: {e:?}");
        }
        let took_over = cluster
            .wait_for(&format!("node {id} to lead"), TRANSFER_WAIT, || async {
                match cluster.status(id).await {
                    Ok(s) if s.role() == pb::Role::Leader => Ok(()),
                    Ok(s) => Err(format!("{:?}, leader {}", s.role(), s.leader_id)),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        if took_over.is_ok() && cluster.wait_for_leader(CLUSTER_DEADLINE).await.ok() == Some(id) {
            return;
        }
    }
    panic!("node {id} did not become leader after {TRANSFER_ATTEMPTS} transfer requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_writes_are_applied_once() {
    let seed = test_seed("duplicate_writes_are_applied_once");
    let mut options = options();
    options.raft.snapshot_logs_since_last = SNAPSHOT_EVERY;
    // The entry count alone decides, whatever the log size: this test needs snapshots.
    options.raft.snapshot_log_size_percent = 0;
    options.raft.max_in_snapshot_log_to_keep = 0;
    let cluster = TestCluster::start(3, options).await.expect("cluster");
    within(DUPLICATES_TEST_DEADLINE, "duplicate_writes_are_applied_once", async {
        let client = cluster_client(&cluster, seed);
        let sent = write_everything_twice(&client, seed).await;
        let before = state(&client).await;
        assert_applied_once(&before, "after sending every write twice");
        reuse_ids_for_other_writes(&client, &sent).await;
        assert_eq!(state(&client).await, before, "a refused reuse changed the state");

        replay_after_leader_kill(&cluster, &client, &sent, &before).await;
        replay_after_full_restart(&cluster, &client, &sent, &before).await;
        replay_on_snapshot_caught_up_node(&cluster, &client, &sent, &before, seed).await;
        assert_replicas_identical(&cluster).await;
    })
    .await;
}

/// The table survives a leader change: kill -9 the leader, replay through the rest.
async fn replay_after_leader_kill(
    cluster: &LocalCluster,
    client: &Client,
    sent: &[Sent],
    before: &BTreeMap<Vec<u8>, pb::Record>,
) {
    let old = cluster.leader().await.expect("leader");
    cluster.kill(old).expect("kill -9 the leader");
    let new = cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("a new leader");
    assert_ne!(new, old);
    replay_all(client, sent, "after the leader was killed").await;
    assert_eq!(&state(client).await, before, "replays after the leader kill changed state");
    cluster.start(old).await.expect("restart the killed leader");
}

/// The table is durable: kill -9 every node, start them again, replay.
async fn replay_after_full_restart(
    cluster: &LocalCluster,
    client: &Client,
    sent: &[Sent],
    before: &BTreeMap<Vec<u8>, pb::Record>,
) {
    for id in cluster.ids() {
        cluster.kill(id).expect("kill -9");
    }
    cluster.start_all().await.expect("restart every node");
    cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("a leader after the restart");
    replay_all(client, sent, "after restarting every node").await;
    assert_eq!(&state(client).await, before, "replays after the full restart changed state");
}

/// The table travels in snapshots: a follower that missed a purged stretch of the log
/// installs a snapshot; retries sent to it (forwarded to the leader) are replayed and
/// its own replica is not changed by them; then, as leader, it replays them itself.
async fn replay_on_snapshot_caught_up_node(
    cluster: &LocalCluster,
    client: &Client,
    sent: &[Sent],
    before: &BTreeMap<Vec<u8>, pb::Record>,
    seed: u64,
) {
    let lagging = follower(cluster).await;
    let lagging_applied = cluster.status(lagging).await.expect("status").applied_index;
    cluster.stop(lagging).await.expect("stop the follower");
    for i in 0..FILLER_WRITES {
        client.put(format!("fill/{i:04}"), "x").await.expect("filler write");
    }
    let leader = cluster.leader().await.expect("leader");
    let purged = cluster
        .wait_for("the leader to purge the log the follower needs", CLUSTER_DEADLINE, || async {
            let s = cluster.status(leader).await.map_err(|e| e.to_string())?;
            if s.purged_index > lagging_applied {
                Ok(s.purged_index)
            } else {
                Err(format!("purged {} <= {lagging_applied}", s.purged_index))
            }
        })
        .await
        .expect("log purged");
    cluster.start(lagging).await.expect("restart the follower");
    cluster.wait_converged(CLUSTER_DEADLINE).await.expect("converged");
    cluster
        .wait_snapshot(lagging, purged, CLUSTER_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("node {lagging} must catch up by snapshot: {e}"));

    let via_lagging = node_client(cluster, lagging, seed);
    replay_all(&via_lagging, sent, "through the snapshot-installed follower").await;
    cluster.wait_converged(CLUSTER_DEADLINE).await.expect("converged");
    assert_local_state(&via_lagging, lagging, before, "after replays through it").await;
    assert_eq!(&state(client).await, before, "replays through the follower changed state");

    make_leader(cluster, lagging).await;
    replay_all(&via_lagging, sent, "answered by the snapshot-installed node as leader").await;
    cluster.wait_converged(CLUSTER_DEADLINE).await.expect("converged");
    assert_local_state(&via_lagging, lagging, before, "after replays it led").await;
    assert_eq!(&state(client).await, before, "replays by the new leader changed state");
}

/// Node `id`'s own replica (SERIALIZABLE reads served by it) equals `want`.
async fn assert_local_state(
    client: &Client,
    id: u64,
    want: &BTreeMap<Vec<u8>, pb::Record>,
    when: &str,
) {
    let probe = client.get(COUNTER, ReadOptions::serializable()).await.expect("serializable get");
    assert_eq!(served_by(probe.header.as_ref()), id, "the serializable read left node {id}");
    let local = records_under(client, PREFIX, ReadOptions::serializable()).await;
    assert_eq!(&local, want, "node {id}'s replica differs {when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_response_is_retried_and_applied_once() {
    let seed = test_seed("lost_response_is_retried_and_applied_once");
    let cluster = start(3).await;
    within(LOST_RESPONSE_TEST_DEADLINE, "lost_response_is_retried_and_applied_once", async {
        let leader = cluster.leader().await.expect("leader");
        let dropper =
            ResponseDropper::start(cluster.api_addr(leader).expect("addr")).await.expect("proxy");
        let proxy = dropper.addr().to_string();
        let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        let mut with_others = vec![proxy.clone()];
        with_others.extend(api_addrs(&cluster, &others));
        // (name, endpoints, expected_version): the retry goes through the same endpoint
        // after a reconnect, or through another node; a create-only write would fail
        // its check if executed twice, an unconditional one would reach version 2.
        let scenarios = [
            ("same-endpoint", vec![proxy.clone()], Some(0)),
            ("other-endpoint", with_others, None),
        ];
        for (n, (name, endpoints, expected_version)) in scenarios.into_iter().enumerate() {
            let client = Client::connect(test_config(endpoints, seed)).expect("client");
            let key = format!("lost/{name}");
            let id = format!("lost-{seed:x}-{name}");
            dropper.arm();
            let options = PutOptions {
                expected_version,
                request_id: Some(id.clone()),
                ..PutOptions::default()
            };
            let started = Instant::now();
            let resp = client.put_with(key.as_str(), "once", options).await.unwrap_or_else(|e| {
                panic!("{name}: the retry must resolve the lost response: {e}")
            });
            let metrics = client.metrics();
            eprintln!(
                "{name}: answered in {} ms after {} attempts; proxy connections {}",
                ms(started.elapsed()),
                metrics.attempts,
                dropper.connections_accepted()
            );
            assert_eq!(dropper.dropped_responses(), n as u64 + 1, "{name}: a response was lost");
            assert!(metrics.retries >= 1, "{name}: the client retried: {metrics:?}");
            assert!(resp.duplicate, "{name}: the answer is the replayed original: {resp:?}");
            assert!(resp.succeeded, "{name}: the original succeeded: {resp:?}");
            let record = resp.record.clone().expect("record");
            assert_eq!(record.version, 1, "{name}: applied once");
            assert_eq!(resp.header.as_ref().map(|h| h.revision), Some(record.revision));
            let stored = client.get(key.as_str(), ReadOptions::linearizable()).await.expect("get");
            assert_eq!(stored.record.as_ref(), Some(&record), "{name}: the stored record");
            // Asking again with the same id keeps answering the original.
            let options =
                PutOptions { expected_version, request_id: Some(id), ..Default::default() };
            let again = client.put_with(key.as_str(), "once", options).await.expect("replay");
            assert!(again.duplicate && again.record.as_ref() == Some(&record), "{again:?}");
        }
        assert_replicas_identical(&cluster).await;
    })
    .await;
}

//! Sagas on real node processes, through the Rust client library: open and commit
//! (PENDING then COMMITTED), abort with compensation and a conflict left alone, and
//! refusal after the deadline.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::client::{cluster_client, test_seed};
use common::*;
use meridian::client::txn::{self, Txn};
use meridian::client::SubscribeOptions;
use meridian::client::{Client, ClientError, PutOptions, ReadOptions, SagaOptions};

fn saga_put(saga: &str) -> PutOptions {
    PutOptions { saga_id: Some(saga.to_string()), ..PutOptions::default() }
}

async fn value_of(client: &Client, key: &str) -> Option<pb::Record> {
    client.get(key, ReadOptions::default()).await.expect("get").record
}

fn status_of(r: &pb::Record) -> pb::RecordStatus {
    pb::RecordStatus::try_from(r.status).expect("status")
}

/// Every event of the leader's binlog up to `until`.
async fn leader_binlog(
    client: &Client,
    cluster: &LocalCluster,
    until: u64,
) -> Vec<pb::BinlogEvent> {
    let leader = cluster.leader().await.expect("leader");
    let addr = cluster.api_addr(leader).expect("addr").to_string();
    let mut sub = client.subscribe(&addr, SubscribeOptions::default()).await.expect("subscribe");
    let mut out: Vec<pb::BinlogEvent> = Vec::new();
    let deadline = Instant::now() + OP_DEADLINE;
    while out.last().is_none_or(|e| e.revision < until) {
        assert!(Instant::now() < deadline, "binlog did not reach {until}");
        let msg = sub.next().await.expect("ok").expect("open");
        if let Some(l) = msg.events.last() {
            sub.ack(l.revision, l.index).await.expect("ack");
        }
        out.extend(msg.events);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_writes_are_pending_until_commit_and_commit_is_idempotent() {
    let cluster = start(3).await;
    let client = cluster_client(&cluster, test_seed("saga_commit"));
    let opened = client
        .open_saga("t1", Duration::from_secs(30), SagaOptions::default())
        .await
        .expect("open");
    assert!(opened.deadline_unix_ms > 0);
    client.put_with("acct/a", "90", saga_put("t1")).await.expect("put a");
    client.put_with("acct/b", "10", saga_put("t1")).await.expect("put b");
    let a = value_of(&client, "acct/a").await.expect("a");
    assert_eq!(status_of(&a), pb::RecordStatus::Pending);
    assert_eq!(a.saga_id, "t1");

    let commit_id = Some("commit-t1".to_string());
    let options = SagaOptions { request_id: commit_id.clone(), ..Default::default() };
    let committed = client.commit_saga("t1", options).await.expect("commit");
    assert_eq!(committed.records.len(), 2);
    let a = value_of(&client, "acct/a").await.expect("a");
    assert_eq!(status_of(&a), pb::RecordStatus::Committed);
    // A second commit (new request id) answers the same; a retry replays it.
    let again = client.commit_saga("t1", SagaOptions::default()).await.expect("again");
    assert_eq!(again.records, committed.records);
    let replay = SagaOptions { request_id: commit_id, ..Default::default() };
    assert!(client.commit_saga("t1", replay).await.expect("replay").duplicate);

    let saga = client.get_saga("t1").await.expect("get saga");
    assert!(saga.found);
    assert_eq!(saga.state, pb::SagaState::Committed as i32);
    assert_eq!(saga.steps.len(), 2);
    let until = committed.header.expect("h").revision;
    let events = leader_binlog(&client, &cluster, until).await;
    let ops: Vec<i32> = events.iter().map(|e| e.op).collect();
    use pb::BinlogOp::*;
    assert_eq!(ops, vec![SagaOpen as i32, Put as i32, Put as i32, SagaCommit as i32]);
    assert!(events.iter().all(|e| e.saga_id == "t1"));

    // A write after the commit cannot join the saga.
    let late = client.put_with("acct/c", "1", saga_put("t1")).await;
    assert!(
        matches!(late, Err(ClientError::Rpc(ref e)) if e.code == tonic::Code::FailedPrecondition)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_compensates_and_leaves_a_key_changed_by_someone_else_alone() {
    let cluster = start(3).await;
    let client = cluster_client(&cluster, test_seed("saga_abort"));
    client.put("bank/alice", "100").await.expect("alice");
    client.put("bank/bob", "50").await.expect("bob");
    client
        .open_saga("transfer-1", Duration::from_secs(30), SagaOptions::default())
        .await
        .expect("open");
    // A transfer of 30 as one Txn step and a new audit key.
    let txn = Txn::new()
        .then(txn::put("bank/alice", "70"))
        .then(txn::put("bank/bob", "80"))
        .saga_id("transfer-1");
    client.txn(txn).await.expect("txn");
    client.put_with("audit/transfer-1", "30", saga_put("transfer-1")).await.expect("audit");
    // Someone else moves bob on.
    client.put("bank/bob", "999").await.expect("bob moved on");

    let abort_id = "abort-transfer-1".to_string();
    let options = SagaOptions { request_id: Some(abort_id.clone()), ..Default::default() };
    let aborted = client.abort_saga("transfer-1", "client died", options).await.expect("abort");
    assert_eq!(aborted.compensated.len(), 1, "alice restored: {aborted:?}");
    assert_eq!(aborted.conflicts.len(), 1, "bob is a conflict: {aborted:?}");
    assert_eq!(aborted.conflicts[0].key, b"bank/bob".to_vec());

    let alice = value_of(&client, "bank/alice").await.expect("alice");
    assert_eq!(alice.value, b"100".to_vec());
    assert_eq!(status_of(&alice), pb::RecordStatus::Compensated);
    assert_eq!(value_of(&client, "bank/bob").await.expect("bob").value, b"999".to_vec());
    assert!(value_of(&client, "audit/transfer-1").await.is_none(), "created key removed");

    let saga = client.get_saga("transfer-1").await.expect("saga");
    assert_eq!(saga.state, pb::SagaState::Aborted as i32);
    assert_eq!(saga.abort_reason, "client died");
    let again = client.abort_saga("transfer-1", "", SagaOptions::default()).await.expect("again");
    assert_eq!((again.compensated, again.conflicts), (aborted.compensated, aborted.conflicts));

    let until = aborted.header.expect("h").revision;
    let events = leader_binlog(&client, &cluster, until).await;
    let abort_events: Vec<_> = events.iter().filter(|e| e.revision == until).collect();
    let got: Vec<(Vec<u8>, String, bool)> = abort_events
        .iter()
        .map(|e| (e.key.clone(), e.request_id.clone(), e.compensation))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"audit/transfer-1".to_vec(), format!("{abort_id}/2"), true),
            (b"bank/alice".to_vec(), format!("{abort_id}/0"), true),
            (vec![], abort_id.clone(), false),
        ],
        "compensations in reverse step order, SAGA_ABORT last"
    );
    assert_eq!(abort_events[2].op, pb::BinlogOp::SagaAbort as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_writes_and_commit_after_the_deadline_are_refused() {
    let cluster = start(3).await;
    let client = cluster_client(&cluster, test_seed("saga_deadline"));
    let opened = client
        .open_saga("short", Duration::from_millis(2_000), SagaOptions::default())
        .await
        .expect("open");
    client.put_with("d/1", "x", saga_put("short")).await.expect("within the deadline");
    // Wait (polling the wall clock, bounded) until the deadline has passed.
    let deadline = Instant::now() + OP_DEADLINE;
    loop {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis();
        if now_ms > u128::from(opened.deadline_unix_ms) + 50 {
            break;
        }
        assert!(Instant::now() < deadline, "the deadline never passed");
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval, deadline-bound
    }
    let late = client.put_with("d/2", "x", saga_put("short")).await;
    match late {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, tonic::Code::FailedPrecondition);
            assert!(e.message.contains("expired"), "{}", e.message);
        }
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    assert!(value_of(&client, "d/2").await.is_none(), "the refused write changed nothing");
    let commit = client.commit_saga("short", SagaOptions::default()).await;
    assert!(matches!(commit, Err(ClientError::Rpc(ref e)) if e.message.contains("saga expired")));
    let aborted =
        client.abort_saga("short", "deadline", SagaOptions::default()).await.expect("abort");
    assert_eq!(aborted.compensated.len(), 0);
    assert!(value_of(&client, "d/1").await.is_none(), "the step was compensated (deleted)");
    let bad = client.open_saga("", Duration::from_secs(1), SagaOptions::default()).await;
    assert!(matches!(bad, Err(ClientError::Rpc(ref e)) if e.code == tonic::Code::InvalidArgument));
}

/// Run the CLI with `args`; returns (exit code, stdout).
fn cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(MERIDIAN).args(args).output().expect("run meridian");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("meridian {args:?}: {stderr}");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_transfer_under_a_saga_shows_in_binlog_tail_as_json_lines() {
    let cluster = start(3).await;
    let eps = api_addrs_all(&cluster);
    let e = eps.as_str();
    assert_eq!(cli(&["kv", "put", "acct/a", "100", "--endpoints", e]).0, 0);
    assert_eq!(cli(&["saga", "open", "tx1", "--deadline", "30s", "--endpoints", e]).0, 0);
    assert_eq!(cli(&["kv", "put", "acct/a", "70", "--saga", "tx1", "--endpoints", e]).0, 0);
    assert_eq!(cli(&["kv", "put", "acct/b", "30", "--saga", "tx1", "--endpoints", e]).0, 0);
    let (code, out) = cli(&["saga", "commit", "tx1", "--json", "--endpoints", e]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(2));
    let (code, _) = cli(&["saga", "commit", "nope", "--endpoints", e]);
    assert_eq!(code, 2, "a refused saga operation is bad input");
    let first = eps.split(',').next().expect("endpoint");
    let (code, out) = cli(&["binlog", "tail", "--endpoint", first, "--limit", "5"]);
    assert_eq!(code, 0);
    let ops: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["op"].as_str().expect("op").to_string()
        })
        .collect();
    assert_eq!(ops, ["PUT", "SAGA_OPEN", "PUT", "PUT", "SAGA_COMMIT"]);
    let (code, _) = cli(&["binlog", "tail", "--endpoint", first, "--window", "70000"]);
    assert_eq!(code, 2);
}

fn api_addrs_all(cluster: &LocalCluster) -> String {
    common::client::api_addrs(cluster, &cluster.ids()).join(",")
}

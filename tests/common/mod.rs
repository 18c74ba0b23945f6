//! Shared helpers of the integration tests: the library [`TestCluster`] wired to the
//! `meridian` binary Cargo built for this test run, and small gRPC helpers with
//! bounded, deadline-limited retries.
//!
//! Retries: a write that fails with UNAVAILABLE / DEADLINE_EXCEEDED (no leader yet, a
//! new leader without its lease, a killed node) is retried with the *same*
//! request_id, so the node's exactly-once table makes the retry safe and the outcome
//! determinate. Reads are retried the same way. Everything else is returned to the
//! test. Every loop is bounded by [`OP_DEADLINE`].
//!
//! Submodules: [`client`] (seeded configs of the Rust client library and state
//! readers) and [`response_dropper`] (a proxy that loses one response on purpose).
#![allow(dead_code, missing_docs)]

pub mod client;
pub mod response_dropper;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use meridian::cluster::testing::{free_ports, TestCluster, TestOptions};
pub use meridian::cluster::LocalCluster;
pub use meridian::pb::v1 as pb;
use pb::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::Code;

/// The binary under test.
pub const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest a single logical operation (with its retries) may take.
pub const OP_DEADLINE: Duration = Duration::from_secs(20);
/// Longest a cluster-wide condition (leader, convergence, catch-up) may take.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two attempts of a retried operation.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Default test options (short Raft timings, logs in the temp dir).
pub fn options() -> TestOptions {
    TestOptions::new(MERIDIAN)
}

/// Start an `n`-node cluster with a leader.
pub async fn start(n: usize) -> TestCluster {
    TestCluster::start(n, options()).await.expect("test cluster starts")
}

/// A process-unique request id.
pub fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Kv clients for every node, by id.
pub fn clients(cluster: &LocalCluster) -> BTreeMap<u64, KvClient<Channel>> {
    cluster.ids().into_iter().map(|id| (id, cluster.kv(id).expect("kv client"))).collect()
}

fn retryable(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled)
}

/// Run `call` until it returns something other than a retryable status, or the
/// deadline passes (then the last status is returned).
pub async fn retry<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + OP_DEADLINE;
    loop {
        match call().await {
            Ok(resp) => return Ok(resp.into_inner()),
            Err(s) if retryable(&s) && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_INTERVAL).await; // pause between retries, deadline-bound
            }
            Err(s) => return Err(s),
        }
    }
}

/// Put with retries (one request_id for every attempt). `expected_version`: None
/// unconditional, Some(0) create only, Some(n) CAS.
pub async fn put(
    kv: &KvClient<Channel>,
    key: &[u8],
    value: &[u8],
    expected_version: Option<u64>,
) -> Result<pb::PutResponse, tonic::Status> {
    let req = pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        expected_version,
        request_id: request_id(),
        saga_id: String::new(),
    };
    retry(|| {
        let mut kv = kv.clone();
        let req = req.clone();
        async move { kv.put(req).await }
    })
    .await
}

/// Unconditional put that must succeed; returns the written record and the header.
pub async fn put_ok(kv: &KvClient<Channel>, key: &[u8], value: &[u8]) -> pb::PutResponse {
    let resp = put(kv, key, value, None)
        .await
        .unwrap_or_else(|s| panic!("put {:?} failed: {s:?}", String::from_utf8_lossy(key)));
    assert!(resp.succeeded, "unconditional put must succeed: {resp:?}");
    assert!(resp.record.is_some(), "a successful put returns the record: {resp:?}");
    resp
}

/// Delete with retries.
pub async fn delete(
    kv: &KvClient<Channel>,
    key: &[u8],
    expected_version: Option<u64>,
) -> Result<pb::DeleteResponse, tonic::Status> {
    let req = pb::DeleteRequest {
        key: key.to_vec(),
        expected_version,
        request_id: request_id(),
        saga_id: String::new(),
    };
    retry(|| {
        let mut kv = kv.clone();
        let req = req.clone();
        async move { kv.delete(req).await }
    })
    .await
}

/// Get with retries.
pub async fn get(
    kv: &KvClient<Channel>,
    key: &[u8],
    consistency: pb::Consistency,
) -> Result<pb::GetResponse, tonic::Status> {
    let req =
        pb::GetRequest { key: key.to_vec(), consistency: consistency as i32, max_staleness_ms: 0 };
    retry(|| {
        let mut kv = kv.clone();
        let req = req.clone();
        async move { kv.get(req).await }
    })
    .await
}

/// Every record of the key space, following page tokens, with retries per page.
pub async fn range_all(
    kv: &KvClient<Channel>,
    consistency: pb::Consistency,
) -> Result<Vec<pb::Record>, tonic::Status> {
    let mut records = Vec::new();
    let mut token = Vec::new();
    for _page in 0..10_000 {
        let req = pb::RangeRequest {
            page_token: token.clone(),
            consistency: consistency as i32,
            ..Default::default()
        };
        let resp = retry(|| {
            let mut kv = kv.clone();
            let req = req.clone();
            async move { kv.range(req).await }
        })
        .await?;
        records.extend(resp.records);
        if resp.next_page_token.is_empty() {
            return Ok(records);
        }
        token = resp.next_page_token;
    }
    panic!("range_all: more than 10000 pages");
}

/// Wait until every running node has applied the same, fully committed index, then
/// read every record from every running node (SERIALIZABLE: the replica's own state)
/// and assert they are identical, record for record. Returns the records and the index.
pub async fn assert_replicas_identical(cluster: &LocalCluster) -> (Vec<pb::Record>, u64) {
    let index = cluster.wait_converged(CLUSTER_DEADLINE).await.expect("replicas converge");
    let mut reference: Option<(u64, Vec<pb::Record>)> = None;
    for id in cluster.responsive_ids() {
        let kv = cluster.kv(id).expect("kv client");
        // Serializable reads must be served by the contacted replica itself, or the
        // comparison below would compare one node with itself.
        let probe =
            get(&kv, b"\0probe", pb::Consistency::Serializable).await.expect("serializable get");
        let served_by = probe.header.map(|h| h.node_id);
        assert_eq!(
            served_by,
            Some(id),
            "node {id}'s serializable read was served by {served_by:?}"
        );
        let records =
            range_all(&kv, pb::Consistency::Serializable).await.expect("serializable range");
        for r in &records {
            assert_record_consistent(r);
        }
        match &reference {
            None => reference = Some((id, records)),
            Some((ref_id, ref_records)) => {
                assert_eq!(
                    ref_records.len(),
                    records.len(),
                    "node {ref_id} and node {id} hold different numbers of records at index {index}"
                );
                for (a, b) in ref_records.iter().zip(&records) {
                    assert_eq!(a, b, "node {ref_id} and node {id} disagree at index {index}");
                }
            }
        }
    }
    let (_, records) = reference.expect("at least one running node");
    (records, index)
}

/// Check the invariants of one stored record.
pub fn assert_record_consistent(r: &pb::Record) {
    let key = String::from_utf8_lossy(&r.key);
    assert!(r.version >= 1, "{key}: version {} < 1", r.version);
    assert!(r.create_revision <= r.revision, "{key}: create_revision > revision: {r:?}");
    if r.version == 1 {
        assert_eq!(r.create_revision, r.revision, "{key}: version 1 must be its own creation");
    }
    assert_eq!(
        r.hash,
        meridian::record::value_hash(&r.value),
        "{key}: hash does not match the value"
    );
    assert!(r.hlc.is_some(), "{key}: record without hlc");
}

/// (wall_ns, logical) of a record's HLC, the order HLCs must strictly increase in.
pub fn hlc_of(r: &pb::Record) -> (u64, u32) {
    let h = r.hlc.as_ref().expect("record has an hlc");
    (h.wall_ns, h.logical)
}

/// The id of a running node that is not the leader.
pub async fn follower(cluster: &LocalCluster) -> u64 {
    let leader = cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
    cluster.responsive_ids().into_iter().find(|id| *id != leader).expect("a follower")
}

/// Assert `status` has `code` and its message contains every needle.
pub fn assert_status(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    needles: &[&str],
) {
    match result {
        Ok(v) => panic!("expected {code:?} with {needles:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code; message {:?}", s.message());
            for n in needles {
                assert!(s.message().contains(n), "message {:?} does not name {n:?}", s.message());
            }
        }
    }
}

/// The Prometheus text of a node's `/metrics` endpoint.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.expect("request");
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body))
        .await
        .expect("scrape in time")
        .expect("read");
    body
}

/// Sum of the samples of `name` whose labels contain every `labels` fragment.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

//! The `binlog` workload: unconditional and conditional writes, then every replica's
//! binlog is read back and checked for completeness and agreement.
//!
//! - Keys `jepsen/binlog/k<N>` (`keys` of them). Each write carries a unique integer
//!   value and its own request id `jepsen-binlog-<value>`, so its event is found in
//!   any binlog by request id.
//! - `write v`: unconditional Put. `cas v`: Put with `expected_version` = the last
//!   version this workload saw for the key (a mismatch answers succeeded = false: a
//!   definite `fail`, nothing written). Mix: 50 % each.
//! - After the run and the heal, every node's binlog is streamed from its oldest event
//!   ([`read_binlogs`]) and [`check`] requires:
//!   - every acknowledged write appears exactly once in every replica's binlog, at the
//!     revision its answer named and with its value;
//!   - an indeterminate (`info`) write appears at most once; a failed one never; no
//!     event under the prefix comes from a request the workload did not make;
//!   - each binlog is in strictly increasing (revision, index) order, and acknowledged
//!     writes are in real-time order (a write acknowledged before another was invoked
//!     has a smaller revision);
//!   - every replica holds the same positions with equal chain hashes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meridian::cluster::TestCluster;
use meridian::pb::v1 as pb;
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use super::client::{call, request, Completion};
use super::workload::{OpContext, Outcome};
use super::HarnessError;

/// Prefix of every key of this workload.
pub const KEY_PREFIX: &str = "jepsen/binlog/";
/// Chance per 100 that a write is unconditional (the rest are conditional).
pub const WRITE_PERCENT: u32 = 50;
/// Violations listed in the report at most.
pub const MAX_REPORTED_VIOLATIONS: usize = 20;
/// Window of the reading subscriptions (acked per batch).
pub const READ_WINDOW_EVENTS: u32 = 65_536;
/// Events read per binlog at most.
pub const MAX_BINLOG_EVENTS: usize = 2_000_000;
/// A binlog stream silent for this long fails the read (the server sends progress
/// every second).
pub const READ_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How one write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteOutcome {
    /// Acknowledged at this revision.
    Ok(u64),
    /// Indeterminate.
    Info,
    /// Definitely not applied.
    Fail,
}

/// One write as the workload saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// Request id (unique).
    pub request_id: String,
    /// Store key.
    pub key: Vec<u8>,
    /// Value written.
    pub value: i64,
    /// How it ended.
    pub outcome: WriteOutcome,
    /// Invocation time, ns since the run started.
    pub invoke_ns: u64,
    /// Completion time, ns since the run started.
    pub complete_ns: u64,
}

/// One binlog event, reduced to what [`check`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLite {
    /// Revision.
    pub revision: u64,
    /// Index within the revision.
    pub index: u32,
    /// Key.
    pub key: Vec<u8>,
    /// Request id.
    pub request_id: String,
    /// Value after a PUT (None otherwise).
    pub value: Option<Vec<u8>>,
    /// Chain hash.
    pub chain_hash: Vec<u8>,
}

impl From<&pb::BinlogEvent> for EventLite {
    fn from(e: &pb::BinlogEvent) -> Self {
        let put = e.op == pb::BinlogOp::Put as i32;
        Self {
            revision: e.revision,
            index: e.index,
            key: e.key.clone(),
            request_id: e.request_id.clone(),
            value: e.after.as_ref().filter(|_| put).map(|r| r.value.clone()),
            chain_hash: e.chain_hash.clone(),
        }
    }
}

/// One binlog operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogOp {
    /// Key name (`k<N>`).
    pub key: String,
    /// Unique value.
    pub value: i64,
    /// None: unconditional; Some(v): only at version v.
    pub expected_version: Option<u64>,
}

impl BinlogOp {
    /// The history's `f`.
    pub fn f(&self) -> &'static str {
        if self.expected_version.is_some() {
            "cas"
        } else {
            "write"
        }
    }
}

/// The store key of `key`.
pub fn store_key(key: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{key}").into_bytes()
}

/// The workload. See the module docs.
pub struct BinlogWorkload {
    keys: usize,
    next_value: AtomicI64,
    versions: Mutex<HashMap<String, u64>>,
    writes: Mutex<Vec<WriteRecord>>,
}

impl BinlogWorkload {
    /// Writes over `keys` keys.
    pub fn new(keys: usize) -> Self {
        Self {
            keys: keys.max(1),
            next_value: AtomicI64::new(1),
            versions: Mutex::new(HashMap::new()),
            writes: Mutex::new(Vec::new()),
        }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The next operation.
    pub fn next_op(&self, rng: &mut impl Rng) -> BinlogOp {
        let key = format!("k{}", rng.gen_range(0..self.keys));
        let value = self.next_value.fetch_add(1, Ordering::Relaxed);
        let expected_version = if rng.gen_range(0..100) < WRITE_PERCENT {
            None
        } else {
            let versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            Some(versions.get(&key).copied().unwrap_or(0))
        };
        BinlogOp { key, value, expected_version }
    }

    fn saw_version(&self, key: &str, version: u64) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let v = versions.entry(key.to_string()).or_default();
        *v = (*v).max(version);
    }

    /// Run one operation as `ctx`'s process: record, call, record.
    pub async fn run(&self, ctx: &mut OpContext<'_>, op: BinlogOp) -> Outcome {
        let request_id = format!("jepsen-binlog-{}", op.value);
        ctx.invoke(op.f(), Some(&op.key), json!(op.value));
        let invoke_ns = ctx.recorder.now_ns();
        let req = pb::PutRequest {
            key: store_key(&op.key),
            value: op.value.to_string().into_bytes(),
            expected_version: op.expected_version,
            request_id: request_id.clone(),
            saga_id: String::new(),
        };
        let (completion, outcome) = match call(ctx.timeout, ctx.kv.put(request(req, ctx.timeout)))
            .await
        {
            Ok(r) if r.succeeded => match r.record {
                Some(rec) => {
                    self.saw_version(&op.key, rec.version);
                    (Completion::Ok(json!(op.value)), WriteOutcome::Ok(rec.revision))
                }
                None => (Completion::Info("succeeded without a record".into()), WriteOutcome::Info),
            },
            Ok(r) if op.expected_version.is_some() => {
                self.saw_version(&op.key, r.current.as_ref().map_or(0, |c| c.version));
                (Completion::Fail("version did not match".into()), WriteOutcome::Fail)
            }
            Ok(r) => (
                Completion::Info(format!("unconditional put answered succeeded=false: {r:?}")),
                WriteOutcome::Info,
            ),
            Err(e) => {
                let c = e.write_completion();
                let o = if matches!(c, Completion::Fail(_)) {
                    WriteOutcome::Fail
                } else {
                    WriteOutcome::Info
                };
                (c, o)
            }
        };
        let record = WriteRecord {
            request_id,
            key: store_key(&op.key),
            value: op.value,
            outcome,
            invoke_ns,
            complete_ns: ctx.recorder.now_ns(),
        };
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).push(record);
        ctx.complete(op.f(), Some(&op.key), json!(op.value), completion)
    }
}

/// Every node's whole binlog, read after the cluster converged.
pub async fn read_binlogs(
    cluster: &TestCluster,
    timeout: Duration,
) -> Result<BTreeMap<u64, Vec<EventLite>>, HarnessError> {
    cluster.wait_converged(timeout).await?;
    let mut out = BTreeMap::new();
    for id in cluster.ids() {
        out.insert(id, read_one(cluster, id, timeout).await?);
    }
    Ok(out)
}

async fn read_one(
    cluster: &TestCluster,
    id: u64,
    timeout: Duration,
) -> Result<Vec<EventLite>, HarnessError> {
    let setup = |m: String| HarnessError::Setup(format!("reading node {id}'s binlog: {m}"));
    let mut stub = pb::binlog_client::BinlogClient::new(cluster.channel(id)?)
        .max_decoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let start = pb::SubscribeRequest {
        kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
            from_revision: 0,
            prefix: Vec::new(),
            window_events: READ_WINDOW_EVENTS,
            include_saga_events: true,
        })),
    };
    tx.send(start).await.map_err(|e| setup(e.to_string()))?;
    let mut stream = stub
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| setup(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let deadline = Instant::now() + timeout;
    let mut events: Vec<EventLite> = Vec::new();
    loop {
        if Instant::now() > deadline || events.len() > MAX_BINLOG_EVENTS {
            return Err(setup(format!(
                "not finished within {timeout:?} / {MAX_BINLOG_EVENTS} events"
            )));
        }
        let msg = tokio::time::timeout(READ_SILENCE_TIMEOUT, stream.message())
            .await
            .map_err(|_| setup(format!("silent for {READ_SILENCE_TIMEOUT:?}")))?
            .map_err(|s| setup(format!("{:?}: {}", s.code(), s.message())))?
            .ok_or_else(|| setup("the server closed the stream".into()))?;
        let last_seen = events.last().map(|e| e.revision);
        if msg.events.is_empty() && last_seen.unwrap_or(0) <= msg.applied_revision {
            // A progress message: the server had nothing more to send (we ack every
            // batch, so the window is never what stopped it).
            return Ok(events);
        }
        events.extend(msg.events.iter().map(EventLite::from));
        if let Some(last) = msg.events.last() {
            let ack = pb::SubscribeRequest {
                kind: Some(pb::subscribe_request::Kind::Ack(pb::SubscribeAck {
                    revision: last.revision,
                    index: last.index,
                })),
            };
            tx.send(ack).await.map_err(|e| setup(e.to_string()))?;
        }
    }
}

/// Per-node summary in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeBinlog {
    /// Events in the binlog.
    pub events: usize,
    /// Events of this workload (under [`KEY_PREFIX`]).
    pub workload_events: usize,
    /// Last (revision, index).
    pub last: Option<(u64, u32)>,
}

/// The verdict of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BinlogResult {
    /// No violation.
    pub valid: bool,
    /// Acknowledged writes.
    pub acknowledged: usize,
    /// Indeterminate writes.
    pub indeterminate: usize,
    /// Indeterminate writes found applied.
    pub indeterminate_applied: usize,
    /// Writes that definitely failed.
    pub failed: usize,
    /// Per node.
    pub nodes: BTreeMap<u64, NodeBinlog>,
    /// Violations found (all counted).
    pub violation_count: usize,
    /// The first [`MAX_REPORTED_VIOLATIONS`] violations.
    pub violations: Vec<String>,
}

impl BinlogResult {
    fn violation(&mut self, v: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_REPORTED_VIOLATIONS {
            self.violations.push(v);
        }
    }
}

/// Check `writes` against every node's binlog (see the module docs).
pub fn check(writes: &[WriteRecord], binlogs: &BTreeMap<u64, Vec<EventLite>>) -> BinlogResult {
    let mut r = BinlogResult::default();
    if binlogs.is_empty() {
        r.violation("no binlog was read".into());
    }
    check_agreement(binlogs, &mut r);
    let by_id: HashMap<&str, &WriteRecord> =
        writes.iter().map(|w| (w.request_id.as_str(), w)).collect();
    for w in writes {
        match w.outcome {
            WriteOutcome::Ok(_) => r.acknowledged += 1,
            WriteOutcome::Info => r.indeterminate += 1,
            WriteOutcome::Fail => r.failed += 1,
        }
    }
    let mut info_applied: HashMap<&str, usize> = HashMap::new();
    for (node, events) in binlogs {
        let mut found: HashMap<&str, Vec<&EventLite>> = HashMap::new();
        let mut summary = NodeBinlog {
            events: events.len(),
            last: events.last().map(|e| (e.revision, e.index)),
            ..NodeBinlog::default()
        };
        for e in events.iter().filter(|e| e.key.starts_with(KEY_PREFIX.as_bytes())) {
            summary.workload_events += 1;
            if !by_id.contains_key(e.request_id.as_str()) {
                r.violation(format!(
                    "node {node}: event at {}.{} from unknown request {:?}",
                    e.revision, e.index, e.request_id
                ));
            }
            found.entry(e.request_id.as_str()).or_default().push(e);
        }
        r.nodes.insert(*node, summary);
        for w in writes {
            let hits = found.get(w.request_id.as_str()).map_or(&[][..], Vec::as_slice);
            match w.outcome {
                WriteOutcome::Ok(revision) => {
                    if hits.len() != 1 {
                        r.violation(format!(
                            "node {node}: acknowledged write {} (revision {revision}) appears {} time(s)",
                            w.request_id,
                            hits.len()
                        ));
                    } else if hits[0].revision != revision
                        || hits[0].key != w.key
                        || hits[0].value.as_deref() != Some(w.value.to_string().as_bytes())
                    {
                        r.violation(format!(
                            "node {node}: acknowledged write {} (revision {revision}, value {}) \
                             appears at revision {} with value {:?}",
                            w.request_id,
                            w.value,
                            hits[0].revision,
                            hits[0].value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())
                        ));
                    }
                }
                WriteOutcome::Info => {
                    if hits.len() > 1 {
                        r.violation(format!(
                            "node {node}: indeterminate write {} appears {} times",
                            w.request_id,
                            hits.len()
                        ));
                    }
                    *info_applied.entry(w.request_id.as_str()).or_default() +=
                        usize::from(!hits.is_empty());
                }
                WriteOutcome::Fail => {
                    if !hits.is_empty() {
                        r.violation(format!("node {node}: failed write {} appears", w.request_id));
                    }
                }
            }
        }
    }
    r.indeterminate_applied = info_applied.values().filter(|n| **n > 0).count();
    check_real_time(writes, &mut r);
    r.valid = r.violation_count == 0;
    r
}

/// Positions strictly increase on every node; every node holds the same positions with
/// equal chain hashes.
fn check_agreement(binlogs: &BTreeMap<u64, Vec<EventLite>>, r: &mut BinlogResult) {
    for (node, events) in binlogs {
        if let Some(w) =
            events.windows(2).find(|w| (w[0].revision, w[0].index) >= (w[1].revision, w[1].index))
        {
            r.violation(format!(
                "node {node}: position {}.{} follows {}.{}",
                w[1].revision, w[1].index, w[0].revision, w[0].index
            ));
        }
    }
    let Some((first_node, reference)) = binlogs.iter().next() else { return };
    for (node, events) in binlogs.iter().skip(1) {
        let mismatch = reference.iter().zip(events).position(|(a, b)| {
            (a.revision, a.index) != (b.revision, b.index) || a.chain_hash != b.chain_hash
        });
        if let Some(i) = mismatch {
            let (a, b) = (&reference[i], &events[i]);
            r.violation(format!(
                "nodes {first_node} and {node} diverge at event #{i}: {}.{} vs {}.{} (chain hashes differ or positions differ)",
                a.revision, a.index, b.revision, b.index
            ));
        } else if reference.len() != events.len() {
            r.violation(format!(
                "node {first_node} has {} events, node {node} {}",
                reference.len(),
                events.len()
            ));
        }
    }
}

/// A write acknowledged before another was invoked has a smaller revision.
fn check_real_time(writes: &[WriteRecord], r: &mut BinlogResult) {
    let mut oks: Vec<(&WriteRecord, u64)> = writes
        .iter()
        .filter_map(|w| match w.outcome {
            WriteOutcome::Ok(rev) => Some((w, rev)),
            _ => None,
        })
        .collect();
    let mut by_complete = oks.clone();
    by_complete.sort_by_key(|(w, _)| w.complete_ns);
    oks.sort_by_key(|(w, _)| w.invoke_ns);
    let mut done = 0;
    let mut max_done: Option<(&WriteRecord, u64)> = None;
    for (w, rev) in oks {
        while done < by_complete.len() && by_complete[done].0.complete_ns < w.invoke_ns {
            let cand = by_complete[done];
            if max_done.is_none_or(|(_, m)| cand.1 > m) {
                max_done = Some(cand);
            }
            done += 1;
        }
        if let Some((earlier, erev)) = max_done {
            if erev >= rev {
                r.violation(format!(
                    "write {} (revision {rev}) was invoked after {} (revision {erev}) was \
                     acknowledged, yet precedes it in the binlog",
                    w.request_id, earlier.request_id
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, value: i64, outcome: WriteOutcome, t: (u64, u64)) -> WriteRecord {
        WriteRecord {
            request_id: id.into(),
            key: store_key("k0"),
            value,
            outcome,
            invoke_ns: t.0,
            complete_ns: t.1,
        }
    }

    fn ev(rev: u64, id: &str, value: i64, hash: &str) -> EventLite {
        EventLite {
            revision: rev,
            index: 0,
            key: store_key("k0"),
            request_id: id.into(),
            value: Some(value.to_string().into_bytes()),
            chain_hash: hash.as_bytes().to_vec(),
        }
    }

    fn three(events: Vec<EventLite>) -> BTreeMap<u64, Vec<EventLite>> {
        (1..=3).map(|n| (n, events.clone())).collect()
    }

    #[test]
    fn a_complete_history_is_valid() {
        let writes = vec![
            w("a", 1, WriteOutcome::Ok(5), (0, 10)),
            w("b", 2, WriteOutcome::Info, (5, 20)),
            w("c", 3, WriteOutcome::Ok(7), (30, 40)),
            w("d", 4, WriteOutcome::Fail, (30, 40)),
        ];
        let logs = three(vec![ev(5, "a", 1, "h5"), ev(6, "b", 2, "h6"), ev(7, "c", 3, "h7")]);
        let r = check(&writes, &logs);
        assert!(r.valid, "{r:#?}");
        assert_eq!(
            (r.acknowledged, r.indeterminate, r.indeterminate_applied, r.failed),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn missing_duplicated_failed_and_foreign_events_are_violations() {
        let writes = vec![
            w("a", 1, WriteOutcome::Ok(5), (0, 10)),
            w("b", 2, WriteOutcome::Ok(6), (0, 10)),
            w("f", 3, WriteOutcome::Fail, (0, 10)),
        ];
        let mut logs = three(vec![ev(5, "a", 1, "h5"), ev(6, "b", 2, "h6"), ev(7, "f", 3, "h7")]);
        logs.get_mut(&3).expect("node 3").retain(|e| e.request_id != "b");
        logs.get_mut(&2).expect("node 2").push(ev(8, "zz", 9, "h8"));
        let r = check(&writes, &logs);
        assert!(!r.valid);
        let text = r.violations.join("\n");
        assert!(text.contains("node 3: acknowledged write b"), "{text}");
        assert!(text.contains("failed write f appears"), "{text}");
        assert!(text.contains("unknown request \"zz\""), "{text}");
        assert!(text.contains("diverge") || text.contains("events, node"), "{text}");
    }

    #[test]
    fn unequal_chain_hashes_and_real_time_inversions_are_violations() {
        let writes =
            vec![w("a", 1, WriteOutcome::Ok(9), (0, 10)), w("b", 2, WriteOutcome::Ok(8), (20, 30))];
        let mut logs = three(vec![ev(8, "b", 2, "h8"), ev(9, "a", 1, "h9")]);
        logs.get_mut(&2).expect("node 2")[1].chain_hash = b"evil".to_vec();
        let r = check(&writes, &logs);
        let text = r.violations.join("\n");
        assert!(text.contains("nodes 1 and 2 diverge at event #1"), "{text}");
        assert!(text.contains("invoked after a"), "{text}");
    }
}

//! The value of every key: [`Record`], with its version metadata, and the per-entry
//! write [`Command`]s that the Raft log carries.
//!
//! Invariants of a stored record (checked by [`Record::check`] before every write and
//! after every read):
//! - `version >= 1` (0 means absent and is never stored);
//! - `create_revision <= revision`, and `version == 1` implies they are equal;
//! - `hash == value_hash(&value)`.
//!
//! Pure data: serde for storage and the Raft log (postcard), `From` impls for protobuf.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::pb::v1 as pb;

/// Default key size limit in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default value size limit in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Maximum number of compares plus operations in one Txn.
pub const MAX_TXN_OPS: usize = 128;

/// Raft log index of a write: global and monotonic.
pub type Revision = u64;

/// The 64-bit hash carried with every value (xxh3-64).
pub fn value_hash(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

/// Who proposed a write.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Source {
    /// Leader node id.
    pub node_id: u64,
    /// Leader region label.
    pub region: String,
}

/// Lifecycle status of a record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Status {
    /// Durable and visible.
    #[default]
    Committed,
    /// Written by an open saga (the saga id).
    Pending(String),
    /// Undone by a compensating write.
    Compensated,
}

/// One key's current value and its version metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key (1..=max_key_bytes bytes).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value (0..=max_value_bytes bytes).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Per-key counter: 1 on create, +1 on every write.
    pub version: u64,
    /// Raft log index of the write that produced this record.
    pub revision: Revision,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// HLC assigned at apply (strictly increasing in log order).
    pub hlc: Timestamp,
    /// xxh3-64 of `value`.
    pub hash: u64,
    /// The proposing leader.
    pub source: Source,
    /// Lifecycle status.
    pub status: Status,
}

/// A record that breaks an invariant: data corruption.
#[derive(Debug, thiserror::Error)]
#[error("corrupt record for key {key:?}: {reason}")]
pub struct CorruptRecord {
    /// Key (lossy UTF-8) of the bad record.
    pub key: String,
    /// Which invariant failed, with values.
    pub reason: String,
}

impl Record {
    /// Check the stored-record invariants (see module docs).
    pub fn check(&self) -> Result<(), CorruptRecord> {
        let fail = |reason: String| {
            Err(CorruptRecord { key: String::from_utf8_lossy(&self.key).into_owned(), reason })
        };
        if self.version == 0 {
            return fail("version 0 stored".into());
        }
        if self.create_revision > self.revision {
            return fail(format!(
                "create_revision {} > revision {}",
                self.create_revision, self.revision
            ));
        }
        if self.version == 1 && self.create_revision != self.revision {
            return fail(format!(
                "version 1 but create_revision {} != revision {}",
                self.create_revision, self.revision
            ));
        }
        let h = value_hash(&self.value);
        if self.hash != h {
            return fail(format!("hash {:#x} != value hash {h:#x}", self.hash));
        }
        Ok(())
    }
}

/// How a Compare compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// ==
    Equal,
    /// !=
    NotEqual,
    /// >
    Greater,
    /// <
    Less,
}

impl CompareOp {
    /// Apply to two ordered values.
    pub fn holds<T: Ord + ?Sized>(self, actual: &T, operand: &T) -> bool {
        match self {
            CompareOp::Equal => actual == operand,
            CompareOp::NotEqual => actual != operand,
            CompareOp::Greater => actual > operand,
            CompareOp::Less => actual < operand,
        }
    }
}

/// What a Compare looks at, with its operand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's version (0 when absent).
    Version(u64),
    /// The value bytes (an absent key never matches).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Existence.
    Exists(bool),
}

/// One condition of a Txn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key compared.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Comparison operator.
    pub op: CompareOp,
    /// Target and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// Evaluate against the key's current record (None when absent).
    pub fn holds(&self, current: Option<&Record>) -> bool {
        match &self.target {
            CompareTarget::Version(v) => self.op.holds(&current.map_or(0, |r| r.version), v),
            CompareTarget::Value(v) => {
                current.is_some_and(|r| self.op.holds(r.value.as_slice(), v.as_slice()))
            }
            CompareTarget::Exists(e) => self.op.holds(&current.is_some(), e),
        }
    }
}

/// One operation inside a Txn branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Write a value.
    Put {
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Read a key (at the Txn's point in the log).
    Get {
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

impl TxnOp {
    /// The key this op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }
}

/// The state-machine operation of a write command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace.
    Put {
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// None: unconditional; Some(0): create only; Some(n): only at version n.
        expected_version: Option<u64>,
    },
    /// Remove.
    Delete {
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// None: unconditional; Some(n): only at version n.
        expected_version: Option<u64>,
    },
    /// Atomic multi-key compare-and-swap.
    Txn {
        /// All must hold for `success` to run; else `failure` runs.
        compares: Vec<Compare>,
        /// Ops when every compare holds.
        success: Vec<TxnOp>,
        /// Ops otherwise.
        failure: Vec<TxnOp>,
    },
    /// Open a saga with a deadline `timeout_ms` after the applied HLC's wall time.
    SagaOpen {
        /// Saga id (validated by the server).
        saga_id: String,
        /// Time to commit, ms (1..=[`MAX_SAGA_TIMEOUT_MS`]).
        timeout_ms: u64,
    },
    /// Commit an open saga: its PENDING records become COMMITTED.
    SagaCommit {
        /// Saga id.
        saga_id: String,
    },
    /// Abort a saga: compensate every step whose key still holds the saga's write.
    SagaAbort {
        /// Saga id.
        saga_id: String,
        /// Why (kept in the saga).
        reason: String,
    },
}

/// Longest saga timeout, ms (one day).
pub const MAX_SAGA_TIMEOUT_MS: u64 = 86_400_000;
/// Most steps (key writes) one saga may record; a write beyond is refused.
pub const MAX_SAGA_STEPS: usize = 1_024;
/// Longest saga abort reason kept, bytes.
pub const MAX_SAGA_REASON_BYTES: usize = 1_024;

/// Lifecycle of a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaState {
    /// Writes may join it until its deadline.
    Open,
    /// Its records became COMMITTED.
    Committed,
    /// Its steps were compensated (or reported as conflicts).
    Aborted,
}

/// One write made under a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaStep {
    /// The key written.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the write.
    pub revision: Revision,
    /// The record before the write (None: the key did not exist).
    pub before: Option<Record>,
    /// The version the write produced (0 for a delete).
    pub after_version: u64,
}

/// A saga step that could not be compensated because its key moved on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaConflict {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The version the saga's write produced (0 for a delete).
    pub saga_version: u64,
    /// The key's current record (None: absent).
    pub current: Option<Record>,
}

/// A replicated saga: its state, deadline and steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    /// Saga id.
    pub id: String,
    /// Lifecycle state.
    pub state: SagaState,
    /// When the saga expires, ms since the Unix epoch (HLC wall time).
    pub deadline_unix_ms: u64,
    /// Writes made under the saga, in log order (at most [`MAX_SAGA_STEPS`]).
    pub steps: Vec<SagaStep>,
    /// Why it was aborted (empty otherwise).
    pub abort_reason: String,
    /// The outcome of its commit or abort, replayed when repeated (idempotence).
    pub closed: Option<Box<Outcome>>,
}

/// A write proposed to Raft: what the leader stamps and the state machine applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Idempotency key (may be empty: then no exactly-once protection).
    pub request_id: String,
    /// Saga id tagging the write (empty: none).
    pub saga_id: String,
    /// Trace id of the request, for logs (may be empty).
    pub trace_id: String,
    /// HLC proposed by the leader; apply stores max(this, last + 1 logical).
    pub hlc: Timestamp,
    /// The proposing leader.
    pub source: Source,
    /// The operation.
    pub op: Op,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.op {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Txn { .. } => "txn",
            Op::SagaOpen { .. } => "saga_open",
            Op::SagaCommit { .. } => "saga_commit",
            Op::SagaAbort { .. } => "saga_abort",
        };
        write!(f, "{kind}(request_id={}, hlc={})", self.request_id, self.hlc)
    }
}

/// The deterministic result of applying one write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Result of a Put.
    Put {
        /// False when the version check failed.
        succeeded: bool,
        /// Record written (when succeeded).
        record: Option<Record>,
        /// Current record (when the check failed; None if absent).
        current: Option<Record>,
    },
    /// Result of a Delete.
    Delete {
        /// True when a record was removed.
        succeeded: bool,
        /// The removed record.
        record: Option<Record>,
        /// Current record when the check failed.
        current: Option<Record>,
    },
    /// Result of a Txn.
    Txn {
        /// Whether every compare held.
        succeeded: bool,
        /// One result per op of the branch that ran: (found, record).
        results: Vec<Option<Record>>,
    },
    /// A non-command entry (blank, membership): no outcome.
    None,
    /// The command was refused by a deterministic rule (a saga that is not open, has
    /// expired or is full): nothing changed. The server answers FAILED_PRECONDITION.
    Refused {
        /// Why, for the client.
        reason: String,
    },
    /// A saga was opened.
    SagaOpened {
        /// When it expires, ms since the Unix epoch.
        deadline_unix_ms: u64,
    },
    /// A saga committed.
    SagaCommitted {
        /// The records that became COMMITTED.
        records: Vec<Record>,
    },
    /// A saga was aborted.
    SagaAborted {
        /// Records as restored (a restored absence is not listed).
        compensated: Vec<Record>,
        /// Steps whose key moved on (left alone).
        conflicts: Vec<SagaConflict>,
    },
    /// A retry whose request id was first used for a request with other values: nothing
    /// changed. The server answers INVALID_ARGUMENT.
    ReusedRequestId,
}

/// What apply returns for one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Log index of the entry.
    pub revision: Revision,
    /// HLC the entry was applied at.
    pub hlc: Timestamp,
    /// The outcome.
    pub outcome: Outcome,
    /// True when replayed from the exactly-once table (nothing changed).
    pub duplicate: bool,
}

// ---- protobuf conversions -------------------------------------------------------

impl From<Timestamp> for pb::Hlc {
    fn from(t: Timestamp) -> Self {
        pb::Hlc { wall_ns: t.wall_ns, logical: t.logical, node: t.node }
    }
}

impl From<pb::Hlc> for Timestamp {
    fn from(t: pb::Hlc) -> Self {
        Timestamp { wall_ns: t.wall_ns, logical: t.logical, node: t.node }
    }
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        let (status, saga_id) = match r.status {
            Status::Committed => (pb::RecordStatus::Committed, String::new()),
            Status::Pending(s) => (pb::RecordStatus::Pending, s),
            Status::Compensated => (pb::RecordStatus::Compensated, String::new()),
        };
        pb::Record {
            key: r.key,
            value: r.value,
            version: r.version,
            revision: r.revision,
            create_revision: r.create_revision,
            hlc: Some(r.hlc.into()),
            hash: r.hash,
            source: Some(pb::Source { node_id: r.source.node_id, region: r.source.region }),
            status: status as i32,
            saga_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Record`] as it was declared before its byte fields were `serde_bytes`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ElementWise {
        key: Vec<u8>,
        value: Vec<u8>,
        version: u64,
        revision: Revision,
        create_revision: Revision,
        hlc: Timestamp,
        hash: u64,
        source: Source,
        status: Status,
    }

    #[test]
    fn byte_fields_keep_their_encoding() {
        // A Vec<u8> in postcard is its length and its bytes either way: serde_bytes
        // only writes them as one slice instead of one by one, so every log entry,
        // record and binlog chunk written before reads back, and new ones are the same
        // bytes (replicas of both builds agree, and the binlog's chain hashes hold).
        let value: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let r = Record { value: value.clone(), key: b"k\x00\xff".to_vec(), ..rec(3, 9, 2) };
        let old = ElementWise {
            key: r.key.clone(),
            value,
            version: r.version,
            revision: r.revision,
            create_revision: r.create_revision,
            hlc: r.hlc,
            hash: r.hash,
            source: r.source.clone(),
            status: r.status.clone(),
        };
        let bytes = postcard::to_stdvec(&old).expect("encode");
        assert_eq!(postcard::to_stdvec(&r).expect("encode"), bytes);
        assert_eq!(postcard::from_bytes::<Record>(&bytes).expect("decode"), r);
    }

    fn rec(version: u64, revision: u64, create: u64) -> Record {
        Record {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            version,
            revision,
            create_revision: create,
            hlc: Timestamp::ZERO,
            hash: value_hash(b"v"),
            source: Source::default(),
            status: Status::Committed,
        }
    }

    #[test]
    fn check_accepts_a_well_formed_record() {
        rec(1, 5, 5).check().expect("valid");
        rec(3, 9, 5).check().expect("valid");
    }

    #[test]
    fn check_rejects_broken_invariants() {
        assert!(rec(0, 5, 5).check().is_err());
        assert!(rec(2, 4, 5).check().is_err());
        assert!(rec(1, 6, 5).check().is_err());
        let mut r = rec(1, 5, 5);
        r.hash ^= 1;
        assert!(r.check().is_err());
    }

    #[test]
    fn compare_on_absent_key_uses_version_zero_and_never_matches_value() {
        let c =
            Compare { key: b"k".to_vec(), op: CompareOp::Equal, target: CompareTarget::Version(0) };
        assert!(c.holds(None));
        let c = Compare {
            key: b"k".to_vec(),
            op: CompareOp::NotEqual,
            target: CompareTarget::Value(b"x".to_vec()),
        };
        assert!(!c.holds(None));
        let r = rec(1, 1, 1);
        assert!(c.holds(Some(&r)));
        let c = Compare {
            key: b"k".to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::Exists(true),
        };
        assert!(c.holds(Some(&r)));
        assert!(!c.holds(None));
    }
}

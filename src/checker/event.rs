//! The checker's own view of a binlog event: a plain, serialisable copy of the fields
//! the rules need, converted once from the protobuf type at the edge.
//!
//! Positions are `(revision, index)`: events are totally ordered by them on every
//! replica. HLCs are compared as `(wall_ns, logical)` (the node id is only a tie
//! breaker between clocks, and every replica stores the same value).

use serde::{Deserialize, Serialize};

use crate::pb::v1 as pb;

/// Where an event sits in the log: (Raft revision, index within the revision).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// Raft log index of the command.
    pub revision: u64,
    /// Index of the change within the revision, from 0.
    pub index: u32,
}

impl Position {
    /// A position.
    pub fn new(revision: u64, index: u32) -> Self {
        Self { revision, index }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.revision, self.index)
    }
}

/// A hybrid logical clock stamp as carried by an event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// Logical counter.
    pub logical: u32,
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ns, self.logical)
    }
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A key was created or replaced.
    Put,
    /// A key was removed.
    Delete,
    /// A saga was opened.
    SagaOpen,
    /// A saga committed.
    SagaCommit,
    /// A saga was aborted (its compensations precede this event).
    SagaAbort,
    /// An op this checker does not know (a newer server).
    Unknown,
}

impl Op {
    /// Whether this op changes a key (PUT or DELETE).
    pub fn is_key_change(self) -> bool {
        matches!(self, Op::Put | Op::Delete)
    }
}

/// The parts of a record the rules look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Per-key version (1 on create).
    pub version: u64,
    /// Revision that produced the record.
    pub revision: u64,
}

impl From<&pb::Record> for RecordView {
    fn from(r: &pb::Record) -> Self {
        Self { value: r.value.clone(), version: r.version, revision: r.revision }
    }
}

/// One binlog event, as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log.
    pub pos: Position,
    /// HLC the command was applied with.
    pub hlc: Stamp,
    /// Key changed (empty for saga lifecycle events).
    pub key: Vec<u8>,
    /// What happened.
    pub op: Op,
    /// Version of the key before the change (0: absent).
    pub before_version: u64,
    /// The record before the change, as the replica held it.
    pub before: Option<RecordView>,
    /// The record after the change (PUT only).
    pub after: Option<RecordView>,
    /// Idempotency key of the request.
    pub request_id: String,
    /// Saga the change belongs to (empty: none).
    pub saga_id: String,
    /// SAGA_OPEN only: deadline, ms since the Unix epoch.
    pub saga_deadline_unix_ms: u64,
    /// Chain hash after this event (16 bytes on a conforming server).
    pub chain_hash: Vec<u8>,
    /// Whether the write restores a saga step's before-image.
    pub compensation: bool,
}

impl From<&pb::BinlogEvent> for Event {
    fn from(e: &pb::BinlogEvent) -> Self {
        let op = match pb::BinlogOp::try_from(e.op) {
            Ok(pb::BinlogOp::Put) => Op::Put,
            Ok(pb::BinlogOp::Delete) => Op::Delete,
            Ok(pb::BinlogOp::SagaOpen) => Op::SagaOpen,
            Ok(pb::BinlogOp::SagaCommit) => Op::SagaCommit,
            Ok(pb::BinlogOp::SagaAbort) => Op::SagaAbort,
            Ok(pb::BinlogOp::Unspecified) | Err(_) => Op::Unknown,
        };
        let hlc = e
            .hlc
            .as_ref()
            .map(|h| Stamp { wall_ns: h.wall_ns, logical: h.logical })
            .unwrap_or_default();
        Self {
            pos: Position::new(e.revision, e.index),
            hlc,
            key: e.key.clone(),
            op,
            before_version: e.before_version,
            before: e.before.as_ref().map(RecordView::from),
            after: e.after.as_ref().map(RecordView::from),
            request_id: e.request_id.clone(),
            saga_id: e.saga_id.clone(),
            saga_deadline_unix_ms: e.saga_deadline_unix_ms,
            chain_hash: e.chain_hash.clone(),
            compensation: e.compensation,
        }
    }
}

/// Lower-case hex of `bytes` (chain hashes in findings).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A key for display: UTF-8 when valid, else `0x` + hex.
pub fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", hex(key)),
    }
}

impl Event {
    /// A compact JSON summary of the event (for findings).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "revision": self.pos.revision,
            "index": self.pos.index,
            "op": self.op,
            "key": key_text(&self.key),
            "hlc": self.hlc.to_string(),
            "before_version": self.before_version,
            "before_value": self.before.as_ref().map(|r| String::from_utf8_lossy(&r.value).into_owned()),
            "after_version": self.after.as_ref().map(|r| r.version),
            "after_value": self.after.as_ref().map(|r| String::from_utf8_lossy(&r.value).into_owned()),
            "request_id": self.request_id,
            "saga_id": self.saga_id,
            "chain_hash": hex(&self.chain_hash),
        })
    }
}

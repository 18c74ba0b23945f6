//! The openraft type configuration shared by storage, Raft and the server.
//!
//! It lives at the bottom layer (storage) because the log and state machine are
//! generic over it; `crate::raft` re-exports it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::{ApplyResult, Command};

/// How peers and clients reach one node; stored in the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Public gRPC API address (host:port).
    pub api_addr: String,
    /// Internal Raft address (host:port).
    pub raft_addr: String,
    /// Region label.
    pub region: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{api={}, raft={}, region={}}}", self.api_addr, self.raft_addr, self.region)
    }
}

impl fmt::Display for ApplyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "applied(rev={}, hlc={}, dup={})", self.revision, self.hlc, self.duplicate)
    }
}

openraft::declare_raft_types!(
    /// Meridian's Raft types: commands are [`Command`], responses [`ApplyResult`],
    /// node ids u64, node metadata [`NodeInfo`].
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = u64,
        Node = NodeInfo,
);

/// A node id.
pub type NodeId = u64;
/// A Raft log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

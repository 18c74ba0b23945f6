//! Raft: openraft's type configuration (from `storage::types`), the openraft `Config`
//! built from ours, and the node-to-node transport over tonic (`network` is the
//! client half, `service` the server half). This is the only layer below `server`
//! that knows gRPC types.

pub mod network;
pub mod service;

use std::sync::Arc;

use crate::config::NodeConfig;
pub use crate::storage::types::{NodeId, NodeInfo, TypeConfig};
use crate::storage::StateMachine;

/// The Raft handle of a Meridian node.
pub type MeridianRaft = openraft::Raft<TypeConfig, StateMachine>;

/// Errors building the Raft node.
#[derive(Debug, thiserror::Error)]
pub enum RaftSetupError {
    /// openraft rejected the configuration.
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
}

/// The openraft configuration for `cfg`, every option we depend on set explicitly.
pub fn openraft_config(cfg: &NodeConfig) -> Result<Arc<openraft::Config>, RaftSetupError> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: cfg.cluster_name.clone(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: r.snapshot_timeout_ms,
        max_payload_entries: r.max_payload_entries,
        // Snapshots are triggered by `server::snapshots`, which also weighs the log's
        // size against the snapshot's.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        snapshot_max_chunk_size: r.snapshot_chunk_bytes,
        max_in_snapshot_log_to_keep: r.max_in_snapshot_log_to_keep,
        // A restarted leader must win a fresh election: our state machine is not
        // flushed on every apply, so restoring leadership without a vote is unsafe.
        enable_leader_restore: Some(false),
        // Pre-vote stops a partitioned node from disrupting the cluster on rejoin.
        enable_pre_vote: Some(true),
        allow_log_reversion: Some(false),
        enable_tick: true,
        enable_heartbeat: true,
        enable_elect: true,
        // Replicate an entry as soon as it is submitted, in parallel with the local
        // fsync: measured (docs/PERFORMANCE.md) put at 64 clients 3.0-3.3k -> 3.4-4.0k.
        broadcast_submitted_on_append: Some(true),
        // Proposals are batched as they queue (up to 4096); lingering only adds latency.
        api_batch_linger_ms: 0,
        ..Default::default()
    };
    Ok(Arc::new(c.validate()?))
}

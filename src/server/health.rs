//! The standard gRPC health service (`grpc.health.v1.Health`), kept up to date from
//! Raft state so load balancers and generic tools route only to useful nodes.
//!
//! A node reports SERVING (for "" and "meridian.v1.Kv") only when it belongs to an
//! initialised cluster and is in touch with it:
//! - a leader: a quorum acknowledged it within the max election timeout, and it has
//!   applied what it committed, up to [`MAX_APPLY_LAG`] entries;
//! - a follower or learner: it accepted an AppendEntries from the leader within the
//!   max election timeout, and has applied the commit index that leader announced, up
//!   to [`MAX_APPLY_LAG`] entries.
//!
//! Under load, apply always trails commit by the entries in flight: demanding exact
//! equality made every node flap between SERVING and NOT_SERVING on every write. A
//! node catching up after a restart or a partition is far more than the allowance
//! behind.
//!
//! Otherwise (partitioned away, catching up, electing, not initialised, removed from
//! the membership) NOT_SERVING.
//! `meridian.v1.Cluster` is always SERVING: status must stay reachable.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Instant as _, ServerState};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::core::NodeCore;

/// How often health is re-evaluated, in addition to every change of role, leader or
/// membership. (Not on every Raft metrics change: under load those come thousands of
/// times a second, each a wakeup and an evaluation on the write path's runtime.)
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Committed entries a node may not have applied yet and still report SERVING (one
/// apply batch of the state machine).
pub const MAX_APPLY_LAG: u64 = 1_024;

/// Whether the node should report SERVING now.
pub fn is_serving(core: &NodeCore) -> bool {
    let m = core.raft.metrics();
    let m = m.borrow_watched();
    if m.membership_config.membership().voter_ids().next().is_none() {
        return false;
    }
    let member = m.membership_config.membership().get_node(&core.id).is_some();
    if !member || core.freshness.removed().is_some() {
        return false;
    }
    let fresh = Duration::from_millis(core.config.raft.election_timeout_max_ms);
    let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
    match m.state {
        ServerState::Leader => {
            let committed = m.local_committed.as_ref().map_or(0, |l| l.index);
            // A sole voter is its own quorum; openraft refreshes no ack time for it.
            let mut voters = m.membership_config.membership().voter_ids();
            let alone = voters.next() == Some(core.id) && voters.next().is_none();
            let acked = alone || m.last_quorum_acked.as_ref().is_some_and(|t| t.elapsed() < fresh);
            acked && applied.saturating_add(MAX_APPLY_LAG) >= committed
        }
        ServerState::Follower | ServerState::Learner => {
            core.contact.last().is_some_and(|(at, leader_commit)| {
                at.elapsed() < fresh && applied.saturating_add(MAX_APPLY_LAG) >= leader_commit
            })
        }
        ServerState::Candidate | ServerState::Shutdown => false,
    }
}

/// Keep `reporter` up to date until `stop` turns true.
pub async fn run(
    core: Arc<NodeCore>,
    reporter: HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    reporter.set_service_status("meridian.v1.Cluster", ServingStatus::Serving).await;
    let mut metrics = core.raft.server_metrics();
    let mut last = None;
    loop {
        let serving = is_serving(&core);
        if last != Some(serving) {
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", status).await;
            reporter.set_service_status("meridian.v1.Kv", status).await;
            tracing::info!(serving, "health changed");
            last = Some(serving);
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = metrics.changed() => {}
            _ = tokio::time::sleep(HEALTH_POLL_INTERVAL) => {}
        }
    }
}

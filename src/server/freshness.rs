//! Freshness proofs: how stale this node's state machine can be, at most, proven
//! without trusting clocks to agree. The basis of bounded-staleness reads served
//! locally by any voter or learner, in any region.
//!
//! A proof is a pair `(asked_at, index)`: at local monotonic time `asked_at` this node
//! asked the leader for a read index and got `index` back. The leader answered after
//! it received the question (so after `asked_at`) and after confirming with a quorum
//! that it was still the leader; so every write acknowledged to any client before
//! `asked_at` has a log index `<= index`. Once this node has applied `index`, its data
//! includes every write acknowledged before `asked_at`: it is at most
//! `now - asked_at` stale. No clock comparison across nodes is involved; only this
//! node's monotonic clock.
//!
//! A background task asks every `reads.freshness_interval_ms` (a leader asks itself:
//! a heartbeat round). A bounded-staleness read with bound `B` is served locally when
//! the newest proof whose index is applied is younger than `B`; otherwise it takes the
//! linearizable path (a fresh read index now), which always satisfies the bound.
//! In a far region the best provable staleness is about one round trip to the leader
//! plus the leader's quorum round plus the interval (see docs/OPERATIONS.md).
//!
//! The same question tells a node that it was removed: the leader refuses read
//! indexes to non-members, and the node then answers every request with
//! FAILED_PRECONDITION (NODE_REMOVED) until it is a member again.
//!
//! Proofs cost the leader a quorum round each, so a node asks every interval only while
//! bounded-staleness reads were served in the last [`DEMAND_WINDOW`]; otherwise it asks
//! once per [`IDLE_PROOF_INTERVAL`] (which still keeps the membership verdict fresh).
//!
//! Invariants: proofs are kept in `asked_at` order, at most [`MAX_PROOFS`]; at most
//! [`MAX_INFLIGHT_PROOFS`] questions are in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;

use super::core::NodeCore;
use crate::raft::network::ReadIndexError;

/// Proofs kept (the newest ones).
pub const MAX_PROOFS: usize = 16;
/// Read-index questions in flight at once (a slow leader round never piles up).
pub const MAX_INFLIGHT_PROOFS: usize = 4;
/// Bounded-staleness reads within this window keep proofs at the configured interval.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(10);
/// Proof interval while no bounded-staleness read was asked for.
pub const IDLE_PROOF_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of one question, at least this long (and at least 10 intervals).
pub const MIN_PROOF_TIMEOUT: Duration = Duration::from_secs(2);

/// One proof: every write acknowledged before `asked_at` has an index <= `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// When the question was asked (local monotonic clock).
    pub asked_at: Instant,
    /// The read index the leader answered.
    pub index: u64,
}

/// The proofs of one node, and whether the leader said it is not a member.
#[derive(Debug, Default)]
pub struct Freshness {
    proofs: Mutex<VecDeque<Proof>>,
    last_demand: Mutex<Option<Instant>>,
    removed: AtomicBool,
    removed_reason: Mutex<String>,
}

impl Freshness {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Proof>> {
        self.proofs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep a proof (in `asked_at` order; the oldest is dropped past [`MAX_PROOFS`]).
    pub fn record(&self, proof: Proof) {
        let mut proofs = self.lock();
        let at = proofs.iter().rposition(|p| p.asked_at <= proof.asked_at).map_or(0, |i| i + 1);
        proofs.insert(at, proof);
        while proofs.len() > MAX_PROOFS {
            proofs.pop_front();
        }
        debug_assert!(proofs
            .iter()
            .zip(proofs.iter().skip(1))
            .all(|(a, b)| a.asked_at <= b.asked_at));
    }

    /// How stale the state is at most at `now`, given `applied`: the age of the newest
    /// proof whose index is applied; None when no proof applies.
    pub fn staleness_bound(&self, applied: u64, now: Instant) -> Option<Duration> {
        self.lock()
            .iter()
            .rev()
            .find(|p| p.index <= applied)
            .map(|p| now.saturating_duration_since(p.asked_at))
    }

    /// Note that a bounded-staleness read was asked for (keeps proofs frequent).
    pub fn note_demand(&self) {
        *self.last_demand.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether a bounded-staleness read was asked for within [`DEMAND_WINDOW`].
    fn in_demand(&self) -> bool {
        self.last_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < DEMAND_WINDOW)
    }

    /// Whether the leader last said this node is not a member, and what it said.
    pub fn removed(&self) -> Option<String> {
        if self.removed.load(Ordering::Acquire) {
            Some(self.removed_reason.lock().unwrap_or_else(|e| e.into_inner()).clone())
        } else {
            None
        }
    }

    /// Record the leader's verdict on membership.
    pub fn set_removed(&self, reason: Option<String>) {
        let was = self.removed.swap(reason.is_some(), Ordering::AcqRel);
        if let Some(r) = reason {
            if !was {
                tracing::warn!(reason = %r, "the leader says this node is not a member: refusing requests");
            }
            *self.removed_reason.lock().unwrap_or_else(|e| e.into_inner()) = r;
        } else if was {
            tracing::info!("this node is a member again");
        }
    }
}

/// Ask for a read index every `reads.freshness_interval_ms` until `stop` turns true.
pub async fn run(core: Arc<NodeCore>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval_ms = core.config.reads.freshness_interval_ms;
    if interval_ms == 0 {
        return;
    }
    let interval = Duration::from_millis(interval_ms);
    let timeout = (interval * 10).max(MIN_PROOF_TIMEOUT);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT_PROOFS));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_asked: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let idle = !core.freshness.in_demand();
        if idle && last_asked.is_some_and(|t| t.elapsed() < IDLE_PROOF_INTERVAL) {
            continue;
        }
        last_asked = Some(Instant::now());
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let core = core.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let asked_at = Instant::now();
            match read_index(&core, timeout).await {
                Ok(Some(index)) => {
                    core.freshness.set_removed(None);
                    core.freshness.record(Proof { asked_at, index });
                }
                Ok(None) => {}
                Err(ReadIndexError::NotMember(m)) => core.freshness.set_removed(Some(m)),
                Err(ReadIndexError::Failed(e)) => {
                    tracing::trace!(error = %e, "freshness proof failed");
                }
            }
        });
    }
}

/// One read index: from the local Raft when leader, else from the known leader.
/// Ok(None) when there is no leader to ask.
async fn read_index(core: &NodeCore, timeout: Duration) -> Result<Option<u64>, ReadIndexError> {
    let (leader, raft_addr) = {
        let m = core.raft.metrics();
        let m = m.borrow_watched();
        let Some(leader) = m.current_leader else { return Ok(None) };
        let addr = m.membership_config.membership().get_node(&leader).map(|n| n.raft_addr.clone());
        (leader, addr)
    };
    if leader == core.id {
        let lin = tokio::time::timeout(
            timeout,
            core.raft.get_read_linearizer(openraft::ReadPolicy::ReadIndex),
        )
        .await
        .map_err(|_| ReadIndexError::Failed("local read index timed out".into()))?
        .map_err(|e| ReadIndexError::Failed(e.to_string()))?;
        return Ok(Some(lin.read_log_id().log_id().index));
    }
    let Some(raft_addr) = raft_addr else { return Ok(None) };
    let log_id = core.network.remote_read_index(core.id, leader, &raft_addr, timeout).await?;
    Ok(Some(log_id.index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_the_age_of_the_newest_applied_proof() {
        let f = Freshness::default();
        let t0 = Instant::now();
        assert_eq!(f.staleness_bound(100, t0), None, "no proof, no bound");
        f.record(Proof { asked_at: t0, index: 10 });
        f.record(Proof { asked_at: t0 + Duration::from_millis(50), index: 20 });
        let now = t0 + Duration::from_millis(80);
        assert_eq!(f.staleness_bound(20, now), Some(Duration::from_millis(30)));
        assert_eq!(
            f.staleness_bound(15, now),
            Some(Duration::from_millis(80)),
            "index 20 not applied"
        );
        assert_eq!(f.staleness_bound(5, now), None);
    }

    #[test]
    fn proofs_stay_ordered_and_bounded_when_answers_arrive_out_of_order() {
        let f = Freshness::default();
        let t0 = Instant::now();
        for i in (0..(MAX_PROOFS as u64 + 5)).rev() {
            f.record(Proof { asked_at: t0 + Duration::from_millis(i), index: i });
        }
        let proofs = f.lock().clone();
        assert_eq!(proofs.len(), MAX_PROOFS);
        assert!(proofs.iter().zip(proofs.iter().skip(1)).all(|(a, b)| a.asked_at <= b.asked_at));
    }

    #[test]
    fn removal_is_reported_and_cleared() {
        let f = Freshness::default();
        assert_eq!(f.removed(), None);
        f.set_removed(Some("node 4 is not a member".into()));
        assert_eq!(f.removed().as_deref(), Some("node 4 is not a member"));
        f.set_removed(None);
        assert_eq!(f.removed(), None);
    }
}

//! The node core shared by the gRPC services: proposing writes through Raft, read
//! barriers for each consistency level, and the leader's address for forwarding.
//!
//! Write path: validate → stamp with `hlc.now()` → `raft.client_write` → the state
//! machine's deterministic result. A new leader answers ForwardToLeader(LeaseExpired)
//! until it holds a quorum lease; that is retried here with a short pause until the
//! request deadline, so clients do not see it.
//!
//! Read path: SERIALIZABLE reads the local state machine. LINEARIZABLE takes a read
//! index from the leader (`ReadPolicy::ReadIndex`: a heartbeat round confirms
//! leadership) and waits until the local state machine has applied it; concurrent
//! readers share one such barrier per round ([`super::read_batch`]).
//! BOUNDED_STALENESS(B) is served locally when a freshness proof (see
//! [`super::freshness`]) shows the local state is at most B old; otherwise it takes
//! the linearizable path, which always satisfies the bound.
//!
//! A node the leader declared a non-member (removed), or whose own membership no longer
//! lists it, refuses every request with FAILED_PRECONDITION (NODE_REMOVED).

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardReason, LinearizableReadError, RaftError};
use tokio::time::Instant;

use crate::config::NodeConfig;
use crate::error::Error;
use crate::hlc::{Hlc, SystemClock};
use crate::pb::v1 as pb;
use crate::raft::MeridianRaft;
use crate::record::{ApplyResult, Command, Op, Source};
use crate::storage::state_machine::AppliedPoint;
use crate::storage::SmReader;

use super::read_batch;
use super::validate::{Consistency, Limits};

/// Pause between retries of a proposal refused while a new leader acquires its lease.
pub const LEASE_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A follower that has not heard from a leader for this many maximum election timeouts
/// stops forwarding to the leader it last knew (see [`NodeCore::stale_leader`]).
pub const LEADER_SILENCE_ELECTIONS: u32 = 2;

/// Everything a request handler needs. Shared behind an `Arc`.
pub struct NodeCore {
    /// This node's id.
    pub id: u64,
    /// The configuration the node runs with.
    pub config: NodeConfig,
    /// The Raft handle.
    pub raft: MeridianRaft,
    /// Read access to the state machine.
    pub reader: SmReader,
    /// The node's hybrid logical clock.
    pub hlc: Hlc,
    /// The physical clock under the HLC (offset settable for fault injection).
    pub clock: std::sync::Arc<SystemClock>,
    /// Key and value limits.
    pub limits: Limits,
    /// Whether the data dir held Raft state when the node started (a restart).
    pub had_state: bool,
    /// Counters of the exactly-once table.
    pub dedup_stats: std::sync::Arc<crate::storage::state_machine::DedupStats>,
    /// The Raft transport (for follower read-index requests to the leader).
    pub network: crate::raft::network::Network,
    /// Last contact with an accepted leader (followers).
    pub contact: std::sync::Arc<crate::raft::service::LeaderContact>,
    /// Freshness proofs (bounded-staleness reads) and the leader's membership verdict.
    pub freshness: std::sync::Arc<super::freshness::Freshness>,
    /// Linearizable read barriers shared by concurrent readers.
    pub reads: read_batch::ReadBatch,
}

impl NodeCore {
    /// Fail unless the node belongs to an initialised cluster.
    pub fn ensure_initialized(&self) -> Result<(), Error> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.membership_config.membership().voter_ids().next().is_none() {
            if self.had_state {
                // A restarted node briefly reports no membership while Raft loads its
                // state: that is transient, not "never initialised".
                return Err(Error::Unavailable(format!(
                    "node {} is still loading its state",
                    self.id
                )));
            }
            return Err(Error::NotInitialized(format!(
                "node {} has no cluster membership yet; run `meridian cluster up` or call Cluster.Initialize",
                self.id
            )));
        }
        if m.membership_config.membership().get_node(&self.id).is_none() {
            return Err(Error::Removed(format!(
                "node {} is not in the cluster's membership (log index {}); use another node",
                self.id,
                m.membership_config.log_id().as_ref().map_or(0, |l| l.index)
            )));
        }
        if let Some(reason) = self.freshness.removed() {
            return Err(Error::Removed(format!("{reason}; use another node")));
        }
        Ok(())
    }

    /// The leader as known locally: (id, api address).
    pub fn leader(&self) -> (Option<u64>, Option<String>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader;
        let addr = id.and_then(|l| {
            m.membership_config.membership().get_node(&l).map(|n| n.api_addr.clone())
        });
        (id, addr)
    }

    /// Fail fast instead of forwarding to a leader this node has not heard from for
    /// [`LEADER_SILENCE_ELECTIONS`] maximum election timeouts (it is probably cut off:
    /// forwarding would only wait out the client's deadline). None when forwarding
    /// makes sense (recent contact, or none expected yet).
    pub fn stale_leader(&self) -> Option<Error> {
        let limit = Duration::from_millis(self.config.raft.election_timeout_max_ms)
            * LEADER_SILENCE_ELECTIONS;
        let (at, _) = self.contact.last()?;
        let silence = at.elapsed();
        (silence > limit).then(|| {
            Error::Unavailable(format!(
                "node {} has not heard from a leader for {} ms (partitioned?); try another node",
                self.id,
                silence.as_millis()
            ))
        })
    }

    fn not_leader(&self, leader_id: Option<u64>) -> Error {
        let (known, addr) = self.leader();
        let leader_id = leader_id.or(known);
        let leader_api_addr = if leader_id == known { addr } else { None };
        Error::NotLeader { leader_id, leader_api_addr }
    }

    /// The response header for the state a response reflects.
    pub fn header(&self) -> pb::ResponseHeader {
        let point = self.reader.applied().unwrap_or_default();
        self.header_at(point)
    }

    /// The response header for an explicit applied point.
    pub fn header_at(&self, point: AppliedPoint) -> pb::ResponseHeader {
        let term = self.raft.metrics().borrow_watched().current_term;
        pb::ResponseHeader {
            node_id: self.id,
            revision: point.revision,
            hlc: Some(point.hlc.into()),
            term,
        }
    }

    /// Propose a write and wait for its deterministic result.
    pub async fn propose(
        &self,
        op: Op,
        request_id: String,
        saga_id: String,
        trace_id: String,
        deadline: Instant,
    ) -> Result<ApplyResult, Error> {
        self.ensure_initialized()?;
        let source = Source { node_id: self.id, region: self.config.region.clone() };
        let mut cmd = Command { request_id, saga_id, trace_id, hlc: self.hlc.now(), source, op };
        let _in_flight = super::metrics::InFlight::start();
        loop {
            let res = tokio::time::timeout_at(deadline, self.raft.client_write(cmd.clone())).await;
            let res = res.map_err(|_| {
                Error::Timeout(
                    "write not acknowledged before the deadline; it may still be applied".into(),
                )
            })?;
            match res {
                Ok(resp) => {
                    tracing::debug!(trace_id = %cmd.trace_id, index = resp.log_id.index, "leader: write committed");
                    return Ok(resp.data);
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    let own = f.leader_id == Some(self.id);
                    if (own || f.reason == ForwardReason::LeaseExpired) && Instant::now() + LEASE_RETRY_PAUSE < deadline {
                        tokio::time::sleep(LEASE_RETRY_PAUSE).await;
                        cmd.hlc = self.hlc.now();
                        continue;
                    }
                    return Err(self.not_leader(f.leader_id));
                }
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    return Err(Error::Unavailable(
                        "leader changed while the write was in flight; it may or may not be applied \
                         (retry with the same request_id)"
                            .into(),
                    ))
                }
                Err(RaftError::APIError(e)) => return Err(Error::Internal(e.to_string())),
                Err(RaftError::Fatal(f)) => return Err(Error::Unavailable(format!("raft stopped: {f}"))),
            }
        }
    }

    /// Wait until a read at `consistency` may be served from the local state machine.
    ///
    /// On the leader: a read index from a heartbeat round, then wait for it to apply.
    /// On a follower: the same read index obtained from the leader over the Raft
    /// transport, then wait until this node has applied it (a follower read: the data
    /// is served locally, only the index crosses the network). If the leader cannot be
    /// asked, the caller gets NotLeader and forwards the whole read instead.
    pub async fn read_barrier(
        self: &Arc<Self>,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<(), Error> {
        self.ensure_initialized()?;
        if consistency == Consistency::Serializable || self.config.unsafe_stale_reads {
            return Ok(());
        }
        if let Consistency::BoundedStaleness(max_ms) = consistency {
            self.freshness.note_demand();
            let applied = self.reader.applied()?.revision;
            let bound = self.freshness.staleness_bound(applied, std::time::Instant::now());
            if bound.is_some_and(|b| b <= Duration::from_millis(max_ms)) {
                return Ok(());
            }
        }
        let (rx, start) = self.reads.enqueue(deadline);
        if start {
            let core = self.clone();
            tokio::spawn(async move { core.read_rounds().await });
        }
        read_batch::wait(rx, deadline).await
    }

    /// The runner of shared read barriers: one barrier per round of queued readers
    /// (see [`super::read_batch`]), until nobody waits.
    async fn read_rounds(self: Arc<Self>) {
        let mut guard = read_batch::RunnerGuard(&self.reads, false);
        while let Some(batch) = self.reads.next_round() {
            let deadline = read_batch::round_deadline(&batch).unwrap_or_else(Instant::now);
            metrics::counter!("meridian_read_barrier_rounds_total").increment(1);
            metrics::counter!("meridian_read_barrier_readers_total").increment(batch.len() as u64);
            let res = self.linearizable_barrier(deadline).await;
            read_batch::answer(batch, &res);
        }
        guard.1 = true;
    }

    /// One read index (local, or from the leader for a follower) and the wait until
    /// the local state machine has applied it.
    async fn linearizable_barrier(&self, deadline: Instant) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let local = tokio::time::timeout_at(
            deadline,
            self.raft.get_read_linearizer(openraft::ReadPolicy::ReadIndex),
        )
        .await
        .map_err(|_| Error::Timeout("could not confirm leadership before the deadline".into()))?;
        let lin = match local {
            Ok(l) => l,
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                self.follower_read_index(f.leader_id, deadline).await?
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => {
                return Err(Error::Unavailable(format!("no quorum: {q}")))
            }
            Err(RaftError::Fatal(f)) => {
                return Err(Error::Unavailable(format!("raft stopped: {f}")))
            }
        };
        let indexed = std::time::Instant::now();
        metrics::histogram!("meridian_read_index_duration_seconds")
            .record(indexed.duration_since(started).as_secs_f64());
        let left = deadline.saturating_duration_since(Instant::now());
        match lin.try_await_ready(&self.raft, Some(left)).await {
            Ok(Ok(_)) => {
                metrics::histogram!("meridian_read_apply_wait_duration_seconds")
                    .record(indexed.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Err(_)) => Err(Error::Timeout(
                "state machine did not reach the read index before the deadline".into(),
            )),
            Err(f) => Err(Error::Unavailable(format!("raft stopped: {f}"))),
        }
    }

    /// Ask the leader for a read index on behalf of this follower.
    async fn follower_read_index(
        &self,
        leader_hint: Option<u64>,
        deadline: Instant,
    ) -> Result<openraft::raft::linearizable_read::Linearizer<crate::raft::TypeConfig>, Error> {
        let (known, _) = self.leader();
        let Some(leader) = leader_hint.or(known).filter(|l| *l != self.id) else {
            return Err(self.not_leader(leader_hint));
        };
        let raft_addr = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.membership().get_node(&leader).map(|n| n.raft_addr.clone())
        };
        let Some(raft_addr) = raft_addr else { return Err(self.not_leader(Some(leader))) };
        let left = deadline.saturating_duration_since(Instant::now());
        match self.network.remote_read_index(self.id, leader, &raft_addr, left).await {
            Ok(log_id) => {
                let read = openraft::raft::linearizable_read::ReadLogId::from_log_id(log_id);
                Ok(openraft::raft::linearizable_read::Linearizer::new(self.id, read, None))
            }
            Err(crate::raft::network::ReadIndexError::NotMember(m)) => {
                self.freshness.set_removed(Some(m.clone()));
                Err(Error::Removed(format!("{m}; use another node")))
            }
            Err(e) => {
                tracing::debug!(error = %e, leader, "follower read index failed; forwarding the read");
                Err(self.not_leader(Some(leader)))
            }
        }
    }
}

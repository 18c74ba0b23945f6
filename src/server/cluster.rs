//! The `meridian.v1.Cluster` gRPC service: node status, membership, bootstrap.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::auth::{authorize, Access};
use super::core::NodeCore;
use super::status::to_status;
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::raft::{NodeInfo, TypeConfig};

/// The Cluster service.
pub struct ClusterService {
    core: Arc<NodeCore>,
}

impl ClusterService {
    /// A Cluster service over `core`.
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self { core }
    }
}

fn role(s: ServerState) -> pb::Role {
    match s {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    }
}

/// Initialise the cluster with `members` (a no-op returning false when this node is
/// already initialised).
pub async fn initialize(core: &NodeCore, members: BTreeMap<u64, NodeInfo>) -> Result<bool, Error> {
    if members.is_empty() {
        return Err(Error::InvalidArgument("initialize: members must not be empty".into()));
    }
    if !members.contains_key(&core.id) {
        return Err(Error::InvalidArgument(format!(
            "initialize: members must include this node ({})",
            core.id
        )));
    }
    match core.raft.initialize(members).await {
        Ok(()) => Ok(true),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
        Err(RaftError::APIError(e)) => Err(Error::InvalidArgument(format!("initialize: {e}"))),
        Err(RaftError::Fatal(f)) => Err(Error::Unavailable(format!("raft stopped: {f}"))),
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        authorize(&_req, Access::Authenticated)?;
        let core = &self.core;
        let point = core.reader.applied().map_err(|e| to_status(e.into()))?;
        let (leader_id, leader_addr) = core.leader();
        let m = core.raft.metrics().borrow_watched().clone();
        let initialized = m.membership_config.membership().voter_ids().next().is_some();
        Ok(Response::new(pb::StatusResponse {
            id: core.id,
            region: core.config.region.clone(),
            role: role(m.state) as i32,
            term: m.current_term,
            leader_id: leader_id.unwrap_or(0),
            leader_api_addr: leader_addr.unwrap_or_default(),
            commit_index: m.cluster_committed.or(m.local_committed).map_or(0, |l| l.index),
            applied_index: point.revision,
            last_hlc: Some(point.hlc.into()),
            initialized,
            cluster_name: core.config.cluster_name.clone(),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            api_addr: core.config.advertised_api_addr(),
            version: crate::VERSION.to_string(),
            dedup_hits: core.dedup_stats.hits.load(std::sync::atomic::Ordering::Relaxed),
            dedup_expired: core.dedup_stats.expired.load(std::sync::atomic::Ordering::Relaxed),
            dedup_evicted: core.dedup_stats.evicted.load(std::sync::atomic::Ordering::Relaxed),
        }))
    }

    async fn members(
        &self,
        _req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        authorize(&_req, Access::Authenticated)?;
        let m = self.core.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| pb::Member {
                id: *id,
                api_addr: n.api_addr.clone(),
                raft_addr: n.raft_addr.clone(),
                region: n.region.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Ok(Response::new(pb::MembersResponse { members, leader_id: m.current_leader.unwrap_or(0) }))
    }

    async fn initialize(
        &self,
        req: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        authorize(&req, Access::Admin)?;
        let mut members = BTreeMap::new();
        for m in req.into_inner().members {
            if m.id == 0 || m.api_addr.is_empty() || m.raft_addr.is_empty() {
                return Err(Status::invalid_argument(
                    "initialize: each member needs id >= 1, api_addr and raft_addr",
                ));
            }
            let info = NodeInfo { api_addr: m.api_addr, raft_addr: m.raft_addr, region: m.region };
            if members.insert(m.id, info).is_some() {
                return Err(Status::invalid_argument(format!(
                    "initialize: member id {} listed twice",
                    m.id
                )));
            }
        }
        let initialized = initialize(&self.core, members).await.map_err(to_status)?;
        Ok(Response::new(pb::InitializeResponse { initialized }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        authorize(&req, Access::Admin)?;
        self.add_learner_impl(req.into_inner()).await.map(Response::new)
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        authorize(&req, Access::Admin)?;
        self.change_membership_impl(req.into_inner()).await.map(Response::new)
    }

    async fn remove_learner(
        &self,
        req: Request<pb::RemoveLearnerRequest>,
    ) -> Result<Response<pb::RemoveLearnerResponse>, Status> {
        authorize(&req, Access::Admin)?;
        self.remove_learner_impl(req.into_inner()).await.map(Response::new)
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        authorize(&req, Access::Admin)?;
        self.transfer_leader_impl(req.into_inner()).await?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }

    async fn set_clock_offset(
        &self,
        req: Request<pb::SetClockOffsetRequest>,
    ) -> Result<Response<pb::SetClockOffsetResponse>, Status> {
        authorize(&req, Access::Admin)?;
        self.set_clock_offset_impl(req.into_inner()).map(Response::new)
    }

    async fn corrupt_key(
        &self,
        req: Request<pb::CorruptKeyRequest>,
    ) -> Result<Response<pb::CorruptKeyResponse>, Status> {
        authorize(&req, Access::Admin)?;
        self.corrupt_key_impl(req.into_inner()).map(Response::new)
    }
}

fn member_info(m: &pb::Member) -> Result<NodeInfo, Status> {
    if m.id == 0 || m.api_addr.is_empty() || m.raft_addr.is_empty() {
        return Err(Status::invalid_argument("member needs id >= 1, api_addr and raft_addr"));
    }
    Ok(NodeInfo {
        api_addr: m.api_addr.clone(),
        raft_addr: m.raft_addr.clone(),
        region: m.region.clone(),
    })
}

/// Map a membership-change failure to a node error.
fn write_error(core: &NodeCore, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            let (known, addr) = core.leader();
            let leader_api_addr = if f.leader_id == known { addr } else { None };
            Error::NotLeader { leader_id: f.leader_id, leader_api_addr }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Error::InvalidArgument(format!("membership change refused: {c}"))
        }
        RaftError::APIError(e) => Error::Unavailable(e.to_string()),
        RaftError::Fatal(f) => Error::Unavailable(format!("raft stopped: {f}")),
    }
}

impl ClusterService {
    /// AddLearner.
    pub async fn add_learner_impl(
        &self,
        r: pb::AddLearnerRequest,
    ) -> Result<pb::AddLearnerResponse, Status> {
        let m =
            r.member.ok_or_else(|| Status::invalid_argument("add_learner: member is required"))?;
        let info = member_info(&m)?;
        let resp = self
            .core
            .raft
            .add_learner(m.id, info, r.blocking)
            .await
            .map_err(|e| to_status(write_error(&self.core, e)))?;
        Ok(pb::AddLearnerResponse { revision: resp.log_id.index })
    }

    /// ChangeMembership.
    pub async fn change_membership_impl(
        &self,
        r: pb::ChangeMembershipRequest,
    ) -> Result<pb::ChangeMembershipResponse, Status> {
        let voters: std::collections::BTreeSet<u64> = r.voter_ids.iter().copied().collect();
        if voters.is_empty() || voters.len() != r.voter_ids.len() || voters.contains(&0) {
            return Err(Status::invalid_argument(
                "change_membership: voter_ids must be distinct, non-empty, and >= 1",
            ));
        }
        let resp = self
            .core
            .raft
            .change_membership(voters, r.retain_as_learners)
            .await
            .map_err(|e| to_status(write_error(&self.core, e)))?;
        Ok(pb::ChangeMembershipResponse { revision: resp.log_id.index })
    }

    /// RemoveLearner: only learners (a voter must leave through ChangeMembership, so a
    /// typo can never shrink the quorum).
    pub async fn remove_learner_impl(
        &self,
        r: pb::RemoveLearnerRequest,
    ) -> Result<pb::RemoveLearnerResponse, Status> {
        let (is_voter, is_member) = {
            let m = self.core.raft.metrics();
            let m = m.borrow_watched();
            let membership = m.membership_config.membership();
            let is_voter = membership.voter_ids().any(|v| v == r.id);
            (is_voter, membership.get_node(&r.id).is_some())
        };
        if is_voter {
            return Err(Status::invalid_argument(format!(
                "remove_learner: node {} is a voter; remove it with ChangeMembership",
                r.id
            )));
        }
        if !is_member {
            return Err(Status::not_found(format!(
                "remove_learner: node {} is not a member",
                r.id
            )));
        }
        let change = openraft::ChangeMembers::RemoveNodes([r.id].into_iter().collect());
        let resp = self
            .core
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| to_status(write_error(&self.core, e)))?;
        Ok(pb::RemoveLearnerResponse { revision: resp.log_id.index })
    }

    /// TransferLeader.
    pub async fn transfer_leader_impl(&self, r: pb::TransferLeaderRequest) -> Result<(), Status> {
        let core = &self.core;
        let (leader, addr) = core.leader();
        if leader != Some(core.id) {
            return Err(to_status(Error::NotLeader { leader_id: leader, leader_api_addr: addr }));
        }
        let is_voter = core
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == r.to);
        if !is_voter {
            return Err(Status::invalid_argument(format!(
                "transfer_leader: node {} is not a voter",
                r.to
            )));
        }
        core.raft
            .trigger()
            .transfer_leader(r.to)
            .await
            .map_err(|f| to_status(Error::Unavailable(f.to_string())))
    }

    /// SetClockOffset.
    pub fn set_clock_offset_impl(
        &self,
        r: pb::SetClockOffsetRequest,
    ) -> Result<pb::SetClockOffsetResponse, Status> {
        if !self.core.config.allow_fault_injection {
            return Err(Status::unimplemented(
                "SetClockOffset is a fault-injection RPC: start the node with --allow-fault-injection",
            ));
        }
        let previous = self.core.clock.offset_ns() / 1_000_000;
        self.core.clock.set_offset_ns(r.offset_ms.saturating_mul(1_000_000));
        tracing::warn!(offset_ms = r.offset_ms, "fault injection: physical clock offset set");
        Ok(pb::SetClockOffsetResponse { previous_offset_ms: previous })
    }

    /// CorruptKey: overwrite a key's value in this replica only (fault injection).
    pub fn corrupt_key_impl(
        &self,
        r: pb::CorruptKeyRequest,
    ) -> Result<pb::CorruptKeyResponse, Status> {
        if !self.core.config.allow_fault_injection {
            return Err(Status::unimplemented(
                "CorruptKey is a fault-injection RPC: start the node with --allow-fault-injection",
            ));
        }
        self.core.limits.key("corrupt_key", &r.key).map_err(to_status)?;
        self.core.limits.value("corrupt_key", &r.value).map_err(to_status)?;
        let existed =
            tokio::task::block_in_place(|| self.core.reader.corrupt_record(&r.key, &r.value))
                .map_err(|e| to_status(e.into()))?;
        tracing::warn!(
            key = %String::from_utf8_lossy(&r.key),
            existed,
            "FAULT INJECTION: key overwritten in this replica's state machine without Raft; \
             this replica now diverges from the others"
        );
        Ok(pb::CorruptKeyResponse { existed })
    }
}

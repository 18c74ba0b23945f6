//! Cluster administration through the client: membership changes and leader moves.
//! Every call goes to the leader (followers answer with a leader hint, which the
//! client follows) under the client's retry policy. The operations are safe to retry:
//! adding a learner that is already a member updates it in place, a membership change
//! to the current voter set is a no-op, and a transfer to the current leader is one.

use std::time::Duration;

use super::call::CallSpec;
use super::endpoints::Route;
use super::retry::OpKind;
use super::{cluster, request, Client, ClientError};
use crate::pb::v1 as pb;

fn admin(op: &'static str, timeout: Option<Duration>) -> CallSpec {
    CallSpec { op, kind: OpKind::Write, route: Route::Leader, timeout, request_id: None }
}

impl Client {
    /// Add (or update) a learner; with `blocking`, return once it has caught up.
    pub async fn add_learner(
        &self,
        member: pb::Member,
        blocking: bool,
        timeout: Option<Duration>,
    ) -> Result<pb::AddLearnerResponse, ClientError> {
        let req = pb::AddLearnerRequest { member: Some(member), blocking };
        self.execute(admin("add_learner", timeout), |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { cluster(&ep).add_learner(req).await }
        })
        .await
    }

    /// Remove a learner (voters leave through [`change_membership`](Self::change_membership)).
    pub async fn remove_learner(
        &self,
        id: u64,
        timeout: Option<Duration>,
    ) -> Result<pb::RemoveLearnerResponse, ClientError> {
        self.execute(admin("remove_learner", timeout), |ep, deadline| {
            let req = request(pb::RemoveLearnerRequest { id }, deadline, self.inner.auth.as_ref());
            async move { cluster(&ep).remove_learner(req).await }
        })
        .await
    }

    /// Replace the voter set (joint consensus); with `retain_as_learners`, removed
    /// voters stay as learners.
    pub async fn change_membership(
        &self,
        voter_ids: Vec<u64>,
        retain_as_learners: bool,
        timeout: Option<Duration>,
    ) -> Result<pb::ChangeMembershipResponse, ClientError> {
        let req = pb::ChangeMembershipRequest { voter_ids, retain_as_learners };
        self.execute(admin("change_membership", timeout), |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { cluster(&ep).change_membership(req).await }
        })
        .await
    }

    /// Ask the leader to hand leadership to voter `to`.
    pub async fn transfer_leader(
        &self,
        to: u64,
        timeout: Option<Duration>,
    ) -> Result<(), ClientError> {
        self.execute(admin("transfer_leader", timeout), |ep, deadline| {
            let req = request(pb::TransferLeaderRequest { to }, deadline, self.inner.auth.as_ref());
            async move { cluster(&ep).transfer_leader(req).await.map(|r| r.map(|_| ())) }
        })
        .await
    }
}

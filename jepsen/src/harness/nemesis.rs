//! The nemesis: carries out a [`schedule`](super::schedule) against a running cluster
//! and records every fault in the history and as a [`Window`] for the reports.
//!
//! Faults and how each one ends:
//! - kill: SIGKILL of the victims (by pid), restarted (and waited for) at the end;
//! - pause: SIGSTOP, SIGCONT at the end;
//! - partition: directed cuts through the fault proxy ([`partition_grudge`]), healed at
//!   the end;
//! - latency: latency and jitter on every link or one node's links, healed at the end;
//! - clock: `Cluster/SetClockOffset` on some nodes, offsets set back to 0 at the end;
//! - membership: `ChangeMembership` without one voter (kept as a learner), then with
//!   every node again.
//!
//! Invariants: one fault at a time; every started fault is ended before the next one
//! starts and before [`Nemesis::run`] returns; [`Nemesis::heal_all`] then undoes
//! anything left (paused, killed, cut, skewed, removed) whatever happened, and waits for
//! a leader. A fault that cannot be applied is recorded with its error and skipped: the
//! run goes on. The history gets one `info` event with `f` `start-<kind>` when a fault
//! is in place and one `stop-<kind>` when it is undone, process `nemesis`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian::cluster::network::{partition_grudge, Grudge};
use meridian::cluster::{ClusterNetwork, TestCluster, POLL_INTERVAL};
use meridian::pb::v1 as pb;
use serde::Serialize;
use serde_json::json;

use super::client::{call, request};
use super::config::{FaultKind, PartitionMode};
use super::recorder::Recorder;
use super::schedule::{FaultPlan, NodePick, PlannedFault};

/// Timeout of one Cluster RPC the nemesis makes (clock, membership).
pub const ADMIN_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a membership change may keep failing (no leader, ...) before it is given up.
pub const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(20);

/// A fault as it happened, for results.json and the plots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Position in the schedule.
    pub index: usize,
    /// Kind of fault.
    pub kind: FaultKind,
    /// What was done, concretely (nodes, links, offsets).
    pub detail: String,
    /// Seconds after the start of the run when the fault was in place.
    pub start_s: f64,
    /// Seconds after the start of the run when it was undone.
    pub end_s: f64,
    /// Errors applying or undoing it.
    pub errors: Vec<String>,
}

/// Which nodes each node cannot call for a partition of shape `mode` cut from `order`
/// (the leader, when known, for the leader-relative shapes), and a description.
///
/// - isolate-leader / isolate-follower: that node against the rest;
/// - halves: the first `n/2` of `order` against the rest;
/// - majority-ring: node at ring position `p` can call only the `n/2` nodes after it
///   (so each sees a majority counting itself, and no two see the same one);
/// - bridge: the first `n/2` against the last, the node between them talks to both.
pub fn partition_plan(mode: PartitionMode, order: &[u64], leader: Option<u64>) -> (Grudge, String) {
    let n = order.len();
    let show = |g: &[u64]| format!("{g:?}");
    match mode {
        PartitionMode::IsolateLeader | PartitionMode::IsolateFollower => {
            let first = order.first().copied();
            let target = if mode == PartitionMode::IsolateLeader {
                leader.or(first)
            } else {
                order.iter().copied().find(|id| Some(*id) != leader).or(first)
            };
            let Some(target) = target else { return (Grudge::new(), "no nodes".into()) };
            let rest: Vec<u64> = order.iter().copied().filter(|id| *id != target).collect();
            let groups = [vec![target], rest];
            let text = format!("{} {} | {}", mode.name(), show(&groups[0]), show(&groups[1]));
            (partition_grudge(&groups), text)
        }
        PartitionMode::Halves => {
            let (minority, majority) = order.split_at(n / 2);
            let groups = [minority.to_vec(), majority.to_vec()];
            let text = format!("halves {} | {}", show(minority), show(majority));
            (partition_grudge(&groups), text)
        }
        PartitionMode::MajorityRing => {
            let mut grudge = Grudge::new();
            let mut seen = Vec::new();
            for (p, from) in order.iter().enumerate() {
                let callable: Vec<u64> = (1..=n / 2).map(|k| order[(p + k) % n]).collect();
                for to in order.iter().filter(|to| *to != from && !callable.contains(to)) {
                    grudge.entry(*from).or_default().insert(*to);
                }
                seen.push(format!("{from}->{callable:?}"));
            }
            (grudge, format!("majority-ring {}", seen.join(" ")))
        }
        PartitionMode::Bridge => {
            if n < 3 {
                return partition_plan(PartitionMode::Halves, order, leader);
            }
            let (left, rest) = order.split_at(n / 2);
            let (bridge, right) = rest.split_at(1);
            let groups = [left.to_vec(), right.to_vec()];
            let text = format!("bridge {} <-{}-> {}", show(left), bridge[0], show(right));
            (partition_grudge(&groups), text)
        }
    }
}

/// What is in place and must be undone.
enum Active {
    Killed(Vec<u64>),
    Paused(Vec<u64>),
    Network,
    Clock(Vec<u64>),
    Removed,
}

/// The nemesis of one run. See the module docs.
pub struct Nemesis {
    cluster: Arc<TestCluster>,
    net: Arc<ClusterNetwork>,
    recorder: Arc<Recorder>,
    ids: Vec<u64>,
    windows: Mutex<Vec<Window>>,
}

impl Nemesis {
    /// A nemesis for `cluster` (whose links must be proxied) recording into `recorder`.
    pub fn new(
        cluster: Arc<TestCluster>,
        net: Arc<ClusterNetwork>,
        recorder: Arc<Recorder>,
    ) -> Self {
        let ids = cluster.ids();
        Self { cluster, net, recorder, ids, windows: Mutex::new(Vec::new()) }
    }

    /// The windows so far, in order.
    pub fn windows(&self) -> Vec<Window> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Seconds since the start, rounded to milliseconds.
    fn seconds(&self) -> f64 {
        (self.recorder.now_ns() as f64 / 1e6).round() / 1e3
    }

    /// Run `schedule` (offsets from `t0`); nothing starts at or after `stop_at`, and a
    /// fault still in place at `stop_at` is undone then.
    pub async fn run(&self, schedule: &[PlannedFault], t0: Instant, stop_at: Instant) {
        for fault in schedule {
            let start = t0 + fault.start();
            if start >= stop_at {
                break;
            }
            tokio::time::sleep_until(start.into()).await;
            let kind = fault.plan.kind();
            let (active, detail, mut errors) = match self.start(&fault.plan).await {
                Ok((active, detail)) => (Some(active), detail, Vec::new()),
                Err(e) => (None, format!("not applied: {e}"), vec![e]),
            };
            let start_s = self.seconds();
            self.recorder.nemesis(&format!("start-{kind}"), json!(detail));
            if let Some(active) = active {
                let end = (t0 + fault.end()).min(stop_at);
                tokio::time::sleep_until(end.into()).await;
                errors.extend(self.stop(active).await);
            }
            self.recorder.nemesis(&format!("stop-{kind}"), json!(detail));
            let window =
                Window { index: fault.index, kind, detail, start_s, end_s: self.seconds(), errors };
            eprintln!(
                "[nemesis] {:>6.1}s..{:>6.1}s {kind}: {}{}",
                window.start_s,
                window.end_s,
                window.detail,
                if window.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({:?})", window.errors)
                }
            );
            self.windows.lock().unwrap_or_else(|e| e.into_inner()).push(window);
        }
    }

    /// The current leader as the responsive nodes report it (highest term wins), if any.
    pub async fn leader(&self) -> Option<u64> {
        let statuses = self.cluster.statuses().await;
        statuses
            .values()
            .flatten()
            .filter(|s| s.role() == pb::Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    async fn resolve(&self, pick: &NodePick) -> Result<Vec<u64>, String> {
        match pick {
            NodePick::Nodes(ids) => Ok(ids.clone()),
            NodePick::Leader => match self.leader().await {
                Some(l) => Ok(vec![l]),
                None => Err("no leader to target".into()),
            },
        }
    }

    async fn start(&self, plan: &FaultPlan) -> Result<(Active, String), String> {
        match plan {
            FaultPlan::Kill { target } => {
                let victims = self.resolve(target).await?;
                for id in &victims {
                    if self.cluster.is_running(*id) {
                        self.cluster.kill(*id).map_err(|e| e.to_string())?;
                    }
                }
                Ok((Active::Killed(victims.clone()), format!("kill -9 {victims:?}")))
            }
            FaultPlan::Pause { target } => {
                let victims = self.resolve(target).await?;
                let mut paused = Vec::new();
                for id in &victims {
                    if self.cluster.is_running(*id) {
                        self.cluster.pause(*id).map_err(|e| e.to_string())?;
                        paused.push(*id);
                    }
                }
                Ok((Active::Paused(paused), format!("SIGSTOP {victims:?}")))
            }
            FaultPlan::Partition { mode, order } => {
                let leader = self.leader().await;
                let (grudge, text) = partition_plan(*mode, order, leader);
                self.net.apply_grudge(&grudge).map_err(|e| e.to_string())?;
                Ok((Active::Network, text))
            }
            FaultPlan::Latency { latency_ms, jitter_ms, node } => {
                let (lat, jit) =
                    (Duration::from_millis(*latency_ms), Duration::from_millis(*jitter_ms));
                self.net.set_latency(lat, jit, *node).map_err(|e| e.to_string())?;
                let scope = node.map_or("every link".to_string(), |n| format!("node {n}'s links"));
                Ok((Active::Network, format!("{latency_ms} ms ± {jitter_ms} ms on {scope}")))
            }
            FaultPlan::Clock { offsets_ms } => {
                let mut skewed = Vec::new();
                let mut errors = Vec::new();
                for (id, offset) in offsets_ms {
                    match self.set_clock_offset(*id, *offset).await {
                        Ok(()) => skewed.push(*id),
                        Err(e) => errors.push(e),
                    }
                }
                if skewed.is_empty() && !errors.is_empty() {
                    return Err(errors.join("; "));
                }
                let shown: Vec<String> =
                    offsets_ms.iter().map(|(id, o)| format!("node {id} {o:+} ms")).collect();
                Ok((Active::Clock(skewed), format!("clock offsets {}", shown.join(", "))))
            }
            FaultPlan::Membership { target } => {
                let victim = *self.resolve(target).await?.first().ok_or("no victim")?;
                let voters: Vec<u64> =
                    self.ids.iter().copied().filter(|id| *id != victim).collect();
                self.change_membership(&voters).await?;
                Ok((
                    Active::Removed,
                    format!("voters {voters:?} (node {victim} demoted to learner)"),
                ))
            }
        }
    }

    async fn stop(&self, active: Active) -> Vec<String> {
        let mut errors = Vec::new();
        match active {
            Active::Killed(ids) => {
                for id in ids {
                    if let Err(e) = self.cluster.start(id).await {
                        errors.push(format!("restart node {id}: {e}"));
                    }
                }
            }
            Active::Paused(ids) => {
                for id in ids {
                    if let Err(e) = self.cluster.resume(id) {
                        errors.push(format!("resume node {id}: {e}"));
                    }
                }
            }
            Active::Network => self.net.heal(),
            Active::Clock(ids) => {
                for id in ids {
                    if let Err(e) = self.set_clock_offset(id, 0).await {
                        errors.push(e);
                    }
                }
            }
            Active::Removed => {
                if let Err(e) = self.change_membership(&self.ids).await {
                    errors.push(e);
                }
            }
        }
        errors
    }

    async fn set_clock_offset(&self, id: u64, offset_ms: i64) -> Result<(), String> {
        let mut client = self.cluster.cluster_client(id).map_err(|e| e.to_string())?;
        let req = request(pb::SetClockOffsetRequest { offset_ms }, ADMIN_RPC_TIMEOUT);
        call(ADMIN_RPC_TIMEOUT, client.set_clock_offset(req))
            .await
            .map(|_| ())
            .map_err(|e| format!("set clock offset of node {id}: {}", e.describe()))
    }

    /// ChangeMembership(voters) on the leader, retried (new leader lookup each time)
    /// until it succeeds or [`MEMBERSHIP_DEADLINE`] passes.
    async fn change_membership(&self, voters: &[u64]) -> Result<(), String> {
        let deadline = Instant::now() + MEMBERSHIP_DEADLINE;
        loop {
            let attempt = async {
                let leader = self.leader().await.ok_or("no leader")?;
                let mut client = self.cluster.cluster_client(leader).map_err(|e| e.to_string())?;
                let req = pb::ChangeMembershipRequest {
                    voter_ids: voters.to_vec(),
                    retain_as_learners: true,
                };
                call(ADMIN_RPC_TIMEOUT, client.change_membership(request(req, ADMIN_RPC_TIMEOUT)))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("node {leader}: {}", e.describe()))
            };
            let error = match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("change membership to voters {voters:?}: {error}"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Undo everything: resume, heal the network, restart, reset clocks (with `clock`),
    /// restore every voter (with `membership`), then wait for a leader within
    /// `timeout`. Returns the errors met (the run is then reported as such).
    pub async fn heal_all(&self, clock: bool, membership: bool, timeout: Duration) -> Vec<String> {
        let mut errors = Vec::new();
        for id in &self.ids {
            if self.cluster.is_paused(*id) {
                if let Err(e) = self.cluster.resume(*id) {
                    errors.push(format!("resume node {id}: {e}"));
                }
            }
        }
        self.net.heal();
        for id in &self.ids {
            if !self.cluster.is_running(*id) {
                if let Err(e) = self.cluster.start(*id).await {
                    errors.push(format!("restart node {id}: {e}"));
                }
            }
        }
        if clock {
            for id in &self.ids {
                if let Err(e) = self.set_clock_offset(*id, 0).await {
                    errors.push(e);
                }
            }
        }
        if let Err(e) = self.cluster.wait_for_leader(timeout).await {
            errors.push(format!("no leader after healing: {e}"));
        }
        if membership {
            if let Err(e) = self.change_membership(&self.ids).await {
                errors.push(e);
            }
        }
        let detail: BTreeMap<&str, serde_json::Value> =
            [("errors", json!(errors))].into_iter().collect();
        self.recorder.nemesis("heal-all", json!(detail));
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn callable(grudge: &Grudge, from: u64, all: &[u64]) -> BTreeSet<u64> {
        let cut = grudge.get(&from).cloned().unwrap_or_default();
        all.iter().copied().filter(|to| *to != from && !cut.contains(to)).collect()
    }

    #[test]
    fn isolate_leader_and_follower_pick_the_right_node() {
        let order = [3, 1, 2];
        let (g, text) = partition_plan(PartitionMode::IsolateLeader, &order, Some(2));
        assert!(callable(&g, 2, &order).is_empty(), "{text}");
        assert_eq!(callable(&g, 1, &order), BTreeSet::from([3]));
        let (g, _) = partition_plan(PartitionMode::IsolateFollower, &order, Some(3));
        assert!(callable(&g, 1, &order).is_empty());
        assert_eq!(callable(&g, 3, &order), BTreeSet::from([2]));
    }

    #[test]
    fn majority_ring_gives_every_node_a_different_majority() {
        for order in [vec![1, 2, 3], vec![4, 2, 5, 1, 3]] {
            let (g, _) = partition_plan(PartitionMode::MajorityRing, &order, None);
            let n = order.len();
            let mut views = BTreeSet::new();
            for id in &order {
                let mut view = callable(&g, *id, &order);
                view.insert(*id);
                assert!(view.len() > n / 2, "{id} sees {view:?}");
                assert!(view.len() < n, "{id} must not see everyone: {view:?}");
                assert!(views.insert(view.clone()), "two nodes see {view:?}");
            }
        }
    }

    #[test]
    fn bridge_connects_the_halves_only_through_one_node() {
        let order = [5, 4, 3, 2, 1];
        let (g, text) = partition_plan(PartitionMode::Bridge, &order, None);
        assert_eq!(callable(&g, 3, &order), BTreeSet::from([1, 2, 4, 5]), "{text}");
        assert_eq!(callable(&g, 5, &order), BTreeSet::from([3, 4]));
        assert_eq!(callable(&g, 1, &order), BTreeSet::from([2, 3]));
    }

    #[test]
    fn halves_cut_a_minority_from_a_majority() {
        let order = [2, 5, 1, 3, 4];
        let (g, _) = partition_plan(PartitionMode::Halves, &order, None);
        assert_eq!(callable(&g, 2, &order), BTreeSet::from([5]));
        assert_eq!(callable(&g, 1, &order), BTreeSet::from([3, 4]));
    }
}

//! Leader placement: keep the leader in the preferred region.
//!
//! Rule (evaluated by the leader only, every `placement.check_interval_ms`): when
//! `placement.preferred_leader_region` is set, this leader is in another region, it
//! has led for at least `placement.min_leader_tenure_ms`, and a voter of the preferred
//! region is healthy (acknowledged a heartbeat within `placement.max_target_silence_ms`)
//! and caught up (has replicated everything the leader committed), the leader hands
//! leadership to the most caught-up such voter (openraft TransferLeader: the target
//! campaigns at once, with the leader's blessing).
//!
//! Why it does not flap: a leader in the preferred region never moves on its own; a
//! leader elsewhere only moves *to* the preferred region, to a voter that is provably
//! alive and current, and at most once per tenure period. If the preferred region is
//! down or partitioned, no target qualifies and leadership stays where elections put it.
//! The pure decision is [`choose_target`]; the task only gathers Raft metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Instant as _, ServerState};

use super::core::NodeCore;

/// What the leader knows about one other voter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterView {
    /// Node id.
    pub id: u64,
    /// Its region label.
    pub region: String,
    /// Time since it last acknowledged the leader; None if never.
    pub silence: Option<Duration>,
    /// Highest log index known replicated to it.
    pub matched: u64,
}

/// The voter to hand leadership to, if any (see the module docs for the rule).
pub fn choose_target(
    own_region: &str,
    preferred: Option<&str>,
    tenure: Duration,
    min_tenure: Duration,
    max_silence: Duration,
    committed: u64,
    voters: &[VoterView],
) -> Option<u64> {
    let preferred = preferred?;
    if own_region == preferred || tenure < min_tenure {
        return None;
    }
    voters
        .iter()
        .filter(|v| v.region == preferred)
        .filter(|v| v.silence.is_some_and(|s| s <= max_silence))
        .filter(|v| v.matched >= committed)
        .max_by_key(|v| (v.matched, std::cmp::Reverse(v.id)))
        .map(|v| v.id)
}

/// Run the placement rule until `stop` turns true.
pub async fn run(core: Arc<NodeCore>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let p = core.config.placement.clone();
    let Some(preferred) = p.preferred_leader_region.clone() else { return };
    let interval = Duration::from_millis(p.check_interval_ms);
    let min_tenure = Duration::from_millis(p.min_leader_tenure_ms);
    let max_silence = Duration::from_millis(p.max_target_silence_ms);
    // (term, when this node became leader in it / last handed over).
    let mut since: Option<(u64, Instant)> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let (term, target) = {
            let m = core.raft.metrics();
            let m = m.borrow_watched();
            if m.state != ServerState::Leader {
                since = None;
                continue;
            }
            let term = m.current_term;
            let started = match since {
                Some((t, at)) if t == term => at,
                _ => {
                    since = Some((term, Instant::now()));
                    continue;
                }
            };
            let membership = m.membership_config.membership();
            let committed = m.local_committed.as_ref().map_or(0, |l| l.index);
            let voters: Vec<VoterView> = membership
                .voter_ids()
                .filter(|id| *id != core.id)
                .map(|id| VoterView {
                    id,
                    region: membership.get_node(&id).map(|n| n.region.clone()).unwrap_or_default(),
                    silence: m
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(&id).cloned().flatten())
                        .map(|t| t.elapsed()),
                    matched: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map_or(0, |l| l.index),
                })
                .collect();
            let target = choose_target(
                &core.config.region,
                Some(&preferred),
                started.elapsed(),
                min_tenure,
                max_silence,
                committed,
                &voters,
            );
            (term, target)
        };
        let Some(to) = target else { continue };
        tracing::info!(to, region = %preferred, "placement: handing leadership to the preferred region");
        metrics::counter!("meridian_placement_transfers_total").increment(1);
        if let Err(e) = core.raft.trigger().transfer_leader(to).await {
            tracing::warn!(error = %e, to, "placement: transfer failed");
        }
        // At most one attempt per tenure period in this term.
        since = Some((term, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn voter(id: u64, region: &str, silence_ms: Option<u64>, matched: u64) -> VoterView {
        VoterView { id, region: region.into(), silence: silence_ms.map(ms), matched }
    }

    fn choose(own: &str, tenure_ms: u64, voters: &[VoterView]) -> Option<u64> {
        choose_target(own, Some("us"), ms(tenure_ms), ms(3000), ms(1000), 100, voters)
    }

    #[test]
    fn a_leader_in_the_preferred_region_never_moves() {
        let voters = [voter(2, "us", Some(10), 100), voter(3, "eu", Some(10), 100)];
        assert_eq!(choose("us", 60_000, &voters), None);
    }

    #[test]
    fn a_leader_elsewhere_moves_to_the_most_caught_up_healthy_preferred_voter() {
        let voters = [
            voter(2, "us", Some(10), 100),
            voter(3, "us", Some(10), 120),
            voter(4, "us", Some(5000), 200),
            voter(5, "eu", Some(1), 300),
        ];
        assert_eq!(choose("eu", 5000, &voters), Some(3));
    }

    #[test]
    fn no_move_before_tenure_or_to_a_silent_or_lagging_voter() {
        let healthy = [voter(2, "us", Some(10), 100)];
        assert_eq!(choose("eu", 100, &healthy), None, "tenure too short");
        assert_eq!(choose("eu", 5000, &[voter(2, "us", None, 100)]), None, "never acked");
        assert_eq!(choose("eu", 5000, &[voter(2, "us", Some(2000), 100)]), None, "silent");
        assert_eq!(choose("eu", 5000, &[voter(2, "us", Some(10), 99)]), None, "lagging");
        assert_eq!(
            choose_target("eu", None, ms(9000), ms(1), ms(1000), 1, &healthy),
            None,
            "no preference"
        );
    }
}

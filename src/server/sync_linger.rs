//! Turns the log's sync linger on while this node leads a membership whose followers
//! alone form a quorum, and off otherwise (see `storage::log_store`, "Sync linger").
//!
//! Why only then: a commit needs a quorum of voters to have the entry on disk. With 3
//! or more voters the followers make that quorum by themselves, so a leader's later
//! fsync delays no commit while they answer, and fewer fsyncs leave its CPU to the
//! write path. With 1 or 2 voters (or a joint membership, during a change) the
//! leader's own fsync can be the one a commit waits for, so it syncs at once.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;

use crate::raft::MeridianRaft;
use crate::storage::LogStore;

/// Fewest voters for which the followers alone form a quorum (`n - 1 >= n / 2 + 1`).
pub const MIN_VOTERS: usize = 3;

/// Whether a node in `state` with these voter sets (more than one: a joint
/// membership) may let its log syncs linger.
pub fn followers_form_quorum(
    state: ServerState,
    configs: &[std::collections::BTreeSet<u64>],
) -> bool {
    state == ServerState::Leader && configs.len() == 1 && configs[0].len() >= MIN_VOTERS
}

/// Keep the log store's linger in step with this node's role until `stop` turns true.
pub async fn run(
    raft: MeridianRaft,
    log_store: LogStore,
    linger: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // The server metrics change only with the role, the leader or the membership.
    let mut server = raft.server_metrics();
    loop {
        let on = {
            let m = server.borrow_watched();
            followers_form_quorum(m.state, m.membership_config.membership().get_joint_config())
        };
        log_store.set_sync_linger(if on { linger } else { Duration::ZERO });
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = server.changed() => if changed.is_err() { break },
        }
    }
    log_store.set_sync_linger(Duration::ZERO);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn voters(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn only_a_leader_whose_followers_make_a_quorum_lingers() {
        assert!(followers_form_quorum(ServerState::Leader, &[voters(&[1, 2, 3])]));
        assert!(followers_form_quorum(ServerState::Leader, &[voters(&[1, 2, 3, 4, 5])]));
        assert!(!followers_form_quorum(ServerState::Leader, &[voters(&[1])]), "single voter");
        assert!(!followers_form_quorum(ServerState::Leader, &[voters(&[1, 2])]), "two voters");
        assert!(
            !followers_form_quorum(ServerState::Leader, &[voters(&[1, 2, 3]), voters(&[1, 2, 4])]),
            "joint membership"
        );
        for state in [ServerState::Follower, ServerState::Candidate, ServerState::Learner] {
            assert!(!followers_form_quorum(state, &[voters(&[1, 2, 3])]), "{state:?}");
        }
    }
}

//! When to build a snapshot.
//!
//! A snapshot dumps the whole state machine (records, binlog, exactly-once table) into
//! a file, so its cost grows with the state, not with the writes since the last one. A
//! fixed entry count alone (openraft's `LogsSinceLast`, etcd's `--snapshot-count`)
//! makes the dump work per write grow with the state: with a full binlog (1M events,
//! ~450 MB) a node rewrote ~450 MB every 100k writes, and the dump took a third of the
//! leader's CPU while it ran. So openraft's own policy is off and this task builds a
//! snapshot when both hold:
//!
//! 1. at least `raft.snapshot_logs_since_last` entries were applied since the last
//!    snapshot (as before; the floor between two snapshots), and
//! 2. the Raft log on disk is at least `raft.snapshot_log_size_percent` % of the
//!    current snapshot file (0 turns this rule off).
//!
//! Rule 2 bounds the dump work by the log written (at 100 %: at most one byte of
//! snapshot per byte of log, like Redis's `auto-aof-rewrite-percentage`) and the log's
//! disk use by about that share of the state, plus one segment (the log is purged in
//! whole segments). The state machine is durable in sled on its own: a restart replays
//! only the entries applied after sled's last flush, never the whole log. A snapshot
//! only lets the log be purged and catches up a follower that is behind the purge
//! point, so building it less often costs log disk, not recovery.
//!
//! Invariant: a trigger while a snapshot is being built is a no-op (openraft ignores
//! it), so the task never queues dumps.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;

use super::core::NodeCore;
use crate::storage::log_store::LogStore;
use crate::storage::Store;

/// How often the policy is evaluated.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a requested snapshot may take before the policy asks again (a request
/// openraft dropped, e.g. across a restart of its state-machine worker).
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(600);

/// Counter of snapshots this task asked for.
pub const METRIC_TRIGGERED: &str = "meridian_snapshots_triggered_total";

/// The snapshot policy's inputs at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// Entries applied since the last snapshot (all applied entries if none).
    pub entries_since: u64,
    /// Bytes of the Raft log's records (not the allocated tail of its current segment).
    pub log_bytes: u64,
    /// Bytes of the current snapshot file (0 if none).
    pub snapshot_bytes: u64,
}

/// Whether to build a snapshot now (rules 1 and 2 of the module docs).
pub fn due(inputs: Inputs, min_entries: u64, log_size_percent: u64) -> bool {
    if inputs.entries_since < min_entries {
        return false;
    }
    log_size_percent == 0
        || u128::from(inputs.log_bytes) * 100
            >= u128::from(inputs.snapshot_bytes) * u128::from(log_size_percent)
}

/// Size of the current snapshot file in `dir` (0 if none). A dump's `.tmp` file is
/// not one yet; between a dump's end and the removal of the older file two snapshot
/// files exist, and the largest is taken, never the sum.
pub fn snapshot_file_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap-") && name.ends_with(".bin")
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Evaluate the policy every [`CHECK_INTERVAL`] and trigger a snapshot when it is due,
/// until `stop` turns true.
pub async fn run(
    core: Arc<NodeCore>,
    store: Store,
    log: LogStore,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let min_entries = core.config.raft.snapshot_logs_since_last;
    let percent = core.config.raft.snapshot_log_size_percent;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The applied index a snapshot was asked for at, and when: no new request until a
    // snapshot covers it or PENDING_TIMEOUT passes (a build ends in a new snapshot id).
    let mut pending: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let (applied, snapshot) = {
            let m = core.raft.metrics();
            let m = m.borrow_watched();
            let index = |l: Option<&crate::storage::types::LogId>| l.map_or(0, |l| l.index);
            (index(m.last_applied.as_ref()), index(m.snapshot.as_ref()))
        };
        if pending.is_some_and(|(at, when)| snapshot < at && when.elapsed() < PENDING_TIMEOUT) {
            continue;
        }
        pending = None;
        let entries_since = applied.saturating_sub(snapshot);
        if entries_since < min_entries {
            continue;
        }
        let snapshot_bytes = {
            let dir = store.snapshot_dir();
            tokio::task::spawn_blocking(move || snapshot_file_bytes(&dir)).await
        };
        let Ok(snapshot_bytes) = snapshot_bytes else { continue };
        let log_bytes = log.record_bytes();
        let inputs = Inputs { entries_since, log_bytes, snapshot_bytes };
        if !due(inputs, min_entries, percent) {
            continue;
        }
        tracing::info!(entries_since, log_bytes, snapshot_bytes, "building a snapshot");
        metrics::counter!(METRIC_TRIGGERED).increment(1);
        if let Err(e) = core.raft.trigger().snapshot().await {
            tracing::warn!(error = %e, "cannot trigger a snapshot: raft stopped");
            return;
        }
        pending = Some((applied, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(entries_since: u64, log_bytes: u64, snapshot_bytes: u64) -> Inputs {
        Inputs { entries_since, log_bytes, snapshot_bytes }
    }

    #[test]
    fn the_entry_floor_holds_whatever_the_sizes() {
        assert!(!due(at(99, u64::MAX, 0), 100, 100));
        assert!(!due(at(99, 1, 0), 100, 0));
        assert!(due(at(100, 0, 0), 100, 100), "no snapshot yet: the floor alone decides");
    }

    #[test]
    fn the_log_must_reach_the_share_of_the_snapshot() {
        assert!(!due(at(1_000, 499, 1_000), 100, 50));
        assert!(due(at(1_000, 500, 1_000), 100, 50));
        assert!(!due(at(1_000, 999, 1_000), 100, 100));
        assert!(due(at(1_000, 1_000, 1_000), 100, 100));
        assert!(due(at(1_000, 1, 1_000_000), 100, 0), "0 %: entry count only");
        assert!(due(at(1_000, u64::MAX, u64::MAX / 10), 100, 1_000), "no overflow");
        assert!(!due(at(1_000, u64::MAX / 2, u64::MAX), 100, 100));
    }

    #[test]
    fn the_snapshot_size_is_the_largest_finished_snapshot_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = dir.path().join("snapshots");
        assert_eq!(snapshot_file_bytes(&snapshots), 0, "no directory yet");
        std::fs::create_dir_all(&snapshots).expect("snapshot dir");
        assert_eq!(snapshot_file_bytes(&snapshots), 0);
        std::fs::write(snapshots.join("snap-1-10.bin"), [0u8; 70]).expect("old");
        std::fs::write(snapshots.join("snap-1-20.bin"), [0u8; 90]).expect("new");
        std::fs::write(snapshots.join("snap-1-30.bin.tmp"), [0u8; 99]).expect("dump");
        std::fs::write(snapshots.join("notes.txt"), [0u8; 200]).expect("other");
        assert_eq!(snapshot_file_bytes(&snapshots), 90);
    }
}

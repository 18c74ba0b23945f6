//! The test harness: runs a real Meridian cluster under faults and checks every
//! history (`meridian-jepsen test ...`).
//!
//! | module | role |
//! |---|---|
//! | [`config`] | [`TestConfig`]: workload, nemeses, load, seed, limits |
//! | [`schedule`] | the seeded fault schedule (pure: same seed, same schedule) |
//! | [`nemesis`] | carries the schedule out on the cluster (processes, proxy, Cluster API) |
//! | [`client`] | Jepsen client semantics: one attempt, deadline, fail vs info |
//! | [`workload`], [`register`], [`bank`], [`binlog`] | the operations and their generators; the bank and binlog checkers |
//! | [`recorder`] | the history in real-time order; JSON lines and EDN writers |
//! | [`runner`] | one run end to end ([`run_test`]) |
//! | [`plots`], [`index`], [`store`] | latency / rate SVGs, index.html, the store layout |
//!
//! Dependency rule: the harness uses `meridian::cluster` (launcher, fault proxy) and
//! `meridian::pb` (the public API); the checker modules of this crate never depend on
//! `meridian`. Pure parts (schedule, partition shapes, bank checker, writers, plots)
//! are unit-tested; the runner is exercised by `tests/harness.rs` against real nodes.
//!
//! Invariants: every wait is bounded (per-operation timeouts, the time limit, an
//! operation budget, deadlines on recovery); the history is recorded in real-time
//! order; a process that got `info` never invokes again; every fault is undone before
//! the final reads.

pub mod bank;
pub mod binlog;
pub mod client;
pub mod config;
pub mod index;
pub mod nemesis;
pub mod plots;
pub mod recorder;
pub mod register;
pub mod runner;
pub mod schedule;
pub mod store;
pub mod workload;

use std::path::{Path, PathBuf};

pub use config::{FaultKind, PartitionMode, TestConfig, WorkloadKind};
pub use runner::{run_test, Counts, TestOutcome, Validity};

/// Environment variable naming the `meridian` binary.
pub const MERIDIAN_BIN_ENV: &str = "MERIDIAN_BIN";

/// Why a run could not be carried out (a verdict is never an error).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The configuration is out of range.
    #[error("bad test configuration: {0}")]
    Config(String),
    /// The `meridian` binary was not found.
    #[error("{0}")]
    Binary(String),
    /// The cluster could not be started or controlled.
    #[error(transparent)]
    Cluster(#[from] meridian::cluster::ClusterError),
    /// A file could not be written.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The recorded history is malformed: a harness bug.
    #[error("the recorded history is invalid (a harness bug): {0}")]
    History(#[from] crate::history::HistoryError),
    /// The checker refused the history.
    #[error("the checker refused the history: {0}")]
    Check(crate::check::CheckError),
    /// Anything else that stopped the run (setup, a task that died).
    #[error("{0}")]
    Setup(String),
}

/// The `meridian` binary: `explicit`, else `$MERIDIAN_BIN`, else `meridian` next to
/// the running executable or one directory up (`target/<profile>/meridian` seen from
/// `target/<profile>/deps/<test>`).
pub fn locate_meridian(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else if let Some(p) = std::env::var_os(MERIDIAN_BIN_ENV) {
        candidates.push(PathBuf::from(p));
    } else if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join("meridian"));
        }
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(HarnessError::Binary(format!(
        "cannot find the meridian binary (looked at: {}); build it with `cargo build --bin \
         meridian` (or `cargo test --workspace`), or pass --binary PATH / set {MERIDIAN_BIN_ENV}",
        if looked.is_empty() { "nothing".to_string() } else { looked.join(", ") }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = locate_meridian(Some(Path::new("/nonexistent/meridian"))).expect_err("missing");
        let text = err.to_string();
        assert!(text.contains("/nonexistent/meridian") && text.contains("--binary"), "{text}");
    }
}

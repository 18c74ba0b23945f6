//! The consistency checker behind `meridian check` (DESIGN.md §6).
//!
//! It subscribes to the binlog of every replica (one stream per endpoint, no leader
//! routing), checks what the streams show and repairs stuck sagas:
//!
//! | module | role |
//! |---|---|
//! | [`event`], [`finding`] | the checker's view of an event; findings and alert levels |
//! | [`replica`] | per-replica continuity: positions, versions, before_version, HLC |
//! | [`agreement`] | cross-replica chain-hash agreement; first divergent position |
//! | [`saga`] | saga lifecycle and deadlines |
//! | [`invariant`] | configured invariants (sum under a prefix) |
//! | [`core`] | all rules behind one state value ([`Checker`], [`CheckerState`]) |
//! | [`state`] | the state directory: atomic, fsynced state and findings files |
//! | [`consumer`] | Binlog.Subscribe per replica: acks, reconnect with backoff, resume |
//! | [`compensate`] | AbortSaga with a deterministic request id; conflicts escalated |
//! | [`run`] | the loop tying them together; metrics |
//!
//! The rules (`replica`, `agreement`, `saga`, `invariant`, `core`) are plain
//! synchronous code with the clock passed in, tested with unit tests and the golden
//! scripts in testdata/checker/. Ordering of effects (the restart guarantee): findings
//! for a batch are written (and fsynced) before the state holding the cursor past that
//! batch is atomically replaced, so a restart neither misses nor repeats a finding.
//!
//! Dependency rule: the checker uses only [`crate::client`] (and the protobuf types it
//! exposes), never the server, Raft or storage layers.

pub mod agreement;
pub mod compensate;
pub mod consumer;
pub mod core;
pub mod event;
pub mod finding;
pub mod invariant;
pub mod replica;
pub mod run;
pub mod saga;
pub mod state;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

pub use self::core::{Checker, CheckerConfig, CheckerState};
pub use event::{Event, Position};
pub use finding::{Finding, FindingRecord, Kind, Level};
pub use run::{run, CheckOptions, CheckOutcome};

/// Why the checker could not run (a finding is never an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// Bad options or configuration (exit 2 at the CLI).
    #[error("{0}")]
    Invalid(String),
    /// The state directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The persisted state is unreadable (corrupt or from another format).
    #[error("state file {path} is unreadable: {message}")]
    State {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A client call failed in a way the checker cannot work around.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// `--once` / `--until-revision` did not reach its target in time.
    #[error("{0}")]
    Timeout(String),
}

impl CheckerError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

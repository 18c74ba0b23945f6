//! The node's error type, grouped by what the caller must do. Converted to a gRPC
//! status in exactly one place (`server::status::to_status`).

use crate::hlc::HlcError;
use crate::storage::StorageError;

/// Errors of the node (server side).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or over a limit: fix it, do not retry.
    #[error("{0}")]
    InvalidArgument(String),
    /// The node has not joined an initialised cluster yet.
    #[error("node is not initialised: {0}")]
    NotInitialized(String),
    /// This node is not the leader; retry at the leader (if known).
    #[error("not the leader (leader: {})", leader_api_addr.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// Leader node id, if known.
        leader_id: Option<u64>,
        /// Leader API address, if known.
        leader_api_addr: Option<String>,
    },
    /// No quorum, or shutting down: retry later, elsewhere.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed; a write may or may not have been applied.
    #[error("deadline exceeded: {0}")]
    Timeout(String),
    /// A deterministic rule refused the request (a saga that is not open, expired or
    /// full): do not retry unchanged.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The requested binlog position is no longer retained: restart from the oldest.
    #[error("{message}")]
    OutOfRange {
        /// What was asked and what is retained.
        message: String,
        /// The oldest retained revision.
        oldest_revision: u64,
    },
    /// A timestamp came from a node whose clock is too far ahead.
    #[error(transparent)]
    ClockOffset(#[from] HlcError),
    /// Stored data breaks an invariant: stop and investigate.
    #[error("data corruption: {0}")]
    Corruption(String),
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(StorageError),
    /// A bug: should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupt(m) => Error::Corruption(m),
            other => Error::Storage(other),
        }
    }
}

impl Error {
    /// Whether the same request may succeed if retried (possibly at another node).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NotLeader { .. } | Error::Unavailable(_) | Error::Timeout(_))
    }
}

/// Result alias of the node.
pub type Result<T, E = Error> = std::result::Result<T, E>;

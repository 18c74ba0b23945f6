//! The client's error type, grouped by what the caller must do:
//! - [`ClientError::Config`]: fix the configuration (nothing was sent);
//! - [`ClientError::InvalidRequest`]: fix the request (rejected before sending);
//! - [`ClientError::Rpc`]: the server or the transport answered with a gRPC status
//!   and the retry policy ran out (or the code is not retryable). It carries the
//!   code, message, leader hint, and whether a write may have been applied anyway
//!   ([`RpcError::indeterminate`]); see [`retry`] for the rules.
//!
//! The Display form is `<CODE>: <message>` (e.g. `UNAVAILABLE: no quorum`), which is
//! what the CLI prints after `error: `.

use std::fmt;
use std::time::Duration;

use tonic::Code;

use super::retry;

/// An error returned by the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client configuration is invalid.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The request was rejected by the client before it was sent.
    #[error("INVALID_ARGUMENT: {0}")]
    InvalidRequest(String),
    /// The call ended with a gRPC status.
    #[error(transparent)]
    Rpc(Box<RpcError>),
}

/// A call that ended with a gRPC status, after any retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RpcError {
    /// Status code of the last attempt (a client-side deadline is reported as
    /// DEADLINE_EXCEEDED, a refused connection as UNAVAILABLE).
    pub code: Code,
    /// Status message of the last attempt, with its transport cause when there is one.
    pub message: String,
    /// Leader API address (`host:port`) from the `x-meridian-leader` metadata, if any.
    pub leader_hint: Option<String>,
    /// Endpoint of the last attempt (None when no endpoint could be tried).
    pub endpoint: Option<String>,
    /// Attempts made (>= 1 unless the budget expired before the first one).
    pub attempts: u32,
    /// True for a write that may or may not have been applied: some attempt failed
    /// after the request left the client. Retrying with the same `request_id` is safe
    /// and resolves it (the server replays the original response).
    pub indeterminate: bool,
    /// Request id of the write (None for reads).
    pub request_id: Option<String>,
    /// Server's `retry-after-ms` hint on RESOURCE_EXHAUSTED.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        if let Some(leader) = &self.leader_hint {
            write!(f, " (leader: {leader})")?;
        }
        if self.indeterminate {
            write!(f, "; the write may or may not have been applied")?;
            if let Some(id) = &self.request_id {
                write!(f, ": retry with request id {id} to find out")?;
            }
        }
        Ok(())
    }
}

impl ClientError {
    /// The gRPC code this error corresponds to (client-side checks map to
    /// INVALID_ARGUMENT).
    pub fn code(&self) -> Code {
        match self {
            ClientError::Config(_) | ClientError::InvalidRequest(_) => Code::InvalidArgument,
            ClientError::Rpc(e) => e.code,
        }
    }

    /// The message without the code prefix.
    pub fn message(&self) -> String {
        match self {
            ClientError::Config(m) | ClientError::InvalidRequest(m) => m.clone(),
            ClientError::Rpc(e) => e.message.clone(),
        }
    }

    /// Leader address hinted by the last attempt, if any.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            ClientError::Rpc(e) => e.leader_hint.as_deref(),
            _ => None,
        }
    }

    /// True when a write may have been applied despite the error (see
    /// [`RpcError::indeterminate`]). Always false for reads and client-side errors.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, ClientError::Rpc(e) if e.indeterminate)
    }

    /// True when the same call may succeed later (transient codes: UNAVAILABLE,
    /// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, CANCELLED, UNKNOWN). A write
    /// must be retried with the same request id ([`ClientError::request_id`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Config(_) | ClientError::InvalidRequest(_) => false,
            ClientError::Rpc(e) => retry::is_transient(e.code),
        }
    }

    /// The request id of a failed write.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientError::Rpc(e) => e.request_id.as_deref(),
            _ => None,
        }
    }

    /// The RPC details, when the error came from the server or transport.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            ClientError::Rpc(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RpcError> for ClientError {
    fn from(e: RpcError) -> Self {
        ClientError::Rpc(Box::new(e))
    }
}

/// The canonical upper-case name of a gRPC code (`UNAVAILABLE`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: Code, indeterminate: bool) -> ClientError {
        RpcError {
            code,
            message: "no quorum".into(),
            leader_hint: Some("127.0.0.1:7002".into()),
            endpoint: Some("127.0.0.1:7001".into()),
            attempts: 3,
            indeterminate,
            request_id: Some("abc".into()),
            retry_after: None,
        }
        .into()
    }

    #[test]
    fn display_starts_with_code_name_and_says_when_outcome_is_unknown() {
        let text = rpc(Code::Unavailable, true).to_string();
        assert!(text.starts_with("UNAVAILABLE: no quorum (after 3 attempts)"), "{text}");
        assert!(text.contains("leader: 127.0.0.1:7002"), "{text}");
        assert!(text.contains("request id abc"), "{text}");
        let text = rpc(Code::Unavailable, false).to_string();
        assert!(!text.contains("may or may not"), "{text}");
    }

    #[test]
    fn accessors_expose_code_hint_and_retryability() {
        let e = rpc(Code::DeadlineExceeded, true);
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(e.is_retryable());
        assert!(e.is_indeterminate());
        assert_eq!(e.leader_hint(), Some("127.0.0.1:7002"));
        assert_eq!(e.request_id(), Some("abc"));
        assert!(!rpc(Code::InvalidArgument, false).is_retryable());
        let e = ClientError::InvalidRequest("bad".into());
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.to_string(), "INVALID_ARGUMENT: bad");
        assert!(!e.is_retryable());
    }
}

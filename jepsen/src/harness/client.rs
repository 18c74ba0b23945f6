//! Jepsen client semantics over Meridian's gRPC API.
//!
//! - One attempt per operation, no retry, under a deadline (the request carries it as
//!   `grpc-timeout` and the client stops waiting when it passes).
//! - Each logical process is bound to one node (it talks to that node only, like a
//!   Jepsen client opened on one node), so a stale answer from a partitioned node is
//!   observable rather than hidden by a retrying, leader-seeking client.
//! - Outcomes ([`Completion`]): an answer is `ok` (or `fail` when the operation answered
//!   that it did nothing, e.g. a CAS whose compare did not hold). An error is `fail`
//!   only when it proves the operation had no effect ([`definitely_not_applied`]);
//!   anything else on a write is `info` (indeterminate), and the worker then continues
//!   as a new process. Reads have no effect, so a failed read is always `fail`.
//!
//! Proof of no effect, and why: INVALID_ARGUMENT and UNIMPLEMENTED / auth errors are
//! returned before anything is proposed; FAILED_PRECONDITION only with ErrorInfo reason
//! NOT_INITIALIZED (CLOCK_OFFSET is treated as unknown); UNAVAILABLE only with reason
//! NOT_LEADER (the node refused before proposing: Raft answered ForwardToLeader) or when
//! the TCP connection was refused (the request was never sent). Everything else,
//! including our own timeout, DEADLINE_EXCEEDED, a reset connection and a forward that
//! failed in flight, may have been applied.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use meridian::pb::v1::kv_client::KvClient;
use serde_json::Value as Json;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use super::HarnessError;

/// TCP connect timeout of a client channel (a killed node refuses at once; a paused or
/// cut one never answers).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// ErrorInfo reason of a node that refused because it is not the leader.
pub const REASON_NOT_LEADER: &str = "NOT_LEADER";
/// ErrorInfo reason of a node without cluster membership.
pub const REASON_NOT_INITIALIZED: &str = "NOT_INITIALIZED";

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Took effect; the value to record (a read's result, or the invoked value).
    Ok(Json),
    /// Had no effect; why.
    Fail(String),
    /// May or may not have taken effect; why.
    Info(String),
}

/// Why a call did not return an answer.
#[derive(Debug)]
pub enum CallError {
    /// The node (or the transport) answered with an error.
    Status(Box<Status>),
    /// No answer within the operation timeout.
    Timeout(Duration),
}

impl CallError {
    /// `CODE: message`, for the history's `error` field.
    pub fn describe(&self) -> String {
        match self {
            CallError::Status(s) => {
                let reason = s.get_details_error_info().map(|i| i.reason).unwrap_or_default();
                let reason = if reason.is_empty() { String::new() } else { format!(" [{reason}]") };
                format!("{:?}{reason}: {}", s.code(), s.message())
            }
            CallError::Timeout(t) => format!("timeout after {} ms", t.as_millis()),
        }
    }

    /// The completion of a write that failed with this error.
    pub fn write_completion(&self) -> Completion {
        match self {
            CallError::Status(s) if definitely_not_applied(s) => Completion::Fail(self.describe()),
            _ => Completion::Info(self.describe()),
        }
    }

    /// The completion of a read that failed with this error (always `fail`).
    pub fn read_completion(&self) -> Completion {
        Completion::Fail(self.describe())
    }
}

/// Whether `status` proves that the request had no effect (see the module docs).
pub fn definitely_not_applied(status: &Status) -> bool {
    let reason = status.get_details_error_info().map(|i| i.reason);
    match status.code() {
        Code::InvalidArgument
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated => true,
        Code::FailedPrecondition => reason.as_deref() == Some(REASON_NOT_INITIALIZED),
        Code::Unavailable => {
            reason.as_deref() == Some(REASON_NOT_LEADER) || connection_refused(status)
        }
        _ => false,
    }
}

/// Whether the error chain under `status` is a refused TCP connection.
fn connection_refused(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// A request carrying `timeout` as its gRPC deadline.
pub fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(message);
    r.set_timeout(timeout);
    r
}

/// Await `call` for at most `timeout`.
pub async fn call<T, F>(timeout: Duration, call: F) -> Result<T, CallError>
where
    F: Future<Output = Result<Response<T>, Status>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(CallError::Status(Box::new(s))),
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

/// A fresh, lazily connecting Kv client for the node at `addr` (a new connection: a
/// replaced process never inherits a hung one). Must be called inside a runtime.
pub fn connect(addr: SocketAddr) -> Result<KvClient<Channel>, HarnessError> {
    let url = format!("http://{addr}");
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| HarnessError::Setup(format!("bad endpoint {url}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(KvClient::new(endpoint.connect_lazy()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian::pb::v1 as pb;
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    fn with_reason(code: Code, reason: &str) -> Status {
        let details = ErrorDetails::with_error_info(reason, "meridian", HashMap::new());
        Status::with_error_details(code, "x", details)
    }

    #[test]
    fn only_errors_that_prove_nothing_happened_are_failures() {
        assert!(definitely_not_applied(&with_reason(Code::Unavailable, REASON_NOT_LEADER)));
        assert!(definitely_not_applied(&Status::invalid_argument("bad key")));
        assert!(definitely_not_applied(&with_reason(
            Code::FailedPrecondition,
            REASON_NOT_INITIALIZED
        )));
        assert!(!definitely_not_applied(&with_reason(Code::FailedPrecondition, "CLOCK_OFFSET")));
        assert!(!definitely_not_applied(&with_reason(Code::Unavailable, "UNAVAILABLE")));
        assert!(!definitely_not_applied(&Status::unavailable("forward failed")));
        assert!(!definitely_not_applied(&Status::deadline_exceeded("slow")));
        assert!(!definitely_not_applied(&Status::internal("boom")));
        let timeout = CallError::Timeout(Duration::from_millis(5));
        assert!(matches!(timeout.write_completion(), Completion::Info(_)));
        assert!(matches!(timeout.read_completion(), Completion::Fail(_)));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_definite_failure() {
        // Bind then drop: nothing listens on the port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let mut kv = connect(addr).expect("client");
        let req = request(pb::PutRequest::default(), Duration::from_secs(2));
        let err = call(Duration::from_secs(2), kv.put(req)).await.expect_err("nothing listens");
        let CallError::Status(s) = &err else { panic!("expected a status, got {err:?}") };
        assert!(definitely_not_applied(s), "{}", err.describe());
        assert!(matches!(err.write_completion(), Completion::Fail(_)));
    }
}

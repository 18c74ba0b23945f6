//! Compensation of stuck sagas: one AbortSaga call per saga with the deterministic
//! request id `meridian-check/abort/<saga_id>` ([`super::core::abort_request_id`]).
//!
//! The server restores every step whose key still holds the saga's write (CAS to the
//! before-image, in one revision) and reports the others as conflicts, leaving them
//! alone. Because the request id is deterministic, a checker that dies after sending
//! the call and sends it again after a restart gets the original response replayed by
//! the exactly-once table: the saga is compensated exactly once. A saga that already
//! committed or aborted answers FAILED_PRECONDITION or a duplicate: nothing to do.
//!
//! The call goes to the endpoints in turn (any node forwards writes to the leader),
//! retried with backoff up to [`MAX_ABORT_ATTEMPTS`] times.

use std::time::Duration;

use super::core::StepConflict;
use crate::client::Client;
use crate::pb::v1 as pb;

/// AbortSaga attempts per saga at most (each under the client's request timeout).
pub const MAX_ABORT_ATTEMPTS: u32 = 30;
/// Delay between attempts, doubled up to [`ABORT_BACKOFF_MAX`].
pub const ABORT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest delay between attempts.
pub const ABORT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Reason recorded in the saga.
pub const ABORT_REASON: &str = "meridian check: deadline passed";

/// The outcome of compensating one saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortOutcome {
    /// The saga.
    pub saga_id: String,
    /// Steps restored.
    pub compensated: u32,
    /// Steps left alone (key moved on).
    pub conflicts: Vec<StepConflict>,
    /// Why nothing was done, if so (e.g. the saga committed meanwhile); or the last
    /// error when every attempt failed.
    pub note: String,
    /// Whether the server answered (false: every attempt failed; retried later).
    pub answered: bool,
    /// The answer was replayed from the exactly-once table.
    pub duplicate: bool,
}

/// Call AbortSaga for `saga_id` with `request_id` until an answer or the attempts run
/// out.
pub async fn abort_saga(
    client: &Client,
    endpoints: &[String],
    saga_id: &str,
    request_id: &str,
) -> AbortOutcome {
    let mut backoff = ABORT_BACKOFF_INITIAL;
    let mut last_error = String::new();
    let timeout = client.config().request_timeout();
    for attempt in 0..MAX_ABORT_ATTEMPTS {
        let endpoint = &endpoints[attempt as usize % endpoints.len().max(1)];
        let req = pb::AbortSagaRequest {
            saga_id: saga_id.to_string(),
            request_id: request_id.to_string(),
            reason: ABORT_REASON.to_string(),
        };
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let result = match client.kv_client(endpoint) {
            Ok(mut stub) => stub.abort_saga(request).await,
            Err(e) => Err(tonic::Status::invalid_argument(e.to_string())),
        };
        match result {
            Ok(resp) => return outcome(saga_id, resp.into_inner()),
            Err(status) if is_final(status.code()) => {
                return AbortOutcome {
                    saga_id: saga_id.to_string(),
                    compensated: 0,
                    conflicts: Vec::new(),
                    note: format!("{:?}: {}", status.code(), status.message()),
                    answered: true,
                    duplicate: false,
                };
            }
            Err(status) => {
                last_error = format!("{endpoint}: {:?}: {}", status.code(), status.message());
                tracing::debug!(saga_id, %last_error, attempt, "AbortSaga attempt failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ABORT_BACKOFF_MAX);
    }
    AbortOutcome {
        saga_id: saga_id.to_string(),
        compensated: 0,
        conflicts: Vec::new(),
        note: format!("no answer after {MAX_ABORT_ATTEMPTS} attempts: {last_error}"),
        answered: false,
        duplicate: false,
    }
}

/// Codes that answer the abort for good (the saga is gone or already settled).
fn is_final(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::InvalidArgument
    )
}

fn outcome(saga_id: &str, resp: pb::AbortSagaResponse) -> AbortOutcome {
    let conflicts = resp
        .conflicts
        .iter()
        .map(|c| StepConflict {
            key: c.key.clone(),
            saga_version: c.saga_version,
            current_version: c.current.as_ref().map(|r| r.version),
            current_value: c.current.as_ref().map(|r| r.value.clone()),
            current_revision: c.current.as_ref().map_or(0, |r| r.revision),
        })
        .collect();
    AbortOutcome {
        saga_id: saga_id.to_string(),
        compensated: u32::try_from(resp.compensated.len()).unwrap_or(u32::MAX),
        conflicts,
        note: if resp.duplicate { "replayed (duplicate request id)".into() } else { String::new() },
        answered: true,
        duplicate: resp.duplicate,
    }
}

//! The one place where a node [`Error`] becomes a gRPC [`Status`].
//!
//! Every status carries, besides its code and message, standard error details
//! (`google.rpc.Status` in `grpc-status-details-bin`) with an `ErrorInfo`: a stable
//! machine-readable `reason` (see [`reason`]), domain `meridian`, and metadata such as
//! the leader hint. Not-leader and no-quorum both map to UNAVAILABLE; when the leader
//! is known its API address also travels in the `x-meridian-leader` metadata so a
//! client can go there directly.

use std::collections::HashMap;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// Metadata key carrying the leader's API address on UNAVAILABLE.
pub const LEADER_METADATA: &str = "x-meridian-leader";
/// The ErrorInfo domain of every Meridian error.
pub const ERROR_DOMAIN: &str = "meridian";

/// The stable ErrorInfo reason of an error (documented in docs/API.md).
pub fn reason(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "INVALID_ARGUMENT",
        Error::NotInitialized(_) => "NOT_INITIALIZED",
        Error::NotLeader { .. } => "NOT_LEADER",
        Error::Unavailable(_) => "UNAVAILABLE",
        Error::Timeout(_) => "DEADLINE_EXCEEDED",
        Error::ClockOffset(_) => "CLOCK_OFFSET",
        Error::Corruption(_) => "DATA_CORRUPTION",
        Error::Storage(_) => "STORAGE",
        Error::Internal(_) => "INTERNAL",
        Error::FailedPrecondition(_) => "FAILED_PRECONDITION",
        Error::OutOfRange { .. } => "OUT_OF_RANGE",
    }
}

fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::NotInitialized(_) | Error::ClockOffset(_) | Error::FailedPrecondition(_) => {
            Code::FailedPrecondition
        }
        Error::OutOfRange { .. } => Code::OutOfRange,
        Error::NotLeader { .. } | Error::Unavailable(_) => Code::Unavailable,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Corruption(_) | Error::Storage(_) | Error::Internal(_) => Code::Internal,
    }
}

/// Convert a node error to the status a client can act on.
pub fn to_status(e: Error) -> Status {
    let mut meta = HashMap::new();
    let mut leader_addr = None;
    let message = match &e {
        Error::NotLeader { leader_id, leader_api_addr } => {
            if let Some(id) = leader_id {
                meta.insert("leader_id".to_string(), id.to_string());
            }
            if let Some(a) = leader_api_addr {
                meta.insert("leader_addr".to_string(), a.clone());
                leader_addr = Some(a.clone());
            }
            match (leader_id, leader_api_addr) {
                (Some(id), Some(addr)) => format!("not the leader; leader is node {id} at {addr}"),
                _ => "not the leader; no leader known (election in progress?)".to_string(),
            }
        }
        Error::NotInitialized(m) => format!("node is not initialised: {m}"),
        Error::OutOfRange { message, oldest_revision } => {
            meta.insert("oldest_revision".to_string(), oldest_revision.to_string());
            message.clone()
        }
        Error::Corruption(_) | Error::Storage(_) | Error::Internal(_) => {
            tracing::error!(error = %e, "internal failure answering a request");
            e.to_string()
        }
        other => other.to_string(),
    };
    let details = ErrorDetails::with_error_info(reason(&e), ERROR_DOMAIN, meta);
    let mut s = Status::with_error_details(code(&e), message, details);
    if let Some(v) = leader_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
        s.metadata_mut().insert(LEADER_METADATA, v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_hint_in_metadata_and_error_info() {
        let s =
            to_status(Error::NotLeader { leader_id: Some(2), leader_api_addr: Some("h:1".into()) });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_METADATA).and_then(|v| v.to_str().ok()), Some("h:1"));
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "NOT_LEADER");
        assert_eq!(info.metadata.get("leader_id").map(String::as_str), Some("2"));
    }

    #[test]
    fn out_of_range_carries_the_oldest_revision() {
        let s = to_status(Error::OutOfRange { message: "gone".into(), oldest_revision: 42 });
        assert_eq!(s.code(), Code::OutOfRange);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.metadata.get("oldest_revision").map(String::as_str), Some("42"));
    }

    #[test]
    fn invalid_argument_keeps_its_message() {
        let s = to_status(Error::InvalidArgument("key too long".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "key too long");
        assert_eq!(s.get_details_error_info().map(|i| i.reason), Some("INVALID_ARGUMENT".into()));
    }
}

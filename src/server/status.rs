//! The one place where a node [`Error`] becomes a gRPC [`Status`].
//!
//! Not-leader and no-quorum both map to UNAVAILABLE; when the leader is known its API
//! address travels in the `x-meridian-leader` metadata so a client can go there directly.

use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::error::Error;

/// Metadata key carrying the leader's API address on UNAVAILABLE.
pub const LEADER_METADATA: &str = "x-meridian-leader";

/// Convert a node error to the status a client can act on.
pub fn to_status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::NotInitialized(m) => {
            Status::failed_precondition(format!("node is not initialised: {m}"))
        }
        Error::NotLeader {
            leader_id,
            leader_api_addr,
        } => {
            let msg = match (&leader_id, &leader_api_addr) {
                (Some(id), Some(addr)) => format!("not the leader; leader is node {id} at {addr}"),
                _ => "not the leader; no leader known (election in progress?)".to_string(),
            };
            let mut s = Status::unavailable(msg);
            if let Some(v) = leader_api_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
                s.metadata_mut().insert(LEADER_METADATA, v);
            }
            s
        }
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Timeout(m) => Status::deadline_exceeded(m),
        Error::ClockOffset(e) => Status::failed_precondition(e.to_string()),
        e @ (Error::Corruption(_) | Error::Storage(_) | Error::Internal(_)) => {
            tracing::error!(error = %e, "internal failure answering a request");
            Status::internal(e.to_string())
        }
    }
}

//! Binlog streams and sagas from the client side.
//!
//! - [`Client::subscribe`]: `Binlog.Subscribe` on exactly one endpoint (a binlog is a
//!   replica's own history: the consistency checker subscribes to every replica
//!   separately, so there is no routing or failover here). The returned
//!   [`Subscription`] yields batches and takes acknowledgements; the server never has
//!   more than the window of unacknowledged events in flight.
//! - [`Client::watch`]: `Kv.Watch` on one endpoint.
//! - Sagas: [`Client::open_saga`], [`Client::commit_saga`], [`Client::abort_saga`]
//!   (writes with a request id, retried exactly-once like every write) and
//!   [`Client::get_saga`] (a linearizable read).
//!
//! A start older than the replica's retention ends in [`StreamError::Compacted`] with
//! the oldest retained revision, so a consumer can restart from it.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Response, Status, Streaming};
use tonic_types::StatusExt;

use super::call::CallSpec;
use super::endpoints::Route;
use super::{kv, request, resolve_request_id, retry, Client, ClientError, RpcError};
use crate::pb::v1 as pb;
use pb::binlog_client::BinlogClient;

/// Acks queued towards the server before [`Subscription::ack`] waits.
pub const ACK_QUEUE: usize = 64;
/// Largest decoded stream message, bytes (a batch of events with large values).
pub const MAX_STREAM_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A binlog or watch stream failure.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The start revision (or the consumer's position) is no longer retained.
    #[error("OUT_OF_RANGE: {message} (oldest retained revision {oldest_revision})")]
    Compacted {
        /// Oldest revision the replica still retains: restart from it.
        oldest_revision: u64,
        /// Server message.
        message: String,
    },
    /// Any other failure.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Convert a stream status into a [`StreamError`].
pub fn stream_error(status: &Status, endpoint: &str) -> StreamError {
    if status.code() == Code::OutOfRange {
        let oldest = status
            .get_details_error_info()
            .and_then(|i| i.metadata.get("oldest_revision").and_then(|v| v.parse().ok()));
        if let Some(oldest_revision) = oldest {
            return StreamError::Compacted {
                oldest_revision,
                message: status.message().to_string(),
            };
        }
    }
    let (code, message) = retry::describe(status);
    StreamError::Client(
        RpcError {
            code,
            message,
            leader_hint: retry::leader_hint(status),
            endpoint: Some(endpoint.to_string()),
            attempts: 1,
            indeterminate: false,
            request_id: None,
            retry_after: retry::retry_after(status),
        }
        .into(),
    )
}

/// Where a subscription starts and what it receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// First revision (0: the oldest retained).
    pub from_revision: u64,
    /// Only keys with this prefix (empty: every event).
    pub prefix: Vec<u8>,
    /// Unacknowledged events in flight (0: the server default, 1024).
    pub window_events: u32,
    /// With a prefix, also deliver saga lifecycle events.
    pub include_saga_events: bool,
}

/// An open `Binlog.Subscribe` stream on one replica.
pub struct Subscription {
    endpoint: String,
    acks: mpsc::Sender<pb::SubscribeRequest>,
    inbound: Streaming<pb::SubscribeResponse>,
}

impl Subscription {
    /// The endpoint serving this stream.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next message (events, or an empty progress message); None when the server
    /// ended the stream.
    pub async fn next(&mut self) -> Result<Option<pb::SubscribeResponse>, StreamError> {
        self.inbound.message().await.map_err(|s| stream_error(&s, &self.endpoint))
    }

    /// Acknowledge every event at or before (revision, index): the server may send
    /// that many more.
    pub async fn ack(&self, revision: u64, index: u32) -> Result<(), StreamError> {
        let msg = pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Ack(pb::SubscribeAck { revision, index })),
        };
        self.acks.send(msg).await.map_err(|_| {
            stream_error(&Status::unavailable("the subscription stream has ended"), &self.endpoint)
        })
    }
}

/// What a watch covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// One key (exclusive with `prefix`).
    pub key: Vec<u8>,
    /// Keys with this prefix (both empty: every key).
    pub prefix: Vec<u8>,
    /// First revision (0: changes after now).
    pub from_revision: u64,
}

/// Options of a saga call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaOptions {
    /// Request id (generated when None; reuse it to retry exactly-once).
    pub request_id: Option<String>,
    /// Per-call timeout (default: the client's).
    pub timeout: Option<Duration>,
}

impl Client {
    /// Open `Binlog.Subscribe` on `endpoint` (only that replica; no failover).
    pub async fn subscribe(
        &self,
        endpoint: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, StreamError> {
        let ep = self.endpoint_state(endpoint)?;
        let (acks, rx) = mpsc::channel(ACK_QUEUE);
        let start = pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
                from_revision: options.from_revision,
                prefix: options.prefix,
                window_events: options.window_events,
                include_saga_events: options.include_saga_events,
            })),
        };
        acks.send(start).await.map_err(|_| {
            ClientError::InvalidRequest("subscription queue closed before start".into())
        })?;
        let mut client =
            BinlogClient::new(ep.channel()).max_decoding_message_size(MAX_STREAM_MESSAGE_BYTES);
        let inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await
            .map_err(|s| stream_error(&s, &ep.addr))?
            .into_inner();
        Ok(Subscription { endpoint: ep.addr.clone(), acks, inbound })
    }

    /// Open `Kv.Watch` on `endpoint`.
    pub async fn watch(
        &self,
        endpoint: &str,
        options: WatchOptions,
    ) -> Result<Streaming<pb::WatchResponse>, StreamError> {
        if !options.key.is_empty() && !options.prefix.is_empty() {
            return Err(ClientError::InvalidRequest(
                "a watch takes either a key or a prefix, not both".into(),
            )
            .into());
        }
        let ep = self.endpoint_state(endpoint)?;
        let req = pb::WatchRequest {
            key: options.key,
            prefix: options.prefix,
            from_revision: options.from_revision,
        };
        kv(&ep)
            .max_decoding_message_size(MAX_STREAM_MESSAGE_BYTES)
            .watch(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| stream_error(&s, &ep.addr))
    }

    /// Open a saga that must commit within `timeout` (ms precision, 1 ms..=24 h).
    pub async fn open_saga(
        &self,
        saga_id: &str,
        timeout: Duration,
        options: SagaOptions,
    ) -> Result<pb::OpenSagaResponse, ClientError> {
        let request_id = resolve_request_id(options.request_id)?;
        let spec = CallSpec::write("open_saga", &request_id, options.timeout);
        let req = pb::OpenSagaRequest {
            saga_id: saga_id.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            request_id,
        };
        self.execute(spec, |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).open_saga(req).await }
        })
        .await
    }

    /// Commit a saga (FAILED_PRECONDITION when it expired or was aborted).
    pub async fn commit_saga(
        &self,
        saga_id: &str,
        options: SagaOptions,
    ) -> Result<pb::CommitSagaResponse, ClientError> {
        let request_id = resolve_request_id(options.request_id)?;
        let spec = CallSpec::write("commit_saga", &request_id, options.timeout);
        let req = pb::CommitSagaRequest { saga_id: saga_id.to_string(), request_id };
        self.execute(spec, |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).commit_saga(req).await }
        })
        .await
    }

    /// Abort a saga: its steps are compensated; keys that moved on come back as
    /// conflicts.
    pub async fn abort_saga(
        &self,
        saga_id: &str,
        reason: &str,
        options: SagaOptions,
    ) -> Result<pb::AbortSagaResponse, ClientError> {
        let request_id = resolve_request_id(options.request_id)?;
        let spec = CallSpec::write("abort_saga", &request_id, options.timeout);
        let req = pb::AbortSagaRequest {
            saga_id: saga_id.to_string(),
            request_id,
            reason: reason.to_string(),
        };
        self.execute(spec, |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).abort_saga(req).await }
        })
        .await
    }

    /// A saga's state, deadline and steps (linearizable).
    pub async fn get_saga(&self, saga_id: &str) -> Result<pb::GetSagaResponse, ClientError> {
        let req = pb::GetSagaRequest { saga_id: saga_id.to_string() };
        self.execute(CallSpec::read("get_saga", Route::Leader, None), |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).get_saga(req).await }
        })
        .await
    }
}

//! One Binlog.Subscribe stream per replica endpoint, feeding the checker loop.
//!
//! Each [`Subscriber`] task talks to exactly one endpoint (no leader routing: each
//! replica's own binlog is what is checked). It subscribes from the cursor the loop
//! publishes (the cursor's revision: the events at or before the cursor come again and
//! the core skips them), forwards every response as a [`StreamMsg`] into one bounded
//! channel, and acknowledges the cursor the loop has *processed* (not merely
//! received), so the server's window bounds memory end to end: a slow checker makes
//! the server stop sending, never buffer.
//!
//! Failures: a broken or silent stream ([`STREAM_SILENCE_TIMEOUT`]) is reopened with
//! exponential backoff and jitter ([`BACKOFF_INITIAL`] .. [`BACKOFF_MAX`]); an
//! OUT_OF_RANGE start is reported to the loop (events were lost) and the stream
//! restarts at the oldest retained revision.

use std::time::Duration;

use futures::StreamExt as _;
use rand::Rng as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic_types::StatusExt as _;

use super::event::{Event, Position};
use crate::client::Client;
use crate::pb::v1 as pb;

/// Unacknowledged events the server may have in flight per stream.
pub const WINDOW_EVENTS: u32 = 4_096;
/// Acks queued towards the server at most (acks are cumulative: a full queue drops one).
pub const ACK_QUEUE: usize = 16;
/// A stream with no message for this long is reopened (the server sends progress at
/// least every second).
pub const STREAM_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a subscriber tells the loop.
#[derive(Debug)]
pub enum StreamMsg {
    /// A new stream is open (its first response is about to follow).
    Resubscribed {
        /// Endpoint.
        endpoint: String,
    },
    /// Events (maybe none: a progress message).
    Batch {
        /// Endpoint.
        endpoint: String,
        /// Node serving it.
        node: u64,
        /// Events in order.
        events: Vec<Event>,
        /// The replica's applied revision.
        applied_revision: u64,
    },
    /// The cursor was compacted away on the replica.
    OutOfRange {
        /// Endpoint.
        endpoint: String,
        /// Oldest revision it still retains.
        oldest_revision: u64,
    },
    /// The stream failed (it is being reopened).
    Failed {
        /// Endpoint.
        endpoint: String,
        /// What happened.
        message: String,
    },
}

/// One endpoint's subscription task.
#[derive(Debug)]
pub struct Subscriber {
    /// The replica's API address.
    pub endpoint: String,
    /// Client whose channel to the endpoint is used.
    pub client: Client,
    /// Processed cursor published by the loop (resume point and ack).
    pub cursor: watch::Receiver<Option<Position>>,
    /// Where messages go.
    pub out: mpsc::Sender<StreamMsg>,
}

enum StreamEnd {
    /// The loop is gone: stop.
    Closed,
    /// Reopen from the cursor after a backoff.
    Retry(String),
    /// Reopen at once from this revision (OUT_OF_RANGE).
    From(u64),
}

impl Subscriber {
    /// Run until the loop drops its receiver.
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_INITIAL;
        let mut start_override: Option<u64> = None;
        loop {
            let from = start_override.take().unwrap_or_else(|| {
                let cursor = *self.cursor.borrow_and_update();
                cursor.map_or(0, |p| p.revision)
            });
            match self.stream_once(from, &mut backoff).await {
                StreamEnd::Closed => return,
                StreamEnd::From(oldest) => start_override = Some(oldest),
                StreamEnd::Retry(message) => {
                    tracing::debug!(endpoint = %self.endpoint, %message, "binlog stream failed");
                    let msg = StreamMsg::Failed { endpoint: self.endpoint.clone(), message };
                    if self.out.send(msg).await.is_err() {
                        return;
                    }
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn stream_once(&mut self, from_revision: u64, backoff: &mut Duration) -> StreamEnd {
        let mut stub = match self.client.binlog_client(&self.endpoint) {
            Ok(s) => s,
            Err(e) => return StreamEnd::Retry(e.to_string()),
        };
        let (ack_tx, ack_rx) = mpsc::channel::<pb::SubscribeRequest>(ACK_QUEUE);
        let start = pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
                from_revision,
                prefix: Vec::new(),
                window_events: WINDOW_EVENTS,
                include_saga_events: true,
            })),
        };
        if ack_tx.try_send(start).is_err() {
            return StreamEnd::Retry("cannot queue the start request".into());
        }
        let mut stream = match stub.subscribe(ReceiverStream::new(ack_rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return self.status_end(&status),
        };
        if self.out.send(StreamMsg::Resubscribed { endpoint: self.endpoint.clone() }).await.is_err()
        {
            return StreamEnd::Closed;
        }
        let mut acked: Option<Position> = None;
        loop {
            tokio::select! {
                next = tokio::time::timeout(STREAM_SILENCE_TIMEOUT, stream.next()) => {
                    let resp = match next {
                        Err(_) => return StreamEnd::Retry(format!("no message for {STREAM_SILENCE_TIMEOUT:?}")),
                        Ok(None) => return StreamEnd::Retry("the server closed the stream".into()),
                        Ok(Some(Err(status))) => return self.status_end(&status),
                        Ok(Some(Ok(resp))) => resp,
                    };
                    *backoff = BACKOFF_INITIAL;
                    let msg = StreamMsg::Batch {
                        endpoint: self.endpoint.clone(),
                        node: resp.node_id,
                        events: resp.events.iter().map(Event::from).collect(),
                        applied_revision: resp.applied_revision,
                    };
                    if self.out.send(msg).await.is_err() {
                        return StreamEnd::Closed;
                    }
                }
                changed = self.cursor.changed() => {
                    if changed.is_err() {
                        return StreamEnd::Closed;
                    }
                }
            }
            let processed = *self.cursor.borrow_and_update();
            if let Some(p) = processed.filter(|p| Some(*p) > acked) {
                let ack = pb::SubscribeRequest {
                    kind: Some(pb::subscribe_request::Kind::Ack(pb::SubscribeAck {
                        revision: p.revision,
                        index: p.index,
                    })),
                };
                if ack_tx.try_send(ack).is_ok() {
                    acked = Some(p);
                }
            }
        }
    }

    fn status_end(&self, status: &tonic::Status) -> StreamEnd {
        if status.code() == tonic::Code::OutOfRange {
            if let Some(oldest) = oldest_revision(status) {
                let msg = StreamMsg::OutOfRange {
                    endpoint: self.endpoint.clone(),
                    oldest_revision: oldest,
                };
                return match self.out.try_send(msg) {
                    Ok(()) => StreamEnd::From(oldest),
                    Err(mpsc::error::TrySendError::Closed(_)) => StreamEnd::Closed,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        StreamEnd::Retry("loop busy; OUT_OF_RANGE will be seen again".into())
                    }
                };
            }
        }
        StreamEnd::Retry(format!("{:?}: {}", status.code(), status.message()))
    }
}

/// The oldest retained revision carried by an OUT_OF_RANGE status (ErrorInfo metadata
/// "oldest_revision", else the last number in the message).
pub fn oldest_revision(status: &tonic::Status) -> Option<u64> {
    let details = status.get_error_details();
    if let Some(v) = details.error_info().and_then(|i| i.metadata.get("oldest_revision")) {
        return v.parse().ok();
    }
    status
        .message()
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

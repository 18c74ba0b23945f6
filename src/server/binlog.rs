//! The `meridian.v1.Binlog` gRPC service and the binlog reader behind `Kv.Watch`.
//!
//! Both stream events from this replica's own binlog (never forwarded: to compare
//! replicas, subscribe to each). One task per stream reads events from sled in
//! bounded batches ([`BATCH_EVENTS`] matching events, [`SCAN_EVENTS_PER_BATCH`]
//! scanned) and, once caught up, waits on the state machine's applied-revision watch
//! instead of polling.
//!
//! Flow control (Subscribe): the task keeps the positions of the events it sent and
//! that are not acknowledged yet, at most `window_events` of them; with a full window
//! it stops reading until an ack arrives. The outgoing queue holds at most
//! [`OUT_QUEUE_MESSAGES`] messages, so the memory of one subscriber is bounded by the
//! window (positions only) plus that many batches, whatever the consumer does. Writers
//! never wait for subscribers. An idle stream gets a progress message (no events,
//! applied and oldest revision) every [`PROGRESS_INTERVAL`].
//!
//! Watch uses the same reader without acks: HTTP/2 flow control and the bounded queue
//! hold the task back when the watcher is slow.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::core::NodeCore;
use super::status::to_status;
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::storage::binlog::{BinlogEvent, EventOp};
use crate::storage::state_machine::{BinlogReadError, EventPage};

/// Default window of unacknowledged events per subscriber.
pub const DEFAULT_WINDOW_EVENTS: u32 = 1_024;
/// Largest window a subscriber may ask for.
pub const MAX_WINDOW_EVENTS: u32 = 65_536;
/// Most matching events sent in one message.
pub const BATCH_EVENTS: usize = 256;
/// Most events looked at per read (bounds the work of a read with a selective filter).
pub const SCAN_EVENTS_PER_BATCH: usize = 4_096;
/// Messages queued towards one stream before the reader waits.
pub const OUT_QUEUE_MESSAGES: usize = 2;
/// An idle Subscribe stream gets a progress message at least this often.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a new Subscribe stream may take to send its start message.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Gauge of open Subscribe and Watch streams.
pub const METRIC_SUBSCRIBERS: &str = "meridian_binlog_subscribers";
/// Counter of binlog events sent to subscribers and watchers.
pub const METRIC_EVENTS_SENT: &str = "meridian_binlog_events_sent_total";

/// The protobuf form of a binlog event.
pub fn event_to_pb(e: BinlogEvent) -> pb::BinlogEvent {
    let op = match e.op {
        EventOp::Put => pb::BinlogOp::Put,
        EventOp::Delete => pb::BinlogOp::Delete,
        EventOp::SagaOpen => pb::BinlogOp::SagaOpen,
        EventOp::SagaCommit => pb::BinlogOp::SagaCommit,
        EventOp::SagaAbort => pb::BinlogOp::SagaAbort,
    };
    pb::BinlogEvent {
        revision: e.revision,
        index: e.index,
        hlc: Some(e.hlc.into()),
        before_version: e.before_version(),
        key: e.key,
        op: op as i32,
        before: e.before.map(Into::into),
        after: e.after.map(Into::into),
        request_id: e.request_id,
        saga_id: e.saga_id,
        saga_deadline_unix_ms: e.saga_deadline_unix_ms,
        chain_hash: e.chain_hash.to_vec(),
        trace_id: e.trace_id,
        compensation: e.compensation,
    }
}

/// Which events a stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    /// Subscribe: events under `prefix` (empty: all); saga events pass when the prefix
    /// is empty or `include_saga_events` is set.
    Subscribe {
        /// Key prefix.
        prefix: Vec<u8>,
        /// Deliver saga lifecycle events with a prefix.
        include_saga_events: bool,
    },
    /// Watch: PUT and DELETE of exactly this key.
    Key(Vec<u8>),
    /// Watch: PUT and DELETE of keys under this prefix (empty: every key).
    Prefix(Vec<u8>),
}

impl EventFilter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &BinlogEvent) -> bool {
        let is_key_event = matches!(e.op, EventOp::Put | EventOp::Delete);
        match self {
            EventFilter::Subscribe { prefix, include_saga_events } => {
                if is_key_event {
                    e.key.starts_with(prefix)
                } else {
                    prefix.is_empty() || *include_saga_events
                }
            }
            EventFilter::Key(k) => is_key_event && e.key == *k,
            EventFilter::Prefix(p) => is_key_event && e.key.starts_with(p),
        }
    }
}

fn read_error(e: BinlogReadError) -> Status {
    match e {
        BinlogReadError::Compacted { requested, oldest } => to_status(Error::OutOfRange {
            message: format!(
                "revision {requested} is no longer retained by this replica; the oldest \
                 retained revision is {oldest} (restart from it)"
            ),
            oldest_revision: oldest,
        }),
        BinlogReadError::Storage(s) => to_status(s.into()),
    }
}

/// Read the next page from `cursor` (blocking sled reads, off the async workers).
fn read_page(
    core: &NodeCore,
    cursor: (u64, u32),
    limit: usize,
    filter: &EventFilter,
) -> Result<EventPage, Status> {
    let limit = limit.clamp(1, BATCH_EVENTS);
    tokio::task::block_in_place(|| {
        core.reader.read_events(cursor, SCAN_EVENTS_PER_BATCH, limit, |e| filter.matches(e))
    })
    .map_err(read_error)
}

/// Decrements the subscriber gauge when a stream task ends.
struct SubscriberGuard;

impl SubscriberGuard {
    fn new() -> Self {
        metrics::gauge!(METRIC_SUBSCRIBERS).increment(1.0);
        SubscriberGuard
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        metrics::gauge!(METRIC_SUBSCRIBERS).decrement(1.0);
    }
}

/// Check a revision against retention at stream start.
fn check_start(core: &NodeCore, from_revision: u64) -> Result<(), Status> {
    let oldest = core.reader.binlog_oldest().map_err(|e| to_status(e.into()))?;
    if from_revision != 0 && from_revision < oldest {
        return Err(read_error(BinlogReadError::Compacted { requested: from_revision, oldest }));
    }
    Ok(())
}

/// A validated Subscribe start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeParams {
    /// First revision (0: oldest retained).
    pub from_revision: u64,
    /// Filter.
    pub filter: EventFilter,
    /// Unacknowledged events allowed in flight.
    pub window_events: usize,
}

/// Validate the first message of a Subscribe stream.
pub fn validate_start(
    req: pb::SubscribeRequest,
    max_key_bytes: usize,
) -> Result<SubscribeParams, Error> {
    let start = match req.kind {
        Some(pb::subscribe_request::Kind::Start(s)) => s,
        Some(pb::subscribe_request::Kind::Ack(_)) => {
            return Err(Error::InvalidArgument(
                "subscribe: the first message must be `start`, not `ack`".into(),
            ))
        }
        None => return Err(Error::InvalidArgument("subscribe: the first message is empty".into())),
    };
    if start.window_events > MAX_WINDOW_EVENTS {
        return Err(Error::InvalidArgument(format!(
            "subscribe: window_events {} is over the maximum of {MAX_WINDOW_EVENTS}",
            start.window_events
        )));
    }
    if start.prefix.len() > max_key_bytes {
        return Err(Error::InvalidArgument(format!(
            "subscribe: prefix is {} bytes, over the key limit of {max_key_bytes} bytes",
            start.prefix.len()
        )));
    }
    let window = if start.window_events == 0 { DEFAULT_WINDOW_EVENTS } else { start.window_events };
    Ok(SubscribeParams {
        from_revision: start.from_revision,
        filter: EventFilter::Subscribe {
            prefix: start.prefix,
            include_saga_events: start.include_saga_events,
        },
        window_events: window as usize,
    })
}

/// The Binlog service.
pub struct BinlogService {
    core: Arc<NodeCore>,
}

impl BinlogService {
    /// A Binlog service over `core`.
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self { core }
    }
}

type Out<T> = mpsc::Sender<Result<T, Status>>;

/// One Subscribe stream's state.
struct Subscriber {
    core: Arc<NodeCore>,
    params: SubscribeParams,
    cursor: (u64, u32),
    /// Positions sent and not acknowledged, oldest first (at most the window).
    in_flight: VecDeque<(u64, u32)>,
    tx: Out<pb::SubscribeResponse>,
}

impl Subscriber {
    fn response(&self, events: Vec<pb::BinlogEvent>) -> pb::SubscribeResponse {
        let applied = self.core.reader.applied().map(|p| p.revision).unwrap_or(0);
        let oldest = self.core.reader.binlog_oldest().unwrap_or(1);
        pb::SubscribeResponse {
            node_id: self.core.id,
            events,
            applied_revision: applied,
            oldest_revision: oldest,
            region: self.core.config.region.clone(),
        }
    }

    /// Send one message; false when the consumer has gone.
    async fn send(&self, r: Result<pb::SubscribeResponse, Status>) -> bool {
        self.tx.send(r).await.is_ok()
    }

    fn ack(&mut self, revision: u64, index: u32) {
        while self.in_flight.front().is_some_and(|p| *p <= (revision, index)) {
            self.in_flight.pop_front();
        }
    }

    async fn run(mut self, mut inbound: Streaming<pb::SubscribeRequest>) {
        let _guard = SubscriberGuard::new();
        let mut applied = self.core.reader.applied_watch();
        let mut at_end = false;
        let mut inbound_open = true;
        let mut last_send = Instant::now();
        loop {
            let room = self.params.window_events.saturating_sub(self.in_flight.len());
            if room > 0 && !at_end {
                applied.borrow_and_update();
                let page = match read_page(&self.core, self.cursor, room, &self.params.filter) {
                    Ok(p) => p,
                    Err(s) => {
                        self.send(Err(s)).await;
                        return;
                    }
                };
                self.cursor = page.next;
                at_end = page.at_end;
                if !page.events.is_empty() {
                    let n = page.events.len();
                    self.in_flight.extend(page.events.iter().map(BinlogEvent::position));
                    let events = page.events.into_iter().map(event_to_pb).collect();
                    let msg = self.response(events);
                    if !self.send(Ok(msg)).await {
                        return;
                    }
                    metrics::counter!(METRIC_EVENTS_SENT).increment(n as u64);
                    last_send = Instant::now();
                }
                continue;
            }
            tokio::select! {
                _ = self.tx.closed() => return,
                msg = inbound.message(), if inbound_open => match msg {
                    Ok(Some(pb::SubscribeRequest { kind: Some(pb::subscribe_request::Kind::Ack(a)) })) => {
                        self.ack(a.revision, a.index);
                    }
                    Ok(Some(_)) => {
                        let e = Error::InvalidArgument(
                            "subscribe: every message after the first must be an `ack`".into(),
                        );
                        self.send(Err(to_status(e))).await;
                        return;
                    }
                    // The consumer stopped acking: serve what the window allows.
                    Ok(None) => inbound_open = false,
                    Err(_) => return,
                },
                changed = applied.changed(), if at_end && room > 0 => {
                    if changed.is_err() {
                        return;
                    }
                    at_end = false;
                }
                _ = tokio::time::sleep_until(last_send + PROGRESS_INTERVAL) => {
                    let msg = self.response(Vec::new());
                    if !self.send(Ok(msg)).await {
                        return;
                    }
                    last_send = Instant::now();
                }
            }
        }
    }
}

#[tonic::async_trait]
impl pb::binlog_server::Binlog for BinlogService {
    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        req: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = super::auth::caller(&req)?.clone();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(START_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("subscribe: no start message within 10 s of opening")
            })??
            .ok_or_else(|| Status::invalid_argument("subscribe: stream closed before `start`"))?;
        let params = validate_start(first, self.core.limits.max_key_bytes).map_err(to_status)?;
        let prefix: &[u8] = match &params.filter {
            EventFilter::Subscribe { prefix, .. } => prefix,
            _ => &[],
        };
        caller.check(super::auth::Access::Prefix(super::auth::Role::Read, prefix))?;
        check_start(&self.core, params.from_revision)?;
        let cursor = if params.from_revision == 0 {
            (self.core.reader.binlog_oldest().map_err(|e| to_status(e.into()))?, 0)
        } else {
            (params.from_revision, 0)
        };
        let (tx, rx) = mpsc::channel(OUT_QUEUE_MESSAGES);
        let sub =
            Subscriber { core: self.core.clone(), params, cursor, in_flight: VecDeque::new(), tx };
        tokio::spawn(sub.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Start a Watch stream (Kv.Watch): validated request in, stream out.
pub fn watch(
    core: Arc<NodeCore>,
    r: pb::WatchRequest,
) -> Result<ReceiverStream<Result<pb::WatchResponse, Status>>, Status> {
    if !r.key.is_empty() && !r.prefix.is_empty() {
        return Err(Status::invalid_argument("watch: give either key or prefix, not both"));
    }
    for (what, k) in [("key", &r.key), ("prefix", &r.prefix)] {
        if k.len() > core.limits.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "watch: {what} is {} bytes, over the limit of {} bytes",
                k.len(),
                core.limits.max_key_bytes
            )));
        }
    }
    check_start(&core, r.from_revision)?;
    let filter =
        if r.key.is_empty() { EventFilter::Prefix(r.prefix) } else { EventFilter::Key(r.key) };
    let cursor = if r.from_revision == 0 {
        let applied = core.reader.applied().map_err(|e| to_status(e.into()))?;
        (applied.revision + 1, 0)
    } else {
        (r.from_revision, 0)
    };
    let (tx, rx) = mpsc::channel(OUT_QUEUE_MESSAGES);
    tokio::spawn(run_watch(core, cursor, filter, tx));
    Ok(ReceiverStream::new(rx))
}

async fn run_watch(
    core: Arc<NodeCore>,
    mut cursor: (u64, u32),
    filter: EventFilter,
    tx: Out<pb::WatchResponse>,
) {
    let _guard = SubscriberGuard::new();
    let mut applied = core.reader.applied_watch();
    loop {
        applied.borrow_and_update();
        let page = match read_page(&core, cursor, BATCH_EVENTS, &filter) {
            Ok(p) => p,
            Err(s) => {
                let _ = tx.send(Err(s)).await;
                return;
            }
        };
        cursor = page.next;
        if !page.events.is_empty() {
            let n = page.events.len();
            let events = page.events.into_iter().map(event_to_pb).collect();
            let msg = pb::WatchResponse { header: Some(core.header()), events };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            metrics::counter!(METRIC_EVENTS_SENT).increment(n as u64);
        }
        if page.at_end {
            tokio::select! {
                _ = tx.closed() => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;

    fn ev(op: EventOp, key: &str) -> BinlogEvent {
        BinlogEvent {
            revision: 1,
            index: 0,
            hlc: Timestamp::ZERO,
            key: key.into(),
            op,
            before: None,
            after: None,
            request_id: String::new(),
            saga_id: String::new(),
            saga_deadline_unix_ms: 0,
            trace_id: String::new(),
            compensation: false,
            chain_hash: [0; 16],
        }
    }

    #[test]
    fn filters_pass_the_right_events() {
        let all = EventFilter::Subscribe { prefix: vec![], include_saga_events: false };
        assert!(all.matches(&ev(EventOp::SagaOpen, "")));
        let p = EventFilter::Subscribe { prefix: b"a/".to_vec(), include_saga_events: false };
        assert!(p.matches(&ev(EventOp::Put, "a/1")));
        assert!(!p.matches(&ev(EventOp::Put, "b/1")));
        assert!(!p.matches(&ev(EventOp::SagaCommit, "")));
        let ps = EventFilter::Subscribe { prefix: b"a/".to_vec(), include_saga_events: true };
        assert!(ps.matches(&ev(EventOp::SagaCommit, "")));
        assert!(EventFilter::Key(b"k".to_vec()).matches(&ev(EventOp::Delete, "k")));
        assert!(!EventFilter::Key(b"k".to_vec()).matches(&ev(EventOp::Put, "k2")));
        assert!(!EventFilter::Prefix(vec![]).matches(&ev(EventOp::SagaAbort, "")));
    }

    #[test]
    fn start_validation_refuses_bad_first_messages() {
        let ack = pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Ack(pb::SubscribeAck::default())),
        };
        assert!(matches!(validate_start(ack, 8), Err(Error::InvalidArgument(_))));
        let big = pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
                window_events: MAX_WINDOW_EVENTS + 1,
                ..Default::default()
            })),
        };
        assert!(matches!(validate_start(big, 8), Err(Error::InvalidArgument(_))));
        let ok = pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart::default())),
        };
        let p = validate_start(ok, 8).expect("valid");
        assert_eq!(p.window_events, DEFAULT_WINDOW_EVENTS as usize);
    }
}

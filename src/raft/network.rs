//! Client half of the Raft transport: openraft's network traits over tonic.
//!
//! One cached HTTP/2 `Channel` per peer address, shared by every connection openraft
//! creates to that peer (openraft asks for new clients often; channels are expensive).
//! Every RPC honours the deadline openraft passes in (`RPCOption::hard_ttl`) both as the
//! gRPC deadline and as a local timeout. Payloads are postcard-encoded openraft
//! messages; the envelope carries the cluster name, the target id and our HLC.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{NodeId, NodeInfo, TypeConfig};
use crate::hlc::Hlc;
use crate::pb::v1 as pb;
use crate::pb::v1::raft_client::RaftClient;
use crate::storage::types::Vote;
use crate::tls::NodeTls;

/// TCP connect timeout to a peer.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keepalive ping interval to peers.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a keepalive ping may go unanswered before the connection is dropped.
pub const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Max gRPC message size between peers, bytes (append batches, snapshot chunks).
pub const PEER_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Transfer rate a peer RPC is always allowed on top of openraft's deadline: a large
/// AppendEntries (up to `max_payload_entries` entries of up to 1 MiB each) takes
/// longer to send, decode and fsync than a heartbeat, and cancelling it at the
/// heartbeat deadline only makes the leader send it again (64 KiB puts used to stall
/// that way: docs/PERFORMANCE.md).
pub const PEER_MIN_BYTES_PER_SEC: f64 = 32.0 * 1024.0 * 1024.0;
/// Requests unanswered on one replication stream, at most (at most one of them with
/// entries, see `Window`; the follower side of openraft buffers 64).
pub const APPEND_WINDOW: usize = 64;
/// Largest batch of entries after which the next request may still overtake an
/// unanswered entry-less one (see `Window`).
pub const PIPELINE_MAX_BATCH: usize = 4;
/// Snapshot chunks buffered ahead of the network, per transfer.
pub const SNAPSHOT_SEND_QUEUE: usize = 4;

/// Why a remote read index failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadIndexError {
    /// The leader says the asking node is not a member of the cluster (removed).
    #[error("not a member: {0}")]
    NotMember(String),
    /// Transport failure, timeout, not the leader any more, no quorum.
    #[error("{0}")]
    Failed(String),
}

/// Builds connections to peers; holds the per-address channel cache.
#[derive(Clone)]
pub struct Network {
    inner: Arc<NetInner>,
}

struct NetInner {
    cluster_name: String,
    routes: HashMap<NodeId, String>,
    hlc: Hlc,
    snapshot_chunk_bytes: usize,
    channels: Mutex<HashMap<String, Channel>>,
    tls: Option<NodeTls>,
}

/// Build the lazily-connecting channel to `addr` (host:port); with `tls`, mutual TLS
/// (our node certificate, the peer's verified against the CA).
pub fn peer_channel(addr: &str, tls: Option<&NodeTls>) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        Some(t) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(t.peer_client())?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    // Writes are coalesced per flush (see `crate::coalesce`); TLS, when set, goes on top.
    Ok(endpoint
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(crate::coalesce::connect)))
}

impl Network {
    /// A network for a node of `cluster_name`, stamping RPCs with `hlc`; `routes`
    /// overrides the Raft address of some peers (see `config::RouteConfig`).
    pub fn new(
        cluster_name: String,
        hlc: Hlc,
        snapshot_chunk_bytes: usize,
        routes: HashMap<NodeId, String>,
        tls: Option<NodeTls>,
    ) -> Self {
        let inner = NetInner {
            cluster_name,
            routes,
            hlc,
            snapshot_chunk_bytes,
            channels: Mutex::default(),
            tls,
        };
        Self { inner: Arc::new(inner) }
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = peer_channel(addr, self.inner.tls.as_ref())?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

impl Network {
    /// The node's TLS material (also used to forward API requests to the leader).
    pub fn tls(&self) -> Option<&NodeTls> {
        self.inner.tls.as_ref()
    }

    /// Ask the leader (`leader` at Raft address `addr`) for a read index on behalf of
    /// node `from`: the log id a follower must apply before serving a linearizable read
    /// locally. The leader refuses nodes that are not members
    /// ([`ReadIndexError::NotMember`]).
    pub async fn remote_read_index(
        &self,
        from: NodeId,
        leader: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<crate::storage::types::LogId, ReadIndexError> {
        let failed = ReadIndexError::Failed;
        let addr = self.inner.routes.get(&leader).map_or(addr, String::as_str).to_string();
        let channel =
            self.channel(&addr).map_err(|e| failed(format!("bad raft address {addr:?}: {e}")))?;
        let payload = postcard::to_stdvec(&from).map_err(|e| failed(e.to_string()))?;
        let msg = pb::RaftRequest {
            cluster_name: self.inner.cluster_name.clone(),
            target: leader,
            payload,
            hlc: Some(self.inner.hlc.now().into()),
        };
        let mut request = tonic::Request::new(msg);
        request.set_timeout(timeout);
        let mut client = RaftClient::new(channel);
        let reply = tokio::time::timeout(timeout, client.read_index(request))
            .await
            .map_err(|_| failed(format!("read index from node {leader} timed out")))?
            .map_err(|s| {
                if s.code() == tonic::Code::PermissionDenied {
                    ReadIndexError::NotMember(s.message().to_string())
                } else {
                    failed(format!("read index from node {leader}: {}: {}", s.code(), s.message()))
                }
            })?;
        postcard::from_bytes(&reply.into_inner().payload)
            .map_err(|e| failed(format!("decode read index: {e}")))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        let addr =
            self.inner.routes.get(&target).cloned().unwrap_or_else(|| node.raft_addr.clone());
        let client = self
            .channel(&addr)
            .map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(PEER_MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(PEER_MAX_MESSAGE_BYTES)
            })
            .map_err(|e| format!("bad raft address {:?}: {e}", node.raft_addr));
        Connection { target, client, net: self.inner.clone(), streaming: true, lane: None }
    }
}

/// A connection to one peer.
pub struct Connection {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    net: Arc<NetInner>,
    /// Whether the peer serves `AppendStream` (false after UNIMPLEMENTED: an older
    /// node during a rolling upgrade; then one AppendEntries at a time).
    streaming: bool,
    /// A kept-open `AppendStream` for single requests (see [`Lane`]).
    lane: Option<Lane>,
}

/// An `AppendStream` kept open for the single requests of one connection: openraft's
/// heartbeats (which confirm every linearizable read index) and probes. Each is one
/// message on an open stream instead of a new HTTP/2 stream, request headers, a
/// server task and trailers per request, which was most of a read index's cost at
/// one client.
///
/// Invariant: at most one request is unanswered, and a lane whose request was not
/// answered (error, deadline, or the caller giving up) is never reused: the call takes
/// the lane out of the connection and puts it back only after its reply arrived, so a
/// late reply can never be taken for the answer to a later request.
struct Lane {
    requests: tokio::sync::mpsc::Sender<AppendEntriesRequest<TypeConfig>>,
    /// In a Mutex only so the connection is `Sync`; owned, it is reached by `get_mut`.
    replies: Mutex<AppendResults<'static>>,
}

/// One unanswered request of a replication stream.
#[derive(Debug, Clone, Copy)]
struct Unanswered {
    sent: Instant,
    bytes: usize,
    entries: usize,
}

/// What the sender of a replication stream waits on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Requests unanswered.
    all: usize,
    /// Of those, requests carrying entries.
    with_entries: usize,
    /// Entries of the last request that carried any.
    last_batch: usize,
}

impl Counts {
    /// Whether the next request may be pulled (see [`Window`]).
    fn ready(&self) -> bool {
        self.all == 0
            || (self.all < APPEND_WINDOW
                && self.with_entries == 0
                && self.last_batch <= PIPELINE_MAX_BATCH)
    }
}

/// The requests of one replication stream that are sent and not answered yet.
///
/// The next request may be pulled from openraft when nothing is unanswered, or when
/// fewer than [`APPEND_WINDOW`] are, **none of them carries entries**, and the last
/// batch of entries was small (at most [`PIPELINE_MAX_BATCH`]). So at low load an
/// entry-less request (a commit-index update) in flight never holds back the next
/// entries (which cost a round trip per write at one client), while under load,
/// where batches are large, requests go one at a time and each carries everything
/// that accumulated meanwhile (smaller, more frequent batches cost the followers more
/// CPU per write: -7 % puts/s at 64 clients when only entries were held back).
struct Window {
    counts: tokio::sync::watch::Sender<Counts>,
    unanswered: Mutex<VecDeque<Unanswered>>,
}

impl Window {
    fn new() -> Self {
        Self {
            counts: tokio::sync::watch::Sender::new(Counts::default()),
            unanswered: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Unanswered>> {
        self.unanswered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the next request may be pulled (see the type docs).
    async fn ready(&self) {
        let mut rx = self.counts.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = rx.wait_for(Counts::ready).await;
    }

    fn sent(&self, bytes: usize, entries: usize) {
        let mut q = self.lock();
        q.push_back(Unanswered { sent: Instant::now(), bytes, entries });
        self.publish(&q, (entries > 0).then_some(entries));
    }

    fn answered(&self) {
        let mut q = self.lock();
        q.pop_front();
        self.publish(&q, None);
    }

    fn publish(&self, q: &VecDeque<Unanswered>, batch: Option<usize>) {
        let with_entries = q.iter().filter(|u| u.entries > 0).count();
        debug_assert!(q.len() <= APPEND_WINDOW && with_entries <= 1, "window bounds");
        self.counts.send_modify(|c| {
            *c = Counts { all: q.len(), with_entries, last_batch: batch.unwrap_or(c.last_batch) };
        });
    }

    /// Whether the oldest unanswered request is older than `ttl` plus the time to move
    /// every unanswered byte ([`payload_ttl`]).
    fn overdue(&self, ttl: Duration) -> bool {
        let q = self.lock();
        let bytes = q.iter().map(|u| u.bytes).sum();
        q.front().is_some_and(|u| u.sent.elapsed() > payload_ttl(ttl, bytes))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

fn net_err(msg: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&TransportError(msg)))
}

fn status_err(s: tonic::Status) -> RPCError<TypeConfig> {
    let e = TransportError(format!("{}: {}", s.code(), s.message()));
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::FailedPrecondition => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

/// The deadline of an RPC carrying `bytes`: openraft's `ttl` plus the time to move
/// them at [`PEER_MIN_BYTES_PER_SEC`].
pub fn payload_ttl(ttl: Duration, bytes: usize) -> Duration {
    ttl + Duration::from_secs_f64(bytes as f64 / PEER_MIN_BYTES_PER_SEC)
}

impl Connection {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let payload = postcard::to_stdvec(req).map_err(|e| net_err(format!("encode: {e}")))?;
        let msg = pb::RaftRequest {
            cluster_name: self.net.cluster_name.clone(),
            target: self.target,
            payload,
            hlc: Some(self.net.hlc.now().into()),
        };
        let ttl = payload_ttl(option.hard_ttl(), msg.payload.len());
        let mut request = tonic::Request::new(msg);
        request.set_timeout(ttl);
        let mut client = self.client()?;
        let fut = async move {
            match rpc {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::PreVote => client.pre_vote(request).await,
                Rpc::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let reply = tokio::time::timeout(ttl, fut)
            .await
            .map_err(|_| net_err(format!("rpc to node {} timed out after {ttl:?}", self.target)))?
            .map_err(status_err)?;
        postcard::from_bytes(&reply.into_inner().payload)
            .map_err(|e| net_err(format!("decode: {e}")))
    }
}

type AppendResults<'s> =
    BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>;

impl Connection {
    /// Replicate over one `AppendStream` call: requests go out as openraft produces
    /// them while the [`Window`] allows, so a commit-index update in flight no longer
    /// holds back the next entries (one AppendEntries at a time cost a round trip per
    /// write at low concurrency). Replies come back in request order on the
    /// same HTTP/2 stream. The stream fails when the oldest unanswered request is
    /// overdue (see [`Window::overdue`]), so a stalled or partitioned peer is noticed
    /// as with single RPCs.
    async fn open_append_stream<S>(
        &mut self,
        input: S,
        option: RPCOption,
    ) -> Result<AppendResults<'static>, RPCError<TypeConfig>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let mut client = self.client()?;
        let window = Arc::new(Window::new());
        let (net, target) = (self.net.clone(), self.target);
        let outbound = futures::stream::unfold((input, window.clone()), move |(mut input, w)| {
            let net = net.clone();
            async move {
                // Wait for room before pulling the next request from openraft.
                w.ready().await;
                let req = input.next().await?;
                let payload = match postcard::to_stdvec(&req) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode an AppendEntries request");
                        return None;
                    }
                };
                w.sent(payload.len(), req.entries.len());
                let hlc = Some(net.hlc.now().into());
                let msg = pb::RaftRequest {
                    cluster_name: net.cluster_name.clone(),
                    target,
                    payload,
                    hlc,
                };
                Some((msg, (input, w)))
            }
        });
        let ttl = option.hard_ttl();
        let call = tokio::time::timeout(ttl, client.append_stream(tonic::Request::new(outbound)));
        let inbound = match call.await {
            Err(_) => {
                return Err(net_err(format!("stream to node {target} timed out after {ttl:?}")))
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!(target, "peer has no AppendStream: one AppendEntries at a time");
                self.streaming = false;
                return Err(status_err(s));
            }
            Ok(Err(s)) => return Err(status_err(s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let replies = futures::stream::unfold(Some((inbound, window)), move |state| async move {
            let (mut inbound, window) = state?;
            loop {
                let item = match tokio::time::timeout(ttl, inbound.message()).await {
                    Err(_) if window.overdue(ttl) => Err(net_err(format!(
                        "node {target} did not answer a replication request in time"
                    ))),
                    Err(_) => continue,
                    Ok(Ok(None)) => return None,
                    Ok(Err(s)) => Err(status_err(s)),
                    Ok(Ok(Some(reply))) => {
                        window.answered();
                        postcard::from_bytes::<StreamAppendResult<TypeConfig>>(&reply.payload)
                            .map_err(|e| net_err(format!("decode: {e}")))
                    }
                };
                // After an error, a conflict or a higher vote the stream is over.
                let go_on = matches!(item, Ok(Ok(_)));
                return Some((item, go_on.then_some((inbound, window))));
            }
        });
        Ok(Box::pin(replies))
    }
}

impl Connection {
    /// Send one request over the lane (opened on first use or after a failure) and
    /// wait for its reply.
    async fn send_on_lane(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
        // Taken out: dropped unless the reply arrives (see the Lane invariant).
        let mut lane = match self.lane.take() {
            Some(lane) => lane,
            None => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                match self.open_append_stream(ReceiverStream::new(rx), option.clone()).await {
                    Ok(replies) => Lane { requests: tx, replies: Mutex::new(replies) },
                    // An older peer (UNIMPLEMENTED cleared `streaming`): one unary call.
                    Err(_) if !self.streaming => {
                        let once = futures::stream::iter([req]);
                        let mut replies =
                            openraft::network::stream_append_sequential(self, once, option).await?;
                        let none = || net_err("no reply to a single request".into());
                        return replies.next().await.unwrap_or_else(|| Err(none()));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if lane.requests.send(req).await.is_err() {
            return Err(net_err(format!("stream to node {} closed", self.target)));
        }
        let ttl = option.hard_ttl();
        let replies = lane.replies.get_mut().unwrap_or_else(|e| e.into_inner());
        let reply = match tokio::time::timeout(ttl, replies.next()).await {
            Err(_) => {
                return Err(net_err(format!("node {} did not answer in {ttl:?}", self.target)))
            }
            Ok(None) => return Err(net_err(format!("stream to node {} ended", self.target))),
            Ok(Some(reply)) => reply,
        };
        // A conflict or a higher vote ends the stream on the peer: open a new one next time.
        if matches!(reply, Ok(Ok(_))) {
            self.lane = Some(lane);
        }
        reply
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = std::fs::File;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<AppendResults<'s>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        if !self.streaming {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        // A single request (openraft's heartbeats and probes) has nothing to pipeline:
        // it goes over the connection's kept-open lane.
        let single = input.size_hint().1.is_some_and(|n| n <= 1);
        if single {
            return Box::pin(async move {
                let mut input = input;
                let Some(req) = input.next().await else {
                    return Ok(futures::stream::empty().boxed());
                };
                let reply = self.send_on_lane(req, option).await;
                Ok(futures::stream::once(futures::future::ready(reply)).boxed())
            });
        }
        Box::pin(async move { self.open_append_stream(input, option).await })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::PreVote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::TransferLeader, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, std::fs::File>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_stream = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::new(&TransportError(other.to_string()))),
        };
        let header = postcard::to_stdvec(&(vote, snapshot.meta.clone()))
            .map_err(|e| to_stream(net_err(format!("encode: {e}"))))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(SNAPSHOT_SEND_QUEUE);
        let chunk = self.net.snapshot_chunk_bytes;
        let cluster_name = self.net.cluster_name.clone();
        let target = self.target;
        let hlc = self.net.hlc.clone();
        let mut file = snapshot.snapshot;
        // Reading the file is blocking I/O: a dedicated thread feeds the bounded channel.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::{Read, Seek, SeekFrom};
            file.seek(SeekFrom::Start(0))?;
            let first = pb::SnapshotChunk {
                cluster_name: cluster_name.clone(),
                target,
                header,
                data: Vec::new(),
                hlc: Some(hlc.now().into()),
            };
            if tx.blocking_send(first).is_err() {
                return Ok(());
            }
            loop {
                let mut buf = vec![0u8; chunk];
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                let c = pb::SnapshotChunk {
                    cluster_name: cluster_name.clone(),
                    target,
                    header: Vec::new(),
                    data: buf,
                    hlc: None,
                };
                if tx.blocking_send(c).is_err() {
                    return Ok(());
                }
            }
        });
        let mut client = self.client().map_err(to_stream)?;
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.set_timeout(ttl);
        let send = async {
            tokio::time::timeout(ttl, client.install_snapshot(request))
                .await
                .map_err(|_| net_err(format!("snapshot to node {target} timed out after {ttl:?}")))?
                .map_err(status_err)
        };
        let reply = tokio::select! {
            r = send => r.map_err(to_stream)?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(to_stream(net_err(format!("read snapshot file: {e}")))),
            Err(e) => return Err(to_stream(net_err(format!("snapshot reader: {e}")))),
        }
        postcard::from_bytes(&reply.into_inner().payload)
            .map_err(|e| to_stream(net_err(format!("decode: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tonic::{Request, Response, Status, Streaming};

    use futures::FutureExt;

    use super::*;

    /// How the stub peer answers `AppendStream`.
    #[derive(Clone, Copy)]
    enum StreamMode {
        /// An older node: UNIMPLEMENTED.
        Unimplemented,
        /// Accepts the stream and never answers (a stalled peer).
        Silent,
        /// Answers every request of a stream with success.
        Answering,
    }

    /// A peer that answers AppendEntries with success and AppendStream per its mode,
    /// counting the calls of each.
    #[derive(Clone)]
    struct Stub(StreamMode, Arc<Calls>);

    #[derive(Default)]
    struct Calls {
        unary: std::sync::atomic::AtomicUsize,
        streams: std::sync::atomic::AtomicUsize,
    }

    impl Calls {
        fn get(&self) -> (usize, usize) {
            use std::sync::atomic::Ordering::SeqCst;
            (self.unary.load(SeqCst), self.streams.load(SeqCst))
        }
    }

    fn success() -> Result<Response<pb::RaftReply>, Status> {
        let resp = AppendEntriesResponse::<TypeConfig>::Success;
        Ok(Response::new(pb::RaftReply { payload: postcard::to_stdvec(&resp).expect("encode") }))
    }

    type Replies = Pin<Box<dyn futures::Stream<Item = Result<pb::RaftReply, Status>> + Send>>;

    #[tonic::async_trait]
    impl pb::raft_server::Raft for Stub {
        type AppendStreamStream = Replies;
        async fn append_entries(
            &self,
            _: Request<pb::RaftRequest>,
        ) -> Result<Response<pb::RaftReply>, Status> {
            self.1.unary.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            success()
        }
        async fn append_stream(
            &self,
            req: Request<Streaming<pb::RaftRequest>>,
        ) -> Result<Response<Replies>, Status> {
            self.1.streams.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match self.0 {
                StreamMode::Answering => {
                    let ok = StreamAppendResult::<TypeConfig>::Ok(None);
                    let payload = postcard::to_stdvec(&ok).expect("encode");
                    let replies = req
                        .into_inner()
                        .map(move |r| r.map(|_| pb::RaftReply { payload: payload.clone() }));
                    Ok(Response::new(Box::pin(replies)))
                }
                StreamMode::Unimplemented => Err(Status::unimplemented("old node")),
                StreamMode::Silent => {
                    // Read the requests (so the sender's window fills) and never answer.
                    let mut inbound = req.into_inner();
                    tokio::spawn(async move { while let Some(Ok(_)) = inbound.next().await {} });
                    Ok(Response::new(Box::pin(futures::stream::pending())))
                }
            }
        }
        async fn vote(
            &self,
            _: Request<pb::RaftRequest>,
        ) -> Result<Response<pb::RaftReply>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn pre_vote(
            &self,
            _: Request<pb::RaftRequest>,
        ) -> Result<Response<pb::RaftReply>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn install_snapshot(
            &self,
            _: Request<Streaming<pb::SnapshotChunk>>,
        ) -> Result<Response<pb::RaftReply>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn read_index(
            &self,
            _: Request<pb::RaftRequest>,
        ) -> Result<Response<pb::RaftReply>, Status> {
            Err(Status::unimplemented("stub"))
        }
        async fn transfer_leader(
            &self,
            _: Request<pb::RaftRequest>,
        ) -> Result<Response<pb::RaftReply>, Status> {
            Err(Status::unimplemented("stub"))
        }
    }

    /// A connection to a stub peer served on a free 127.0.0.1 port.
    async fn connect(mode: StreamMode) -> Connection {
        connect_counting(mode).await.0
    }

    /// [`connect`], with the stub's call counts.
    async fn connect_counting(mode: StreamMode) -> (Connection, Arc<Calls>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let calls = Arc::new(Calls::default());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::raft_server::RaftServer::new(Stub(mode, calls.clone())))
                .serve_with_incoming(incoming),
        );
        let hlc = Hlc::new(
            1,
            Arc::new(crate::hlc::SystemClock::new()),
            Duration::from_secs(1),
            Default::default(),
        );
        let mut net = Network::new("meridian".into(), hlc, 1024, HashMap::new(), None);
        let node = NodeInfo { api_addr: addr.clone(), raft_addr: addr, region: "r".into() };
        (net.new_client(2, &node).await, calls)
    }

    /// Send one request the way openraft's heartbeat worker does.
    async fn single(
        conn: &mut Connection,
        ttl: Duration,
    ) -> Vec<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        let input = Box::pin(futures::stream::once(async { heartbeat() }));
        conn.stream_append(input, RPCOption::new(ttl)).await.expect("call").collect().await
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn a_peer_without_append_stream_gets_one_append_at_a_time() {
        let (mut conn, calls) = connect_counting(StreamMode::Unimplemented).await;
        let option = RPCOption::new(Duration::from_secs(5));
        // A single request (a heartbeat) tries the lane, then falls back in the same call.
        let one = single(&mut conn, Duration::from_secs(5)).await;
        assert!(matches!(one.as_slice(), [Ok(Ok(None))]), "{one:?}");
        assert!(!conn.streaming, "remembered");
        assert_eq!(calls.get(), (1, 1));
        let one = single(&mut conn, Duration::from_secs(5)).await;
        assert!(matches!(one.as_slice(), [Ok(Ok(None))]), "{one:?}");
        assert_eq!(calls.get(), (2, 1), "no stream tried again");
        let mut conn = connect(StreamMode::Unimplemented).await;
        let input = futures::stream::iter(vec![heartbeat(), heartbeat()]);
        assert!(conn.stream_append(input, option.clone()).await.is_err(), "UNIMPLEMENTED");
        assert!(!conn.streaming, "remembered");
        let input = futures::stream::iter(vec![heartbeat(), heartbeat()]);
        let results: Vec<_> =
            conn.stream_append(input, option).await.expect("sequential").collect().await;
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| matches!(r, Ok(Ok(None)))), "{results:?}");
    }

    #[tokio::test]
    async fn a_stream_whose_peer_stops_answering_fails_when_a_request_is_overdue() {
        let mut conn = connect(StreamMode::Silent).await;
        let ttl = Duration::from_millis(200);
        // A replication session's input: open-ended (no upper size bound).
        let open_ended = futures::stream::poll_fn(|_| std::task::Poll::Pending);
        let input = futures::stream::iter(vec![heartbeat()]).chain(open_ended);
        let started = Instant::now();
        let mut replies =
            conn.stream_append(Box::pin(input), RPCOption::new(ttl)).await.expect("stream opens");
        let first = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .expect("the stream fails on its own");
        assert!(matches!(first, Some(Err(_))), "{first:?}");
        assert!(started.elapsed() >= ttl, "not before the deadline");
        assert!(replies.next().await.is_none(), "then it ends");
    }

    #[tokio::test]
    async fn single_requests_share_one_kept_open_stream() {
        let (mut conn, calls) = connect_counting(StreamMode::Answering).await;
        for _ in 0..5 {
            let one = single(&mut conn, Duration::from_secs(5)).await;
            assert!(matches!(one.as_slice(), [Ok(Ok(None))]), "{one:?}");
        }
        assert_eq!(calls.get(), (0, 1), "five heartbeats, one stream, no unary call");
    }

    #[tokio::test]
    async fn a_lane_whose_reply_is_overdue_is_not_reused() {
        let (mut conn, calls) = connect_counting(StreamMode::Silent).await;
        let ttl = Duration::from_millis(100);
        let one = single(&mut conn, ttl).await;
        assert!(matches!(one.as_slice(), [Err(_)]), "{one:?}");
        assert!(conn.lane.is_none(), "dropped: a late reply must not answer the next request");
        let one = single(&mut conn, ttl).await;
        assert!(matches!(one.as_slice(), [Err(_)]), "{one:?}");
        assert_eq!(calls.get(), (0, 2), "the next request opened a new stream");
        // A caller giving up mid-request (openraft's own timeout) drops the lane too.
        let input = Box::pin(futures::stream::once(async { heartbeat() }));
        let call = async {
            let mut out = conn.stream_append(input, RPCOption::new(Duration::from_secs(5))).await;
            if let Ok(out) = &mut out {
                out.next().await;
            }
        };
        assert!(tokio::time::timeout(ttl, call).await.is_err(), "still waiting");
        assert!(conn.lane.is_none());
    }

    #[tokio::test]
    async fn the_window_holds_entries_behind_entries_but_not_behind_commit_updates() {
        let w = Window::new();
        let ready = |w: &Window| w.ready().now_or_never().is_some();
        assert!(ready(&w));
        w.sent(10, 0);
        w.sent(10, 0);
        assert!(ready(&w), "commit-index updates in flight do not hold the next request");
        w.sent(300, 1);
        assert!(!ready(&w), "entries in flight: the next batch waits");
        assert!(!w.overdue(Duration::from_secs(60)));
        w.answered();
        w.answered();
        assert!(!ready(&w));
        w.answered();
        assert!(ready(&w), "the entries were answered");
        for _ in 0..APPEND_WINDOW {
            w.sent(10, 0);
        }
        assert!(!ready(&w), "at most APPEND_WINDOW unanswered");
        w.answered();
        assert!(ready(&w));
        assert!(
            w.overdue(Duration::ZERO)
                || w.lock().front().is_some_and(|u| u.sent.elapsed().is_zero())
        );
        while !w.lock().is_empty() {
            w.answered();
        }
        w.answered(); // nothing left
        assert!(!w.overdue(Duration::ZERO), "nothing unanswered");
        // Under load (a large last batch) requests go one at a time.
        w.sent(9_000, PIPELINE_MAX_BATCH + 1);
        w.answered();
        assert!(ready(&w), "nothing unanswered");
        w.sent(10, 0);
        assert!(!ready(&w), "a large batch last: wait for the commit update's answer");
        w.answered();
        w.sent(200, PIPELINE_MAX_BATCH);
        w.answered();
        w.sent(10, 0);
        assert!(ready(&w), "a small batch last: pipelined again");
    }

    #[test]
    fn large_payloads_get_time_to_move_and_heartbeats_keep_the_deadline() {
        let ttl = Duration::from_millis(100);
        assert_eq!(payload_ttl(ttl, 0), ttl);
        assert!(payload_ttl(ttl, 300) < Duration::from_millis(101), "a heartbeat-sized RPC");
        // 512 entries of 64 KiB: 32 MiB, one second on top.
        let big = payload_ttl(ttl, 512 * 64 * 1024);
        assert_eq!(big, Duration::from_millis(1_100));
    }
}

//! Client half of the Raft transport: openraft's network traits over tonic.
//!
//! One cached HTTP/2 `Channel` per peer address, shared by every connection openraft
//! creates to that peer (openraft asks for new clients often; channels are expensive).
//! Every RPC honours the deadline openraft passes in (`RPCOption::hard_ttl`) both as the
//! gRPC deadline and as a local timeout. Payloads are postcard-encoded openraft
//! messages; the envelope carries the cluster name, the target id and our HLC.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
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
    // Writes are coalesced per flush (see `coalesce`); TLS, when set, goes on top.
    Ok(endpoint
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(super::coalesce::connect)))
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
        Connection { target, client, net: self.inner.clone() }
    }
}

/// A connection to one peer.
pub struct Connection {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    net: Arc<NetInner>,
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

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = std::fs::File;

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
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
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
    use super::*;

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

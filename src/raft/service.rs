//! Server half of the Raft transport: the internal `meridian.v1.Raft` gRPC service.
//!
//! Every message is checked before it reaches openraft: the cluster name and target
//! id must be ours (a misrouted or cross-cluster message is refused with
//! FAILED_PRECONDITION), and the sender's HLC is merged — one more than
//! `max_clock_offset` ahead of our clock is refused, so a node with a runaway clock
//! cannot drag the cluster's timestamps forward.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use openraft::async_runtime::watch::WatchReceiver;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use super::{MeridianRaft, NodeId};
use crate::hlc::Hlc;
use crate::pb::v1 as pb;
use crate::storage::types::{SnapshotMeta, Vote};

/// Largest snapshot accepted from a leader, bytes (bounds disk use of a transfer).
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// When this node last heard from a leader it accepted (an AppendEntries that
/// succeeded), and the commit index that leader announced then. Followers use it to
/// tell whether they are cut off (health) and how fresh their data provably is.
#[derive(Debug, Default)]
pub struct LeaderContact {
    inner: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl LeaderContact {
    /// Record a successful AppendEntries carrying `leader_commit`.
    pub fn record(&self, leader_commit: u64) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), leader_commit));
    }

    /// (time of last contact, leader commit index then), if any.
    pub fn last(&self) -> Option<(std::time::Instant, u64)> {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The Raft gRPC service of one node.
#[derive(Clone)]
pub struct RaftService {
    raft: MeridianRaft,
    id: NodeId,
    cluster_name: String,
    hlc: Hlc,
    snapshot_dir: PathBuf,
    clock_rejections: Arc<AtomicU64>,
    contact: Arc<LeaderContact>,
}

impl RaftService {
    /// A service for node `id` of `cluster_name`; received snapshots are staged in
    /// `snapshot_dir`.
    pub fn new(
        raft: MeridianRaft,
        id: NodeId,
        cluster_name: String,
        hlc: Hlc,
        snapshot_dir: PathBuf,
        contact: Arc<LeaderContact>,
    ) -> Self {
        Self {
            raft,
            id,
            cluster_name,
            hlc,
            snapshot_dir,
            clock_rejections: Arc::default(),
            contact,
        }
    }

    /// How many peer messages were refused for clock offset.
    pub fn clock_rejections(&self) -> Arc<AtomicU64> {
        self.clock_rejections.clone()
    }

    fn check(&self, cluster_name: &str, target: u64, hlc: Option<pb::Hlc>) -> Result<(), Status> {
        if cluster_name != self.cluster_name {
            return Err(Status::failed_precondition(format!(
                "message for cluster {cluster_name:?} reached a node of cluster {:?}",
                self.cluster_name
            )));
        }
        if target != self.id {
            return Err(Status::failed_precondition(format!(
                "message for node {target} reached node {}",
                self.id
            )));
        }
        if let Some(h) = hlc {
            if let Err(e) = self.hlc.update(h.into()) {
                self.clock_rejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "refused peer message");
                return Err(Status::failed_precondition(e.to_string()));
            }
        }
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, req: Request<pb::RaftRequest>) -> Result<T, Status> {
        self.decode_msg(req.into_inner())
    }

    fn decode_msg<T: DeserializeOwned>(&self, r: pb::RaftRequest) -> Result<T, Status> {
        self.check(&r.cluster_name, r.target, r.hlc)?;
        postcard::from_bytes(&r.payload)
            .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
    }
}

fn reply<T: Serialize>(v: &T) -> Result<Response<pb::RaftReply>, Status> {
    let payload = postcard::to_stdvec(v).map_err(|e| Status::internal(format!("encode: {e}")))?;
    Ok(Response::new(pb::RaftReply { payload }))
}

/// Log the trace id of every client write a follower receives (debug level), so one
/// write can be followed from the leader's proposal to each replica.
fn log_traced_entries(node: NodeId, entries: &[crate::storage::types::Entry]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for e in entries {
        if let openraft::EntryPayload::Normal(cmd) = &e.payload {
            if !cmd.trace_id.is_empty() {
                tracing::debug!(node, trace_id = %cmd.trace_id, index = e.log_id.index, "follower: received entry");
            }
        }
    }
}

fn raft_status(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

/// Replies of one replication stream.
pub type AppendReplies =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RaftReply, Status>> + Send>>;

/// The requests of a replication stream, checked and decoded, until the first bad one
/// (its status is left in `failed`). Each request's leader commit is queued in
/// `commits` for its reply.
fn append_requests(
    svc: RaftService,
    inbound: Streaming<pb::RaftRequest>,
    commits: Arc<std::sync::Mutex<VecDeque<u64>>>,
    failed: Arc<std::sync::Mutex<Option<Status>>>,
) -> impl futures::Stream<Item = AppendRequest> + Send + 'static {
    futures::stream::unfold(Some(inbound), move |inbound| {
        let (svc, commits, failed) = (svc.clone(), commits.clone(), failed.clone());
        async move {
            let mut inbound = inbound?;
            let decoded = match inbound.next().await? {
                Ok(msg) => svc.decode_msg::<AppendRequest>(msg),
                Err(status) => Err(status),
            };
            match decoded {
                Ok(rpc) => {
                    log_traced_entries(svc.id, &rpc.entries);
                    let commit = rpc.leader_commit.as_ref().map_or(0, |l| l.index);
                    commits.lock().unwrap_or_else(|e| e.into_inner()).push_back(commit);
                    Some((rpc, Some(inbound)))
                }
                Err(status) => {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    None
                }
            }
        }
    })
}

type AppendRequest = openraft::raft::AppendEntriesRequest<super::TypeConfig>;

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    type AppendStreamStream = AppendReplies;

    async fn append_stream(
        &self,
        req: Request<Streaming<pb::RaftRequest>>,
    ) -> Result<Response<AppendReplies>, Status> {
        let commits = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let failed = Arc::new(std::sync::Mutex::new(None));
        let input =
            append_requests(self.clone(), req.into_inner(), commits.clone(), failed.clone());
        let contact = self.contact.clone();
        // openraft processes the requests in order, several in flight, and answers each
        // in order; the stream ends after a conflict, a higher vote or a fatal error.
        let replies = self.raft.stream_append(input).map(move |result| {
            let commit = commits.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            match result {
                Ok(res) => {
                    if let (Ok(_), Some(c)) = (&res, commit) {
                        contact.record(c);
                    }
                    postcard::to_stdvec(&res)
                        .map(|payload| pb::RaftReply { payload })
                        .map_err(|e| Status::internal(format!("encode: {e}")))
                }
                Err(fatal) => Err(raft_status(fatal)),
            }
        });
        // A bad request ends the input; its status follows the replies to the good ones.
        let failure = futures::stream::once(async move {
            failed.lock().unwrap_or_else(|e| e.into_inner()).take().map(Err)
        })
        .filter_map(futures::future::ready);
        Ok(Response::new(Box::pin(replies.chain(failure))))
    }

    async fn append_entries(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<super::TypeConfig> = self.decode(req)?;
        let leader_commit = rpc.leader_commit.as_ref().map_or(0, |l| l.index);
        log_traced_entries(self.id, &rpc.entries);
        let resp = self.raft.append_entries(rpc).await.map_err(raft_status)?;
        if resp.is_success() {
            self.contact.record(leader_commit);
        }
        reply(&resp)
    }

    async fn vote(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let rpc = self.decode(req)?;
        let resp = self.raft.vote(rpc).await.map_err(raft_status)?;
        reply(&resp)
    }

    async fn pre_vote(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let rpc = self.decode(req)?;
        let resp = self.raft.pre_vote(rpc).await.map_err(raft_status)?;
        reply(&resp)
    }

    async fn read_index(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let from: u64 = self.decode(req)?;
        let member = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.membership().get_node(&from).is_some()
        };
        if !member {
            // PERMISSION_DENIED is this RPC's "you are not a member" answer: the asking
            // node then knows it was removed and stops serving.
            return Err(Status::permission_denied(format!(
                "node {from} is not a member of this cluster"
            )));
        }
        use openraft::error::{LinearizableReadError, RaftError};
        match self.raft.get_read_linearizer(openraft::ReadPolicy::ReadIndex).await {
            Ok(lin) => reply(lin.read_log_id().log_id()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                Err(Status::failed_precondition("not the leader"))
            }
            Err(e) => Err(Status::unavailable(format!("read index: {e}"))),
        }
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let rpc = self.decode(req)?;
        let resp = self.raft.handle_transfer_leader(rpc).await.map_err(raft_status)?;
        reply(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check(&first.cluster_name, first.target, first.hlc)?;
        let (vote, meta): (Vote, SnapshotMeta) = postcard::from_bytes(&first.header)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
        std::fs::create_dir_all(&self.snapshot_dir).map_err(|e| Status::internal(e.to_string()))?;
        let tmp = tempfile_in(&self.snapshot_dir).map_err(|e| Status::internal(e.to_string()))?;
        let mut file = tmp;
        let mut total: u64 = 0;
        use std::io::Write;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            total += chunk.data.len() as u64;
            if total > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "snapshot larger than {MAX_SNAPSHOT_BYTES} bytes"
                )));
            }
            tokio::task::block_in_place(|| file.write_all(&chunk.data))
                .map_err(|e| Status::internal(format!("write snapshot: {e}")))?;
        }
        tokio::task::block_in_place(|| file.sync_all())
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(%meta, bytes = total, "received snapshot");
        let snapshot = openraft::storage::Snapshot { meta, snapshot: file };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await.map_err(raft_status)?;
        reply(&resp)
    }
}

/// An anonymous temp file in `dir` (unlinked on creation; the handle keeps the data).
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let name = format!(".recv-{}-{}", std::process::id(), rand::random::<u64>());
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

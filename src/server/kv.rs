//! The public `meridian.v1.Kv` gRPC service.
//!
//! Every handler runs under the request deadline (the client's `grpc-timeout`, capped
//! by `default_request_timeout_ms`). A follower that is not the leader forwards the
//! request to the leader once (marking it with `x-meridian-forwarded` so it is never
//! forwarded twice); if that is impossible the client gets UNAVAILABLE with the leader
//! hint. Forwarded writes keep their request_id, so a client retry after an
//! indeterminate forward is still applied at most once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_types::StatusExt;
use tracing::Instrument;

use super::auth::{authorize, authorize_txn, Access, Role};
use super::core::NodeCore;
use super::status::{to_status, LEADER_METADATA};
use super::validate;
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::pb::v1::kv_client::KvClient;
use crate::record::{ApplyResult, Outcome, SagaState};
use crate::storage::state_machine::AppliedPoint;

/// Metadata marking a request forwarded by another node (value: that node's id).
pub const FORWARDED_METADATA: &str = "x-meridian-forwarded";
/// Metadata carrying the request/trace id.
pub const REQUEST_ID_METADATA: &str = "x-request-id";
/// Max gRPC message size of the public API, bytes (values up to 16 MiB plus framing).
pub const API_MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Per-request context: deadline, forwarding mark, trace id.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// When the request must be answered.
    pub deadline: Instant,
    /// Whether another node forwarded this request to us.
    pub forwarded: bool,
    /// Trace id (from `x-request-id` or `traceparent`, else generated).
    pub trace_id: String,
}

/// Parse a `grpc-timeout` header value ("100m", "5S", ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl RequestCtx {
    /// Build the context of a request.
    pub fn new<T>(req: &Request<T>, default_timeout: Duration) -> Self {
        let md = req.metadata();
        let timeout = md
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(default_timeout, |t| t.min(default_timeout));
        // The request layer validated `traceparent` / `x-request-id` and stored the
        // result; the fallback serves services mounted without the layer (tests).
        let trace_id = match req.extensions().get::<super::layer::TraceContext>() {
            Some(t) => t.trace_id.clone(),
            None => md
                .get(REQUEST_ID_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(128).collect())
                .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>())),
        };
        RequestCtx {
            deadline: Instant::now() + timeout,
            forwarded: md.get(FORWARDED_METADATA).is_some(),
            trace_id,
        }
    }
}

/// The Kv service.
pub struct KvService {
    core: Arc<NodeCore>,
    leaders: Mutex<HashMap<String, KvClient<Channel>>>,
}

impl KvService {
    /// A Kv service over `core`.
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self { core, leaders: Mutex::default() }
    }

    fn leader_client(&self, addr: &str) -> Result<KvClient<Channel>, Status> {
        let mut map = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = crate::raft::network::peer_channel(addr, self.core.network.tls())
            .map_err(|e| Status::unavailable(format!("bad leader address {addr:?}: {e}")))?;
        let c = KvClient::new(ch)
            .max_decoding_message_size(API_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(API_MAX_MESSAGE_BYTES);
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    async fn run<Req, Resp, H, HF, F, FF>(
        &self,
        req: Request<Req>,
        handler: H,
        forward: F,
    ) -> Result<Response<Resp>, Status>
    where
        H: FnOnce(Arc<NodeCore>, RequestCtx, Req) -> HF,
        HF: Future<Output = Result<Resp, Error>>,
        F: FnOnce(KvClient<Channel>, Request<Req>) -> FF,
        FF: Future<Output = Result<Response<Resp>, Status>>,
        Req: Clone,
    {
        let default_timeout = Duration::from_millis(self.core.config.default_request_timeout_ms);
        let ctx = RequestCtx::new(&req, default_timeout);
        let caller = req.extensions().get::<super::auth::Caller>().cloned();
        let request_id = req
            .extensions()
            .get::<super::layer::TraceContext>()
            .map_or_else(|| ctx.trace_id.clone(), |t| t.request_id.clone());
        let inner = req.into_inner();
        let span = tracing::debug_span!(
            "kv",
            trace_id = %ctx.trace_id,
            request_id = %request_id,
            node = self.core.id
        );
        let work = handler(self.core.clone(), ctx.clone(), inner.clone()).instrument(span);
        let res = tokio::time::timeout_at(ctx.deadline, work)
            .await
            .unwrap_or_else(|_| Err(Error::Timeout("request deadline exceeded".into())));
        match res {
            Ok(r) => Ok(Response::new(r)),
            Err(Error::NotLeader { leader_api_addr: Some(addr), leader_id }) if !ctx.forwarded => {
                if let Some(stale) = self.core.stale_leader() {
                    return Err(to_status(stale));
                }
                // Reach the leader through its route (fault proxy) when one is configured;
                // clients are always told the public address.
                let route = leader_id.and_then(|id| self.core.config.api_route(id));
                let target = route.unwrap_or(&addr);
                let to = Leader { target, public: &addr, id: leader_id };
                self.forward(&ctx, caller.as_ref(), to, inner, forward).await
            }
            Err(e) => Err(to_status(e)),
        }
    }

    /// Forward `inner` to `leader` once, marked as forwarded.
    async fn forward<Req, Resp, F, FF>(
        &self,
        ctx: &RequestCtx,
        caller: Option<&super::auth::Caller>,
        leader: Leader<'_>,
        inner: Req,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<Req>) -> FF,
        FF: Future<Output = Result<Response<Resp>, Status>>,
    {
        let client = self.leader_client(leader.target)?;
        let mut r = Request::new(inner);
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        r.set_timeout(left);
        if let Ok(v) = MetadataValue::try_from(self.core.id.to_string()) {
            r.metadata_mut().insert(FORWARDED_METADATA, v);
        }
        if let Ok(v) = MetadataValue::try_from(ctx.trace_id.as_str()) {
            r.metadata_mut().insert(REQUEST_ID_METADATA, v);
        }
        // The leader's request layer keeps the trace id (from traceparent) and, for
        // an authenticated caller, re-authorizes the caller's identity: it trusts the
        // header only because this connection presents our node certificate.
        let trace = super::layer::TraceContext {
            trace_id: ctx.trace_id.clone(),
            request_id: ctx.trace_id.clone(),
        };
        if super::layer::parse_traceparent(&trace.traceparent()).is_ok() {
            if let Ok(v) = MetadataValue::try_from(trace.traceparent()) {
                r.metadata_mut().insert(super::layer::TRACEPARENT_METADATA, v);
            }
        }
        if let Some(c) = caller.filter(|c| c.principal.is_some()) {
            if let Ok(v) = MetadataValue::try_from(c.identity.as_str()) {
                r.metadata_mut().insert(super::auth::IDENTITY_METADATA, v);
            }
        }
        tracing::debug!(leader = ?leader.id, addr = leader.target, "forwarding to leader");
        // Every answer names the leader's public address, so a client that reached a
        // follower sends its next requests to the leader directly.
        let hint = MetadataValue::try_from(leader.public).ok();
        match tokio::time::timeout(left, f(client, r)).await {
            Ok(Ok(mut resp)) => {
                if let Some(v) = hint {
                    resp.metadata_mut().insert(LEADER_METADATA, v);
                }
                Ok(resp)
            }
            Ok(Err(mut s)) => {
                // A status without our ErrorInfo did not come from the leader's handler
                // but from the transport (connection reset mid-call, h2 error): the
                // outcome is unknown, which is UNAVAILABLE, never INTERNAL.
                if s.get_details_error_info().is_none()
                    && matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown)
                {
                    s = Status::unavailable(format!(
                        "forwarding to the leader at {} failed: {}",
                        leader.target,
                        s.message()
                    ));
                }
                if s.code() == tonic::Code::Unavailable
                    && s.metadata().get(LEADER_METADATA).is_none()
                {
                    if let Some(v) = hint {
                        s.metadata_mut().insert(LEADER_METADATA, v);
                    }
                }
                Err(s)
            }
            Err(_) => {
                Err(Status::deadline_exceeded("forwarded request not answered before the deadline"))
            }
        }
    }
}

/// Where a follower forwards a request.
#[derive(Debug, Clone, Copy)]
struct Leader<'a> {
    /// Address dialled (the leader's route when one is configured).
    target: &'a str,
    /// The leader's public API address, the one clients are told.
    public: &'a str,
    /// The leader's id, when known.
    id: Option<u64>,
}

fn header(
    core: &NodeCore,
    revision: u64,
    hlc: crate::hlc::Timestamp,
) -> Option<pb::ResponseHeader> {
    Some(core.header_at(AppliedPoint { revision, hlc }))
}

fn reused_id() -> Error {
    Error::InvalidArgument("request_id was already used for a different request".into())
}

/// The error of an outcome that is not the expected kind: a deterministic refusal
/// (FAILED_PRECONDITION) or a request id reused for another kind of request.
fn unexpected(outcome: Outcome) -> Error {
    match outcome {
        Outcome::Refused { reason } => Error::FailedPrecondition(reason),
        _ => reused_id(),
    }
}

async fn get(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::GetRequest,
) -> Result<pb::GetResponse, Error> {
    core.limits.key("get", &r.key)?;
    let c = validate::consistency(r.consistency, r.max_staleness_ms)?;
    core.read_barrier(c, ctx.deadline).await?;
    let record = core.reader.get(&r.key)?;
    let point = core.reader.applied()?;
    Ok(pb::GetResponse {
        header: Some(core.header_at(point)),
        found: record.is_some(),
        record: record.map(Into::into),
    })
}

async fn range(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::RangeRequest,
) -> Result<pb::RangeResponse, Error> {
    let scan = validate::range(&core.limits, &r)?;
    let c = validate::consistency(r.consistency, r.max_staleness_ms)?;
    core.read_barrier(c, ctx.deadline).await?;
    let mut records = core.reader.range(&scan.start, scan.end.as_deref(), scan.limit + 1)?;
    let point = core.reader.applied()?;
    let next_page_token = if records.len() > scan.limit {
        records.pop().map(|r| r.key).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(pb::RangeResponse {
        header: Some(core.header_at(point)),
        records: records.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}

/// The fields Put and Delete responses share.
struct SingleKeyReply {
    header: Option<pb::ResponseHeader>,
    succeeded: bool,
    record: Option<pb::Record>,
    current: Option<pb::Record>,
    duplicate: bool,
}

/// Unpack the outcome of a single-key write; `is_put` says which kind was proposed
/// (a replayed response of another kind means the request id was reused).
fn single_key_reply(
    core: &NodeCore,
    res: ApplyResult,
    is_put: bool,
) -> Result<SingleKeyReply, Error> {
    match (res.outcome, is_put) {
        (Outcome::Put { succeeded, record, current }, true)
        | (Outcome::Delete { succeeded, record, current }, false) => Ok(SingleKeyReply {
            header: header(core, res.revision, res.hlc),
            succeeded,
            record: record.map(Into::into),
            current: current.map(Into::into),
            duplicate: res.duplicate,
        }),
        (other, _) => Err(unexpected(other)),
    }
}

async fn put(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::PutRequest,
) -> Result<pb::PutResponse, Error> {
    let op = validate::put(&core.limits, &r)?;
    let res = core.propose(op, r.request_id, r.saga_id, ctx.trace_id, ctx.deadline).await?;
    let w = single_key_reply(&core, res, true)?;
    Ok(pb::PutResponse {
        header: w.header,
        succeeded: w.succeeded,
        record: w.record,
        current: w.current,
        duplicate: w.duplicate,
    })
}

async fn delete(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::DeleteRequest,
) -> Result<pb::DeleteResponse, Error> {
    let op = validate::delete(&core.limits, &r)?;
    let res = core.propose(op, r.request_id, r.saga_id, ctx.trace_id, ctx.deadline).await?;
    let w = single_key_reply(&core, res, false)?;
    Ok(pb::DeleteResponse {
        header: w.header,
        succeeded: w.succeeded,
        record: w.record,
        current: w.current,
        duplicate: w.duplicate,
    })
}

async fn txn(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::TxnRequest,
) -> Result<pb::TxnResponse, Error> {
    let op = validate::txn(&core.limits, &r)?;
    let res = core.propose(op, r.request_id, r.saga_id, ctx.trace_id, ctx.deadline).await?;
    match res.outcome {
        Outcome::Txn { succeeded, results } => Ok(pb::TxnResponse {
            header: header(&core, res.revision, res.hlc),
            succeeded,
            results: results
                .into_iter()
                .map(|r| pb::TxnOpResult { found: r.is_some(), record: r.map(Into::into) })
                .collect(),
            duplicate: res.duplicate,
        }),
        other => Err(unexpected(other)),
    }
}

async fn open_saga(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::OpenSagaRequest,
) -> Result<pb::OpenSagaResponse, Error> {
    let op = validate::open_saga(&r)?;
    let res = core.propose(op, r.request_id, String::new(), ctx.trace_id, ctx.deadline).await?;
    match res.outcome {
        Outcome::SagaOpened { deadline_unix_ms } => Ok(pb::OpenSagaResponse {
            header: header(&core, res.revision, res.hlc),
            deadline_unix_ms,
            duplicate: res.duplicate,
        }),
        other => Err(unexpected(other)),
    }
}

async fn commit_saga(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::CommitSagaRequest,
) -> Result<pb::CommitSagaResponse, Error> {
    let op = validate::commit_saga(&r)?;
    let res = core.propose(op, r.request_id, String::new(), ctx.trace_id, ctx.deadline).await?;
    match res.outcome {
        Outcome::SagaCommitted { records } => Ok(pb::CommitSagaResponse {
            header: header(&core, res.revision, res.hlc),
            records: records.into_iter().map(Into::into).collect(),
            duplicate: res.duplicate,
        }),
        other => Err(unexpected(other)),
    }
}

async fn abort_saga(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::AbortSagaRequest,
) -> Result<pb::AbortSagaResponse, Error> {
    let op = validate::abort_saga(&r)?;
    let res = core.propose(op, r.request_id, String::new(), ctx.trace_id, ctx.deadline).await?;
    match res.outcome {
        Outcome::SagaAborted { compensated, conflicts } => Ok(pb::AbortSagaResponse {
            header: header(&core, res.revision, res.hlc),
            compensated: compensated.into_iter().map(Into::into).collect(),
            conflicts: conflicts
                .into_iter()
                .map(|c| pb::SagaConflict {
                    key: c.key,
                    saga_version: c.saga_version,
                    current: c.current.map(Into::into),
                })
                .collect(),
            duplicate: res.duplicate,
        }),
        other => Err(unexpected(other)),
    }
}

async fn get_saga(
    core: Arc<NodeCore>,
    ctx: RequestCtx,
    r: pb::GetSagaRequest,
) -> Result<pb::GetSagaResponse, Error> {
    validate::saga_id(&r.saga_id)?;
    core.read_barrier(validate::Consistency::Linearizable, ctx.deadline).await?;
    let saga = core.reader.saga(&r.saga_id)?;
    let point = core.reader.applied()?;
    let header = Some(core.header_at(point));
    let Some(s) = saga else {
        return Ok(pb::GetSagaResponse { header, found: false, ..Default::default() });
    };
    let state = match s.state {
        SagaState::Open => pb::SagaState::Open,
        SagaState::Committed => pb::SagaState::Committed,
        SagaState::Aborted => pb::SagaState::Aborted,
    };
    Ok(pb::GetSagaResponse {
        header,
        found: true,
        state: state as i32,
        deadline_unix_ms: s.deadline_unix_ms,
        steps: s
            .steps
            .into_iter()
            .map(|st| pb::SagaStep {
                key: st.key,
                revision: st.revision,
                before: st.before.map(Into::into),
                after_version: st.after_version,
            })
            .collect(),
        abort_reason: s.abort_reason,
    })
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        authorize(&req, Access::Key(Role::Read, &req.get_ref().key))?;
        self.run(req, get, |mut c, r| async move { c.get(r).await }).await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        authorize(&req, Access::Key(Role::Write, &req.get_ref().key))?;
        self.run(req, put, |mut c, r| async move { c.put(r).await }).await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        authorize(&req, Access::Key(Role::Write, &req.get_ref().key))?;
        self.run(req, delete, |mut c, r| async move { c.delete(r).await }).await
    }

    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = req.get_ref();
        if r.prefix.is_empty() {
            authorize(&req, Access::Range(Role::Read, &r.start, &r.end))?;
        } else {
            authorize(&req, Access::Prefix(Role::Read, &r.prefix))?;
        }
        self.run(req, range, |mut c, r| async move { c.range(r).await }).await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        authorize_txn(&req, req.get_ref())?;
        self.run(req, txn, |mut c, r| async move { c.txn(r).await }).await
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>,
    >;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let w = req.get_ref();
        let scope = if w.key.is_empty() { &w.prefix } else { &w.key };
        authorize(&req, Access::Prefix(Role::Read, scope))?;
        let stream = super::binlog::watch(self.core.clone(), req.into_inner())?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn open_saga(
        &self,
        req: Request<pb::OpenSagaRequest>,
    ) -> Result<Response<pb::OpenSagaResponse>, Status> {
        authorize(&req, Access::Authenticated)?;
        self.run(req, open_saga, |mut c, r| async move { c.open_saga(r).await }).await
    }

    async fn commit_saga(
        &self,
        req: Request<pb::CommitSagaRequest>,
    ) -> Result<Response<pb::CommitSagaResponse>, Status> {
        authorize(&req, Access::Authenticated)?;
        self.run(req, commit_saga, |mut c, r| async move { c.commit_saga(r).await }).await
    }

    async fn abort_saga(
        &self,
        req: Request<pb::AbortSagaRequest>,
    ) -> Result<Response<pb::AbortSagaResponse>, Status> {
        authorize(&req, Access::Authenticated)?;
        self.run(req, abort_saga, |mut c, r| async move { c.abort_saga(r).await }).await
    }

    async fn get_saga(
        &self,
        req: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::GetSagaResponse>, Status> {
        authorize(&req, Access::Authenticated)?;
        self.run(req, get_saga, |mut c, r| async move { c.get_saga(r).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("10q"), None);
    }
}

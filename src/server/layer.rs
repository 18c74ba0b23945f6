//! The request layer every public API request passes first (a tower layer on the
//! API server), in this order:
//!
//! 1. Trace ids: a W3C `traceparent` (validated: `00-<32 hex>-<16 hex>-<2 hex>`, ids
//!    not all zero) and/or `x-request-id` (1..=128 printable ASCII bytes) are
//!    accepted, else generated; a malformed one is INVALID_ARGUMENT. The result is a
//!    [`TraceContext`] in the request's extensions (the Kv service puts the trace id
//!    into the Raft proposal) and both headers come back in the response metadata.
//! 2. Authentication ([`super::auth`]): the [`Caller`] goes into the extensions;
//!    with auth on an unknown caller is UNAUTHENTICATED here, and a client without a
//!    certificate is UNAUTHENTICATED when `tls.require_client_cert` is set.
//! 3. Rate limiting ([`super::ratelimit`]): RESOURCE_EXHAUSTED with a
//!    `google.rpc.RetryInfo` detail and a `retry-after-ms` metadata hint. Requests
//!    forwarded by a node are not charged again.
//! 4. Metrics: `meridian_grpc_requests_total{method,code}` and
//!    `meridian_grpc_request_duration_seconds{method}` for every request, refused
//!    ones included, recorded when the response body ends ([`Metered`]): the code is
//!    the `grpc-status` of the trailers (where a stream that fails after its headers
//!    puts it), else of the headers (refusals and unary errors); a body dropped before
//!    its end (the client went away) counts as CANCELLED. The duration runs to the
//!    body's end, so a stream's is its whole life.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use super::auth::{Caller, Principals, AUTHORIZATION_METADATA, IDENTITY_METADATA};
use super::ratelimit::ClientLimiter;

/// W3C trace-context header.
pub const TRACEPARENT_METADATA: &str = "traceparent";
/// Request id header.
pub const REQUEST_ID_METADATA: &str = "x-request-id";
/// Metadata hint on RESOURCE_EXHAUSTED: how long to wait, ms (the client library
/// reads the same key).
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";
/// Longest accepted `x-request-id`, bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Method label of paths that are not a known RPC (bounds label cardinality).
pub const UNKNOWN_METHOD: &str = "unknown";

/// Every RPC the API server knows, as `Service/Method` metric labels.
const KNOWN_METHODS: [&str; 24] = [
    "meridian.v1.Kv/Get",
    "meridian.v1.Kv/Put",
    "meridian.v1.Kv/Delete",
    "meridian.v1.Kv/Range",
    "meridian.v1.Kv/Txn",
    "meridian.v1.Kv/Watch",
    "meridian.v1.Kv/OpenSaga",
    "meridian.v1.Kv/CommitSaga",
    "meridian.v1.Kv/AbortSaga",
    "meridian.v1.Kv/GetSaga",
    "meridian.v1.Cluster/Status",
    "meridian.v1.Cluster/Members",
    "meridian.v1.Cluster/Initialize",
    "meridian.v1.Cluster/AddLearner",
    "meridian.v1.Cluster/ChangeMembership",
    "meridian.v1.Cluster/TransferLeader",
    "meridian.v1.Cluster/SetClockOffset",
    "meridian.v1.Cluster/CorruptKey",
    "meridian.v1.Binlog/Subscribe",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "meridian.v1.Binlog/Status",
];

/// The `method` label of a request path.
pub fn method_label(path: &str) -> &'static str {
    let name = path.strip_prefix('/').unwrap_or(path);
    KNOWN_METHODS.iter().find(|m| **m == name).copied().unwrap_or(UNKNOWN_METHOD)
}

/// Trace ids of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits (W3C trace id).
    pub trace_id: String,
    /// The caller's `x-request-id`, else the trace id.
    pub request_id: String,
}

impl TraceContext {
    /// A `traceparent` for a hop we make (response or forwarded request) with a new
    /// span id.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{:016x}-01", self.trace_id, rand::random::<u64>() | 1)
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parse a W3C `traceparent` value; the trace id, or why it is malformed.
pub fn parse_traceparent(value: &str) -> Result<String, String> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let bad = || {
        format!(
            "traceparent {value:?} must be 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags> (W3C)"
        )
    };
    let [version, trace, parent, flags] = parts.as_slice() else { return Err(bad()) };
    if *version != "00" || !is_lower_hex(trace, 32) || !is_lower_hex(parent, 16) {
        return Err(bad());
    }
    if !is_lower_hex(flags, 2)
        || trace.bytes().all(|b| b == b'0')
        || parent.bytes().all(|b| b == b'0')
    {
        return Err(bad());
    }
    Ok(trace.to_string())
}

/// Build the trace context of a request from its headers.
pub fn trace_context(headers: &http::HeaderMap) -> Result<TraceContext, Status> {
    let text = |name: &str| -> Result<Option<String>, Status> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.to_string()))
                .map_err(|_| Status::invalid_argument(format!("{name} must be ASCII"))),
        }
    };
    let trace_id = match text(TRACEPARENT_METADATA)? {
        Some(v) => parse_traceparent(&v).map_err(Status::invalid_argument)?,
        None => format!("{:032x}", rand::random::<u128>() | 1),
    };
    let request_id = match text(REQUEST_ID_METADATA)? {
        Some(v) => {
            if v.is_empty()
                || v.len() > MAX_REQUEST_ID_BYTES
                || !v.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(Status::invalid_argument(format!(
                    "x-request-id must be 1..={MAX_REQUEST_ID_BYTES} printable ASCII bytes without spaces"
                )));
            }
            v
        }
        None => trace_id.clone(),
    };
    Ok(TraceContext { trace_id, request_id })
}

/// Canonical upper-case name of a gRPC code (metric label).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Shared state of the layer.
#[derive(Debug)]
pub struct LayerState {
    /// Principals when auth is on.
    pub principals: Option<Principals>,
    /// Refuse callers without a client certificate.
    pub require_client_cert: bool,
    /// Rate limiter when limits are on.
    pub limiter: Option<ClientLimiter>,
}

/// The tower layer (see the module docs).
#[derive(Debug, Clone)]
pub struct ApiLayer {
    state: Arc<LayerState>,
}

impl ApiLayer {
    /// A layer over `state`.
    pub fn new(state: LayerState) -> Self {
        Self { state: Arc::new(state) }
    }
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService { inner, state: self.state.clone() }
    }
}

/// The service [`ApiLayer`] wraps around the API routes.
#[derive(Debug, Clone)]
pub struct ApiService<S> {
    inner: S,
    state: Arc<LayerState>,
}

struct Connection {
    cert_identity: Option<String>,
    has_cert: bool,
    remote: Option<std::net::SocketAddr>,
}

fn connection<B>(req: &http::Request<B>) -> Connection {
    let ext = req.extensions();
    if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let certs = tls.peer_certs();
        let first = certs.as_ref().and_then(|c| c.first().map(|d| d.to_vec()));
        return Connection {
            cert_identity: first.as_deref().and_then(crate::tls::certificate_identity),
            has_cert: first.is_some(),
            remote: tls.get_ref().remote_addr(),
        };
    }
    let remote = ext.get::<TcpConnectInfo>().and_then(|t| t.remote_addr());
    Connection { cert_identity: None, has_cert: false, remote }
}

fn bearer(headers: &http::HeaderMap) -> Result<Option<String>, Status> {
    let Some(v) = headers.get(AUTHORIZATION_METADATA) else { return Ok(None) };
    let v =
        v.to_str().map_err(|_| Status::unauthenticated("authorization header must be ASCII"))?;
    match v.strip_prefix("Bearer ") {
        Some(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        _ => Err(Status::unauthenticated("authorization header must be `Bearer <token>`")),
    }
}

fn rate_limited(identity: &str, wait: Duration) -> Status {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut status = Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!("rate limit exceeded for {identity:?}: retry after {ms} ms"),
        ErrorDetails::with_retry_info(Some(Duration::from_millis(ms))),
    );
    if let Ok(v) = ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, v);
    }
    status
}

impl LayerState {
    /// Authenticate a request; on success the caller (also inserted into the
    /// extensions). `method` is used for the rate-limit metric only.
    fn authenticate<B>(&self, req: &mut http::Request<B>) -> Result<Caller, Status> {
        let conn = connection(req);
        let is_node = conn.cert_identity.as_deref().is_some_and(crate::tls::is_node_identity);
        let auth_enabled = self.principals.is_some();
        let headers = req.headers();
        let forwarded = match headers.get(IDENTITY_METADATA) {
            None => None,
            Some(_) if !is_node => {
                return Err(Status::permission_denied(format!(
                    "{IDENTITY_METADATA} is only accepted from cluster nodes (a CA-signed node-<id> certificate)"
                )))
            }
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Status::invalid_argument(format!("{IDENTITY_METADATA} must be ASCII")))?
                    .to_string(),
            ),
        };
        if self.require_client_cert && !conn.has_cert {
            return Err(Status::unauthenticated(
                "a client certificate signed by the cluster CA is required (tls.require_client_cert)",
            ));
        }
        let token = bearer(headers)?;
        let principals = self.principals.as_ref();
        let (identity, principal, authenticated) = if let Some(id) = forwarded {
            let p = principals.and_then(|p| p.by_identity(&id));
            (id, p, true)
        } else if let Some(t) = token.filter(|_| auth_enabled) {
            match principals.and_then(|p| p.by_token(&t)) {
                Some(p) => (p.identity.clone(), Some(p), true),
                None => return Err(Status::unauthenticated("unknown bearer token")),
            }
        } else if let Some(cn) = conn.cert_identity.clone() {
            let p = principals.and_then(|p| p.by_identity(&cn));
            (cn, p, true)
        } else {
            let id =
                conn.remote.map_or_else(|| "anonymous".to_string(), |a| format!("ip:{}", a.ip()));
            (id, None, false)
        };
        if auth_enabled && principal.is_none() {
            let message = if authenticated {
                format!(
                    "identity {identity:?} is not in the tokens file: send `authorization: Bearer <token>` or use a certificate of a known identity"
                )
            } else {
                "authentication required: send `authorization: Bearer <token>` or a client certificate of a known identity".to_string()
            };
            return Err(Status::unauthenticated(message));
        }
        let forwarded_by = if is_node { conn.cert_identity.clone() } else { None };
        let caller = Caller { identity, principal, auth_enabled, authenticated, forwarded_by };
        req.extensions_mut().insert(caller.clone());
        Ok(caller)
    }

    fn admit<B>(
        &self,
        req: &mut http::Request<B>,
        method: &'static str,
    ) -> Result<TraceContext, (Status, Option<TraceContext>)> {
        let trace = trace_context(req.headers()).map_err(|s| (s, None))?;
        req.extensions_mut().insert(trace.clone());
        let caller = self.authenticate(req).map_err(|s| {
            metrics::counter!("meridian_auth_refusals_total", "method" => method, "code" => code_label(s.code()))
                .increment(1);
            (s, Some(trace.clone()))
        })?;
        if let (Some(limiter), None) = (&self.limiter, &caller.forwarded_by) {
            if let Err(wait) = limiter.check(&caller.identity) {
                metrics::counter!("meridian_rate_limited_total", "method" => method).increment(1);
                tracing::debug!(identity = %caller.identity, ?wait, "rate limited");
                return Err((rate_limited(&caller.identity, wait), Some(trace)));
            }
        }
        Ok(trace)
    }
}

/// The `grpc-status` in `headers` (response headers or trailers), if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(v))
}

/// A response body that records its request's metrics once it ends (see the module
/// doc): at its trailers (always its last frame), at its end, at an error, or when
/// dropped.
pub struct Metered {
    inner: Body,
    method: &'static str,
    started: Instant,
    /// The response headers' code (OK when they carry none: a status follows in the
    /// trailers).
    code: tonic::Code,
    recorded: bool,
    /// Tests: where the recorded codes go instead of the metrics.
    #[cfg(test)]
    seen: Arc<std::sync::Mutex<Vec<tonic::Code>>>,
}

impl Metered {
    /// Count the request under `code`, once.
    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        #[cfg(test)]
        self.seen.lock().expect("lock").push(code);
        let (method, code) = (self.method, code_label(code));
        metrics::counter!("meridian_grpc_requests_total", "method" => method, "code" => code)
            .increment(1);
        metrics::histogram!("meridian_grpc_request_duration_seconds", "method" => method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(self.code);
                    self.record(code);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let code = e.code();
                self.record(code);
            }
            Poll::Ready(None) => {
                let code = self.code;
                self.record(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // A trailers-only answer (a refusal, a unary error) has an empty body the
        // server need not poll; anything else dropped early was cut off.
        let ended = http_body::Body::is_end_stream(&self.inner);
        let code = if ended { self.code } else { tonic::Code::Cancelled };
        self.record(code);
    }
}

impl<S, B> tower::Service<http::Request<B>> for ApiService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Metered>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        let method = method_label(req.uri().path());
        let admitted = self.state.admit(&mut req, method);
        Box::pin(async move {
            let (trace, mut resp) = match admitted {
                Ok(trace) => (Some(trace), inner.call(req).await?),
                Err((status, trace)) => (trace, status.into_http()),
            };
            if let Some(t) = trace {
                let h = resp.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&t.traceparent()) {
                    h.insert(TRACEPARENT_METADATA, v);
                }
                if let Ok(v) = HeaderValue::from_str(&t.request_id) {
                    h.insert(REQUEST_ID_METADATA, v);
                }
            }
            let code = grpc_status(resp.headers()).unwrap_or(tonic::Code::Ok);
            Ok(resp.map(|inner| Metered {
                inner,
                method,
                started,
                code,
                recorded: false,
                #[cfg(test)]
                seen: Default::default(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_validated() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(ok).as_deref(), Ok("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(parse_traceparent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_ids_are_generated_and_request_id_defaults_to_trace_id() {
        let t = trace_context(&http::HeaderMap::new()).expect("generated");
        assert!(is_lower_hex(&t.trace_id, 32));
        assert_eq!(t.request_id, t.trace_id);
        let mut h = http::HeaderMap::new();
        h.insert(REQUEST_ID_METADATA, HeaderValue::from_static("req-1"));
        assert_eq!(trace_context(&h).expect("ok").request_id, "req-1");
        h.insert(REQUEST_ID_METADATA, HeaderValue::from_static("has space"));
        assert_eq!(trace_context(&h).expect_err("bad").code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn unknown_paths_share_one_method_label() {
        assert_eq!(method_label("/meridian.v1.Kv/Put"), "meridian.v1.Kv/Put");
        assert_eq!(method_label("/meridian.v1.Kv/Nope"), UNKNOWN_METHOD);
    }

    /// A body of `frames`, then its end.
    struct Frames(std::collections::VecDeque<http_body::Frame<bytes::Bytes>>);

    impl http_body::Body for Frames {
        type Data = bytes::Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn trailers(code: i32) -> http_body::Frame<bytes::Bytes> {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from(code));
        http_body::Frame::trailers(t)
    }

    /// The code a response body of `frames` (headers' code `headers`) is counted
    /// under when it is polled `polls` times, then dropped.
    fn counted(
        headers: tonic::Code,
        frames: Vec<http_body::Frame<bytes::Bytes>>,
        polls: usize,
    ) -> tonic::Code {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut body = Metered {
            inner: Body::new(Frames(frames.into())),
            method: "test",
            started: Instant::now(),
            code: headers,
            recorded: false,
            seen: seen.clone(),
        };
        for _ in 0..polls {
            let _ = futures::executor::block_on(std::future::poll_fn(|cx| {
                http_body::Body::poll_frame(Pin::new(&mut body), cx)
            }));
        }
        drop(body);
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "counted once: {seen:?}");
        seen[0]
    }

    #[test]
    fn a_response_is_counted_once_under_its_final_code() {
        use tonic::Code;
        let data = || http_body::Frame::data(bytes::Bytes::from_static(b"msg"));
        // A unary answer, or a stream that ends well: data, then OK trailers.
        assert_eq!(counted(Code::Ok, vec![data(), trailers(0)], 2), Code::Ok);
        // A stream that fails after its headers: the status is in the trailers.
        assert_eq!(counted(Code::Ok, vec![data(), data(), trailers(11)], 3), Code::OutOfRange);
        // A trailers-only refusal: empty body, status in the headers, maybe never polled.
        assert_eq!(counted(Code::InvalidArgument, vec![], 0), Code::InvalidArgument);
        assert_eq!(counted(Code::InvalidArgument, vec![], 1), Code::InvalidArgument);
        // The client went away mid-stream.
        assert_eq!(counted(Code::Ok, vec![data(), data(), trailers(0)], 1), Code::Cancelled);
    }

    #[test]
    fn rate_limit_status_carries_retry_info_and_metadata() {
        let s = rate_limited("alice", Duration::from_millis(250));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        let info = s.get_details_retry_info().expect("RetryInfo");
        assert_eq!(info.retry_delay, Some(Duration::from_millis(250)));
        assert_eq!(
            s.metadata().get(RETRY_AFTER_METADATA).and_then(|v| v.to_str().ok()),
            Some("250")
        );
    }
}

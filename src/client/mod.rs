//! The Meridian Rust client: what an application embeds to talk to a cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meridian::client::ClientError> {
//! use meridian::client::{Client, ClientConfig, ReadOptions};
//! let client = Client::connect(ClientConfig::from_env()?)?;
//! client.put("greeting", "hello").await?;
//! let got = client.get("greeting", ReadOptions::default()).await?;
//! assert!(got.found);
//! # Ok(()) }
//! ```
//!
//! What it does for every call (see the submodules for the rules):
//! - routing: writes and linearizable reads go to the last known leader (else a
//!   sticky endpoint; any node forwards to the leader), serializable and bounded reads
//!   spread round-robin ([`endpoints`]);
//! - one lazily connected HTTP/2 channel per endpoint, shared by all calls, with
//!   keepalive pings and a connect timeout; a gRPC deadline on every attempt;
//! - retries with exponential backoff and full jitter, bounded in attempts and total
//!   time; leader hints (`x-meridian-leader`) are followed at once ([`retry`]);
//! - a circuit breaker per endpoint ([`breaker`]);
//! - a request id on every write, generated once per logical write and reused by
//!   all its attempts, so retries are exactly-once ([`request_id`]); a failed write
//!   says whether it may have been applied ([`ClientError::is_indeterminate`]).
//!
//! Dependency rule: this module uses only `crate::pb` and its own pure helpers, never
//! the server, Raft or storage layers, so it can be embedded alone.
//!
//! Construction never touches the network: channels connect on first use, inside
//! the caller's tokio runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response};

use crate::pb::v1 as pb;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;

mod admin;
pub mod bench;
pub mod binlog;
pub mod breaker;
mod call;
pub mod clock;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod metrics;
pub mod request_id;
pub mod retry;
pub mod txn;

pub use binlog::{SagaOptions, StreamError, SubscribeOptions, Subscription, WatchOptions};
pub use breaker::BreakerState;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BreakerConfig, ClientConfig, ClientTlsConfig, RetryConfig};
pub use endpoints::EndpointInfo;
pub use error::{ClientError, RpcError};
pub use metrics::ClientMetrics;
pub use pb::{CompareOp, Consistency};
pub use txn::Txn;

use call::CallSpec;
use endpoints::{EndpointSet, EndpointState, Route};
use metrics::Counters;

/// Largest response the client decodes, bytes (a full Range page of large values).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest request the client encodes, bytes (the largest configurable value plus
/// headroom for the key and envelope).
pub const MAX_REQUEST_BYTES: usize = 17 * 1024 * 1024;
/// Deadline of one endpoint probe (Cluster.Status) for nearest-replica routing.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Records per Range page the server accepts at most.
pub const MAX_RANGE_PAGE: u32 = 10_000;
/// Records per Range page used by [`Client::range_all`] when the options set none.
pub const DEFAULT_RANGE_PAGE: u32 = 1_000;

/// How a read is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Consistency level (default LINEARIZABLE).
    pub consistency: Consistency,
    /// Required for BOUNDED_STALENESS: the oldest acceptable data; must be None for
    /// the other levels.
    pub max_staleness: Option<Duration>,
    /// Budget of this call, retries included (None: the client's).
    pub timeout: Option<Duration>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self::linearizable()
    }
}

impl ReadOptions {
    /// Never stale: read index through the leader.
    pub fn linearizable() -> Self {
        Self { consistency: Consistency::Linearizable, max_staleness: None, timeout: None }
    }

    /// The contacted replica's local state: may be stale, never torn.
    pub fn serializable() -> Self {
        Self { consistency: Consistency::Serializable, ..Self::linearizable() }
    }

    /// Served by a replica that can prove its data is at most `max_staleness` old.
    pub fn bounded(max_staleness: Duration) -> Self {
        Self {
            consistency: Consistency::BoundedStaleness,
            max_staleness: Some(max_staleness),
            timeout: None,
        }
    }

    /// Check the combination; returns (consistency, max_staleness_ms) for the wire.
    fn resolve(&self) -> Result<(Consistency, u64, Route), ClientError> {
        resolve_consistency(self.consistency, self.max_staleness)
    }
}

fn resolve_consistency(
    consistency: Consistency,
    max_staleness: Option<Duration>,
) -> Result<(Consistency, u64, Route), ClientError> {
    let bad = |m: &str| Err(ClientError::InvalidRequest(m.to_string()));
    match (consistency, max_staleness) {
        (Consistency::BoundedStaleness, None) => bad("bounded-staleness reads need max_staleness"),
        (Consistency::BoundedStaleness, Some(d)) => {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                return bad("max_staleness must be at least 1 ms");
            }
            Ok((consistency, ms, Route::Nearest))
        }
        (_, Some(_)) => bad("max_staleness only applies to bounded-staleness reads"),
        (Consistency::Serializable, None) => Ok((consistency, 0, Route::Nearest)),
        (Consistency::Linearizable | Consistency::Unspecified, None) => {
            Ok((Consistency::Linearizable, 0, Route::Leader))
        }
    }
}

/// Options of a Put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// None: unconditional; Some(0): create only; Some(n): only at version n.
    pub expected_version: Option<u64>,
    /// Idempotency key (None: generated; reused across retries either way).
    pub request_id: Option<String>,
    /// Tags the write as a saga step.
    pub saga_id: Option<String>,
    /// Budget of this call, retries included (None: the client's).
    pub timeout: Option<Duration>,
}

/// Options of a Delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// None: unconditional; Some(n >= 1): only at version n.
    pub expected_version: Option<u64>,
    /// Idempotency key (None: generated; reused across retries either way).
    pub request_id: Option<String>,
    /// Tags the write as a saga step.
    pub saga_id: Option<String>,
    /// Budget of this call, retries included (None: the client's).
    pub timeout: Option<Duration>,
}

/// Options of a Range read: either `prefix`, or `start` (inclusive) and `end`
/// (exclusive; empty = end of the key space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOptions {
    /// Inclusive start key.
    pub start: Vec<u8>,
    /// Exclusive end key (empty: no end).
    pub end: Vec<u8>,
    /// All keys with this prefix (exclusive with start/end).
    pub prefix: Vec<u8>,
    /// Records per page; 0: server default (1000); at most [`MAX_RANGE_PAGE`].
    pub limit: u32,
    /// Token from a previous page (empty: first page).
    pub page_token: Vec<u8>,
    /// Consistency level (default LINEARIZABLE).
    pub consistency: Consistency,
    /// For BOUNDED_STALENESS only.
    pub max_staleness: Option<Duration>,
    /// Budget of each page's call (None: the client's).
    pub timeout: Option<Duration>,
}

impl Default for RangeOptions {
    fn default() -> Self {
        Self {
            start: Vec::new(),
            end: Vec::new(),
            prefix: Vec::new(),
            limit: 0,
            page_token: Vec::new(),
            consistency: Consistency::Linearizable,
            max_staleness: None,
            timeout: None,
        }
    }
}

impl RangeOptions {
    /// All keys starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self { prefix: prefix.into(), ..Self::default() }
    }

    /// Keys in `[start, end)`; an empty `end` means no upper bound.
    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self { start: start.into(), end: end.into(), ..Self::default() }
    }
}

/// Every record of a range, read page by page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeAll {
    /// Records in key order (at most the requested maximum).
    pub records: Vec<pb::Record>,
    /// True when more records exist beyond the maximum.
    pub more: bool,
    /// Pages read.
    pub pages: u32,
}

struct Inner {
    config: ClientConfig,
    endpoints: EndpointSet,
    clock: Arc<dyn Clock>,
    counters: Counters,
    jitter: Mutex<StdRng>,
    jitter_seed: u64,
    /// `Bearer <token>` when the config has a token.
    auth: Option<MetadataValue<Ascii>>,
}

/// A Meridian client. Cheap to clone: clones share channels, breakers and counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints.info())
            .field("jitter_seed", &self.inner.jitter_seed)
            .finish()
    }
}

/// Builds a [`Client`] from a config plus test seams (the clock).
#[derive(Debug)]
pub struct ClientBuilder {
    config: ClientConfig,
    clock: Arc<dyn Clock>,
}

impl ClientBuilder {
    /// Start from `config` and the system clock.
    pub fn new(config: ClientConfig) -> Self {
        Self { config, clock: Arc::new(SystemClock) }
    }

    /// Replace the endpoints.
    pub fn endpoints<S: Into<String>>(mut self, endpoints: impl IntoIterator<Item = S>) -> Self {
        self.config.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Set the per-attempt deadline.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout_ms = duration_ms(timeout);
        self
    }

    /// Set the retry policy.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }

    /// Set the circuit breaker policy.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// Use this clock for breakers, budgets and backoff sleeps (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validate the config and build the client (no network I/O).
    pub fn build(self) -> Result<Client, ClientError> {
        self.config.validate()?;
        let jitter_seed = self.config.retry.jitter_seed.unwrap_or_else(rand::random);
        tracing::debug!(jitter_seed, "meridian client created");
        let endpoints = EndpointSet::new(&self.config, self.clock.now())?;
        let auth = match &self.config.token {
            Some(t) => Some(
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| ClientError::Config("token must be printable ASCII".into()))?,
            ),
            None => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                config: self.config,
                endpoints,
                clock: self.clock,
                counters: Counters::default(),
                jitter: Mutex::new(StdRng::seed_from_u64(jitter_seed)),
                jitter_seed,
                auth,
            }),
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn request<T>(message: T, deadline: Duration, auth: Option<&MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    if let Some(v) = auth {
        request.metadata_mut().insert("authorization", v.clone());
    }
    request
}

fn kv(ep: &EndpointState) -> KvClient<Channel> {
    KvClient::new(ep.channel())
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES)
}

fn cluster(ep: &EndpointState) -> ClusterClient<Channel> {
    ClusterClient::new(ep.channel()).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn resolve_request_id(supplied: Option<String>) -> Result<String, ClientError> {
    match supplied {
        Some(id) => {
            request_id::validate(&id).map_err(ClientError::InvalidRequest)?;
            Ok(id)
        }
        None => Ok(request_id::generate()),
    }
}

impl Client {
    /// A client for `config` (validated). No network I/O happens until the first call.
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        ClientBuilder::new(config).build()
    }

    /// A builder starting from `config`.
    pub fn builder(config: ClientConfig) -> ClientBuilder {
        ClientBuilder::new(config)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Every known endpoint with its breaker state.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.inner.endpoints.info()
    }

    /// The last known leader's API address.
    pub fn leader(&self) -> Option<String> {
        self.inner.endpoints.leader().map(|l| l.addr.clone())
    }

    /// The breaker state of one endpoint (None if unknown).
    pub fn breaker_state(&self, endpoint: &str) -> Option<BreakerState> {
        self.inner.endpoints.get(endpoint).map(|e| e.breaker.state())
    }

    /// A snapshot of the client's counters.
    pub fn metrics(&self) -> ClientMetrics {
        self.inner.counters.snapshot()
    }

    /// The seed of the backoff jitter RNG (print it to replay a run).
    pub fn jitter_seed(&self) -> u64 {
        self.inner.jitter_seed
    }

    fn next_jitter_seed(&self) -> u64 {
        self.inner.jitter.lock().unwrap_or_else(|e| e.into_inner()).gen()
    }

    /// Raw Kv stub on one endpoint's shared channel (no retries, no breaker). Must be
    /// called inside a tokio runtime.
    pub fn kv_client(&self, endpoint: &str) -> Result<KvClient<Channel>, ClientError> {
        let ep = self.endpoint_state(endpoint)?;
        Ok(kv(&ep))
    }

    /// Raw Cluster stub on one endpoint's shared channel (no retries, no breaker).
    pub fn cluster_client(&self, endpoint: &str) -> Result<ClusterClient<Channel>, ClientError> {
        let ep = self.endpoint_state(endpoint)?;
        Ok(cluster(&ep))
    }

    /// Raw Binlog stub on one endpoint's shared channel (no retries, no breaker): the
    /// binlog is per replica, so a subscriber talks to exactly this endpoint.
    pub fn binlog_client(
        &self,
        endpoint: &str,
    ) -> Result<pb::binlog_client::BinlogClient<Channel>, ClientError> {
        let ep = self.endpoint_state(endpoint)?;
        Ok(pb::binlog_client::BinlogClient::new(ep.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    fn endpoint_state(&self, endpoint: &str) -> Result<Arc<EndpointState>, ClientError> {
        self.inner.endpoints.get_or_add(endpoint, self.inner.clock.now()).ok_or_else(|| {
            ClientError::InvalidRequest(format!(
                "endpoint {endpoint:?} is malformed or the endpoint set is full"
            ))
        })
    }

    /// Read one key. `found` is false (and `record` absent) when it does not exist.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: ReadOptions,
    ) -> Result<pb::GetResponse, ClientError> {
        let (consistency, max_staleness_ms, route) = options.resolve()?;
        let route = self.read_route(route);
        let req =
            pb::GetRequest { key: key.into(), consistency: consistency as i32, max_staleness_ms };
        self.execute(CallSpec::read("get", route, options.timeout), |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).get(req).await }
        })
        .await
    }

    /// Create or replace a key unconditionally.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, ClientError> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Write a key only if its version is `expected_version` (0: only if absent). A
    /// mismatch is `succeeded == false` with the `current` record, not an error.
    pub async fn cas(
        &self,
        key: impl Into<Vec<u8>>,
        expected_version: u64,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, ClientError> {
        let options =
            PutOptions { expected_version: Some(expected_version), ..PutOptions::default() };
        self.put_with(key, value, options).await
    }

    /// Put with options (condition, request id, saga id, timeout).
    pub async fn put_with(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<pb::PutResponse, ClientError> {
        let request_id = resolve_request_id(options.request_id)?;
        let spec = CallSpec::write("put", &request_id, options.timeout);
        let req = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            expected_version: options.expected_version,
            request_id,
            saga_id: options.saga_id.unwrap_or_default(),
        };
        self.execute(spec, |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).put(req).await }
        })
        .await
    }

    /// Delete a key. `succeeded` is false when it did not exist or the version
    /// check failed (then `current` holds the record, if any).
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: DeleteOptions,
    ) -> Result<pb::DeleteResponse, ClientError> {
        let request_id = resolve_request_id(options.request_id)?;
        let spec = CallSpec::write("delete", &request_id, options.timeout);
        let req = pb::DeleteRequest {
            key: key.into(),
            expected_version: options.expected_version,
            request_id,
            saga_id: options.saga_id.unwrap_or_default(),
        };
        self.execute(spec, |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).delete(req).await }
        })
        .await
    }

    /// Read one page of a range.
    pub async fn range(&self, options: RangeOptions) -> Result<pb::RangeResponse, ClientError> {
        let (consistency, max_staleness_ms, route) =
            resolve_consistency(options.consistency, options.max_staleness)?;
        let route = self.read_route(route);
        let has_bounds = !options.start.is_empty() || !options.end.is_empty();
        if !options.prefix.is_empty() && has_bounds {
            return Err(ClientError::InvalidRequest(
                "a range takes either a prefix or start/end, not both".into(),
            ));
        }
        if options.limit > MAX_RANGE_PAGE {
            return Err(ClientError::InvalidRequest(format!(
                "range limit {} exceeds the page maximum {MAX_RANGE_PAGE}",
                options.limit
            )));
        }
        let req = pb::RangeRequest {
            start: options.start,
            end: options.end,
            prefix: options.prefix,
            limit: options.limit,
            page_token: options.page_token,
            consistency: consistency as i32,
            max_staleness_ms,
        };
        self.execute(CallSpec::read("range", route, options.timeout), |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).range(req).await }
        })
        .await
    }

    /// Read a range page by page until it ends or `max_records` are collected. Each
    /// page is a separate read: the result is not one snapshot across pages.
    pub async fn range_all(
        &self,
        options: RangeOptions,
        max_records: usize,
    ) -> Result<RangeAll, ClientError> {
        let page_size = if options.limit == 0 { DEFAULT_RANGE_PAGE } else { options.limit };
        let mut out = RangeAll::default();
        let mut token = options.page_token.clone();
        while out.records.len() < max_records {
            let wanted = u32::try_from(max_records - out.records.len()).unwrap_or(u32::MAX);
            let page_options = RangeOptions {
                limit: page_size.min(wanted).min(MAX_RANGE_PAGE),
                page_token: token.clone(),
                ..options.clone()
            };
            let page = self.range(page_options).await?;
            out.pages += 1;
            let next = page.next_page_token;
            let room = max_records - out.records.len();
            let got = page.records.len();
            out.records.extend(page.records.into_iter().take(room));
            if next.is_empty() {
                out.more = got > room;
                return Ok(out);
            }
            if got == 0 && next == token {
                return Err(RpcError {
                    code: tonic::Code::Internal,
                    message: "server returned an empty page with the same page token".into(),
                    leader_hint: None,
                    endpoint: None,
                    attempts: 1,
                    indeterminate: false,
                    request_id: None,
                    retry_after: None,
                }
                .into());
            }
            token = next;
        }
        out.more = true;
        Ok(out)
    }

    /// Run a transaction (atomic multi-key compare-and-swap).
    pub async fn txn(&self, txn: Txn) -> Result<pb::TxnResponse, ClientError> {
        let request_id = resolve_request_id(txn.request_id.clone())?;
        let spec = CallSpec::write("txn", &request_id, txn.timeout);
        let req = txn.to_request(request_id);
        self.execute(spec, |ep, deadline| {
            let req = request(req.clone(), deadline, self.inner.auth.as_ref());
            async move { kv(&ep).txn(req).await }
        })
        .await
    }

    /// One node's status, asked of exactly that endpoint: one attempt under the
    /// request timeout, no retries and no breaker (it is a diagnostic).
    pub async fn status(&self, endpoint: &str) -> Result<pb::StatusResponse, ClientError> {
        let ep = self.endpoint_state(endpoint)?;
        let req = request(
            pb::StatusRequest {},
            self.inner.config.request_timeout(),
            self.inner.auth.as_ref(),
        );
        cluster(&ep).status(req).await.map(Response::into_inner).map_err(|status| {
            let (code, message) = retry::describe(&status);
            RpcError {
                code,
                message,
                leader_hint: retry::leader_hint(&status),
                endpoint: Some(ep.addr.clone()),
                attempts: 1,
                indeterminate: false,
                request_id: None,
                retry_after: retry::retry_after(&status),
            }
            .into()
        })
    }

    /// Linearizable reads go to the nearest replica when follower reads are on.
    fn read_route(&self, route: Route) -> Route {
        if route == Route::Leader && self.inner.config.follower_reads {
            Route::Nearest
        } else {
            route
        }
    }

    /// Ask every endpoint for its Cluster.Status (concurrently, each bounded by
    /// [`PROBE_TIMEOUT`]) and tag it with the node behind it and the round-trip time,
    /// for nearest-replica routing and leader-hint mapping. Unreachable endpoints stay
    /// untagged. Returns how many endpoints answered.
    pub async fn probe(&self) -> usize {
        let endpoints = self.inner.endpoints.all();
        let probes = endpoints.iter().map(|ep| async move {
            let started = std::time::Instant::now();
            let req = request(pb::StatusRequest {}, PROBE_TIMEOUT, self.inner.auth.as_ref());
            let answer = tokio::time::timeout(PROBE_TIMEOUT, cluster(ep).status(req)).await;
            match answer {
                Ok(Ok(resp)) => {
                    let s = resp.into_inner();
                    let tag =
                        endpoints::NodeTag { id: s.id, region: s.region, api_addr: s.api_addr };
                    ep.set_probe(tag, started.elapsed());
                    true
                }
                _ => false,
            }
        });
        let answered = futures::future::join_all(probes).await.into_iter().filter(|ok| *ok).count();
        self.inner.endpoints.mark_probed(self.inner.clock.now());
        answered
    }

    /// The cluster membership, from any endpoint.
    pub async fn members(&self) -> Result<pb::MembersResponse, ClientError> {
        self.execute(CallSpec::read("members", Route::Any, None), |ep, deadline| {
            let req = request(pb::MembersRequest {}, deadline, self.inner.auth.as_ref());
            async move { cluster(&ep).members(req).await }
        })
        .await
    }

    /// Add every member's API address to the endpoint set and remember the leader.
    /// Returns how many endpoints were added.
    pub async fn discover(&self) -> Result<usize, ClientError> {
        let members = self.members().await?;
        let before = self.inner.endpoints.info().len();
        let now = self.inner.clock.now();
        for m in &members.members {
            if m.api_addr.is_empty() {
                continue;
            }
            let added = self.inner.endpoints.get_or_add(&m.api_addr, now);
            if m.id == members.leader_id && members.leader_id != 0 {
                if let Some(leader) = added {
                    self.inner.endpoints.redirect(&leader.addr, "", now);
                }
            }
        }
        Ok(self.inner.endpoints.info().len() - before)
    }
}

#[cfg(test)]
mod tests;

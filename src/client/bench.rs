//! The load generator behind `meridian bench` and `meridian-bench` (the side-by-side
//! comparison with etcd): N tasks share a small pool of clients and loop over keys
//! until the deadline or the op budget, recording latencies in HDR histograms.
//!
//! The loop is generic over [`BenchTarget`], the handful of ops a workload issues, so
//! every store under test runs exactly the same key sequence, op mix, bounds and
//! measurement: [`Client`] implements it here, the etcd v3 client in the bench crate
//! (which keeps etcd-client out of the node's crate).
//!
//! Workloads:
//! - `put`: unconditional writes of `value_size` bytes on random keys (every write,
//!   preloads included, a fresh random alphanumeric value: see [`fresh_value`]);
//! - `get`: reads at the chosen consistency, after preloading every key;
//! - `cas`: read the version, then write only at that version, each task on its own
//!   slice of the keys (distinct keys: no conflicts expected). One cycle is one op;
//! - `cas-hot`: the same cycle, every task on one key: a lost race is a conflict
//!   (counted apart; a completed cycle either way);
//! - `txn`: one transaction over [`TXN_KEYS`] consecutive preloaded keys: compare each
//!   one's version > 0, then put all of them;
//! - `mixed`: [`MIXED_READ_PERCENT`]% gets at the chosen consistency, the rest puts,
//!   on preloaded keys.
//!
//! Invariants: every task stops at `warmup + duration` or when `max_ops` ops have
//! started in total (warmup included), whichever comes first, so a run is always
//! bounded. Ops that start during warmup are not recorded. Each task's RNG is seeded
//! from `seed` and its index: a run's key and value sequences are reproducible.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use super::error::code_name;
use super::txn;
use super::{
    Client, ClientConfig, ClientError, ClientMetrics, CompareOp, Consistency, PutOptions,
    ReadOptions, Txn,
};

/// Most concurrent tasks.
pub const MAX_CONCURRENCY: usize = 4_096;
/// Most clients in the pool (each has its own HTTP/2 connection per endpoint).
pub const MAX_CLIENTS: usize = 64;
/// Most distinct keys.
pub const MAX_KEYS: u64 = 10_000_000;
/// Largest value written, bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Default op budget of a run: large, but finite.
pub const DEFAULT_MAX_OPS: u64 = 10_000_000;
/// Largest latency the histograms hold, µs (larger values are clamped).
pub const MAX_RECORDED_LATENCY_US: u64 = 60_000_000;
/// Significant figures kept by the histograms.
pub const HISTOGRAM_SIGFIGS: u8 = 3;
/// Keys written by one op of the `txn` workload.
pub const TXN_KEYS: u64 = 4;
/// Share of reads in the `mixed` workload, percent.
pub const MIXED_READ_PERCENT: u32 = 90;
/// Quantiles at which a report samples the latency CDF (for plots).
pub const CDF_QUANTILES: [f64; 21] = [
    0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998,
    0.999, 0.9995, 0.9999, 1.0,
];

/// A failed op, target-agnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Upper-case gRPC code name (UNAVAILABLE, DEADLINE_EXCEEDED, ...).
    pub code: String,
    /// The error as the target's client reported it.
    pub message: String,
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> Self {
        Self { code: code_name(e.code()).to_string(), message: e.to_string() }
    }
}

/// A store under test: the ops the workloads issue. Implementations must bound every
/// call in time (their client's deadline) so the load loop stays bounded.
pub trait BenchTarget: Clone + Send + Sync + 'static {
    /// Write `key` unconditionally.
    fn put(&self, key: String, value: &[u8]) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Read `key` at `consistency` (linearizable or serializable).
    fn get(
        &self,
        key: String,
        consistency: Consistency,
    ) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Read `key`'s version at `consistency`, then write it only at that version.
    /// Ok(false): the version moved in between (a conflict).
    fn cas(
        &self,
        key: String,
        value: &[u8],
        consistency: Consistency,
    ) -> impl Future<Output = Result<bool, OpError>> + Send;
    /// One transaction: if every key's version is > 0, put `value` to all of them.
    /// Ok(false): a compare failed (nothing written).
    fn txn(
        &self,
        keys: Vec<String>,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, OpError>> + Send;
    /// Client-side counters (retries, redirects), if the target keeps any.
    fn metrics(&self) -> ClientMetrics {
        ClientMetrics::default()
    }
}

impl BenchTarget for Client {
    async fn put(&self, key: String, value: &[u8]) -> Result<(), OpError> {
        Client::put(self, key, value).await?;
        Ok(())
    }

    async fn get(&self, key: String, consistency: Consistency) -> Result<(), OpError> {
        Client::get(self, key, read_options(consistency)).await?;
        Ok(())
    }

    async fn cas(
        &self,
        key: String,
        value: &[u8],
        consistency: Consistency,
    ) -> Result<bool, OpError> {
        let current = Client::get(self, key.clone(), read_options(consistency))
            .await?
            .record
            .map_or(0, |r| r.version);
        let options = PutOptions { expected_version: Some(current), ..PutOptions::default() };
        Ok(self.put_with(key, value, options).await?.succeeded)
    }

    async fn txn(&self, keys: Vec<String>, value: &[u8]) -> Result<bool, OpError> {
        let mut txn = Txn::new();
        for key in &keys {
            txn = txn.when(txn::version(key.as_bytes(), CompareOp::Greater, 0));
        }
        for key in keys {
            txn = txn.then(txn::put(key, value));
        }
        Ok(Client::txn(self, txn).await?.succeeded)
    }

    fn metrics(&self) -> ClientMetrics {
        Client::metrics(self)
    }
}

/// What the tasks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Unconditional writes.
    Put,
    /// Reads of preloaded keys.
    Get,
    /// Read-version-then-CAS cycles, each task on its own keys.
    Cas,
    /// Read-version-then-CAS cycles, every task on one key.
    CasHot,
    /// Transactions over [`TXN_KEYS`] preloaded keys.
    Txn,
    /// [`MIXED_READ_PERCENT`]% gets, the rest puts, on preloaded keys.
    Mixed,
}

impl Workload {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Cas => "cas",
            Workload::CasHot => "cas-hot",
            Workload::Txn => "txn",
            Workload::Mixed => "mixed",
        }
    }

    /// Every workload, in report order.
    pub const ALL: [Workload; 6] = [
        Workload::Put,
        Workload::Get,
        Workload::Cas,
        Workload::CasHot,
        Workload::Txn,
        Workload::Mixed,
    ];

    /// The workload named `name` (as [`Workload::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.as_str() == name)
    }

    /// Whether every key is written once before the run (the workload reads or
    /// compares existing keys).
    pub fn needs_preload(self) -> bool {
        matches!(self, Workload::Get | Workload::Txn | Workload::Mixed)
    }
}

/// A benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Client settings (endpoints, timeouts, retries).
    pub client: ClientConfig,
    /// What to run.
    pub workload: Workload,
    /// Concurrent tasks (1..=4096).
    pub concurrency: usize,
    /// Clients in the pool, shared round-robin by the tasks (1..=64, <= concurrency).
    pub clients: usize,
    /// Measured time, after warmup.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Most ops started in total (>= 1).
    pub max_ops: u64,
    /// Distinct keys (1..=10M), chosen uniformly.
    pub keys: u64,
    /// Value size, bytes (<= 1 MiB).
    pub value_size: usize,
    /// Read consistency (get and the read half of cas).
    pub consistency: Consistency,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Seed of the tasks' RNGs.
    pub seed: u64,
    /// Write every key before a workload that needs them ([`Workload::needs_preload`]);
    /// off when the caller already loaded them.
    pub preload: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            workload: Workload::Put,
            concurrency: 16,
            clients: 4,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            max_ops: DEFAULT_MAX_OPS,
            keys: 10_000,
            value_size: 100,
            consistency: Consistency::Linearizable,
            key_prefix: "bench/".into(),
            seed: 0,
            preload: true,
        }
    }
}

impl BenchConfig {
    /// Reject out-of-range values.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: String| Err(ClientError::Config(m));
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(format!("concurrency must be 1..={MAX_CONCURRENCY}"));
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS.min(self.concurrency) {
            return bad(format!("clients must be 1..={} (and <= concurrency)", MAX_CLIENTS));
        }
        if self.keys == 0 || self.keys > MAX_KEYS {
            return bad(format!("keys must be 1..={MAX_KEYS}"));
        }
        if self.workload == Workload::Txn && self.keys < TXN_KEYS {
            return bad(format!("the txn workload needs at least {TXN_KEYS} keys"));
        }
        if self.value_size > MAX_VALUE_BYTES {
            return bad(format!("value size must be <= {MAX_VALUE_BYTES} bytes"));
        }
        if self.max_ops == 0 || self.duration.is_zero() {
            return bad("max ops and duration must be positive".into());
        }
        if self.consistency == Consistency::BoundedStaleness {
            return bad("bench reads are linearizable or serializable".into());
        }
        self.client.validate()
    }
}

/// Latency percentiles of successful ops, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Ops recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// One point of a latency CDF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CdfPoint {
    /// Quantile, 0..=1.
    pub quantile: f64,
    /// Latency at that quantile, ms.
    pub ms: f64,
}

/// Outcomes of measured ops: a latency histogram, error counts by code, conflicts.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
    /// Ops that completed (conflicts included).
    pub ops: u64,
    /// CAS version mismatches.
    pub conflicts: u64,
    /// Failed ops by upper-case gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// The first error message seen for each code (for diagnosis).
    pub error_samples: BTreeMap<String, String>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_RECORDED_LATENCY_US, HISTOGRAM_SIGFIGS)
            .expect("constant histogram bounds are valid (checked by a unit test)");
        Self {
            histogram,
            ops: 0,
            conflicts: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        }
    }

    /// A completed op.
    pub fn record_ok(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(us.clamp(1, MAX_RECORDED_LATENCY_US));
        self.ops += 1;
    }

    /// A completed op that lost a CAS race.
    pub fn record_conflict(&mut self, latency: Duration) {
        self.record_ok(latency);
        self.conflicts += 1;
    }

    /// A failed op, with its message (the first per code is kept as a sample).
    pub fn record_error(&mut self, code: &str, message: &str) {
        *self.errors.entry(code.to_string()).or_default() += 1;
        if !self.error_samples.contains_key(code) {
            self.error_samples.insert(code.to_string(), message.to_string());
        }
    }

    /// Fold another recorder into this one.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Both histograms have the same bounds, so add cannot fail; count instead of
        // panicking if it ever did.
        if self.histogram.add(&other.histogram).is_err() {
            self.record_error("HISTOGRAM_MERGE", "histogram bounds differ");
        }
        self.ops += other.ops;
        self.conflicts += other.conflicts;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (code, message) in &other.error_samples {
            self.error_samples.entry(code.clone()).or_insert_with(|| message.clone());
        }
    }

    /// Percentiles in ms.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let ms = |us: u64| us as f64 / 1_000.0;
        LatencySummary {
            count: h.len(),
            mean: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// The latency CDF sampled at [`CDF_QUANTILES`] (empty when nothing was recorded).
    pub fn cdf(&self) -> Vec<CdfPoint> {
        if self.histogram.is_empty() {
            return Vec::new();
        }
        CDF_QUANTILES
            .iter()
            .map(|&q| CdfPoint {
                quantile: q,
                ms: self.histogram.value_at_quantile(q) as f64 / 1_000.0,
            })
            .collect()
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Warmup plus duration elapsed.
    Duration,
    /// The op budget ran out first.
    MaxOps,
}

/// The machine-readable result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// System under test ("meridian", "etcd").
    pub target: String,
    /// Workload name.
    pub workload: String,
    /// Endpoints used.
    pub endpoints: Vec<String>,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Clients in the pool.
    pub clients: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Value size, bytes.
    pub value_size: usize,
    /// Read consistency.
    pub consistency: String,
    /// RNG seed.
    pub seed: u64,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Completed measured ops (conflicts included).
    pub ops: u64,
    /// ops / elapsed_s.
    pub ops_per_sec: f64,
    /// Failed measured ops.
    pub errors: u64,
    /// Failed measured ops by gRPC code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// The first error message seen for each code.
    pub error_samples: BTreeMap<String, String>,
    /// CAS conflicts (cas workload).
    pub conflicts: u64,
    /// Latency of completed measured ops.
    pub latency_ms: LatencySummary,
    /// Their CDF, sampled at [`CDF_QUANTILES`].
    pub latency_cdf: Vec<CdfPoint>,
    /// Why the run stopped.
    pub stopped_by: StopReason,
    /// Client counters summed over the pool (retries, redirects, breaker opens).
    pub client: ClientMetrics,
}

struct Shared {
    config: BenchConfig,
    measure_from: Instant,
    deadline: Instant,
    started_ops: AtomicU64,
}

enum Outcome {
    Ok,
    Conflict,
    Error(OpError),
}

fn key_of(config: &BenchConfig, index: u64) -> String {
    format!("{}{index:010}", config.key_prefix)
}

fn read_options(consistency: Consistency) -> ReadOptions {
    ReadOptions { consistency, ..ReadOptions::default() }
}

/// The key index task `task` of `concurrency` uses next for `workload`.
fn next_key(
    workload: Workload,
    keys: u64,
    task: usize,
    concurrency: usize,
    rng: &mut StdRng,
) -> u64 {
    match workload {
        // Each task its own residue class of the keys (the task index itself when
        // there are fewer keys than tasks): no two tasks race on a key.
        Workload::Cas => {
            let (task, stride) = (task as u64, concurrency as u64);
            if keys <= task {
                return task;
            }
            task + stride * rng.gen_range(0..(keys - task).div_ceil(stride))
        }
        Workload::CasHot => 0,
        Workload::Txn => rng.gen_range(0..=keys - TXN_KEYS),
        Workload::Put | Workload::Get | Workload::Mixed => rng.gen_range(0..keys),
    }
}

async fn one_op<T: BenchTarget>(
    shared: &Shared,
    target: &T,
    index: u64,
    rng: &mut StdRng,
) -> Outcome {
    let config = &shared.config;
    let key = key_of(config, index);
    let size = config.value_size;
    let done = |r: Result<bool, OpError>| match r {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::Conflict,
        Err(e) => Outcome::Error(e),
    };
    match config.workload {
        Workload::Put => done(target.put(key, &fresh_value(size, rng)).await.map(|()| true)),
        Workload::Get => done(target.get(key, config.consistency).await.map(|()| true)),
        Workload::Cas | Workload::CasHot => {
            done(target.cas(key, &fresh_value(size, rng), config.consistency).await)
        }
        Workload::Txn => {
            let keys = (index..index + TXN_KEYS).map(|i| key_of(config, i)).collect();
            done(target.txn(keys, &fresh_value(size, rng)).await)
        }
        Workload::Mixed => {
            if rng.gen_range(0..100) < MIXED_READ_PERCENT {
                done(target.get(key, config.consistency).await.map(|()| true))
            } else {
                done(target.put(key, &fresh_value(size, rng)).await.map(|()| true))
            }
        }
    }
}

async fn worker<T: BenchTarget>(
    shared: Arc<Shared>,
    target: T,
    index: usize,
) -> (LatencyRecorder, StopReason) {
    let mut rng =
        StdRng::seed_from_u64(shared.config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    let mut recorder = LatencyRecorder::new();
    let (workload, keys, concurrency) =
        (shared.config.workload, shared.config.keys, shared.config.concurrency);
    loop {
        if Instant::now() >= shared.deadline {
            return (recorder, StopReason::Duration);
        }
        if shared.started_ops.fetch_add(1, Ordering::Relaxed) >= shared.config.max_ops {
            return (recorder, StopReason::MaxOps);
        }
        let key = next_key(workload, keys, index, concurrency, &mut rng);
        let started = Instant::now();
        let outcome = one_op(&shared, &target, key, &mut rng).await;
        if started < shared.measure_from {
            continue;
        }
        match outcome {
            Outcome::Ok => recorder.record_ok(started.elapsed()),
            Outcome::Conflict => recorder.record_conflict(started.elapsed()),
            Outcome::Error(e) => recorder.record_error(&e.code, &e.message),
        }
    }
}

/// Write keys `0..keys` once (each its own value of `value_size` bytes), spread over
/// `concurrency` tasks sharing `pool` round-robin. The bench preloads before read, txn
/// and mixed runs; the comparison also uses it to load N keys before measuring
/// resource use.
pub async fn preload<T: BenchTarget>(config: &BenchConfig, pool: &[T]) -> Result<(), ClientError> {
    if pool.is_empty() {
        return Err(ClientError::Config("preload needs at least one client".into()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let stride = config.concurrency as u64;
    for task in 0..stride.min(config.keys) {
        let target = pool[task as usize % pool.len()].clone();
        let config = config.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(config.seed.rotate_left(32) ^ task);
            let mut index = task;
            while index < config.keys {
                let value = fresh_value(config.value_size, &mut rng);
                target.put(key_of(&config, index), &value).await.map_err(|e| {
                    ClientError::Config(format!("preload put failed: {}: {}", e.code, e.message))
                })?;
                index += stride;
            }
            Ok::<(), ClientError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| ClientError::Config(format!("preload task failed: {e}")))??;
    }
    Ok(())
}

/// A value for one write: `size` random alphanumeric bytes. Every write gets its own,
/// as real data differs from key to key: one value repeated would flatter any store
/// that compresses (and ASCII keeps values printable in `kv get`).
pub fn fresh_value(size: usize, rng: &mut StdRng) -> Vec<u8> {
    rng.sample_iter(rand::distributions::Alphanumeric).take(size).collect()
}

/// Run a benchmark against a Meridian cluster and report. Errors only for a bad
/// config or a failed preload; op failures are counted in the report.
pub async fn run_bench(config: BenchConfig) -> Result<BenchReport, ClientError> {
    config.validate()?;
    let pool = (0..config.clients)
        .map(|i| {
            let mut c = config.client.clone();
            c.retry.jitter_seed = Some(config.seed.wrapping_add(i as u64));
            Client::connect(c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    run_load(&config, "meridian", &pool).await
}

/// Run `config`'s workload against any target: `pool` holds its clients (shared
/// round-robin by the tasks), `target` names it in the report. `config.client` only
/// supplies the endpoints shown in the report. Errors only for a bad config or a
/// failed preload; op failures are counted in the report.
pub async fn run_load<T: BenchTarget>(
    config: &BenchConfig,
    target: &str,
    pool: &[T],
) -> Result<BenchReport, ClientError> {
    config.validate()?;
    if pool.is_empty() {
        return Err(ClientError::Config("a bench needs at least one client".into()));
    }
    if config.preload && config.workload.needs_preload() {
        preload(config, pool).await?;
    }
    let measure_from = Instant::now() + config.warmup;
    let shared = Arc::new(Shared {
        deadline: measure_from + config.duration,
        measure_from,
        started_ops: AtomicU64::new(0),
        config: config.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.concurrency {
        tasks.spawn(worker(shared.clone(), pool[index % pool.len()].clone(), index));
    }
    let mut total = LatencyRecorder::new();
    let mut stopped_by = StopReason::Duration;
    while let Some(joined) = tasks.join_next().await {
        let (recorder, reason) =
            joined.map_err(|e| ClientError::Config(format!("bench task failed: {e}")))?;
        total.merge(&recorder);
        if reason == StopReason::MaxOps {
            stopped_by = StopReason::MaxOps;
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    let mut report = report(config, pool, &total, elapsed, stopped_by);
    report.target = target.to_string();
    Ok(report)
}

fn report<T: BenchTarget>(
    config: &BenchConfig,
    pool: &[T],
    total: &LatencyRecorder,
    elapsed: Duration,
    stopped_by: StopReason,
) -> BenchReport {
    let elapsed_s = elapsed.as_secs_f64();
    let client = pool.iter().map(BenchTarget::metrics).fold(ClientMetrics::default(), |a, m| {
        ClientMetrics {
            calls: a.calls + m.calls,
            attempts: a.attempts + m.attempts,
            retries: a.retries + m.retries,
            redirects: a.redirects + m.redirects,
            breaker_opens: a.breaker_opens + m.breaker_opens,
            breaker_rejections: a.breaker_rejections + m.breaker_rejections,
            failed_calls: a.failed_calls + m.failed_calls,
            indeterminate_calls: a.indeterminate_calls + m.indeterminate_calls,
            rate_limited: a.rate_limited + m.rate_limited,
        }
    });
    BenchReport {
        target: "meridian".into(),
        workload: config.workload.as_str().into(),
        endpoints: config.client.endpoints.clone(),
        concurrency: config.concurrency,
        clients: config.clients,
        keys: config.keys,
        value_size: config.value_size,
        consistency: consistency_name(config.consistency).into(),
        seed: config.seed,
        warmup_s: config.warmup.as_secs_f64(),
        elapsed_s,
        ops: total.ops,
        ops_per_sec: if elapsed_s > 0.0 { total.ops as f64 / elapsed_s } else { 0.0 },
        errors: total.errors.values().sum(),
        errors_by_code: total.errors.clone(),
        error_samples: total.error_samples.clone(),
        conflicts: total.conflicts,
        latency_ms: total.summary(),
        latency_cdf: total.cdf(),
        stopped_by,
        client,
    }
}

/// Lower-case name of a consistency level.
pub fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Unspecified | Consistency::Linearizable => "linearizable",
        Consistency::Serializable => "serializable",
        Consistency::BoundedStaleness => "bounded_staleness",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_summarises_and_merges() {
        let mut a = LatencyRecorder::new();
        for ms in 1..=100 {
            a.record_ok(Duration::from_millis(ms));
        }
        let mut b = LatencyRecorder::new();
        b.record_conflict(Duration::from_secs(120));
        b.record_error("UNAVAILABLE", "first");
        b.record_error("UNAVAILABLE", "second");
        a.merge(&b);
        let s = a.summary();
        assert_eq!((a.ops, a.conflicts, s.count), (101, 1, 101));
        assert!((49.0..=52.0).contains(&s.p50), "{s:?}");
        assert!((99.0..=101.0).contains(&s.p99), "{s:?}");
        assert!(s.max >= 59_000.0, "clamped at the histogram max: {s:?}");
        assert_eq!(a.errors.get("UNAVAILABLE"), Some(&2));
        assert_eq!(a.error_samples.get("UNAVAILABLE").map(String::as_str), Some("first"));
    }

    #[test]
    fn every_write_gets_its_own_printable_value() {
        let mut rng = StdRng::seed_from_u64(7);
        let values: Vec<Vec<u8>> = (0..1_000).map(|_| fresh_value(100, &mut rng)).collect();
        assert!(values.iter().all(|v| v.len() == 100 && v.iter().all(u8::is_ascii_alphanumeric)));
        let distinct: std::collections::HashSet<&Vec<u8>> = values.iter().collect();
        assert_eq!(distinct.len(), values.len(), "no value repeats");
        assert!(fresh_value(0, &mut rng).is_empty());
        let mut again = StdRng::seed_from_u64(7);
        assert_eq!(fresh_value(100, &mut again), values[0], "a seed replays its values");
    }

    #[test]
    fn config_validation_rejects_bad_runs() {
        BenchConfig::default().validate().expect("defaults valid");
        let cases: Vec<BenchConfig> = vec![
            BenchConfig { concurrency: 0, ..BenchConfig::default() },
            BenchConfig { clients: 17, concurrency: 16, ..BenchConfig::default() },
            BenchConfig { keys: 0, ..BenchConfig::default() },
            BenchConfig { value_size: MAX_VALUE_BYTES + 1, ..BenchConfig::default() },
            BenchConfig { max_ops: 0, ..BenchConfig::default() },
            BenchConfig { consistency: Consistency::BoundedStaleness, ..BenchConfig::default() },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[tokio::test]
    async fn run_stops_at_max_ops_even_when_every_op_fails() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut client = ClientConfig::with_endpoints([format!("127.0.0.1:{port}")]);
        client.retry.max_attempts = 1;
        client.breaker.enabled = false;
        let config = BenchConfig {
            client,
            concurrency: 2,
            clients: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(600),
            max_ops: 10,
            ..BenchConfig::default()
        };
        let report = run_bench(config).await.expect("runs");
        assert_eq!(report.stopped_by, StopReason::MaxOps);
        assert_eq!(report.errors, 10);
        assert_eq!(report.errors_by_code.get("UNAVAILABLE"), Some(&10));
        assert_eq!(report.ops, 0);
    }
}

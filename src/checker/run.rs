//! The checker loop: subscribers in, findings and compensations out.
//!
//! One task per replica endpoint ([`Subscriber`]) feeds one bounded channel; this loop
//! owns the [`Checker`] and is the only writer of the state directory. Per step:
//! check the message (or the tick, or a compensation answer), write and fsync the
//! findings, then save the state (at once after findings or a compensation change,
//! otherwise at most every [`PERSIST_INTERVAL`]), then publish the processed cursors
//! (which the subscribers acknowledge to the servers). A compensation is recorded as
//! started and saved *before* its AbortSaga call goes out.
//!
//! Metrics (the `metrics` facade; exposed with `--metrics-addr`):
//! `meridian_checker_findings_total{kind,level}`, `meridian_checker_events_total{node}`,
//! `meridian_checker_lag_seconds` (histogram, event HLC to checked),
//! `meridian_checker_checked_revision{endpoint}`, `meridian_checker_compensations_total{outcome}`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::compensate::{abort_saga, AbortOutcome};
use super::consumer::{StreamMsg, Subscriber};
use super::core::{Checker, CheckerConfig};
use super::event::Position;
use super::finding::{Finding, FindingRecord, Level};
use super::invariant::{integer_value, InvariantConfig};
use super::state::{FindingSink, StateDir};
use super::CheckerError;
use crate::client::{Client, ClientConfig, RangeOptions, MAX_RANGE_PAGE};

/// Messages from the subscribers queued at most.
pub const LOOP_QUEUE: usize = 64;
/// Compensation answers queued at most.
pub const COMPENSATION_QUEUE: usize = 64;
/// Compensations in flight at most (more wait for the next tick).
pub const MAX_CONCURRENT_COMPENSATIONS: usize = 8;
/// How often saga deadlines are checked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);
/// Longest time processed events stay unsaved when they produced no finding.
pub const PERSIST_INTERVAL: Duration = Duration::from_millis(200);
/// Delay before a compensation whose every attempt failed is tried again.
pub const COMPENSATION_RETRY: Duration = Duration::from_secs(5);
/// Default deadline of `--once` / `--until-revision`.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Consecutive progress messages (no events) after which a stream counts as idle:
/// everything its replica applied was delivered. One is not enough: a server whose
/// window is full sends progress too, and the ack that empties it may still be on its
/// way; the second comes a progress interval after it.
pub const IDLE_PROGRESS_MESSAGES: u32 = 2;
/// Endpoints checked at most.
pub const MAX_ENDPOINTS: usize = 64;

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Never (until the shutdown signal).
    Never,
    /// When every replica is caught up with the applied revision it had at start.
    Once,
    /// When every replica was checked through this revision.
    Revision(u64),
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Replica API endpoints (each subscribed directly).
    pub endpoints: Vec<String>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Invariants to check.
    pub invariants: Vec<InvariantConfig>,
    /// Findings file (JSON lines, appended).
    pub findings_file: Option<PathBuf>,
    /// Also print findings on stdout.
    pub findings_stdout: bool,
    /// On stdout, JSON lines rather than human lines.
    pub json: bool,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<SocketAddr>,
    /// When to stop.
    pub stop: StopAt,
    /// Deadline of `Once` / `Revision`.
    pub catch_up_timeout: Duration,
    /// Grace after a saga deadline, ms.
    pub saga_grace_ms: u64,
    /// Client settings (timeouts) for status, scans and AbortSaga.
    pub client: ClientConfig,
    /// Test hook: never record an AbortSaga answer (the process is killed meanwhile).
    pub stall_after_abort: bool,
}

impl CheckOptions {
    /// Defaults for `endpoints` and `state_dir`: run until shutdown, findings on stdout.
    pub fn new(endpoints: Vec<String>, state_dir: PathBuf) -> Self {
        let client = ClientConfig::with_endpoints(endpoints.clone());
        Self {
            endpoints,
            state_dir,
            invariants: Vec::new(),
            findings_file: None,
            findings_stdout: true,
            json: true,
            metrics_addr: None,
            stop: StopAt::Never,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
            saga_grace_ms: super::saga::DEFAULT_SAGA_GRACE_MS,
            client,
            stall_after_abort: false,
        }
    }

    fn validate(&self) -> Result<(), CheckerError> {
        let bad = |m: String| Err(CheckerError::Invalid(m));
        if self.endpoints.is_empty() {
            return bad("at least one endpoint is needed".into());
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return bad(format!("{} endpoints; at most {MAX_ENDPOINTS}", self.endpoints.len()));
        }
        let unique: BTreeSet<&String> = self.endpoints.iter().collect();
        if unique.len() != self.endpoints.len() {
            return bad("an endpoint is listed twice".into());
        }
        if let Some(bad_ep) =
            self.endpoints.iter().find(|e| e.is_empty() || e.contains(char::is_whitespace))
        {
            return bad(format!("malformed endpoint {bad_ep:?}"));
        }
        Ok(())
    }
}

/// What a run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Findings reported during this run, per level.
    pub findings: BTreeMap<Level, u64>,
    /// Events checked during this run.
    pub events: u64,
    /// Sagas compensated during this run.
    pub compensated_sagas: u64,
    /// Last checked position per endpoint.
    pub cursors: BTreeMap<String, Option<Position>>,
    /// Lag of the events checked during this run (event HLC to checked).
    pub lag: LagStats,
}

/// Percentiles of the time from an event's HLC (stamped when its write was proposed)
/// to the moment the checker checked it, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagStats {
    /// Events measured.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: u64,
    /// 99th percentile, ms.
    pub p99_ms: u64,
    /// Largest, ms.
    pub max_ms: u64,
}

/// Largest lag the run's histogram records, ms (larger values are clamped).
pub const MAX_RECORDED_LAG_MS: u64 = 3_600_000;

fn lag_histogram() -> Option<hdrhistogram::Histogram<u64>> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_RECORDED_LAG_MS, 3).ok()
}

fn lag_stats(h: &Option<hdrhistogram::Histogram<u64>>) -> LagStats {
    match h {
        Some(h) if !h.is_empty() => LagStats {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5),
            p99_ms: h.value_at_quantile(0.99),
            max_ms: h.max(),
        },
        _ => LagStats::default(),
    }
}

impl CheckOutcome {
    /// Findings of any level.
    pub fn total_findings(&self) -> u64 {
        self.findings.values().sum()
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Install the Prometheus exporter on `addr` (once per process).
pub fn serve_metrics(addr: SocketAddr) -> Result<(), CheckerError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("meridian_checker_lag_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        )
        .and_then(|b| b.install())
        .map_err(|e| CheckerError::Invalid(format!("cannot serve metrics on {addr}: {e}")))
}

/// Sum of the integer values under `prefix` and the revision of that state (one
/// linearizable page: an anchoring scan supports up to [`MAX_RANGE_PAGE`] keys).
async fn scan_sum(client: &Client, prefix: &str) -> Result<(u64, i128), CheckerError> {
    let options = RangeOptions { limit: MAX_RANGE_PAGE, ..RangeOptions::prefix(prefix) };
    let page = client.range(options).await?;
    if !page.next_page_token.is_empty() {
        return Err(CheckerError::Invalid(format!(
            "initial_scan of prefix {prefix:?}: more than {MAX_RANGE_PAGE} keys (not supported)"
        )));
    }
    let revision = page.header.map_or(0, |h| h.revision);
    let sum = page.records.iter().filter_map(|r| integer_value(&r.value)).map(i128::from).sum();
    Ok((revision, sum))
}

struct Loop {
    checker: Checker,
    state_dir: StateDir,
    sink: FindingSink,
    cursors: BTreeMap<String, watch::Sender<Option<Position>>>,
    outcome: CheckOutcome,
    dirty: bool,
    last_save: Instant,
    /// Consecutive progress messages per endpoint (see [`IDLE_PROGRESS_MESSAGES`]).
    progress_streak: BTreeMap<String, u32>,
    /// Lag of the events checked in this run, ms.
    lag: Option<hdrhistogram::Histogram<u64>>,
}

impl Loop {
    /// Write findings (fsynced), count them; the caller saves the state next.
    fn report(&mut self, findings: Vec<Finding>) -> Result<bool, CheckerError> {
        if findings.is_empty() {
            return Ok(false);
        }
        let time_unix_ms = now_unix_ms();
        for f in &findings {
            *self.outcome.findings.entry(f.level).or_default() += 1;
            metrics::counter!("meridian_checker_findings_total", "kind" => f.kind.as_str(), "level" => f.level.as_str())
                .increment(1);
            tracing::warn!(kind = f.kind.as_str(), level = f.level.as_str(), "{}", f.message);
        }
        let records: Vec<FindingRecord> =
            findings.into_iter().map(|finding| FindingRecord { time_unix_ms, finding }).collect();
        self.sink.write(&records)?;
        Ok(true)
    }

    fn save(&mut self, force: bool) -> Result<(), CheckerError> {
        if force || (self.dirty && self.last_save.elapsed() >= PERSIST_INTERVAL) {
            self.state_dir.save(self.checker.state())?;
            self.dirty = false;
            self.last_save = Instant::now();
        }
        for (endpoint, tx) in &self.cursors {
            let cursor = self.checker.cursor(endpoint);
            tx.send_if_modified(|c| {
                let changed = *c != cursor;
                *c = cursor;
                changed
            });
        }
        Ok(())
    }

    fn journal(
        &self,
        event: &str,
        saga_id: &str,
        extra: serde_json::Value,
    ) -> Result<(), CheckerError> {
        let mut line = serde_json::json!({
            "time_unix_ms": now_unix_ms(),
            "event": event,
            "saga_id": saga_id,
            "request_id": super::core::abort_request_id(saga_id),
        });
        if let (Some(obj), serde_json::Value::Object(more)) = (line.as_object_mut(), extra) {
            obj.extend(more);
        }
        self.state_dir.journal(&line)
    }
}

/// Run the checker until `options.stop` or `shutdown` resolves.
pub async fn run(
    options: CheckOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<CheckOutcome, CheckerError> {
    options.validate()?;
    let state_dir = StateDir::open(&options.state_dir)?;
    if let Some(addr) = options.metrics_addr {
        serve_metrics(addr)?;
    }
    let client = Client::connect(options.client.clone())?;
    let config = CheckerConfig {
        saga_grace_ms: options.saga_grace_ms,
        invariants: options.invariants.clone(),
        ..CheckerConfig::new(options.endpoints.len())
    };
    let mut checker = match state_dir.load()? {
        Some(state) => Checker::resume(config, state),
        None => Checker::new(config),
    };
    for i in checker.wants_scan() {
        let prefix = checker.invariant_prefix(i).unwrap_or_default().to_string();
        let (revision, sum) = scan_sum(&client, &prefix).await?;
        tracing::info!(prefix, revision, %sum, "invariant anchored by a scan");
        checker.anchor(i, revision, sum);
    }
    let deadline = tokio::time::Instant::now() + options.catch_up_timeout;
    let targets = catch_up_targets(&client, &options, deadline).await?;

    let (tx, mut rx) = mpsc::channel(LOOP_QUEUE);
    let mut subscribers = JoinSet::new();
    let mut cursors = BTreeMap::new();
    for endpoint in &options.endpoints {
        let (ctx, crx) = watch::channel(checker.cursor(endpoint));
        cursors.insert(endpoint.clone(), ctx);
        let sub = Subscriber {
            endpoint: endpoint.clone(),
            client: client.clone(),
            cursor: crx,
            out: tx.clone(),
        };
        subscribers.spawn(sub.run());
    }
    drop(tx);
    let sink = FindingSink {
        stdout: options.findings_stdout,
        json: options.json,
        file: options.findings_file.clone(),
    };
    let mut lp = Loop {
        checker,
        state_dir,
        sink,
        cursors,
        outcome: CheckOutcome::default(),
        dirty: false,
        last_save: Instant::now(),
        progress_streak: BTreeMap::new(),
        lag: lag_histogram(),
    };
    lp.save(true)?;

    let (comp_tx, mut comp_rx) = mpsc::channel::<AbortOutcome>(COMPENSATION_QUEUE);
    let mut inflight: BTreeSet<String> = BTreeSet::new();
    let mut retry_at: BTreeMap<String, Instant> = lp
        .checker
        .unfinished_compensations()
        .into_iter()
        .map(|(id, _)| (id, Instant::now()))
        .collect();
    let mut caught: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(TICK_INTERVAL);
    tokio::pin!(shutdown);
    let catch_up = tokio::time::sleep_until(deadline);
    tokio::pin!(catch_up);
    let mut final_tick_done = false;

    loop {
        let mut findings = Vec::new();
        let mut force = false;
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    return Err(CheckerError::Invalid("every subscriber stopped".into()));
                };
                findings.extend(handle_msg(&mut lp, msg, &targets, &mut caught));
            }
            _ = tick.tick() => {
                let (stuck, todo) = lp.checker.tick(now_unix_ms());
                findings.extend(stuck);
                for id in todo {
                    lp.checker.compensation_started(&id, now_unix_ms());
                    lp.journal("started", &id, serde_json::json!({}))?;
                    retry_at.insert(id, Instant::now());
                    force = true;
                }
                if options.stop != StopAt::Never && caught.len() == options.endpoints.len() {
                    findings.extend(lp.checker.flush());
                    final_tick_done = true;
                }
            }
            Some(out) = comp_rx.recv() => {
                inflight.remove(&out.saga_id);
                if out.answered {
                    let now = now_unix_ms();
                    findings.extend(lp.checker.compensation_finished(&out.saga_id, out.compensated, &out.conflicts, &out.note, now));
                    let outcome = if out.conflicts.is_empty() { "compensated" } else { "conflicts" };
                    metrics::counter!("meridian_checker_compensations_total", "outcome" => outcome).increment(1);
                    lp.outcome.compensated_sagas += 1;
                    lp.journal("finished", &out.saga_id, serde_json::json!({
                        "compensated": out.compensated,
                        "conflicts": out.conflicts.len(),
                        "duplicate": out.duplicate,
                        "note": out.note,
                    }))?;
                    force = true;
                } else {
                    tracing::warn!(saga_id = %out.saga_id, note = %out.note, "compensation unanswered; retrying later");
                    retry_at.insert(out.saga_id, Instant::now() + COMPENSATION_RETRY);
                }
            }
            () = &mut shutdown => {
                lp.save(true)?;
                break;
            }
            () = &mut catch_up, if options.stop != StopAt::Never => {
                lp.save(true)?;
                let missing: Vec<&String> = options.endpoints.iter().filter(|e| !caught.contains(*e)).collect();
                return Err(CheckerError::Timeout(format!(
                    "not caught up within {:?}: {missing:?} (compensations in flight: {inflight:?})",
                    options.catch_up_timeout
                )));
            }
        }
        if lp.report(findings)? {
            force = true;
        }
        lp.save(force)?;
        // Compensations go out only after their start is saved.
        let now = Instant::now();
        let due: Vec<String> = retry_at
            .iter()
            .filter(|(id, at)| **at <= now && !inflight.contains(*id))
            .map(|(id, _)| id.clone())
            .take(MAX_CONCURRENT_COMPENSATIONS.saturating_sub(inflight.len()))
            .collect();
        for id in due {
            retry_at.remove(&id);
            inflight.insert(id.clone());
            let (client, endpoints, tx) =
                (client.clone(), options.endpoints.clone(), comp_tx.clone());
            let stall = options.stall_after_abort;
            tokio::spawn(async move {
                let request_id = super::core::abort_request_id(&id);
                let out = abort_saga(&client, &endpoints, &id, &request_id).await;
                if stall {
                    tracing::warn!(saga_id = %id, "test hook: AbortSaga answered; stalling before recording it");
                    std::future::pending::<()>().await;
                }
                let _ = tx.send(out).await;
            });
        }
        if final_tick_done && inflight.is_empty() && retry_at.is_empty() {
            lp.save(true)?;
            break;
        }
    }
    subscribers.abort_all();
    lp.outcome.lag = lag_stats(&lp.lag);
    lp.outcome.cursors =
        options.endpoints.iter().map(|e| (e.clone(), lp.checker.cursor(e))).collect();
    Ok(lp.outcome)
}

fn handle_msg(
    lp: &mut Loop,
    msg: StreamMsg,
    targets: &BTreeMap<String, u64>,
    caught: &mut BTreeSet<String>,
) -> Vec<Finding> {
    match msg {
        StreamMsg::Resubscribed { endpoint } => {
            lp.progress_streak.remove(&endpoint);
            lp.checker.resubscribed(&endpoint);
            Vec::new()
        }
        StreamMsg::Failed { endpoint, message } => {
            tracing::info!(%endpoint, %message, "binlog stream interrupted; reconnecting");
            Vec::new()
        }
        StreamMsg::OutOfRange { endpoint, oldest_revision } => {
            lp.dirty = true;
            vec![lp.checker.events_lost(&endpoint, oldest_revision)]
        }
        StreamMsg::Batch { endpoint, node, events, applied_revision } => {
            let streak = lp.progress_streak.entry(endpoint.clone()).or_default();
            *streak = if events.is_empty() { streak.saturating_add(1) } else { 0 };
            let idle = *streak >= IDLE_PROGRESS_MESSAGES;
            let findings = if events.is_empty() && !idle {
                Vec::new()
            } else if idle {
                lp.checker.idle(&endpoint, node, applied_revision)
            } else {
                let observed =
                    lp.checker.observe(&endpoint, node, &events, applied_revision, now_unix_ms());
                lp.dirty |= observed.checked > 0;
                lp.outcome.events += observed.checked;
                metrics::counter!("meridian_checker_events_total", "node" => node.to_string())
                    .increment(observed.checked);
                for ms in &observed.lag_ms {
                    metrics::histogram!("meridian_checker_lag_seconds").record(*ms as f64 / 1000.0);
                    if let Some(h) = lp.lag.as_mut() {
                        h.saturating_record((*ms).clamp(1, MAX_RECORDED_LAG_MS));
                    }
                }
                observed.findings
            };
            let checked = lp.checker.cursor(&endpoint).map_or(0, |p| p.revision);
            metrics::gauge!("meridian_checker_checked_revision", "endpoint" => endpoint.clone())
                .set(checked as f64);
            if let Some(&target) = targets.get(&endpoint) {
                if checked >= target || (idle && applied_revision >= target) {
                    caught.insert(endpoint);
                }
            }
            findings
        }
    }
}

/// The revision each endpoint must be checked through before a bounded run ends
/// (empty for an unbounded run).
async fn catch_up_targets(
    client: &Client,
    options: &CheckOptions,
    deadline: tokio::time::Instant,
) -> Result<BTreeMap<String, u64>, CheckerError> {
    let mut targets = BTreeMap::new();
    match options.stop {
        StopAt::Never => {}
        StopAt::Revision(n) => {
            for e in &options.endpoints {
                targets.insert(e.clone(), n);
            }
        }
        StopAt::Once => {
            for e in &options.endpoints {
                let applied = loop {
                    match client.status(e).await {
                        Ok(s) => break s.applied_index,
                        Err(err) if tokio::time::Instant::now() < deadline => {
                            tracing::info!(endpoint = %e, %err, "status failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                };
                targets.insert(e.clone(), applied);
            }
        }
    }
    Ok(targets)
}

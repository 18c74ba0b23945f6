//! One test run, end to end: cluster, workload under the nemesis schedule, heal, final
//! reads, check, reports.
//!
//! 1. A fresh cluster in a temporary directory ([`TestCluster`]), every node-to-node
//!    link through the fault proxy, nodes started with `--allow-fault-injection` (and
//!    `--unsafe-stale-reads` when asked).
//! 2. `concurrency` workers, worker `w` bound to node `ids[w % n]`, each running one
//!    operation at a time, starts spaced by a random interval of mean
//!    `concurrency / rate` seconds (Jepsen's stagger; an operation slower than that
//!    delays the next one), until the time limit or the operation budget
//!    ([`TestConfig::max_ops`]). After an `info` a worker continues as process
//!    `p + concurrency` with a new connection.
//! 3. The nemesis runs the seeded schedule meanwhile, then heals everything and waits
//!    for a leader; final reads (every register key, or every account) follow, as
//!    ordinary operations of new processes; the binlog workload instead streams every
//!    replica's whole binlog once the cluster has converged.
//! 4. The history is written (JSON lines and EDN) and checked: per key with the
//!    cas-register model, or with the bank invariants; then results.json, the plots,
//!    index.html, timeline.html when a register history is not linearizable, and every
//!    node's log; `<store>/latest` points at the run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meridian::cluster::{TestCluster, TestOptions};
use meridian::pb::v1::kv_client::KvClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value as Json};
use tonic::transport::Channel;

use super::bank::{self, BankResult, BankWorkload};
use super::binlog::{self as binlog_workload, BinlogResult, BinlogWorkload, EventLite};
use super::client::{self, call, request};
use super::config::{FaultKind, TestConfig, WorkloadKind};
use super::nemesis::{Nemesis, Window};
use super::recorder::{self, Actor, Record, Recorder};
use super::register::{RegisterOp, RegisterWorkload};
use super::schedule::{self, PlannedFault};
use super::workload::{OpContext, Outcome};
use super::{index, plots, store, HarnessError};
use crate::check::{check_history, Budget, CheckResult, Verdict, DEFAULT_MAX_CACHE_ENTRIES};
use crate::history::{EventType, History};
use crate::report::{render_html, render_json};

/// Salt mixed into the seed for worker `w`'s operation generator.
pub const WORKER_SALT: u64 = 0x776f_726b_6572_7321;
/// Attempts of each final read (on successive nodes) before it is given up.
pub const FINAL_READ_ATTEMPTS: usize = 5;
/// Raft settings of harness clusters: as the integration tests (50 ms heartbeats).
pub const CLUSTER_NAME: &str = "jepsen";

/// The overall verdict of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validity {
    /// The history is valid (linearizable / invariant kept).
    Valid,
    /// It is not.
    Invalid,
    /// The checker ran out of budget.
    Unknown,
}

impl Validity {
    /// `valid`, `invalid`, `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Invalid => "invalid",
            Validity::Unknown => "unknown",
        }
    }
}

/// Counts of client operations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Operations invoked.
    pub ops: u64,
    /// Completed ok.
    pub ok: u64,
    /// Completed info (indeterminate).
    pub info: u64,
    /// Completed fail.
    pub fail: u64,
    /// Never completed.
    pub pending: u64,
}

impl Counts {
    /// Count every client event of `records`, overall and per `f`.
    pub fn of(records: &[Record]) -> (Counts, BTreeMap<String, Counts>) {
        let mut all = Counts::default();
        let mut by_f: BTreeMap<String, Counts> = BTreeMap::new();
        for r in records.iter().filter(|r| matches!(r.actor, Actor::Client(_))) {
            let per = by_f.entry(r.f.clone()).or_default();
            for c in [&mut all, per] {
                match r.kind {
                    EventType::Invoke => c.ops += 1,
                    EventType::Ok => c.ok += 1,
                    EventType::Info => c.info += 1,
                    EventType::Fail => c.fail += 1,
                }
            }
        }
        for c in std::iter::once(&mut all).chain(by_f.values_mut()) {
            c.pending = c.ops.saturating_sub(c.ok + c.info + c.fail);
        }
        (all, by_f)
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// The verdict.
    pub validity: Validity,
    /// The run directory.
    pub dir: std::path::PathBuf,
    /// Client operation counts.
    pub counts: Counts,
    /// Time the check took, ms.
    pub check_ms: u64,
    /// Nemesis windows.
    pub windows: Vec<Window>,
    /// One line for humans.
    pub summary: String,
}

enum Workload {
    Register(RegisterWorkload),
    Bank(BankWorkload),
    Binlog(BinlogWorkload),
}

impl Workload {
    async fn run_one(&self, rng: &mut ChaCha8Rng, ctx: &mut OpContext<'_>) -> Outcome {
        match self {
            Workload::Register(w) => {
                let (key, op) = w.next_op(rng);
                w.run(ctx, &key, op).await
            }
            Workload::Bank(w) => {
                let op = w.next_op(rng);
                w.run(ctx, op).await
            }
            Workload::Binlog(w) => {
                let op = w.next_op(rng);
                w.run(ctx, op).await
            }
        }
    }
}

struct Workers {
    recorder: Arc<Recorder>,
    workload: Arc<Workload>,
    addrs: Vec<(u64, SocketAddr)>,
    config: TestConfig,
    stop_at: Instant,
    budget: AtomicU64,
}

impl Workers {
    fn take_budget(&self) -> bool {
        self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_ok()
    }

    /// Worker `w`; returns the last process id it used.
    async fn run(self: Arc<Self>, w: usize) -> Result<u64, HarnessError> {
        let (node, addr) = self.addrs[w % self.addrs.len()];
        let concurrency = self.config.concurrency as u64;
        let mean_gap_us = (self.config.concurrency as f64 / self.config.rate * 1e6) as u64;
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.config.seed ^ WORKER_SALT ^ ((w as u64) << 40));
        let mut process = w as u64;
        let mut kv = client::connect(addr)?;
        let mut next = Instant::now();
        loop {
            // Pace from the previous start, not the previous end, so the target rate
            // holds while operations are fast; after a slow one, go at once without
            // trying to catch up (no bursts).
            next = (next + Duration::from_micros(rng.gen_range(0..=2 * mean_gap_us)))
                .max(Instant::now());
            if next >= self.stop_at {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
            if !self.take_budget() {
                break;
            }
            let mut ctx = OpContext {
                recorder: &self.recorder,
                process,
                node,
                kv: &mut kv,
                timeout: self.config.op_timeout,
            };
            if self.workload.run_one(&mut rng, &mut ctx).await == Outcome::Info {
                process += concurrency;
                kv = client::connect(addr)?;
            }
        }
        Ok(process)
    }
}

fn node_addrs(cluster: &TestCluster) -> Result<Vec<(u64, SocketAddr)>, HarnessError> {
    cluster.ids().into_iter().map(|id| Ok((id, cluster.client_addr(id)?))).collect()
}

/// Write the bank's initial balances (retried on a new leader until `timeout`).
async fn bank_setup(
    cluster: &TestCluster,
    w: &BankWorkload,
    timeout: Duration,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        let leader = cluster.wait_for_leader(timeout).await?;
        let mut kv = cluster.kv(leader)?;
        let attempt =
            call(bank::SETUP_TIMEOUT, kv.txn(request(w.setup_request(), bank::SETUP_TIMEOUT)))
                .await;
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("[jepsen] bank setup: {} (retrying)", e.describe());
                tokio::time::sleep(meridian::cluster::POLL_INTERVAL).await;
            }
            Err(e) => return Err(HarnessError::Setup(format!("bank setup: {}", e.describe()))),
        }
    }
}

/// Final reads as new processes from `first_process`; returns how many got no `ok`.
async fn final_reads(
    workload: &Workload,
    recorder: &Recorder,
    addrs: &[(u64, SocketAddr)],
    first_process: u64,
    timeout: Duration,
) -> Result<(usize, usize), HarnessError> {
    let mut clients: Vec<(u64, KvClient<Channel>)> = Vec::new();
    for (id, addr) in addrs {
        clients.push((*id, client::connect(*addr)?));
    }
    let targets: Vec<Option<String>> = match workload {
        Workload::Register(w) => w.used_keys().into_iter().map(Some).collect(),
        Workload::Bank(_) => vec![None],
        // Checked from every replica's binlog instead of final reads.
        Workload::Binlog(_) => Vec::new(),
    };
    let mut process = first_process;
    let mut missing = 0;
    for (i, key) in targets.iter().enumerate() {
        let mut done = false;
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let (node, kv) = &mut clients[(i + attempt) % addrs.len()];
            let mut ctx = OpContext { recorder, process, node: *node, kv, timeout };
            process += 1;
            let outcome = match (workload, key) {
                (Workload::Register(w), Some(k)) => w.run(&mut ctx, k, RegisterOp::Read).await,
                (Workload::Bank(w), _) => w.run(&mut ctx, bank::BankOp::Read).await,
                (Workload::Register(_), None) | (Workload::Binlog(_), _) => Outcome::Fail,
            };
            if outcome == Outcome::Ok {
                done = true;
                break;
            }
        }
        if !done {
            missing += 1;
        }
    }
    Ok((targets.len(), missing))
}

/// The checker's verdict on a run.
enum Checked {
    Register { history: Box<History>, result: Box<CheckResult>, anomalies: u64 },
    Bank(BankResult),
    Binlog(BinlogResult),
}

impl Checked {
    fn validity(&self) -> Validity {
        match self {
            Checked::Register { result, anomalies, .. } => match result.verdict {
                _ if *anomalies > 0 => Validity::Invalid,
                Verdict::Linearizable => Validity::Valid,
                Verdict::NotLinearizable => Validity::Invalid,
                Verdict::Unknown => Validity::Unknown,
            },
            Checked::Bank(r) if r.valid => Validity::Valid,
            Checked::Bank(_) => Validity::Invalid,
            Checked::Binlog(r) if r.valid => Validity::Valid,
            Checked::Binlog(_) => Validity::Invalid,
        }
    }
}

async fn check(
    workload: &Workload,
    records: Vec<Record>,
    config: &TestConfig,
    binlogs: Option<BTreeMap<u64, Vec<EventLite>>>,
) -> Result<Checked, HarnessError> {
    match workload {
        Workload::Register(w) => {
            let anomalies = w.anomalies();
            let history = recorder::register_history(&records)?;
            let budget = Budget {
                timeout: Some(config.check_timeout),
                max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES,
            };
            let (history, result) = tokio::task::spawn_blocking(move || {
                let result = check_history(&history, crate::ModelKind::CasRegister, budget);
                (history, result)
            })
            .await
            .map_err(|e| HarnessError::Setup(format!("checker thread failed: {e}")))?;
            let result = result.map_err(HarnessError::Check)?;
            Ok(Checked::Register {
                history: Box::new(history),
                result: Box::new(result),
                anomalies,
            })
        }
        Workload::Bank(w) => Ok(Checked::Bank(bank::check(&records, w.accounts(), w.total()))),
        Workload::Binlog(w) => {
            let binlogs = binlogs.unwrap_or_default();
            Ok(Checked::Binlog(binlog_workload::check(&w.writes(), &binlogs)))
        }
    }
}

/// Run one test (see the module docs). The cluster is gone when this returns.
pub async fn run_test(config: TestConfig) -> Result<TestOutcome, HarnessError> {
    config.validate()?;
    let name = config.test_name();
    let run_dir = store::create_run_dir(&config.store, &name)?;
    let started_at = SystemTime::now();
    eprintln!("[jepsen] {name}: seed {}, run directory {}", config.seed, run_dir.display());
    let mut options = TestOptions::new(config.binary.clone());
    options.name = CLUSTER_NAME.to_string();
    options.proxy = true;
    options.extra_args = vec!["--allow-fault-injection".to_string()];
    if config.unsafe_stale_reads {
        options.extra_args.push("--unsafe-stale-reads".to_string());
    }
    let cluster = match &config.layout {
        Some(path) => {
            let layout = meridian::cluster::manifest::Manifest::load(path)?;
            TestCluster::start_layout(layout, options).await?
        }
        None => TestCluster::start(config.nodes, options).await?,
    };
    let cluster = Arc::new(cluster);
    let result = run_on(&config, &cluster, &run_dir, started_at).await;
    copy_logs(&cluster, &run_dir);
    drop(cluster);
    let outcome = result?;
    store::link_latest(&config.store, &run_dir)?;
    Ok(outcome)
}

fn copy_logs(cluster: &TestCluster, run_dir: &std::path::Path) {
    for id in cluster.ids() {
        let from = cluster.log_path(id);
        let to = run_dir.join(format!("node-{id}.log"));
        if let Err(e) = std::fs::copy(&from, &to) {
            eprintln!("[jepsen] cannot copy {} to {}: {e}", from.display(), to.display());
        }
    }
}

async fn run_on(
    config: &TestConfig,
    cluster: &Arc<TestCluster>,
    run_dir: &std::path::Path,
    started_at: SystemTime,
) -> Result<TestOutcome, HarnessError> {
    let net = cluster
        .network()
        .cloned()
        .ok_or_else(|| HarnessError::Setup("the cluster's links are not proxied".into()))?;
    let addrs = node_addrs(cluster)?;
    let workload = Arc::new(match config.workload {
        WorkloadKind::Register => {
            Workload::Register(RegisterWorkload::new(config.keys, config.ops_per_key))
        }
        WorkloadKind::Bank => {
            let w = BankWorkload::new(config.accounts, config.initial_balance, config.max_transfer);
            bank_setup(cluster, &w, config.recovery_timeout).await?;
            Workload::Bank(w)
        }
        WorkloadKind::Binlog => Workload::Binlog(BinlogWorkload::new(config.keys)),
    });
    let ids = cluster.ids();
    let plan = schedule::plan(
        config.seed,
        &config.nemeses,
        &config.partitions,
        &ids,
        config.time_limit,
        config.nemesis_interval,
    );
    let recorder = Arc::new(Recorder::new());
    let t0 = recorder.start();
    let stop_at = t0 + config.time_limit;
    let nemesis = Arc::new(Nemesis::new(cluster.clone(), net, recorder.clone()));
    let nemesis_task = {
        let (nemesis, plan) = (nemesis.clone(), plan.clone());
        tokio::spawn(async move { nemesis.run(&plan, t0, stop_at).await })
    };
    let workers = Arc::new(Workers {
        recorder: recorder.clone(),
        workload: workload.clone(),
        addrs: addrs.clone(),
        config: config.clone(),
        stop_at,
        budget: AtomicU64::new(config.max_ops()),
    });
    let handles: Vec<_> =
        (0..config.concurrency).map(|w| tokio::spawn(workers.clone().run(w))).collect();
    let mut last_process = 0;
    for h in handles {
        let p = h.await.map_err(|e| HarnessError::Setup(format!("worker failed: {e}")))??;
        last_process = last_process.max(p);
    }
    nemesis_task.await.map_err(|e| HarnessError::Setup(format!("nemesis failed: {e}")))?;
    let workload_end_s = recorder.now_ns() as f64 / 1e9;
    eprintln!("[jepsen] workload done after {workload_end_s:.1} s; healing");
    let heal_errors = nemesis
        .heal_all(
            config.nemeses.contains(&FaultKind::Clock),
            config.nemeses.contains(&FaultKind::Membership),
            config.recovery_timeout,
        )
        .await;
    let (final_targets, final_missing) =
        final_reads(&workload, &recorder, &addrs, last_process + 1, config.op_timeout * 4).await?;
    let binlogs = match &*workload {
        Workload::Binlog(_) => {
            Some(binlog_workload::read_binlogs(cluster, config.recovery_timeout).await?)
        }
        _ => None,
    };
    let records = recorder.snapshot();
    let end_s = recorder.now_ns() as f64 / 1e9;
    store::write(run_dir, "history.jsonl", recorder::to_jsonl(&records))?;
    store::write(run_dir, "history.edn", recorder::to_edn(&records))?;
    let (counts, by_f) = Counts::of(&records);
    let windows = nemesis.windows();
    let check_started = Instant::now();
    let checked = check(&workload, records.clone(), config, binlogs).await?;
    let check_ms = check_started.elapsed().as_millis() as u64;
    let validity = checked.validity();
    let name = config.test_name();
    let mut files = vec![
        "history.jsonl",
        "history.edn",
        "results.json",
        "latency.svg",
        "rate.svg",
        "index.html",
    ];
    let mut details = serde_json::Map::new();
    match &checked {
        Checked::Register { history, result, anomalies } => {
            let report: Json =
                serde_json::from_str(&render_json(history, result)).unwrap_or(Json::Null);
            details.insert("linearizability".into(), report);
            details.insert("anomalies".into(), json!(anomalies));
            if validity != Validity::Valid {
                store::write(run_dir, "timeline.html", render_html(history, result))?;
                files.push("timeline.html");
            }
        }
        Checked::Bank(r) => {
            details.insert("bank".into(), serde_json::to_value(r).unwrap_or(Json::Null));
        }
        Checked::Binlog(r) => {
            details.insert("binlog".into(), serde_json::to_value(r).unwrap_or(Json::Null));
        }
    }
    let points = plots::op_points(&records);
    let title = format!("{name} (seed {})", config.seed);
    write_plot(
        run_dir,
        "latency.svg",
        plots::latency_svg(&points, &windows, end_s, &format!("{title}: latency")),
    );
    write_plot(
        run_dir,
        "rate.svg",
        plots::rate_svg(&points, &windows, end_s, &format!("{title}: throughput")),
    );
    let results = json!({
        "test": name,
        "valid": match validity { Validity::Valid => json!(true), Validity::Invalid => json!(false), Validity::Unknown => json!("unknown") },
        "verdict": validity.name(),
        "workload": config.workload.name(),
        "nemesis": config.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "seed": config.seed,
        "unsafe_stale_reads": config.unsafe_stale_reads,
        "started_at": humantime::format_rfc3339_millis(started_at).to_string(),
        "workload_s": round_ms(workload_end_s),
        "duration_s": round_ms(end_s),
        "counts": counts,
        "counts_by_f": by_f,
        "nemesis_windows": windows,
        "schedule": plan,
        "heal_errors": heal_errors,
        "final_reads": {"targets": final_targets, "without_ok": final_missing},
        "check_ms": check_ms,
        "details": details,
        "config": config,
        "files": files,
    });
    let text = serde_json::to_string_pretty(&results)
        .map_err(|e| HarnessError::Setup(format!("results.json: {e}")))?;
    store::write(run_dir, "results.json", text)?;
    store::write(run_dir, "index.html", index::index_html(&results, &windows))?;
    let summary = format!(
        "{name}: {} ({} ops: {} ok, {} info, {} fail; {} nemesis windows; check {} ms) -> {}",
        validity.name().to_uppercase(),
        counts.ops,
        counts.ok,
        counts.info,
        counts.fail,
        windows.len(),
        check_ms,
        run_dir.display()
    );
    Ok(TestOutcome { validity, dir: run_dir.to_path_buf(), counts, check_ms, windows, summary })
}

/// Seconds rounded to milliseconds, for reports.
fn round_ms(seconds: f64) -> f64 {
    (seconds * 1e3).round() / 1e3
}

fn write_plot(run_dir: &std::path::Path, name: &str, svg: Result<String, String>) {
    match svg {
        Ok(svg) => {
            if let Err(e) = store::write(run_dir, name, svg) {
                eprintln!("[jepsen] {e}");
            }
        }
        Err(e) => eprintln!("[jepsen] cannot draw {name}: {e}"),
    }
}

/// The planned schedule of `config` (what `--dry-run` prints).
pub fn planned_schedule(config: &TestConfig) -> Vec<PlannedFault> {
    let ids: Vec<u64> = (1..=config.nodes as u64).collect();
    schedule::plan(
        config.seed,
        &config.nemeses,
        &config.partitions,
        &ids,
        config.time_limit,
        config.nemesis_interval,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn rec(p: u64, kind: EventType, f: &str) -> Record {
        Record {
            actor: Actor::Client(p),
            kind,
            f: f.into(),
            key: None,
            value: Json::Null,
            time_ns: 0,
            error: None,
            node: None,
        }
    }

    #[test]
    fn counts_cover_every_outcome_and_pending_operations() {
        let records = vec![
            rec(0, EventType::Invoke, "read"),
            rec(0, EventType::Ok, "read"),
            rec(1, EventType::Invoke, "write"),
            rec(1, EventType::Info, "write"),
            rec(2, EventType::Invoke, "cas"),
            rec(2, EventType::Fail, "cas"),
            rec(3, EventType::Invoke, "write"),
        ];
        let (all, by_f) = Counts::of(&records);
        assert_eq!(all, Counts { ops: 4, ok: 1, info: 1, fail: 1, pending: 1 });
        assert_eq!(by_f["write"].pending, 1);
        assert_eq!(by_f["write"].info, 1);
    }
}

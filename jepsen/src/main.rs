//! `meridian-jepsen`: command-line front end of the linearizability checker.
//!
//! `meridian-jepsen check [--model register|cas-register] FILE [--html OUT] [--json OUT]
//! [--timeout 60s] [--max-cache-entries N] [--format jsonl|edn]`
//!
//! `meridian-jepsen generate [--ops N] [--keys K] [--processes P] [--violation stale-read]
//! [--format jsonl|edn]` prints a synthetic history (see `meridian_jepsen::generate`).
//!
//! `meridian-jepsen test --workload register|bank --nemesis kill,pause,partition,clock
//! --time-limit 60 --concurrency 10 --rate 200 --seed N [...]` starts a fresh cluster,
//! runs the workload under the seeded nemesis schedule, checks the history and writes
//! `store/<test>/<timestamp>/` (see `meridian_jepsen::harness`). Exit codes as for
//! `check`: 0 valid, 1 not valid, 3 unknown, 2 the run could not be carried out.
//!
//! Prints a one-line summary on stderr and the JSON report on stdout. Exit codes (stable,
//! for scripts and CI): 0 linearizable, 1 not linearizable, 2 bad input (unreadable or
//! malformed file, unknown model, an operation the model lacks; nothing else is printed on
//! stdout, so there is never a partial verdict), 3 unknown (budget exhausted).
//! Argument errors reported by clap also exit with 2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use meridian_jepsen::generate::{GenConfig, Violation};
use meridian_jepsen::harness::{
    self, FaultKind, PartitionMode, TestConfig, Validity, WorkloadKind, MERIDIAN_BIN_ENV,
};
use meridian_jepsen::{
    check_history, parse_history, render_html, render_json, write_edn, write_jsonl, Budget, Format,
    ModelKind, Verdict,
};

/// Exit code: the history is linearizable.
const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code: the history is not linearizable.
const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit code: the input could not be checked (I/O, syntax, validation, model mismatch).
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: the budget ran out before a verdict.
const EXIT_UNKNOWN: u8 = 3;

#[derive(Parser)]
#[command(
    name = "meridian-jepsen",
    version,
    about = "Linearizability checker for key-value histories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a recorded history (JSON lines or Jepsen EDN) for linearizability.
    Check(CheckArgs),
    /// Print a synthetic cas-register history (linearizable unless --violation is given).
    Generate(GenerateArgs),
    /// Run a Meridian cluster under faults, record and check the history.
    Test(Box<TestArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    /// Per-key read/write/cas registers, checked for linearizability per key.
    Register,
    /// Multi-key Txn transfers; the total never changes, no balance goes negative.
    Bank,
    /// Writes; every replica's binlog holds each acknowledged write once, in order.
    Binlog,
}

/// Seconds as a bare number (`60`) or a humantime duration (`90s`, `2m`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  meridian-jepsen test --workload register --nemesis kill,pause,partition,clock \\\n    \
    --time-limit 60 --concurrency 10 --rate 200 --seed 1"
)]
struct TestArgs {
    /// The workload.
    #[arg(long, value_enum, default_value = "register")]
    workload: WorkloadArg,
    /// Faults, comma separated: kill, pause, partition, latency, clock, membership; or all / none.
    #[arg(long, default_value = "none")]
    nemesis: String,
    /// Partition shapes: isolate-leader, isolate-follower, halves, majority-ring, bridge; or all.
    #[arg(long, default_value = "all")]
    partitions: String,
    /// How long clients run (seconds, or e.g. 90s, 2m).
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Target rate over all workers, operations per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seed of the schedule and the operations (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5, conflicts_with = "manifest")]
    nodes: usize,
    /// Run on the layout of a cluster manifest (e.g. cluster/three-regions.toml: its
    /// nodes, regions, region latencies and Raft timing), on free ports in a temp dir.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Per-operation timeout (a write that times out is recorded as info).
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    op_timeout: Duration,
    /// Mean nemesis interval: faults last [i, 2i], gaps [i/2, i].
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    nemesis_interval: Duration,
    /// Register: keys in use at once.
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Register: operations per key before it is replaced by a fresh key.
    #[arg(long, default_value_t = 400)]
    ops_per_key: usize,
    /// Bank: accounts.
    #[arg(long, default_value_t = 5)]
    accounts: usize,
    /// Bank: initial balance of each account.
    #[arg(long, default_value_t = 100)]
    balance: i64,
    /// Bank: largest transfer.
    #[arg(long, default_value_t = 5)]
    max_transfer: i64,
    /// Start every node with --unsafe-stale-reads (the harness must then catch stale reads).
    #[arg(long)]
    unsafe_stale_reads: bool,
    /// The meridian binary (default: $MERIDIAN_BIN, else next to this executable).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Store root.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Budget of the check.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    check_timeout: Duration,
    /// Test name (default <workload>-<nemeses>).
    #[arg(long)]
    name: Option<String>,
    /// Print the nemesis schedule as JSON and exit without running anything.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ViolationArg {
    /// A read returns a value overwritten before it began.
    StaleRead,
    /// A CAS succeeds from a value overwritten before it began.
    StaleCas,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Operations to invoke.
    #[arg(long, default_value_t = 1_000)]
    ops: usize,
    /// Keys (0: a single register without keys).
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 10)]
    processes: usize,
    /// Chance per 1000 that an operation ends with info.
    #[arg(long, default_value_t = 5)]
    info_per_mille: u64,
    /// Seed of the random source.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Plant this violation.
    #[arg(long, value_enum)]
    violation: Option<ViolationArg>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: FormatArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    /// Read/write register.
    Register,
    /// Read/write/compare-and-set register.
    CasRegister,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// One JSON object per line.
    Jsonl,
    /// Jepsen / Knossos EDN.
    Edn,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The history file.
    file: PathBuf,
    /// Sequential model; multi-key histories are checked per key automatically.
    #[arg(long, value_enum, default_value = "cas-register")]
    model: ModelArg,
    /// File format; default: from the extension (.jsonl/.json/.edn), else from the content.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,
    /// Also write the JSON report here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Time budget for the whole check (e.g. 500ms, 60s, 5m); "unknown" when exceeded.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Memoised configurations one key's search may hold (bounds memory; ~190 B each).
    #[arg(long, default_value_t = meridian_jepsen::check::DEFAULT_MAX_CACHE_ENTRIES)]
    max_cache_entries: usize,
}

/// Outcome of a run: a verdict, or input that could not be checked.
enum Outcome {
    Verdict(Verdict),
    BadInput(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Check(args) => args,
        Command::Generate(args) => {
            print!("{}", generate(&args));
            return ExitCode::from(EXIT_LINEARIZABLE);
        }
        Command::Test(args) => {
            return match test(*args) {
                Ok(code) => ExitCode::from(code),
                Err(err) => {
                    eprintln!("meridian-jepsen: {err:#}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
    };
    match run(&args) {
        Ok(Outcome::Verdict(verdict)) => ExitCode::from(match verdict {
            Verdict::Linearizable => EXIT_LINEARIZABLE,
            Verdict::NotLinearizable => EXIT_NOT_LINEARIZABLE,
            Verdict::Unknown => EXIT_UNKNOWN,
        }),
        Ok(Outcome::BadInput(err)) | Err(err) => {
            eprintln!("meridian-jepsen: {err:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn test_config(args: TestArgs) -> anyhow::Result<TestConfig> {
    let workload = match args.workload {
        WorkloadArg::Register => WorkloadKind::Register,
        WorkloadArg::Bank => WorkloadKind::Bank,
        WorkloadArg::Binlog => WorkloadKind::Binlog,
    };
    let binary = if args.dry_run {
        args.binary.clone().unwrap_or_else(|| PathBuf::from("meridian"))
    } else {
        harness::locate_meridian(args.binary.as_deref())?
    };
    let mut c = TestConfig::new(workload, binary);
    c.name = args.name.unwrap_or_default();
    c.nemeses = FaultKind::parse_list(&args.nemesis).map_err(anyhow::Error::msg)?;
    c.partitions = PartitionMode::parse_list(&args.partitions).map_err(anyhow::Error::msg)?;
    c.time_limit = args.time_limit;
    c.concurrency = args.concurrency;
    c.rate = args.rate;
    c.seed = args.seed.unwrap_or_else(rand::random);
    c.nodes = args.nodes;
    if let Some(path) = args.manifest {
        let m = meridian::cluster::manifest::Manifest::load(&path)
            .map_err(|e| anyhow::anyhow!("--manifest: {e}"))?;
        c.nodes = m.nodes.len();
        c.layout = Some(path);
    }
    c.op_timeout = args.op_timeout;
    c.nemesis_interval = args.nemesis_interval;
    c.keys = args.keys;
    c.ops_per_key = args.ops_per_key;
    c.accounts = args.accounts;
    c.initial_balance = args.balance;
    c.max_transfer = args.max_transfer;
    c.unsafe_stale_reads = args.unsafe_stale_reads;
    c.store = args.store;
    c.check_timeout = args.check_timeout;
    c.validate()?;
    Ok(c)
}

fn test(args: TestArgs) -> anyhow::Result<u8> {
    let dry_run = args.dry_run;
    let config = test_config(args)?;
    if dry_run {
        let schedule = harness::runner::planned_schedule(&config);
        println!("{}", serde_json::to_string_pretty(&schedule)?);
        return Ok(EXIT_LINEARIZABLE);
    }
    eprintln!(
        "[jepsen] seed {} (rerun with --seed {} for the same schedule); binary {} ({MERIDIAN_BIN_ENV})",
        config.seed,
        config.seed,
        config.binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let outcome = runtime.block_on(async {
        // On SIGINT / SIGTERM the run is abandoned; leaving this block drops the
        // runtime, its tasks and with them the cluster, whose nodes are then killed.
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install a SIGTERM handler")?;
        tokio::select! {
            outcome = harness::run_test(config) => Ok(outcome?),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT): run abandoned")),
            _ = sigterm.recv() => Err(anyhow::anyhow!("terminated (SIGTERM): run abandoned")),
        }
    })?;
    println!("{}", outcome.summary);
    Ok(match outcome.validity {
        Validity::Valid => EXIT_LINEARIZABLE,
        Validity::Invalid => EXIT_NOT_LINEARIZABLE,
        Validity::Unknown => EXIT_UNKNOWN,
    })
}

fn generate(args: &GenerateArgs) -> String {
    let history = meridian_jepsen::generate::generate(&GenConfig {
        ops: args.ops,
        keys: args.keys,
        processes: args.processes,
        info_per_mille: args.info_per_mille,
        seed: args.seed,
        violation: args.violation.map(|v| match v {
            ViolationArg::StaleRead => Violation::StaleRead,
            ViolationArg::StaleCas => Violation::StaleCas,
        }),
    });
    match args.format {
        FormatArg::Jsonl => write_jsonl(&history),
        FormatArg::Edn => write_edn(&history),
    }
}

fn run(args: &CheckArgs) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let format = match args.format {
        Some(FormatArg::Jsonl) => Format::Jsonl,
        Some(FormatArg::Edn) => Format::Edn,
        None => Format::from_path(&args.file).unwrap_or_else(|| Format::sniff(&text)),
    };
    let history = match parse_history(&text, format) {
        Ok(h) => h,
        Err(e) => {
            let err = anyhow::Error::new(e).context(format!("{}", args.file.display()));
            return Ok(Outcome::BadInput(err));
        }
    };
    let model = match args.model {
        ModelArg::Register => ModelKind::Register,
        ModelArg::CasRegister => ModelKind::CasRegister,
    };
    let budget = Budget { timeout: Some(args.timeout), max_cache_entries: args.max_cache_entries };
    let result = match check_history(&history, model, budget) {
        Ok(r) => r,
        Err(e) => {
            let err = anyhow::Error::new(e).context(format!("{}", args.file.display()));
            return Ok(Outcome::BadInput(err));
        }
    };
    let json = render_json(&history, &result);
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, render_html(&history, &result))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failing = result.keys.iter().filter(|k| k.verdict == Verdict::NotLinearizable).count();
    eprintln!(
        "{}: {} ({} operations, {} keys, {} not linearizable, {} ms)",
        args.file.display(),
        result.verdict.name(),
        result.op_count,
        result.keys.len(),
        failing,
        result.elapsed_ms
    );
    Ok(Outcome::Verdict(result.verdict))
}

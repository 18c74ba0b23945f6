//! `meridian-bench`: Meridian and etcd v3 side by side, through one load generator
//! (`meridian::client::bench`), so both stores run the same workloads, key sequences
//! and bounds.
//!
//! - `compare`: start a local etcd cluster and a local Meridian cluster, run the matrix
//!   interleaved, write `results.{json,md}` and SVG plots (benches/vs-etcd.sh wraps it);
//! - `run`: one workload against already-running endpoints of either store (for
//!   profiling one side);
//! - `report`: re-render the table and plots from a `results.json`.
//!
//! This is its own crate so that etcd-client (and its protoc build) stays out of the
//! node's crate: node rebuilds stay small (DESIGN.md §10).

mod compare;
mod etcd;
mod resources;
mod results;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian::cli::kv::parse_duration;
use meridian::client::bench::{run_load, BenchConfig, DEFAULT_MAX_OPS};
use meridian::client::{Client, ClientConfig};

use crate::compare::{Case, CompareConfig};

/// Worker threads of the load generator's runtime (leave cores to the clusters).
pub const BENCH_WORKER_THREADS: usize = 2;

#[derive(Debug, Parser)]
#[command(name = "meridian-bench", about = "Meridian vs etcd, measured side by side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start both clusters, run the matrix interleaved, write results to --out.
    Compare(CompareArgs),
    /// Run one workload against running endpoints of one store; print JSON.
    Run(RunArgs),
    /// Re-render results.md and the plots from --out/results.json.
    Report {
        /// Directory holding results.json.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// Concurrency of the CDF plots.
        #[arg(long, default_value_t = 64)]
        curve_concurrency: usize,
    },
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// The meridian binary [default: `meridian` beside this executable].
    #[arg(long)]
    meridian_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Workloads, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "put,get-lin,get-ser,cas,cas-hot,txn,mixed"
    )]
    workloads: Vec<String>,
    /// Concurrency sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// Concurrency of the scaling curves and CDF plots.
    #[arg(long, default_value_t = 64)]
    curve_concurrency: usize,
    /// Value sizes, bytes (100 is the base; the others form the value-size curve).
    #[arg(long, value_delimiter = ',', default_value = "100,1024,65536")]
    value_sizes: Vec<usize>,
    /// Keys of the base scenario.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Keys loaded before measuring RSS and disk and the key-count curve (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    load_keys: u64,
    /// Cluster sizes (odd); the first runs the full matrix, the rest the curves.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    nodes: Vec<usize>,
    /// Measured time per point.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Warmup per point.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Clients (connections) per store.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Output directory.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Where the clusters keep data and logs [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Which store the endpoints belong to.
    #[arg(long, value_parser = ["etcd", "meridian"])]
    target: String,
    /// Workload (put, get-lin, get-ser, cas, cas-hot, txn, mixed).
    #[arg(long)]
    workload: String,
    /// Endpoints, host:port, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Concurrent tasks.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Clients (connections).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured time.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Warmup.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Skip the preload of get, txn and mixed runs.
    #[arg(long)]
    no_preload: bool,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BENCH_WORKER_THREADS)
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let meridian_binary = match args.meridian_bin {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .join("meridian"),
    };
    anyhow::ensure!(
        meridian_binary.is_file(),
        "no meridian binary at {}",
        meridian_binary.display()
    );
    // Nodes run with their data dir as working directory: pass an absolute path.
    let meridian_binary = std::fs::canonicalize(&meridian_binary)?;
    anyhow::ensure!(
        args.etcd_bin.is_file(),
        "no etcd binary at {} (apt-get install etcd-server)",
        args.etcd_bin.display()
    );
    let config = CompareConfig {
        meridian_binary,
        etcd_binary: args.etcd_bin,
        workloads: args.workloads,
        concurrency: args.concurrency,
        curve_concurrency: args.curve_concurrency,
        value_sizes: args.value_sizes,
        keys: args.keys,
        load_keys: args.load_keys,
        nodes: args.nodes,
        duration: args.duration,
        warmup: args.warmup,
        clients: args.clients,
        work_dir: args.work_dir.unwrap_or_else(std::env::temp_dir),
        seed: args.seed,
    };
    let out = args.out;
    let curve = config.curve_concurrency;
    let results = runtime()?.block_on(compare::run(&config, |partial| {
        // Partial results after every point: a run cut short still leaves a table.
        if let Err(e) = results::write_all(partial, &out, curve) {
            eprintln!("warning: cannot write partial results: {e:#}");
        }
    }))?;
    results::write_all(&results, &out, curve)?;
    print!("{}", results::markdown(&results));
    eprintln!("results in {}", out.display());
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let case = Case::parse(&args.workload)?;
    let mut client = ClientConfig::with_endpoints(args.endpoints.clone());
    client.retry.jitter_seed = Some(args.seed);
    let config = BenchConfig {
        client: client.clone(),
        workload: case.workload,
        concurrency: args.concurrency,
        clients: args.clients.clamp(1, args.concurrency.max(1)),
        duration: args.duration,
        warmup: args.warmup,
        max_ops: DEFAULT_MAX_OPS,
        keys: args.keys,
        value_size: args.value_size,
        consistency: case.consistency,
        key_prefix: "bench/".into(),
        seed: args.seed,
        preload: !args.no_preload,
    };
    config.validate()?;
    let report = runtime()?.block_on(async {
        if args.target == "etcd" {
            let leader = etcd::find_leader(&args.endpoints).await?;
            let mut pool = Vec::with_capacity(config.clients);
            for _ in 0..config.clients {
                pool.push(etcd::EtcdTarget::connect(&leader, &args.endpoints).await?);
            }
            Ok::<_, anyhow::Error>(run_load(&config, "etcd", &pool).await?)
        } else {
            let pool = (0..config.clients)
                .map(|_| Client::connect(client.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(run_load(&config, "meridian", &pool).await?)
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn report(out: PathBuf, curve_concurrency: usize) -> anyhow::Result<()> {
    let path = out.join("results.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let results: results::Results =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    results::write_all(&results, &out, curve_concurrency)?;
    print!("{}", results::markdown(&results));
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Compare(args) => compare(args),
        Command::Run(args) => run(args),
        Command::Report { out, curve_concurrency } => report(out, curve_concurrency),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

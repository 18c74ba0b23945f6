//! `meridian bench`: load-test a running cluster. Thin: parse flags into a
//! [`BenchConfig`], run [`run_bench`] on a multi-threaded runtime, print the
//! [`BenchReport`] as text or JSON (`--json`). Exit 1 when every op failed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::kv::{client_config, client_error, parse_duration, ConsistencyArg};
use super::{CliError, CliResult};
use crate::client::bench::{run_bench, BenchConfig, BenchReport, Workload, DEFAULT_MAX_OPS};

/// Worker threads of the bench runtime (the load generator is light; leave cores to
/// a local cluster).
pub const BENCH_WORKER_THREADS: usize = 2;

/// The workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadArg {
    /// Unconditional writes.
    Put,
    /// Reads of preloaded keys.
    Get,
    /// Read the version, then compare-and-swap, each task on its own keys.
    Cas,
    /// Read the version, then compare-and-swap, every task on one key (conflicts
    /// counted apart).
    CasHot,
    /// Transactions: compare 4 preloaded keys' versions, put all 4.
    Txn,
    /// 90% reads, 10% writes on preloaded keys.
    Mixed,
}

impl From<WorkloadArg> for Workload {
    fn from(w: WorkloadArg) -> Self {
        match w {
            WorkloadArg::Put => Workload::Put,
            WorkloadArg::Get => Workload::Get,
            WorkloadArg::Cas => Workload::Cas,
            WorkloadArg::CasHot => Workload::CasHot,
            WorkloadArg::Txn => Workload::Txn,
            WorkloadArg::Mixed => Workload::Mixed,
        }
    }
}

/// Arguments of `meridian bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub workload: WorkloadArg,
    /// API endpoints, comma-separated host:port [default: 127.0.0.1:7001,7002,7003].
    #[arg(long, env = "MERIDIAN_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Client configuration file (TOML; see examples/client.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TLS and token flags.
    #[command(flatten)]
    pub security: super::kv::SecurityArgs,
    /// Concurrent tasks.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Clients shared by the tasks (each has its own HTTP/2 connection per endpoint);
    /// capped at --concurrency.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Measured run time (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Stop after this many ops in total (warmup included).
    #[arg(long, default_value_t = DEFAULT_MAX_OPS)]
    pub max_ops: u64,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Read consistency (get, mixed, and the read half of cas).
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
    /// Prefix of every key.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// RNG seed (default: random; printed in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overall deadline of each op, retries included (e.g. 2s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Skip writing every key before get, txn and mixed runs (they are loaded).
    #[arg(long)]
    pub no_preload: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `meridian bench`.
pub fn run(args: BenchArgs) -> CliResult {
    let client =
        client_config(&args.endpoints, args.config.as_deref(), args.timeout, &args.security)?;
    let config = BenchConfig {
        client,
        workload: args.workload.into(),
        concurrency: args.concurrency,
        clients: args.clients.min(args.concurrency).max(1),
        duration: args.duration,
        warmup: args.warmup,
        max_ops: args.max_ops,
        keys: args.keys,
        value_size: args.value_size,
        consistency: args.consistency.into(),
        key_prefix: args.key_prefix,
        seed: args.seed.unwrap_or_else(rand::random),
        preload: !args.no_preload,
    };
    config.validate().map_err(CliError::bad_input)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(BENCH_WORKER_THREADS)
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(run_bench(config)).map_err(client_error)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if report.ops == 0 && report.errors > 0 {
        return Err(CliError::failure(anyhow!("every op failed ({})", error_list(&report))));
    }
    Ok(())
}

fn error_list(report: &BenchReport) -> String {
    let parts: Vec<String> =
        report.errors_by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
    parts.join(", ")
}

/// The human-readable report.
pub fn render(r: &BenchReport) -> String {
    let l = &r.latency_ms;
    let mut out = format!(
        "{}: {} ops in {:.2} s = {:.1} ops/s\n  concurrency {}, clients {}, {} keys, {}-byte values, \
         {}, seed {}\n  latency ms: p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}  mean {:.3}\n",
        r.workload,
        r.ops,
        r.elapsed_s,
        r.ops_per_sec,
        r.concurrency,
        r.clients,
        r.keys,
        r.value_size,
        r.consistency,
        r.seed,
        l.p50,
        l.p99,
        l.p999,
        l.max,
        l.mean,
    );
    if r.errors > 0 {
        out.push_str(&format!("  errors: {} ({})\n", r.errors, error_list(r)));
        for message in r.error_samples.values() {
            out.push_str(&format!("    e.g. {message}\n"));
        }
    } else {
        out.push_str("  errors: 0\n");
    }
    if r.workload.starts_with("cas") || r.workload == "txn" {
        out.push_str(&format!("  conflicts: {}\n", r.conflicts));
    }
    let c = &r.client;
    out.push_str(&format!(
        "  client: {} retries, {} redirects, {} breaker opens, {} indeterminate\n",
        c.retries, c.redirects, c.breaker_opens, c.indeterminate_calls
    ));
    if r.stopped_by == crate::client::bench::StopReason::MaxOps {
        out.push_str("  stopped by --max-ops before the duration ended\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn bench_flags_parse() {
        let cli = Cli::try_parse_from([
            "meridian",
            "bench",
            "cas",
            "--concurrency",
            "8",
            "--duration",
            "2s",
            "--keys",
            "50",
            "--consistency",
            "serializable",
            "--json",
            "--warmup",
            "0s",
            "--clients",
            "2",
        ])
        .expect("parses");
        let Command::Bench(args) = cli.command else { panic!("not bench") };
        assert_eq!(args.workload, WorkloadArg::Cas);
        assert_eq!((args.concurrency, args.clients, args.keys), (8, 2, 50));
        assert_eq!(args.duration, Duration::from_secs(2));
        assert_eq!(args.warmup, Duration::ZERO);
        assert!(args.json);
    }
}

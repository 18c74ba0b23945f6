//! `meridian check`: the consistency checker (see [`crate::checker`]). Thin: parse
//! flags, load the invariants file, run the checker, print findings and a summary.
//!
//! Output: each finding as a human line on stdout (`P1 divergence at 7.0 [node 2]:
//! ...`), or a JSON line with `--json`; `--findings FILE` appends JSON lines to FILE
//! (fsynced). A bounded run (`--once`, `--until-revision`) ends with a summary line
//! (JSON with `--json`). Exit codes: 0 no finding (or stopped by a signal), 1 findings
//! in a bounded run or an operational failure, 2 bad input.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::kv::{client_config, parse_duration};
use super::{CliError, CliResult};
use crate::checker::invariant::load_invariants;
use crate::checker::run::{StopAt, DEFAULT_CATCH_UP_TIMEOUT};
use crate::checker::{run, CheckOptions, CheckOutcome, CheckerError};

/// Arguments of `meridian check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// TLS and token flags.
    #[command(flatten)]
    pub security: super::kv::SecurityArgs,
    /// Every replica's API endpoint, comma-separated host:port (each is subscribed to
    /// directly).
    #[arg(long, env = "MERIDIAN_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// State directory: cursors per replica, rule state, compensation journal.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Invariants file (TOML, `[[invariant]] kind = "sum" ...`).
    #[arg(long, value_name = "FILE")]
    pub invariants: Option<PathBuf>,
    /// Append findings as JSON lines to FILE (fsynced).
    #[arg(long, value_name = "FILE")]
    pub findings: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9105).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Catch up with every replica's applied revision at start, report, exit (0: no
    /// finding, 1: findings).
    #[arg(long, conflicts_with = "until_revision")]
    pub once: bool,
    /// Check every replica through revision N, then exit like --once.
    #[arg(long, value_name = "N")]
    pub until_revision: Option<u64>,
    /// Grace after a saga's deadline before it is compensated.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub saga_grace: Duration,
    /// Deadline of --once / --until-revision.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Do not print findings on stdout (only to --findings).
    #[arg(long)]
    pub quiet: bool,
    /// JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Client configuration file (TOML; timeouts for status, scans, AbortSaga).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Test hook: after AbortSaga answers, stall instead of recording it (to kill the
    /// checker mid-compensation).
    #[arg(long, hide = true)]
    pub test_stall_after_abort: bool,
}

/// Run `meridian check`.
pub fn run_check(args: CheckArgs) -> CliResult {
    let endpoints: Vec<String> =
        args.endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    if endpoints.is_empty() {
        return Err(CliError::bad_input(anyhow!("--endpoints names no endpoint")));
    }
    let client = client_config(&endpoints, args.config.as_deref(), None, &args.security)?;
    let invariants = match &args.invariants {
        Some(path) => load_invariants(path).map_err(CliError::bad_input)?,
        None => Vec::new(),
    };
    let stop = match (args.once, args.until_revision) {
        (true, _) => StopAt::Once,
        (false, Some(0)) => {
            return Err(CliError::bad_input(anyhow!("--until-revision must be >= 1")))
        }
        (false, Some(n)) => StopAt::Revision(n),
        (false, None) => StopAt::Never,
    };
    if args.timeout.is_some_and(|t| t.is_zero()) {
        return Err(CliError::bad_input(anyhow!("--timeout must be positive")));
    }
    let options = CheckOptions {
        invariants,
        findings_file: args.findings.clone(),
        findings_stdout: !args.quiet,
        json: args.json,
        metrics_addr: args.metrics_addr,
        stop,
        catch_up_timeout: args.timeout.unwrap_or(DEFAULT_CATCH_UP_TIMEOUT),
        saga_grace_ms: u64::try_from(args.saga_grace.as_millis()).unwrap_or(u64::MAX),
        client,
        stall_after_abort: args.test_stall_after_abort,
        ..CheckOptions::new(endpoints, args.state.clone())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(run(options, shutdown_signal())).map_err(checker_error)?;
    if stop == StopAt::Never {
        return Ok(());
    }
    print_summary(&outcome, args.json);
    if outcome.total_findings() > 0 {
        return Err(CliError::failure(anyhow!(
            "{} finding(s); see above{}",
            outcome.total_findings(),
            args.findings.as_ref().map_or(String::new(), |p| format!(" and {}", p.display()))
        )));
    }
    Ok(())
}

fn checker_error(e: CheckerError) -> CliError {
    match e {
        CheckerError::Invalid(_) | CheckerError::State { .. } => CliError::bad_input(e),
        _ => CliError::failure(e),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_summary(outcome: &CheckOutcome, json: bool) {
    let cursors: serde_json::Map<String, serde_json::Value> = outcome
        .cursors
        .iter()
        .map(|(e, c)| (e.clone(), c.map_or(serde_json::Value::Null, |p| p.to_string().into())))
        .collect();
    let levels: serde_json::Map<String, serde_json::Value> =
        outcome.findings.iter().map(|(l, n)| (l.as_str().to_string(), (*n).into())).collect();
    if json {
        let line = serde_json::json!({
            "summary": true,
            "events": outcome.events,
            "findings": levels,
            "compensated_sagas": outcome.compensated_sagas,
            "cursors": cursors,
            "lag_ms": {"p50": outcome.lag.p50_ms, "p99": outcome.lag.p99_ms, "max": outcome.lag.max_ms},
        });
        println!("{line}");
    } else {
        let levels: Vec<String> =
            outcome.findings.iter().map(|(l, n)| format!("{}={n}", l.as_str())).collect();
        let cursors: Vec<String> = outcome
            .cursors
            .iter()
            .map(|(e, c)| format!("{e}@{}", c.map_or("-".to_string(), |p| p.to_string())))
            .collect();
        println!(
            "checked {} event(s); findings: {}; compensated sagas: {}; lag p50/p99/max {}/{}/{} ms; \
             cursors: {}",
            outcome.events,
            if levels.is_empty() { "none".to_string() } else { levels.join(" ") },
            outcome.compensated_sagas,
            outcome.lag.p50_ms,
            outcome.lag.p99_ms,
            outcome.lag.max_ms,
            cursors.join(" ")
        );
    }
}

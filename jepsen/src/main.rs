//! `meridian-jepsen`: command-line front end of the linearizability checker.
//!
//! `meridian-jepsen check [--model register|cas-register] FILE [--html OUT] [--json OUT]
//! [--timeout 60s] [--max-cache-entries N] [--format jsonl|edn]`
//!
//! `meridian-jepsen generate [--ops N] [--keys K] [--processes P] [--violation stale-read]
//! [--format jsonl|edn]` prints a synthetic history (see `meridian_jepsen::generate`).
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

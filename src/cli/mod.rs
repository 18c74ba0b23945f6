//! Command-line interface: thin. Each subcommand parses its arguments, calls one
//! library function and prints the result. Exit codes: 0 success, 1 operational
//! failure (unavailable, timeout, not found where it matters), 2 bad input (usage
//! errors, INVALID_ARGUMENT / FAILED_PRECONDITION from the server).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod bench;
pub mod binlog;
pub mod certs;
pub mod check;
pub mod cluster;
pub mod completions;
pub mod help;
pub mod kv;
pub mod membership;
pub mod node;

/// Exit code for invalid input or usage.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for an operational failure.
pub const EXIT_FAILURE: u8 = 1;

/// An error at the CLI edge, carrying the exit code to use.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code (1 or 2).
    pub code: u8,
    /// The error.
    pub error: anyhow::Error,
}

impl CliError {
    /// Bad input (exit 2).
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Self { code: EXIT_BAD_INPUT, error: error.into() }
    }
    /// Operational failure (exit 1).
    pub fn failure(error: impl Into<anyhow::Error>) -> Self {
        Self { code: EXIT_FAILURE, error: error.into() }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::failure(e)
    }
}

/// Result of a CLI command.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Meridian: a strongly consistent, multi-region key-value store.
#[derive(Debug, Parser)]
#[command(name = "meridian", version = crate::VERSION, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node (one process per node).
    Node(node::NodeArgs),
    /// Start, inspect and stop a local cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Read and write keys.
    Kv(kv::KvArgs),
    /// Load-test a running cluster.
    Bench(bench::BenchArgs),
    /// Check every replica's binlog continuously: divergence, continuity, invariants,
    /// stuck sagas (compensated).
    Check(check::CheckArgs),
    /// Stream a replica's binlog.
    Binlog(binlog::BinlogArgs),
    /// Open, commit, abort and inspect sagas (multi-step writes with compensation).
    Saga(binlog::SagaArgs),
    /// Development certificates for TLS (CA, nodes, clients).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(completions::ManArgs),
}

/// The full command definition: the derived [`Cli`] plus the examples of
/// [`help::EXAMPLES`] under every command's help. Parsing, completions and man pages
/// all use it.
pub fn command() -> clap::Command {
    help::with_examples(Cli::command())
}

/// Parse the process arguments with [`command`].
fn parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

/// Parse the command line, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_BAD_INPUT),
            };
        }
    };
    let result = match cli.command {
        Command::Node(args) => node::run(args),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Kv(args) => kv::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Check(args) => check::run_check(args),
        Command::Binlog(args) => binlog::run(args),
        Command::Saga(args) => binlog::run_saga(args),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Completions(args) => completions::run_completions(args, command()),
        Command::Man(args) => completions::run_man(args, command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}

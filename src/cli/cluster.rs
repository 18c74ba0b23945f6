//! `meridian cluster` (being written).

use super::{CliError, CliResult};

/// `meridian cluster` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster in the foreground.
    Up,
}

/// Run a `meridian cluster` subcommand.
pub fn run(_cmd: ClusterCommand) -> CliResult {
    Err(CliError::failure(anyhow::anyhow!("meridian cluster is not built yet")))
}

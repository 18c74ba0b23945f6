//! `meridian node` (being written).

use super::{CliError, CliResult};

/// Arguments of `meridian node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {}

/// Run a node until SIGINT/SIGTERM.
pub fn run(_args: NodeArgs) -> CliResult {
    Err(CliError::failure(anyhow::anyhow!("meridian node is not built yet")))
}

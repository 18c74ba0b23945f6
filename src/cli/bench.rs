//! `meridian bench` (being written).

use super::{CliError, CliResult};

/// Arguments of `meridian bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Run `meridian bench`.
pub fn run(_args: BenchArgs) -> CliResult {
    Err(CliError::failure(anyhow::anyhow!("meridian bench is not built yet")))
}

//! `meridian kv` (being written).

use super::{CliError, CliResult};

/// Arguments of `meridian kv`.
#[derive(Debug, clap::Args)]
pub struct KvArgs {}

/// Run `meridian kv`.
pub fn run(_args: KvArgs) -> CliResult {
    Err(CliError::failure(anyhow::anyhow!("meridian kv is not built yet")))
}

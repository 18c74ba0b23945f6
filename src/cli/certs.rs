//! `meridian certs init`: a development CA plus node and client certificates (rcgen),
//! in the layout `meridian node --tls-dir`, `meridian cluster up --tls` and the client
//! flag `--tls-dir` expect (see [`crate::cluster::certs`]).

use std::path::PathBuf;

use anyhow::anyhow;

use super::{CliError, CliResult};
use crate::cluster::certs::{self, CertsPlan};

/// Most nodes `--nodes` may ask for.
pub const MAX_NODE_CERTS: u64 = 64;

/// `meridian certs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create (or extend) a development CA and certificates.
    Init(InitArgs),
}

/// Arguments of `meridian certs init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Target directory (created if missing).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Node certificates node-1..node-N.
    #[arg(long, conflicts_with = "node_names")]
    pub nodes: Option<u64>,
    /// Node certificate names (node-<id>), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub node_names: Vec<String>,
    /// Client certificate names, comma-separated [default: admin].
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Replace an existing CA in --dir (default: reuse it).
    #[arg(long)]
    pub new_ca: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `meridian certs`.
pub fn run(cmd: CertsCommand) -> CliResult {
    let CertsCommand::Init(args) = cmd;
    let nodes = match args.nodes {
        Some(n) if n == 0 || n > MAX_NODE_CERTS => {
            return Err(CliError::bad_input(anyhow!("--nodes must be 1..={MAX_NODE_CERTS}")))
        }
        Some(n) => (1..=n).map(|i| format!("node-{i}")).collect(),
        None if args.node_names.is_empty() => (1..=3).map(|i| format!("node-{i}")).collect(),
        None => args.node_names.clone(),
    };
    let clients = if args.clients.is_empty() {
        vec![certs::ADMIN_CLIENT.to_string()]
    } else {
        args.clients.clone()
    };
    let plan = CertsPlan { dir: args.dir.clone(), nodes, clients, new_ca: args.new_ca };
    let report = certs::init(&plan).map_err(|e| match e {
        certs::CertsError::Invalid(_) => CliError::bad_input(e),
        other => CliError::failure(other),
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(CliError::failure)?);
        return Ok(());
    }
    let ca = if report.created_ca { "created" } else { "reused" };
    println!("CA {ca}: {}", report.ca.display());
    for c in &report.issued {
        println!("{:<12} {}  {}", c.name, c.cert.display(), c.key.display());
    }
    Ok(())
}

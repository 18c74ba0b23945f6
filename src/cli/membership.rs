//! `meridian cluster members|add-learner|remove-learner|change-membership|
//! transfer-leader`: membership and leadership of a running cluster, through the
//! client library (calls go to the leader; followers redirect).
//!
//! Endpoints: `--endpoints`, else `MERIDIAN_ENDPOINTS`, else the nodes recorded in
//! `<data-dir>/cluster.json` of a local cluster, else the default local endpoints.
//! Exit codes: 0 ok, 1 operational failure, 2 bad input (including a membership
//! change the leader refuses as invalid).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::json;

use super::kv::{client_config, client_error, parse_duration};
use super::{CliError, CliResult};
use crate::client::Client;
use crate::cluster::state::ClusterState;
use crate::pb::v1 as pb;

/// Where and how to reach the cluster.
#[derive(Debug, clap::Args)]
pub struct AdminTarget {
    /// API endpoints, comma-separated host:port.
    #[arg(long, env = "MERIDIAN_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Data root of a local cluster (its cluster.json lists the nodes) [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Overall deadline, retries included (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS and token flags.
    #[command(flatten)]
    pub security: super::kv::SecurityArgs,
}

/// Arguments of `meridian cluster add-learner`.
#[derive(Debug, clap::Args)]
pub struct AddLearnerArgs {
    /// Node id (>= 1, not yet a member or a learner to update).
    pub id: u64,
    /// The node's API address (host:port).
    #[arg(long)]
    pub api_addr: String,
    /// The node's Raft address (host:port).
    #[arg(long)]
    pub raft_addr: String,
    /// The node's region label.
    #[arg(long, default_value = "local")]
    pub region: String,
    /// Return at once instead of waiting until the learner caught up.
    #[arg(long)]
    pub no_wait: bool,
    /// Where and how to reach the cluster.
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Arguments of `meridian cluster remove-learner`.
#[derive(Debug, clap::Args)]
pub struct RemoveLearnerArgs {
    /// The learner's node id.
    pub id: u64,
    /// Where and how to reach the cluster.
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Arguments of `meridian cluster change-membership`.
#[derive(Debug, clap::Args)]
pub struct ChangeMembershipArgs {
    /// The new voter set, comma separated (each must already be a member).
    #[arg(long, value_delimiter = ',', required = true)]
    pub voters: Vec<u64>,
    /// Keep removed voters as learners instead of removing them.
    #[arg(long)]
    pub retain: bool,
    /// Where and how to reach the cluster.
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Arguments of `meridian cluster transfer-leader`.
#[derive(Debug, clap::Args)]
pub struct TransferLeaderArgs {
    /// The voter that should lead.
    pub to: u64,
    /// Where and how to reach the cluster.
    #[command(flatten)]
    pub target: AdminTarget,
}

fn connect(target: &AdminTarget) -> CliResult<Client> {
    let mut endpoints = target.endpoints.clone();
    if endpoints.iter().all(|e| e.trim().is_empty()) {
        let root = target.data_dir.clone().unwrap_or_else(|| PathBuf::from("./data"));
        if let Some(state) = ClusterState::read(&root).map_err(CliError::bad_input)? {
            endpoints = state.nodes.iter().map(|n| n.api_addr.clone()).collect();
        } else if target.data_dir.is_some() {
            return Err(CliError::bad_input(anyhow!(
                "no cluster.json under {}: is a cluster running there?",
                root.display()
            )));
        }
    }
    let config = client_config(&endpoints, None, target.timeout, &target.security)?;
    Client::connect(config).map_err(CliError::bad_input)
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow!("cannot start the async runtime: {e}")))
}

/// `meridian cluster members`.
pub fn members(target: AdminTarget) -> CliResult {
    let client = connect(&target)?;
    let m = runtime()?.block_on(client.members()).map_err(client_error)?;
    if target.json {
        let list: Vec<_> = m
            .members
            .iter()
            .map(|n| {
                json!({"id": n.id, "region": n.region, "voter": n.voter,
                       "api_addr": n.api_addr, "raft_addr": n.raft_addr,
                       "leader": n.id == m.leader_id})
            })
            .collect();
        println!("{}", json!({"leader_id": m.leader_id, "members": list}));
        return Ok(());
    }
    println!("{:<4} {:<10} {:<8} {:<22} RAFT", "ID", "REGION", "ROLE", "API");
    for n in &m.members {
        let role = match (n.id == m.leader_id, n.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        println!("{:<4} {:<10} {:<8} {:<22} {}", n.id, n.region, role, n.api_addr, n.raft_addr);
    }
    Ok(())
}

/// `meridian cluster add-learner`.
pub fn add_learner(args: AddLearnerArgs) -> CliResult {
    if args.id == 0 {
        return Err(CliError::bad_input(anyhow!("node id must be >= 1")));
    }
    let client = connect(&args.target)?;
    let member = pb::Member {
        id: args.id,
        api_addr: args.api_addr,
        raft_addr: args.raft_addr,
        region: args.region,
        voter: false,
    };
    let r = runtime()?
        .block_on(client.add_learner(member, !args.no_wait, args.target.timeout))
        .map_err(client_error)?;
    report(args.target.json, "learner added", args.id, r.revision);
    Ok(())
}

/// `meridian cluster remove-learner`.
pub fn remove_learner(args: RemoveLearnerArgs) -> CliResult {
    let client = connect(&args.target)?;
    let r = runtime()?
        .block_on(client.remove_learner(args.id, args.target.timeout))
        .map_err(client_error)?;
    report(args.target.json, "learner removed", args.id, r.revision);
    Ok(())
}

/// `meridian cluster change-membership`.
pub fn change_membership(args: ChangeMembershipArgs) -> CliResult {
    let client = connect(&args.target)?;
    let r = runtime()?
        .block_on(client.change_membership(args.voters.clone(), args.retain, args.target.timeout))
        .map_err(client_error)?;
    if args.target.json {
        println!("{}", json!({"voters": args.voters, "revision": r.revision}));
    } else {
        let voters: Vec<String> = args.voters.iter().map(u64::to_string).collect();
        println!("voters are now {} (revision {})", voters.join(","), r.revision);
    }
    Ok(())
}

/// `meridian cluster transfer-leader`.
pub fn transfer_leader(args: TransferLeaderArgs) -> CliResult {
    let client = connect(&args.target)?;
    runtime()?
        .block_on(client.transfer_leader(args.to, args.target.timeout))
        .map_err(client_error)?;
    if args.target.json {
        println!("{}", json!({"transfer_to": args.to}));
    } else {
        println!("leadership handed to node {} (it campaigns now)", args.to);
    }
    Ok(())
}

fn report(json_out: bool, what: &str, id: u64, revision: u64) {
    if json_out {
        println!("{}", json!({"id": id, "revision": revision}));
    } else {
        println!("{what}: node {id} (revision {revision})");
    }
}

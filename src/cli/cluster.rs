//! `meridian cluster up|status|down`: run a local cluster of node processes.
//!
//! - `up [MANIFEST] [--data-dir DIR] [--binary PATH]` spawns one `meridian node` per
//!   manifest node (embedded default: cluster/local-3.toml), waits for a leader,
//!   prints the endpoints and the leader, writes `<data_dir>/cluster.json`, then stays
//!   in the foreground forwarding node output as `[node-N] ...` lines on stderr.
//!   SIGINT (Ctrl-C) or SIGTERM stops every node (SIGTERM, SIGKILL after a timeout)
//!   and removes cluster.json. Re-running `up` on the same data dir restarts the same
//!   cluster (bootstrap is idempotent).
//! - `status [--data-dir DIR | --endpoints A,B]` prints each node's Raft view; exit 1
//!   if any node is down.
//! - `down [--data-dir DIR]` stops the nodes recorded in cluster.json (each pid is
//!   checked to still be that `meridian node` before it is signalled).
//! - `fault [--data-dir DIR | --control ADDR] list|heal|reset|partition 1,2/3|isolate N|
//!   cut FROM TO|latency MS [--jitter MS] [--node N]` drives the fault proxy of a
//!   cluster started from a manifest with `[network] proxy = true`: `up` then serves a
//!   control endpoint on 127.0.0.1 (see `crate::cluster::control`) and records its
//!   address in cluster.json.
//!
//! Exit codes: 2 for a bad manifest or usage, 1 for operational failures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::{CliError, CliResult};
use crate::cluster::control::{self, ControlRequest, ControlResponse};
use crate::cluster::manifest::{Manifest, DEFAULT_MANIFEST_ORIGIN};
use crate::cluster::process::{self, describe_exit, LaunchOptions, LocalCluster, LogTarget};
use crate::cluster::state::{self, ClusterState, NodeState, StopOutcome};
use crate::cluster::{signal as sig, ClusterError};
use crate::pb::v1 as pb;

/// How often `cluster up` checks whether its nodes are still alive.
const MONITOR_INTERVAL: Duration = Duration::from_millis(500);
/// Default data root of `status` and `down` (the manifests' default too).
const DEFAULT_DATA_DIR: &str = "./data";

/// `meridian cluster` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster in the foreground (Ctrl-C stops it).
    Up(UpArgs),
    /// Show every node's role, term, leader and indexes.
    Status(StatusArgs),
    /// Stop a cluster started by `cluster up` (from its cluster.json).
    Down(DownArgs),
    /// Inject network faults into a proxied cluster (manifest `[network] proxy = true`).
    Fault(FaultArgs),
    /// List the members (voters and learners) and the leader.
    Members(super::membership::AdminTarget),
    /// Add a non-voting member (waits until it caught up unless --no-wait).
    AddLearner(super::membership::AddLearnerArgs),
    /// Remove a learner.
    RemoveLearner(super::membership::RemoveLearnerArgs),
    /// Replace the voter set (joint consensus).
    ChangeMembership(super::membership::ChangeMembershipArgs),
    /// Hand leadership to another voter.
    TransferLeader(super::membership::TransferLeaderArgs),
}

/// Arguments of `meridian cluster fault`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  meridian cluster fault list\n  \
    meridian cluster fault partition 1/2,3\n  meridian cluster fault isolate 2\n  \
    meridian cluster fault latency 100 --jitter 20\n  meridian cluster fault heal")]
pub struct FaultArgs {
    /// Data root holding cluster.json (default ./data).
    #[arg(long, conflicts_with = "control")]
    pub data_dir: Option<PathBuf>,
    /// The control endpoint (host:port) instead of the one in cluster.json.
    #[arg(long)]
    pub control: Option<std::net::SocketAddr>,
    /// What to do.
    #[command(subcommand)]
    pub action: FaultAction,
}

/// A fault-proxy action.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FaultAction {
    /// Show every link: name, addresses, latency, blackhole, open connections.
    List,
    /// Remove every fault of every link.
    Heal,
    /// Close every open connection of every link (RST).
    Reset,
    /// Symmetric partition, groups separated by '/': `1,2/3,4,5`.
    Partition {
        /// Groups of node ids, e.g. 1,2/3,4,5.
        #[arg(value_parser = parse_groups)]
        groups: Groups,
    },
    /// Cut one node off from every other node, both directions.
    Isolate {
        /// Node id.
        node: u64,
    },
    /// Node FROM can no longer call node TO (one direction).
    Cut {
        /// Calling node.
        from: u64,
        /// Called node.
        to: u64,
    },
    /// Add latency to every node-to-node link (or only node N's links).
    Latency {
        /// One-way added delay, ms.
        latency_ms: u64,
        /// Uniform jitter bound, ms.
        #[arg(long, default_value_t = 0)]
        jitter: u64,
        /// Only the links from and to this node.
        #[arg(long)]
        node: Option<u64>,
    },
}

/// Node groups of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups(pub Vec<Vec<u64>>);

/// Parse `1,2/3,4,5` into groups.
pub fn parse_groups(s: &str) -> Result<Groups, String> {
    let err = || format!("{s:?}: expected node ids like 1,2/3,4,5");
    let groups = s
        .split('/')
        .map(|g| g.split(',').map(|id| id.trim().parse::<u64>().map_err(|_| err())).collect())
        .collect::<Result<Vec<Vec<u64>>, String>>()?;
    if groups.len() < 2 || groups.iter().any(Vec::is_empty) {
        return Err(err());
    }
    Ok(Groups(groups))
}

impl FaultAction {
    fn request(&self) -> ControlRequest {
        match self.clone() {
            FaultAction::List => ControlRequest::List,
            FaultAction::Heal => ControlRequest::Heal,
            FaultAction::Reset => ControlRequest::Reset,
            FaultAction::Partition { groups } => ControlRequest::Partition { groups: groups.0 },
            FaultAction::Isolate { node } => ControlRequest::Isolate { node },
            FaultAction::Cut { from, to } => ControlRequest::Cut { from, to },
            FaultAction::Latency { latency_ms, jitter, node } => {
                ControlRequest::Latency { latency_ms, jitter_ms: jitter, node }
            }
        }
    }
}

/// Arguments of `meridian cluster up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Cluster manifest (TOML); default: the embedded cluster/local-3.toml.
    pub manifest: Option<PathBuf>,
    /// Data root, overriding the manifest's data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The meridian binary to run for each node (default: this executable).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Serve TLS (mutual TLS between nodes) with the certificates of <data-dir>/certs,
    /// created with `meridian certs init` semantics when missing.
    #[arg(long)]
    pub tls: bool,
}

/// Arguments of `meridian cluster status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Data root holding cluster.json.
    #[arg(long, conflicts_with = "endpoints")]
    pub data_dir: Option<PathBuf>,
    /// Node API addresses (host:port or http://host:port), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Certificate directory of a TLS cluster (default: <data-dir>/certs when it
    /// holds ca.pem); the `admin` client certificate is used when present.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

/// Arguments of `meridian cluster down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Data root holding cluster.json.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Run a `meridian cluster` subcommand.
pub fn run(cmd: ClusterCommand) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::failure)?;
    match cmd {
        ClusterCommand::Up(args) => runtime.block_on(up(args)),
        ClusterCommand::Status(args) => runtime.block_on(status(args)),
        ClusterCommand::Down(args) => runtime.block_on(down(args)),
        ClusterCommand::Fault(args) => runtime.block_on(fault(args)),
        ClusterCommand::Members(args) => super::membership::members(args),
        ClusterCommand::AddLearner(args) => super::membership::add_learner(args),
        ClusterCommand::RemoveLearner(args) => super::membership::remove_learner(args),
        ClusterCommand::ChangeMembership(args) => super::membership::change_membership(args),
        ClusterCommand::TransferLeader(args) => super::membership::transfer_leader(args),
    }
}

/// Map a launcher error to an exit code: a bad manifest is bad input.
fn cli_error(e: ClusterError) -> CliError {
    match e {
        ClusterError::Manifest { .. } => CliError::bad_input(e),
        other => CliError::failure(other),
    }
}

fn load_manifest(path: Option<&Path>) -> Result<(Manifest, String), ClusterError> {
    match path {
        Some(p) => Ok((Manifest::load(p)?, p.display().to_string())),
        None => Ok((Manifest::embedded_default()?, DEFAULT_MANIFEST_ORIGIN.to_string())),
    }
}

async fn up(args: UpArgs) -> CliResult {
    let (mut manifest, origin) = load_manifest(args.manifest.as_deref()).map_err(cli_error)?;
    if let Some(dir) = args.data_dir {
        manifest.data_dir = dir;
    }
    refuse_if_running(&manifest.data_dir)?;
    if args.tls && manifest.tls.is_none() {
        manifest.tls = Some(dev_tls(&manifest)?);
    }
    let binary = process::resolve_binary(args.binary.as_deref(), &manifest).map_err(cli_error)?;
    let options = LaunchOptions {
        logs: LogTarget::Stderr,
        own_process_group: true,
        ..LaunchOptions::new(binary)
    };
    // Handlers first: the nodes run in their own process groups, so a Ctrl-C that
    // killed the launcher before it could stop them would orphan them.
    let mut stop = StopSignals::install()?;
    let cluster = LocalCluster::new(manifest, options).map_err(cli_error)?;
    let data_root = cluster.data_root().to_path_buf();
    let control = serve_control(&cluster).await?;
    let control_addr = control.as_ref().map(|(addr, _)| *addr);
    let started = tokio::select! {
        r = start(&cluster, &origin, control_addr) => r.map_err(cli_error),
        name = stop.recv() => Err(CliError::failure(anyhow::anyhow!("{name} during start-up"))),
    };
    let outcome = match started {
        Ok((state, leader)) => {
            print_up(&cluster, &state, leader);
            wait_for_end(&cluster, &mut stop).await
        }
        Err(e) => Err(e),
    };
    if let Some((_, task)) = control {
        task.abort();
    }
    shutdown(&cluster).await;
    ClusterState::remove(&data_root).map_err(cli_error)?;
    outcome
}

/// `--tls`: the certificate directory `<data_dir>/certs`, with a CA and node and admin
/// certificates created when the CA is missing (an existing CA issues missing ones).
fn dev_tls(manifest: &crate::cluster::Manifest) -> CliResult<crate::cluster::ManifestTls> {
    use crate::cluster::certs;
    let dir = manifest.data_dir.join("certs");
    let missing = |name: &str| !certs::cert_paths(&dir, name).0.exists();
    let nodes: Vec<String> =
        manifest.nodes.iter().map(|n| format!("node-{}", n.id)).filter(|n| missing(n)).collect();
    let clients: Vec<String> =
        [certs::ADMIN_CLIENT.to_string()].into_iter().filter(|n| missing(n)).collect();
    if !nodes.is_empty() || !clients.is_empty() {
        let plan = certs::CertsPlan { dir: dir.clone(), nodes, clients, new_ca: false };
        let report = certs::init(&plan).map_err(CliError::failure)?;
        eprintln!("[cluster] TLS certificates written to {}", report.dir.display());
    }
    eprintln!("[cluster] TLS on: connect with `meridian kv --tls-dir {} ...`", dir.display());
    Ok(crate::cluster::ManifestTls { dir, require_client_cert: false })
}

/// For a proxied cluster: bind the control endpoint on 127.0.0.1 and serve it.
async fn serve_control(
    cluster: &LocalCluster,
) -> CliResult<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>> {
    let Some(net) = cluster.network() else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
        CliError::failure(anyhow::anyhow!("cannot bind the fault control endpoint: {e}"))
    })?;
    let addr = listener.local_addr().map_err(CliError::failure)?;
    let net = net.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = control::serve(listener, net).await {
            eprintln!("[cluster] fault control endpoint stopped: {e}");
        }
    });
    Ok(Some((addr, task)))
}

/// SIGINT and SIGTERM, either of which stops the cluster.
struct StopSignals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> CliResult<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).map_err(CliError::failure)?,
            sigterm: signal(SignalKind::terminate()).map_err(CliError::failure)?,
        })
    }

    /// Wait for the next stop signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.sigint.recv() => "SIGINT",
            _ = self.sigterm.recv() => "SIGTERM",
        }
    }
}

/// Refuse to start over a cluster that still runs from the same data root.
fn refuse_if_running(data_root: &Path) -> CliResult {
    let Some(previous) = ClusterState::read(data_root).map_err(cli_error)? else { return Ok(()) };
    let live: Vec<String> =
        previous.live_nodes().iter().map(|n| format!("node-{} (pid {})", n.id, n.pid)).collect();
    if previous.launcher_alive() || !live.is_empty() {
        return Err(CliError::failure(anyhow::anyhow!(
            "a cluster is already running from {} (launcher pid {}, nodes: {}); stop it with \
             `meridian cluster down --data-dir {}`",
            data_root.display(),
            previous.launcher_pid,
            if live.is_empty() { "none".to_string() } else { live.join(", ") },
            data_root.display()
        )));
    }
    Ok(())
}

/// Spawn every node, record them in cluster.json (so `cluster down` finds them even
/// while they start), wait until each is ready and a leader is agreed on.
async fn start(
    cluster: &LocalCluster,
    origin: &str,
    control: Option<std::net::SocketAddr>,
) -> Result<(ClusterState, u64), ClusterError> {
    for id in cluster.ids() {
        cluster.spawn(id)?;
    }
    let state = record(cluster, origin, control);
    state.write(cluster.data_root())?;
    cluster.start_all().await?;
    let leader = cluster.leader().await?;
    Ok((state, leader))
}

fn record(
    cluster: &LocalCluster,
    origin: &str,
    control: Option<std::net::SocketAddr>,
) -> ClusterState {
    let pids = cluster.pids();
    let nodes = cluster
        .manifest()
        .nodes
        .iter()
        .map(|n| NodeState {
            id: n.id,
            region: n.region.clone(),
            pid: pids.get(&n.id).copied().unwrap_or(0),
            api_addr: n.api_addr.to_string(),
            raft_addr: n.raft_addr.to_string(),
            config_path: cluster.data_root().join(format!("node-{}.toml", n.id)),
        })
        .collect();
    ClusterState {
        cluster_name: cluster.manifest().name.clone(),
        manifest: origin.to_string(),
        launcher_pid: std::process::id(),
        nodes,
        proxy_control: control.map(|a| a.to_string()),
        region_endpoints: cluster
            .network()
            .map(|net| {
                net.region_client_addrs()
                    .iter()
                    .map(|(r, m)| (r.clone(), m.values().map(|a| a.to_string()).collect()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn print_up(cluster: &LocalCluster, state: &ClusterState, leader: u64) {
    let endpoints = cluster.endpoints();
    println!(
        "cluster {:?} is up: {} nodes, leader node-{leader}",
        state.cluster_name,
        state.nodes.len()
    );
    for n in &state.nodes {
        let url = endpoints.get(&n.id).cloned().unwrap_or_default();
        println!(
            "  node-{:<3} region {:<10} api {:<24} raft {:<21} pid {}",
            n.id, n.region, url, n.raft_addr, n.pid
        );
    }
    let all: Vec<String> = endpoints.values().cloned().collect();
    println!("endpoints: {}", all.join(","));
    for (region, eps) in &state.region_endpoints {
        println!(
            "clients in {region}: {} (`meridian kv --region {region} --data-dir {} ...`)",
            eps.join(","),
            cluster.data_root().display()
        );
    }
    println!("leader: node-{leader}");
    if let Some(control) = &state.proxy_control {
        let links = cluster.network().map_or(0, |n| n.links().len());
        println!(
            "fault proxy: {links} links, control {control} (`meridian cluster fault --data-dir {} \
             list|partition|isolate|latency|heal`)",
            cluster.data_root().display()
        );
    }
    println!(
        "state: {} (stop with Ctrl-C or `meridian cluster down --data-dir {}`)",
        state::state_path(cluster.data_root()).display(),
        cluster.data_root().display()
    );
}

/// Run until SIGINT/SIGTERM (Ok) or until every node has exited (Ok if all exited
/// cleanly, as after `cluster down`; a failure otherwise).
async fn wait_for_end(cluster: &LocalCluster, stop: &mut StopSignals) -> CliResult {
    let mut reported = std::collections::BTreeSet::new();
    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
    loop {
        tokio::select! {
            name = stop.recv() => {
                eprintln!("[cluster] {name}: stopping every node");
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        let mut exited = Vec::new();
        for id in cluster.ids() {
            if cluster.is_running(id) {
                continue;
            }
            let status = cluster.last_exit(id);
            if reported.insert(id) {
                let how = status.map(describe_exit).unwrap_or_else(|| "unknown status".into());
                eprintln!("[cluster] node-{id} exited: {how}");
            }
            exited.push(status.is_some_and(|s| s.success()));
        }
        if exited.len() == cluster.ids().len() {
            return if exited.iter().all(|ok| *ok) {
                eprintln!("[cluster] every node has exited");
                Ok(())
            } else {
                Err(CliError::failure(anyhow::anyhow!("every node has exited, some with an error")))
            };
        }
    }
}

async fn shutdown(cluster: &LocalCluster) {
    for (id, result) in cluster.stop_all().await {
        match result {
            Ok(status) => eprintln!("[cluster] node-{id} stopped: {}", describe_exit(status)),
            Err(e) => eprintln!("[cluster] node-{id}: {e}"),
        }
    }
}

async fn status(args: StatusArgs) -> CliResult {
    let root = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let tls_dir = args.tls_dir.clone().or_else(|| {
        let dir = root.join("certs");
        (args.endpoints.is_empty() && dir.join(crate::cluster::certs::CA_CERT_FILE).exists())
            .then_some(dir)
    });
    let tls = match &tls_dir {
        Some(dir) => {
            let sec = super::kv::SecurityArgs {
                tls_dir: Some(dir.clone()),
                client_name: crate::cluster::certs::ADMIN_CLIENT.to_string(),
                ..Default::default()
            };
            let mut config = crate::client::ClientConfig::default();
            sec.apply(&mut config);
            let files = config.tls.unwrap_or_default();
            Some(crate::client::endpoints::tls_config(&files).map_err(CliError::bad_input)?)
        }
        None => None,
    };
    let targets: Vec<(Option<u64>, String)> = if args.endpoints.is_empty() {
        let state = ClusterState::read(&root).map_err(cli_error)?.ok_or_else(|| {
            CliError::failure(anyhow::anyhow!(
                "no {} in {}: is a cluster running there? (or pass --endpoints)",
                state::STATE_FILE,
                root.display()
            ))
        })?;
        state.nodes.iter().map(|n| (Some(n.id), n.api_addr.clone())).collect()
    } else {
        args.endpoints.iter().map(|e| (None, e.clone())).collect()
    };
    let calls = targets.iter().map(|(_, addr)| node_status(addr, tls.clone()));
    let results = futures::future::join_all(calls).await;
    println!(
        "{:<4} {:<10} {:<10} {:>6} {:>7} {:>9} {:>9}  API",
        "ID", "REGION", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"
    );
    let mut down = 0;
    for ((id, addr), result) in targets.iter().zip(results) {
        match result {
            Ok(s) => println!(
                "{:<4} {:<10} {:<10} {:>6} {:>7} {:>9} {:>9}  {}",
                s.id,
                s.region,
                role_name(s.role()),
                s.term,
                s.leader_id,
                s.commit_index,
                s.applied_index,
                addr
            ),
            Err(e) => {
                down += 1;
                let id = id.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
                println!(
                    "{id:<4} {:<10} {:<10} {:>6} {:>7} {:>9} {:>9}  {addr} ({e})",
                    "-", "down", "-", "-", "-", "-"
                );
            }
        }
    }
    if down > 0 {
        return Err(CliError::failure(anyhow::anyhow!(
            "{down} of {} nodes are down",
            targets.len()
        )));
    }
    Ok(())
}

fn role_name(role: pb::Role) -> &'static str {
    match role {
        pb::Role::Leader => "leader",
        pb::Role::Follower => "follower",
        pb::Role::Candidate => "candidate",
        pb::Role::Learner => "learner",
        pb::Role::Shutdown => "shutdown",
        pb::Role::Unspecified => "unknown",
    }
}

/// One `Cluster/Status` call to `addr` within the launcher's status timeout.
async fn node_status(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<pb::StatusResponse, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") { addr.to_string() } else { format!("{scheme}://{addr}") };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|_| format!("invalid endpoint {url:?}"))?
        .connect_timeout(process::CONNECT_TIMEOUT);
    if let Some(t) = tls {
        endpoint = endpoint.tls_config(t).map_err(|e| format!("tls: {e}"))?;
    }
    let call = async {
        let channel = endpoint.connect().await.map_err(|e| format!("unreachable: {e}"))?;
        let mut client = pb::cluster_client::ClusterClient::new(channel);
        client
            .status(pb::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    };
    tokio::time::timeout(process::STATUS_RPC_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", process::STATUS_RPC_TIMEOUT)))
}

async fn down(args: DownArgs) -> CliResult {
    let root = args.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let Some(state) = ClusterState::read(&root).map_err(cli_error)? else {
        println!("no {} in {}: nothing to stop", state::STATE_FILE, root.display());
        return Ok(());
    };
    let outcomes = state::stop_recorded(&state, process::STOP_TIMEOUT).await.map_err(cli_error)?;
    for (id, outcome) in &outcomes {
        let what = match outcome {
            StopOutcome::NotRunning => "was not running",
            StopOutcome::Stopped => "stopped",
            StopOutcome::Killed => "did not stop after SIGTERM: killed",
        };
        println!("node-{id} {what}");
    }
    // The launcher notices that its nodes have exited, removes cluster.json and exits.
    let launcher_gone =
        crate::cluster::poll_until("the launcher to exit", process::STOP_TIMEOUT, || async {
            if state.launcher_alive() {
                Err(format!("pid {} still running", state.launcher_pid))
            } else {
                Ok(())
            }
        })
        .await;
    if launcher_gone.is_err() && sig::is_meridian_launcher(state.launcher_pid) {
        let _ = sig::send(state.launcher_pid, sig::Sig::Term);
    }
    ClusterState::remove(&root).map_err(cli_error)?;
    println!("cluster {:?} is down", state.cluster_name);
    Ok(())
}

async fn fault(args: FaultArgs) -> CliResult {
    let addr = match args.control {
        Some(addr) => addr,
        None => {
            let root = args.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let state = ClusterState::read(&root).map_err(cli_error)?.ok_or_else(|| {
                CliError::failure(anyhow::anyhow!(
                    "no {} in {}: is a cluster running there?",
                    state::STATE_FILE,
                    root.display()
                ))
            })?;
            let control = state.proxy_control.ok_or_else(|| {
                CliError::bad_input(anyhow::anyhow!(
                    "the cluster in {} does not route its links through the fault proxy \
                     (start it from a manifest with [network] proxy = true)",
                    root.display()
                ))
            })?;
            control.parse().map_err(|e| {
                CliError::failure(anyhow::anyhow!("bad control address {control:?}: {e}"))
            })?
        }
    };
    let response = control::request(addr, &args.action.request()).await.map_err(cli_error)?;
    print_fault(&args.action, &response);
    if response.ok {
        Ok(())
    } else {
        Err(CliError::bad_input(anyhow::anyhow!("{}", response.message)))
    }
}

fn print_fault(action: &FaultAction, response: &ControlResponse) {
    if matches!(action, FaultAction::List) {
        println!(
            "{:<14} {:<21} {:<21} {:>8} {:>8} {:>9} {:>5}",
            "LINK", "LISTEN", "TARGET", "LATENCY", "JITTER", "BLACKHOLE", "CONNS"
        );
        for l in &response.links {
            println!(
                "{:<14} {:<21} {:<21} {:>6}ms {:>6}ms {:>9} {:>5}",
                l.name,
                l.listen,
                l.target,
                l.latency_ms,
                l.jitter_ms,
                if l.blackhole { "yes" } else { "no" },
                l.connections
            );
        }
        return;
    }
    let holed = response.links.iter().filter(|l| l.blackhole).count();
    let slow = response.links.iter().filter(|l| l.latency_ms > 0 || l.jitter_ms > 0).count();
    println!("{}", response.message);
    println!("links: {} total, {holed} blackholed, {slow} with latency", response.links.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_groups_parse() {
        assert_eq!(parse_groups("1,2/3").expect("groups"), Groups(vec![vec![1, 2], vec![3]]));
        assert!(parse_groups("1,2").is_err());
        assert!(parse_groups("1,/3").is_err());
        assert!(parse_groups("a/b").is_err());
    }
}

//! `meridian node`: run one node in the foreground until SIGINT or SIGTERM.
//!
//! Configuration: built-in defaults, then `--config FILE`, then `MERIDIAN_*`
//! environment variables, then these flags. Bad configuration, or a data dir that
//! belongs to another cluster or node id, exits with code 2 and a message.

use std::path::PathBuf;

use super::{CliError, CliResult};
use crate::config::{NodeConfig, PeerConfig};

/// Arguments of `meridian node`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  meridian node --config cluster/node.sample.toml\n  \
    meridian node --id 1 --api-addr 127.0.0.1:7001 --raft-addr 127.0.0.1:7101 --data-dir data/n1 \\\n    \
    --peer 1=127.0.0.1:7001/127.0.0.1:7101 --bootstrap")]
pub struct NodeArgs {
    /// TOML configuration file (see cluster/node.sample.toml).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Node id (>= 1).
    #[arg(long)]
    pub id: Option<u64>,
    /// Region label.
    #[arg(long)]
    pub region: Option<String>,
    /// Cluster name.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Public API listen address.
    #[arg(long)]
    pub api_addr: Option<std::net::SocketAddr>,
    /// Raft listen address.
    #[arg(long)]
    pub raft_addr: Option<std::net::SocketAddr>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Initial member, repeatable: ID=API_ADDR/RAFT_ADDR[@REGION].
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<PeerConfig>,
    /// Initialise a new cluster from the peers if this node was never initialised.
    #[arg(long)]
    pub bootstrap: bool,
    /// Expose fault-injection RPCs (tests only).
    #[arg(long)]
    pub allow_fault_injection: bool,
    /// TEST ONLY: serve linearizable reads locally without a read index (unsafe).
    #[arg(long)]
    pub unsafe_stale_reads: bool,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Region the leader should live in (the leader moves there when a healthy voter
    /// of that region exists).
    #[arg(long, value_name = "REGION")]
    pub preferred_leader_region: Option<String>,
    /// Binlog retention: keep at most this many events (same on every node).
    #[arg(long)]
    pub binlog_retention_events: Option<u64>,
    /// Binlog retention: trim events older than this many seconds (same on every node).
    #[arg(long)]
    pub binlog_retention_age_secs: Option<u64>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Enable TLS with the CA, certificate and key of this directory (ca.pem,
    /// node-<id>.pem, node-<id>-key.pem as written by `meridian certs init`).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Refuse API clients without a certificate signed by the CA.
    #[arg(long)]
    pub require_client_cert: bool,
    /// Tokens file: turns authentication and authorization on.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Requests per second per client identity (0: no limit).
    #[arg(long)]
    pub rate_per_sec: Option<u32>,
    /// Requests a client may send at once (token bucket size).
    #[arg(long)]
    pub burst: Option<u32>,
}

/// Parse `ID=API/RAFT[@REGION]`.
pub fn parse_peer(s: &str) -> Result<PeerConfig, String> {
    let err = || format!("peer {s:?} must look like ID=API_ADDR/RAFT_ADDR[@REGION]");
    let (id, rest) = s.split_once('=').ok_or_else(err)?;
    let (addrs, region) = match rest.split_once('@') {
        Some((a, r)) => (a, r.to_string()),
        None => (rest, "local".to_string()),
    };
    let (api, raft) = addrs.split_once('/').ok_or_else(err)?;
    let id = id.parse().map_err(|_| err())?;
    if api.is_empty() || raft.is_empty() {
        return Err(err());
    }
    Ok(PeerConfig { id, api_addr: api.to_string(), raft_addr: raft.to_string(), region })
}

impl NodeArgs {
    fn into_config(self) -> Result<NodeConfig, crate::config::ConfigError> {
        let mut c = NodeConfig::load(self.config.as_deref())?;
        if let Some(v) = self.id {
            c.id = v;
        }
        if let Some(v) = self.region {
            c.region = v;
        }
        if let Some(v) = self.cluster_name {
            c.cluster_name = v;
        }
        if let Some(v) = self.api_addr {
            c.api_addr = v;
        }
        if let Some(v) = self.raft_addr {
            c.raft_addr = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if !self.peers.is_empty() {
            c.peers = self.peers;
        }
        c.bootstrap |= self.bootstrap;
        c.allow_fault_injection |= self.allow_fault_injection;
        c.unsafe_stale_reads |= self.unsafe_stale_reads;
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = self.preferred_leader_region {
            c.placement.preferred_leader_region = Some(v);
        }
        if let Some(v) = self.binlog_retention_events {
            c.binlog.retention_events = v;
        }
        if let Some(v) = self.binlog_retention_age_secs {
            c.binlog.retention_age_secs = v;
        }
        if let Some(v) = self.metrics_addr {
            c.metrics_addr = Some(v);
        }
        if let Some(dir) = self.tls_dir {
            let (cert, key) = crate::cluster::certs::cert_paths(&dir, &format!("node-{}", c.id));
            c.tls.enabled = true;
            c.tls.ca_file = Some(dir.join(crate::cluster::certs::CA_CERT_FILE));
            c.tls.cert_file = Some(cert);
            c.tls.key_file = Some(key);
        }
        c.tls.require_client_cert |= self.require_client_cert;
        if let Some(v) = self.tokens_file {
            c.auth.tokens_file = Some(v);
        }
        if let Some(v) = self.rate_per_sec {
            c.limits.rate_per_sec = v;
        }
        if let Some(v) = self.burst {
            c.limits.burst = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Install the tracing subscriber (stderr; text or JSON; `RUST_LOG` filter).
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,tower=warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Install SIGINT/SIGTERM handlers now (so a signal during start-up is not lost or
/// fatal) and return a future that resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Run a node until SIGINT/SIGTERM.
pub fn run(args: NodeArgs) -> CliResult {
    let cfg = args.into_config().map_err(CliError::bad_input)?;
    init_tracing(&cfg.log_format);
    if cfg.unsafe_stale_reads {
        tracing::warn!(
            "--unsafe-stale-reads: LINEARIZABLE reads are served locally and may be stale"
        );
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let shutdown = shutdown_signal()?;
        let api = tokio::net::TcpListener::bind(cfg.api_addr).await.map_err(|e| {
            CliError::failure(anyhow::anyhow!("cannot listen on api_addr {}: {e}", cfg.api_addr))
        })?;
        let raft = tokio::net::TcpListener::bind(cfg.raft_addr).await.map_err(|e| {
            CliError::failure(anyhow::anyhow!("cannot listen on raft_addr {}: {e}", cfg.raft_addr))
        })?;
        crate::server::run_node(cfg, api, raft, shutdown).await.map_err(|e| {
            if e.is_bad_input() {
                CliError::bad_input(e)
            } else {
                CliError::failure(e)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_flag_parses_with_and_without_region() {
        let p = parse_peer("2=127.0.0.1:7002/127.0.0.1:7102@eu").expect("peer");
        assert_eq!((p.id, p.region.as_str()), (2, "eu"));
        let p = parse_peer("3=a:1/b:2").expect("peer");
        assert_eq!(p.region, "local");
        assert!(parse_peer("x=a/b").is_err());
        assert!(parse_peer("1=a").is_err());
    }
}

//! [`TestCluster`]: a [`LocalCluster`] for integration tests and the Jepsen harness.
//!
//! Each cluster gets its own temporary directory (data dirs, configs, one log file per
//! node) and free 127.0.0.1 ports (bound to port 0 all at once, then released just
//! before the nodes start), so tests run in parallel without colliding. Raft timings
//! are short ([`test_raft_config`]) so elections take well under a second.
//!
//! On Drop every node is SIGKILLed and reaped. If the thread is panicking (a failed
//! test), the last lines of every node's output are printed and the directory is kept,
//! its path printed, so the full logs stay readable.

use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::manifest::{Manifest, ManifestNode, NetworkConfig};
use super::process::{LaunchOptions, LocalCluster, LogTarget, LEADER_TIMEOUT};
use super::ClusterError;
use crate::config::RaftConfig;

/// Output lines per node printed when a test fails.
pub const FAILURE_LOG_LINES: usize = 60;
/// Start-up deadline of each test node.
pub const TEST_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts tried when a reserved port was taken before a node could bind it.
pub const PORT_CLASH_ATTEMPTS: u32 = 3;
/// SIGTERM-to-exit deadline of test nodes before SIGKILL.
pub const TEST_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Raft settings for tests: heartbeat 50 ms, election timeout 300..600 ms; the rest are
/// the node defaults.
pub fn test_raft_config() -> RaftConfig {
    RaftConfig {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..RaftConfig::default()
    }
}

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The `meridian` binary (tests pass `env!("CARGO_BIN_EXE_meridian")`).
    pub binary: PathBuf,
    /// Cluster name.
    pub name: String,
    /// Raft settings of every node.
    pub raft: RaftConfig,
    /// Give node 1 `bootstrap = true`; off leaves every node uninitialised.
    pub bootstrap: bool,
    /// Wait for an agreed leader before returning (only with `bootstrap`).
    pub wait_for_leader: bool,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// Node output destination; default one file per node in the temp dir.
    pub logs: LogTarget,
    /// Route every node-to-node link through the fault proxy (see
    /// [`LocalCluster::network`]); default off.
    pub proxy: bool,
    /// With `proxy`, also create client-side links (see [`LocalCluster::client_addr`]).
    pub client_proxy: bool,
    /// Nodes left out of the initial membership (started empty, to be added later).
    pub standby: Vec<u64>,
    /// TLS for every node (a `meridian certs init` directory); default none.
    pub tls: Option<super::manifest::ManifestTls>,
    /// Give every node a Prometheus endpoint on a free port (see
    /// [`TestCluster::metrics_addr`]); default off.
    pub metrics: bool,
}

impl TestOptions {
    /// Defaults: name "test", [`test_raft_config`], bootstrap, wait for a leader, logs
    /// to files.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            name: "test".to_string(),
            raft: test_raft_config(),
            bootstrap: true,
            wait_for_leader: true,
            extra_args: Vec::new(),
            logs: LogTarget::Files,
            proxy: false,
            client_proxy: false,
            standby: Vec::new(),
            tls: None,
            metrics: false,
        }
    }
}

/// Reserve `n` distinct free TCP ports on 127.0.0.1: all are bound at once (so they
/// differ), then released for the nodes to bind.
pub fn free_ports(n: usize) -> Result<Vec<u16>, ClusterError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClusterError::io("cannot bind 127.0.0.1:0 to pick a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClusterError::io("cannot read a bound port", e))
}

/// A local cluster in a temporary directory; derefs to [`LocalCluster`].
pub struct TestCluster {
    // Field order matters: the cluster (its processes) drops before the directory.
    cluster: LocalCluster,
    dir: Option<tempfile::TempDir>,
    metrics_addrs: std::collections::BTreeMap<u64, SocketAddr>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster").field("cluster", &self.cluster).finish()
    }
}

impl TestCluster {
    /// Start `n` nodes (ids 1..=n, region "local") on free ports in a new temp dir,
    /// wait until each answers, and (with `bootstrap` and `wait_for_leader`) until they
    /// agree on a leader.
    pub async fn start(n: usize, options: TestOptions) -> Result<Self, ClusterError> {
        let nodes = (0..n)
            .map(|i| ManifestNode {
                id: i as u64 + 1,
                region: "local".to_string(),
                api_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                raft_addr: SocketAddr::from(([127, 0, 0, 1], 2)),
                extra_args: Vec::new(),
                standby: false,
            })
            .collect();
        let layout = Manifest {
            name: options.name.clone(),
            data_dir: PathBuf::from("unused"),
            binary: None,
            raft: Some(options.raft.clone()),
            preferred_leader_region: None,
            network: NetworkConfig::default(),
            tls: None,
            nodes,
        };
        Self::start_layout(layout, options).await
    }

    /// Start the nodes of `layout` (a manifest such as cluster/three-regions.toml: ids,
    /// regions, region latencies, preferred leader region and its Raft settings when it
    /// has them, else `options.raft`) on free ports in a new temp dir. The layout's
    /// addresses, data dir and binary are replaced; `options` adds extra args and the
    /// proxy (a layout with region latencies always gets the proxy and client links).
    ///
    /// Ports are picked by binding port 0 and released just before the nodes bind them,
    /// so another process can take one in between (an outgoing connection's ephemeral
    /// port, say). A start that fails only because a port was taken is retried with
    /// fresh ports, up to [`PORT_CLASH_ATTEMPTS`] times.
    pub async fn start_layout(
        layout: Manifest,
        options: TestOptions,
    ) -> Result<Self, ClusterError> {
        let mut attempt = 1;
        loop {
            match Self::start_layout_once(layout.clone(), options.clone()).await {
                Err(ClusterError::ExitedEarly { log_tail, .. })
                    if log_tail.contains("Address already in use")
                        && attempt < PORT_CLASH_ATTEMPTS =>
                {
                    eprintln!("test cluster: a reserved port was taken meanwhile; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_layout_once(
        layout: Manifest,
        options: TestOptions,
    ) -> Result<Self, ClusterError> {
        let dir = tempfile::Builder::new()
            .prefix("meridian-test-")
            .tempdir()
            .map_err(|e| ClusterError::io("cannot create a temp dir", e))?;
        let n = layout.nodes.len();
        let ports = free_ports(3 * n)?;
        let mut metrics_addrs = std::collections::BTreeMap::new();
        let nodes = layout
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut extra_args: Vec<String> =
                    node.extra_args.iter().chain(&options.extra_args).cloned().collect();
                if options.metrics {
                    let addr = SocketAddr::from(([127, 0, 0, 1], ports[3 * i + 2]));
                    metrics_addrs.insert(node.id, addr);
                    extra_args.extend(["--metrics-addr".to_string(), addr.to_string()]);
                }
                ManifestNode {
                    id: node.id,
                    region: node.region.clone(),
                    api_addr: SocketAddr::from(([127, 0, 0, 1], ports[3 * i])),
                    raft_addr: SocketAddr::from(([127, 0, 0, 1], ports[3 * i + 1])),
                    extra_args,
                    standby: node.standby || options.standby.contains(&node.id),
                }
            })
            .collect();
        let regional = !layout.network.region_latency.is_empty();
        let proxy = options.proxy || layout.network.proxy || regional;
        let manifest = Manifest {
            name: options.name.clone(),
            data_dir: dir.path().to_path_buf(),
            binary: Some(options.binary.clone()),
            raft: Some(layout.raft.clone().unwrap_or_else(|| options.raft.clone())),
            preferred_leader_region: layout.preferred_leader_region.clone(),
            network: NetworkConfig {
                proxy,
                client_proxy: proxy
                    && (options.client_proxy || layout.network.client_proxy || regional),
                region_latency: layout.network.region_latency.clone(),
                ..layout.network.clone()
            },
            tls: options.tls.clone(),
            nodes,
        };
        manifest.validate().map_err(|message| ClusterError::Manifest {
            origin: "<test cluster>".to_string(),
            message,
        })?;
        let launch = LaunchOptions {
            binary: options.binary.clone(),
            logs: options.logs,
            bootstrap: options.bootstrap,
            own_process_group: false,
            ready_timeout: TEST_READY_TIMEOUT,
            stop_timeout: TEST_STOP_TIMEOUT,
            proxy,
        };
        let cluster = TestCluster {
            cluster: LocalCluster::new(manifest, launch)?,
            dir: Some(dir),
            metrics_addrs,
        };
        let started = async {
            cluster.start_all().await?;
            if options.bootstrap && options.wait_for_leader {
                cluster.wait_for_leader(LEADER_TIMEOUT).await?;
            }
            Ok::<(), ClusterError>(())
        };
        match started.await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.cluster.dump_logs(FAILURE_LOG_LINES);
                Err(e)
            }
        }
    }

    /// The temporary directory holding data dirs, configs and logs.
    pub fn dir(&self) -> &Path {
        self.cluster.data_root()
    }

    /// The Prometheus endpoint of node `id` (with [`TestOptions::metrics`]).
    pub fn metrics_addr(&self, id: u64) -> Option<SocketAddr> {
        self.metrics_addrs.get(&id).copied()
    }

    /// Keep the directory after Drop (it is also kept when a test panics).
    pub fn keep_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(dir) => dir.keep(),
            None => self.cluster.data_root().to_path_buf(),
        }
    }
}

impl Deref for TestCluster {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.cluster.dump_logs(FAILURE_LOG_LINES);
            let kept = self.keep_dir();
            eprintln!("test cluster directory kept for inspection: {}", kept.display());
        }
    }
}

//! [`LocalCluster`]: one `meridian node --config <file>` child process per manifest
//! node, with readiness and leadership polling and process-level fault injection.
//!
//! Start-up: [`LocalCluster::new`] creates the data root, makes it absolute and writes
//! `<root>/node-N.toml` for every node (the first node has `bootstrap = true` unless
//! disabled); [`LocalCluster::start_all`] spawns every node and polls each one's
//! `Cluster/Status` until it answers (a node that exits first fails the start with its
//! last output lines); [`LocalCluster::wait_for_leader`] polls until every running
//! node names the same leader and that leader says it is one.
//!
//! Network: with [`LaunchOptions::proxy`] or the manifest's `[network] proxy = true`,
//! [`LocalCluster::new`] (inside a tokio runtime) builds a [`ClusterNetwork`] first,
//! one fault-proxy link per directed node pair and service, and writes each node's
//! `routes` so that every node-to-node call goes through its link. The launcher's
//! own calls (readiness, status) and [`LocalCluster::channel`] always go direct;
//! [`LocalCluster::client_addr`] hands out the client link when there is one.
//!
//! Output: each child's stdout and stderr are read line by line on two threads and
//! forwarded with a `[node-N]` prefix to our stderr or to `<root>/node-N.log`
//! ([`LogTarget`]); the last [`LOG_RING_LINES`] lines of each node are also kept in
//! memory for [`LocalCluster::log_tail`].
//!
//! Invariants: a node's `child` is `Some` exactly while we have not reaped it; every
//! signal goes to the pid of a child we spawned and have not reaped (so the pid cannot
//! have been reused); Drop SIGKILLs and reaps every remaining child. All methods take
//! `&self` (per-node mutexes, never held across an await), so a cluster can be shared
//! between a workload and a nemesis task.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::manifest::Manifest;
use super::network::ClusterNetwork;
use super::signal::{self, Sig};
use super::{poll_until, ClusterError};
use crate::pb::v1 as pb;
use crate::pb::v1::cluster_client::ClusterClient;
use crate::pb::v1::kv_client::KvClient;

/// How long a node may take from spawn to answering `Cluster/Status`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the running nodes to agree on a leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one `Cluster/Status` call (a frozen node never answers).
pub const STATUS_RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connect timeout of the channels this module creates.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Per-request timeout of the channels handed out by [`LocalCluster::channel`].
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Output lines of each node kept in memory for [`LocalCluster::log_tail`].
pub const LOG_RING_LINES: usize = 500;
/// Longer output lines are truncated to this many bytes.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// Environment variables that would give every node the same identity (the node reads
/// `MERIDIAN_*` overrides): removed from the children's environment.
pub const NODE_IDENTITY_ENV: [&str; 6] = [
    "MERIDIAN_ID",
    "MERIDIAN_REGION",
    "MERIDIAN_API_ADDR",
    "MERIDIAN_RAFT_ADDR",
    "MERIDIAN_DATA_DIR",
    "MERIDIAN_CLUSTER_NAME",
];

/// Where node output goes (in addition to the in-memory tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Our stderr, each line prefixed `[node-N]`.
    Stderr,
    /// `<data root>/node-N.log` (appended across restarts).
    Files,
}

/// How to launch the cluster.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The `meridian` binary.
    pub binary: PathBuf,
    /// Where node output goes.
    pub logs: LogTarget,
    /// Give the first manifest node `bootstrap = true`.
    pub bootstrap: bool,
    /// Put every node in its own process group, so a terminal's Ctrl-C reaches only
    /// the launcher, which then stops the nodes in order. Tests leave this off so an
    /// interrupted test run takes its nodes with it.
    pub own_process_group: bool,
    /// Spawn-to-ready deadline per node.
    pub ready_timeout: Duration,
    /// SIGTERM-to-exit deadline before SIGKILL.
    pub stop_timeout: Duration,
    /// Route every node-to-node link through the fault proxy even if the manifest's
    /// `[network] proxy` is off (either one turns it on).
    pub proxy: bool,
}

impl LaunchOptions {
    /// Defaults: output to stderr, bootstrap on, shared process group, the default
    /// timeouts.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            logs: LogTarget::Stderr,
            bootstrap: true,
            own_process_group: false,
            ready_timeout: READY_TIMEOUT,
            stop_timeout: STOP_TIMEOUT,
            proxy: false,
        }
    }
}

/// The binary to run: `explicit`, else the manifest's `binary`, else our own
/// executable (when running as `meridian`).
pub fn resolve_binary(
    explicit: Option<&Path>,
    manifest: &Manifest,
) -> Result<PathBuf, ClusterError> {
    let path = match explicit.or(manifest.binary.as_deref()) {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| ClusterError::io("cannot find the running executable", e))?,
    };
    if !path.is_file() {
        return Err(ClusterError::io(
            format!("meridian binary {}", path.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "not found or not a file"),
        ));
    }
    // Nodes run in the data root: a relative path must not be resolved there.
    std::fs::canonicalize(&path)
        .map_err(|e| ClusterError::io(format!("meridian binary {}", path.display()), e))
}

/// Lines of one node: the in-memory tail plus the forwarding destination.
#[derive(Clone)]
struct LineSink {
    prefix: String,
    ring: Arc<Mutex<VecDeque<String>>>,
    file: Option<Arc<Mutex<File>>>,
}

impl LineSink {
    fn emit(&self, line: &str) {
        {
            let mut ring = lock(&self.ring);
            if ring.len() >= LOG_RING_LINES {
                ring.pop_front();
            }
            ring.push_back(line.to_string());
        }
        // Losing a log line (closed stderr, full disk) must not take the cluster down.
        match &self.file {
            Some(file) => {
                let _ = writeln!(lock(file), "{} {line}", self.prefix);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{} {line}", self.prefix);
            }
        }
    }

    fn forward(&self, reader: impl Read + Send + 'static) -> std::io::Result<JoinHandle<()>> {
        let sink = self.clone();
        std::thread::Builder::new().name(format!("log{}", self.prefix)).spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        buf.truncate(MAX_LOG_LINE_BYTES);
                        sink.emit(&String::from_utf8_lossy(&buf));
                    }
                }
            }
        })
    }
}

/// One node: its files and, while running, its child process.
struct NodeProcess {
    api_addr: SocketAddr,
    config_path: PathBuf,
    extra_args: Vec<String>,
    sink: LineSink,
    child: Option<Child>,
    paused: bool,
    forwarders: Vec<JoinHandle<()>>,
    last_exit: Option<ExitStatus>,
}

impl NodeProcess {
    /// Wait for the output threads (they end at EOF, once the child has exited) and
    /// record the exit.
    fn reaped(&mut self, status: ExitStatus) {
        self.child = None;
        self.paused = false;
        for handle in self.forwarders.drain(..) {
            let _ = handle.join();
        }
        self.sink.emit(&format!("[launcher] exited: {}", describe_exit(status)));
        self.last_exit = Some(status);
    }

    /// The exit status if the child has exited (and reap it); None while it runs.
    fn poll_exit(&mut self) -> Result<Option<ExitStatus>, std::io::Error> {
        let Some(child) = self.child.as_mut() else { return Ok(self.last_exit) };
        match child.try_wait()? {
            Some(status) => {
                self.reaped(status);
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }
}

/// "exit code 0", "signal 9 (SIGKILL)", ...
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "killed by signal 9 (SIGKILL)".to_string(),
        (None, Some(15)) => "killed by signal 15 (SIGTERM)".to_string(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("{status}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster of local node processes. See the module docs.
pub struct LocalCluster {
    manifest: Manifest,
    data_root: PathBuf,
    options: LaunchOptions,
    nodes: BTreeMap<u64, Mutex<NodeProcess>>,
    network: Option<Arc<ClusterNetwork>>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("name", &self.manifest.name)
            .field("data_root", &self.data_root)
            .field("pids", &self.pids())
            .finish()
    }
}

impl LocalCluster {
    /// Prepare a cluster: create the data root, build the proxied network if asked
    /// (then this must run inside a tokio runtime), write every node's config file,
    /// open the log files. Spawns nothing.
    pub fn new(manifest: Manifest, options: LaunchOptions) -> Result<Self, ClusterError> {
        let root = &manifest.data_dir;
        std::fs::create_dir_all(root).map_err(|e| {
            ClusterError::io(format!("cannot create data dir {}", root.display()), e)
        })?;
        let data_root = std::fs::canonicalize(root).map_err(|e| {
            ClusterError::io(format!("cannot resolve data dir {}", root.display()), e)
        })?;
        let network = if options.proxy || manifest.network.proxy {
            let net = ClusterNetwork::build(&manifest, manifest.network.client_proxy)?;
            let latency = Duration::from_millis(manifest.network.latency_ms);
            let jitter = Duration::from_millis(manifest.network.jitter_ms);
            net.set_latency(latency, jitter, None)?;
            Some(Arc::new(net))
        } else {
            None
        };
        let mut nodes = BTreeMap::new();
        for node in &manifest.nodes {
            let id = node.id;
            let mut config = manifest
                .node_config(id, &data_root, options.bootstrap)
                .map_err(|message| ClusterError::Manifest { origin: "manifest".into(), message })?;
            if let Some(net) = &network {
                config.routes = net.routes(id)?;
            }
            let config_path = data_root.join(format!("node-{id}.toml"));
            let text = toml::to_string(&config).map_err(|e| {
                ClusterError::io(
                    format!("cannot encode config of node {id}"),
                    std::io::Error::other(e),
                )
            })?;
            std::fs::write(&config_path, text).map_err(|e| {
                ClusterError::io(format!("cannot write {}", config_path.display()), e)
            })?;
            let file = match options.logs {
                LogTarget::Stderr => None,
                LogTarget::Files => {
                    let path = data_root.join(format!("node-{id}.log"));
                    let f =
                        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(
                            |e| ClusterError::io(format!("cannot open {}", path.display()), e),
                        )?;
                    Some(Arc::new(Mutex::new(f)))
                }
            };
            let sink = LineSink {
                prefix: format!("[node-{id}]"),
                ring: Arc::new(Mutex::new(VecDeque::with_capacity(LOG_RING_LINES))),
                file,
            };
            nodes.insert(
                id,
                Mutex::new(NodeProcess {
                    api_addr: node.api_addr,
                    config_path,
                    extra_args: node.extra_args.clone(),
                    sink,
                    child: None,
                    paused: false,
                    forwarders: Vec::new(),
                    last_exit: None,
                }),
            );
        }
        Ok(Self { manifest, data_root, options, nodes, network })
    }

    /// The proxied network, when links are routed through the fault proxy.
    pub fn network(&self) -> Option<&Arc<ClusterNetwork>> {
        self.network.as_ref()
    }

    /// Where a client should connect to reach node `id`: its client link when the
    /// network has client links, else its API address.
    pub fn client_addr(&self, id: u64) -> Result<SocketAddr, ClusterError> {
        let direct = self.api_addr(id)?;
        Ok(self.network.as_ref().and_then(|n| n.client_addr(id)).unwrap_or(direct))
    }

    /// [`new`](Self::new), then [`start_all`](Self::start_all).
    pub async fn launch(manifest: Manifest, options: LaunchOptions) -> Result<Self, ClusterError> {
        let cluster = Self::new(manifest, options)?;
        cluster.start_all().await?;
        Ok(cluster)
    }

    /// The manifest this cluster runs.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The absolute data root.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// Node ids in ascending order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn node(&self, id: u64) -> Result<&Mutex<NodeProcess>, ClusterError> {
        self.nodes.get(&id).ok_or(ClusterError::UnknownNode(id))
    }

    /// The data dir of node `id`.
    pub fn node_data_dir(&self, id: u64) -> PathBuf {
        self.data_root.join(format!("node-{id}"))
    }

    /// The generated config file of node `id`.
    pub fn config_path(&self, id: u64) -> Result<PathBuf, ClusterError> {
        Ok(lock(self.node(id)?).config_path.clone())
    }

    /// The output file of node `id` (written only with [`LogTarget::Files`]).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.data_root.join(format!("node-{id}.log"))
    }

    /// The API address of node `id` (host:port).
    pub fn api_addr(&self, id: u64) -> Result<SocketAddr, ClusterError> {
        Ok(lock(self.node(id)?).api_addr)
    }

    /// Where a client pinned to `region` connects to reach node `id`: that region's
    /// client link when the manifest has region latencies, else
    /// [`client_addr`](Self::client_addr).
    pub fn region_client_addr(&self, region: &str, id: u64) -> Result<SocketAddr, ClusterError> {
        match self.network.as_ref().and_then(|n| n.region_client_addr(region, id)) {
            Some(addr) => Ok(addr),
            None => self.client_addr(id),
        }
    }

    /// `http://host:port` of every node's API, by id.
    pub fn endpoints(&self) -> BTreeMap<u64, String> {
        self.nodes.iter().map(|(id, p)| (*id, format!("http://{}", lock(p).api_addr))).collect()
    }

    /// The pid of node `id` while it runs (paused counts as running).
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id).and_then(|p| lock(p).child.as_ref().map(Child::id))
    }

    /// Pids of the running nodes, by id.
    pub fn pids(&self) -> BTreeMap<u64, u32> {
        self.nodes.keys().filter_map(|id| self.pid(*id).map(|pid| (*id, pid))).collect()
    }

    /// True while node `id` has an unreaped process that has not exited.
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|p| matches!(lock(p).poll_exit(), Ok(None)))
    }

    /// True while node `id` is frozen by [`pause`](Self::pause).
    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|p| lock(p).paused)
    }

    /// Running, unpaused nodes: the ones expected to answer RPCs.
    pub fn responsive_ids(&self) -> Vec<u64> {
        self.ids().into_iter().filter(|id| self.is_running(*id) && !self.is_paused(*id)).collect()
    }

    /// How node `id` last exited, if it has.
    pub fn last_exit(&self, id: u64) -> Option<ExitStatus> {
        self.nodes.get(&id).and_then(|p| lock(p).last_exit)
    }

    /// Spawn node `id` without waiting for it (no-op while it runs).
    pub fn spawn(&self, id: u64) -> Result<u32, ClusterError> {
        let mut p = lock(self.node(id)?);
        let io = |what: &str, e| ClusterError::io(format!("node {id}: {what}"), e);
        if let Some(child) = p.child.as_ref() {
            let pid = child.id();
            if p.poll_exit().map_err(|e| io("cannot check process", e))?.is_none() {
                return Ok(pid);
            }
        }
        let mut cmd = Command::new(&self.options.binary);
        cmd.arg("node").arg("--config").arg(&p.config_path).args(&p.extra_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.current_dir(&self.data_root);
        for var in NODE_IDENTITY_ENV {
            cmd.env_remove(var);
        }
        // Colour codes only help on a terminal; keep log files and pipes plain.
        if self.options.logs == LogTarget::Files || !std::io::stderr().is_terminal() {
            cmd.env("NO_COLOR", "1");
        }
        if self.options.own_process_group {
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io(&format!("cannot run {}", self.options.binary.display()), e))?;
        let pid = child.id();
        p.sink.emit(&format!("[launcher] started: pid {pid}, config {}", p.config_path.display()));
        let mut forwarders = Vec::new();
        if let Some(out) = child.stdout.take() {
            forwarders.push(p.sink.forward(out).map_err(|e| io("cannot start log thread", e))?);
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(p.sink.forward(err).map_err(|e| io("cannot start log thread", e))?);
        }
        p.child = Some(child);
        p.paused = false;
        p.forwarders = forwarders;
        Ok(pid)
    }

    /// Spawn every node, then wait until each answers `Cluster/Status`.
    pub async fn start_all(&self) -> Result<(), ClusterError> {
        for id in self.ids() {
            self.spawn(id)?;
        }
        let waits =
            self.ids().into_iter().map(|id| self.wait_ready(id, self.options.ready_timeout));
        for result in futures::future::join_all(waits).await {
            result?;
        }
        Ok(())
    }

    /// Spawn node `id` (if not running) and wait until it answers `Cluster/Status`.
    pub async fn start(&self, id: u64) -> Result<(), ClusterError> {
        self.spawn(id)?;
        self.wait_ready(id, self.options.ready_timeout).await
    }

    /// Poll until node `id` answers `Cluster/Status`; fail at once, with its last
    /// output lines, if the process exits first.
    pub async fn wait_ready(&self, id: u64, timeout: Duration) -> Result<(), ClusterError> {
        let what = format!("node {id} to answer Cluster/Status");
        let outcome = poll_until(&what, timeout, || async {
            let exited = {
                let mut p = lock(self.node(id).map_err(|e| e.to_string())?);
                p.poll_exit().map_err(|e| format!("cannot check process: {e}"))?
            };
            if let Some(status) = exited {
                return Ok(Err(ClusterError::ExitedEarly {
                    id,
                    status: describe_exit(status),
                    log_tail: self.log_tail(id, 30),
                }));
            }
            match self.status(id).await {
                Ok(_) => Ok(Ok(())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        match outcome {
            Ok(inner) => inner,
            Err(ClusterError::Timeout { what, timeout, last }) => Err(ClusterError::Timeout {
                what,
                timeout,
                last: format!("{last}; last output lines:\n{}", self.log_tail(id, 30)),
            }),
            Err(e) => Err(e),
        }
    }

    /// SIGKILL node `id` (kill -9) and reap it.
    pub fn kill(&self, id: u64) -> Result<ExitStatus, ClusterError> {
        let mut p = lock(self.node(id)?);
        let Some(child) = p.child.as_mut() else { return Err(ClusterError::NotRunning(id)) };
        // An already-exited child makes kill() fail with InvalidInput; wait() still reaps it.
        let _ = child.kill();
        let status =
            child.wait().map_err(|e| ClusterError::io(format!("node {id}: cannot reap"), e))?;
        p.reaped(status);
        Ok(status)
    }

    /// Stop node `id` gracefully: SIGTERM (plus SIGCONT if paused), wait up to the stop
    /// timeout, then SIGKILL. Returns how it exited.
    pub async fn stop(&self, id: u64) -> Result<ExitStatus, ClusterError> {
        self.signal(id, Sig::Term)?;
        if self.is_paused(id) {
            self.resume(id)?;
        }
        let what = format!("node {id} to exit after SIGTERM");
        let exited = poll_until(&what, self.options.stop_timeout, || async {
            let mut p = lock(self.node(id).map_err(|e| e.to_string())?);
            match p.poll_exit() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_string()),
                Err(e) => Err(format!("cannot check process: {e}")),
            }
        })
        .await;
        match exited {
            Ok(status) => Ok(status),
            Err(ClusterError::Timeout { .. }) => {
                lock(self.node(id)?).sink.emit("[launcher] no exit after SIGTERM: sending SIGKILL");
                self.kill(id)
            }
            Err(e) => Err(e),
        }
    }

    /// Stop every running node concurrently (see [`stop`](Self::stop)).
    pub async fn stop_all(&self) -> Vec<(u64, Result<ExitStatus, ClusterError>)> {
        let running: Vec<u64> = self.ids().into_iter().filter(|id| self.is_running(*id)).collect();
        let stops = running.iter().map(|id| self.stop(*id));
        running.iter().copied().zip(futures::future::join_all(stops).await).collect()
    }

    /// Stop node `id` if it runs, then start it again and wait until it is ready.
    pub async fn restart(&self, id: u64) -> Result<(), ClusterError> {
        if self.is_running(id) {
            self.stop(id).await?;
        }
        self.start(id).await
    }

    /// Freeze node `id` (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&self, id: u64) -> Result<(), ClusterError> {
        self.signal(id, Sig::Stop)?;
        lock(self.node(id)?).paused = true;
        Ok(())
    }

    /// Thaw node `id` (SIGCONT).
    pub fn resume(&self, id: u64) -> Result<(), ClusterError> {
        self.signal(id, Sig::Cont)?;
        lock(self.node(id)?).paused = false;
        Ok(())
    }

    /// Send `sig` to node `id`'s process (only while it is our unreaped child).
    pub fn signal(&self, id: u64, sig: Sig) -> Result<(), ClusterError> {
        let p = lock(self.node(id)?);
        let Some(child) = p.child.as_ref() else { return Err(ClusterError::NotRunning(id)) };
        signal::send(child.id(), sig)
            .map_err(|e| ClusterError::io(format!("node {id}: cannot send {sig:?}"), e))
    }

    /// A new lazily connecting gRPC channel to node `id` (connect timeout
    /// [`CONNECT_TIMEOUT`], per-request timeout [`RPC_TIMEOUT`]). Keep it and reuse it;
    /// it reconnects after a node restart. Must be called inside a tokio runtime.
    pub fn channel(&self, id: u64) -> Result<Channel, ClusterError> {
        let scheme = if self.manifest.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", self.api_addr(id)?);
        let mut endpoint =
            Endpoint::from_shared(url.clone()).map_err(|_| ClusterError::Endpoint(url.clone()))?;
        if let Some(tls) = &self.manifest.tls {
            endpoint =
                endpoint.tls_config(launcher_tls(tls)?).map_err(|_| ClusterError::Endpoint(url))?;
        }
        Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).timeout(RPC_TIMEOUT).connect_lazy())
    }

    /// A Kv client for node `id` (see [`channel`](Self::channel)).
    pub fn kv(&self, id: u64) -> Result<KvClient<Channel>, ClusterError> {
        Ok(KvClient::new(self.channel(id)?))
    }

    /// A Cluster-service client for node `id` (see [`channel`](Self::channel)).
    pub fn cluster_client(&self, id: u64) -> Result<ClusterClient<Channel>, ClusterError> {
        Ok(ClusterClient::new(self.channel(id)?))
    }

    /// `Cluster/Status` of node `id`, within [`STATUS_RPC_TIMEOUT`].
    pub async fn status(&self, id: u64) -> Result<pb::StatusResponse, ClusterError> {
        let mut client = self.cluster_client(id)?;
        let call = client.status(pb::StatusRequest {});
        match tokio::time::timeout(STATUS_RPC_TIMEOUT, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => {
                Err(ClusterError::Rpc { id, call: "Cluster/Status", status: Box::new(status) })
            }
            Err(_) => Err(ClusterError::Rpc {
                id,
                call: "Cluster/Status",
                status: Box::new(tonic::Status::deadline_exceeded(format!(
                    "no answer within {STATUS_RPC_TIMEOUT:?}"
                ))),
            }),
        }
    }

    /// `Cluster/Status` of every responsive node, concurrently, by id.
    pub async fn statuses(&self) -> BTreeMap<u64, Result<pb::StatusResponse, ClusterError>> {
        let ids = self.responsive_ids();
        let calls = ids.iter().map(|id| self.status(*id));
        ids.iter().copied().zip(futures::future::join_all(calls).await).collect()
    }

    /// Poll until every responsive node names the same leader (id != 0), that leader
    /// is responsive and reports role LEADER; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, ClusterError> {
        poll_until("a leader that every running node agrees on", timeout, || async {
            let statuses = self.statuses().await;
            if statuses.is_empty() {
                return Err("no node is running".to_string());
            }
            let mut seen = Vec::new();
            for (id, s) in &statuses {
                match s {
                    Ok(s) => seen.push(format!(
                        "node {id}: {:?} term {} leader {}",
                        s.role(),
                        s.term,
                        s.leader_id
                    )),
                    Err(e) => return Err(e.to_string()),
                }
            }
            let observation = seen.join("; ");
            // An initial member that has not learned the membership yet must catch up
            // first (a request it got now would fail NOT_INITIALIZED); standbys waiting
            // to be added have no say.
            let standby = |id: &u64| self.manifest.nodes.iter().any(|n| n.id == *id && n.standby);
            let behind = statuses
                .iter()
                .any(|(id, s)| s.as_ref().is_ok_and(|s| !s.initialized) && !standby(id));
            if behind {
                return Err(format!("{observation} (a member is not initialised yet)"));
            }
            let leaders: Vec<u64> = statuses
                .values()
                .flatten()
                .filter(|s| s.initialized)
                .map(|s| s.leader_id)
                .collect();
            let leader = leaders.first().copied().unwrap_or(0);
            if leader == 0 || leaders.iter().any(|l| *l != leader) {
                return Err(observation);
            }
            match statuses.get(&leader) {
                Some(Ok(s)) if s.role() == pb::Role::Leader => Ok(leader),
                _ => Err(observation),
            }
        })
        .await
    }

    /// [`wait_for_leader`](Self::wait_for_leader) with [`LEADER_TIMEOUT`].
    pub async fn leader(&self) -> Result<u64, ClusterError> {
        self.wait_for_leader(LEADER_TIMEOUT).await
    }

    /// Poll until every responsive node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ClusterError> {
        let what = format!("every running node to apply index {index}");
        poll_until(&what, timeout, || async {
            let statuses = self.statuses().await;
            let mut behind = Vec::new();
            for (id, s) in &statuses {
                match s {
                    Ok(s) if s.applied_index >= index => {}
                    Ok(s) => behind.push(format!("node {id} applied {}", s.applied_index)),
                    Err(e) => behind.push(e.to_string()),
                }
            }
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join("; "))
            }
        })
        .await
    }

    /// Poll until every responsive node has applied the same index and no node knows
    /// of a higher commit index (the cluster is quiescent and converged); returns it.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<u64, ClusterError> {
        poll_until(
            "every running node to apply the same, fully committed index",
            timeout,
            || async {
                let statuses = self.statuses().await;
                let mut seen = Vec::new();
                let mut applied = Vec::new();
                let mut max_commit = 0;
                for (id, s) in &statuses {
                    match s {
                        Ok(s) => {
                            seen.push(format!(
                                "node {id}: commit {} applied {}",
                                s.commit_index, s.applied_index
                            ));
                            applied.push(s.applied_index);
                            max_commit = max_commit.max(s.commit_index);
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                match applied.first() {
                    Some(first) if applied.iter().all(|a| a == first) && *first >= max_commit => {
                        Ok(*first)
                    }
                    _ => Err(seen.join("; ")),
                }
            },
        )
        .await
    }

    /// Poll until node `id` reports a snapshot at index `at_least` or later; returns
    /// its snapshot index. A node's applied index moves when it installs a snapshot,
    /// its `snapshot_index` (Raft's metrics) a moment later, so a test that saw the
    /// node apply must still wait for this.
    pub async fn wait_snapshot(
        &self,
        id: u64,
        at_least: u64,
        timeout: Duration,
    ) -> Result<u64, ClusterError> {
        let what = format!("node {id} to report a snapshot at index {at_least} or later");
        poll_until(&what, timeout, || async {
            let s = self.status(id).await.map_err(|e| e.to_string())?;
            (s.snapshot_index >= at_least)
                .then_some(s.snapshot_index)
                .ok_or(format!("snapshot_index {}", s.snapshot_index))
        })
        .await
    }

    /// Poll `check` until it returns `Ok`, for at most `timeout` (see
    /// [`poll_until`](super::poll_until)).
    pub async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        poll_until(what, timeout, check).await
    }

    /// The last `lines` output lines of node `id` (across restarts).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Some(p) = self.nodes.get(&id) else { return String::new() };
        let ring = Arc::clone(&lock(p).sink.ring);
        let ring = lock(&ring);
        let skip = ring.len().saturating_sub(lines);
        ring.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Print the last `lines` output lines of every node to stderr.
    pub fn dump_logs(&self, lines: usize) {
        let mut err = std::io::stderr().lock();
        for id in self.ids() {
            let _ = writeln!(err, "----- last {lines} output lines of node-{id} -----");
            for line in self.log_tail(id, lines).lines() {
                let _ = writeln!(err, "[node-{id}] {line}");
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for p in self.nodes.values() {
            let mut p = lock(p);
            if let Some(mut child) = p.child.take() {
                // SIGKILL by pid (also ends a SIGSTOPped process), then reap.
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    p.reaped(status);
                }
            }
        }
    }
}

/// The launcher's own TLS settings: the CA and the `admin` client certificate.
fn launcher_tls(
    tls: &super::manifest::ManifestTls,
) -> Result<tonic::transport::ClientTlsConfig, ClusterError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).map_err(|e| ClusterError::io(format!("cannot read {}", p.display()), e))
    };
    let (cert, key) = super::certs::cert_paths(&tls.dir, super::certs::ADMIN_CLIENT);
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(tls.dir.join(super::certs::CA_CERT_FILE))?))
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .domain_name(crate::config::DEFAULT_PEER_DOMAIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_binary_is_made_absolute_before_nodes_change_directory() {
        let manifest = Manifest::embedded_default().expect("manifest");
        // Tests run in the package root, where Cargo.toml is a file.
        let path = resolve_binary(Some(Path::new("Cargo.toml")), &manifest).expect("resolve");
        assert!(path.is_absolute(), "{}", path.display());
        assert!(path.ends_with("Cargo.toml"));
        assert!(resolve_binary(Some(Path::new("no/such/meridian")), &manifest).is_err());
    }
}

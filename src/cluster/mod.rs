//! Local cluster launcher: runs a Meridian cluster as one `meridian node` child
//! process per node on this machine. It backs `meridian cluster up|status|down`, the
//! integration tests' [`TestCluster`] and the Jepsen harness.
//!
//! Pieces:
//! - [`manifest`]: the cluster manifest (TOML): name, data root, binary, nodes, shared
//!   `[raft]` settings. `cluster/local-3.toml` is the embedded default.
//! - [`process`]: [`LocalCluster`], which writes one node config per node, spawns the
//!   children, forwards their output line by line with a `[node-N]` prefix, polls
//!   readiness and leadership over `meridian.v1.Cluster/Status`, and injects process
//!   faults (kill -9, SIGTERM, SIGSTOP/SIGCONT, restart).
//! - [`state`]: `cluster.json`, the record of a running `cluster up` (pids, endpoints)
//!   used by `cluster status` and `cluster down`.
//! - [`signal`]: signals by pid and `/proc` inspection (Linux).
//! - [`testing`]: [`TestCluster`], a [`LocalCluster`] on free 127.0.0.1 ports in a
//!   temporary directory with short Raft timings.
//! - [`proxy`]: the user-space TCP fault proxy (latency, blackhole, reset) that
//!   inter-node links can be routed through.
//! - [`network`]: [`ClusterNetwork`], one proxy link per directed node pair and
//!   service, and faults on nodes (cut, partition, isolate, latency).
//! - [`control`]: the tiny line-JSON control endpoint `meridian cluster up` serves for
//!   a proxied cluster, and its client (`meridian cluster fault`).
//!
//! On-disk layout under a data root `D`: `D/node-N/` is node N's data dir (owned by
//! the node), `D/node-N.toml` its generated config, `D/node-N.log` its output when
//! logging to files, `D/cluster.json` the launcher state.
//!
//! Invariants:
//! - a process is only ever signalled by the pid of a child we spawned, or (for
//!   `cluster down`) by a recorded pid whose `/proc/<pid>/cmdline` still names a
//!   `meridian node` with the recorded config: never by process name;
//! - every wait is a poll of a condition with a deadline ([`poll_until`]), never a
//!   bare sleep;
//! - dropping a [`LocalCluster`] SIGKILLs and reaps every child it still owns.

use std::future::Future;
use std::time::{Duration, Instant};

pub mod certs;
pub mod control;
pub mod manifest;
pub mod network;
pub mod process;
pub mod proxy;
pub mod signal;
pub mod state;
pub mod testing;

pub use manifest::{Manifest, ManifestNode, ManifestTls, NetworkConfig};
pub use network::{ClusterNetwork, Grudge};
pub use process::{LaunchOptions, LocalCluster, LogTarget};
pub use testing::{TestCluster, TestOptions};

/// Interval between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// An error of the launcher or the test cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The manifest is not valid; `origin` names the file (or the embedded default).
    #[error("invalid cluster manifest {origin}: {message}")]
    Manifest {
        /// Manifest path, or "<embedded local-3.toml>".
        origin: String,
        /// What is wrong (parser message with line/column, or the failed rule).
        message: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing (names the path or the node).
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The node id is not in the manifest.
    #[error("node {0} is not part of this cluster")]
    UnknownNode(u64),
    /// The node has no running process.
    #[error("node {0} is not running")]
    NotRunning(u64),
    /// A node process exited while we waited for it to become ready.
    #[error("node {id} exited during start-up ({status}); last output lines:\n{log_tail}")]
    ExitedEarly {
        /// Node id.
        id: u64,
        /// Exit status as text.
        status: String,
        /// Last lines the node printed.
        log_tail: String,
    },
    /// A polled condition did not hold before its deadline.
    #[error("timed out after {timeout:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// What the last check saw.
        last: String,
    },
    /// A gRPC call to a node failed.
    #[error("node {id}: {call} failed: {status}")]
    Rpc {
        /// Node id.
        id: u64,
        /// RPC name.
        call: &'static str,
        /// The gRPC status (boxed: it is large).
        status: Box<tonic::Status>,
    },
    /// An address could not be turned into a gRPC endpoint.
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    /// The fault proxy refused (unknown link or node, bind failure, no runtime).
    #[error("fault proxy: {0}")]
    Proxy(#[from] proxy::ProxyError),
}

impl ClusterError {
    /// Wrap an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ClusterError::Io { context: context.into(), source }
    }
}

/// Poll `check` every [`POLL_INTERVAL`] until it returns `Ok(value)` or `timeout`
/// elapses. `check` returns `Err(observation)` while the condition does not hold; the
/// last observation is reported in the [`ClusterError::Timeout`]. The check runs at
/// least once, even with a zero timeout.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(observation) => observation,
        };
        if Instant::now() >= deadline {
            return Err(ClusterError::Timeout { what: what.to_string(), timeout, last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

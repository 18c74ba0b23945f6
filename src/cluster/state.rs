//! `cluster.json`: what a running `meridian cluster up` leaves in its data root so that
//! `meridian cluster status` and `meridian cluster down` can find the nodes.
//!
//! Written after every node is ready, removed when the launcher stops the cluster. A
//! stale file (the launcher was killed) is harmless: every recorded pid is checked
//! against `/proc/<pid>/cmdline` before it is signalled (see [`super::signal`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signal::{self, Sig};
use super::{poll_until, ClusterError};

/// File name of the launcher state inside the data root.
pub const STATE_FILE: &str = "cluster.json";

/// One node as recorded by the launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Node id.
    pub id: u64,
    /// Region label.
    pub region: String,
    /// Process id of the node.
    pub pid: u32,
    /// gRPC API address (host:port).
    pub api_addr: String,
    /// Raft address (host:port).
    pub raft_addr: String,
    /// The config file the node was started with (identifies the process).
    pub config_path: PathBuf,
}

/// The launcher state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster name.
    pub cluster_name: String,
    /// Manifest path, or the embedded default's name.
    pub manifest: String,
    /// Pid of the `meridian cluster up` process.
    pub launcher_pid: u32,
    /// The nodes.
    pub nodes: Vec<NodeState>,
    /// The fault-proxy control endpoint (host:port) of a proxied cluster, for
    /// `meridian cluster fault`; absent when links are not proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_control: Option<String>,
    /// Client addresses per region (region -> one host:port per node, in node order),
    /// when the manifest has region latencies: a client pinned to a region uses these.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub region_endpoints: std::collections::BTreeMap<String, Vec<String>>,
}

/// Path of the state file in `data_root`.
pub fn state_path(data_root: &Path) -> PathBuf {
    data_root.join(STATE_FILE)
}

impl ClusterState {
    /// Read `<data_root>/cluster.json`; Ok(None) when it does not exist.
    pub fn read(data_root: &Path) -> Result<Option<Self>, ClusterError> {
        let path = state_path(data_root);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ClusterError::io(format!("cannot read {}", path.display()), e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            ClusterError::io(
                format!("{} is not a valid cluster state file", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Write `<data_root>/cluster.json` atomically (temp file, then rename).
    pub fn write(&self, data_root: &Path) -> Result<(), ClusterError> {
        let path = state_path(data_root);
        let tmp = data_root.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| {
            ClusterError::io("cannot encode cluster state", std::io::Error::other(e))
        })?;
        std::fs::write(&tmp, text)
            .map_err(|e| ClusterError::io(format!("cannot write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| ClusterError::io(format!("cannot write {}", path.display()), e))
    }

    /// Remove `<data_root>/cluster.json` (absent is fine).
    pub fn remove(data_root: &Path) -> Result<(), ClusterError> {
        let path = state_path(data_root);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClusterError::io(format!("cannot remove {}", path.display()), e)),
        }
    }

    /// Recorded nodes whose pid still runs the recorded `meridian node`.
    pub fn live_nodes(&self) -> Vec<&NodeState> {
        self.nodes
            .iter()
            .filter(|n| {
                signal::is_alive(n.pid) && signal::is_meridian_node(n.pid, Some(&n.config_path))
            })
            .collect()
    }

    /// True while the recorded launcher process still runs `meridian cluster up`.
    pub fn launcher_alive(&self) -> bool {
        signal::is_alive(self.launcher_pid) && signal::is_meridian_launcher(self.launcher_pid)
    }
}

/// What [`stop_recorded`] did to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Not running (or the pid now belongs to another program): left alone.
    NotRunning,
    /// Exited after SIGTERM.
    Stopped,
    /// Did not exit within the timeout after SIGTERM: SIGKILLed.
    Killed,
}

/// Stop the recorded nodes: SIGTERM each verified pid, wait up to `timeout` for all
/// to exit, SIGKILL whatever remains, then wait for those too.
pub async fn stop_recorded(
    state: &ClusterState,
    timeout: Duration,
) -> Result<Vec<(u64, StopOutcome)>, ClusterError> {
    let mut outcomes = Vec::new();
    let mut signalled = Vec::new();
    for node in &state.nodes {
        let live = signal::is_alive(node.pid)
            && signal::is_meridian_node(node.pid, Some(&node.config_path));
        if !live {
            outcomes.push((node.id, StopOutcome::NotRunning));
            continue;
        }
        signal::send(node.pid, Sig::Term).map_err(|e| {
            ClusterError::io(format!("cannot signal node {} (pid {})", node.id, node.pid), e)
        })?;
        // A frozen (SIGSTOPped) node only acts on SIGTERM once it runs again.
        let _ = signal::send(node.pid, Sig::Cont);
        signalled.push(node);
    }
    let all_gone = || async { remaining(&signalled) };
    if poll_until("recorded nodes to exit after SIGTERM", timeout, all_gone).await.is_ok() {
        outcomes.extend(signalled.iter().map(|n| (n.id, StopOutcome::Stopped)));
        return Ok(outcomes);
    }
    for node in &signalled {
        if signal::is_alive(node.pid) && signal::is_meridian_node(node.pid, Some(&node.config_path))
        {
            let _ = signal::send(node.pid, Sig::Kill);
            outcomes.push((node.id, StopOutcome::Killed));
        } else {
            outcomes.push((node.id, StopOutcome::Stopped));
        }
    }
    poll_until("recorded nodes to exit after SIGKILL", timeout, || async { remaining(&signalled) })
        .await?;
    Ok(outcomes)
}

fn remaining(nodes: &[&NodeState]) -> Result<(), String> {
    let alive: Vec<String> = nodes
        .iter()
        .filter(|n| signal::is_alive(n.pid))
        .map(|n| format!("node-{} (pid {})", n.id, n.pid))
        .collect();
    if alive.is_empty() {
        Ok(())
    } else {
        Err(format!("still running: {}", alive.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ClusterState::read(dir.path()).expect("read"), None);
        let state = ClusterState {
            cluster_name: "c".into(),
            manifest: "m.toml".into(),
            launcher_pid: 1,
            nodes: vec![NodeState {
                id: 1,
                region: "local".into(),
                pid: 2,
                api_addr: "127.0.0.1:1".into(),
                raft_addr: "127.0.0.1:2".into(),
                config_path: "/x/node-1.toml".into(),
            }],
            proxy_control: Some("127.0.0.1:9".into()),
            region_endpoints: [("eu".to_string(), vec!["127.0.0.1:5".to_string()])].into(),
        };
        state.write(dir.path()).expect("write");
        assert_eq!(ClusterState::read(dir.path()).expect("read"), Some(state));
        ClusterState::remove(dir.path()).expect("remove");
        ClusterState::remove(dir.path()).expect("remove again");
    }

    #[test]
    fn a_recorded_pid_of_another_program_is_never_signalled() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let state = ClusterState {
            cluster_name: "c".into(),
            manifest: "m".into(),
            launcher_pid: child.id(),
            nodes: vec![NodeState {
                id: 1,
                region: "local".into(),
                pid: child.id(),
                api_addr: String::new(),
                raft_addr: String::new(),
                config_path: "/nope".into(),
            }],
            region_endpoints: Default::default(),
            proxy_control: None,
        };
        assert!(state.live_nodes().is_empty());
        assert!(!state.launcher_alive());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let out = rt.block_on(stop_recorded(&state, Duration::from_millis(100))).expect("stop");
        assert_eq!(out, vec![(1, StopOutcome::NotRunning)]);
        assert!(signal::is_alive(child.id()), "sleep must not have been signalled");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}

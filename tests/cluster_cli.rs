//! `meridian cluster up|status|down` end to end: the launcher binary with a generated
//! manifest (free ports, temp data dir), driven like a user would.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use meridian::cluster::signal::{self, Sig};
use meridian::cluster::state::ClusterState;

/// How long `cluster up` may take to print its endpoints.
const UP_DEADLINE: Duration = Duration::from_secs(60);
/// How long the launcher may take to exit after SIGINT/SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
/// Launcher stderr lines printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// A running `meridian cluster up`. Drop kills it and (verified) nodes it recorded, so
/// a failing test leaves no process behind; it prints the launcher's output tail.
struct Launcher {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Launcher {
    fn spawn(manifest: &Path, data_dir: &Path, log: &Path) -> Launcher {
        let stderr = std::fs::File::create(log).expect("launcher log file");
        let mut child = Command::new(MERIDIAN)
            .args(["cluster", "up"])
            .arg(manifest)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn meridian cluster up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Launcher { child, data_dir: data_dir.to_path_buf(), log: log.to_path_buf(), lines }
    }

    /// Read stdout until the `endpoints:` line; returns the endpoints and all lines read.
    fn wait_endpoints(&mut self) -> (Vec<String>, Vec<String>) {
        let deadline = Instant::now() + UP_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(list) = line.strip_prefix("endpoints: ") {
                        let eps = list.split(',').map(str::to_string).collect();
                        seen.push(line);
                        return (eps, seen);
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = self.child.try_wait().expect("try_wait") {
                        panic!("cluster up exited early ({status}); stdout: {seen:?}");
                    }
                }
                Err(e) => {
                    panic!("no endpoints line from cluster up ({e:?}); stdout so far: {seen:?}")
                }
            }
        }
    }

    fn state(&self) -> ClusterState {
        ClusterState::read(&self.data_dir).expect("read cluster.json").expect("cluster.json exists")
    }

    /// Poll until the launcher exits; returns its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "cluster up did not exit within {EXIT_DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(50)); // poll interval, deadline-bound
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("----- last launcher output ({}) -----", self.log.display());
            for l in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                eprintln!("{l}");
            }
        }
        if let Ok(Some(state)) = ClusterState::read(&self.data_dir) {
            for n in state.live_nodes() {
                let _ = signal::send(n.pid, Sig::Kill);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 3-node manifest on free ports with test Raft timings.
fn write_manifest(dir: &Path, data_dir: &Path) -> PathBuf {
    let ports = free_ports(6).expect("free ports");
    let mut text = format!(
        "name = \"cli-test\"\ndata_dir = {:?}\n\n[raft]\nheartbeat_interval_ms = 50\n\
         election_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n",
        data_dir.display().to_string()
    );
    for i in 0..3 {
        text.push_str(&format!(
            "\n[[node]]\nid = {}\nregion = \"local\"\napi_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n",
            i + 1,
            ports[2 * i],
            ports[2 * i + 1]
        ));
    }
    let path = dir.join("manifest.toml");
    std::fs::write(&path, text).expect("write manifest");
    path
}

async fn kv_at(endpoint: &str) -> pb::kv_client::KvClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    pb::kv_client::KvClient::new(channel)
}

fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + EXIT_DEADLINE;
    while pids.iter().any(|p| signal::is_alive(*p)) {
        assert!(Instant::now() < deadline, "node processes still alive: {pids:?}");
        std::thread::sleep(Duration::from_millis(50)); // poll interval, deadline-bound
    }
}

fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(MERIDIAN).args(args).output().expect("run meridian")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_serves_requests_and_sigint_stops_every_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let manifest = write_manifest(tmp.path(), &data_dir);
    let mut up = Launcher::spawn(&manifest, &data_dir, &tmp.path().join("launcher.log"));
    let (endpoints, stdout) = up.wait_endpoints();
    assert_eq!(endpoints.len(), 3, "{stdout:?}");
    assert!(stdout.iter().any(|l| l.contains("leader node-")), "the leader is printed: {stdout:?}");

    let state = up.state();
    let pids: Vec<u32> = state.nodes.iter().map(|n| n.pid).collect();
    assert_eq!(state.launcher_pid, up.child.id());
    assert_eq!(state.live_nodes().len(), 3, "every recorded pid is a live meridian node");

    // A write through one endpoint is read back through another.
    let written =
        put_ok(&kv_at(&endpoints[1]).await, b"hello", b"world").await.record.expect("record");
    let got = get(&kv_at(&endpoints[2]).await, b"hello", pb::Consistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(got.record, Some(written));

    let status =
        run_cli(&["cluster", "status", "--data-dir", data_dir.to_str().expect("utf8 path")]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "cluster status: {table} {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(table.matches("leader").count(), 1, "one leader in the table:\n{table}");
    assert_eq!(table.matches("follower").count(), 2, "two followers in the table:\n{table}");

    signal::send(up.child.id(), Sig::Int).expect("SIGINT the launcher");
    assert_eq!(up.wait_exit(), Some(0), "cluster up exits 0 after SIGINT");
    assert_all_gone(&pids);
    assert!(ClusterState::read(&data_dir).expect("read").is_none(), "cluster.json is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_down_stops_the_nodes_and_up_restarts_on_the_same_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let data_arg = data_dir.to_str().expect("utf8 path").to_string();
    let manifest = write_manifest(tmp.path(), &data_dir);

    let mut first = Launcher::spawn(&manifest, &data_dir, &tmp.path().join("launcher-1.log"));
    let (endpoints, _) = first.wait_endpoints();
    let written =
        put_ok(&kv_at(&endpoints[0]).await, b"persistent", b"yes").await.record.expect("record");
    let pids: Vec<u32> = first.state().nodes.iter().map(|n| n.pid).collect();

    // A second `up` on the same data dir is refused while the first runs.
    let again =
        run_cli(&["cluster", "up", manifest.to_str().expect("utf8"), "--data-dir", &data_arg]);
    assert_eq!(again.status.code(), Some(1), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let down = run_cli(&["cluster", "down", "--data-dir", &data_arg]);
    assert!(down.status.success(), "cluster down: {}", String::from_utf8_lossy(&down.stderr));
    assert_all_gone(&pids);
    assert_eq!(first.wait_exit(), Some(0), "the launcher exits once its nodes are down");
    assert!(ClusterState::read(&data_dir).expect("read").is_none(), "cluster.json is removed");

    let status = run_cli(&["cluster", "status", "--endpoints", &endpoints.join(",")]);
    assert_eq!(status.status.code(), Some(1), "status of a stopped cluster fails");
    assert_eq!(String::from_utf8_lossy(&status.stdout).matches("down").count(), 3);

    // Up again on the same data dir: the nodes recover, bootstrap is idempotent.
    let mut second = Launcher::spawn(&manifest, &data_dir, &tmp.path().join("launcher-2.log"));
    let (endpoints, _) = second.wait_endpoints();
    let got = get(&kv_at(&endpoints[2]).await, b"persistent", pb::Consistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(got.record, Some(written), "data written before the restart is still there");
    let pids: Vec<u32> = second.state().nodes.iter().map(|n| n.pid).collect();
    signal::send(second.child.id(), Sig::Term).expect("SIGTERM the launcher");
    assert_eq!(second.wait_exit(), Some(0));
    assert_all_gone(&pids);
}

#[test]
fn cluster_up_with_a_bad_manifest_exits_2_naming_the_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("name = \"x\"\nbogus = 1\n[[node]]\nid = 1\napi_addr = \"127.0.0.1:1\"\nraft_addr = \"127.0.0.1:2\"\n", "bogus"),
        (
            "name = \"x\"\n[[node]]\nid = 1\napi_addr = \"127.0.0.1:1\"\nraft_addr = \"127.0.0.1:2\"\n\
             [[node]]\nid = 1\napi_addr = \"127.0.0.1:3\"\nraft_addr = \"127.0.0.1:4\"\n",
            "listed twice",
        ),
        ("name = \"x\"\n[[node]]\nid = 1\napi_addr = \"not an address\"\nraft_addr = \"127.0.0.1:2\"\n", "api_addr"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let out = run_cli(&["cluster", "up", path.to_str().expect("utf8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains(needle), "case {i}: {stderr:?} does not name {needle:?}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "case {i}: the file is named: {stderr}"
        );
    }
    let missing =
        run_cli(&["cluster", "up", tmp.path().join("missing.toml").to_str().expect("utf8")]);
    assert_eq!(missing.status.code(), Some(2));
}

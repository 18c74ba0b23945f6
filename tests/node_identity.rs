//! A data dir belongs to one node of one cluster: starting another node id or another
//! cluster name on it is refused with exit code 2 and a message naming both.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Deadline for a node to start or exit.
const DEADLINE: Duration = Duration::from_secs(20);

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn node(dir: &std::path::Path, id: u64, cluster: &str, api: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["node", "--id", &id.to_string(), "--cluster-name", cluster])
        .args(["--api-addr", api, "--raft-addr", &free_addr()])
        .arg("--data-dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Run a node that must exit by itself; return (exit code, stderr).
fn run_to_exit(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd.spawn().expect("spawn meridian node");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling the exit, not waiting for time
    }
}

async fn answers_status(api: &str) -> bool {
    use meridian::pb::v1::{cluster_client::ClusterClient, StatusRequest};
    let Ok(mut c) = ClusterClient::connect(format!("http://{api}")).await else { return false };
    c.status(StatusRequest {}).await.is_ok()
}

#[test]
fn data_dir_of_another_node_or_cluster_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("n1");
    // First start claims the data dir for node 1 of cluster "alpha"; stop it with SIGTERM.
    let api = free_addr();
    let mut first = node(&data, 1, "alpha", &api).spawn().expect("spawn");
    let deadline = Instant::now() + DEADLINE;
    // Answering Cluster.Status means the node has opened (and claimed) its data dir.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    while !rt.block_on(answers_status(&api)) {
        assert!(Instant::now() < deadline, "node never started serving");
        assert!(first.try_wait().expect("wait").is_none(), "first node exited early");
        std::thread::sleep(Duration::from_millis(20)); // poll interval of a deadline-bound wait
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&first),
        rustix::process::Signal::TERM,
    )
    .expect("sigterm");
    let status = first.wait().expect("wait first");
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");

    let (code, err) = run_to_exit(node(&data, 2, "alpha", &free_addr()));
    assert_eq!(code, Some(2), "another node id must exit 2; stderr: {err}");
    assert!(err.contains("node 1") && err.contains("node 2"), "message names both ids: {err}");

    let (code, err) = run_to_exit(node(&data, 1, "beta", &free_addr()));
    assert_eq!(code, Some(2), "another cluster must exit 2; stderr: {err}");
    assert!(err.contains("alpha") && err.contains("beta"), "message names both clusters: {err}");
}

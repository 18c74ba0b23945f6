//! Any language, any tool: the Python client (clients/python), a reflection-only
//! client and the standard health service, against real node processes.
//!
//! - `python_client_example_survives_a_leader_kill`: clients/python/example.py runs put,
//!   get, CAS (with a conflict), Txn and a bad request whose error details it prints,
//!   then says READY_FOR_KILL and waits on stdin; the test SIGKILLs the leader by pid and
//!   lets the script go on: its writes and reads must succeed through the survivors
//!   (the wrapper retries, fails over and follows leader hints; writes keep their
//!   request_id).
//! - `python_client_unit_tests_pass`: the wrapper's own unit tests (fake nodes:
//!   redirect, request-id reuse, error decoding), no cluster.
//! - `reflection_only_client_lists_services_and_calls_put_and_get`: a script with no
//!   proto files and no generated code lists the services and calls Kv.Put / Kv.Get.
//! - `minority_node_reports_not_serving_until_the_quorum_returns` and
//!   `uninitialised_nodes_are_not_serving_until_initialised`: the health service, probed
//!   with grpcio-health-checking, goes NOT_SERVING and back to SERVING.
//!
//! Python: the tests skip (with a message) only when `python3` is missing. When the
//! Python packages are missing they skip with the install command, except in CI
//! (`CI=true`), where that is a failure: `python3 -m pip install -r
//! clients/python/requirements.txt` (.ci/run does it).

mod common;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The Python interpreter.
const PYTHON: &str = "python3";
/// Modules the scripts import (from clients/python/requirements.txt).
const PYTHON_MODULES: &str =
    "import grpc, grpc_tools, grpc_status, grpc_reflection, grpc_health, google.protobuf";
/// Longest one Python script may run (stub generation on first use included).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);
/// Longest the health probe may wait for a status change.
const HEALTH_WAIT_SECS: &str = "30";

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// Whether the Python tests can run: false (after saying why) if python3 is missing or,
/// outside CI, if its packages are; in CI missing packages fail the test.
fn python_ready() -> bool {
    match std::process::Command::new(PYTHON).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!("SKIPPED: {PYTHON} is not installed; the Python client tests need it");
            return false;
        }
    }
    let out = std::process::Command::new(PYTHON)
        .args(["-c", PYTHON_MODULES])
        .output()
        .expect("run python3");
    if out.status.success() {
        return true;
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let msg = format!(
        "the Python client's dependencies are missing ({}).\nInstall them with:\n    \
         {PYTHON} -m pip install -r clients/python/requirements.txt",
        why.lines().last().unwrap_or("import failed")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// A running Python script: stdout read line by line, stderr collected.
struct Script {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    output: Vec<String>,
}

impl Script {
    fn spawn(args: &[&str]) -> Script {
        let mut cmd = Command::new(PYTHON);
        cmd.args(args)
            .current_dir(client_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("GRPC_VERBOSITY", "ERROR")
            .env(
                "MERIDIAN_PY_BUILD_DIR",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-stubs"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn python3");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Script { name: args.join(" "), child, stdout, stderr, output: Vec::new() }
    }

    /// Kill the script; the failure report with everything it printed.
    async fn fail(mut self, why: &str) -> String {
        let _ = self.child.kill().await;
        let stderr = self.stderr.await.unwrap_or_default();
        format!(
            "{PYTHON} {}: {why}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            self.name,
            self.output.join("\n")
        )
    }

    /// Read lines until one starts with `marker`; return it.
    async fn read_until(mut self, marker: &str) -> (Script, String) {
        let read = async {
            while let Some(line) = self.stdout.next_line().await.ok().flatten() {
                println!("[python] {line}");
                self.output.push(line.clone());
                if line.starts_with(marker) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(SCRIPT_DEADLINE, read).await {
            Ok(Some(line)) => (self, line),
            Ok(None) => panic!("{}", self.fail(&format!("exited before printing {marker}")).await),
            Err(_) => {
                panic!("{}", self.fail(&format!("no {marker} within {SCRIPT_DEADLINE:?}")).await)
            }
        }
    }

    /// Send one line to the script's stdin.
    async fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to the script");
        stdin.flush().await.expect("flush the script's stdin");
    }

    /// Read the rest of stdout and wait for the exit: (status, every stdout line).
    async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        drop(self.child.stdin.take());
        let run = async {
            while let Some(line) = self.stdout.next_line().await.ok().flatten() {
                println!("[python] {line}");
                self.output.push(line);
            }
            self.child.wait().await
        };
        match tokio::time::timeout(SCRIPT_DEADLINE, run).await {
            Ok(Ok(status)) => {
                let stderr = self.stderr.await.unwrap_or_default();
                if !status.success() {
                    panic!(
                        "{PYTHON} {} exited with {status}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
                        self.name,
                        self.output.join("\n")
                    );
                }
                (status, self.output)
            }
            Ok(Err(e)) => panic!("{}", self.fail(&format!("wait failed: {e}")).await),
            Err(_) => {
                panic!("{}", self.fail(&format!("still running after {SCRIPT_DEADLINE:?}")).await)
            }
        }
    }
}

/// Run a script to completion; panic (with its output) unless it exits 0.
async fn run(args: &[&str]) -> Vec<String> {
    Script::spawn(args).finish().await.1
}

fn line_with<'a>(output: &'a [String], prefix: &str) -> &'a str {
    output
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", output.join("\n")))
}

/// `key=value` field of a result line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn addr(cluster: &LocalCluster, id: u64) -> String {
    cluster.api_addr(id).expect("api addr").to_string()
}

#[tokio::test]
async fn python_client_example_survives_a_leader_kill() {
    if !python_ready() {
        return;
    }
    let cluster = start(3).await;
    let leader = cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
    // The leader first: the client sticks to it, so the kill hits its current endpoint.
    let mut ids = cluster.ids();
    ids.sort_by_key(|id| *id != leader);
    let endpoints = ids.iter().map(|id| addr(&cluster, *id)).collect::<Vec<_>>().join(",");

    let script = Script::spawn(&[
        "example.py",
        "--endpoints",
        &endpoints,
        "--prefix",
        "py-example/",
        "--pause-for-kill",
    ]);
    let (mut script, _) = script.read_until("READY_FOR_KILL").await;
    let before = script.output.clone();
    assert_eq!(field(line_with(&before, "CAS_CONFLICT"), "current_version"), "2");
    let details = line_with(&before, "ERROR_DETAILS");
    assert_eq!(field(details, "code"), "INVALID_ARGUMENT");
    assert_eq!(field(details, "reason"), "INVALID_ARGUMENT");
    assert_eq!(field(details, "domain"), "meridian");
    assert_eq!(field(details, "attempts"), "1", "INVALID_ARGUMENT is not retried");
    assert_eq!(field(line_with(&before, "TXN "), "succeeded"), "True");
    assert_eq!(field(line_with(&before, "TXN_ELSE"), "alice"), "70");

    let status = cluster.kill(leader).expect("kill the leader");
    println!("killed leader node {leader}: {status:?}");
    script.send("go").await;
    let (_, output) = script.finish().await;

    let done = line_with(&output, "FAILOVER_OK");
    let served_by: u64 = field(done, "served_by").parse().expect("served_by");
    assert_ne!(served_by, leader, "the killed leader cannot have served the read");
    let retries: u64 = field(done, "retries").parse().expect("retries");
    assert!(retries >= 1, "the first call after the kill went to the dead leader: {done}");
    line_with(&output, "DONE");

    let survivor = cluster.responsive_ids()[0];
    let kv = cluster.kv(survivor).expect("kv client");
    let got = get(&kv, b"py-example/after-failover", pb::Consistency::Linearizable)
        .await
        .expect("read back");
    let record = got.record.expect("the key written after the failover exists");
    assert_eq!(record.value, b"updated");
    assert_eq!(record.version, 2);
}

#[tokio::test]
async fn python_client_unit_tests_pass() {
    if !python_ready() {
        return;
    }
    run(&["-m", "unittest", "discover", "-s", "tests", "-v"]).await;
}

#[tokio::test]
async fn reflection_only_client_lists_services_and_calls_put_and_get() {
    if !python_ready() {
        return;
    }
    let cluster = start(3).await;
    let node = follower(&cluster).await;
    let output =
        run(&["reflection_demo.py", "--endpoint", &addr(&cluster, node), "--key", "refl/k"]).await;
    for service in ["meridian.v1.Kv", "meridian.v1.Cluster", "grpc.health.v1.Health"] {
        assert!(
            output.iter().any(|l| l == &format!("SERVICE {service}")),
            "reflection does not list {service}: {output:?}"
        );
    }
    assert!(
        !output.iter().any(|l| l == "SERVICE meridian.v1.Raft"),
        "the internal Raft service must not be advertised: {output:?}"
    );
    assert_eq!(line_with(&output, "GET_VALUE"), "GET_VALUE hello from reflection");
    let kv = cluster.kv(cluster.ids()[0]).expect("kv client");
    let got = get(&kv, b"refl/k", pb::Consistency::Linearizable).await.expect("get");
    assert_eq!(got.record.map(|r| r.value), Some(b"hello from reflection".to_vec()));
}

/// Probe the endpoints' health with the Python health client until each reports
/// `want`; the `HEALTH ...` line of each.
async fn wait_health(endpoints: &[String], want: &str) -> Vec<String> {
    let mut args = vec!["health_check.py", "--wait-for", want, "--timeout", HEALTH_WAIT_SECS];
    for e in endpoints {
        args.extend(["--endpoint", e.as_str()]);
    }
    let output = run(&args).await;
    output.into_iter().filter(|l| l.starts_with("HEALTH")).collect()
}

#[tokio::test]
async fn minority_node_reports_not_serving_until_the_quorum_returns() {
    if !python_ready() {
        return;
    }
    let cluster = start(3).await;
    let leader = cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
    let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let (paused_follower, probe) = (others[0], others[1]);
    let endpoint = addr(&cluster, probe);
    wait_health(std::slice::from_ref(&endpoint), "SERVING").await;

    // The probed node is left alone: no leader and no quorum to elect one.
    cluster.pause(leader).expect("pause the leader");
    cluster.pause(paused_follower).expect("pause a follower");
    let line = wait_health(std::slice::from_ref(&endpoint), "NOT_SERVING").await;
    println!("node {probe} alone: {line:?}");
    let output =
        run(&["health_check.py", "--endpoint", &endpoint, "--service", "meridian.v1.Cluster"])
            .await;
    assert!(line_with(&output, "HEALTH").contains("status=SERVING"), "Cluster stays SERVING");

    cluster.resume(leader).expect("resume the leader");
    cluster.resume(paused_follower).expect("resume the follower");
    let line = wait_health(std::slice::from_ref(&endpoint), "SERVING").await;
    println!("node {probe} after the quorum returned: {line:?}");
    let all: Vec<String> = cluster.ids().into_iter().map(|id| addr(&cluster, id)).collect();
    wait_health(&all, "SERVING").await;
}

#[tokio::test]
async fn uninitialised_nodes_are_not_serving_until_initialised() {
    if !python_ready() {
        return;
    }
    let mut options = options();
    options.bootstrap = false;
    let cluster = TestCluster::start(3, options).await.expect("three uninitialised nodes");
    let all: Vec<String> = cluster.ids().into_iter().map(|id| addr(&cluster, id)).collect();
    let lines = wait_health(&all, "NOT_SERVING").await;
    println!("before Initialize: {lines:?}");

    let members = cluster
        .ids()
        .into_iter()
        .map(|id| {
            let node = cluster.manifest().node(id).expect("manifest node");
            pb::Member {
                id,
                api_addr: node.api_addr.to_string(),
                raft_addr: node.raft_addr.to_string(),
                region: node.region.clone(),
                voter: true,
            }
        })
        .collect();
    let first = cluster.ids()[0];
    let mut admin = cluster.cluster_client(first).expect("cluster client");
    let resp = admin.initialize(pb::InitializeRequest { members }).await.expect("initialize");
    assert!(resp.into_inner().initialized);
    let lines = wait_health(&all, "SERVING").await;
    println!("after Initialize: {lines:?}");
}

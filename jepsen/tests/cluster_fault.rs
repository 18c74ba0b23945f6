//! `meridian cluster up` with a `[network] proxy = true` manifest routes every node
//! link through the fault proxy and serves a control endpoint that
//! `meridian cluster fault` drives.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian::cluster::signal::{self, Sig};
use meridian::cluster::state::ClusterState;
use meridian::cluster::testing::free_ports;
use meridian_jepsen::harness::locate_meridian;

/// How long `cluster up` may take to print its endpoints.
const UP_DEADLINE: Duration = Duration::from_secs(60);
/// How long the launcher may take to exit after `cluster down`.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A running `meridian cluster up`; Drop kills it and the nodes it recorded.
struct Launcher {
    child: Child,
    data_dir: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Launcher {
    fn wait_for_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + UP_DEADLINE;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("cluster up exited early ({status}); stdout: {seen:?}");
                    }
                }
                Err(e) => panic!("cluster up stdout closed ({e:?}); stdout: {seen:?}"),
            }
        }
        panic!("no {prefix:?} line within {UP_DEADLINE:?}; stdout: {seen:?}");
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Ok(Some(state)) = ClusterState::read(&self.data_dir) {
            for n in state.live_nodes() {
                let _ = signal::send(n.pid, Sig::Kill);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest(dir: &Path) -> PathBuf {
    let ports = free_ports(6).expect("ports");
    let mut text = String::from(
        "name = \"fault-cli\"\n[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\n\
         election_timeout_max_ms = 600\n[network]\nproxy = true\n",
    );
    for i in 0..3 {
        text.push_str(&format!(
            "[[node]]\nid = {}\napi_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n",
            i + 1,
            ports[2 * i],
            ports[2 * i + 1]
        ));
    }
    let path = dir.join("proxied.toml");
    std::fs::write(&path, text).expect("write manifest");
    path
}

fn meridian(args: &[&str]) -> Output {
    Command::new(locate_meridian(None).unwrap_or_else(|e| panic!("{e}")))
        .args(args)
        .output()
        .expect("run meridian")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_proxied_cluster_is_partitioned_and_healed_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("launcher.log")).expect("log");
    let mut child = Command::new(locate_meridian(None).unwrap_or_else(|e| panic!("{e}")))
        .args(["cluster", "up"])
        .arg(manifest(dir.path()))
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn cluster up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut launcher = Launcher { child, data_dir: data.clone(), lines };
    let proxy_line = launcher.wait_for_line("fault proxy:");
    assert!(proxy_line.contains("12 links"), "{proxy_line}");
    let state = ClusterState::read(&data).expect("read").expect("cluster.json");
    assert!(state.proxy_control.is_some(), "{state:?}");

    let d = data.to_str().expect("utf-8");
    let list = meridian(&["cluster", "fault", "--data-dir", d, "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("raft:1->2") && listed.contains("api:3->1"), "{listed}");

    let isolate = meridian(&["cluster", "fault", "--data-dir", d, "isolate", "1"]);
    assert_eq!(isolate.status.code(), Some(0), "{}", text(&isolate));
    assert!(
        String::from_utf8_lossy(&isolate.stdout).contains("8 blackholed"),
        "{}",
        text(&isolate)
    );

    let heal = meridian(&["cluster", "fault", "--data-dir", d, "heal"]);
    assert_eq!(heal.status.code(), Some(0), "{}", text(&heal));
    assert!(String::from_utf8_lossy(&heal.stdout).contains("0 blackholed"), "{}", text(&heal));

    let partition = meridian(&["cluster", "fault", "--data-dir", d, "partition", "1/2,3"]);
    assert_eq!(partition.status.code(), Some(0), "{}", text(&partition));
    let latency = meridian(&["cluster", "fault", "--data-dir", d, "latency", "20", "--node", "2"]);
    assert_eq!(latency.status.code(), Some(0), "{}", text(&latency));
    assert!(
        String::from_utf8_lossy(&latency.stdout).contains("8 with latency"),
        "{}",
        text(&latency)
    );

    let unknown = meridian(&["cluster", "fault", "--data-dir", d, "isolate", "9"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));

    let down = meridian(&["cluster", "down", "--data-dir", d]);
    assert_eq!(down.status.code(), Some(0), "{}", text(&down));
    let deadline = Instant::now() + EXIT_DEADLINE;
    while launcher.child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "launcher did not exit after cluster down");
        std::thread::sleep(Duration::from_millis(50));
    }
}

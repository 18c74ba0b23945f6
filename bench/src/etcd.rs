//! The etcd side of the comparison: [`EtcdTarget`] runs the shared workloads through
//! etcd's v3 API (etcd-client), and [`EtcdCluster`] starts and stops a local etcd
//! cluster (Debian's etcd-server 3.4) with fsync on, like Meridian's log.
//!
//! Fairness: writes and linearizable reads go straight to the leader's connection
//! (the best case for etcd: no follower-to-leader forwarding hop), serializable reads
//! are balanced over every member (Meridian's client spreads them the same way).
//! The CAS cycle reads the key's per-key `version` and writes in a Txn that compares
//! it, the exact shape of Meridian's version-checked put.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use meridian::client::bench::{BenchTarget, OpError};
use meridian::client::error::code_name;
use meridian::client::Consistency;
use meridian::cluster::signal::{self, Sig};

/// Per-call deadline of etcd requests (Meridian's client default is 10 s too).
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout to an etcd member.
pub const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a started cluster may take to elect a leader and answer.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval while waiting for readiness or exit.
pub const ETCD_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// SIGTERM-to-exit deadline before SIGKILL.
pub const ETCD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Backend quota, bytes (room for 1M keys and the 64 KiB value curve).
pub const ETCD_QUOTA_BACKEND_BYTES: u64 = 8 * 1024 * 1024 * 1024;

fn op_error(e: etcd_client::Error) -> OpError {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            OpError { code: code_name(s.code()).to_string(), message: s.message().to_string() }
        }
        other => OpError { code: "UNAVAILABLE".to_string(), message: other.to_string() },
    }
}

/// One etcd client of the bench pool: a connection to the leader and one balanced
/// over every member.
#[derive(Clone)]
pub struct EtcdTarget {
    leader: KvClient,
    any: KvClient,
}

fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_timeout(ETCD_REQUEST_TIMEOUT)
        .with_connect_timeout(ETCD_CONNECT_TIMEOUT)
}

fn url(endpoint: &str) -> String {
    if endpoint.starts_with("http") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// The endpoint (of `endpoints`) whose member is the leader.
pub async fn find_leader(endpoints: &[String]) -> anyhow::Result<String> {
    for endpoint in endpoints {
        let Ok(mut c) = Client::connect([url(endpoint)], Some(connect_options())).await else {
            continue;
        };
        let Ok(status) = c.status().await else { continue };
        let me = status.header().map(|h| h.member_id());
        if me == Some(status.leader()) {
            return Ok(endpoint.clone());
        }
    }
    bail!("no etcd member of {endpoints:?} reports itself leader")
}

impl EtcdTarget {
    /// Connect to `leader` and to all of `endpoints`.
    pub async fn connect(leader: &str, endpoints: &[String]) -> anyhow::Result<Self> {
        let l = Client::connect([url(leader)], Some(connect_options()))
            .await
            .with_context(|| format!("connect to etcd leader {leader}"))?;
        let urls: Vec<String> = endpoints.iter().map(|e| url(e)).collect();
        let a = Client::connect(urls, Some(connect_options()))
            .await
            .with_context(|| format!("connect to etcd {endpoints:?}"))?;
        Ok(Self { leader: l.kv_client(), any: a.kv_client() })
    }

    fn reader(&self, consistency: Consistency) -> (KvClient, Option<GetOptions>) {
        match consistency {
            Consistency::Serializable => {
                (self.any.clone(), Some(GetOptions::new().with_serializable()))
            }
            _ => (self.leader.clone(), None),
        }
    }
}

impl BenchTarget for EtcdTarget {
    async fn put(&self, key: String, value: &[u8]) -> Result<(), OpError> {
        self.leader.clone().put(key, value, None).await.map_err(op_error)?;
        Ok(())
    }

    async fn get(&self, key: String, consistency: Consistency) -> Result<(), OpError> {
        let (mut kv, options) = self.reader(consistency);
        kv.get(key, options).await.map_err(op_error)?;
        Ok(())
    }

    async fn cas(
        &self,
        key: String,
        value: &[u8],
        consistency: Consistency,
    ) -> Result<bool, OpError> {
        let (mut kv, options) = self.reader(consistency);
        let got = kv.get(key.as_str(), options).await.map_err(op_error)?;
        let version = got.kvs().first().map_or(0, |kv| kv.version());
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, version)])
            .and_then([TxnOp::put(key, value, None)]);
        Ok(self.leader.clone().txn(txn).await.map_err(op_error)?.succeeded())
    }

    async fn txn(&self, keys: Vec<String>, value: &[u8]) -> Result<bool, OpError> {
        let compares: Vec<Compare> =
            keys.iter().map(|k| Compare::version(k.as_str(), CompareOp::Greater, 0)).collect();
        let puts: Vec<TxnOp> = keys.into_iter().map(|k| TxnOp::put(k, value, None)).collect();
        let txn = Txn::new().when(compares).and_then(puts);
        Ok(self.leader.clone().txn(txn).await.map_err(op_error)?.succeeded())
    }
}

/// A local etcd cluster: one `etcd` process per member, each with its own data dir
/// under `root`, on free 127.0.0.1 ports. Stopped (SIGTERM, then SIGKILL) by pid on
/// [`EtcdCluster::stop`] or Drop.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
}

/// One member process.
pub struct EtcdMember {
    /// Member name (m1, m2, ...).
    pub name: String,
    /// Client endpoint, host:port.
    pub endpoint: String,
    /// Data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl EtcdMember {
    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl EtcdCluster {
    /// Start `n` members of `binary` under `root` and wait until a leader answers.
    pub async fn start(binary: &Path, n: usize, root: &Path) -> anyhow::Result<Self> {
        let ports = meridian::cluster::testing::free_ports(2 * n)?;
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial: Vec<String> = (0..n).map(|i| format!("m{}={}", i + 1, peer(i))).collect();
        let token = format!("meridian-bench-{}", std::process::id());
        let mut cluster = EtcdCluster { members: Vec::new() };
        for i in 0..n {
            let name = format!("m{}", i + 1);
            let client = format!("127.0.0.1:{}", ports[2 * i]);
            let data_dir = root.join(format!("etcd-{name}"));
            let log = std::fs::File::create(root.join(format!("etcd-{name}.log")))
                .context("create etcd log file")?;
            let child = Command::new(binary)
                .arg(format!("--name={name}"))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--listen-client-urls=http://{client}"))
                .arg(format!("--advertise-client-urls=http://{client}"))
                .arg(format!("--listen-peer-urls={}", peer(i)))
                .arg(format!("--initial-advertise-peer-urls={}", peer(i)))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg(format!("--initial-cluster-token={token}"))
                .arg(format!("--quota-backend-bytes={ETCD_QUOTA_BACKEND_BYTES}"))
                // fsync on every commit (the default; stated so nobody wonders).
                .arg("--unsafe-no-fsync=false")
                .arg("--logger=zap")
                .arg("--log-level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("dup etcd log file")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("start {}", binary.display()))?;
            cluster.members.push(EtcdMember {
                name,
                endpoint: client,
                data_dir,
                child: Some(child),
            });
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + ETCD_READY_TIMEOUT;
        loop {
            for m in &mut self.members {
                if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!("etcd member {} exited during start-up: {status}", m.name);
                }
            }
            if find_leader(&self.endpoints()).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("etcd cluster had no leader after {ETCD_READY_TIMEOUT:?}");
            }
            tokio::time::sleep(ETCD_POLL_INTERVAL).await;
        }
    }

    /// Client endpoints, host:port.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// The members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// SIGTERM every member, wait for it (SIGKILL after [`ETCD_STOP_TIMEOUT`]).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                if let Err(e) = stop_child(&mut child) {
                    errors.push(format!("{}: {e}", m.name));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("stopping etcd: {}", errors.join("; ")))
        }
    }
}

/// SIGTERM `child` by pid, poll for its exit, SIGKILL it after [`ETCD_STOP_TIMEOUT`].
fn stop_child(child: &mut Child) -> anyhow::Result<()> {
    // The process may have exited already: then the signal fails harmlessly.
    let _ = signal::send(child.id(), Sig::Term);
    let deadline = std::time::Instant::now() + ETCD_STOP_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(ETCD_POLL_INTERVAL);
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

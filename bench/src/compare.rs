//! `meridian-bench compare`: start an etcd cluster and a Meridian cluster side by side
//! on 127.0.0.1, run the matrix interleaved (for each point: one store, then the other,
//! alternating which goes first) so machine noise hits both, load N keys and measure
//! RSS and data-dir size, stop both by pid, and write the results.
//!
//! The matrix, per cluster size (the first size runs the full matrix; further sizes run
//! the scaling subset):
//! - base scenario (100-byte values, `keys` keys, loaded once): every workload at every
//!   concurrency;
//! - value-size curve: put at the curve concurrency for every other value size;
//! - key-count curve: after loading `load_keys` keys, put and linearizable get over
//!   them at the curve concurrency.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meridian::client::bench::{preload, run_load, BenchConfig, Workload};
use meridian::client::{Client, ClientConfig, Consistency};
use meridian::cluster::manifest::{Manifest, ManifestNode, NetworkConfig};
use meridian::cluster::process::{LaunchOptions, LocalCluster, LogTarget, LEADER_TIMEOUT};

use crate::etcd::{find_leader, EtcdCluster, EtcdTarget};
use crate::resources::{cpu_seconds, disk_usage_mib, rss_mib};
use crate::results::{Point, Resources, Results};

/// Most points one run may measure (a bound on the matrix the flags can ask for).
pub const MAX_POINTS: usize = 2_000;
/// Concurrency of every preload.
pub const PRELOAD_CONCURRENCY: usize = 128;
/// Value size of the base scenario, bytes.
pub const BASE_VALUE_SIZE: usize = 100;

/// A workload as the comparison names it: the bench workload plus read consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// The bench workload.
    pub workload: Workload,
    /// Consistency of its reads.
    pub consistency: Consistency,
}

impl Case {
    /// Every case the issue asks for, in table order.
    pub const ALL: [&'static str; 7] =
        ["put", "get-lin", "get-ser", "cas", "cas-hot", "txn", "mixed"];

    /// The case named `name` (one of [`Case::ALL`]).
    pub fn parse(name: &str) -> anyhow::Result<Case> {
        let lin = Consistency::Linearizable;
        let (workload, consistency) = match name {
            "get-lin" => (Workload::Get, lin),
            "get-ser" => (Workload::Get, Consistency::Serializable),
            other => match Workload::parse(other) {
                Some(Workload::Get) | None => {
                    bail!("unknown workload {other:?}; expected one of {:?}", Case::ALL)
                }
                Some(w) => (w, lin),
            },
        };
        Ok(Case { workload, consistency })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// The `meridian` binary (a release build).
    pub meridian_binary: PathBuf,
    /// The `etcd` binary.
    pub etcd_binary: PathBuf,
    /// Workload names (see [`Case::ALL`]).
    pub workloads: Vec<String>,
    /// Concurrency sweep.
    pub concurrency: Vec<usize>,
    /// Concurrency of the scaling curves and of the CDF plots.
    pub curve_concurrency: usize,
    /// Value sizes, bytes (the curve runs the ones other than 100).
    pub value_sizes: Vec<usize>,
    /// Keys of the base scenario.
    pub keys: u64,
    /// Keys loaded before measuring resources and the key-count curve (0: skip).
    pub load_keys: u64,
    /// Cluster sizes.
    pub nodes: Vec<usize>,
    /// Measured time per point.
    pub duration: Duration,
    /// Warmup per point.
    pub warmup: Duration,
    /// Clients (connections) per target.
    pub clients: usize,
    /// Where clusters keep their data and logs (a temp dir inside it).
    pub work_dir: PathBuf,
    /// RNG seed.
    pub seed: u64,
}

/// Either store's client pool.
enum Pool {
    Etcd(Vec<EtcdTarget>),
    Meridian(Vec<Client>),
}

impl Pool {
    fn name(&self) -> &'static str {
        match self {
            Pool::Etcd(_) => "etcd",
            Pool::Meridian(_) => "meridian",
        }
    }

    async fn run(
        &self,
        config: &BenchConfig,
    ) -> anyhow::Result<meridian::client::bench::BenchReport> {
        let name = self.name();
        Ok(match self {
            Pool::Etcd(p) => run_load(config, name, p).await?,
            Pool::Meridian(p) => run_load(config, name, p).await?,
        })
    }

    async fn load(&self, config: &BenchConfig) -> anyhow::Result<()> {
        match self {
            Pool::Etcd(p) => preload(config, p).await?,
            Pool::Meridian(p) => preload(config, p).await?,
        }
        Ok(())
    }
}

/// Both clusters of one size, with their pools.
struct Pair {
    nodes: usize,
    etcd: EtcdCluster,
    meridian: LocalCluster,
    pools: [Pool; 2],
}

fn bench_config(
    c: &CompareConfig,
    case: Case,
    concurrency: usize,
    value_size: usize,
    keys: u64,
) -> BenchConfig {
    BenchConfig {
        client: ClientConfig::default(),
        workload: case.workload,
        concurrency,
        clients: c.clients.min(concurrency).max(1),
        duration: c.duration,
        warmup: c.warmup,
        max_ops: meridian::client::bench::DEFAULT_MAX_OPS,
        keys,
        value_size,
        consistency: case.consistency,
        key_prefix: "bench/".into(),
        seed: c.seed,
        preload: false,
    }
}

async fn start_meridian(
    c: &CompareConfig,
    n: usize,
    root: &std::path::Path,
) -> anyhow::Result<LocalCluster> {
    let ports = meridian::cluster::testing::free_ports(2 * n)?;
    let nodes = (0..n)
        .map(|i| ManifestNode {
            id: i as u64 + 1,
            region: "local".to_string(),
            api_addr: ([127, 0, 0, 1], ports[2 * i]).into(),
            raft_addr: ([127, 0, 0, 1], ports[2 * i + 1]).into(),
            extra_args: Vec::new(),
            standby: false,
        })
        .collect();
    // Node defaults for Raft (production timings), like `meridian cluster up`.
    let manifest = Manifest {
        name: "bench".into(),
        data_dir: root.join("meridian"),
        binary: Some(c.meridian_binary.clone()),
        raft: None,
        preferred_leader_region: None,
        network: NetworkConfig::default(),
        tls: None,
        nodes,
    };
    manifest.validate().map_err(|m| anyhow::anyhow!("bench manifest: {m}"))?;
    let mut options = LaunchOptions::new(&c.meridian_binary);
    options.logs = LogTarget::Files;
    let cluster = LocalCluster::launch(manifest, options).await?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    Ok(cluster)
}

async fn start_pair(c: &CompareConfig, n: usize, root: &std::path::Path) -> anyhow::Result<Pair> {
    let etcd = EtcdCluster::start(&c.etcd_binary, n, root).await.context("start etcd")?;
    let meridian = start_meridian(c, n, root).await.context("start meridian")?;
    let etcd_endpoints = etcd.endpoints();
    let leader = find_leader(&etcd_endpoints).await?;
    let clients = c.clients.max(1);
    let mut etcd_pool = Vec::with_capacity(clients);
    for _ in 0..clients {
        etcd_pool.push(EtcdTarget::connect(&leader, &etcd_endpoints).await?);
    }
    let endpoints: Vec<String> = meridian.endpoints().into_values().collect();
    let meridian_pool = (0..clients)
        .map(|i| {
            let mut cfg = ClientConfig::with_endpoints(endpoints.clone());
            cfg.retry.jitter_seed = Some(c.seed.wrapping_add(i as u64));
            Client::connect(cfg)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pair {
        nodes: n,
        etcd,
        meridian,
        pools: [Pool::Etcd(etcd_pool), Pool::Meridian(meridian_pool)],
    })
}

/// Run one point on both stores, alternating which goes first by `turn`.
async fn measure(
    pair: &Pair,
    config: &BenchConfig,
    label: &str,
    turn: usize,
    out: &mut Results,
) -> anyhow::Result<()> {
    for k in 0..2 {
        let pool = &pair.pools[(turn + k) % 2];
        let pids = store_pids(pair, pool.name());
        let before = (cpu_of(&pids), cpu_seconds(std::process::id()).ok());
        let report = pool.run(config).await.with_context(|| format!("{} {label}", pool.name()))?;
        let after = (cpu_of(&pids), cpu_seconds(std::process::id()).ok());
        eprintln!(
            "  {:8} {:8} c={:<3} v={:<6} keys={:<8} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}",
            pool.name(),
            label,
            config.concurrency,
            config.value_size,
            config.keys,
            report.ops_per_sec,
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.errors
        );
        let mut point = Point::from_report(&report, label, pair.nodes);
        // The CPU counters cover the warmup too: count its ops at the measured rate.
        let ops = report.ops_per_sec * (report.elapsed_s + config.warmup.as_secs_f64());
        let per_op = |b: Option<f64>, a: Option<f64>| match (b, a) {
            (Some(b), Some(a)) if ops >= 1.0 => Some((a - b).max(0.0) * 1e6 / ops),
            _ => None,
        };
        point.server_cpu_us_per_op = per_op(before.0, after.0);
        point.client_cpu_us_per_op = per_op(before.1, after.1);
        out.points.push(point);
    }
    Ok(())
}

/// The pids of `target`'s running processes (members that have one).
fn store_pids(pair: &Pair, target: &str) -> Vec<u32> {
    if target == "etcd" {
        pair.etcd.members().iter().filter_map(|m| m.pid()).collect()
    } else {
        pair.meridian.ids().into_iter().filter_map(|id| pair.meridian.pid(id)).collect()
    }
}

/// CPU seconds of all of `pids` so far; None if any cannot be read (a process gone).
fn cpu_of(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_seconds(p).ok()).sum()
}

fn check_matrix(c: &CompareConfig) -> anyhow::Result<Vec<(String, Case)>> {
    let cases = c
        .workloads
        .iter()
        .map(|w| Ok((w.clone(), Case::parse(w)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let points = c.nodes.len() * (cases.len() * c.concurrency.len() + c.value_sizes.len() + 2);
    if points > MAX_POINTS {
        bail!("the matrix has {points} points; at most {MAX_POINTS}");
    }
    if c.nodes.iter().any(|&n| n == 0 || n % 2 == 0) {
        bail!("node counts must be odd and positive: {:?}", c.nodes);
    }
    if c.concurrency.is_empty() || c.nodes.is_empty() {
        bail!("need at least one concurrency and one node count");
    }
    Ok(cases)
}

/// Run the comparison; `on_progress` gets the results so far after every point (so a
/// long run leaves partial results behind).
pub async fn run(
    c: &CompareConfig,
    mut on_progress: impl FnMut(&Results),
) -> anyhow::Result<Results> {
    let cases = check_matrix(c)?;
    let mut out = Results {
        started_at: crate::resources::utc_now(),
        loadavg_before: crate::resources::loadavg(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        etcd_version: crate::resources::etcd_version(&c.etcd_binary),
        duration_s: c.duration.as_secs_f64(),
        warmup_s: c.warmup.as_secs_f64(),
        clients: c.clients,
        ..Results::default()
    };
    let mut turn = 0;
    for (size_index, &n) in c.nodes.iter().enumerate() {
        let dir = tempfile::Builder::new()
            .prefix(&format!("meridian-vs-etcd-{n}-"))
            .tempdir_in(&c.work_dir)
            .context("create a work dir")?;
        eprintln!("{n} nodes: starting etcd and meridian under {}", dir.path().display());
        let mut pair = start_pair(c, n, dir.path()).await?;
        let result =
            run_size(c, &cases, &mut pair, size_index == 0, &mut turn, &mut out, &mut on_progress)
                .await;
        let stopped_etcd = pair.etcd.stop();
        let stopped_meridian = pair.meridian.stop_all().await;
        result?;
        stopped_etcd?;
        for (id, r) in stopped_meridian {
            r.with_context(|| format!("stop meridian node {id}"))?;
        }
    }
    out.loadavg_after = crate::resources::loadavg();
    Ok(out)
}

async fn run_size(
    c: &CompareConfig,
    cases: &[(String, Case)],
    pair: &mut Pair,
    full: bool,
    turn: &mut usize,
    out: &mut Results,
    on_progress: &mut impl FnMut(&Results),
) -> anyhow::Result<()> {
    let put = Case { workload: Workload::Put, consistency: Consistency::Linearizable };
    let get = Case { workload: Workload::Get, consistency: Consistency::Linearizable };
    let loader = |keys| BenchConfig {
        concurrency: PRELOAD_CONCURRENCY,
        clients: c.clients.clamp(1, PRELOAD_CONCURRENCY),
        ..bench_config(c, put, PRELOAD_CONCURRENCY, BASE_VALUE_SIZE, keys)
    };
    for pool in &pair.pools {
        pool.load(&loader(c.keys)).await.with_context(|| format!("load {}", pool.name()))?;
    }
    let base: Vec<(String, Case)> =
        if full { cases.to_vec() } else { vec![("put".into(), put), ("get-lin".into(), get)] };
    let sweep: Vec<usize> = if full { c.concurrency.clone() } else { vec![c.curve_concurrency] };
    for (label, case) in &base {
        for &conc in &sweep {
            measure(
                pair,
                &bench_config(c, *case, conc, BASE_VALUE_SIZE, c.keys),
                label,
                *turn,
                out,
            )
            .await?;
            *turn += 1;
            on_progress(out);
        }
    }
    for &size in c.value_sizes.iter().filter(|&&s| s != BASE_VALUE_SIZE) {
        let config = bench_config(c, put, c.curve_concurrency, size, c.keys);
        measure(pair, &config, "put", *turn, out).await?;
        *turn += 1;
        on_progress(out);
    }
    if c.load_keys > c.keys {
        for k in 0..2 {
            let pool = &pair.pools[(*turn + k) % 2];
            let started = Instant::now();
            pool.load(&loader(c.load_keys))
                .await
                .with_context(|| format!("load {}", pool.name()))?;
            let load_s = started.elapsed().as_secs_f64();
            out.resources.push(resources(pair, pool.name(), c.load_keys, load_s)?);
            on_progress(out);
        }
        for (label, case) in [("put", put), ("get-lin", get)] {
            let config = bench_config(c, case, c.curve_concurrency, BASE_VALUE_SIZE, c.load_keys);
            measure(pair, &config, label, *turn, out).await?;
            *turn += 1;
            on_progress(out);
        }
    }
    Ok(())
}

fn resources(pair: &Pair, target: &str, keys: u64, load_s: f64) -> anyhow::Result<Resources> {
    let (pids, dirs): (Vec<Option<u32>>, Vec<PathBuf>) = if target == "etcd" {
        pair.etcd.members().iter().map(|m| (m.pid(), m.data_dir.clone())).unzip()
    } else {
        pair.meridian
            .ids()
            .into_iter()
            .map(|id| (pair.meridian.pid(id), pair.meridian.node_data_dir(id)))
            .unzip()
    };
    let rss =
        pids.into_iter().map(|p| p.map_or(Ok(0.0), rss_mib)).collect::<anyhow::Result<Vec<_>>>()?;
    let disk = dirs.iter().map(|d| disk_usage_mib(d)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Resources {
        target: target.to_string(),
        nodes: pair.nodes,
        keys_loaded: keys,
        value_size: BASE_VALUE_SIZE,
        load_s,
        rss_mib: rss,
        disk_mib: disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_parses_and_unknown_ones_do_not() {
        for name in Case::ALL {
            Case::parse(name).expect(name);
        }
        assert_eq!(Case::parse("get-ser").expect("parses").consistency, Consistency::Serializable);
        assert!(Case::parse("get").is_err(), "get must name its consistency");
        assert!(Case::parse("scan").is_err());
    }
}

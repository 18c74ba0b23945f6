//! What a test run does: workload, faults, load, seed, limits ([`TestConfig`]).
//!
//! Invariants after [`TestConfig::validate`]: at least one node and one worker, a rate
//! above zero, every duration non-zero, every bound ([`MAX_NODES`], [`MAX_CONCURRENCY`],
//! [`MAX_RATE`], [`MAX_TIME_LIMIT`]) respected, and partition modes that make sense for
//! the node count. Every run is bounded in time (`time_limit`) and in operations
//! ([`TestConfig::max_ops`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::HarnessError;

/// Most nodes a test cluster may have.
pub const MAX_NODES: usize = 9;
/// Most concurrent client workers.
pub const MAX_CONCURRENCY: usize = 200;
/// Highest target rate, operations per second.
pub const MAX_RATE: f64 = 5_000.0;
/// Longest run.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(3_600);
/// Default per-operation timeout.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Default mean interval of the nemesis schedule.
pub const DEFAULT_NEMESIS_INTERVAL: Duration = Duration::from_secs(5);
/// Default budget of the linearizability check.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// Default deadline for the cluster to recover (leader, restarts) after the final heal.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The workload clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Per-key read / write / cas on independent registers, checked per key.
    Register,
    /// Transfers between accounts and reads of every account; the total is constant.
    Bank,
    /// Unconditional and conditional writes; every replica's binlog must hold each
    /// acknowledged write exactly once, in order, with equal chain hashes.
    Binlog,
}

impl WorkloadKind {
    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Bank => "bank",
            WorkloadKind::Binlog => "binlog",
        }
    }
}

/// A kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of a random node, the leader or a minority; restarted when the window ends.
    Kill,
    /// SIGSTOP of a random node, the leader or a minority; SIGCONT when the window ends.
    Pause,
    /// A network partition through the fault proxy (see [`PartitionMode`]).
    Partition,
    /// Added latency and jitter on every link or on one node's links.
    Latency,
    /// Physical clock offsets (SetClockOffset) on some nodes.
    Clock,
    /// A voter removed (kept as a learner) and added back (ChangeMembership).
    Membership,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Latency,
        FaultKind::Clock,
        FaultKind::Membership,
    ];

    /// Name used on the command line, in histories (`start-<name>`) and reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::Clock => "clock",
            FaultKind::Membership => "membership",
        }
    }

    /// Parses a name (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Parses a comma-separated list; `none` (or empty) is no fault, `all` every kind.
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>, String> {
        let list = list.trim();
        if list.is_empty() || list == "none" {
            return Ok(Vec::new());
        }
        if list == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim) {
            let kind = Self::from_name(name).ok_or_else(|| {
                format!(
                    "unknown nemesis {name:?}: expected kill, pause, partition, latency, clock, \
                     membership, all or none"
                )
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of a partition (Jepsen's names in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionMode {
    /// The current leader alone against the rest (`:primaries`).
    IsolateLeader,
    /// One follower alone against the rest.
    IsolateFollower,
    /// A random minority against the majority (`:majority`).
    Halves,
    /// Every node can call a majority, no two the same one (`:majorities-ring`).
    MajorityRing,
    /// Two halves that only talk through one bridge node (`:bridge`).
    Bridge,
}

impl PartitionMode {
    /// Every mode, in a fixed order.
    pub const ALL: [PartitionMode; 5] = [
        PartitionMode::IsolateLeader,
        PartitionMode::IsolateFollower,
        PartitionMode::Halves,
        PartitionMode::MajorityRing,
        PartitionMode::Bridge,
    ];

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PartitionMode::IsolateLeader => "isolate-leader",
            PartitionMode::IsolateFollower => "isolate-follower",
            PartitionMode::Halves => "halves",
            PartitionMode::MajorityRing => "majority-ring",
            PartitionMode::Bridge => "bridge",
        }
    }

    /// Parses a comma-separated list of names; `all` is every mode.
    pub fn parse_list(list: &str) -> Result<Vec<PartitionMode>, String> {
        if list.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut modes = Vec::new();
        for name in list.split(',').map(str::trim) {
            let mode = Self::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
                format!(
                    "unknown partition {name:?}: expected isolate-leader, isolate-follower, \
                     halves, majority-ring, bridge or all"
                )
            })?;
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        Ok(modes)
    }
}

/// Everything a run needs. See the module docs for the invariants.
#[derive(Debug, Clone, Serialize)]
pub struct TestConfig {
    /// Test name: the directory under the store (default `<workload>-<nemeses>`).
    pub name: String,
    /// The workload.
    pub workload: WorkloadKind,
    /// Fault kinds the nemesis draws from (empty: no faults).
    pub nemeses: Vec<FaultKind>,
    /// Partition shapes the partition nemesis draws from.
    pub partitions: Vec<PartitionMode>,
    /// How long clients run.
    #[serde(serialize_with = "ser_secs")]
    pub time_limit: Duration,
    /// Concurrent client workers (logical processes at any time).
    pub concurrency: usize,
    /// Target rate over all workers, operations per second.
    pub rate: f64,
    /// Seed of every random choice (schedule, operations).
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Per-operation timeout; a write that times out is `info`.
    #[serde(serialize_with = "ser_secs")]
    pub op_timeout: Duration,
    /// Mean interval of the nemesis: faults last `[i, 2i]`, quiet gaps `[i/2, i]`.
    #[serde(serialize_with = "ser_secs")]
    pub nemesis_interval: Duration,
    /// Register workload: keys in use at once (binlog workload: keys written).
    pub keys: usize,
    /// Register workload: operations per key before it is retired for a fresh one.
    pub ops_per_key: usize,
    /// Bank workload: accounts.
    pub accounts: usize,
    /// Bank workload: initial balance of each account.
    pub initial_balance: i64,
    /// Bank workload: largest transfer.
    pub max_transfer: i64,
    /// Start every node with `--unsafe-stale-reads` (to prove the harness can fail).
    pub unsafe_stale_reads: bool,
    /// The `meridian` binary.
    pub binary: PathBuf,
    /// A cluster manifest whose layout to run (ids, regions, region latencies,
    /// preferred leader region, Raft timing), e.g. cluster/three-regions.toml; its node
    /// count replaces `nodes`. None: `nodes` local nodes.
    pub layout: Option<PathBuf>,
    /// Store root: runs go to `<store>/<name>/<timestamp>/`.
    pub store: PathBuf,
    /// Budget of the linearizability check.
    #[serde(serialize_with = "ser_secs")]
    pub check_timeout: Duration,
    /// Deadline for the cluster to recover after the final heal.
    #[serde(serialize_with = "ser_secs")]
    pub recovery_timeout: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl TestConfig {
    /// Defaults: 5 nodes, 10 workers at 200 ops/s for 60 s, every partition mode, no
    /// faults, seed 0, store `./store`.
    pub fn new(workload: WorkloadKind, binary: PathBuf) -> Self {
        Self {
            name: String::new(),
            workload,
            nemeses: Vec::new(),
            partitions: PartitionMode::ALL.to_vec(),
            time_limit: Duration::from_secs(60),
            concurrency: 10,
            rate: 200.0,
            seed: 0,
            nodes: 5,
            op_timeout: DEFAULT_OP_TIMEOUT,
            nemesis_interval: DEFAULT_NEMESIS_INTERVAL,
            keys: 8,
            ops_per_key: 400,
            accounts: 5,
            initial_balance: 100,
            max_transfer: 5,
            unsafe_stale_reads: false,
            binary,
            layout: None,
            store: PathBuf::from("store"),
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
        }
    }

    /// The test name: `name` if set, else `<workload>-<nemesis+...>` (or `-none`).
    pub fn test_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let faults: Vec<&str> = self.nemeses.iter().map(|k| k.name()).collect();
        let faults = if faults.is_empty() { "none".to_string() } else { faults.join("+") };
        let unsafe_tag = if self.unsafe_stale_reads { "-unsafe" } else { "" };
        format!("{}-{faults}{unsafe_tag}", self.workload.name())
    }

    /// Upper bound on operations invoked by the workers (twice the target).
    pub fn max_ops(&self) -> u64 {
        let target = self.rate * self.time_limit.as_secs_f64();
        // Bounded by MAX_RATE * MAX_TIME_LIMIT, far below u64::MAX.
        (target * 2.0) as u64 + 1_000
    }

    /// Check the invariants in the module docs.
    pub fn validate(&self) -> Result<(), HarnessError> {
        let bad = |m: String| Err(HarnessError::Config(m));
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return bad(format!("nodes must be 1..={MAX_NODES}, got {}", self.nodes));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(format!(
                "concurrency must be 1..={MAX_CONCURRENCY}, got {}",
                self.concurrency
            ));
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return bad(format!("rate must be in (0, {MAX_RATE}], got {}", self.rate));
        }
        if self.time_limit.is_zero() || self.time_limit > MAX_TIME_LIMIT {
            return bad(format!("time limit must be in (0, {MAX_TIME_LIMIT:?}]"));
        }
        for (what, d) in [
            ("op timeout", self.op_timeout),
            ("nemesis interval", self.nemesis_interval),
            ("check timeout", self.check_timeout),
            ("recovery timeout", self.recovery_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{what} must be above zero"));
            }
        }
        if self.keys == 0 || self.ops_per_key == 0 {
            return bad("keys and ops-per-key must be at least 1".into());
        }
        if self.accounts < 2 || self.initial_balance < 0 || self.max_transfer < 1 {
            return bad("bank needs at least 2 accounts, a balance >= 0, transfers >= 1".into());
        }
        if self.nemeses.contains(&FaultKind::Partition) {
            if self.partitions.is_empty() {
                return bad("the partition nemesis needs at least one partition mode".into());
            }
            if self.nodes < 2 {
                return bad("partitions need at least 2 nodes".into());
            }
        }
        if self.nemeses.contains(&FaultKind::Membership) && self.nodes < 3 {
            return bad("the membership nemesis needs at least 3 nodes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse_with_all_and_none() {
        assert_eq!(FaultKind::parse_list("none").expect("none"), vec![]);
        assert_eq!(FaultKind::parse_list("all").expect("all").len(), 6);
        assert_eq!(
            FaultKind::parse_list("kill, partition,kill").expect("list"),
            vec![FaultKind::Kill, FaultKind::Partition]
        );
        assert!(FaultKind::parse_list("kill,explode").is_err());
        assert_eq!(PartitionMode::parse_list("bridge,halves").expect("modes").len(), 2);
        assert!(PartitionMode::parse_list("sideways").is_err());
    }

    #[test]
    fn default_config_is_valid_and_named_after_workload_and_faults() {
        let mut c = TestConfig::new(WorkloadKind::Register, PathBuf::from("meridian"));
        c.validate().expect("valid");
        assert_eq!(c.test_name(), "register-none");
        c.nemeses = vec![FaultKind::Kill, FaultKind::Partition];
        c.unsafe_stale_reads = true;
        assert_eq!(c.test_name(), "register-kill+partition-unsafe");
        assert_eq!(c.max_ops(), 2 * 12_000 + 1_000);
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        let base = TestConfig::new(WorkloadKind::Bank, PathBuf::from("meridian"));
        let mut c = base.clone();
        c.rate = 0.0;
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.nodes = 2;
        c.nemeses = vec![FaultKind::Membership];
        assert!(c.validate().is_err());
        let mut c = base;
        c.accounts = 1;
        assert!(c.validate().is_err());
    }
}

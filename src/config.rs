//! Node configuration: one typed, validated struct. Sources, later ones winning:
//! built-in defaults, then a TOML file (`--config`), then `MERIDIAN_*` environment
//! variables, then command-line flags. [`NodeConfig::validate`] rejects bad values and
//! combinations at start-up, before anything is opened. A commented sample lives in
//! cluster/node.sample.toml.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};

/// A configuration problem, reported before the node starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message (with line and column).
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("invalid environment variable {name}={value:?}: {message}")]
    Env {
        /// Variable.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A value or combination is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A cluster member as listed in a node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Node id (>= 1).
    pub id: u64,
    /// Client API address (host:port).
    pub api_addr: String,
    /// Raft peer address (host:port).
    pub raft_addr: String,
    /// Region label.
    #[serde(default = "default_region")]
    pub region: String,
}

/// A per-peer address override: this node reaches peer `id` through these addresses
/// instead of the ones in the membership. The launcher uses it to route every directed
/// link through the fault proxy (latency, partitions) without changing the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Peer node id.
    pub id: u64,
    /// Address to use for the peer's Raft service.
    pub raft_addr: Option<String>,
    /// Address to use for the peer's public API (request forwarding).
    pub api_addr: Option<String>,
}

/// Raft timing and log-retention settings (every openraft option we rely on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat interval, ms.
    pub heartbeat_interval_ms: u64,
    /// Election timeout lower bound, ms (> heartbeat).
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound, ms (> min).
    pub election_timeout_max_ms: u64,
    /// Build a snapshot no sooner than this many applied entries after the last one
    /// (default 100,000, as etcd's `--snapshot-count`).
    pub snapshot_logs_since_last: u64,
    /// ... and only once the Raft log on disk is at least this percentage of the last
    /// snapshot's size (default 100; 0: the entry count alone decides). A snapshot
    /// dumps the whole state, so this bounds the dump work per byte of log.
    pub snapshot_log_size_percent: u64,
    /// Log entries kept after a snapshot (for slow followers) before purging.
    pub max_in_snapshot_log_to_keep: u64,
    /// Max entries in one AppendEntries RPC.
    pub max_payload_entries: u64,
    /// Snapshot transfer chunk size, bytes.
    pub snapshot_chunk_bytes: u64,
    /// Timeout of a full snapshot transfer, ms.
    pub snapshot_timeout_ms: u64,
    /// Sync linger of a leader whose followers alone form a quorum, microseconds (0:
    /// off; at most 20,000). Under load its log fsyncs start at least this far apart
    /// and cover more appends; commits do not wait for them while the followers answer
    /// (`storage::log_store`, "Sync linger").
    pub leader_sync_linger_us: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_logs_since_last: 100_000,
            snapshot_log_size_percent: 100,
            max_in_snapshot_log_to_keep: 1_000,
            max_payload_entries: 512,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_timeout_ms: 60_000,
            leader_sync_linger_us: 2_000,
        }
    }
}

/// Leader placement: which region the leader should live in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// Region the leader should be in. A leader elsewhere hands leadership to a healthy,
    /// caught-up voter of this region; a leader in it never moves away on its own.
    /// Every node of a cluster should carry the same value.
    pub preferred_leader_region: Option<String>,
    /// How often the leader checks its placement, ms.
    pub check_interval_ms: u64,
    /// A leader keeps leadership at least this long before it hands it over, ms (damps
    /// back-and-forth moves right after an election).
    pub min_leader_tenure_ms: u64,
    /// A transfer target must have acknowledged the leader within this many ms.
    pub max_target_silence_ms: u64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            preferred_leader_region: None,
            check_interval_ms: 500,
            min_leader_tenure_ms: 3_000,
            max_target_silence_ms: 1_000,
        }
    }
}

/// Binlog retention (replicated behaviour: every node of a cluster must use the same
/// values, or replicas retain different ranges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BinlogConfig {
    /// Keep at most this many events (older whole revisions are trimmed).
    pub retention_events: u64,
    /// Trim events older than this, seconds of HLC time before the latest apply.
    pub retention_age_secs: u64,
}

impl Default for BinlogConfig {
    fn default() -> Self {
        Self {
            retention_events: crate::storage::binlog::DEFAULT_RETENTION_EVENTS,
            retention_age_secs: crate::storage::binlog::DEFAULT_RETENTION_AGE_SECS,
        }
    }
}

/// Read-path settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadsConfig {
    /// How often a node obtains a fresh read index from the leader to prove how stale
    /// its state is at most (bounded-staleness reads), ms; 0 turns the proofs off, so
    /// bounded-staleness reads take the linearizable path.
    pub freshness_interval_ms: u64,
}

impl Default for ReadsConfig {
    fn default() -> Self {
        Self { freshness_interval_ms: 100 }
    }
}

/// Largest placement/freshness interval, ms.
pub const MAX_INTERVAL_MS: u64 = 60_000;

/// Configuration of one Meridian node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node id, unique in the cluster, >= 1. Fixed for the life of the data dir.
    pub id: u64,
    /// Cluster name; a data dir or peer from another cluster is refused.
    pub cluster_name: String,
    /// Region label (e.g. "us-east").
    pub region: String,
    /// Listen address of the public gRPC API.
    pub api_addr: SocketAddr,
    /// Listen address of the internal Raft service.
    pub raft_addr: SocketAddr,
    /// Address other nodes and clients use for the API (default: api_addr).
    pub advertise_api_addr: Option<String>,
    /// Address other nodes use for Raft (default: raft_addr).
    pub advertise_raft_addr: Option<String>,
    /// Directory of the node's sled database and snapshots.
    pub data_dir: PathBuf,
    /// Initial members, used when `bootstrap` is set and the node is new.
    pub peers: Vec<PeerConfig>,
    /// Initialise the cluster from `peers` if this node has never been initialised.
    pub bootstrap: bool,
    /// Per-peer address overrides (see [`RouteConfig`]).
    pub routes: Vec<RouteConfig>,
    /// Key size limit, bytes.
    pub max_key_bytes: usize,
    /// Value size limit, bytes.
    pub max_value_bytes: usize,
    /// Max lead of a remote HLC over our physical clock before it is refused, ms.
    pub max_clock_offset_ms: u64,
    /// How long a request id is remembered for exactly-once replay, seconds.
    pub dedup_window_secs: u64,
    /// Max remembered request ids (oldest evicted first).
    pub dedup_max_entries: u64,
    /// Server-side deadline for a request that carries none, ms.
    pub default_request_timeout_ms: u64,
    /// Expose fault-injection RPCs (clock offset). Never in production.
    pub allow_fault_injection: bool,
    /// TEST ONLY: serve LINEARIZABLE reads locally without a read index (unsafe).
    pub unsafe_stale_reads: bool,
    /// Threads of the node's async runtime; 0: one per CPU core. Nodes that share a
    /// machine should split its cores (`meridian cluster up` gives each of its N nodes
    /// cores / N, at least 1): more runtime threads than cores only adds context
    /// switches.
    pub worker_threads: usize,
    /// Leader placement (preferred region).
    pub placement: PlacementConfig,
    /// Read path: freshness proofs for bounded-staleness reads.
    pub reads: ReadsConfig,
    /// Log format: "text" or "json".
    pub log_format: String,
    /// Raft settings.
    pub raft: RaftConfig,
    /// Binlog retention.
    pub binlog: BinlogConfig,
    /// Listen address of the Prometheus `/metrics` HTTP endpoint; None: no endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS for client and peer traffic.
    pub tls: TlsConfig,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// Per-client rate limits.
    pub limits: LimitsConfig,
}

/// `[tls]`: rustls for the public API and the Raft port. When enabled, peers always
/// use mutual TLS (each node presents `cert_file` to the others and accepts only
/// certificates signed by `ca_file`); clients must present a certificate only with
/// `require_client_cert`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve (and dial peers) over TLS.
    pub enabled: bool,
    /// PEM file of the CA that signs node and client certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate (chain) of this node; its SANs must cover the addresses peers
    /// and clients dial.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Refuse clients of the public API that present no certificate signed by the CA.
    pub require_client_cert: bool,
    /// TLS server name peers expect in each other's certificates (a SAN of every node
    /// certificate).
    pub peer_domain: String,
}

/// The server name node certificates made by `meridian certs init` carry.
pub const DEFAULT_PEER_DOMAIN: &str = "localhost";

/// `[auth]`: who may do what. Off (every request allowed, anonymous) unless
/// `tokens_file` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TOML file of principals (bearer tokens and certificate identities with their
    /// roles and key prefixes); see docs/OPERATIONS.md "Security".
    pub tokens_file: Option<PathBuf>,
}

/// `[limits]`: token bucket per client identity (or peer IP when anonymous).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained requests per second per client; 0 disables rate limiting.
    pub rate_per_sec: u32,
    /// Bucket size: requests a client may send at once (>= 1 when limiting).
    pub burst: u32,
    /// Most client buckets kept; idle ones are evicted first (bounds memory).
    pub max_clients: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { rate_per_sec: 0, burst: 0, max_clients: 10_000 }
    }
}

/// Upper bound on `worker_threads`.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Runtime threads for each of `nodes` nodes sharing this machine: its cores split
/// evenly, at least one each.
pub fn shared_worker_threads(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

/// Upper bound on `limits.max_clients` (memory of the bucket map).
pub const MAX_RATE_LIMITED_CLIENTS: usize = 1_000_000;

fn default_region() -> String {
    "local".to_string()
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: 1,
            cluster_name: "meridian".to_string(),
            region: default_region(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            raft_addr: SocketAddr::from(([127, 0, 0, 1], 7101)),
            advertise_api_addr: None,
            advertise_raft_addr: None,
            data_dir: PathBuf::from("data/node-1"),
            peers: Vec::new(),
            bootstrap: false,
            routes: Vec::new(),
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_clock_offset_ms: 500,
            dedup_window_secs: 600,
            dedup_max_entries: 100_000,
            default_request_timeout_ms: 10_000,
            allow_fault_injection: false,
            unsafe_stale_reads: false,
            worker_threads: 0,
            placement: PlacementConfig::default(),
            reads: ReadsConfig::default(),
            log_format: "text".to_string(),
            raft: RaftConfig::default(),
            binlog: BinlogConfig::default(),
            metrics_addr: None,
            tls: TlsConfig { peer_domain: DEFAULT_PEER_DOMAIN.to_string(), ..TlsConfig::default() },
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Upper bound of `raft.snapshot_log_size_percent`: a log 100 times the state.
pub const MAX_SNAPSHOT_LOG_SIZE_PERCENT: u64 = 10_000;
/// Upper bound on configurable key size (larger keys would bloat every index page).
pub const MAX_KEY_BYTES_LIMIT: usize = 64 * 1024;
/// Upper bound on configurable value size (must fit a gRPC message with headroom).
pub const MAX_VALUE_BYTES_LIMIT: usize = 16 * 1024 * 1024;

impl NodeConfig {
    /// Load defaults, then `path` (if any), then `MERIDIAN_*` environment variables.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.to_path_buf(), source })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => NodeConfig::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Override fields from environment variables (`MERIDIAN_ID`, `MERIDIAN_REGION`,
    /// `MERIDIAN_API_ADDR`, `MERIDIAN_RAFT_ADDR`, `MERIDIAN_DATA_DIR`,
    /// `MERIDIAN_CLUSTER_NAME`, `MERIDIAN_LOG_FORMAT`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, v: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigError::Env {
                name: name.to_string(),
                value: v.clone(),
                message: e.to_string(),
            })
        }
        if let Some(v) = get("MERIDIAN_ID") {
            self.id = parse("MERIDIAN_ID", v)?;
        }
        if let Some(v) = get("MERIDIAN_REGION") {
            self.region = v;
        }
        if let Some(v) = get("MERIDIAN_API_ADDR") {
            self.api_addr = parse("MERIDIAN_API_ADDR", v)?;
        }
        if let Some(v) = get("MERIDIAN_RAFT_ADDR") {
            self.raft_addr = parse("MERIDIAN_RAFT_ADDR", v)?;
        }
        if let Some(v) = get("MERIDIAN_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("MERIDIAN_CLUSTER_NAME") {
            self.cluster_name = v;
        }
        if let Some(v) = get("MERIDIAN_LOG_FORMAT") {
            self.log_format = v;
        }
        self.apply_security_env(&get, parse::<u64>)
    }

    /// The issue #9 variables: `MERIDIAN_METRICS_ADDR`, `MERIDIAN_TLS_ENABLED`,
    /// `MERIDIAN_TLS_CA_FILE`, `MERIDIAN_TLS_CERT_FILE`, `MERIDIAN_TLS_KEY_FILE`,
    /// `MERIDIAN_TLS_REQUIRE_CLIENT_CERT`, `MERIDIAN_AUTH_TOKENS_FILE`,
    /// `MERIDIAN_LIMITS_RATE_PER_SEC`, `MERIDIAN_LIMITS_BURST`.
    fn apply_security_env<G, P>(&mut self, get: &G, parse: P) -> Result<(), ConfigError>
    where
        G: Fn(&str) -> Option<String>,
        P: Fn(&str, String) -> Result<u64, ConfigError>,
    {
        let flag = |name: &str, v: String| match v.as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(ConfigError::Env {
                name: name.to_string(),
                value: v.clone(),
                message: "expected true/false/1/0".into(),
            }),
        };
        if let Some(v) = get("MERIDIAN_METRICS_ADDR") {
            self.metrics_addr =
                Some(v.parse().map_err(|e: std::net::AddrParseError| ConfigError::Env {
                    name: "MERIDIAN_METRICS_ADDR".into(),
                    value: v.clone(),
                    message: e.to_string(),
                })?);
        }
        if let Some(v) = get("MERIDIAN_TLS_ENABLED") {
            self.tls.enabled = flag("MERIDIAN_TLS_ENABLED", v)?;
        }
        if let Some(v) = get("MERIDIAN_TLS_CA_FILE") {
            self.tls.ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("MERIDIAN_TLS_CERT_FILE") {
            self.tls.cert_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("MERIDIAN_TLS_KEY_FILE") {
            self.tls.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("MERIDIAN_TLS_REQUIRE_CLIENT_CERT") {
            self.tls.require_client_cert = flag("MERIDIAN_TLS_REQUIRE_CLIENT_CERT", v)?;
        }
        if let Some(v) = get("MERIDIAN_AUTH_TOKENS_FILE") {
            self.auth.tokens_file = Some(PathBuf::from(v));
        }
        let small = |name: &str, v: String| -> Result<u32, ConfigError> {
            let n = parse(name, v.clone())?;
            u32::try_from(n).map_err(|e| ConfigError::Env {
                name: name.to_string(),
                value: v,
                message: e.to_string(),
            })
        };
        if let Some(v) = get("MERIDIAN_LIMITS_RATE_PER_SEC") {
            self.limits.rate_per_sec = small("MERIDIAN_LIMITS_RATE_PER_SEC", v)?;
        }
        if let Some(v) = get("MERIDIAN_LIMITS_BURST") {
            self.limits.burst = small("MERIDIAN_LIMITS_BURST", v)?;
        }
        Ok(())
    }

    /// Reject out-of-range values and bad combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return bad("id must be >= 1".into());
        }
        if self.cluster_name.is_empty() || self.cluster_name.len() > 128 {
            return bad("cluster_name must be 1..=128 bytes".into());
        }
        if self.region.is_empty() || self.region.len() > 64 {
            return bad("region must be 1..=64 bytes".into());
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > MAX_KEY_BYTES_LIMIT {
            return bad(format!("max_key_bytes must be 1..={MAX_KEY_BYTES_LIMIT}"));
        }
        if self.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
            return bad(format!("max_value_bytes must be <= {MAX_VALUE_BYTES_LIMIT}"));
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return bad(format!(
                "raft.election_timeout_min_ms ({}) must exceed raft.heartbeat_interval_ms ({})",
                r.election_timeout_min_ms, r.heartbeat_interval_ms
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return bad("raft.election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if r.snapshot_logs_since_last == 0 || r.max_payload_entries == 0 {
            return bad("raft.snapshot_logs_since_last and max_payload_entries must be >= 1".into());
        }
        if r.snapshot_log_size_percent > MAX_SNAPSHOT_LOG_SIZE_PERCENT {
            return bad(format!(
                "raft.snapshot_log_size_percent must be <= {MAX_SNAPSHOT_LOG_SIZE_PERCENT}"
            ));
        }
        if r.snapshot_chunk_bytes < 1024 || r.snapshot_chunk_bytes > 4 * 1024 * 1024 {
            return bad("raft.snapshot_chunk_bytes must be 1 KiB..=4 MiB".into());
        }
        let max_linger = crate::storage::log_store::MAX_SYNC_LINGER.as_micros();
        if u128::from(r.leader_sync_linger_us) > max_linger {
            return bad(format!("raft.leader_sync_linger_us must be <= {max_linger}"));
        }
        let p = &self.placement;
        if p.preferred_leader_region.as_ref().is_some_and(|r| r.is_empty() || r.len() > 64) {
            return bad("placement.preferred_leader_region must be 1..=64 bytes".into());
        }
        for (name, v) in [
            ("placement.check_interval_ms", p.check_interval_ms),
            ("placement.min_leader_tenure_ms", p.min_leader_tenure_ms),
            ("placement.max_target_silence_ms", p.max_target_silence_ms),
        ] {
            if v == 0 || v > MAX_INTERVAL_MS {
                return bad(format!("{name} must be 1..={MAX_INTERVAL_MS}"));
            }
        }
        if self.reads.freshness_interval_ms > MAX_INTERVAL_MS {
            return bad(format!("reads.freshness_interval_ms must be 0..={MAX_INTERVAL_MS}"));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return bad(format!("worker_threads must be 0..={MAX_WORKER_THREADS}"));
        }
        if self.dedup_max_entries == 0 || self.dedup_window_secs == 0 {
            return bad("dedup_window_secs and dedup_max_entries must be >= 1".into());
        }
        if self.binlog.retention_events == 0 || self.binlog.retention_age_secs == 0 {
            return bad("binlog.retention_events and binlog.retention_age_secs must be >= 1".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad(format!(
                "log_format must be \"text\" or \"json\", got {:?}",
                self.log_format
            ));
        }
        if self.bootstrap && !self.peers.iter().any(|p| p.id == self.id) {
            return bad(format!(
                "bootstrap is set but peers does not list this node (id {})",
                self.id
            ));
        }
        self.validate_security()?;
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.first() == Some(&0) {
            return bad("peers must have distinct ids >= 1".into());
        }
        Ok(())
    }

    /// TLS, auth and limits combinations (issue #9).
    fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        let t = &self.tls;
        if t.enabled && (t.ca_file.is_none() || t.cert_file.is_none() || t.key_file.is_none()) {
            return bad("tls.enabled needs tls.ca_file, tls.cert_file and tls.key_file");
        }
        if !t.enabled && t.require_client_cert {
            return bad("tls.require_client_cert needs tls.enabled = true");
        }
        if t.enabled && t.peer_domain.is_empty() {
            return bad("tls.peer_domain must not be empty");
        }
        if self.auth.tokens_file.is_some() && !t.enabled {
            // Bearer tokens over plaintext could be sniffed, and without mTLS a node
            // cannot prove to the leader that it forwards a request for someone else.
            return bad("auth.tokens_file needs tls.enabled = true (tokens never travel in clear text; peers prove themselves with mTLS)");
        }
        let l = &self.limits;
        if l.rate_per_sec > 0 && l.burst == 0 {
            return bad("limits.burst must be >= 1 when limits.rate_per_sec is set");
        }
        if l.max_clients == 0 || l.max_clients > MAX_RATE_LIMITED_CLIENTS {
            return Err(ConfigError::Invalid(format!(
                "limits.max_clients must be 1..={MAX_RATE_LIMITED_CLIENTS}"
            )));
        }
        Ok(())
    }

    /// The Raft address override for peer `id`, if any.
    pub fn raft_route(&self, id: u64) -> Option<&str> {
        self.routes.iter().find(|r| r.id == id).and_then(|r| r.raft_addr.as_deref())
    }

    /// The API address override for peer `id`, if any.
    pub fn api_route(&self, id: u64) -> Option<&str> {
        self.routes.iter().find(|r| r.id == id).and_then(|r| r.api_addr.as_deref())
    }

    /// The API address advertised to peers and clients.
    pub fn advertised_api_addr(&self) -> String {
        self.advertise_api_addr.clone().unwrap_or_else(|| self.api_addr.to_string())
    }

    /// The Raft address advertised to peers.
    pub fn advertised_raft_addr(&self) -> String {
        self.advertise_raft_addr.clone().unwrap_or_else(|| self.raft_addr.to_string())
    }

    /// Max clock offset as a Duration.
    pub fn max_clock_offset(&self) -> Duration {
        Duration::from_millis(self.max_clock_offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().expect("defaults valid");
    }

    #[test]
    fn unknown_toml_field_is_rejected_with_its_name() {
        let err = toml::from_str::<NodeConfig>("idd = 3").expect_err("unknown field");
        assert!(err.to_string().contains("idd"), "{err}");
    }

    #[test]
    fn election_timeout_must_exceed_heartbeat() {
        let mut c = NodeConfig::default();
        c.raft.election_timeout_min_ms = 50;
        assert!(c.validate().is_err());
    }

    #[test]
    fn leader_sync_linger_is_bounded() {
        let mut c = NodeConfig::default();
        c.raft.leader_sync_linger_us = 20_000;
        assert!(c.validate().is_ok());
        c.raft.leader_sync_linger_us = 0;
        assert!(c.validate().is_ok(), "0 turns the linger off");
        c.raft.leader_sync_linger_us = 20_001;
        let err = c.validate().expect_err("over the bound");
        assert!(err.to_string().contains("raft.leader_sync_linger_us"), "{err}");
    }

    #[test]
    fn env_overrides_file_values() {
        let mut c = NodeConfig::default();
        c.apply_env(|k| (k == "MERIDIAN_ID").then(|| "7".to_string())).expect("env");
        assert_eq!(c.id, 7);
        let err = c.apply_env(|k| (k == "MERIDIAN_ID").then(|| "x".to_string()));
        assert!(err.is_err());
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn checked_in_sample_config_parses_and_is_valid() {
        let text = include_str!("../cluster/node.sample.toml");
        let c: NodeConfig = toml::from_str(text).expect("sample parses");
        c.validate().expect("sample valid");
        assert_eq!(c.peers.len(), 3);
    }
}

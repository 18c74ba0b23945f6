//! Cluster manifest: the TOML file that describes a local cluster for
//! `meridian cluster up` and the test clusters.
//!
//! ```toml
//! name = "meridian"            # cluster name, passed to every node
//! preferred_leader_region = "us-east"   # optional; the leader moves to this region
//! data_dir = "./data"          # data root (default ./data), relative to the cwd
//! # binary = "target/release/meridian"   # optional; default: the running binary
//!
//! [raft]                       # optional; passed to every node (node defaults otherwise)
//! heartbeat_interval_ms = 100
//!
//! [network]                  # optional: route links through the fault proxy
//! proxy = true                 # every directed node-to-node link (Raft and forwarding)
//! client_proxy = false         # also a client-side link per node (client:N)
//! latency_ms = 0               # initial latency on every node-to-node link
//! jitter_ms = 0
//!
//! [[network.region_latency]]   # distance between two regions (needs proxy = true)
//! between = ["us-east", "eu-west"]
//! latency_ms = 40              # one way, on every link between nodes of the two
//!                              # regions, and on client links of one region to nodes
//!                              # of the other; kept by `cluster fault heal`
//! [tls]                        # optional: TLS with a `meridian certs init` directory
//! dir = "certs"
//! require_client_cert = false
//!
//! [[node]]
//! id = 1
//! region = "local"             # default "local"
//! api_addr = "127.0.0.1:7001"
//! raft_addr = "127.0.0.1:7101"
//! extra_args = ["--unsafe-stale-reads"]   # optional, appended to the node's command line
//! ```
//!
//! Invariants after [`Manifest::parse`]: unknown fields are rejected; there is at
//! least one and at most [`MAX_NODES`] nodes; ids are distinct and >= 1; every api and
//! raft address is distinct; each node's generated [`NodeConfig`] passes
//! [`NodeConfig::validate`] (so Raft timing mistakes are caught before any process
//! starts); `[network]` options other than `proxy` need `proxy = true`, and latency and
//! jitter are at most [`MAX_LINK_LATENCY_MS`]; a region latency names two distinct
//! regions that nodes use, and each pair at most once. The first node listed is the
//! bootstrap node.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::config::{NodeConfig, PeerConfig, RaftConfig};

/// The embedded default manifest (cluster/local-3.toml): 3 nodes on 127.0.0.1.
pub const DEFAULT_MANIFEST_TOML: &str = include_str!("../../cluster/local-3.toml");
/// How the embedded default is named in messages.
pub const DEFAULT_MANIFEST_ORIGIN: &str = "<embedded local-3.toml>";
/// Most nodes a local cluster may have (Raft quorums past this are pointless locally).
pub const MAX_NODES: usize = 15;
/// Default data root.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Largest latency or jitter a manifest may put on a link, ms.
pub const MAX_LINK_LATENCY_MS: u64 = 10_000;

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_region() -> String {
    "local".to_string()
}

/// One node of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestNode {
    /// Node id (>= 1, unique).
    pub id: u64,
    /// Region label (default "local").
    #[serde(default = "default_region")]
    pub region: String,
    /// Listen (and advertised) address of the public gRPC API.
    pub api_addr: SocketAddr,
    /// Listen (and advertised) address of the Raft service.
    pub raft_addr: SocketAddr,
    /// Extra command-line flags appended after `--config` (flags override the file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Not part of the initial membership: the node starts empty and waits to be
    /// added (`meridian cluster add-learner`). The first node may not be a standby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
}

/// `[network]`: whether (and how) the launcher routes links through the fault proxy
/// (see [`super::network`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Route every directed node-to-node link (Raft and request forwarding) through
    /// its own proxy link; node i's config gets `routes` to reach node j.
    pub proxy: bool,
    /// Also create one client-side link per node (`client:N`), whose address
    /// [`LocalCluster::client_addr`](super::LocalCluster::client_addr) hands out.
    pub client_proxy: bool,
    /// Initial one-way latency on every node-to-node link, ms.
    pub latency_ms: u64,
    /// Initial uniform jitter on every node-to-node link, ms.
    pub jitter_ms: u64,
    /// One-way latency between pairs of regions (base latency of their links).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub region_latency: Vec<RegionLatency>,
}

/// `[[network.region_latency]]`: the distance between two regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLatency {
    /// The two regions (distinct; order does not matter).
    pub between: [String; 2],
    /// One-way latency in each direction, ms (at most [`MAX_LINK_LATENCY_MS`]).
    pub latency_ms: u64,
}

impl NetworkConfig {
    fn is_default(&self) -> bool {
        self == &NetworkConfig::default()
    }

    /// Check the rules listed in the module docs.
    pub fn validate(&self) -> Result<(), String> {
        if !self.proxy && (self.client_proxy || self.latency_ms > 0 || self.jitter_ms > 0) {
            return Err("[network] client_proxy, latency_ms and jitter_ms need proxy = true".into());
        }
        if self.latency_ms > MAX_LINK_LATENCY_MS || self.jitter_ms > MAX_LINK_LATENCY_MS {
            return Err(format!(
                "[network] latency_ms and jitter_ms must be at most {MAX_LINK_LATENCY_MS}"
            ));
        }
        if !self.proxy && !self.region_latency.is_empty() {
            return Err("[[network.region_latency]] needs proxy = true".into());
        }
        let mut pairs = HashSet::new();
        for r in &self.region_latency {
            let [a, b] = &r.between;
            if a == b {
                return Err(format!("[[network.region_latency]] between {a:?} and itself"));
            }
            if r.latency_ms > MAX_LINK_LATENCY_MS {
                return Err(format!(
                    "[[network.region_latency]] {a}<->{b}: latency_ms must be at most \
                     {MAX_LINK_LATENCY_MS}"
                ));
            }
            if !pairs.insert(region_pair(a, b)) {
                return Err(format!("[[network.region_latency]] {a}<->{b} is listed twice"));
            }
        }
        Ok(())
    }

    /// The base one-way latency between two regions (0 within a region or when the
    /// pair is not listed).
    pub fn region_latency_ms(&self, a: &str, b: &str) -> u64 {
        if a == b {
            return 0;
        }
        let pair = region_pair(a, b);
        self.region_latency
            .iter()
            .find(|r| region_pair(&r.between[0], &r.between[1]) == pair)
            .map_or(0, |r| r.latency_ms)
    }
}

fn region_pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// A validated cluster manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Cluster name (a node refuses a data dir of another cluster).
    pub name: String,
    /// Data root: node N keeps its data in `<data_dir>/node-N`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The `meridian` binary to run; default: the launcher's own executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Raft settings for every node; absent fields take the node defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftConfig>,
    /// Region the leader should live in (passed to every node; see
    /// [`PlacementConfig`](crate::config::PlacementConfig)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_leader_region: Option<String>,
    /// Fault-proxy routing of the cluster's links (default: none).
    #[serde(default, skip_serializing_if = "NetworkConfig::is_default")]
    pub network: NetworkConfig,
    /// TLS for every node (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ManifestTls>,
    /// The nodes; the first one bootstraps the cluster.
    #[serde(rename = "node")]
    pub nodes: Vec<ManifestNode>,
}

/// `[tls]` of a manifest: a certificate directory in the `meridian certs init`
/// layout (ca.pem, node-N.pem, node-N-key.pem, admin.pem, admin-key.pem). Every node
/// serves TLS and dials its peers with mutual TLS; the launcher itself connects as
/// the `admin` client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestTls {
    /// Certificate directory (relative paths are relative to the working directory).
    pub dir: PathBuf,
    /// Refuse API clients without a certificate.
    #[serde(default)]
    pub require_client_cert: bool,
}

impl Manifest {
    /// Parse and validate a manifest. `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ClusterError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ClusterError::Manifest {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        manifest
            .validate()
            .map_err(|message| ClusterError::Manifest { origin: origin.to_string(), message })?;
        Ok(manifest)
    }

    /// Read, parse and validate a manifest file.
    pub fn load(path: &Path) -> Result<Self, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClusterError::Manifest {
            origin: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The embedded default (cluster/local-3.toml).
    pub fn embedded_default() -> Result<Self, ClusterError> {
        Self::parse(DEFAULT_MANIFEST_TOML, DEFAULT_MANIFEST_ORIGIN)
    }

    /// Check every rule listed in the module docs; the message names the offender.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("at least one [[node]] is required".into());
        }
        if self.nodes.len() > MAX_NODES {
            return Err(format!("{} nodes listed, at most {MAX_NODES} allowed", self.nodes.len()));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        self.network.validate()?;
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for node in &self.nodes {
            if node.id == 0 {
                return Err("node id 0 is invalid: ids start at 1".into());
            }
            if !ids.insert(node.id) {
                return Err(format!("node id {} is listed twice", node.id));
            }
            for addr in [node.api_addr, node.raft_addr] {
                if addr.port() == 0 {
                    return Err(format!("node {}: address {addr} needs a fixed port", node.id));
                }
                if !addrs.insert(addr) {
                    return Err(format!("node {}: address {addr} is used twice", node.id));
                }
            }
            if node.extra_args.iter().any(|a| a == "--config") {
                return Err(format!("node {}: extra_args must not contain --config", node.id));
            }
        }
        if self.nodes.first().is_some_and(|n| n.standby) {
            return Err("the first node bootstraps the cluster and cannot be a standby".into());
        }
        let regions = self.regions();
        if let Some(p) = &self.preferred_leader_region {
            if !regions.contains(p) {
                return Err(format!("preferred_leader_region {p:?} is not the region of any node"));
            }
        }
        for r in &self.network.region_latency {
            for name in &r.between {
                if !regions.iter().any(|known| known == name) {
                    return Err(format!(
                        "[[network.region_latency]] names region {name:?}, which no node is in"
                    ));
                }
            }
        }
        for node in &self.nodes {
            let config = self.node_config(node.id, Path::new(DEFAULT_DATA_DIR), true)?;
            config.validate().map_err(|e| format!("node {}: {e}", node.id))?;
        }
        Ok(())
    }

    /// The distinct regions of the nodes, in order of first appearance.
    pub fn regions(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.nodes.iter().filter(|n| seen.insert(&n.region)).map(|n| n.region.clone()).collect()
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> Option<&ManifestNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The id of the bootstrap node (the first listed).
    pub fn bootstrap_id(&self) -> Option<u64> {
        self.nodes.first().map(|n| n.id)
    }

    /// The initial membership: every node of the manifest but the standbys.
    pub fn peers(&self) -> Vec<PeerConfig> {
        self.nodes
            .iter()
            .filter(|n| !n.standby)
            .map(|n| PeerConfig {
                id: n.id,
                api_addr: n.api_addr.to_string(),
                raft_addr: n.raft_addr.to_string(),
                region: n.region.clone(),
            })
            .collect()
    }

    /// The config of node `id` with its data dir under `data_root`. With `bootstrap`,
    /// the first node gets `bootstrap = true` (idempotent on an initialised data dir).
    pub fn node_config(
        &self,
        id: u64,
        data_root: &Path,
        bootstrap: bool,
    ) -> Result<NodeConfig, String> {
        let node = self.node(id).ok_or_else(|| format!("node {id} is not in the manifest"))?;
        Ok(NodeConfig {
            id,
            cluster_name: self.name.clone(),
            region: node.region.clone(),
            api_addr: node.api_addr,
            raft_addr: node.raft_addr,
            data_dir: data_root.join(format!("node-{id}")),
            peers: self.peers(),
            bootstrap: bootstrap && self.bootstrap_id() == Some(id),
            raft: self.raft.clone().unwrap_or_default(),
            // Every node of the manifest runs on this machine.
            worker_threads: crate::config::shared_worker_threads(self.nodes.len()),
            placement: crate::config::PlacementConfig {
                preferred_leader_region: self.preferred_leader_region.clone(),
                ..Default::default()
            },
            tls: self.tls.as_ref().map_or_else(
                || NodeConfig::default().tls,
                |t| {
                    let (cert, key) = super::certs::cert_paths(&t.dir, &format!("node-{id}"));
                    crate::config::TlsConfig {
                        enabled: true,
                        ca_file: Some(t.dir.join(super::certs::CA_CERT_FILE)),
                        cert_file: Some(cert),
                        key_file: Some(key),
                        require_client_cert: t.require_client_cert,
                        peer_domain: crate::config::DEFAULT_PEER_DOMAIN.to_string(),
                    }
                },
            ),
            ..NodeConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_three_local_nodes() {
        let m = Manifest::embedded_default().expect("default manifest is valid");
        assert_eq!(m.nodes.len(), 3);
        assert_eq!(m.data_dir, PathBuf::from("./data"));
        let apis: Vec<String> = m.nodes.iter().map(|n| n.api_addr.to_string()).collect();
        assert_eq!(apis, ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
        let rafts: Vec<String> = m.nodes.iter().map(|n| n.raft_addr.to_string()).collect();
        assert_eq!(rafts, ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]);
        assert!(m.nodes.iter().all(|n| n.region == "local"));
    }

    #[test]
    fn only_the_first_node_bootstraps_and_every_node_lists_all_peers() {
        let m = Manifest::embedded_default().expect("valid");
        let root = Path::new("/tmp/x");
        let c1 = m.node_config(1, root, true).expect("node 1");
        let c2 = m.node_config(2, root, true).expect("node 2");
        assert!(c1.bootstrap);
        assert!(!c2.bootstrap);
        assert_eq!(c2.peers.len(), 3);
        assert_eq!(c2.data_dir, PathBuf::from("/tmp/x/node-2"));
        assert!(!m.node_config(1, root, false).expect("node 1").bootstrap);
    }

    #[test]
    fn node_config_round_trips_through_toml() {
        let m = Manifest::embedded_default().expect("valid");
        let c = m.node_config(2, Path::new("/tmp/x"), true).expect("node 2");
        let text = toml::to_string(&c).expect("serialize");
        let back: NodeConfig = toml::from_str(&text).expect("parse back");
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let text = format!("{DEFAULT_MANIFEST_TOML}\nbogus_field = 1\n");
        let err = Manifest::parse(&text, "m.toml").expect_err("unknown field");
        assert!(
            err.to_string().contains("bogus_field") || err.to_string().contains("unknown"),
            "{err}"
        );
        let text = DEFAULT_MANIFEST_TOML.replace("region = \"local\"", "regoin = \"local\"");
        let err = Manifest::parse(&text, "m.toml").expect_err("unknown node field");
        assert!(err.to_string().contains("regoin"), "{err}");
    }

    #[test]
    fn duplicate_ids_and_addresses_are_rejected() {
        let dup_id = DEFAULT_MANIFEST_TOML.replace("id = 2", "id = 1");
        let err = Manifest::parse(&dup_id, "m.toml").expect_err("dup id");
        assert!(err.to_string().contains("node id 1 is listed twice"), "{err}");
        let dup_addr = DEFAULT_MANIFEST_TOML.replace("127.0.0.1:7102", "127.0.0.1:7001");
        let err = Manifest::parse(&dup_addr, "m.toml").expect_err("dup addr");
        assert!(err.to_string().contains("127.0.0.1:7001 is used twice"), "{err}");
    }

    #[test]
    fn bad_raft_timings_and_empty_node_list_are_rejected() {
        let text = "name = \"x\"\nnode = []\n";
        let err = Manifest::parse(text, "m.toml").expect_err("no nodes");
        assert!(err.to_string().contains("at least one"), "{err}");
        let text = format!(
            "{DEFAULT_MANIFEST_TOML}\n[raft]\nheartbeat_interval_ms = 500\nelection_timeout_min_ms = 100\n"
        );
        let err = Manifest::parse(&text, "m.toml").expect_err("bad timings");
        assert!(err.to_string().contains("election_timeout_min_ms"), "{err}");
    }

    #[test]
    fn network_section_parses_and_its_options_need_the_proxy() {
        let text = format!("{DEFAULT_MANIFEST_TOML}\n[network]\nproxy = true\nlatency_ms = 20\n");
        let m = Manifest::parse(&text, "m.toml").expect("valid");
        assert!(m.network.proxy);
        assert_eq!(m.network.latency_ms, 20);
        let text = format!("{DEFAULT_MANIFEST_TOML}\n[network]\nclient_proxy = true\n");
        let err = Manifest::parse(&text, "m.toml").expect_err("client proxy without proxy");
        assert!(err.to_string().contains("need proxy = true"), "{err}");
        let text = format!("{DEFAULT_MANIFEST_TOML}\n[network]\nproxy = true\nlatncy_ms = 1\n");
        let err = Manifest::parse(&text, "m.toml").expect_err("typo");
        assert!(err.to_string().contains("latncy_ms"), "{err}");
        assert!(!Manifest::embedded_default().expect("default").network.proxy);
    }

    #[test]
    fn region_latencies_are_symmetric_and_validated() {
        let m = Manifest::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/cluster/three-regions.toml"
        )))
        .expect("three-regions.toml is valid");
        assert_eq!(m.nodes.len(), 5);
        assert_eq!(m.regions(), ["us-east", "eu-west", "ap-south"]);
        assert_eq!(m.network.region_latency_ms("us-east", "eu-west"), 40);
        assert_eq!(m.network.region_latency_ms("eu-west", "us-east"), 40);
        assert_eq!(m.network.region_latency_ms("ap-south", "us-east"), 110);
        assert_eq!(m.network.region_latency_ms("eu-west", "ap-south"), 80);
        assert_eq!(m.network.region_latency_ms("us-east", "us-east"), 0);
        let base = DEFAULT_MANIFEST_TOML.replacen("region = \"local\"", "region = \"far\"", 1);
        let text = format!(
            "{base}\n[network]\nproxy = true\n[[network.region_latency]]\n\
             between = [\"local\", \"far\"]\nlatency_ms = 30\n"
        );
        let m = Manifest::parse(&text, "m.toml").expect("valid");
        assert_eq!(m.network.region_latency_ms("far", "local"), 30);
        let unknown = text.replace("\"far\"]", "\"mars\"]");
        let err = Manifest::parse(&unknown, "m.toml").expect_err("unknown region");
        assert!(err.to_string().contains("mars"), "{err}");
        let same = text.replace("\"far\"]", "\"local\"]");
        let err = Manifest::parse(&same, "m.toml").expect_err("same region");
        assert!(err.to_string().contains("itself"), "{err}");
        let twice = format!(
            "{text}[[network.region_latency]]\nbetween = [\"far\", \"local\"]\nlatency_ms = 5\n"
        );
        let err = Manifest::parse(&twice, "m.toml").expect_err("pair twice");
        assert!(err.to_string().contains("listed twice"), "{err}");
        let no_proxy = text.replace("proxy = true", "proxy = false");
        let err = Manifest::parse(&no_proxy, "m.toml").expect_err("needs proxy");
        assert!(err.to_string().contains("needs proxy"), "{err}");
    }

    #[test]
    fn raft_overrides_reach_every_node() {
        let text = format!("{DEFAULT_MANIFEST_TOML}\n[raft]\nsnapshot_logs_since_last = 50\n");
        let m = Manifest::parse(&text, "m.toml").expect("valid");
        for n in &m.nodes {
            let c = m.node_config(n.id, Path::new("d"), true).expect("config");
            assert_eq!(c.raft.snapshot_logs_since_last, 50);
            assert_eq!(c.raft.heartbeat_interval_ms, RaftConfig::default().heartbeat_interval_ms);
        }
    }
}

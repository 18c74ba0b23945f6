//! [`ClusterNetwork`]: a local cluster's links routed through the [`FaultProxy`], and
//! network faults expressed on nodes (cut, partition, isolate, latency) instead of link
//! names.
//!
//! Links, one per *directed* pair of distinct nodes `i -> j` and service:
//! - `raft:i->j`: node i's Raft RPCs to node j (node i's config routes peer j's Raft
//!   address here);
//! - `api:i->j`: node i's forwarded client requests to node j (when j leads);
//! - `client:j` (optional): a client-side entry to node j's API, for tests that want
//!   to cut or slow clients too;
//! - `client@r:j` (optional, with region latencies): the entry to node j's API for a
//!   client pinned to region r, whose base latency is the distance from r to j's
//!   region (so a client "in" r sees the same latencies as the nodes of r).
//!
//! Region latencies (`[[network.region_latency]]`) are *base* latencies of the links:
//! the distance between the regions, kept by heal. Fault latency adds on top.
//!
//! A link carries both the requests of its caller and the answers to them, so cutting
//! `i -> j` (blackholing `raft:i->j` and `api:i->j`) means "node i can no longer call
//! node j"; node j can still call node i. A symmetric partition cuts both directions.
//! A [`Grudge`] maps each node to the nodes it cannot call: every partition shape
//! (halves, isolated node, majority ring, bridge) is one grudge.
//!
//! Invariants: no link listens on a port of a manifest node (the nodes may bind
//! theirs after the links exist); the link set is fixed at construction (restarted nodes keep their
//! routes, so a partition survives a restart); every target is a 127.0.0.1 address
//! from the manifest; [`heal`](ClusterNetwork::heal) removes every fault of every link.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::manifest::Manifest;
use super::proxy::{FaultProxy, LinkInfo, ProxyError};
use crate::config::RouteConfig;

/// Which nodes each node cannot call: `from -> {to, ...}`.
pub type Grudge = BTreeMap<u64, BTreeSet<u64>>;

/// Name of node `from`'s link to node `to`'s Raft service.
pub fn raft_link(from: u64, to: u64) -> String {
    format!("raft:{from}->{to}")
}

/// Name of node `from`'s link to node `to`'s public API (request forwarding).
pub fn api_link(from: u64, to: u64) -> String {
    format!("api:{from}->{to}")
}

/// Name of the client-side link to node `to`'s public API.
pub fn client_link(to: u64) -> String {
    format!("client:{to}")
}

/// Name of the link a client pinned to `region` uses to reach node `to`'s API.
pub fn region_client_link(region: &str, to: u64) -> String {
    format!("client@{region}:{to}")
}

/// The grudge of a symmetric partition into `groups`: every node cannot call any node
/// of another group. Nodes in no group keep every link.
pub fn partition_grudge(groups: &[Vec<u64>]) -> Grudge {
    let mut grudge = Grudge::new();
    for (gi, group) in groups.iter().enumerate() {
        for (gj, other) in groups.iter().enumerate() {
            if gi == gj {
                continue;
            }
            for from in group {
                grudge.entry(*from).or_default().extend(other.iter().filter(|to| *to != from));
            }
        }
    }
    grudge
}

/// A local cluster's proxied links. See the module docs.
pub struct ClusterNetwork {
    proxy: FaultProxy,
    nodes: Vec<u64>,
    client_links: BTreeMap<u64, SocketAddr>,
    region_client_links: BTreeMap<String, BTreeMap<u64, SocketAddr>>,
}

impl std::fmt::Debug for ClusterNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNetwork")
            .field("nodes", &self.nodes)
            .field("links", &self.proxy.link_names().len())
            .finish()
    }
}

impl ClusterNetwork {
    /// One link per directed pair of manifest nodes and service, plus (with `clients`)
    /// one client link per node. Must run inside a tokio runtime (the links run on it).
    pub fn build(manifest: &Manifest, clients: bool) -> Result<Self, ProxyError> {
        let proxy = FaultProxy::new();
        // The nodes may not have bound their ports yet: never take one of them.
        let reserved: Vec<SocketAddr> =
            manifest.nodes.iter().flat_map(|n| [n.api_addr, n.raft_addr]).collect();
        let mut client_links = BTreeMap::new();
        for to in &manifest.nodes {
            for from in &manifest.nodes {
                if from.id != to.id {
                    proxy.add_link_excluding(
                        &raft_link(from.id, to.id),
                        to.raft_addr,
                        &reserved,
                    )?;
                    proxy.add_link_excluding(&api_link(from.id, to.id), to.api_addr, &reserved)?;
                }
            }
            if clients {
                let addr = proxy.add_link_excluding(&client_link(to.id), to.api_addr, &reserved)?;
                client_links.insert(to.id, addr);
            }
        }
        let mut region_client_links: BTreeMap<String, BTreeMap<u64, SocketAddr>> = BTreeMap::new();
        let latency =
            |a: &str, b: &str| Duration::from_millis(manifest.network.region_latency_ms(a, b));
        for to in &manifest.nodes {
            for from in &manifest.nodes {
                if from.id != to.id {
                    let base = latency(&from.region, &to.region);
                    proxy.set_base_latency(&raft_link(from.id, to.id), base)?;
                    proxy.set_base_latency(&api_link(from.id, to.id), base)?;
                }
            }
            if clients && !manifest.network.region_latency.is_empty() {
                for region in manifest.regions() {
                    let name = region_client_link(&region, to.id);
                    let addr = proxy.add_link_excluding(&name, to.api_addr, &reserved)?;
                    proxy.set_base_latency(&name, latency(&region, &to.region))?;
                    region_client_links.entry(region).or_default().insert(to.id, addr);
                }
            }
        }
        let nodes = manifest.nodes.iter().map(|n| n.id).collect();
        Ok(Self { proxy, nodes, client_links, region_client_links })
    }

    /// The address a client pinned to `region` uses to reach node `id`, when the
    /// cluster has region latencies and client links.
    pub fn region_client_addr(&self, region: &str, id: u64) -> Option<SocketAddr> {
        self.region_client_links.get(region).and_then(|m| m.get(&id)).copied()
    }

    /// Every region's client addresses: region -> node id -> address.
    pub fn region_client_addrs(&self) -> &BTreeMap<String, BTreeMap<u64, SocketAddr>> {
        &self.region_client_links
    }

    /// The routes node `from` must use: every other node through `from`'s links.
    pub fn routes(&self, from: u64) -> Result<Vec<RouteConfig>, ProxyError> {
        let mut routes = Vec::new();
        for to in self.nodes.iter().copied().filter(|to| *to != from) {
            routes.push(RouteConfig {
                id: to,
                raft_addr: Some(self.proxy.link(&raft_link(from, to))?.listen_addr().to_string()),
                api_addr: Some(self.proxy.link(&api_link(from, to))?.listen_addr().to_string()),
            });
        }
        Ok(routes)
    }

    /// The client-side address of node `id`'s API, when client links exist.
    pub fn client_addr(&self, id: u64) -> Option<SocketAddr> {
        self.client_links.get(&id).copied()
    }

    /// The proxy itself (link-level control).
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// Node ids, in manifest order.
    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    fn check_node(&self, id: u64) -> Result<(), ProxyError> {
        if self.nodes.contains(&id) {
            Ok(())
        } else {
            Err(ProxyError::UnknownLink(format!("node {id} (not in this cluster)")))
        }
    }

    /// Node `from` can no longer call node `to` (Raft and forwarding); the reverse
    /// direction is untouched.
    pub fn cut(&self, from: u64, to: u64) -> Result<(), ProxyError> {
        self.check_node(from)?;
        self.check_node(to)?;
        if from == to {
            return Ok(());
        }
        self.proxy.set_blackhole(&raft_link(from, to), true)?;
        self.proxy.set_blackhole(&api_link(from, to), true)
    }

    /// Apply every cut of `grudge` (on top of existing faults).
    pub fn apply_grudge(&self, grudge: &Grudge) -> Result<(), ProxyError> {
        for (from, targets) in grudge {
            for to in targets {
                self.cut(*from, *to)?;
            }
        }
        Ok(())
    }

    /// Symmetric partition into `groups` (see [`partition_grudge`]).
    pub fn partition(&self, groups: &[Vec<u64>]) -> Result<Grudge, ProxyError> {
        let grudge = partition_grudge(groups);
        self.apply_grudge(&grudge)?;
        Ok(grudge)
    }

    /// Cut node `id` off from every other node, both directions.
    pub fn isolate(&self, id: u64) -> Result<Grudge, ProxyError> {
        self.check_node(id)?;
        let rest: Vec<u64> = self.nodes.iter().copied().filter(|n| *n != id).collect();
        self.partition(&[vec![id], rest])
    }

    /// Add `latency` (plus uniform `jitter`) to every node-to-node link, or with `node`
    /// only to the links from and to that node.
    pub fn set_latency(
        &self,
        latency: Duration,
        jitter: Duration,
        node: Option<u64>,
    ) -> Result<(), ProxyError> {
        if let Some(id) = node {
            self.check_node(id)?;
        }
        for from in &self.nodes {
            for to in self.nodes.iter().filter(|to| *to != from) {
                if node.is_some_and(|n| n != *from && n != *to) {
                    continue;
                }
                self.proxy.set_latency(&raft_link(*from, *to), latency, jitter)?;
                self.proxy.set_latency(&api_link(*from, *to), latency, jitter)?;
            }
        }
        Ok(())
    }

    /// Remove every fault of every link (connections that lost bytes are closed so
    /// peers reconnect).
    pub fn heal(&self) {
        self.proxy.heal_all();
    }

    /// Close every open connection of every link (RST).
    pub fn reset(&self) {
        self.proxy.reset_all();
    }

    /// A snapshot of every link, in name order.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.proxy.links()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn partition_grudge_cuts_both_directions_between_groups_only() {
        let g = partition_grudge(&[vec![1, 2], vec![3]]);
        assert_eq!(g.get(&1), Some(&set(&[3])));
        assert_eq!(g.get(&2), Some(&set(&[3])));
        assert_eq!(g.get(&3), Some(&set(&[1, 2])));
        let g = partition_grudge(&[vec![1], vec![2]]);
        assert!(!g.contains_key(&3));
    }

    #[tokio::test]
    async fn every_directed_pair_gets_a_raft_and_an_api_link_and_routes_use_them() {
        let m = Manifest::embedded_default().expect("manifest");
        let net = ClusterNetwork::build(&m, true).expect("network");
        // 3 nodes: 6 directed pairs x 2 services + 3 client links.
        assert_eq!(net.links().len(), 15);
        let routes = net.routes(1).expect("routes");
        assert_eq!(routes.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 3]);
        let raft = net.proxy().link(&raft_link(1, 2)).expect("link");
        assert_eq!(routes[0].raft_addr.as_deref(), Some(raft.listen_addr().to_string().as_str()));
        assert_eq!(raft.target().to_string(), "127.0.0.1:7102");
        assert!(net.client_addr(3).is_some());
    }

    #[tokio::test]
    async fn region_latencies_become_base_latencies_of_node_and_client_links() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/three-regions.toml");
        let m = Manifest::load(std::path::Path::new(path)).expect("manifest");
        let net = ClusterNetwork::build(&m, true).expect("network");
        let base = |name: &str| net.proxy().link(name).expect(name).info().base_latency_ms;
        assert_eq!(base(&raft_link(1, 2)), 0, "same region");
        assert_eq!(base(&raft_link(1, 3)), 40, "us-east -> eu-west");
        assert_eq!(base(&api_link(5, 1)), 110, "ap-south -> us-east");
        assert_eq!(base(&raft_link(4, 5)), 80, "eu-west -> ap-south");
        assert_eq!(base(&region_client_link("ap-south", 5)), 0);
        assert_eq!(base(&region_client_link("ap-south", 3)), 80);
        assert_eq!(base(&region_client_link("us-east", 2)), 0);
        assert!(net.region_client_addr("eu-west", 4).is_some());
        assert!(net.region_client_addr("mars", 4).is_none());
        net.set_latency(Duration::from_millis(5), Duration::ZERO, None).expect("fault");
        net.heal();
        assert_eq!(base(&raft_link(1, 3)), 40, "heal keeps the distance");
    }

    #[tokio::test]
    async fn isolate_blackholes_exactly_the_links_of_one_node_and_heal_clears_them() {
        let m = Manifest::embedded_default().expect("manifest");
        let net = ClusterNetwork::build(&m, false).expect("network");
        net.isolate(2).expect("isolate");
        let holed: Vec<String> =
            net.links().into_iter().filter(|l| l.blackhole).map(|l| l.name).collect();
        assert_eq!(holed.len(), 8, "{holed:?}");
        assert!(holed.iter().all(|n| n.contains('2')), "{holed:?}");
        net.heal();
        assert!(net.links().iter().all(|l| !l.blackhole));
        assert!(net.isolate(9).is_err());
    }
}

//! The endpoints a client talks to: one lazily connected tonic [`Channel`] per
//! endpoint (HTTP/2, shared by every call), its circuit breaker, and the routing
//! state (last known leader, sticky preferred endpoint, round-robin cursor).
//!
//! Invariants:
//! - An address appears at most once, normalised to `host:port`; the set only grows
//!   (leader hints may add addresses) and never beyond [`MAX_ENDPOINTS`].
//! - A channel is created on first use (inside the runtime) with
//!   `Endpoint::connect_with_connector_lazy` (writes coalesced, see `crate::coalesce`),
//!   then reused; tonic reconnects it after failures.
//! - Locks are std locks held for a few instructions, never across an await.
//!
//! Region-aware routing: a probe (Cluster.Status on every endpoint, see
//! [`Client::probe`](super::Client::probe)) tags each endpoint with the node behind
//! it (id, region, advertised API address) and its round-trip time. Reads that may be
//! served by any replica ([`Route::Nearest`]) go round-robin over the endpoints of the
//! client's own region (over all endpoints when the client has no region), then to
//! other regions by round-trip time; a leader hint naming a node's advertised
//! address is mapped to the endpoint that reaches that node, so a client that reaches
//! nodes through other addresses (proxies, NAT) keeps using its own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::breaker::{Breaker, BreakerState};
use super::config::{ClientConfig, MAX_ENDPOINTS};
use super::error::ClientError;

/// How long probe results (node tags, round-trip times) are trusted before the next
/// nearest-replica read probes again.
pub const PROBE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest endpoint address accepted, bytes.
pub const MAX_ENDPOINT_BYTES: usize = 256;

/// Normalise `host:port` or `http://host:port[/]` to `host:port`; the error says
/// what is wrong.
pub fn normalize_endpoint(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.len() > MAX_ENDPOINT_BYTES {
        return Err(format!("longer than {MAX_ENDPOINT_BYTES} bytes"));
    }
    if s.starts_with("https://") {
        return Err("TLS (https://) is not supported by this client yet".into());
    }
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port (no port given)")?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    if port == 0 {
        return Err("port must be 1..=65535".into());
    }
    let bad_host = host.is_empty()
        || host.contains(|c: char| c.is_whitespace() || "/?#@".contains(c))
        || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']')));
    if bad_host {
        return Err(format!("bad host {host:?} (IPv6 addresses go in brackets)"));
    }
    Ok(format!("{host}:{port}"))
}

/// A read-only view of one endpoint, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointInfo {
    /// `host:port`.
    pub addr: String,
    /// Its circuit breaker's state.
    pub breaker: BreakerState,
    /// True when this is the last known leader.
    pub is_leader: bool,
}

/// The node behind an endpoint, as its Cluster.Status reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeTag {
    /// Node id.
    pub id: u64,
    /// The node's region label.
    pub region: String,
    /// The API address the node advertises (what leader hints name).
    pub api_addr: String,
}

/// One endpoint: address, lazily created channel, breaker.
#[derive(Debug)]
pub struct EndpointState {
    /// `host:port`.
    pub addr: String,
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    /// This endpoint's circuit breaker.
    pub breaker: Breaker,
    tag: RwLock<Option<NodeTag>>,
    /// Round-trip time of the last probe, µs; 0 = never measured.
    rtt_us: AtomicU64,
}

impl EndpointState {
    fn new(addr: String, config: &ClientConfig, now: Instant) -> Result<Self, ClientError> {
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ClientError::Config(format!("endpoint {addr}: {e}")))?;
        if let Some(tls) = &config.tls {
            endpoint = endpoint
                .tls_config(tls_config(tls)?)
                .map_err(|e| ClientError::Config(format!("tls for {addr}: {e}")))?;
        }
        let endpoint = endpoint
            .user_agent(concat!("meridian-client/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| ClientError::Config(format!("user agent: {e}")))?
            .connect_timeout(config.connect_timeout())
            .http2_keep_alive_interval(config.keepalive_interval())
            .keep_alive_timeout(config.keepalive_timeout())
            .keep_alive_while_idle(true);
        Ok(Self {
            addr,
            endpoint,
            channel: OnceLock::new(),
            breaker: Breaker::new(&config.breaker, now),
            tag: RwLock::new(None),
            rtt_us: AtomicU64::new(0),
        })
    }

    /// The node behind this endpoint, once probed.
    pub fn tag(&self) -> Option<NodeTag> {
        self.tag.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Record what a probe learned: the node and the round-trip time.
    pub fn set_probe(&self, tag: NodeTag, rtt: std::time::Duration) {
        *self.tag.write().unwrap_or_else(|e| e.into_inner()) = Some(tag);
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.rtt_us.store(us, Ordering::Relaxed);
    }

    /// Round-trip time of the last probe, if measured.
    pub fn rtt(&self) -> Option<std::time::Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }

    /// The shared channel, created on first use. Must be called inside a tokio runtime.
    /// Its connection coalesces the frames of a request into one socket write
    /// (`crate::coalesce`; Nagle is off), with TLS on top when configured.
    pub fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| {
                self.endpoint
                    .connect_with_connector_lazy(tower::service_fn(crate::coalesce::connect))
            })
            .clone()
    }
}

/// Largest PEM file the client reads, bytes.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    let err = |m: String| ClientError::Config(format!("tls {what} {}: {m}", path.display()));
    let len = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if len > MAX_PEM_BYTES {
        return Err(err(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}

/// The rustls settings of a client from its `[tls]` files.
pub fn tls_config(
    tls: &super::config::ClientTlsConfig,
) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
    use tonic::transport::{Certificate, Identity};
    let ca = tls
        .ca_file
        .as_deref()
        .ok_or_else(|| ClientError::Config("tls.ca_file is required".into()))?;
    let mut out = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_pem("CA", ca)?))
        .domain_name(
            tls.domain.clone().unwrap_or_else(|| super::config::DEFAULT_TLS_DOMAIN.into()),
        );
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        out =
            out.identity(Identity::from_pem(read_pem("certificate", cert)?, read_pem("key", key)?));
    }
    Ok(out)
}

/// Which endpoints a call may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Prefer the last known leader, else the sticky preferred endpoint (writes and
    /// linearizable reads: saves the follower's forwarding hop).
    Leader,
    /// Spread over all endpoints round-robin.
    Any,
    /// The nearest replica: the client's region first, then by round-trip time
    /// (serializable and bounded-staleness reads; follower linearizable reads). Falls
    /// back to round-robin order for endpoints never probed.
    Nearest,
}

/// All endpoints of one client.
#[derive(Debug)]
pub struct EndpointSet {
    list: RwLock<Vec<Arc<EndpointState>>>,
    leader: RwLock<Option<Arc<EndpointState>>>,
    preferred: AtomicUsize,
    round_robin: AtomicUsize,
    config: ClientConfig,
    probed_at: RwLock<Option<Instant>>,
}

impl EndpointSet {
    /// Endpoints from a validated config.
    pub fn new(config: &ClientConfig, now: Instant) -> Result<Self, ClientError> {
        let mut list = Vec::with_capacity(config.endpoints.len());
        for raw in &config.endpoints {
            let addr = normalize_endpoint(raw)
                .map_err(|m| ClientError::Config(format!("endpoint {raw:?}: {m}")))?;
            list.push(Arc::new(EndpointState::new(addr, config, now)?));
        }
        Ok(Self {
            list: RwLock::new(list),
            leader: RwLock::new(None),
            preferred: AtomicUsize::new(0),
            round_robin: AtomicUsize::new(0),
            config: config.clone(),
            probed_at: RwLock::new(None),
        })
    }

    /// Every endpoint, in configuration order.
    pub fn all(&self) -> Vec<Arc<EndpointState>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a probe is due: never probed, or the last one is older than
    /// [`PROBE_REFRESH`].
    pub fn probe_due(&self, now: Instant) -> bool {
        self.probed_at
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_REFRESH)
    }

    /// Note that a probe ran at `now`.
    pub fn mark_probed(&self, now: Instant) {
        *self.probed_at.write().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    /// Endpoints nearest first. Without a client region: every endpoint in
    /// `start`-rotated order (round-robin, so reads spread over the replicas). With one:
    /// the endpoints of that region (round-robin among them), then the others by probed
    /// round-trip time, unprobed ones last.
    fn nearest(&self, start: usize) -> Vec<Arc<EndpointState>> {
        let all = self.all();
        let n = all.len().max(1);
        let mut order: Vec<(usize, Arc<EndpointState>)> =
            all.into_iter().enumerate().map(|(i, e)| ((i + n - start % n) % n, e)).collect();
        let Some(region) = self.config.region.as_deref() else {
            order.sort_by_key(|(rotated, _)| *rotated);
            return order.into_iter().map(|(_, e)| e).collect();
        };
        order.sort_by_key(|(rotated, e)| {
            let same_region = e.tag().is_some_and(|t| t.region == region);
            let rtt = if same_region { 0 } else { e.rtt().map_or(u128::MAX, |d| d.as_micros()) };
            (!same_region, rtt, *rotated)
        });
        order.into_iter().map(|(_, e)| e).collect()
    }

    /// The last known leader.
    pub fn leader(&self) -> Option<Arc<EndpointState>> {
        self.leader.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_leader(&self, leader: Option<Arc<EndpointState>>) {
        *self.leader.write().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    /// The endpoint with this address (normalised), if known.
    pub fn get(&self, addr: &str) -> Option<Arc<EndpointState>> {
        let addr = normalize_endpoint(addr).ok()?;
        self.all().into_iter().find(|e| e.addr == addr)
    }

    /// The endpoint with this address, added if new and there is room.
    pub fn get_or_add(&self, raw: &str, now: Instant) -> Option<Arc<EndpointState>> {
        let addr = normalize_endpoint(raw).ok()?;
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = list.iter().find(|e| e.addr == addr) {
            return Some(e.clone());
        }
        if list.len() >= MAX_ENDPOINTS {
            return None;
        }
        let state = Arc::new(EndpointState::new(addr, &self.config, now).ok()?);
        list.push(state.clone());
        Some(state)
    }

    /// Follow a leader hint: remember it as the leader and return it, unless it is
    /// unusable (malformed, set full) or is `from` itself (a stale hint).
    pub fn redirect(&self, hint: &str, from: &str, now: Instant) -> Option<Arc<EndpointState>> {
        let target = match self.known(hint) {
            Some(e) => e,
            None => self.get_or_add(hint, now)?,
        };
        if target.addr == from {
            return None;
        }
        self.set_leader(Some(target.clone()));
        Some(target)
    }

    /// Remember `hint` as the leader if it names an endpoint of the set (by address or
    /// by a member's advertised address) other than `from`; otherwise change nothing.
    /// For the hint on a forwarded answer: never adds an endpoint.
    pub fn follow_known_leader(&self, hint: &str, from: &str) -> Option<Arc<EndpointState>> {
        let known = self.known(hint)?;
        if known.addr == from {
            return None;
        }
        self.set_leader(Some(known.clone()));
        Some(known)
    }

    /// The endpoint a leader hint names: one whose member tag advertises that API
    /// address (it may be dialled under another address), else one with that address.
    fn known(&self, hint: &str) -> Option<Arc<EndpointState>> {
        let hint_addr = normalize_endpoint(hint).ok()?;
        let all = self.all();
        let advertises = |e: &&Arc<EndpointState>| {
            e.tag()
                .is_some_and(|t| normalize_endpoint(&t.api_addr).ok().as_ref() == Some(&hint_addr))
        };
        all.iter().find(advertises).or_else(|| all.iter().find(|e| e.addr == hint_addr)).cloned()
    }

    /// Choose the endpoint for the next attempt, preferring endpoints not in `avoid`
    /// (those that already failed during this call); None when every breaker is open.
    pub fn pick(&self, route: Route, now: Instant, avoid: &[String]) -> Option<Arc<EndpointState>> {
        if route == Route::Leader {
            if let Some(leader) = self.leader().filter(|l| !avoid.contains(&l.addr)) {
                if leader.breaker.try_acquire(now) {
                    return Some(leader);
                }
            }
        }
        let start = match route {
            Route::Leader => self.preferred.load(Ordering::Relaxed),
            Route::Any | Route::Nearest => self.round_robin.fetch_add(1, Ordering::Relaxed),
        };
        let all = match route {
            Route::Nearest => self.nearest(start),
            Route::Leader | Route::Any => {
                let all = self.all();
                let n = all.len().max(1);
                (0..all.len()).map(|i| all[(start + i) % n].clone()).collect()
            }
        };
        if all.is_empty() {
            return None;
        }
        let in_order = || all.iter();
        in_order()
            .filter(|e| !avoid.contains(&e.addr))
            .find(|e| e.breaker.try_acquire(now))
            .or_else(|| {
                in_order().filter(|e| avoid.contains(&e.addr)).find(|e| e.breaker.try_acquire(now))
            })
            .cloned()
    }

    /// After a failed attempt on `failed`: forget it as leader and move the sticky
    /// preference past it, so the next attempt tries another endpoint.
    pub fn rotate_from(&self, failed: &EndpointState) {
        if self.leader().is_some_and(|l| l.addr == failed.addr) {
            self.set_leader(None);
        }
        let all = self.all();
        if let Some(i) = all.iter().position(|e| e.addr == failed.addr) {
            let _ = self.preferred.compare_exchange(
                i,
                (i + 1) % all.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A snapshot of every endpoint.
    pub fn info(&self) -> Vec<EndpointInfo> {
        let leader = self.leader().map(|l| l.addr.clone());
        self.all()
            .iter()
            .map(|e| EndpointInfo {
                addr: e.addr.clone(),
                breaker: e.breaker.state(),
                is_leader: leader.as_deref() == Some(e.addr.as_str()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addrs: &[&str]) -> EndpointSet {
        let config = ClientConfig::with_endpoints(addrs.iter().copied());
        EndpointSet::new(&config, Instant::now()).expect("valid endpoints")
    }

    #[test]
    fn normalize_accepts_common_forms() {
        assert_eq!(normalize_endpoint("127.0.0.1:7001").as_deref(), Ok("127.0.0.1:7001"));
        assert_eq!(normalize_endpoint(" http://node-1:7001/ ").as_deref(), Ok("node-1:7001"));
        assert_eq!(normalize_endpoint("[::1]:7001").as_deref(), Ok("[::1]:7001"));
    }

    #[test]
    fn normalize_rejects_bad_forms() {
        for bad in ["", "host", "host:", "host:0", "host:70000", ":7001", "::1:7001", "a/b:1"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?} accepted");
        }
        let err = normalize_endpoint("https://a:1").expect_err("tls");
        assert!(err.contains("TLS"), "{err}");
    }

    #[test]
    fn leader_route_sticks_to_one_endpoint_and_rotates_on_failure() {
        let s = set(&["a:1", "b:1", "c:1"]);
        let now = Instant::now();
        let first = s.pick(Route::Leader, now, &[]).expect("some");
        assert_eq!(s.pick(Route::Leader, now, &[]).expect("some").addr, first.addr);
        s.rotate_from(&first);
        assert_ne!(s.pick(Route::Leader, now, &[]).expect("some").addr, first.addr);
    }

    #[test]
    fn pick_avoids_endpoints_that_failed_in_this_call_while_others_remain() {
        let s = set(&["a:1", "b:1", "c:1"]);
        let now = Instant::now();
        s.redirect("a:1", "", now);
        let avoid = vec!["a:1".to_string(), "b:1".to_string()];
        assert_eq!(s.pick(Route::Leader, now, &avoid).expect("some").addr, "c:1");
        let all: Vec<String> = ["a:1", "b:1", "c:1"].iter().map(|a| a.to_string()).collect();
        assert!(s.pick(Route::Leader, now, &all).is_some(), "falls back when all failed");
    }

    #[test]
    fn any_route_spreads_round_robin() {
        let s = set(&["a:1", "b:1", "c:1"]);
        let now = Instant::now();
        let picked: Vec<String> =
            (0..3).map(|_| s.pick(Route::Any, now, &[]).expect("some").addr.clone()).collect();
        assert_eq!(picked, vec!["a:1", "b:1", "c:1"]);
    }

    #[test]
    fn nearest_prefers_own_region_then_lowest_rtt_and_hints_map_to_tagged_endpoints() {
        let mut config = ClientConfig::with_endpoints(["a:1", "b:1", "c:1", "d:1"]);
        config.region = Some("eu".into());
        let s = EndpointSet::new(&config, Instant::now()).expect("valid");
        let now = Instant::now();
        let tag = |addr: &str, id: u64, region: &str, rtt_ms: u64| {
            s.get(addr).expect(addr).set_probe(
                NodeTag { id, region: region.into(), api_addr: format!("10.0.0.{id}:7001") },
                std::time::Duration::from_millis(rtt_ms),
            );
        };
        tag("a:1", 1, "us", 5);
        tag("b:1", 2, "eu", 90);
        tag("c:1", 3, "ap", 50);
        // d:1 never probed: last.
        for _ in 0..4 {
            assert_eq!(s.pick(Route::Nearest, now, &[]).expect("some").addr, "b:1");
        }
        tag("d:1", 4, "eu", 1);
        let picked: std::collections::BTreeSet<String> =
            (0..4).map(|_| s.pick(Route::Nearest, now, &[]).expect("some").addr.clone()).collect();
        assert_eq!(picked.len(), 2, "round-robin among the region's endpoints: {picked:?}");
        tag("d:1", 4, "ap", 500);
        let avoid = vec!["b:1".to_string()];
        assert_eq!(s.pick(Route::Nearest, now, &avoid).expect("some").addr, "a:1");
        let leader = s.redirect("10.0.0.3:7001", "a:1", now).expect("mapped");
        assert_eq!(leader.addr, "c:1", "a hint naming node 3's address maps to its endpoint");
        assert_eq!(s.info().len(), 4, "no endpoint added for a known node");
        assert!(s.probe_due(now));
        s.mark_probed(now);
        assert!(!s.probe_due(now));
        assert!(s.probe_due(now + PROBE_REFRESH));
    }

    #[test]
    fn a_forwarded_answer_moves_writes_to_a_known_leader_only() {
        let s = set(&["a:1", "b:1"]);
        let now = Instant::now();
        assert!(s.follow_known_leader("b:1", "b:1").is_none(), "the answering node itself");
        assert!(s.leader().is_none());
        assert!(s.follow_known_leader("z:9", "a:1").is_none(), "unknown: not added");
        assert_eq!(s.info().len(), 2);
        assert!(s.follow_known_leader("not an address", "a:1").is_none());
        let leader = s.follow_known_leader("http://b:1", "a:1").expect("known");
        assert_eq!(leader.addr, "b:1");
        assert_eq!(s.pick(Route::Leader, now, &[]).expect("some").addr, "b:1");
    }

    #[test]
    fn redirect_adds_new_leader_and_ignores_self_hint() {
        let s = set(&["a:1", "b:1"]);
        let now = Instant::now();
        assert!(s.redirect("a:1", "a:1", now).is_none(), "stale self hint");
        let leader = s.redirect("http://d:1", "a:1", now).expect("added");
        assert_eq!(leader.addr, "d:1");
        assert_eq!(s.pick(Route::Leader, now, &[]).expect("some").addr, "d:1");
        assert_eq!(s.info().len(), 3);
        assert!(s.info().iter().any(|e| e.addr == "d:1" && e.is_leader));
        s.rotate_from(&leader);
        assert!(s.leader().is_none(), "a failed leader is forgotten");
    }
}

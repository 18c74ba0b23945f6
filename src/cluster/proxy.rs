//! A user-space TCP fault proxy for loopback links.
//!
//! Each [`Link`] listens on its own 127.0.0.1 port and forwards to one target. The
//! launcher routes every directed node-to-node link (and optionally client links)
//! through one, so that faults are per direction: node A's connection to node B can
//! be slowed or cut while B's to A is not.
//!
//! Faults per link, changed at any time:
//! - latency plus uniform jitter, added to every chunk in each direction (order kept);
//! - blackhole: bytes are read and dropped in both directions, connections stay open
//!   and hang (like a silent network partition); new connections are accepted and
//!   hang too. Healing closes the connections that lost bytes, so peers reconnect;
//! - reset: every open connection is closed with RST;
//! - heal: no fault latency, no blackhole. A link's *base* latency (the emulated
//!   distance between two regions, [`FaultProxy::set_base_latency`]) is not a fault:
//!   heal keeps it, and every chunk is delayed by base + fault latency + jitter.
//!
//! Bounded: at most [`MAX_INFLIGHT_CHUNKS`] chunks queued per direction (a slow reader
//! pushes back on the sender) and [`MAX_CONNECTIONS_PER_LINK`] connections per link.
//! Only 127.0.0.1 targets are accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks queued per direction of one connection.
pub const MAX_INFLIGHT_CHUNKS: usize = 256;
/// Read buffer per direction, bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Open connections per link; further ones are refused.
pub const MAX_CONNECTIONS_PER_LINK: usize = 256;
/// Ports bound and rejected (excluded) before [`FaultProxy::add_link_excluding`] gives up.
pub const MAX_EXCLUDED_BINDS: usize = 64;
/// Timeout connecting to a link's target.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding or connecting failed.
    #[error("proxy io: {0}")]
    Io(#[from] std::io::Error),
    /// The target is not on the loopback interface.
    #[error("proxy target {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// No link with that name.
    #[error("no proxy link named {0:?}")]
    UnknownLink(String),
    /// A link with that name exists already.
    #[error("a proxy link named {0:?} exists already")]
    DuplicateLink(String),
    /// Links can only be added inside a tokio runtime (they run on it).
    #[error("proxy links must be created inside a tokio runtime")]
    NoRuntime,
}

/// The fault state of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// One-way delay that models distance (region to region); kept by heal.
    pub base_latency: Duration,
    /// Added one-way delay (a fault).
    pub latency: Duration,
    /// Extra uniform random delay in [0, jitter].
    pub jitter: Duration,
    /// Drop all bytes, keep connections hanging.
    pub blackhole: bool,
    /// Incremented to close every open connection.
    pub reset_generation: u64,
}

/// One proxied link.
pub struct Link {
    name: String,
    listen: SocketAddr,
    target: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    connections: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
}

impl Link {
    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Where clients of the link connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }
    /// Where the link forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
    /// Current faults.
    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }
    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
    /// A snapshot of the link: addresses, faults, connections.
    pub fn info(&self) -> LinkInfo {
        let f = self.faults();
        LinkInfo {
            name: self.name.clone(),
            listen: self.listen,
            target: self.target,
            base_latency_ms: duration_ms(f.base_latency),
            latency_ms: duration_ms(f.latency),
            jitter_ms: duration_ms(f.jitter),
            blackhole: f.blackhole,
            connections: self.open_connections(),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A serialisable snapshot of one link (for `meridian cluster fault list` and reports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkInfo {
    /// Link name.
    pub name: String,
    /// Where clients of the link connect (127.0.0.1).
    pub listen: SocketAddr,
    /// Where the link forwards to.
    pub target: SocketAddr,
    /// One-way delay that models distance (kept by heal), ms.
    #[serde(default)]
    pub base_latency_ms: u64,
    /// Added one-way delay (a fault), ms.
    pub latency_ms: u64,
    /// Extra uniform random delay bound, ms.
    pub jitter_ms: u64,
    /// Whether the link drops every byte.
    pub blackhole: bool,
    /// Open connections.
    pub connections: usize,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Closing every connection: bump the generation so pumps exit.
        self.faults.send_modify(|f| f.reset_generation += 1);
    }
}

/// A set of named links.
#[derive(Default)]
pub struct FaultProxy {
    links: Mutex<BTreeMap<String, Arc<Link>>>,
}

impl FaultProxy {
    /// An empty proxy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a link named `name` forwarding to `target`; returns its listen address.
    /// Must be called inside a tokio runtime.
    pub async fn add_link(&self, name: &str, target: SocketAddr) -> Result<SocketAddr, ProxyError> {
        self.add_link_now(name, target)
    }

    /// [`add_link`](Self::add_link) from synchronous code that runs inside a tokio runtime
    /// (the link's tasks are spawned on the current runtime): binding a loopback port
    /// never blocks. Fails with [`ProxyError::NoRuntime`] outside a runtime.
    pub fn add_link_now(&self, name: &str, target: SocketAddr) -> Result<SocketAddr, ProxyError> {
        self.add_link_excluding(name, target, &[])
    }

    /// [`add_link_now`](Self::add_link_now), never listening on a port of `excluded`
    /// (addresses reserved for nodes that have not bound them yet).
    pub fn add_link_excluding(
        &self,
        name: &str,
        target: SocketAddr,
        excluded: &[SocketAddr],
    ) -> Result<SocketAddr, ProxyError> {
        if !target.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(target));
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ProxyError::NoRuntime)?;
        if self.lock().contains_key(name) {
            return Err(ProxyError::DuplicateLink(name.to_string()));
        }
        // Listeners on excluded ports are held until a good one is found, so the
        // kernel cannot hand the same port out again.
        let mut rejected = Vec::new();
        let std_listener = loop {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = l.local_addr()?.port();
            if !excluded.iter().any(|a| a.port() == port) {
                break l;
            }
            if rejected.len() >= MAX_EXCLUDED_BINDS {
                return Err(ProxyError::Io(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "no free port outside the excluded ones",
                )));
            }
            rejected.push(l);
        };
        drop(rejected);
        std_listener.set_nonblocking(true)?;
        let listen = std_listener.local_addr()?;
        let listener = {
            let _guard = handle.enter();
            TcpListener::from_std(std_listener)?
        };
        let (tx, rx) = watch::channel(LinkFaults::default());
        let connections = Arc::new(AtomicUsize::new(0));
        let accept_task = handle.spawn(accept_loop(listener, target, rx, connections.clone()));
        let link =
            Link { name: name.to_string(), listen, target, faults: tx, connections, accept_task };
        self.lock().insert(name.to_string(), Arc::new(link));
        Ok(listen)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link named `name`.
    pub fn link(&self, name: &str) -> Result<Arc<Link>, ProxyError> {
        self.lock().get(name).cloned().ok_or_else(|| ProxyError::UnknownLink(name.to_string()))
    }

    /// Names of every link, in name order.
    pub fn link_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// A snapshot of every link, in name order.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.lock().values().map(|l| l.info()).collect()
    }

    fn modify(&self, name: &str, f: impl FnOnce(&mut LinkFaults)) -> Result<(), ProxyError> {
        let link = self.link(name)?;
        link.faults.send_modify(f);
        Ok(())
    }

    /// Set latency and jitter of a link.
    pub fn set_latency(
        &self,
        name: &str,
        latency: Duration,
        jitter: Duration,
    ) -> Result<(), ProxyError> {
        self.modify(name, |f| {
            f.latency = latency;
            f.jitter = jitter;
        })
    }

    /// Set the base (distance) latency of a link; heal keeps it.
    pub fn set_base_latency(&self, name: &str, latency: Duration) -> Result<(), ProxyError> {
        self.modify(name, |f| f.base_latency = latency)
    }

    /// Turn blackholing of a link on or off.
    pub fn set_blackhole(&self, name: &str, on: bool) -> Result<(), ProxyError> {
        self.modify(name, |f| f.blackhole = on)
    }

    /// Close every open connection of a link (RST).
    pub fn reset(&self, name: &str) -> Result<(), ProxyError> {
        self.modify(name, |f| f.reset_generation += 1)
    }

    /// Remove every fault of a link (fault latency and blackhole; the base latency
    /// stays).
    pub fn heal(&self, name: &str) -> Result<(), ProxyError> {
        self.modify(name, |f| {
            *f = LinkFaults {
                reset_generation: f.reset_generation,
                base_latency: f.base_latency,
                ..LinkFaults::default()
            };
        })
    }

    /// Heal every link.
    pub fn heal_all(&self) {
        for name in self.link_names() {
            let _ = self.heal(&name);
        }
    }

    /// Close the open connections of every link (RST).
    pub fn reset_all(&self) {
        for name in self.link_names() {
            let _ = self.reset(&name);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS_PER_LINK {
            drop(client);
            continue;
        }
        connections.fetch_add(1, Ordering::Relaxed);
        let faults = faults.clone();
        let conns = connections.clone();
        tokio::spawn(async move {
            serve_connection(client, target, faults).await;
            conns.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Wait until the link's generation changes or, if `close_on_heal`, the blackhole lifts.
async fn closed(mut faults: watch::Receiver<LinkFaults>, generation: u64, close_on_heal: bool) {
    loop {
        {
            let f = faults.borrow_and_update();
            if f.reset_generation != generation || (close_on_heal && !f.blackhole) {
                return;
            }
        }
        if faults.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_connection(
    client: TcpStream,
    target: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
) {
    let start = *faults.borrow();
    let generation = start.reset_generation;
    if start.blackhole {
        // Accept and hang: read and drop until the link is reset or healed.
        let (mut r, _w) = client.into_split();
        let sink = async {
            let mut buf = vec![0u8; CHUNK_BYTES];
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        tokio::select! {
            _ = sink => {}
            _ = closed(faults, generation, true) => {}
        }
        return;
    }
    let upstream =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            _ => return,
        };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = pump(cr, uw, faults.clone(), lost.clone());
    let b = pump(ur, cw, faults.clone(), lost.clone());
    let reset = closed(faults.clone(), generation, false);
    let healed_after_loss = async {
        let mut f = faults.clone();
        loop {
            if lost.load(Ordering::Relaxed) && !f.borrow().blackhole {
                return;
            }
            if f.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(a, b) } => {}
        _ = reset => {}
        _ = healed_after_loss => {}
    }
    // Dropping the halves closes both sockets.
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<LinkFaults>,
    lost: Arc<std::sync::atomic::AtomicBool>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(MAX_INFLIGHT_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let f = *faults.borrow();
            if f.blackhole {
                lost.store(true, Ordering::Relaxed);
                continue;
            }
            let jitter = if f.jitter.is_zero() {
                Duration::ZERO
            } else {
                rand::thread_rng().gen_range(Duration::ZERO..=f.jitter)
            };
            let due = Instant::now() + f.base_latency + f.latency + jitter;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_bytes_both_ways() {
        let p = FaultProxy::new();
        let addr = p.add_link("a->b", echo_server().await).await.expect("link");
        assert_eq!(roundtrip(addr).await.expect("echo"), b"ping");
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let p = FaultProxy::new();
        let addr = p.add_link("a->b", echo_server().await).await.expect("link");
        p.set_latency("a->b", Duration::from_millis(50), Duration::ZERO).expect("latency");
        let t = std::time::Instant::now();
        roundtrip(addr).await.expect("echo");
        assert!(t.elapsed() >= Duration::from_millis(100), "took {:?}", t.elapsed());
    }

    #[tokio::test]
    async fn heal_keeps_the_base_latency_and_drops_the_fault_latency() {
        let p = FaultProxy::new();
        let addr = p.add_link("a->b", echo_server().await).await.expect("link");
        p.set_base_latency("a->b", Duration::from_millis(30)).expect("base");
        p.set_latency("a->b", Duration::from_millis(200), Duration::ZERO).expect("latency");
        p.heal("a->b").expect("heal");
        let f = p.link("a->b").expect("link").faults();
        assert_eq!(f.base_latency, Duration::from_millis(30));
        assert_eq!(f.latency, Duration::ZERO);
        let t = std::time::Instant::now();
        roundtrip(addr).await.expect("echo");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(60), "base latency each way, took {took:?}");
        assert_eq!(p.link("a->b").expect("link").info().base_latency_ms, 30);
    }

    #[tokio::test]
    async fn blackhole_hangs_and_heal_restores_new_connections() {
        let p = FaultProxy::new();
        let addr = p.add_link("a->b", echo_server().await).await.expect("link");
        p.set_blackhole("a->b", true).expect("blackhole");
        let hung = tokio::time::timeout(Duration::from_millis(200), roundtrip(addr)).await;
        assert!(hung.is_err(), "a blackholed link must not answer");
        p.heal("a->b").expect("heal");
        assert_eq!(roundtrip(addr).await.expect("echo after heal"), b"ping");
    }

    #[tokio::test]
    async fn reset_closes_open_connections() {
        let p = FaultProxy::new();
        let addr = p.add_link("a->b", echo_server().await).await.expect("link");
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("echo");
        p.reset("a->b").expect("reset");
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "connection must be closed after reset");
    }

    #[tokio::test]
    async fn links_can_be_added_from_sync_code_in_a_runtime_and_names_are_unique() {
        let p = FaultProxy::new();
        let target = echo_server().await;
        let addr = p.add_link_now("a->b", target).expect("link");
        assert_eq!(roundtrip(addr).await.expect("echo"), b"ping");
        assert!(matches!(p.add_link_now("a->b", target), Err(ProxyError::DuplicateLink(_))));
        let info = p.links();
        assert_eq!(info.len(), 1);
        assert_eq!((info[0].listen, info[0].target, info[0].blackhole), (addr, target, false));
    }

    #[test]
    fn adding_a_link_outside_a_runtime_is_an_error() {
        let p = FaultProxy::new();
        let err = p.add_link_now("x", "127.0.0.1:1".parse().expect("addr"));
        assert!(matches!(err, Err(ProxyError::NoRuntime)));
    }

    #[tokio::test]
    async fn non_loopback_targets_are_refused() {
        let p = FaultProxy::new();
        let err = p.add_link("x", "10.0.0.1:80".parse().expect("addr")).await;
        assert!(matches!(err, Err(ProxyError::NotLoopback(_))));
    }
}

//! A "lost response" TCP proxy for gRPC over cleartext HTTP/2, placed between a client
//! and one node.
//!
//! It forwards bytes both ways unchanged until it is [armed](ResponseDropper::arm).
//! The first response that arrives from the server after that (an HTTP/2 HEADERS frame
//! on a stream, i.e. the start of a gRPC response) is not forwarded: the proxy drops
//! the chunk holding it and resets the client's connection (RST), then disarms. The
//! server has finished the call (it sent its answer), the client never learns the
//! outcome: exactly the indeterminate case that request ids exist for.
//!
//! Why frames are parsed: the server also sends bytes that are not responses (its
//! SETTINGS preface, SETTINGS and PING acks, WINDOW_UPDATEs), so "the first bytes
//! after the request" would trip on the wrong thing. The scanner tracks frame
//! boundaries (9-byte header, 24-bit length) across reads; it never inspects payloads.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] proxied connections at a time, one
//! [`CHUNK_BYTES`] buffer per direction. Dropping the proxy ends every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Open proxied connections at most; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Read buffer per direction, bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Timeout connecting to the target node.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 frame header length, bytes.
const FRAME_HEADER_BYTES: usize = 9;
/// HTTP/2 frame type HEADERS.
const FRAME_HEADERS: u8 = 0x1;

#[derive(Debug, Default)]
struct Shared {
    armed: AtomicBool,
    dropped: AtomicU64,
    accepted: AtomicU64,
}

/// The proxy; see the module docs.
pub struct ResponseDropper {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl ResponseDropper {
    /// Listen on a free 127.0.0.1 port and forward every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_task = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(Self { addr, target, shared, accept_task })
    }

    /// Where clients connect (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Drop the next response and reset its connection.
    pub fn arm(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// True until an armed proxy has dropped a response.
    pub fn is_armed(&self) -> bool {
        self.shared.armed.load(Ordering::SeqCst)
    }

    /// Responses dropped so far.
    pub fn dropped_responses(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ResponseDropper {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it ends them.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else { return };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            continue; // dropping `client` closes it
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        connections.spawn(proxy_connection(client, target, shared.clone()));
    }
}

async fn proxy_connection(client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let server =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            _ => return, // the client sees its connection closed, as if the node were down
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let mut scanner = FrameScanner::default();
    let mut up = vec![0u8; CHUNK_BYTES];
    let mut down = vec![0u8; CHUNK_BYTES];
    loop {
        tokio::select! {
            read = client_rd.read(&mut up) => {
                let n = match read { Ok(n) if n > 0 => n, _ => return };
                if server_wr.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = server_rd.read(&mut down) => {
                let n = match read { Ok(n) if n > 0 => n, _ => return };
                let chunk = &down[..n];
                let response = scanner.first_response(chunk).is_some();
                if response && shared.armed.swap(false, Ordering::SeqCst) {
                    shared.dropped.fetch_add(1, Ordering::SeqCst);
                    // Reset rather than close: the client must not get a clean EOF.
                    if let Ok(stream) = client_rd.reunite(client_wr) {
                        let _ = stream.set_zero_linger();
                    }
                    return;
                }
                if client_wr.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Follows HTTP/2 frame boundaries in the server-to-client byte stream.
#[derive(Debug, Default)]
struct FrameScanner {
    /// Bytes of a frame header split across reads.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl FrameScanner {
    /// Feed the next chunk; returns where in it the first response HEADERS frame
    /// starts (0 when its header began in an earlier chunk), if any.
    fn first_response(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut found = None;
        let mut i = 0;
        while i < chunk.len() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len() - i);
                self.skip -= n;
                i += n;
                continue;
            }
            let start = if self.header.is_empty() { i } else { 0 };
            let n = (FRAME_HEADER_BYTES - self.header.len()).min(chunk.len() - i);
            self.header.extend_from_slice(&chunk[i..i + n]);
            i += n;
            if self.header.len() < FRAME_HEADER_BYTES {
                break;
            }
            let h = std::mem::take(&mut self.header);
            self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if h[3] == FRAME_HEADERS && stream != 0 && found.is_none() {
                found = Some(start);
            }
        }
        found
    }
}

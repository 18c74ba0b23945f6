//! Write coalescing for HTTP/2 client connections: a node's connections to its peers
//! (`raft::network`) and the client library's connections to nodes (`client`).
//!
//! hyper's HTTP/2 client writes a unary request as three frames produced by two tasks
//! (HEADERS from the caller, then DATA and an empty END_STREAM DATA from the body
//! pipe), and its connection task flushes after each: three `writev` calls per RPC,
//! each waking the server's reader for a partial request. On this project's 2-core
//! reference machine that was ten socket writes per replicated write at one client,
//! and on loopback the sender's `writev` also runs the receiver's TCP stack
//! (docs/PERFORMANCE.md).
//!
//! [`Coalescing`] buffers writes and, when asked to flush, first yields to the
//! scheduler [`YIELDS_PER_FLUSH`] times (like `tokio::task::yield_now`: the task is
//! woken after the tasks already queued run), so frames produced by the other task in
//! the meantime leave in the same write: one `sendto` per RPC instead of three. A
//! yield costs a pass of the run queue, microseconds. Invariants: bytes leave
//! in the order they were accepted; a flush returns Ready only when every accepted
//! byte was handed to the socket; the buffer is bounded ([`MAX_BUFFERED`]): a write
//! beyond it drains the buffer first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Scheduler yields before a flush writes: hyper queues the END_STREAM frame one
/// scheduling round after the DATA frame.
pub const YIELDS_PER_FLUSH: u8 = 2;
/// Bytes buffered before a write drains the buffer without waiting for a flush.
pub const MAX_BUFFERED: usize = 256 * 1024;

/// A stream whose writes are coalesced until a flush (see the module docs).
pub struct Coalescing<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    /// The pending yield of the current flush, if it started one.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Yields the current flush has made.
    yielded: u8,
}

impl<S> Coalescing<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner, buf: Vec::new(), written: 0, yielding: None, yielded: 0 }
    }
}

impl<S: AsyncWrite + Unpin> Coalescing<S> {
    /// Write the whole buffer to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Make room for `len` more bytes: drain first when the buffer would exceed its
    /// bound.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() && self.buf.len() + len > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalescing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalescing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx, data.len()))?;
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        ready!(this.poll_room(cx, len))?;
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.written < this.buf.len() && this.yielded < YIELDS_PER_FLUSH {
            let y = this.yielding.get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            ready!(y.as_mut().poll(cx));
            this.yielding = None;
            this.yielded += 1;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Connect to the host and port of `uri` (default port by scheme: 443 for https, else
/// 80) over TCP with Nagle off, writes coalesced. For tonic's
/// `Endpoint::connect_with_connector_lazy`, which adds TLS on top when the endpoint has
/// it and applies its connect timeout around this.
pub async fn connect(uri: http::Uri) -> io::Result<TokioIo<Coalescing<TcpStream>>> {
    let (host, port) = host_port(&uri)?;
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(Coalescing::new(stream)))
}

/// The host (IPv6 literals without brackets) and port to connect to for `uri`.
fn host_port(uri: &http::Uri) -> io::Result<(&str, u16)> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let default = if uri.scheme_str() == Some("https") { 443 } else { 80 };
    Ok((host, uri.port_u16().unwrap_or(default)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Records every write it receives.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_write_made_while_a_flush_yields_leaves_with_it_in_order() {
        let mut w = Coalescing::new(Recorder::default());
        std::future::poll_fn(|cx| {
            let mut p = Pin::new(&mut w);
            assert!(p.as_mut().poll_write(cx, b"head").is_ready());
            assert!(p.as_mut().poll_flush(cx).is_pending(), "the first flush yields");
            // What h2 does when re-polled: write the frames queued meanwhile, flush.
            assert!(p.as_mut().poll_write(cx, b"-body").is_ready());
            assert!(p.as_mut().poll_flush(cx).is_pending(), "and yields again");
            assert!(p.as_mut().poll_write(cx, b"-end").is_ready());
            Poll::Ready(())
        })
        .await;
        assert!(w.inner.writes.is_empty(), "nothing written before the flush completes");
        w.flush().await.expect("flush");
        assert_eq!(w.inner.writes, vec![b"head-body-end".to_vec()]);
        w.write_all(b"next").await.expect("write");
        w.flush().await.expect("flush");
        assert_eq!(w.inner.writes.len(), 2, "every flush yields, then writes");
        assert_eq!(w.inner.writes[1], b"next");
        w.flush().await.expect("an empty flush does not yield or write");
        assert_eq!(w.inner.writes.len(), 2);
    }

    #[test]
    fn hosts_and_ports_come_from_the_uri() {
        let hp = |u: &str| host_port(&u.parse().expect("uri")).map(|(h, p)| (h.to_string(), p));
        assert_eq!(hp("http://127.0.0.1:7001").expect("v4"), ("127.0.0.1".into(), 7001));
        assert_eq!(hp("https://[::1]:7001").expect("v6"), ("::1".into(), 7001));
        assert_eq!(hp("http://node-1.example").expect("name"), ("node-1.example".into(), 80));
        assert_eq!(hp("https://node-1.example").expect("tls"), ("node-1.example".into(), 443));
        assert!(hp("/just/a/path").is_err(), "a uri without a host is refused");
    }

    #[tokio::test]
    async fn a_large_write_drains_the_buffer_first() {
        let (client, mut server) = tokio::io::duplex(4 << 20);
        let mut w = Coalescing::new(client);
        let big = vec![7u8; MAX_BUFFERED];
        w.write_all(b"x").await.expect("write");
        w.write_all(&big).await.expect("write");
        assert_eq!(w.buf.len(), MAX_BUFFERED, "the first byte left before the big write");
        w.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), MAX_BUFFERED + 1);
        assert_eq!(got[0], b'x');
    }
}

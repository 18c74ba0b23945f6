//! The fault-proxy control endpoint of a proxied `meridian cluster up`, and its client.
//!
//! Protocol: plain TCP on 127.0.0.1, one JSON request per line, one JSON response per
//! line, any number of requests per connection:
//!
//! ```text
//! {"cmd":"partition","groups":[[1],[2,3]]}
//! {"ok":true,"message":"partitioned [1] | [2, 3]: 8 links blackholed","links":[...]}
//! ```
//!
//! Requests ([`ControlRequest`]): `list`, `heal`, `reset`, `partition {groups}`,
//! `isolate {node}`, `cut {from, to}`, `latency {latency_ms, jitter_ms, node?}`. Every
//! response carries the state of every link afterwards.
//!
//! Why this shape: the proxy lives inside the launcher process (it must outlive node
//! restarts), so another process needs a way in; a line of JSON is readable with `nc`
//! and needs no extra dependency. Bounded: requests longer than [`MAX_REQUEST_BYTES`]
//! close the connection, an idle connection is closed after [`CONTROL_IDLE_TIMEOUT`],
//! at most [`MAX_CONTROL_CONNECTIONS`] are served at once, and the listener is only
//! ever bound to a loopback address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::network::ClusterNetwork;
use super::proxy::LinkInfo;
use super::ClusterError;

/// Longest request line, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest response line the client accepts, bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// An idle control connection is closed after this long.
pub const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; further ones wait.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;
/// Timeout of one request made by [`request`] (connect, send, answer).
pub const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A control request (one JSON object, tagged by `cmd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Only report the links.
    List,
    /// Remove every fault of every link.
    Heal,
    /// Close every open connection of every link.
    Reset,
    /// Symmetric partition: nodes of different groups cannot call each other.
    Partition {
        /// The groups (nodes in no group keep every link).
        groups: Vec<Vec<u64>>,
    },
    /// Cut one node off from every other, both directions.
    Isolate {
        /// The node.
        node: u64,
    },
    /// Node `from` can no longer call node `to` (one direction).
    Cut {
        /// Calling node.
        from: u64,
        /// Called node.
        to: u64,
    },
    /// Latency on every node-to-node link, or on one node's links.
    Latency {
        /// One-way added delay, ms.
        latency_ms: u64,
        /// Uniform jitter bound, ms.
        #[serde(default)]
        jitter_ms: u64,
        /// Only the links from and to this node.
        #[serde(default)]
        node: Option<u64>,
    },
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
    /// Every link after the request.
    pub links: Vec<LinkInfo>,
}

/// Carry out one request on `net`.
pub fn execute(net: &ClusterNetwork, request: &ControlRequest) -> ControlResponse {
    let result = match request {
        ControlRequest::List => Ok(format!("{} links", net.links().len())),
        ControlRequest::Heal => {
            net.heal();
            Ok("every link healed".to_string())
        }
        ControlRequest::Reset => {
            net.reset();
            Ok("every open connection reset".to_string())
        }
        ControlRequest::Partition { groups } => net.partition(groups).map(|g| {
            let cuts: usize = g.values().map(|s| s.len()).sum();
            let shown: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
            format!("partitioned {}: {cuts} directed cuts", shown.join(" | "))
        }),
        ControlRequest::Isolate { node } => {
            net.isolate(*node).map(|_| format!("node {node} isolated"))
        }
        ControlRequest::Cut { from, to } => {
            net.cut(*from, *to).map(|()| format!("node {from} can no longer call node {to}"))
        }
        ControlRequest::Latency { latency_ms, jitter_ms, node } => net
            .set_latency(
                Duration::from_millis(*latency_ms),
                Duration::from_millis(*jitter_ms),
                *node,
            )
            .map(|()| match node {
                Some(n) => format!("latency {latency_ms} ms ± {jitter_ms} ms on node {n}'s links"),
                None => format!("latency {latency_ms} ms ± {jitter_ms} ms on every link"),
            }),
    };
    let (ok, message) = match result {
        Ok(m) => (true, m),
        Err(e) => (false, e.to_string()),
    };
    ControlResponse { ok, message, links: net.links() }
}

/// Serve control connections on `listener` until the returned future is dropped.
/// Refuses a non-loopback listener.
pub async fn serve(listener: TcpListener, net: Arc<ClusterNetwork>) -> Result<(), ClusterError> {
    let local = listener.local_addr().map_err(|e| ClusterError::io("control listener", e))?;
    if !local.ip().is_loopback() {
        return Err(ClusterError::io(
            format!("control endpoint {local}"),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "must be a loopback address"),
        ));
    }
    let permits = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let Ok(permit) = permits.clone().acquire_owned().await else { continue };
        let net = net.clone();
        tokio::spawn(async move {
            serve_connection(stream, &net).await;
            drop(permit);
        });
    }
}

async fn serve_connection(stream: TcpStream, net: &ClusterNetwork) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            CONTROL_IDLE_TIMEOUT,
            (&mut lines).take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => return,
            Ok(Ok(_)) => {}
        }
        let response = match serde_json::from_slice::<ControlRequest>(&line) {
            Ok(request) => execute(net, &request),
            Err(e) => ControlResponse {
                ok: false,
                message: format!("bad request: {e}"),
                links: Vec::new(),
            },
        };
        let Ok(mut text) = serde_json::to_vec(&response) else { return };
        text.push(b'\n');
        if write.write_all(&text).await.is_err() {
            return;
        }
    }
}

/// Send one request to the control endpoint at `addr` and read its answer, within
/// [`CONTROL_REQUEST_TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    request: &ControlRequest,
) -> Result<ControlResponse, ClusterError> {
    let io = |what: &str, e: std::io::Error| ClusterError::io(format!("{what} {addr}"), e);
    let call = async {
        let mut stream =
            TcpStream::connect(addr).await.map_err(|e| io("cannot connect to control", e))?;
        let mut text = serde_json::to_vec(request)
            .map_err(|e| io("cannot encode a request for", std::io::Error::other(e)))?;
        text.push(b'\n');
        stream.write_all(&text).await.map_err(|e| io("cannot write to control", e))?;
        let mut reader = BufReader::new(stream).take(MAX_RESPONSE_BYTES as u64);
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).await.map_err(|e| io("cannot read control", e))?;
        serde_json::from_slice(&line).map_err(|e| {
            io("bad answer from control", std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
    };
    match tokio::time::timeout(CONTROL_REQUEST_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(ClusterError::Timeout {
            what: format!("an answer from the control endpoint {addr}"),
            timeout: CONTROL_REQUEST_TIMEOUT,
            last: "no answer".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::manifest::Manifest;

    #[test]
    fn requests_have_a_stable_json_shape() {
        let r: ControlRequest =
            serde_json::from_str(r#"{"cmd":"partition","groups":[[1],[2,3]]}"#).expect("parse");
        assert_eq!(r, ControlRequest::Partition { groups: vec![vec![1], vec![2, 3]] });
        let r: ControlRequest =
            serde_json::from_str(r#"{"cmd":"latency","latency_ms":50}"#).expect("parse");
        assert_eq!(r, ControlRequest::Latency { latency_ms: 50, jitter_ms: 0, node: None });
        assert!(serde_json::from_str::<ControlRequest>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[tokio::test]
    async fn a_client_partitions_and_heals_through_the_endpoint() {
        let m = Manifest::embedded_default().expect("manifest");
        let net = Arc::new(ClusterNetwork::build(&m, false).expect("network"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, net.clone()));
        let groups = vec![vec![1], vec![2, 3]];
        let r = request(addr, &ControlRequest::Partition { groups }).await.expect("partition");
        assert!(r.ok, "{r:?}");
        assert_eq!(r.links.iter().filter(|l| l.blackhole).count(), 8);
        let r = request(addr, &ControlRequest::Isolate { node: 7 }).await.expect("isolate");
        assert!(!r.ok && r.message.contains('7'), "{r:?}");
        let r = request(addr, &ControlRequest::Heal).await.expect("heal");
        assert!(r.ok && r.links.iter().all(|l| !l.blackhole), "{r:?}");
        server.abort();
    }
}

//! TLS material of a node (rustls through tonic's `tls-ring` feature).
//!
//! One [`NodeTls`] is loaded at start-up from `[tls]` (PEM files) and hands out the
//! three rustls configurations a node needs:
//! - the public API server: the node certificate, client certificates verified
//!   against the CA when presented (a missing one is refused later, in the request
//!   layer, with UNAUTHENTICATED when `tls.require_client_cert` is set, so the client
//!   gets a clear gRPC status instead of a failed handshake);
//! - the Raft server: mutual TLS, a client certificate signed by the CA is required;
//! - the dialer for peers (Raft and request forwarding): presents the node
//!   certificate and verifies the peer's against the CA and `tls.peer_domain`.
//!
//! Certificates that are expired, not yet valid or signed by another CA fail the
//! handshake (rustls/webpki); the client sees UNAVAILABLE with the TLS alert.
//!
//! Node certificates name their node in the subject common name as `node-<id>`
//! ([`NODE_IDENTITY_PREFIX`]); the request layer trusts such a certificate as a peer
//! that may forward requests on behalf of a client (see `server::auth`). The CA must
//! therefore never issue a client certificate named `node-*`.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

/// Common-name prefix of node certificates (`node-1`, `node-2`, ...).
pub const NODE_IDENTITY_PREFIX: &str = "node-";
/// Largest PEM file read, bytes (a certificate chain or key is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A TLS file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (CA, certificate, key).
        what: &'static str,
        /// Its path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("invalid {what} {path}: {message}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `[tls]` is incomplete.
    #[error("tls: {0}")]
    Config(String),
}

/// Read a PEM file (bounded), checking it holds at least one PEM block.
pub fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        what,
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(TlsError::Invalid {
            what,
            path: shown,
            message: format!("larger than {MAX_PEM_BYTES} bytes"),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: shown.clone(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::Invalid { what, path: shown, message: "no PEM block found".into() });
    }
    Ok(bytes)
}

/// The loaded TLS material of a node.
#[derive(Debug, Clone)]
pub struct NodeTls {
    ca: Certificate,
    identity: Identity,
    peer_domain: String,
}

impl NodeTls {
    /// Load `[tls]`; None when TLS is off.
    pub fn load(cfg: &TlsConfig) -> Result<Option<Self>, TlsError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let need = |p: &Option<std::path::PathBuf>, name: &str| {
            p.clone().ok_or_else(|| TlsError::Config(format!("tls.{name} is required")))
        };
        let ca = read_pem("CA certificate", &need(&cfg.ca_file, "ca_file")?)?;
        let cert = read_pem("certificate", &need(&cfg.cert_file, "cert_file")?)?;
        let key = read_pem("private key", &need(&cfg.key_file, "key_file")?)?;
        Ok(Some(Self {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
            peer_domain: cfg.peer_domain.clone(),
        }))
    }

    /// The public API server: client certificates optional at the TLS level, verified
    /// against the CA when presented.
    pub fn api_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
    }

    /// The Raft server: mutual TLS, a CA-signed client certificate is required.
    pub fn peer_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(false)
    }

    /// Dialing a peer: present our certificate, verify theirs.
    pub fn peer_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(self.peer_domain.clone())
    }
}

/// The identity a DER certificate names: its subject common name, else its first DNS
/// subject alternative name. None if it cannot be parsed or names nothing.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()) {
        if !cn.is_empty() {
            return Some(cn.to_string());
        }
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    })
}

/// Whether a certificate identity names a node (see the module docs).
pub fn is_node_identity(identity: &str) -> bool {
    identity
        .strip_prefix(NODE_IDENTITY_PREFIX)
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities_are_node_dash_digits_only() {
        assert!(is_node_identity("node-1"));
        assert!(is_node_identity("node-12"));
        assert!(!is_node_identity("node-"));
        assert!(!is_node_identity("node-1x"));
        assert!(!is_node_identity("alice"));
        assert!(!is_node_identity("xnode-1"));
    }

    #[test]
    fn missing_pem_file_names_the_file() {
        let err =
            read_pem("CA certificate", Path::new("/nonexistent/ca.pem")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}

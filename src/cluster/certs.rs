//! Development certificates (rcgen): a CA plus node and client certificates, for
//! `meridian certs init`, `meridian cluster up --tls` and the tests.
//!
//! Layout of a certificate directory `D` (the names the launcher and the CLI's
//! `--tls-dir` expect):
//! - `D/ca.pem`, `D/ca-key.pem`: the CA (kept so more certificates can be issued);
//! - `D/node-N.pem`, `D/node-N-key.pem`: node N (CN `node-N`; SANs [`DEV_SANS`]; server
//!   and client auth, because nodes dial each other with mutual TLS);
//! - `D/<client>.pem`, `D/<client>-key.pem`: a client (CN `<client>`, client auth).
//!
//! Private keys are written with mode 0600. These are development certificates: a
//! CA key on disk next to the certificates is not a production setup.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration as TimeDuration, OffsetDateTime};

/// Subject alternative names of every development certificate.
pub const DEV_SANS: [&str; 2] = ["localhost", "127.0.0.1"];
/// Validity of development certificates, days.
pub const DEV_VALIDITY_DAYS: i64 = 365;
/// File name of the CA certificate in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA key in a certificate directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The client certificate `cluster up --tls` gives the launcher and the CLI.
pub const ADMIN_CLIENT: &str = "admin";
/// Most certificates one `certs init` may create.
pub const MAX_CERTS: usize = 256;

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Bad name or combination.
    #[error("{0}")]
    Invalid(String),
    /// rcgen failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// A node: server and client auth.
    Node,
    /// A client: client auth only.
    Client,
}

/// Paths of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedCert {
    /// Subject common name.
    pub name: String,
    /// Certificate PEM.
    pub cert: PathBuf,
    /// Key PEM.
    pub key: PathBuf,
}

/// The certificate and key paths of `name` in `dir`.
pub fn cert_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")))
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertsError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn check_name(name: &str) -> Result<(), CertsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if !ok || name == "ca" {
        return Err(CertsError::Invalid(format!(
            "certificate name {name:?} must be 1..=64 of [A-Za-z0-9._-], not starting with '.', not \"ca\""
        )));
    }
    Ok(())
}

/// The CA of a certificate directory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa")
    }
}

impl DevCa {
    /// Create a new CA named `name` and write it to `dir` (created if missing).
    pub fn create(dir: &Path, name: &str) -> Result<Self, CertsError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| CertsError::Io { path: dir.to_path_buf(), source })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - TimeDuration::hours(1);
        params.not_after = now + TimeDuration::days(DEV_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write(&dir.join(CA_CERT_FILE), &cert.pem(), false)?;
        write(&dir.join(CA_KEY_FILE), &key.serialize_pem(), true)?;
        Ok(Self { issuer: Issuer::new(params, key) })
    }

    /// Load the CA of `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CertsError::Io { path, source })
        };
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)?;
        let issuer = Issuer::from_ca_cert_pem(&read(CA_CERT_FILE)?, key)?;
        Ok(Self { issuer })
    }

    /// Issue a certificate for `name`, valid from `not_before` to `not_after`, and
    /// write it to `dir`.
    pub fn issue_with_validity(
        &self,
        dir: &Path,
        name: &str,
        kind: CertKind,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, CertsError> {
        check_name(name)?;
        let sans: Vec<String> = DEV_SANS.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match kind {
            CertKind::Node => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_path, key_path) = cert_paths(dir, name);
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok(IssuedCert { name: name.to_string(), cert: cert_path, key: key_path })
    }

    /// Issue a certificate valid for [`DEV_VALIDITY_DAYS`] from an hour ago.
    pub fn issue(&self, dir: &Path, name: &str, kind: CertKind) -> Result<IssuedCert, CertsError> {
        let now = OffsetDateTime::now_utc();
        self.issue_with_validity(
            dir,
            name,
            kind,
            now - TimeDuration::hours(1),
            now + TimeDuration::days(DEV_VALIDITY_DAYS),
        )
    }
}

/// What `certs init` creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsPlan {
    /// Target directory.
    pub dir: PathBuf,
    /// Node certificate names (`node-N`).
    pub nodes: Vec<String>,
    /// Client certificate names.
    pub clients: Vec<String>,
    /// Replace an existing CA in `dir` (otherwise the existing CA issues the new
    /// certificates).
    pub new_ca: bool,
}

/// What `certs init` created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertsReport {
    /// The directory.
    pub dir: PathBuf,
    /// Whether a new CA was created.
    pub created_ca: bool,
    /// The CA certificate.
    pub ca: PathBuf,
    /// Every issued certificate.
    pub issued: Vec<IssuedCert>,
}

/// Create (or reuse) the CA in `plan.dir` and issue every node and client certificate.
pub fn init(plan: &CertsPlan) -> Result<CertsReport, CertsError> {
    let total = plan.nodes.len() + plan.clients.len();
    if total == 0 || total > MAX_CERTS {
        return Err(CertsError::Invalid(format!(
            "certs init issues 1..={MAX_CERTS} certificates, asked for {total}"
        )));
    }
    for n in &plan.nodes {
        if !crate::tls::is_node_identity(n) {
            return Err(CertsError::Invalid(format!(
                "node certificate name {n:?} must be node-<id> (peers are recognised by it)"
            )));
        }
    }
    for c in &plan.clients {
        check_name(c)?;
        if crate::tls::is_node_identity(c) {
            return Err(CertsError::Invalid(format!(
                "client certificate name {c:?} must not look like a node (node-<id>)"
            )));
        }
    }
    let exists = plan.dir.join(CA_CERT_FILE).exists();
    let created_ca = plan.new_ca || !exists;
    let ca = if created_ca {
        DevCa::create(&plan.dir, "meridian development CA")?
    } else {
        DevCa::load(&plan.dir)?
    };
    let mut issued = Vec::with_capacity(total);
    for n in &plan.nodes {
        issued.push(ca.issue(&plan.dir, n, CertKind::Node)?);
    }
    for c in &plan.clients {
        issued.push(ca.issue(&plan.dir, c, CertKind::Client)?);
    }
    Ok(CertsReport { dir: plan.dir.clone(), created_ca, ca: plan.dir.join(CA_CERT_FILE), issued })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_ca_and_certificates_with_node_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = CertsPlan {
            dir: dir.path().to_path_buf(),
            nodes: vec!["node-1".into(), "node-2".into()],
            clients: vec!["admin".into()],
            new_ca: false,
        };
        let report = init(&plan).expect("init");
        assert!(report.created_ca);
        assert_eq!(report.issued.len(), 3);
        let pem = std::fs::read_to_string(dir.path().join("node-2.pem")).expect("node-2 cert");
        let der = pem_to_der(&pem);
        assert_eq!(crate::tls::certificate_identity(&der).as_deref(), Some("node-2"));
        // A second run reuses the CA.
        let again =
            init(&CertsPlan { clients: vec!["bob".into()], nodes: vec![], ..plan }).expect("again");
        assert!(!again.created_ca);
    }

    #[test]
    fn client_named_like_a_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = CertsPlan {
            dir: dir.path().to_path_buf(),
            nodes: vec![],
            clients: vec!["node-7".into()],
            new_ca: false,
        };
        let err = init(&plan).expect_err("refused");
        assert!(err.to_string().contains("node-7"), "{err}");
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).expect("base64")
    }
}

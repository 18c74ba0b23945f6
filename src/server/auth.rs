//! Authentication and authorization of API requests.
//!
//! Authentication happens once per request in the request layer
//! ([`super::layer`]), which stores the result as a [`Caller`] in the request's
//! extensions. A caller is identified by, in order:
//! 1. a forwarded identity (`x-meridian-identity`), honoured only when the connection
//!    itself is authenticated as a node (a CA-signed certificate named `node-<id>`,
//!    see [`crate::tls`]); from anyone else the header is refused with
//!    PERMISSION_DENIED, so a client cannot pose as someone else;
//! 2. a bearer token (`authorization: Bearer <token>`) found in the tokens file;
//! 3. the verified mTLS client certificate (its common name, else first DNS SAN).
//!
//! With auth off (no `auth.tokens_file`) every request is allowed; the caller is
//! still identified (certificate name or peer IP) for rate limiting and logs.
//!
//! Authorization is [`authorize`]: one call at the top of a handler, with the
//! [`Access`] the request needs. Grants are roles (read, write, admin) on key
//! prefixes; admin implies read and write on its prefixes, and Cluster admin RPCs
//! need the admin role (on any prefix). Refusals are PERMISSION_DENIED naming the
//! identity, the role and the key; nothing runs after a refusal.
//!
//! Tokens file (TOML):
//! ```toml
//! [[principal]]
//! identity = "alice"          # the name in logs, metrics and forwarded requests
//! token = "s3cr3t-alice"      # optional: bearer token (>= 16 bytes); omit for a
//!                             # certificate-only identity (certificate CN = identity)
//! roles = ["read", "write"]   # read | write | admin
//! prefixes = ["app/"]         # key prefixes the roles apply to; "" = every key
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tonic::{Request, Status};

/// Metadata carrying a bearer token.
pub const AUTHORIZATION_METADATA: &str = "authorization";
/// Metadata a forwarding node uses to name the original caller.
pub const IDENTITY_METADATA: &str = "x-meridian-identity";
/// Shortest accepted bearer token, bytes (guessing must be hopeless).
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest accepted identity, bytes.
pub const MAX_IDENTITY_BYTES: usize = 256;
/// Most principals in a tokens file.
pub const MAX_PRINCIPALS: usize = 10_000;
/// Largest tokens file, bytes.
pub const MAX_TOKENS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A role on key prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, Range, Watch, binlog Subscribe.
    Read,
    /// Put, Delete, Txn.
    Write,
    /// Cluster admin RPCs; implies read and write on its prefixes.
    Admin,
}

impl Role {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// One principal of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Identity (also the certificate name that maps to it).
    pub identity: String,
    /// Bearer token, if the principal may use one.
    #[serde(default)]
    pub token: Option<String>,
    /// Roles granted on `prefixes`.
    pub roles: Vec<Role>,
    /// Key prefixes (UTF-8); "" is every key.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

impl Principal {
    fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }

    fn prefixes(&self) -> impl Iterator<Item = &[u8]> {
        self.prefixes.iter().map(|p| p.as_bytes())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    principal: Vec<Principal>,
}

/// A tokens file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Unreadable.
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Invalid content.
    #[error("invalid tokens file {path}: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The principals of a tokens file, indexed by token and by identity.
#[derive(Debug, Default)]
pub struct Principals {
    by_token: HashMap<String, Arc<Principal>>,
    by_identity: HashMap<String, Arc<Principal>>,
}

impl Principals {
    /// Load and check a tokens file.
    pub fn load(path: &Path) -> Result<Self, AuthConfigError> {
        let shown = path.display().to_string();
        let read_err = |source| AuthConfigError::Read { path: shown.clone(), source };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_TOKENS_FILE_BYTES {
            return Err(AuthConfigError::Invalid {
                path: shown,
                message: format!("larger than {MAX_TOKENS_FILE_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text)
            .map_err(|message| AuthConfigError::Invalid { path: shown.clone(), message })
    }

    /// Parse tokens-file text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.principal.len() > MAX_PRINCIPALS {
            return Err(format!("more than {MAX_PRINCIPALS} principals"));
        }
        let mut out = Principals::default();
        for p in file.principal {
            let id = p.identity.clone();
            if id.is_empty() || id.len() > MAX_IDENTITY_BYTES || id.chars().any(char::is_control) {
                return Err(format!(
                    "identity {id:?} must be 1..={MAX_IDENTITY_BYTES} printable bytes"
                ));
            }
            if crate::tls::is_node_identity(&id) {
                return Err(format!("identity {id:?} is reserved for nodes (node-<id>)"));
            }
            if p.roles.is_empty() {
                return Err(format!("principal {id:?} has no roles"));
            }
            let p = Arc::new(p);
            if let Some(t) = &p.token {
                if t.len() < MIN_TOKEN_BYTES || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "token of {id:?} must be >= {MIN_TOKEN_BYTES} printable ASCII bytes"
                    ));
                }
                if out.by_token.insert(t.clone(), p.clone()).is_some() {
                    return Err(format!("token of {id:?} is used twice"));
                }
            }
            if out.by_identity.insert(p.identity.clone(), p.clone()).is_some() {
                return Err(format!("identity {id:?} is listed twice"));
            }
        }
        Ok(out)
    }

    /// The principal holding `token`.
    pub fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        self.by_token.get(token).cloned()
    }

    /// The principal named `identity`.
    pub fn by_identity(&self, identity: &str) -> Option<Arc<Principal>> {
        self.by_identity.get(identity).cloned()
    }
}

/// Who sent a request, as established by the request layer.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Identity: principal name, certificate name, or `ip:<addr>` when anonymous.
    pub identity: String,
    /// The principal when auth is on and the caller authenticated; None with auth off.
    pub principal: Option<Arc<Principal>>,
    /// Auth is on: requests without a principal are refused.
    pub auth_enabled: bool,
    /// The caller proved who it is (a known token, a verified certificate, or a
    /// node forwarding for one of those).
    pub authenticated: bool,
    /// The node that forwarded the request (its certificate identity), if any.
    pub forwarded_by: Option<String>,
}

/// What a request needs.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// A role on one key.
    Key(Role, &'a [u8]),
    /// A role on every key with this prefix.
    Prefix(Role, &'a [u8]),
    /// A role on the key range [start, end); an empty end is unbounded.
    Range(Role, &'a [u8], &'a [u8]),
    /// The admin role (Cluster admin RPCs).
    Admin,
    /// Any authenticated caller (Status, Members, health).
    Authenticated,
}

/// The first key after every key with `prefix` (None: the prefix is empty or all
/// 0xff, so the range is unbounded).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn range_within(grant: &[u8], start: &[u8], end: &[u8]) -> bool {
    if !start.starts_with(grant) {
        return false;
    }
    match prefix_end(grant) {
        None => true,
        Some(limit) => !end.is_empty() && end <= limit.as_slice(),
    }
}

fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(key).chars().take(64).collect()
}

impl Caller {
    /// Check `access`; PERMISSION_DENIED or UNAUTHENTICATED with a clear message.
    pub fn check(&self, access: Access<'_>) -> Result<(), Status> {
        if !self.auth_enabled {
            return Ok(());
        }
        if matches!(access, Access::Authenticated) && self.authenticated {
            return Ok(());
        }
        let Some(p) = &self.principal else {
            if self.authenticated {
                return Err(Status::permission_denied(format!(
                    "identity {:?} has no grants in the tokens file",
                    self.identity
                )));
            }
            return Err(Status::unauthenticated(
                "authentication required: send `authorization: Bearer <token>` or a client certificate of a known identity",
            ));
        };
        let who = &p.identity;
        let (role, allowed, what) = match access {
            Access::Authenticated => return Ok(()),
            Access::Admin => (Role::Admin, p.roles.contains(&Role::Admin), String::new()),
            Access::Key(role, key) => (
                role,
                p.has_role(role) && p.prefixes().any(|g| key.starts_with(g)),
                format!(" on key {:?}", shown(key)),
            ),
            Access::Prefix(role, prefix) => (
                role,
                p.has_role(role) && p.prefixes().any(|g| prefix.starts_with(g)),
                format!(" on prefix {:?}", shown(prefix)),
            ),
            Access::Range(role, start, end) => (
                role,
                p.has_role(role) && p.prefixes().any(|g| range_within(g, start, end)),
                format!(" on range [{:?}, {:?})", shown(start), shown(end)),
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "identity {who:?} lacks the {} role{what}",
                role.name()
            )))
        }
    }
}

/// Authorize a request: the one call a handler makes before doing anything.
///
/// ```ignore
/// crate::server::auth::authorize(&request, Access::Prefix(Role::Read, &start.prefix))?;
/// ```
///
/// A request that did not pass the request layer (no [`Caller`] in its extensions,
/// e.g. a service mounted without the layer) is refused with INTERNAL rather than
/// silently allowed.
pub fn authorize<T>(request: &Request<T>, access: Access<'_>) -> Result<(), Status> {
    caller(request)?.check(access)
}

/// The caller of a request (see [`authorize`]).
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| {
        Status::internal("request did not pass the authentication layer (server misconfiguration)")
    })
}

/// The access a Txn needs: read on compared and read keys, write on written keys.
pub fn authorize_txn<T>(
    request: &Request<T>,
    txn: &crate::pb::v1::TxnRequest,
) -> Result<(), Status> {
    use crate::pb::v1::txn_op::Op;
    let caller = caller(request)?;
    for c in &txn.compares {
        caller.check(Access::Key(Role::Read, &c.key))?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.op {
            Some(Op::Put(p)) => caller.check(Access::Key(Role::Write, &p.key))?,
            Some(Op::Delete(d)) => caller.check(Access::Key(Role::Write, &d.key))?,
            Some(Op::Get(g)) => caller.check(Access::Key(Role::Read, &g.key))?,
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[principal]]
identity = "alice"
token = "alice-token-0123456789"
roles = ["read", "write"]
prefixes = ["app/"]

[[principal]]
identity = "root"
token = "root-token-0123456789"
roles = ["admin"]
prefixes = [""]

[[principal]]
identity = "reader"
roles = ["read"]
prefixes = ["app/", "pub/"]
"#;

    fn caller(name: &str) -> Caller {
        let p = Principals::parse(FILE).expect("parses");
        Caller {
            identity: name.into(),
            principal: p.by_identity(name),
            auth_enabled: true,
            authenticated: true,
            forwarded_by: None,
        }
    }

    #[test]
    fn roles_apply_only_on_granted_prefixes() {
        let a = caller("alice");
        a.check(Access::Key(Role::Write, b"app/x")).expect("write app/");
        let e = a.check(Access::Key(Role::Write, b"other/x")).expect_err("not granted");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("alice") && e.message().contains("write"), "{e:?}");
        assert_eq!(
            a.check(Access::Admin).expect_err("no admin").code(),
            tonic::Code::PermissionDenied
        );
        let r = caller("reader");
        r.check(Access::Key(Role::Read, b"pub/1")).expect("read");
        assert!(r.check(Access::Key(Role::Write, b"pub/1")).is_err());
        caller("root").check(Access::Admin).expect("admin");
        caller("root").check(Access::Key(Role::Write, b"anything")).expect("admin implies write");
    }

    #[test]
    fn ranges_must_stay_inside_a_granted_prefix() {
        let a = caller("alice");
        a.check(Access::Range(Role::Read, b"app/a", b"app/z")).expect("inside");
        a.check(Access::Range(Role::Read, b"app/", b"app0")).expect("whole prefix");
        assert!(a.check(Access::Range(Role::Read, b"app/a", b"")).is_err(), "unbounded");
        assert!(a.check(Access::Range(Role::Read, b"app/a", b"b")).is_err(), "past the prefix");
        a.check(Access::Prefix(Role::Read, b"app/sub/")).expect("sub-prefix");
        assert!(a.check(Access::Prefix(Role::Read, b"ap")).is_err(), "wider prefix");
    }

    #[test]
    fn unknown_caller_is_unauthenticated_and_auth_off_allows_all() {
        let anon = Caller {
            identity: "ip:1.2.3.4".into(),
            principal: None,
            auth_enabled: true,
            authenticated: false,
            forwarded_by: None,
        };
        assert_eq!(
            anon.check(Access::Authenticated).expect_err("anon").code(),
            tonic::Code::Unauthenticated
        );
        let off = Caller { auth_enabled: false, ..anon };
        off.check(Access::Admin).expect("auth off");
    }

    #[test]
    fn bad_tokens_files_are_refused_with_reasons() {
        for (text, needle) in [
            ("[[principal]]\nidentity='a'\ntoken='short'\nroles=['read']", "token"),
            ("[[principal]]\nidentity='node-1'\nroles=['read']", "reserved"),
            ("[[principal]]\nidentity='a'\nroles=[]", "no roles"),
            ("[[principal]]\nidentity='a'\nroles=['sudo']", "sudo"),
            ("[[principal]]\nidentity='a'\nroles=['read']\n[[principal]]\nidentity='a'\nroles=['read']", "twice"),
        ] {
            let err = Principals::parse(text).expect_err(needle);
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"app/"), Some(b"app0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
    }
}

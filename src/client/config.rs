//! Client configuration: one typed, validated struct. Sources, later ones winning:
//! built-in defaults, then a TOML file, then `MERIDIAN_*` environment variables, then
//! whatever the embedding program sets in code. [`ClientConfig::validate`] rejects bad
//! values before any connection is attempted. A commented sample lives in
//! examples/client.toml (and is parsed by a unit test, so it stays valid).
//!
//! Environment variables (`MERIDIAN_CLIENT_` prefix so they never collide with a
//! node's `MERIDIAN_*` settings, except the shared `MERIDIAN_ENDPOINTS`):
//! `MERIDIAN_ENDPOINTS` (comma-separated host:port), `MERIDIAN_CLIENT_CONNECT_TIMEOUT_MS`,
//! `MERIDIAN_CLIENT_REQUEST_TIMEOUT_MS`, `MERIDIAN_CLIENT_MAX_ATTEMPTS`,
//! `MERIDIAN_CLIENT_MAX_ELAPSED_MS`, `MERIDIAN_CLIENT_REGION`,
//! `MERIDIAN_CLIENT_FOLLOWER_READS`.
//! `MERIDIAN_CLIENT_MAX_ELAPSED_MS`, `MERIDIAN_CLIENT_REGION`, `MERIDIAN_CLIENT_TOKEN`,
//! `MERIDIAN_CLIENT_CA_FILE`, `MERIDIAN_CLIENT_CERT_FILE`, `MERIDIAN_CLIENT_KEY_FILE`.
//!
//! Timeouts: `request_timeout_ms` bounds one attempt (it is sent as the gRPC deadline);
//! `retry.max_elapsed_ms` bounds a whole logical call, retries and backoff included.
//! Each attempt's deadline is the smaller of the two that remains.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoints::normalize_endpoint;
use super::error::ClientError;

/// The local cluster started by `meridian cluster up`.
pub const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];
/// Most endpoints one client tracks (configured plus discovered from leader hints).
pub const MAX_ENDPOINTS: usize = 64;
/// Upper bound on every configurable timeout, ms (one hour).
pub const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// Upper bound on attempts per logical call.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Smallest HTTP/2 keepalive ping interval, ms (servers may punish faster pings).
pub const MIN_KEEPALIVE_INTERVAL_MS: u64 = 1_000;
/// Longest region label, bytes.
pub const MAX_REGION_BYTES: usize = 64;

/// Retry policy of one logical call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per logical call, including the first and leader redirects (1..=100).
    pub max_attempts: u32,
    /// Backoff cap before the first retry, ms; doubles per retry (full jitter below it).
    pub initial_backoff_ms: u64,
    /// Largest backoff cap, ms (>= initial_backoff_ms).
    pub max_backoff_ms: u64,
    /// Total time budget of one logical call, retries and backoff included, ms.
    pub max_elapsed_ms: u64,
    /// Seed of the jitter RNG; None draws one from the OS (logged at debug level).
    pub jitter_seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff_ms: 50,
            max_backoff_ms: 2_000,
            max_elapsed_ms: 30_000,
            jitter_seed: None,
        }
    }
}

/// Circuit breaker settings, applied to each endpoint separately.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// False: never reject (every endpoint always looks Closed).
    pub enabled: bool,
    /// Requests needed in the counting window before the breaker may open (>= 1).
    pub min_requests: u32,
    /// Failure percentage (1..=100) at or above which the breaker opens.
    pub error_rate_percent: u8,
    /// Length of the counting window, ms.
    pub window_ms: u64,
    /// Time an open breaker rejects requests before it admits a probe, ms.
    pub sleep_window_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_requests: 20,
            error_rate_percent: 50,
            window_ms: 10_000,
            sleep_window_ms: 5_000,
        }
    }
}

/// Configuration of a [`Client`](super::Client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// API endpoints, `host:port` (an `http://` prefix is accepted). Any node will do:
    /// followers forward to the leader. 1..=64 entries, no duplicates.
    pub endpoints: Vec<String>,
    /// TCP connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Deadline of one attempt, ms (sent to the server as grpc-timeout).
    pub request_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval, ms (>= 1000); pings also flow while idle.
    pub keepalive_interval_ms: u64,
    /// Time to wait for a keepalive ack before the connection is considered dead, ms.
    pub keepalive_timeout_ms: u64,
    /// Region label of this client: reads that any replica may serve go to endpoints of
    /// this region first (then the lowest round-trip time).
    pub region: Option<String>,
    /// Send linearizable reads to the nearest replica, which obtains a read index from
    /// the leader and serves the data locally (a follower read), instead of to the
    /// leader. Same guarantee; the data does not cross regions, only the index.
    pub follower_reads: bool,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Circuit breaker policy.
    pub breaker: BreakerConfig,
    /// TLS towards the nodes; None: plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// Bearer token sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
}

/// `[tls]` of a client: PEM files. With `cert_file`/`key_file` the client presents a
/// certificate (mutual TLS; its common name is the client's identity).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// CA certificate that signed the nodes' certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (optional; both or neither of cert_file and key_file).
    pub cert_file: Option<std::path::PathBuf>,
    /// Client private key.
    pub key_file: Option<std::path::PathBuf>,
    /// Server name expected in the nodes' certificates (default "localhost").
    pub domain: Option<String>,
}

/// Server name a client expects when `tls.domain` is not set.
pub const DEFAULT_TLS_DOMAIN: &str = "localhost";

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
            keepalive_interval_ms: 10_000,
            keepalive_timeout_ms: 5_000,
            region: None,
            follower_reads: false,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            tls: None,
            token: None,
        }
    }
}

fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::Config(message.into())
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ClientError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| invalid(format!("{name}={value:?}: {e}")))
}

/// Split a comma-separated endpoint list, dropping empty items and surrounding spaces.
pub fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl ClientConfig {
    /// A default configuration with the given endpoints.
    pub fn with_endpoints<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self { endpoints: endpoints.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    /// Defaults, then `path` (if any), then the environment; validated.
    pub fn load(path: Option<&Path>) -> Result<Self, ClientError> {
        let mut config = match path {
            Some(p) => Self::from_toml_file(p)?,
            None => Self::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults, then the environment; validated.
    pub fn from_env() -> Result<Self, ClientError> {
        Self::load(None)
    }

    /// Parse a TOML file (not validated; unknown fields are rejected by name).
    pub fn from_toml_file(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Parse TOML text (not validated).
    pub fn from_toml_str(text: &str) -> Result<Self, ClientError> {
        toml::from_str(text).map_err(|e| invalid(e.to_string()))
    }

    /// Override fields from environment variables (see module docs). `get` is
    /// injectable so tests need not touch the process environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ClientError> {
        if let Some(v) = get("MERIDIAN_ENDPOINTS") {
            self.endpoints = split_endpoints(&v);
        }
        if let Some(v) = get("MERIDIAN_CLIENT_CONNECT_TIMEOUT_MS") {
            self.connect_timeout_ms = parse_env("MERIDIAN_CLIENT_CONNECT_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("MERIDIAN_CLIENT_REQUEST_TIMEOUT_MS") {
            self.request_timeout_ms = parse_env("MERIDIAN_CLIENT_REQUEST_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("MERIDIAN_CLIENT_MAX_ATTEMPTS") {
            self.retry.max_attempts = parse_env("MERIDIAN_CLIENT_MAX_ATTEMPTS", &v)?;
        }
        if let Some(v) = get("MERIDIAN_CLIENT_MAX_ELAPSED_MS") {
            self.retry.max_elapsed_ms = parse_env("MERIDIAN_CLIENT_MAX_ELAPSED_MS", &v)?;
        }
        if let Some(v) = get("MERIDIAN_CLIENT_REGION") {
            self.region = Some(v);
        }
        if let Some(v) = get("MERIDIAN_CLIENT_FOLLOWER_READS") {
            self.follower_reads = parse_env("MERIDIAN_CLIENT_FOLLOWER_READS", &v)?;
        }
        if let Some(v) = get("MERIDIAN_CLIENT_TOKEN") {
            self.token = Some(v);
        }
        let tls_file = |name: &str| get(name).map(std::path::PathBuf::from);
        let (ca, cert, key) = (
            tls_file("MERIDIAN_CLIENT_CA_FILE"),
            tls_file("MERIDIAN_CLIENT_CERT_FILE"),
            tls_file("MERIDIAN_CLIENT_KEY_FILE"),
        );
        if ca.is_some() || cert.is_some() || key.is_some() {
            let tls = self.tls.get_or_insert_with(ClientTlsConfig::default);
            tls.ca_file = ca.or(tls.ca_file.take());
            tls.cert_file = cert.or(tls.cert_file.take());
            tls.key_file = key.or(tls.key_file.take());
        }
        Ok(())
    }

    /// Reject out-of-range values and bad combinations.
    pub fn validate(&self) -> Result<(), ClientError> {
        self.validate_endpoints()?;
        let timeouts = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("retry.max_elapsed_ms", self.retry.max_elapsed_ms),
            ("retry.initial_backoff_ms", self.retry.initial_backoff_ms),
            ("retry.max_backoff_ms", self.retry.max_backoff_ms),
            ("breaker.window_ms", self.breaker.window_ms),
            ("breaker.sleep_window_ms", self.breaker.sleep_window_ms),
        ];
        for (name, ms) in timeouts {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                return Err(invalid(format!("{name} must be 1..={MAX_TIMEOUT_MS}, got {ms}")));
            }
        }
        if !(MIN_KEEPALIVE_INTERVAL_MS..=MAX_TIMEOUT_MS).contains(&self.keepalive_interval_ms) {
            return Err(invalid(format!(
                "keepalive_interval_ms must be {MIN_KEEPALIVE_INTERVAL_MS}..={MAX_TIMEOUT_MS}, got {}",
                self.keepalive_interval_ms
            )));
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(invalid(format!(
                "retry.max_attempts must be 1..={MAX_ATTEMPTS_LIMIT}, got {}",
                r.max_attempts
            )));
        }
        if r.initial_backoff_ms > r.max_backoff_ms {
            return Err(invalid(format!(
                "retry.initial_backoff_ms ({}) must not exceed retry.max_backoff_ms ({})",
                r.initial_backoff_ms, r.max_backoff_ms
            )));
        }
        let b = &self.breaker;
        if b.min_requests == 0 {
            return Err(invalid("breaker.min_requests must be >= 1"));
        }
        if b.error_rate_percent == 0 || b.error_rate_percent > 100 {
            return Err(invalid(format!(
                "breaker.error_rate_percent must be 1..=100, got {}",
                b.error_rate_percent
            )));
        }
        if let Some(tls) = &self.tls {
            if tls.ca_file.is_none() {
                return Err(invalid("tls.ca_file is required when [tls] is set"));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(invalid("tls.cert_file and tls.key_file go together"));
            }
        }
        if let Some(t) = &self.token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("token must be printable ASCII without spaces"));
            }
        }
        if let Some(region) = &self.region {
            if region.is_empty() || region.len() > MAX_REGION_BYTES {
                return Err(invalid(format!("region must be 1..={MAX_REGION_BYTES} bytes")));
            }
        }
        Ok(())
    }

    fn validate_endpoints(&self) -> Result<(), ClientError> {
        if self.endpoints.is_empty() || self.endpoints.len() > MAX_ENDPOINTS {
            return Err(invalid(format!(
                "endpoints must list 1..={MAX_ENDPOINTS} addresses, got {}",
                self.endpoints.len()
            )));
        }
        let mut seen = Vec::with_capacity(self.endpoints.len());
        for e in &self.endpoints {
            let addr =
                normalize_endpoint(e).map_err(|m| invalid(format!("endpoint {e:?}: {m}")))?;
            if seen.contains(&addr) {
                return Err(invalid(format!("endpoint {addr} is listed twice")));
            }
            seen.push(addr);
        }
        Ok(())
    }

    /// TCP connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Deadline of one attempt.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// HTTP/2 keepalive ping interval.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }

    /// HTTP/2 keepalive ack timeout.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }

    /// Total budget of one logical call.
    pub fn max_elapsed(&self) -> Duration {
        Duration::from_millis(self.retry.max_elapsed_ms)
    }

    /// Set the overall deadline of every call: the total retry budget, and the attempt
    /// deadline when it is longer. Used by `--timeout` in the CLI.
    pub fn set_overall_timeout(&mut self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(MAX_TIMEOUT_MS).max(1);
        self.retry.max_elapsed_ms = ms;
        self.request_timeout_ms = self.request_timeout_ms.min(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let c = ClientConfig::default();
        c.validate().expect("defaults valid");
        assert_eq!(c.connect_timeout(), Duration::from_secs(3));
        assert_eq!(c.request_timeout(), Duration::from_secs(10));
        assert_eq!(c.breaker.min_requests, 20);
        assert_eq!(c.breaker.error_rate_percent, 50);
        assert_eq!(c.breaker.sleep_window_ms, 5_000);
        assert_eq!(c.endpoints.len(), 3);
    }

    #[test]
    fn sample_config_file_parses_and_validates() {
        let c = ClientConfig::from_toml_str(include_str!("../../examples/client.toml"))
            .expect("sample parses");
        c.validate().expect("sample valid");
    }

    #[test]
    fn unknown_toml_field_is_rejected_with_its_name() {
        let err = ClientConfig::from_toml_str("endpoint = [\"a:1\"]").expect_err("unknown");
        assert!(err.to_string().contains("endpoint"), "{err}");
    }

    #[test]
    fn toml_overrides_only_the_fields_it_sets() {
        let c = ClientConfig::from_toml_str("request_timeout_ms = 250\n[retry]\nmax_attempts = 3")
            .expect("parses");
        assert_eq!(c.request_timeout_ms, 250);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.initial_backoff_ms, RetryConfig::default().initial_backoff_ms);
    }

    #[test]
    fn env_overrides_file_values() {
        let mut c = ClientConfig::default();
        c.apply_env(env(&[
            ("MERIDIAN_ENDPOINTS", " 10.0.0.1:7001 ,10.0.0.2:7001,, "),
            ("MERIDIAN_CLIENT_REQUEST_TIMEOUT_MS", "1500"),
            ("MERIDIAN_CLIENT_MAX_ATTEMPTS", "4"),
            ("MERIDIAN_CLIENT_REGION", "eu-west"),
        ]))
        .expect("env applies");
        assert_eq!(c.endpoints, vec!["10.0.0.1:7001", "10.0.0.2:7001"]);
        assert_eq!(c.request_timeout_ms, 1500);
        assert_eq!(c.retry.max_attempts, 4);
        assert_eq!(c.region.as_deref(), Some("eu-west"));
        c.validate().expect("valid");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let mut c = ClientConfig::default();
        let err = c
            .apply_env(env(&[("MERIDIAN_CLIENT_CONNECT_TIMEOUT_MS", "3s")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("MERIDIAN_CLIENT_CONNECT_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn validate_rejects_bad_values() {
        type Mutation = Box<dyn Fn(&mut ClientConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("endpoints", Box::new(|c| c.endpoints.clear())),
            ("listed twice", Box::new(|c| c.endpoints = vec!["a:1".into(), "http://a:1".into()])),
            ("port", Box::new(|c| c.endpoints = vec!["localhost".into()])),
            ("TLS", Box::new(|c| c.endpoints = vec!["https://a:1".into()])),
            ("request_timeout_ms", Box::new(|c| c.request_timeout_ms = 0)),
            ("keepalive_interval_ms", Box::new(|c| c.keepalive_interval_ms = 10)),
            ("max_attempts", Box::new(|c| c.retry.max_attempts = 0)),
            ("max_attempts", Box::new(|c| c.retry.max_attempts = MAX_ATTEMPTS_LIMIT + 1)),
            ("initial_backoff_ms", Box::new(|c| c.retry.initial_backoff_ms = 5_000)),
            ("error_rate_percent", Box::new(|c| c.breaker.error_rate_percent = 101)),
            ("min_requests", Box::new(|c| c.breaker.min_requests = 0)),
            ("region", Box::new(|c| c.region = Some(String::new()))),
        ];
        for (needle, mutate) in cases {
            let mut c = ClientConfig::default();
            mutate(&mut c);
            let err = c.validate().expect_err(needle);
            assert!(err.to_string().contains(needle), "expected {needle:?} in {err}");
        }
    }

    #[test]
    fn overall_timeout_bounds_budget_and_attempt_deadline() {
        let mut c = ClientConfig::default();
        c.set_overall_timeout(Duration::from_secs(2));
        assert_eq!(c.max_elapsed(), Duration::from_secs(2));
        assert_eq!(c.request_timeout(), Duration::from_secs(2));
        c.set_overall_timeout(Duration::from_secs(60));
        assert_eq!(c.request_timeout(), Duration::from_secs(2), "never raised");
    }
}

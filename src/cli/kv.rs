//! `meridian kv`: read and write keys. Thin: parse flags, build a
//! [`Client`], make one call, print the result.
//!
//! Output: human text by default (`key = value`, then an indented metadata line);
//! `--json` prints one JSON object per result (values as UTF-8 strings when valid,
//! else `value_base64`). Exit codes: 0 ok; 1 operational failure, a missing key, or a
//! version conflict; 2 usage errors and INVALID_ARGUMENT / FAILED_PRECONDITION /
//! OUT_OF_RANGE from the server. Errors go to stderr as `error: <CODE>: <message>`.
//!
//! Settings precedence: defaults, then `--config FILE`, then `MERIDIAN_*`
//! environment, then flags (`--endpoints`, `--timeout`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{CliError, CliResult};
use crate::client::txn::{parse_compare, parse_op};
use crate::client::{
    Client, ClientConfig, ClientError, Consistency, DeleteOptions, PutOptions, RangeOptions,
    ReadOptions, Txn, MAX_RANGE_PAGE,
};
use crate::pb::v1 as pb;

/// Keys `scan` returns when `--limit` is not given.
pub const DEFAULT_SCAN_LIMIT: usize = 1_000;
/// Most keys one `scan` may return.
pub const MAX_SCAN_LIMIT: usize = 1_000_000;

/// Arguments of `meridian kv`.
#[derive(Debug, clap::Args)]
pub struct KvArgs {
    /// API endpoints, comma-separated host:port [default: 127.0.0.1:7001,7002,7003].
    #[arg(long, env = "MERIDIAN_ENDPOINTS", value_delimiter = ',', global = true)]
    pub endpoints: Vec<String>,
    /// Print one JSON object per result.
    #[arg(long, global = true)]
    pub json: bool,
    /// Overall deadline of the command, retries included (e.g. 5s, 500ms).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Client configuration file (TOML; see examples/client.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The client's region: reads any replica may serve go to that region's nodes
    /// first. Against a local cluster with emulated regions, the client also reaches
    /// every node through that region's links (found in <data-dir>/cluster.json).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Data root of a local cluster, where --region finds the region's client links
    /// [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve linearizable reads through the nearest replica (a follower read: the
    /// leader only hands out a read index; the data is read locally).
    #[arg(long, global = true)]
    pub follower_reads: bool,
    /// TLS and token flags.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// The operation.
    #[command(subcommand)]
    pub command: KvCommand,
}

/// Read consistency on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsistencyArg {
    /// Through the leader: never stale.
    Linearizable,
    /// The contacted replica's state: may be stale.
    Serializable,
}

impl From<ConsistencyArg> for Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Serializable => Consistency::Serializable,
        }
    }
}

/// `meridian kv` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Read a key (exit 1 if it does not exist).
    Get {
        /// The key.
        key: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ConsistencyArg,
        /// Accept data this old from any replica (bounded staleness; e.g. 500ms).
        #[arg(long, value_parser = parse_duration, conflicts_with = "consistency")]
        max_staleness: Option<Duration>,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Only if the key is at this version (0: only if it does not exist).
        #[arg(long)]
        expected_version: Option<u64>,
        /// Idempotency key (default: a random 128-bit id).
        #[arg(long)]
        request_id: Option<String>,
        /// Write as a step of this open saga (the record stays PENDING until commit).
        #[arg(long)]
        saga: Option<String>,
    },
    /// Write a key only at a version (0 = create only); exit 1 on a conflict.
    Cas {
        /// The key.
        key: String,
        /// The version the key must have (0: must not exist).
        expected_version: u64,
        /// The new value.
        new_value: String,
        /// Idempotency key (default: a random 128-bit id).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Delete a key (exit 1 if it does not exist or the version differs).
    Del {
        /// The key.
        key: String,
        /// Only if the key is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
        /// Idempotency key (default: a random 128-bit id).
        #[arg(long)]
        request_id: Option<String>,
        /// Delete as a step of this open saga.
        #[arg(long)]
        saga: Option<String>,
    },
    /// List keys in order, by prefix or from a start key.
    Scan {
        /// Keys with this prefix.
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// First key (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// Stop before this key (exclusive).
        #[arg(long, requires = "start")]
        end: Option<String>,
        /// Most keys to return (paged through).
        #[arg(long, default_value_t = DEFAULT_SCAN_LIMIT)]
        limit: usize,
        /// Read consistency (per page).
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ConsistencyArg,
    },
    /// Atomic multi-key compare-and-swap.
    ///
    /// Example: txn --if 'version(k1) = 3' --if '!exists(k4)' --then 'put k1 v1'
    /// --then 'del k2' --else 'get k1'
    Txn {
        /// A compare: version(K) OP N | value(K) OP "S" | exists(K) | !exists(K);
        /// OP is one of = != > <. All must hold.
        #[arg(long = "if", value_name = "COMPARE")]
        compares: Vec<String>,
        /// An op run when every compare holds: put K V | del K | get K.
        #[arg(long = "then", value_name = "OP")]
        success: Vec<String>,
        /// An op run otherwise: put K V | del K | get K.
        #[arg(long = "else", value_name = "OP")]
        failure: Vec<String>,
        /// Idempotency key (default: a random 128-bit id).
        #[arg(long)]
        request_id: Option<String>,
        /// Run as a step of this open saga (written records stay PENDING).
        #[arg(long)]
        saga: Option<String>,
    },
    /// Stream changes to a key or prefix (from the first endpoint's binlog) until
    /// interrupted or --limit events.
    Watch {
        /// The key (omit with --prefix).
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<String>,
        /// Every key with this prefix ("" for all keys).
        #[arg(long)]
        prefix: Option<String>,
        /// First revision (default: changes after now).
        #[arg(long = "from", default_value_t = 0)]
        from_revision: u64,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// Parse a duration: a number with a unit `ns`, `us`, `ms`, `s`, `m` or `h`
/// (`1.5s`, `500ms`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("bad duration {text:?} (e.g. 5s, 500ms)"))?;
    let seconds_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("bad duration unit {other:?} in {text:?} (ns us ms s m h)")),
    };
    Duration::try_from_secs_f64(n * seconds_per_unit)
        .map_err(|e| format!("bad duration {text:?}: {e}"))
}

/// TLS and authentication flags of the client commands (`kv`, `bench`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// CA certificate (PEM) that signed the nodes' certificates: turns TLS on.
    #[arg(long = "ca", id = "tls_ca", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long = "cert",
        id = "tls_cert",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long = "key", id = "tls_key", global = true, value_name = "FILE", requires = "tls_cert")]
    pub key: Option<PathBuf>,
    /// Directory from `meridian certs init`: ca.pem plus the --client-name certificate.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "tls_ca")]
    pub tls_dir: Option<PathBuf>,
    /// Client certificate name inside --tls-dir.
    #[arg(long, global = true, default_value = crate::cluster::certs::ADMIN_CLIENT)]
    pub client_name: String,
    /// Bearer token (see the node's tokens file).
    #[arg(long, global = true, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl SecurityArgs {
    /// Apply the flags over `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        use crate::client::config::ClientTlsConfig;
        if let Some(dir) = &self.tls_dir {
            let (cert, key) = crate::cluster::certs::cert_paths(dir, &self.client_name);
            let tls = config.tls.get_or_insert_with(ClientTlsConfig::default);
            tls.ca_file = Some(dir.join(crate::cluster::certs::CA_CERT_FILE));
            if cert.exists() {
                tls.cert_file = Some(cert);
                tls.key_file = Some(key);
            }
        }
        if let Some(ca) = &self.ca {
            config.tls.get_or_insert_with(ClientTlsConfig::default).ca_file = Some(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let tls = config.tls.get_or_insert_with(ClientTlsConfig::default);
            tls.cert_file = Some(cert.clone());
            tls.key_file = Some(key.clone());
        }
        if let Some(t) = &self.token {
            config.token = Some(t.clone());
        }
    }
}

/// Build the client config: defaults, then `file`, then the environment, then flags.
pub(crate) fn client_config(
    endpoints: &[String],
    file: Option<&Path>,
    timeout: Option<Duration>,
    security: &SecurityArgs,
) -> CliResult<ClientConfig> {
    let mut config = ClientConfig::load(file).map_err(CliError::bad_input)?;
    security.apply(&mut config);
    let endpoints: Vec<String> =
        endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).map(String::from).collect();
    if !endpoints.is_empty() {
        config.endpoints = endpoints;
    }
    if let Some(t) = timeout {
        if t.is_zero() {
            return Err(CliError::bad_input(anyhow!("--timeout must be positive")));
        }
        config.set_overall_timeout(t);
    }
    config.validate().map_err(CliError::bad_input)?;
    Ok(config)
}

/// Pin `config` to `region`: set the client's region and, when no endpoints were given
/// on the command line and the local cluster under `data_dir` has client links for
/// that region, use them. A local cluster with region links but not this region is a
/// usage error (exit 2) naming the regions it has.
pub(crate) fn pin_region(
    config: &mut ClientConfig,
    region: Option<&str>,
    data_dir: Option<&Path>,
    explicit_endpoints: bool,
) -> CliResult {
    let Some(region) = region else { return Ok(()) };
    config.region = Some(region.to_string());
    if !explicit_endpoints {
        let root = data_dir.unwrap_or(Path::new(crate::cluster::manifest::DEFAULT_DATA_DIR));
        let state = crate::cluster::state::ClusterState::read(root).map_err(CliError::bad_input)?;
        if let Some(state) = state.filter(|s| !s.region_endpoints.is_empty()) {
            match state.region_endpoints.get(region) {
                Some(eps) => config.endpoints = eps.clone(),
                None => {
                    let known: Vec<&str> =
                        state.region_endpoints.keys().map(String::as_str).collect();
                    return Err(CliError::bad_input(anyhow!(
                        "the cluster under {} has no region {region:?} (regions: {})",
                        root.display(),
                        known.join(", ")
                    )));
                }
            }
        }
    }
    config.validate().map_err(CliError::bad_input)
}

/// Map a client error to an exit code: 2 for bad input, 1 for everything else.
pub(crate) fn client_error(e: ClientError) -> CliError {
    use tonic::Code;
    match e.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            CliError::bad_input(e)
        }
        _ => CliError::failure(e),
    }
}

/// Run `meridian kv`.
pub fn run(args: KvArgs) -> CliResult {
    let mut config =
        client_config(&args.endpoints, args.config.as_deref(), args.timeout, &args.security)?;
    let explicit = args.endpoints.iter().any(|e| !e.trim().is_empty());
    pin_region(&mut config, args.region.as_deref(), args.data_dir.as_deref(), explicit)?;
    config.follower_reads |= args.follower_reads;
    let client = Client::connect(config).map_err(CliError::bad_input)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow!("cannot start the async runtime: {e}")))?;
    let out = Printer { json: args.json };
    runtime.block_on(execute(&client, args.command, out))
}

async fn execute(client: &Client, command: KvCommand, out: Printer) -> CliResult {
    match command {
        KvCommand::Get { key, consistency, max_staleness } => {
            let options = match max_staleness {
                Some(d) => ReadOptions::bounded(d),
                None => ReadOptions { consistency: consistency.into(), ..ReadOptions::default() },
            };
            let resp = client.get(key.as_bytes(), options).await.map_err(client_error)?;
            out.get(&key, resp)
        }
        KvCommand::Put { key, value, expected_version, request_id, saga } => {
            let options =
                PutOptions { expected_version, request_id, saga_id: saga, ..PutOptions::default() };
            let resp = client.put_with(key, value, options).await.map_err(client_error)?;
            out.put(expected_version, resp)
        }
        KvCommand::Cas { key, expected_version, new_value, request_id } => {
            let options = PutOptions {
                expected_version: Some(expected_version),
                request_id,
                ..PutOptions::default()
            };
            let resp = client.put_with(key, new_value, options).await.map_err(client_error)?;
            out.put(Some(expected_version), resp)
        }
        KvCommand::Del { key, expected_version, request_id, saga } => {
            let options = DeleteOptions {
                expected_version,
                request_id,
                saga_id: saga,
                ..DeleteOptions::default()
            };
            let resp = client.delete(key.as_bytes(), options).await.map_err(client_error)?;
            out.delete(&key, expected_version, resp)
        }
        KvCommand::Scan { prefix, start, end, limit, consistency } => {
            if limit == 0 || limit > MAX_SCAN_LIMIT {
                return Err(CliError::bad_input(anyhow!("--limit must be 1..={MAX_SCAN_LIMIT}")));
            }
            let options = RangeOptions {
                prefix: prefix.unwrap_or_default().into_bytes(),
                start: start.unwrap_or_default().into_bytes(),
                end: end.unwrap_or_default().into_bytes(),
                limit: u32::try_from(limit).unwrap_or(MAX_RANGE_PAGE).min(MAX_RANGE_PAGE),
                consistency: consistency.into(),
                ..RangeOptions::default()
            };
            let all = client.range_all(options, limit).await.map_err(client_error)?;
            out.scan(&all.records, all.more)
        }
        KvCommand::Txn { compares, success, failure, request_id, saga } => {
            let mut txn = build_txn(&compares, &success, &failure, request_id)?;
            if let Some(s) = saga {
                txn = txn.saga_id(s);
            }
            let resp = client.txn(txn.clone()).await.map_err(client_error)?;
            out.txn(&txn, resp)
        }
        KvCommand::Watch { key, prefix, from_revision, limit } => {
            let options = crate::client::WatchOptions {
                key: key.unwrap_or_default().into_bytes(),
                prefix: prefix.unwrap_or_default().into_bytes(),
                from_revision,
            };
            super::binlog::watch(client, options, limit, out.json).await
        }
    }
}

/// Parse the `--if/--then/--else` clauses into a transaction.
fn build_txn(
    compares: &[String],
    success: &[String],
    failure: &[String],
    request_id: Option<String>,
) -> CliResult<Txn> {
    if compares.is_empty() && success.is_empty() && failure.is_empty() {
        return Err(CliError::bad_input(anyhow!("txn needs at least one --if, --then or --else")));
    }
    let mut txn = Txn::new();
    for c in compares {
        txn = txn.when(parse_compare(c).map_err(CliError::bad_input)?);
    }
    for op in success {
        txn = txn.then(parse_op(op).map_err(CliError::bad_input)?);
    }
    for op in failure {
        txn = txn.otherwise(parse_op(op).map_err(CliError::bad_input)?);
    }
    txn.request_id = request_id;
    Ok(txn)
}

/// Text form of bytes: the string when valid UTF-8, else `0x` and hex.
pub(crate) fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `wall_ns.logical@node`.
pub(crate) fn hlc_text(hlc: Option<&pb::Hlc>) -> String {
    hlc.map_or_else(|| "-".to_string(), |h| format!("{}.{}@{}", h.wall_ns, h.logical, h.node))
}

pub(crate) fn status_text(r: &pb::Record) -> String {
    match pb::RecordStatus::try_from(r.status) {
        Ok(pb::RecordStatus::Pending) => format!("pending({})", r.saga_id),
        Ok(pb::RecordStatus::Compensated) => "compensated".into(),
        _ => "committed".into(),
    }
}

/// The indented metadata line under a record.
pub(crate) fn meta_line(r: &pb::Record) -> String {
    let source =
        r.source.as_ref().map_or_else(|| "-".into(), |s| format!("{}/{}", s.node_id, s.region));
    let mut line = format!(
        "  version={} revision={} create_revision={} hlc={} hash={:016x} source={}",
        r.version,
        r.revision,
        r.create_revision,
        hlc_text(r.hlc.as_ref()),
        r.hash,
        source
    );
    if r.status != pb::RecordStatus::Committed as i32 && r.status != 0 {
        line.push_str(&format!(" status={}", status_text(r)));
    }
    line
}

/// Put `bytes` in `obj` as `<field>` (UTF-8) or `<field>_base64`.
pub(crate) fn put_bytes(obj: &mut serde_json::Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => obj.insert(field.into(), json!(s)),
        Err(_) => obj.insert(
            format!("{field}_base64"),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

/// A record as a JSON object.
pub(crate) fn record_json(r: &pb::Record) -> Value {
    let mut obj = serde_json::Map::new();
    put_bytes(&mut obj, "key", &r.key);
    put_bytes(&mut obj, "value", &r.value);
    obj.insert("version".into(), json!(r.version));
    obj.insert("revision".into(), json!(r.revision));
    obj.insert("create_revision".into(), json!(r.create_revision));
    if let Some(h) = &r.hlc {
        obj.insert(
            "hlc".into(),
            json!({"wall_ns": h.wall_ns, "logical": h.logical, "node": h.node}),
        );
    }
    obj.insert("hash".into(), json!(format!("{:016x}", r.hash)));
    if let Some(s) = &r.source {
        obj.insert("source".into(), json!({"node_id": s.node_id, "region": s.region}));
    }
    obj.insert("status".into(), json!(status_text(r)));
    Value::Object(obj)
}

fn conflict(expected: Option<u64>, current: Option<&pb::Record>) -> CliError {
    CliError::failure(anyhow!(
        "conflict: expected version {}, current version {}",
        expected.unwrap_or(0),
        current.map_or(0, |r| r.version)
    ))
}

fn not_found(key: &str) -> CliError {
    CliError::failure(anyhow!("{key}: not found"))
}

/// Prints results in the chosen format.
#[derive(Debug, Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn emit(&self, value: Value) {
        println!("{value}");
    }

    fn record(&self, r: &pb::Record) {
        println!("{} = {}", text(&r.key), text(&r.value));
        println!("{}", meta_line(r));
    }

    fn get(&self, key: &str, resp: pb::GetResponse) -> CliResult {
        match resp.record.filter(|_| resp.found) {
            Some(r) if self.json => {
                let mut v = record_json(&r);
                v["found"] = json!(true);
                self.emit(v);
                Ok(())
            }
            Some(r) => {
                self.record(&r);
                Ok(())
            }
            None => {
                if self.json {
                    self.emit(json!({"key": key, "found": false}));
                }
                Err(not_found(key))
            }
        }
    }

    fn put(&self, expected: Option<u64>, resp: pb::PutResponse) -> CliResult {
        if self.json {
            self.emit(json!({
                "op": "put",
                "succeeded": resp.succeeded,
                "duplicate": resp.duplicate,
                "record": resp.record.as_ref().map(record_json),
                "current": resp.current.as_ref().map(record_json),
            }));
        }
        if !resp.succeeded {
            return Err(conflict(expected, resp.current.as_ref()));
        }
        if !self.json {
            if let Some(r) = &resp.record {
                self.record(r);
            }
            if resp.duplicate {
                println!("  (duplicate: replayed the original response for this request id)");
            }
        }
        Ok(())
    }

    fn delete(&self, key: &str, expected: Option<u64>, resp: pb::DeleteResponse) -> CliResult {
        if self.json {
            self.emit(json!({
                "op": "delete",
                "key": key,
                "succeeded": resp.succeeded,
                "duplicate": resp.duplicate,
                "record": resp.record.as_ref().map(record_json),
                "current": resp.current.as_ref().map(record_json),
            }));
        }
        if !resp.succeeded {
            return Err(match (expected, &resp.current) {
                (Some(_), current) => conflict(expected, current.as_ref()),
                (None, _) => not_found(key),
            });
        }
        if !self.json {
            let version = resp.record.as_ref().map_or(0, |r| r.version);
            println!("deleted {key} (was version {version})");
        }
        Ok(())
    }

    fn scan(&self, records: &[pb::Record], more: bool) -> CliResult {
        for r in records {
            if self.json {
                self.emit(record_json(r));
            } else {
                self.record(r);
            }
        }
        if more {
            eprintln!("(stopped at {} keys; more exist: raise --limit)", records.len());
        } else if records.is_empty() && !self.json {
            eprintln!("(no keys)");
        }
        Ok(())
    }

    fn txn(&self, txn: &Txn, resp: pb::TxnResponse) -> CliResult {
        let ops = if resp.succeeded { &txn.success } else { &txn.failure };
        if self.json {
            let results: Vec<Value> = ops
                .iter()
                .zip(&resp.results)
                .map(|(op, res)| {
                    let (name, key) = op_name_key(op);
                    let mut v = json!({"op": name, "found": res.found});
                    put_bytes(v.as_object_mut().expect("json! object"), "key", key);
                    v["record"] = res.record.as_ref().map_or(Value::Null, record_json);
                    v
                })
                .collect();
            self.emit(json!({
                "op": "txn",
                "succeeded": resp.succeeded,
                "duplicate": resp.duplicate,
                "results": results,
            }));
            return Ok(());
        }
        if resp.succeeded {
            println!("succeeded: every compare held; the --then ops ran");
        } else {
            println!("compares failed: the --else ops ran");
        }
        for (op, res) in ops.iter().zip(&resp.results) {
            let (name, key) = op_name_key(op);
            match (&res.record, res.found || res.record.is_some()) {
                (Some(r), true) if name == "get" || name == "put" => {
                    println!("{name} {}", text(key));
                    self.record(r);
                }
                (Some(r), true) => {
                    println!("del {}: deleted (was version {})", text(key), r.version)
                }
                _ => println!("{name} {}: not found", text(key)),
            }
        }
        Ok(())
    }
}

fn op_name_key(op: &pb::TxnOp) -> (&'static str, &[u8]) {
    use pb::txn_op::Op;
    match &op.op {
        Some(Op::Put(p)) => ("put", &p.key),
        Some(Op::Delete(d)) => ("del", &d.key),
        Some(Op::Get(g)) => ("get", &g.key),
        None => ("none", &[]),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<KvArgs, clap::Error> {
        let argv = ["meridian", "kv"].iter().chain(args).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::Kv(kv) => Ok(kv),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let args = parse(&["get", "k1", "--json", "--timeout", "2s", "--endpoints", "a:1,b:2"])
            .expect("parses");
        assert!(args.json);
        assert_eq!(args.timeout, Some(Duration::from_secs(2)));
        assert_eq!(args.endpoints, vec!["a:1", "b:2"]);
    }

    #[test]
    fn txn_flags_collect_clauses_in_order() {
        let args = parse(&[
            "txn",
            "--if",
            "version(k1) = 3",
            "--if",
            "!exists(k4)",
            "--then",
            "put k1 v1",
            "--then",
            "del k2",
            "--else",
            "get k1",
        ])
        .expect("parses");
        let KvCommand::Txn { compares, success, failure, .. } = args.command else {
            panic!("not txn");
        };
        let txn = build_txn(&compares, &success, &failure, None).expect("valid");
        assert_eq!((txn.compares.len(), txn.success.len(), txn.failure.len()), (2, 2, 1));
    }

    #[test]
    fn bad_txn_clause_is_a_usage_error_naming_the_clause() {
        let err = build_txn(&["version(k1) = x".into()], &[], &[], None).expect_err("bad");
        assert_eq!(err.code, crate::cli::EXIT_BAD_INPUT);
        assert!(format!("{:#}", err.error).contains("version(k1) = x"));
        let err = build_txn(&[], &[], &[], None).expect_err("empty");
        assert_eq!(err.code, crate::cli::EXIT_BAD_INPUT);
    }

    #[test]
    fn scan_prefix_conflicts_with_start() {
        assert!(parse(&["scan", "--prefix", "p", "--start", "a"]).is_err());
        assert!(parse(&["scan", "--end", "z"]).is_err(), "--end needs --start");
        parse(&["scan", "--start", "a", "--end", "z", "--limit", "5"]).expect("parses");
    }

    #[test]
    fn exit_codes_follow_the_error_code() {
        use crate::client::RpcError;
        let rpc = |code| {
            client_error(
                RpcError {
                    code,
                    message: "m".into(),
                    leader_hint: None,
                    endpoint: None,
                    attempts: 1,
                    indeterminate: false,
                    request_id: None,
                    retry_after: None,
                }
                .into(),
            )
            .code
        };
        assert_eq!(rpc(tonic::Code::InvalidArgument), 2);
        assert_eq!(rpc(tonic::Code::FailedPrecondition), 2);
        assert_eq!(rpc(tonic::Code::OutOfRange), 2);
        assert_eq!(rpc(tonic::Code::Unavailable), 1);
        assert_eq!(rpc(tonic::Code::DeadlineExceeded), 1);
        assert_eq!(rpc(tonic::Code::PermissionDenied), 1);
    }

    #[test]
    fn record_output_shows_metadata_and_binary_values() {
        let r = pb::Record {
            key: b"k1".to_vec(),
            value: vec![0xff, 0x00],
            version: 3,
            revision: 17,
            create_revision: 5,
            hlc: Some(pb::Hlc { wall_ns: 1_000, logical: 2, node: 1 }),
            hash: 0xabc,
            source: Some(pb::Source { node_id: 1, region: "local".into() }),
            status: pb::RecordStatus::Committed as i32,
            saga_id: String::new(),
        };
        let line = meta_line(&r);
        assert_eq!(
            line,
            "  version=3 revision=17 create_revision=5 hlc=1000.2@1 hash=0000000000000abc source=1/local"
        );
        assert_eq!(text(&r.value), "0xff00");
        let v = record_json(&r);
        assert_eq!(v["key"], "k1");
        assert_eq!(v["value_base64"], "/wA=");
        assert!(v.get("value").is_none());
        assert_eq!(v["hash"], "0000000000000abc");
    }

    #[test]
    fn conflict_message_names_both_versions() {
        let current = pb::Record { version: 3, ..Default::default() };
        let err = conflict(Some(2), Some(&current));
        assert_eq!(err.code, 1);
        assert_eq!(err.error.to_string(), "conflict: expected version 2, current version 3");
    }
}

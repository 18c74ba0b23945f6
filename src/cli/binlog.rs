//! `meridian binlog tail`, `meridian kv watch` (its printing) and `meridian saga`.
//!
//! Events print as JSON lines (one event per line; keys and values as UTF-8 strings
//! when valid, else `<field>_base64`, like `kv get --json`), or with `--text` as one
//! human line each. `binlog tail` acknowledges each batch after printing it, so a
//! slow terminal or pipe holds the server back by at most the window.
//! A start older than the replica's retention exits 2 with the oldest retained
//! revision in the message (restart with `--from` that revision).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{json, Value};

use super::kv::{
    client_config, client_error, hex, hlc_text, meta_line, parse_duration, put_bytes, record_json,
    status_text, text,
};
use super::{CliError, CliResult};
use crate::client::{Client, SagaOptions, StreamError, SubscribeOptions, WatchOptions};
use crate::pb::v1 as pb;

/// Largest `--window` accepted (the server's maximum).
pub const MAX_WINDOW: u32 = 65_536;

/// Arguments of `meridian binlog`.
#[derive(Debug, clap::Args)]
pub struct BinlogArgs {
    /// TLS and token flags.
    #[command(flatten)]
    pub security: super::kv::SecurityArgs,
    /// The operation.
    #[command(subcommand)]
    pub command: BinlogCommand,
}

/// `meridian binlog` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BinlogCommand {
    /// Print one replica's binlog as JSON lines, following new events.
    Tail {
        /// The replica to read (default: the first configured endpoint).
        #[arg(long, env = "MERIDIAN_ENDPOINT")]
        endpoint: Option<String>,
        /// First revision (0: the oldest retained).
        #[arg(long = "from", default_value_t = 0)]
        from_revision: u64,
        /// Only keys with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// With --prefix, also print saga lifecycle events.
        #[arg(long)]
        include_saga_events: bool,
        /// Stop after this many events (default: follow until interrupted).
        #[arg(long)]
        limit: Option<u64>,
        /// Unacknowledged events the server may send ahead (0: server default 1024).
        #[arg(long, default_value_t = 0)]
        window: u32,
        /// One human-readable line per event instead of JSON.
        #[arg(long)]
        text: bool,
        /// Client configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Arguments of `meridian saga`.
#[derive(Debug, clap::Args)]
pub struct SagaArgs {
    /// TLS and token flags.
    #[command(flatten)]
    pub security: super::kv::SecurityArgs,
    /// API endpoints, comma-separated host:port [default: 127.0.0.1:7001,7002,7003].
    #[arg(long, env = "MERIDIAN_ENDPOINTS", value_delimiter = ',', global = true)]
    pub endpoints: Vec<String>,
    /// Print one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// Overall deadline of the command, retries included (e.g. 5s).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The operation.
    #[command(subcommand)]
    pub command: SagaCommand,
}

/// `meridian saga` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// Open a saga; writes with `--saga ID` stay PENDING until it commits.
    Open {
        /// Saga id (1..=128 printable ASCII bytes).
        id: String,
        /// Time to commit before it counts as stuck (e.g. 30s; at most 24h).
        #[arg(long = "deadline", value_parser = parse_duration)]
        deadline: Duration,
        /// Idempotency key (default: random).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Commit a saga (exit 2 if it expired or was aborted).
    Commit {
        /// Saga id.
        id: String,
        /// Idempotency key (default: random).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Abort a saga: restore every step whose key still holds the saga's write.
    Abort {
        /// Saga id.
        id: String,
        /// Why (kept in the saga).
        #[arg(long, default_value = "")]
        reason: String,
        /// Idempotency key (default: random).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a saga's state, deadline and steps (exit 1 if unknown).
    Get {
        /// Saga id.
        id: String,
    },
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow!("cannot start the async runtime: {e}")))
}

fn op_name(op: i32) -> &'static str {
    match pb::BinlogOp::try_from(op) {
        Ok(pb::BinlogOp::Put) => "PUT",
        Ok(pb::BinlogOp::Delete) => "DELETE",
        Ok(pb::BinlogOp::SagaOpen) => "SAGA_OPEN",
        Ok(pb::BinlogOp::SagaCommit) => "SAGA_COMMIT",
        Ok(pb::BinlogOp::SagaAbort) => "SAGA_ABORT",
        _ => "UNSPECIFIED",
    }
}

/// A binlog event as one JSON object.
pub fn event_json(e: &pb::BinlogEvent) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("revision".into(), json!(e.revision));
    obj.insert("index".into(), json!(e.index));
    if let Some(h) = &e.hlc {
        obj.insert(
            "hlc".into(),
            json!({"wall_ns": h.wall_ns, "logical": h.logical, "node": h.node}),
        );
    }
    obj.insert("op".into(), json!(op_name(e.op)));
    put_bytes(&mut obj, "key", &e.key);
    obj.insert("before_version".into(), json!(e.before_version));
    obj.insert("before".into(), e.before.as_ref().map_or(Value::Null, record_json));
    obj.insert("after".into(), e.after.as_ref().map_or(Value::Null, record_json));
    obj.insert("request_id".into(), json!(e.request_id));
    obj.insert("saga_id".into(), json!(e.saga_id));
    if e.saga_deadline_unix_ms != 0 {
        obj.insert("saga_deadline_unix_ms".into(), json!(e.saga_deadline_unix_ms));
    }
    obj.insert("compensation".into(), json!(e.compensation));
    obj.insert("trace_id".into(), json!(e.trace_id));
    obj.insert("chain_hash".into(), json!(hex(&e.chain_hash)));
    Value::Object(obj)
}

/// A binlog event as one human line.
pub fn event_text(e: &pb::BinlogEvent) -> String {
    let what = match (&e.after, e.key.is_empty()) {
        (Some(a), _) => format!("{} = {} (v{})", text(&e.key), text(&a.value), a.version),
        (None, false) => format!("{} (was v{})", text(&e.key), e.before_version),
        (None, true) => format!("saga {}", e.saga_id),
    };
    let comp = if e.compensation { " compensation" } else { "" };
    format!(
        "{}.{} {} {what}{comp} hlc={} chain={}",
        e.revision,
        e.index,
        op_name(e.op),
        hlc_text(e.hlc.as_ref()),
        &hex(&e.chain_hash)[..8.min(e.chain_hash.len() * 2)]
    )
}

fn print_event(e: &pb::BinlogEvent, as_json: bool) {
    if as_json {
        println!("{}", event_json(e));
    } else {
        println!("{}", event_text(e));
    }
}

fn stream_error(e: StreamError) -> CliError {
    match e {
        StreamError::Compacted { .. } => CliError::bad_input(e),
        StreamError::Client(c) => client_error(c),
    }
}

/// Run `meridian binlog`.
pub fn run(args: BinlogArgs) -> CliResult {
    let BinlogCommand::Tail {
        endpoint,
        from_revision,
        prefix,
        include_saga_events,
        limit,
        window,
        text,
        config,
    } = args.command;
    let security = args.security;
    if window > MAX_WINDOW {
        return Err(CliError::bad_input(anyhow!("--window must be at most {MAX_WINDOW}")));
    }
    if limit == Some(0) {
        return Err(CliError::bad_input(anyhow!("--limit must be >= 1")));
    }
    let endpoints: Vec<String> = endpoint.into_iter().collect();
    let config = client_config(&endpoints, config.as_deref(), None, &security)?;
    let addr =
        config.endpoints.first().cloned().ok_or_else(|| {
            CliError::bad_input(anyhow!("no endpoint: pass --endpoint HOST:PORT"))
        })?;
    let client = Client::connect(config).map_err(CliError::bad_input)?;
    let options = SubscribeOptions {
        from_revision,
        prefix: prefix.unwrap_or_default().into_bytes(),
        window_events: window,
        include_saga_events,
    };
    runtime()?.block_on(async move {
        let mut sub = client.subscribe(&addr, options).await.map_err(stream_error)?;
        let mut printed = 0u64;
        loop {
            let Some(msg) = sub.next().await.map_err(stream_error)? else {
                return Ok(());
            };
            for e in &msg.events {
                print_event(e, !text);
                printed += 1;
                if limit.is_some_and(|l| printed >= l) {
                    return Ok(());
                }
            }
            if let Some(last) = msg.events.last() {
                sub.ack(last.revision, last.index).await.map_err(stream_error)?;
            }
        }
    })
}

/// `meridian kv watch`: stream changes from the first endpoint.
pub async fn watch(
    client: &Client,
    options: WatchOptions,
    limit: Option<u64>,
    as_json: bool,
) -> CliResult {
    if limit == Some(0) {
        return Err(CliError::bad_input(anyhow!("--limit must be >= 1")));
    }
    let addr = client
        .config()
        .endpoints
        .first()
        .cloned()
        .ok_or_else(|| CliError::bad_input(anyhow!("no endpoint configured")))?;
    let mut stream = client.watch(&addr, options).await.map_err(stream_error)?;
    let mut printed = 0u64;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| stream_error(crate::client::binlog::stream_error(&s, &addr)))?;
        let Some(msg) = msg else { return Ok(()) };
        for e in &msg.events {
            print_event(e, as_json);
            printed += 1;
            if limit.is_some_and(|l| printed >= l) {
                return Ok(());
            }
        }
    }
}

fn saga_state(s: i32) -> &'static str {
    match pb::SagaState::try_from(s) {
        Ok(pb::SagaState::Open) => "open",
        Ok(pb::SagaState::Committed) => "committed",
        Ok(pb::SagaState::Aborted) => "aborted",
        _ => "unspecified",
    }
}

fn print_records(title: &str, records: &[pb::Record]) {
    for r in records {
        println!("{title} {} = {} [{}]", text(&r.key), text(&r.value), status_text(r));
        println!("{}", meta_line(r));
    }
}

/// Run `meridian saga`.
pub fn run_saga(args: SagaArgs) -> CliResult {
    let config = client_config(&args.endpoints, None, args.timeout, &args.security)?;
    let client = Client::connect(config).map_err(CliError::bad_input)?;
    let json_out = args.json;
    runtime()?.block_on(async move {
        match args.command {
            SagaCommand::Open { id, deadline, request_id } => {
                let options = SagaOptions { request_id, ..Default::default() };
                let r = client.open_saga(&id, deadline, options).await.map_err(client_error)?;
                if json_out {
                    println!(
                        "{}",
                        json!({"saga_id": id, "deadline_unix_ms": r.deadline_unix_ms, "duplicate": r.duplicate})
                    );
                } else {
                    println!("saga {id} open until {} (unix ms)", r.deadline_unix_ms);
                }
            }
            SagaCommand::Commit { id, request_id } => {
                let options = SagaOptions { request_id, ..Default::default() };
                let r = client.commit_saga(&id, options).await.map_err(client_error)?;
                if json_out {
                    let records: Vec<Value> = r.records.iter().map(record_json).collect();
                    println!("{}", json!({"saga_id": id, "state": "committed", "records": records, "duplicate": r.duplicate}));
                } else {
                    println!("saga {id} committed ({} records)", r.records.len());
                    print_records("committed", &r.records);
                }
            }
            SagaCommand::Abort { id, reason, request_id } => {
                let options = SagaOptions { request_id, ..Default::default() };
                let r = client.abort_saga(&id, &reason, options).await.map_err(client_error)?;
                if json_out {
                    let compensated: Vec<Value> = r.compensated.iter().map(record_json).collect();
                    let conflicts: Vec<Value> = r
                        .conflicts
                        .iter()
                        .map(|c| {
                            let mut v = serde_json::Map::new();
                            put_bytes(&mut v, "key", &c.key);
                            v.insert("saga_version".into(), json!(c.saga_version));
                            v.insert("current".into(), c.current.as_ref().map_or(Value::Null, record_json));
                            Value::Object(v)
                        })
                        .collect();
                    println!("{}", json!({"saga_id": id, "state": "aborted", "compensated": compensated, "conflicts": conflicts, "duplicate": r.duplicate}));
                } else {
                    println!(
                        "saga {id} aborted: {} restored, {} conflicts",
                        r.compensated.len(),
                        r.conflicts.len()
                    );
                    print_records("restored", &r.compensated);
                    for c in &r.conflicts {
                        println!(
                            "conflict {}: saga wrote v{}, now {}",
                            text(&c.key),
                            c.saga_version,
                            c.current.as_ref().map_or("absent".to_string(), |r| format!("v{}", r.version))
                        );
                    }
                }
            }
            SagaCommand::Get { id } => {
                let r = client.get_saga(&id).await.map_err(client_error)?;
                if !r.found {
                    if json_out {
                        println!("{}", json!({"saga_id": id, "found": false}));
                    }
                    return Err(CliError::failure(anyhow!("saga {id:?} not found")));
                }
                if json_out {
                    let steps: Vec<Value> = r
                        .steps
                        .iter()
                        .map(|s| {
                            let mut v = serde_json::Map::new();
                            put_bytes(&mut v, "key", &s.key);
                            v.insert("revision".into(), json!(s.revision));
                            v.insert("before".into(), s.before.as_ref().map_or(Value::Null, record_json));
                            v.insert("after_version".into(), json!(s.after_version));
                            Value::Object(v)
                        })
                        .collect();
                    println!("{}", json!({"saga_id": id, "found": true, "state": saga_state(r.state), "deadline_unix_ms": r.deadline_unix_ms, "steps": steps, "abort_reason": r.abort_reason}));
                } else {
                    println!(
                        "saga {id}: {} deadline={} (unix ms) steps={}",
                        saga_state(r.state),
                        r.deadline_unix_ms,
                        r.steps.len()
                    );
                    for (n, s) in r.steps.iter().enumerate() {
                        println!(
                            "  step {n}: {} at revision {} -> v{} (before: {})",
                            text(&s.key),
                            s.revision,
                            s.after_version,
                            s.before.as_ref().map_or("absent".to_string(), |b| format!("v{}", b.version))
                        );
                    }
                    if !r.abort_reason.is_empty() {
                        println!("  abort reason: {}", r.abort_reason);
                    }
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_bytes_like_kv_get_json() {
        let e = pb::BinlogEvent {
            revision: 3,
            key: vec![0xff, 0x00],
            op: pb::BinlogOp::Delete as i32,
            chain_hash: vec![0xab; 16],
            ..Default::default()
        };
        let v = event_json(&e);
        assert_eq!(v["op"], "DELETE");
        assert_eq!(v["key_base64"], "/wA=");
        assert_eq!(v["chain_hash"], "ab".repeat(16));
        assert!(event_text(&e).starts_with("3.0 DELETE"));
    }
}

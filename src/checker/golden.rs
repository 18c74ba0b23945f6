//! Golden scripts for the checker's rules: testdata/checker/*.txt.
//!
//! Each file is a script, a `----` line, then the expected output: every script line
//! that produced findings, echoed as `> line`, followed by one JSON finding per line.
//! `UPDATE_GOLDEN=1 cargo test --lib checker::golden` rewrites the expected part.
//!
//! Script lines (`#` starts a comment):
//! - `config replicas=3 grace=2000 lag_ms=10000 lag_revs=10000` (first, optional)
//! - `invariant PREFIX TOTAL` (sum invariant; before any event)
//! - `ev nK REV.IDX OP [key=K] [bv=N] [before=VER:VALUE|none] [after=VER:VALUE]
//!   [hlc=MS[.LOGICAL]] [hash=H] [saga=ID] [deadline=MS] [rid=R] [comp] [applied=N]`
//!   where OP is put, del, saga_open, saga_commit, saga_abort; `nK` is the endpoint,
//!   served by node K; a `bv > 0` without `before=` gets a before record at that version
//! - `now MS` sets the clock; `tick` checks saga deadlines; `idle nK applied=N`;
//!   `lost nK oldest=REV`; `flush`; `resub nK` (a stream reopened at the cursor); `anchor I REV SUM`;
//!   `comp SAGA compensated=N [conflict=KEY:SAGA_VERSION:CURRENT_VERSION:VALUE]...`

use std::path::{Path, PathBuf};

use super::core::{Checker, CheckerConfig, StepConflict};
use super::event::{Event, Op, Position, RecordView, Stamp};
use super::finding::Finding;
use super::invariant::InvariantConfig;

struct Script {
    checker: Option<Checker>,
    config: CheckerConfig,
    now_ms: u64,
}

fn fields(words: &[&str]) -> std::collections::BTreeMap<String, String> {
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse().unwrap_or_else(|_| panic!("bad {what}: {s:?}"))
}

fn record(spec: &str) -> Option<RecordView> {
    if spec == "none" {
        return None;
    }
    let (version, value) = spec.split_once(':').unwrap_or((spec, ""));
    Some(RecordView {
        value: value.as_bytes().to_vec(),
        version: num(version, "version"),
        revision: 0,
    })
}

fn node_of(endpoint: &str) -> u64 {
    num(endpoint.trim_start_matches('n'), "endpoint nK")
}

fn parse_event(words: &[&str]) -> Event {
    let (rev, idx) = words[1].split_once('.').expect("REV.IDX");
    let op = match words[2] {
        "put" => Op::Put,
        "del" => Op::Delete,
        "saga_open" => Op::SagaOpen,
        "saga_commit" => Op::SagaCommit,
        "saga_abort" => Op::SagaAbort,
        other => panic!("unknown op {other}"),
    };
    let f = fields(&words[3..]);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let bv: u64 = f.get("bv").map_or(0, |v| num(v, "bv"));
    let before = match f.get("before") {
        Some(spec) => record(spec),
        None if bv > 0 => Some(RecordView { value: Vec::new(), version: bv, revision: 0 }),
        None => None,
    };
    let hlc = f.get("hlc").map_or(Stamp::default(), |h| {
        let (ms, logical) = h.split_once('.').unwrap_or((h, "0"));
        Stamp { wall_ns: num::<u64>(ms, "hlc") * 1_000_000, logical: num(logical, "logical") }
    });
    Event {
        pos: Position::new(num(rev, "revision"), num(idx, "index")),
        hlc,
        key: get("key").into_bytes(),
        op,
        before_version: bv,
        before,
        after: f.get("after").and_then(|s| record(s)),
        request_id: get("rid"),
        saga_id: get("saga"),
        saga_deadline_unix_ms: f.get("deadline").map_or(0, |d| num(d, "deadline")),
        chain_hash: get("hash").into_bytes(),
        compensation: f.contains_key("comp"),
    }
}

impl Script {
    fn checker(&mut self) -> &mut Checker {
        let config = self.config.clone();
        self.checker.get_or_insert_with(|| Checker::new(config))
    }

    fn run_line(&mut self, line: &str) -> Vec<Finding> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let f = fields(&words[1..]);
        match words[0] {
            "config" => {
                assert!(self.checker.is_none(), "config must come first");
                if let Some(v) = f.get("replicas") {
                    self.config.replicas = num(v, "replicas");
                }
                if let Some(v) = f.get("grace") {
                    self.config.saga_grace_ms = num(v, "grace");
                }
                if let Some(v) = f.get("lag_ms") {
                    self.config.lag_threshold_ms = num(v, "lag_ms");
                }
                if let Some(v) = f.get("lag_revs") {
                    self.config.lag_threshold_revisions = num(v, "lag_revs");
                }
                Vec::new()
            }
            "invariant" => {
                assert!(self.checker.is_none(), "invariants come before events");
                self.config.invariants.push(InvariantConfig {
                    kind: "sum".into(),
                    name: None,
                    prefix: words[1].to_string(),
                    total: num(words[2], "total"),
                    initial_scan: false,
                });
                Vec::new()
            }
            "ev" => {
                let event = parse_event(&words[1..]);
                let applied = f.get("applied").map_or(event.pos.revision, |a| num(a, "applied"));
                let now = self.now_ms;
                let endpoint = words[1];
                self.checker().observe(endpoint, node_of(endpoint), &[event], applied, now).findings
            }
            "now" => {
                self.now_ms = num(words[1], "now");
                Vec::new()
            }
            "tick" => {
                let now = self.now_ms;
                let (findings, compensate) = self.checker().tick(now);
                assert_eq!(findings.len(), compensate.len(), "fresh sagas are all compensated");
                findings
            }
            "idle" => {
                let applied = num(f.get("applied").expect("applied="), "applied");
                self.checker().idle(words[1], node_of(words[1]), applied)
            }
            "lost" => {
                let oldest = num(f.get("oldest").expect("oldest="), "oldest");
                vec![self.checker().events_lost(words[1], oldest)]
            }
            "flush" => self.checker().flush(),
            "resub" => {
                self.checker().resubscribed(words[1]);
                Vec::new()
            }
            "anchor" => {
                let (i, rev, sum) =
                    (num(words[1], "i"), num(words[2], "rev"), num(words[3], "sum"));
                self.checker().anchor(i, rev, sum);
                Vec::new()
            }
            "comp" => {
                let saga = words[1];
                let compensated = num(f.get("compensated").map_or("0", String::as_str), "n");
                let conflicts: Vec<StepConflict> = words[2..]
                    .iter()
                    .filter_map(|w| w.strip_prefix("conflict="))
                    .map(|c| {
                        let parts: Vec<&str> = c.splitn(4, ':').collect();
                        StepConflict {
                            key: parts[0].as_bytes().to_vec(),
                            saga_version: num(parts[1], "saga version"),
                            current_version: Some(num(parts[2], "current version")),
                            current_value: parts.get(3).map(|v| v.as_bytes().to_vec()),
                            current_revision: 0,
                        }
                    })
                    .collect();
                let now = self.now_ms;
                let checker = self.checker();
                checker.compensation_started(saga, now);
                checker.compensation_finished(saga, compensated, &conflicts, "", now)
            }
            other => panic!("unknown script command {other:?}"),
        }
    }
}

/// Run a script; the output as the golden file holds it.
pub fn run_script(script: &str) -> String {
    let mut s = Script { checker: None, config: CheckerConfig::new(3), now_ms: 0 };
    let mut out = String::new();
    for line in script.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let findings = s.run_line(line);
        if findings.is_empty() {
            continue;
        }
        out.push_str(&format!("> {line}\n"));
        for f in findings {
            out.push_str(&serde_json::to_string(&f).expect("finding encodes"));
            out.push('\n');
        }
    }
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/checker")
}

#[test]
fn golden_scripts_match() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("testdata/checker exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "golden scripts missing: {files:?}");
    let mut failed = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let (script, expected) = text.split_once("\n----\n").unwrap_or((text.as_str(), ""));
        let actual = run_script(script);
        if update {
            std::fs::write(&path, format!("{script}\n----\n{actual}")).expect("writable");
        } else if actual != expected {
            failed
                .push(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", path.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}",
        failed.join("\n")
    );
}

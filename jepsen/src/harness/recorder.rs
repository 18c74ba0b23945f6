//! The run's history as it happens: client and nemesis events in real-time order.
//!
//! Invariant: [`Recorder::push`] stamps and appends under one lock, so the order of the
//! recorded events is their real-time order and `time_ns` never decreases. A client
//! records its invocation *before* it sends the request and its completion *after* the
//! answer (or the timeout), so "A completed before B was invoked" in the record implies
//! it in reality: exactly what the linearizability checker relies on.
//!
//! Writers: [`to_jsonl`] and [`to_edn`] emit one event per line, nemesis events
//! included (`process` `"nemesis"` / `:nemesis`, which the checker's readers skip), so
//! `meridian-jepsen check history.jsonl` re-checks a register run. Register events use
//! the checker's shapes (EDN: Jepsen's independent tuples `[key value]`); bank events
//! carry maps (`{:from 0, :to 1, :amount 3}`, `{0 100, 1 98, ...}`).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value as Json;

use crate::format::edn::write_string;
use crate::history::{Event, EventType, Function, History, HistoryError, ProcessId, Value};

/// Who produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A client process (Jepsen numbering: worker `w` runs processes `w, w + C, w + 2C, ...`).
    Client(u64),
    /// The fault injector.
    Nemesis,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Who.
    pub actor: Actor,
    /// invoke / ok / fail / info (nemesis events are `info`).
    pub kind: EventType,
    /// The function: `read`, `write`, `cas`, `transfer`, `start-kill`, ...
    pub f: String,
    /// The register key, for register events.
    pub key: Option<String>,
    /// The value (shape per workload; see the module docs).
    pub value: Json,
    /// Nanoseconds since the recorder started.
    pub time_ns: u64,
    /// Why a `fail` / `info` ended so (error code and message).
    pub error: Option<String>,
    /// The node a client process is bound to.
    pub node: Option<u64>,
}

/// The history being recorded. See the module docs.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Record>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self { start: Instant::now(), events: Mutex::new(Vec::new()) }
    }

    /// When the recorder started (time 0 of every event).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stamp `record` with the current time and append it; returns its time.
    pub fn push(&self, mut record: Record) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        record.time_ns = self.now_ns();
        let time = record.time_ns;
        events.push(record);
        time
    }

    /// A nemesis event (`info`, `f` such as `start-partition`, a description).
    pub fn nemesis(&self, f: &str, value: Json) -> u64 {
        self.push(Record {
            actor: Actor::Nemesis,
            kind: EventType::Info,
            f: f.to_string(),
            key: None,
            value,
            time_ns: 0,
            error: None,
            node: None,
        })
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<Record> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The register history the checker reads: client events only, `line` = the event's
/// line in `history.jsonl` (nemesis lines counted), so reports point into the file.
pub fn register_history(records: &[Record]) -> Result<History, HistoryError> {
    let mut events = Vec::new();
    for (index, r) in records.iter().enumerate() {
        let Actor::Client(process) = r.actor else { continue };
        let line = index + 1;
        let f = Function::from_name(&r.f).ok_or_else(|| HistoryError::BadValue {
            line,
            detail: format!("unknown register function {:?}", r.f),
        })?;
        let value = register_value(&r.value).ok_or_else(|| HistoryError::BadValue {
            line,
            detail: format!("value {} is not a register value", r.value),
        })?;
        events.push(Event {
            process: ProcessId(process),
            kind: r.kind,
            f,
            key: r.key.clone(),
            value,
            time_ns: Some(r.time_ns),
            line,
        });
    }
    History::from_events(events)
}

fn register_value(json: &Json) -> Option<Value> {
    let scalar = |j: &Json| match j {
        Json::Null => Some(None),
        Json::Number(n) => n.as_i64().map(Some),
        _ => None,
    };
    match json {
        Json::Array(pair) => match pair.as_slice() {
            [a, b] => Some(Value::Pair(scalar(a)?, scalar(b)?)),
            _ => None,
        },
        other => Some(scalar(other)?.map_or(Value::Nil, Value::Int)),
    }
}

fn process_json(actor: Actor) -> Json {
    match actor {
        Actor::Client(p) => Json::from(p),
        Actor::Nemesis => Json::from("nemesis"),
    }
}

/// JSON lines: `{"process":3,"type":"ok","f":"read","key":"k0","value":5,"time":12,
/// "node":2}` (+ `"error"` on fail / info).
pub fn to_jsonl(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        let mut map = serde_json::Map::new();
        map.insert("process".into(), process_json(r.actor));
        map.insert("type".into(), Json::from(r.kind.name()));
        map.insert("f".into(), Json::from(r.f.clone()));
        if let Some(k) = &r.key {
            map.insert("key".into(), Json::from(k.clone()));
        }
        map.insert("value".into(), r.value.clone());
        map.insert("time".into(), Json::from(r.time_ns));
        if let Some(n) = r.node {
            map.insert("node".into(), Json::from(n));
        }
        if let Some(e) = &r.error {
            map.insert("error".into(), Json::from(e.clone()));
        }
        out.push_str(&Json::Object(map).to_string());
        out.push('\n');
    }
    out
}

/// Jepsen EDN, one map per line (see the module docs).
pub fn to_edn(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        let process = match r.actor {
            Actor::Client(p) => p.to_string(),
            Actor::Nemesis => ":nemesis".to_string(),
        };
        let _ = write!(out, "{{:process {process}, :type :{}, :f :{}, :value ", r.kind.name(), r.f);
        match &r.key {
            Some(k) => {
                out.push('[');
                write_string(&mut out, k);
                out.push(' ');
                edn_value(&mut out, &r.value);
                out.push(']');
            }
            None => edn_value(&mut out, &r.value),
        }
        let _ = write!(out, ", :time {}", r.time_ns);
        if let Some(n) = r.node {
            let _ = write!(out, ", :node {n}");
        }
        if let Some(e) = &r.error {
            out.push_str(", :error ");
            write_string(&mut out, e);
        }
        out.push_str("}\n");
    }
    out
}

/// A JSON value as EDN: objects become maps whose integer-like keys are integers and
/// other keys keywords (when they are valid keyword names) or strings.
fn edn_value(out: &mut String, json: &Json) {
    match json {
        Json::Null => out.push_str("nil"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                edn_value(out, item);
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if k.parse::<i64>().is_ok() {
                    out.push_str(k);
                } else if is_keyword_name(k) {
                    out.push(':');
                    out.push_str(k);
                } else {
                    write_string(out, k);
                }
                out.push(' ');
                edn_value(out, v);
            }
            out.push('}');
        }
    }
}

fn is_keyword_name(k: &str) -> bool {
    k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '?' | '!'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_edn, parse_jsonl};
    use serde_json::json;

    fn client(p: u64, kind: EventType, f: &str, key: &str, value: Json) -> Record {
        Record {
            actor: Actor::Client(p),
            kind,
            f: f.into(),
            key: Some(key.into()),
            value,
            time_ns: 0,
            error: None,
            node: Some(1),
        }
    }

    fn sample() -> Recorder {
        let r = Recorder::new();
        r.push(client(0, EventType::Invoke, "write", "k0", json!(1)));
        r.nemesis("start-partition", json!("isolate-leader [1] | [2, 3]"));
        r.push(client(0, EventType::Ok, "write", "k0", json!(1)));
        r.push(client(1, EventType::Invoke, "cas", "k0", json!([1, 2])));
        let mut info = client(1, EventType::Info, "cas", "k0", json!([1, 2]));
        info.error = Some("DEADLINE_EXCEEDED: \"slow\"\nline".into());
        r.push(info);
        r.push(client(2, EventType::Invoke, "read", "k0", Json::Null));
        r.push(client(2, EventType::Ok, "read", "k0", json!(2)));
        r.nemesis("stop-partition", json!({"healed": true}));
        r
    }

    #[test]
    fn times_never_decrease_and_order_is_kept() {
        let events = sample().snapshot();
        assert_eq!(events.len(), 8);
        assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        assert_eq!(events[1].actor, Actor::Nemesis);
    }

    #[test]
    fn both_writers_parse_back_to_the_checkers_history_with_nemesis_lines_skipped() {
        let events = sample().snapshot();
        let direct = register_history(&events).expect("valid");
        assert_eq!(direct.ops().len(), 3);
        // line numbers count the nemesis line.
        assert_eq!(direct.events()[1].line, 3);
        let from_jsonl = parse_jsonl(&to_jsonl(&events)).expect("jsonl parses");
        assert_eq!(from_jsonl, direct);
        let from_edn = parse_edn(&to_edn(&events)).expect("edn parses");
        assert_eq!(from_edn.ops(), direct.ops());
    }

    #[test]
    fn bank_values_become_edn_maps() {
        let mut out = String::new();
        edn_value(&mut out, &json!({"0": 10, "1": 90}));
        assert_eq!(out, "{0 10, 1 90}");
        let mut out = String::new();
        edn_value(&mut out, &json!({"from": 0, "to": 1, "amount": 3}));
        assert!(out.starts_with('{') && out.ends_with('}'), "{out}");
        for part in [":from 0", ":to 1", ":amount 3"] {
            assert!(out.contains(part), "{out}");
        }
    }
}

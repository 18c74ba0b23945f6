//! JSON lines: one event object per line.
//!
//! `{"process":3,"type":"invoke","f":"cas","key":"k1","value":[1,2],"time":1712}`
//!
//! - `process`: non-negative integer; a string (e.g. `"nemesis"`) or null marks a non-client
//!   event, which is skipped;
//! - `type`: `invoke` | `ok` | `fail` | `info`; `f`: `read` | `write` | `cas`;
//! - `key`: optional string or integer (integers become their decimal string); absent in a
//!   single-register history, and optional on a completion (it inherits its invocation's);
//! - `value`: null, an integer, or for CAS `[expected, new]` (each an integer or null); a
//!   read's value is null on invoke and the value read on `ok`;
//! - `time`: optional, non-negative integer nanoseconds.
//!
//! Blank lines are skipped; other fields are ignored.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::ParseError;
use crate::history::{Event, EventType, Function, History, ProcessId, Value};

/// Parses a JSON-lines history; the error names the first bad line.
pub fn parse_jsonl(input: &str) -> Result<History, ParseError> {
    let mut events = Vec::new();
    for (index, text) in input.lines().enumerate() {
        let line = index + 1;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let json: Json = serde_json::from_str(text)
            .map_err(|e| ParseError::syntax(line, format!("invalid JSON: {e}")))?;
        if let Some(event) = event_from_json(&json, line)? {
            events.push(event);
        }
    }
    Ok(History::from_events(events)?)
}

/// Converts one JSON object; `None` for a non-client (nemesis) event.
fn event_from_json(json: &Json, line: usize) -> Result<Option<Event>, ParseError> {
    let err = |message: String| ParseError::syntax(line, message);
    let Json::Object(map) = json else {
        return Err(err("expected a JSON object".into()));
    };
    let process = match map.get("process") {
        Some(Json::Number(n)) => match n.as_u64() {
            Some(p) => ProcessId(p),
            None => return Err(err(format!("process must be a non-negative integer, got {n}"))),
        },
        Some(Json::String(_) | Json::Null) => return Ok(None),
        Some(other) => return Err(err(format!("process must be an integer, got {other}"))),
        None => return Err(err("missing field \"process\"".into())),
    };
    let kind = match map.get("type") {
        Some(Json::String(s)) => EventType::from_name(s)
            .ok_or_else(|| err(format!("unknown type {s:?}: expected invoke, ok, fail or info")))?,
        Some(other) => return Err(err(format!("type must be a string, got {other}"))),
        None => return Err(err("missing field \"type\"".into())),
    };
    let f = match map.get("f") {
        Some(Json::String(s)) => Function::from_name(s)
            .ok_or_else(|| err(format!("unknown f {s:?}: expected read, write or cas")))?,
        Some(other) => return Err(err(format!("f must be a string, got {other}"))),
        None => return Err(err("missing field \"f\"".into())),
    };
    let key = match map.get("key") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(other) => return Err(err(format!("key must be a string or integer, got {other}"))),
    };
    let value = match map.get("value") {
        None => Value::Nil,
        Some(v) => value_from_json(v).map_err(err)?,
    };
    let time_ns = match map.get("time") {
        None | Some(Json::Null) => None,
        Some(Json::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| err(format!("time must be a non-negative integer (ns), got {n}")))?,
        ),
        Some(other) => return Err(err(format!("time must be an integer, got {other}"))),
    };
    Ok(Some(Event { process, kind, f, key, value, time_ns, line }))
}

fn scalar_from_json(json: &Json) -> Result<Option<i64>, String> {
    match json {
        Json::Null => Ok(None),
        Json::Number(n) => {
            n.as_i64().map(Some).ok_or_else(|| format!("value {n} is not a 64-bit integer"))
        }
        other => Err(format!("value must be null or an integer, got {other}")),
    }
}

fn value_from_json(json: &Json) -> Result<Value, String> {
    match json {
        Json::Array(items) => match items.as_slice() {
            [a, b] => Ok(Value::Pair(scalar_from_json(a)?, scalar_from_json(b)?)),
            _ => Err(format!("a value list must be [expected, new], got {json}")),
        },
        other => Ok(scalar_from_json(other)?.map_or(Value::Nil, Value::Int)),
    }
}

fn scalar_to_json(v: Option<i64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// Writes `history` as JSON lines, one event per line, in history order.
pub fn write_jsonl(history: &History) -> String {
    let mut out = String::new();
    for event in history.events() {
        let _ = write!(
            out,
            "{{\"process\":{},\"type\":\"{}\",\"f\":\"{}\"",
            event.process,
            event.kind.name(),
            event.f.name()
        );
        if let Some(key) = &event.key {
            let _ = write!(out, ",\"key\":{}", Json::String(key.clone()));
        }
        let value = match event.value {
            Value::Nil => "null".to_owned(),
            Value::Int(v) => v.to_string(),
            Value::Pair(a, b) => format!("[{},{}]", scalar_to_json(a), scalar_to_json(b)),
        };
        let _ = write!(out, ",\"value\":{value}");
        if let Some(t) = event.time_ns {
            let _ = write!(out, ",\"time\":{t}");
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome};

    #[test]
    fn parses_the_documented_example() {
        let h = parse_jsonl(
            r#"{"process":3,"type":"invoke","f":"cas","key":"k1","value":[1,2],"time":1712}
{"process":3,"type":"ok","f":"cas","key":"k1","value":[1,2],"time":1800}"#,
        )
        .expect("valid");
        let op = &h.ops()[0];
        assert_eq!(op.key.as_deref(), Some("k1"));
        assert_eq!(op.kind, OpKind::Cas { expected: Some(1), new: Some(2) });
        assert_eq!(op.outcome, Outcome::Ok);
        assert_eq!(h.events()[0].time_ns, Some(1712));
    }

    #[test]
    fn nemesis_events_and_blank_lines_are_skipped() {
        let h = parse_jsonl(
            "\n{\"process\":\"nemesis\",\"type\":\"info\",\"f\":\"start\"}\n\n\
             {\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\n",
        )
        .expect("valid");
        assert_eq!(h.events().len(), 1);
        assert_eq!(h.events()[0].line, 4);
    }

    #[test]
    fn malformed_json_names_its_line() {
        let err = parse_jsonl(
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\n{\"process\":",
        )
        .expect_err("malformed");
        assert_eq!(err.line(), 2);
        assert!(err.to_string().starts_with("line 2: invalid JSON"), "{err}");
    }

    #[test]
    fn unknown_function_is_rejected_with_its_line() {
        let err = parse_jsonl("{\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[]}")
            .expect_err("unknown f");
        assert_eq!(err.to_string(), "line 1: unknown f \"txn\": expected read, write or cas");
    }

    #[test]
    fn history_errors_surface_with_their_line() {
        let err = parse_jsonl("{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":1}")
            .expect_err("completion without invoke");
        assert_eq!(err.line(), 1);
    }

    #[test]
    fn fractional_value_is_rejected() {
        let err = parse_jsonl("{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"value\":1.5}")
            .expect_err("float");
        assert!(err.to_string().contains("not a 64-bit integer"), "{err}");
    }

    #[test]
    fn integer_keys_become_strings() {
        let h = parse_jsonl(
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":7,\"value\":1}",
        )
        .expect("valid");
        assert_eq!(h.ops()[0].key.as_deref(), Some("7"));
    }

    #[test]
    fn written_history_parses_back_identically() {
        let text = r#"{"process":0,"type":"invoke","f":"write","key":"a\"b","value":1,"time":5}
{"process":1,"type":"invoke","f":"cas","value":[null,2]}
{"process":0,"type":"ok","f":"write","value":1}
{"process":1,"type":"info","f":"cas","value":[null,2]}
"#;
        let h = parse_jsonl(text).expect("valid");
        assert_eq!(write_jsonl(&h), text);
        assert_eq!(parse_jsonl(&write_jsonl(&h)).expect("valid"), h);
    }
}

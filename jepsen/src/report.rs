//! Reports of a check: results as JSON, and a self-contained HTML timeline of the failure.
//!
//! The JSON report is the [`CheckResult`] with operation ids expanded into the operations
//! themselves (process, f, value, outcome, lines and times), so it can be read without the
//! history. The HTML page has no external assets and no script: inline CSS, one inline SVG
//! timeline per failing key, one lane per process, the failing window's operations
//! highlighted and the stuck operation outlined. Both are bounded: at most
//! [`MAX_HTML_KEYS`] timelines of at most [`MAX_TIMELINE_OPS`] operations each.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::check::{CheckResult, Failure, KeyResult, Verdict};
use crate::history::{History, Key, Op, OpId, OpKind, Outcome, ProcessId};
use crate::wgl::UnknownReason;

/// Failing keys drawn as timelines in the HTML report; the rest are listed only.
pub const MAX_HTML_KEYS: usize = 8;

/// Operations drawn in one timeline (the window first, then context around it).
pub const MAX_TIMELINE_OPS: usize = 300;

/// Operations of the key drawn before and after the window for context.
pub const CONTEXT_OPS: usize = 6;

/// Rows in the HTML per-key table.
pub const MAX_HTML_TABLE_ROWS: usize = 200;

/// Pixels per distinct event position on the timeline's x axis.
const PX_PER_EVENT: usize = 26;

/// Height of one process lane in pixels.
const LANE_PX: usize = 30;

/// Width of the lane labels in pixels.
const LABEL_PX: usize = 70;

/// An operation as the reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpReport {
    /// Index in the history's operations.
    pub id: OpId,
    /// The process that ran it.
    pub process: ProcessId,
    /// Its key.
    pub key: Option<Key>,
    /// Function and values.
    #[serde(flatten)]
    pub kind: OpKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Source line of the invocation.
    pub invoke_line: usize,
    /// Source line of the completion.
    pub complete_line: Option<usize>,
    /// Time of the invocation in ns, if recorded.
    pub invoke_time_ns: Option<u64>,
    /// Time of the completion in ns, if recorded.
    pub complete_time_ns: Option<u64>,
}

impl OpReport {
    fn new(history: &History, op: &Op) -> Self {
        let events = history.events();
        let invoke = &events[op.invoke_event];
        let complete = op.complete_event.map(|i| &events[i]);
        OpReport {
            id: op.id,
            process: op.process,
            key: op.key.clone(),
            kind: op.kind,
            outcome: op.outcome,
            invoke_line: invoke.line,
            complete_line: complete.map(|e| e.line),
            invoke_time_ns: invoke.time_ns,
            complete_time_ns: complete.and_then(|e| e.time_ns),
        }
    }
}

/// A point of the history as the reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EventRef {
    /// Index in the history's events.
    pub event: usize,
    /// Its source line.
    pub line: usize,
    /// Its time in ns, if recorded.
    pub time_ns: Option<u64>,
}

impl EventRef {
    fn new(history: &History, event: usize) -> Self {
        let e = &history.events()[event];
        EventRef { event, line: e.line, time_ns: e.time_ns }
    }
}

/// The longest linearizable prefix of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrefixReport {
    /// Operations of the key that completed `ok` within it.
    pub ok_ops: usize,
    /// Its last event (`None`: the empty prefix).
    pub end: Option<EventRef>,
}

/// A failure with its operations expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureReport {
    /// The operation whose completion first makes the key's history non-linearizable.
    pub stuck_op: OpReport,
    /// The longest linearizable prefix.
    pub linearizable_prefix: PrefixReport,
    /// First event of the smallest failing window.
    pub window_start: EventRef,
    /// Last event of the window (the stuck operation's completion).
    pub window_end: EventRef,
    /// The window's operations, in invocation order.
    pub window: Vec<OpReport>,
    /// Whether the analysis finished within budget (else the window may not be minimal).
    pub analysis_complete: bool,
}

/// One key's result with its failure expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    /// The key (`None`: single register).
    pub key: Option<Key>,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its operations (all outcomes).
    pub op_count: usize,
    /// Memoised configurations of its search.
    pub cache_entries: usize,
    /// Why it is unknown, if it is.
    pub unknown_reason: Option<UnknownReason>,
    /// Why it is not linearizable, if it is not.
    pub failure: Option<FailureReport>,
}

/// The JSON report of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The overall verdict.
    pub verdict: Verdict,
    /// The model (`register` or `cas-register`).
    pub model: String,
    /// Operations in the history.
    pub op_count: usize,
    /// Keys in the history.
    pub key_count: usize,
    /// Wall-clock time of the check in milliseconds.
    pub elapsed_ms: u64,
    /// Per key, in key order.
    pub keys: Vec<KeyReport>,
}

fn failure_report(history: &History, failure: &Failure) -> FailureReport {
    let op = |id: OpId| OpReport::new(history, &history.ops()[id.0]);
    FailureReport {
        stuck_op: op(failure.stuck_op),
        linearizable_prefix: PrefixReport {
            ok_ops: failure.linearizable_prefix.ok_ops,
            end: failure.linearizable_prefix.end_event.map(|e| EventRef::new(history, e)),
        },
        window_start: EventRef::new(history, failure.window_start_event),
        window_end: EventRef::new(history, failure.window_end_event),
        window: failure.window.iter().map(|&id| op(id)).collect(),
        analysis_complete: failure.analysis_complete,
    }
}

fn key_report(history: &History, key: &KeyResult) -> KeyReport {
    KeyReport {
        key: key.key.clone(),
        verdict: key.verdict,
        op_count: key.op_count,
        cache_entries: key.cache_entries,
        unknown_reason: key.unknown_reason,
        failure: key.failure.as_ref().map(|f| failure_report(history, f)),
    }
}

/// Builds the JSON report of `result`, a check of `history`.
pub fn report(history: &History, result: &CheckResult) -> Report {
    Report {
        verdict: result.verdict,
        model: result.model.name().to_owned(),
        op_count: result.op_count,
        key_count: result.keys.len(),
        elapsed_ms: result.elapsed_ms,
        keys: result.keys.iter().map(|k| key_report(history, k)).collect(),
    }
}

/// The JSON report as pretty-printed text.
pub fn render_json(history: &History, result: &CheckResult) -> String {
    serde_json::to_string_pretty(&report(history, result))
        .unwrap_or_else(|e| format!("{{\"error\":\"serialising the report failed: {e}\"}}"))
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn key_label(key: Option<&str>) -> String {
    key.map_or_else(|| "(single register)".to_owned(), |k| format!("key {k:?}"))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:17px;margin-top:32px}\
.v{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}\
.linearizable{background:#2e7d32}.not-linearizable{background:#c62828}.unknown{background:#ef6c00}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}\
.tl{overflow-x:auto;border:1px solid #ddd;padding:4px;background:#fafafa}\
svg text{font:11px monospace}.lane{font:12px monospace;fill:#555}\
.legend span{display:inline-block;padding:1px 8px;margin-right:8px;border:1px solid #999}\
code{background:#f3f3f3;padding:0 3px}";

/// Renders the self-contained HTML report of `result`, a check of `history`.
pub fn render_html(history: &History, result: &CheckResult) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>meridian-jepsen: {verdict}</title><style>{STYLE}</style></head><body>\n\
         <h1>Linearizability check: <span class=\"v {verdict}\">{verdict}</span></h1>\n\
         <p>Model <code>{model}</code>, {ops} operations over {keys} key(s), checked in {ms} ms.</p>\n",
        verdict = result.verdict.name(),
        model = result.model.name(),
        ops = result.op_count,
        keys = result.keys.len(),
        ms = result.elapsed_ms,
    );
    write_key_table(&mut out, result);
    let failing: Vec<&KeyResult> = result.keys.iter().filter(|k| k.failure.is_some()).collect();
    for key in failing.iter().take(MAX_HTML_KEYS) {
        if let Some(failure) = &key.failure {
            write_failure(&mut out, history, key, failure);
        }
    }
    if failing.len() > MAX_HTML_KEYS {
        let _ = write!(
            out,
            "<p>{} more failing keys are listed in the JSON report.</p>",
            failing.len() - MAX_HTML_KEYS
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn write_key_table(out: &mut String, result: &CheckResult) {
    let mut rows: Vec<&KeyResult> = result.keys.iter().collect();
    // Problems first, then by key.
    rows.sort_by_key(|k| match k.verdict {
        Verdict::NotLinearizable => 0,
        Verdict::Unknown => 1,
        Verdict::Linearizable => 2,
    });
    out.push_str("<table><tr><th>key</th><th>verdict</th><th>ops</th><th>cache entries</th><th>note</th></tr>\n");
    for key in rows.iter().take(MAX_HTML_TABLE_ROWS) {
        let note = match (&key.unknown_reason, &key.failure) {
            (Some(reason), _) => reason.to_string(),
            (_, Some(f)) => format!("{} operations in the failing window", f.window.len()),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><span class=\"v {v}\">{v}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&key_label(key.key.as_deref())),
            key.op_count,
            key.cache_entries,
            escape(&note),
            v = key.verdict.name(),
        );
    }
    out.push_str("</table>\n");
    if rows.len() > MAX_HTML_TABLE_ROWS {
        let _ = write!(out, "<p>{} more keys omitted.</p>", rows.len() - MAX_HTML_TABLE_ROWS);
    }
}

fn describe(history: &History, id: OpId) -> String {
    let op = &history.ops()[id.0];
    let line = history.events()[op.invoke_event].line;
    format!("op {} (process {}, {}, invoked on line {line})", id.0, op.process, op.kind)
}

fn write_failure(out: &mut String, history: &History, key: &KeyResult, failure: &Failure) {
    let events = history.events();
    let _ = write!(
        out,
        "<h2>{}: not linearizable</h2>\n<p>The history of this key stops being linearizable when \
         {} completes (line {}). The longest linearizable prefix holds {} ok operations{}. \
         The {} highlighted operations (lines {}&ndash;{}) cannot be linearised on their own{}.</p>\n",
        escape(&key_label(key.key.as_deref())),
        escape(&describe(history, failure.stuck_op)),
        events[failure.window_end_event].line,
        failure.linearizable_prefix.ok_ops,
        failure
            .linearizable_prefix
            .end_event
            .map_or(String::new(), |e| format!(" and ends at line {}", events[e].line)),
        failure.window.len(),
        events[failure.window_start_event].line,
        events[failure.window_end_event].line,
        if failure.analysis_complete {
            ""
        } else {
            " (the budget ran out during the analysis: this window may not be the smallest)"
        },
    );
    out.push_str(
        "<p class=\"legend\"><span style=\"background:#ef9a9a\">failing window</span>\
         <span style=\"background:#ef9a9a;border:2px solid #b71c1c\">stuck operation</span>\
         <span style=\"background:#bbdefb\">ok</span><span style=\"background:#fff59d\">info / pending</span>\
         <span style=\"background:#e0e0e0\">fail</span></p>\n",
    );
    out.push_str("<div class=\"tl\">");
    write_timeline(out, history, key.key.as_deref(), failure);
    out.push_str("</div>\n");
}

/// The operations to draw: the window, then neighbours of the key for context, capped.
fn timeline_ops<'h>(history: &'h History, key: Option<&str>, failure: &Failure) -> Vec<&'h Op> {
    let in_window: BTreeSet<OpId> = failure.window.iter().copied().collect();
    let key_ops: Vec<&Op> = history.ops().iter().filter(|op| op.key.as_deref() == key).collect();
    let first = key_ops.iter().position(|op| in_window.contains(&op.id)).unwrap_or(0);
    let last = key_ops.iter().rposition(|op| in_window.contains(&op.id)).unwrap_or(0);
    let mut chosen: Vec<&Op> = key_ops
        .iter()
        .filter(|op| in_window.contains(&op.id))
        .copied()
        .take(MAX_TIMELINE_OPS)
        .collect();
    let context = key_ops[first.saturating_sub(CONTEXT_OPS)..first]
        .iter()
        .chain(key_ops.iter().skip(last + 1).take(CONTEXT_OPS));
    for op in context {
        if chosen.len() >= MAX_TIMELINE_OPS {
            break;
        }
        chosen.push(op);
    }
    chosen.sort_by_key(|op| op.id);
    chosen
}

fn write_timeline(out: &mut String, history: &History, key: Option<&str>, failure: &Failure) {
    let ops = timeline_ops(history, key, failure);
    let in_window: BTreeSet<OpId> = failure.window.iter().copied().collect();
    // X axis: the rank of each event position that the drawn operations use.
    let mut positions: BTreeSet<usize> = BTreeSet::new();
    for op in &ops {
        positions.insert(op.invoke_event);
        positions.extend(op.complete_event);
    }
    let x_of: BTreeMap<usize, usize> = positions
        .iter()
        .enumerate()
        .map(|(rank, &pos)| (pos, LABEL_PX + 10 + rank * PX_PER_EVENT))
        .collect();
    let lanes: BTreeMap<ProcessId, usize> = ops
        .iter()
        .map(|op| op.process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    let width = LABEL_PX + 10 + positions.len() * PX_PER_EVENT + 60;
    let height = lanes.len() * LANE_PX + 10;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">"
    );
    for (process, lane) in &lanes {
        let y = lane * LANE_PX;
        let _ = writeln!(
            out,
            "<line x1=\"{LABEL_PX}\" y1=\"{mid}\" x2=\"{width}\" y2=\"{mid}\" stroke=\"#eee\"/>\
             <text class=\"lane\" x=\"4\" y=\"{ty}\">p{process}</text>",
            mid = y + LANE_PX / 2,
            ty = y + LANE_PX / 2 + 4,
        );
    }
    for (edge, event) in
        [("window start", failure.window_start_event), ("window end", failure.window_end_event)]
    {
        if let Some(x) = x_of.get(&event) {
            let x = if edge == "window start" { x - 4 } else { x + 4 };
            let _ = writeln!(
                out,
                "<line x1=\"{x}\" y1=\"0\" x2=\"{x}\" y2=\"{height}\" stroke=\"#c62828\" \
                 stroke-dasharray=\"4 3\"><title>{edge}</title></line>"
            );
        }
    }
    for op in ops {
        write_op(out, history, op, &x_of, &lanes, width, &in_window, failure.stuck_op);
    }
    out.push_str("</svg>");
}

#[allow(clippy::too_many_arguments)]
fn write_op(
    out: &mut String,
    history: &History,
    op: &Op,
    x_of: &BTreeMap<usize, usize>,
    lanes: &BTreeMap<ProcessId, usize>,
    width: usize,
    in_window: &BTreeSet<OpId>,
    stuck: OpId,
) {
    let (Some(&x0), Some(&lane)) = (x_of.get(&op.invoke_event), lanes.get(&op.process)) else {
        return;
    };
    let open_ended = op.outcome.is_indeterminate();
    let x1 = match op.complete_event.and_then(|c| x_of.get(&c)) {
        Some(&x) if !open_ended => x,
        _ => width - 10,
    };
    let y = lane * LANE_PX + 4;
    let fill = if in_window.contains(&op.id) {
        "#ef9a9a"
    } else {
        match op.outcome {
            Outcome::Ok => "#bbdefb",
            Outcome::Fail => "#e0e0e0",
            Outcome::Info | Outcome::Pending => "#fff59d",
        }
    };
    let (stroke, stroke_width) = if op.id == stuck { ("#b71c1c", 2) } else { ("#777", 1) };
    let dash = if open_ended { " stroke-dasharray=\"5 3\"" } else { "" };
    let report = OpReport::new(history, op);
    let title = format!(
        "op {} process {} {} {:?} invoke line {}{}{}",
        op.id.0,
        op.process,
        op.kind,
        op.outcome,
        report.invoke_line,
        report.complete_line.map_or(String::new(), |l| format!(", completion line {l}")),
        report.invoke_time_ns.map_or(String::new(), |t| format!(", invoked at {t} ns")),
    );
    let _ = writeln!(
        out,
        "<g><title>{title}</title><rect x=\"{x0}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"3\" \
         fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{stroke_width}\"{dash}/>\
         <text x=\"{tx}\" y=\"{ty}\">{label}</text></g>",
        title = escape(&title),
        w = x1.saturating_sub(x0).max(6),
        h = LANE_PX - 8,
        tx = x0 + 3,
        ty = y + LANE_PX / 2 + 1,
        label = escape(&short_label(op)),
    );
}

fn short_label(op: &Op) -> String {
    let show = |v: Option<i64>| v.map_or_else(|| "nil".to_owned(), |v| v.to_string());
    let base = match op.kind {
        OpKind::Read { value } if op.outcome == Outcome::Ok => format!("r {}", show(value)),
        OpKind::Read { .. } => "r ?".to_owned(),
        OpKind::Write { value } => format!("w {}", show(value)),
        OpKind::Cas { expected, new } => format!("cas {}\u{2192}{}", show(expected), show(new)),
    };
    match op.outcome {
        Outcome::Fail => format!("{base} (fail)"),
        Outcome::Info => format!("{base} (info)"),
        Outcome::Pending => format!("{base} (pending)"),
        Outcome::Ok => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_history, Budget};
    use crate::format::jsonl::parse_jsonl;
    use crate::model::ModelKind;

    const STALE_READ: &str = r#"{"process":0,"type":"invoke","f":"write","key":"a<b","value":1}
{"process":0,"type":"ok","f":"write","key":"a<b","value":1}
{"process":0,"type":"invoke","f":"write","key":"a<b","value":2}
{"process":0,"type":"ok","f":"write","key":"a<b","value":2}
{"process":1,"type":"invoke","f":"read","key":"a<b","value":null}
{"process":2,"type":"invoke","f":"write","key":"a<b","value":3}
{"process":1,"type":"ok","f":"read","key":"a<b","value":1}
"#;

    fn checked() -> (History, CheckResult) {
        let h = parse_jsonl(STALE_READ).expect("valid");
        let r = check_history(&h, ModelKind::CasRegister, Budget::unlimited()).expect("model");
        (h, r)
    }

    #[test]
    fn json_report_expands_the_window_operations() {
        let (h, r) = checked();
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&h, &r)).expect("valid JSON");
        assert_eq!(json["verdict"], "not-linearizable");
        let failure = &json["keys"][0]["failure"];
        assert_eq!(failure["stuck_op"]["f"], "read");
        assert_eq!(failure["stuck_op"]["value"], 1);
        assert_eq!(failure["stuck_op"]["complete_line"], 7);
        assert_eq!(failure["linearizable_prefix"]["end"]["line"], 4);
        let window = failure["window"].as_array().expect("window array");
        // The pending write of 3 is left out: nobody could observe it.
        assert_eq!(window.len(), 2, "{window:?}");
        assert_eq!(failure["window_start"]["line"], 3);
    }

    #[test]
    fn html_report_is_self_contained_and_escapes_keys() {
        let (h, r) = checked();
        let html = render_html(&h, &r);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "no scripts");
        assert!(!html.contains("href="), "no external assets");
        assert!(!html.contains("src="), "no external assets");
        assert!(html.contains("a&lt;b"));
        assert!(!html.contains("a<b"));
        assert!(html.contains("<svg"));
        assert!(html.contains("stroke=\"#b71c1c\""), "stuck op outlined");
        // One lane per process of the drawn operations.
        for p in ["p0", "p1", "p2"] {
            assert!(html.contains(&format!(">{p}</text>")), "lane {p}");
        }
    }

    #[test]
    fn html_report_of_a_linearizable_history_has_no_timeline() {
        let h = parse_jsonl(
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"value\":1}\n\
             {\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"value\":1}\n",
        )
        .expect("valid");
        let r = check_history(&h, ModelKind::Register, Budget::unlimited()).expect("model");
        let html = render_html(&h, &r);
        assert!(html.contains("class=\"v linearizable\""));
        assert!(!html.contains("<svg"));
    }
}

//! `index.html`: the run at a glance (verdict, counts, nemesis windows, the two plots,
//! links to the timeline, histories and node logs). Self-contained: inline CSS, the
//! plots referenced by relative path from the same directory, no script, nothing
//! fetched from elsewhere.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::nemesis::Window;
use super::plots::fault_colour;
use crate::report::escape;

fn field(results: &Json, path: &[&str]) -> String {
    let mut v = results;
    for p in path {
        v = &v[*p];
    }
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The page for a run's results.json value and windows.
pub fn index_html(results: &Json, windows: &[Window]) -> String {
    let verdict = field(results, &["verdict"]);
    let colour = match verdict.as_str() {
        "valid" => "#2ca02c",
        "invalid" => "#c81e1e",
        _ => "#e6ab02",
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}\
         .verdict{{display:inline-block;padding:4px 12px;border-radius:4px;color:#fff;background:{colour};font-weight:bold}}\
         table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}}\
         th{{background:#f3f3f3}}img{{max-width:100%;border:1px solid #ddd;margin:8px 0}}.swatch{{display:inline-block;width:10px;height:10px;margin-right:6px}}\
         </style></head><body>",
        title = escape(&field(results, &["test"])),
    );
    let _ = write!(
        h,
        "<h1>{} <span class=\"verdict\">{}</span></h1><p>workload <b>{}</b>, nemesis <b>{}</b>, seed <b>{}</b>, \
         unsafe stale reads <b>{}</b>, started {}, {} s of workload, check {} ms</p>",
        escape(&field(results, &["test"])),
        escape(&verdict.to_uppercase()),
        escape(&field(results, &["workload"])),
        escape(&field(results, &["nemesis"])),
        escape(&field(results, &["seed"])),
        escape(&field(results, &["unsafe_stale_reads"])),
        escape(&field(results, &["started_at"])),
        escape(&field(results, &["workload_s"])),
        escape(&field(results, &["check_ms"])),
    );
    h.push_str("<table><tr><th>f</th><th>ops</th><th>ok</th><th>info</th><th>fail</th><th>pending</th></tr>");
    let mut rows = vec![("all".to_string(), &results["counts"])];
    if let Json::Object(by_f) = &results["counts_by_f"] {
        rows.extend(by_f.iter().map(|(f, c)| (f.clone(), c)));
    }
    for (f, c) in rows {
        let _ = write!(h, "<tr><td>{}</td>", escape(&f));
        for k in ["ops", "ok", "info", "fail", "pending"] {
            let _ = write!(h, "<td>{}</td>", escape(&field(c, &[k])));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    let files: Vec<String> = match &results["files"] {
        Json::Array(a) => a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    if files.iter().any(|f| f == "timeline.html") {
        h.push_str("<p><b><a href=\"timeline.html\">Timeline of the failure</a></b></p>");
    }
    if let Some(first) = results["details"]["bank"]["first_violation"].as_object() {
        let _ = write!(
            h,
            "<p><b>First bad read:</b> {}</p>",
            escape(&Json::Object(first.clone()).to_string())
        );
    }
    h.push_str(
        "<img src=\"latency.svg\" alt=\"latency\"><img src=\"rate.svg\" alt=\"throughput\">",
    );
    h.push_str("<h2>Nemesis</h2><table><tr><th>#</th><th>fault</th><th>from (s)</th><th>to (s)</th><th>what</th><th>errors</th></tr>");
    for w in windows {
        let c = fault_colour(w.kind);
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"swatch\" style=\"background:rgb({},{},{})\"></span>{}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            w.index,
            c.0,
            c.1,
            c.2,
            w.kind.name(),
            w.start_s,
            w.end_s,
            escape(&w.detail),
            escape(&w.errors.join("; "))
        );
    }
    h.push_str("</table><h2>Files</h2><p>");
    for f in files.iter().filter(|f| f.as_str() != "index.html") {
        let _ = write!(h, "<a href=\"{0}\">{0}</a> ", escape(f));
    }
    h.push_str("and one <code>node-N.log</code> per node.</p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::config::FaultKind;
    use serde_json::json;

    #[test]
    fn the_page_names_the_verdict_and_links_only_local_files() {
        let results = json!({"test": "t<1>", "verdict": "invalid", "counts": {"ops": 3},
            "files": ["history.jsonl", "timeline.html"]});
        let windows = vec![Window {
            index: 0,
            kind: FaultKind::Kill,
            detail: "kill -9 [2]".into(),
            start_s: 1.0,
            end_s: 2.0,
            errors: vec![],
        }];
        let page = index_html(&results, &windows);
        assert!(page.contains("t&lt;1&gt;") && page.contains("INVALID"));
        assert!(page.contains("href=\"timeline.html\"") && page.contains("kill -9 [2]"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}

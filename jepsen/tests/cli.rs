//! The `meridian-jepsen check` command: exit codes, reports, and errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_meridian-jepsen");

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run meridian-jepsen")
}

fn check(file: &Path, extra: &[&str]) -> Output {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec!["check", file];
    args.extend_from_slice(extra);
    run(&args)
}

fn out_dir(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("meridian-jepsen-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn linearizable_history_exits_0() {
    let out = check(&data("concurrent_overlaps_legal.jsonl"), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["verdict"], "linearizable");
}

#[test]
fn violation_exits_1_and_writes_json_and_html_reports() {
    let dir = out_dir("violation");
    let (html, json) = (dir.join("report.html"), dir.join("results.json"));
    let out = check(
        &data("stale_read.edn"),
        &[
            "--html",
            html.to_str().expect("utf-8"),
            "--json",
            json.to_str().expect("utf-8"),
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.contains("<svg") && page.contains("not-linearizable"));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("JSON");
    assert_eq!(written["keys"][0]["failure"]["stuck_op"]["f"], "read");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn register_model_is_selectable() {
    let out = check(&data("stale_read.jsonl"), &["--model", "register"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn malformed_file_exits_2_with_its_line_and_no_verdict() {
    let out = check(&data("malformed_json_line3.jsonl"), &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no partial verdict on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: invalid JSON"), "{err}");
    let out = check(&data("malformed_unknown_f_line3.edn"), &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: unknown :f :txn"));
}

#[test]
fn unknown_model_and_missing_file_exit_2() {
    let out = check(&data("stale_read.jsonl"), &["--model", "queue"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = check(&data("no_such_file.jsonl"), &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn cas_under_the_register_model_exits_2() {
    let out = check(&data("lost_update.jsonl"), &["--model", "register"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: the register model has no cas"));
}

#[test]
fn exhausted_budget_exits_3() {
    let out = check(&data("concurrent_overlaps_legal.edn"), &["--max-cache-entries", "1"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["verdict"], "unknown");
    assert_eq!(json["keys"][0]["unknown_reason"], "cache-limit");
}

#[test]
fn format_is_sniffed_when_the_extension_says_nothing() {
    let dir = out_dir("sniff");
    let file = dir.join("history.txt");
    std::fs::copy(data("stale_read.edn"), &file).expect("copy");
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generated_history_is_checked_with_the_planted_verdict() {
    let dir = out_dir("generate");
    for (format, violation, code) in [("jsonl", None, 0), ("edn", Some("stale-cas"), 1)] {
        let mut args = vec!["generate", "--ops", "300", "--keys", "3", "--format", format];
        if let Some(v) = violation {
            args.extend_from_slice(&["--violation", v]);
        }
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let file = dir.join(format!("generated.{format}"));
        std::fs::write(&file, &out.stdout).expect("write history");
        let out = check(&file, &[]);
        assert_eq!(out.status.code(), Some(code), "{format}: {out:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

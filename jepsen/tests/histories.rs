//! Hand-written histories with a known verdict, each in JSON lines and in EDN
//! (tests/data/NAME.jsonl and NAME.edn): both formats must give the same, expected verdict
//! and the same failure explanation.

use std::path::PathBuf;

use meridian_jepsen::{
    check_history, parse_edn, parse_jsonl, Budget, CheckResult, History, ModelKind, OpId, Verdict,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

fn load_both(name: &str) -> (History, History) {
    let jsonl = parse_jsonl(&read(&format!("{name}.jsonl")))
        .unwrap_or_else(|e| panic!("{name}.jsonl: {e}"));
    let edn =
        parse_edn(&read(&format!("{name}.edn"))).unwrap_or_else(|e| panic!("{name}.edn: {e}"));
    (jsonl, edn)
}

fn check(h: &History) -> CheckResult {
    check_history(h, ModelKind::CasRegister, Budget::default()).expect("cas-register model")
}

/// Checks both formats, asserts the expected verdict and identical results, and returns it.
fn verdict_of(name: &str, expected: Verdict) -> CheckResult {
    let (jsonl, edn) = load_both(name);
    assert_eq!(jsonl.ops(), edn.ops(), "{name}: both formats describe the same operations");
    let (a, mut b) = (check(&jsonl), check(&edn));
    assert_eq!(a.verdict, expected, "{name}: {a:#?}");
    b.elapsed_ms = a.elapsed_ms;
    assert_eq!(a, b, "{name}: both formats give the same result");
    a
}

fn failure_window(result: &CheckResult) -> (OpId, Vec<OpId>) {
    let failure = result.keys.iter().find_map(|k| k.failure.as_ref()).expect("a failing key");
    (failure.stuck_op, failure.window.clone())
}

#[test]
fn stale_read_is_not_linearizable() {
    let result = verdict_of("stale_read", Verdict::NotLinearizable);
    // The read (op 2) of 1 after write 2 (op 1) completed: those two alone fail.
    assert_eq!(failure_window(&result), (OpId(2), vec![OpId(1), OpId(2)]));
}

#[test]
fn lost_update_from_two_successful_cas_is_not_linearizable() {
    let result = verdict_of("lost_update", Verdict::NotLinearizable);
    let (stuck, window) = failure_window(&result);
    assert!(stuck == OpId(1) || stuck == OpId(2), "stuck {stuck:?}");
    assert!(window.contains(&OpId(1)) && window.contains(&OpId(2)), "{window:?}");
}

#[test]
fn cas_from_a_stale_value_is_not_linearizable() {
    let result = verdict_of("cas_from_stale_value", Verdict::NotLinearizable);
    assert_eq!(failure_window(&result), (OpId(2), vec![OpId(1), OpId(2)]));
}

#[test]
fn failed_write_observed_by_a_read_is_not_linearizable() {
    let result = verdict_of("failed_write_observed", Verdict::NotLinearizable);
    assert_eq!(failure_window(&result).0, OpId(1));
}

#[test]
fn info_write_observed_later_must_be_taken_into_account() {
    verdict_of("info_write_observed", Verdict::Linearizable);
}

#[test]
fn info_write_never_observed_must_not_be_taken_into_account() {
    verdict_of("info_write_never_applied", Verdict::Linearizable);
}

#[test]
fn info_write_once_observed_cannot_be_undone() {
    let result = verdict_of("info_write_observed_then_undone", Verdict::NotLinearizable);
    assert_eq!(failure_window(&result).0, OpId(3));
}

#[test]
fn info_write_cannot_take_effect_before_its_invocation() {
    verdict_of("info_write_read_before_invoke", Verdict::NotLinearizable);
}

#[test]
fn legal_concurrent_overlaps_are_linearizable() {
    verdict_of("concurrent_overlaps_legal", Verdict::Linearizable);
}

#[test]
fn concurrent_cas_where_one_fails_is_linearizable() {
    verdict_of("concurrent_cas_one_wins", Verdict::Linearizable);
}

#[test]
fn pending_write_at_the_end_may_have_taken_effect() {
    verdict_of("pending_write_at_end", Verdict::Linearizable);
}

#[test]
fn multi_key_history_reports_the_failing_key_only() {
    let result = verdict_of("multi_key_one_key_stale", Verdict::NotLinearizable);
    let verdicts: Vec<(Option<&str>, Verdict)> =
        result.keys.iter().map(|k| (k.key.as_deref(), k.verdict)).collect();
    assert_eq!(
        verdicts,
        vec![(Some("x"), Verdict::NotLinearizable), (Some("y"), Verdict::Linearizable)]
    );
}

#[test]
fn multi_key_history_with_fresh_reads_is_linearizable() {
    let result = verdict_of("multi_key_all_fresh", Verdict::Linearizable);
    assert_eq!(result.keys.len(), 2);
}

#[test]
fn every_data_history_has_a_twin_in_the_other_format() {
    let dir = std::fs::read_dir(data("")).expect("tests/data");
    for entry in dir {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("malformed") {
            continue;
        }
        let twin = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => path.with_extension("edn"),
            Some("edn") => path.with_extension("jsonl"),
            _ => continue,
        };
        assert!(twin.exists(), "{} has no twin {}", path.display(), twin.display());
    }
}

#[test]
fn malformed_files_name_the_bad_line() {
    let cases = [
        ("malformed_json_line3.jsonl", "line 3: invalid JSON"),
        ("malformed_invoke_after_info_line3.jsonl", "line 3: process 0 invoked after"),
    ];
    for (file, message) in cases {
        let err = parse_jsonl(&read(file)).expect_err(file);
        assert!(err.to_string().starts_with(message), "{file}: {err}");
    }
    let err = parse_edn(&read("malformed_unknown_f_line3.edn")).expect_err("txn");
    assert_eq!(err.to_string(), "line 3: unknown :f :txn: expected :read, :write or :cas");
}

#[test]
fn register_model_checks_histories_without_cas() {
    let (jsonl, _) = load_both("stale_read");
    let result =
        check_history(&jsonl, ModelKind::Register, Budget::default()).expect("no cas here");
    assert_eq!(result.verdict, Verdict::NotLinearizable);
    let (with_cas, _) = load_both("lost_update");
    assert!(check_history(&with_cas, ModelKind::Register, Budget::default()).is_err());
}

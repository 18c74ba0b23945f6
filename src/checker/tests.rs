//! Unit tests of the checker's pure parts and its state directory.

use super::core::{abort_request_id, Checker, CheckerConfig, Compensation};
use super::event::{Event, Op, Position, RecordView, Stamp};
use super::invariant::{integer_value, parse_invariants};
use super::state::StateDir;
use super::{CheckerError, Kind};

fn put(rev: u64, key: &str, bv: u64, value: &str, hash: &str) -> Event {
    Event {
        pos: Position::new(rev, 0),
        hlc: Stamp { wall_ns: rev * 1_000_000, logical: 0 },
        key: key.as_bytes().to_vec(),
        op: Op::Put,
        before_version: bv,
        before: (bv > 0).then(|| RecordView { value: b"0".to_vec(), version: bv, revision: 0 }),
        after: Some(RecordView {
            value: value.as_bytes().to_vec(),
            version: bv + 1,
            revision: rev,
        }),
        request_id: format!("r{rev}"),
        saga_id: String::new(),
        saga_deadline_unix_ms: 0,
        chain_hash: hash.as_bytes().to_vec(),
        compensation: false,
    }
}

#[test]
fn invariants_file_parses_and_rejects_bad_input() {
    let ok = parse_invariants(
        "[[invariant]]\nkind = \"sum\"\nprefix = \"acct/\"\ntotal = 1000\n",
        "inv.toml",
    )
    .expect("valid");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].total, 1000);
    for (text, wanted) in [
        ("", "no [[invariant]]"),
        ("[[invariant]]\nkind = \"max\"\nprefix = \"a\"\ntotal = 1\n", "unknown kind"),
        ("[[invariant]]\nkind = \"sum\"\nprefix = \"\"\ntotal = 1\n", "prefix must not be empty"),
        ("[[invariant]]\nkind = \"sum\"\nprefix = \"a\"\n", "total"),
        ("[[invariant]]\nkind = \"sum\"\nprefix = \"a\"\ntotal = 1\ntypo = 2\n", "typo"),
    ] {
        let err = parse_invariants(text, "inv.toml").expect_err(text).to_string();
        assert!(err.contains(wanted) && err.contains("inv.toml"), "{err}");
    }
}

#[test]
fn integer_values_parse_as_decimal_only() {
    assert_eq!(integer_value(b" 42\n"), Some(42));
    assert_eq!(integer_value(b"-7"), Some(-7));
    assert_eq!(integer_value(b"4x"), None);
    assert_eq!(integer_value(&[0xff]), None);
}

#[test]
fn a_state_dir_has_one_owner_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let first = StateDir::open(&path).expect("open");
    let err = StateDir::open(&path).expect_err("second owner refused");
    assert!(matches!(err, CheckerError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("in use by another"), "{err}");
    drop(first);
    StateDir::open(&path).expect("free again once the owner is gone");
}

#[test]
fn state_round_trips_through_the_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sd = StateDir::open(&dir.path().join("state")).expect("open");
    assert!(sd.load().expect("load").is_none(), "fresh dir has no state");
    let mut checker = Checker::new(CheckerConfig::new(2));
    let _ = checker.observe("n1", 1, &[put(3, "a", 0, "1", "h3")], 3, 0);
    let _ = checker.observe("n2", 2, &[put(3, "a", 0, "1", "h3")], 3, 0);
    checker.compensation_started("s1", 5);
    sd.save(checker.state()).expect("save");
    let loaded = sd.load().expect("load").expect("present");
    assert_eq!(&loaded, checker.state());
    let resumed = Checker::resume(CheckerConfig::new(2), loaded);
    assert_eq!(resumed.cursor("n1"), Some(Position::new(3, 0)));
    assert_eq!(
        resumed.unfinished_compensations(),
        vec![("s1".to_string(), abort_request_id("s1"))]
    );
    assert!(!dir.path().join("state/state.bin.tmp").exists(), "temp file renamed away");
}

#[test]
fn a_corrupt_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("state.bin"), b"garbage").expect("write");
    let err = StateDir::open(dir.path()).expect("open").load().expect_err("corrupt");
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn resumed_checker_neither_misses_nor_repeats_findings() {
    // The same stream checked in one go, and checked with a save/restore in the middle
    // that re-delivers the cursor's revision (as a resumed Subscribe does), yields the
    // same findings.
    let events: Vec<Event> = (1..=6u64)
        .map(|rev| {
            let mut e = put(rev + 1, "k", rev - 1, "v", "h");
            if rev == 4 {
                e.after = Some(RecordView { value: b"v".to_vec(), version: 9, revision: 5 });
            }
            e
        })
        .collect();
    let mut whole = Checker::new(CheckerConfig::new(1));
    let all = whole.observe("n1", 1, &events, 7, 0).findings;
    assert!(all.iter().any(|f| f.kind == Kind::VersionGap), "{all:?}");

    let mut first = Checker::new(CheckerConfig::new(1));
    let mut got = first.observe("n1", 1, &events[..3], 7, 0).findings;
    let mut second = Checker::resume(CheckerConfig::new(1), first.state().clone());
    second.resubscribed("n1");
    got.extend(second.observe("n1", 1, &events[2..], 7, 0).findings);
    assert_eq!(got, all);
}

#[test]
fn stuck_saga_is_compensated_once_and_remembered() {
    let mut c = Checker::new(CheckerConfig::new(1));
    let mut open = put(2, "", 0, "", "h");
    open.op = Op::SagaOpen;
    open.key.clear();
    open.after = None;
    open.saga_id = "s".into();
    open.saga_deadline_unix_ms = 1_000;
    let _ = c.observe("n1", 1, &[open], 2, 0);
    let (findings, todo) = c.tick(2_000);
    assert!(findings.is_empty() && todo.is_empty(), "within grace");
    let (findings, todo) = c.tick(3_001);
    assert_eq!(findings.len(), 1);
    assert_eq!(todo, vec!["s".to_string()]);
    c.compensation_started("s", 3_001);
    let (findings, todo) = c.tick(9_000);
    assert!(findings.is_empty() && todo.is_empty(), "reported and compensated once");
    let _ = c.compensation_finished("s", 2, &[], "", 9_000);
    assert!(matches!(c.state().compensations.get("s"), Some(Compensation::Finished { .. })));
    assert!(c.unfinished_compensations().is_empty());
}

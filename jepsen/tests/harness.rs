//! `meridian-jepsen test` end to end against real node processes: short seeded smoke
//! runs (register and binlog workloads) under kill + partition must be valid, and a cluster started with
//! `--unsafe-stale-reads` must be caught serving stale reads under partitions.
//!
//! Needs the `meridian` binary next to this test's executable (`cargo test --workspace`
//! builds it) or in `$MERIDIAN_BIN`. The two cluster runs are serialised (the machine
//! may have 2 cores) and each is bounded by its `--time-limit` plus recovery.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use meridian_jepsen::harness::locate_meridian;
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-jepsen");
/// Seed of the smoke run (printed by the harness too).
const SMOKE_SEED: &str = "20261125";
/// Seeds of the stale-read attempts; the test stops at the first one caught.
const STALE_SEEDS: [&str; 3] = ["101", "102", "103"];

/// One cluster run at a time.
static CLUSTER_RUNS: Mutex<()> = Mutex::new(());

fn meridian() -> PathBuf {
    locate_meridian(None).unwrap_or_else(|e| panic!("{e}"))
}

/// Run `meridian-jepsen test` with `args` into a fresh store; returns the output, the
/// store and the run's results.json.
fn run_test(args: &[&str]) -> (Output, tempfile::TempDir, Json) {
    let store = tempfile::Builder::new().prefix("jepsen-store-").tempdir().expect("tempdir");
    let binary = meridian();
    let mut all = vec!["test", "--binary", binary.to_str().expect("utf-8 path")];
    all.extend_from_slice(&["--store", store.path().to_str().expect("utf-8 path")]);
    all.extend_from_slice(args);
    let out = Command::new(BIN).args(&all).output().expect("run meridian-jepsen test");
    let results = std::fs::read_to_string(store.path().join("latest/results.json"))
        .map(|t| serde_json::from_str(&t).expect("results.json is JSON"))
        .unwrap_or(Json::Null);
    (out, store, results)
}

fn explain(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("[node-")).collect();
    format!(
        "exit {:?}\nstdout: {}\nstderr (without node lines): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        tail[tail.len().saturating_sub(40)..].join("\n")
    )
}

fn assert_files(dir: &Path, names: &[&str]) {
    for name in names {
        let path = dir.join(name);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} is missing or empty", path.display());
    }
}

/// At least `min` nemesis windows, none with an error, and a clean final heal.
fn assert_faults_applied_cleanly(results: &Json, min: usize) {
    let windows = results["nemesis_windows"].as_array().cloned().unwrap_or_default();
    assert!(windows.len() >= min, "expected at least {min} faults: {windows:#?}");
    assert!(
        windows.iter().all(|w| w["errors"].as_array().is_some_and(Vec::is_empty)),
        "{windows:#?}"
    );
    assert_eq!(results["heal_errors"], serde_json::json!([]));
}

#[test]
fn seeded_smoke_run_under_kill_and_partition_is_linearizable() {
    let _serial = CLUSTER_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let (out, store, results) = run_test(&[
        "--workload",
        "register",
        "--nemesis",
        "kill,partition",
        "--time-limit",
        "20",
        "--nodes",
        "3",
        "--concurrency",
        "6",
        "--rate",
        "100",
        "--nemesis-interval",
        "3s",
        "--seed",
        SMOKE_SEED,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert_eq!(results["valid"], Json::Bool(true), "{results:#}");
    assert_eq!(results["seed"], SMOKE_SEED.parse::<u64>().expect("seed"));
    let ok = results["counts"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 300, "too few ok operations ({ok}): {:#}", results["counts"]);
    assert_faults_applied_cleanly(&results, 2);
    assert_eq!(results["final_reads"]["without_ok"], 0);
    let keys =
        results["details"]["linearizability"]["keys"].as_array().cloned().unwrap_or_default();
    assert!(keys.len() >= 8 && keys.iter().all(|k| k["verdict"] == "linearizable"), "{keys:#?}");
    let dir = store.path().join("latest");
    assert_files(
        &dir,
        &["history.jsonl", "history.edn", "results.json", "latency.svg", "rate.svg", "index.html"],
    );
    assert_files(&dir, &["node-1.log", "node-2.log", "node-3.log"]);
    assert!(!dir.join("timeline.html").exists(), "no timeline for a valid run");
    let history = std::fs::read_to_string(dir.join("history.jsonl")).expect("history");
    assert!(history.contains("\"start-kill\"") && history.contains("\"start-partition\""));
    // The recorded history re-checks to the same verdict with the standalone checker.
    for file in ["history.jsonl", "history.edn"] {
        let path = dir.join(file);
        let check = Command::new(BIN)
            .args(["check", path.to_str().expect("utf-8")])
            .output()
            .expect("run check");
        assert_eq!(check.status.code(), Some(0), "{file}: {}", explain(&check));
    }
}

#[test]
fn three_region_register_run_under_membership_changes_is_linearizable() {
    let _serial = CLUSTER_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster/three-regions.toml");
    let (out, _store, results) = run_test(&[
        "--workload",
        "register",
        "--nemesis",
        "membership",
        "--manifest",
        manifest,
        "--time-limit",
        "25",
        "--concurrency",
        "6",
        "--rate",
        "60",
        "--op-timeout",
        "5s",
        "--nemesis-interval",
        "4s",
        "--seed",
        SMOKE_SEED,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert_eq!(results["valid"], Json::Bool(true), "{results:#}");
    assert_faults_applied_cleanly(&results, 1);
}

#[test]
fn binlog_workload_under_kill_and_partition_keeps_every_acknowledged_write_once_in_order() {
    let _serial = CLUSTER_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let (out, _store, results) = run_test(&[
        "--workload",
        "binlog",
        "--nemesis",
        "kill,partition",
        "--time-limit",
        "12",
        "--nodes",
        "3",
        "--concurrency",
        "6",
        "--rate",
        "100",
        "--nemesis-interval",
        "3s",
        "--seed",
        SMOKE_SEED,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert_eq!(results["valid"], Json::Bool(true), "{results:#}");
    let binlog = &results["details"]["binlog"];
    assert_eq!(binlog["violations"], serde_json::json!([]), "{binlog:#}");
    let acknowledged = binlog["acknowledged"].as_u64().unwrap_or(0);
    assert!(acknowledged >= 150, "too few acknowledged writes: {binlog:#}");
    let nodes = binlog["nodes"].as_object().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3, "{binlog:#}");
    let counts: Vec<&Json> = nodes.values().map(|n| &n["events"]).collect();
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "every replica holds the same events: {binlog:#}"
    );
    let windows = results["nemesis_windows"].as_array().cloned().unwrap_or_default();
    assert!(windows.len() >= 2, "expected several faults: {windows:#?}");
}

#[test]
fn unsafe_stale_reads_under_partitions_are_caught() {
    let _serial = CLUSTER_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let mut attempts = Vec::new();
    for seed in STALE_SEEDS {
        let (out, store, results) = run_test(&[
            "--workload",
            "register",
            "--nemesis",
            "partition",
            "--partitions",
            "isolate-follower",
            "--time-limit",
            "15",
            "--nodes",
            "3",
            "--concurrency",
            "6",
            "--rate",
            "100",
            "--nemesis-interval",
            "2s",
            "--seed",
            seed,
            "--unsafe-stale-reads",
        ]);
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(1)), "seed {seed}: {}", explain(&out));
        if code == Some(1) {
            assert_eq!(results["valid"], Json::Bool(false), "{results:#}");
            assert_eq!(results["details"]["linearizability"]["verdict"], "not-linearizable");
            let page = std::fs::read_to_string(store.path().join("latest/timeline.html"))
                .expect("timeline.html for an invalid run");
            assert!(page.contains("<svg") && page.contains("not-linearizable"));
            return;
        }
        attempts.push(format!("seed {seed}: {}", results["counts"]));
    }
    panic!("stale reads were never caught: {attempts:#?}");
}

#[test]
fn a_seed_fixes_the_schedule() {
    let dry = |seed: &str| {
        let out = Command::new(BIN)
            .args(["test", "--dry-run", "--nemesis", "all", "--seed", seed])
            .output()
            .expect("run dry");
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let first = dry("5");
    let schedule: Json = serde_json::from_str(&first).expect("JSON schedule");
    assert!(schedule.as_array().is_some_and(|s| s.len() >= 3), "{schedule:#}");
    assert_eq!(first, dry("5"));
    assert_ne!(first, dry("6"));
}

#[test]
fn bad_options_exit_2_with_a_message() {
    let out = Command::new(BIN)
        .args(["test", "--dry-run", "--nemesis", "kill,explode"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("explode"));
}

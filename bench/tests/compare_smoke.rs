//! Smoke test of the comparison path: `meridian-bench compare` with a tiny matrix
//! (two workloads, one concurrency, a short duration, a small load) against a real
//! 3-member etcd and a real 3-node Meridian, then checks the table, plots and resource
//! rows it wrote. Skipped, with a message, when etcd is not installed
//! (`apt-get install etcd-server`).

use std::path::{Path, PathBuf};
use std::process::Command;

const ETCD: &str = "/usr/bin/etcd";

/// The meridian binary beside ours, built (same profile, same target dir) if missing.
fn meridian_binary() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_meridian-bench"));
    let binary = bench.with_file_name("meridian");
    if !binary.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "meridian", "--bin", "meridian"]);
        if bench.parent().and_then(Path::file_name).is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p meridian failed");
    }
    binary
}

#[test]
fn compare_writes_table_plots_and_resources_for_both_stores() {
    if !Path::new(ETCD).is_file() {
        eprintln!("SKIPPED: {ETCD} not installed (apt-get install etcd-server)");
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let meridian = meridian_binary();
    let output = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .arg("compare")
        .arg("--meridian-bin")
        .arg(&meridian)
        .args(["--workloads", "put,get-lin", "--concurrency", "4", "--curve-concurrency", "4"])
        .args(["--value-sizes", "100", "--keys", "50", "--load-keys", "200", "--nodes", "3"])
        .args(["--duration", "500ms", "--warmup", "100ms", "--clients", "2"])
        .arg("--out")
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("run meridian-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "compare failed: {stderr}");
    let md = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    for row in [
        "| put | 3 | 100 B | 50 | 4 |",
        "| get-lin | 3 | 100 B | 50 | 4 |",
        "| put | 3 | 100 B | 200 | 4 |",
    ] {
        assert!(md.contains(row), "missing {row:?} in:\n{md}");
    }
    assert!(md.contains("| etcd | 3 | 200 |") && md.contains("| meridian | 3 | 200 |"), "{md}");
    for plot in ["throughput-put.svg", "throughput-get-lin.svg", "cdf-put-c4.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).expect(plot);
        assert!(svg.contains("etcd") && svg.contains("meridian"), "{plot} lacks a series");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("json");
    let points = json["points"].as_array().expect("points");
    assert!(points.iter().all(|p| p["ops_per_sec"].as_f64().unwrap_or(0.0) > 0.0), "{points:?}");
    // CPU per op of the servers and the load generator, for every point of both stores
    // (a 500 ms point may round to zero ticks, but never goes unrecorded).
    for field in ["server_cpu_us_per_op", "client_cpu_us_per_op"] {
        assert!(points.iter().all(|p| p[field].as_f64().is_some_and(|v| v >= 0.0)), "{field}");
    }
    // ... and the Markdown has the CPU table with a row per point (the section runs to
    // the next heading; the throughput table above it has rows of the same shape).
    let (_, after) = md.split_once("CPU time per op").expect("a CPU table in results.md");
    let cpu_table = after.split("\n## ").next().unwrap_or_default();
    for row in ["| put | 3 | 100 B | 50 | 4 |", "| get-lin | 3 | 100 B | 50 | 4 |"] {
        assert!(cpu_table.contains(row), "CPU table lacks {row:?}:\n{cpu_table}");
    }
    // Both clusters were stopped by pid: no process of ours is left on the work dir.
    assert!(!stderr.contains("stopping etcd"), "{stderr}");
}

//! Checker throughput on generated cas-register histories: 1k, 10k and 100k operations over
//! 8 keys and 10 processes, with and without a planted violation (a stale read).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-jepsen cargo bench -p meridian-jepsen`.
//! The 100k cases take about a second per iteration, so sample counts are kept minimal.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meridian_jepsen::generate::{generate, GenConfig, Violation};
use meridian_jepsen::{check_history, Budget, ModelKind, Verdict};

/// History sizes in operations.
const SIZES_OPS: [usize; 3] = [1_000, 10_000, 100_000];

/// Keys per history.
const KEYS: usize = 8;

/// Concurrent client processes.
const PROCESSES: usize = 10;

/// Seed of the generator (fixed so runs compare).
const SEED: u64 = 7;

fn bench_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("cas_register_8_keys_10_processes");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for ops in SIZES_OPS {
        for (name, violation) in [("clean", None), ("stale_read", Some(Violation::StaleRead))] {
            let history = generate(&GenConfig {
                ops,
                keys: KEYS,
                processes: PROCESSES,
                seed: SEED,
                violation,
                ..GenConfig::default()
            });
            let expected =
                if violation.is_some() { Verdict::NotLinearizable } else { Verdict::Linearizable };
            group.throughput(Throughput::Elements(ops as u64));
            group.bench_with_input(BenchmarkId::new(name, ops), &history, |b, h| {
                b.iter(|| {
                    let result = check_history(h, ModelKind::CasRegister, Budget::default())
                        .expect("cas-register supports every generated operation");
                    assert_eq!(result.verdict, expected);
                    result
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_check);
criterion_main!(benches);

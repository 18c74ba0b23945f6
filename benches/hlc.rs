//! HLC micro-benchmarks: `now()` (every proposal) and `update()` (every peer message).
#![allow(missing_docs)] // criterion_group! generates undocumented functions
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use meridian::hlc::{Hlc, SystemClock, Timestamp, DEFAULT_MAX_CLOCK_OFFSET};

fn bench_hlc(c: &mut Criterion) {
    let hlc = Hlc::new(1, Arc::new(SystemClock::new()), DEFAULT_MAX_CLOCK_OFFSET, Timestamp::ZERO);
    c.bench_function("hlc_now", |b| b.iter(|| std::hint::black_box(hlc.now())));
    let remote = hlc.now();
    c.bench_function("hlc_update", |b| b.iter(|| hlc.update(std::hint::black_box(remote)).is_ok()));
}

criterion_group!(benches, bench_hlc);
criterion_main!(benches);

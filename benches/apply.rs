//! State-machine apply benchmark: a batch of 1,000 Put entries applied to the sled
//! state machine (including the exactly-once table), as a follower applies them.
#![allow(missing_docs)] // criterion_group! generates undocumented functions
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::stream;
use meridian::hlc::{Hlc, SystemClock, Timestamp, DEFAULT_MAX_CLOCK_OFFSET};
use meridian::record::{Command, Op, Source};
use meridian::storage::state_machine::DedupLimits;
use meridian::storage::types::{Entry, LogId};
use meridian::storage::{StateMachine, Store};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;

const BATCH: u64 = 1_000;

fn entries(start: u64, with_request_ids: bool) -> Vec<Entry> {
    (start..start + BATCH)
        .map(|i| {
            let cmd = Command {
                request_id: if with_request_ids { format!("req-{i}") } else { String::new() },
                saga_id: String::new(),
                trace_id: String::new(),
                hlc: Timestamp { wall_ns: i, logical: 0, node: 1 },
                source: Source { node_id: 1, region: "bench".into() },
                op: Op::Put {
                    key: format!("key-{}", i % 10_000).into_bytes(),
                    value: vec![7u8; 100],
                    expected_version: None,
                },
            };
            Entry {
                log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, i),
                payload: EntryPayload::Normal(cmd),
            }
        })
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "bench", 1).expect("store");
    let hlc = Hlc::new(1, Arc::new(SystemClock::new()), DEFAULT_MAX_CLOCK_OFFSET, Timestamp::ZERO);
    let limits = DedupLimits { window_ns: 600_000_000_000, max_entries: 100_000 };
    let mut sm = StateMachine::open(&store, hlc, limits).expect("sm");
    let mut next = 1u64;
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH));
    for (name, ids) in [("put_batch_1000", false), ("put_batch_1000_with_request_ids", true)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let e = entries(next, ids);
                    next += BATCH;
                    e
                },
                |batch| {
                    let s = stream::iter(batch.into_iter().map(|e| Ok((e, None))));
                    rt.block_on(sm.apply(s)).expect("apply");
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);

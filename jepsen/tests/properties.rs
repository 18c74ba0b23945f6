//! Property tests.
//!
//! - Histories generated from a sequential model with random overlaps (and crashes, failed
//!   CAS, several keys) are always linearizable.
//! - Histories with a violation planted by design are always caught.
//! - Writing a history as JSON lines and as EDN and parsing it back gives the same operations
//!   and the same verdict.
//! - On small random histories (any verdict), the checker agrees with a brute-force search
//!   over all orders, and its failure explanation holds: the prefix it calls linearizable
//!   is, the one after it is not, and its window alone cannot be linearised.

use std::collections::BTreeSet;

use meridian_jepsen::generate::{generate, GenConfig, Violation};
use meridian_jepsen::{
    check_history, parse_edn, parse_jsonl, write_edn, write_jsonl, Budget, Event, EventType,
    Function, History, ModelKind, OpKind, Outcome, ProcessId, Value, Verdict,
};
use proptest::prelude::*;

fn config() -> impl Strategy<Value = GenConfig> {
    (1usize..400, 0usize..5, 1usize..12, 0u64..60, any::<u64>()).prop_map(
        |(ops, keys, processes, info_per_mille, seed)| GenConfig {
            ops,
            keys,
            processes,
            info_per_mille,
            seed,
            violation: None,
        },
    )
}

fn verdict(h: &History) -> Verdict {
    check_history(h, ModelKind::CasRegister, Budget::unlimited())
        .expect("cas-register supports every operation")
        .verdict
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn histories_from_a_sequential_model_are_linearizable(config in config()) {
        let h = generate(&config);
        prop_assert_eq!(verdict(&h), Verdict::Linearizable, "seed {}", config.seed);
    }

    #[test]
    fn planted_violations_are_always_caught(
        config in config(),
        stale_cas in any::<bool>(),
    ) {
        let violation = if stale_cas { Violation::StaleCas } else { Violation::StaleRead };
        let h = generate(&GenConfig { violation: Some(violation), ..config });
        prop_assert_eq!(verdict(&h), Verdict::NotLinearizable, "seed {}", config.seed);
    }

    #[test]
    fn both_formats_round_trip_to_the_same_verdict(
        config in config(),
        violation in proptest::option::of(Just(Violation::StaleRead)),
    ) {
        let h = generate(&GenConfig { violation, ..config });
        let from_jsonl = parse_jsonl(&write_jsonl(&h)).expect("own JSON lines parse");
        let from_edn = parse_edn(&write_edn(&h)).expect("own EDN parses");
        prop_assert_eq!(from_jsonl.ops(), h.ops());
        prop_assert_eq!(from_edn.ops(), h.ops());
        let expected = verdict(&h);
        prop_assert_eq!(verdict(&from_jsonl), expected);
        prop_assert_eq!(verdict(&from_edn), expected);
    }
}

/// A small random history: each operation on its own process (so any interleaving is a
/// valid history), values from a tiny domain so that reads often match some write.
#[derive(Debug, Clone)]
struct RandomOp {
    kind: OpKind,
    outcome: Outcome,
    /// Positions of invocation and completion among all events (completion ignored when
    /// pending).
    slots: (usize, usize),
}

fn small_value() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![Just(None), (1i64..4).prop_map(Some)]
}

fn random_op() -> impl Strategy<Value = RandomOp> {
    let kind = prop_oneof![
        small_value().prop_map(|value| OpKind::Read { value }),
        small_value().prop_map(|value| OpKind::Write { value }),
        (small_value(), small_value()).prop_map(|(expected, new)| OpKind::Cas { expected, new }),
    ];
    let outcome = prop_oneof![
        6 => Just(Outcome::Ok),
        1 => Just(Outcome::Fail),
        1 => Just(Outcome::Info),
        1 => Just(Outcome::Pending),
    ];
    (kind, outcome, 0usize..1000, 0usize..1000).prop_map(|(kind, outcome, a, b)| RandomOp {
        kind,
        outcome,
        slots: (a.min(b), a.max(b)),
    })
}

fn build(ops: &[RandomOp]) -> History {
    // (position, tie-break, event)
    let mut events: Vec<(usize, usize, Event)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (f, invoke_value, done_value) = match op.kind {
            OpKind::Read { value } => {
                (Function::Read, Value::Nil, value.map_or(Value::Nil, Value::Int))
            }
            OpKind::Write { value } => {
                let v = value.map_or(Value::Nil, Value::Int);
                (Function::Write, v, v)
            }
            OpKind::Cas { expected, new } => {
                (Function::Cas, Value::Pair(expected, new), Value::Pair(expected, new))
            }
        };
        let event = |kind, value| Event {
            process: ProcessId(i as u64),
            kind,
            f,
            key: None,
            value,
            time_ns: None,
            line: 0,
        };
        events.push((op.slots.0, 2 * i, event(EventType::Invoke, invoke_value)));
        let done = match op.outcome {
            Outcome::Ok => Some(EventType::Ok),
            Outcome::Fail => Some(EventType::Fail),
            Outcome::Info => Some(EventType::Info),
            Outcome::Pending => None,
        };
        if let Some(kind) = done {
            events.push((op.slots.1, 2 * i + 1, event(kind, done_value)));
        }
    }
    events.sort_by_key(|(pos, tie, _)| (*pos, *tie));
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, (_, _, mut e))| {
            e.line = i + 1;
            e
        })
        .collect();
    History::from_events(events).expect("one op per process is always well-formed")
}

/// One operation for the brute force: `ret: None` = optional (may happen any time after
/// `call`, or never).
#[derive(Debug, Clone, Copy)]
struct BruteOp {
    kind: OpKind,
    call: usize,
    ret: Option<usize>,
}

/// All values a register can hold in these histories, plus one nobody writes.
const DOMAIN: [Option<i64>; 5] = [None, Some(1), Some(2), Some(3), Some(99)];

fn step(state: Option<i64>, kind: OpKind) -> Option<Option<i64>> {
    match kind {
        OpKind::Read { value } => (state == value).then_some(state),
        OpKind::Write { value } => Some(value),
        OpKind::Cas { expected, new } => (state == expected).then_some(new),
    }
}

/// Tries every order of every subset of optional operations, from each initial state.
fn brute_force(ops: &[BruteOp], inits: &[Option<i64>]) -> bool {
    fn go(ops: &[BruteOp], done: &mut Vec<bool>, state: Option<i64>) -> bool {
        if ops.iter().zip(done.iter()).all(|(op, d)| *d || op.ret.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            // i may go next only if no pending operation returned before i was called.
            let blocked = ops
                .iter()
                .zip(done.iter())
                .any(|(o, d)| !*d && o.ret.is_some_and(|r| r < ops[i].call));
            if blocked {
                continue;
            }
            if let Some(next) = step(state, ops[i].kind) {
                done[i] = true;
                if go(ops, done, next) {
                    return true;
                }
                done[i] = false;
            }
        }
        false
    }
    inits.iter().any(|&init| go(ops, &mut vec![false; ops.len()], init))
}

/// The brute-force view of the prefix of `h` cut at event `t1` (or all of it): the same
/// rules as the checker, written independently.
fn brute_ops(h: &History, t0: Option<usize>, t1: Option<usize>) -> Vec<BruteOp> {
    let mut out = Vec::new();
    for op in h.ops() {
        if op.outcome == Outcome::Fail || t1.is_some_and(|t1| op.invoke_event > t1) {
            continue;
        }
        let ok_done = if op.outcome == Outcome::Ok { op.complete_event } else { None };
        let before = t0.is_some_and(|t0| op.invoke_event < t0);
        if before && ok_done.is_some_and(|c| t0.is_some_and(|t0| c < t0)) {
            continue;
        }
        let inside = ok_done.filter(|&c| t1.is_none_or(|t1| c <= t1));
        let ret = if before { None } else { inside };
        if ret.is_none() && matches!(op.kind, OpKind::Read { .. }) {
            continue;
        }
        out.push(BruteOp { kind: op.kind, call: op.invoke_event, ret });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn checker_agrees_with_brute_force_on_small_histories(
        ops in proptest::collection::vec(random_op(), 0..7),
    ) {
        let h = build(&ops);
        let result = check_history(&h, ModelKind::CasRegister, Budget::unlimited())
            .expect("cas-register");
        let expected = brute_force(&brute_ops(&h, None, None), &[None]);
        prop_assert_eq!(result.verdict == Verdict::Linearizable, expected, "{:#?}", h.ops());
        let Some(failure) = result.keys.first().and_then(|k| k.failure.clone()) else {
            return Ok(());
        };
        // The prefix called linearizable is; adding the stuck completion breaks it.
        if let Some(end) = failure.linearizable_prefix.end_event {
            prop_assert!(brute_force(&brute_ops(&h, None, Some(end)), &[None]));
        }
        prop_assert!(!brute_force(&brute_ops(&h, None, Some(failure.window_end_event)), &[None]));
        let stuck = &h.ops()[failure.stuck_op.0];
        prop_assert_eq!(stuck.complete_event, Some(failure.window_end_event));
        // The window alone fails from every initial state (or from nil if it starts the key).
        let first = h.ops().iter().filter(|o| o.outcome != Outcome::Fail).map(|o| o.invoke_event).min();
        let (t0, inits): (Option<usize>, &[Option<i64>]) =
            if Some(failure.window_start_event) == first {
                (None, &[None])
            } else {
                (Some(failure.window_start_event), &DOMAIN)
            };
        let window = brute_ops(&h, t0, Some(failure.window_end_event));
        prop_assert!(!brute_force(&window, inits), "window {:?}", failure.window);
        // The checker's window may leave out optional writes nobody observes.
        let ids: BTreeSet<usize> = failure.window.iter().map(|id| id.0).collect();
        prop_assert!(ids.len() <= window.len());
        prop_assert!(ids.contains(&failure.stuck_op.0));
    }
}

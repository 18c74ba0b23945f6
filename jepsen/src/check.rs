//! The checker: splits a history per key, searches each key in parallel, and explains a
//! failure.
//!
//! P-compositionality: a history of independent registers is linearizable iff each key's
//! sub-history is (Herlihy & Wing's locality), so keys are checked separately, on a pool of
//! scoped threads, largest key first.
//!
//! Per key:
//! 1. a cheap pre-pass finds an `ok` read of a value that no operation invoked before the read
//!    returned could have written (definitely not linearizable, no search needed);
//! 2. otherwise the Wing–Gong–Lowe search (module `wgl`) runs on the whole sub-history:
//!    `fail` operations are dropped, reads that did not complete `ok` are dropped, `info` and
//!    pending writes and CAS may take effect any time after their invocation or never;
//! 3. on a failure, the analysis finds (a) the longest linearizable prefix (cut at an `ok`
//!    completion) and the operation whose completion first makes the history
//!    non-linearizable (the "stuck" operation): both come from the failed search's frontier
//!    (see below); and (b) the smallest
//!    window ending at that completion: the latest start `t0` such that the window
//!    `[t0, stuck completion]` alone cannot be linearised, by a galloping then binary search
//!    over `t0` (assuming that a window fails if a shorter one ending there does). In a
//!    window the register starts in an unknown state (unless `t0` is the key's first event),
//!    operations straddling either edge are optional (they may have happened outside) and
//!    reads straddling an edge are dropped. Those relaxations make a window's failure a proof
//!    that the whole history fails; see README.md for the argument.
//!
//! Why the frontier gives the longest linearizable prefix: the prefix cut at position `c`
//! (operations completing later become optional, reads among them are dropped) is
//! linearizable iff some configuration reachable in the whole history's search has
//! linearised every operation returning by `c`. (If: truncate that configuration's order
//! before its first operation called after `c`; by then everything returning by `c` was
//! linearised, because an operation is only linearised when nothing unlinearised returned
//! before its call. Only if: a linearisation of the prefix is a path of minimal operations
//! in the whole history's search too.) A failed search has visited every reachable
//! configuration (the read pruning only skips configurations dominated by one it visits),
//! and the latest return entry any scan stopped at is therefore the first `c` for which
//! no such configuration exists.
//!
//! Budget: one deadline for the whole check and a cap on each search's memoisation cache.
//! A key whose search runs out of budget is `unknown`; an analysis that runs out keeps the
//! verdict (it came from a complete search) and reports the best window verified so far.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{History, Key, Op, OpId, OpKind, Outcome};
use crate::model::{CasRegister, Model, ModelKind, Register};
use crate::wgl::{self, Limits, SearchOp, SearchOutcome, UnknownReason};

/// Default time budget for a whole check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default cap on memoised configurations per search. Measured peak: about 190 bytes of
/// resident memory per entry (hash table slot and growth slack, the compact set, the
/// allocator's overhead), so one search stays under ~0.75 GB; at most one search per core
/// (and at most [`MAX_WORKERS`]) runs at once.
pub const DEFAULT_MAX_CACHE_ENTRIES: usize = 4_000_000;

/// Most threads checking keys at once.
pub const MAX_WORKERS: usize = 64;

/// What a check may spend before answering "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Wall-clock time for the whole check, analysis included; `None`: unlimited.
    pub timeout: Option<Duration>,
    /// Memoised configurations one key's search may hold (bounds memory).
    pub max_cache_entries: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { timeout: Some(DEFAULT_TIMEOUT), max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES }
    }
}

impl Budget {
    /// No deadline and no cache cap: only for histories known to be small.
    pub fn unlimited() -> Self {
        Budget { timeout: None, max_cache_entries: usize::MAX }
    }
}

/// A verdict, for the whole history or one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Some linearisation exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The budget ran out before an answer.
    Unknown,
}

impl Verdict {
    /// The name used in reports (`linearizable`, `not-linearizable`, `unknown`).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not-linearizable",
            Verdict::Unknown => "unknown",
        }
    }
}

/// The result of checking a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Not linearizable if any key is not; else unknown if any key is; else linearizable.
    pub verdict: Verdict,
    /// The model checked against.
    pub model: ModelKind,
    /// Operations in the history (all outcomes).
    pub op_count: usize,
    /// One result per key, ordered by key (the key-less register first).
    pub keys: Vec<KeyResult>,
    /// Wall-clock time of the check in milliseconds.
    pub elapsed_ms: u64,
}

/// The result for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyResult {
    /// The key (`None` for a single-register history).
    pub key: Option<Key>,
    /// This key's verdict.
    pub verdict: Verdict,
    /// Operations on this key (all outcomes).
    pub op_count: usize,
    /// Memoised configurations of the main search when it ended.
    pub cache_entries: usize,
    /// Why the verdict is unknown, if it is.
    pub unknown_reason: Option<UnknownReason>,
    /// The explanation of a failure, if the verdict is not linearizable.
    pub failure: Option<Failure>,
}

/// Why a key is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The operation whose `ok` completion ends the shortest non-linearizable prefix.
    pub stuck_op: OpId,
    /// The longest linearizable prefix: it ends just before the stuck operation completes.
    pub linearizable_prefix: Prefix,
    /// The operations of the smallest window found that cannot be linearised on its own
    /// (with the relaxations of the module docs), in invocation order.
    pub window: Vec<OpId>,
    /// Index in [`History::events`] of the window's first event.
    pub window_start_event: usize,
    /// Index in [`History::events`] of the window's last event (the stuck completion).
    pub window_end_event: usize,
    /// Whether both binary searches completed (false: the budget ran out during analysis and
    /// the window, though verified, may be larger than necessary).
    pub analysis_complete: bool,
}

/// A prefix of one key's history, cut after an `ok` completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Prefix {
    /// Operations of this key that completed `ok` within the prefix.
    pub ok_ops: usize,
    /// Index in [`History::events`] of the prefix's last completion (`None`: empty prefix).
    pub end_event: Option<usize>,
}

/// Why a history cannot be checked against a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The history calls a function the model does not define.
    #[error("line {line}: the {model} model has no {f} operation (use --model cas-register)")]
    UnsupportedOperation {
        /// Line of the invocation.
        line: usize,
        /// The function.
        f: crate::history::Function,
        /// The model.
        model: ModelKind,
    },
}

/// Checks `history` against `model` within `budget`, key by key in parallel.
pub fn check_history(
    history: &History,
    model: ModelKind,
    budget: Budget,
) -> Result<CheckResult, CheckError> {
    let started = Instant::now();
    if let Some(op) = history.ops().iter().find(|op| !model.supports(op.kind.function())) {
        return Err(CheckError::UnsupportedOperation {
            line: history.events()[op.invoke_event].line,
            f: op.kind.function(),
            model,
        });
    }
    let mut per_key: BTreeMap<Option<&str>, Vec<&Op>> = BTreeMap::new();
    for op in history.ops() {
        per_key.entry(op.key.as_deref()).or_default().push(op);
    }
    let keys: Vec<(Option<&str>, Vec<&Op>)> = per_key.into_iter().collect();
    let ctx = KeyContext {
        deadline: budget.timeout.map(|t| started + t),
        max_cache_entries: budget.max_cache_entries,
    };
    let results = check_keys_in_parallel(&keys, model, &ctx);
    let verdict = if results.iter().any(|r| r.verdict == Verdict::NotLinearizable) {
        Verdict::NotLinearizable
    } else if results.iter().any(|r| r.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    Ok(CheckResult {
        verdict,
        model,
        op_count: history.ops().len(),
        keys: results,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Limits shared by every key of one check.
struct KeyContext {
    deadline: Option<Instant>,
    max_cache_entries: usize,
}

impl KeyContext {
    fn limits(&self) -> Limits {
        Limits { deadline: self.deadline, max_cache_entries: self.max_cache_entries }
    }
}

/// Runs [`check_key`] over all keys on a scoped thread pool; results in key order.
fn check_keys_in_parallel(
    keys: &[(Option<&str>, Vec<&Op>)],
    model: ModelKind,
    ctx: &KeyContext,
) -> Vec<KeyResult> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(keys[i].1.len()));
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.min(MAX_WORKERS).min(keys.len()).max(1);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return done;
            };
            let (key, ops) = &keys[i];
            let result = match model {
                ModelKind::Register => check_key(&Register, ops, ctx),
                ModelKind::CasRegister => check_key(&CasRegister, ops, ctx),
            };
            done.push((i, KeyResult { key: key.map(str::to_owned), ..result }));
        }
    };
    let mut results: Vec<(usize, KeyResult)> = if workers == 1 {
        work()
    } else {
        thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    };
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One key's operations as the checker sees them.
#[derive(Debug, Clone, Copy)]
struct KeyOp {
    id: OpId,
    kind: OpKind,
    outcome: Outcome,
    invoke: usize,
    complete: Option<usize>,
}

impl KeyOp {
    fn from_op(op: &Op) -> Self {
        KeyOp {
            id: op.id,
            kind: op.kind,
            outcome: op.outcome,
            invoke: op.invoke_event,
            complete: op.complete_event,
        }
    }

    /// The completion position of an `ok` operation.
    fn ok_completion(&self) -> Option<usize> {
        (self.outcome == Outcome::Ok).then_some(self.complete).flatten()
    }
}

/// Checks one key; the returned `key` field is filled in by the caller.
fn check_key<M: Model>(model: &M, ops: &[&Op], ctx: &KeyContext) -> KeyResult {
    let ops: Vec<KeyOp> = ops.iter().map(|op| KeyOp::from_op(op)).collect();
    let mut result = KeyResult {
        key: None,
        verdict: Verdict::Linearizable,
        op_count: ops.len(),
        cache_entries: 0,
        unknown_reason: None,
        failure: None,
    };
    // After the pre-pass finds an impossible read, only the prefix up to it is searched
    // (it fails): that is shorter, and its frontier still names the first failure.
    let impossible = impossible_read(&ops);
    let (search_ops, ids) = window_ops(&ops, None, impossible);
    let report = wgl::search(model, model.init(), &search_ops, &ctx.limits());
    result.cache_entries = report.cache_entries;
    let (stuck, complete) = match (report.outcome, report.frontier, impossible) {
        (SearchOutcome::Linearizable, _, None) => return result,
        (SearchOutcome::Unknown(reason), _, None) => {
            result.verdict = Verdict::Unknown;
            result.unknown_reason = Some(reason);
            return result;
        }
        (SearchOutcome::NotLinearizable, Some(frontier), _) => (ids[frontier], true),
        (outcome, _, _) => {
            // Either the pre-pass's proof stands and the search ran out of budget, or (a bug)
            // the search disagreed or failed without a frontier. The verdict is not in
            // doubt; the failure is placed at the impossible read, else at the last
            // completion, and marked as not verified.
            debug_assert!(impossible.is_some(), "a failed search always records a frontier");
            debug_assert!(
                outcome != SearchOutcome::Linearizable,
                "the search linearised a read the pre-pass proved impossible"
            );
            let done = impossible.or_else(|| ops.iter().filter_map(KeyOp::ok_completion).max());
            let stuck = ops.iter().find(|op| done.is_some() && op.ok_completion() == done);
            match stuck {
                Some(op) => (op.id, false),
                None => {
                    result.verdict = Verdict::NotLinearizable;
                    return result;
                }
            }
        }
    };
    result.verdict = Verdict::NotLinearizable;
    result.failure = Some(analyse_failure(model, &ops, stuck, complete, ctx));
    result
}

/// The pre-pass: the first `ok` read (by completion) of a non-nil value that no write or CAS
/// invoked before the read completed could have written. Such a read can never be
/// linearised, whatever the interleaving. Returns its completion position.
fn impossible_read(ops: &[KeyOp]) -> Option<usize> {
    // Earliest invocation of an operation (not failed) that writes each value.
    let mut first_writer: rustc_hash::FxHashMap<i64, usize> = Default::default();
    for op in ops.iter().filter(|op| op.outcome != Outcome::Fail) {
        let written = match op.kind {
            OpKind::Write { value } => value,
            OpKind::Cas { new, .. } => new,
            OpKind::Read { .. } => None,
        };
        if let Some(v) = written {
            first_writer.entry(v).or_insert(op.invoke);
        }
    }
    ops.iter()
        .filter_map(|op| match (op.kind, op.ok_completion()) {
            (OpKind::Read { value: Some(v) }, Some(done)) => {
                let writable = first_writer.get(&v).is_some_and(|&w| w < done);
                (!writable).then_some(done)
            }
            _ => None,
        })
        .min()
}

/// The search input for the window `[t0, t1]` of one key (event positions; `None`: open).
/// Returns the operations and their ids. Relaxations (see the module docs): operations
/// invoked before `t0` that had not completed before it, and operations still running at
/// `t1`, are optional (no return); reads among them are dropped; `fail` operations are
/// always dropped.
fn window_ops(ops: &[KeyOp], t0: Option<usize>, t1: Option<usize>) -> (Vec<SearchOp>, Vec<OpId>) {
    let mut search_ops = Vec::new();
    let mut ids = Vec::new();
    for op in ops {
        if op.outcome == Outcome::Fail || t1.is_some_and(|t1| op.invoke > t1) {
            continue;
        }
        let is_read = matches!(op.kind, OpKind::Read { .. });
        let straddles_start = t0.is_some_and(|t0| op.invoke < t0);
        let done_before_start = t0.is_some_and(|t0| op.ok_completion().is_some_and(|c| c < t0));
        if done_before_start {
            continue;
        }
        let completed_inside = op.ok_completion().filter(|&c| t1.is_none_or(|t1| c <= t1));
        let ret = match (straddles_start, completed_inside) {
            (false, Some(c)) => Some(c as u64),
            _ if is_read => continue,
            _ => None,
        };
        search_ops.push(SearchOp { kind: op.kind, call: op.invoke as u64, ret });
        ids.push(op.id);
    }
    drop_unobserved_optional_writes(&mut search_ops, &mut ids);
    (search_ops, ids)
}

/// Drops optional writes and CAS (no return) whose written value no read or CAS of the
/// search could observe. Sound and complete: in a linearisation that includes such an
/// operation, the state after it is a value that no read returns and no CAS expects, so the
/// next operation is a write (or there is none); removing the operation leaves every other
/// step legal. Without it, every indeterminate operation doubles the configurations the
/// search may visit (linearised here, or not yet), which dominates failing searches.
fn drop_unobserved_optional_writes(search_ops: &mut Vec<SearchOp>, ids: &mut Vec<OpId>) {
    let observed: rustc_hash::FxHashSet<Option<i64>> = search_ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Read { value } => Some(value),
            OpKind::Cas { expected, .. } => Some(expected),
            OpKind::Write { .. } => None,
        })
        .collect();
    let dead = |op: &SearchOp| {
        op.ret.is_none()
            && match op.kind {
                OpKind::Write { value } => !observed.contains(&value),
                OpKind::Cas { new, .. } => !observed.contains(&new),
                OpKind::Read { .. } => false,
            }
    };
    let mut keep = search_ops.iter().map(|op| !dead(op));
    ids.retain(|_| keep.next().unwrap_or(true));
    search_ops.retain(|op| !dead(op));
}

/// Explains the failure of a key whose shortest non-linearizable prefix ends with the `ok`
/// completion of `stuck`: the longest linearizable prefix is everything before that
/// completion, and the smallest failing window ends there. `complete` is false when the
/// stuck operation comes from the pre-pass alone (the prefix is then not verified).
fn analyse_failure<M: Model>(
    model: &M,
    ops: &[KeyOp],
    stuck_op: OpId,
    prefix_verified: bool,
    ctx: &KeyContext,
) -> Failure {
    let t1 = ops
        .iter()
        .find(|op| op.id == stuck_op)
        .and_then(KeyOp::ok_completion)
        .unwrap_or(usize::MAX);
    let mut prefix_cuts: Vec<usize> =
        ops.iter().filter_map(KeyOp::ok_completion).filter(|&c| c < t1).collect();
    prefix_cuts.sort_unstable();
    let limits = ctx.limits();
    let starts: Vec<usize> = {
        let mut s: Vec<usize> = ops
            .iter()
            .filter(|op| op.outcome != Outcome::Fail && op.invoke <= t1)
            .map(|op| op.invoke)
            .collect();
        s.sort_unstable();
        s
    };
    // The smallest window is usually a few operations long, and windows from an unknown
    // state cost more the longer they are: gallop back from the stuck completion (1, 2, 4..
    // starts back), then binary-search between the last start that passed and the first
    // that failed. Invariant: the window from starts[lo_s] fails (index 0 is the failing
    // prefix itself); the one from starts[hi_s] does not (or hi_s is past the end).
    let (mut lo_s, mut hi_s) = (0, starts.len());
    let mut complete = true;
    let fails_from = |j: usize| {
        let (search_ops, _) = window_ops(ops, Some(starts[j]), Some(t1));
        wgl::search(model, model.unknown(), &search_ops, &limits).outcome
    };
    let mut back = 1;
    while complete && back < starts.len() {
        let j = starts.len() - back;
        match fails_from(j) {
            SearchOutcome::NotLinearizable => {
                lo_s = j;
                break;
            }
            SearchOutcome::Linearizable => hi_s = j,
            SearchOutcome::Unknown(_) => complete = false,
        }
        back *= 2;
    }
    while complete && hi_s - lo_s > 1 {
        let mid = lo_s + (hi_s - lo_s) / 2;
        match fails_from(mid) {
            SearchOutcome::NotLinearizable => lo_s = mid,
            SearchOutcome::Linearizable => hi_s = mid,
            SearchOutcome::Unknown(_) => complete = false,
        }
    }
    let t0 = starts.get(lo_s).copied().unwrap_or(t1);
    let window = if lo_s == 0 {
        window_ops(ops, None, Some(t1)).1
    } else {
        window_ops(ops, Some(t0), Some(t1)).1
    };
    Failure {
        stuck_op,
        linearizable_prefix: Prefix {
            ok_ops: prefix_cuts.len(),
            end_event: prefix_cuts.last().copied(),
        },
        window,
        window_start_event: t0,
        window_end_event: t1,
        analysis_complete: prefix_verified && complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::{ev, history};
    use crate::history::{EventType::*, Function::*, Value};

    fn check(h: &History) -> CheckResult {
        check_history(h, ModelKind::CasRegister, Budget::unlimited()).expect("supported model")
    }

    #[test]
    fn empty_history_is_linearizable() {
        let result = check(&History::default());
        assert_eq!(result.verdict, Verdict::Linearizable);
        assert!(result.keys.is_empty());
    }

    #[test]
    fn register_model_rejects_cas_with_its_line() {
        let h = history(vec![ev(0, Invoke, Cas, Value::Pair(Some(1), Some(2)))]).expect("valid");
        let err = check_history(&h, ModelKind::Register, Budget::unlimited()).expect_err("cas");
        assert_eq!(
            err,
            CheckError::UnsupportedOperation { line: 1, f: Cas, model: ModelKind::Register }
        );
    }

    #[test]
    fn stale_read_names_the_stuck_read_and_a_two_op_window() {
        let h = history(vec![
            ev(0, Invoke, Write, Value::Int(1)),
            ev(0, Ok, Write, Value::Int(1)),
            ev(0, Invoke, Write, Value::Int(2)),
            ev(0, Ok, Write, Value::Int(2)),
            ev(1, Invoke, Read, Value::Nil),
            ev(1, Ok, Read, Value::Int(1)),
        ])
        .expect("valid");
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::NotLinearizable);
        let failure = result.keys[0].failure.as_ref().expect("failure");
        assert_eq!(failure.stuck_op, OpId(2));
        assert_eq!(failure.linearizable_prefix.ok_ops, 2);
        assert_eq!(failure.linearizable_prefix.end_event, Some(3));
        assert_eq!(failure.window, vec![OpId(1), OpId(2)]);
        assert_eq!((failure.window_start_event, failure.window_end_event), (2, 5));
        assert!(failure.analysis_complete);
    }

    #[test]
    fn read_of_a_value_never_written_is_caught_by_the_pre_pass() {
        let h = history(vec![
            ev(0, Invoke, Write, Value::Int(1)),
            ev(0, Ok, Write, Value::Int(1)),
            ev(1, Invoke, Read, Value::Nil),
            ev(1, Ok, Read, Value::Int(9)),
        ])
        .expect("valid");
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::NotLinearizable);
        let failure = result.keys[0].failure.as_ref().expect("failure");
        assert_eq!(failure.stuck_op, OpId(1));
        assert_eq!(failure.window, vec![OpId(0), OpId(1)]);
        assert!(failure.analysis_complete);
    }

    #[test]
    fn window_keeps_operations_that_straddle_its_start() {
        // w1 is still running when the window opens, w2 completes before r2 and r=1 is stale
        // only if w1 is linearised before w2: the window must keep w1 optional, not drop it.
        let h = history(vec![
            ev(0, Invoke, Write, Value::Int(1)),
            ev(1, Invoke, Write, Value::Int(2)),
            ev(1, Ok, Write, Value::Int(2)),
            ev(2, Invoke, Read, Value::Nil),
            ev(0, Ok, Write, Value::Int(1)),
            ev(2, Ok, Read, Value::Int(1)),
            ev(3, Invoke, Read, Value::Nil),
            ev(3, Ok, Read, Value::Int(2)),
        ])
        .expect("valid");
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::NotLinearizable);
        let failure = result.keys[0].failure.as_ref().expect("failure");
        assert_eq!(failure.stuck_op, OpId(3));
        assert!(failure.window.contains(&OpId(0)), "window {:?}", failure.window);
        assert!(failure.window.contains(&OpId(3)));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut events = vec![
            ev(0, Invoke, Write, Value::Int(1)),
            ev(0, Ok, Write, Value::Int(1)),
            ev(1, Invoke, Read, Value::Nil),
            ev(1, Ok, Read, Value::Int(1)),
        ];
        // Same value on another key: key b never saw a write of 1.
        events[0].key = Some("a".into());
        events[2].key = Some("b".into());
        let h = history(events).expect("valid");
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::NotLinearizable);
        assert_eq!(result.keys.len(), 2);
        assert_eq!(result.keys[0].verdict, Verdict::Linearizable);
        assert_eq!(result.keys[1].key.as_deref(), Some("b"));
        assert_eq!(result.keys[1].verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn exhausted_cache_budget_gives_unknown() {
        let mut events = Vec::new();
        for p in 0..20 {
            events.push(ev(p, Invoke, Write, Value::Int(p as i64)));
        }
        for p in 0..20 {
            events.push(ev(p, Ok, Write, Value::Int(p as i64)));
        }
        let h = history(events).expect("valid");
        let budget = Budget { timeout: None, max_cache_entries: 3 };
        let result = check_history(&h, ModelKind::CasRegister, budget).expect("model");
        assert_eq!(result.verdict, Verdict::Unknown);
        assert_eq!(result.keys[0].unknown_reason, Some(UnknownReason::CacheLimit));
    }
}

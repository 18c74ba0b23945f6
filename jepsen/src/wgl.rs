//! The Wing–Gong–Lowe linearizability search for one key's operations.
//!
//! Input: operations with a call position and a return position (`None` = never returns:
//! `info` or pending writes, which may take effect at any point after their call, or never).
//! Output: whether some total order of the operations respects real time (an operation
//! that returned before another was called comes first) and the model's sequential
//! semantics, with every operation that has a return position included.
//!
//! The algorithm (Wing & Gong 1993, with Lowe's memoisation, "Testing for linearizability",
//! 2017; the same structure as Horn & Kroening's and Porcupine's checkers):
//! - a doubly linked list of call and return entries in time order; "lifting" an operation
//!   removes both of its entries, "unlifting" puts them back (O(1) each);
//! - a configuration's candidates are the call entries before the first return entry (an
//!   operation may go next only if nothing unlinearised returned before it was called);
//!   linearising one lifts it, pushes it on the backtracking stack and starts the next
//!   configuration; when every candidate has failed, backtrack (pop, unlift, try the next
//!   candidate of the configuration popped to);
//! - candidate order (it changes how soon a linearisation is found, never the verdict):
//!   a forced read first (below); else the operation *due* first, the owner of the first
//!   return entry ("just in time", after Lowe); then candidates after which the due
//!   operation could go at once; then the rest in call order. Trying the due operation
//!   first keeps the search from linearising writes long before they are needed, which is
//!   what made plain call-order scanning explode beyond ~15 concurrent processes per key;
//! - memoisation: a configuration (set of linearised operations, model state) that was seen
//!   before already failed, so it is never explored twice. This is what keeps the search
//!   near-linear on real histories;
//! - pruning: a read that is legal now and leaves the state as it is is linearised now
//!   without exploring alternatives (moving such a read to the front of any solution keeps
//!   it a solution: it changes no state, here or where it was), so popping it backtracks
//!   further, and such a read whose successor configuration is already cached fails its
//!   configuration at once. A read that binds the unknown state is a change and is
//!   explored like a write;
//! - the frontier: a failed search has visited every reachable configuration, so the latest
//!   first return entry of any visited configuration names the operation that can never be
//!   linearised in time, which gives the shortest failing prefix for free;
//! - indeterminate operations have no return entry: they may be linearised whenever they
//!   are candidates, or never. The search succeeds as soon as every operation with a
//!   return entry is linearised, whatever indeterminate ones are left.
//!
//! Memory: the linearised set is a bitset (`Vec<u64>`) updated in place, hashed
//! incrementally (Zobrist: XOR of one random word per operation). A cache entry stores the
//! set in a canonical, compact form: the index of the first unlinearised completed
//! operation (`base`; all before it are linearised) and only the words from `base` up to the
//! last operation called before `base` returned (no other can be linearised while `base`
//! is not), plus the bitset of indeterminate operations. An entry is therefore a few words
//! whatever the history length. The number of entries is capped by [`Limits`]; hitting the
//! cap or the deadline yields [`SearchOutcome::Unknown`], never a verdict.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

use rustc_hash::FxHasher;
use serde::Serialize;

use crate::history::OpKind;
use crate::model::Model;

/// Steps between two deadline checks (reading the clock each step would dominate).
const DEADLINE_CHECK_INTERVAL_STEPS: u64 = 1024;

/// The most operations one search takes: list nodes are `u32` with two sentinels.
pub(crate) const MAX_SEARCH_OPS: usize = 1 << 30;

/// Bits in a bitset word.
const WORD_BITS: usize = 64;

/// Sentinel for "no return entry" in the list.
const NONE: u32 = u32::MAX;

/// Head sentinel node of the entry list.
const HEAD: u32 = 0;

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SearchOp {
    /// What the operation does.
    pub kind: OpKind,
    /// Position of its invocation (any increasing clock: event indices here).
    pub call: u64,
    /// Position of its completion; `None` if it may take effect any time after `call`, or
    /// never (`info`, pending, or cut off by a window).
    pub ret: Option<u64>,
}

/// What bounds one search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Give up (unknown) after this instant.
    pub deadline: Option<Instant>,
    /// Give up (unknown) once the memoisation cache holds more entries than this.
    pub max_cache_entries: usize,
}

/// Why a search gave up without a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownReason {
    /// The deadline passed.
    Timeout,
    /// The memoisation cache reached its entry limit.
    CacheLimit,
    /// The key has more operations than one search can index.
    TooLarge,
}

impl std::fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnknownReason::Timeout => "the time budget ran out",
            UnknownReason::CacheLimit => "the memoisation cache reached its entry limit",
            UnknownReason::TooLarge => "the key has too many operations for one search",
        })
    }
}

/// The verdict of one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    /// A linearisation exists.
    Linearizable,
    /// The search space was exhausted: none exists.
    NotLinearizable,
    /// The budget ran out first.
    Unknown(UnknownReason),
}

/// A verdict with the effort it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SearchReport {
    /// The verdict.
    pub outcome: SearchOutcome,
    /// Configurations memoised when the search ended.
    pub cache_entries: usize,
    /// After [`SearchOutcome::NotLinearizable`]: the operation (index into the search's ops)
    /// with the latest return that some configuration reached without linearising it. No
    /// reachable configuration linearises every operation returning up to it, so the
    /// history cut just after its return is the shortest prefix that is not linearizable,
    /// and every shorter prefix is (see `check` for the argument).
    pub frontier: Option<usize>,
}

/// The call/return entries as a doubly linked list over arrays. Node `HEAD` and node
/// `tail` are sentinels; nodes `1..tail` are entries in time order.
struct EntryList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The operation (index into the search's ops) of each entry node.
    op: Vec<u32>,
    /// For a call entry, its return entry node (`NONE` if it never returns); for a return
    /// entry, `NONE`.
    partner: Vec<u32>,
    is_call: Vec<bool>,
    /// The call entry node of each operation.
    call_node: Vec<u32>,
    tail: u32,
}

impl EntryList {
    fn new(ops: &[SearchOp]) -> Self {
        // (position, order at equal positions: calls first, so ties count as concurrent).
        let mut entries: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(NONE);
            entries.push((op.call, 0, i));
            if let Some(ret) = op.ret {
                entries.push((ret, 1, i));
            }
        }
        entries.sort_unstable();
        let nodes = entries.len() + 2;
        let tail = u32::try_from(nodes - 1).unwrap_or(NONE);
        let mut list = EntryList {
            next: (1..=nodes as u32).collect(),
            prev: (0..nodes as u32).map(|n| n.wrapping_sub(1)).collect(),
            op: vec![NONE; nodes],
            partner: vec![NONE; nodes],
            is_call: vec![false; nodes],
            call_node: vec![NONE; ops.len()],
            tail,
        };
        for (n, &(_, order, op)) in entries.iter().enumerate() {
            let node = n as u32 + 1;
            list.op[node as usize] = op;
            if order == 0 {
                list.is_call[node as usize] = true;
                list.call_node[op as usize] = node;
            } else {
                list.partner[list.call_node[op as usize] as usize] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        self.prev[n as usize] = node;
    }

    /// Removes a call entry and its return entry.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let ret = self.partner[call as usize];
        if ret != NONE {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`EntryList::lift`] (lifts are undone in reverse order).
    fn unlift(&mut self, call: u32) {
        let ret = self.partner[call as usize];
        if ret != NONE {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Where an operation's bit lives: completed operations and indeterminate ones are numbered
/// separately, each in call order.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Completed(usize),
    Indeterminate(usize),
}

/// The set of linearised operations, with its incremental hash.
struct LinSet {
    completed: Vec<u64>,
    indeterminate: Vec<u64>,
    completed_count: usize,
    /// First completed operation not linearised (`completed_count` when all are).
    base: usize,
    /// For each completed operation `i`: the last word holding a completed operation called
    /// no later than `i` returns. While `i` is `base`, no bit beyond that word can be set.
    limit_word: Vec<usize>,
    /// XOR of the Zobrist words of the linearised operations.
    zobrist: u64,
}

/// A fixed pseudo-random word per slot (splitmix64), for Zobrist hashing.
fn zobrist_word(slot: Slot) -> u64 {
    let seed = match slot {
        Slot::Completed(i) => (i as u64) << 1,
        Slot::Indeterminate(i) => ((i as u64) << 1) | 1,
    };
    mix64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// The splitmix64 finaliser: a bijective, well-spread 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl LinSet {
    fn new(completed_count: usize, indeterminate_count: usize, limit_word: Vec<usize>) -> Self {
        LinSet {
            completed: vec![0; completed_count.div_ceil(WORD_BITS)],
            indeterminate: vec![0; indeterminate_count.div_ceil(WORD_BITS)],
            completed_count,
            base: 0,
            limit_word,
            zobrist: 0,
        }
    }

    fn insert(&mut self, slot: Slot) {
        self.zobrist ^= zobrist_word(slot);
        match slot {
            Slot::Completed(i) => {
                self.completed[i / WORD_BITS] |= 1 << (i % WORD_BITS);
                while self.base < self.completed_count && self.contains_completed(self.base) {
                    self.base += 1;
                }
            }
            Slot::Indeterminate(i) => self.indeterminate[i / WORD_BITS] |= 1 << (i % WORD_BITS),
        }
    }

    /// Undoes [`LinSet::insert`]; `base_before` is `base` as it was before the insert.
    fn remove(&mut self, slot: Slot, base_before: usize) {
        self.zobrist ^= zobrist_word(slot);
        match slot {
            Slot::Completed(i) => self.completed[i / WORD_BITS] &= !(1 << (i % WORD_BITS)),
            Slot::Indeterminate(i) => {
                self.indeterminate[i / WORD_BITS] &= !(1 << (i % WORD_BITS));
            }
        }
        self.base = base_before;
    }

    fn contains_completed(&self, i: usize) -> bool {
        self.completed[i / WORD_BITS] & (1 << (i % WORD_BITS)) != 0
    }

    /// The canonical compact form: `[base, window words.., indeterminate words..]`.
    fn snapshot(&self) -> Box<[u64]> {
        let window = if self.base < self.completed_count {
            &self.completed[self.base / WORD_BITS..=self.limit_word[self.base]]
        } else {
            &[]
        };
        debug_assert!(
            self.base >= self.completed_count
                || self.completed[self.limit_word[self.base] + 1..].iter().all(|&w| w == 0),
            "a completed operation beyond the window of base {} is linearised",
            self.base
        );
        let mut words = Vec::with_capacity(1 + window.len() + self.indeterminate.len());
        words.push(self.base as u64);
        words.extend_from_slice(window);
        words.extend_from_slice(&self.indeterminate);
        words.into_boxed_slice()
    }
}

/// A memoised configuration. `hash` is precomputed from the Zobrist hash and the state.
struct CacheKey<S> {
    hash: u64,
    state: S,
    set: Box<[u64]>,
}

impl<S: Eq> PartialEq for CacheKey<S> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.state == other.state && self.set == other.set
    }
}

impl<S: Eq> Eq for CacheKey<S> {}

impl<S> Hash for CacheKey<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A hasher that passes a precomputed `u64` through.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Cache<S> = HashSet<CacheKey<S>, BuildHasherDefault<PassThroughHasher>>;

/// A linearised operation on the backtracking stack.
struct Frame<S> {
    /// Its call entry.
    entry: u32,
    /// The state before it.
    state: S,
    /// `LinSet::base` before it.
    base: usize,
    /// Whether it was a read that left the state unchanged: such a linearisation has no
    /// alternative worth exploring, so backtracking pops past it.
    forced: bool,
    /// The call entry of the operation due first in the configuration it was taken from.
    due: u32,
    /// The phase of that configuration's scan that tried it.
    phase: Phase,
}

/// Runs the search from `init` over `ops` (in any order).
pub(crate) fn search<M: Model>(
    model: &M,
    init: M::State,
    ops: &[SearchOp],
    limits: &Limits,
) -> SearchReport {
    if ops.len() > MAX_SEARCH_OPS {
        return SearchReport {
            outcome: SearchOutcome::Unknown(UnknownReason::TooLarge),
            cache_entries: 0,
            frontier: None,
        };
    }
    let mut search = Search::new(model, init, ops);
    let outcome = search.run(limits);
    SearchReport {
        outcome,
        cache_entries: search.cache.len(),
        frontier: search.frontier.map(|(_, op)| op),
    }
}

/// The mutable state of one search.
struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [SearchOp],
    list: EntryList,
    slots: Vec<Slot>,
    set: LinSet,
    state: M::State,
    stack: Vec<Frame<M::State>>,
    cache: Cache<M::State>,
    /// Completed operations not yet linearised; the search succeeds at zero.
    completed_left: usize,
    /// The latest return entry (position, operation) at which a scan stopped.
    frontier: Option<(u64, usize)>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, init: M::State, ops: &'a [SearchOp]) -> Self {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| ops[i].call);
        let mut slots = vec![Slot::Completed(0); ops.len()];
        let (mut completed, mut indeterminate) = (Vec::new(), 0);
        for &i in &order {
            slots[i] = if ops[i].ret.is_some() {
                completed.push(i);
                Slot::Completed(completed.len() - 1)
            } else {
                indeterminate += 1;
                Slot::Indeterminate(indeterminate - 1)
            };
        }
        let limit_word = completed
            .iter()
            .map(|&i| {
                let ret = ops[i].ret.unwrap_or(u64::MAX);
                let last = completed.partition_point(|&j| ops[j].call <= ret);
                last.saturating_sub(1) / WORD_BITS
            })
            .collect();
        Search {
            model,
            ops,
            list: EntryList::new(ops),
            slots,
            set: LinSet::new(completed.len(), indeterminate, limit_word),
            state: init,
            stack: Vec::new(),
            cache: Cache::default(),
            completed_left: completed.len(),
            frontier: None,
        }
    }

    fn run(&mut self, limits: &Limits) -> SearchOutcome {
        let mut due = self.begin_config();
        let mut cursor = Cursor::Due;
        let mut steps: u64 = 0;
        loop {
            if self.completed_left == 0 {
                return SearchOutcome::Linearizable;
            }
            steps += 1;
            if steps % DEADLINE_CHECK_INTERVAL_STEPS == 0
                && limits.deadline.is_some_and(|d| Instant::now() >= d)
            {
                return SearchOutcome::Unknown(UnknownReason::Timeout);
            }
            let (entry, phase) = match cursor {
                Cursor::Due => (due, Phase::Due),
                Cursor::Scan(phase, entry) => {
                    let entry = if entry == due { self.list.next[entry as usize] } else { entry };
                    if entry == self.list.tail || !self.list.is_call[entry as usize] {
                        if phase == Phase::Enabling {
                            cursor = Cursor::Scan(Phase::Rest, self.list.next[HEAD as usize]);
                            continue;
                        }
                        match self.backtrack() {
                            Some(resume) => (due, cursor) = resume,
                            None => return SearchOutcome::NotLinearizable,
                        }
                        continue;
                    }
                    if (phase == Phase::Enabling) != self.enables(entry, due) {
                        cursor = Cursor::Scan(phase, self.list.next[entry as usize]);
                        continue;
                    }
                    (entry, phase)
                }
            };
            match self.try_linearise(entry, due, phase) {
                Step::Restart => {
                    if self.cache.len() > limits.max_cache_entries {
                        return SearchOutcome::Unknown(UnknownReason::CacheLimit);
                    }
                    due = self.begin_config();
                    cursor = Cursor::Due;
                }
                Step::Next => cursor = self.after(phase, entry),
                Step::Backtrack => match self.backtrack() {
                    Some(resume) => (due, cursor) = resume,
                    None => return SearchOutcome::NotLinearizable,
                },
            }
        }
    }

    /// Where the scan goes after trying `entry` in `phase`.
    fn after(&self, phase: Phase, entry: u32) -> Cursor {
        match phase {
            Phase::Due => Cursor::Scan(Phase::Enabling, self.list.next[HEAD as usize]),
            Phase::Enabling | Phase::Rest => Cursor::Scan(phase, self.list.next[entry as usize]),
        }
    }

    /// Whether linearising the operation of call entry `entry` now lets the due operation
    /// (call entry `due`) go right after it.
    fn enables(&self, entry: u32, due: u32) -> bool {
        let op = &self.ops[self.list.op[entry as usize] as usize];
        let due_op = &self.ops[self.list.op[due as usize] as usize];
        self.model
            .step(&self.state, &op.kind)
            .is_some_and(|s| self.model.step(&s, &due_op.kind).is_some())
    }

    /// Starts a configuration and returns the call entry to try first: a candidate read
    /// that is legal and changes nothing, if there is one (it is forced: see the module
    /// docs); else the operation due first (the owner of the first return entry: it must be
    /// linearised before anything called after that return), after recording the frontier.
    /// Requires `completed_left > 0`.
    fn begin_config(&mut self) -> u32 {
        let mut entry = self.list.next[HEAD as usize];
        while entry != self.list.tail && self.list.is_call[entry as usize] {
            let op = &self.ops[self.list.op[entry as usize] as usize];
            if self.model.is_read_only(&op.kind)
                && self.model.step(&self.state, &op.kind).as_ref() == Some(&self.state)
            {
                return entry;
            }
            entry = self.list.next[entry as usize];
        }
        if entry == self.list.tail {
            // Only indeterminate operations are left (completed_left == 0).
            return self.list.next[HEAD as usize];
        }
        self.note_frontier(entry);
        let op = self.list.op[entry as usize] as usize;
        self.list.call_node[op]
    }

    /// Records that a configuration's scan stopped at return entry `entry`: every completed
    /// operation returning before it is linearised in this configuration.
    fn note_frontier(&mut self, entry: u32) {
        let op = self.list.op[entry as usize] as usize;
        if let Some(ret) = self.ops[op].ret {
            if self.frontier.is_none_or(|(pos, _)| ret > pos) {
                self.frontier = Some((ret, op));
            }
        }
    }

    fn config_hash(&self, state: &M::State) -> u64 {
        let mut h = FxHasher::default();
        state.hash(&mut h);
        mix64(h.finish()) ^ self.set.zobrist
    }

    /// Tries to linearise the operation of call entry `entry` now.
    fn try_linearise(&mut self, entry: u32, due: u32, phase: Phase) -> Step {
        let op_index = self.list.op[entry as usize] as usize;
        let op = &self.ops[op_index];
        let Some(next_state) = self.model.step(&self.state, &op.kind) else {
            return Step::Next;
        };
        let slot = self.slots[op_index];
        // Only a read that changes nothing may be moved to the front of any solution (a
        // read from the unknown state binds it, which is a change).
        let forced = self.model.is_read_only(&op.kind) && next_state == self.state;
        let base_before = self.set.base;
        self.set.insert(slot);
        let key = CacheKey {
            hash: self.config_hash(&next_state),
            state: next_state.clone(),
            set: self.set.snapshot(),
        };
        if self.cache.insert(key) {
            let state = std::mem::replace(&mut self.state, next_state);
            self.stack.push(Frame { entry, state, base: base_before, forced, due, phase });
            self.list.lift(entry);
            if matches!(slot, Slot::Completed(_)) {
                self.completed_left -= 1;
            }
            Step::Restart
        } else {
            self.set.remove(slot, base_before);
            // A state-preserving read whose successor already failed fails this
            // configuration too.
            if forced {
                Step::Backtrack
            } else {
                Step::Next
            }
        }
    }

    /// Pops linearised operations until one leaves an alternative to try; returns the due
    /// entry of that configuration and where its scan resumes, or `None` when the stack is
    /// exhausted.
    fn backtrack(&mut self) -> Option<(u32, Cursor)> {
        loop {
            let frame = self.stack.pop()?;
            self.list.unlift(frame.entry);
            let op_index = self.list.op[frame.entry as usize] as usize;
            let slot = self.slots[op_index];
            self.set.remove(slot, frame.base);
            self.state = frame.state;
            if matches!(slot, Slot::Completed(_)) {
                self.completed_left += 1;
            }
            if !frame.forced {
                return Some((frame.due, self.after(frame.phase, frame.entry)));
            }
        }
    }
}

/// The order in which a configuration's candidates are tried: the operation due first
/// (the owner of the first return entry), then the operations after which it could go,
/// then the rest. Every candidate is tried exactly once, so the order changes only how soon
/// a linearisation is found, never the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Due,
    Enabling,
    Rest,
}

/// Where the scan of the current configuration is.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// About to try the operation due first.
    Due,
    /// Trying call entries of a phase in list order from this node (skipping the due one).
    Scan(Phase, u32),
}

/// What the scan does next.
enum Step {
    /// An operation was linearised: rescan from the head.
    Restart,
    /// Try the next entry.
    Next,
    /// This configuration fails: undo the last linearisation.
    Backtrack,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CasRegister, Register};

    const NO_LIMITS: Limits = Limits { deadline: None, max_cache_entries: usize::MAX };

    fn op(kind: OpKind, call: u64, ret: Option<u64>) -> SearchOp {
        SearchOp { kind, call, ret }
    }

    fn w(v: i64, call: u64, ret: Option<u64>) -> SearchOp {
        op(OpKind::Write { value: Some(v) }, call, ret)
    }

    fn r(v: Option<i64>, call: u64, ret: u64) -> SearchOp {
        op(OpKind::Read { value: v }, call, Some(ret))
    }

    fn cas(e: i64, n: i64, call: u64, ret: Option<u64>) -> SearchOp {
        op(OpKind::Cas { expected: Some(e), new: Some(n) }, call, ret)
    }

    fn outcome(ops: &[SearchOp]) -> SearchOutcome {
        search(&CasRegister, CasRegister.init(), ops, &NO_LIMITS).outcome
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(outcome(&[]), SearchOutcome::Linearizable);
    }

    #[test]
    fn sequential_write_then_read_is_linearizable() {
        assert_eq!(outcome(&[w(1, 0, Some(1)), r(Some(1), 2, 3)]), SearchOutcome::Linearizable);
    }

    #[test]
    fn stale_read_after_overwrite_is_not_linearizable() {
        let ops = [w(1, 0, Some(1)), w(2, 2, Some(3)), r(Some(1), 4, 5)];
        assert_eq!(outcome(&ops), SearchOutcome::NotLinearizable);
    }

    #[test]
    fn concurrent_read_may_see_either_write() {
        // w1 [0,5], w2 [1,6], r [2,7] = 1, r [3,8] = 2, r [9,10] = 2
        let ops = [
            w(1, 0, Some(5)),
            w(2, 1, Some(6)),
            r(Some(1), 2, 7),
            r(Some(2), 3, 8),
            r(Some(2), 9, 10),
        ];
        assert_eq!(outcome(&ops), SearchOutcome::Linearizable);
    }

    #[test]
    fn reads_that_disagree_on_write_order_are_not_linearizable() {
        // Two sequential read pairs observe the concurrent writes in opposite orders.
        let ops = [
            w(1, 0, Some(10)),
            w(2, 1, Some(11)),
            r(Some(1), 2, 3),
            r(Some(2), 4, 5),
            r(Some(1), 6, 7),
        ];
        assert_eq!(outcome(&ops), SearchOutcome::NotLinearizable);
    }

    #[test]
    fn indeterminate_write_may_take_effect_late() {
        // An info write invoked at 0 is observed much later.
        let ops = [w(1, 0, None), r(None, 1, 2), r(Some(1), 3, 4)];
        assert_eq!(outcome(&ops), SearchOutcome::Linearizable);
    }

    #[test]
    fn indeterminate_write_may_never_take_effect() {
        let ops = [w(1, 0, None), r(None, 1, 2), r(None, 3, 4)];
        assert_eq!(outcome(&ops), SearchOutcome::Linearizable);
    }

    #[test]
    fn indeterminate_write_cannot_take_effect_before_its_call() {
        let ops = [r(Some(1), 0, 1), w(1, 2, None)];
        assert_eq!(outcome(&ops), SearchOutcome::NotLinearizable);
    }

    #[test]
    fn both_successful_cas_from_the_same_value_is_not_linearizable() {
        let ops = [w(0, 0, Some(1)), cas(0, 1, 2, Some(5)), cas(0, 2, 3, Some(6))];
        assert_eq!(outcome(&ops), SearchOutcome::NotLinearizable);
    }

    #[test]
    fn unknown_initial_state_binds_to_the_first_read() {
        let ops = [r(Some(5), 0, 1), w(6, 2, Some(3)), r(Some(6), 4, 5)];
        let report = search(&Register, Register.unknown(), &ops, &NO_LIMITS);
        assert_eq!(report.outcome, SearchOutcome::Linearizable);
        let stale = [w(6, 0, Some(1)), r(Some(5), 2, 3)];
        let report = search(&Register, Register.unknown(), &stale, &NO_LIMITS);
        assert_eq!(report.outcome, SearchOutcome::NotLinearizable);
    }

    #[test]
    fn read_that_binds_the_unknown_state_is_not_pruned() {
        // From an unknown state, cas(1 -> nil) may go first and the concurrent read of nil
        // after it; linearising the read first (binding nil) must not rule that out.
        let ops = [r(None, 2, 4), op(OpKind::Cas { expected: Some(1), new: None }, 3, Some(5))];
        let report = search(&CasRegister, CasRegister.unknown(), &ops, &NO_LIMITS);
        assert_eq!(report.outcome, SearchOutcome::Linearizable);
    }

    #[test]
    fn cache_limit_yields_unknown_not_a_verdict() {
        let ops: Vec<SearchOp> =
            (0..50).map(|i| w(i, 2 * i as u64, Some(2 * i as u64 + 1))).collect();
        let limits = Limits { deadline: None, max_cache_entries: 10 };
        let report = search(&CasRegister, CasRegister.init(), &ops, &limits);
        assert_eq!(report.outcome, SearchOutcome::Unknown(UnknownReason::CacheLimit));
    }

    #[test]
    fn past_deadline_yields_unknown() {
        // Many concurrent indeterminate writes and an impossible read: exponential without
        // memoisation of every subset, so it cannot finish within zero time.
        let mut ops: Vec<SearchOp> =
            (0..2000).map(|i| w(i, i as u64, Some(5000 + i as u64))).collect();
        ops.push(r(Some(-1), 9000, 9001));
        let limits = Limits { deadline: Some(Instant::now()), max_cache_entries: usize::MAX };
        let report = search(&CasRegister, CasRegister.init(), &ops, &limits);
        assert_eq!(report.outcome, SearchOutcome::Unknown(UnknownReason::Timeout));
    }

    #[test]
    fn long_sequential_history_uses_small_cache_entries() {
        let ops: Vec<SearchOp> =
            (0..5000).map(|i| w(i, 2 * i as u64, Some(2 * i as u64 + 1))).collect();
        let mut s = Search::new(&CasRegister, CasRegister.init(), &ops);
        assert_eq!(s.run(&NO_LIMITS), SearchOutcome::Linearizable);
        let longest = s.cache.iter().map(|k| k.set.len()).max().unwrap_or(0);
        assert!(longest <= 2, "cache entries hold at most 2 words, got {longest}");
    }
}

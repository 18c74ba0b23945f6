//! Synthetic register histories with a known verdict, for tests, benchmarks and self-checks.
//!
//! The generator simulates `processes` clients against a correct, atomic register per key:
//! each operation is invoked, applied atomically at some later step (its linearisation
//! point) and completed at a still later step, with the steps of different clients
//! interleaved at random. Such a history is linearizable by construction. Some operations
//! crash (`info`), before or after taking effect, and the client continues under a new
//! process id, as in Jepsen. CAS operations whose expected value is not there `fail`.
//!
//! Every write and CAS writes a fresh value, so a violation can be planted that no
//! interleaving explains ([`Violation`]): after half the operations, one read (or CAS) is
//! made to return (or expect) the value of a write `A` that was overwritten by a write `B`
//! that began after `A` completed and completed before the read began. The value of `A` is
//! written by nobody else, so no linearisation can show it after `B`. If no such pair
//! arises, a short sequence with the same shape is appended, so the violation is always
//! there.
//!
//! The random source is a seeded splitmix64: the same config gives the same history.

use crate::history::{Event, EventType, Function, History, Key, ProcessId, Value};

/// Chance per 1000 that a read is chosen (the rest split between write and CAS).
const READ_PER_MILLE: u64 = 400;

/// Chance per 1000 that a write is chosen (the rest is CAS).
const WRITE_PER_MILLE: u64 = 300;

/// Chance per 1000 that a CAS expects the current value (else an older or absent one).
const CAS_CURRENT_PER_MILLE: u64 = 700;

/// Simulated nanoseconds per scheduler step, for `time`.
const STEP_NS: u64 = 1_000;

/// A violation to plant in a generated history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Violation {
    /// A read returns a value that was definitely overwritten before it began.
    StaleRead,
    /// A CAS succeeds from a value that was definitely overwritten before it began.
    StaleCas,
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenConfig {
    /// Operations to invoke (the planted violation may add a few more).
    pub ops: usize,
    /// Keys; 0 makes a single-register history without keys.
    pub keys: usize,
    /// Concurrent clients (at least 1).
    pub processes: usize,
    /// Chance per 1000 that an operation crashes with `info`.
    pub info_per_mille: u64,
    /// Seed of the random source.
    pub seed: u64,
    /// A violation to plant, if any.
    pub violation: Option<Violation>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            ops: 1_000,
            keys: 8,
            processes: 10,
            info_per_mille: 5,
            seed: 0,
            violation: None,
        }
    }
}

/// A seeded splitmix64 generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

/// A write that completed `ok`, for planting stale values.
#[derive(Debug, Clone, Copy)]
struct DoneWrite {
    value: i64,
    invoke: usize,
    complete: usize,
}

/// One key's register and its completed writes.
#[derive(Default)]
struct KeyState {
    value: Option<i64>,
    done: Vec<DoneWrite>,
}

impl KeyState {
    /// A value definitely overwritten before `start`: the value of a write `A` such that a
    /// write `B` began after `A` completed and completed before `start`.
    fn stale_value(&self, start: usize) -> Option<i64> {
        let b = self.done.iter().rev().find(|b| b.complete < start)?;
        self.done.iter().rev().find(|a| a.complete < b.invoke).map(|a| a.value)
    }
}

/// A client's operation in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    key: usize,
    f: Function,
    /// Invocation value (cas: `[expected, new]`).
    value: Value,
    invoke: usize,
    /// Set once applied: the completion value and whether it took effect (`ok`).
    applied: Option<(Value, bool)>,
    /// Carries the planted violation: completes `ok` (and a CAS succeeds) regardless.
    forced: bool,
}

struct Client {
    process: u64,
    op: Option<InFlight>,
}

struct Sim<'a> {
    config: &'a GenConfig,
    rng: Rng,
    keys: Vec<KeyState>,
    events: Vec<Event>,
    next_value: i64,
    planted: bool,
    step: u64,
}

impl Sim<'_> {
    fn key_name(&self, key: usize) -> Option<Key> {
        (self.config.keys > 0).then(|| format!("k{key}"))
    }

    fn emit(&mut self, process: u64, kind: EventType, op: &InFlight, value: Value) {
        let line = self.events.len() + 1;
        self.events.push(Event {
            process: ProcessId(process),
            kind,
            f: op.f,
            key: self.key_name(op.key),
            value,
            time_ns: Some(self.step * STEP_NS),
            line,
        });
    }

    fn fresh_value(&mut self) -> i64 {
        self.next_value += 1;
        self.next_value
    }

    fn wants_violation(&self, invoked: usize, kind: Violation) -> bool {
        !self.planted && self.config.violation == Some(kind) && invoked >= self.config.ops / 2
    }

    fn invoke(&mut self, client: &mut Client, invoked: usize) {
        let key = self.rng.below(self.config.keys.max(1) as u64) as usize;
        let roll = self.rng.below(1000);
        let now = self.events.len();
        let (f, value, mut forced) = if roll < READ_PER_MILLE {
            (Function::Read, Value::Nil, false)
        } else if roll < READ_PER_MILLE + WRITE_PER_MILLE {
            (Function::Write, Value::Int(self.fresh_value()), false)
        } else {
            let current = self.keys[key].value;
            let expected = if self.rng.per_mille(CAS_CURRENT_PER_MILLE) {
                current
            } else {
                current.map(|v| v - 1).filter(|v| *v > 0)
            };
            (Function::Cas, Value::Pair(expected, Some(self.fresh_value())), false)
        };
        let mut value = value;
        if f == Function::Cas && self.wants_violation(invoked, Violation::StaleCas) {
            if let (Some(stale), Value::Pair(_, new)) = (self.keys[key].stale_value(now), value) {
                value = Value::Pair(Some(stale), new);
                forced = true;
                self.planted = true;
            }
        }
        let op = InFlight { key, f, value, invoke: now, applied: None, forced };
        self.emit(client.process, EventType::Invoke, &op, value);
        client.op = Some(op);
    }

    fn apply(&mut self, op: &mut InFlight, invoked: usize) {
        let state = &mut self.keys[op.key];
        let (value, took_effect) = match (op.f, op.value) {
            (Function::Read, _) => (state.value.map_or(Value::Nil, Value::Int), true),
            (Function::Write, Value::Int(v)) => {
                state.value = Some(v);
                (op.value, true)
            }
            (Function::Cas, Value::Pair(expected, new)) if op.forced || state.value == expected => {
                state.value = new;
                (op.value, true)
            }
            _ => (op.value, false),
        };
        let mut value = value;
        if op.f == Function::Read && self.wants_violation(invoked, Violation::StaleRead) {
            if let Some(stale) = self.keys[op.key].stale_value(op.invoke) {
                value = Value::Int(stale);
                op.forced = true;
                self.planted = true;
            }
        }
        op.applied = Some((value, took_effect));
    }

    fn complete(&mut self, client: &mut Client, op: InFlight) {
        let Some((value, took_effect)) = op.applied else {
            return;
        };
        let now = self.events.len();
        let kind = if !op.forced && self.rng.per_mille(self.config.info_per_mille / 2) {
            EventType::Info
        } else if took_effect {
            EventType::Ok
        } else {
            EventType::Fail
        };
        self.emit(client.process, kind, &op, value);
        if kind == EventType::Ok && op.f != Function::Read {
            if let Value::Int(v) | Value::Pair(_, Some(v)) = op.value {
                self.keys[op.key].done.push(DoneWrite {
                    value: v,
                    invoke: op.invoke,
                    complete: now,
                });
            }
        }
        if kind == EventType::Info {
            client.process += self.config.processes.max(1) as u64;
        }
        client.op = None;
    }

    /// Advances one client by one step; returns whether it is still busy.
    fn step_client(&mut self, client: &mut Client, invoked: &mut usize) -> bool {
        self.step += 1;
        match client.op {
            None if *invoked < self.config.ops => {
                self.invoke(client, *invoked);
                *invoked += 1;
                true
            }
            None => false,
            Some(mut op) if op.applied.is_none() => {
                if !op.forced && self.rng.per_mille(self.config.info_per_mille / 2) {
                    // Crashed before taking effect.
                    self.emit(client.process, EventType::Info, &op, op.value);
                    client.process += self.config.processes.max(1) as u64;
                    client.op = None;
                } else {
                    self.apply(&mut op, *invoked);
                    client.op = Some(op);
                }
                true
            }
            Some(op) => {
                self.complete(client, op);
                true
            }
        }
    }

    /// Appends `w(a) ok; w(b) ok; r -> a ok` (or `cas(a -> c) ok`) on key 0 from a fresh
    /// process: the planted violation when the random run offered no chance for it.
    fn append_violation(&mut self, kind: Violation, process: u64) {
        let (a, b, c) = (self.fresh_value(), self.fresh_value(), self.fresh_value());
        let op = |f, value| InFlight { key: 0, f, value, invoke: 0, applied: None, forced: false };
        let steps = [
            (op(Function::Write, Value::Int(a)), Value::Int(a)),
            (op(Function::Write, Value::Int(b)), Value::Int(b)),
            match kind {
                Violation::StaleRead => (op(Function::Read, Value::Nil), Value::Int(a)),
                Violation::StaleCas => {
                    let pair = Value::Pair(Some(a), Some(c));
                    (op(Function::Cas, pair), pair)
                }
            },
        ];
        for (op, done_value) in steps {
            self.step += 1;
            self.emit(process, EventType::Invoke, &op, op.value);
            self.step += 1;
            self.emit(process, EventType::Ok, &op, done_value);
        }
        self.planted = true;
    }
}

/// Generates a history as the module docs describe.
pub fn generate(config: &GenConfig) -> History {
    let workers = config.processes.max(1);
    let mut sim = Sim {
        config,
        rng: Rng(config.seed),
        keys: (0..config.keys.max(1)).map(|_| KeyState::default()).collect(),
        events: Vec::with_capacity(config.ops * 2 + 6),
        next_value: 0,
        planted: false,
        step: 0,
    };
    let mut clients: Vec<Client> =
        (0..workers).map(|p| Client { process: p as u64, op: None }).collect();
    let mut active: Vec<usize> = (0..workers).collect();
    let mut invoked = 0;
    while !active.is_empty() {
        let slot = sim.rng.below(active.len() as u64) as usize;
        let busy = sim.step_client(&mut clients[active[slot]], &mut invoked);
        if !busy {
            active.swap_remove(slot);
        }
    }
    if let Some(kind) = config.violation.filter(|_| !sim.planted) {
        let process = clients.iter().map(|c| c.process).max().unwrap_or(0) + 1;
        sim.append_violation(kind, process);
    }
    History::from_events(sim.events)
        .unwrap_or_else(|e| panic!("generated events are well-formed by construction: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_history, Budget, Verdict};
    use crate::model::ModelKind;

    fn verdict(config: &GenConfig) -> Verdict {
        let h = generate(config);
        check_history(&h, ModelKind::CasRegister, Budget::unlimited())
            .expect("cas-register supports all ops")
            .verdict
    }

    #[test]
    fn same_seed_gives_the_same_history() {
        let config = GenConfig { seed: 42, ..GenConfig::default() };
        assert_eq!(generate(&config), generate(&config));
    }

    #[test]
    fn generated_history_has_the_requested_size_and_keys() {
        let h = generate(&GenConfig { ops: 500, keys: 3, ..GenConfig::default() });
        assert_eq!(h.ops().len(), 500);
        assert!(h.ops().iter().all(|op| op.key.is_some()));
        let single = generate(&GenConfig { ops: 50, keys: 0, ..GenConfig::default() });
        assert!(!single.has_keys());
    }

    #[test]
    fn clean_history_is_linearizable() {
        assert_eq!(verdict(&GenConfig::default()), Verdict::Linearizable);
    }

    #[test]
    fn planted_stale_read_is_caught() {
        let config = GenConfig { violation: Some(Violation::StaleRead), ..GenConfig::default() };
        assert_eq!(verdict(&config), Verdict::NotLinearizable);
    }

    #[test]
    fn planted_stale_cas_is_caught() {
        let config = GenConfig { violation: Some(Violation::StaleCas), ..GenConfig::default() };
        assert_eq!(verdict(&config), Verdict::NotLinearizable);
    }

    #[test]
    fn twenty_processes_on_one_key_check_within_a_small_cache() {
        // Guards the search's candidate order: plain call-order scanning needed ~15x more.
        let h = generate(&GenConfig { ops: 2_000, keys: 0, processes: 20, ..GenConfig::default() });
        let budget = Budget { timeout: None, max_cache_entries: 100_000 };
        let result = check_history(&h, ModelKind::CasRegister, budget).expect("model");
        assert_eq!(result.verdict, Verdict::Linearizable, "{:?}", result.keys[0]);
    }

    #[test]
    fn violation_is_appended_when_the_run_offers_no_chance() {
        let config = GenConfig {
            ops: 2,
            keys: 1,
            processes: 1,
            violation: Some(Violation::StaleRead),
            ..GenConfig::default()
        };
        assert_eq!(verdict(&config), Verdict::NotLinearizable);
    }
}

//! Deterministic apply logic: turns one [`Command`] at one log position into an
//! [`ApplyResult`] and the list of record changes, given read access to the current
//! state. Pure: no I/O of its own, no clock, no randomness — every replica computes the
//! same result from the same log.
//!
//! Rules:
//! - The stored HLC is `max(proposed, last_applied + 1 logical)`, so HLCs strictly
//!   increase in log order on every replica.
//! - version: 1 on create, +1 on every write; revision = log index; create_revision is
//!   kept across updates and reset when a deleted key is re-created.
//! - A failed version check is an outcome (succeeded=false with the current record),
//!   never an error. Errors here are only storage failures (which stop the node).

use std::collections::HashMap;

use crate::hlc::Timestamp;
use crate::record::{
    value_hash, ApplyResult, Command, Op, Outcome, Record, Revision, Saga, SagaConflict, SagaState,
    SagaStep, Status, TxnOp, MAX_SAGA_STEPS,
};

use super::binlog::{EventDraft, EventOp};
use super::StorageError;

/// Read access to the state the command applies on.
pub trait StateView {
    /// The current record of `key`, if any.
    fn record(&self, key: &[u8]) -> Result<Option<Record>, StorageError>;
    /// The saga `id`, if any.
    fn saga(&self, id: &str) -> Result<Option<Saga>, StorageError>;
}

/// Everything one command changes: final records, sagas, and the binlog drafts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Final state of every key written (None: removed), in first-write order.
    pub records: Vec<(Vec<u8>, Option<Record>)>,
    /// Sagas created or updated.
    pub sagas: Vec<Saga>,
    /// Binlog events of the command, in order (empty: nothing changed).
    pub events: Vec<EventDraft>,
}

/// The HLC an entry is applied at.
pub fn apply_hlc(proposed: Timestamp, last_applied: Timestamp) -> Timestamp {
    let floor = last_applied.tick();
    let hlc = if proposed.is_after(&last_applied) {
        proposed
    } else {
        Timestamp { node: proposed.node, ..floor }
    };
    debug_assert!(hlc.is_after(&last_applied), "apply hlc {hlc} not after {last_applied}");
    hlc
}

/// A deterministic refusal.
fn refused(reason: impl Into<String>) -> Outcome {
    Outcome::Refused { reason: reason.into() }
}

/// How a record write is tagged.
struct WriteTag {
    status: Status,
    compensation: bool,
    request_id: Option<String>,
    saga_id: String,
}

/// Applies one command against a view, buffering writes so later ops in the same
/// entry (Txn) see earlier ones.
struct Applier<'a, V: StateView> {
    view: &'a V,
    revision: Revision,
    hlc: Timestamp,
    cmd: &'a Command,
    overlay: HashMap<Vec<u8>, Option<Record>>,
    order: Vec<Vec<u8>>,
    sagas: HashMap<String, Saga>,
    events: Vec<EventDraft>,
}

impl<'a, V: StateView> Applier<'a, V> {
    fn read(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.overlay.get(key) {
            Some(r) => Ok(r.clone()),
            None => self.view.record(key),
        }
    }

    fn saga(&self, id: &str) -> Result<Option<Saga>, StorageError> {
        match self.sagas.get(id) {
            Some(s) => Ok(Some(s.clone())),
            None => self.view.saga(id),
        }
    }

    /// The applied HLC's wall time, ms since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.hlc.wall_ns / 1_000_000
    }

    fn default_tag(&self) -> WriteTag {
        let status = if self.cmd.saga_id.is_empty() {
            Status::Committed
        } else {
            Status::Pending(self.cmd.saga_id.clone())
        };
        WriteTag {
            status,
            compensation: false,
            request_id: None,
            saga_id: self.cmd.saga_id.clone(),
        }
    }

    fn write(&mut self, key: &[u8], value: &[u8], current: Option<Record>) -> Record {
        let tag = self.default_tag();
        self.write_tagged(key, value, current, tag)
    }

    fn write_tagged(
        &mut self,
        key: &[u8],
        value: &[u8],
        current: Option<Record>,
        tag: WriteTag,
    ) -> Record {
        let (version, create_revision) = match &current {
            Some(c) => (c.version + 1, c.create_revision),
            None => (1, self.revision),
        };
        let record = Record {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
            revision: self.revision,
            create_revision,
            hlc: self.hlc,
            hash: value_hash(value),
            source: self.cmd.source.clone(),
            status: tag.status.clone(),
        };
        debug_assert!(record.check().is_ok(), "apply built a bad record: {record:?}");
        self.record_change(key, current, Some(record.clone()), tag);
        record
    }

    fn remove(&mut self, key: &[u8], current: &Record) {
        let tag = self.default_tag();
        self.record_change(key, Some(current.clone()), None, tag);
    }

    fn set(&mut self, key: &[u8], r: Option<Record>) {
        if self.overlay.insert(key.to_vec(), r).is_none() {
            self.order.push(key.to_vec());
        }
    }

    fn record_change(
        &mut self,
        key: &[u8],
        before: Option<Record>,
        after: Option<Record>,
        tag: WriteTag,
    ) {
        self.set(key, after.clone());
        if !self.cmd.saga_id.is_empty() && !tag.compensation {
            if let Some(s) = self.sagas.get_mut(&self.cmd.saga_id) {
                s.steps.push(SagaStep {
                    key: key.to_vec(),
                    revision: self.revision,
                    before: before.clone(),
                    after_version: after.as_ref().map_or(0, |r| r.version),
                });
            }
        }
        let op = if after.is_some() { EventOp::Put } else { EventOp::Delete };
        self.events.push(EventDraft {
            op,
            key: key.to_vec(),
            before,
            after,
            request_id: tag.request_id,
            saga_id: tag.saga_id,
            saga_deadline_unix_ms: 0,
            compensation: tag.compensation,
        });
    }

    fn saga_event(&mut self, op: EventOp, saga: &Saga) {
        let deadline = if op == EventOp::SagaOpen { saga.deadline_unix_ms } else { 0 };
        self.events.push(EventDraft {
            op,
            key: Vec::new(),
            before: None,
            after: None,
            request_id: None,
            saga_id: saga.id.clone(),
            saga_deadline_unix_ms: deadline,
            compensation: false,
        });
    }

    /// For a write tagged with a saga: None if the saga accepts `writes` more steps
    /// (and it is loaded into the overlay), else the refusal.
    fn admit_saga_write(&mut self, writes: usize) -> Result<Option<Outcome>, StorageError> {
        let id = &self.cmd.saga_id;
        if id.is_empty() {
            return Ok(None);
        }
        let Some(saga) = self.saga(id)? else {
            return Ok(Some(refused(format!("saga {id:?} does not exist"))));
        };
        if saga.state != SagaState::Open {
            return Ok(Some(refused(format!("saga {id:?} is {:?}, not open", saga.state))));
        }
        if self.now_ms() > saga.deadline_unix_ms {
            return Ok(Some(refused(format!(
                "saga expired: {id:?} passed its deadline {} ms (now {} ms)",
                saga.deadline_unix_ms,
                self.now_ms()
            ))));
        }
        if saga.steps.len() + writes > MAX_SAGA_STEPS {
            return Ok(Some(refused(format!(
                "saga {id:?} is full: {} steps, limit {MAX_SAGA_STEPS}",
                saga.steps.len()
            ))));
        }
        self.sagas.insert(id.clone(), saga);
        Ok(None)
    }

    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Outcome, StorageError> {
        let current = self.read(key)?;
        let matches = match expected {
            None => true,
            Some(0) => current.is_none(),
            Some(v) => current.as_ref().is_some_and(|c| c.version == v),
        };
        if !matches {
            return Ok(Outcome::Put { succeeded: false, record: None, current });
        }
        let record = self.write(key, value, current);
        Ok(Outcome::Put { succeeded: true, record: Some(record), current: None })
    }

    fn delete(&mut self, key: &[u8], expected: Option<u64>) -> Result<Outcome, StorageError> {
        let current = self.read(key)?;
        let matches = match expected {
            None => true,
            Some(v) => current.as_ref().is_some_and(|c| c.version == v),
        };
        match current {
            Some(c) if matches => {
                self.remove(key, &c);
                Ok(Outcome::Delete { succeeded: true, record: Some(c), current: None })
            }
            current => Ok(Outcome::Delete { succeeded: false, record: None, current }),
        }
    }

    fn txn_op(&mut self, op: &TxnOp) -> Result<Option<Record>, StorageError> {
        match op {
            TxnOp::Put { key, value } => {
                let current = self.read(key)?;
                Ok(Some(self.write(key, value, current)))
            }
            TxnOp::Delete { key } => {
                let current = self.read(key)?;
                if let Some(c) = &current {
                    self.remove(key, c);
                }
                Ok(current)
            }
            TxnOp::Get { key } => self.read(key),
        }
    }

    fn txn(
        &mut self,
        compares: &[crate::record::Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<Outcome, StorageError> {
        let mut succeeded = true;
        for c in compares {
            let current = self.read(&c.key)?;
            if !c.holds(current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded { success } else { failure };
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            results.push(self.txn_op(op)?);
        }
        Ok(Outcome::Txn { succeeded, results })
    }

    fn saga_open(&mut self, id: &str, timeout_ms: u64) -> Result<Outcome, StorageError> {
        if let Some(s) = self.saga(id)? {
            return Ok(refused(format!("saga {id:?} already exists ({:?})", s.state)));
        }
        let saga = Saga {
            id: id.to_string(),
            state: SagaState::Open,
            deadline_unix_ms: self.now_ms().saturating_add(timeout_ms),
            steps: Vec::new(),
            abort_reason: String::new(),
            closed: None,
        };
        self.saga_event(EventOp::SagaOpen, &saga);
        let deadline_unix_ms = saga.deadline_unix_ms;
        self.sagas.insert(id.to_string(), saga);
        Ok(Outcome::SagaOpened { deadline_unix_ms })
    }

    fn saga_commit(&mut self, id: &str) -> Result<Outcome, StorageError> {
        let Some(mut saga) = self.saga(id)? else {
            return Ok(refused(format!("saga {id:?} does not exist")));
        };
        match saga.state {
            SagaState::Committed => {
                return Ok(saga.closed.map_or(Outcome::SagaCommitted { records: vec![] }, |o| *o))
            }
            SagaState::Aborted => return Ok(refused(format!("saga {id:?} is aborted"))),
            SagaState::Open => {}
        }
        if self.now_ms() > saga.deadline_unix_ms {
            return Ok(refused(format!(
                "saga expired: {id:?} passed its deadline {} ms (now {} ms); abort it",
                saga.deadline_unix_ms,
                self.now_ms()
            )));
        }
        let mut records = Vec::new();
        let pending = Status::Pending(id.to_string());
        for step in &saga.steps {
            let Some(mut r) = self.read(&step.key)? else { continue };
            if r.status == pending {
                r.status = Status::Committed;
                self.set(&step.key, Some(r.clone()));
                records.push(r);
            }
        }
        let outcome = Outcome::SagaCommitted { records };
        saga.state = SagaState::Committed;
        saga.closed = Some(Box::new(outcome.clone()));
        self.saga_event(EventOp::SagaCommit, &saga);
        self.sagas.insert(id.to_string(), saga);
        Ok(outcome)
    }

    fn saga_abort(&mut self, id: &str, reason: &str) -> Result<Outcome, StorageError> {
        let Some(mut saga) = self.saga(id)? else {
            return Ok(refused(format!("saga {id:?} does not exist")));
        };
        match saga.state {
            SagaState::Aborted => {
                let empty = Outcome::SagaAborted { compensated: vec![], conflicts: vec![] };
                return Ok(saga.closed.map_or(empty, |o| *o));
            }
            SagaState::Committed => return Ok(refused(format!("saga {id:?} is committed"))),
            SagaState::Open => {}
        }
        let mut compensated = Vec::new();
        let mut conflicts = Vec::new();
        for (n, key, before, after_version) in collapse_steps(&saga.steps) {
            let current = self.read(&key)?;
            let holds = current.as_ref().map_or(0, |r| r.version) == after_version;
            if !holds {
                conflicts.push(SagaConflict { key, saga_version: after_version, current });
                continue;
            }
            let tag = WriteTag {
                status: Status::Compensated,
                compensation: true,
                request_id: Some(format!("{}/{n}", self.cmd.request_id)),
                saga_id: id.to_string(),
            };
            match (before, current) {
                (Some(b), current) => {
                    compensated.push(self.write_tagged(&key, &b.value, current, tag));
                }
                (None, Some(c)) => self.record_change(&key, Some(c), None, tag),
                (None, None) => {}
            }
        }
        let outcome = Outcome::SagaAborted { compensated, conflicts };
        saga.state = SagaState::Aborted;
        saga.abort_reason = reason.to_string();
        saga.closed = Some(Box::new(outcome.clone()));
        self.saga_event(EventOp::SagaAbort, &saga);
        self.sagas.insert(id.to_string(), saga);
        Ok(outcome)
    }
}

/// The compensation plan of a saga's steps: one entry per key, in reverse order of
/// the key's last step: (that step's number, key, the before-image of the key's first
/// step, the version of its last step).
pub fn collapse_steps(steps: &[SagaStep]) -> Vec<(usize, Vec<u8>, Option<Record>, u64)> {
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut plan: Vec<(usize, Vec<u8>, Option<Record>, u64)> = Vec::new();
    for (n, s) in steps.iter().enumerate() {
        match seen.get(s.key.as_slice()) {
            Some(&i) => {
                plan[i].0 = n;
                plan[i].3 = s.after_version;
            }
            None => {
                seen.insert(&s.key, plan.len());
                plan.push((n, s.key.clone(), s.before.clone(), s.after_version));
            }
        }
    }
    plan.sort_by_key(|p| std::cmp::Reverse(p.0));
    plan
}

/// The number of key writes an op may make (for the saga step limit).
fn writes_of(op: &Op) -> usize {
    match op {
        Op::Put { .. } | Op::Delete { .. } => 1,
        Op::Txn { success, failure, .. } => success.len().max(failure.len()),
        _ => 0,
    }
}

/// Apply `cmd` at log index `revision`, after an entry applied at `last_hlc`.
/// Returns the result and what changed.
pub fn apply_command<V: StateView>(
    view: &V,
    revision: Revision,
    last_hlc: Timestamp,
    cmd: &Command,
) -> Result<(ApplyResult, Effects), StorageError> {
    let hlc = apply_hlc(cmd.hlc, last_hlc);
    let mut a = Applier {
        view,
        revision,
        hlc,
        cmd,
        overlay: HashMap::new(),
        order: Vec::new(),
        sagas: HashMap::new(),
        events: Vec::new(),
    };
    let admitted = match &cmd.op {
        Op::Put { .. } | Op::Delete { .. } | Op::Txn { .. } => {
            a.admit_saga_write(writes_of(&cmd.op))?
        }
        _ => None,
    };
    let outcome = match (admitted, &cmd.op) {
        (Some(refusal), _) => refusal,
        (None, Op::Put { key, value, expected_version }) => a.put(key, value, *expected_version)?,
        (None, Op::Delete { key, expected_version }) => a.delete(key, *expected_version)?,
        (None, Op::Txn { compares, success, failure }) => a.txn(compares, success, failure)?,
        (None, Op::SagaOpen { saga_id, timeout_ms }) => a.saga_open(saga_id, *timeout_ms)?,
        (None, Op::SagaCommit { saga_id }) => a.saga_commit(saga_id)?,
        (None, Op::SagaAbort { saga_id, reason }) => a.saga_abort(saga_id, reason)?,
    };
    let mut overlay = a.overlay;
    let records = a
        .order
        .into_iter()
        .map(|k| {
            let v = overlay.remove(&k).flatten();
            (k, v)
        })
        .collect();
    // A saga only loaded to admit a write that then changed nothing is not rewritten.
    let sagas = if a.events.is_empty() { Vec::new() } else { a.sagas.into_values().collect() };
    let effects = Effects { records, sagas, events: a.events };
    Ok((ApplyResult { revision, hlc, outcome, duplicate: false }, effects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Compare, CompareOp, CompareTarget, Source};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<Vec<u8>, Record>, BTreeMap<String, Saga>);

    impl StateView for Mem {
        fn record(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
            Ok(self.0.get(key).cloned())
        }
        fn saga(&self, id: &str) -> Result<Option<Saga>, StorageError> {
            Ok(self.1.get(id).cloned())
        }
    }

    impl Mem {
        fn run(&mut self, rev: u64, last: Timestamp, op: Op) -> ApplyResult {
            self.run_with(rev, last, 100, "", "", op).0
        }

        /// Apply `op` at HLC wall time `wall_ms` (ms), tagged with a saga and request id.
        fn run_with(
            &mut self,
            rev: u64,
            last: Timestamp,
            wall_ms: u64,
            saga_id: &str,
            request_id: &str,
            op: Op,
        ) -> (ApplyResult, Vec<EventDraft>) {
            let cmd = Command {
                request_id: request_id.into(),
                saga_id: saga_id.into(),
                trace_id: String::new(),
                hlc: Timestamp { wall_ns: wall_ms * 1_000_000, logical: 0, node: 1 },
                source: Source { node_id: 1, region: "r".into() },
                op,
            };
            let (res, effects) = apply_command(self, rev, last, &cmd).expect("apply");
            let events = effects.events.clone();
            for (k, r) in effects.records {
                match r {
                    Some(r) => self.0.insert(k, r),
                    None => self.0.remove(&k),
                };
            }
            for s in effects.sagas {
                self.1.insert(s.id.clone(), s);
            }
            (res, events)
        }
    }

    fn put(k: &str, v: &str, e: Option<u64>) -> Op {
        Op::Put { key: k.into(), value: v.into(), expected_version: e }
    }

    #[test]
    fn versions_count_up_and_create_revision_sticks() {
        let mut m = Mem::default();
        let r1 = m.run(5, Timestamp::ZERO, put("a", "1", None));
        let r2 = m.run(6, r1.hlc, put("a", "2", None));
        let rec = m.0.get(b"a".as_slice()).expect("a");
        assert_eq!((rec.version, rec.revision, rec.create_revision), (2, 6, 5));
        assert!(r2.hlc.is_after(&r1.hlc), "{} after {}", r2.hlc, r1.hlc);
    }

    #[test]
    fn stale_cas_returns_current_record() {
        let mut m = Mem::default();
        m.run(1, Timestamp::ZERO, put("a", "1", None));
        let res = m.run(2, Timestamp::ZERO, put("a", "2", Some(7)));
        match res.outcome {
            Outcome::Put { succeeded: false, current: Some(c), .. } => assert_eq!(c.version, 1),
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn create_only_fails_on_existing_key() {
        let mut m = Mem::default();
        m.run(1, Timestamp::ZERO, put("a", "1", Some(0)));
        let res = m.run(2, Timestamp::ZERO, put("a", "2", Some(0)));
        assert!(matches!(res.outcome, Outcome::Put { succeeded: false, .. }));
    }

    #[test]
    fn recreated_key_starts_again_at_version_one() {
        let mut m = Mem::default();
        m.run(1, Timestamp::ZERO, put("a", "1", None));
        m.run(2, Timestamp::ZERO, Op::Delete { key: b"a".to_vec(), expected_version: Some(1) });
        m.run(3, Timestamp::ZERO, put("a", "x", None));
        let rec = m.0.get(b"a".as_slice()).expect("a");
        assert_eq!((rec.version, rec.create_revision), (1, 3));
    }

    #[test]
    fn txn_runs_failure_branch_when_a_compare_fails() {
        let mut m = Mem::default();
        m.run(1, Timestamp::ZERO, put("a", "1", None));
        let op = Op::Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(2),
            }],
            success: vec![TxnOp::Put { key: b"b".to_vec(), value: b"s".to_vec() }],
            failure: vec![TxnOp::Get { key: b"a".to_vec() }],
        };
        let res = m.run(2, Timestamp::ZERO, op);
        match res.outcome {
            Outcome::Txn { succeeded: false, results } => {
                assert_eq!(results.len(), 1);
                assert_eq!(results[0].as_ref().map(|r| r.version), Some(1));
            }
            o => panic!("unexpected {o:?}"),
        }
        assert!(!m.0.contains_key(b"b".as_slice()));
    }

    #[test]
    fn hlc_never_goes_back_even_if_the_proposal_is_older() {
        let last = Timestamp { wall_ns: 1_000, logical: 4, node: 2 };
        let got = apply_hlc(Timestamp { wall_ns: 10, logical: 0, node: 1 }, last);
        assert_eq!((got.wall_ns, got.logical), (1_000, 5));
    }

    fn open(id: &str, timeout_ms: u64) -> Op {
        Op::SagaOpen { saga_id: id.into(), timeout_ms }
    }

    #[test]
    fn failed_cas_and_noop_delete_produce_no_event() {
        let mut m = Mem::default();
        let (_, ev) = m.run_with(1, Timestamp::ZERO, 100, "", "", put("a", "1", Some(5)));
        assert!(ev.is_empty());
        let del = Op::Delete { key: b"zz".to_vec(), expected_version: None };
        let (_, ev) = m.run_with(2, Timestamp::ZERO, 100, "", "", del);
        assert!(ev.is_empty());
        let (_, ev) = m.run_with(3, Timestamp::ZERO, 100, "", "", put("a", "1", None));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].op, EventOp::Put);
        assert!(ev[0].before.is_none());
    }

    #[test]
    fn saga_write_is_pending_then_committed() {
        let mut m = Mem::default();
        let (r, ev) = m.run_with(1, Timestamp::ZERO, 1_000, "", "o", open("s", 500));
        assert_eq!(r.outcome, Outcome::SagaOpened { deadline_unix_ms: 1_500 });
        assert_eq!((ev[0].op, ev[0].saga_deadline_unix_ms), (EventOp::SagaOpen, 1_500));
        m.run_with(2, r.hlc, 1_100, "s", "w", put("a", "1", None));
        assert_eq!(m.0[b"a".as_slice()].status, Status::Pending("s".into()));
        let (r, ev) = m.run_with(3, r.hlc, 1_200, "", "c", Op::SagaCommit { saga_id: "s".into() });
        match r.outcome {
            Outcome::SagaCommitted { records } => assert_eq!(records.len(), 1),
            o => panic!("unexpected {o:?}"),
        }
        assert_eq!(ev.len(), 1);
        assert_eq!(m.0[b"a".as_slice()].status, Status::Committed);
        assert_eq!(m.0[b"a".as_slice()].version, 1, "commit flips status in place");
        // Committing again answers the same.
        let (r2, ev) =
            m.run_with(4, r.hlc, 1_300, "", "c2", Op::SagaCommit { saga_id: "s".into() });
        assert!(matches!(r2.outcome, Outcome::SagaCommitted { ref records } if records.len() == 1));
        assert!(ev.is_empty());
    }

    #[test]
    fn saga_write_after_the_deadline_or_unknown_saga_is_refused() {
        let mut m = Mem::default();
        m.run_with(1, Timestamp::ZERO, 1_000, "", "o", open("s", 100));
        let (r, ev) = m.run_with(2, Timestamp::ZERO, 1_101, "s", "w", put("a", "1", None));
        assert!(matches!(r.outcome, Outcome::Refused { ref reason } if reason.contains("expired")));
        assert!(ev.is_empty() && m.0.is_empty());
        let (r, _) = m.run_with(3, Timestamp::ZERO, 1_050, "nope", "w2", put("a", "1", None));
        assert!(matches!(r.outcome, Outcome::Refused { .. }));
        let (r, _) =
            m.run_with(4, Timestamp::ZERO, 1_200, "", "c", Op::SagaCommit { saga_id: "s".into() });
        assert!(matches!(r.outcome, Outcome::Refused { ref reason } if reason.contains("expired")));
    }

    #[test]
    fn abort_restores_before_images_and_reports_moved_keys() {
        let mut m = Mem::default();
        m.run(1, Timestamp::ZERO, put("a", "10", None));
        m.run_with(2, Timestamp::ZERO, 1_000, "", "o", open("s", 10_000));
        m.run_with(3, Timestamp::ZERO, 1_001, "s", "w1", put("a", "5", None));
        m.run_with(4, Timestamp::ZERO, 1_002, "s", "w2", put("b", "5", None));
        m.run_with(5, Timestamp::ZERO, 1_003, "s", "w3", put("a", "4", None));
        m.run_with(6, Timestamp::ZERO, 1_004, "s", "w4", put("c", "1", None));
        // Someone else moves c on.
        m.run(7, Timestamp::ZERO, put("c", "other", None));
        let abort = Op::SagaAbort { saga_id: "s".into(), reason: "test".into() };
        let (r, ev) = m.run_with(8, Timestamp::ZERO, 1_005, "", "ab", abort.clone());
        match &r.outcome {
            Outcome::SagaAborted { compensated, conflicts } => {
                assert_eq!(compensated.len(), 1, "{compensated:?}");
                assert_eq!(conflicts.len(), 1);
                assert_eq!(conflicts[0].key, b"c".to_vec());
            }
            o => panic!("unexpected {o:?}"),
        }
        let a = &m.0[b"a".as_slice()];
        assert_eq!(
            (a.value.as_slice(), a.version, &a.status),
            (b"10".as_slice(), 4, &Status::Compensated)
        );
        assert!(!m.0.contains_key(b"b".as_slice()), "b did not exist before the saga");
        assert_eq!(m.0[b"c".as_slice()].value, b"other".to_vec());
        // Reverse order of the last step per key: a (step 2) then b (step 1), abort last.
        let keys: Vec<_> = ev.iter().map(|e| (e.key.clone(), e.request_id.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), Some("ab/2".to_string())),
                (b"b".to_vec(), Some("ab/1".to_string())),
                (vec![], None)
            ]
        );
        assert!(ev[0].compensation && ev[1].compensation);
        assert_eq!(ev[2].op, EventOp::SagaAbort);
        let (again, ev) = m.run_with(9, Timestamp::ZERO, 1_006, "", "ab2", abort);
        assert_eq!(again.outcome, r.outcome, "abort is idempotent");
        assert!(ev.is_empty());
    }
}

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
    value_hash, ApplyResult, Command, Op, Outcome, Record, Revision, Status, TxnOp,
};

use super::StorageError;

/// Read access to the state the command applies on.
pub trait StateView {
    /// The current record of `key`, if any.
    fn record(&self, key: &[u8]) -> Result<Option<Record>, StorageError>;
}

/// One change to the key space made by an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: Vec<u8>,
    /// Version before the change (0 if absent).
    pub before_version: u64,
    /// The record after (None: deleted).
    pub after: Option<Record>,
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

/// Applies one command against a view, buffering writes so later ops in the same
/// entry (Txn) see earlier ones.
struct Applier<'a, V: StateView> {
    view: &'a V,
    revision: Revision,
    hlc: Timestamp,
    cmd: &'a Command,
    overlay: HashMap<Vec<u8>, Option<Record>>,
    changes: Vec<Change>,
}

impl<'a, V: StateView> Applier<'a, V> {
    fn read(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.overlay.get(key) {
            Some(r) => Ok(r.clone()),
            None => self.view.record(key),
        }
    }

    fn status(&self) -> Status {
        if self.cmd.saga_id.is_empty() {
            Status::Committed
        } else {
            Status::Pending(self.cmd.saga_id.clone())
        }
    }

    fn write(&mut self, key: &[u8], value: &[u8], current: Option<Record>) -> Record {
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
            status: self.status(),
        };
        debug_assert!(record.check().is_ok(), "apply built a bad record: {record:?}");
        self.record_change(key, current.as_ref(), Some(record.clone()));
        record
    }

    fn remove(&mut self, key: &[u8], current: &Record) {
        self.record_change(key, Some(current), None);
    }

    fn record_change(&mut self, key: &[u8], before: Option<&Record>, after: Option<Record>) {
        self.overlay.insert(key.to_vec(), after.clone());
        self.changes.push(Change {
            key: key.to_vec(),
            before_version: before.map_or(0, |r| r.version),
            after,
        });
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
}

/// Apply `cmd` at log index `revision`, after an entry applied at `last_hlc`.
/// Returns the result and the changes to write, in order.
pub fn apply_command<V: StateView>(
    view: &V,
    revision: Revision,
    last_hlc: Timestamp,
    cmd: &Command,
) -> Result<(ApplyResult, Vec<Change>), StorageError> {
    let hlc = apply_hlc(cmd.hlc, last_hlc);
    let mut a = Applier { view, revision, hlc, cmd, overlay: HashMap::new(), changes: Vec::new() };
    let outcome = match &cmd.op {
        Op::Put { key, value, expected_version } => a.put(key, value, *expected_version)?,
        Op::Delete { key, expected_version } => a.delete(key, *expected_version)?,
        Op::Txn { compares, success, failure } => {
            let mut succeeded = true;
            for c in compares {
                let current = a.read(&c.key)?;
                if !c.holds(current.as_ref()) {
                    succeeded = false;
                    break;
                }
            }
            let branch = if succeeded { success } else { failure };
            let mut results = Vec::with_capacity(branch.len());
            for op in branch {
                results.push(a.txn_op(op)?);
            }
            Outcome::Txn { succeeded, results }
        }
    };
    let changes = a.changes;
    Ok((ApplyResult { revision, hlc, outcome, duplicate: false }, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Compare, CompareOp, CompareTarget, Source};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<Vec<u8>, Record>);

    impl StateView for Mem {
        fn record(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
            Ok(self.0.get(key).cloned())
        }
    }

    impl Mem {
        fn run(&mut self, rev: u64, last: Timestamp, op: Op) -> ApplyResult {
            let cmd = Command {
                request_id: String::new(),
                saga_id: String::new(),
                trace_id: String::new(),
                hlc: Timestamp { wall_ns: 100, logical: 0, node: 1 },
                source: Source { node_id: 1, region: "r".into() },
                op,
            };
            let (res, changes) = apply_command(self, rev, last, &cmd).expect("apply");
            for c in changes {
                match c.after {
                    Some(r) => self.0.insert(c.key, r),
                    None => self.0.remove(&c.key),
                };
            }
            res
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
}

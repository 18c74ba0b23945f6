//! The responses the exactly-once table keeps: without the values a retry carries.
//!
//! A retry carries the same request, so the values its write stored need not be kept
//! again in its saved response: a successful Put keeps its record without the value,
//! a Txn keeps the records of its puts without theirs. A record kept that way is the
//! only kind whose hash does not match its value (every stored record's does, see
//! [`Record::check`]). Replaying a saved response puts the retry's values back, each
//! checked against the record's hash (xxh3-64): a request id reused for a request
//! with other values gets [`Outcome::ReusedRequestId`], never a value nobody wrote.
//! Values a request does not carry (a failed check's current record, a removed record,
//! a Txn's reads) are kept whole.
//!
//! Each entry also keeps a hash of the whole request ([`request_hash`]: the operation
//! and the saga it joins), so a request id reused for another key, version condition
//! or kind of write is refused too, not only one with other values. Entries written
//! before layout 4 have no hash; for them only the values are checked.
//!
//! With 100 B values this removes about half of every entry; with 64 KiB values it is
//! what keeps the table from storing 64 KiB per remembered request.

use xxhash_rust::xxh3::Xxh3Default;

use super::StorageError;
use crate::record::{value_hash, ApplyResult, Command, Op, Outcome, Record, TxnOp};

/// What a retry of `cmd` must repeat exactly, hashed: its operation and the saga it
/// joins (xxh3-64 over their postcard encoding, so every replica computes the same;
/// the trace id, HLC and proposer may differ between attempts and are left out).
pub fn request_hash(cmd: &Command) -> Result<u64, StorageError> {
    postcard::serialize_with_flavor(&(&cmd.saga_id, &cmd.op), Hashing(Xxh3Default::new()))
        .map_err(|e| StorageError::Corrupt(format!("encode: {e}")))
}

/// A postcard output that hashes the bytes written instead of keeping them.
struct Hashing(Xxh3Default);

impl postcard::ser_flavors::Flavor for Hashing {
    type Output = u64;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.update(&[byte]);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.update(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.0.digest())
    }
}

/// `result` as the exactly-once table keeps it for the request `op`.
pub fn elide(result: &ApplyResult, op: &Op) -> ApplyResult {
    let outcome = match (&result.outcome, op) {
        (Outcome::Put { succeeded: true, record: Some(r), current }, Op::Put { .. }) => {
            Outcome::Put {
                succeeded: true,
                record: Some(without_value(r)),
                current: current.clone(),
            }
        }
        (Outcome::Txn { succeeded, results }, Op::Txn { success, failure, .. }) => {
            let ops = if *succeeded { success } else { failure };
            let results = results
                .iter()
                .enumerate()
                .map(|(i, res)| match (res, ops.get(i)) {
                    (Some(r), Some(TxnOp::Put { key, .. })) if r.key == *key => {
                        Some(without_value(r))
                    }
                    _ => res.clone(),
                })
                .collect();
            Outcome::Txn { succeeded: *succeeded, results }
        }
        (other, _) => other.clone(),
    };
    ApplyResult { revision: result.revision, hlc: result.hlc, outcome, duplicate: result.duplicate }
}

/// The response to a retry `op`, whose [`request_hash`] is `hash`, of the request
/// whose saved response is `saved` and whose hash was `saved_hash` (None: remembered
/// before requests were hashed; then only the values are checked).
pub fn restore(saved: ApplyResult, saved_hash: Option<u64>, op: &Op, hash: u64) -> ApplyResult {
    let ApplyResult { revision, hlc, outcome, .. } = saved;
    let outcome = match saved_hash {
        Some(h) if h != hash => None,
        _ => restore_outcome(outcome, op),
    };
    let outcome = outcome.unwrap_or(Outcome::ReusedRequestId);
    ApplyResult { revision, hlc, outcome, duplicate: true }
}

/// `outcome` with the values of `op` put back; None when a value left out of it is not
/// the one `op` carries.
fn restore_outcome(outcome: Outcome, op: &Op) -> Option<Outcome> {
    Some(match outcome {
        Outcome::Put { succeeded, record: Some(r), current } if elided(&r) => {
            let Op::Put { value, .. } = op else { return None };
            Outcome::Put { succeeded, record: Some(with_value(r, value)?), current }
        }
        Outcome::Txn { succeeded, results } => {
            let ops = match op {
                Op::Txn { success, failure, .. } => Some(if succeeded { success } else { failure }),
                _ => None,
            };
            let mut restored = Vec::with_capacity(results.len());
            for (i, res) in results.into_iter().enumerate() {
                restored.push(match res {
                    Some(r) if elided(&r) => match ops.and_then(|o| o.get(i)) {
                        Some(TxnOp::Put { key, value }) if *key == r.key => {
                            Some(with_value(r, value)?)
                        }
                        _ => return None,
                    },
                    other => other,
                });
            }
            Outcome::Txn { succeeded, results: restored }
        }
        other => other,
    })
}

/// True when `r`'s value was left out (its hash is not its value's).
fn elided(r: &Record) -> bool {
    r.hash != value_hash(&r.value)
}

fn without_value(r: &Record) -> Record {
    Record {
        key: r.key.clone(),
        value: Vec::new(),
        version: r.version,
        revision: r.revision,
        create_revision: r.create_revision,
        hlc: r.hlc,
        hash: r.hash,
        source: r.source.clone(),
        status: r.status.clone(),
    }
}

/// `r` with `value` put back, if it is the value `r` was written with.
fn with_value(mut r: Record, value: &[u8]) -> Option<Record> {
    if r.hash != value_hash(value) {
        return None;
    }
    r.value = value.to_vec();
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::record::{Compare, CompareOp, CompareTarget, Source, Status};

    fn record(key: &[u8], value: &[u8]) -> Record {
        Record {
            key: key.to_vec(),
            value: value.to_vec(),
            version: 3,
            revision: 9,
            create_revision: 2,
            hlc: Timestamp { wall_ns: 5, logical: 1, node: 1 },
            hash: value_hash(value),
            source: Source { node_id: 1, region: "eu".into() },
            status: Status::Committed,
        }
    }

    /// `restore` as for an entry remembered without a request hash: the values alone
    /// decide.
    fn values_only(saved: ApplyResult, op: &Op) -> ApplyResult {
        restore(saved, None, op, 0)
    }

    fn command(saga_id: &str, op: Op) -> Command {
        Command {
            request_id: "r1".into(),
            saga_id: saga_id.into(),
            trace_id: "t1".into(),
            hlc: Timestamp { wall_ns: 5, logical: 0, node: 1 },
            source: Source { node_id: 1, region: "eu".into() },
            op,
        }
    }

    fn result(outcome: Outcome) -> ApplyResult {
        ApplyResult { revision: 9, hlc: Timestamp::ZERO, outcome, duplicate: false }
    }

    fn put(value: &[u8]) -> Op {
        Op::Put { key: b"k".to_vec(), value: value.to_vec(), expected_version: None }
    }

    fn put_outcome(record: Record) -> Outcome {
        Outcome::Put { succeeded: true, record: Some(record), current: None }
    }

    #[test]
    fn a_put_is_kept_without_its_value_and_replayed_with_it() {
        let original = result(put_outcome(record(b"k", b"value")));
        let saved = elide(&original, &put(b"value"));
        match &saved.outcome {
            Outcome::Put { record: Some(r), .. } => {
                assert!(r.value.is_empty());
                assert_eq!(r.hash, value_hash(b"value"));
            }
            o => panic!("unexpected {o:?}"),
        }
        let replay = values_only(saved, &put(b"value"));
        assert!(replay.duplicate);
        assert_eq!(replay.outcome, original.outcome);
        assert_eq!((replay.revision, replay.hlc), (original.revision, original.hlc));
    }

    #[test]
    fn a_retry_with_another_value_is_a_reused_request_id() {
        let saved = elide(&result(put_outcome(record(b"k", b"value"))), &put(b"value"));
        assert_eq!(values_only(saved.clone(), &put(b"other")).outcome, Outcome::ReusedRequestId);
        let del = Op::Delete { key: b"k".to_vec(), expected_version: None };
        assert_eq!(values_only(saved, &del).outcome, Outcome::ReusedRequestId);
    }

    #[test]
    fn an_empty_value_and_values_the_request_does_not_carry_are_kept() {
        let empty = result(put_outcome(record(b"k", b"")));
        assert_eq!(elide(&empty, &put(b"")).outcome, empty.outcome);
        assert_eq!(values_only(empty.clone(), &put(b"")).outcome, empty.outcome);
        let failed = result(Outcome::Put {
            succeeded: false,
            record: None,
            current: Some(record(b"k", b"theirs")),
        });
        let saved = elide(&failed, &put(b"mine"));
        assert_eq!(saved.outcome, failed.outcome);
        assert_eq!(values_only(saved, &put(b"mine")).outcome, failed.outcome);
    }

    #[test]
    fn a_saved_response_with_its_value_replays_as_before() {
        // Entries written before values were left out keep them: the retry's value,
        // checked against the hash, is the same.
        let full = result(put_outcome(record(b"k", b"value")));
        assert_eq!(values_only(full.clone(), &put(b"value")).outcome, full.outcome);
        let reused = values_only(full.clone(), &put(b"other"));
        assert_eq!(reused.outcome, full.outcome, "nothing left out, nothing to check");
    }

    #[test]
    fn a_txn_keeps_its_reads_and_replays_its_puts() {
        let op = Op::Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(1),
            }],
            success: vec![
                TxnOp::Put { key: b"a".to_vec(), value: b"x".to_vec() },
                TxnOp::Get { key: b"b".to_vec() },
                TxnOp::Put { key: b"c".to_vec(), value: b"y".to_vec() },
                TxnOp::Delete { key: b"d".to_vec() },
            ],
            failure: vec![],
        };
        let original = result(Outcome::Txn {
            succeeded: true,
            results: vec![
                Some(record(b"a", b"x")),
                Some(record(b"b", b"read")),
                Some(record(b"c", b"y")),
                Some(record(b"d", b"removed")),
            ],
        });
        let saved = elide(&original, &op);
        match &saved.outcome {
            Outcome::Txn { results, .. } => {
                let values: Vec<&[u8]> =
                    results.iter().flatten().map(|r| r.value.as_slice()).collect();
                assert_eq!(values, vec![&b""[..], b"read", b"", b"removed"]);
            }
            o => panic!("unexpected {o:?}"),
        }
        assert_eq!(values_only(saved.clone(), &op).outcome, original.outcome);
        let mut other = op.clone();
        if let Op::Txn { success, .. } = &mut other {
            success[2] = TxnOp::Put { key: b"c".to_vec(), value: b"z".to_vec() };
        }
        assert_eq!(values_only(saved.clone(), &other).outcome, Outcome::ReusedRequestId);
        assert_eq!(values_only(saved, &put(b"x")).outcome, Outcome::ReusedRequestId);
    }

    #[test]
    fn a_retry_must_repeat_the_whole_request_not_only_its_values() {
        let first = command("", put(b"value"));
        let hash = request_hash(&first).expect("hash");
        let saved = elide(&result(put_outcome(record(b"k", b"value"))), &first.op);
        // Another attempt of the same request: other trace id, HLC and proposer.
        let mut retry = first.clone();
        retry.trace_id = "t2".into();
        retry.hlc = Timestamp { wall_ns: 99, logical: 3, node: 2 };
        retry.source = Source { node_id: 2, region: "us".into() };
        let h = request_hash(&retry).expect("hash");
        assert_eq!(h, hash, "the attempt-specific fields are not hashed");
        let replay = restore(saved.clone(), Some(hash), &retry.op, h);
        assert!(matches!(replay.outcome, Outcome::Put { succeeded: true, .. }));
        // Same value, another key / condition / saga: the values alone cannot tell.
        let other_key =
            Op::Put { key: b"k2".to_vec(), value: b"value".to_vec(), expected_version: None };
        let other_version =
            Op::Put { key: b"k".to_vec(), value: b"value".to_vec(), expected_version: Some(0) };
        for other in
            [command("", other_key), command("", other_version), command("s1", put(b"value"))]
        {
            let h = request_hash(&other).expect("hash");
            assert_ne!(h, hash, "{other:?}");
            let by_values = values_only(saved.clone(), &other.op).outcome;
            assert!(matches!(by_values, Outcome::Put { succeeded: true, .. }), "{by_values:?}");
            let replay = restore(saved.clone(), Some(hash), &other.op, h);
            assert_eq!(replay.outcome, Outcome::ReusedRequestId, "{other:?}");
        }
    }
}

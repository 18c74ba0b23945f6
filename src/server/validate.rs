//! Request validation: turns protobuf requests into internal operations, enforcing
//! every limit with INVALID_ARGUMENT and a message that names the field and the limit.
//! Pure functions; nothing here touches state.

use std::collections::HashSet;

use crate::error::Error;
use crate::pb::v1 as pb;
use crate::record::{
    Compare, CompareOp, CompareTarget, Op, TxnOp, MAX_SAGA_REASON_BYTES, MAX_SAGA_TIMEOUT_MS,
    MAX_TXN_OPS,
};

/// Default page size of Range.
pub const DEFAULT_RANGE_LIMIT: u32 = 1_000;
/// Max page size of Range.
pub const MAX_RANGE_LIMIT: u32 = 10_000;
/// Max request id length, bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Size limits of keys and values.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Max key size, bytes.
    pub max_key_bytes: usize,
    /// Max value size, bytes.
    pub max_value_bytes: usize,
}

fn invalid<T>(m: impl Into<String>) -> Result<T, Error> {
    Err(Error::InvalidArgument(m.into()))
}

impl Limits {
    /// Check a key: non-empty and within the limit.
    pub fn key(&self, what: &str, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return invalid(format!("{what}: key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return invalid(format!(
                "{what}: key is {} bytes, over the limit of {} bytes",
                key.len(),
                self.max_key_bytes
            ));
        }
        Ok(())
    }

    /// Check a value size.
    pub fn value(&self, what: &str, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.max_value_bytes {
            return invalid(format!(
                "{what}: value is {} bytes, over the limit of {} bytes",
                value.len(),
                self.max_value_bytes
            ));
        }
        Ok(())
    }
}

/// Check the request id and saga id fields of a write.
pub fn ids(request_id: &str, saga_id: &str) -> Result<(), Error> {
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return invalid(format!(
            "request_id is {} bytes, over the limit of {MAX_REQUEST_ID_BYTES}",
            request_id.len()
        ));
    }
    if !saga_id.is_empty() {
        self::saga_id(saga_id)?;
    }
    Ok(())
}

/// Check a saga id: 1..=128 bytes of printable ASCII.
pub fn saga_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
        return invalid(format!(
            "saga_id is {} bytes; it must be 1..={MAX_REQUEST_ID_BYTES} bytes",
            id.len()
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return invalid("saga_id must be printable ASCII");
    }
    Ok(())
}

/// Validate an OpenSaga.
pub fn open_saga(r: &pb::OpenSagaRequest) -> Result<Op, Error> {
    saga_id(&r.saga_id)?;
    ids(&r.request_id, "")?;
    if r.timeout_ms == 0 || r.timeout_ms > MAX_SAGA_TIMEOUT_MS {
        return invalid(format!(
            "open_saga: timeout_ms {} must be 1..={MAX_SAGA_TIMEOUT_MS}",
            r.timeout_ms
        ));
    }
    Ok(Op::SagaOpen { saga_id: r.saga_id.clone(), timeout_ms: r.timeout_ms })
}

/// Validate a CommitSaga.
pub fn commit_saga(r: &pb::CommitSagaRequest) -> Result<Op, Error> {
    saga_id(&r.saga_id)?;
    ids(&r.request_id, "")?;
    Ok(Op::SagaCommit { saga_id: r.saga_id.clone() })
}

/// Validate an AbortSaga.
pub fn abort_saga(r: &pb::AbortSagaRequest) -> Result<Op, Error> {
    saga_id(&r.saga_id)?;
    ids(&r.request_id, "")?;
    if r.reason.len() > MAX_SAGA_REASON_BYTES {
        return invalid(format!(
            "abort_saga: reason is {} bytes, over the limit of {MAX_SAGA_REASON_BYTES}",
            r.reason.len()
        ));
    }
    Ok(Op::SagaAbort { saga_id: r.saga_id.clone(), reason: r.reason.clone() })
}

/// Read consistency, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read index through the leader.
    Linearizable,
    /// Local replica state.
    Serializable,
    /// Local if provably at most this many ms old.
    BoundedStaleness(u64),
}

/// Validate a consistency enum value (unknown values are refused, not defaulted).
pub fn consistency(raw: i32, max_staleness_ms: u64) -> Result<Consistency, Error> {
    match pb::Consistency::try_from(raw) {
        Ok(pb::Consistency::Unspecified | pb::Consistency::Linearizable) => {
            Ok(Consistency::Linearizable)
        }
        Ok(pb::Consistency::Serializable) => Ok(Consistency::Serializable),
        Ok(pb::Consistency::BoundedStaleness) => {
            if max_staleness_ms == 0 {
                return invalid("consistency BOUNDED_STALENESS needs max_staleness_ms > 0");
            }
            Ok(Consistency::BoundedStaleness(max_staleness_ms))
        }
        Err(_) => invalid(format!("unknown consistency value {raw} (expected 0..=3)")),
    }
}

/// Validate a Put.
pub fn put(l: &Limits, r: &pb::PutRequest) -> Result<Op, Error> {
    l.key("put", &r.key)?;
    l.value("put", &r.value)?;
    ids(&r.request_id, &r.saga_id)?;
    Ok(Op::Put { key: r.key.clone(), value: r.value.clone(), expected_version: r.expected_version })
}

/// Validate a Delete.
pub fn delete(l: &Limits, r: &pb::DeleteRequest) -> Result<Op, Error> {
    l.key("delete", &r.key)?;
    ids(&r.request_id, &r.saga_id)?;
    if r.expected_version == Some(0) {
        return invalid("delete: expected_version 0 (absent) can never match an existing key; omit it or use >= 1");
    }
    Ok(Op::Delete { key: r.key.clone(), expected_version: r.expected_version })
}

/// The smallest key greater than every key with `prefix`, or None when unbounded.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A validated range scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeScan {
    /// First key (inclusive) of this page.
    pub start: Vec<u8>,
    /// End key (exclusive); None = end of the key space.
    pub end: Option<Vec<u8>>,
    /// Page size.
    pub limit: usize,
}

/// Validate a Range request.
pub fn range(l: &Limits, r: &pb::RangeRequest) -> Result<RangeScan, Error> {
    let has_bounds = !r.start.is_empty() || !r.end.is_empty();
    if !r.prefix.is_empty() && has_bounds {
        return invalid("range: give either prefix or start/end, not both");
    }
    for (what, k) in [("range start", &r.start), ("range end", &r.end), ("range prefix", &r.prefix)]
    {
        if k.len() > l.max_key_bytes {
            return invalid(format!(
                "{what} is {} bytes, over the key limit of {} bytes",
                k.len(),
                l.max_key_bytes
            ));
        }
    }
    let (start, end) = if r.prefix.is_empty() {
        let end = (!r.end.is_empty()).then(|| r.end.clone());
        if let Some(e) = &end {
            if r.start >= *e {
                return invalid(format!(
                    "range start {:?} must be less than end {:?}",
                    String::from_utf8_lossy(&r.start),
                    String::from_utf8_lossy(e)
                ));
            }
        }
        (r.start.clone(), end)
    } else {
        (r.prefix.clone(), prefix_end(&r.prefix))
    };
    let limit = match r.limit {
        0 => DEFAULT_RANGE_LIMIT,
        n if n > MAX_RANGE_LIMIT => {
            return invalid(format!("range limit {n} is over the maximum of {MAX_RANGE_LIMIT}"))
        }
        n => n,
    };
    let start = if r.page_token.is_empty() {
        start
    } else {
        let t = &r.page_token;
        if *t < start || end.as_ref().is_some_and(|e| t >= e) {
            return invalid("range page_token does not belong to this range");
        }
        t.clone()
    };
    Ok(RangeScan { start, end, limit: limit as usize })
}

fn compare(l: &Limits, c: &pb::Compare, i: usize) -> Result<Compare, Error> {
    let what = format!("txn compare #{i}");
    l.key(&what, &c.key)?;
    let op = match pb::CompareOp::try_from(c.op) {
        Ok(pb::CompareOp::Equal) => CompareOp::Equal,
        Ok(pb::CompareOp::NotEqual) => CompareOp::NotEqual,
        Ok(pb::CompareOp::Greater) => CompareOp::Greater,
        Ok(pb::CompareOp::Less) => CompareOp::Less,
        Ok(pb::CompareOp::Unspecified) => return invalid(format!("{what}: op is unspecified")),
        Err(_) => return invalid(format!("{what}: unknown op value {}", c.op)),
    };
    use pb::compare::Operand;
    let target = match (pb::CompareTarget::try_from(c.target), &c.operand) {
        (Ok(pb::CompareTarget::Version), Some(Operand::Version(v))) => CompareTarget::Version(*v),
        (Ok(pb::CompareTarget::Value), Some(Operand::Value(v))) => {
            l.value(&what, v)?;
            CompareTarget::Value(v.clone())
        }
        (Ok(pb::CompareTarget::Exists), Some(Operand::Exists(e))) => {
            if !matches!(op, CompareOp::Equal | CompareOp::NotEqual) {
                return invalid(format!("{what}: EXISTS compares only with EQUAL or NOT_EQUAL"));
            }
            CompareTarget::Exists(*e)
        }
        (Ok(pb::CompareTarget::Unspecified), _) => {
            return invalid(format!("{what}: target is unspecified"))
        }
        (Err(_), _) => return invalid(format!("{what}: unknown target value {}", c.target)),
        (Ok(t), _) => {
            return invalid(format!("{what}: operand does not match target {}", t.as_str_name()))
        }
    };
    Ok(Compare { key: c.key.clone(), op, target })
}

fn branch(l: &Limits, ops: &[pb::TxnOp], name: &str) -> Result<Vec<TxnOp>, Error> {
    let mut written = HashSet::new();
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let what = format!("txn {name} op #{i}");
        use pb::txn_op::Op as P;
        let t = match &op.op {
            Some(P::Put(p)) => {
                l.key(&what, &p.key)?;
                l.value(&what, &p.value)?;
                TxnOp::Put { key: p.key.clone(), value: p.value.clone() }
            }
            Some(P::Delete(d)) => {
                l.key(&what, &d.key)?;
                TxnOp::Delete { key: d.key.clone() }
            }
            Some(P::Get(g)) => {
                l.key(&what, &g.key)?;
                TxnOp::Get { key: g.key.clone() }
            }
            None => return invalid(format!("{what}: no operation set")),
        };
        if !matches!(t, TxnOp::Get { .. }) && !written.insert(t.key().to_vec()) {
            return invalid(format!(
                "{what}: key {:?} is written twice in one branch",
                String::from_utf8_lossy(t.key())
            ));
        }
        out.push(t);
    }
    Ok(out)
}

/// Validate a Txn.
pub fn txn(l: &Limits, r: &pb::TxnRequest) -> Result<Op, Error> {
    ids(&r.request_id, &r.saga_id)?;
    let n = r.compares.len() + r.success.len() + r.failure.len();
    if n == 0 {
        return invalid("txn: empty (no compares and no operations)");
    }
    if n > MAX_TXN_OPS {
        return invalid(format!(
            "txn: {n} compares and operations, over the limit of {MAX_TXN_OPS}"
        ));
    }
    let compares =
        r.compares.iter().enumerate().map(|(i, c)| compare(l, c, i)).collect::<Result<_, _>>()?;
    Ok(Op::Txn {
        compares,
        success: branch(l, &r.success, "success")?,
        failure: branch(l, &r.failure, "failure")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_key_bytes: 8, max_value_bytes: 16 };

    fn expect_invalid<T: std::fmt::Debug>(r: Result<T, Error>, needle: &str) {
        match r {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected InvalidArgument({needle}), got {other:?}"),
        }
    }

    #[test]
    fn empty_and_oversized_keys_are_refused_with_the_limit() {
        expect_invalid(put(&L, &pb::PutRequest::default()), "must not be empty");
        let r = pb::PutRequest { key: vec![b'k'; 9], ..Default::default() };
        expect_invalid(put(&L, &r), "limit of 8 bytes");
        let r = pb::PutRequest { key: b"k".to_vec(), value: vec![0; 17], ..Default::default() };
        expect_invalid(put(&L, &r), "limit of 16 bytes");
    }

    #[test]
    fn saga_requests_are_validated() {
        let r = pb::OpenSagaRequest { saga_id: "s".into(), timeout_ms: 0, ..Default::default() };
        expect_invalid(open_saga(&r), "timeout_ms 0");
        let r = pb::OpenSagaRequest { saga_id: "".into(), timeout_ms: 5, ..Default::default() };
        expect_invalid(open_saga(&r), "1..=128");
        let r = pb::CommitSagaRequest { saga_id: "a\u{7}".into(), ..Default::default() };
        expect_invalid(commit_saga(&r), "printable");
        let r = pb::OpenSagaRequest {
            saga_id: "s".into(),
            timeout_ms: MAX_SAGA_TIMEOUT_MS + 1,
            ..Default::default()
        };
        expect_invalid(open_saga(&r), "must be 1..=");
    }

    #[test]
    fn inverted_range_is_refused() {
        let r = pb::RangeRequest { start: b"b".to_vec(), end: b"a".to_vec(), ..Default::default() };
        expect_invalid(range(&L, &r), "less than end");
    }

    #[test]
    fn prefix_end_increments_and_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn unknown_consistency_is_refused() {
        expect_invalid(consistency(99, 0), "unknown consistency value 99");
        assert_eq!(consistency(0, 0).ok(), Some(Consistency::Linearizable));
    }

    #[test]
    fn malformed_txns_are_refused() {
        expect_invalid(txn(&L, &pb::TxnRequest::default()), "empty");
        let bad_compare = pb::TxnRequest {
            compares: vec![pb::Compare { key: b"k".to_vec(), target: 0, op: 1, operand: None }],
            ..Default::default()
        };
        expect_invalid(txn(&L, &bad_compare), "target is unspecified");
        let mismatched = pb::TxnRequest {
            compares: vec![pb::Compare {
                key: b"k".to_vec(),
                target: pb::CompareTarget::Version as i32,
                op: 1,
                operand: Some(pb::compare::Operand::Value(b"x".to_vec())),
            }],
            ..Default::default()
        };
        expect_invalid(txn(&L, &mismatched), "operand does not match");
        let put = |k: &str| pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::TxnPut { key: k.into(), value: vec![] })),
        };
        let dup = pb::TxnRequest { success: vec![put("a"), put("a")], ..Default::default() };
        expect_invalid(txn(&L, &dup), "written twice");
        let empty_op =
            pb::TxnRequest { success: vec![pb::TxnOp { op: None }], ..Default::default() };
        expect_invalid(txn(&L, &empty_op), "no operation set");
        let many = pb::TxnRequest {
            success: (0..200)
                .map(|_| pb::TxnOp {
                    op: Some(pb::txn_op::Op::Get(pb::TxnGet { key: b"k".to_vec() })),
                })
                .collect(),
            ..Default::default()
        };
        expect_invalid(txn(&L, &many), "over the limit of 128");
    }
}

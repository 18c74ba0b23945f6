//! The `register` workload: read / write / cas on independent keys, checked per key
//! with the cas-register model.
//!
//! - Keys `k0, k1, ...` (stored as `jepsen/register/k<N>`). `keys` of them are in use at
//!   once; a key that has had `ops_per_key` operations invoked is retired and replaced
//!   by a fresh one, which keeps every key's sub-history small enough for the search
//!   whatever the run length (like Jepsen's `independent` generator).
//! - `read`: Get LINEARIZABLE; an absent key reads `null`.
//! - `write v`: unconditional Put of a unique, increasing integer (as a decimal string).
//! - `cas [old new]`: a Txn comparing VALUE == old (or, for `old = null`, EXISTS ==
//!   false) that puts `new`; `succeeded = false` is a definite `fail`. `old` is the last
//!   value the generator asked to write to that key, so CAS succeeds often.
//! - Mix: 50 % reads, 25 % writes, 25 % cas.
//!
//! A read of a value that is not a decimal integer cannot be checked: it is recorded as
//! `fail` and counted in [`RegisterWorkload::anomalies`], which makes the run invalid.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use meridian::pb::v1 as pb;
use rand::Rng;
use serde_json::{json, Value as Json};

use super::client::{call, request, Completion};
use super::workload::{parse_int, OpContext, Outcome};

/// Prefix of every register key in the store.
pub const KEY_PREFIX: &str = "jepsen/register/";
/// Chance per 100 that an operation is a read.
pub const READ_PERCENT: u32 = 50;
/// Chance per 100 that an operation is a write (the rest are cas).
pub const WRITE_PERCENT: u32 = 25;

/// One register operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    /// Read the key.
    Read,
    /// Write a value.
    Write(i64),
    /// Replace `expected` (None: absent) by `new`.
    Cas(Option<i64>, i64),
}

impl RegisterOp {
    /// The history's `f`.
    pub fn f(self) -> &'static str {
        match self {
            RegisterOp::Read => "read",
            RegisterOp::Write(_) => "write",
            RegisterOp::Cas(..) => "cas",
        }
    }

    /// The invocation's value.
    pub fn value(self) -> Json {
        match self {
            RegisterOp::Read => Json::Null,
            RegisterOp::Write(v) => json!(v),
            RegisterOp::Cas(e, n) => json!([e, n]),
        }
    }
}

struct KeyPool {
    /// Active keys and how many operations each has had.
    active: Vec<(String, usize)>,
    /// Every key ever used, in order.
    used: Vec<String>,
    /// Last value the generator asked to write, per key.
    last_written: HashMap<String, i64>,
}

/// The register workload. See the module docs.
pub struct RegisterWorkload {
    pool: Mutex<KeyPool>,
    next_value: AtomicI64,
    ops_per_key: usize,
    anomalies: AtomicU64,
}

/// The store key of register `key`.
pub fn store_key(key: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{key}").into_bytes()
}

impl RegisterWorkload {
    /// `keys` keys in use at once, each retired after `ops_per_key` operations.
    pub fn new(keys: usize, ops_per_key: usize) -> Self {
        let active: Vec<(String, usize)> = (0..keys).map(|i| (format!("k{i}"), 0)).collect();
        let used = active.iter().map(|(k, _)| k.clone()).collect();
        Self {
            pool: Mutex::new(KeyPool { active, used, last_written: HashMap::new() }),
            next_value: AtomicI64::new(1),
            ops_per_key,
            anomalies: AtomicU64::new(0),
        }
    }

    /// Every key used so far (for the final reads).
    pub fn used_keys(&self) -> Vec<String> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).used.clone()
    }

    /// Reads whose value could not be parsed.
    pub fn anomalies(&self) -> u64 {
        self.anomalies.load(Ordering::Relaxed)
    }

    /// The next operation: a key and what to do with it.
    pub fn next_op(&self, rng: &mut impl Rng) -> (String, RegisterOp) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let slot = rng.gen_range(0..pool.active.len());
        let key = pool.active[slot].0.clone();
        pool.active[slot].1 += 1;
        if pool.active[slot].1 >= self.ops_per_key {
            let fresh = format!("k{}", pool.used.len());
            pool.used.push(fresh.clone());
            pool.active[slot] = (fresh, 0);
        }
        let roll = rng.gen_range(0..100);
        let op = if roll < READ_PERCENT {
            RegisterOp::Read
        } else {
            let new = self.next_value.fetch_add(1, Ordering::Relaxed);
            let expected = pool.last_written.insert(key.clone(), new);
            if roll < READ_PERCENT + WRITE_PERCENT {
                RegisterOp::Write(new)
            } else {
                RegisterOp::Cas(expected, new)
            }
        };
        (key, op)
    }

    /// Run one operation as `ctx`'s process: record, call, record.
    pub async fn run(&self, ctx: &mut OpContext<'_>, key: &str, op: RegisterOp) -> Outcome {
        ctx.invoke(op.f(), Some(key), op.value());
        let completion = match op {
            RegisterOp::Read => self.read(ctx, key).await,
            RegisterOp::Write(v) => write(ctx, key, v).await,
            RegisterOp::Cas(e, n) => cas(ctx, key, e, n).await,
        };
        ctx.complete(op.f(), Some(key), op.value(), completion)
    }

    async fn read(&self, ctx: &mut OpContext<'_>, key: &str) -> Completion {
        let req = pb::GetRequest {
            key: store_key(key),
            consistency: pb::Consistency::Linearizable as i32,
            max_staleness_ms: 0,
        };
        let resp = match call(ctx.timeout, ctx.kv.get(request(req, ctx.timeout))).await {
            Ok(r) => r,
            Err(e) => return e.read_completion(),
        };
        match resp.record.filter(|_| resp.found) {
            None => Completion::Ok(Json::Null),
            Some(r) => match parse_int(&r.value) {
                Some(v) => Completion::Ok(json!(v)),
                None => {
                    self.anomalies.fetch_add(1, Ordering::Relaxed);
                    Completion::Fail(format!(
                        "ANOMALY: value {:?} is not an integer",
                        String::from_utf8_lossy(&r.value)
                    ))
                }
            },
        }
    }
}

async fn write(ctx: &mut OpContext<'_>, key: &str, value: i64) -> Completion {
    let req = pb::PutRequest {
        key: store_key(key),
        value: value.to_string().into_bytes(),
        expected_version: None,
        request_id: String::new(),
        saga_id: String::new(),
    };
    match call(ctx.timeout, ctx.kv.put(request(req, ctx.timeout))).await {
        Ok(r) if r.succeeded => Completion::Ok(json!(value)),
        Ok(r) => Completion::Info(format!("unconditional put answered succeeded=false: {r:?}")),
        Err(e) => e.write_completion(),
    }
}

/// The compare of a CAS from `expected`.
pub fn cas_compare(key: &str, expected: Option<i64>) -> pb::Compare {
    match expected {
        Some(v) => pb::Compare {
            key: store_key(key),
            target: pb::CompareTarget::Value as i32,
            op: pb::CompareOp::Equal as i32,
            operand: Some(pb::compare::Operand::Value(v.to_string().into_bytes())),
        },
        None => pb::Compare {
            key: store_key(key),
            target: pb::CompareTarget::Exists as i32,
            op: pb::CompareOp::Equal as i32,
            operand: Some(pb::compare::Operand::Exists(false)),
        },
    }
}

async fn cas(ctx: &mut OpContext<'_>, key: &str, expected: Option<i64>, new: i64) -> Completion {
    let put = pb::TxnPut { key: store_key(key), value: new.to_string().into_bytes() };
    let req = pb::TxnRequest {
        compares: vec![cas_compare(key, expected)],
        success: vec![pb::TxnOp { op: Some(pb::txn_op::Op::Put(put)) }],
        failure: Vec::new(),
        request_id: String::new(),
        saga_id: String::new(),
    };
    match call(ctx.timeout, ctx.kv.txn(request(req, ctx.timeout))).await {
        Ok(r) if r.succeeded => Completion::Ok(json!([expected, new])),
        Ok(_) => Completion::Fail("compare did not hold".into()),
        Err(e) => e.write_completion(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn keys_are_retired_after_their_budget_and_values_are_unique() {
        let w = RegisterWorkload::new(1, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut written = Vec::new();
        for _ in 0..30 {
            let (_, op) = w.next_op(&mut rng);
            match op {
                RegisterOp::Write(v) | RegisterOp::Cas(_, v) => written.push(v),
                RegisterOp::Read => {}
            }
        }
        // 30 operations on keys of 3 operations each: the first key + 10 fresh ones.
        assert_eq!(w.used_keys().len(), 11);
        let mut sorted = written.clone();
        sorted.dedup();
        assert_eq!(sorted, written, "values strictly increase");
    }

    #[test]
    fn cas_expects_the_last_value_asked_for() {
        let w = RegisterWorkload::new(1, 1000);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut last = None;
        for _ in 0..200 {
            match w.next_op(&mut rng).1 {
                RegisterOp::Write(v) => last = Some(v),
                RegisterOp::Cas(e, n) => {
                    assert_eq!(e, last);
                    last = Some(n);
                }
                RegisterOp::Read => {}
            }
        }
    }
}

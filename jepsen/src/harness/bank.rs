//! The `bank` workload: transfers between accounts with multi-key transactions; the
//! total never changes and no balance goes negative.
//!
//! - Accounts `0..N` stored as `jepsen/bank/<i>` (decimal balances), all written once
//!   by one Txn before the run ([`BankWorkload::setup`]).
//! - `transfer {from, to, amount}`: a Txn of gets reads both balances and versions; if
//!   `from` holds less than `amount` the transfer is a `fail` (nothing written);
//!   otherwise a second Txn compares VERSION of both accounts against what was read and
//!   puts both new balances. A compare that no longer holds is a `fail`; an error
//!   follows [`super::client`] semantics (indeterminate: `info`).
//! - `read`: one Txn of gets of every account (a linearizable snapshot: Txn goes
//!   through the Raft log); `ok` carries `{account: balance}`.
//! - Mix: 50 % reads, 50 % transfers.
//!
//! Checker ([`check`]): every `ok` read must see every account, integer balances, no
//! negative balance and the initial total. The first violating read is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian::pb::v1 as pb;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value as Json};

use super::client::{call, request, CallError, Completion};
use super::recorder::{Actor, Record};
use super::workload::{parse_int, OpContext, Outcome};
use crate::history::EventType;

/// Prefix of every account key.
pub const KEY_PREFIX: &str = "jepsen/bank/";
/// Chance per 100 that an operation is a read.
pub const READ_PERCENT: u32 = 50;
/// Violating reads listed in the report.
pub const MAX_REPORTED_VIOLATIONS: usize = 10;

/// The store key of account `i`.
pub fn account_key(i: usize) -> Vec<u8> {
    format!("{KEY_PREFIX}{i}").into_bytes()
}

fn get_op(key: Vec<u8>) -> pb::TxnOp {
    pb::TxnOp { op: Some(pb::txn_op::Op::Get(pb::TxnGet { key })) }
}

fn put_op(key: Vec<u8>, value: i64) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::TxnPut { key, value: value.to_string().into_bytes() })),
    }
}

fn version_equals(key: Vec<u8>, version: u64) -> pb::Compare {
    pb::Compare {
        key,
        target: pb::CompareTarget::Version as i32,
        op: pb::CompareOp::Equal as i32,
        operand: Some(pb::compare::Operand::Version(version)),
    }
}

/// One bank operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankOp {
    /// Read every account.
    Read,
    /// Move `amount` from `from` to `to`.
    Transfer {
        /// Source account.
        from: usize,
        /// Destination account.
        to: usize,
        /// Amount (>= 1).
        amount: i64,
    },
}

impl BankOp {
    /// The history's `f`.
    pub fn f(self) -> &'static str {
        match self {
            BankOp::Read => "read",
            BankOp::Transfer { .. } => "transfer",
        }
    }

    /// The invocation's value.
    pub fn value(self) -> Json {
        match self {
            BankOp::Read => Json::Null,
            BankOp::Transfer { from, to, amount } => {
                json!({"from": from, "to": to, "amount": amount})
            }
        }
    }
}

/// The bank workload. See the module docs.
pub struct BankWorkload {
    accounts: usize,
    initial_balance: i64,
    max_transfer: i64,
}

impl BankWorkload {
    /// `accounts` accounts of `initial_balance` each; transfers of 1..=`max_transfer`.
    pub fn new(accounts: usize, initial_balance: i64, max_transfer: i64) -> Self {
        Self { accounts, initial_balance, max_transfer }
    }

    /// The invariant total.
    pub fn total(&self) -> i64 {
        self.initial_balance.saturating_mul(i64::try_from(self.accounts).unwrap_or(i64::MAX))
    }

    /// Accounts.
    pub fn accounts(&self) -> usize {
        self.accounts
    }

    /// The Txn that writes every initial balance.
    pub fn setup_request(&self) -> pb::TxnRequest {
        pb::TxnRequest {
            compares: Vec::new(),
            success: (0..self.accounts)
                .map(|i| put_op(account_key(i), self.initial_balance))
                .collect(),
            failure: Vec::new(),
            request_id: "jepsen-bank-setup".into(),
            saga_id: String::new(),
        }
    }

    /// The next operation.
    pub fn next_op(&self, rng: &mut impl Rng) -> BankOp {
        if rng.gen_range(0..100) < READ_PERCENT {
            return BankOp::Read;
        }
        let from = rng.gen_range(0..self.accounts);
        let to = (from + rng.gen_range(1..self.accounts)) % self.accounts;
        BankOp::Transfer { from, to, amount: rng.gen_range(1..=self.max_transfer) }
    }

    /// Run one operation as `ctx`'s process: record, call, record.
    pub async fn run(&self, ctx: &mut OpContext<'_>, op: BankOp) -> Outcome {
        ctx.invoke(op.f(), None, op.value());
        let completion = match op {
            BankOp::Read => match self.read_all(ctx).await {
                Ok(balances) => Completion::Ok(balances),
                Err(e) => e.read_completion(),
            },
            BankOp::Transfer { from, to, amount } => transfer(ctx, from, to, amount).await,
        };
        ctx.complete(op.f(), None, op.value(), completion)
    }

    /// One Txn of gets of every account: `{"0": balance|null|"<raw>", ...}`.
    pub async fn read_all(&self, ctx: &mut OpContext<'_>) -> Result<Json, CallError> {
        let req = pb::TxnRequest {
            compares: Vec::new(),
            success: (0..self.accounts).map(|i| get_op(account_key(i))).collect(),
            failure: Vec::new(),
            request_id: String::new(),
            saga_id: String::new(),
        };
        let resp = call(ctx.timeout, ctx.kv.txn(request(req, ctx.timeout))).await?;
        let mut map = serde_json::Map::new();
        for i in 0..self.accounts {
            let result = resp.results.get(i);
            let value = match result.and_then(|r| r.record.as_ref().filter(|_| r.found)) {
                None => Json::Null,
                Some(rec) => parse_int(&rec.value).map_or_else(
                    || Json::from(String::from_utf8_lossy(&rec.value).into_owned()),
                    Json::from,
                ),
            };
            map.insert(i.to_string(), value);
        }
        Ok(Json::Object(map))
    }
}

/// Balance and version of the records a Txn of two gets returned.
fn balance_of(resp: &pb::TxnResponse, index: usize) -> Result<(i64, u64), String> {
    let rec = resp
        .results
        .get(index)
        .and_then(|r| r.record.as_ref().filter(|_| r.found))
        .ok_or_else(|| format!("account read {index} is missing"))?;
    let balance = parse_int(&rec.value)
        .ok_or_else(|| format!("balance {:?} is not an integer", rec.value))?;
    Ok((balance, rec.version))
}

async fn transfer(ctx: &mut OpContext<'_>, from: usize, to: usize, amount: i64) -> Completion {
    let read = pb::TxnRequest {
        compares: Vec::new(),
        success: vec![get_op(account_key(from)), get_op(account_key(to))],
        failure: Vec::new(),
        request_id: String::new(),
        saga_id: String::new(),
    };
    // Reading has no effect: any failure here is a definite `fail` of the transfer.
    let resp = match call(ctx.timeout, ctx.kv.txn(request(read, ctx.timeout))).await {
        Ok(r) => r,
        Err(e) => return Completion::Fail(format!("reading balances: {}", e.describe())),
    };
    let ((from_balance, from_version), (to_balance, to_version)) =
        match (balance_of(&resp, 0), balance_of(&resp, 1)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Completion::Fail(format!("reading balances: {e}")),
        };
    if from_balance < amount {
        return Completion::Fail(format!(
            "insufficient funds: account {from} holds {from_balance}"
        ));
    }
    let write = pb::TxnRequest {
        compares: vec![
            version_equals(account_key(from), from_version),
            version_equals(account_key(to), to_version),
        ],
        success: vec![
            put_op(account_key(from), from_balance - amount),
            put_op(account_key(to), to_balance.saturating_add(amount)),
        ],
        failure: Vec::new(),
        request_id: String::new(),
        saga_id: String::new(),
    };
    let invoked = json!({"from": from, "to": to, "amount": amount});
    match call(ctx.timeout, ctx.kv.txn(request(write, ctx.timeout))).await {
        Ok(r) if r.succeeded => Completion::Ok(invoked),
        Ok(_) => Completion::Fail("a balance changed since it was read".into()),
        Err(e) => e.write_completion(),
    }
}

/// One read that breaks the invariant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadRead {
    /// Line of the read's completion in history.jsonl.
    pub line: usize,
    /// The process.
    pub process: u64,
    /// Time of the completion, ns.
    pub time_ns: u64,
    /// The balances read.
    pub balances: Json,
    /// The sum of the integer balances.
    pub sum: i64,
    /// What is wrong.
    pub problems: Vec<String>,
}

/// The bank checker's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BankResult {
    /// True when every ok read keeps the invariant.
    pub valid: bool,
    /// The invariant total.
    pub total: i64,
    /// `ok` reads checked.
    pub reads: usize,
    /// Reads that break the invariant.
    pub violations: usize,
    /// The first violating read.
    pub first_violation: Option<BadRead>,
    /// Up to [`MAX_REPORTED_VIOLATIONS`] violating reads, in history order.
    pub bad_reads: Vec<BadRead>,
    /// `ok` transfers.
    pub transfers_ok: usize,
}

/// Check every `ok` read of `records` against the invariant (see the module docs).
pub fn check(records: &[Record], accounts: usize, total: i64) -> BankResult {
    let mut bad_reads = Vec::new();
    let (mut reads, mut violations, mut transfers_ok) = (0, 0, 0);
    for (index, r) in records.iter().enumerate() {
        let Actor::Client(process) = r.actor else { continue };
        if r.kind != EventType::Ok {
            continue;
        }
        if r.f == "transfer" {
            transfers_ok += 1;
            continue;
        }
        if r.f != "read" {
            continue;
        }
        reads += 1;
        let (sum, problems) = read_problems(&r.value, accounts, total);
        if !problems.is_empty() {
            violations += 1;
            if bad_reads.len() < MAX_REPORTED_VIOLATIONS {
                bad_reads.push(BadRead {
                    line: index + 1,
                    process,
                    time_ns: r.time_ns,
                    balances: r.value.clone(),
                    sum,
                    problems,
                });
            }
        }
    }
    BankResult {
        valid: violations == 0,
        total,
        reads,
        violations,
        first_violation: bad_reads.first().cloned(),
        bad_reads,
        transfers_ok,
    }
}

fn read_problems(value: &Json, accounts: usize, total: i64) -> (i64, Vec<String>) {
    let mut problems = Vec::new();
    let Json::Object(map) = value else {
        return (0, vec![format!("a read must be a map of balances, got {value}")]);
    };
    let mut sum: i64 = 0;
    let balances: BTreeMap<usize, &Json> =
        map.iter().filter_map(|(k, v)| k.parse().ok().map(|k| (k, v))).collect();
    for i in 0..accounts {
        match balances.get(&i).and_then(|v| v.as_i64()) {
            Some(b) => {
                sum = sum.saturating_add(b);
                if b < 0 {
                    problems.push(format!("account {i} is negative: {b}"));
                }
            }
            None => problems.push(format!("account {i} is missing or not an integer")),
        }
    }
    if sum != total {
        problems.push(format!("total is {sum}, expected {total}"));
    }
    (sum, problems)
}

/// Default timeout of the setup Txn.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn read(p: u64, kind: EventType, value: Json) -> Record {
        Record {
            actor: Actor::Client(p),
            kind,
            f: "read".into(),
            key: None,
            value,
            time_ns: 0,
            error: None,
            node: None,
        }
    }

    #[test]
    fn reads_that_keep_the_total_pass_and_the_first_bad_one_is_named() {
        let records = vec![
            read(0, EventType::Invoke, Json::Null),
            read(0, EventType::Ok, json!({"0": 10, "1": 10})),
            read(1, EventType::Invoke, Json::Null),
            read(1, EventType::Ok, json!({"0": 25, "1": -5})),
            read(2, EventType::Invoke, Json::Null),
            read(2, EventType::Ok, json!({"0": 7, "1": 10})),
            read(3, EventType::Invoke, Json::Null),
            read(3, EventType::Fail, Json::Null),
        ];
        let r = check(&records, 2, 20);
        assert!(!r.valid);
        assert_eq!((r.reads, r.violations), (3, 2));
        let first = r.first_violation.expect("a violation");
        assert_eq!((first.line, first.process), (4, 1));
        assert!(first.problems[0].contains("negative"), "{:?}", first.problems);
        assert!(r.bad_reads[1].problems[0].contains("total is 17"), "{:?}", r.bad_reads[1]);
    }

    #[test]
    fn missing_accounts_are_violations() {
        let records = vec![read(0, EventType::Ok, json!({"0": 20}))];
        let r = check(&records, 2, 20);
        assert_eq!(r.violations, 1);
    }

    #[test]
    fn transfers_go_between_distinct_accounts() {
        let w = BankWorkload::new(3, 10, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            if let BankOp::Transfer { from, to, amount } = w.next_op(&mut rng) {
                assert_ne!(from, to);
                assert!((1..=4).contains(&amount));
            }
        }
        assert_eq!(w.total(), 30);
        assert_eq!(w.setup_request().success.len(), 3);
    }
}

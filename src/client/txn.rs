//! Building and parsing transactions (atomic multi-key compare-and-swap).
//!
//! [`Txn`] is a builder over the protobuf request: compares (all must hold), the ops
//! run when they do ([`Txn::then`]) and the ops run otherwise ([`Txn::otherwise`]).
//! The free functions build single compares and ops: [`version`], [`value`],
//! [`exists`], [`missing`], [`put`], [`delete`], [`get`].
//!
//! The clause parser is the text form used by `meridian kv txn` (and handy in tests):
//!
//! ```text
//! compare := version(KEY) OP N | value(KEY) OP STRING | exists(KEY) | !exists(KEY)
//! op      := put KEY VALUE | del KEY | get KEY
//! OP      := = | == | != | > | <
//! ```
//!
//! KEY, VALUE and STRING are bare words, or double-quoted with escapes
//! `\" \\ \n \r \t \0 \xHH`. A parse error names the clause and what was expected.
//! Limits (number of ops, key and value sizes) are the server's to enforce: it answers
//! INVALID_ARGUMENT naming the limit.

use std::fmt;
use std::time::Duration;

use crate::pb::v1 as pb;
use pb::{compare::Operand, txn_op::Op, CompareOp, CompareTarget};

/// A compare on the key's version (0 when absent).
pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: u64) -> pb::Compare {
    pb::Compare {
        key: key.into(),
        target: CompareTarget::Version as i32,
        op: op as i32,
        operand: Some(Operand::Version(version)),
    }
}

/// A compare on the key's value bytes (an absent key never matches).
pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> pb::Compare {
    pb::Compare {
        key: key.into(),
        target: CompareTarget::Value as i32,
        op: op as i32,
        operand: Some(Operand::Value(value.into())),
    }
}

/// Holds when the key exists.
pub fn exists(key: impl Into<Vec<u8>>) -> pb::Compare {
    existence(key.into(), true)
}

/// Holds when the key does not exist.
pub fn missing(key: impl Into<Vec<u8>>) -> pb::Compare {
    existence(key.into(), false)
}

fn existence(key: Vec<u8>, exists: bool) -> pb::Compare {
    pb::Compare {
        key,
        target: CompareTarget::Exists as i32,
        op: CompareOp::Equal as i32,
        operand: Some(Operand::Exists(exists)),
    }
}

/// Write a key.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> pb::TxnOp {
    pb::TxnOp { op: Some(Op::Put(pb::TxnPut { key: key.into(), value: value.into() })) }
}

/// Delete a key.
pub fn delete(key: impl Into<Vec<u8>>) -> pb::TxnOp {
    pb::TxnOp { op: Some(Op::Delete(pb::TxnDelete { key: key.into() })) }
}

/// Read a key at the transaction's point in the log.
pub fn get(key: impl Into<Vec<u8>>) -> pb::TxnOp {
    pb::TxnOp { op: Some(Op::Get(pb::TxnGet { key: key.into() })) }
}

/// A transaction under construction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    /// Compares; all must hold for `success` to run.
    pub compares: Vec<pb::Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<pb::TxnOp>,
    /// Ops run otherwise.
    pub failure: Vec<pb::TxnOp>,
    /// Idempotency key; None: the client generates one (reused across retries).
    pub request_id: Option<String>,
    /// Saga id tagging the writes (None: not part of a saga).
    pub saga_id: Option<String>,
    /// Overall deadline of this call (None: the client's budget).
    pub timeout: Option<Duration>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a compare.
    pub fn when(mut self, compare: pb::Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Add an op to the success branch.
    pub fn then(mut self, op: pb::TxnOp) -> Self {
        self.success.push(op);
        self
    }

    /// Add an op to the failure branch.
    pub fn otherwise(mut self, op: pb::TxnOp) -> Self {
        self.failure.push(op);
        self
    }

    /// Use this request id instead of a generated one.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Tag the writes with a saga id.
    pub fn saga_id(mut self, id: impl Into<String>) -> Self {
        self.saga_id = Some(id.into());
        self
    }

    /// Bound the whole call (retries included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The protobuf request with the given request id.
    pub fn to_request(&self, request_id: String) -> pb::TxnRequest {
        pb::TxnRequest {
            compares: self.compares.clone(),
            success: self.success.clone(),
            failure: self.failure.clone(),
            request_id,
            saga_id: self.saga_id.clone().unwrap_or_default(),
        }
    }
}

/// A clause that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TxnParseError {
    /// The clause as given.
    pub clause: String,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for TxnParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad clause '{}': {}", self.clause, self.message)
    }
}

/// Parse a compare clause, e.g. `version(k1) = 3`, `value(k2) != "x"`, `!exists(k4)`.
pub fn parse_compare(clause: &str) -> Result<pb::Compare, TxnParseError> {
    let fail = |message: String| TxnParseError { clause: clause.to_string(), message };
    let mut lx = Lexer::new(clause);
    lx.skip_ws();
    let negated = lx.eat("!");
    lx.skip_ws();
    let target = lx.ident();
    let key = lx.paren_key().map_err(fail)?;
    let compare = match (target.as_str(), negated) {
        ("exists", false) => exists(key),
        ("exists", true) => missing(key),
        (t @ ("version" | "value"), false) => {
            lx.skip_ws();
            let op = lx.op().ok_or_else(|| fail("expected an operator: = != > <".into()))?;
            lx.skip_ws();
            let operand = lx.word().map_err(fail)?;
            let operand =
                operand.ok_or_else(|| fail(format!("expected a {t} after the operator")))?;
            if t == "version" {
                let text = String::from_utf8_lossy(&operand).into_owned();
                let n = text.parse().map_err(|_| fail(format!("bad version {text:?}")))?;
                version(key, op, n)
            } else {
                value(key, op, operand)
            }
        }
        ("version" | "value", true) => return Err(fail("'!' only applies to exists(..)".into())),
        (other, _) => {
            return Err(fail(format!(
                "expected version(..), value(..) or exists(..), got {other:?}"
            )))
        }
    };
    lx.skip_ws();
    if !lx.at_end() {
        return Err(fail(format!("unexpected {:?} at the end", lx.rest())));
    }
    Ok(compare)
}

/// Parse an op clause: `put KEY VALUE`, `del KEY` (or `delete`), `get KEY`.
pub fn parse_op(clause: &str) -> Result<pb::TxnOp, TxnParseError> {
    let fail = |message: String| TxnParseError { clause: clause.to_string(), message };
    let mut lx = Lexer::new(clause);
    let mut words = Vec::new();
    loop {
        lx.skip_ws();
        match lx.word().map_err(fail)? {
            Some(w) => words.push(w),
            None => break,
        }
    }
    let verb = words.first().map(|w| String::from_utf8_lossy(w).to_ascii_lowercase());
    let mut args = words.into_iter().skip(1);
    let op = match (verb.as_deref(), args.len()) {
        (Some("put"), 2) => {
            let (k, v) = (args.next().unwrap_or_default(), args.next().unwrap_or_default());
            put(k, v)
        }
        (Some("del" | "delete"), 1) => delete(args.next().unwrap_or_default()),
        (Some("get"), 1) => get(args.next().unwrap_or_default()),
        (Some("put"), n) => return Err(fail(format!("put takes KEY VALUE, got {n} arguments"))),
        (Some(v @ ("del" | "delete" | "get")), n) => {
            return Err(fail(format!("{v} takes KEY, got {n} arguments")))
        }
        (Some(v), _) => return Err(fail(format!("unknown op {v:?}: expected put, del or get"))),
        (None, _) => return Err(fail("empty op: expected put, del or get".into())),
    };
    Ok(op)
}

/// A tiny hand-written lexer over one clause.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        let hit = self.rest().starts_with(token);
        if hit {
            self.pos += token.len();
        }
        hit
    }

    fn ident(&mut self) -> String {
        let rest = self.rest();
        let len = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(rest.len());
        self.pos += len;
        rest[..len].to_ascii_lowercase()
    }

    fn op(&mut self) -> Option<CompareOp> {
        // Longest match first.
        for (token, op) in [
            ("==", CompareOp::Equal),
            ("!=", CompareOp::NotEqual),
            ("=", CompareOp::Equal),
            (">", CompareOp::Greater),
            ("<", CompareOp::Less),
        ] {
            if self.eat(token) {
                return Some(op);
            }
        }
        None
    }

    /// `( KEY )` where KEY is quoted or bare (up to `)` or whitespace).
    fn paren_key(&mut self) -> Result<Vec<u8>, String> {
        self.skip_ws();
        if !self.eat("(") {
            return Err("expected '(' KEY ')'".into());
        }
        self.skip_ws();
        let key = if self.rest().starts_with('"') {
            self.quoted()?
        } else {
            self.bare(|c| c == ')' || c.is_whitespace())
        };
        self.skip_ws();
        if !self.eat(")") {
            return Err("expected ')' after the key".into());
        }
        if key.is_empty() {
            return Err("empty key".into());
        }
        Ok(key)
    }

    /// A quoted or bare word; None at the end of input.
    fn word(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.at_end() {
            return Ok(None);
        }
        if self.rest().starts_with('"') {
            return self.quoted().map(Some);
        }
        Ok(Some(self.bare(char::is_whitespace)))
    }

    fn bare(&mut self, stop: impl Fn(char) -> bool) -> Vec<u8> {
        let rest = self.rest();
        let len = rest.find(stop).unwrap_or(rest.len());
        self.pos += len;
        rest.as_bytes()[..len].to_vec()
    }

    /// A double-quoted string with escapes; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        self.pos += 1;
        let mut out = Vec::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let (_, e) = chars.next().ok_or("unfinished escape at the end")?;
                    match e {
                        '"' => out.push(b'"'),
                        '\\' => out.push(b'\\'),
                        'n' => out.push(b'\n'),
                        'r' => out.push(b'\r'),
                        't' => out.push(b'\t'),
                        '0' => out.push(0),
                        'x' => {
                            let hi = chars.next().map(|(_, c)| c);
                            let lo = chars.next().map(|(_, c)| c);
                            let byte = hi
                                .zip(lo)
                                .and_then(|(h, l)| Some(h.to_digit(16)? * 16 + l.to_digit(16)?))
                                .ok_or("\\x needs two hex digits")?;
                            out.push(byte as u8);
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Err("unterminated string (missing closing \")".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_compare_form() {
        assert_eq!(parse_compare("version(k1) = 3"), Ok(version("k1", CompareOp::Equal, 3)));
        assert_eq!(parse_compare(" version( k1 )==3 "), Ok(version("k1", CompareOp::Equal, 3)));
        assert_eq!(parse_compare("version(k1) > 0"), Ok(version("k1", CompareOp::Greater, 0)));
        assert_eq!(parse_compare("version(k1) < 9"), Ok(version("k1", CompareOp::Less, 9)));
        assert_eq!(parse_compare(r#"value(k2) != "x""#), Ok(value("k2", CompareOp::NotEqual, "x")));
        assert_eq!(parse_compare("value(k2) = bare"), Ok(value("k2", CompareOp::Equal, "bare")));
        assert_eq!(parse_compare("exists(k3)"), Ok(exists("k3")));
        assert_eq!(parse_compare("!exists(k4)"), Ok(missing("k4")));
        assert_eq!(parse_compare("! exists(k4)"), Ok(missing("k4")));
        assert_eq!(parse_compare("EXISTS(k5)"), Ok(exists("k5")));
    }

    #[test]
    fn parses_quoted_keys_and_escapes() {
        assert_eq!(
            parse_compare(r#"value("my key") = "a \"b\"\n\x00\xff""#),
            Ok(value("my key", CompareOp::Equal, b"a \"b\"\n\x00\xff".to_vec()))
        );
        assert_eq!(parse_compare(r#"exists("a)b")"#), Ok(exists("a)b")));
        assert_eq!(parse_compare(r#"value(k) = """#), Ok(value("k", CompareOp::Equal, "")));
    }

    #[test]
    fn compare_errors_name_the_clause_and_the_problem() {
        let cases = [
            ("version(k1) = x", "bad version"),
            ("version(k1) 3", "operator"),
            ("version(k1) =", "expected a version"),
            ("version k1 = 3", "'('"),
            ("version(k1 = 3", "')'"),
            ("version() = 3", "empty key"),
            ("size(k1) = 3", "expected version(..)"),
            ("!version(k1) = 3", "'!' only applies"),
            ("exists(k1) extra", "unexpected"),
            (r#"value(k) = "open"#, "unterminated"),
            (r#"value(k) = "\q""#, "unknown escape"),
            (r#"value(k) = "\x4""#, "two hex digits"),
            ("version(k1) = -1", "bad version"),
        ];
        for (clause, needle) in cases {
            let err = parse_compare(clause).expect_err(clause);
            assert_eq!(err.clause, clause);
            let text = err.to_string();
            assert!(text.contains(needle), "{clause:?}: {text}");
            assert!(text.contains(clause), "error names the clause: {text}");
        }
    }

    #[test]
    fn parses_ops() {
        assert_eq!(parse_op("put k1 v1"), Ok(put("k1", "v1")));
        assert_eq!(parse_op(r#"put "a b" "c d""#), Ok(put("a b", "c d")));
        assert_eq!(parse_op("del k2"), Ok(delete("k2")));
        assert_eq!(parse_op("delete k2"), Ok(delete("k2")));
        assert_eq!(parse_op("  get   k3 "), Ok(get("k3")));
        assert_eq!(parse_op("PUT k v"), Ok(put("k", "v")));
    }

    #[test]
    fn op_errors_name_the_clause_and_the_problem() {
        let cases = [
            ("", "empty op"),
            ("put k1", "put takes KEY VALUE"),
            ("put k1 v1 extra", "put takes KEY VALUE"),
            ("del", "del takes KEY"),
            ("get a b", "get takes KEY"),
            ("inc k1", "unknown op"),
            (r#"put k "v"#, "unterminated"),
        ];
        for (clause, needle) in cases {
            let err = parse_op(clause).expect_err(clause);
            assert!(err.to_string().contains(needle), "{clause:?}: {err}");
        }
    }

    #[test]
    fn builder_produces_the_request() {
        let txn = Txn::new()
            .when(version("k1", CompareOp::Equal, 3))
            .then(put("k1", "v1"))
            .otherwise(get("k1"))
            .saga_id("s1");
        let req = txn.to_request("rid".into());
        assert_eq!(req.compares.len(), 1);
        assert_eq!(req.success, vec![put("k1", "v1")]);
        assert_eq!(req.failure, vec![get("k1")]);
        assert_eq!(req.request_id, "rid");
        assert_eq!(req.saga_id, "s1");
    }
}

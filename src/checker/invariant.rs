//! Configured invariants (`meridian check --invariants FILE`), evaluated after every
//! revision.
//!
//! The one kind so far is `sum`: the integer values of the keys under a prefix add up
//! to `total`. The sum is kept incrementally from each event's before and after
//! records (no scan per revision): a PUT adds `after - before`, a DELETE subtracts
//! `before`. Its absolute value comes from either an initial Range scan
//! (`initial_scan = true`: the sum at the scan's revision, events up to it skipped) or
//! from the start of the log (the sum of an empty store is 0). Because a store is
//! usually filled over several writes, the invariant is armed the first time the sum
//! equals `total`; from then on every revision that ends with another sum is reported
//! (the first revision of each break, with the sum and the events that moved it).
//!
//! ```toml
//! [[invariant]]
//! kind = "sum"
//! name = "bank"          # optional, defaults to "sum:<prefix>"
//! prefix = "acct/"
//! total = 1000
//! initial_scan = true    # optional: anchor the sum with a Range scan at start-up
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::event::{key_text, Event, Op};
use super::finding::{Finding, Kind};
use super::CheckerError;

/// Invariants per file at most.
pub const MAX_INVARIANTS: usize = 64;
/// Events kept as evidence of the revision that broke an invariant.
pub const MAX_EVIDENCE_EVENTS: usize = 16;

/// One `[[invariant]]` table of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantConfig {
    /// Kind of invariant: "sum".
    pub kind: String,
    /// Name in findings (default "sum:<prefix>").
    #[serde(default)]
    pub name: Option<String>,
    /// Key prefix (non-empty).
    pub prefix: String,
    /// The constant the values must add up to.
    pub total: i64,
    /// Anchor the absolute sum with a Range scan when the checker starts fresh.
    #[serde(default)]
    pub initial_scan: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvariantFile {
    #[serde(default)]
    invariant: Vec<InvariantConfig>,
}

/// Parse and validate an invariants file's text (`origin` names it in errors).
pub fn parse_invariants(text: &str, origin: &str) -> Result<Vec<InvariantConfig>, CheckerError> {
    let bad = |m: String| CheckerError::Invalid(format!("{origin}: {m}"));
    let file: InvariantFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if file.invariant.is_empty() {
        return Err(bad("no [[invariant]] table".into()));
    }
    if file.invariant.len() > MAX_INVARIANTS {
        return Err(bad(format!("{} invariants; at most {MAX_INVARIANTS}", file.invariant.len())));
    }
    for (i, inv) in file.invariant.iter().enumerate() {
        if inv.kind != "sum" {
            return Err(bad(format!(
                "invariant {}: unknown kind {:?} (known: \"sum\")",
                i + 1,
                inv.kind
            )));
        }
        if inv.prefix.is_empty() {
            return Err(bad(format!("invariant {}: prefix must not be empty", i + 1)));
        }
    }
    Ok(file.invariant)
}

/// Read and parse an invariants file.
pub fn load_invariants(path: &Path) -> Result<Vec<InvariantConfig>, CheckerError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CheckerError::Invalid(format!("cannot read invariants file {}: {e}", path.display()))
    })?;
    parse_invariants(&text, &path.display().to_string())
}

/// The integer a value holds (ASCII decimal, surrounding whitespace allowed).
pub fn integer_value(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The running state of one sum invariant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SumInvariant {
    /// Its configuration.
    pub config: InvariantConfig,
    /// Absolute sum after `through_revision`, when known.
    pub sum: Option<i128>,
    /// Events at or before this revision are already counted (an anchor scan).
    pub through_revision: u64,
    /// Whether the sum has reached `total` at least once since it was last reported.
    pub armed: bool,
    /// Whether the current break was reported.
    pub broken: bool,
    /// Revision being accumulated (its events so far), not yet evaluated.
    open_revision: Option<u64>,
    open_delta: i128,
    open_events: Vec<Event>,
}

impl SumInvariant {
    /// A fresh sum: 0 from the start of the log.
    pub fn new(config: InvariantConfig) -> Self {
        Self {
            config,
            sum: Some(0),
            through_revision: 0,
            armed: false,
            broken: false,
            open_revision: None,
            open_delta: 0,
            open_events: Vec::new(),
        }
    }

    /// The name in findings.
    pub fn name(&self) -> String {
        self.config.name.clone().unwrap_or_else(|| format!("sum:{}", self.config.prefix))
    }

    /// Anchor the absolute sum: `sum` as of `revision` (from a Range scan).
    pub fn anchor(&mut self, revision: u64, sum: i128) {
        self.sum = Some(sum);
        self.through_revision = revision;
        self.open_revision = None;
        self.open_delta = 0;
        self.open_events.clear();
    }

    /// Add one event (in log order); ends the open revision first when `event` starts a
    /// later one.
    pub fn observe(&mut self, event: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        if self.open_revision.is_some_and(|r| r < event.pos.revision) {
            out.extend(self.end_revision());
        }
        let in_scope = event.op.is_key_change()
            && event.key.starts_with(self.config.prefix.as_bytes())
            && event.pos.revision > self.through_revision;
        if !in_scope {
            return out;
        }
        self.open_revision = Some(event.pos.revision);
        let before = event.before.as_ref().map(|r| r.value.as_slice());
        let after = if event.op == Op::Put {
            event.after.as_ref().map(|r| r.value.as_slice())
        } else {
            None
        };
        let mut delta: i128 = 0;
        for (value, sign) in [(after, 1i128), (before, -1i128)] {
            if let Some(v) = value {
                match integer_value(v) {
                    Some(n) => delta += sign * i128::from(n),
                    None => out.push(
                        Finding::new(
                            Kind::InvariantBroken,
                            format!(
                                "invariant {}: key {} holds a non-integer value (counted as 0)",
                                self.name(),
                                key_text(&event.key)
                            ),
                        )
                        .at(event.pos)
                        .key(&event.key)
                        .details(serde_json::json!({ "invariant": self.name(), "event": event.summary() })),
                    ),
                }
            }
        }
        self.open_delta += delta;
        if self.open_events.len() < MAX_EVIDENCE_EVENTS {
            self.open_events.push(event.clone());
        }
        out
    }

    /// The revision being accumulated is complete: evaluate the invariant after it.
    pub fn end_revision(&mut self) -> Vec<Finding> {
        let Some(revision) = self.open_revision.take() else { return Vec::new() };
        let delta = std::mem::take(&mut self.open_delta);
        let events = std::mem::take(&mut self.open_events);
        let Some(old) = self.sum else { return Vec::new() };
        let sum = old + delta;
        self.sum = Some(sum);
        self.through_revision = revision;
        let total = i128::from(self.config.total);
        if sum == total {
            self.armed = true;
            self.broken = false;
            return Vec::new();
        }
        if !self.armed || self.broken {
            return Vec::new();
        }
        self.broken = true;
        let evidence: Vec<serde_json::Value> = events.iter().map(Event::summary).collect();
        vec![Finding::new(
            Kind::InvariantBroken,
            format!(
                "invariant {}: the values under {:?} sum to {} after revision {revision}, not {}",
                self.name(),
                self.config.prefix,
                sum,
                total
            ),
        )
        .revision(revision)
        .details(serde_json::json!({
            "invariant": self.name(),
            "prefix": self.config.prefix,
            "sum": sum.to_string(),
            "total": self.config.total,
            "delta": delta.to_string(),
            "events": evidence,
        }))]
    }
}

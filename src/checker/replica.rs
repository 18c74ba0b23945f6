//! Per-replica continuity rules: what one replica's binlog must satisfy on its own.
//!
//! - positions strictly increase: a revision never goes backwards; within a revision
//!   indexes run 0, 1, 2... and a new revision starts at index 0 (Raft entries without
//!   changes leave revision gaps, which are fine);
//! - the HLC strictly increases from one revision to the next and is equal within a
//!   revision (one command, one stamp); per key it strictly increases too;
//! - a PUT produces `before_version + 1` (a create produces 1), `before` agrees with
//!   `before_version`, a DELETE removes an existing record;
//! - `before_version` equals the version this replica's previous event for the key
//!   left, when that event is still remembered (the table of key versions is bounded:
//!   [`MAX_TRACKED_KEYS`]; forgotten keys are simply not linked).
//!
//! Pure and synchronous: the caller feeds events in stream order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{key_text, Event, Op, Position, Stamp};
use super::finding::{Finding, Kind};

/// Keys whose last version each replica track remembers; above it the least recently
/// written half is forgotten.
pub const MAX_TRACKED_KEYS: usize = 16_384;

/// What a replica's last event for a key left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Version after the event (0: deleted).
    pub version: u64,
    /// HLC of the event.
    pub hlc: Stamp,
    /// Revision of the event.
    pub revision: u64,
}

/// The continuity state of one replica's stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaTrack {
    /// Node id serving the stream (0 until the first response).
    pub node: u64,
    /// Last processed position (the cursor); None before the first event.
    pub last: Option<Position>,
    /// HLC of the last processed event.
    pub last_hlc: Option<Stamp>,
    /// Events processed.
    pub events: u64,
    /// The stream was just (re)opened at the cursor's revision: events at or before
    /// the cursor are a redelivery and skipped, until the first new one.
    pub redelivery: bool,
    /// Last version per key (bounded, see [`MAX_TRACKED_KEYS`]).
    keys: BTreeMap<Vec<u8>, KeyState>,
}

impl ReplicaTrack {
    /// A fresh track for `node`.
    pub fn new(node: u64) -> Self {
        Self { node, ..Self::default() }
    }

    /// Forget everything learnt from the stream except the node id (events were lost:
    /// the next event cannot be linked to the last one seen).
    pub fn forget(&mut self) {
        *self = Self::new(self.node);
    }

    /// Whether `pos` is a redelivery of an already processed event (a resumed stream
    /// repeats the cursor's revision): skipped, not checked. Outside a redelivery a
    /// repeated or older position is a finding.
    pub fn already_seen(&mut self, pos: Position) -> bool {
        let seen = self.redelivery && self.last.is_some_and(|last| pos <= last);
        if !seen {
            self.redelivery = false;
        }
        seen
    }

    /// Check one event against this replica's history, then record it.
    pub fn observe(&mut self, event: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        let node = self.node;
        if let Some(last) = self.last {
            if let Some(problem) = order_problem(last, event.pos) {
                out.push(
                    Finding::new(Kind::PositionOrder, format!("node {node}: {problem}"))
                        .nodes([node])
                        .at(event.pos)
                        .details(serde_json::json!({ "previous": last.to_string(), "event": event.summary() })),
                );
                if event.pos <= last {
                    // Not applied on top of the history: nothing else to link it to.
                    return out;
                }
            }
        }
        if let (Some(last), Some(last_hlc)) = (self.last, self.last_hlc) {
            let same_revision = last.revision == event.pos.revision;
            let bad = if same_revision { event.hlc != last_hlc } else { event.hlc <= last_hlc };
            if bad {
                let want = if same_revision { "equal to" } else { "greater than" };
                out.push(
                    Finding::new(
                        Kind::HlcRegression,
                        format!(
                            "node {node}: hlc {} at {} is not {want} the previous event's {}",
                            event.hlc, event.pos, last_hlc
                        ),
                    )
                    .nodes([node])
                    .at(event.pos)
                    .details(serde_json::json!({ "event": event.summary() })),
                );
            }
        }
        if event.op.is_key_change() {
            out.extend(self.key_rules(event));
        }
        self.last = Some(event.pos);
        self.last_hlc = Some(event.hlc);
        self.events += 1;
        out
    }

    fn key_rules(&mut self, event: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        let node = self.node;
        let finding = |kind: Kind, message: String| {
            Finding::new(kind, format!("node {node}: {message}"))
                .nodes([node])
                .at(event.pos)
                .key(&event.key)
                .details(serde_json::json!({ "event": event.summary() }))
        };
        if let Some(problem) = version_problem(event) {
            out.push(finding(Kind::VersionGap, problem));
        }
        if let Some(prev) = self.keys.get(&event.key) {
            if prev.version != event.before_version {
                out.push(finding(
                    Kind::BeforeVersionMismatch,
                    format!(
                        "key {}: before_version {} but this replica's previous event for it \
                         (revision {}) left version {}",
                        key_text(&event.key),
                        event.before_version,
                        prev.revision,
                        prev.version
                    ),
                ));
            }
            if prev.revision != event.pos.revision && event.hlc <= prev.hlc {
                out.push(finding(
                    Kind::HlcRegression,
                    format!(
                        "key {}: hlc {} is not greater than its previous event's {} (revision {})",
                        key_text(&event.key),
                        event.hlc,
                        prev.hlc,
                        prev.revision
                    ),
                ));
            }
        }
        let version = event.after.as_ref().map_or(0, |a| a.version);
        let state = KeyState { version, hlc: event.hlc, revision: event.pos.revision };
        self.keys.insert(event.key.clone(), state);
        self.bound_keys();
        out
    }

    /// Keep the key table under [`MAX_TRACKED_KEYS`] by forgetting the older half.
    fn bound_keys(&mut self) {
        if self.keys.len() <= MAX_TRACKED_KEYS {
            return;
        }
        let mut revisions: Vec<u64> = self.keys.values().map(|k| k.revision).collect();
        revisions.sort_unstable();
        let cut = revisions[revisions.len() / 2];
        self.keys.retain(|_, k| k.revision > cut);
    }

    /// Keys currently remembered.
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}

/// Why `next` may not follow `last` in one replica's stream, if it may not.
fn order_problem(last: Position, next: Position) -> Option<String> {
    if next == last {
        return Some(format!("position {next} repeated"));
    }
    if next < last {
        return Some(format!("position {next} after {last}: the log went backwards"));
    }
    if next.revision == last.revision && next.index != last.index + 1 {
        return Some(format!("position {next} after {last}: index gap within the revision"));
    }
    if next.revision > last.revision && next.index != 0 {
        return Some(format!("position {next} after {last}: a revision must start at index 0"));
    }
    None
}

/// Why a PUT/DELETE's versions are inconsistent in themselves, if they are.
fn version_problem(event: &Event) -> Option<String> {
    let key = key_text(&event.key);
    let bv = event.before_version;
    match (&event.before, bv) {
        (None, v) if v != 0 => {
            return Some(format!("key {key}: before_version {v} but no before record"));
        }
        (Some(b), v) if b.version != v => {
            return Some(format!(
                "key {key}: before_version {v} but the before record has version {}",
                b.version
            ));
        }
        _ => {}
    }
    match event.op {
        Op::Put => match &event.after {
            None => Some(format!("key {key}: PUT without an after record")),
            Some(a) if Some(a.version) != bv.checked_add(1) => Some(format!(
                "key {key}: PUT produced version {} from before_version {bv} (want {})",
                a.version,
                bv.saturating_add(1)
            )),
            Some(_) => None,
        },
        Op::Delete if bv == 0 => Some(format!("key {key}: DELETE of a key that did not exist")),
        _ => None,
    }
}

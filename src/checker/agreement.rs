//! Replica agreement: at every position `(revision, index)` seen from two or more
//! replicas the chain hashes must be equal. A chain hash covers the whole history up
//! to its position, so the first position where a replica's hash differs from the
//! majority's is where its history diverged; that position is reported once (with
//! every replica's event there) and the replica is then left out of the comparison
//! (every later hash of it differs too).
//!
//! Votes wait in a bounded table ([`MAX_PENDING_POSITIONS`]) until every replica has
//! voted or a majority of the configured replicas agrees; a replica that lags only
//! delays the decision. Pure and synchronous.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::event::{hex, Event, Position, RecordView};
use super::finding::{Finding, Kind};

/// Positions waiting for votes at most; above it the oldest is decided with the votes
/// it has (a replica far behind is then compared at later positions only, which still
/// proves agreement of everything before them: chain hashes are cumulative).
pub const MAX_PENDING_POSITIONS: usize = 65_536;
/// Bytes of a value kept as evidence in a pending vote.
pub const EVIDENCE_VALUE_BYTES: usize = 256;

/// One replica's vote at a position: its chain hash and the event as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Vote {
    hash: Vec<u8>,
    event: Event,
}

/// The agreement state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Replicas configured (the number of endpoints).
    replicas: usize,
    /// Votes per undecided position.
    slots: BTreeMap<Position, BTreeMap<u64, Vote>>,
    /// Replicas already reported as diverged.
    diverged: BTreeSet<u64>,
    /// Positions decided (all equal or a divergence reported).
    pub decided: u64,
}

impl Agreement {
    /// Agreement among `replicas` replicas.
    pub fn new(replicas: usize) -> Self {
        Self { replicas, ..Self::default() }
    }

    /// Replicas reported as diverged so far.
    pub fn diverged(&self) -> &BTreeSet<u64> {
        &self.diverged
    }

    /// Positions waiting for more votes.
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// Record `node`'s chain hash at `event.pos`; returns a divergence finding when the
    /// position is decided against some replica.
    pub fn observe(&mut self, node: u64, event: &Event) -> Vec<Finding> {
        if self.diverged.contains(&node) {
            return Vec::new();
        }
        let vote = Vote { hash: event.chain_hash.clone(), event: clipped(event) };
        self.slots.entry(event.pos).or_default().insert(node, vote);
        let mut out = self.decide(event.pos, false);
        while self.slots.len() > MAX_PENDING_POSITIONS {
            let Some(&oldest) = self.slots.keys().next() else { break };
            out.extend(self.decide(oldest, true));
            self.slots.remove(&oldest);
        }
        out
    }

    /// Decide `pos` if its votes allow it (or unconditionally with `force`).
    fn decide(&mut self, pos: Position, force: bool) -> Vec<Finding> {
        let Some(votes) = self.slots.get(&pos) else { return Vec::new() };
        let live = self.replicas.saturating_sub(self.diverged.len()).max(1);
        let complete = votes.len() >= live;
        let mut groups: BTreeMap<&[u8], Vec<u64>> = BTreeMap::new();
        for (node, vote) in votes {
            groups.entry(vote.hash.as_slice()).or_default().push(*node);
        }
        if groups.len() <= 1 {
            if complete || force {
                self.slots.remove(&pos);
                self.decided += 1;
            }
            return Vec::new();
        }
        let majority = self.replicas / 2 + 1;
        let winner = groups.values().find(|nodes| nodes.len() >= majority).cloned();
        let blamed: Vec<u64> = match &winner {
            Some(w) => votes.keys().copied().filter(|n| !w.contains(n)).collect(),
            None if complete || force => votes.keys().copied().collect(),
            None => return Vec::new(),
        };
        let finding = divergence_finding(pos, votes, &blamed, winner.is_some());
        self.diverged.extend(blamed.iter().copied());
        let blamed_set: BTreeSet<u64> = blamed.into_iter().collect();
        for slot in self.slots.values_mut() {
            slot.retain(|n, _| !blamed_set.contains(n));
        }
        self.slots.remove(&pos);
        self.decided += 1;
        vec![finding]
    }
}

fn divergence_finding(
    pos: Position,
    votes: &BTreeMap<u64, Vote>,
    blamed: &[u64],
    has_majority: bool,
) -> Finding {
    let replicas: serde_json::Map<String, serde_json::Value> = votes
        .iter()
        .map(|(node, v)| {
            let mut e = v.event.summary();
            e["chain_hash"] = serde_json::Value::String(hex(&v.hash));
            (node.to_string(), e)
        })
        .collect();
    let who = blamed.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let message = if has_majority {
        format!("replicas diverge at revision {pos}: node(s) {who} disagree with the majority")
    } else {
        format!("replicas diverge at revision {pos} and no majority agrees (nodes {who})")
    };
    let key = votes.values().next().map(|v| v.event.key.clone()).unwrap_or_default();
    let mut f = Finding::new(Kind::Divergence, message)
        .nodes(blamed.iter().copied())
        .at(pos)
        .details(serde_json::json!({ "majority": has_majority, "replicas": replicas }));
    if !key.is_empty() {
        f = f.key(&key);
    }
    f
}

/// The event with its values cut to [`EVIDENCE_VALUE_BYTES`] (kept as evidence).
fn clipped(event: &Event) -> Event {
    let clip = |r: &Option<RecordView>| {
        r.as_ref().map(|r| RecordView {
            value: r.value.iter().copied().take(EVIDENCE_VALUE_BYTES).collect(),
            ..r.clone()
        })
    };
    Event { before: clip(&event.before), after: clip(&event.after), ..event.clone() }
}

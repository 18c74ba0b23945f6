//! Saga deadlines: the lifecycle of every saga seen in the binlog (SAGA_OPEN with its
//! deadline, steps tagged with its id, SAGA_COMMIT, SAGA_ABORT). A saga still open
//! when the checker's clock passes its deadline plus a grace period is stuck: it is
//! reported once and handed to compensation (see `compensate`).
//!
//! Fed once per log position (not once per replica). Pure and synchronous: the clock
//! is an argument.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{Event, Op, Position};
use super::finding::{Finding, Kind};

/// Default grace after a saga's deadline before the checker calls it stuck, ms (covers
/// clock offset between the checker and the leader that stamped the open).
pub const DEFAULT_SAGA_GRACE_MS: u64 = 2_000;
/// Open sagas tracked at most; above it the oldest is forgotten (and never compensated
/// by this checker: it is still reported by the server's GetSaga).
pub const MAX_TRACKED_SAGAS: usize = 100_000;

/// A saga's state as far as the binlog shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaTrack {
    /// Deadline, ms since the Unix epoch (0: unknown, the open was not seen).
    pub deadline_unix_ms: u64,
    /// Position of the SAGA_OPEN event (or of the first step when not seen).
    pub opened_at: Position,
    /// Keys written under the saga, in order, with their revisions.
    pub steps: Vec<(Vec<u8>, u64)>,
    /// Whether it was already reported as stuck.
    pub reported_stuck: bool,
}

/// Every open saga.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sagas {
    /// Grace after the deadline, ms.
    pub grace_ms: u64,
    open: BTreeMap<String, SagaTrack>,
    /// Sagas seen committing.
    pub committed: u64,
    /// Sagas seen aborting.
    pub aborted: u64,
}

impl Sagas {
    /// A table with `grace_ms` of grace.
    pub fn new(grace_ms: u64) -> Self {
        Self { grace_ms, ..Self::default() }
    }

    /// The open saga `id`, if tracked.
    pub fn get(&self, id: &str) -> Option<&SagaTrack> {
        self.open.get(id)
    }

    /// Open sagas tracked.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Apply one event (in log order).
    pub fn observe(&mut self, event: &Event) {
        let id = &event.saga_id;
        if id.is_empty() {
            return;
        }
        match event.op {
            Op::SagaOpen => {
                let track = SagaTrack {
                    deadline_unix_ms: event.saga_deadline_unix_ms,
                    opened_at: event.pos,
                    steps: Vec::new(),
                    reported_stuck: false,
                };
                self.open.insert(id.clone(), track);
            }
            Op::SagaCommit => {
                self.open.remove(id);
                self.committed += 1;
            }
            Op::SagaAbort => {
                self.open.remove(id);
                self.aborted += 1;
            }
            Op::Put | Op::Delete if !event.compensation => {
                let track = self.open.entry(id.clone()).or_insert_with(|| SagaTrack {
                    deadline_unix_ms: 0,
                    opened_at: event.pos,
                    steps: Vec::new(),
                    reported_stuck: false,
                });
                track.steps.push((event.key.clone(), event.pos.revision));
            }
            _ => {}
        }
        while self.open.len() > MAX_TRACKED_SAGAS {
            let oldest = self.open.iter().min_by_key(|(_, t)| t.opened_at).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.open.remove(&k),
                None => break,
            };
        }
    }

    /// Sagas that became stuck by `now_unix_ms` (each reported once): the findings and
    /// the saga ids to compensate.
    pub fn stuck(&mut self, now_unix_ms: u64) -> Vec<(String, Finding)> {
        let grace = self.grace_ms;
        let mut out = Vec::new();
        for (id, track) in &mut self.open {
            let known = track.deadline_unix_ms != 0;
            if !known || track.reported_stuck {
                continue;
            }
            if now_unix_ms <= track.deadline_unix_ms.saturating_add(grace) {
                continue;
            }
            track.reported_stuck = true;
            let late_ms = now_unix_ms - track.deadline_unix_ms;
            let keys: Vec<String> =
                track.steps.iter().map(|(k, _)| super::event::key_text(k)).collect();
            let finding = Finding::new(
                Kind::SagaStuck,
                format!(
                    "saga {id} is still open {late_ms} ms after its deadline ({} step(s)); \
                     compensating",
                    track.steps.len()
                ),
            )
            .revision(track.opened_at.revision)
            .saga(id)
            .details(serde_json::json!({
                "deadline_unix_ms": track.deadline_unix_ms,
                "now_unix_ms": now_unix_ms,
                "grace_ms": grace,
                "steps": keys,
            }));
            out.push((id.clone(), finding));
        }
        out
    }
}

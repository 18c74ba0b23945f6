//! The checker's pure core: every rule behind one state machine that the consumer
//! feeds batches of events in, one replica stream at a time, with the clock passed in.
//!
//! - each replica's events go through its own continuity track ([`ReplicaTrack`]) and
//!   the cross-replica [`Agreement`];
//! - each log position goes once (from whichever replica delivers it first) through
//!   the saga table and the invariants: those judge the history, not a replica;
//! - lag is measured on every batch; sagas past their deadline are reported by
//!   [`Checker::tick`] and their compensation is recorded here too, so the whole
//!   state the rules need to continue is one serialisable value ([`CheckerState`]) that
//!   the state directory persists together with the cursors.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::agreement::Agreement;
use super::event::{key_text, Event, Position};
use super::finding::{Finding, Kind};
use super::invariant::{InvariantConfig, SumInvariant};
use super::replica::ReplicaTrack;
use super::saga::{Sagas, DEFAULT_SAGA_GRACE_MS};

/// Version of the persisted state layout.
pub const STATE_FORMAT: u32 = 1;
/// Default time lag (event HLC to checked) above which a P3 finding is raised, ms.
pub const DEFAULT_LAG_THRESHOLD_MS: u64 = 10_000;
/// Default revision lag (replica applied minus checked) above which a P3 finding is
/// raised.
pub const DEFAULT_LAG_THRESHOLD_REVISIONS: u64 = 10_000;

/// Settings of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerConfig {
    /// Replicas checked (the number of endpoints): the majority is computed from it.
    pub replicas: usize,
    /// Grace after a saga's deadline before it is stuck, ms.
    pub saga_grace_ms: u64,
    /// Configured invariants.
    pub invariants: Vec<InvariantConfig>,
    /// Time lag threshold, ms.
    pub lag_threshold_ms: u64,
    /// Revision lag threshold.
    pub lag_threshold_revisions: u64,
}

impl CheckerConfig {
    /// Defaults for `replicas` replicas and no invariants.
    pub fn new(replicas: usize) -> Self {
        Self {
            replicas,
            saga_grace_ms: DEFAULT_SAGA_GRACE_MS,
            invariants: Vec::new(),
            lag_threshold_ms: DEFAULT_LAG_THRESHOLD_MS,
            lag_threshold_revisions: DEFAULT_LAG_THRESHOLD_REVISIONS,
        }
    }
}

/// Compensation progress of one stuck saga (persisted before and after the AbortSaga
/// call, so a restarted checker repeats the call with the same request id: the
/// server's exactly-once table turns the repeat into a replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compensation {
    /// AbortSaga is (or was about to be) sent with this request id.
    Started {
        /// Deterministic request id of the AbortSaga call.
        request_id: String,
        /// When, ms since the Unix epoch.
        started_unix_ms: u64,
    },
    /// AbortSaga answered.
    Finished {
        /// Request id used.
        request_id: String,
        /// Steps restored.
        compensated: u32,
        /// Steps escalated as conflicts.
        conflicts: u32,
        /// Server-side outcome when the abort was refused (e.g. already committed).
        note: String,
        /// When, ms since the Unix epoch.
        finished_unix_ms: u64,
    },
}

/// A saga step the server could not compensate because its key moved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConflict {
    /// The key.
    pub key: Vec<u8>,
    /// Version the saga's write produced.
    pub saga_version: u64,
    /// The key's current version (None: absent).
    pub current_version: Option<u64>,
    /// The key's current value (None: absent).
    pub current_value: Option<Vec<u8>>,
    /// Revision of the current record (0: absent).
    pub current_revision: u64,
}

/// Everything the rules need to continue after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckerState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Continuity state and cursor per replica endpoint.
    pub replicas: BTreeMap<String, ReplicaTrack>,
    /// Cross-replica agreement.
    pub agreement: Agreement,
    /// Open sagas.
    pub sagas: Sagas,
    /// Invariant states, in configuration order.
    pub invariants: Vec<SumInvariant>,
    /// Last position fed to the sagas and invariants.
    pub global: Option<Position>,
    /// Compensation per saga id.
    pub compensations: BTreeMap<String, Compensation>,
    /// Endpoints currently reported as lagging.
    pub lagging: BTreeSet<String>,
    /// Findings reported so far.
    pub findings: u64,
}

/// What one batch produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    /// New findings.
    pub findings: Vec<Finding>,
    /// Events checked (new, not skipped as already seen).
    pub checked: u64,
    /// Time lag of each checked event, ms (event HLC to `now`).
    pub lag_ms: Vec<u64>,
}

/// The checker's rules and their state.
#[derive(Debug, Clone)]
pub struct Checker {
    config: CheckerConfig,
    state: CheckerState,
}

/// The deterministic AbortSaga request id the checker uses for `saga_id`.
pub fn abort_request_id(saga_id: &str) -> String {
    format!("meridian-check/abort/{saga_id}")
}

impl Checker {
    /// A checker with fresh state.
    pub fn new(config: CheckerConfig) -> Self {
        let state = CheckerState {
            format: STATE_FORMAT,
            replicas: BTreeMap::new(),
            agreement: Agreement::new(config.replicas),
            sagas: Sagas::new(config.saga_grace_ms),
            invariants: config.invariants.iter().cloned().map(SumInvariant::new).collect(),
            global: None,
            compensations: BTreeMap::new(),
            lagging: BTreeSet::new(),
            findings: 0,
        };
        Self { config, state }
    }

    /// A checker continuing from persisted `state`. Invariants whose configuration
    /// changed start over; the saga grace comes from `config`.
    pub fn resume(config: CheckerConfig, mut state: CheckerState) -> Self {
        let invariants = config
            .invariants
            .iter()
            .map(|c| {
                state
                    .invariants
                    .iter()
                    .find(|s| &s.config == c)
                    .cloned()
                    .unwrap_or_else(|| SumInvariant::new(c.clone()))
            })
            .collect();
        state.invariants = invariants;
        state.sagas.grace_ms = config.saga_grace_ms;
        Self { config, state }
    }

    /// The state to persist.
    pub fn state(&self) -> &CheckerState {
        &self.state
    }

    /// The settings.
    pub fn config(&self) -> &CheckerConfig {
        &self.config
    }

    /// The last processed position of `endpoint`'s stream.
    pub fn cursor(&self, endpoint: &str) -> Option<Position> {
        self.state.replicas.get(endpoint).and_then(|t| t.last)
    }

    /// Invariants that want an anchoring Range scan (fresh state only): their indexes.
    pub fn wants_scan(&self) -> Vec<usize> {
        let fresh = self.state.global.is_none();
        self.state
            .invariants
            .iter()
            .enumerate()
            .filter(|(_, s)| fresh && s.config.initial_scan && s.through_revision == 0)
            .map(|(i, _)| i)
            .collect()
    }

    /// Anchor invariant `i` at `sum` as of `revision`.
    pub fn anchor(&mut self, i: usize, revision: u64, sum: i128) {
        if let Some(s) = self.state.invariants.get_mut(i) {
            s.anchor(revision, sum);
        }
    }

    /// The configured prefix of invariant `i`.
    pub fn invariant_prefix(&self, i: usize) -> Option<&str> {
        self.state.invariants.get(i).map(|s| s.config.prefix.as_str())
    }

    /// Check a batch of events from `endpoint` (served by `node`), in stream order.
    /// Events at or before the endpoint's cursor are skipped (a resumed stream starts
    /// at the cursor's revision).
    pub fn observe(
        &mut self,
        endpoint: &str,
        node: u64,
        events: &[Event],
        applied_revision: u64,
        now_unix_ms: u64,
    ) -> Observed {
        let mut out = Observed::default();
        let track = self.state.replicas.entry(endpoint.to_string()).or_default();
        if track.node != node {
            if track.node != 0 {
                track.forget();
            }
            track.node = node;
        }
        for event in events {
            let Some(track) = self.state.replicas.get_mut(endpoint) else { break };
            if track.already_seen(event.pos) {
                continue;
            }
            out.findings.extend(track.observe(event));
            out.findings.extend(self.state.agreement.observe(node, event));
            if self.state.global.is_none_or(|g| event.pos > g) {
                self.state.global = Some(event.pos);
                self.state.sagas.observe(event);
                for inv in &mut self.state.invariants {
                    out.findings.extend(inv.observe(event));
                }
            }
            out.checked += 1;
            out.lag_ms.push(now_unix_ms.saturating_sub(event.hlc.wall_ns / 1_000_000));
        }
        let last_lag = out.lag_ms.last().copied();
        out.findings.extend(self.lag(endpoint, node, applied_revision, last_lag));
        self.state.findings += out.findings.len() as u64;
        out
    }

    /// A new stream for `endpoint` was opened at its cursor's revision: the events up
    /// to the cursor come again and are skipped.
    pub fn resubscribed(&mut self, endpoint: &str) {
        self.state.replicas.entry(endpoint.to_string()).or_default().redelivery = true;
    }

    /// `endpoint` is idle (a progress message): everything it applied was delivered.
    /// Completes the open revision of the invariants when this replica is the furthest.
    pub fn idle(&mut self, endpoint: &str, node: u64, applied_revision: u64) -> Vec<Finding> {
        let last = self.cursor(endpoint);
        let mut out = Vec::new();
        if last.is_some() && last >= self.state.global {
            out.extend(self.flush());
        }
        out.extend(self.lag(endpoint, node, applied_revision, Some(0)));
        self.state.findings += out.len() as u64;
        out
    }

    /// Evaluate every invariant's open revision now (end of a run).
    pub fn flush(&mut self) -> Vec<Finding> {
        self.state.invariants.iter_mut().flat_map(SumInvariant::end_revision).collect()
    }

    fn lag(
        &mut self,
        endpoint: &str,
        node: u64,
        applied_revision: u64,
        time_lag_ms: Option<u64>,
    ) -> Vec<Finding> {
        let checked = self.cursor(endpoint).map_or(0, |p| p.revision);
        let behind = applied_revision.saturating_sub(checked);
        let Some(time_lag_ms) = time_lag_ms else { return Vec::new() };
        let lagging = behind > self.config.lag_threshold_revisions
            || time_lag_ms > self.config.lag_threshold_ms;
        if !lagging {
            self.state.lagging.remove(endpoint);
            return Vec::new();
        }
        if !self.state.lagging.insert(endpoint.to_string()) {
            return Vec::new();
        }
        vec![Finding::new(
            Kind::Lag,
            format!(
                "checker lags node {node} ({endpoint}): {behind} revision(s) behind its applied \
                 revision {applied_revision}, last event {time_lag_ms} ms old"
            ),
        )
        .nodes([node])
        .revision(checked)
        .details(serde_json::json!({
            "endpoint": endpoint,
            "applied_revision": applied_revision,
            "checked_revision": checked,
            "lag_ms": time_lag_ms,
            "threshold_ms": self.config.lag_threshold_ms,
            "threshold_revisions": self.config.lag_threshold_revisions,
        }))]
    }

    /// `endpoint` cannot resume at its cursor: the replica compacted events up to
    /// `oldest_revision`. Reports the loss and forgets the replica's continuity state;
    /// the stream restarts from the oldest retained revision.
    pub fn events_lost(&mut self, endpoint: &str, oldest_revision: u64) -> Finding {
        let track = self.state.replicas.entry(endpoint.to_string()).or_default();
        let cursor = track.last;
        let node = track.node;
        track.forget();
        self.state.findings += 1;
        Finding::new(
            Kind::EventsLost,
            format!(
                "node {node} ({endpoint}) no longer retains the events after the checker's \
                 cursor {}: its oldest retained revision is {oldest_revision}; resuming there",
                cursor.map_or_else(|| "(none)".to_string(), |p| p.to_string())
            ),
        )
        .nodes([node])
        .revision(oldest_revision)
        .details(serde_json::json!({
            "endpoint": endpoint,
            "cursor": cursor.map(|p| p.to_string()),
            "oldest_revision": oldest_revision,
        }))
    }

    /// Sagas stuck at `now_unix_ms` (reported once each) and the ones to compensate
    /// (stuck and without a compensation record).
    pub fn tick(&mut self, now_unix_ms: u64) -> (Vec<Finding>, Vec<String>) {
        let stuck = self.state.sagas.stuck(now_unix_ms);
        let mut findings = Vec::new();
        let mut compensate = Vec::new();
        for (id, finding) in stuck {
            findings.push(finding);
            if !self.state.compensations.contains_key(&id) {
                compensate.push(id);
            }
        }
        self.state.findings += findings.len() as u64;
        (findings, compensate)
    }

    /// Compensations started but not finished (to repeat after a restart).
    pub fn unfinished_compensations(&self) -> Vec<(String, String)> {
        self.state
            .compensations
            .iter()
            .filter_map(|(id, c)| match c {
                Compensation::Started { request_id, .. } => Some((id.clone(), request_id.clone())),
                Compensation::Finished { .. } => None,
            })
            .collect()
    }

    /// Record that compensation of `saga_id` starts; returns its request id.
    pub fn compensation_started(&mut self, saga_id: &str, now_unix_ms: u64) -> String {
        let request_id = abort_request_id(saga_id);
        self.state.compensations.insert(
            saga_id.to_string(),
            Compensation::Started { request_id: request_id.clone(), started_unix_ms: now_unix_ms },
        );
        request_id
    }

    /// Record the AbortSaga outcome; returns one P2 finding per conflict (escalated,
    /// key left alone).
    pub fn compensation_finished(
        &mut self,
        saga_id: &str,
        compensated: u32,
        conflicts: &[StepConflict],
        note: &str,
        now_unix_ms: u64,
    ) -> Vec<Finding> {
        let request_id = abort_request_id(saga_id);
        let revision = self.state.sagas.get(saga_id).map(|t| t.opened_at.revision);
        self.state.compensations.insert(
            saga_id.to_string(),
            Compensation::Finished {
                request_id: request_id.clone(),
                compensated,
                conflicts: u32::try_from(conflicts.len()).unwrap_or(u32::MAX),
                note: note.to_string(),
                finished_unix_ms: now_unix_ms,
            },
        );
        let findings: Vec<Finding> = conflicts
            .iter()
            .map(|c| {
                let current = match c.current_version {
                    Some(v) => format!("now at version {v} (revision {})", c.current_revision),
                    None => "now absent".to_string(),
                };
                let mut f = Finding::new(
                    Kind::SagaStepConflict,
                    format!(
                        "saga step conflict: saga {saga_id} wrote key {} at version {}, which is \
                         {current}; left alone for an operator",
                        key_text(&c.key),
                        c.saga_version
                    ),
                )
                .key(&c.key)
                .saga(saga_id)
                .details(serde_json::json!({
                    "saga_version": c.saga_version,
                    "current_version": c.current_version,
                    "current_value": c.current_value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                    "current_revision": c.current_revision,
                    "abort_request_id": request_id,
                }));
                if let Some(r) = revision {
                    f = f.revision(r);
                }
                f
            })
            .collect();
        self.state.findings += findings.len() as u64;
        findings
    }
}

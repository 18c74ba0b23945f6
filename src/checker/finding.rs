//! Findings: what the checker reports. Each is one JSON line, one Prometheus counter
//! increment (`meridian_checker_findings_total{kind, level}`) and carries an alert
//! level: P1 data divergence, P2 invariant or saga failure (and lost events), P3 lag.

use serde::{Deserialize, Serialize};

use super::event::Position;

/// Alert level of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Replicas disagree, or a replica's log breaks its own continuity rules.
    P1,
    /// An invariant broke, a saga is stuck or could not be fully compensated, or
    /// events were lost.
    P2,
    /// The checker lags behind the replicas.
    P3,
}

impl Level {
    /// "P1", "P2" or "P3".
    pub fn as_str(self) -> &'static str {
        match self {
            Level::P1 => "P1",
            Level::P2 => "P2",
            Level::P3 => "P3",
        }
    }
}

/// What kind of problem a finding reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Replicas hold different chain hashes at the same position (P1).
    Divergence,
    /// A PUT's version is not before_version + 1, or a DELETE removed nothing (P1).
    VersionGap,
    /// before_version differs from what this replica's previous event for the key
    /// left (P1).
    BeforeVersionMismatch,
    /// An HLC did not increase along the log or along a key's events (P1).
    HlcRegression,
    /// A position went backwards, repeated, or skipped an index (P1).
    PositionOrder,
    /// Events older than the cursor were compacted away before the checker read them
    /// (P2).
    EventsLost,
    /// A configured invariant does not hold after a revision (P2).
    InvariantBroken,
    /// A saga is still open past its deadline plus the grace period (P2).
    SagaStuck,
    /// A saga step could not be compensated because its key moved on (P2).
    SagaStepConflict,
    /// The checker is behind a replica by more than the thresholds (P3).
    Lag,
}

impl Kind {
    /// The snake_case name (JSON and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Divergence => "divergence",
            Kind::VersionGap => "version_gap",
            Kind::BeforeVersionMismatch => "before_version_mismatch",
            Kind::HlcRegression => "hlc_regression",
            Kind::PositionOrder => "position_order",
            Kind::EventsLost => "events_lost",
            Kind::InvariantBroken => "invariant_broken",
            Kind::SagaStuck => "saga_stuck",
            Kind::SagaStepConflict => "saga_step_conflict",
            Kind::Lag => "lag",
        }
    }

    /// The alert level of this kind.
    pub fn level(self) -> Level {
        match self {
            Kind::Divergence
            | Kind::VersionGap
            | Kind::BeforeVersionMismatch
            | Kind::HlcRegression
            | Kind::PositionOrder => Level::P1,
            Kind::EventsLost | Kind::InvariantBroken | Kind::SagaStuck | Kind::SagaStepConflict => {
                Level::P2
            }
            Kind::Lag => Level::P3,
        }
    }
}

/// One finding. `nodes` lists the replica(s) at fault (empty when not replica
/// specific, e.g. a broken invariant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What went wrong.
    pub kind: Kind,
    /// Alert level (derived from the kind).
    pub level: Level,
    /// Replica(s) at fault.
    pub nodes: Vec<u64>,
    /// Where in the log (absent for lag or saga deadline findings without one).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revision: Option<u64>,
    /// Index within the revision, when one event is meant.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<u32>,
    /// The key concerned, if any (UTF-8 or 0x-hex).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    /// The saga concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub saga_id: Option<String>,
    /// One human sentence.
    pub message: String,
    /// Structured evidence (events, values, hashes).
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub details: serde_json::Value,
}

impl Finding {
    /// A finding of `kind` with `message`; the rest is filled by the builder methods.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            level: kind.level(),
            nodes: Vec::new(),
            revision: None,
            index: None,
            key: None,
            saga_id: None,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// Blame these replicas.
    pub fn nodes(mut self, nodes: impl IntoIterator<Item = u64>) -> Self {
        self.nodes = nodes.into_iter().collect();
        self
    }

    /// Point at one event.
    pub fn at(mut self, pos: Position) -> Self {
        self.revision = Some(pos.revision);
        self.index = Some(pos.index);
        self
    }

    /// Point at a revision.
    pub fn revision(mut self, revision: u64) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Name the key.
    pub fn key(mut self, key: &[u8]) -> Self {
        self.key = Some(super::event::key_text(key));
        self
    }

    /// Name the saga.
    pub fn saga(mut self, saga_id: &str) -> Self {
        self.saga_id = Some(saga_id.to_string());
        self
    }

    /// Attach evidence.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A finding with the time it was made, as written to the findings file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// Wall time of the report, ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
}

//! The nemesis schedule: which fault, when, for how long and on which nodes, drawn
//! from the seed alone.
//!
//! [`plan`] is a pure function of (seed, fault kinds, partition modes, node ids, time
//! limit, interval): the same inputs give the same schedule, so a seeded run is
//! reproducible in its schedule. Only "the leader" is resolved when the fault starts
//! (it depends on the run); every other choice, including the node order that random
//! halves, rings and bridges are cut from, is fixed here.
//!
//! Shape: quiet `[i/2, i]`, then alternately one fault for `[i, 2i]` and a quiet gap of
//! `[i/2, i]`, where `i` is the interval; one fault at a time, each kind drawn uniformly
//! from the enabled ones; nothing starts later than [`MIN_FAULT`] before the time limit,
//! and every window ends by the time limit.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::config::{FaultKind, PartitionMode};

/// Salt mixed into the seed for the schedule (workers use other salts).
pub const SCHEDULE_SALT: u64 = 0x6e65_6d65_7369_7321;
/// Shortest fault window worth starting.
pub const MIN_FAULT: Duration = Duration::from_secs(1);
/// Latency range of the latency nemesis, ms (jitter is up to half of it).
pub const LATENCY_RANGE_MS: (u64, u64) = (20, 150);
/// Range of clock offsets' magnitude, ms (sign drawn separately).
pub const CLOCK_OFFSET_RANGE_MS: (i64, i64) = (50, 1_000);

/// Which nodes a process fault hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodePick {
    /// The leader when the fault starts.
    Leader,
    /// These nodes.
    Nodes(Vec<u64>),
}

/// One fault, fully determined except for "the leader".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultPlan {
    /// kill -9, restart at the end of the window.
    Kill {
        /// Victims.
        target: NodePick,
    },
    /// SIGSTOP, SIGCONT at the end of the window.
    Pause {
        /// Victims.
        target: NodePick,
    },
    /// Blackholed links.
    Partition {
        /// Shape.
        mode: PartitionMode,
        /// Node order the shape is cut from (a seeded permutation).
        order: Vec<u64>,
    },
    /// Added latency.
    Latency {
        /// One-way delay, ms.
        latency_ms: u64,
        /// Jitter bound, ms.
        jitter_ms: u64,
        /// Only this node's links (None: every link).
        node: Option<u64>,
    },
    /// Clock offsets, reset to 0 at the end.
    Clock {
        /// (node, offset ms).
        offsets_ms: Vec<(u64, i64)>,
    },
    /// Remove a voter (kept as a learner); add it back at the end.
    Membership {
        /// The voter removed.
        target: NodePick,
    },
}

impl FaultPlan {
    /// The kind of fault.
    pub fn kind(&self) -> FaultKind {
        match self {
            FaultPlan::Kill { .. } => FaultKind::Kill,
            FaultPlan::Pause { .. } => FaultKind::Pause,
            FaultPlan::Partition { .. } => FaultKind::Partition,
            FaultPlan::Latency { .. } => FaultKind::Latency,
            FaultPlan::Clock { .. } => FaultKind::Clock,
            FaultPlan::Membership { .. } => FaultKind::Membership,
        }
    }
}

/// A fault and its window, relative to the start of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// Position in the schedule.
    pub index: usize,
    /// Start, ms after the run starts.
    pub start_ms: u64,
    /// Planned length, ms.
    pub duration_ms: u64,
    /// What.
    pub plan: FaultPlan,
}

impl PlannedFault {
    /// Start offset.
    pub fn start(&self) -> Duration {
        Duration::from_millis(self.start_ms)
    }
    /// Planned end offset.
    pub fn end(&self) -> Duration {
        Duration::from_millis(self.start_ms + self.duration_ms)
    }
}

fn between(rng: &mut ChaCha8Rng, lo: Duration, hi: Duration) -> Duration {
    let (lo, hi) = (lo.as_millis() as u64, hi.as_millis().max(lo.as_millis()) as u64);
    Duration::from_millis(rng.gen_range(lo..=hi))
}

/// The schedule (see the module docs). Empty without kinds or nodes.
pub fn plan(
    seed: u64,
    kinds: &[FaultKind],
    partitions: &[PartitionMode],
    nodes: &[u64],
    time_limit: Duration,
    interval: Duration,
) -> Vec<PlannedFault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SCHEDULE_SALT);
    let mut out = Vec::new();
    if kinds.is_empty() || nodes.is_empty() {
        return out;
    }
    let mut t = between(&mut rng, interval / 2, interval);
    while t + MIN_FAULT <= time_limit {
        let duration = between(&mut rng, interval, interval * 2).min(time_limit - t);
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let plan = plan_one(&mut rng, kind, partitions, nodes);
        out.push(PlannedFault {
            index: out.len(),
            start_ms: t.as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            plan,
        });
        t += duration + between(&mut rng, interval / 2, interval);
    }
    out
}

fn pick_nodes(rng: &mut ChaCha8Rng, nodes: &[u64]) -> NodePick {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    match rng.gen_range(0..3) {
        0 => NodePick::Leader,
        1 => NodePick::Nodes(shuffled[..1].to_vec()),
        _ => {
            let minority = ((nodes.len() - 1) / 2).max(1);
            let mut picked = shuffled[..minority].to_vec();
            picked.sort_unstable();
            NodePick::Nodes(picked)
        }
    }
}

fn plan_one(
    rng: &mut ChaCha8Rng,
    kind: FaultKind,
    partitions: &[PartitionMode],
    nodes: &[u64],
) -> FaultPlan {
    match kind {
        FaultKind::Kill => FaultPlan::Kill { target: pick_nodes(rng, nodes) },
        FaultKind::Pause => FaultPlan::Pause { target: pick_nodes(rng, nodes) },
        FaultKind::Partition => {
            let mode = if partitions.is_empty() {
                PartitionMode::Halves
            } else {
                partitions[rng.gen_range(0..partitions.len())]
            };
            let mut order = nodes.to_vec();
            order.shuffle(rng);
            FaultPlan::Partition { mode, order }
        }
        FaultKind::Latency => {
            let latency_ms = rng.gen_range(LATENCY_RANGE_MS.0..=LATENCY_RANGE_MS.1);
            let jitter_ms = rng.gen_range(0..=latency_ms / 2);
            let node = rng.gen_bool(0.5).then(|| nodes[rng.gen_range(0..nodes.len())]);
            FaultPlan::Latency { latency_ms, jitter_ms, node }
        }
        FaultKind::Clock => {
            let mut shuffled = nodes.to_vec();
            shuffled.shuffle(rng);
            let count = rng.gen_range(1..=nodes.len());
            let mut offsets_ms: Vec<(u64, i64)> = shuffled[..count]
                .iter()
                .map(|id| {
                    let magnitude =
                        rng.gen_range(CLOCK_OFFSET_RANGE_MS.0..=CLOCK_OFFSET_RANGE_MS.1);
                    (*id, if rng.gen_bool(0.5) { magnitude } else { -magnitude })
                })
                .collect();
            offsets_ms.sort_unstable();
            FaultPlan::Clock { offsets_ms }
        }
        FaultKind::Membership => {
            let target = if rng.gen_bool(0.5) {
                NodePick::Leader
            } else {
                NodePick::Nodes(vec![nodes[rng.gen_range(0..nodes.len())]])
            };
            FaultPlan::Membership { target }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: [u64; 5] = [1, 2, 3, 4, 5];

    fn sample(seed: u64) -> Vec<PlannedFault> {
        plan(
            seed,
            &FaultKind::ALL,
            &PartitionMode::ALL,
            &NODES,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(sample(42), sample(42));
        assert_ne!(sample(42), sample(43));
    }

    #[test]
    fn windows_alternate_with_gaps_and_end_by_the_time_limit() {
        let s = sample(7);
        assert!(s.len() >= 3, "{s:?}");
        for w in s.windows(2) {
            let gap = w[1].start_ms - (w[0].start_ms + w[0].duration_ms);
            assert!((2_500..=5_000).contains(&gap), "gap {gap} ms");
        }
        for f in &s {
            assert!(f.end() <= Duration::from_secs(60));
            assert!(f.duration_ms >= MIN_FAULT.as_millis() as u64);
        }
    }

    #[test]
    fn only_enabled_kinds_and_modes_are_drawn() {
        let s = plan(
            1,
            &[FaultKind::Partition],
            &[PartitionMode::Bridge],
            &NODES,
            Duration::from_secs(120),
            Duration::from_secs(2),
        );
        assert!(!s.is_empty());
        for f in &s {
            match &f.plan {
                FaultPlan::Partition { mode, order } => {
                    assert_eq!(*mode, PartitionMode::Bridge);
                    let mut sorted = order.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, NODES);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            plan(1, &[], &[], &NODES, Duration::from_secs(60), Duration::from_secs(1)).is_empty()
        );
    }

    #[test]
    fn minorities_are_minorities() {
        for f in sample(9) {
            if let FaultPlan::Kill { target: NodePick::Nodes(n) }
            | FaultPlan::Pause { target: NodePick::Nodes(n) } = &f.plan
            {
                assert!(!n.is_empty() && n.len() <= 2, "{n:?}");
            }
        }
    }
}

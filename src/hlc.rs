//! Hybrid logical clock (HLC): a timestamp that follows physical time but never goes
//! backwards and orders causally related events across nodes.
//!
//! Invariants:
//! - `now()` returns strictly increasing timestamps (per clock), whatever the physical
//!   clock does (jumps back, stands still).
//! - `update(remote)` merges a remote timestamp so the next `now()` is greater than it,
//!   unless `remote` is more than `max_offset` ahead of our physical clock: then it is
//!   refused ([`HlcError::ClockOffset`]) and the clock is left unchanged.
//! - The clock never goes below `high_water`: a restarted node seeds its clock with the
//!   persisted high-water mark (the last applied HLC), so it never goes backwards.
//!
//! The physical clock is injected ([`PhysicalClock`]) so tests and the clock-skew nemesis
//! can shift or freeze it. Pure logic: no I/O, no async.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Default bound on how far a remote timestamp may lead our physical clock.
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = Duration::from_millis(500);

/// A hybrid logical clock timestamp. Ordered by (wall_ns, logical, node).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Physical component: nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// Logical counter ordering events that share `wall_ns`.
    pub logical: u32,
    /// Id of the node that produced the timestamp; breaks ties between nodes.
    pub node: u64,
}

impl Timestamp {
    /// The zero timestamp, before every real one.
    pub const ZERO: Timestamp = Timestamp { wall_ns: 0, logical: 0, node: 0 };

    /// The smallest timestamp strictly greater than `self` on the same wall time
    /// (carries into `wall_ns` if the logical counter would overflow).
    pub fn tick(self) -> Timestamp {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp { logical, ..self },
            None => Timestamp { wall_ns: self.wall_ns.saturating_add(1), logical: 0, ..self },
        }
    }

    /// Whether `self` orders strictly after `other`, ignoring the node tie breaker.
    pub fn is_after(&self, other: &Timestamp) -> bool {
        (self.wall_ns, self.logical) > (other.wall_ns, other.logical)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ns, self.logical, self.node)
    }
}

/// Errors of the HLC.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HlcError {
    /// A remote timestamp is further ahead of our physical clock than allowed.
    #[error(
        "remote timestamp {remote} is {ahead_ms} ms ahead of local physical time \
         (max_clock_offset {max_ms} ms): check clock synchronisation"
    )]
    ClockOffset {
        /// The refused timestamp.
        remote: Timestamp,
        /// How far ahead it was, in milliseconds.
        ahead_ms: u64,
        /// The configured bound, in milliseconds.
        max_ms: u64,
    },
}

/// Source of physical time in nanoseconds since the Unix epoch.
pub trait PhysicalClock: Send + Sync + 'static {
    /// Current physical time in ns.
    fn now_ns(&self) -> u64;
}

/// The system clock plus an adjustable offset (for the clock-skew nemesis).
#[derive(Debug, Default)]
pub struct SystemClock {
    offset_ns: AtomicI64,
}

impl SystemClock {
    /// A system clock with zero offset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shift this clock by `offset_ns` (positive: ahead) relative to real time.
    pub fn set_offset_ns(&self, offset_ns: i64) {
        self.offset_ns.store(offset_ns, Ordering::Relaxed);
    }

    /// The current offset in ns.
    pub fn offset_ns(&self) -> i64 {
        self.offset_ns.load(Ordering::Relaxed)
    }
}

impl PhysicalClock for SystemClock {
    fn now_ns(&self) -> u64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let real = u64::try_from(real).unwrap_or(u64::MAX);
        real.saturating_add_signed(self.offset_ns())
    }
}

/// A manually driven clock for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        Self { now_ns: std::sync::atomic::AtomicU64::new(now_ns) }
    }

    /// Set the reading.
    pub fn set(&self, now_ns: u64) {
        self.now_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Move the reading forward (or back, with a negative delta).
    pub fn advance(&self, delta_ns: i64) {
        let cur = self.now_ns.load(Ordering::Relaxed);
        self.set(cur.saturating_add_signed(delta_ns));
    }
}

impl PhysicalClock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::Relaxed)
    }
}

/// A hybrid logical clock for one node. Cheap to share (`Arc` inside); thread safe.
#[derive(Clone)]
pub struct Hlc {
    node: u64,
    max_offset_ns: u64,
    physical: Arc<dyn PhysicalClock>,
    last: Arc<Mutex<Timestamp>>,
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hlc").field("node", &self.node).field("last", &self.peek()).finish()
    }
}

impl Hlc {
    /// A clock for `node`, refusing remote timestamps more than `max_offset` ahead, never
    /// going below `high_water` (the persisted high-water mark; ZERO for a new node).
    pub fn new(
        node: u64,
        physical: Arc<dyn PhysicalClock>,
        max_offset: Duration,
        high_water: Timestamp,
    ) -> Self {
        let max_offset_ns = u64::try_from(max_offset.as_nanos()).unwrap_or(u64::MAX);
        let seed = Timestamp { node, ..high_water };
        Self { node, max_offset_ns, physical, last: Arc::new(Mutex::new(seed)) }
    }

    /// The node id stamped into every timestamp.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The last timestamp issued or merged (without advancing the clock).
    pub fn peek(&self) -> Timestamp {
        *self.lock()
    }

    /// The physical clock's reading in ns.
    pub fn physical_now_ns(&self) -> u64 {
        self.physical.now_ns()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timestamp> {
        // A poisoned lock only means another thread panicked while holding a plain
        // Copy value; the value is still valid.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new timestamp, strictly greater than every one issued or merged before.
    pub fn now(&self) -> Timestamp {
        let pt = self.physical.now_ns();
        let mut last = self.lock();
        let next = if pt > last.wall_ns {
            Timestamp { wall_ns: pt, logical: 0, node: self.node }
        } else {
            Timestamp { node: self.node, ..last.tick() }
        };
        debug_assert!(next.is_after(&last), "hlc went backwards: {next} after {}", *last);
        *last = next;
        next
    }

    /// Merge a timestamp seen from another node (or the log). Afterwards `now()` returns
    /// a timestamp greater than `remote`. Refuses a `remote` more than `max_offset` ahead
    /// of the physical clock, leaving the clock unchanged.
    pub fn update(&self, remote: Timestamp) -> Result<(), HlcError> {
        let pt = self.physical.now_ns();
        if remote.wall_ns > pt.saturating_add(self.max_offset_ns) {
            return Err(HlcError::ClockOffset {
                remote,
                ahead_ms: (remote.wall_ns - pt) / 1_000_000,
                max_ms: self.max_offset_ns / 1_000_000,
            });
        }
        self.observe(remote);
        Ok(())
    }

    /// Merge a timestamp that is already agreed (an applied log entry): never refused,
    /// because refusing it could not undo it.
    pub fn observe(&self, remote: Timestamp) {
        let mut last = self.lock();
        if remote.is_after(&last) {
            *last = Timestamp { node: self.node, ..remote };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock(at: u64) -> (Arc<ManualClock>, Hlc) {
        let pc = Arc::new(ManualClock::new(at));
        let hlc = Hlc::new(1, pc.clone(), DEFAULT_MAX_CLOCK_OFFSET, Timestamp::ZERO);
        (pc, hlc)
    }

    #[test]
    fn now_follows_physical_time_when_it_advances() {
        let (pc, hlc) = clock(1_000);
        assert_eq!(hlc.now(), Timestamp { wall_ns: 1_000, logical: 0, node: 1 });
        pc.set(2_000);
        assert_eq!(hlc.now(), Timestamp { wall_ns: 2_000, logical: 0, node: 1 });
    }

    #[test]
    fn now_ticks_logical_when_physical_time_stands_still_or_goes_back() {
        let (pc, hlc) = clock(1_000);
        let a = hlc.now();
        let b = hlc.now();
        pc.set(500);
        let c = hlc.now();
        assert!(b.is_after(&a));
        assert!(c.is_after(&b));
        assert_eq!(c, Timestamp { wall_ns: 1_000, logical: 2, node: 1 });
    }

    #[test]
    fn update_far_ahead_is_refused_and_leaves_the_clock_alone() {
        let (_pc, hlc) = clock(1_000_000_000);
        let before = hlc.now();
        let remote = Timestamp { wall_ns: 3_000_000_000, logical: 0, node: 2 };
        let err = hlc.update(remote).expect_err("must refuse");
        assert!(matches!(err, HlcError::ClockOffset { ahead_ms: 2000, max_ms: 500, .. }));
        assert_eq!(hlc.peek(), before);
    }

    #[test]
    fn update_within_offset_moves_the_clock_past_the_remote() {
        let (_pc, hlc) = clock(1_000_000_000);
        let remote = Timestamp { wall_ns: 1_400_000_000, logical: 7, node: 2 };
        hlc.update(remote).expect("within offset");
        let next = hlc.now();
        assert!(next.is_after(&remote), "{next} must follow {remote}");
    }

    #[test]
    fn restart_never_goes_below_the_high_water_mark() {
        let pc = Arc::new(ManualClock::new(10));
        let hw = Timestamp { wall_ns: 1_000, logical: 3, node: 1 };
        let hlc = Hlc::new(1, pc, DEFAULT_MAX_CLOCK_OFFSET, hw);
        assert!(hlc.now().is_after(&hw));
    }

    #[test]
    fn logical_overflow_carries_into_wall_time() {
        let t = Timestamp { wall_ns: 5, logical: u32::MAX, node: 1 };
        assert_eq!(t.tick(), Timestamp { wall_ns: 6, logical: 0, node: 1 });
    }

    #[derive(Debug, Clone)]
    enum Step {
        Now,
        Update(u64, u32),
        Advance(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Now),
            (0u64..3_000_000_000, 0u32..5).prop_map(|(w, l)| Step::Update(w, l)),
            (-1_000_000_000i64..1_000_000_000).prop_map(Step::Advance),
        ]
    }

    proptest! {
        #[test]
        fn now_is_strictly_monotonic_under_any_interleaving(
            steps in proptest::collection::vec(step(), 1..200),
            high_water in 0u64..2_000_000_000,
        ) {
            let pc = Arc::new(ManualClock::new(1_000_000_000));
            let hw = Timestamp { wall_ns: high_water, logical: 0, node: 1 };
            let hlc = Hlc::new(1, pc.clone(), DEFAULT_MAX_CLOCK_OFFSET, hw);
            let mut prev = hw;
            for s in steps {
                match s {
                    Step::Now => {
                        let t = hlc.now();
                        prop_assert!(t.is_after(&prev), "{} !> {}", t, prev);
                        prev = t;
                    }
                    Step::Update(w, l) => {
                        let remote = Timestamp { wall_ns: w, logical: l, node: 2 };
                        if hlc.update(remote).is_ok() {
                            let t = hlc.now();
                            prop_assert!(t.is_after(&remote));
                            prop_assert!(t.is_after(&prev));
                            prev = t;
                        }
                    }
                    Step::Advance(d) => pc.advance(d),
                }
            }
        }
    }
}

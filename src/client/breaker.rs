//! Per-endpoint circuit breaker: stop sending to an endpoint that keeps failing, then
//! probe it with one request at a time until it recovers.
//!
//! States and transitions (times come from the injected [`Clock`](super::Clock)):
//!
//! ```text
//! Closed --(>= min_requests in the window and failures >= error_rate)--> Open
//! Open   --(sleep_window elapsed; the next request is the probe)------> HalfOpen
//! HalfOpen --(probe succeeds)--> Closed (counts reset)
//! HalfOpen --(probe fails)-----> Open (sleep window restarts)
//! ```
//!
//! Invariants:
//! - Closed counts outcomes over a fixed window (`window_ms`); the counts restart when
//!   the window expires, so an old burst of failures cannot open the breaker later.
//! - HalfOpen admits exactly one probe at a time. A probe whose outcome is never
//!   reported (its future was dropped) is considered lost after `sleep_window`, and the
//!   next request becomes the new probe: the breaker cannot wedge half-open.
//! - Only endpoint-health failures are recorded as failures (see
//!   [`classify`](super::retry::classify)); an application error such as
//!   INVALID_ARGUMENT means the endpoint is healthy.
//! - Outcomes reported while Open (requests admitted before it opened) are ignored.
//!
//! The breaker is plain synchronous code under a mutex that is never held across an
//! await point.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::BreakerConfig;

/// Observable state of one endpoint's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// Requests are rejected without being sent until the sleep window ends.
    Open,
    /// One probe request is allowed through; its outcome decides the next state.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { since: Instant },
    HalfOpen { probe_started: Option<Instant> },
}

#[derive(Debug)]
struct Inner {
    state: State,
    window_start: Instant,
    successes: u32,
    failures: u32,
}

/// A circuit breaker for one endpoint.
#[derive(Debug)]
pub struct Breaker {
    enabled: bool,
    min_requests: u32,
    error_rate_percent: u32,
    window: Duration,
    sleep_window: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker whose first counting window starts at `now`.
    pub fn new(config: &BreakerConfig, now: Instant) -> Self {
        Self {
            enabled: config.enabled,
            min_requests: config.min_requests.max(1),
            error_rate_percent: u32::from(config.error_rate_percent),
            window: Duration::from_millis(config.window_ms),
            sleep_window: Duration::from_millis(config.sleep_window_ms),
            inner: Mutex::new(Inner {
                state: State::Closed,
                window_start: now,
                successes: 0,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters inconsistent in a
        // way that matters (worst case: one outcome lost), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask to send one request at `now`. True: send it (when half-open, it is the
    /// probe and its outcome must be reported with [`Breaker::record`]). False: the
    /// breaker is open; do not send.
    pub fn try_acquire(&self, now: Instant) -> bool {
        if !self.enabled {
            return true;
        }
        let mut inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::Open { since } => {
                if now.saturating_duration_since(since) >= self.sleep_window {
                    inner.state = State::HalfOpen { probe_started: Some(now) };
                    true
                } else {
                    false
                }
            }
            State::HalfOpen { probe_started } => {
                let probe_lost = probe_started
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.sleep_window);
                if probe_lost {
                    inner.state = State::HalfOpen { probe_started: Some(now) };
                }
                probe_lost
            }
        }
    }

    /// Report the outcome of a request admitted by [`Breaker::try_acquire`]. `healthy`
    /// is false only for endpoint-health failures. Returns the new state when this
    /// outcome changed it.
    pub fn record(&self, now: Instant, healthy: bool) -> Option<BreakerState> {
        if !self.enabled {
            return None;
        }
        let mut inner = self.lock();
        match inner.state {
            State::Open { .. } => None,
            State::HalfOpen { .. } => {
                if healthy {
                    inner.state = State::Closed;
                    inner.window_start = now;
                    inner.successes = 0;
                    inner.failures = 0;
                    Some(BreakerState::Closed)
                } else {
                    inner.state = State::Open { since: now };
                    Some(BreakerState::Open)
                }
            }
            State::Closed => {
                if now.saturating_duration_since(inner.window_start) >= self.window {
                    inner.window_start = now;
                    inner.successes = 0;
                    inner.failures = 0;
                }
                if healthy {
                    inner.successes = inner.successes.saturating_add(1);
                } else {
                    inner.failures = inner.failures.saturating_add(1);
                }
                let total = inner.successes.saturating_add(inner.failures);
                let rate_exceeded = u64::from(inner.failures) * 100
                    >= u64::from(self.error_rate_percent) * u64::from(total);
                if total >= self.min_requests && rate_exceeded {
                    inner.state = State::Open { since: now };
                    Some(BreakerState::Open)
                } else {
                    None
                }
            }
        }
    }

    /// The current state (an Open breaker whose sleep window has passed still reports
    /// Open until a request probes it).
    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_REQUESTS: u32 = 20;
    const SLEEP: Duration = Duration::from_secs(5);
    const WINDOW: Duration = Duration::from_secs(10);

    fn config() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            min_requests: MIN_REQUESTS,
            error_rate_percent: 50,
            window_ms: WINDOW.as_millis() as u64,
            sleep_window_ms: SLEEP.as_millis() as u64,
        }
    }

    fn open_breaker(t0: Instant) -> Breaker {
        let b = Breaker::new(&config(), t0);
        for _ in 0..MIN_REQUESTS - 1 {
            assert!(b.try_acquire(t0));
            assert_eq!(b.record(t0, false), None);
        }
        assert_eq!(b.record(t0, false), Some(BreakerState::Open));
        b
    }

    #[test]
    fn stays_closed_below_min_requests_even_at_full_error_rate() {
        let t0 = Instant::now();
        let b = Breaker::new(&config(), t0);
        for _ in 0..MIN_REQUESTS - 1 {
            assert_eq!(b.record(t0, false), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire(t0));
    }

    #[test]
    fn opens_at_min_requests_when_error_rate_reaches_threshold() {
        let t0 = Instant::now();
        let b = Breaker::new(&config(), t0);
        for _ in 0..MIN_REQUESTS / 2 {
            assert_eq!(b.record(t0, true), None);
        }
        for _ in 0..MIN_REQUESTS / 2 - 1 {
            assert_eq!(b.record(t0, false), None);
        }
        // 10 ok + 10 failed = 20 requests at exactly 50%.
        assert_eq!(b.record(t0, false), Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn stays_closed_when_error_rate_is_below_threshold() {
        let t0 = Instant::now();
        let b = Breaker::new(&config(), t0);
        for i in 0..100 {
            assert_eq!(b.record(t0, i % 3 != 0), None, "request {i}");
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn window_expiry_forgets_old_failures() {
        let t0 = Instant::now();
        let b = Breaker::new(&config(), t0);
        for _ in 0..MIN_REQUESTS - 1 {
            b.record(t0, false);
        }
        let later = t0 + WINDOW;
        assert_eq!(b.record(later, false), None, "counts restarted with the new window");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_rejects_until_sleep_window_then_admits_one_probe() {
        let t0 = Instant::now();
        let b = open_breaker(t0);
        assert!(!b.try_acquire(t0));
        assert!(!b.try_acquire(t0 + SLEEP - Duration::from_millis(1)));
        assert!(b.try_acquire(t0 + SLEEP), "first request after the window is the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.try_acquire(t0 + SLEEP), "only one probe at a time");
    }

    #[test]
    fn successful_probe_closes_and_resets_counts() {
        let t0 = Instant::now();
        let b = open_breaker(t0);
        let t1 = t0 + SLEEP;
        assert!(b.try_acquire(t1));
        assert_eq!(b.record(t1, true), Some(BreakerState::Closed));
        assert!(b.try_acquire(t1));
        for _ in 0..MIN_REQUESTS - 1 {
            assert_eq!(b.record(t1, false), None, "counts restarted after closing");
        }
    }

    #[test]
    fn failed_probe_reopens_for_a_new_sleep_window() {
        let t0 = Instant::now();
        let b = open_breaker(t0);
        let t1 = t0 + SLEEP;
        assert!(b.try_acquire(t1));
        assert_eq!(b.record(t1, false), Some(BreakerState::Open));
        assert!(!b.try_acquire(t1 + SLEEP - Duration::from_millis(1)));
        assert!(b.try_acquire(t1 + SLEEP));
    }

    #[test]
    fn lost_probe_is_replaced_after_a_sleep_window() {
        let t0 = Instant::now();
        let b = open_breaker(t0);
        let t1 = t0 + SLEEP;
        assert!(b.try_acquire(t1));
        assert!(!b.try_acquire(t1 + SLEEP - Duration::from_millis(1)));
        assert!(b.try_acquire(t1 + SLEEP), "the unreported probe is presumed lost");
    }

    #[test]
    fn outcomes_reported_while_open_are_ignored() {
        let t0 = Instant::now();
        let b = open_breaker(t0);
        assert_eq!(b.record(t0, true), None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn disabled_breaker_always_admits() {
        let t0 = Instant::now();
        let b = Breaker::new(&BreakerConfig { enabled: false, ..config() }, t0);
        for _ in 0..100 {
            assert_eq!(b.record(t0, false), None);
        }
        assert!(b.try_acquire(t0));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}

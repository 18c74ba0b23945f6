//! Time as the client sees it: a monotonic `now()` and an async `sleep()`, behind one
//! trait so that tests can drive the circuit breaker and the retry budget without
//! waiting.
//!
//! Invariant: `now()` never goes backwards, and `sleep(d)` returns no earlier than
//! `now() + d` as seen by the same clock. [`ManualClock`] keeps both by advancing its own
//! time inside `sleep`, so a test that retries five times with backoff completes
//! instantly while the client observes exactly the durations it asked for.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// A monotonic clock plus a timer.
pub trait Clock: Send + Sync + Debug {
    /// The current monotonic time.
    fn now(&self) -> Instant;
    /// Wait for `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock: `Instant::now()` and `tokio::time::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A test clock: time moves only through [`ManualClock::advance`] or `sleep`, which
/// advances it by the requested duration and returns at once.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
    slept: Mutex<Vec<Duration>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock starting at the current instant.
    pub fn new() -> Self {
        Self { base: Instant::now(), offset: Mutex::new(Duration::ZERO), slept: Mutex::default() }
    }

    /// Move time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = offset.saturating_add(by);
    }

    /// Every duration passed to `sleep`, in call order (lets tests check backoff).
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.slept.lock().unwrap_or_else(|e| e.into_inner()).push(duration);
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_sleep_advances_time_without_waiting() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(3600));
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(3600)]);
    }
}

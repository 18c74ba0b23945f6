//! Client counters: plain atomics, read as a [`ClientMetrics`] snapshot. Monotonic
//! for the life of the client. The same events are also recorded through the
//! `metrics` facade (`meridian_client_*` series, see docs/OPERATIONS.md) so a program
//! embedding the client exports them with whatever recorder it installs.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of a client's counters (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientMetrics {
    /// Logical calls started.
    pub calls: u64,
    /// Attempts sent (or tried) across all calls.
    pub attempts: u64,
    /// Attempts after the first of their call (redirects included).
    pub retries: u64,
    /// Retries that followed a leader hint.
    pub redirects: u64,
    /// Times an endpoint's breaker opened.
    pub breaker_opens: u64,
    /// Attempts that found every endpoint's breaker open.
    pub breaker_rejections: u64,
    /// Calls that ended in an error.
    pub failed_calls: u64,
    /// Write calls that ended in an indeterminate error.
    pub indeterminate_calls: u64,
    /// Attempts refused with RESOURCE_EXHAUSTED (rate limited); the next attempt
    /// waited at least the server's `retry-after-ms` hint.
    pub rate_limited: u64,
}

/// The live counters behind [`ClientMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub calls: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub redirects: AtomicU64,
    pub breaker_opens: AtomicU64,
    pub breaker_rejections: AtomicU64,
    pub failed_calls: AtomicU64,
    pub indeterminate_calls: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl Counters {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count an event both here and in the `metrics` facade series `name`.
    pub fn inc_exported(counter: &AtomicU64, name: &'static str) {
        Self::inc(counter);
        metrics::counter!(name).increment(1);
    }

    pub fn snapshot(&self) -> ClientMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientMetrics {
            calls: get(&self.calls),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            redirects: get(&self.redirects),
            breaker_opens: get(&self.breaker_opens),
            breaker_rejections: get(&self.breaker_rejections),
            failed_calls: get(&self.failed_calls),
            indeterminate_calls: get(&self.indeterminate_calls),
            rate_limited: get(&self.rate_limited),
        }
    }
}

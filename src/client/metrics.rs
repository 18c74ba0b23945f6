//! Client counters: plain atomics, read as a [`ClientMetrics`] snapshot. Monotonic
//! for the life of the client; a metrics-crate exporter can be layered on later.

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
}

impl Counters {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
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
        }
    }
}

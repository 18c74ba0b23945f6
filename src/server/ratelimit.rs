//! Per-client rate limiting: a GCRA token bucket (governor) per caller identity.
//!
//! The key is the caller's identity (principal, certificate name, or `ip:<addr>` for
//! anonymous callers). Requests forwarded by a node are not charged: the node that
//! received them from the client already charged that client once.
//!
//! The key map is bounded by `limits.max_clients`: when it is full, buckets that
//! have refilled (idle clients, indistinguishable from new ones) are dropped; if it
//! is still full, new identities share one overflow bucket, so memory stays bounded
//! while existing clients keep their own budgets.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::config::LimitsConfig;

/// The identity new callers share when the key map is full.
pub const OVERFLOW_KEY: &str = "<overflow>";

type Keyed = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The limiter of one node.
pub struct ClientLimiter {
    limiter: Keyed,
    clock: DefaultClock,
    max_clients: usize,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter").field("max_clients", &self.max_clients).finish()
    }
}

impl ClientLimiter {
    /// A limiter from `[limits]`; None when rate limiting is off.
    pub fn new(cfg: &LimitsConfig) -> Option<Self> {
        let rate = NonZeroU32::new(cfg.rate_per_sec)?;
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            max_clients: cfg.max_clients,
        })
    }

    /// Charge one request to `identity`: Ok, or how long to wait before retrying.
    pub fn check(&self, identity: &str) -> Result<(), Duration> {
        let mut key = identity.to_string();
        if self.limiter.len() >= self.max_clients {
            self.limiter.retain_recent();
            if self.limiter.len() >= self.max_clients {
                // Existing identities keep their buckets; new ones share one.
                key = OVERFLOW_KEY.to_string();
            }
        }
        self.limiter.check_key(&key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Identities currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, max_clients: usize) -> ClientLimiter {
        ClientLimiter::new(&LimitsConfig { rate_per_sec: rate, burst, max_clients })
            .expect("limiting on")
    }

    #[test]
    fn burst_then_refusal_with_a_wait_hint_and_other_clients_unaffected() {
        let l = limiter(1, 3, 100);
        for _ in 0..3 {
            l.check("alice").expect("within burst");
        }
        let wait = l.check("alice").expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        l.check("bob").expect("bob has his own bucket");
    }

    #[test]
    fn rate_zero_means_off() {
        assert!(ClientLimiter::new(&LimitsConfig::default()).is_none());
    }

    #[test]
    fn key_map_stays_bounded() {
        let l = limiter(1, 1, 4);
        for i in 0..100 {
            let _ = l.check(&format!("c{i}"));
        }
        assert!(l.tracked() <= 5, "tracked {}", l.tracked());
    }
}

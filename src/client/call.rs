//! The retry loop every RPC goes through: pick an endpoint, run one attempt under a
//! deadline, classify the failure, then follow a leader hint at once, back off and
//! rotate, or give up.
//!
//! Invariants:
//! - A logical call makes at most `retry.max_attempts` attempts (redirects and
//!   attempts refused by open breakers included) and never starts an attempt or a
//!   backoff sleep that would end after its budget (`retry.max_elapsed_ms` or the
//!   call's own timeout). Each attempt's gRPC deadline is
//!   `min(request_timeout, remaining budget)`.
//! - The attempt closure must send the same request every time (for writes: the same
//!   request id); the loop never alters it.
//! - Each attempt prefers an endpoint that has not failed during this call (the
//!   shared leader/preferred state may still name a dead node that other calls
//!   learned about).
//! - A leader hint is followed at once only if it names an endpoint that has not
//!   failed during this call; otherwise the loop backs off, so a stale hint to a dead
//!   leader cannot burn the attempts in a tight loop.
//! - A write's error is `indeterminate` iff some attempt may have applied it
//!   (see [`retry`](super::retry) for the table).
//! - Time comes from the client's [`Clock`](super::Clock): tests run the whole loop,
//!   backoff included, without waiting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Status};
use tracing::Instrument;

use super::breaker::BreakerState;
use super::endpoints::{normalize_endpoint, EndpointState, Route};
use super::error::{code_name, ClientError, RpcError};
use super::metrics::Counters;
use super::retry::{self, Backoff, OpKind};
use super::Client;

/// What the retry loop needs to know about a call.
#[derive(Debug, Clone)]
pub(crate) struct CallSpec {
    /// RPC name, for spans and logs.
    pub op: &'static str,
    /// Read or write (decides indeterminacy).
    pub kind: OpKind,
    /// Where attempts may go.
    pub route: Route,
    /// Budget of the whole call; None: the client's `retry.max_elapsed_ms`.
    pub timeout: Option<Duration>,
    /// The write's request id, reported in errors.
    pub request_id: Option<String>,
}

impl CallSpec {
    pub fn read(op: &'static str, route: Route, timeout: Option<Duration>) -> Self {
        Self { op, kind: OpKind::Read, route, timeout, request_id: None }
    }

    pub fn write(op: &'static str, request_id: &str, timeout: Option<Duration>) -> Self {
        Self {
            op,
            kind: OpKind::Write,
            route: Route::Leader,
            timeout,
            request_id: Some(request_id.to_string()),
        }
    }
}

/// The most recent failure of a call.
#[derive(Debug, Default)]
struct Failure {
    code: Option<Code>,
    message: String,
    endpoint: Option<String>,
    leader_hint: Option<String>,
    retry_after: Option<Duration>,
}

impl Client {
    /// Run `attempt(endpoint, deadline)` under the retry policy.
    pub(crate) async fn execute<T, F, Fut>(
        &self,
        spec: CallSpec,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Arc<EndpointState>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let inner = &self.inner;
        let retry_cfg = &inner.config.retry;
        let counters = &inner.counters;
        Counters::inc(&counters.calls);
        let started = inner.clock.now();
        let budget = spec.timeout.unwrap_or_else(|| inner.config.max_elapsed());
        let mut backoff = Backoff::new(
            Duration::from_millis(retry_cfg.initial_backoff_ms),
            Duration::from_millis(retry_cfg.max_backoff_ms),
            self.next_jitter_seed(),
        );
        let regional = inner.config.region.is_some();
        if spec.route == Route::Nearest && regional && inner.endpoints.probe_due(started) {
            let probe_budget = budget.min(crate::client::PROBE_TIMEOUT);
            let _ = tokio::time::timeout(probe_budget, self.probe()).await;
        }
        let mut attempts = 0u32;
        let mut may_have_applied = false;
        let mut last = Failure::default();
        let mut redirect: Option<Arc<EndpointState>> = None;
        // Endpoints that failed (endpoint-health failures) during this call.
        let mut failed: Vec<String> = Vec::new();
        loop {
            let now = inner.clock.now();
            let remaining = budget.saturating_sub(now.saturating_duration_since(started));
            if remaining.is_zero() {
                return Err(self.fail(&spec, attempts, may_have_applied, last, true));
            }
            attempts += 1;
            Counters::inc(&counters.attempts);
            if attempts > 1 {
                Counters::inc_exported(&counters.retries, "meridian_client_retries_total");
            }
            let target = redirect
                .take()
                .filter(|e| e.breaker.try_acquire(now))
                .or_else(|| inner.endpoints.pick(spec.route, now, &failed));
            let retry_after = match target {
                None => {
                    Counters::inc_exported(
                        &counters.breaker_rejections,
                        "meridian_client_breaker_rejections_total",
                    );
                    last = Failure {
                        code: Some(Code::Unavailable),
                        message: "every endpoint's circuit breaker is open".into(),
                        ..Failure::default()
                    };
                    None
                }
                Some(ep) => {
                    let deadline = inner.config.request_timeout().min(remaining);
                    let span = tracing::debug_span!(
                        "meridian.client.attempt",
                        op = spec.op,
                        attempt = attempts,
                        endpoint = %ep.addr,
                        outcome = tracing::field::Empty,
                    );
                    let result = attempt(ep.clone(), deadline).instrument(span.clone()).await;
                    let now = inner.clock.now();
                    let status = match result {
                        Ok(response) => {
                            span.record("outcome", "ok");
                            self.record_outcome(&ep, true);
                            // A follower forwarded this call: go to the leader directly
                            // from now on, if it is an endpoint we already know (one we
                            // cannot reach would only trade a hop for a failed attempt).
                            if let Some(hint) = retry::answer_leader_hint(response.metadata()) {
                                inner.endpoints.follow_known_leader(&hint, &ep.addr);
                            }
                            return Ok(response.into_inner());
                        }
                        Err(status) => status,
                    };
                    let (code, message) = retry::describe(&status);
                    span.record("outcome", code_name(code));
                    let hint = retry::leader_hint(&status);
                    let sent = !retry::never_sent(&status);
                    let d = retry::classify(code, spec.kind, sent, hint.is_some());
                    self.record_outcome(&ep, !d.endpoint_failure);
                    may_have_applied |= d.may_have_applied;
                    last = Failure {
                        code: Some(code),
                        message,
                        endpoint: Some(ep.addr.clone()),
                        leader_hint: hint.clone(),
                        retry_after: retry::retry_after(&status),
                    };
                    if code == Code::ResourceExhausted {
                        Counters::inc_exported(
                            &counters.rate_limited,
                            "meridian_client_rate_limited_total",
                        );
                    }
                    if !d.retry || attempts >= retry_cfg.max_attempts {
                        return Err(self.fail(&spec, attempts, may_have_applied, last, false));
                    }
                    if d.endpoint_failure {
                        failed.push(ep.addr.clone());
                    }
                    // A hint naming an endpoint that already failed in this call is
                    // stale (followers keep naming a dead leader until the election):
                    // back off instead of bouncing between them without delay.
                    let fresh_hint = hint
                        .and_then(|h| normalize_endpoint(&h).ok())
                        .filter(|h| !failed.contains(h));
                    if let Some(target) =
                        fresh_hint.and_then(|h| inner.endpoints.redirect(&h, &ep.addr, now))
                    {
                        tracing::debug!(op = spec.op, to = %target.addr, "following leader hint");
                        Counters::inc(&counters.redirects);
                        redirect = Some(target);
                        continue;
                    }
                    inner.endpoints.rotate_from(&ep);
                    last.retry_after
                }
            };
            if attempts >= retry_cfg.max_attempts {
                return Err(self.fail(&spec, attempts, may_have_applied, last, false));
            }
            let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
            let elapsed = inner.clock.now().saturating_duration_since(started);
            if elapsed.saturating_add(delay) >= budget {
                return Err(self.fail(&spec, attempts, may_have_applied, last, true));
            }
            tracing::debug!(op = spec.op, attempt = attempts, ?delay, "backing off");
            inner.clock.sleep(delay).await;
        }
    }

    fn record_outcome(&self, ep: &EndpointState, healthy: bool) {
        if ep.breaker.record(self.inner.clock.now(), healthy) == Some(BreakerState::Open) {
            Counters::inc_exported(
                &self.inner.counters.breaker_opens,
                "meridian_client_breaker_opens_total",
            );
            tracing::warn!(endpoint = %ep.addr, "circuit breaker opened");
        }
        let state = match ep.breaker.state() {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        metrics::gauge!("meridian_client_breaker_state", "endpoint" => ep.addr.clone()).set(state);
    }

    fn fail(
        &self,
        spec: &CallSpec,
        attempts: u32,
        may_have_applied: bool,
        last: Failure,
        budget_exhausted: bool,
    ) -> ClientError {
        let counters = &self.inner.counters;
        Counters::inc(&counters.failed_calls);
        let indeterminate = spec.kind == OpKind::Write && may_have_applied;
        if indeterminate {
            Counters::inc(&counters.indeterminate_calls);
        }
        let (code, mut message) = match last.code {
            Some(code) => (code, last.message),
            None => (Code::DeadlineExceeded, "call deadline exceeded before any attempt".into()),
        };
        if budget_exhausted && last.code.is_some() {
            message.push_str(" (call deadline exhausted)");
        }
        RpcError {
            code,
            message,
            leader_hint: last.leader_hint,
            endpoint: last.endpoint,
            attempts,
            indeterminate,
            request_id: spec.request_id.clone(),
            retry_after: last.retry_after,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::client::config::ClientConfig;
    use crate::client::{ClientBuilder, ManualClock};

    type Script = Arc<Mutex<VecDeque<Result<u32, Status>>>>;

    struct Harness {
        client: Client,
        clock: Arc<ManualClock>,
        calls: Arc<Mutex<Vec<(String, Duration)>>>,
    }

    fn harness(mutate: impl FnOnce(&mut ClientConfig)) -> Harness {
        let mut config = ClientConfig::with_endpoints(["a:1", "b:1", "c:1"]);
        config.retry.jitter_seed = Some(7);
        mutate(&mut config);
        let clock = Arc::new(ManualClock::new());
        let client = ClientBuilder::new(config).clock(clock.clone()).build().expect("client");
        Harness { client, clock, calls: Arc::default() }
    }

    impl Harness {
        async fn run(
            &self,
            spec: CallSpec,
            script: Vec<Result<u32, Status>>,
        ) -> Result<u32, ClientError> {
            let script: Script = Arc::new(Mutex::new(script.into()));
            let calls = self.calls.clone();
            self.client
                .execute(spec, move |ep, deadline| {
                    calls.lock().expect("lock").push((ep.addr.clone(), deadline));
                    let next = script.lock().expect("lock").pop_front();
                    async move {
                        next.unwrap_or_else(|| Err(Status::internal("script ran out")))
                            .map(tonic::Response::new)
                    }
                })
                .await
        }

        fn endpoints_called(&self) -> Vec<String> {
            self.calls.lock().expect("lock").iter().map(|(a, _)| a.clone()).collect()
        }
    }

    fn write() -> CallSpec {
        CallSpec::write("put", "rid-1", None)
    }

    fn read() -> CallSpec {
        CallSpec::read("get", Route::Leader, None)
    }

    fn with_hint(leader: &str) -> Status {
        let mut s = Status::unavailable("not leader");
        s.metadata_mut().insert(retry::LEADER_HINT_METADATA, leader.parse().expect("ascii"));
        s
    }

    fn refused() -> Status {
        let mut s = Status::unavailable("tcp connect error");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        s.set_source(Arc::new(tonic::ConnectError(Box::new(io))));
        s
    }

    #[tokio::test]
    async fn leader_hint_is_followed_at_once_without_backoff() {
        let h = harness(|_| {});
        let out = h.run(write(), vec![Err(with_hint("c:1")), Ok(5)]).await;
        assert_eq!(out.expect("ok"), 5);
        assert_eq!(h.endpoints_called(), vec!["a:1", "c:1"]);
        assert!(h.clock.sleeps().is_empty(), "no backoff before a redirect");
        assert_eq!(h.client.leader().as_deref(), Some("c:1"));
        let m = h.client.metrics();
        assert_eq!((m.attempts, m.retries, m.redirects), (2, 1, 1));
        // The next call goes straight to the leader.
        h.run(read(), vec![Ok(1)]).await.expect("ok");
        assert_eq!(h.endpoints_called().last().map(String::as_str), Some("c:1"));
    }

    #[tokio::test]
    async fn stale_hint_to_an_endpoint_that_failed_is_not_followed_again() {
        let h = harness(|_| {});
        let script = vec![Err(with_hint("c:1")), Err(refused()), Err(with_hint("c:1")), Ok(1)];
        h.run(write(), script).await.expect("ok");
        assert_eq!(h.endpoints_called(), vec!["a:1", "c:1", "a:1", "b:1"]);
        assert_eq!(h.client.metrics().redirects, 1);
        assert_eq!(h.clock.sleeps().len(), 2, "backoff after the refusal and the stale hint");
    }

    #[tokio::test]
    async fn hint_to_a_new_address_adds_it_to_the_endpoint_set() {
        let h = harness(|_| {});
        h.run(read(), vec![Err(with_hint("d:9")), Ok(1)]).await.expect("ok");
        assert_eq!(h.endpoints_called(), vec!["a:1", "d:9"]);
        assert_eq!(h.client.endpoints().len(), 4);
    }

    #[tokio::test]
    async fn unavailable_without_hint_backs_off_and_rotates() {
        let h = harness(|_| {});
        let script = vec![Err(Status::unavailable("x")), Err(Status::unavailable("y")), Ok(3)];
        assert_eq!(h.run(read(), script).await.expect("ok"), 3);
        assert_eq!(h.endpoints_called(), vec!["a:1", "b:1", "c:1"]);
        let sleeps = h.clock.sleeps();
        assert_eq!(sleeps.len(), 2);
        assert!(sleeps[0] <= Duration::from_millis(50) && sleeps[1] <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn non_retryable_code_fails_after_one_attempt() {
        let h = harness(|_| {});
        let err =
            h.run(write(), vec![Err(Status::invalid_argument("key too long (max 4096)"))]).await;
        let err = err.expect_err("fails");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(!err.is_indeterminate());
        assert_eq!(h.endpoints_called().len(), 1);
    }

    #[tokio::test]
    async fn write_timeout_followed_by_refusal_is_indeterminate() {
        let h = harness(|c| c.retry.max_attempts = 2);
        let script = vec![Err(Status::deadline_exceeded("slow")), Err(refused())];
        let err = h.run(write(), script).await.expect_err("fails");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.is_indeterminate(), "the first attempt may have applied: {err}");
        assert_eq!(err.request_id(), Some("rid-1"));
        assert_eq!(h.client.metrics().indeterminate_calls, 1);
    }

    #[tokio::test]
    async fn write_that_never_connected_is_determinate() {
        let h = harness(|c| c.retry.max_attempts = 3);
        let err = h.run(write(), vec![Err(refused()), Err(refused()), Err(refused())]).await;
        let err = err.expect_err("fails");
        assert!(!err.is_indeterminate(), "{err}");
        assert_eq!(err.rpc().map(|r| r.attempts), Some(3));
    }

    #[tokio::test]
    async fn reads_are_never_indeterminate() {
        let h = harness(|c| c.retry.max_attempts = 1);
        let err = h.run(read(), vec![Err(Status::deadline_exceeded("slow"))]).await;
        assert!(!err.expect_err("fails").is_indeterminate());
    }

    #[tokio::test]
    async fn max_attempts_bounds_the_call() {
        let h = harness(|c| c.retry.max_attempts = 4);
        let script = (0..10).map(|_| Err(Status::unavailable("down"))).collect();
        let err = h.run(read(), script).await.expect_err("fails");
        assert_eq!(h.endpoints_called().len(), 4);
        assert_eq!(err.rpc().map(|r| r.attempts), Some(4));
        assert_eq!(h.clock.sleeps().len(), 3, "no sleep after the last attempt");
    }

    #[tokio::test]
    async fn budget_bounds_backoff_and_attempt_deadlines() {
        let h = harness(|c| {
            c.retry.max_attempts = 100;
            c.retry.initial_backoff_ms = 400;
            c.retry.max_backoff_ms = 400;
        });
        let budget = Duration::from_secs(1);
        let spec = CallSpec::read("get", Route::Leader, Some(budget));
        let script = (0..100).map(|_| Err(Status::unavailable("down"))).collect();
        let err = h.run(spec, script).await.expect_err("fails");
        let slept: Duration = h.clock.sleeps().iter().sum();
        assert!(slept < budget, "slept {slept:?}");
        assert!(err.to_string().contains("deadline exhausted"), "{err}");
        for (_, deadline) in h.calls.lock().expect("lock").iter() {
            assert!(*deadline <= budget);
        }
    }

    #[tokio::test]
    async fn retry_after_hint_sets_a_minimum_backoff() {
        let h = harness(|_| {});
        let mut limited = Status::resource_exhausted("rate limited");
        limited.metadata_mut().insert(retry::RETRY_AFTER_METADATA, "300".parse().expect("ascii"));
        h.run(write(), vec![Err(limited), Ok(1)]).await.expect("ok");
        assert!(h.clock.sleeps()[0] >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn breaker_opens_then_rejects_without_sending() {
        let h = harness(|c| {
            c.endpoints = vec!["a:1".into()];
            c.breaker.min_requests = 2;
            c.retry.max_attempts = 4;
        });
        let script = (0..4).map(|_| Err(Status::unavailable("down"))).collect();
        let err = h.run(read(), script).await.expect_err("fails");
        assert_eq!(h.endpoints_called().len(), 2, "attempts 3 and 4 were refused locally");
        assert!(err.to_string().contains("circuit breaker"), "{err}");
        assert_eq!(h.client.breaker_state("a:1"), Some(BreakerState::Open));
        let m = h.client.metrics();
        assert_eq!((m.breaker_opens, m.breaker_rejections), (1, 2));
    }

    #[tokio::test]
    async fn zero_budget_fails_with_deadline_exceeded_before_any_attempt() {
        let h = harness(|_| {});
        let spec = CallSpec::read("get", Route::Leader, Some(Duration::ZERO));
        let err = h.run(spec, vec![Ok(1)]).await.expect_err("fails");
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(h.endpoints_called().is_empty());
    }
}

//! Retry policy: which failures are retried, which make a write's outcome unknown,
//! and how long to wait between attempts.
//!
//! # Classification
//!
//! Every write the client sends carries a request id, reused by all attempts of one
//! logical write; the server's exactly-once table replays the original response to a
//! repeated id. That is what makes retrying writes safe. [`classify`] encodes the
//! table below; "sent" means the request may have reached a server (a refused TCP
//! connection or an open circuit breaker means it did not).
//!
//! | code                | retry read | retry write | write may have applied (if sent) | endpoint failure |
//! |---------------------|------------|-------------|----------------------------------|------------------|
//! | UNAVAILABLE         | yes        | yes         | yes (no quorum / lost forward)   | yes, unless it carries a leader hint |
//! | DEADLINE_EXCEEDED   | yes        | yes         | yes                              | yes              |
//! | CANCELLED           | yes        | yes         | yes (tonic's client-side timeout)| yes              |
//! | UNKNOWN             | yes        | yes         | yes (connection reset mid-call)  | yes              |
//! | ABORTED             | yes        | yes         | yes                              | no               |
//! | RESOURCE_EXHAUSTED  | yes, after `retry-after-ms` | yes | no (rejected before work) | no            |
//! | INTERNAL, DATA_LOSS | no         | no          | yes                              | yes              |
//! | INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED | no | no | no | no |
//!
//! Indeterminacy is sticky: a logical write whose final error is not definitive is
//! reported `indeterminate` if ANY of its attempts may have applied it, since an
//! earlier attempt can commit after a later one was refused. A success is always
//! definitive (a replayed duplicate is the original outcome). A version mismatch is
//! not an error at all: it is a response with `succeeded = false`.
//!
//! # Backoff
//!
//! Exponential with full jitter: before retry `n` (0-based) the cap is
//! `min(max_backoff, initial_backoff * 2^n)` and the delay is uniform in `[0, cap]`.
//! The RNG is seeded, so a failing run can be replayed. A leader redirect (UNAVAILABLE
//! with `x-meridian-leader` naming another endpoint) retries at once, without backoff;
//! it still counts as an attempt.

use std::error::Error as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::{Code, Status};

/// Metadata key of the leader hint on UNAVAILABLE (value: leader API `host:port`).
pub const LEADER_HINT_METADATA: &str = "x-meridian-leader";
/// Metadata key of the server's wait hint on RESOURCE_EXHAUSTED, ms.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";
/// Largest `retry-after-ms` hint honoured, ms (a larger one is clamped).
pub const MAX_RETRY_AFTER_MS: u64 = 60_000;
/// Longest leader hint accepted, bytes (a longer one is ignored).
pub const MAX_LEADER_HINT_BYTES: usize = 256;

/// What kind of call is being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A read: no side effects, always safe to retry.
    Read,
    /// A write carrying a request id (reused across attempts).
    Write,
}

/// How the retry loop treats one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    /// Retry (on this or another endpoint) if budget remains.
    pub retry: bool,
    /// For a write: the attempt may have been applied.
    pub may_have_applied: bool,
    /// Counts as a failure for the endpoint's circuit breaker.
    pub endpoint_failure: bool,
}

/// True for codes that describe a transient condition (the first five rows of the
/// table in the module docs).
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// Classify one failed attempt (see the table in the module docs). `sent` is false
/// when the request provably never reached a server; `leader_hint` is true when the
/// status named a leader (the contacted node is then healthy, just not the leader).
pub fn classify(code: Code, kind: OpKind, sent: bool, leader_hint: bool) -> Disposition {
    let retry = is_transient(code);
    let may_apply_if_sent = matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
            | Code::DataLoss
    );
    let endpoint_failure = match code {
        Code::Unavailable => !leader_hint,
        Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
        Code::Internal | Code::DataLoss => true,
        _ => false,
    };
    Disposition {
        retry,
        may_have_applied: kind == OpKind::Write && sent && may_apply_if_sent,
        endpoint_failure,
    }
}

/// True when the status proves the request never left the client: the connection
/// could not be established (tonic's `ConnectError` in the source chain).
pub fn never_sent(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The status's code and message as the caller should see them: tonic reports its
/// own client-side deadline as CANCELLED "Timeout expired", which is really
/// DEADLINE_EXCEEDED; transport causes are appended to the message.
///
/// The timeout is recognised by `tonic::TimeoutExpired` in the source chain, or by its
/// message alone: a tonic server enforces the `grpc-timeout` the client sends and, when
/// that fires first, answers CANCELLED "Timeout expired" over the wire, with no source
/// to inspect (seen end to end: a write to a partitioned leader). Both are deadlines.
pub fn describe(status: &Status) -> (Code, String) {
    let mut message = status.message().to_string();
    let mut timed_out = status.message() == tonic::TimeoutExpired(()).to_string();
    let mut source = status.source();
    while let Some(err) = source {
        timed_out |= err.is::<tonic::TimeoutExpired>();
        let text = err.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message = if message.is_empty() { text } else { format!("{message}: {text}") };
        }
        source = err.source();
    }
    let code = if status.code() == Code::Cancelled && timed_out {
        Code::DeadlineExceeded
    } else {
        status.code()
    };
    if let Some(hint) = tls_mismatch_hint(&message) {
        message = format!("{message} ({hint})");
    }
    (code, message)
}

/// Transport failures that mean the client and the server do not speak the same
/// protocol, by the text of their cause (h2 and rustls reach us through tonic as
/// boxed errors), and what the user should check.
const PROTOCOL_MISMATCHES: [(&str, &str); 2] = [
    // A TLS alert (or an HTTP/1 answer) read as an HTTP/2 frame header: its length
    // field is far above the largest frame.
    (
        "frame with invalid size",
        "the server did not answer in HTTP/2: if it serves TLS, give the client its CA \
         (--tls-dir, --ca, or ca_file under [tls])",
    ),
    // Plaintext HTTP/2 read as a TLS record.
    (
        "InvalidContentType",
        "the server did not answer with TLS: if it serves plaintext, connect without TLS",
    ),
];

/// What to tell the user when `message` shows a protocol mismatch (see
/// [`PROTOCOL_MISMATCHES`]).
fn tls_mismatch_hint(message: &str) -> Option<&'static str> {
    PROTOCOL_MISMATCHES.iter().find(|(cause, _)| message.contains(cause)).map(|(_, hint)| *hint)
}

/// The leader address in an UNAVAILABLE status's metadata, if well formed.
pub fn leader_hint(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable {
        return None;
    }
    answer_leader_hint(status.metadata())
}

/// The `x-meridian-leader` address in `metadata`, if present and sane: on an
/// UNAVAILABLE status, or on any answer a follower forwarded to the leader.
pub fn answer_leader_hint(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let value = metadata.get(LEADER_HINT_METADATA)?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= MAX_LEADER_HINT_BYTES).then(|| value.to_string())
}

/// The server's `retry-after-ms` hint, clamped to [`MAX_RETRY_AFTER_MS`].
pub fn retry_after(status: &Status) -> Option<Duration> {
    let value = status.metadata().get(RETRY_AFTER_METADATA)?.to_str().ok()?;
    let ms: u64 = value.trim().parse().ok()?;
    Some(Duration::from_millis(ms.min(MAX_RETRY_AFTER_MS)))
}

/// Exponential backoff with full jitter and a seeded RNG.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    retries: u32,
    rng: StdRng,
}

impl Backoff {
    /// A backoff whose first cap is `initial`, growing to `max`, jittered by `seed`.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self { initial, max: max.max(initial), retries: 0, rng: StdRng::seed_from_u64(seed) }
    }

    /// The cap before retry `n` (0-based): `min(max, initial * 2^n)`.
    pub fn cap(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next retry: uniform in `[0, cap(n)]`.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap(self.retries);
        self.retries = self.retries.saturating_add(1);
        let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.gen_range(0..=cap_ns))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_cap_doubles_then_saturates_at_max() {
        let b = Backoff::new(50 * MS, 2_000 * MS, 1);
        let caps: Vec<u128> = (0..8).map(|n| b.cap(n).as_millis()).collect();
        assert_eq!(caps, vec![50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.cap(u32::MAX), 2_000 * MS, "no overflow on huge retry counts");
    }

    #[test]
    fn backoff_delays_stay_within_full_jitter_bounds() {
        for seed in 0..50 {
            let mut b = Backoff::new(10 * MS, 300 * MS, seed);
            for n in 0..40 {
                let cap = b.cap(n);
                let d = b.next_delay();
                assert!(d <= cap, "seed {seed} retry {n}: {d:?} > cap {cap:?}");
                assert!(d <= 300 * MS, "seed {seed} retry {n}: {d:?} exceeds max");
            }
        }
    }

    #[test]
    fn backoff_jitter_spreads_over_the_whole_range() {
        let mut b = Backoff::new(1_000 * MS, 1_000 * MS, 42);
        let delays: Vec<Duration> = (0..1_000).map(|_| b.next_delay()).collect();
        assert!(delays.iter().any(|d| *d < 100 * MS), "some near zero");
        assert!(delays.iter().any(|d| *d > 900 * MS), "some near the cap");
    }

    #[test]
    fn backoff_is_deterministic_for_a_seed() {
        let run = |seed| {
            let mut b = Backoff::new(5 * MS, 500 * MS, seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn classification_table() {
        use Code::*;
        use OpKind::*;
        // (code, kind, sent, hint) -> (retry, may_have_applied, endpoint_failure)
        let table = [
            (Unavailable, Write, true, false, (true, true, true)),
            (Unavailable, Write, false, false, (true, false, true)),
            (Unavailable, Write, true, true, (true, true, false)),
            (Unavailable, Read, true, false, (true, false, true)),
            (DeadlineExceeded, Write, true, false, (true, true, true)),
            (DeadlineExceeded, Read, true, false, (true, false, true)),
            (Cancelled, Write, true, false, (true, true, true)),
            (Unknown, Write, true, false, (true, true, true)),
            (Aborted, Write, true, false, (true, true, false)),
            (ResourceExhausted, Write, true, false, (true, false, false)),
            (ResourceExhausted, Read, true, false, (true, false, false)),
            (Internal, Write, true, false, (false, true, true)),
            (Internal, Read, true, false, (false, false, true)),
            (DataLoss, Write, true, false, (false, true, true)),
            (InvalidArgument, Write, true, false, (false, false, false)),
            (OutOfRange, Read, true, false, (false, false, false)),
            (FailedPrecondition, Write, true, false, (false, false, false)),
            (NotFound, Read, true, false, (false, false, false)),
            (AlreadyExists, Write, true, false, (false, false, false)),
            (Unauthenticated, Write, true, false, (false, false, false)),
            (PermissionDenied, Write, true, false, (false, false, false)),
            (Unimplemented, Read, true, false, (false, false, false)),
        ];
        for (code, kind, sent, hint, (retry, applied, failure)) in table {
            let d = classify(code, kind, sent, hint);
            let expected =
                Disposition { retry, may_have_applied: applied, endpoint_failure: failure };
            assert_eq!(d, expected, "{code:?} {kind:?} sent={sent} hint={hint}");
            assert_eq!(is_transient(code), retry, "{code:?}");
        }
    }

    #[test]
    fn connect_error_in_source_chain_means_never_sent() {
        let mut status = Status::unavailable("tcp connect error");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        status.set_source(Arc::new(tonic::ConnectError(Box::new(io))));
        assert!(never_sent(&status));
        assert!(!never_sent(&Status::unavailable("no quorum")));
    }

    #[test]
    fn tonic_client_timeout_is_reported_as_deadline_exceeded() {
        let mut status = Status::cancelled("Timeout expired");
        status.set_source(Arc::new(tonic::TimeoutExpired(())));
        assert_eq!(describe(&status).0, Code::DeadlineExceeded);
        assert_eq!(describe(&Status::cancelled("by peer")).0, Code::Cancelled);
        // A server's own deadline enforcement, received over the wire (no source).
        let over_the_wire = Status::cancelled("Timeout expired");
        assert_eq!(describe(&over_the_wire).0, Code::DeadlineExceeded);
    }

    #[test]
    fn a_protocol_mismatch_names_tls() {
        // The causes as tonic reports them (plaintext client and TLS server, and back).
        let mut status = Status::internal("h2 protocol error: http2 error");
        status.set_source(Arc::new(std::io::Error::other(
            "connection error detected: frame with invalid size",
        )));
        let (code, message) = describe(&status);
        assert_eq!(code, Code::Internal);
        assert!(
            message.ends_with("give the client its CA (--tls-dir, --ca, or ca_file under [tls]))"),
            "{message}"
        );
        let status = Status::unavailable("received corrupt message of type InvalidContentType");
        assert!(describe(&status).1.contains("if it serves plaintext, connect without TLS"));
        assert_eq!(describe(&Status::internal("boom")).1, "boom");
    }

    #[test]
    fn leader_hint_and_retry_after_are_read_from_metadata() {
        let mut status = Status::unavailable("not leader");
        status
            .metadata_mut()
            .insert(LEADER_HINT_METADATA, "127.0.0.1:7002".parse().expect("ascii"));
        assert_eq!(leader_hint(&status).as_deref(), Some("127.0.0.1:7002"));
        let mut limited = Status::resource_exhausted("slow down");
        limited.metadata_mut().insert(RETRY_AFTER_METADATA, "250".parse().expect("ascii"));
        assert_eq!(retry_after(&limited), Some(250 * MS));
        assert_eq!(leader_hint(&limited), None, "hints only count on UNAVAILABLE");
        limited.metadata_mut().insert(RETRY_AFTER_METADATA, "99999999".parse().expect("ascii"));
        assert_eq!(retry_after(&limited), Some(Duration::from_millis(MAX_RETRY_AFTER_MS)));
    }
}

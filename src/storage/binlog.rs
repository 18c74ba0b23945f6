//! The binlog: one event per applied change, kept in the state-machine tree next to
//! the state it describes.
//!
//! Layout in `sm-<gen>` (written in the same atomic sled batch as the change, so a
//! crash never separates state and binlog):
//! - `j<first revision BE u64>` → a chunk: the events of consecutive revisions from
//!   that one on, each framed as `<length u32 LE><BinlogEvent, postcard>`, in position
//!   order. The events of one revision always share a chunk, cut by the rule of
//!   [`super::chunk`] (on replicated content, so every replica cuts the same chunks). sled's cost is per key written, so a write appends
//!   to a chunk instead of inserting a key per event, and trimming rewrites the oldest
//!   chunk without its trimmed prefix instead of removing a key per event. Trees
//!   written before chunks held one `b<revision BE u64><index BE u32>` key per event;
//!   they are converted on open and after an install.
//! - `mbinlog_chain` → the last event's chain hash (16 bytes)
//! - `mbinlog_floor` → the oldest retained revision: every event at a revision at or
//!   after it is retained (0 before anything was trimmed)
//! - `mbinlog_count` → retained events
//!
//! chain_hash = xxh3-128(previous chain_hash ‖ canonical encoding of the event without
//! its chain hash), big endian. The canonical encoding is postcard of
//! [`CanonicalEvent`]: every field in a fixed order, integers varint-encoded, so equal
//! events hash equally on every replica and build.
//!
//! Retention ([`RetentionLimits`]) is decided during apply from replicated inputs only
//! (event count and the applied HLC's wall time), a whole revision at a time and at
//! most [`TRIM_EVENTS_PER_APPLY`] events per apply, so every replica retains exactly the
//! same range and the snapshot (a dump of the whole tree) carries it along.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::record::{Record, Revision};

/// Key prefix of the legacy one-key-per-event layout (converted on open).
pub const EVENT_PREFIX: u8 = b'b';
/// Key prefix of binlog chunks in the state-machine tree.
pub const CHUNK_PREFIX: u8 = b'j';
/// Legacy meta key of the last chain hash (now a field of the state machine's state
/// key; read when migrating an older tree).
pub const CHAIN_KEY: &[u8] = b"mbinlog_chain";
/// Meta key of the oldest retained revision.
pub const FLOOR_KEY: &[u8] = b"mbinlog_floor";
/// Legacy meta key of the retained event count (see [`CHAIN_KEY`]).
pub const COUNT_KEY: &[u8] = b"mbinlog_count";
/// Most events trimmed by one apply (bounds apply latency); a revision that is being
/// trimmed is always finished, so the real bound is this plus one revision's events.
pub const TRIM_EVENTS_PER_APPLY: usize = 64;
/// Default retained event count.
pub const DEFAULT_RETENTION_EVENTS: u64 = 1_000_000;
/// Default retention age, seconds (24 h).
pub const DEFAULT_RETENTION_AGE_SECS: u64 = 24 * 3600;

/// A chain hash: xxh3-128, big endian.
pub type ChainHash = [u8; 16];

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventOp {
    /// A key was created or replaced.
    Put,
    /// A key was removed.
    Delete,
    /// A saga was opened.
    SagaOpen,
    /// A saga committed.
    SagaCommit,
    /// A saga was aborted (after its compensations, same revision).
    SagaAbort,
}

/// One applied change, as stored and streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogEvent {
    /// Log index of the command.
    pub revision: Revision,
    /// Position within the revision, from 0.
    pub index: u32,
    /// The HLC the command was applied with.
    pub hlc: Timestamp,
    /// The key changed (empty for saga lifecycle events).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// What happened.
    pub op: EventOp,
    /// The record before, as this replica held it.
    pub before: Option<Record>,
    /// The record after (PUT only).
    pub after: Option<Record>,
    /// Request id of the change (compensations: `<abort request id>/<step n>`).
    pub request_id: String,
    /// Saga of the change (empty if none).
    pub saga_id: String,
    /// SAGA_OPEN only: the saga's deadline, ms since the Unix epoch.
    pub saga_deadline_unix_ms: u64,
    /// Trace id of the request.
    pub trace_id: String,
    /// True for a write restoring a saga step's before-image.
    pub compensation: bool,
    /// Chain hash up to and including this event.
    pub chain_hash: ChainHash,
}

impl BinlogEvent {
    /// Version of the key before the change (0 when absent).
    pub fn before_version(&self) -> u64 {
        self.before.as_ref().map_or(0, |r| r.version)
    }

    /// The event's position: (revision, index).
    pub fn position(&self) -> (Revision, u32) {
        (self.revision, self.index)
    }
}

/// The hashed form of an event: every field but the chain hash, in a fixed order.
#[derive(Serialize)]
pub struct CanonicalEvent<'a> {
    revision: Revision,
    index: u32,
    hlc: &'a Timestamp,
    key: &'a [u8],
    op: EventOp,
    before_version: u64,
    before: &'a Option<Record>,
    after: &'a Option<Record>,
    request_id: &'a str,
    saga_id: &'a str,
    saga_deadline_unix_ms: u64,
    trace_id: &'a str,
    compensation: bool,
}

/// The chain hash of `event` after `prev`.
pub fn chain_hash(prev: &ChainHash, event: &BinlogEvent) -> ChainHash {
    let canonical = CanonicalEvent {
        revision: event.revision,
        index: event.index,
        hlc: &event.hlc,
        key: &event.key,
        op: event.op,
        before_version: event.before_version(),
        before: &event.before,
        after: &event.after,
        request_id: &event.request_id,
        saga_id: &event.saga_id,
        saga_deadline_unix_ms: event.saga_deadline_unix_ms,
        trace_id: &event.trace_id,
        compensation: event.compensation,
    };
    // postcard into a Vec cannot fail for these types (no maps, no unsized sequences).
    let body = postcard::to_stdvec(&canonical).unwrap_or_default();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(prev);
    h.update(&body);
    h.digest128().to_be_bytes()
}

/// A change as apply describes it, before it gets a position and a chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    /// What happened.
    pub op: EventOp,
    /// The key (empty for saga events).
    pub key: Vec<u8>,
    /// Record before (as this replica held it).
    pub before: Option<Record>,
    /// Record after (PUT only).
    pub after: Option<Record>,
    /// Request id override (compensations); None: the command's request id.
    pub request_id: Option<String>,
    /// Saga id.
    pub saga_id: String,
    /// SAGA_OPEN: deadline.
    pub saga_deadline_unix_ms: u64,
    /// Compensation write.
    pub compensation: bool,
}

/// Give the drafts of one revision their positions and chain hashes, continuing the
/// chain from `prev`. Returns the events and the new chain head.
pub fn seal(
    revision: Revision,
    hlc: Timestamp,
    request_id: &str,
    trace_id: &str,
    drafts: Vec<EventDraft>,
    prev: ChainHash,
) -> (Vec<BinlogEvent>, ChainHash) {
    let mut head = prev;
    let mut out = Vec::with_capacity(drafts.len());
    for (i, d) in drafts.into_iter().enumerate() {
        let mut e = BinlogEvent {
            revision,
            index: u32::try_from(i).unwrap_or(u32::MAX),
            hlc,
            key: d.key,
            op: d.op,
            before: d.before,
            after: d.after,
            request_id: d.request_id.unwrap_or_else(|| request_id.to_string()),
            saga_id: d.saga_id,
            saga_deadline_unix_ms: d.saga_deadline_unix_ms,
            trace_id: trace_id.to_string(),
            compensation: d.compensation,
            chain_hash: [0; 16],
        };
        head = chain_hash(&head, &e);
        e.chain_hash = head;
        out.push(e);
    }
    (out, head)
}

/// The storage key of the event at (revision, index).
pub fn event_key(revision: Revision, index: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = EVENT_PREFIX;
    k[1..9].copy_from_slice(&revision.to_be_bytes());
    k[9..13].copy_from_slice(&index.to_be_bytes());
    k
}

/// The (revision, index) of an event key, or None when malformed.
pub fn parse_event_key(k: &[u8]) -> Option<(Revision, u32)> {
    if k.len() != 13 || k[0] != EVENT_PREFIX {
        return None;
    }
    let rev = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let idx = u32::from_be_bytes(k[9..13].try_into().ok()?);
    Some((rev, idx))
}

/// The key of the chunk whose first revision is `first`.
pub fn chunk_key(first: Revision) -> [u8; 9] {
    super::chunk::key(CHUNK_PREFIX, first)
}

/// The first revision of the chunk under key `k`.
pub fn parse_chunk_key(k: &[u8]) -> Option<Revision> {
    super::chunk::first_revision(CHUNK_PREFIX, k)
}

/// Append `event`, framed, to `out`.
pub fn frame_event(event: &BinlogEvent, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let body = postcard::to_stdvec(event)?;
    let len = u32::try_from(body.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// One framed event of a chunk, not decoded yet.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The event, postcard.
    pub body: &'a [u8],
    /// Offset of the next frame in the chunk.
    pub end: usize,
}

/// The fields every event starts with (postcard encodes a struct as its fields in
/// order), decodable without the rest.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct FrameHead {
    /// [`BinlogEvent::revision`].
    pub revision: Revision,
    /// [`BinlogEvent::index`].
    pub index: u32,
    /// [`BinlogEvent::hlc`].
    pub hlc: Timestamp,
}

impl Frame<'_> {
    /// The event's position and HLC.
    pub fn head(&self) -> Result<FrameHead, postcard::Error> {
        postcard::take_from_bytes(self.body).map(|(h, _)| h)
    }

    /// The whole event.
    pub fn event(&self) -> Result<BinlogEvent, postcard::Error> {
        postcard::from_bytes(self.body)
    }
}

/// The frames of `chunk`, in order; a truncated frame is an error.
pub fn frames(chunk: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, postcard::Error>> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= chunk.len() {
            return None;
        }
        let frame = chunk
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| at + 4 + u32::from_le_bytes(b) as usize)
            .filter(|end| *end <= chunk.len())
            .map(|end| Frame { body: &chunk[at + 4..end], end });
        match frame {
            Some(f) => {
                at = f.end;
                Some(Ok(f))
            }
            None => {
                at = chunk.len();
                Some(Err(postcard::Error::DeserializeUnexpectedEnd))
            }
        }
    })
}

/// How long and how many events the binlog keeps (replicated behaviour: every replica
/// must use the same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionLimits {
    /// Keep at most this many events (whole revisions are trimmed).
    pub max_events: u64,
    /// Trim events whose HLC wall time is older than this, ns, relative to the applied
    /// HLC's wall time.
    pub max_age_ns: u64,
}

impl Default for RetentionLimits {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_RETENTION_EVENTS,
            max_age_ns: DEFAULT_RETENTION_AGE_SECS.saturating_mul(1_000_000_000),
        }
    }
}

impl RetentionLimits {
    /// Whether the oldest retained event (applied at `event_wall_ns`) must go, when
    /// `count` events are retained and the current apply runs at `now_wall_ns`.
    pub fn must_trim(&self, count: u64, event_wall_ns: u64, now_wall_ns: u64) -> bool {
        count > self.max_events || event_wall_ns < now_wall_ns.saturating_sub(self.max_age_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{value_hash, Source, Status};

    fn rec(v: &str, version: u64) -> Record {
        Record {
            key: b"k".to_vec(),
            value: v.into(),
            version,
            revision: version,
            create_revision: 1,
            hlc: Timestamp::ZERO,
            hash: value_hash(v.as_bytes()),
            source: Source::default(),
            status: Status::Committed,
        }
    }

    fn draft(before: Option<Record>, after: Option<Record>) -> EventDraft {
        EventDraft {
            op: EventOp::Put,
            key: b"k".to_vec(),
            before,
            after,
            request_id: None,
            saga_id: String::new(),
            saga_deadline_unix_ms: 0,
            compensation: false,
        }
    }

    #[test]
    fn sealed_events_chain_and_number_from_zero() {
        let hlc = Timestamp { wall_ns: 5, logical: 0, node: 1 };
        let drafts = vec![draft(None, Some(rec("a", 1))), draft(Some(rec("a", 1)), None)];
        let (events, head) = seal(7, hlc, "rid", "tid", drafts, [0; 16]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].position(), (7, 1));
        assert_eq!(events[1].chain_hash, head);
        assert_eq!(events[1].chain_hash, chain_hash(&events[0].chain_hash, &events[1]));
        assert_eq!(events[0].request_id, "rid");
        assert_eq!(events[1].before_version(), 1);
    }

    #[test]
    fn a_different_before_image_changes_the_chain_from_there_on() {
        let hlc = Timestamp { wall_ns: 5, logical: 0, node: 1 };
        let good = vec![draft(Some(rec("a", 1)), Some(rec("b", 2)))];
        let bad = vec![draft(Some(rec("CORRUPT", 1)), Some(rec("b", 2)))];
        let (g, gh) = seal(2, hlc, "", "", good, [1; 16]);
        let (b, bh) = seal(2, hlc, "", "", bad, [1; 16]);
        assert_ne!(gh, bh);
        // The next event is identical but its chain hash still differs.
        let next = || vec![draft(Some(rec("b", 2)), Some(rec("c", 3)))];
        let (_, g2) = seal(3, hlc, "", "", next(), g[0].chain_hash);
        let (_, b2) = seal(3, hlc, "", "", next(), b[0].chain_hash);
        assert_ne!(g2, b2);
    }

    #[test]
    fn equal_events_hash_equally() {
        let hlc = Timestamp { wall_ns: 9, logical: 2, node: 3 };
        let a = seal(4, hlc, "r", "t", vec![draft(None, Some(rec("x", 1)))], [7; 16]);
        let b = seal(4, hlc, "r", "t", vec![draft(None, Some(rec("x", 1)))], [7; 16]);
        assert_eq!(a, b);
    }

    #[test]
    fn legacy_event_keys_sort_by_revision_then_index_and_parse_back() {
        assert!(event_key(1, 300) < event_key(2, 0));
        assert!(event_key(2, 0) < event_key(2, 1));
        assert_eq!(parse_event_key(&event_key(258, 7)), Some((258, 7)));
        assert_eq!(parse_event_key(b"bshort"), None);
    }

    #[test]
    fn framed_events_read_back_in_order_with_their_heads() {
        let hlc = Timestamp { wall_ns: 9, logical: 2, node: 3 };
        let drafts = vec![draft(None, Some(rec("a", 1))), draft(Some(rec("a", 1)), None)];
        let (events, _) = seal(70, hlc, "r", "t", drafts, [0; 16]);
        let mut chunk = Vec::new();
        for e in &events {
            frame_event(e, &mut chunk).expect("frame");
        }
        let read: Vec<BinlogEvent> =
            frames(&chunk).map(|f| f.expect("frame").event().expect("event")).collect();
        assert_eq!(read, events);
        let head = frames(&chunk).nth(1).expect("second").expect("frame").head().expect("head");
        assert_eq!((head.revision, head.index, head.hlc), (70, 1, hlc));
        let cut = frames(&chunk).next().expect("first").expect("frame").end;
        let rest: Vec<_> = frames(&chunk[cut..]).map(|f| f.expect("frame").body).collect();
        assert_eq!(rest.len(), 1, "a chunk cut at a frame end is a chunk");
        let truncated = &chunk[..chunk.len() - 1];
        assert!(frames(truncated).any(|f| f.is_err()), "a truncated frame is an error");
    }

    #[test]
    fn retention_trims_by_count_and_by_age() {
        let l = RetentionLimits { max_events: 10, max_age_ns: 1_000 };
        assert!(!l.must_trim(10, 5_000, 5_500));
        assert!(l.must_trim(11, 5_000, 5_500), "over the count");
        assert!(l.must_trim(3, 1_000, 5_500), "older than the age");
        assert!(!l.must_trim(3, 0, 500), "no underflow near the epoch");
    }
}

//! The replicated state machine on sled.
//!
//! Layout of the state-machine tree `sm-<gen>` (one tree so an entry applies as one
//! atomic sled batch — a crash leaves it applied whole or not at all):
//! - `k<key>` → [`Record`]
//! - `mlayout` → the layout version ([`LAYOUT_VERSION`]; absent: 1). A tree of a newer
//!   layout is refused on open and install; an older one is converted.
//! - `m<name>` → metadata: `mstate` ([`SmState`]: applied log id, last HLC, binlog chain
//!   head and count, exactly-once count; one key written once per batch), membership
//! - `q<first revision BE u64>` → a chunk of the exactly-once table: the
//!   [`DedupEntry`]s of requests applied from that revision on, each postcard-encoded
//!   as `(request id, entry)` and concatenated in apply order. A write appends to the
//!   newest chunk while it spans under 64 revisions and holds under 32 KiB, else starts
//!   a new one (a rule on replicated content: every replica cuts the same chunks).
//!   sled's cost is per key written: a write touches one key fewer, and evicting an
//!   id removes nothing until its whole chunk is dead. Ids are evicted in revision order, so `mdedup_floor` (the oldest
//!   revision that may still be live) says which entries of the chunks are live; a
//!   chunk is removed once the floor has passed it. Which ids are live is kept in
//!   memory: [`DedupIndex`]. Trees written before chunks held one `d<request_id>` key
//!   per entry, and before that an `e<wall_ns BE><request_id>` age index: both are
//!   converted (`d`) or removed (`e`) on open and after an install.
//! - `s<saga_id>` → [`Saga`] (the replicated saga table); `c<closed wall_ns BE><id>`
//!   indexes closed sagas, forgotten once older than the binlog retention age
//! - `j<first revision BE>` → chunks of binlog events and `mbinlog_*` metadata (see
//!   [`super::binlog`]); written in the same batch as the change they describe
//!
//! Invariants: the applied log id only grows; the stored HLC strictly increases in log
//! order; every record passes [`Record::check`] when written and when read; the
//! exactly-once table never exceeds its configured entry count and forgets ids older
//! than its window (both evaluated on replicated HLC time, so every replica keeps
//! exactly the same table).
//!
//! Entries are applied into a [`Pending`] buffer, published to the shared [`Overlay`]
//! at the end of every `apply()` call and written to sled as one atomic batch every
//! [`super::pending::FLUSH_ENTRIES`] entries, so a crash leaves a prefix of whole
//! entries applied (the rest is re-applied from the Raft log).
//!
//! Readers ([`SmReader`]) read the overlay, then sled, concurrently with apply; they
//! see each `apply()` call whole.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::apply::{apply_command, StateView};
use super::binlog::{self, BinlogEvent, ChainHash, RetentionLimits};
use super::chunk::{self, Tail};
use super::dedup_index::{DedupIndex, Remembered};
use super::pending::{Overlay, Pending, MAX_PENDING_BYTES, MAX_PENDING_ENTRIES};
use super::saved_response;
use super::snapshot::{write_snapshot, SnapshotReader};
use super::time_index::TimeIndex;
use super::types::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use super::{decode, encode, StorageError, Store, META_TREE};
use crate::hlc::{Hlc, Timestamp};
use crate::record::{ApplyResult, Command, Outcome, Record, Saga};

const REC: u8 = b'k';
const SAGA: u8 = b's';
const SAGA_CLOSED: u8 = b'c';
/// Max closed sagas forgotten per applied entry (bounds apply latency).
pub const SAGA_EVICT_PER_APPLY: usize = 16;
/// Legacy prefix of one exactly-once entry per key (converted to chunks on open).
const LEGACY_DEDUP: u8 = b'd';
/// Prefix of the exactly-once table's chunks.
const DEDUP_CHUNK: u8 = b'q';
/// The oldest revision whose exactly-once entry may still be live.
const DEDUP_FLOOR: &[u8] = b"mdedup_floor";
/// Meta key of the tree's layout version (absent: 1, the layout before chunks).
const LAYOUT_KEY: &[u8] = b"mlayout";
/// The layout this build writes: 2 = exactly-once entries and binlog events in chunks;
/// 3 = saved responses without the values a retry carries (see [`saved_response`];
/// version 2 entries keep theirs and replay as they are); 4 = exactly-once entries
/// with a hash of their request (2 and 3 convert by re-encoding their chunks, entries
/// without a hash).
pub const LAYOUT_VERSION: u32 = 4;
/// How far a conversion of the exactly-once chunks to layout 4 got: the first
/// revision of the next chunk to convert (absent: none converted yet).
const DEDUP_CONVERTED: &[u8] = b"mdedup_converted";
/// Bytes of exactly-once chunks converted per atomic batch (at least one chunk).
const CONVERT_BATCH_BYTES: usize = 4 << 20;
/// Prefix of the former on-disk expiry index of the exactly-once table (legacy).
const LEGACY_EXPIRY: u8 = b'e';
const MEMBERSHIP: &[u8] = b"mmembership";
/// Key of [`SmState`]: everything that changes with every entry, in one key written
/// once per committed batch.
const STATE: &[u8] = b"mstate";
// Legacy keys of the fields of `SmState`, merged into it on open and install.
const APPLIED: &[u8] = b"mapplied";
const LAST_HLC: &[u8] = b"mhlc";
const DEDUP_COUNT: &[u8] = b"mdedup_count";
/// Key in `raft_meta` of the active state-machine generation.
const GEN_KEY: &[u8] = b"sm_gen";
/// Key in `raft_meta` of the current snapshot (meta, file name).
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// Max exactly-once entries expired per applied entry (bounds apply latency).
pub const DEDUP_EVICT_PER_APPLY: usize = 32;
/// Records inserted per sled batch when installing a snapshot.
pub const INSTALL_BATCH_ITEMS: usize = 1_000;

/// Exactly-once table limits (replicated behaviour: every replica must use the same).
#[derive(Debug, Clone, Copy)]
pub struct DedupLimits {
    /// Forget a request id this long after it was applied, in ns of HLC time.
    pub window_ns: u64,
    /// Keep at most this many ids; the oldest are evicted first.
    pub max_entries: u64,
}

/// One remembered request and its original response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DedupEntry {
    /// HLC wall time of the original apply, ns.
    pub wall_ns: u64,
    /// The original response.
    pub result: ApplyResult,
    /// [`saved_response::request_hash`] of the request (None: remembered before
    /// layout 4; a retry is then checked by its values alone).
    pub request: Option<u64>,
}

/// An exactly-once entry as layouts 1 to 3 encoded it.
#[derive(Serialize, Deserialize)]
struct LegacyDedupEntry {
    wall_ns: u64,
    result: ApplyResult,
}

impl From<LegacyDedupEntry> for DedupEntry {
    fn from(e: LegacyDedupEntry) -> Self {
        DedupEntry { wall_ns: e.wall_ns, result: e.result, request: None }
    }
}

/// Counters of the exactly-once table, for metrics.
#[derive(Debug, Default)]
pub struct DedupStats {
    /// Retries answered from the table.
    pub hits: AtomicU64,
    /// Ids forgotten because they aged out of the window.
    pub expired: AtomicU64,
    /// Ids evicted because the table was full.
    pub evicted: AtomicU64,
}

fn rec_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(REC);
    k.extend_from_slice(key);
    k
}

fn saga_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(SAGA);
    k.extend_from_slice(id.as_bytes());
    k
}

fn saga_closed_key(wall_ns: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 9);
    k.push(SAGA_CLOSED);
    k.extend_from_slice(&wall_ns.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The key of the exactly-once chunk that starts at revision `first`.
fn dedup_chunk_key(first: u64) -> [u8; 9] {
    chunk::key(DEDUP_CHUNK, first)
}

/// The first revision of the exactly-once chunk under key `k`.
fn parse_dedup_chunk_key(k: &[u8]) -> Result<u64, StorageError> {
    chunk::first_revision(DEDUP_CHUNK, k)
        .ok_or_else(|| StorageError::Corrupt("malformed exactly-once chunk key".into()))
}

/// One entry of an exactly-once chunk, encoded.
fn encode_dedup_item(id: &str, entry: &DedupEntry) -> Result<Vec<u8>, StorageError> {
    encode(&(id, entry))
}

/// The entries of an exactly-once chunk, in the order they were appended.
fn dedup_items(
    chunk: &[u8],
) -> impl Iterator<Item = Result<(String, DedupEntry), StorageError>> + '_ {
    chunk_items(chunk)
}

/// The `(request id, E)` items of an exactly-once chunk, `E` being the entry format
/// the chunk was written in.
fn chunk_items<E: for<'a> Deserialize<'a>>(
    mut chunk: &[u8],
) -> impl Iterator<Item = Result<(String, E), StorageError>> + '_ {
    std::iter::from_fn(move || {
        if chunk.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<(String, E)>(chunk) {
            Ok((item, rest)) => {
                chunk = rest;
                Some(Ok(item))
            }
            Err(e) => {
                chunk = &[];
                Some(Err(StorageError::Corrupt(format!("exactly-once chunk: {e}"))))
            }
        }
    })
}

/// The entry of `id` applied at `revision`, from its chunk.
fn find_dedup_entry(
    chunk: &[u8],
    id: &str,
    revision: u64,
) -> Result<Option<DedupEntry>, StorageError> {
    for item in dedup_items(chunk) {
        let (item_id, entry) = item?;
        if entry.result.revision == revision && item_id == id {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Remove the legacy expiry index (see the module doc) from `tree`.
fn drop_legacy_expiry(tree: &sled::Tree) -> Result<(), StorageError> {
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in tree.scan_prefix([LEGACY_EXPIRY]).keys().take(INSTALL_BATCH_ITEMS) {
            batch.remove(k?);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        tree.apply_batch(batch)?;
    }
}

fn corrupt_binlog(e: postcard::Error) -> StorageError {
    StorageError::Corrupt(format!("binlog chunk: {e}"))
}

/// The newest binlog chunk of `tree`: its first revision and value.
fn last_binlog_chunk(tree: &sled::Tree) -> Result<Option<(u64, sled::IVec)>, StorageError> {
    match tree.scan_prefix([binlog::CHUNK_PREFIX]).next_back() {
        None => Ok(None),
        Some(kv) => {
            let (k, v) = kv?;
            let first = binlog::parse_chunk_key(&k)
                .ok_or_else(|| StorageError::Corrupt("malformed binlog chunk key".into()))?;
            Ok(Some((first, v)))
        }
    }
}

/// The newest binlog chunk of `tree`.
fn load_binlog_tail(tree: &sled::Tree) -> Result<Tail, StorageError> {
    Ok(Tail::new(last_binlog_chunk(tree)?.map(|(first, v)| (first, v.len()))))
}

/// Refuse a tree of a newer layout than this build's, convert an older one, and
/// record ours in it (a snapshot carries it to the nodes that install it).
fn upgrade_layout(tree: &sled::Tree) -> Result<(), StorageError> {
    let found: u32 = get_meta(tree, LAYOUT_KEY)?.unwrap_or(1);
    if found > LAYOUT_VERSION {
        return Err(StorageError::NewerLayout { found, known: LAYOUT_VERSION });
    }
    if found < LAYOUT_VERSION {
        // The version is recorded only once the conversions are done: a current tree
        // holds no legacy keys, so opening one scans nothing.
        if found == 1 {
            // Its exactly-once ids become chunks in this layout's format.
            migrate_legacy_dedup(tree)?;
        } else {
            convert_dedup_chunks(tree)?;
        }
        migrate_legacy_binlog(tree)?;
        let mut batch = sled::Batch::default();
        batch.insert(LAYOUT_KEY, encode(&LAYOUT_VERSION)?);
        batch.remove(DEDUP_CONVERTED);
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// Re-encode the exactly-once chunks of a layout 2 or 3 tree in this layout's entry
/// format (entries without a request hash), about [`CONVERT_BATCH_BYTES`] at a time.
/// Each batch also records where the next one starts ([`DEDUP_CONVERTED`]), so an
/// interrupted conversion resumes there and never decodes a converted chunk again.
fn convert_dedup_chunks(tree: &sled::Tree) -> Result<(), StorageError> {
    loop {
        let from: u64 = get_meta(tree, DEDUP_CONVERTED)?.unwrap_or(0);
        let mut batch = sled::Batch::default();
        let (mut bytes, mut next) = (0, None);
        for kv in tree.range(dedup_chunk_key(from)..=dedup_chunk_key(u64::MAX)) {
            let (k, chunk) = kv?;
            let first = parse_dedup_chunk_key(&k)?;
            if bytes >= CONVERT_BATCH_BYTES {
                next = Some(first);
                break;
            }
            let mut converted = Vec::with_capacity(chunk.len() + chunk::CHUNK_REVISIONS as usize);
            for item in chunk_items::<LegacyDedupEntry>(&chunk) {
                let (id, entry) = item?;
                converted.extend_from_slice(&encode_dedup_item(&id, &entry.into())?);
            }
            bytes += converted.len();
            batch.insert(k, converted);
        }
        match next {
            Some(first) => batch.insert(DEDUP_CONVERTED, encode(&first)?),
            // Past the last chunk: nothing below `u64::MAX` is left to convert.
            None => batch.insert(DEDUP_CONVERTED, encode(&u64::MAX)?),
        }
        let done = next.is_none();
        tree.apply_batch(batch)?;
        if done {
            return Ok(());
        }
    }
}

/// Convert the legacy one-key-per-event binlog of `tree` (see [`super::binlog`]) into
/// chunks, cut by the same rule as apply: whole revisions, about
/// [`INSTALL_BATCH_ITEMS`] events per atomic batch (its chunks and the removal of its
/// keys), so an interrupted conversion resumes where it stopped.
fn migrate_legacy_binlog(tree: &sled::Tree) -> Result<(), StorageError> {
    loop {
        // The chunk being filled: first revision and full value.
        let mut cur: Option<(u64, Vec<u8>)> =
            last_binlog_chunk(tree)?.map(|(first, v)| (first, v.to_vec()));
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut last_rev = None;
        for kv in tree.scan_prefix([binlog::EVENT_PREFIX]) {
            let (k, v) = kv?;
            let (rev, _) = binlog::parse_event_key(&k)
                .ok_or_else(|| StorageError::Corrupt("malformed binlog key".into()))?;
            if last_rev != Some(rev) {
                if n >= INSTALL_BATCH_ITEMS {
                    break;
                }
                let held = cur.as_ref().map(|(f, v)| (*f, v.len()));
                let first = Tail::new(held).place(rev, 0);
                if held.map(|h| h.0) != Some(first) {
                    if let Some((f, v)) = cur.take() {
                        batch.insert(&binlog::chunk_key(f)[..], v);
                    }
                    cur = Some((first, Vec::new()));
                }
                last_rev = Some(rev);
            }
            let e: BinlogEvent = decode(&v)?;
            if let Some((_, chunk)) = cur.as_mut() {
                binlog::frame_event(&e, chunk).map_err(corrupt_binlog)?;
            }
            batch.remove(k);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        if let Some((f, v)) = cur {
            batch.insert(&binlog::chunk_key(f)[..], v);
        }
        tree.apply_batch(batch)?;
    }
}

/// Convert the legacy one-key-per-id exactly-once table of `tree` (see the module
/// doc) into chunks of one entry each (later entries join the newest by the usual
/// rule): a batch of ids at a time, each batch atomic (its chunks and the removal of
/// its keys), so an interrupted conversion resumes without duplicates.
fn migrate_legacy_dedup(tree: &sled::Tree) -> Result<(), StorageError> {
    loop {
        let mut chunks: std::collections::BTreeMap<[u8; 9], Vec<u8>> = Default::default();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in tree.scan_prefix([LEGACY_DEDUP]).take(INSTALL_BATCH_ITEMS) {
            let (k, v) = kv?;
            let id = std::str::from_utf8(&k[1..])
                .map_err(|_| StorageError::Corrupt("request id is not UTF-8".into()))?;
            let entry: DedupEntry = decode::<LegacyDedupEntry>(&v)?.into();
            let key = dedup_chunk_key(entry.result.revision);
            let chunk = match chunks.entry(key) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(tree.get(key)?.map(|c| c.to_vec()).unwrap_or_default())
                }
            };
            chunk.extend_from_slice(&encode_dedup_item(id, &entry)?);
            batch.remove(k);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        for (k, v) in chunks {
            batch.insert(&k[..], v);
        }
        tree.apply_batch(batch)?;
    }
}

/// The exactly-once table of a tree, as the state machine keeps it in memory.
struct LoadedDedup {
    index: DedupIndex,
    /// Entries applied before this revision are evicted.
    floor: u64,
    /// The newest chunk.
    tail: Tail,
}

/// Build the exactly-once table's in-memory index from `tree`.
fn load_dedup_index(tree: &sled::Tree) -> Result<LoadedDedup, StorageError> {
    let floor: u64 = get_meta(tree, DEDUP_FLOOR)?.unwrap_or(0);
    let mut items = Vec::new();
    let mut tail = None;
    // Only chunks with a live entry are kept, so the scan is bounded by the table.
    for kv in tree.scan_prefix([DEDUP_CHUNK]) {
        let (k, chunk) = kv?;
        let first = parse_dedup_chunk_key(&k)?;
        tail = Some((first, chunk.len()));
        for item in dedup_items(&chunk) {
            let (id, entry) = item?;
            // Below the floor: evicted (its chunk is still kept for younger ids).
            if entry.result.revision >= floor {
                let at = Remembered {
                    revision: entry.result.revision,
                    wall_ns: entry.wall_ns,
                    chunk: first,
                };
                items.push(Ok((id, at)));
            }
        }
    }
    Ok(LoadedDedup { index: DedupIndex::load(items.into_iter())?, floor, tail: Tail::new(tail) })
}

/// What changes with every applied entry (one sled key instead of five: with one
/// entry per batch, as at low load, the five keys were half of every batch's writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SmState {
    /// The last applied log id.
    applied: Option<LogId>,
    /// The HLC of the last applied command.
    last_hlc: Timestamp,
    /// The chain hash of the last binlog event (zeros before the first).
    chain: ChainHash,
    /// Binlog events retained.
    binlog_count: u64,
    /// Ids in the exactly-once table.
    dedup_count: u64,
}

/// The state of `tree`, from its state key or, for a tree written before it existed,
/// from the legacy keys.
fn read_state(tree: &sled::Tree) -> Result<SmState, StorageError> {
    if let Some(s) = get_meta(tree, STATE)? {
        return Ok(s);
    }
    Ok(SmState {
        applied: get_meta::<Option<LogId>>(tree, APPLIED)?.flatten(),
        last_hlc: get_meta(tree, LAST_HLC)?.unwrap_or_default(),
        chain: get_meta(tree, binlog::CHAIN_KEY)?.unwrap_or([0; 16]),
        binlog_count: get_meta(tree, binlog::COUNT_KEY)?.unwrap_or(0),
        dedup_count: get_meta(tree, DEDUP_COUNT)?.unwrap_or(0),
    })
}

/// Replace the legacy keys of `tree` by its state key (atomically).
fn migrate_state(tree: &sled::Tree) -> Result<SmState, StorageError> {
    let state = read_state(tree)?;
    let legacy = [APPLIED, LAST_HLC, binlog::CHAIN_KEY, binlog::COUNT_KEY, DEDUP_COUNT];
    let mut found = false;
    for k in legacy {
        found |= tree.contains_key(k)?;
    }
    if found {
        let mut batch = sled::Batch::default();
        batch.insert(STATE, encode(&state)?);
        for k in legacy {
            batch.remove(k);
        }
        tree.apply_batch(batch)?;
    }
    Ok(state)
}

fn tree_name(gen: u64) -> String {
    format!("sm-{gen}")
}

/// The active tree and the applied writes not yet in it, shared between the state
/// machine and readers.
struct Shared {
    tree: RwLock<sled::Tree>,
    overlay: Overlay,
    /// Serialises changes of the current snapshot (a dump may end during an install).
    snapshot_lock: std::sync::Mutex<()>,
    /// The last applied revision, published after every applied batch (binlog readers
    /// wait on it instead of polling).
    applied: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn tree(&self) -> sled::Tree {
        // A poisoned lock still holds a valid tree handle.
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Run `f` on the current value of `key`.
    fn get_with<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        self.overlay.get_with(&self.tree(), key, f)
    }

    fn get_meta<T: for<'a> Deserialize<'a>>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.get_with(key, decode)
    }

    /// Live keys and values in `[lo, hi)`.
    fn range(&self, lo: &[u8], hi: &[u8]) -> super::pending::Merged<'static> {
        self.overlay.range(&self.tree(), lo, hi)
    }

    /// The current state, from its state key.
    fn state(&self) -> Result<SmState, StorageError> {
        // The tree was migrated on open or install: the state key is there.
        Ok(self.get_meta(STATE)?.unwrap_or_default())
    }

    /// Write the overlay to sled; returns the entries written.
    fn flush(&self) -> Result<usize, StorageError> {
        let started = std::time::Instant::now();
        let entries = self.overlay.flush(&self.tree())?;
        if entries > 0 {
            metrics::histogram!("meridian_sm_flush_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("meridian_sm_flushes_total").increment(1);
        }
        Ok(entries)
    }
}

fn get_meta<T: for<'a> Deserialize<'a>>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    tree.get(key)?.map(|b| decode(&b)).transpose()
}

fn decode_record(b: &[u8]) -> Result<Record, StorageError> {
    let r: Record = decode(b)?;
    r.check().map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(r)
}

/// A page of binlog events read by [`SmReader::read_events`].
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    /// Matching events in order.
    pub events: Vec<BinlogEvent>,
    /// The position to read from next.
    pub next: (u64, u32),
    /// True when the scan reached the end of the binlog.
    pub at_end: bool,
}

/// A binlog read failure the caller must handle.
#[derive(Debug, thiserror::Error)]
pub enum BinlogReadError {
    /// The position was trimmed by retention.
    #[error(
        "revision {requested} is no longer retained; the oldest retained revision is {oldest}"
    )]
    Compacted {
        /// The requested revision.
        requested: u64,
        /// The oldest retained revision.
        oldest: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Read-only view of the state machine for serving reads. Cheap to clone.
#[derive(Clone)]
pub struct SmReader {
    shared: Arc<Shared>,
}

/// What state a read reflects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedPoint {
    /// Applied log index (0 if none).
    pub revision: u64,
    /// HLC of the last applied command.
    pub hlc: Timestamp,
}

impl SmReader {
    /// The record of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.shared.get_with(&rec_key(key), decode_record)
    }

    /// Records with keys in `[start, end)` (end None = unbounded), at most `limit`.
    pub fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let lo = rec_key(start);
        let hi = match end {
            Some(e) => rec_key(e),
            None => vec![REC + 1],
        };
        let mut out = Vec::new();
        for kv in self.shared.range(&lo, &hi) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv?;
            let r: Record = decode(&v)?;
            r.check().map_err(|e| StorageError::Corrupt(e.to_string()))?;
            out.push(r);
        }
        Ok(out)
    }

    /// The saga `id`, if any.
    pub fn saga(&self, id: &str) -> Result<Option<Saga>, StorageError> {
        self.shared.get_meta(&saga_key(id))
    }

    /// A receiver of the last applied revision (changes after every applied batch).
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// The oldest retained binlog revision (at least 1).
    pub fn binlog_oldest(&self) -> Result<u64, StorageError> {
        Ok(self.shared.get_meta::<u64>(binlog::FLOOR_KEY)?.unwrap_or(0).max(1))
    }

    /// The chain hash of the last binlog event (zeros before the first).
    pub fn binlog_chain_head(&self) -> Result<ChainHash, StorageError> {
        Ok(self.shared.state()?.chain)
    }

    /// Read binlog events from position `from` on: at most `scan` events are looked at
    /// and at most `limit` matching `filter` returned. Fails with
    /// [`BinlogReadError::Compacted`] when events at or after `from` were trimmed.
    pub fn read_events(
        &self,
        from: (u64, u32),
        scan: usize,
        limit: usize,
        filter: impl Fn(&BinlogEvent) -> bool,
    ) -> Result<EventPage, BinlogReadError> {
        let mut page = EventPage { events: Vec::new(), next: from, at_end: true };
        // A chunk spans under CHUNK_REVISIONS revisions: the one holding `from` starts
        // after from - CHUNK_REVISIONS.
        let lo = binlog::chunk_key(from.0.saturating_sub(chunk::CHUNK_REVISIONS - 1));
        let hi = [binlog::CHUNK_PREFIX + 1];
        let mut scanned = 0usize;
        'chunks: for kv in self.shared.range(&lo, &hi) {
            let (_, chunk) = kv?;
            for frame in binlog::frames(&chunk) {
                let frame = frame.map_err(corrupt_binlog)?;
                let head = frame.head().map_err(corrupt_binlog)?;
                if (head.revision, head.index) < from {
                    continue;
                }
                if scanned >= scan || page.events.len() >= limit {
                    page.at_end = false;
                    break 'chunks;
                }
                scanned += 1;
                let e = frame.event().map_err(corrupt_binlog)?;
                page.next = (head.revision, head.index.saturating_add(1));
                if filter(&e) {
                    page.events.push(e);
                }
            }
        }
        // Read the floor after the events: trims only move it up, atomically with the
        // removal, so a floor still <= from proves nothing at or after `from` was lost.
        let floor: u64 = self.shared.get_meta(binlog::FLOOR_KEY)?.unwrap_or(0);
        if from.0 < floor {
            return Err(BinlogReadError::Compacted { requested: from.0, oldest: floor });
        }
        Ok(page)
    }

    /// FAULT INJECTION ONLY: overwrite `key`'s value in this replica's state machine,
    /// keeping its version metadata (the hash is fixed so reads still pass
    /// [`Record::check`]), without Raft and without a binlog event. The replica
    /// silently diverges. Returns whether the key existed (nothing is written if not).
    pub fn corrupt_record(&self, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        let Some(mut r) = self.get(key)? else { return Ok(false) };
        r.value = value.to_vec();
        r.hash = crate::record::value_hash(value);
        r.check().map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.shared.overlay.overwrite(&self.shared.tree(), &rec_key(key), encode(&r)?)?;
        Ok(true)
    }

    /// The applied index and HLC.
    pub fn applied(&self) -> Result<AppliedPoint, StorageError> {
        let state = self.shared.state()?;
        Ok(AppliedPoint { revision: state.applied.map_or(0, |l| l.index), hlc: state.last_hlc })
    }
}

/// The state machine: applies committed entries, builds and installs snapshots.
pub struct StateMachine {
    store: Store,
    raft_meta: sled::Tree,
    shared: Arc<Shared>,
    gen: u64,
    hlc: Hlc,
    dedup: DedupLimits,
    dedup_stats: Arc<DedupStats>,
    retention: RetentionLimits,
    /// Ids of the exactly-once table by id and age.
    dedup_index: DedupIndex,
    /// The exactly-once table's floor: entries applied before it are evicted.
    dedup_floor: u64,
    /// The exactly-once table's newest chunk.
    dedup_tail: Tail,
    /// The binlog's newest chunk.
    binlog_tail: Tail,
    /// The tree's [`SmState`] with the entries applied into the open batch.
    state: SmState,
    /// Cached front of the closed-saga index.
    closed: TimeIndex,
    /// Wall time of the oldest binlog event, when known (only trims remove events).
    binlog_oldest_wall: Option<u64>,
}

/// The state an entry applies on: the tree plus the writes of earlier entries of the
/// same batch.
struct PendingView<'a, 'b>(&'a Pending<'b>);

impl StateView for PendingView<'_, '_> {
    fn record(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.0.get_with(&rec_key(key), decode_record)
    }
    fn saga(&self, id: &str) -> Result<Option<Saga>, StorageError> {
        self.0.get_decoded(&saga_key(id))
    }
}

impl StateMachine {
    /// Open the active generation (dropping orphans of an interrupted install).
    /// `hlc` is merged with every applied timestamp.
    pub fn open(store: &Store, hlc: Hlc, dedup: DedupLimits) -> Result<Self, StorageError> {
        let raft_meta = store.db().open_tree(META_TREE)?;
        let gen: u64 = get_meta(&raft_meta, GEN_KEY)?.unwrap_or(0);
        let active = tree_name(gen);
        for name in store.db().tree_names() {
            let n = String::from_utf8_lossy(&name);
            if n.starts_with("sm-") && n != active {
                store.db().drop_tree(&name)?;
            }
        }
        let tree = store.db().open_tree(&active)?;
        drop_legacy_expiry(&tree)?;
        upgrade_layout(&tree)?;
        let binlog_tail = load_binlog_tail(&tree)?;
        let loaded = load_dedup_index(&tree)?;
        let state = migrate_state(&tree)?;
        hlc.observe(state.last_hlc);
        let (applied, _) = tokio::sync::watch::channel(state.applied.map_or(0, |l| l.index));
        let shared = Arc::new(Shared {
            tree: RwLock::new(tree),
            overlay: Overlay::default(),
            snapshot_lock: std::sync::Mutex::default(),
            applied,
        });
        Ok(Self {
            store: store.clone(),
            raft_meta,
            shared,
            gen,
            hlc,
            dedup,
            dedup_stats: Arc::default(),
            retention: RetentionLimits::default(),
            dedup_index: loaded.index,
            dedup_floor: loaded.floor,
            dedup_tail: loaded.tail,
            binlog_tail,
            state,
            closed: TimeIndex::new(SAGA_CLOSED),
            binlog_oldest_wall: None,
        })
    }

    /// Use these binlog retention limits (replicated behaviour: every replica of a
    /// cluster must use the same).
    pub fn with_binlog_retention(mut self, retention: RetentionLimits) -> Self {
        self.retention = retention;
        self
    }

    /// A reader sharing this state machine's data.
    pub fn reader(&self) -> SmReader {
        SmReader { shared: self.shared.clone() }
    }

    /// Exactly-once table counters.
    pub fn dedup_stats(&self) -> Arc<DedupStats> {
        self.dedup_stats.clone()
    }

    /// The highest HLC applied so far (the persisted high-water mark).
    pub fn last_hlc(&self) -> Result<Timestamp, StorageError> {
        Ok(self.state.last_hlc)
    }

    fn apply_entry(
        &mut self,
        pending: &mut Pending<'_>,
        entry: &Entry,
    ) -> Result<ApplyResult, StorageError> {
        let log_id = entry.log_id;
        let revision = log_id.index;
        let last_hlc = self.state.last_hlc;
        self.state.applied = Some(log_id);
        let result = match &entry.payload {
            EntryPayload::Blank => {
                ApplyResult { revision, hlc: last_hlc, outcome: Outcome::None, duplicate: false }
            }
            EntryPayload::Membership(m) => {
                let sm = StoredMembership::new(Some(log_id), m.clone());
                pending.insert(MEMBERSHIP, encode(&sm)?);
                ApplyResult { revision, hlc: last_hlc, outcome: Outcome::None, duplicate: false }
            }
            EntryPayload::Normal(cmd) => {
                // The in-memory index answers the common miss without a sled read.
                let replay = match self.dedup_index.get(&cmd.request_id) {
                    Some(at) => pending
                        .get_with(&dedup_chunk_key(at.chunk), |c| {
                            find_dedup_entry(c, &cmd.request_id, at.revision)
                        })?
                        .flatten(),
                    None => None,
                };
                match replay {
                    Some(d) => {
                        self.dedup_stats.hits.fetch_add(1, Ordering::Relaxed);
                        let hash = saved_response::request_hash(cmd)?;
                        saved_response::restore(d.result, d.request, &cmd.op, hash)
                    }
                    None => {
                        let (result, effects) =
                            apply_command(&PendingView(pending), revision, last_hlc, cmd)?;
                        for (key, after) in &effects.records {
                            match after {
                                Some(r) => pending.insert(rec_key(key), encode(r)?),
                                None => pending.remove(rec_key(key)),
                            }
                        }
                        for saga in &effects.sagas {
                            pending.insert(saga_key(&saga.id), encode(saga)?);
                            if saga.state != crate::record::SagaState::Open {
                                let k = saga_closed_key(result.hlc.wall_ns, &saga.id);
                                self.closed.inserted(&k);
                                pending.insert(k, []);
                            }
                        }
                        self.forget_closed_sagas(pending, result.hlc.wall_ns)?;
                        self.append_events(pending, cmd, &result, effects.events)?;
                        self.state.last_hlc = result.hlc;
                        if !cmd.request_id.is_empty() {
                            self.remember(pending, cmd, &result)?;
                        }
                        result
                    }
                }
            }
        };
        self.hlc.observe(result.hlc);
        Ok(result)
    }

    /// Forget sagas closed longer than the binlog retention age ago (their events are
    /// gone too), at most [`SAGA_EVICT_PER_APPLY`] per entry.
    fn forget_closed_sagas(
        &mut self,
        pending: &mut Pending<'_>,
        now_wall_ns: u64,
    ) -> Result<(), StorageError> {
        let cutoff = now_wall_ns.saturating_sub(self.retention.max_age_ns);
        for _ in 0..SAGA_EVICT_PER_APPLY {
            match self.closed.oldest(pending)? {
                Some((wall, _)) if wall < cutoff => {}
                _ => break,
            }
            let Some(k) = self.closed.pop() else { break };
            let mut sk = vec![SAGA];
            sk.extend_from_slice(&k[9..]);
            pending.remove(sk);
            pending.remove(k);
        }
        Ok(())
    }

    /// Seal the drafts of one command into binlog events (continuing the chain) and
    /// trim old events.
    fn append_events(
        &mut self,
        pending: &mut Pending<'_>,
        cmd: &crate::record::Command,
        result: &ApplyResult,
        drafts: Vec<binlog::EventDraft>,
    ) -> Result<(), StorageError> {
        if drafts.is_empty() {
            return Ok(());
        }
        let prev = self.state.chain;
        let (events, head) =
            binlog::seal(result.revision, result.hlc, &cmd.request_id, &cmd.trace_id, drafts, prev);
        let mut count = self.state.binlog_count;
        let mut framed = Vec::new();
        for e in &events {
            binlog::frame_event(e, &mut framed).map_err(corrupt_binlog)?;
        }
        let first = self.binlog_tail.place(result.revision, framed.len());
        pending.append(&binlog::chunk_key(first), &framed)?;
        count += events.len() as u64;
        self.state.chain = head;
        self.trim_events(pending, &mut count, result.hlc.wall_ns)?;
        self.state.binlog_count = count;
        Ok(())
    }

    /// Remove the oldest events while retention says so: whole revisions, at most
    /// [`binlog::TRIM_EVENTS_PER_APPLY`] events plus the rest of the last revision.
    fn trim_events(
        &mut self,
        pending: &mut Pending<'_>,
        count: &mut u64,
        now_wall_ns: u64,
    ) -> Result<(), StorageError> {
        if let Some(wall) = self.binlog_oldest_wall {
            if !self.retention.must_trim(*count, wall, now_wall_ns) {
                return Ok(());
            }
        }
        // Every event below the floor is gone, and a chunk spans under CHUNK_REVISIONS
        // revisions: the oldest chunk starts after floor - CHUNK_REVISIONS.
        let floor: u64 = pending.get_decoded(binlog::FLOOR_KEY)?.unwrap_or(0);
        let lo = binlog::chunk_key(floor.saturating_sub(chunk::CHUNK_REVISIONS - 1));
        let hi = [binlog::CHUNK_PREFIX + 1];
        let mut trimmed = 0usize;
        let mut trimming: Option<u64> = None;
        let mut oldest_kept = None;
        // Chunk edits: removed whole (None) or cut to the suffix after their trimmed
        // revisions.
        let mut edits: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        'chunks: for kv in pending.range(&lo, &hi) {
            let (k, chunk) = kv?;
            let mut cut = 0;
            for frame in binlog::frames(&chunk) {
                let frame = frame.map_err(corrupt_binlog)?;
                let head = frame.head().map_err(corrupt_binlog)?;
                // A revision being trimmed is always finished (the bound is checked
                // only where a revision starts), so cuts fall between revisions.
                if trimming != Some(head.revision) {
                    let stop = if trimmed >= binlog::TRIM_EVENTS_PER_APPLY {
                        true
                    } else if !self.retention.must_trim(*count, head.hlc.wall_ns, now_wall_ns) {
                        oldest_kept = Some(head.hlc.wall_ns);
                        true
                    } else {
                        false
                    };
                    if stop {
                        if cut > 0 {
                            edits.push((k.clone(), Some(chunk[cut..].to_vec())));
                        }
                        break 'chunks;
                    }
                    trimming = Some(head.revision);
                }
                cut = frame.end;
                trimmed += 1;
                *count = count.saturating_sub(1);
            }
            edits.push((k, None));
        }
        for (k, edit) in edits {
            let first = binlog::parse_chunk_key(&k)
                .ok_or_else(|| StorageError::Corrupt("malformed binlog chunk key".into()))?;
            self.binlog_tail.resized(first, edit.as_ref().map(Vec::len));
            match edit {
                None => pending.remove(k),
                Some(rest) => pending.insert(k, rest),
            }
        }
        self.binlog_oldest_wall = oldest_kept;
        if let Some(rev) = trimming {
            pending.insert(binlog::FLOOR_KEY, encode(&(rev + 1))?);
        }
        Ok(())
    }

    /// Add the request `cmd`, answered with `result`, to the exactly-once table and
    /// expire/evict old ids.
    fn remember(
        &mut self,
        pending: &mut Pending<'_>,
        cmd: &Command,
        result: &ApplyResult,
    ) -> Result<(), StorageError> {
        let id = cmd.request_id.as_str();
        let now = result.hlc.wall_ns;
        let revision = result.revision;
        debug_assert!(revision >= self.dedup_floor, "apply below the exactly-once floor");
        let entry = DedupEntry {
            wall_ns: now,
            result: saved_response::elide(result, &cmd.op),
            request: Some(saved_response::request_hash(cmd)?),
        };
        let item = encode_dedup_item(id, &entry)?;
        let chunk = self.dedup_tail.place(revision, item.len());
        pending.append(&dedup_chunk_key(chunk), &item)?;
        self.dedup_index.insert(id, Remembered { revision, wall_ns: now, chunk });
        let mut count = self.state.dedup_count + 1;
        let cutoff = now.saturating_sub(self.dedup.window_ns);
        // Chunks that may have lost their last live entry in this round.
        let mut emptied: Vec<u64> = Vec::new();
        for _ in 0..DEDUP_EVICT_PER_APPLY {
            let full = count > self.dedup.max_entries;
            match self.dedup_index.oldest() {
                Some(oldest) if oldest.wall_ns < cutoff || full => {}
                _ => break,
            }
            let Some((_, evicted)) = self.dedup_index.pop_oldest() else { break };
            debug_assert!(evicted.revision >= self.dedup_floor, "eviction in revision order");
            self.dedup_floor = evicted.revision + 1;
            if emptied.last() != Some(&evicted.chunk) {
                emptied.push(evicted.chunk);
            }
            count -= 1;
            let stat = if full { &self.dedup_stats.evicted } else { &self.dedup_stats.expired };
            stat.fetch_add(1, Ordering::Relaxed);
        }
        if !emptied.is_empty() {
            // Chunks hold consecutive revisions and ids leave in revision order: a chunk
            // before the oldest live id's holds evicted entries only.
            let live = self.dedup_index.oldest().map(|o| o.chunk);
            debug_assert!(live.is_some(), "the id just remembered is live");
            for dead in emptied.into_iter().filter(|c| live.is_none_or(|l| *c < l)) {
                pending.remove(&dedup_chunk_key(dead)[..]);
            }
            pending.insert(DEDUP_FLOOR, encode(&self.dedup_floor)?);
        }
        debug_assert_eq!(count, self.dedup_index.len() as u64, "dedup count vs index");
        self.state.dedup_count = count;
        Ok(())
    }

    /// Publish the buffered entries to readers and the applied revision, answer the
    /// entries (a response implies a read sees the write), then write the overlay to
    /// sled if it is due.
    fn commit(
        &mut self,
        pending: &mut Pending<'_>,
        done: &mut Vec<(Option<openraft::storage::ApplyResponder<TypeConfig>>, ApplyResult)>,
        last_index: Option<u64>,
    ) -> Result<(), StorageError> {
        if last_index.is_some() {
            pending.insert(STATE, encode(&self.state)?);
        }
        pending.publish(done.len());
        if !done.is_empty() {
            metrics::counter!("meridian_applied_entries_total").increment(done.len() as u64);
        }
        if let Some(index) = last_index {
            self.shared.applied.send_replace(index);
        }
        for (responder, result) in done.drain(..) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        if self.shared.overlay.due() {
            self.shared.flush()?;
        }
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<(SnapshotMeta, String)>, StorageError> {
        get_meta(&self.raft_meta, SNAPSHOT_KEY)
    }

    fn open_snapshot(
        &self,
        meta: SnapshotMeta,
        name: &str,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, std::fs::File>, StorageError> {
        open_snapshot(&self.store, meta, name)
    }

    /// Make `name` the current snapshot and delete older snapshot files.
    fn set_current_snapshot(&self, meta: &SnapshotMeta, name: &str) -> Result<(), StorageError> {
        set_current_snapshot(&self.shared, &self.store, &self.raft_meta, meta, name).map(|_| ())
    }

    /// Freeze the tree at the applied index for a snapshot (runs on the state-machine
    /// task): write the overlay to sled, then pause flushes, so the tree holds exactly
    /// the state at `meta` while apply goes on in the overlay. The returned builder
    /// dumps the tree and resumes flushes.
    fn prepare_snapshot(&mut self) -> Result<SnapshotBuilder, StorageError> {
        self.shared.flush()?;
        let tree = self.shared.tree();
        let last_log_id = self.state.applied;
        let last_membership: StoredMembership = get_meta(&tree, MEMBERSHIP)?.unwrap_or_default();
        let meta = SnapshotMeta { last_log_id, last_membership };
        self.shared.overlay.pause_flushes(true);
        Ok(SnapshotBuilder {
            frozen: Some(Frozen {
                shared: self.shared.clone(),
                tree,
                store: self.store.clone(),
                raft_meta: self.raft_meta.clone(),
                meta,
            }),
        })
    }

    /// Build a snapshot of the current state right away (tests).
    #[cfg(test)]
    fn build_snapshot_now(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, std::fs::File>, StorageError> {
        let mut builder = self.prepare_snapshot()?;
        builder.frozen.take().ok_or_else(|| StorageError::Corrupt("no frozen tree".into()))?.dump()
    }

    fn install(
        &mut self,
        meta: &SnapshotMeta,
        file: &mut std::fs::File,
    ) -> Result<(), StorageError> {
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(0))?;
        let (mut reader, file_meta) = SnapshotReader::open(&mut *file)?;
        if &file_meta != meta {
            return Err(StorageError::Corrupt(format!(
                "snapshot meta {file_meta} != offered {meta}"
            )));
        }
        let gen = self.gen + 1;
        let name = tree_name(gen);
        self.store.db().drop_tree(name.as_bytes())?;
        let tree = self.store.db().open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        while let Some((k, v)) = reader.next_pair()? {
            if k.first() == Some(&LEGACY_EXPIRY) {
                continue;
            }
            batch.insert(k, v);
            n += 1;
            if n % INSTALL_BATCH_ITEMS == 0 {
                tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        tree.apply_batch(batch)?;
        upgrade_layout(&tree)?;
        let state = migrate_state(&tree)?;
        let applied = state.applied;
        if applied != meta.last_log_id {
            return Err(StorageError::Corrupt(format!(
                "snapshot applied {applied:?} != meta {:?}",
                meta.last_log_id
            )));
        }
        self.raft_meta.insert(GEN_KEY, encode(&gen)?)?;
        self.store.sync()?;
        // What was applied but not flushed is superseded by the snapshot.
        let mut old = None;
        self.shared.overlay.discard_with(|| {
            old = Some(std::mem::replace(
                &mut *self.shared.tree.write().unwrap_or_else(|e| e.into_inner()),
                tree.clone(),
            ));
        });
        let old = old.ok_or_else(|| StorageError::Corrupt("tree swap did not run".into()))?;
        self.store.db().drop_tree(old.name())?;
        self.gen = gen;
        self.binlog_tail = load_binlog_tail(&tree)?;
        let dedup = load_dedup_index(&tree)?;
        (self.dedup_index, self.dedup_floor, self.dedup_tail) =
            (dedup.index, dedup.floor, dedup.tail);
        self.closed.reset();
        self.binlog_oldest_wall = None;
        self.state = state;
        self.hlc.observe(state.last_hlc);
        self.shared.applied.send_replace(applied.map_or(0, |l| l.index));
        // Keep the installed snapshot as ours, so we can serve it to others.
        let name = super::snapshot::file_name(meta);
        let dir = self.store.snapshot_dir();
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{name}.tmp"));
        file.seek(SeekFrom::Start(0))?;
        let mut out = std::fs::File::create(&tmp)?;
        std::io::copy(file, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&tmp, dir.join(&name))?;
        self.set_current_snapshot(meta, &name)?;
        tracing::info!(snapshot = %meta, records = n, "installed snapshot");
        Ok(())
    }
}

impl Drop for StateMachine {
    /// Write what is applied to sled on a clean shutdown, so a restart has less of the
    /// log to re-apply (after a crash, the log covers it).
    fn drop(&mut self) {
        if let Err(e) = self.shared.flush() {
            tracing::warn!(error = %e, "writing applied entries to sled at shutdown failed");
        }
    }
}

fn open_snapshot(
    store: &Store,
    meta: SnapshotMeta,
    name: &str,
) -> Result<openraft::alias::SnapshotOf<TypeConfig, std::fs::File>, StorageError> {
    let file = std::fs::File::open(store.snapshot_dir().join(name))?;
    Ok(openraft::storage::Snapshot { meta, snapshot: file })
}

/// Make `name` the current snapshot and delete older snapshot files, unless the
/// current snapshot is already newer (an install finished while this one was being
/// dumped): then `name` is deleted and the current one returned.
fn set_current_snapshot(
    shared: &Shared,
    store: &Store,
    raft_meta: &sled::Tree,
    meta: &SnapshotMeta,
    name: &str,
) -> Result<Option<(SnapshotMeta, String)>, StorageError> {
    let _current = shared.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cur, cur_name)) = get_meta::<(SnapshotMeta, String)>(raft_meta, SNAPSHOT_KEY)? {
        if cur.last_log_id > meta.last_log_id {
            let _ = std::fs::remove_file(store.snapshot_dir().join(name));
            return Ok(Some((cur, cur_name)));
        }
    }
    raft_meta.insert(SNAPSHOT_KEY, encode(&(meta.clone(), name.to_string()))?)?;
    store.sync()?;
    if let Ok(dir) = std::fs::read_dir(store.snapshot_dir()) {
        for f in dir.flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            if fname.starts_with("snap-") && fname != name {
                // An open transfer keeps its file handle; unlinking is safe.
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(None)
}

/// A tree frozen at `meta` (flushes paused) and what dumping it needs.
struct Frozen {
    shared: Arc<Shared>,
    tree: sled::Tree,
    store: Store,
    raft_meta: sled::Tree,
    meta: SnapshotMeta,
}

impl Frozen {
    /// Dump the tree into a snapshot file and make it current.
    fn dump(self) -> Result<openraft::alias::SnapshotOf<TypeConfig, std::fs::File>, StorageError> {
        let path = write_snapshot(&self.store.snapshot_dir(), &self.meta, self.tree.iter())?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| StorageError::Corrupt("snapshot path without a name".into()))?;
        match set_current_snapshot(&self.shared, &self.store, &self.raft_meta, &self.meta, &name)? {
            None => open_snapshot(&self.store, self.meta.clone(), &name),
            Some((newer, newer_name)) => open_snapshot(&self.store, newer, &newer_name),
        }
    }
}

impl Drop for Frozen {
    /// Resume flushes however the dump ended (done, failed, or never run).
    fn drop(&mut self) {
        self.shared.overlay.pause_flushes(false);
    }
}

/// Builds a snapshot: the tree is frozen when the builder is created (on the
/// state-machine task); `build_snapshot` dumps it on a blocking thread while apply
/// goes on, then resumes flushes. A snapshot no longer stalls apply.
pub struct SnapshotBuilder {
    frozen: Option<Frozen>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = std::fs::File;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, std::fs::File>, io::Error> {
        let frozen =
            self.frozen.take().ok_or_else(|| io::Error::other("snapshot already taken"))?;
        let built = tokio::task::spawn_blocking(move || frozen.dump())
            .await
            .map_err(|e| io::Error::other(format!("snapshot task: {e}")))?;
        built.map_err(|e| {
            tracing::error!(error = %e, "building snapshot failed");
            io::Error::from(e)
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = std::fs::File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let membership = self.shared.get_meta(MEMBERSHIP)?.unwrap_or_default();
        Ok((self.state.applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + openraft::OptionalSend,
    {
        let started = std::time::Instant::now();
        let shared = self.shared.clone();
        shared.overlay.wait_for_room().await;
        let mut pending = Pending::new(shared.tree(), &shared.overlay);
        let mut done = Vec::new();
        let mut last_index = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let result = self.apply_entry(&mut pending, &entry).map_err(|e| {
                tracing::error!(error = %e, log_id = %entry.log_id, "apply failed: stopping to avoid divergence");
                io::Error::from(e)
            })?;
            debug_assert!(last_index.is_none_or(|i| i < entry.log_id.index), "apply order");
            last_index = Some(entry.log_id.index);
            done.push((responder, result));
            if done.len() >= MAX_PENDING_ENTRIES || pending.bytes() >= MAX_PENDING_BYTES {
                self.commit(&mut pending, &mut done, last_index)?;
            }
        }
        self.commit(&mut pending, &mut done, last_index)?;
        if last_index.is_some() {
            metrics::histogram!("meridian_apply_batch_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("meridian_apply_batches_total").increment(1);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        match tokio::task::block_in_place(|| self.prepare_snapshot()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "preparing snapshot failed");
                SnapshotBuilder { frozen: None }
            }
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: std::fs::File,
    ) -> Result<(), io::Error> {
        tokio::task::block_in_place(|| self.install(meta, &mut snapshot)).map_err(|e| {
            tracing::error!(error = %e, "installing snapshot failed");
            io::Error::from(e)
        })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, std::fs::File>>, io::Error> {
        match self.current_snapshot()? {
            Some((meta, name)) => Ok(Some(self.open_snapshot(meta, &name)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::stream;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::hlc::{ManualClock, DEFAULT_MAX_CLOCK_OFFSET};
    use crate::record::{Command, Op, Source};

    fn entry(index: u64, wall_ns: u64, request_id: &str, key: &str) -> Entry {
        let cmd = Command {
            request_id: request_id.to_string(),
            saga_id: String::new(),
            trace_id: String::new(),
            hlc: Timestamp { wall_ns, logical: 0, node: 1 },
            source: Source { node_id: 1, region: "r".into() },
            op: Op::Put { key: key.into(), value: b"v".to_vec(), expected_version: None },
        };
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        limits: DedupLimits,
        sm: StateMachine,
        next: u64,
    }

    impl Fixture {
        fn new(limits: DedupLimits) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), "t", 1).expect("store");
            let hlc = Hlc::new(
                1,
                Arc::new(ManualClock::new(0)),
                DEFAULT_MAX_CLOCK_OFFSET,
                Timestamp::ZERO,
            );
            let sm = StateMachine::open(&store, hlc, limits).expect("sm");
            Self { _dir: dir, store, limits, sm, next: 1 }
        }

        /// Drop the state machine and open it again on the same data (a restart: every
        /// in-memory cache starts cold).
        fn reopen(&mut self) {
            let retention = self.sm.retention;
            let hlc = self.sm.hlc.clone();
            // A clean shutdown (the old state machine's drop) would flush too late: the
            // new one reads the tree first.
            self.sm.shared.flush().expect("flush");
            self.sm = StateMachine::open(&self.store, hlc, self.limits)
                .expect("reopen")
                .with_binlog_retention(retention);
        }

        /// Apply a put of `key` with `request_id` at HLC wall time `wall_ns`.
        async fn put(&mut self, wall_ns: u64, request_id: &str, key: &str) {
            let e = entry(self.next, wall_ns, request_id, key);
            self.next += 1;
            self.sm.apply(stream::iter([Ok((e, None))])).await.expect("apply");
        }

        fn version(&self, key: &str) -> u64 {
            self.sm.reader().get(key.as_bytes()).expect("get").map_or(0, |r| r.version)
        }
    }

    #[tokio::test]
    async fn retried_request_id_is_applied_once() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        f.put(101, "a", "k").await;
        assert_eq!(f.version("k"), 1, "the retry must not apply again");
        assert_eq!(f.sm.dedup_stats().hits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn ids_older_than_the_window_are_forgotten() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        // Far past the window: applying any id expires "a".
        f.put(5_000, "b", "other").await;
        f.put(5_001, "a", "k").await;
        assert_eq!(f.version("k"), 2, "an expired id is a new request");
        assert!(f.sm.dedup_stats().expired.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_oldest_ids_first() {
        let mut f = Fixture::new(DedupLimits { window_ns: u64::MAX / 2, max_entries: 3 });
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            f.put(100 + i as u64, id, id).await;
        }
        assert_eq!(f.sm.dedup_stats().evicted.load(Ordering::Relaxed), 1);
        f.put(200, "d", "d").await;
        assert_eq!(f.version("d"), 1, "a remembered id is still deduplicated");
        f.put(201, "a", "a").await;
        assert_eq!(f.version("a"), 2, "the evicted oldest id is applied again");
    }

    fn all_events(sm: &StateMachine) -> Vec<BinlogEvent> {
        let r = sm.reader();
        let from = (r.binlog_oldest().expect("oldest"), 0);
        r.read_events(from, usize::MAX, usize::MAX, |_| true).expect("read").events
    }

    #[tokio::test]
    async fn every_write_appends_one_chained_event_and_duplicates_none() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        f.put(101, "b", "k").await;
        f.put(102, "b", "k").await; // retry: no event
        let ev = all_events(&f.sm);
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[0].revision, ev[1].revision), (1, 2));
        assert_eq!(ev[1].before_version(), 1);
        assert_eq!(ev[1].chain_hash, binlog::chain_hash(&ev[0].chain_hash, &ev[1]));
        assert_eq!(f.sm.reader().binlog_chain_head().expect("head"), ev[1].chain_hash);
    }

    #[tokio::test]
    async fn retention_trims_the_oldest_revisions_and_reports_compaction() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 100 });
        f.sm.retention = RetentionLimits { max_events: 3, max_age_ns: u64::MAX / 2 };
        for i in 0..6u64 {
            f.put(100 + i, &format!("r{i}"), "k").await;
        }
        let ev = all_events(&f.sm);
        assert_eq!(ev.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![4, 5, 6]);
        let r = f.sm.reader();
        assert_eq!(r.binlog_oldest().expect("oldest"), 4);
        match r.read_events((2, 0), 10, 10, |_| true) {
            Err(BinlogReadError::Compacted { requested: 2, oldest: 4 }) => {}
            other => panic!("expected Compacted, got {other:?}"),
        }
        // By age: a write far in the future trims everything older.
        f.sm.retention = RetentionLimits { max_events: 100, max_age_ns: 10 };
        f.put(10_000, "late", "k").await;
        let ev = all_events(&f.sm);
        assert_eq!(ev.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![7]);
    }

    #[tokio::test]
    async fn a_snapshot_carries_the_binlog_and_its_chain() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        for i in 0..5u64 {
            f.put(100 + i, &format!("r{i}"), &format!("k{i}")).await;
        }
        let snap = f.sm.build_snapshot_now().expect("snapshot");
        let mut g = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        let mut file = snap.snapshot;
        g.sm.install(&snap.meta, &mut file).expect("install");
        assert_eq!(all_events(&g.sm), all_events(&f.sm));
        assert_eq!(*g.sm.reader().applied_watch().borrow(), 5);
        // Both continue the same chain.
        f.put(200, "x", "k9").await;
        g.next = 6;
        g.put(200, "x", "k9").await;
        assert_eq!(
            f.sm.reader().binlog_chain_head().expect("f"),
            g.sm.reader().binlog_chain_head().expect("g")
        );
    }

    #[tokio::test]
    async fn apply_goes_on_while_a_snapshot_is_dumped_and_the_dump_holds_its_index() {
        let limits = DedupLimits { window_ns: 1_000_000_000, max_entries: 100_000 };
        let mut f = Fixture::new(limits);
        for i in 0..10u64 {
            f.put(100 + i, &format!("r{i}"), &format!("k{}", i % 3)).await;
        }
        let at_ten = dump(&f.sm);
        let mut builder = f.sm.prepare_snapshot().expect("prepare");
        // More entries than one flush holds: with the tree frozen they stay in the
        // overlay, and readers see them.
        let more = super::super::pending::FLUSH_ENTRIES as u64 + 50;
        for i in 10..10 + more {
            f.put(100 + i, &format!("r{i}"), &format!("k{}", i % 3)).await;
        }
        assert_eq!(f.sm.reader().applied().expect("applied").revision, 10 + more);
        let snap = builder.build_snapshot().await.expect("build");
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(10));
        let mut g = Fixture::new(limits);
        let mut file = snap.snapshot;
        g.sm.install(&snap.meta, &mut file).expect("install");
        assert_eq!(dump(&g.sm), at_ten, "the snapshot holds exactly the state at its index");
        assert!(f.sm.shared.flush().expect("flush") > 0, "flushes resumed after the dump");
        assert_eq!(f.sm.reader().applied().expect("applied").revision, 10 + more);
    }

    #[tokio::test]
    async fn corrupt_record_keeps_the_version_and_surfaces_in_the_next_event() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        assert!(f.sm.reader().corrupt_record(b"k", b"evil").expect("corrupt"));
        assert_eq!(f.version("k"), 1);
        assert_eq!(all_events(&f.sm).len(), 1, "no event for the corruption");
        f.put(101, "b", "k").await;
        let ev = all_events(&f.sm);
        assert_eq!(ev[1].before.as_ref().map(|r| r.value.clone()), Some(b"evil".to_vec()));
        assert!(!f.sm.reader().corrupt_record(b"absent", b"x").expect("absent"));
    }

    /// Every key and value of the active tree.
    fn dump(sm: &StateMachine) -> Vec<(Vec<u8>, Vec<u8>)> {
        sm.shared.flush().expect("flush");
        sm.shared
            .tree()
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .expect("dump")
    }

    /// A log exercising every path that reads state written by earlier entries: the
    /// same key written again, retried request ids, a tiny exactly-once table (evictions)
    /// with a short window (expiry), binlog retention trimming, sagas closing and aging.
    fn mixed_log() -> Vec<Entry> {
        let mut out = Vec::new();
        for i in 0..120u64 {
            let wall = 1_000 + i * 7;
            let id = match i % 5 {
                0 => String::new(),
                1 => format!("r{}", i.saturating_sub(1)), // a retry of the previous id
                _ => format!("r{i}"),
            };
            let mut e = entry(i + 1, wall, &id, &format!("k{}", i % 4));
            if let EntryPayload::Normal(c) = &mut e.payload {
                c.op = match i % 11 {
                    3 => Op::SagaOpen { saga_id: format!("s{i}"), timeout_ms: 1 },
                    4 => Op::SagaCommit { saga_id: format!("s{}", i - 1) },
                    7 => Op::Delete { key: format!("k{}", i % 4).into(), expected_version: None },
                    _ => c.op.clone(),
                };
            }
            out.push(e);
        }
        out
    }

    #[tokio::test]
    async fn where_apply_batches_end_never_changes_the_state() {
        let limits = DedupLimits { window_ns: 300, max_entries: 5 };
        let retention = RetentionLimits { max_events: 9, max_age_ns: 200 };
        let log = mixed_log();
        let mut one_by_one = Fixture::new(limits);
        one_by_one.sm.retention = retention;
        for e in log.clone() {
            one_by_one.sm.apply(stream::iter([Ok((e, None))])).await.expect("apply");
        }
        for chunk in [log.len(), 7, 2] {
            let mut batched = Fixture::new(limits);
            batched.sm.retention = retention;
            for part in log.chunks(chunk) {
                let items: Vec<_> = part.iter().cloned().map(|e| Ok((e, None))).collect();
                batched.sm.apply(stream::iter(items)).await.expect("apply");
            }
            assert_eq!(dump(&batched.sm), dump(&one_by_one.sm), "batches of {chunk}");
        }
        let mut restarted = Fixture::new(limits);
        restarted.sm.retention = retention;
        for (i, part) in log.chunks(13).enumerate() {
            if i % 2 == 1 {
                restarted.reopen();
            }
            let items: Vec<_> = part.iter().cloned().map(|e| Ok((e, None))).collect();
            restarted.sm.apply(stream::iter(items)).await.expect("apply");
        }
        assert_eq!(dump(&restarted.sm), dump(&one_by_one.sm), "with restarts");
        let stats = one_by_one.sm.dedup_stats();
        assert!(stats.evicted.load(Ordering::Relaxed) + stats.expired.load(Ordering::Relaxed) > 0);
        assert!(one_by_one.sm.reader().binlog_oldest().expect("oldest") > 1, "trimmed");
    }

    #[tokio::test]
    async fn legacy_state_keys_are_merged_on_open() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        f.put(101, "b", "k").await;
        f.sm.shared.flush().expect("flush");
        let tree = f.sm.shared.tree();
        let state = read_state(&tree).expect("state");
        // Rewrite the tree as an older version left it: five keys, no state key.
        tree.remove(STATE).expect("remove");
        tree.insert(APPLIED, encode(&state.applied).expect("enc")).expect("insert");
        tree.insert(LAST_HLC, encode(&state.last_hlc).expect("enc")).expect("insert");
        tree.insert(binlog::CHAIN_KEY, encode(&state.chain).expect("enc")).expect("insert");
        tree.insert(binlog::COUNT_KEY, encode(&state.binlog_count).expect("enc")).expect("insert");
        tree.insert(DEDUP_COUNT, encode(&state.dedup_count).expect("enc")).expect("insert");
        let before = all_events(&f.sm);
        f.reopen();
        let tree = f.sm.shared.tree();
        assert_eq!(read_state(&tree).expect("state"), state);
        assert!(!tree.contains_key(APPLIED).expect("get"), "legacy keys removed");
        assert_eq!(f.sm.reader().applied().expect("applied").revision, 2);
        f.put(102, "a", "k").await; // a retry: still deduplicated
        assert_eq!(f.version("k"), 2);
        f.put(103, "c", "k").await;
        let after = all_events(&f.sm);
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after[2].chain_hash, binlog::chain_hash(&before[1].chain_hash, &after[2]));
    }

    #[tokio::test]
    async fn a_legacy_expiry_index_is_dropped_on_open_and_dedup_still_works() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        f.sm.shared.flush().expect("flush");
        let mut legacy = vec![LEGACY_EXPIRY];
        legacy.extend_from_slice(&100u64.to_be_bytes());
        legacy.extend_from_slice(b"a");
        f.sm.shared.tree().insert(&legacy, &[][..]).expect("insert");
        f.reopen();
        assert!(f.sm.shared.tree().get(&legacy).expect("get").is_none());
        f.put(101, "a", "k").await;
        assert_eq!(f.version("k"), 1, "the reloaded index still knows the id");
    }

    #[tokio::test]
    async fn a_legacy_key_per_id_table_is_converted_to_chunks_on_open() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            f.put(100 + i as u64, id, id).await;
        }
        f.sm.shared.flush().expect("flush");
        let tree = f.sm.shared.tree();
        let items = |tree: &sled::Tree| -> Vec<(String, u64)> {
            let mut out = Vec::new();
            for kv in tree.scan_prefix([DEDUP_CHUNK]) {
                for item in dedup_items(&kv.expect("scan").1) {
                    let (id, entry) = item.expect("item");
                    out.push((id, entry.result.revision));
                }
            }
            out
        };
        let chunked = items(&tree);
        assert_eq!(chunked.len(), 3);
        // Rewrite the table as an older version left it: one `d<id>` key per entry, and
        // no layout version.
        tree.remove(LAYOUT_KEY).expect("remove");
        for kv in tree.scan_prefix([DEDUP_CHUNK]) {
            let (k, chunk) = kv.expect("scan");
            for item in dedup_items(&chunk) {
                let (id, entry) = item.expect("item");
                let mut legacy = vec![LEGACY_DEDUP];
                legacy.extend_from_slice(id.as_bytes());
                let entry = LegacyDedupEntry { wall_ns: entry.wall_ns, result: entry.result };
                tree.insert(legacy, encode(&entry).expect("enc")).expect("insert");
            }
            tree.remove(k).expect("remove");
        }
        assert!(tree.scan_prefix([DEDUP_CHUNK]).next().is_none());
        f.reopen();
        assert_eq!(items(&f.sm.shared.tree()), chunked, "the same table, in chunks");
        assert!(f.sm.shared.tree().scan_prefix([LEGACY_DEDUP]).next().is_none());
        f.put(200, "b", "b").await;
        assert_eq!(f.version("b"), 1, "a converted id is still deduplicated");
    }

    #[tokio::test]
    async fn layout_3_chunks_are_re_encoded_on_open_resuming_an_interrupted_conversion() {
        let mut f = Fixture::new(DedupLimits { window_ns: u64::MAX / 2, max_entries: 1_000 });
        // Revisions 1..=150 fill chunks starting at 1, 65 and 129.
        for i in 0..150u64 {
            f.put(100 + i, &format!("id{i}"), &format!("k{}", i % 5)).await;
        }
        f.sm.shared.flush().expect("flush");
        let tree = f.sm.shared.tree();
        type Items = Vec<(String, u64, u64, Option<u64>)>;
        let items = |tree: &sled::Tree| -> Items {
            let mut out = Vec::new();
            for kv in tree.scan_prefix([DEDUP_CHUNK]) {
                for item in dedup_items(&kv.expect("scan").1) {
                    let (id, e) = item.expect("item");
                    out.push((id, e.result.revision, e.wall_ns, e.request));
                }
            }
            out
        };
        let hashed = items(&tree);
        assert_eq!(hashed.len(), 150);
        assert!(hashed.iter().all(|i| i.3.is_some()), "this layout hashes every request");
        // Rewrite the table as layout 3 left it, except its first chunk, as if a
        // conversion had converted it and stopped there.
        tree.insert(LAYOUT_KEY, encode(&3u32).expect("enc")).expect("insert");
        tree.insert(DEDUP_CONVERTED, encode(&65u64).expect("enc")).expect("insert");
        for kv in tree.scan_prefix([DEDUP_CHUNK]) {
            let (k, chunk) = kv.expect("scan");
            let first = parse_dedup_chunk_key(&k).expect("key");
            let mut rewritten = Vec::new();
            for item in dedup_items(&chunk) {
                let (id, e) = item.expect("item");
                rewritten.extend_from_slice(&if first < 65 {
                    encode_dedup_item(&id, &DedupEntry { request: None, ..e }).expect("enc")
                } else {
                    encode(&(id, LegacyDedupEntry { wall_ns: e.wall_ns, result: e.result }))
                        .expect("enc")
                });
            }
            tree.insert(k, rewritten).expect("insert");
        }
        f.reopen();
        let tree = f.sm.shared.tree();
        let unhashed: Items = hashed.iter().map(|(i, r, w, _)| (i.clone(), *r, *w, None)).collect();
        assert_eq!(items(&tree), unhashed, "every entry kept, none hashed after the fact");
        assert_eq!(get_meta::<u32>(&tree, LAYOUT_KEY).expect("get"), Some(LAYOUT_VERSION));
        assert!(!tree.contains_key(DEDUP_CONVERTED).expect("get"), "the marker is gone");
        f.put(300, "id7", "k2").await;
        assert_eq!(f.version("k2"), 30, "a converted id is still deduplicated");
        f.put(301, "new", "k0").await;
        f.reopen();
        assert_eq!(items(&f.sm.shared.tree()).last().map(|i| i.3.is_some()), Some(true));
    }

    #[tokio::test]
    async fn evicted_ids_leave_their_chunk_only_when_the_whole_chunk_is_evicted() {
        let mut f = Fixture::new(DedupLimits { window_ns: u64::MAX / 2, max_entries: 3 });
        // Revisions 1..=150 fill chunks starting at 1, 65 and 129.
        for i in 0..150u64 {
            f.put(100 + i, &format!("id{i}"), "k").await;
        }
        f.sm.shared.flush().expect("flush");
        let tree = f.sm.shared.tree();
        let chunks: Vec<_> =
            tree.scan_prefix([DEDUP_CHUNK]).keys().map(|k| k.expect("key").to_vec()).collect();
        // Live: the last 3 ids (revisions 148..=150), all in the chunk from 129.
        assert_eq!(chunks, vec![dedup_chunk_key(129).to_vec()]);
        let floor: u64 = get_meta(&tree, DEDUP_FLOOR).expect("floor").expect("set");
        assert_eq!(floor, 148);
        f.reopen();
        assert_eq!(f.sm.dedup_index.len(), 3, "evicted entries of a kept chunk stay evicted");
        f.put(300, "id146", "k").await;
        assert_eq!(f.version("k"), 151, "an evicted id is applied again");
        f.put(301, "id149", "k").await;
        assert_eq!(f.version("k"), 151, "a live id is deduplicated");
    }

    #[tokio::test]
    async fn a_chunk_takes_no_more_entries_once_it_is_big() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        let big = vec![b'x'; chunk::CHUNK_BYTES];
        // A put's saved response leaves its value out: the seed's entry is small. Each
        // failed create-only put then saves the big current record.
        for (i, (id, expected)) in
            [("seed", None), ("big0", Some(0)), ("big1", Some(0)), ("big2", Some(0))]
                .into_iter()
                .enumerate()
        {
            let mut e = entry(f.next, 100 + i as u64, id, "k");
            if let EntryPayload::Normal(c) = &mut e.payload {
                c.op =
                    Op::Put { key: b"k".to_vec(), value: big.clone(), expected_version: expected };
            }
            f.next += 1;
            f.sm.apply(stream::iter([Ok((e, None))])).await.expect("apply");
        }
        f.put(200, "small", "k").await;
        f.put(201, "big1", "k").await; // a retry, found in its own chunk
        assert_eq!(f.version("k"), 2);
        f.sm.shared.flush().expect("flush");
        let firsts: Vec<u64> =
            f.sm.shared
                .tree()
                .scan_prefix([DEDUP_CHUNK])
                .keys()
                .map(|k| parse_dedup_chunk_key(&k.expect("key")).expect("parse"))
                .collect();
        // The seed (revision 1) and big0 share chunk 1, which then takes no more.
        assert_eq!(firsts, vec![1, 3, 4, 5], "one chunk per large entry");
    }

    #[tokio::test]
    async fn a_legacy_key_per_event_binlog_is_converted_to_chunks_on_open() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        for i in 0..150u64 {
            f.put(100 + i, &format!("r{i}"), &format!("k{}", i % 7)).await;
        }
        f.sm.shared.flush().expect("flush");
        let before = all_events(&f.sm);
        let chunked = dump(&f.sm);
        // Rewrite the binlog as an older version left it: one `b` key per event, and no
        // layout version.
        let tree = f.sm.shared.tree();
        tree.remove(LAYOUT_KEY).expect("remove");
        for e in &before {
            tree.insert(&binlog::event_key(e.revision, e.index)[..], encode(e).expect("enc"))
                .expect("insert");
        }
        for k in tree.scan_prefix([binlog::CHUNK_PREFIX]).keys() {
            tree.remove(k.expect("key")).expect("remove");
        }
        f.reopen();
        assert_eq!(dump(&f.sm), chunked, "converted to the chunks apply would have cut");
        assert!(f.sm.shared.tree().scan_prefix([binlog::EVENT_PREFIX]).next().is_none());
        f.put(300, "after", "k0").await;
        let after = all_events(&f.sm);
        assert_eq!(after.len(), before.len() + 1);
        let last = &after[after.len() - 1];
        assert_eq!(last.chain_hash, binlog::chain_hash(&before[before.len() - 1].chain_hash, last));
    }

    #[tokio::test]
    async fn a_tree_of_a_newer_layout_is_refused_on_open_and_install() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.put(100, "a", "k").await;
        let tree = f.sm.shared.tree();
        assert_eq!(get_meta::<u32>(&tree, LAYOUT_KEY).expect("get"), Some(LAYOUT_VERSION));
        tree.insert(LAYOUT_KEY, encode(&(LAYOUT_VERSION + 1)).expect("enc")).expect("insert");
        let snap = f.sm.build_snapshot_now().expect("snapshot");
        let mut g = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        g.put(100, "b", "other").await;
        let mut file = snap.snapshot;
        match g.sm.install(&snap.meta, &mut file) {
            Err(StorageError::NewerLayout { found, known }) => {
                assert_eq!((found, known), (LAYOUT_VERSION + 1, LAYOUT_VERSION));
            }
            other => panic!("expected NewerLayout, got {other:?}"),
        }
        assert_eq!(g.version("other"), 1, "the refused install changed nothing");
        f.sm.shared.flush().expect("flush");
        match StateMachine::open(&f.store, f.sm.hlc.clone(), f.limits) {
            Err(StorageError::NewerLayout { .. }) => {}
            Err(e) => panic!("expected NewerLayout, got {e}"),
            Ok(_) => panic!("a newer layout must not open"),
        }
    }

    #[tokio::test]
    async fn paging_from_any_position_reads_every_event_once_in_order() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.sm.retention = RetentionLimits { max_events: 100, max_age_ns: u64::MAX / 2 };
        for i in 0..200u64 {
            f.put(100 + i, &format!("r{i}"), "k").await;
        }
        let all = all_events(&f.sm);
        assert_eq!(all.len(), 100, "trimmed to the retained count");
        assert_eq!(all[0].revision, 101);
        let r = f.sm.reader();
        for start in [101u64, 127, 128, 129, 190, 200] {
            let mut from = (start, 0);
            let mut got = Vec::new();
            loop {
                let page = r.read_events(from, 7, 5, |_| true).expect("read");
                got.extend(page.events);
                from = page.next;
                if page.at_end {
                    break;
                }
            }
            let want: Vec<_> = all.iter().filter(|e| e.revision >= start).cloned().collect();
            assert_eq!(got, want, "from revision {start}");
        }
        let odd = r.read_events((101, 0), 50, 50, |e| e.revision % 2 == 1).expect("read");
        assert_eq!(odd.events.len(), 25, "a filter counts against the scan, not the limit");
        assert_eq!(odd.next, (150, 1));
    }

    #[tokio::test]
    async fn closed_sagas_are_forgotten_after_the_retention_age() {
        let mut f = Fixture::new(DedupLimits { window_ns: 1_000_000, max_entries: 10 });
        f.sm.retention = RetentionLimits { max_events: 100, max_age_ns: 1_000 };
        for (i, op) in [
            Op::SagaOpen { saga_id: "s".into(), timeout_ms: 10 },
            Op::SagaCommit { saga_id: "s".into() },
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = entry(f.next, 100 + i as u64, "", "k");
            if let EntryPayload::Normal(c) = &mut e.payload {
                c.op = op;
            }
            f.next += 1;
            f.sm.apply(stream::iter([Ok((e, None))])).await.expect("apply");
        }
        assert!(f.sm.reader().saga("s").expect("saga").is_some());
        f.put(5_000, "late", "k").await;
        assert!(f.sm.reader().saga("s").expect("saga").is_none(), "forgotten after the age");
    }
}

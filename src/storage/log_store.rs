//! The Raft log on sled, with group commit.
//!
//! Invariants:
//! - An append is acknowledged (its `IOFlushed` callback fired) only after a
//!   [`Store::sync`] that began after the entries were inserted: acknowledged entries
//!   survive kill -9 and power loss.
//! - Callbacks fire in the order their appends were submitted.
//! - Votes are durable before `save_vote` returns.
//! - `last_purged` is persisted before entries are removed, so a crash mid-purge never
//!   leaves a gap that `get_log_state` would not report.
//!
//! Group commit: appends insert their entries and hand the callback to one flusher
//! thread, which drains every pending callback, syncs once, then fires them all. Many
//! concurrent proposals thus share one fsync. The queue is bounded
//! ([`FLUSH_QUEUE_CAPACITY`]): appends wait when the disk falls behind.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::mpsc;

use super::types::{Entry, LogId, TypeConfig, Vote};
use super::{decode, encode, StorageError, Store, LOG_TREE, META_TREE};

/// Max appends waiting for the flusher before `append` applies backpressure.
pub const FLUSH_QUEUE_CAPACITY: usize = 4096;
/// Max callbacks completed by one sync.
pub const FLUSH_BATCH_MAX: usize = 1024;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(k: &[u8]) -> Result<u64, StorageError> {
    let arr: [u8; 8] =
        k.try_into().map_err(|_| StorageError::Corrupt(format!("log key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Statistics of the group-commit flusher, for metrics.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Number of syncs.
    pub syncs: std::sync::atomic::AtomicU64,
    /// Appends acknowledged.
    pub appends: std::sync::atomic::AtomicU64,
    /// Total sync time, microseconds.
    pub sync_micros: std::sync::atomic::AtomicU64,
}

/// The Raft log store. Cheap to clone (handles to the same trees and flusher).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    log: sled::Tree,
    meta: sled::Tree,
    flush_tx: mpsc::Sender<IOFlushed<TypeConfig>>,
    stats: Arc<FlushStats>,
}

impl LogStore {
    /// Open the log trees and start the flusher thread (it stops when every clone of the
    /// store is dropped).
    pub fn open(store: &Store) -> Result<Self, StorageError> {
        let log = store.db().open_tree(LOG_TREE)?;
        let meta = store.db().open_tree(META_TREE)?;
        let (flush_tx, flush_rx) = mpsc::channel(FLUSH_QUEUE_CAPACITY);
        let stats = Arc::new(FlushStats::default());
        let s = store.clone();
        let st = stats.clone();
        std::thread::Builder::new()
            .name("meridian-flusher".into())
            .spawn(move || flusher_loop(s, flush_rx, st))?;
        let this = Self { store: store.clone(), log, meta, flush_tx, stats };
        this.drop_purged_leftovers()?;
        Ok(this)
    }

    /// Flusher statistics.
    pub fn stats(&self) -> Arc<FlushStats> {
        self.stats.clone()
    }

    fn get_meta<T: for<'a> serde::Deserialize<'a>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.meta.get(key)?.map(|b| decode(&b)).transpose()
    }

    /// Remove entries at or below the persisted purge point that a crash between
    /// syncing the purge marker and the deletions left behind.
    fn drop_purged_leftovers(&self) -> Result<(), StorageError> {
        let Some(purged) = self.last_purged()? else { return Ok(()) };
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        for kv in self.log.range(..=index_key(purged.index)) {
            let (k, _) = kv?;
            batch.remove(k);
            n += 1;
        }
        if n > 0 {
            self.log.apply_batch(batch)?;
            self.store.sync()?;
            tracing::info!(entries = n, purged = %purged, "dropped log entries left over by an interrupted purge");
        }
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(PURGED_KEY)?.flatten())
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(index_key(e)),
            Bound::Excluded(&e) => Bound::Excluded(index_key(e)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut expect = start;
        for kv in self.log.range((Bound::Included(index_key(start)), end)) {
            let (k, v) = kv?;
            let idx = key_index(&k)?;
            let entry: Entry = decode(&v)?;
            if entry.log_id.index != idx {
                return Err(StorageError::Corrupt(format!(
                    "log key {idx} holds entry {}",
                    entry.log_id.index
                )));
            }
            // Entries are contiguous; a gap means lost data, never silently skipped.
            if !out.is_empty() && idx != expect {
                return Err(StorageError::Corrupt(format!(
                    "log gap: expected {expect}, found {idx}"
                )));
            }
            expect = idx + 1;
            out.push(entry);
        }
        Ok(out)
    }
}

fn flusher_loop(
    store: Store,
    mut rx: mpsc::Receiver<IOFlushed<TypeConfig>>,
    stats: Arc<FlushStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch = Vec::with_capacity(FLUSH_BATCH_MAX);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < FLUSH_BATCH_MAX {
            match rx.try_recv() {
                Ok(cb) => batch.push(cb),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = store.sync();
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        metrics::histogram!("meridian_log_fsync_duration_seconds").record(micros as f64 / 1e6);
        stats.syncs.fetch_add(1, Relaxed);
        stats.sync_micros.fetch_add(micros, Relaxed);
        stats.appends.fetch_add(batch.len() as u64, Relaxed);
        for cb in batch.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(format!("log sync failed: {e}"))),
            };
            cb.io_completed(r);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.read_range(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.get_meta(VOTE_KEY)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.log.last()? {
            Some((_, v)) => Some(decode::<Entry>(&v)?.log_id),
            None => None,
        };
        // Entries at or below the purge point are garbage a crash left behind (the
        // purge marker is synced before the deletions): they never count as the log end.
        let last = last.filter(|l| last_purged_log_id.as_ref().is_none_or(|p| l.index > p.index));
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta.insert(VOTE_KEY, encode(vote)?).map_err(StorageError::from)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync()).await.map_err(io::Error::other)??;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: a lost `committed` only means re-learning it from the leader.
        self.meta.insert(COMMITTED_KEY, encode(&committed)?).map_err(StorageError::from)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), encode(&entry)?);
        }
        self.log.apply_batch(batch).map_err(StorageError::from)?;
        self.flush_tx.send(callback).await.map_err(|_| io::Error::other("log flusher stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut batch = sled::Batch::default();
        for kv in self.log.range(index_key(from)..) {
            let (k, _) = kv.map_err(StorageError::from)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(StorageError::from)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync()).await.map_err(io::Error::other)??;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        if let Some(prev) = self.last_purged()? {
            debug_assert!(prev.index <= log_id.index, "purge went backwards: {prev} > {log_id}");
        }
        self.meta.insert(PURGED_KEY, encode(&Some(log_id))?).map_err(StorageError::from)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync()).await.map_err(io::Error::other)??;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=index_key(log_id.index)) {
            let (k, _) = kv.map_err(StorageError::from)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(StorageError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::EntryPayload;

    use super::*;

    fn log_id(index: u64) -> LogId {
        LogId::new(LeaderId { term: 1, node_id: 1 }, index)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_left_below_an_interrupted_purge_do_not_end_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "t", 1).expect("store");
        let mut log = LogStore::open(&store).expect("log");
        let entries: Vec<Entry> =
            (1..=5).map(|i| Entry { log_id: log_id(i), payload: EntryPayload::Blank }).collect();
        log.append(entries, IOFlushed::noop()).await.expect("append");
        // A crash after the purge marker (beyond the log end, as after a snapshot
        // install) was synced but before the deletions reached disk.
        log.meta.insert(PURGED_KEY, encode(&Some(log_id(9))).expect("encode")).expect("insert");
        store.sync().expect("sync");
        drop(log);
        let mut log = LogStore::open(&store).expect("reopen");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(9)));
        assert_eq!(state.last_log_id, Some(log_id(9)), "leftovers must not end the log");
        assert!(log.log.is_empty(), "leftover entries are dropped on open");
    }
}

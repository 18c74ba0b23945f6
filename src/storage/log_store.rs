//! The Raft log, with group commit: entries in append-only segment files ([`wal`]),
//! the vote, the committed id and the purge point in sled's metadata tree.
//!
//! Invariants:
//! - An append is acknowledged (its `IOFlushed` callback fired) only after an
//!   `fdatasync` of the current segment that began after the entries were written:
//!   acknowledged entries survive kill -9 and power loss.
//! - Callbacks fire in the order their appends were submitted.
//! - Votes are durable before `save_vote` returns.
//! - `last_purged` is persisted before entries are removed, so a crash mid-purge never
//!   leaves a gap that `get_log_state` would not report; entries at or below it are
//!   ignored when the log is reopened.
//!
//! Group commit: appends write their entries and hand the callback to one flusher
//! thread, which drains every pending callback, syncs once, then fires them all. Many
//! concurrent proposals thus share one fsync. The queue is bounded
//! ([`FLUSH_QUEUE_CAPACITY`]): appends wait when the disk falls behind.
//!
//! Sync linger ([`LogStore::set_sync_linger`]): while it is non-zero and the previous
//! sync covered more than one entry (there is load), the flusher starts a sync no
//! sooner than the linger after the previous one began, so one fsync covers more
//! appends. The node sets it only on a leader whose followers alone form a quorum:
//! there the leader's own sync is not on the commit path while they answer, and its
//! fsyncs (~11 per follower fsync at 64 clients, each a VM exit on virtual disks) cost
//! CPU that the leader's runtime needs (docs/PERFORMANCE.md, session 14). It changes
//! when an append is acknowledged, never whether: the invariants above hold.
//!
//! The entries used to live in a sled tree; a sled flush costs ~10 ms under load
//! against ~0.5 ms for an fdatasync of one file (docs/PERFORMANCE.md). A data dir
//! from before is migrated on open ([`migrate_sled_log`]).

pub mod wal;

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::mpsc;

use self::wal::Wal;
use super::types::{Entry, LogId, TypeConfig, Vote};
use super::{decode, encode, StorageError, Store, LOG_TREE, META_TREE};

/// Max appends waiting for the flusher before `append` applies backpressure.
pub const FLUSH_QUEUE_CAPACITY: usize = 4096;
/// Max callbacks completed by one sync.
pub const FLUSH_BATCH_MAX: usize = 1024;
/// Largest sync linger accepted by [`LogStore::set_sync_linger`] (a longer one is cut).
pub const MAX_SYNC_LINGER: Duration = Duration::from_millis(20);
/// Directory of the segment files, inside the node's data dir.
pub const WAL_DIR: &str = "raft-log";

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"last_purged";

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

/// The current segment, as the flusher sees it.
type CurrentSegment = Arc<Mutex<Option<Arc<File>>>>;

/// The Raft log store. Cheap to clone (handles to the same log and flusher).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    meta: sled::Tree,
    wal: Arc<Mutex<Wal>>,
    /// Each queued append's callback and its entry count.
    flush_tx: mpsc::Sender<(IOFlushed<TypeConfig>, usize)>,
    stats: Arc<FlushStats>,
    /// Sync linger, microseconds (0: sync as soon as an append is queued).
    linger_micros: Arc<AtomicU64>,
}

impl LogStore {
    /// Open the log (migrating a sled-held log first) and start the flusher thread (it
    /// stops when every clone of the store is dropped).
    pub fn open(store: &Store) -> Result<Self, StorageError> {
        let meta = store.db().open_tree(META_TREE)?;
        let purged = last_purged(&meta)?.map(|l| l.index);
        let dir = store.dir().join(WAL_DIR);
        migrate_sled_log(store, &dir, purged)?;
        let wal = Wal::open(&dir, purged)?;
        let (flush_tx, flush_rx) = mpsc::channel(FLUSH_QUEUE_CAPACITY);
        let stats = Arc::new(FlushStats::default());
        let current = wal.current();
        let st = stats.clone();
        let linger_micros = Arc::new(AtomicU64::new(0));
        let linger = linger_micros.clone();
        std::thread::Builder::new()
            .name("meridian-flusher".into())
            .spawn(move || flusher_loop(current, flush_rx, st, linger))?;
        Ok(Self {
            store: store.clone(),
            meta,
            wal: Arc::new(Mutex::new(wal)),
            flush_tx,
            stats,
            linger_micros,
        })
    }

    /// Set the sync linger (see the module docs; at most [`MAX_SYNC_LINGER`]). Zero
    /// syncs as soon as an append is queued.
    pub fn set_sync_linger(&self, linger: Duration) {
        let micros = linger.min(MAX_SYNC_LINGER).as_micros();
        let micros = u64::try_from(micros).unwrap_or(u64::MAX);
        let old = self.linger_micros.swap(micros, std::sync::atomic::Ordering::Relaxed);
        if old != micros {
            tracing::debug!(linger_us = micros, "log sync linger");
        }
    }

    /// Flusher statistics.
    pub fn stats(&self) -> Arc<FlushStats> {
        self.stats.clone()
    }

    /// Bytes of the log's records on disk (segment files without their allocated
    /// tail).
    pub fn record_bytes(&self) -> u64 {
        self.wal().record_bytes()
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_meta<T: for<'a> serde::Deserialize<'a>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.meta.get(key)?.map(|b| decode(&b)).transpose()
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = last_purged(&self.meta)?;
        let last = self.wal().last();
        // Entries at or below the purge point are never live (the WAL drops them).
        let last = last.filter(|l| last_purged_log_id.as_ref().is_none_or(|p| l.index > p.index));
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e.saturating_add(1)),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        self.wal().read(start, end)
    }
}

fn last_purged(meta: &sled::Tree) -> Result<Option<LogId>, StorageError> {
    Ok(meta.get(PURGED_KEY)?.map(|b| decode::<Option<LogId>>(&b)).transpose()?.flatten())
}

/// Move the entries of a log kept in sled (before the segment files) into `dir`.
///
/// Crash-safe: the segments are written and synced in `<dir>.migrating`, renamed to
/// `dir` (atomic; the parent is synced), and only then is the sled tree cleared. An
/// existing `dir` next to a non-empty tree means the clearing was interrupted.
pub fn migrate_sled_log(
    store: &Store,
    dir: &Path,
    purged: Option<u64>,
) -> Result<(), StorageError> {
    let tree = store.db().open_tree(LOG_TREE)?;
    if tree.is_empty() {
        return Ok(());
    }
    if !dir.exists() {
        let tmp = PathBuf::from(format!("{}.migrating", dir.display()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        let mut wal = Wal::open(&tmp, None)?;
        let mut n = 0u64;
        for kv in tree.iter() {
            let (_, v) = kv?;
            let entry: Entry = decode(&v)?;
            if purged.is_some_and(|p| entry.log_id.index <= p) {
                continue;
            }
            wal.append(vec![(entry.log_id, v.to_vec())])?;
            n += 1;
        }
        wal.sync()?;
        drop(wal);
        std::fs::rename(&tmp, dir)?;
        if let Some(parent) = dir.parent() {
            wal::sync_dir(parent)?;
        }
        tracing::info!(entries = n, "moved the raft log from sled into segment files");
    }
    tree.clear()?;
    store.sync()?;
    Ok(())
}

/// How long the flusher waits before its next sync: until `linger` (at most
/// [`MAX_SYNC_LINGER`]) after the previous sync began, if that one covered more than
/// one entry; otherwise (no load, or the linger off) not at all.
fn linger_wait(
    linger: Duration,
    last_entries: usize,
    since_last_start: Duration,
) -> Option<Duration> {
    if last_entries <= 1 {
        return None;
    }
    linger.min(MAX_SYNC_LINGER).checked_sub(since_last_start).filter(|w| !w.is_zero())
}

fn flusher_loop(
    current: CurrentSegment,
    mut rx: mpsc::Receiver<(IOFlushed<TypeConfig>, usize)>,
    stats: Arc<FlushStats>,
    linger_micros: Arc<AtomicU64>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch = Vec::with_capacity(FLUSH_BATCH_MAX);
    let mut last_start = Instant::now();
    let mut last_entries = 0usize;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        let linger = Duration::from_micros(linger_micros.load(Relaxed));
        if let Some(wait) = linger_wait(linger, last_entries, last_start.elapsed()) {
            // Group commit over time, not only over what is already queued: the
            // appends arriving meanwhile share the next sync.
            metrics::counter!("meridian_log_sync_lingers_total").increment(1);
            std::thread::sleep(wait);
        }
        while batch.len() < FLUSH_BATCH_MAX {
            match rx.try_recv() {
                Ok(cb) => batch.push(cb),
                Err(_) => break,
            }
        }
        last_entries = batch.iter().map(|(_, n)| n).sum();
        let started = Instant::now();
        last_start = started;
        // Every queued append wrote its records before queueing its callback, and a
        // rotation synced the segment it left: syncing the current one covers them all.
        let file = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = file.map_or(Ok(()), |f| f.sync_data());
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        metrics::histogram!("meridian_log_fsync_duration_seconds").record(micros as f64 / 1e6);
        stats.syncs.fetch_add(1, Relaxed);
        stats.sync_micros.fetch_add(micros, Relaxed);
        stats.appends.fetch_add(batch.len() as u64, Relaxed);
        for (cb, _) in batch.drain(..) {
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
        Ok(self.log_state()?)
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
        // `committed` reaches sled unsynced, so sled's own flush may have made it durable
        // before the log sync that covers it (a leader's sync may trail its commits, see
        // the linger). The log's durable entries up to it were a prefix of the committed
        // log when it was saved, so the smaller of the two is committed and readable.
        let committed = self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten();
        let last = self.log_state()?.last_log_id;
        Ok(match (committed, last) {
            (Some(c), Some(l)) if c.index > l.index => Some(l),
            (Some(_), None) => None,
            (c, _) => c,
        })
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
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id, encode(&e)?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        let count = encoded.len();
        self.wal().append(encoded)?;
        self.flush_tx
            .send((callback, count))
            .await
            .map_err(|_| io::Error::other("log flusher stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let wal = self.wal.clone();
        let index = last_log_id.map(|l| l.index);
        tokio::task::spawn_blocking(move || {
            wal.lock().unwrap_or_else(|e| e.into_inner()).truncate_after(index)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        if let Some(prev) = last_purged(&self.meta)? {
            debug_assert!(prev.index <= log_id.index, "purge went backwards: {prev} > {log_id}");
        }
        self.meta.insert(PURGED_KEY, encode(&Some(log_id))?).map_err(StorageError::from)?;
        let store = self.store.clone();
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || {
            store.sync()?;
            wal.lock().unwrap_or_else(|e| e.into_inner()).purge(log_id.index)
        })
        .await
        .map_err(io::Error::other)??;
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

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| Entry { log_id: log_id(i), payload: EntryPayload::Blank }).collect()
    }

    /// A log store in a new temp dir (kept alive by the returned guard).
    fn fresh() -> (tempfile::TempDir, Store, LogStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "t", 1).expect("store");
        let log = LogStore::open(&store).expect("log");
        (dir, store, log)
    }

    #[test]
    fn the_flusher_lingers_only_after_a_sync_of_several_entries() {
        let ms = Duration::from_millis;
        assert_eq!(linger_wait(ms(2), 5, ms(0)), Some(ms(2)));
        assert_eq!(
            linger_wait(ms(2), 5, Duration::from_micros(500)),
            Some(Duration::from_micros(1_500))
        );
        assert_eq!(linger_wait(ms(2), 5, ms(2)), None, "the linger has passed");
        assert_eq!(linger_wait(ms(2), 5, ms(3)), None);
        assert_eq!(linger_wait(ms(2), 1, ms(0)), None, "one entry: no load, sync at once");
        assert_eq!(linger_wait(ms(2), 0, ms(0)), None);
        assert_eq!(linger_wait(Duration::ZERO, 100, ms(0)), None, "off");
        assert_eq!(linger_wait(ms(500), 100, ms(0)), Some(MAX_SYNC_LINGER), "capped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_are_acknowledged_and_durable_with_a_linger() {
        let (_dir, store, mut log) = fresh();
        log.set_sync_linger(MAX_SYNC_LINGER);
        let mut waits = Vec::new();
        for i in 0..20u64 {
            let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
            let callback = IOFlushed::<TypeConfig>::signal(tx);
            log.append(entries(i * 3 + 1..=i * 3 + 3), callback).await.expect("append");
            waits.push(rx);
        }
        for rx in waits {
            let acked = tokio::time::timeout(Duration::from_secs(10), rx).await;
            acked.expect("acknowledged within the deadline").expect("sender").expect("synced");
        }
        drop(log);
        let log = LogStore::open(&store).expect("reopen");
        assert_eq!(log.read_range(..).expect("read").len(), 60, "every acknowledged entry");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_is_never_read_beyond_the_log() {
        let (_dir, store, mut log) = fresh();
        log.append(entries(1..=5), IOFlushed::noop()).await.expect("append");
        log.wal().sync().expect("sync wal");
        // sled persisted a commit point the log's sync had not reached yet.
        log.save_committed(Some(log_id(8))).await.expect("save");
        store.sync().expect("sync");
        drop(log);
        let mut log = LogStore::open(&store).expect("reopen");
        assert_eq!(log.read_committed().await.expect("read"), Some(log_id(5)));
        log.save_committed(Some(log_id(3))).await.expect("save");
        assert_eq!(log.read_committed().await.expect("read"), Some(log_id(3)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_left_below_an_interrupted_purge_do_not_end_the_log() {
        let (_dir, store, mut log) = fresh();
        log.append(entries(1..=5), IOFlushed::noop()).await.expect("append");
        // A crash after the purge marker (beyond the log end, as after a snapshot
        // install) was synced but before the entries were dropped.
        log.meta.insert(PURGED_KEY, encode(&Some(log_id(9))).expect("encode")).expect("insert");
        store.sync().expect("sync");
        log.wal().sync().expect("sync wal");
        drop(log);
        let mut log = LogStore::open(&store).expect("reopen");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(9)));
        assert_eq!(state.last_log_id, Some(log_id(9)), "leftovers must not end the log");
        assert!(log.read_range(..).expect("read").is_empty(), "leftover entries are dropped");
        log.append(entries(10..=11), IOFlushed::noop())
            .await
            .expect("append after the purge point");
        assert_eq!(log.read_range(..).expect("read").len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_kept_in_sled_is_migrated_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "t", 1).expect("store");
        let tree = store.db().open_tree(LOG_TREE).expect("tree");
        for e in entries(1..=7) {
            tree.insert(e.log_id.index.to_be_bytes(), encode(&e).expect("encode")).expect("insert");
        }
        let meta = store.db().open_tree(META_TREE).expect("meta");
        meta.insert(PURGED_KEY, encode(&Some(log_id(2))).expect("encode")).expect("insert");
        store.sync().expect("sync");
        let mut log = LogStore::open(&store).expect("open migrates");
        assert!(tree.is_empty(), "the sled tree is cleared");
        let got: Vec<u64> =
            log.read_range(..).expect("read").iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, vec![3, 4, 5, 6, 7]);
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(7)));
        drop(log);
        let log = LogStore::open(&store).expect("reopen");
        assert_eq!(log.read_range(..).expect("read").len(), 5, "nothing migrated twice");
    }
}

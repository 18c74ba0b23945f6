//! The Raft log's entries in append-only segment files (`<data>/raft-log/*.wal`).
//!
//! Why not sled: making a sled write durable takes `Db::flush`, which writes every
//! dirty buffer of every tree (the state machine's too) with one `sync_file_range` per
//! buffer: ~10 ms per flush under load (profiled, see docs/PERFORMANCE.md). An append
//! here is one `write` of all the batch's records; durability is one `fdatasync` of the
//! current segment, shared by every append that came before it (group commit).
//!
//! Record: `len: u32 LE | xxh3-64(payload): u64 LE | payload` (postcard `Entry`).
//! Segment files are named by the first index written to them (`{index:020}.wal`);
//! indexes only grow within and across segments (a truncation cuts the tail and
//! deletes later segments before anything is appended again).
//!
//! The current segment's file is allocated ahead of the appends in
//! [`PREALLOCATE_BYTES`] chunks (`posix_fallocate`, like etcd's WAL), so a sync after
//! an append does not also have to journal a new file size and block allocation: an
//! `fdatasync` of 100 B measured ~95 µs into allocated space against ~135 µs at the
//! end of the file on the reference machine. The allocated tail reads as zeros; a
//! zero header is never a record (a payload is never empty), so it ends the scan.
//!
//! Invariants:
//! - `positions` holds one position per live index, contiguous from `first_index`.
//! - Only the last segment's file extends past its records (the allocated tail): a
//!   segment is cut to its records before the next one is created, and on open the
//!   last one is cut back to its valid records before anything is appended, so bytes
//!   of an append that was lost in a crash can never follow a later append.
//! - A segment is rotated only after `sync_data` of the old one and an fsync of the
//!   directory for the new one: syncing the current segment makes every appended
//!   record durable.
//! - Recovery accepts a torn record only at the end of the last segment (a crash
//!   mid-write of an append that was never acknowledged) and cuts it off; a bad record
//!   anywhere else is corruption and refuses to open.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::xxh3_64;

use super::super::types::{Entry, LogId};
use super::super::{decode, StorageError};

/// Segment size at which the next append starts a new segment, bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Allocation step of the current segment's file, bytes (at most the segment size).
pub const PREALLOCATE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest record accepted (an entry holds at most a few MiB of values), bytes.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// Most bytes one `pread` of [`Wal::read`] covers (a single larger record is read whole).
pub const READ_RUN_BYTES: u64 = 1024 * 1024;
/// Record header: length and checksum, bytes.
const HEADER_BYTES: usize = 12;
/// Segment file name suffix.
const SUFFIX: &str = ".wal";

/// Where one live entry is.
#[derive(Debug, Clone, Copy)]
struct Pos {
    log_id: LogId,
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// Where the records end (the next append's offset).
    len: u64,
    /// The file's size: `len` plus any allocated tail.
    allocated: u64,
}

/// The segment files and the index of live entries.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    positions: VecDeque<Pos>,
    /// The segment appends go to; the flusher syncs it (shared handle).
    current: Arc<Mutex<Option<Arc<File>>>>,
    /// Rotation threshold, bytes ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> StorageError {
    StorageError::Io(std::io::Error::new(e.kind(), format!("{context}: {e}")))
}

fn corrupt(message: String) -> StorageError {
    StorageError::Corrupt(message)
}

/// fsync a directory so a created, renamed or deleted file in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("fsync {}", dir.display()), e))
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

/// Encode one record (header and payload) onto `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), StorageError> {
    if payload.len() > MAX_RECORD_BYTES {
        return Err(corrupt(format!(
            "log entry of {} bytes exceeds {MAX_RECORD_BYTES}",
            payload.len()
        )));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// What follows a segment's valid records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing: the file ends with its last record.
    None,
    /// Zeros only: allocated space never written.
    Allocated,
    /// Bytes that are not a valid record (a torn write, or damage).
    Torn,
}

/// Records of one segment: (offset, payload length, entry); the offset where valid data
/// ends; what follows it; the file's size.
type Scan = (Vec<(u64, u32, Entry)>, u64, Tail, u64);

fn tail_after(bytes: &[u8]) -> Tail {
    if bytes.is_empty() {
        Tail::None
    } else if bytes.iter().all(|b| *b == 0) {
        Tail::Allocated
    } else {
        Tail::Torn
    }
}

fn scan(path: &Path) -> Result<Scan, StorageError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io(format!("read {}", path.display()), e))?;
    let size = bytes.len() as u64;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
            return Ok((records, at as u64, tail_after(&bytes[at..]), size));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let sum =
            u64::from_le_bytes(header[4..12].try_into().map_err(|_| corrupt("header".into()))?);
        let start = at + HEADER_BYTES;
        let Some(payload) = bytes.get(start..start + len) else {
            return Ok((records, at as u64, tail_after(&bytes[at..]), size));
        };
        if len == 0 || len > MAX_RECORD_BYTES || xxh3_64(payload) != sum {
            return Ok((records, at as u64, tail_after(&bytes[at..]), size));
        }
        let entry: Entry = decode(payload)?;
        records.push((start as u64, len as u32, entry));
        at = start + len;
    }
    Ok((records, at as u64, Tail::None, size))
}

impl Segment {
    /// Allocate the file up to `size` bytes. A failure is not an error: appends then
    /// extend the file as they go (slower syncs); a full disk fails the write itself.
    fn allocate(&mut self, size: u64) {
        if let Err(e) = fs2::FileExt::allocate(&*self.file, size) {
            tracing::warn!(path = %self.path.display(), size, error = %e, "cannot preallocate the log");
        }
        self.allocated = size;
    }

    /// Shrink the file to its records (before the next segment starts).
    fn cut_allocated_tail(&mut self) -> Result<(), StorageError> {
        if self.allocated > self.len {
            self.file
                .set_len(self.len)
                .map_err(|e| io(format!("truncate {}", self.path.display()), e))?;
            self.allocated = self.len;
        }
        Ok(())
    }
}

impl Wal {
    /// Open (or create) the log in `dir`, dropping entries at or below `purged`.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<Self, StorageError> {
        Self::open_with(dir, purged, SEGMENT_BYTES)
    }

    /// [`Wal::open`] with a rotation threshold of `segment_bytes`.
    pub fn open_with(
        dir: &Path,
        purged: Option<u64>,
        segment_bytes: u64,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io(format!("list {}", dir.display()), e))? {
            let name = item.map_err(|e| io("list", e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            positions: VecDeque::new(),
            current: Arc::new(Mutex::new(None)),
            segment_bytes,
        };
        let last = firsts.last().copied();
        for first in firsts {
            let path = segment_path(dir, first);
            let (records, valid_len, tail, size) = scan(&path)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io(format!("open {}", path.display()), e))?;
            if tail != Tail::None {
                if Some(first) != last {
                    return Err(corrupt(format!(
                        "bad record at byte {valid_len} of {}",
                        path.display()
                    )));
                }
                if tail == Tail::Torn {
                    tracing::warn!(path = %path.display(), valid_len, "cutting a torn record off the log's end");
                }
                // Cut the allocated tail too: the next append must not leave bytes of
                // an older, lost append after it (see the invariants).
                file.set_len(valid_len).map_err(|e| io("truncate the log's tail", e))?;
                file.sync_data().map_err(|e| io("sync", e))?;
            }
            debug_assert!(tail != Tail::None || size == valid_len);
            for (offset, len, entry) in records {
                let index = entry.log_id.index;
                if purged.is_some_and(|p| index <= p) {
                    continue;
                }
                if let Some(prev) = wal.positions.back() {
                    if index != prev.log_id.index + 1 {
                        return Err(corrupt(format!(
                            "log gap in {}: {} follows {}",
                            path.display(),
                            index,
                            prev.log_id.index
                        )));
                    }
                }
                wal.positions.push_back(Pos { log_id: entry.log_id, segment: first, offset, len });
            }
            let seg = Segment { file: Arc::new(file), path, len: valid_len, allocated: valid_len };
            wal.segments.insert(first, seg);
        }
        wal.set_current();
        Ok(wal)
    }

    fn set_current(&self) {
        let file = self.segments.values().next_back().map(|s| s.file.clone());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = file;
    }

    /// The handle through which the flusher syncs the current segment.
    pub fn current(&self) -> Arc<Mutex<Option<Arc<File>>>> {
        self.current.clone()
    }

    /// True when no live entry is left.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The last live entry's log id.
    pub fn last(&self) -> Option<LogId> {
        self.positions.back().map(|p| p.log_id)
    }

    /// Append encoded entries `(log id, postcard payload)` with one write; not synced.
    pub fn append(&mut self, entries: Vec<(LogId, Vec<u8>)>) -> Result<(), StorageError> {
        let Some(first) = entries.first().map(|e| e.0.index) else { return Ok(()) };
        if let Some(prev) = self.positions.back() {
            if first != prev.log_id.index + 1 {
                return Err(corrupt(format!("append of {first} after {}", prev.log_id.index)));
            }
        }
        let rotate = self.segments.values().next_back().is_none_or(|s| s.len >= self.segment_bytes);
        if rotate {
            self.rotate(first)?;
        }
        let chunk = PREALLOCATE_BYTES.min(self.segment_bytes).max(1);
        let (&segment, seg) =
            self.segments.iter_mut().next_back().ok_or_else(|| corrupt("no segment".into()))?;
        let mut buf = Vec::with_capacity(entries.iter().map(|e| e.1.len() + HEADER_BYTES).sum());
        let mut new = Vec::with_capacity(entries.len());
        for (i, (log_id, payload)) in entries.iter().enumerate() {
            if log_id.index != first + i as u64 {
                return Err(corrupt(format!("append batch not contiguous at {}", log_id.index)));
            }
            let offset = seg.len + (buf.len() + HEADER_BYTES) as u64;
            encode_record(payload, &mut buf)?;
            new.push(Pos { log_id: *log_id, segment, offset, len: payload.len() as u32 });
        }
        let end = seg.len + buf.len() as u64;
        if end > seg.allocated {
            seg.allocate(end.div_ceil(chunk).saturating_mul(chunk));
        }
        seg.file
            .write_all_at(&buf, seg.len)
            .map_err(|e| io(format!("write {}", seg.path.display()), e))?;
        seg.len = end;
        self.positions.extend(new);
        Ok(())
    }

    /// Close the current segment (synced) and start one named `first`.
    fn rotate(&mut self, first: u64) -> Result<(), StorageError> {
        if let Some(seg) = self.segments.values_mut().next_back() {
            seg.cut_allocated_tail()?;
            seg.file.sync_data().map_err(|e| io(format!("sync {}", seg.path.display()), e))?;
        }
        let path = segment_path(&self.dir, first);
        if self.segments.contains_key(&first) {
            return Err(corrupt(format!("segment {} exists", path.display())));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(format!("create {}", path.display()), e))?;
        sync_dir(&self.dir)?;
        self.segments.insert(first, Segment { file: Arc::new(file), path, len: 0, allocated: 0 });
        self.set_current();
        Ok(())
    }

    /// Bytes of the records in the segment files: the log written, without the
    /// allocated tail of the current segment.
    pub fn record_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// Live entries with index in `start..end` (end exclusive; `None`: to the end).
    ///
    /// Records that sit back to back in one segment are read with one `pread` of the
    /// whole run (at most [`READ_RUN_BYTES`], or one record if that is larger): a
    /// replication batch or an apply batch is one or a few syscalls, not one per entry.
    pub fn read(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let Some(first) = self.positions.front().map(|p| p.log_id.index) else {
            return Ok(Vec::new());
        };
        let from = start.saturating_sub(first) as usize;
        let to = match end {
            Some(e) => (e.saturating_sub(first) as usize).min(self.positions.len()),
            None => self.positions.len(),
        };
        let from = from.min(to);
        let mut out = Vec::with_capacity(to - from);
        let mut buf = Vec::new();
        let mut i = from;
        while i < to {
            let head = self.positions[i];
            let seg = self
                .segments
                .get(&head.segment)
                .ok_or_else(|| corrupt(format!("segment {} missing", head.segment)))?;
            // The run: the records after `head` that start where the previous one ends.
            let mut run_end = head.offset + u64::from(head.len);
            let mut j = i + 1;
            while j < to {
                let next = self.positions[j];
                let contiguous = next.segment == head.segment
                    && next.offset == run_end + HEADER_BYTES as u64
                    && next.offset + u64::from(next.len) - head.offset <= READ_RUN_BYTES;
                if !contiguous {
                    break;
                }
                run_end = next.offset + u64::from(next.len);
                j += 1;
            }
            let run_len = usize::try_from(run_end - head.offset)
                .map_err(|_| corrupt(format!("read run of {} bytes", run_end - head.offset)))?;
            buf.clear();
            buf.resize(run_len, 0);
            seg.file
                .read_exact_at(&mut buf, head.offset)
                .map_err(|e| io(format!("read {}", seg.path.display()), e))?;
            for pos in self.positions.range(i..j) {
                // Each record's payload within the run; the headers between them were
                // checked when the records were written or recovered.
                let at = (pos.offset - head.offset) as usize;
                let entry: Entry = decode(&buf[at..at + pos.len as usize])?;
                if entry.log_id != pos.log_id {
                    return Err(corrupt(format!(
                        "log position {} holds {}",
                        pos.log_id, entry.log_id
                    )));
                }
                out.push(entry);
            }
            i = j;
        }
        debug_assert_eq!(out.len(), to - from, "one entry per live position read");
        Ok(out)
    }

    /// Remove every entry after `index` (all of them for `None`), durably.
    pub fn truncate_after(&mut self, index: Option<u64>) -> Result<(), StorageError> {
        let keep = match (index, self.positions.front()) {
            (_, None) => return Ok(()),
            (None, Some(_)) => 0,
            (Some(i), Some(f)) => (i + 1).saturating_sub(f.log_id.index) as usize,
        };
        let Some(cut) = self.positions.get(keep).copied() else { return Ok(()) };
        self.positions.truncate(keep);
        let later: Vec<u64> = self.segments.range(cut.segment + 1..).map(|(k, _)| *k).collect();
        for first in later {
            if let Some(seg) = self.segments.remove(&first) {
                std::fs::remove_file(&seg.path)
                    .map_err(|e| io(format!("remove {}", seg.path.display()), e))?;
            }
        }
        let seg = self
            .segments
            .get_mut(&cut.segment)
            .ok_or_else(|| corrupt("cut segment missing".into()))?;
        let at = cut.offset - HEADER_BYTES as u64;
        seg.file.set_len(at).map_err(|e| io(format!("truncate {}", seg.path.display()), e))?;
        seg.file.sync_data().map_err(|e| io("sync", e))?;
        seg.len = at;
        seg.allocated = at;
        sync_dir(&self.dir)?;
        self.set_current();
        Ok(())
    }

    /// Forget entries at or below `index` and delete segments holding only those (the
    /// caller has made the purge point durable first).
    pub fn purge(&mut self, index: u64) -> Result<(), StorageError> {
        while self.positions.front().is_some_and(|p| p.log_id.index <= index) {
            self.positions.pop_front();
        }
        // A segment is entirely at or below `index` when the next one starts at or
        // below `index + 1`. The last segment is kept (appends go there).
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = false;
        for pair in firsts.windows(2) {
            if pair[1] <= index + 1 {
                if let Some(seg) = self.segments.remove(&pair[0]) {
                    std::fs::remove_file(&seg.path)
                        .map_err(|e| io(format!("remove {}", seg.path.display()), e))?;
                    removed = true;
                }
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Make every appended record durable now.
    pub fn sync(&self) -> Result<(), StorageError> {
        match self.segments.values().next_back() {
            Some(seg) => seg.file.sync_data().map_err(|e| io("sync", e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::EntryPayload;

    use super::*;
    use crate::record::Op;
    use crate::storage::encode;

    fn record(index: u64) -> (LogId, Vec<u8>) {
        let log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, index);
        (log_id, encode(&Entry { log_id, payload: EntryPayload::Blank }).expect("encode"))
    }

    fn indexes(wal: &Wal, start: u64, end: Option<u64>) -> Vec<u64> {
        wal.read(start, end).expect("read").iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn appends_survive_reopen_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open_with(dir.path(), None, 100).expect("open");
        for i in 1..=20 {
            wal.append(vec![record(i)]).expect("append");
        }
        assert!(wal.segments.len() >= 3, "small segments rotate: {}", wal.segments.len());
        wal.sync().expect("sync");
        drop(wal);
        let wal = Wal::open_with(dir.path(), None, 100).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), (1..=20).collect::<Vec<_>>());
        assert_eq!(indexes(&wal, 5, Some(8)), vec![5, 6, 7]);
        assert_eq!(wal.last().map(|l| l.index), Some(20));
    }

    /// An entry carrying a put of `size` bytes, each the index's low byte.
    fn sized(index: u64, size: usize) -> (LogId, Vec<u8>) {
        use crate::hlc::Timestamp;
        use crate::record::{Command, Source};
        let log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, index);
        let cmd = Command {
            request_id: format!("r{index}"),
            saga_id: String::new(),
            trace_id: String::new(),
            hlc: Timestamp { wall_ns: index, logical: 0, node: 1 },
            source: Source { node_id: 1, region: "r".into() },
            op: Op::Put {
                key: b"k".to_vec(),
                value: vec![index as u8; size],
                expected_version: None,
            },
        };
        (log_id, encode(&Entry { log_id, payload: EntryPayload::Normal(cmd) }).expect("encode"))
    }

    #[test]
    fn range_reads_split_at_segments_and_at_the_run_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Segments of ~2 MiB; records from 1 B to 1.5 MiB, so reads cross segment
        // boundaries, runs stop at READ_RUN_BYTES, and one record can exceed a run.
        let mut wal = Wal::open_with(dir.path(), None, 2 * 1024 * 1024).expect("open");
        let sizes = [10usize, 700 * 1024, 100, 300 * 1024, 5, 1500 * 1024, 64, 400 * 1024, 1];
        let mut index = 1;
        for round in 0..3 {
            // One append of several records, then single appends.
            let batch: Vec<_> = sizes
                .iter()
                .map(|&n| {
                    let r = sized(index, n + round);
                    index += 1;
                    r
                })
                .collect();
            wal.append(batch).expect("append batch");
            for &n in &sizes[..3] {
                wal.append(vec![sized(index, n)]).expect("append");
                index += 1;
            }
        }
        assert!(wal.segments.len() >= 3, "reads cross segments: {}", wal.segments.len());
        let check = |wal: &Wal, start: u64, end: Option<u64>| {
            let got = wal.read(start, end).expect("read");
            let last = end.unwrap_or(index);
            assert_eq!(got.len() as u64, last - start, "entries {start}..{last}");
            for (e, want) in got.iter().zip(start..) {
                assert_eq!(e.log_id.index, want);
                let EntryPayload::Normal(cmd) = &e.payload else { panic!("payload of {want}") };
                let Op::Put { value, .. } = &cmd.op else { panic!("op of {want}") };
                assert!(value.iter().all(|&b| b == want as u8), "value of {want}");
            }
        };
        for start in 1..index {
            check(&wal, start, None);
            check(&wal, start, Some((start + 3).min(index)));
        }
        wal.sync().expect("sync");
        drop(wal);
        let wal = Wal::open_with(dir.path(), None, 2 * 1024 * 1024).expect("reopen");
        check(&wal, 1, None);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), None).expect("open");
        wal.append(vec![record(1), record(2), record(3)]).expect("append");
        let seg = wal.segments.values().next().expect("segment");
        let (path, full) = (seg.path.clone(), seg.len as usize);
        drop(wal);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.truncate(full); // without the allocated tail
        let (_, mut partial) = record(4);
        let mut rec = Vec::new();
        encode_record(&partial, &mut rec).expect("encode");
        rec.truncate(rec.len() - 2);
        partial.clear();
        bytes.extend_from_slice(&rec);
        std::fs::write(&path, &bytes).expect("write torn record");
        let mut wal = Wal::open(dir.path(), None).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), vec![1, 2, 3]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), full as u64);
        wal.append(vec![record(4)]).expect("append after cut");
        drop(wal);
        let wal = Wal::open(dir.path(), None).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_bad_record_before_the_last_segment_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open_with(dir.path(), None, 50).expect("open");
        for i in 1..=6 {
            wal.append(vec![record(i)]).expect("append");
        }
        let first = wal.segments.values().next().expect("segment").path.clone();
        drop(wal);
        let mut bytes = std::fs::read(&first).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&first, &bytes).expect("write");
        let err = Wal::open_with(dir.path(), None, 50).expect_err("corrupt");
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
    }

    #[test]
    fn truncate_and_purge_cut_files_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open_with(dir.path(), None, 100).expect("open");
        for i in 1..=30 {
            wal.append(vec![record(i)]).expect("append");
        }
        wal.truncate_after(Some(17)).expect("truncate");
        assert_eq!(wal.last().map(|l| l.index), Some(17));
        wal.append(vec![record(18), record(19)]).expect("append after truncate");
        let segments = wal.segments.len();
        wal.purge(10).expect("purge");
        assert!(wal.segments.len() < segments, "whole purged segments are deleted");
        assert_eq!(indexes(&wal, 0, None), (11..=19).collect::<Vec<_>>());
        drop(wal);
        let mut wal = Wal::open_with(dir.path(), Some(10), 100).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), (11..=19).collect::<Vec<_>>());
        wal.truncate_after(None).expect("truncate all");
        assert!(wal.is_empty());
        drop(wal);
        let wal = Wal::open_with(dir.path(), Some(10), 100).expect("reopen");
        assert!(wal.is_empty(), "{:?}", indexes(&wal, 0, None));
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).expect("meta").len()
    }

    #[test]
    fn the_current_segment_is_allocated_ahead_and_cut_back_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), None).expect("open");
        wal.append(vec![record(1), record(2)]).expect("append");
        let seg = wal.segments.values().next().expect("segment");
        let (path, len) = (seg.path.clone(), seg.len);
        assert_eq!(size(&path), PREALLOCATE_BYTES, "allocated ahead of {len} bytes");
        assert_eq!(wal.record_bytes(), len, "the allocated tail is not log written");
        drop(wal);
        let mut wal = Wal::open(dir.path(), None).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), vec![1, 2], "zeros end the scan");
        assert_eq!(size(&path), len, "the tail is cut before appends go on");
        wal.append(vec![record(3)]).expect("append");
        drop(wal);
        let wal = Wal::open(dir.path(), None).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), vec![1, 2, 3]);
    }

    #[test]
    fn a_rotated_segment_keeps_only_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open_with(dir.path(), None, 100).expect("open");
        for i in 1..=10 {
            wal.append(vec![record(i)]).expect("append");
        }
        let segs: Vec<(PathBuf, u64)> =
            wal.segments.values().map(|s| (s.path.clone(), s.len)).collect();
        assert!(segs.len() >= 2);
        for (path, len) in &segs[..segs.len() - 1] {
            assert_eq!(size(path), *len, "{}", path.display());
        }
    }

    #[test]
    fn bytes_of_a_lost_append_never_follow_a_later_one() {
        // A crash persisted records 1 and 3 of an unsynced append but not 2 (zeros).
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), None).expect("open");
        wal.append(vec![record(1), record(2), record(3)]).expect("append");
        let path = wal.segments.values().next().expect("segment").path.clone();
        let second = wal.positions[1];
        drop(wal);
        let mut bytes = std::fs::read(&path).expect("read");
        let from = (second.offset - HEADER_BYTES as u64) as usize;
        bytes[from..second.offset as usize + second.len as usize].fill(0);
        std::fs::write(&path, &bytes).expect("write");
        let mut wal = Wal::open(dir.path(), None).expect("reopen");
        assert_eq!(indexes(&wal, 0, None), vec![1]);
        // The new leader's entry 2 has the same size as the lost one.
        let log_id = LogId::new(LeaderId { term: 2, node_id: 2 }, 2);
        let entry = encode(&Entry { log_id, payload: EntryPayload::Blank }).expect("encode");
        assert_eq!(entry.len(), second.len as usize);
        wal.append(vec![(log_id, entry)]).expect("append");
        drop(wal);
        let wal = Wal::open(dir.path(), None).expect("reopen");
        let entries = wal.read(0, None).expect("read");
        let ids: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
        assert_eq!(ids, vec![record(1).0, log_id], "the stale record 3 is gone");
    }

    #[test]
    fn out_of_order_appends_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), None).expect("open");
        wal.append(vec![record(1)]).expect("append");
        assert!(wal.append(vec![record(3)]).is_err());
        assert!(wal.append(vec![record(2), record(4)]).is_err());
    }
}

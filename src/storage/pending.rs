//! Write overlays over the state-machine tree.
//!
//! Two layers sit above sled:
//! - [`Pending`]: the writes of the entries of one `apply()` call (bounded by
//!   [`MAX_PENDING_ENTRIES`] and [`MAX_PENDING_BYTES`]), private to the state machine
//!   until the call publishes them;
//! - [`Overlay`]: published writes not yet in sled, shared with readers, written to
//!   sled as one atomic batch when it holds [`FLUSH_ENTRIES`] entries or
//!   [`FLUSH_BYTES`] bytes (and before a snapshot is taken).
//!
//! Why: every sled batch rolls sled's io buffer twice and hands each write to sled's
//! io thread pool, which wakes all of its idle threads (`notify_all`); a batch cost
//! ~20 context switches on every node. With one batch per `apply()` call that was most
//! of the CPU of a write at low concurrency and 0.25-0.35 ms on the critical path of
//! every write at one client (docs/PERFORMANCE.md). Sled holds the state machine only
//! as a cache of the Raft log anyway: it is not synced per batch, and after a crash
//! the node re-applies the log from the applied index that sled recovered, so keeping
//! applied entries in memory a little longer changes nothing about durability (the
//! log is purged only after a snapshot, which flushes the overlay first).
//!
//! Invariants:
//! - every read through the layers (point reads and ordered scans) sees exactly the
//!   state the tree would have if each earlier write had been applied on its own, so
//!   apply stays a pure function of the log and batch boundaries (which differ
//!   between replicas) never change what any replica computes;
//! - readers see whole `apply()` calls: a call's writes become visible together;
//! - only the state-machine task publishes and flushes, and a flush keeps the flushed
//!   writes visible in the overlay until sled holds all of them, so a reader that
//!   misses the overlay finds a value at least as new in the tree.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Deserialize;

use super::{decode, StorageError};

/// Max entries applied into one [`Pending`] before the call publishes it.
pub const MAX_PENDING_ENTRIES: usize = 1_024;
/// Max bytes of keys and values held by one [`Pending`] before it is published.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// The [`Overlay`] is written to sled once it holds this many applied entries.
pub const FLUSH_ENTRIES: usize = 256;
/// The [`Overlay`] is written to sled once it holds this many bytes.
pub const FLUSH_BYTES: usize = 4 << 20;
/// While flushes are paused (a snapshot is being dumped from the tree), apply waits
/// once the overlay holds this many bytes.
pub const PAUSED_MAX_BYTES: usize = 64 << 20;
/// Keys copied from the overlay per lock acquisition by a scan of the apply task.
const CURSOR_CHUNK: usize = 64;

/// Buffered writes: `Some(value)` is an insert, `None` a removal.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// One key of a scan: `None` hides the key of a lower layer.
type Item = Result<(Vec<u8>, Option<Vec<u8>>), StorageError>;

#[derive(Default)]
struct Published {
    writes: Writes,
    entries: usize,
    bytes: usize,
}

/// Applied writes that are not in sled yet, shared by the state machine and readers.
pub struct Overlay {
    published: RwLock<Published>,
    /// Held across a whole flush, and by anything else that writes the tree directly.
    flushing: Mutex<()>,
    /// True while flushes are paused: the tree is frozen for a snapshot dump.
    paused: tokio::sync::watch::Sender<bool>,
}

impl Default for Overlay {
    fn default() -> Self {
        Self {
            published: RwLock::default(),
            flushing: Mutex::default(),
            paused: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Overlay {
    fn read(&self) -> RwLockReadGuard<'_, Published> {
        // A poisoned lock holds consistent data: every writer replaces whole maps.
        self.published.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Published> {
        self.published.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold off flushes (for a direct write to the tree that must not be undone by a
    /// flush of an older overlay value).
    pub fn lock_flushes(&self) -> MutexGuard<'_, ()> {
        self.flushing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` of `key`'s overlay state (`Some(None)`: removed), or None when the overlay
    /// does not hold `key`.
    fn with<T>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> T) -> Option<T> {
        self.read().writes.get(key).map(|v| f(v.as_deref()))
    }

    /// Run `f` on the current value of `key` (the overlay's, else the tree's).
    pub fn get_with<T>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let mut f = Some(f);
        let held = self.with(key, |v| match (v, f.take()) {
            (Some(v), Some(f)) => f(v).map(Some),
            _ => Ok(None),
        });
        match (held, f) {
            (Some(r), _) => r,
            // Not in the overlay: the tree holds this value or a newer one.
            (None, Some(f)) => match tree.get(key)? {
                Some(v) => f(&v).map(Some),
                None => Ok(None),
            },
            (None, None) => Ok(None),
        }
    }

    /// Live keys and values in `[lo, hi)`: the overlay's range is copied up front (it
    /// is bounded), so every key is at least as new as when the scan started.
    pub fn range(&self, tree: &sled::Tree, lo: &[u8], hi: &[u8]) -> Merged<'static> {
        let copied: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let p = self.read();
            p.writes.range::<[u8], _>(bounds(lo, hi)).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        Merged::new(vec![Box::new(copied.into_iter().map(Ok)), tree_source(tree, lo, hi)])
    }

    /// Make the writes of `entries` applied entries visible to readers.
    fn publish(&self, writes: Writes, entries: usize, bytes: usize) {
        let mut p = self.write();
        if p.writes.is_empty() {
            p.writes = writes;
        } else {
            p.writes.extend(writes);
        }
        p.entries += entries;
        p.bytes += bytes;
    }

    /// True when the overlay is due to be written to sled.
    pub fn due(&self) -> bool {
        let p = self.read();
        p.entries >= FLUSH_ENTRIES || p.bytes >= FLUSH_BYTES
    }

    /// Stop (true) or resume (false) flushes: while paused, the tree does not change
    /// (apply goes on in the overlay), so it can be dumped as a consistent snapshot.
    pub fn pause_flushes(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Wait while flushes are paused and the overlay is over [`PAUSED_MAX_BYTES`]
    /// (bounds memory during a long snapshot dump).
    pub async fn wait_for_room(&self) {
        let full = || self.read().bytes >= PAUSED_MAX_BYTES;
        if *self.paused.borrow() && full() {
            let mut rx = self.paused.subscribe();
            // Err: the sender is gone with the overlay; nothing to wait for.
            let _ = rx.wait_for(|paused| !*paused).await;
        }
    }

    /// Write the overlay to `tree` as one atomic batch, then drop it. Returns the
    /// number of entries written (0: nothing to do, or flushes are paused).
    /// State-machine task only.
    pub fn flush(&self, tree: &sled::Tree) -> Result<usize, StorageError> {
        let _flushing = self.lock_flushes();
        if *self.paused.borrow() {
            return Ok(0);
        }
        let (batch, entries) = {
            let p = self.read();
            if p.writes.is_empty() {
                return Ok(0);
            }
            let mut batch = sled::Batch::default();
            for (k, v) in &p.writes {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            (batch, p.entries)
        };
        // Readers keep finding these writes in the overlay until sled has them all.
        tree.apply_batch(batch)?;
        *self.write() = Published::default();
        Ok(entries)
    }

    /// Drop everything unflushed, running `swap` (which replaces the tree) while no
    /// reader can look at the overlay. For a snapshot install, which supersedes it.
    pub fn discard_with(&self, swap: impl FnOnce()) {
        let _flushing = self.lock_flushes();
        let mut p = self.write();
        swap();
        *p = Published::default();
    }

    /// Replace `key`'s value wherever it currently lives (overlay and tree), keeping
    /// flushes off meanwhile. Fault injection only.
    pub fn overwrite(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StorageError> {
        let _flushing = self.lock_flushes();
        let mut p = self.write();
        if let Some(v) = p.writes.get_mut(key) {
            *v = Some(value.clone());
        }
        tree.insert(key, value)?;
        Ok(())
    }
}

fn bounds<'a>(lo: &'a [u8], hi: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (Bound::Included(lo), Bound::Excluded(hi))
}

fn tree_source<'a>(tree: &sled::Tree, lo: &[u8], hi: &[u8]) -> Source<'a> {
    Box::new(tree.range::<&[u8], _>(lo..hi).map(|kv| match kv {
        Ok((k, v)) => Ok((k.to_vec(), Some(v.to_vec()))),
        Err(e) => Err(e.into()),
    }))
}

/// Scans the overlay in chunks (the apply task is its only writer, so the chunks
/// fit together).
struct Cursor<'a> {
    overlay: &'a Overlay,
    next: Option<Vec<u8>>,
    hi: Vec<u8>,
    buf: std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Iterator for Cursor<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        if let Some(kv) = self.buf.next() {
            return Some(Ok(kv));
        }
        let from = self.next.take()?;
        let chunk: Vec<_> = {
            let p = self.overlay.read();
            p.writes
                .range::<[u8], _>((
                    Bound::Included(from.as_slice()),
                    Bound::Excluded(self.hi.as_slice()),
                ))
                .take(CURSOR_CHUNK)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if chunk.len() == CURSOR_CHUNK {
            // The smallest key after the chunk's last.
            self.next = chunk.last().map(|(k, _)| {
                let mut n = k.clone();
                n.push(0);
                n
            });
        }
        self.buf = chunk.into_iter();
        self.buf.next().map(Ok)
    }
}

/// The writes of the entries of one `apply()` call, over the [`Overlay`] and the tree.
pub struct Pending<'a> {
    tree: sled::Tree,
    overlay: &'a Overlay,
    writes: Writes,
    bytes: usize,
}

impl<'a> Pending<'a> {
    /// An empty buffer over `overlay` and `tree`.
    pub fn new(tree: sled::Tree, overlay: &'a Overlay) -> Self {
        Self { tree, overlay, writes: BTreeMap::new(), bytes: 0 }
    }

    /// Bytes of keys and values buffered (an upper bound: overwrites are counted again).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Run `f` on the current value of `key` (this buffer's, else the overlay's, else
    /// the tree's).
    pub fn get_with<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        match self.writes.get(key) {
            Some(Some(v)) => f(v).map(Some),
            Some(None) => Ok(None),
            None => self.overlay.get_with(&self.tree, key, f),
        }
    }

    /// The current value of `key`, decoded.
    pub fn get_decoded<T: for<'b> Deserialize<'b>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.get_with(key, decode)
    }

    /// Set `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.writes.insert(key, Some(value));
    }

    /// Append `bytes` to the current value of `key` (creating it): for values that
    /// collect many small items, written to sled once per flush instead of a key each.
    /// The first append of a call copies the value from the overlay or tree.
    pub fn append(&mut self, key: &[u8], bytes: &[u8]) -> Result<(), StorageError> {
        if let Some(Some(v)) = self.writes.get_mut(key) {
            v.extend_from_slice(bytes);
            self.bytes += bytes.len();
            return Ok(());
        }
        let mut value = match self.writes.get(key) {
            Some(_) => Vec::new(), // removed in this call
            None => self.overlay.get_with(&self.tree, key, |v| Ok(v.to_vec()))?.unwrap_or_default(),
        };
        value.extend_from_slice(bytes);
        self.bytes += key.len() + value.len();
        self.writes.insert(key.to_vec(), Some(value));
        Ok(())
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.writes.insert(key, None);
    }

    /// Live keys and values in `[lo, hi)`, in key order, as the tree would hold them
    /// after every buffered and published write.
    pub fn range(&self, lo: &[u8], hi: &[u8]) -> Merged<'_> {
        let mine =
            self.writes.range::<[u8], _>(bounds(lo, hi)).map(|(k, v)| Ok((k.clone(), v.clone())));
        let published = Cursor {
            overlay: self.overlay,
            next: Some(lo.to_vec()),
            hi: hi.to_vec(),
            buf: Vec::new().into_iter(),
        };
        Merged::new(vec![Box::new(mine), Box::new(published), tree_source(&self.tree, lo, hi)])
    }

    /// Hand the buffered writes of `entries` applied entries to the overlay (readers
    /// see them from now on) and start empty.
    pub fn publish(&mut self, entries: usize) {
        let writes = std::mem::take(&mut self.writes);
        self.overlay.publish(writes, entries, std::mem::take(&mut self.bytes));
    }
}

/// One sorted source of a merged scan.
type Source<'a> = Box<dyn Iterator<Item = Item> + Send + 'a>;

/// Ordered merge of sorted sources, the first source winning on equal keys; a `None`
/// value hides the key in every later source.
pub struct Merged<'a> {
    sources: Vec<Peekable<Source<'a>>>,
}

impl<'a> Merged<'a> {
    fn new(sources: Vec<Source<'a>>) -> Self {
        Self { sources: sources.into_iter().map(Iterator::peekable).collect() }
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // The smallest next key, and the first source holding it.
            let mut best: Option<(usize, &[u8])> = None;
            for (i, s) in self.sources.iter_mut().enumerate() {
                match s.peek() {
                    Some(Ok((k, _))) if best.is_none_or(|(_, b)| k.as_slice() < b) => {
                        best = Some((i, k.as_slice()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        return match s.next() {
                            Some(Err(e)) => Some(Err(e)),
                            _ => None,
                        }
                    }
                    None => {}
                }
            }
            let (winner, key) = best.map(|(i, k)| (i, k.to_vec()))?;
            let mut value = None;
            for (i, s) in self.sources.iter_mut().enumerate() {
                if matches!(s.peek(), Some(Ok((k, _))) if *k == key) {
                    if let Some(Ok((_, v))) = s.next() {
                        if i == winner {
                            value = v;
                        }
                    }
                }
            }
            if let Some(v) = value {
                return Some(Ok((key, v)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).temporary(true).open().expect("db");
        let t = db.open_tree("t").expect("tree");
        (dir, t)
    }

    fn collect(m: Merged<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        m.collect::<Result<_, _>>().expect("range")
    }

    #[test]
    fn reads_see_buffered_and_published_writes_until_the_tree_has_them() {
        let (_d, t) = tree();
        t.insert(b"a", b"1").expect("insert");
        t.insert(b"b", b"2").expect("insert");
        let o = Overlay::default();
        let mut p = Pending::new(t.clone(), &o);
        p.insert(b"a".to_vec(), b"10".to_vec());
        p.remove(b"b".to_vec());
        p.insert(b"c".to_vec(), b"3".to_vec());
        let get = |p: &Pending<'_>, k: &[u8]| p.get_with(k, |v| Ok(v.to_vec())).expect("get");
        assert_eq!(get(&p, b"a"), Some(b"10".to_vec()));
        assert_eq!(get(&p, b"b"), None);
        assert_eq!(get(&p, b"c"), Some(b"3".to_vec()));
        let read = |k: &[u8]| o.get_with(&t, k, |v| Ok(v.to_vec())).expect("get");
        assert_eq!(read(b"a"), Some(b"1".to_vec()), "readers do not see an unpublished call");
        p.publish(3);
        assert_eq!(p.bytes(), 0);
        assert_eq!(read(b"a"), Some(b"10".to_vec()));
        assert_eq!(read(b"b"), None);
        assert_eq!(t.get(b"a").expect("get").as_deref(), Some(&b"1"[..]), "tree untouched");
        assert!(!o.due());
        assert_eq!(o.flush(&t).expect("flush"), 3);
        assert_eq!(o.flush(&t).expect("flush"), 0, "nothing left");
        assert_eq!(t.get(b"a").expect("get").as_deref(), Some(&b"10"[..]));
        assert_eq!(t.get(b"b").expect("get"), None);
        assert_eq!(t.get(b"c").expect("get").as_deref(), Some(&b"3"[..]));
        assert_eq!(read(b"c"), Some(b"3".to_vec()));
    }

    #[test]
    fn appends_extend_the_value_of_whichever_layer_holds_it() {
        let (_d, t) = tree();
        t.insert(b"a", b"1").expect("insert");
        let o = Overlay::default();
        let get = |p: &Pending<'_>, k: &[u8]| p.get_with(k, |v| Ok(v.to_vec())).expect("get");
        let mut p = Pending::new(t.clone(), &o);
        p.append(b"a", b"2").expect("append"); // from the tree
        p.append(b"a", b"3").expect("append"); // in this buffer
        p.append(b"new", b"x").expect("append"); // nowhere yet
        assert_eq!(get(&p, b"a"), Some(b"123".to_vec()));
        p.publish(1);
        p.append(b"a", b"4").expect("append"); // from the published overlay
        p.remove(b"new".to_vec());
        p.append(b"new", b"y").expect("append"); // removed in this call: starts empty
        assert_eq!(get(&p, b"a"), Some(b"1234".to_vec()));
        assert_eq!(get(&p, b"new"), Some(b"y".to_vec()));
        assert_eq!(
            o.get_with(&t, b"a", |v| Ok(v.to_vec())).expect("get"),
            Some(b"123".to_vec()),
            "the published value is not changed in place"
        );
        p.publish(1);
        o.flush(&t).expect("flush");
        assert_eq!(t.get(b"a").expect("get").as_deref(), Some(&b"1234"[..]));
        assert_eq!(t.get(b"new").expect("get").as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn ranges_merge_three_layers_in_order_and_hide_removed_keys() {
        let (_d, t) = tree();
        for k in [&b"k1"[..], b"k3", b"k5", b"k7", b"z"] {
            t.insert(k, k).expect("insert");
        }
        let o = Overlay::default();
        let mut p = Pending::new(t.clone(), &o);
        p.remove(b"k1".to_vec());
        p.insert(b"k5".to_vec(), b"o5".to_vec());
        p.insert(b"k6".to_vec(), b"o6".to_vec());
        p.publish(1);
        p.insert(b"k2".to_vec(), b"n2".to_vec());
        p.insert(b"k5".to_vec(), b"n5".to_vec());
        p.remove(b"k6".to_vec());
        p.remove(b"k7".to_vec());
        p.insert(b"k8".to_vec(), b"n8".to_vec());
        p.remove(b"k9".to_vec()); // absent below: nothing to hide
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"k2".to_vec(), b"n2".to_vec()),
            (b"k3".to_vec(), b"k3".to_vec()),
            (b"k5".to_vec(), b"n5".to_vec()),
            (b"k8".to_vec(), b"n8".to_vec()),
        ];
        assert_eq!(collect(p.range(b"k", b"l")), want);
        assert_eq!(collect(p.range(b"k3", b"k6")).len(), 2, "bounds apply to every layer");
        let published: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"k3".to_vec(), b"k3".to_vec()),
            (b"k5".to_vec(), b"o5".to_vec()),
            (b"k6".to_vec(), b"o6".to_vec()),
            (b"k7".to_vec(), b"k7".to_vec()),
        ];
        assert_eq!(collect(o.range(&t, b"k", b"l")), published, "readers see published only");
    }

    /// Random writes, publishes and flushes across the three layers, every read and
    /// scan checked against a plain map that applies each write at once.
    #[test]
    fn every_layering_reads_like_one_map() {
        let (_d, t) = tree();
        let o = Overlay::default();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut p = Pending::new(t.clone(), &o);
        let mut state: u64 = 11;
        let mut rand = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for step in 0..20_000u32 {
            let key = format!("k{:03}", rand(200)).into_bytes();
            match rand(20) {
                0..=9 => {
                    let v = format!("v{step}").into_bytes();
                    p.insert(key.clone(), v.clone());
                    model.insert(key, v);
                }
                10..=14 => {
                    p.remove(key.clone());
                    model.remove(&key);
                }
                15 => p.publish(1),
                16 => {
                    o.flush(&t).expect("flush");
                }
                _ => {
                    let got = p.get_with(&key, |v| Ok(v.to_vec())).expect("get");
                    assert_eq!(got.as_ref(), model.get(&key), "get at step {step}");
                    let lo = format!("k{:03}", rand(200)).into_bytes();
                    let hi = format!("k{:03}", rand(210)).into_bytes();
                    let want: Vec<_> = if lo < hi {
                        model
                            .range(lo.clone()..hi.clone())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let got = if lo < hi { collect(p.range(&lo, &hi)) } else { Vec::new() };
                    assert_eq!(got, want, "range at step {step}");
                }
            }
        }
        p.publish(1);
        o.flush(&t).expect("flush");
        let tree: BTreeMap<Vec<u8>, Vec<u8>> = t
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .expect("dump");
        assert_eq!(tree, model);
    }
}

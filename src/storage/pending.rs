//! A write overlay over one sled tree: the changes of many applied entries, committed
//! as one atomic sled batch.
//!
//! Applying every committed entry as its own sled batch made the per-batch cost of
//! sled (its log reservation, page updates and io-thread work) the largest CPU cost of
//! a write. The state machine now applies all entries of one `apply()` call (bounded by
//! [`MAX_PENDING_ENTRIES`] and [`MAX_PENDING_BYTES`]) into a [`Pending`] overlay and
//! commits it once.
//!
//! Invariant: every read through the overlay (point reads and ordered scans) sees
//! exactly the state the tree would have if each earlier write had been applied on its
//! own. Apply stays a pure function of the log, so where batch boundaries fall (they
//! differ between replicas) never changes what any replica computes.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use serde::Deserialize;

use super::{decode, StorageError};

/// Max entries applied into one overlay before it is committed.
pub const MAX_PENDING_ENTRIES: usize = 1_024;
/// Max bytes of keys and values held by one overlay before it is committed.
pub const MAX_PENDING_BYTES: usize = 8 << 20;

/// Buffered writes over `tree`: `Some(value)` is an insert, `None` a removal.
pub struct Pending {
    tree: sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl Pending {
    /// An empty overlay over `tree`.
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree, writes: BTreeMap::new(), bytes: 0 }
    }

    /// Bytes of keys and values buffered (an upper bound: overwrites are counted again).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Run `f` on the current value of `key` (the overlay's, else the tree's).
    pub fn get_with<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        match self.writes.get(key) {
            Some(Some(v)) => f(v).map(Some),
            Some(None) => Ok(None),
            None => match self.tree.get(key)? {
                Some(v) => f(&v).map(Some),
                None => Ok(None),
            },
        }
    }

    /// The current value of `key`, decoded.
    pub fn get_decoded<T: for<'a> Deserialize<'a>>(
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

    /// Remove `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.writes.insert(key, None);
    }

    /// Live keys and values in `[lo, hi)`, in key order, as the tree would hold them
    /// after the buffered writes.
    pub fn range(&self, lo: &[u8], hi: &[u8]) -> Merged<'_> {
        let bounds = (Bound::Included(lo.to_vec()), Bound::Excluded(hi.to_vec()));
        Merged {
            tree: self.tree.range::<&[u8], _>(lo..hi).peekable(),
            writes: self.writes.range::<Vec<u8>, _>(bounds).peekable(),
        }
    }

    /// Write everything buffered to the tree as one atomic batch and start empty.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (k, v) in std::mem::take(&mut self.writes) {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.bytes = 0;
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Ordered merge of a tree range and the overlay's writes in that range; the overlay
/// wins on equal keys and its removals hide the tree's keys.
pub struct Merged<'a> {
    tree: Peekable<sled::Iter>,
    writes: Peekable<btree_map::Range<'a, Vec<u8>, Option<Vec<u8>>>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let tree_key = match self.tree.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => {
                    return match self.tree.next() {
                        Some(Err(e)) => Some(Err(e.into())),
                        _ => None,
                    }
                }
                None => None,
            };
            let write_key = self.writes.peek().map(|(k, _)| k.as_slice());
            let take_write = match (&tree_key, write_key) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(t), Some(w)) => {
                    if w == t.as_ref() {
                        // The overlay shadows the tree's value of this key.
                        self.tree.next();
                        true
                    } else {
                        w < t.as_ref()
                    }
                }
            };
            if take_write {
                let (k, v) = self.writes.next()?;
                match v {
                    Some(v) => return Some(Ok((k.clone(), v.clone()))),
                    None => continue,
                }
            }
            return match self.tree.next()? {
                Ok((k, v)) => Some(Ok((k.to_vec(), v.to_vec()))),
                Err(e) => Some(Err(e.into())),
            };
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

    fn keys(p: &Pending, lo: &[u8], hi: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.range(lo, hi).collect::<Result<_, _>>().expect("range")
    }

    #[test]
    fn reads_see_buffered_writes_and_removals() {
        let (_d, t) = tree();
        t.insert(b"a", b"1").expect("insert");
        t.insert(b"b", b"2").expect("insert");
        let mut p = Pending::new(t.clone());
        p.insert(b"a".to_vec(), b"10".to_vec());
        p.remove(b"b".to_vec());
        p.insert(b"c".to_vec(), b"3".to_vec());
        let get = |k: &[u8]| p.get_with(k, |v| Ok(v.to_vec())).expect("get");
        assert_eq!(get(b"a"), Some(b"10".to_vec()));
        assert_eq!(get(b"b"), None);
        assert_eq!(get(b"c"), Some(b"3".to_vec()));
        assert_eq!(t.get(b"a").expect("get").as_deref(), Some(&b"1"[..]), "tree untouched");
        p.commit().expect("commit");
        assert_eq!(p.bytes(), 0);
        assert_eq!(t.get(b"a").expect("get").as_deref(), Some(&b"10"[..]));
        assert_eq!(t.get(b"b").expect("get"), None);
        assert_eq!(t.get(b"c").expect("get").as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn ranges_merge_in_order_and_hide_removed_keys() {
        let (_d, t) = tree();
        for k in [&b"k1"[..], b"k3", b"k5", b"k7", b"z"] {
            t.insert(k, k).expect("insert");
        }
        let mut p = Pending::new(t);
        p.remove(b"k1".to_vec());
        p.insert(b"k2".to_vec(), b"n2".to_vec());
        p.insert(b"k5".to_vec(), b"n5".to_vec());
        p.remove(b"k7".to_vec());
        p.insert(b"k8".to_vec(), b"n8".to_vec());
        p.remove(b"k9".to_vec()); // absent in the tree: nothing to hide
        let got = keys(&p, b"k", b"l");
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"k2".to_vec(), b"n2".to_vec()),
            (b"k3".to_vec(), b"k3".to_vec()),
            (b"k5".to_vec(), b"n5".to_vec()),
            (b"k8".to_vec(), b"n8".to_vec()),
        ];
        assert_eq!(got, want);
        assert_eq!(keys(&p, b"k3", b"k6").len(), 2, "bounds apply to both sides");
    }
}

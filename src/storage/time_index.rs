//! The in-memory front of a time-ordered index of the state-machine tree.
//!
//! The closed-saga index (`c<wall_ns BE><saga id>`) is a queue: keys are inserted at
//! (nearly) the back and removed from the front as they age. Finding the front with a
//! sled range scan on every applied entry cost ~10% of a leader's CPU under write load
//! (measured on the exactly-once table's former on-disk expiry index, which had the
//! same shape); this caches the oldest keys and refills from the tree (through the
//! apply overlay) only when the cached front runs out.
//!
//! Invariant: `front` holds the smallest live keys of the index in order, and every
//! live key not in `front` is greater than `front`'s last key and than `floor`.
//! Every insert and removal of the index goes through [`TimeIndex::inserted`] and
//! [`TimeIndex::pop`]; anything else that rewrites the tree (a snapshot install, a
//! reopen) calls [`TimeIndex::reset`]. The cache never changes what apply computes:
//! it answers exactly what a scan of the tree would.

use std::collections::VecDeque;

use super::pending::Pending;
use super::StorageError;

/// Keys loaded per refill from the tree.
pub const REFILL_KEYS: usize = 256;

/// The cached front of one time-ordered index.
pub struct TimeIndex {
    prefix: u8,
    front: VecDeque<Vec<u8>>,
    /// `front` holds every live key of the index.
    complete: bool,
    /// Every live key outside `front` is greater than this (None: no bound known).
    floor: Option<Vec<u8>>,
}

impl TimeIndex {
    /// An empty cache of the index under `prefix` (the first use loads from the tree).
    pub fn new(prefix: u8) -> Self {
        Self { prefix, front: VecDeque::new(), complete: false, floor: None }
    }

    /// Forget everything cached (the tree was replaced).
    pub fn reset(&mut self) {
        *self = Self::new(self.prefix);
    }

    /// Note that `key` was inserted into the index.
    pub fn inserted(&mut self, key: &[u8]) {
        debug_assert_eq!(key.first(), Some(&self.prefix), "key of another index");
        let below_back = self.front.back().is_some_and(|b| key < b.as_slice());
        let below_floor = self.floor.as_deref().is_some_and(|f| key <= f);
        if self.complete || below_back || below_floor {
            if let Err(i) = self.front.binary_search_by(|k| k.as_slice().cmp(key)) {
                self.front.insert(i, key.to_vec());
            }
            if self.complete && self.front.len() > 2 * REFILL_KEYS {
                // Bound memory: the tail stays in the tree, found by a later refill.
                self.front.truncate(REFILL_KEYS);
                self.complete = false;
            }
        }
    }

    /// The oldest live key and its wall time, refilling from `pending` when needed.
    pub fn oldest(&mut self, pending: &Pending<'_>) -> Result<Option<(u64, &[u8])>, StorageError> {
        if self.front.is_empty() && !self.complete {
            self.refill(pending)?;
        }
        match self.front.front() {
            Some(k) => Ok(Some((wall_of(k)?, k.as_slice()))),
            None => Ok(None),
        }
    }

    /// Remove the oldest key from the cache and return it (the caller removes it from
    /// the tree).
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let k = self.front.pop_front()?;
        self.floor = Some(k.clone());
        Some(k)
    }

    fn refill(&mut self, pending: &Pending<'_>) -> Result<(), StorageError> {
        let lo = match &self.floor {
            // The smallest key greater than the floor.
            Some(f) => {
                let mut lo = f.clone();
                lo.push(0);
                lo
            }
            None => vec![self.prefix],
        };
        for kv in pending.range(&lo, &[self.prefix + 1]).take(REFILL_KEYS) {
            let (k, _) = kv?;
            self.front.push_back(k);
        }
        self.complete = self.front.len() < REFILL_KEYS;
        Ok(())
    }
}

/// The wall time of an index key `<prefix><wall_ns BE><id>`.
pub fn wall_of(key: &[u8]) -> Result<u64, StorageError> {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt("short time-index key".into()))
}

#[cfg(test)]
mod tests {
    use super::super::pending::Overlay;
    use super::*;

    fn key(wall: u64, id: &str) -> Vec<u8> {
        let mut k = vec![b'e'];
        k.extend_from_slice(&wall.to_be_bytes());
        k.extend_from_slice(id.as_bytes());
        k
    }

    /// Random inserts (mostly at the back, some below the front) and pops, checked
    /// against a scan of the tree after every step, across commits and refills.
    #[test]
    fn the_cached_front_always_matches_a_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).temporary(true).open().expect("db");
        let tree = db.open_tree("t").expect("tree");
        let overlay = Overlay::default();
        let mut pending = Pending::new(tree.clone(), &overlay);
        let mut index = TimeIndex::new(b'e');
        let mut state: u64 = 7;
        let mut rand = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let mut wall = 1_000;
        for step in 0..40_000u32 {
            // Alternate growing (past one refill's worth of keys, so the cache is
            // partial) and draining (so new keys land at or below popped ones).
            let growing = (step / 2_000) % 2 == 0;
            let insert_below = if growing { 7 } else { 2 };
            match rand(10) {
                r if r < insert_below => {
                    // Walls rarely advance (HLC logical ticks), so the ids often decide the
                    // order and new keys sort below popped ones.
                    wall += u64::from(rand(500) == 0);
                    let k = key(wall, &format!("{:03}", rand(1000)));
                    pending.insert(k.clone(), []);
                    index.inserted(&k);
                }
                r if r < 9 => {
                    if index.oldest(&pending).expect("oldest").is_some() {
                        let k = index.pop().expect("pop");
                        pending.remove(k);
                    }
                }
                // Publish, and at times flush, so every layer holds index keys.
                _ => {
                    pending.publish(1);
                    if rand(2) == 0 {
                        overlay.flush(&tree).expect("flush");
                    }
                }
            }
            if rand(4) != 0 {
                continue; // checking refills the cache: leave it partial at times
            }
            let scanned = pending.range(b"e", b"f").next().map(|kv| kv.expect("kv").0);
            let cached = index.oldest(&pending).expect("oldest").map(|(_, k)| k.to_vec());
            assert_eq!(cached, scanned, "step {step}");
        }
    }
}

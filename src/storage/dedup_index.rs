//! The in-memory index of the exactly-once table.
//!
//! The table itself (`d<request id>` → [`super::state_machine::DedupEntry`], holding
//! the original response and the HLC wall time of the apply) lives in the state-machine
//! tree and is replicated and snapshotted like everything else. This index mirrors it
//! in memory: which ids are present (a miss, the common case, costs no sled read) and
//! their age order (eviction needs no on-disk time index: it used to cost a sled insert
//! and a removal per write, about a third of a follower's sled work).
//!
//! Invariant: the index holds exactly the ids of the table as the apply overlay sees
//! it. It is loaded from the tree when the state machine opens and after a snapshot is
//! installed, and every insert and removal of the table goes through it. Eviction
//! order is (wall time, id), the order of the former on-disk index, so every replica
//! evicts the same ids whatever its history of restarts.
//!
//! Memory: bounded by `dedup_max_entries` (default 100,000: about 10 MB).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::StorageError;

/// Ids of the exactly-once table by id and by age.
#[derive(Debug, Default)]
pub struct DedupIndex {
    by_time: BTreeSet<(u64, Arc<str>)>,
    by_id: HashMap<Arc<str>, u64>,
}

impl DedupIndex {
    /// Build the index from `(id, wall_ns)` pairs (a scan of the table).
    pub fn load(
        entries: impl Iterator<Item = Result<(String, u64), StorageError>>,
    ) -> Result<Self, StorageError> {
        let mut index = Self::default();
        for e in entries {
            let (id, wall) = e?;
            index.insert(&id, wall);
        }
        Ok(index)
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Add `id`, applied at `wall_ns` (replacing an earlier entry of the same id).
    pub fn insert(&mut self, id: &str, wall_ns: u64) {
        let id: Arc<str> = Arc::from(id);
        if let Some(old) = self.by_id.insert(id.clone(), wall_ns) {
            self.by_time.remove(&(old, id.clone()));
        }
        self.by_time.insert((wall_ns, id));
        debug_assert_eq!(self.by_id.len(), self.by_time.len());
    }

    /// The wall time of the oldest id.
    pub fn oldest_wall(&self) -> Option<u64> {
        self.by_time.first().map(|(w, _)| *w)
    }

    /// Remove and return the oldest id.
    pub fn pop_oldest(&mut self) -> Option<Arc<str>> {
        let (_, id) = self.by_time.pop_first()?;
        self.by_id.remove(&id);
        debug_assert_eq!(self.by_id.len(), self.by_time.len());
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_by_wall_time_then_id_and_replaces_an_existing_id() {
        let mut ix = DedupIndex::load(
            [("b", 5), ("a", 5), ("c", 3)].into_iter().map(|(i, w)| Ok((i.to_string(), w))),
        )
        .expect("load");
        assert!(ix.contains("a") && !ix.contains("z"));
        ix.insert("c", 9); // re-applied later: now the youngest
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.oldest_wall(), Some(5));
        let order: Vec<String> =
            std::iter::from_fn(|| ix.pop_oldest()).map(|id| id.to_string()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert!(ix.oldest_wall().is_none() && !ix.contains("a"));
    }
}

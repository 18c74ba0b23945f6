//! The in-memory index of the exactly-once table.
//!
//! The table itself lives in the state-machine tree in chunks (see
//! [`super::state_machine`]: `q<chunk>` holds the entries of 64 consecutive revisions)
//! and is replicated and snapshotted like everything else. This index mirrors it in
//! memory: which ids are present and at which revision (a miss, the common case, costs
//! no sled read; a hit reads one chunk), and their age order (eviction needs no
//! on-disk time index).
//!
//! Invariant: the index holds exactly the live ids of the table as the apply overlay
//! sees it. It is loaded from the tree when the state machine opens and after a
//! snapshot is installed, and every insert and eviction of the table goes through it.
//! Eviction order is the apply order (revision). HLCs strictly increase in log order,
//! so this is also wall-time order, and evicting in revision order is what lets the
//! table forget ids by raising one floor revision instead of rewriting chunks.
//!
//! Memory: bounded by `dedup_max_entries` (default 100,000: about 10 MB).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::StorageError;

/// One id of the table as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The revision the id was applied at.
    pub revision: u64,
    /// The HLC wall time of that apply, ns.
    pub wall_ns: u64,
}

/// Ids of the exactly-once table by id and by revision.
#[derive(Debug, Default)]
pub struct DedupIndex {
    by_revision: BTreeMap<u64, (Arc<str>, u64)>,
    by_id: HashMap<Arc<str>, u64>,
}

impl DedupIndex {
    /// Build the index from `(id, remembered)` pairs (a scan of the table).
    pub fn load(
        entries: impl Iterator<Item = Result<(String, Remembered), StorageError>>,
    ) -> Result<Self, StorageError> {
        let mut index = Self::default();
        for e in entries {
            let (id, at) = e?;
            index.insert(&id, at);
        }
        Ok(index)
    }

    /// The revision `id` was applied at, when it is in the table.
    pub fn revision_of(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Add `id` (replacing an earlier entry of the same id).
    pub fn insert(&mut self, id: &str, at: Remembered) {
        let id: Arc<str> = Arc::from(id);
        if let Some(old) = self.by_id.insert(id.clone(), at.revision) {
            self.by_revision.remove(&old);
        }
        debug_assert!(
            self.by_revision.get(&at.revision).is_none(),
            "one request id per revision"
        );
        self.by_revision.insert(at.revision, (id, at.wall_ns));
        debug_assert_eq!(self.by_id.len(), self.by_revision.len());
    }

    /// The wall time of the oldest id.
    pub fn oldest_wall(&self) -> Option<u64> {
        self.by_revision.first_key_value().map(|(_, (_, w))| *w)
    }

    /// Remove the oldest id; returns it and the revision it was applied at.
    pub fn pop_oldest(&mut self) -> Option<(Arc<str>, u64)> {
        let (revision, (id, _)) = self.by_revision.pop_first()?;
        self.by_id.remove(&id);
        debug_assert_eq!(self.by_id.len(), self.by_revision.len());
        Some((id, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(revision: u64, wall_ns: u64) -> Remembered {
        Remembered { revision, wall_ns }
    }

    #[test]
    fn evicts_in_revision_order_and_replaces_an_existing_id() {
        let mut ix = DedupIndex::load(
            [("b", at(7, 5)), ("a", at(6, 5)), ("c", at(3, 3))]
                .into_iter()
                .map(|(i, a)| Ok((i.to_string(), a))),
        )
        .expect("load");
        assert_eq!(ix.revision_of("a"), Some(6));
        assert_eq!(ix.revision_of("z"), None);
        ix.insert("c", at(9, 9)); // applied again later: now the youngest
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.oldest_wall(), Some(5));
        let order: Vec<(String, u64)> =
            std::iter::from_fn(|| ix.pop_oldest()).map(|(id, r)| (id.to_string(), r)).collect();
        assert_eq!(order, [("a".to_string(), 6), ("b".to_string(), 7), ("c".to_string(), 9)]);
        assert!(ix.oldest_wall().is_none() && ix.revision_of("a").is_none());
    }
}

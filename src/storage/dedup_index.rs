//! The in-memory index of the exactly-once table.
//!
//! The table itself lives in the state-machine tree in chunks (see
//! [`super::state_machine`]: `q<first revision>` holds the entries of up to 64
//! consecutive revisions) and is replicated and snapshotted like everything else. This
//! index mirrors it in memory: which ids are present, at which revision and in which
//! chunk (a miss, the common case, costs no sled read; a hit reads one chunk), and
//! their age order (eviction needs no on-disk time index).
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
    /// The chunk holding its entry (the chunk's first revision).
    pub chunk: u64,
}

/// Ids of the exactly-once table by id and by revision.
#[derive(Debug, Default)]
pub struct DedupIndex {
    by_revision: BTreeMap<u64, (Arc<str>, Remembered)>,
    by_id: HashMap<Arc<str>, Remembered>,
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

    /// Where `id` is, when it is in the table.
    pub fn get(&self, id: &str) -> Option<Remembered> {
        self.by_id.get(id).copied()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Add `id` (replacing an earlier entry of the same id).
    pub fn insert(&mut self, id: &str, at: Remembered) {
        let id: Arc<str> = Arc::from(id);
        if let Some(old) = self.by_id.insert(id.clone(), at) {
            self.by_revision.remove(&old.revision);
        }
        debug_assert!(!self.by_revision.contains_key(&at.revision), "one request id per revision");
        self.by_revision.insert(at.revision, (id, at));
        debug_assert_eq!(self.by_id.len(), self.by_revision.len());
    }

    /// The oldest id.
    pub fn oldest(&self) -> Option<Remembered> {
        self.by_revision.first_key_value().map(|(_, (_, at))| *at)
    }

    /// Remove the oldest id; returns it and where it was.
    pub fn pop_oldest(&mut self) -> Option<(Arc<str>, Remembered)> {
        let (_, (id, at)) = self.by_revision.pop_first()?;
        self.by_id.remove(&id);
        debug_assert_eq!(self.by_id.len(), self.by_revision.len());
        Some((id, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(revision: u64, wall_ns: u64) -> Remembered {
        Remembered { revision, wall_ns, chunk: revision / 4 * 4 }
    }

    #[test]
    fn evicts_in_revision_order_and_replaces_an_existing_id() {
        let mut ix = DedupIndex::load(
            [("b", at(7, 5)), ("a", at(6, 5)), ("c", at(3, 3))]
                .into_iter()
                .map(|(i, a)| Ok((i.to_string(), a))),
        )
        .expect("load");
        assert_eq!(ix.get("a"), Some(at(6, 5)));
        assert_eq!(ix.get("z"), None);
        ix.insert("c", at(9, 9)); // applied again later: now the youngest
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.oldest(), Some(at(6, 5)));
        let order: Vec<(String, u64)> = std::iter::from_fn(|| ix.pop_oldest())
            .map(|(id, a)| (id.to_string(), a.revision))
            .collect();
        assert_eq!(order, [("a".to_string(), 6), ("b".to_string(), 7), ("c".to_string(), 9)]);
        assert!(ix.oldest().is_none() && ix.get("a").is_none());
    }
}

//! Chunked tables of the state machine: the items of consecutive revisions appended
//! under one sled key (`<prefix><first revision BE u64>`) instead of a key each.
//!
//! sled 0.34 copies the leaf it changes on every insert, so its cost is per key
//! written; the binlog and the exactly-once table each cost a key per write before
//! they were chunked. The chunking rule reads only replicated content (revisions and
//! item sizes), so every replica, and every restart, cuts the same chunks: a revision
//! joins the newest chunk while that spans under [`CHUNK_REVISIONS`] revisions and
//! holds under [`CHUNK_BYTES`], else it starts a new one (a large item gets a chunk of
//! its own, so an append never copies megabytes).

/// Most revisions one chunk spans (replicated layout: a constant).
pub const CHUNK_REVISIONS: u64 = 64;
/// A chunk takes no more revisions once it holds this many bytes.
pub const CHUNK_BYTES: usize = 32 << 10;

/// The key of the chunk of table `prefix` whose first revision is `first`.
pub fn key(prefix: u8, first: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

/// The first revision of the chunk under key `k` of table `prefix`.
pub fn first_revision(prefix: u8, k: &[u8]) -> Option<u64> {
    match k {
        [p, rest @ ..] if *p == prefix => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// The newest chunk of a table: its first revision and its length in bytes, always as
/// the state machine's overlay holds it (the rule depends on the length, so a cut or a
/// removal must be reported with [`Tail::resized`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tail(Option<(u64, usize)>);

impl Tail {
    /// The tail of a table whose newest chunk starts at `first` and holds `len` bytes.
    pub fn new(newest: Option<(u64, usize)>) -> Self {
        Self(newest)
    }

    /// Where `len` more bytes of `revision` go (the first revision of their chunk);
    /// the tail grows by them.
    pub fn place(&mut self, revision: u64, len: usize) -> u64 {
        let (first, held) = match self.0 {
            Some((first, held))
                if held < CHUNK_BYTES && revision.saturating_sub(first) < CHUNK_REVISIONS =>
            {
                (first, held)
            }
            _ => (revision, 0),
        };
        self.0 = Some((first, held + len));
        first
    }

    /// The chunk starting at `first` now holds `len` bytes (None: it was removed).
    pub fn resized(&mut self, first: u64, len: Option<usize>) {
        if self.0.is_some_and(|(f, _)| f == first) {
            self.0 = len.map(|len| (first, len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_takes_revisions_while_it_is_short_and_small() {
        let mut t = Tail::default();
        assert_eq!(t.place(5, 100), 5);
        assert_eq!(t.place(5 + CHUNK_REVISIONS - 1, 0), 5);
        assert_eq!(t.place(5 + CHUNK_REVISIONS, 0), 5 + CHUNK_REVISIONS);
        let mut full = Tail::new(Some((5, CHUNK_BYTES)));
        assert_eq!(full.place(6, 1), 6);
        full.resized(6, None);
        assert_eq!(full, Tail::default(), "a removed tail starts over");
        assert_eq!(first_revision(b'j', &key(b'j', 1 << 40)), Some(1 << 40));
        assert_eq!(first_revision(b'j', b"jshort"), None);
        assert_eq!(first_revision(b'q', &key(b'j', 1)), None, "another table's key");
    }
}

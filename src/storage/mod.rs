//! Durable storage on sled: the Raft log store, the state machine (records, the
//! exactly-once table, applied index, last HLC) and snapshots.
//!
//! One sled database per node holds every tree, so one `flush` makes everything
//! written so far durable (sled recovers a prefix of its operations after a crash).
//! Trees:
//! - `raft_meta`: identity (cluster name, node id), vote, committed, last purged log id,
//!   the active state-machine generation;
//! - `raft_log`: log entries keyed by big-endian index;
//! - `sm-<gen>`: the state machine, one tree so every entry applies as one atomic
//!   batch (records, metadata, exactly-once entries, sagas and the binlog events of
//!   the entry together, see [`binlog`]). A snapshot install
//!   fills a new generation and switches the pointer atomically.
//!
//! sled is only touched from this module so another engine could replace it here.

pub mod apply;
pub mod binlog;
mod chunk;
mod dedup_index;
pub mod log_store;
mod pending;
mod saved_response;
pub mod snapshot;
pub mod state_machine;
mod time_index;
pub mod types;

#[cfg(test)]
mod conformance;

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use state_machine::{SmReader, StateMachine};
pub use types::{NodeInfo, TypeConfig};

/// Name of the Raft metadata tree.
const META_TREE: &str = "raft_meta";
/// Name of the Raft log tree.
const LOG_TREE: &str = "raft_log";
/// Key of the node identity in the metadata tree.
const IDENTITY_KEY: &[u8] = b"identity";

/// sled page cache size, bytes. Bounded so RSS stays predictable.
pub const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// sled background flush interval, ms (explicit flushes make Raft writes durable; this
/// bounds how long state-machine-only writes stay in memory).
pub const SLED_FLUSH_EVERY_MS: u64 = 500;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// Filesystem I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes do not decode or break an invariant.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The state-machine tree (in the data dir or in a snapshot) was written by a newer
    /// version, in a layout this build cannot read.
    #[error(
        "state machine layout {found} is newer than this build's {known}: run the newer \
         binary (docs/OPERATIONS.md, \"Upgrades and the on-disk layout\")"
    )]
    NewerLayout {
        /// The layout found.
        found: u32,
        /// The newest layout this build knows.
        known: u32,
    },
    /// The data dir belongs to another cluster or node.
    #[error(
        "data dir {dir} belongs to cluster {found_cluster:?} node {found_node}, \
         not cluster {cluster:?} node {node}; use another --data-dir"
    )]
    IdentityMismatch {
        /// Data directory.
        dir: PathBuf,
        /// Stored cluster name.
        found_cluster: String,
        /// Stored node id.
        found_node: u64,
        /// Configured cluster name.
        cluster: String,
        /// Configured node id.
        node: u64,
    },
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// Encode a value for storage.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(v).map_err(|e| StorageError::Corrupt(format!("encode: {e}")))
}

/// Decode a stored value.
pub(crate) fn decode<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(b).map_err(|e| StorageError::Corrupt(format!("decode: {e}")))
}

/// Who owns a data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    cluster_name: String,
    node_id: u64,
}

/// The node's open database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
}

impl Store {
    /// Open (or create) the database under `dir`, refusing a dir that belongs to another
    /// cluster or node id.
    pub fn open(dir: &Path, cluster_name: &str, node_id: u64) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(Some(SLED_FLUSH_EVERY_MS))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let store = Store { db, dir: dir.to_path_buf() };
        store.check_identity(cluster_name, node_id)?;
        Ok(store)
    }

    fn check_identity(&self, cluster_name: &str, node_id: u64) -> Result<(), StorageError> {
        let meta = self.db.open_tree(META_TREE)?;
        let want = Identity { cluster_name: cluster_name.to_string(), node_id };
        match meta.get(IDENTITY_KEY)? {
            Some(b) => {
                let found: Identity = decode(&b)?;
                if found != want {
                    return Err(StorageError::IdentityMismatch {
                        dir: self.dir.clone(),
                        found_cluster: found.cluster_name,
                        found_node: found.node_id,
                        cluster: want.cluster_name,
                        node: want.node_id,
                    });
                }
            }
            None => {
                meta.insert(IDENTITY_KEY, encode(&want)?)?;
                self.sync()?;
            }
        }
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding snapshot files.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Make every write so far durable: sled's flush, then an fsync of its data file so
    /// the write survives power loss, not only a process crash.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        let data = self.dir.join("sled").join("db");
        if data.exists() {
            File::open(&data)?.sync_data()?;
        }
        Ok(())
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }
}

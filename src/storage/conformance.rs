//! openraft's storage conformance suite run against the sled log store and state
//! machine (test only).

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};

use super::state_machine::DedupLimits;
use super::types::TypeConfig;
use super::{LogStore, StateMachine, Store};
use crate::hlc::{Hlc, SystemClock, Timestamp, DEFAULT_MAX_CLOCK_OFFSET};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "conformance", 1).expect("store");
        let hlc =
            Hlc::new(1, Arc::new(SystemClock::new()), DEFAULT_MAX_CLOCK_OFFSET, Timestamp::ZERO);
        let log = LogStore::open(&store).expect("log store");
        let limits = DedupLimits { window_ns: 60_000_000_000, max_entries: 1_000 };
        let sm = StateMachine::open(&store, hlc, limits).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_passes_openraft_conformance_suite() {
    Suite::test_all(SledBuilder).await.expect("openraft storage suite");
}

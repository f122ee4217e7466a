//! The storage contract's kit on this crate's stores: the memory store, and
//! the fault injector passing every call through (so its forwarding, which
//! is generated, loses nothing).

mod memory {
    rcpat_store::storage_conformance_tests!(rcpat_store::MemoryStorage::new());
}

mod fault_injector_passing_through {
    use std::sync::Arc;

    use rcpat_store::{FaultMode, FaultyStorage, MemoryStorage};

    rcpat_store::storage_conformance_tests!(FaultyStorage::new(
        Arc::new(MemoryStorage::new()),
        usize::MAX,
        FaultMode::Before,
    ));
}

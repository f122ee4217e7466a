//! The storage contract's kit (`rcpat_store::conformance`) on PostgreSQL,
//! each test on a fresh database of the throw-away cluster that `./dev
//! test` starts (`RCPAT_TEST_DATABASE_URL`).

use std::sync::Arc;

use rcpat_store::keys::Keys;
use rcpat_store_postgres::{PostgresConfig, PostgresStorage, testing};

fn fresh() -> PostgresStorage {
    PostgresStorage::open(
        &PostgresConfig::new(testing::fresh_database_url()),
        Arc::new(Keys::random()),
    )
    .expect("the test cluster")
}

rcpat_store::storage_conformance_tests!(fresh());

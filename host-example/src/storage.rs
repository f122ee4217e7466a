//! The stores this host runs on, from their own crates: the admin trait,
//! records, memory store and fault injector (`rcpat-store`), SQLite
//! (`rcpat-store-sqlite`) and PostgreSQL (`rcpat-store-postgres`).

pub use rcpat_store::{
    Admin, Backend, ExpiringToken, FaultMode, FaultyStorage, HostError, HostResult, MemoryStorage,
    NewUser, PAT_PERMISSION, PAT_PERMISSION_DEFAULT_ROLES, SCHEMA_VERSION, Storage, TokenRecord,
    UserSummary,
};
pub use rcpat_store_postgres::{PostgresConfig, PostgresStorage};
pub use rcpat_store_sqlite::SqliteStorage;

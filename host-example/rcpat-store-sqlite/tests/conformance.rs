//! The storage contract's kit (`rcpat_store::conformance`) on SQLite: in
//! memory, and in a file (the path the server uses: WAL, the writer thread,
//! reader connections opened on the file).

mod in_memory {
    rcpat_store::storage_conformance_tests!(
        rcpat_store_sqlite::SqliteStorage::open_in_memory().expect("an in-memory database")
    );
}

mod in_a_file {
    rcpat_store::storage_conformance_tests!({
        let dir = std::env::temp_dir().join(format!(
            "rcpat-sqlite-kit-{}",
            rcpat_store::random::random_id(10)
        ));
        rcpat_store::files::create_private_dir(&dir).expect("a private folder");
        rcpat_store_sqlite::SqliteStorage::open(dir.join("rcpat.db")).expect("a database")
    });
}

//! The columns the user's row derives from other tables (migrations 14 and
//! 15: `roles`, `has_backup_codes`, `has_totp`, `has_email_code`,
//! `has_user_permissions`), which `authenticate` trusts instead of reading
//! those tables: they must equal what the rows say after any change, and
//! after two transactions change one user's rows at once.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use rcpat_store::keys::Keys;
use rcpat_store_postgres::{PostgresConfig, PostgresStorage, testing};

/// A migrated fresh database and a plain client on it.
fn database() -> (String, Client) {
    let url = testing::fresh_database_url();
    PostgresStorage::open(&PostgresConfig::new(url.clone()), Arc::new(Keys::random()))
        .expect("the test cluster");
    let client = Client::connect(&url, NoTls).expect("a connection");
    (url, client)
}

/// Users whose derived columns disagree with their rows.
fn drifted(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT id FROM users u WHERE
            roles <> ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role)
            OR has_backup_codes <> EXISTS(SELECT 1 FROM backup_codes b WHERE b.user_id = u.id)
            OR has_totp <> EXISTS(SELECT 1 FROM totp t WHERE t.user_id = u.id)
            OR has_email_code <> EXISTS(SELECT 1 FROM email_codes e WHERE e.user_id = u.id)
            OR has_user_permissions <> EXISTS(SELECT 1 FROM user_permissions p WHERE p.user_id = u.id)",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn add_user(db: &mut Client, id: &str) {
    db.execute(
        "INSERT INTO users (id, username, email_verified, created_at) VALUES ($1, $1, TRUE, 0)",
        &[&id],
    )
    .unwrap();
}

#[test]
fn every_kind_of_change_keeps_the_derived_columns() {
    let (_, mut db) = database();
    add_user(&mut db, "u1");
    add_user(&mut db, "u2");
    let steps = [
        "INSERT INTO user_roles VALUES ('u1', 'user'), ('u1', 'admin'), ('u2', 'bot')",
        "INSERT INTO backup_codes (user_id, code_hash) VALUES ('u1', 'h1'), ('u1', 'h2')",
        "INSERT INTO totp (user_id, secret, secret_key_id, algorithm, digits, period) \
         VALUES ('u1', 's', 1, 'sha1', 6, 30)",
        "UPDATE totp SET last_used_step = 7 WHERE user_id = 'u1'",
        "INSERT INTO email_codes (user_id, code_hash, salt, expires_at) VALUES ('u2', 'c', 's', 1)",
        "INSERT INTO user_permissions VALUES ('u2', 'create-personal-access-tokens', FALSE)",
        "UPDATE user_roles SET role = 'owner' WHERE user_id = 'u1' AND role = 'admin'",
        "UPDATE user_roles SET user_id = 'u2' WHERE user_id = 'u1' AND role = 'user'",
        "UPDATE backup_codes SET spent = TRUE WHERE user_id = 'u1' AND code_hash = 'h1'",
        "DELETE FROM backup_codes WHERE user_id = 'u1' AND code_hash = 'h1'",
        "DELETE FROM email_codes WHERE user_id = 'u2'",
        "DELETE FROM totp WHERE user_id = 'u1'",
        "DELETE FROM user_permissions WHERE user_id = 'u2'",
        "DELETE FROM backup_codes",
        "DELETE FROM user_roles WHERE user_id = 'u2'",
        "DELETE FROM users WHERE id = 'u1'",
    ];
    let mut seen_true = [false; 5];
    for step in steps {
        db.batch_execute(step).unwrap();
        assert_eq!(drifted(&mut db), Vec::<String>::new(), "after {step}");
        for r in db
            .query(
                "SELECT has_backup_codes, has_totp, has_email_code, has_user_permissions, \
                 cardinality(roles) > 0 FROM users",
                &[],
            )
            .unwrap()
        {
            for (i, seen) in seen_true.iter_mut().enumerate() {
                *seen |= r.get::<_, bool>(i);
            }
        }
    }
    // The check above compared something: each column was true at some step.
    assert_eq!(seen_true, [true; 5]);
}

/// Waits until another backend waits for a lock.
fn until_one_waits(db: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the second transaction never waited"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_transactions_changing_one_users_rows_leave_what_both_committed() {
    // Per table: a row the first transaction adds, one the second removes
    // (each in one statement: a later statement would derive again and hide
    // a stale first derivation), and the derived column to check.
    let cases = [
        (
            "INSERT INTO user_roles VALUES ('u', 'a')",
            "INSERT INTO user_roles VALUES ('u', 'b')",
            "DELETE FROM user_roles WHERE role = 'b'",
            "roles = '{a}'",
        ),
        (
            "INSERT INTO user_permissions VALUES ('u', 'p-a', TRUE)",
            "INSERT INTO user_permissions VALUES ('u', 'p-b', TRUE)",
            "DELETE FROM user_permissions WHERE permission = 'p-b'",
            "has_user_permissions",
        ),
        (
            "INSERT INTO backup_codes (user_id, code_hash) VALUES ('u', 'a')",
            "INSERT INTO backup_codes (user_id, code_hash) VALUES ('u', 'b')",
            "DELETE FROM backup_codes WHERE code_hash = 'b'",
            "has_backup_codes",
        ),
    ];
    for (add, existing, remove, holds) in cases {
        let (url, mut db) = database();
        add_user(&mut db, "u");
        db.batch_execute(existing).unwrap();

        // One transaction adds a row and stays open; another removes the other.
        let mut first = Client::connect(&url, NoTls).unwrap();
        let mut adding = first.transaction().unwrap();
        adding.batch_execute(add).unwrap();
        let removing = {
            let url = url.clone();
            thread::spawn(move || {
                let mut second = Client::connect(&url, NoTls).unwrap();
                second.batch_execute(remove).unwrap();
            })
        };
        until_one_waits(&mut db);
        adding.commit().unwrap();
        removing.join().unwrap();

        let ok: bool = db
            .query_one(&format!("SELECT {holds} FROM users WHERE id = 'u'"), &[])
            .unwrap()
            .get(0);
        assert!(ok, "{add} then {remove}: {holds} no longer holds");
        assert_eq!(
            drifted(&mut db),
            Vec::<String>::new(),
            "{add} then {remove}"
        );
    }
}

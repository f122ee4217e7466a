//! PostgreSQL storage: one database shared by any number of hosts.
//!
//! Every operation of the storage contract is one statement or one
//! transaction, and the guarantees SQLite gets from its single writer hold
//! here between hosts by row locks: each write first locks its user's row
//! (`SELECT ... FOR UPDATE`), so two requests for one user, on any hosts,
//! write one after the other and each sees the other's result (no
//! read-then-write race, and no serialization failures to retry). Failed-login
//! counters are locked the same way, account before address (one order, so no
//! deadlock). Reads are single statements (one snapshot each), most of them
//! one round trip: `authenticate` fetches the token, user, roles, TOTP, backup
//! codes and emailed code in one query.
//!
//! Connections come from an r2d2 pool (the storage calls are synchronous and
//! run on blocking threads); each keeps its prepared statements. Checkout and
//! connecting are bounded by `timeout`, statements by `statement_timeout`, so
//! with the database down a request fails at once with the storage-failure
//! reply, and the pool reconnects when it is back. Group commit is
//! PostgreSQL's own (`synchronous_commit=on`: a write that returned is on
//! disk). TLS per the URL's `sslmode` (rustls, the system's roots).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, Row, Statement};

use rcpat::model::*;
use rcpat::storage::rules::{KNOWN_ADDRESSES_KEPT, LoginCount, admit_login, reserve_attempt};

use rcpat_store::keys::{Admission, Keys};
use rcpat_store::superseded;
use rcpat_store::{
    Admin, Error, ExpiringToken, HostResult, NewUser, PAT_PERMISSION, PAT_PERMISSION_DEFAULT_ROLES,
    Result, Storage, TokenRecord, UserSummary, alg_from, alg_str, kind_str,
};

// The backends' schemas move together.
const _: () = assert!(MIGRATIONS.len() == rcpat_store::SCHEMA_VERSION);

/// PostgreSQL's own failures, kept as the source of the store's
/// [`Error::Backend`] (so the store crate names no driver).
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("postgres: {0}")]
    Driver(#[from] postgres::Error),
    #[error("postgres: no connection: {0}")]
    Pool(#[from] r2d2::Error),
}

impl From<PostgresError> for Error {
    fn from(e: PostgresError) -> Self {
        Error::backend(e)
    }
}

/// A driver error as the store's.
fn pg(e: impl Into<PostgresError>) -> Error {
    e.into().into()
}

/// Schema migrations, in step with SQLite's (`rcpat-store-sqlite`): version N here
/// holds what version N there holds, so both report the same version.
const MIGRATIONS: &[&str] = &[
    // 1, 2, 3, 4: users, roles, permissions, TOTP (secrets encrypted, with
    // their key id), backup codes (kept when spent), emailed codes, tokens.
    r#"
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        email TEXT,
        email_verified BOOLEAN NOT NULL,
        password_bcrypt TEXT,
        created_at BIGINT NOT NULL,
        email_two_factor BOOLEAN NOT NULL DEFAULT FALSE,
        failed_count INTEGER NOT NULL DEFAULT 0,
        failed_last_at BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX users_by_email ON users (lower(email));
    CREATE TABLE user_roles (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        PRIMARY KEY (user_id, role)
    );
    CREATE TABLE permission_roles (
        permission TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (permission, role)
    );
    CREATE TABLE user_permissions (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        permission TEXT NOT NULL,
        granted BOOLEAN NOT NULL,
        PRIMARY KEY (user_id, permission)
    );
    CREATE TABLE totp (
        user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        secret TEXT NOT NULL,
        secret_key_id INTEGER NOT NULL,
        algorithm TEXT NOT NULL,
        digits INTEGER NOT NULL,
        period INTEGER NOT NULL,
        last_used_step BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE backup_codes (
        seq BIGSERIAL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        spent BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (user_id, code_hash)
    );
    CREATE TABLE email_codes (
        user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        salt TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tokens (
        seq BIGSERIAL,
        hashed_token TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('login', 'pat')),
        name TEXT,
        last_token_part TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        bypass_two_factor BOOLEAN NOT NULL DEFAULT FALSE,
        authorized_hash TEXT,
        authorized_until BIGINT
    );
    CREATE INDEX tokens_by_user ON tokens (user_id);
    CREATE UNIQUE INDEX pat_names ON tokens (user_id, name) WHERE kind = 'pat';
"#,
    "",
    "",
    "",
    // 5: failed logins per account and per client address.
    r#"
    CREATE TABLE login_failures (
        scope TEXT NOT NULL CHECK (scope IN ('account', 'address')),
        key TEXT NOT NULL,
        count INTEGER NOT NULL,
        last_at BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    );
"#,
    // 6: when each personal access token last authenticated a request.
    "ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;",
    // 7: the conditional writes as functions, each one statement (one round
    // trip, its own transaction): lock the user's row, check, spend the
    // factor, write. `rcpat_spend` is `rules::spend_proof` (as SQLite runs it) in PL/pgSQL;
    // it refuses before it changes anything. Factor kinds: none, password,
    // totp (a step), backup and email (a code hash).
    r#"
    CREATE FUNCTION rcpat_spend(p_u TEXT, p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT) RETURNS TEXT AS $$
    DECLARE n BIGINT;
    BEGIN
        IF p_session IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM tokens WHERE hashed_token = p_session AND user_id = p_u) THEN
            RETURN 'credentials-revoked';
        END IF;
        IF p_factor = 'totp' THEN
            UPDATE totp SET last_used_step = p_step WHERE user_id = p_u AND last_used_step < p_step;
        ELSIF p_factor = 'backup' THEN
            UPDATE backup_codes SET spent = TRUE WHERE user_id = p_u AND code_hash = p_code AND NOT spent;
        ELSIF p_factor = 'email' THEN
            DELETE FROM email_codes WHERE user_id = p_u AND code_hash = p_code;
        END IF;
        IF p_factor IN ('totp', 'backup', 'email') THEN
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN RETURN 'factor-already-used'; END IF;
        END IF;
        IF p_factor <> 'none' THEN
            UPDATE users SET failed_count = 0 WHERE id = p_u;
        END IF;
        IF p_rem_token IS NOT NULL THEN
            UPDATE tokens SET authorized_hash = p_rem_fp, authorized_until = p_rem_until
                WHERE user_id = p_u AND hashed_token = p_rem_token;
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql;

    CREATE FUNCTION rcpat_insert_token(p_u TEXT, p_hash TEXT, p_tkind TEXT, p_tname TEXT, p_last_part TEXT,
                                       p_created BIGINT, p_bypass BOOLEAN, p_last_used BIGINT,
                                       p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                       p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT) RETURNS TEXT AS $$
    DECLARE refused TEXT;
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        IF p_tkind = 'pat' AND EXISTS
            (SELECT 1 FROM tokens WHERE user_id = p_u AND kind = 'pat' AND name = p_tname) THEN
            RETURN 'name-taken';
        END IF;
        refused := rcpat_spend(p_u, p_session, p_factor, p_step, p_code, p_rem_token, p_rem_fp, p_rem_until);
        IF refused IS NOT NULL THEN RETURN refused; END IF;
        INSERT INTO tokens (hashed_token, user_id, kind, name, last_token_part, created_at,
                            bypass_two_factor, last_used_at)
            VALUES (p_hash, p_u, p_tkind, p_tname, p_last_part, p_created, p_bypass, p_last_used);
        RETURN 'done';
    END $$ LANGUAGE plpgsql;

    CREATE FUNCTION rcpat_replace_pat(p_u TEXT, p_expected TEXT, p_tname TEXT, p_hash TEXT, p_last_part TEXT,
                                      p_created BIGINT, p_bypass BOOLEAN, p_last_used BIGINT,
                                      p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                      p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT) RETURNS TEXT AS $$
    DECLARE refused TEXT;
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        PERFORM 1 FROM tokens
            WHERE user_id = p_u AND kind = 'pat' AND name = p_tname AND hashed_token = p_expected;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        refused := rcpat_spend(p_u, p_session, p_factor, p_step, p_code, p_rem_token, p_rem_fp, p_rem_until);
        IF refused IS NOT NULL THEN RETURN refused; END IF;
        UPDATE tokens SET hashed_token = p_hash, last_token_part = p_last_part, created_at = p_created,
                          bypass_two_factor = p_bypass, authorized_hash = NULL,
                          authorized_until = NULL, last_used_at = p_last_used
            WHERE user_id = p_u AND kind = 'pat' AND name = p_tname AND hashed_token = p_expected;
        RETURN 'done';
    END $$ LANGUAGE plpgsql;

    CREATE FUNCTION rcpat_remove_pat(p_u TEXT, p_tname TEXT,
                                     p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                     p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT) RETURNS TEXT AS $$
    DECLARE refused TEXT;
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        PERFORM 1 FROM tokens WHERE user_id = p_u AND kind = 'pat' AND name = p_tname;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        refused := rcpat_spend(p_u, p_session, p_factor, p_step, p_code, p_rem_token, p_rem_fp, p_rem_until);
        IF refused IS NOT NULL THEN RETURN refused; END IF;
        DELETE FROM tokens WHERE user_id = p_u AND kind = 'pat' AND name = p_tname;
        RETURN 'done';
    END $$ LANGUAGE plpgsql;
"#,
    // 8: PAT expiry, and when the owner was told a value expires soon. The
    // two token writes take the expiry as a sixteenth argument; a
    // replacement clears the notice sent for the value it replaces.
    r#"
    ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
    ALTER TABLE tokens ADD COLUMN expiry_notified_at BIGINT;
    CREATE INDEX tokens_by_expiry ON tokens (expires_at) WHERE expires_at IS NOT NULL;
    DROP FUNCTION rcpat_insert_token(TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, BOOLEAN, BIGINT,
                                     TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT, BIGINT);
    DROP FUNCTION rcpat_replace_pat(TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, BOOLEAN, BIGINT,
                                    TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT, BIGINT);

    CREATE FUNCTION rcpat_insert_token(p_u TEXT, p_hash TEXT, p_tkind TEXT, p_tname TEXT, p_last_part TEXT,
                                       p_created BIGINT, p_bypass BOOLEAN, p_last_used BIGINT,
                                       p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                       p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT,
                                       p_expires BIGINT) RETURNS TEXT AS $$
    DECLARE refused TEXT;
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        IF p_tkind = 'pat' AND EXISTS
            (SELECT 1 FROM tokens WHERE user_id = p_u AND kind = 'pat' AND name = p_tname) THEN
            RETURN 'name-taken';
        END IF;
        refused := rcpat_spend(p_u, p_session, p_factor, p_step, p_code, p_rem_token, p_rem_fp, p_rem_until);
        IF refused IS NOT NULL THEN RETURN refused; END IF;
        INSERT INTO tokens (hashed_token, user_id, kind, name, last_token_part, created_at,
                            bypass_two_factor, last_used_at, expires_at)
            VALUES (p_hash, p_u, p_tkind, p_tname, p_last_part, p_created, p_bypass, p_last_used, p_expires);
        RETURN 'done';
    END $$ LANGUAGE plpgsql;

    CREATE FUNCTION rcpat_replace_pat(p_u TEXT, p_expected TEXT, p_tname TEXT, p_hash TEXT, p_last_part TEXT,
                                      p_created BIGINT, p_bypass BOOLEAN, p_last_used BIGINT,
                                      p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                      p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT,
                                      p_expires BIGINT) RETURNS TEXT AS $$
    DECLARE refused TEXT;
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        PERFORM 1 FROM tokens
            WHERE user_id = p_u AND kind = 'pat' AND name = p_tname AND hashed_token = p_expected;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        refused := rcpat_spend(p_u, p_session, p_factor, p_step, p_code, p_rem_token, p_rem_fp, p_rem_until);
        IF refused IS NOT NULL THEN RETURN refused; END IF;
        UPDATE tokens SET hashed_token = p_hash, last_token_part = p_last_part, created_at = p_created,
                          bypass_two_factor = p_bypass, authorized_hash = NULL,
                          authorized_until = NULL, last_used_at = p_last_used,
                          expires_at = p_expires, expiry_notified_at = NULL
            WHERE user_id = p_u AND kind = 'pat' AND name = p_tname AND hashed_token = p_expected;
        RETURN 'done';
    END $$ LANGUAGE plpgsql;
"#,
    // 9: replies kept for `Idempotency-Key` retries (written by `keep_reply`
    // in the write's transaction).
    r#"
    CREATE TABLE idempotent_replies (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        presented_hashed_token TEXT NOT NULL,
        key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        sealed_reply BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, presented_hashed_token, key)
    );
"#,
    // 10: emails compare case-insensitively by ASCII letters only, as in
    // SQLite (`NOCASE`) and the memory store: under the "C" collation
    // `lower()` folds A-Z and nothing else, whatever the database's locale.
    r#"
    DROP INDEX users_by_email;
    CREATE INDEX users_by_email ON users (lower(email COLLATE "C"));
"#,
    // 11: the fingerprint of each key id secrets were sealed under
    // (`rcpat_store::keys`): a key file whose key N is another key cannot write.
    "CREATE TABLE secret_keys (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL);",
    // 12: `Idempotency-Key` reservations, beside the kept replies (see SQLite's 12).
    "ALTER TABLE idempotent_replies ADD COLUMN lease_until BIGINT;",
    // 13: addresses that logged in successfully, per account (see SQLite's 13).
    r#"
    CREATE TABLE known_login_addresses (
        account TEXT NOT NULL,
        address TEXT NOT NULL,
        last_at BIGINT NOT NULL,
        PRIMARY KEY (account, address)
    );
"#,
    // 14: what `authenticate` reads from other tables, kept on the user's
    // row by triggers on the writes that change it (issue 30): the sorted
    // roles, and whether backup codes exist.
    r#"
    ALTER TABLE users ADD COLUMN roles TEXT[] NOT NULL DEFAULT '{}';
    ALTER TABLE users ADD COLUMN has_backup_codes BOOLEAN NOT NULL DEFAULT FALSE;
    UPDATE users u SET roles = ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role),
                       has_backup_codes = EXISTS(SELECT 1 FROM backup_codes b WHERE b.user_id = u.id);

    CREATE FUNCTION rcpat_roles_changed() RETURNS trigger AS $$
    BEGIN
        UPDATE users u SET roles = ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role)
            WHERE u.id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.user_id END,
                           CASE WHEN TG_OP <> 'DELETE' THEN NEW.user_id END);
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
    CREATE TRIGGER user_roles_on_user AFTER INSERT OR UPDATE OR DELETE ON user_roles
        FOR EACH ROW EXECUTE FUNCTION rcpat_roles_changed();

    CREATE FUNCTION rcpat_backup_codes_changed() RETURNS trigger AS $$
    BEGIN
        UPDATE users u SET has_backup_codes = EXISTS(SELECT 1 FROM backup_codes b WHERE b.user_id = u.id)
            WHERE u.id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.user_id END,
                           CASE WHEN TG_OP <> 'DELETE' THEN NEW.user_id END);
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
    CREATE TRIGGER backup_codes_on_user AFTER INSERT OR DELETE ON backup_codes
        FOR EACH ROW EXECUTE FUNCTION rcpat_backup_codes_changed();

"#,
    // 15 (issue 30): `authenticate` probes the TOTP, emailed-code and
    // per-user permission tables only for a user who has rows there (flags
    // on the user's row), and a regeneration writes one index entry fewer:
    // its new hash makes the UPDATE non-HOT, so every index of `tokens` gets
    // an entry, and `tokens_by_user` and `pat_names` become one unique index
    // on (user_id, kind, name) (a login token has no name, so NULLs never
    // collide; PAT names stay unique per user).
    //
    // One trigger function derives every such column from the rows, and
    // first locks the user's row: a concurrent change to the same user's rows
    // holds that lock until it commits, and the statement after the lock
    // takes a fresh snapshot (READ COMMITTED), so the last writer derives
    // from both changes. Migration 14's triggers derived inside the UPDATE,
    // from a snapshot taken before the wait: a role granted while another
    // was revoked could be lost from `users.roles`.
    r#"
    ALTER TABLE users ADD COLUMN has_totp BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE users ADD COLUMN has_email_code BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE users ADD COLUMN has_user_permissions BOOLEAN NOT NULL DEFAULT FALSE;

    CREATE FUNCTION rcpat_derive_user(p_u TEXT) RETURNS VOID AS $$
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        UPDATE users u SET
            roles = ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role),
            has_backup_codes = EXISTS(SELECT 1 FROM backup_codes b WHERE b.user_id = u.id),
            has_totp = EXISTS(SELECT 1 FROM totp t WHERE t.user_id = u.id),
            has_email_code = EXISTS(SELECT 1 FROM email_codes e WHERE e.user_id = u.id),
            has_user_permissions = EXISTS(SELECT 1 FROM user_permissions p WHERE p.user_id = u.id)
            WHERE u.id = p_u;
    END $$ LANGUAGE plpgsql;
    SELECT rcpat_derive_user(id) FROM users;

    CREATE FUNCTION rcpat_user_rows_changed() RETURNS trigger AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN PERFORM rcpat_derive_user(OLD.user_id); END IF;
        IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.user_id IS DISTINCT FROM OLD.user_id) THEN
            PERFORM rcpat_derive_user(NEW.user_id);
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
    DROP TRIGGER user_roles_on_user ON user_roles;
    DROP TRIGGER backup_codes_on_user ON backup_codes;
    DROP FUNCTION rcpat_roles_changed();
    DROP FUNCTION rcpat_backup_codes_changed();
    CREATE TRIGGER user_roles_on_user AFTER INSERT OR DELETE OR UPDATE OF user_id, role ON user_roles
        FOR EACH ROW EXECUTE FUNCTION rcpat_user_rows_changed();
    CREATE TRIGGER backup_codes_on_user AFTER INSERT OR DELETE OR UPDATE OF user_id ON backup_codes
        FOR EACH ROW EXECUTE FUNCTION rcpat_user_rows_changed();
    CREATE TRIGGER totp_on_user AFTER INSERT OR DELETE OR UPDATE OF user_id ON totp
        FOR EACH ROW EXECUTE FUNCTION rcpat_user_rows_changed();
    CREATE TRIGGER email_codes_on_user AFTER INSERT OR DELETE OR UPDATE OF user_id ON email_codes
        FOR EACH ROW EXECUTE FUNCTION rcpat_user_rows_changed();
    CREATE TRIGGER user_permissions_on_user AFTER INSERT OR DELETE OR UPDATE OF user_id ON user_permissions
        FOR EACH ROW EXECUTE FUNCTION rcpat_user_rows_changed();

    UPDATE tokens SET name = NULL WHERE kind = 'login' AND name IS NOT NULL;
    ALTER TABLE tokens ADD CONSTRAINT login_tokens_unnamed CHECK (kind = 'pat' OR name IS NULL);
    CREATE UNIQUE INDEX tokens_by_user_kind_name ON tokens (user_id, kind, name);
    DROP INDEX tokens_by_user;
    DROP INDEX pat_names;
"#,
    // 16: each PAT's superseded values, for reuse detection (contract
    // 0.10.0), on its own row (`rcpat_store::superseded`: 24-byte entries,
    // newest first). The replacement function gains the entry and the
    // bound as an overload (hosts still on 15 keep calling the old one
    // during a rolling upgrade; the row's values then carry over as they are).
    // It repeats the old one's body rather than calling it and updating
    // the row again: a second UPDATE would write a second row version.
    r#"
    ALTER TABLE tokens ADD COLUMN superseded BYTEA;

    CREATE FUNCTION rcpat_replace_pat(p_u TEXT, p_expected TEXT, p_tname TEXT, p_hash TEXT, p_last_part TEXT,
                                      p_created BIGINT, p_bypass BOOLEAN, p_last_used BIGINT,
                                      p_session TEXT, p_factor TEXT, p_step BIGINT, p_code TEXT,
                                      p_rem_token TEXT, p_rem_fp TEXT, p_rem_until BIGINT,
                                      p_expires BIGINT, p_entry BYTEA, p_keep INT) RETURNS TEXT AS $$
    DECLARE refused TEXT;
    BEGIN
        PERFORM 1 FROM users WHERE id = p_u FOR UPDATE;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        PERFORM 1 FROM tokens
            WHERE user_id = p_u AND kind = 'pat' AND name = p_tname AND hashed_token = p_expected;
        IF NOT FOUND THEN RETURN 'not-found'; END IF;
        refused := rcpat_spend(p_u, p_session, p_factor, p_step, p_code, p_rem_token, p_rem_fp, p_rem_until);
        IF refused IS NOT NULL THEN RETURN refused; END IF;
        UPDATE tokens SET hashed_token = p_hash, last_token_part = p_last_part, created_at = p_created,
                          bypass_two_factor = p_bypass, authorized_hash = NULL,
                          authorized_until = NULL, last_used_at = p_last_used,
                          expires_at = p_expires, expiry_notified_at = NULL,
                          superseded = CASE WHEN p_keep > 0 THEN
                              substring(p_entry || coalesce(superseded, ''::bytea) FROM 1 FOR p_keep * 24) END
            WHERE user_id = p_u AND kind = 'pat' AND name = p_tname AND hashed_token = p_expected;
        RETURN 'done';
    END $$ LANGUAGE plpgsql;
"#,
    // 17: the audit trail (issue 28, part 2; see SQLite's 17). Events are
    // inserted by the write statements themselves (`with_events!`); the
    // indexes serve the read side (by time, by account) and pruning by time.
    r#"
    CREATE TABLE audit_events (
        -- The order of storing (ties of `at`); no index: nothing looks a
        -- row up by it, and each index is a WAL record per event.
        id BIGINT GENERATED ALWAYS AS IDENTITY,
        at BIGINT NOT NULL,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        token_name TEXT,
        token_last_part TEXT,
        method TEXT,
        address TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        host_id TEXT NOT NULL DEFAULT '',
        count INTEGER NOT NULL DEFAULT 1,
        minute BIGINT
    );
    CREATE INDEX audit_by_time ON audit_events (at);
    CREATE INDEX audit_by_account ON audit_events (account, at);
    CREATE UNIQUE INDEX audit_per_minute ON audit_events (account, address, kind, minute)
        WHERE minute IS NOT NULL;
    INSERT INTO permission_roles VALUES ('view-personal-access-token-audit', 'admin')
        ON CONFLICT DO NOTHING;
"#,
];

/// The advisory lock that makes one host migrate while the others wait.
const MIGRATION_LOCK: i64 = 0x7263_7061_745f_6d69; // "rcpat_mi"

/// The advisory lock held by every transaction that seals a secret (TOTP
/// enrolment, re-encryption): such writes are admin actions, rare, and one
/// at a time across every host, so a key's fingerprint is recorded once.
const KEYS_LOCK: i64 = 0x7263_7061_745f_6b79; // "rcpat_ky"

/// Pool and time limits (from the host's options).
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db?sslmode=...` (libpq's URL or key=value form).
    pub url: String,
    /// Connections this host keeps at most.
    pub pool_size: u32,
    /// Longest wait for a connection (from the pool, or a new one).
    pub timeout: Duration,
    /// Longest a statement may run on the server.
    pub statement_timeout: Duration,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            pool_size: 16,
            timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

pub struct PostgresStorage {
    pool: r2d2::Pool<Manager>,
    keys: Arc<Keys>,
    /// The id stamped on the audit events this host stores (`set_host_id`).
    host_id: std::sync::RwLock<Arc<str>>,
}

/// A pooled connection and its prepared statements.
pub struct Conn {
    client: Closing,
    statements: HashMap<&'static str, Statement>,
}

/// A connection's client, closed where closing cannot panic.
/// `postgres::Client` closes its session on drop by blocking on a runtime of
/// its own, and tokio forbids that on a thread that is driving a runtime:
/// where `serve` drops its last reference to storage as it stops. There the
/// close runs on a plain thread instead (a handful of connections, once).
struct Closing(Option<Client>);

impl std::ops::Deref for Closing {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a session is only taken when it drops")
    }
}

impl std::ops::DerefMut for Closing {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a session is only taken when it drops")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(client) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

/// How the pool opens connections: the parsed URL, TLS if the URL asks for
/// it, and the statement timeout set on each new session.
struct Manager {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    statement_timeout: Duration,
}

/// Why a connection could not be made, with every cause (the pool keeps
/// only the text of the last failure, so it must say everything).
#[derive(Debug)]
pub struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> Self {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        ConnectError(text)
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<Conn, ConnectError> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(postgres::NoTls)?,
        };
        client.batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            self.statement_timeout.as_millis(),
            self.statement_timeout.as_millis()
        ))?;
        Ok(Conn {
            client: Closing(Some(client)),
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), ConnectError> {
        Ok(conn.client.simple_query("").map(drop)?)
    }

    /// A connection the server closed (a restart) is dropped, not reused.
    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

/// rustls trusting `root_cert` (libpq's `sslrootcert`: a PEM file of CA
/// certificates) if given, else the system's roots (and `SSL_CERT_FILE`).
/// The server's certificate is always verified, name included (stricter
/// than libpq's `prefer` and `require`, which accept any certificate).
fn tls_connector(root_cert: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::invalid(format!("sslrootcert {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| Error::invalid(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid(format!("sslrootcert {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Takes libpq's `sslrootcert` out of a URL (`?sslrootcert=/path`) or a
/// key=value string, which the driver does not know: (the rest, the path).
fn split_root_cert(url: &str) -> (String, Option<PathBuf>) {
    let decode = |v: &str| {
        PathBuf::from(
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned(),
        )
    };
    if let Some((base, query)) = url.split_once('?') {
        let mut root = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| match kv.strip_prefix("sslrootcert=") {
                Some(v) => {
                    root = Some(decode(v));
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, root);
    }
    if url.contains("://") {
        return (url.to_string(), None);
    }
    let mut root = None;
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| match kv.strip_prefix("sslrootcert=") {
            Some(v) => {
                root = Some(PathBuf::from(v));
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), root)
}

impl PostgresStorage {
    /// Connects (failing at once if the database is unreachable), applies
    /// pending migrations (one host at a time), and keeps a pool.
    pub fn open(config: &PostgresConfig, keys: Arc<Keys>) -> Result<Self> {
        let (url, root_cert) = split_root_cert(&config.url);
        let mut parsed: postgres::Config = url
            .parse()
            .map_err(|e| Error::invalid(format!("the database URL: {e}")))?;
        parsed.connect_timeout(config.timeout);
        let tls = match parsed.get_ssl_mode() {
            postgres::config::SslMode::Disable => None,
            _ => Some(tls_connector(root_cert.as_deref())?),
        };
        let manager = Manager {
            config: parsed,
            tls,
            statement_timeout: config.statement_timeout,
        };
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(config.timeout)
            // A broken connection shows itself on use (`has_broken`); a
            // check on every checkout would cost a round trip per call.
            .test_on_check_out(false)
            .build_unchecked(manager);
        let storage = PostgresStorage {
            pool,
            keys,
            host_id: std::sync::RwLock::new(Arc::from("")),
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// Applies pending migrations in one transaction under an advisory lock,
    /// so hosts starting together migrate once and wait for each other.
    fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.get().map_err(pg)?;
        let mut tx = conn.client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg)?;
        // (Quietly: the notice that it exists would reach the host's log.)
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning; \
             CREATE TABLE IF NOT EXISTS rcpat_schema (version INTEGER NOT NULL)",
        )
        .map_err(pg)?;
        let version = match tx
            .query_opt("SELECT version FROM rcpat_schema", &[])
            .map_err(pg)?
        {
            Some(row) => row.get::<_, i32>(0) as usize,
            None => {
                tx.execute("INSERT INTO rcpat_schema VALUES (0)", &[])
                    .map_err(pg)?;
                0
            }
        };
        if version > MIGRATIONS.len() {
            return Err(Error::SchemaTooNew {
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.batch_execute(sql).map_err(pg)?;
            if i == 0 {
                for role in PAT_PERMISSION_DEFAULT_ROLES {
                    tx.execute(
                        "INSERT INTO permission_roles VALUES ($1, $2)",
                        &[&PAT_PERMISSION, role],
                    )
                    .map_err(pg)?;
                }
            }
        }
        tx.execute(
            "UPDATE rcpat_schema SET version = $1",
            &[&(MIGRATIONS.len() as i32)],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(())
    }

    /// Runs `f` on a pooled connection, in a transaction if `tx` (committed
    /// if `f` succeeds, rolled back otherwise), else statement by statement.
    /// Generic over the caller's error (`HostError` or `Error`).
    fn run<T, E: From<Error>>(
        &self,
        tx: bool,
        f: impl FnOnce(&mut Db) -> Result<T>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.pool.get().map_err(pg)?;
        let Conn { client, statements } = &mut *conn;
        let host_id = self
            .host_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !tx {
            return Ok(f(&mut Db {
                client: Handle::Plain(client),
                statements,
                host_id,
            })?);
        }
        let mut db = Db {
            client: Handle::Tx(client.transaction().map_err(pg)?),
            statements,
            host_id,
        };
        let value = f(&mut db)?;
        if let Handle::Tx(t) = db.client {
            t.commit().map_err(pg)?;
        }
        Ok(value)
    }

    /// Statements in autocommit: each its own transaction (reads, and
    /// writes of one statement).
    fn single<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T>,
    ) -> std::result::Result<T, E> {
        self.run(false, f)
    }

    fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T>,
    ) -> std::result::Result<T, E> {
        self.run(true, f)
    }
}

enum Handle<'a> {
    Plain(&'a mut Client),
    Tx(postgres::Transaction<'a>),
}

/// A connection or transaction with the connection's statement cache.
struct Db<'a> {
    client: Handle<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
    /// The host id its audit events are stamped with.
    host_id: Arc<str>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Runs the same call on whichever the session holds (both are
/// `GenericClient`s, a trait with generic methods, so not a `dyn`).
macro_rules! on_handle {
    ($db:expr, $c:ident => $call:expr) => {
        match &mut $db.client {
            Handle::Plain($c) => $call,
            Handle::Tx($c) => $call,
        }
    };
}

impl Db<'_> {
    /// Lets key `id` seal secrets in this transaction (see `Keys::admit`),
    /// under `KEYS_LOCK`, recording its fingerprint if it is the first.
    fn admit_key(&mut self, keys: &Keys, id: u32) -> Result<()> {
        let id = id as i32;
        self.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])
            .map_err(pg)?;
        let recorded: Option<String> = self
            .query_opt("SELECT fingerprint FROM secret_keys WHERE id = $1", &[&id])
            .map_err(pg)?
            .map(|r| r.get(0));
        let sample: Option<(String, String)> = match recorded {
            Some(_) => None,
            None => self
                .query_opt(
                    "SELECT user_id, secret FROM totp WHERE secret_key_id = $1 LIMIT 1",
                    &[&id],
                )
                .map_err(pg)?
                .map(|r| (r.get(0), r.get(1))),
        };
        let sample = sample.as_ref().map(|(u, s)| (u.as_str(), s.as_str()));
        if let Admission::Record(fingerprint) =
            keys.admit(id as u32, recorded.as_deref(), sample)?
        {
            self.execute(
                "INSERT INTO secret_keys (id, fingerprint) VALUES ($1, $2)",
                &[&id, &fingerprint],
            )
            .map_err(pg)?;
        }
        Ok(())
    }

    fn statement(&mut self, sql: &'static str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = on_handle!(self, c => c.prepare(sql))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        on_handle!(self, c => c.query(&st, p))
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> std::result::Result<Option<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        on_handle!(self, c => c.query_opt(&st, p))
    }

    fn query_one(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> std::result::Result<Row, postgres::Error> {
        let st = self.statement(sql)?;
        on_handle!(self, c => c.query_one(&st, p))
    }

    fn execute(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> std::result::Result<u64, postgres::Error> {
        let st = self.statement(sql)?;
        on_handle!(self, c => c.execute(&st, p))
    }

    /// Locks the user's row for the rest of the transaction; false if there
    /// is no such user. Every write to a user's data takes this lock first.
    fn lock_user(&mut self, user_id: &str) -> std::result::Result<bool, postgres::Error> {
        Ok(self
            .query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user_id])?
            .is_some())
    }
}

/// One query for a user and everything the rules read about them: roles,
/// TOTP (whether backup codes were issued, not the codes), the outstanding
/// emailed code (columns 0 to 21; `$extra` columns follow).
macro_rules! user_select {
    ($extra:expr, $from:literal, $where:literal) => {
        concat!(
            "SELECT u.id, u.username, u.name, u.created_at, u.email, u.email_verified, \
             u.password_bcrypt, u.email_two_factor, u.failed_count, u.failed_last_at, \
             u.roles, \
             t.secret, t.secret_key_id, t.algorithm, t.digits, t.period, t.last_used_step, \
             u.has_backup_codes, \
             e.code_hash, e.salt, e.expires_at, e.attempts",
            $extra,
            " ",
            $from,
            // The user's TOTP and emailed-code rows, probed only when the
            // user's row says they exist (migration 15): `OFFSET 0` keeps each
            // subquery whole, so its condition on `u` is a one-time filter
            // that skips the index scan, not a filter after it.
            " LEFT JOIN LATERAL (SELECT secret, secret_key_id, algorithm, digits, period, last_used_step \
             FROM totp WHERE totp.user_id = u.id AND u.has_totp OFFSET 0) t ON TRUE \
             LEFT JOIN LATERAL (SELECT code_hash, salt, expires_at, attempts FROM email_codes \
             WHERE email_codes.user_id = u.id AND u.has_email_code OFFSET 0) e ON TRUE ",
            $where
        )
    };
}

/// Whether user `$user` holds permission `$permission` (SQL expressions): a
/// per-user grant or revocation first, otherwise through one of the roles.
macro_rules! permitted {
    ($user:literal, $permission:literal) => {
        concat!(
            "COALESCE((SELECT granted FROM user_permissions WHERE user_id = ",
            $user,
            " AND permission = ",
            $permission,
            "), EXISTS(SELECT 1 FROM user_roles ur JOIN permission_roles pr ON pr.role = ur.role \
             WHERE ur.user_id = ",
            $user,
            " AND pr.permission = ",
            $permission,
            "))"
        )
    };
}

/// `permitted!` for the user row `u` of the query, through its cached
/// roles (`users.roles`, migration 14) instead of a join on `user_roles`,
/// and probing `user_permissions` only for a user who has rows there
/// (`users.has_user_permissions`, migration 15; `CASE` skips the subquery).
macro_rules! permitted_by_row {
    ($permission:literal) => {
        concat!(
            "COALESCE(CASE WHEN u.has_user_permissions THEN \
             (SELECT granted FROM user_permissions WHERE user_id = u.id AND permission = ",
            $permission,
            ") END, EXISTS(SELECT 1 FROM permission_roles pr WHERE pr.permission = ",
            $permission,
            " AND pr.role = ANY(u.roles)))"
        )
    };
}

/// Timestamps and steps are BIGINT; counts INTEGER.
fn ts(v: u64) -> i64 {
    v as i64
}

fn user_from_row(keys: &Keys, r: &Row) -> Result<User> {
    let id: String = r.get(0);
    let email: Option<String> = r.get(4);
    let verified: bool = r.get(5);
    let totp = match r.get::<_, Option<String>>(11) {
        Some(stored) => {
            let key_id = r.get::<_, i32>(12) as u32;
            Some(TotpEnrolment {
                secret: keys.open_text(key_id, &id, &stored)?,
                algorithm: alg_from(r.get(13)),
                digits: r.get::<_, i32>(14) as u8,
                period: r.get::<_, i32>(15) as u32,
                last_used_step: r.get::<_, i64>(16) as u64,
                has_backup_codes: r.get(17),
            })
        }
        None => None,
    };
    let email_code = r.get::<_, Option<String>>(18).map(|code_hash| EmailCode {
        code_hash,
        salt: r.get(19),
        expires_at: r.get::<_, i64>(20) as u64,
        attempts: r.get::<_, i32>(21) as u32,
    });
    Ok(User {
        username: r.get(1),
        name: r.get(2),
        created_at: r.get::<_, i64>(3) as u64,
        verified_emails: email.filter(|_| verified).into_iter().collect(),
        password_bcrypt: r.get(6),
        email_two_factor: r.get(7),
        failures: FailureCount {
            count: r.get::<_, i32>(8) as u32,
            last_failed_at: r.get::<_, i64>(9) as u64,
        },
        roles: r.get(10),
        totp,
        email_code,
        id,
    })
}

fn pat_from_row(r: &Row) -> PersonalAccessToken {
    PersonalAccessToken {
        name: r.get(0),
        hashed_token: r.get(1),
        last_token_part: r.get(2),
        created_at: r.get::<_, i64>(3) as u64,
        bypass_two_factor: r.get(4),
        last_used_at: r.get::<_, Option<i64>>(5).map(|v| v as u64),
        expires_at: r.get::<_, Option<i64>>(6).map(|v| v as u64),
    }
}

/// A proof as the write functions take it (the last seven arguments).
struct ProofArgs<'a> {
    session: Option<&'a str>,
    kind: &'static str,
    step: Option<i64>,
    code: Option<&'a str>,
    rem_token: Option<&'a str>,
    rem_fp: Option<&'a str>,
    rem_until: Option<i64>,
}

impl<'a> ProofArgs<'a> {
    fn of(p: &'a FactorProof) -> Self {
        let (kind, step, code) = match &p.used {
            FactorUse::None => ("none", None, None),
            FactorUse::Password => ("password", None, None),
            FactorUse::TotpStep(s) => ("totp", Some(ts(*s)), None),
            FactorUse::BackupCode(h) => ("backup", None, Some(h.as_str())),
            FactorUse::EmailCode(h) => ("email", None, Some(h.as_str())),
        };
        ProofArgs {
            session: p.session.as_deref(),
            kind,
            step,
            code,
            rem_token: p.remember.as_ref().map(|r| r.hashed_login_token.as_str()),
            rem_fp: p.remember.as_ref().map(|r| r.fingerprint.as_str()),
            rem_until: p.remember.as_ref().map(|r| ts(r.until)),
        }
    }
}

/// A write function's answer.
fn outcome(row: Row) -> Result<WriteOutcome> {
    Ok(match row.get::<_, &str>(0) {
        "done" => WriteOutcome::Done,
        "not-found" => WriteOutcome::NotFound,
        "name-taken" => WriteOutcome::NameTaken,
        "factor-already-used" => WriteOutcome::FactorAlreadyUsed,
        "credentials-revoked" => WriteOutcome::CredentialsRevoked,
        _ => return Err(Error::Corrupt("a write function gave an unknown outcome")),
    })
}

/// Stores the reply a write's proof carries, after that write happened
/// (`outcome` done), in the caller's transaction (`run(true, …)` whenever
/// the proof carries one), forgetting the user's expired replies.
///
/// A reply already kept for the same token and key (another request with
/// the key wrote first; the user's row lock, taken by the write function,
/// orders them) makes it `Err(Error::ReplyKept)`: the caller's transaction
/// rolls back, write included, and the answer is `reply-kept`.
fn keep_reply(
    db: &mut Db,
    user_id: &str,
    proof: &FactorProof,
    outcome: WriteOutcome,
) -> Result<()> {
    let Some(r) = proof
        .reply
        .as_ref()
        .filter(|_| outcome == WriteOutcome::Done)
    else {
        return Ok(());
    };
    db.execute(
        "DELETE FROM idempotent_replies WHERE user_id = $1 AND created_at < $2",
        &[&user_id, &ts(r.forget_before)],
    )
    .map_err(pg)?;
    let stored = db
        .execute(
            "INSERT INTO idempotent_replies \
         (user_id, presented_hashed_token, key, body_hash, sealed_reply, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, presented_hashed_token, key) \
         DO UPDATE SET body_hash = $4, sealed_reply = $5, created_at = $6, lease_until = NULL \
         WHERE idempotent_replies.lease_until IS NOT NULL",
            &[
                &user_id,
                &r.presented_hashed_token,
                &r.key,
                &r.body_hash,
                &r.sealed_reply,
                &ts(r.created_at),
            ],
        )
        .map_err(pg)?;
    if stored == 0 {
        return Err(Error::ReplyKept);
    }
    Ok(())
}

/// Whether a write's statements need a transaction of their own: a reply
/// to keep goes beside the write function's statement. (Audit events do
/// not: they ride in the write's own statement, `with_events!`.)
fn in_transaction(proof: &FactorProof) -> bool {
    proof.reply.is_some()
}

/// A write's statement `$call` (answering its outcome as `outcome`; no
/// row reads as 'not-found': a conditional `UPDATE … RETURNING`) and
/// its audit events in one statement, so a write stays one round trip: the
/// events, as arrays from parameter `$n` on (`EventArrays`, 10 of them),
/// are inserted only if the write answers 'done', in its snapshot and
/// transaction. (A write's events are never of an aggregated kind, so
/// they need no upsert: `ON CONFLICT` would cost a WAL record per event.)
macro_rules! with_events {
    ($call:literal, $n0:literal, $n1:literal, $n2:literal, $n3:literal, $n4:literal, $n5:literal, $n6:literal, $n7:literal, $n8:literal, $n9:literal) => {
        concat!(
            "WITH w AS (", $call, "), e AS (INSERT INTO audit_events \
             (at, account, kind, token_name, token_last_part, method, address, user_agent, minute, host_id) \
             SELECT x.*, $", $n9, " FROM unnest($", $n0, "::bigint[], $", $n1, "::text[], $", $n2, "::text[], $",
            $n3, "::text[], $", $n4, "::text[], $", $n5, "::text[], $", $n6, "::text[], $", $n7,
            "::text[], $", $n8, "::bigint[]) AS x WHERE (SELECT outcome FROM w) = 'done') \
             SELECT coalesce((SELECT outcome FROM w), 'not-found')"
        )
    };
}

/// A write's events as the ten parameters of `with_events!`: one array per
/// column, then the host id.
struct EventArrays {
    at: Vec<i64>,
    account: Vec<String>,
    kind: Vec<&'static str>,
    token_name: Vec<Option<String>>,
    token_last_part: Vec<Option<String>>,
    method: Vec<Option<&'static str>>,
    address: Vec<String>,
    user_agent: Vec<String>,
    minute: Vec<Option<i64>>,
    host_id: String,
}

impl EventArrays {
    fn of(events: &[AuditEvent], host_id: &Arc<str>) -> Self {
        EventArrays {
            at: events.iter().map(|e| ts(e.at)).collect(),
            account: events.iter().map(|e| e.account.clone()).collect(),
            kind: events.iter().map(|e| e.kind.name()).collect(),
            token_name: events.iter().map(|e| e.token_name.clone()).collect(),
            token_last_part: events.iter().map(|e| e.token_last_part.clone()).collect(),
            method: events
                .iter()
                .map(|e| e.method.map(TwoFactorMethod::name))
                .collect(),
            address: events.iter().map(|e| e.client_address.clone()).collect(),
            user_agent: events.iter().map(|e| e.user_agent.clone()).collect(),
            minute: events
                .iter()
                .map(|e| e.kind.aggregated().then_some(ts(e.at / 60_000)))
                .collect(),
            host_id: host_id.to_string(),
        }
    }

    /// `first`'s parameters, then these ten.
    fn after<'a>(&'a self, first: &[&'a (dyn ToSql + Sync)]) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut p = first.to_vec();
        p.extend([
            &self.at as &(dyn ToSql + Sync),
            &self.account,
            &self.kind,
            &self.token_name,
            &self.token_last_part,
            &self.method,
            &self.address,
            &self.user_agent,
            &self.minute,
            &self.host_id,
        ]);
        p
    }
}

/// Stores audit events on `db` (a transaction when beside a write); a
/// failed login counts on the row of its (account, address, minute).
fn insert_events(db: &mut Db, events: &[AuditEvent]) -> Result<()> {
    let host_id = db.host_id.clone();
    for e in events {
        let minute = e.kind.aggregated().then_some(ts(e.at / 60_000));
        db.execute(
            "INSERT INTO audit_events (at, account, kind, token_name, token_last_part, method, address, user_agent, minute, host_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (account, address, kind, minute) WHERE minute IS NOT NULL \
             DO UPDATE SET count = audit_events.count + 1",
            &[
                &ts(e.at),
                &e.account,
                &e.kind.name(),
                &e.token_name,
                &e.token_last_part,
                &e.method.map(TwoFactorMethod::name),
                &e.client_address,
                &e.user_agent,
                &minute,
                &&*host_id,
            ],
        )
        .map_err(pg)?;
    }
    Ok(())
}

fn or_reply_kept(result: Result<WriteOutcome>) -> HostResult<WriteOutcome> {
    match result {
        Err(Error::ReplyKept) => Ok(WriteOutcome::ReplyKept),
        other => Ok(other?),
    }
}

/// Inserts a token (session or PAT) through `rcpat_insert_token`.
fn insert_with_proof(
    db: &mut Db,
    user_id: &str,
    t: &TokenRecord,
    last_used_at: Option<TimestampMs>,
    proof: &FactorProof,
) -> Result<WriteOutcome> {
    let a = ProofArgs::of(proof);
    let events = EventArrays::of(&proof.events, &db.host_id);
    let row = db.query_one(
        with_events!(
            "SELECT rcpat_insert_token($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) AS outcome",
            "17", "18", "19", "20", "21", "22", "23", "24", "25", "26"
        ),
        &events.after(&[
            &user_id,
            &t.hashed_token,
            &kind_str(t.kind),
            &t.name,
            &t.last_token_part,
            &ts(t.created_at),
            &t.bypass_two_factor,
            &last_used_at.map(ts),
            &a.session,
            &a.kind,
            &a.step,
            &a.code,
            &a.rem_token,
            &a.rem_fp,
            &a.rem_until,
            &t.expires_at.map(ts),
        ]),
    ).map_err(pg)?;
    outcome(row)
}

/// The PAT of the user that keeps `hashed_token` as a superseded value at
/// or after `not_before` (`position` narrows to rows holding the key's
/// bytes; `superseded::find` checks the entry); `lock`: "" or " FOR UPDATE".
fn superseded_in(
    db: &mut Db,
    user_id: &str,
    hashed_token: &str,
    not_before: TimestampMs,
    lock: &'static str,
) -> Result<Option<SupersededToken>> {
    let sql = if lock.is_empty() {
        "SELECT name, superseded FROM tokens WHERE user_id = $1 AND kind = 'pat' AND position($2 IN superseded) > 0"
    } else {
        "SELECT name, superseded FROM tokens WHERE user_id = $1 AND kind = 'pat' AND position($2 IN superseded) > 0 \
         FOR UPDATE"
    };
    let rows = db
        .query(sql, &[&user_id, &superseded::search_key(hashed_token)])
        .map_err(pg)?;
    Ok(rows.iter().find_map(|row| {
        let kept: &[u8] = row.get(1);
        superseded::find(kept, hashed_token, not_before).map(|superseded_at| SupersededToken {
            name: row.get(0),
            superseded_at,
        })
    }))
}

fn insert_token(db: &mut Db, user_id: &str, t: &TokenRecord) -> Result<u64> {
    db.execute(
        "INSERT INTO tokens (hashed_token, user_id, kind, name, last_token_part, created_at, bypass_two_factor, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &t.hashed_token,
            &user_id,
            &kind_str(t.kind),
            &t.name,
            &t.last_token_part,
            &ts(t.created_at),
            &t.bypass_two_factor,
            &t.expires_at.map(ts),
        ],
    ).map_err(pg)
}

impl Storage for PostgresStorage {
    fn authenticate(
        &self,
        user_id: &str,
        hashed_token: &str,
        permission: Option<&str>,
    ) -> HostResult<Option<Session>> {
        self.single(|db| {
            let row = db
                .query_opt(
                    user_select!(
                        concat!(
                            ", k.kind, k.bypass_two_factor, k.authorized_hash, k.authorized_until, \
                         k.name, k.created_at, k.last_used_at, k.expires_at, \
                         $3::TEXT IS NOT NULL AND ",
                            permitted_by_row!("$3")
                        ),
                        "FROM tokens k JOIN users u ON u.id = k.user_id",
                        "WHERE k.hashed_token = $1 AND k.user_id = $2"
                    ),
                    &[&hashed_token, &user_id, &permission],
                )
                .map_err(pg)?;
            let Some(r) = row else { return Ok(None) };
            let token = LoginToken {
                hashed_token: hashed_token.to_string(),
                kind: if r.get::<_, &str>(22) == "pat" {
                    TokenKind::PersonalAccessToken
                } else {
                    TokenKind::Login
                },
                bypass_two_factor: r.get(23),
                two_factor_authorized_hash: r.get(24),
                two_factor_authorized_until: r.get::<_, Option<i64>>(25).map(|v| v as u64),
                name: r.get(26),
                created_at: r.get::<_, i64>(27) as u64,
                last_used_at: r.get::<_, Option<i64>>(28).map(|v| v as u64),
                expires_at: r.get::<_, Option<i64>>(29).map(|v| v as u64),
            };
            Ok(Some(Session {
                user: user_from_row(&self.keys, &r)?,
                token,
                permitted: r.get(30),
            }))
        })
    }

    fn find_user_for_login(&self, identifier: &LoginIdentifier) -> HostResult<Option<User>> {
        self.single(|db| {
            let row = match identifier {
                LoginIdentifier::Username(n) => db.query_opt(
                    user_select!(
                        "",
                        "FROM users u",
                        "WHERE u.username = $1"
                    ),
                    &[n],
                ).map_err(pg)?,
                // The first match, as SQLite's: addresses are unique in practice.
                LoginIdentifier::Email(e) => db.query_opt(
                    user_select!(
                        "",
                        "FROM users u",
                        "WHERE lower(u.email COLLATE \"C\") = lower($1::text COLLATE \"C\") ORDER BY u.created_at, u.id LIMIT 1"
                    ),
                    &[e],
                ).map_err(pg)?,
            };
            row.map(|r| user_from_row(&self.keys, &r)).transpose()
        })
    }

    fn insert_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        created_at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.run(in_transaction(proof), |db| {
            let done = insert_with_proof(
                db,
                user_id,
                &TokenRecord::login(hashed_token, created_at),
                None,
                proof,
            )?;
            Ok(done)
        })
    }

    fn find_backup_code(&self, user_id: &str, hashed_code: &str) -> HostResult<BackupCodeState> {
        self.single(|db| {
            let row = db
                .query_opt(
                    "SELECT spent FROM backup_codes WHERE user_id = $1 AND code_hash = $2",
                    &[&user_id, &hashed_code],
                )
                .map_err(pg)?;
            Ok(BackupCodeState::of_stored(row.map(|r| r.get(0))))
        })
    }

    fn list_personal_access_tokens(&self, user_id: &str) -> HostResult<Vec<PersonalAccessToken>> {
        self.single(|db| {
            Ok(db
                .query(
                    "SELECT name, hashed_token, last_token_part, created_at, bypass_two_factor, last_used_at, \
                     expires_at FROM tokens WHERE user_id = $1 AND kind = 'pat' ORDER BY created_at, seq",
                    &[&user_id],
                ).map_err(pg)?
                .iter()
                .map(pat_from_row)
                .collect())
        })
    }

    fn find_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>> {
        self.single(|db| {
            Ok(db
                .query_opt(
                    "SELECT name, hashed_token, last_token_part, created_at, bypass_two_factor, last_used_at, \
                     expires_at FROM tokens WHERE user_id = $1 AND kind = 'pat' AND name = $2",
                    &[&user_id, &name],
                ).map_err(pg)?
                .as_ref()
                .map(pat_from_row))
        })
    }

    fn insert_personal_access_token(
        &self,
        user_id: &str,
        token: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        or_reply_kept(self.run(in_transaction(proof), |db| {
            let record = TokenRecord::personal_access_token(token);
            let done = insert_with_proof(db, user_id, &record, token.last_used_at, proof)?;
            keep_reply(db, user_id, proof, done)?;
            Ok(done)
        }))
    }

    fn replace_personal_access_token(
        &self,
        user_id: &str,
        expected_hashed_token: &str,
        r: &PersonalAccessToken,
        proof: &FactorProof,
        keep_superseded: u32,
    ) -> HostResult<WriteOutcome> {
        // The entry the row's superseded values start with, and their bound.
        let entry = superseded::entry(expected_hashed_token, r.created_at);
        let keep = i32::try_from(keep_superseded).unwrap_or(i32::MAX);
        // Nothing to check but the token itself (no factor to spend, nothing
        // to remember, and the presenting credential, if any, is the token
        // being replaced: a bypass PAT regenerating itself): one conditional
        // UPDATE, without `rcpat_replace_pat`'s user-row lock and checks.
        // Its row lock orders racing replacements, each re-checks the value
        // it expects, so one wins; the outcomes are the function's.
        let only_the_token = proof.used == FactorUse::None
            && proof.remember.is_none()
            && proof
                .session
                .as_deref()
                .is_none_or(|s| s == expected_hashed_token);
        if only_the_token {
            return or_reply_kept(self.run(in_transaction(proof), |db| {
                let events = EventArrays::of(&proof.events, &db.host_id);
                let row = db
                    .query_one(
                        with_events!(
                            "UPDATE tokens SET hashed_token = $4, last_token_part = $5, created_at = $6, \
                             bypass_two_factor = $7, authorized_hash = NULL, authorized_until = NULL, \
                             last_used_at = $8, expires_at = $9, expiry_notified_at = NULL, \
                             superseded = CASE WHEN $11 > 0 THEN \
                             substring($10 || coalesce(superseded, ''::bytea) FROM 1 FOR $11 * 24) END \
                             WHERE user_id = $1 AND kind = 'pat' AND name = $2 AND hashed_token = $3 \
                             RETURNING 'done'::text AS outcome",
                            "12", "13", "14", "15", "16", "17", "18", "19", "20", "21"
                        ),
                        &events.after(&[
                            &user_id,
                            &r.name,
                            &expected_hashed_token,
                            &r.hashed_token,
                            &r.last_token_part,
                            &ts(r.created_at),
                            &r.bypass_two_factor,
                            &r.last_used_at.map(ts),
                            &r.expires_at.map(ts),
                            &entry,
                            &keep,
                        ]),
                    )
                    .map_err(pg)?;
                let done = outcome(row)?;
                keep_reply(db, user_id, proof, done)?;
                Ok(done)
            }));
        }
        let a = ProofArgs::of(proof);
        or_reply_kept(self.run(in_transaction(proof), |db| {
            let events = EventArrays::of(&proof.events, &db.host_id);
            let row = db.query_one(
                with_events!(
                    "SELECT rcpat_replace_pat($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                     $17, $18) AS outcome",
                    "19", "20", "21", "22", "23", "24", "25", "26", "27", "28"
                ),
                &events.after(&[
                    &user_id,
                    &expected_hashed_token,
                    &r.name,
                    &r.hashed_token,
                    &r.last_token_part,
                    &ts(r.created_at),
                    &r.bypass_two_factor,
                    &r.last_used_at.map(ts),
                    &a.session,
                    &a.kind,
                    &a.step,
                    &a.code,
                    &a.rem_token,
                    &a.rem_fp,
                    &a.rem_until,
                    &r.expires_at.map(ts),
                    &entry,
                    &keep,
                ]),
            ).map_err(pg)?;
            let done = outcome(row)?;
            keep_reply(db, user_id, proof, done)?;
            Ok(done)
        }))
    }

    fn remove_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let a = ProofArgs::of(proof);
        self.run(in_transaction(proof), |db| {
            let events = EventArrays::of(&proof.events, &db.host_id);
            let row = db
                .query_one(
                    with_events!(
                        "SELECT rcpat_remove_pat($1, $2, $3, $4, $5, $6, $7, $8, $9) AS outcome",
                        "10",
                        "11",
                        "12",
                        "13",
                        "14",
                        "15",
                        "16",
                        "17",
                        "18",
                        "19"
                    ),
                    &events.after(&[
                        &user_id,
                        &name,
                        &a.session,
                        &a.kind,
                        &a.step,
                        &a.code,
                        &a.rem_token,
                        &a.rem_fp,
                        &a.rem_until,
                    ]),
                )
                .map_err(pg)?;
            let done = outcome(row)?;
            Ok(done)
        })
    }

    fn reserve_two_factor_attempt(
        &self,
        user_id: &str,
        at: TimestampMs,
        window_start: TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<AttemptReservation> {
        self.write(|db| {
            // The row lock makes this read-then-write atomic between hosts.
            let row = db
                .query_opt(
                    "SELECT failed_count, failed_last_at FROM users WHERE id = $1 FOR UPDATE",
                    &[&user_id],
                )
                .map_err(pg)?
                .ok_or_else(|| Error::NoSuchUser(user_id.into()))?;
            let stored = FailureCount {
                count: row.get::<_, i32>(0) as u32,
                last_failed_at: row.get::<_, i64>(1) as u64,
            };
            let email_attempts = match max_email_code_attempts {
                Some(_) => db
                    .query_opt(
                        "SELECT attempts FROM email_codes WHERE user_id = $1",
                        &[&user_id],
                    )
                    .map_err(pg)?
                    .map(|r| r.get::<_, i32>(0) as u32),
                None => None,
            };
            let r = reserve_attempt(
                stored,
                email_attempts,
                at,
                window_start,
                max_failed,
                max_email_code_attempts,
            );
            if r.granted {
                db.execute(
                    "UPDATE users SET failed_count = $2, failed_last_at = $3 WHERE id = $1",
                    &[&user_id, &(r.failures.count as i32), &ts(at)],
                )
                .map_err(pg)?;
                if email_attempts.is_some() {
                    db.execute(
                        "UPDATE email_codes SET attempts = $2 WHERE user_id = $1",
                        &[&user_id, &(r.email_code_attempts as i32)],
                    )
                    .map_err(pg)?;
                }
            }
            Ok(r)
        })
    }

    fn release_two_factor_attempt(
        &self,
        user_id: &str,
        email_code_attempt: bool,
    ) -> HostResult<()> {
        self.write(|db| {
            let n = db.execute(
                "UPDATE users SET failed_count = GREATEST(failed_count - 1, 0) WHERE id = $1",
                &[&user_id],
            ).map_err(pg)?;
            if n == 0 {
                return Err(Error::NoSuchUser(user_id.into()));
            }
            if email_code_attempt {
                db.execute(
                    "UPDATE email_codes SET attempts = GREATEST(attempts - 1, 0) WHERE user_id = $1",
                    &[&user_id],
                ).map_err(pg)?;
            }
            Ok(())
        })
    }

    fn reserve_login_attempt(
        &self,
        account: &str,
        address: &str,
        at: TimestampMs,
        limits: &LoginLimits,
    ) -> HostResult<LoginAdmission> {
        self.write(|db| {
            // Lock both counters, account first (one order everywhere, so two
            // requests never wait on each other in a cycle); a missing
            // counter is created at zero first so that it can be locked.
            let mut counts = [LoginCount::default(); 2];
            for (i, (scope, key)) in [("account", account), ("address", address)]
                .into_iter()
                .enumerate()
            {
                db.execute(
                    "INSERT INTO login_failures (scope, key, count, last_at) VALUES ($1, $2, 0, 0) \
                     ON CONFLICT (scope, key) DO NOTHING",
                    &[&scope, &key],
                ).map_err(pg)?;
                let r = db
                    .query_opt(
                        "SELECT count, last_at FROM login_failures WHERE scope = $1 AND key = $2 FOR UPDATE",
                        &[&scope, &key],
                    ).map_err(pg)?
                    .ok_or(Error::Corrupt("a login counter vanished under its lock"))?;
                counts[i] = LoginCount {
                    count: r.get::<_, i32>(0) as u32,
                    last_at: r.get::<_, i64>(1) as u64,
                };
            }
            let known = db
                .query_opt(
                    "SELECT last_at FROM known_login_addresses WHERE account = $1 AND address = $2",
                    &[&account, &address],
                ).map_err(pg)?
                .map(|r| r.get::<_, i64>(0) as u64);
            let (acc, adr) = match admit_login(counts[0], counts[1], known, at, limits) {
                Ok(next) => next,
                Err(refused) => return Ok(refused),
            };
            for (scope, key, c) in [("account", account, acc), ("address", address, adr)] {
                db.execute(
                    "UPDATE login_failures SET count = $3, last_at = $4 WHERE scope = $1 AND key = $2",
                    &[&scope, &key, &(c.count as i32), &ts(c.last_at)],
                ).map_err(pg)?;
            }
            Ok(LoginAdmission::Admitted)
        })
    }

    fn login_succeeded(&self, account: &str, address: &str, at: TimestampMs) -> HostResult<()> {
        self.write(|db| {
            db.execute(
                "DELETE FROM login_failures WHERE scope = 'account' AND key = $1",
                &[&account],
            ).map_err(pg)?;
            db.execute(
                "UPDATE login_failures SET count = GREATEST(count - 1, 0) WHERE scope = 'address' AND key = $1",
                &[&address],
            ).map_err(pg)?;
            db.execute(
                "INSERT INTO known_login_addresses (account, address, last_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, address) DO UPDATE SET last_at = $3",
                &[&account, &address, &ts(at)],
            ).map_err(pg)?;
            // The newest few only (the contract's minimum).
            db.execute(
                "DELETE FROM known_login_addresses WHERE account = $1 AND address NOT IN \
                 (SELECT address FROM known_login_addresses WHERE account = $1 ORDER BY last_at DESC LIMIT $2)",
                &[&account, &(KNOWN_ADDRESSES_KEPT as i64)],
            ).map_err(pg)?;
            Ok(())
        })
    }

    fn remove_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        events: &[AuditEvent],
    ) -> HostResult<WriteOutcome> {
        self.run(!events.is_empty(), |db| {
            let n = db.execute(
                "DELETE FROM tokens WHERE user_id = $1 AND hashed_token = $2 AND kind = 'login'",
                &[&user_id, &hashed_token],
            ).map_err(pg)?;
            if n != 1 {
                return Ok(WriteOutcome::NotFound);
            }
            insert_events(db, events)?;
            Ok(WriteOutcome::Done)
        })
    }

    fn record_audit_events(&self, events: &[AuditEvent]) -> HostResult<()> {
        self.run(events.len() > 1, |db| insert_events(db, events))
    }

    fn list_audit_events(
        &self,
        filter: &AuditFilter,
        offset: u32,
        count: u32,
    ) -> HostResult<AuditPage> {
        use rcpat_store::audit_sql::{self, Param};
        let (clause, args) = audit_sql::where_clause(filter, |n| format!("${n}"));
        let args: Vec<Box<dyn ToSql + Sync>> = args
            .into_iter()
            .map(|p| -> Box<dyn ToSql + Sync> {
                match p {
                    Param::Text(t) => Box::new(t),
                    Param::Int(i) => Box::new(i),
                }
            })
            .chain([
                Box::new(i64::from(count)) as Box<dyn ToSql + Sync>,
                Box::new(i64::from(offset)),
            ])
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|b| &**b).collect();
        let n = refs.len() - 2;
        // One statement, one snapshot: the total and the page agree.
        let sql = format!(
            "SELECT {}, count(*) OVER () FROM audit_events {clause} {} LIMIT ${} OFFSET ${}",
            audit_sql::COLUMNS,
            audit_sql::ORDER,
            n + 1,
            n + 2
        );
        let (total_sql, total_refs) = (
            format!("SELECT count(*) FROM audit_events {clause}"),
            &refs[..n],
        );
        self.single(|db| {
            let rows = on_handle!(db, c => c.query(&sql, &refs)).map_err(pg)?;
            // Past the last row, the window has nothing to count.
            let total: i64 = match rows.first() {
                Some(r) => r.get(10),
                None => on_handle!(db, c => c.query_one(&total_sql, total_refs))
                    .map_err(pg)?
                    .get(0),
            };
            let mut events = Vec::with_capacity(rows.len());
            for r in &rows {
                events.push(StoredAuditEvent {
                    event: AuditEvent {
                        at: r.get::<_, i64>(0) as u64,
                        account: r.get(1),
                        kind: audit_sql::kind(r.get(2))?,
                        token_name: r.get(3),
                        token_last_part: r.get(4),
                        method: audit_sql::method(r.get(5))?,
                        client_address: r.get(6),
                        user_agent: r.get(7),
                    },
                    host_id: r.get(8),
                    count: u32::try_from(r.get::<_, i32>(9)).unwrap_or(0),
                });
            }
            Ok(AuditPage {
                total: u32::try_from(total).unwrap_or(u32::MAX),
                events,
            })
        })
    }

    fn store_email_code(&self, user_id: &str, c: &EmailCode) -> HostResult<()> {
        // Under the user's lock: a reservation counting this code's attempts
        // never interleaves with its replacement.
        self.write(|db| {
            if !db.lock_user(user_id).map_err(pg)? {
                return Err(Error::NoSuchUser(user_id.into()));
            }
            db.execute(
                "INSERT INTO email_codes (user_id, code_hash, salt, expires_at, attempts) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_id) DO UPDATE SET code_hash = $2, salt = $3, expires_at = $4, attempts = $5",
                &[&user_id, &c.code_hash, &c.salt, &ts(c.expires_at), &(c.attempts as i32)],
            ).map_err(pg)?;
            Ok(())
        })
    }

    fn record_token_use(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: TimestampMs,
        stale_before: TimestampMs,
    ) -> HostResult<()> {
        self.single(|db| {
            db.execute(
                "UPDATE tokens SET last_used_at = $3 WHERE user_id = $1 AND hashed_token = $2 \
                 AND kind = 'pat' AND (last_used_at IS NULL OR last_used_at < $4)",
                &[&user_id, &hashed_token, &ts(at), &ts(stale_before)],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn find_superseded_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<SupersededToken>> {
        self.single(|db| superseded_in(db, user_id, hashed_token, not_before, ""))
    }

    fn revoke_superseded_family(
        &self,
        user_id: &str,
        hashed_token: &str,
        not_before: TimestampMs,
        events: &[AuditEvent],
    ) -> HostResult<Option<RevokedToken>> {
        // Rare (a reuse): one transaction, the user's row locked first as
        // every write does, then the token's row, found and removed.
        self.write(|db| {
            let Some(email) = db
                .query_opt(
                    "SELECT CASE WHEN email_verified THEN email END FROM users WHERE id = $1 FOR UPDATE",
                    &[&user_id],
                )
                .map_err(pg)?
            else {
                return Ok(None);
            };
            let Some(found) = superseded_in(db, user_id, hashed_token, not_before, " FOR UPDATE")? else {
                return Ok(None);
            };
            db.execute(
                "DELETE FROM tokens WHERE user_id = $1 AND kind = 'pat' AND name = $2",
                &[&user_id, &found.name],
            )
            .map_err(pg)?;
            insert_events(db, events)?;
            Ok(Some(RevokedToken {
                name: found.name,
                verified_emails: email.get::<_, Option<String>>(0).into_iter().collect(),
            }))
        })
    }

    fn find_idempotent_reply(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<IdempotentReply>> {
        self.single(|db| {
            Ok(db
                .query_opt(
                    "SELECT body_hash, sealed_reply FROM idempotent_replies WHERE user_id = $1 \
                     AND presented_hashed_token = $2 AND key = $3 AND created_at >= $4 \
                     AND lease_until IS NULL",
                    &[&user_id, &presented_hashed_token, &key, &ts(not_before)],
                )
                .map_err(pg)?
                .map(|r| IdempotentReply {
                    body_hash: r.get(0),
                    sealed_reply: r.get(1),
                }))
        })
    }

    fn reserve_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        at: TimestampMs,
        lease_until: TimestampMs,
        not_before: TimestampMs,
    ) -> HostResult<KeyReservation> {
        self.single(|db| {
            // One statement: a new row, or one whose lease or reply has run
            // out, becomes this request's reservation; concurrent callers
            // wait on the row's lock, and exactly one of them gets it.
            let reserved = db.query_opt(
                "INSERT INTO idempotent_replies \
                 (user_id, presented_hashed_token, key, body_hash, sealed_reply, created_at, lease_until) \
                 VALUES ($1, $2, $3, '', ''::bytea, $4, $5) \
                 ON CONFLICT (user_id, presented_hashed_token, key) DO UPDATE \
                 SET body_hash = '', sealed_reply = ''::bytea, created_at = $4, lease_until = $5 \
                 WHERE (idempotent_replies.lease_until IS NOT NULL AND idempotent_replies.lease_until <= $4) \
                 OR (idempotent_replies.lease_until IS NULL AND idempotent_replies.created_at < $6) \
                 RETURNING 1",
                &[&user_id, &presented_hashed_token, &key, &ts(at), &ts(lease_until), &ts(not_before)],
            ).map_err(pg)?;
            if reserved.is_some() {
                return Ok(KeyReservation::Reserved);
            }
            let row = db.query_opt(
                "SELECT body_hash, sealed_reply, lease_until FROM idempotent_replies \
                 WHERE user_id = $1 AND presented_hashed_token = $2 AND key = $3",
                &[&user_id, &presented_hashed_token, &key],
            ).map_err(pg)?;
            Ok(match row {
                Some(r) if r.get::<_, Option<i64>>(2).is_none() => {
                    KeyReservation::Kept(IdempotentReply {
                        body_hash: r.get(0),
                        sealed_reply: r.get(1),
                    })
                }
                // A live lease (or one released a moment ago: retry).
                _ => KeyReservation::InFlight,
            })
        })
    }

    fn release_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
    ) -> HostResult<()> {
        self.single(|db| {
            db.execute(
                "DELETE FROM idempotent_replies WHERE user_id = $1 AND presented_hashed_token = $2 \
                 AND key = $3 AND lease_until IS NOT NULL",
                &[&user_id, &presented_hashed_token, &key],
            )
            .map_err(pg)?;
            Ok(())
        })
    }
}

impl Admin for PostgresStorage {
    fn create_user(&self, n: &NewUser) -> Result<()> {
        self.write(|db| {
            db.execute(
                "INSERT INTO users (id, username, email, email_verified, password_bcrypt, created_at, name) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &n.id,
                    &n.username,
                    &n.email,
                    &n.email_verified,
                    &n.password_bcrypt,
                    &ts(n.created_at),
                    &n.name,
                ],
            ).map_err(pg)?;
            for role in &n.roles {
                db.execute(
                    "INSERT INTO user_roles VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&n.id, role],
                ).map_err(pg)?;
            }
            Ok(())
        })
    }

    fn has_permission(&self, user_id: &str, permission: &str) -> Result<bool> {
        self.single(|db| {
            Ok(db
                .query_one(
                    concat!("SELECT ", permitted!("$1", "$2")),
                    &[&user_id, &permission],
                )
                .map_err(pg)?
                .get(0))
        })
    }

    fn find_user_id(&self, username: &str) -> Result<Option<String>> {
        self.single(|db| {
            Ok(db
                .query_opt("SELECT id FROM users WHERE username = $1", &[&username])
                .map_err(pg)?
                .map(|r| r.get(0)))
        })
    }

    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.single(|db| {
            Ok(db
                .query(
                    "SELECT u.id, u.username, u.email, u.email_two_factor, \
                     EXISTS(SELECT 1 FROM totp t WHERE t.user_id = u.id), \
                     ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role) \
                     FROM users u ORDER BY u.username",
                    &[],
                )
                .map_err(pg)?
                .iter()
                .map(|r| UserSummary {
                    id: r.get(0),
                    username: r.get(1),
                    email: r.get(2),
                    email_two_factor: r.get(3),
                    totp: r.get(4),
                    roles: r.get(5),
                })
                .collect())
        })
    }

    fn set_totp(&self, user_id: &str, totp: Option<(&TotpEnrolment, &BackupCodes)>) -> Result<()> {
        let sealed = totp.map(|(t, _)| self.keys.seal_text(user_id, &t.secret));
        self.write(|db| {
            if let Some((_, id)) = &sealed {
                db.admit_key(&self.keys, *id)?;
            }
            if !db.lock_user(user_id).map_err(pg)? {
                return Err(Error::NoSuchUser(user_id.into()));
            }
            db.execute("DELETE FROM totp WHERE user_id = $1", &[&user_id]).map_err(pg)?;
            db.execute("DELETE FROM backup_codes WHERE user_id = $1", &[&user_id]).map_err(pg)?;
            if let (Some((t, backup)), Some((secret, key_id))) = (totp, &sealed) {
                db.execute(
                    "INSERT INTO totp (user_id, secret, secret_key_id, algorithm, digits, period, last_used_step) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &user_id,
                        secret,
                        &(*key_id as i32),
                        &alg_str(t.algorithm),
                        &i32::from(t.digits),
                        &(t.period as i32),
                        &ts(t.last_used_step),
                    ],
                ).map_err(pg)?;
                for (codes, spent) in [(&backup.unused, false), (&backup.spent, true)] {
                    for h in codes {
                        db.execute(
                            "INSERT INTO backup_codes (user_id, code_hash, spent) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING",
                            &[&user_id, h, &spent],
                        ).map_err(pg)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn set_email_two_factor(&self, user_id: &str, enabled: bool) -> Result<()> {
        let n = self.single::<_, Error>(|db| {
            db.execute(
                "UPDATE users SET email_two_factor = $2 WHERE id = $1",
                &[&user_id, &enabled],
            )
            .map_err(pg)
        })?;
        if n == 0 {
            return Err(Error::NoSuchUser(user_id.into()));
        }
        Ok(())
    }

    fn set_permission_roles(&self, permission: &str, roles: &[String]) -> Result<()> {
        self.write(|db| {
            db.execute(
                "DELETE FROM permission_roles WHERE permission = $1",
                &[&permission],
            )
            .map_err(pg)?;
            for role in roles {
                db.execute(
                    "INSERT INTO permission_roles VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&permission, role],
                )
                .map_err(pg)?;
            }
            Ok(())
        })
    }

    fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<()> {
        self.write(|db| {
            db.execute("DELETE FROM user_roles WHERE user_id = $1", &[&user_id])
                .map_err(pg)?;
            for role in roles {
                db.execute(
                    "INSERT INTO user_roles VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&user_id, role],
                )
                .map_err(pg)?;
            }
            Ok(())
        })
    }

    fn set_user_permission(
        &self,
        user_id: &str,
        permission: &str,
        grant: Option<bool>,
    ) -> Result<()> {
        self.single(|db| {
            match grant {
                Some(g) => db
                    .execute(
                        "INSERT INTO user_permissions VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, permission) DO UPDATE SET granted = $3",
                        &[&user_id, &permission, &g],
                    )
                    .map_err(pg)?,
                None => db
                    .execute(
                        "DELETE FROM user_permissions WHERE user_id = $1 AND permission = $2",
                        &[&user_id, &permission],
                    )
                    .map_err(pg)?,
            };
            Ok(())
        })
    }

    fn add_token(&self, user_id: &str, token: &TokenRecord) -> Result<()> {
        token.check()?;
        self.single(|db| insert_token(db, user_id, token).map(drop))
    }

    fn expiring_tokens(&self, now: TimestampMs, until: TimestampMs) -> Result<Vec<ExpiringToken>> {
        self.single(|db| {
            Ok(db
                .query(
                    "SELECT t.user_id, u.username, CASE WHEN u.email_verified THEN u.email END, t.name, \
                     t.hashed_token, t.expires_at FROM tokens t JOIN users u ON u.id = t.user_id \
                     WHERE t.kind = 'pat' AND t.expires_at > $1 AND t.expires_at <= $2 \
                     AND t.expiry_notified_at IS NULL ORDER BY t.expires_at, t.user_id, t.name",
                    &[&ts(now), &ts(until)],
                ).map_err(pg)?
                .iter()
                .map(|r| ExpiringToken {
                    user_id: r.get(0),
                    username: r.get(1),
                    email: r.get(2),
                    name: r.get(3),
                    hashed_token: r.get(4),
                    expires_at: r.get::<_, i64>(5) as u64,
                })
                .collect())
        })
    }

    fn claim_expiry_notice(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: TimestampMs,
    ) -> Result<bool> {
        self.single(|db| {
            Ok(db.execute(
                "UPDATE tokens SET expiry_notified_at = $3 WHERE user_id = $1 AND hashed_token = $2 \
                 AND expiry_notified_at IS NULL",
                &[&user_id, &hashed_token, &ts(at)],
            ).map_err(pg)? == 1)
        })
    }

    fn release_expiry_notice(&self, user_id: &str, hashed_token: &str) -> Result<()> {
        self.single(|db| {
            db.execute(
                "UPDATE tokens SET expiry_notified_at = NULL WHERE user_id = $1 AND hashed_token = $2",
                &[&user_id, &hashed_token],
            )
            .map(drop)
            .map_err(pg)
        })
    }

    fn set_host_id(&self, host_id: &str) -> Result<()> {
        *self.host_id.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(host_id);
        Ok(())
    }

    fn prune_audit_events(&self, before: TimestampMs, batch: u32) -> Result<u64> {
        let mut removed = 0;
        loop {
            // One short statement per batch (autocommit): no long lock.
            let n = self.single::<_, Error>(|db| {
                db.execute(
                    "DELETE FROM audit_events WHERE ctid IN \
                     (SELECT ctid FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
                    &[&ts(before), &i64::from(batch)],
                )
                .map_err(pg)
            })?;
            removed += n;
            if n < u64::from(batch) {
                return Ok(removed);
            }
        }
    }

    fn token_hashes_named(&self, user_id: &str, name: &str) -> Result<Vec<String>> {
        self.single(|db| {
            Ok(db
                .query(
                    "SELECT hashed_token FROM tokens WHERE user_id = $1 AND kind = 'pat' AND name = $2",
                    &[&user_id, &name],
                ).map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn key_fingerprints(&self) -> Result<Vec<(u32, String)>> {
        self.single(|db| {
            Ok(db
                .query("SELECT id, fingerprint FROM secret_keys ORDER BY id", &[])
                .map_err(pg)?
                .iter()
                .map(|r| (r.get::<_, i32>(0) as u32, r.get(1)))
                .collect())
        })
    }

    fn reencrypt_secrets(&self) -> Result<usize> {
        let current = self.keys.current_id() as i32;
        self.write(|db| {
            db.admit_key(&self.keys, current as u32)?;
            let rows = db.query(
                "SELECT user_id, secret, secret_key_id FROM totp WHERE secret_key_id <> $1 FOR UPDATE",
                &[&current],
            ).map_err(pg)?;
            for r in &rows {
                let user_id: &str = r.get(0);
                let secret = self
                    .keys
                    .open_text(r.get::<_, i32>(2) as u32, user_id, r.get(1))?;
                let (sealed, id) = self.keys.seal_text(user_id, &secret);
                db.execute(
                    "UPDATE totp SET secret = $2, secret_key_id = $3 WHERE user_id = $1",
                    &[&user_id, &sealed, &(id as i32)],
                ).map_err(pg)?;
            }
            Ok(rows.len())
        })
    }
}

/// Fresh databases on a throw-away test cluster, for this crate's tests
/// and the host's (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing {
    /// The admin URL of the test cluster (`./dev test` starts one).
    pub fn admin_url() -> String {
        std::env::var("RCPAT_TEST_DATABASE_URL").expect(
            "RCPAT_TEST_DATABASE_URL is not set: run the tests with ./dev test, \
             which starts a throw-away PostgreSQL cluster (or point it at one)",
        )
    }

    /// The URL of a fresh, empty database on the test cluster.
    pub fn fresh_database_url() -> String {
        let admin = admin_url();
        let name = format!("t_{}", rcpat_store::random::random_id(12).to_lowercase());
        let mut client =
            postgres::Client::connect(&admin, postgres::NoTls).expect("the test cluster");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("a fresh database");
        admin.replacen("/postgres", &format!("/{name}"), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_urls_and_key_values() {
        assert_eq!(
            split_root_cert("postgres://u@h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem"),
            (
                "postgres://u@h/db?sslmode=require".into(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            split_root_cert("postgres://u@h/db?sslrootcert=/ca.pem"),
            ("postgres://u@h/db".into(), Some("/ca.pem".into()))
        );
        assert_eq!(
            split_root_cert("host=h sslmode=require sslrootcert=/ca.pem user=u"),
            (
                "host=h sslmode=require user=u".into(),
                Some("/ca.pem".into())
            )
        );
        assert_eq!(
            split_root_cert("postgres://u@h/db"),
            ("postgres://u@h/db".into(), None)
        );
    }
}

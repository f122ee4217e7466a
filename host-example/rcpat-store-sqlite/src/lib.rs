//! SQLite storage: one file, WAL, `synchronous=FULL` (a write that returned
//! is on disk).
//!
//! Reads run on a pool of connections, each in its own snapshot transaction.
//! Writes go to one writer thread that does group commit: it takes every
//! write queued meanwhile, runs each in its own savepoint of one transaction,
//! commits once (one fsync for the batch), and only then answers each caller.
//! A write that fails is rolled back to its savepoint alone; a failed commit
//! fails the whole batch and changes nothing. So every operation stays atomic
//! and durable, while concurrent requests share the cost of an fsync.
//!
//! At rest: the database and its WAL and SHM files are owner-only (SQLite
//! gives the WAL and SHM the main file's mode), deleted content is
//! overwritten (`secure_delete`), and TOTP secrets are encrypted with the
//! host's keys (`rcpat_store::keys`), each beside the id of its key.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use rcpat::model::*;
use rcpat::storage::rules::{
    KNOWN_ADDRESSES_KEPT, LoginCount, ProofSteps, admit_login, reserve_attempt, spend_proof,
};

use rcpat_store::keys::{Admission, Keys};
use rcpat_store::superseded;
use rcpat_store::{
    Admin, Error, ExpiringToken, HostResult, NewUser, PAT_PERMISSION, PAT_PERMISSION_DEFAULT_ROLES,
    Result, Storage, TokenRecord, UserSummary, alg_from, alg_str, kind_str,
};

// The backends' schemas move together.
const _: () = assert!(MIGRATIONS.len() == rcpat_store::SCHEMA_VERSION);

/// SQLite's own failures, kept as the source of the store's
/// [`Error::Backend`] (so the store crate names no driver).
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("sqlite: {0}")]
    Driver(#[from] rusqlite::Error),
    #[error("the SQLite writer has stopped")]
    WriterStopped,
    #[error("sqlite: a write could not be isolated; the batch was rolled back")]
    BatchRolledBack,
}

impl From<SqliteError> for Error {
    fn from(e: SqliteError) -> Self {
        Error::backend(e)
    }
}

/// SQLite's errors as the store's, except our own errors raised inside a
/// row reader or a write (carried through rusqlite as a conversion
/// failure), which come back as themselves.
fn db(err: rusqlite::Error) -> Error {
    match err {
        rusqlite::Error::ToSqlConversionFailure(inner) if inner.is::<Error>() => {
            *inner.downcast::<Error>().expect("checked")
        }
        other => SqliteError::Driver(other).into(),
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` records progress.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        email TEXT,
        email_verified INTEGER NOT NULL,
        password_bcrypt TEXT,
        created_at INTEGER NOT NULL,
        email_two_factor INTEGER NOT NULL DEFAULT 0,
        failed_count INTEGER NOT NULL DEFAULT 0,
        failed_last_at INTEGER NOT NULL DEFAULT 0
    );
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
    CREATE TABLE totp (
        user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        secret TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        digits INTEGER NOT NULL,
        period INTEGER NOT NULL,
        last_used_step INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE backup_codes (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        PRIMARY KEY (user_id, code_hash)
    );
    CREATE TABLE email_codes (
        user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        salt TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tokens (
        hashed_token TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('login', 'pat')),
        name TEXT,
        last_token_part TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        bypass_two_factor INTEGER NOT NULL DEFAULT 0,
        authorized_hash TEXT,
        authorized_until INTEGER
    );
    CREATE INDEX tokens_by_user ON tokens(user_id);
    CREATE UNIQUE INDEX pat_names ON tokens(user_id, name) WHERE kind = 'pat';
"#,
    r#"
    ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT '';
    CREATE INDEX users_by_email ON users(email COLLATE NOCASE);
    CREATE TABLE user_permissions (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        permission TEXT NOT NULL,
        granted INTEGER NOT NULL,
        PRIMARY KEY (user_id, permission)
    );
"#,
    // Used backup codes are kept (marked), so one sent again is known as spent.
    r#"
    ALTER TABLE backup_codes ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;
"#,
    // TOTP secrets encrypted: the id of the key (NULL: a plaintext secret
    // from before, encrypted at the next start).
    r#"
    ALTER TABLE totp ADD COLUMN secret_key_id INTEGER;
"#,
    // Failed logins per account and per client address (Rocket.Chat's
    // Block_Multiple_Failed_Logins), shared by every host on this database.
    r#"
    CREATE TABLE login_failures (
        scope TEXT NOT NULL CHECK (scope IN ('account', 'address')),
        key TEXT NOT NULL,
        count INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    );
"#,
    // 6: when each personal access token last authenticated a request.
    "ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;",
    // 7: PostgreSQL's conditional writes as server-side functions (one round
    // trip each); nothing for SQLite, which runs them in-process.
    "",
    // 8: PAT expiry, and when the owner was told a value expires soon.
    r#"
    ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE tokens ADD COLUMN expiry_notified_at INTEGER;
    CREATE INDEX tokens_by_expiry ON tokens(expires_at) WHERE expires_at IS NOT NULL;
"#,
    // 9: replies kept for `Idempotency-Key` retries, sealed for the holder
    // of the presented token.
    r#"
    CREATE TABLE idempotent_replies (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        presented_hashed_token TEXT NOT NULL,
        key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        sealed_reply BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, presented_hashed_token, key)
    );
"#,
    // 10: nothing here. PostgreSQL's email index became ASCII-only, which
    // `COLLATE NOCASE` always was; the number keeps both schemas in step.
    "",
    // 11: the fingerprint of each key id secrets were sealed under
    // (`rcpat_store::keys`): a key file whose key N is another key cannot write.
    "CREATE TABLE secret_keys (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL);",
    // 12: `Idempotency-Key` reservations, beside the kept replies: a row
    // with a lease (`lease_until` set, no reply yet) until its write keeps
    // the reply (`lease_until` NULL).
    "ALTER TABLE idempotent_replies ADD COLUMN lease_until INTEGER;",
    // 13: addresses that logged in successfully, per account (the account's
    // block does not apply from them; `reserve-login-attempt`).
    r#"
    CREATE TABLE known_login_addresses (
        account TEXT NOT NULL,
        address TEXT NOT NULL,
        last_at INTEGER NOT NULL,
        PRIMARY KEY (account, address)
    );
"#,
    // 14: nothing here. PostgreSQL keeps the roles and whether backup codes
    // exist on the user's row (its `authenticate` then reads one row less
    // per table); SQLite reads them in the same snapshot at no round trip.
    "",
    // 15: nothing here either: PostgreSQL's flags for TOTP, emailed-code
    // and per-user permission rows, and its merged token index.
    "",
    // 16: each PAT's superseded values, for reuse detection (contract
    // 0.10.0), on its own row (`rcpat_store::superseded`).
    "ALTER TABLE tokens ADD COLUMN superseded BLOB;",
    // 17: the audit trail (issue 28, part 2), written by the writes that
    // make the changes it records.
    r#"
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        token_name TEXT,
        token_last_part TEXT,
        method TEXT,
        address TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        host_id TEXT NOT NULL DEFAULT '',
        count INTEGER NOT NULL DEFAULT 1,
        minute INTEGER
    );
    CREATE INDEX audit_by_time ON audit_events (at);
    CREATE INDEX audit_by_account ON audit_events (account, at);
    CREATE UNIQUE INDEX audit_per_minute ON audit_events (account, address, kind, minute)
        WHERE minute IS NOT NULL;
    INSERT OR IGNORE INTO permission_roles VALUES ('view-personal-access-token-audit', 'admin');
"#,
];

pub struct SqliteStorage {
    /// Encrypts and decrypts TOTP secrets.
    keys: Arc<Keys>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// The database file, for opening more readers.
    path: PathBuf,
    /// Delete the file on drop (`open_in_memory`).
    scratch: bool,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

/// A write: runs in the writer's transaction, says whether it succeeded (so
/// its savepoint is kept or rolled back), and returns how to answer its
/// caller once the commit's outcome is known.
type Job = Box<dyn FnOnce(&Transaction) -> (bool, Completion) + Send>;
type Completion = Box<dyn FnOnce(Option<CommitFailure>) + Send>;

/// Why a batch did not commit (each caller gets it as an [`Error`]).
#[derive(Clone, Debug)]
enum CommitFailure {
    /// A savepoint could not be opened or closed; the batch was rolled back.
    Tainted,
    /// The commit itself failed.
    Commit(String),
}

impl From<CommitFailure> for Error {
    fn from(f: CommitFailure) -> Self {
        match f {
            CommitFailure::Tainted => SqliteError::BatchRolledBack.into(),
            CommitFailure::Commit(why) => {
                Error::Invalid(format!("sqlite: the commit failed: {why}"))
            }
        }
    }
}

/// The histogram of writes per commit (`metrics` facade).
pub const COMMIT_BATCH: &str = "rcpat_sqlite_commit_batch_size";

/// Most writes folded into one commit.
const MAX_BATCH: usize = 512;

impl SqliteStorage {
    /// Opens (creating and migrating as needed) the database at `path`, with
    /// the keys of the key file beside it (`<path>.key`; see `rcpat_store::keys`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let keys = Keys::load(&path.as_ref().with_extension("key"))?;
        Self::open_with_keys(path, Arc::new(keys))
    }

    /// Opens the database at `path`, encrypting secrets with `keys`.
    pub fn open_with_keys(path: impl AsRef<Path>, keys: Arc<Keys>) -> Result<Self> {
        let path = path.as_ref();
        // Owner-only before SQLite creates it (the WAL and SHM follow its
        // mode); an existing file of ours is narrowed.
        if path.exists() {
            rcpat_store::files::restrict_existing(path)?;
        } else {
            rcpat_store::files::create_private_file(path, b"")?;
        }
        for suffix in ["-wal", "-shm"] {
            rcpat_store::files::restrict_existing(Path::new(&format!(
                "{}{suffix}",
                path.display()
            )))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        Self::init(conn, path.to_path_buf(), keys)
    }

    /// A private throwaway database (tests): a file under the temp dir,
    /// deleted when the storage is dropped, so readers and the writer share it.
    pub fn open_in_memory() -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "rcpat-scratch-{}-{}.sqlite",
            std::process::id(),
            rcpat_store::random::random_id(12)
        ));
        let mut storage = Self::open_with_keys(&path, Arc::new(Keys::random()))?;
        storage.scratch = true;
        Ok(storage)
    }

    fn init(mut conn: Connection, path: PathBuf, keys: Arc<Keys>) -> Result<Self> {
        conn.busy_handler(Some(wait_for_the_lock)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(db)?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version > MIGRATIONS.len() {
            return Err(Error::SchemaTooNew {
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            if i == 0 {
                for role in PAT_PERMISSION_DEFAULT_ROLES {
                    tx.execute(
                        "INSERT INTO permission_roles VALUES (?1, ?2)",
                        params![PAT_PERMISSION, role],
                    )
                    .map_err(db)?;
                }
            }
            tx.pragma_update(None, "user_version", i + 1).map_err(db)?;
            tx.commit().map_err(db)?;
        }
        encrypt_plaintext_secrets(&mut conn, &keys)?;
        // The host id the writer stamps on audit events (`set_host_id`):
        // a table of the writer's own connection, never in the file.
        conn.execute_batch(
            "CREATE TEMP TABLE host (id TEXT NOT NULL); INSERT INTO temp.host VALUES ('');",
        )
        .map_err(db)?;
        let (sender, receiver) = mpsc::channel::<Job>();
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, receiver))
            .map_err(|err| Error::io("start", "the SQLite writer thread", err))?;
        Ok(SqliteStorage {
            keys,
            readers: Mutex::new(Vec::new()),
            path,
            scratch: false,
            writer: Mutex::new(Some(sender)),
            writer_thread: Some(writer_thread),
        })
    }

    /// Runs `f` in a read transaction (one consistent snapshot).
    /// Generic over the caller's error (`HostError` for the storage
    /// contract, `Error` for admin calls).
    fn read<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> std::result::Result<T, E> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path).map_err(db)?;
                c.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(db)?;
                c
            }
        };
        // BEGIN/COMMIT as cached statements: no SQL parsing per request.
        let result = (|| {
            conn.prepare_cached("BEGIN")?.execute([])?;
            match f(&conn) {
                Ok(value) => {
                    conn.prepare_cached("COMMIT")?.execute([])?;
                    Ok(value)
                }
                Err(err) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(err)
                }
            }
        })();
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        Ok(result.map_err(db)?)
    }

    /// Queues `f` for the writer and waits until its batch is committed.
    fn write<T: Send + 'static, E: From<Error>>(
        &self,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T> + Send + 'static,
    ) -> std::result::Result<T, E> {
        let (reply, answer) = mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |tx| {
            let result = f(tx);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let _ = reply.send(match commit_error {
                    None => result.map_err(db),
                    Some(failure) => Err(failure.into()),
                });
            });
            (ok, completion)
        });
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        sender
            .ok_or(Error::from(SqliteError::WriterStopped))?
            .send(job)
            .map_err(|_| Error::from(SqliteError::WriterStopped))?;
        Ok(answer
            .recv()
            .map_err(|_| Error::from(SqliteError::WriterStopped))??)
    }
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it finishes queued work.
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        if self.scratch {
            self.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
            }
        }
    }
}

/// The writer: batches of queued writes, one transaction and one commit each.
/// The writer's busy handler: another process holds the write lock (an
/// admin command, `audit prune`): try again every millisecond, for 10 s at
/// most. SQLite's own `busy_timeout` backs off to 100 ms between tries, so a
/// process that writes in quick batches can keep the lock from it for
/// hundreds of milliseconds; a short, steady retry takes the first gap.
fn wait_for_the_lock(tries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(1));
    tries < 10_000
}

fn writer_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // How many writes shared a commit (the facade only: the host may
        // install an exporter, or not).
        metrics::histogram!(COMMIT_BATCH).record(batch.len() as f64);
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(err) => {
                // Nothing can be written; dropping the jobs answers each
                // caller with an error (its reply channel closes).
                tracing::error!(error = %err, "sqlite: cannot begin a write transaction");
                drop(batch);
                continue;
            }
        };
        let mut completions = Vec::with_capacity(batch.len());
        for job in batch {
            let run = |sql: &str| {
                tx.prepare_cached(sql)
                    .and_then(|mut st| st.execute([]))
                    .map(drop)
            };
            let savepoint = run("SAVEPOINT job");
            let (ok, completion) = job(&tx);
            let closed = if ok {
                run("RELEASE job")
            } else {
                run("ROLLBACK TO job").and_then(|()| run("RELEASE job"))
            };
            // A savepoint that could not be opened or closed taints the batch.
            let tainted = savepoint.and(closed).is_err();
            completions.push((completion, tainted));
        }
        let commit_error = if completions.iter().any(|(_, tainted)| *tainted) {
            let _ = tx.rollback();
            Some(CommitFailure::Tainted)
        } else {
            tx.commit()
                .err()
                .map(|err| CommitFailure::Commit(err.to_string()))
        };
        for (completion, _) in completions {
            completion(commit_error.clone());
        }
    }
}

/// Our own error inside a row reader (a secret that will not decrypt).
fn failure(err: Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(err))
}

/// Encrypts `secret` for `user_id`: (base64 of nonce ‖ ciphertext, key id).
fn seal_secret(keys: &Keys, user_id: &str, secret: &str) -> (String, u32) {
    keys.seal_text(user_id, secret)
}

fn open_secret(keys: &Keys, user_id: &str, stored: &str, key_id: u32) -> rusqlite::Result<String> {
    keys.open_text(key_id, user_id, stored).map_err(failure)
}

/// Lets key `id` seal secrets in this transaction, recording its
/// fingerprint if it is the first (`Keys::admit`): refused when the
/// database knows another key under that id.
fn admit_key(tx: &Connection, keys: &Keys, id: u32) -> rusqlite::Result<()> {
    let recorded: Option<String> = tx
        .query_row(
            "SELECT fingerprint FROM secret_keys WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let sample: Option<(String, String)> = match recorded {
        Some(_) => None,
        None => tx
            .query_row(
                "SELECT user_id, secret FROM totp WHERE secret_key_id = ?1 LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
    };
    let sample = sample.as_ref().map(|(u, s)| (u.as_str(), s.as_str()));
    match keys
        .admit(id, recorded.as_deref(), sample)
        .map_err(failure)?
    {
        Admission::Known => Ok(()),
        Admission::Record(fingerprint) => tx
            .execute(
                "INSERT INTO secret_keys (id, fingerprint) VALUES (?1, ?2)",
                params![id, fingerprint],
            )
            .map(drop),
    }
}

/// Encrypts every TOTP secret still in plaintext (from before encryption),
/// then checkpoints so the plaintext leaves the WAL too.
fn encrypt_plaintext_secrets(conn: &mut Connection, keys: &Keys) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let rows: Vec<(String, String)> = tx
        .prepare("SELECT user_id, secret FROM totp WHERE secret_key_id IS NULL")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db)?;
    for (user_id, secret) in &rows {
        let (sealed, id) = seal_secret(keys, user_id, secret);
        admit_key(&tx, keys, id).map_err(db)?;
        tx.execute(
            "UPDATE totp SET secret = ?2, secret_key_id = ?3 WHERE user_id = ?1",
            params![user_id, sealed, id],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)?;
    if !rows.is_empty() {
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(db)?;
        tracing::info!(
            secrets = rows.len(),
            "encrypted TOTP secrets stored in plaintext"
        );
    }
    Ok(())
}

/// Whether the user holds `permission`: a per-user grant or revocation
/// first, otherwise through one of the user's roles.
fn permitted(tx: &Connection, user_id: &str, permission: &str) -> rusqlite::Result<bool> {
    let grant: Option<bool> = tx
        .prepare_cached(
            "SELECT granted FROM user_permissions WHERE user_id = ?1 AND permission = ?2",
        )?
        .query_row(params![user_id, permission], |r| r.get(0))
        .optional()?;
    if let Some(grant) = grant {
        return Ok(grant);
    }
    tx.prepare_cached(
        "SELECT 1 FROM user_roles u JOIN permission_roles p ON p.role = u.role \
         WHERE u.user_id = ?1 AND p.permission = ?2",
    )?
    .exists(params![user_id, permission])
}

fn load_user(tx: &Connection, keys: &Keys, user_id: &str) -> rusqlite::Result<Option<User>> {
    let row = tx
        .prepare_cached(
            "SELECT username, created_at, email, email_verified, password_bcrypt, email_two_factor, \
             failed_count, failed_last_at, name FROM users WHERE id = ?1",
        )?
        .query_row([user_id], |r| {
            let email: Option<String> = r.get(2)?;
            let verified: bool = r.get(3)?;
            Ok(User {
                id: user_id.to_string(),
                username: r.get(0)?,
                name: r.get(8)?,
                roles: Vec::new(),
                created_at: r.get::<_, i64>(1)? as u64,
                verified_emails: email.filter(|_| verified).into_iter().collect(),
                password_bcrypt: r.get(4)?,
                totp: None,
                email_two_factor: r.get(5)?,
                email_code: None,
                failures: FailureCount {
                    count: r.get(6)?,
                    last_failed_at: r.get::<_, i64>(7)? as u64,
                },
            })
        })
        .optional()?;
    let Some(mut user) = row else { return Ok(None) };
    let mut roles =
        tx.prepare_cached("SELECT role FROM user_roles WHERE user_id = ?1 ORDER BY role")?;
    user.roles = roles
        .query_map([user_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    user.totp = tx
        .prepare_cached(
            "SELECT secret, algorithm, digits, period, last_used_step, secret_key_id, \
             EXISTS(SELECT 1 FROM backup_codes WHERE user_id = ?1) FROM totp WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| {
            let stored: String = r.get(0)?;
            let secret = match r.get::<_, Option<u32>>(5)? {
                Some(key_id) => open_secret(keys, user_id, &stored, key_id)?,
                None => stored,
            };
            Ok(TotpEnrolment {
                secret,
                algorithm: alg_from(&r.get::<_, String>(1)?),
                digits: r.get(2)?,
                period: r.get(3)?,
                last_used_step: r.get::<_, i64>(4)? as u64,
                has_backup_codes: r.get(6)?,
            })
        })
        .optional()?;
    user.email_code = tx
        .prepare_cached(
            "SELECT code_hash, salt, expires_at, attempts FROM email_codes WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| {
            Ok(EmailCode {
                code_hash: r.get(0)?,
                salt: r.get(1)?,
                expires_at: r.get::<_, i64>(2)? as u64,
                attempts: r.get(3)?,
            })
        })
        .optional()?;
    Ok(Some(user))
}

fn pat_row(r: &rusqlite::Row) -> rusqlite::Result<PersonalAccessToken> {
    Ok(PersonalAccessToken {
        name: r.get(0)?,
        hashed_token: r.get(1)?,
        last_token_part: r.get(2)?,
        created_at: r.get::<_, i64>(3)? as u64,
        bypass_two_factor: r.get(4)?,
        last_used_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        expires_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
    })
}

const PAT_COLUMNS: &str =
    "name, hashed_token, last_token_part, created_at, bypass_two_factor, last_used_at, expires_at";

/// Checks and spends `proof` inside the caller's transaction; `Some` (and no
/// change) when refused (`rules::spend_proof` decides the order).
fn spend(
    tx: &Transaction,
    user_id: &str,
    proof: &FactorProof,
) -> rusqlite::Result<Option<WriteOutcome>> {
    spend_proof(&mut ProofTx { tx, user_id }, proof)
}

/// Stores audit events in the caller's transaction; a failed login counts
/// on the row of its (account, address, minute) when there is one.
fn insert_events(tx: &Connection, events: &[AuditEvent]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit_events (at, account, kind, token_name, token_last_part, method, address, user_agent, minute, host_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, (SELECT id FROM temp.host)) \
         ON CONFLICT (account, address, kind, minute) WHERE minute IS NOT NULL DO UPDATE SET count = count + 1",
    )?;
    for e in events {
        let minute = e.kind.aggregated().then_some((e.at / 60_000) as i64);
        insert.execute(params![
            e.at as i64,
            e.account,
            e.kind.name(),
            e.token_name,
            e.token_last_part,
            e.method.map(TwoFactorMethod::name),
            e.client_address,
            e.user_agent,
            minute
        ])?;
    }
    Ok(())
}

/// A write's proof checks as statements on its transaction.
struct ProofTx<'a> {
    tx: &'a Transaction<'a>,
    user_id: &'a str,
}

impl ProofSteps for ProofTx<'_> {
    type Error = rusqlite::Error;

    fn record_events(&mut self, events: &[AuditEvent]) -> rusqlite::Result<()> {
        insert_events(self.tx, events)
    }

    fn reply_kept(&mut self, r: &IdempotentWrite) -> rusqlite::Result<bool> {
        self.tx
            .prepare_cached(
                "SELECT 1 FROM idempotent_replies WHERE user_id = ?1 AND presented_hashed_token = ?2 \
                 AND key = ?3 AND lease_until IS NULL AND created_at >= ?4",
            )?
            .exists(params![self.user_id, r.presented_hashed_token, r.key, r.forget_before as i64])
    }

    fn session_alive(&mut self, session: &str) -> rusqlite::Result<bool> {
        self.tx
            .prepare_cached("SELECT 1 FROM tokens WHERE hashed_token = ?1 AND user_id = ?2")?
            .exists(params![session, self.user_id])
    }

    fn spend_factor(&mut self, used: &FactorUse) -> rusqlite::Result<bool> {
        let (tx, user_id) = (self.tx, self.user_id);
        let spent = match used {
            FactorUse::None | FactorUse::Password => 1,
            FactorUse::TotpStep(step) => tx.execute(
                "UPDATE totp SET last_used_step = ?2 WHERE user_id = ?1 AND last_used_step < ?2",
                params![user_id, *step as i64],
            )?,
            FactorUse::BackupCode(h) => tx.execute(
                "UPDATE backup_codes SET spent = 1 WHERE user_id = ?1 AND code_hash = ?2 AND spent = 0",
                params![user_id, h],
            )?,
            FactorUse::EmailCode(h) => tx.execute(
                "DELETE FROM email_codes WHERE user_id = ?1 AND code_hash = ?2",
                params![user_id, h],
            )?,
        };
        if spent > 0 && *used != FactorUse::None {
            tx.execute("UPDATE users SET failed_count = 0 WHERE id = ?1", [user_id])?;
        }
        Ok(spent > 0)
    }

    fn remember(&mut self, g: &RememberGrant) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE tokens SET authorized_hash = ?3, authorized_until = ?4 WHERE user_id = ?1 AND hashed_token = ?2",
            params![self.user_id, g.hashed_login_token, g.fingerprint, g.until as i64],
        )?;
        Ok(())
    }

    fn keep_reply(&mut self, r: &IdempotentWrite) -> rusqlite::Result<()> {
        let (tx, user_id) = (self.tx, self.user_id);
        tx.prepare_cached("DELETE FROM idempotent_replies WHERE user_id = ?1 AND created_at < ?2")?
            .execute(params![user_id, r.forget_before as i64])?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO idempotent_replies \
             (user_id, presented_hashed_token, key, body_hash, sealed_reply, created_at, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
        )?
        .execute(params![
            user_id,
            r.presented_hashed_token,
            r.key,
            r.body_hash,
            r.sealed_reply,
            r.created_at as i64
        ])?;
        Ok(())
    }
}

fn insert_token(tx: &Transaction, user_id: &str, t: &TokenRecord) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO tokens (hashed_token, user_id, kind, name, last_token_part, created_at, bypass_two_factor, \
         expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        t.hashed_token,
        user_id,
        kind_str(t.kind),
        t.name,
        t.last_token_part,
        t.created_at as i64,
        t.bypass_two_factor,
        t.expires_at.map(|v| v as i64)
    ])
}

/// The PAT of the user that keeps `hashed_token` as a superseded value at
/// or after `not_before`: its name and when it was superseded.
fn superseded(
    tx: &Connection,
    user_id: &str,
    hashed_token: &str,
    not_before: TimestampMs,
) -> rusqlite::Result<Option<SupersededToken>> {
    // `instr` on blobs narrows to rows holding the key's bytes; `find` checks
    // that they are an entry's, and its instant.
    let mut stmt = tx.prepare_cached(
        "SELECT name, superseded FROM tokens WHERE user_id = ?1 AND kind = 'pat' \
         AND instr(superseded, ?2) > 0",
    )?;
    let mut rows = stmt.query(params![user_id, superseded::search_key(hashed_token)])?;
    while let Some(row) = rows.next()? {
        let kept: Vec<u8> = row.get(1)?;
        if let Some(superseded_at) = superseded::find(&kept, hashed_token, not_before) {
            return Ok(Some(SupersededToken {
                name: row.get(0)?,
                superseded_at,
            }));
        }
    }
    Ok(None)
}

fn user_exists(tx: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .exists([user_id])
}

fn pat_exists(tx: &Connection, user_id: &str, name: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM tokens WHERE user_id = ?1 AND kind = 'pat' AND name = ?2")?
        .exists(params![user_id, name])
}

impl Storage for SqliteStorage {
    fn authenticate(
        &self,
        user_id: &str,
        hashed_token: &str,
        permission: Option<&str>,
    ) -> HostResult<Option<Session>> {
        self.read(|tx| {
            let token = tx
                .prepare_cached(
                    "SELECT kind, bypass_two_factor, authorized_hash, authorized_until, name, created_at, \
                     last_used_at, expires_at FROM tokens WHERE hashed_token = ?1 AND user_id = ?2",
                )?
                .query_row(params![hashed_token, user_id], |r| {
                    Ok(LoginToken {
                        hashed_token: hashed_token.to_string(),
                        kind: if r.get::<_, String>(0)? == "pat" {
                            TokenKind::PersonalAccessToken
                        } else {
                            TokenKind::Login
                        },
                        name: r.get(4)?,
                        created_at: r.get::<_, i64>(5)? as u64,
                        bypass_two_factor: r.get(1)?,
                        two_factor_authorized_hash: r.get(2)?,
                        two_factor_authorized_until: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        last_used_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                        expires_at: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    })
                })
                .optional()?;
            let Some(token) = token else { return Ok(None) };
            let Some(user) = load_user(tx, &self.keys, user_id)? else {
                return Ok(None);
            };
            let permitted = match permission {
                Some(p) => permitted(tx, user_id, p)?,
                None => false,
            };
            Ok(Some(Session {
                user,
                token,
                permitted,
            }))
        })
    }

    fn find_user_for_login(&self, identifier: &LoginIdentifier) -> HostResult<Option<User>> {
        self.read(|tx| {
            let id: Option<String> = match identifier {
                LoginIdentifier::Username(n) => tx
                    .prepare_cached("SELECT id FROM users WHERE username = ?1")?
                    .query_row([n], |r| r.get(0))
                    .optional()?,
                LoginIdentifier::Email(e) => tx
                    .prepare_cached("SELECT id FROM users WHERE email = ?1 COLLATE NOCASE ORDER BY created_at, id LIMIT 1")?
                    .query_row([e], |r| r.get(0))
                    .optional()?,
            };
            match id {
                Some(id) => load_user(tx, &self.keys, &id),
                None => Ok(None),
            }
        })
    }

    fn insert_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        created_at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let (user_id, hashed_token, proof) =
            (user_id.to_owned(), hashed_token.to_owned(), proof.clone());
        self.write(move |tx| {
            let (user_id, hashed_token, proof) = (user_id.as_str(), hashed_token.as_str(), &proof);
            if !user_exists(tx, user_id)? {
                return Ok(WriteOutcome::NotFound);
            }
            if let Some(refused) = spend(tx, user_id, proof)? {
                return Ok(refused);
            }
            insert_token(tx, user_id, &TokenRecord::login(hashed_token, created_at))?;
            Ok(WriteOutcome::Done)
        })
    }

    fn find_backup_code(&self, user_id: &str, hashed_code: &str) -> HostResult<BackupCodeState> {
        self.read(|tx| {
            let spent: Option<bool> = tx
                .prepare_cached(
                    "SELECT spent FROM backup_codes WHERE user_id = ?1 AND code_hash = ?2",
                )?
                .query_row(params![user_id, hashed_code], |r| r.get(0))
                .optional()?;
            Ok(BackupCodeState::of_stored(spent))
        })
    }

    fn list_personal_access_tokens(&self, user_id: &str) -> HostResult<Vec<PersonalAccessToken>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {PAT_COLUMNS} FROM tokens WHERE user_id = ?1 AND kind = 'pat' ORDER BY created_at, rowid"
            ))?;
            stmt.query_map([user_id], pat_row)?.collect()
        })
    }

    fn find_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>> {
        self.read(|tx| {
            tx.prepare_cached(&format!(
                "SELECT {PAT_COLUMNS} FROM tokens WHERE user_id = ?1 AND kind = 'pat' AND name = ?2"
            ))?
            .query_row(params![user_id, name], pat_row)
            .optional()
        })
    }

    fn insert_personal_access_token(
        &self,
        user_id: &str,
        token: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let (user_id, token, proof) = (user_id.to_owned(), token.clone(), proof.clone());
        self.write(move |tx| {
            let (user_id, token, proof) = (user_id.as_str(), &token, &proof);
            if !user_exists(tx, user_id)? {
                return Ok(WriteOutcome::NotFound);
            }
            if pat_exists(tx, user_id, &token.name)? {
                return Ok(WriteOutcome::NameTaken);
            }
            if let Some(refused) = spend(tx, user_id, proof)? {
                return Ok(refused);
            }
            insert_token(tx, user_id, &TokenRecord::personal_access_token(token))?;
            Ok(WriteOutcome::Done)
        })
    }

    fn replace_personal_access_token(
        &self,
        user_id: &str,
        expected_hashed_token: &str,
        r: &PersonalAccessToken,
        proof: &FactorProof,
        keep_superseded: u32,
    ) -> HostResult<WriteOutcome> {
        let (user_id, expected_hashed_token, r, proof) = (
            user_id.to_owned(),
            expected_hashed_token.to_owned(),
            r.clone(),
            proof.clone(),
        );
        self.write(move |tx| {
let (user_id, expected_hashed_token, r, proof) = (user_id.as_str(), expected_hashed_token.as_str(), &r, &proof);
            // The compare: the named token must still hold the expected value.
            let Some(kept) = tx
                .prepare_cached("SELECT superseded FROM tokens WHERE user_id = ?1 AND kind = 'pat' AND name = ?2 AND hashed_token = ?3")?
                .query_row(params![user_id, r.name, expected_hashed_token], |row| row.get::<_, Option<Vec<u8>>>(0))
                .optional()?
            else {
                return Ok(WriteOutcome::NotFound);
            };
            let kept = superseded::prepend(kept.as_deref(), expected_hashed_token, r.created_at, keep_superseded);
            if let Some(refused) = spend(tx, user_id, proof)? {
                return Ok(refused);
            }
            // The swap: one row rewritten in place, so there is never a moment
            // with neither token or with both.
            tx.prepare_cached(
                "UPDATE tokens SET hashed_token = ?4, last_token_part = ?5, created_at = ?6, bypass_two_factor = ?7, \
                 authorized_hash = NULL, authorized_until = NULL, last_used_at = ?8, expires_at = ?9, \
                 expiry_notified_at = NULL, superseded = ?10 \
                 WHERE user_id = ?1 AND kind = 'pat' AND name = ?2 AND hashed_token = ?3",
            )?
            .execute(params![
                user_id,
                r.name,
                expected_hashed_token,
                r.hashed_token,
                r.last_token_part,
                r.created_at as i64,
                r.bypass_two_factor,
                r.last_used_at.map(|v| v as i64),
                r.expires_at.map(|v| v as i64),
                kept
            ])?;
            Ok(WriteOutcome::Done)
        })
    }

    fn remove_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let (user_id, name, proof) = (user_id.to_owned(), name.to_owned(), proof.clone());
        self.write(move |tx| {
            let (user_id, name, proof) = (user_id.as_str(), name.as_str(), &proof);
            if !pat_exists(tx, user_id, name)? {
                return Ok(WriteOutcome::NotFound);
            }
            if let Some(refused) = spend(tx, user_id, proof)? {
                return Ok(refused);
            }
            tx.execute(
                "DELETE FROM tokens WHERE user_id = ?1 AND kind = 'pat' AND name = ?2",
                params![user_id, name],
            )?;
            Ok(WriteOutcome::Done)
        })
    }

    fn find_superseded_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<SupersededToken>> {
        self.read(|tx| superseded(tx, user_id, hashed_token, not_before))
    }

    fn revoke_superseded_family(
        &self,
        user_id: &str,
        hashed_token: &str,
        not_before: TimestampMs,
        events: &[AuditEvent],
    ) -> HostResult<Option<RevokedToken>> {
        let (user_id, hashed_token, events) =
            (user_id.to_owned(), hashed_token.to_owned(), events.to_vec());
        self.write(move |tx| {
            let Some(found) = superseded(tx, &user_id, &hashed_token, not_before)? else {
                return Ok(None);
            };
            // Found in this write's transaction: the row is there to remove.
            tx.prepare_cached(
                "DELETE FROM tokens WHERE user_id = ?1 AND kind = 'pat' AND name = ?2",
            )?
            .execute(params![user_id, found.name])?;
            insert_events(tx, &events)?;
            let email: Option<String> = tx
                .prepare_cached(
                    "SELECT CASE WHEN email_verified THEN email END FROM users WHERE id = ?1",
                )?
                .query_row([&user_id], |r| r.get(0))?;
            Ok(Some(RevokedToken {
                name: found.name,
                verified_emails: email.into_iter().collect(),
            }))
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
        let user_id = user_id.to_owned();
        // The writer runs one job at a time, so this read-then-write is atomic.
        self.write(move |tx| {
            let user_id = user_id.as_str();
            let stored = tx
                .prepare_cached("SELECT failed_count, failed_last_at FROM users WHERE id = ?1")?
                .query_row([user_id], |r| {
                    Ok(FailureCount {
                        count: r.get(0)?,
                        last_failed_at: r.get::<_, i64>(1)? as u64,
                    })
                })?;
            let email_attempts: Option<u32> = match max_email_code_attempts {
                Some(_) => tx
                    .prepare_cached("SELECT attempts FROM email_codes WHERE user_id = ?1")?
                    .query_row([user_id], |r| r.get(0))
                    .optional()?,
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
                tx.prepare_cached(
                    "UPDATE users SET failed_count = ?2, failed_last_at = ?3 WHERE id = ?1",
                )?
                .execute(params![user_id, r.failures.count, at as i64])?;
                if email_attempts.is_some() {
                    tx.prepare_cached("UPDATE email_codes SET attempts = ?2 WHERE user_id = ?1")?
                        .execute(params![user_id, r.email_code_attempts])?;
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
        let user_id = user_id.to_owned();
        self.write(move |tx| {
            let user_id = user_id.as_str();
            let n = tx
                .prepare_cached(
                    "UPDATE users SET failed_count = MAX(failed_count - 1, 0) WHERE id = ?1",
                )?
                .execute([user_id])?;
            if n == 0 {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
            if email_code_attempt {
                tx.prepare_cached(
                    "UPDATE email_codes SET attempts = MAX(attempts - 1, 0) WHERE user_id = ?1",
                )?
                .execute([user_id])?;
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
        let (account, address, limits) = (account.to_owned(), address.to_owned(), *limits);
        // The writer runs one job at a time, so this read-then-write is atomic.
        self.write(move |tx| {
            let get = |scope: &str, key: &str| -> rusqlite::Result<LoginCount> {
                Ok(tx
                    .prepare_cached("SELECT count, last_at FROM login_failures WHERE scope = ?1 AND key = ?2")?
                    .query_row(params![scope, key], |r| {
                        Ok(LoginCount { count: r.get(0)?, last_at: r.get::<_, i64>(1)? as u64 })
                    })
                    .optional()?
                    .unwrap_or_default())
            };
            let acc = get("account", &account)?;
            let adr = get("address", &address)?;
            let known: Option<i64> = tx
                .prepare_cached(
                    "SELECT last_at FROM known_login_addresses WHERE account = ?1 AND address = ?2",
                )?
                .query_row(params![account, address], |r| r.get(0))
                .optional()?;
            let (acc, adr) = match admit_login(acc, adr, known.map(|k| k as u64), at, &limits) {
                Ok(next) => next,
                Err(refused) => return Ok(refused),
            };
            let put = |scope: &str, key: &str, c: LoginCount| {
                tx.prepare_cached(
                    "INSERT INTO login_failures (scope, key, count, last_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(scope, key) DO UPDATE SET count = ?3, last_at = ?4",
                )?
                .execute(params![scope, key, c.count, c.last_at as i64])
            };
            put("account", &account, acc)?;
            put("address", &address, adr)?;
            Ok(LoginAdmission::Admitted)
        })
    }

    fn login_succeeded(&self, account: &str, address: &str, at: TimestampMs) -> HostResult<()> {
        let (account, address) = (account.to_owned(), address.to_owned());
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM login_failures WHERE scope = 'account' AND key = ?1")?
                .execute([&account])?;
            tx.prepare_cached(
                "UPDATE login_failures SET count = MAX(count - 1, 0) WHERE scope = 'address' AND key = ?1",
            )?
            .execute([&address])?;
            tx.prepare_cached(
                "INSERT INTO known_login_addresses (account, address, last_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(account, address) DO UPDATE SET last_at = ?3",
            )?
            .execute(params![account, address, at as i64])?;
            // The newest few only (the contract's minimum).
            tx.prepare_cached(
                "DELETE FROM known_login_addresses WHERE account = ?1 AND address NOT IN \
                 (SELECT address FROM known_login_addresses WHERE account = ?1 ORDER BY last_at DESC LIMIT ?2)",
            )?
            .execute(params![account, KNOWN_ADDRESSES_KEPT as i64])?;
            Ok(())
        })
    }

    fn remove_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        events: &[AuditEvent],
    ) -> HostResult<WriteOutcome> {
        let (user_id, hashed_token, events) =
            (user_id.to_owned(), hashed_token.to_owned(), events.to_vec());
        self.write(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM tokens WHERE user_id = ?1 AND hashed_token = ?2 AND kind = 'login'")?
                .execute(params![user_id, hashed_token])?;
            if n != 1 {
                return Ok(WriteOutcome::NotFound);
            }
            insert_events(tx, &events)?;
            Ok(WriteOutcome::Done)
        })
    }

    fn record_audit_events(&self, events: &[AuditEvent]) -> HostResult<()> {
        let events = events.to_vec();
        self.write(move |tx| insert_events(tx, &events))
    }

    fn list_audit_events(
        &self,
        filter: &AuditFilter,
        offset: u32,
        count: u32,
    ) -> HostResult<AuditPage> {
        use rcpat_store::audit_sql::{self, Param};
        let (clause, args) = audit_sql::where_clause(filter, |n| format!("?{n}"));
        let args: Vec<rusqlite::types::Value> = args
            .into_iter()
            .map(|p| match p {
                Param::Text(t) => t.into(),
                Param::Int(i) => i.into(),
            })
            .collect();
        let rows = self.read::<_, Error>(|tx| {
            let total: i64 = tx
                .prepare_cached(&format!("SELECT count(*) FROM audit_events {clause}"))?
                .query_row(rusqlite::params_from_iter(&args), |r| r.get(0))?;
            let n = args.len();
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {} FROM audit_events {clause} {} LIMIT ?{} OFFSET ?{}",
                audit_sql::COLUMNS,
                audit_sql::ORDER,
                n + 1,
                n + 2
            ))?;
            let page = args
                .iter()
                .cloned()
                .chain([i64::from(count).into(), i64::from(offset).into()]);
            let rows = stmt
                .query_map(rusqlite::params_from_iter(page), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((total, rows))
        })?;
        let (total, rows) = rows;
        let mut events = Vec::with_capacity(rows.len());
        for (at, account, kind, token_name, token_last_part, method, address, agent, host_id, n) in
            rows
        {
            events.push(StoredAuditEvent {
                event: AuditEvent {
                    at: at as u64,
                    account,
                    kind: audit_sql::kind(&kind)?,
                    token_name,
                    token_last_part,
                    method: audit_sql::method(method.as_deref())?,
                    client_address: address,
                    user_agent: agent,
                },
                host_id,
                count: u32::try_from(n).unwrap_or(u32::MAX),
            });
        }
        Ok(AuditPage {
            total: u32::try_from(total).unwrap_or(u32::MAX),
            events,
        })
    }

    fn store_email_code(&self, user_id: &str, c: &EmailCode) -> HostResult<()> {
        let (user_id, c) = (user_id.to_owned(), c.clone());
        self.write(move |tx| {
let (user_id, c) = (user_id.as_str(), &c);
            tx.execute(
                "INSERT INTO email_codes (user_id, code_hash, salt, expires_at, attempts) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(user_id) DO UPDATE SET code_hash = ?2, salt = ?3, expires_at = ?4, attempts = ?5",
                params![user_id, c.code_hash, c.salt, c.expires_at as i64, c.attempts],
            )?;
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
        let (user_id, hashed_token) = (user_id.to_owned(), hashed_token.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE tokens SET last_used_at = ?3 WHERE user_id = ?1 AND hashed_token = ?2 \
                 AND kind = 'pat' AND (last_used_at IS NULL OR last_used_at < ?4)",
            )?
            .execute(params![
                user_id,
                hashed_token,
                at as i64,
                stale_before as i64
            ])?;
            Ok(())
        })
    }

    fn find_idempotent_reply(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<IdempotentReply>> {
        self.read(|tx| {
            tx.prepare_cached(
                "SELECT body_hash, sealed_reply FROM idempotent_replies WHERE user_id = ?1 \
                 AND presented_hashed_token = ?2 AND key = ?3 AND created_at >= ?4 AND lease_until IS NULL",
            )?
            .query_row(
                params![user_id, presented_hashed_token, key, not_before as i64],
                |r| {
                    Ok(IdempotentReply {
                        body_hash: r.get(0)?,
                        sealed_reply: r.get(1)?,
                    })
                },
            )
            .optional()
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
        let (user_id, hash, key) = (
            user_id.to_owned(),
            presented_hashed_token.to_owned(),
            key.to_owned(),
        );
        self.write(move |tx| {
            let row: Option<(String, Vec<u8>, i64, Option<i64>)> = tx
                .prepare_cached(
                    "SELECT body_hash, sealed_reply, created_at, lease_until FROM idempotent_replies \
                     WHERE user_id = ?1 AND presented_hashed_token = ?2 AND key = ?3",
                )?
                .query_row(params![user_id, hash, key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            match row {
                Some((body_hash, sealed_reply, created, None)) if created as u64 >= not_before => {
                    return Ok(KeyReservation::Kept(IdempotentReply {
                        body_hash,
                        sealed_reply,
                    }));
                }
                Some((_, _, _, Some(until))) if until as u64 > at => {
                    return Ok(KeyReservation::InFlight);
                }
                _ => {}
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO idempotent_replies \
                 (user_id, presented_hashed_token, key, body_hash, sealed_reply, created_at, lease_until) \
                 VALUES (?1, ?2, ?3, '', x'', ?4, ?5)",
            )?
            .execute(params![user_id, hash, key, at as i64, lease_until as i64])?;
            Ok(KeyReservation::Reserved)
        })
    }

    fn release_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
    ) -> HostResult<()> {
        let (user_id, hash, key) = (
            user_id.to_owned(),
            presented_hashed_token.to_owned(),
            key.to_owned(),
        );
        self.write(move |tx| {
            tx.prepare_cached(
                "DELETE FROM idempotent_replies WHERE user_id = ?1 AND presented_hashed_token = ?2 \
                 AND key = ?3 AND lease_until IS NOT NULL",
            )?
            .execute(params![user_id, hash, key])
            .map(drop)
        })
    }
}

impl Admin for SqliteStorage {
    fn has_permission(&self, user_id: &str, permission: &str) -> Result<bool> {
        self.read(|tx| permitted(tx, user_id, permission))
    }

    fn create_user(&self, n: &NewUser) -> Result<()> {
        let n = n.clone();
        self.write(move |tx| {
let n = &n;
            tx.execute(
                "INSERT INTO users (id, username, email, email_verified, password_bcrypt, created_at, name) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![n.id, n.username, n.email, n.email_verified, n.password_bcrypt, n.created_at as i64, n.name],
            )?;
            for role in &n.roles {
                tx.execute("INSERT OR IGNORE INTO user_roles VALUES (?1, ?2)", params![n.id, role])?;
            }
            Ok(())
        })
    }

    fn find_user_id(&self, username: &str) -> Result<Option<String>> {
        self.read(|tx| {
            tx.query_row(
                "SELECT id FROM users WHERE username = ?1",
                [username],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT u.id, u.username, u.email, u.email_two_factor, \
                 EXISTS(SELECT 1 FROM totp t WHERE t.user_id = u.id), \
                 (SELECT group_concat(role, ',') FROM (SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role)) \
                 FROM users u ORDER BY u.username",
            )?;
            stmt.query_map([], |r| {
                let roles: Option<String> = r.get(5)?;
                Ok(UserSummary {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    email: r.get(2)?,
                    email_two_factor: r.get(3)?,
                    totp: r.get(4)?,
                    roles: roles.map(|s| s.split(',').map(String::from).collect()).unwrap_or_default(),
                })
            })?
            .collect()
        })
    }

    fn set_totp(&self, user_id: &str, totp: Option<(&TotpEnrolment, &BackupCodes)>) -> Result<()> {
        let (user_id, totp) = (
            user_id.to_owned(),
            totp.map(|(t, b)| (t.clone(), b.clone())),
        );
        let sealed = totp
            .as_ref()
            .map(|(t, _)| seal_secret(&self.keys, &user_id, &t.secret));
        let keys = self.keys.clone();
        self.write(move |tx| {
            let (user_id, totp) = (user_id.as_str(), totp.as_ref());
            if let Some((_, id)) = &sealed {
                admit_key(tx, &keys, *id)?;
            }
            tx.execute("DELETE FROM totp WHERE user_id = ?1", [user_id])?;
            tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [user_id])?;
            if let Some((t, backup)) = totp {
                tx.execute(
                    "INSERT INTO totp (user_id, secret, secret_key_id, algorithm, digits, period, last_used_step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![user_id, sealed.as_ref().map(|s| &s.0), sealed.as_ref().map(|s| s.1), alg_str(t.algorithm), t.digits, t.period, t.last_used_step as i64],
                )?;
                for (codes, spent) in [(&backup.unused, false), (&backup.spent, true)] {
                    for h in codes {
                        tx.execute(
                            "INSERT OR IGNORE INTO backup_codes (user_id, code_hash, spent) VALUES (?1, ?2, ?3)",
                            params![user_id, h, spent],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    fn set_email_two_factor(&self, user_id: &str, enabled: bool) -> Result<()> {
        let owned = user_id.to_owned();
        let n = self.write::<_, Error>(move |tx| {
            let user_id = owned.as_str();
            tx.execute(
                "UPDATE users SET email_two_factor = ?2 WHERE id = ?1",
                params![user_id, enabled],
            )
        })?;
        if n == 0 {
            Err(Error::NoSuchUser(user_id.into()))
        } else {
            Ok(())
        }
    }

    fn set_permission_roles(&self, permission: &str, roles: &[String]) -> Result<()> {
        let (permission, roles) = (permission.to_owned(), roles.to_vec());
        self.write(move |tx| {
            let (permission, roles) = (permission.as_str(), roles.as_slice());
            tx.execute(
                "DELETE FROM permission_roles WHERE permission = ?1",
                [permission],
            )?;
            for role in roles {
                tx.execute(
                    "INSERT OR IGNORE INTO permission_roles VALUES (?1, ?2)",
                    params![permission, role],
                )?;
            }
            Ok(())
        })
    }

    fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<()> {
        let (user_id, roles) = (user_id.to_owned(), roles.to_vec());
        self.write(move |tx| {
            let (user_id, roles) = (user_id.as_str(), roles.as_slice());
            tx.execute("DELETE FROM user_roles WHERE user_id = ?1", [user_id])?;
            for role in roles {
                tx.execute(
                    "INSERT OR IGNORE INTO user_roles VALUES (?1, ?2)",
                    params![user_id, role],
                )?;
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
        let (user_id, permission) = (user_id.to_owned(), permission.to_owned());
        self.write(move |tx| {
            let (user_id, permission) = (user_id.as_str(), permission.as_str());
            match grant {
                Some(g) => tx.execute(
                    "INSERT INTO user_permissions VALUES (?1, ?2, ?3) \
                     ON CONFLICT(user_id, permission) DO UPDATE SET granted = ?3",
                    params![user_id, permission, g],
                )?,
                None => tx.execute(
                    "DELETE FROM user_permissions WHERE user_id = ?1 AND permission = ?2",
                    params![user_id, permission],
                )?,
            };
            Ok(())
        })
    }

    fn add_token(&self, user_id: &str, token: &TokenRecord) -> Result<()> {
        token.check()?;
        let (user_id, token) = (user_id.to_owned(), token.clone());
        self.write(move |tx| {
            let (user_id, token) = (user_id.as_str(), &token);
            insert_token(tx, user_id, token).map(drop)
        })
    }

    fn set_host_id(&self, host_id: &str) -> Result<()> {
        let host_id = host_id.to_owned();
        self.write(move |tx| {
            tx.execute("UPDATE temp.host SET id = ?1", [host_id])
                .map(drop)
        })
    }

    fn prune_audit_events(&self, before: TimestampMs, batch: u32) -> Result<u64> {
        let mut removed = 0;
        loop {
            // One short write per batch: requests' writes go between them.
            // Then a pause as long as the batch took, for another process's
            // writers (`serve`, when `audit prune` runs beside it): SQLite
            // has no queue between processes, only retries.
            let started = std::time::Instant::now();
            let n = self.write::<_, Error>(move |tx| {
                tx.prepare_cached(
                    "DELETE FROM audit_events WHERE id IN \
                     (SELECT id FROM audit_events WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )?
                .execute(params![before as i64, batch])
            })?;
            removed += n as u64;
            if n < batch as usize {
                return Ok(removed);
            }
            std::thread::sleep(started.elapsed());
        }
    }

    fn token_hashes_named(&self, user_id: &str, name: &str) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT hashed_token FROM tokens WHERE user_id = ?1 AND kind = 'pat' AND name = ?2",
            )?;
            stmt.query_map(params![user_id, name], |r| r.get(0))?
                .collect()
        })
    }

    fn expiring_tokens(&self, now: TimestampMs, until: TimestampMs) -> Result<Vec<ExpiringToken>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT t.user_id, u.username, CASE WHEN u.email_verified THEN u.email END, t.name, \
                 t.hashed_token, t.expires_at FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.kind = 'pat' AND t.expires_at > ?1 AND t.expires_at <= ?2 \
                 AND t.expiry_notified_at IS NULL ORDER BY t.expires_at, t.user_id, t.name",
            )?;
            stmt.query_map(params![now as i64, until as i64], |r| {
                Ok(ExpiringToken {
                    user_id: r.get(0)?,
                    username: r.get(1)?,
                    email: r.get(2)?,
                    name: r.get(3)?,
                    hashed_token: r.get(4)?,
                    expires_at: r.get::<_, i64>(5)? as u64,
                })
            })?
            .collect()
        })
    }

    fn claim_expiry_notice(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: TimestampMs,
    ) -> Result<bool> {
        let (user_id, hashed_token) = (user_id.to_owned(), hashed_token.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE tokens SET expiry_notified_at = ?3 WHERE user_id = ?1 AND hashed_token = ?2 \
                 AND expiry_notified_at IS NULL",
                params![user_id, hashed_token, at as i64],
            )? == 1)
        })
    }

    fn release_expiry_notice(&self, user_id: &str, hashed_token: &str) -> Result<()> {
        let (user_id, hashed_token) = (user_id.to_owned(), hashed_token.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE tokens SET expiry_notified_at = NULL WHERE user_id = ?1 AND hashed_token = ?2",
                params![user_id, hashed_token],
            )
            .map(drop)
        })
    }

    fn key_fingerprints(&self) -> Result<Vec<(u32, String)>> {
        self.read(|db| {
            db.prepare("SELECT id, fingerprint FROM secret_keys ORDER BY id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    fn reencrypt_secrets(&self) -> Result<usize> {
        let keys = self.keys.clone();
        let current = keys.current_id();
        self.write(move |tx| {
            admit_key(tx, &keys, current)?;
            let rows: Vec<(String, String, u32)> = tx
                .prepare(
                    "SELECT user_id, secret, secret_key_id FROM totp WHERE secret_key_id <> ?1",
                )?
                .query_map([current], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for (user_id, stored, key_id) in &rows {
                let secret = open_secret(&keys, user_id, stored, *key_id)?;
                let (sealed, id) = seal_secret(&keys, user_id, &secret);
                tx.execute(
                    "UPDATE totp SET secret = ?2, secret_key_id = ?3 WHERE user_id = ?1",
                    params![user_id, sealed, id],
                )?;
            }
            Ok(rows.len())
        })
    }
}

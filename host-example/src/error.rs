//! The host library's one error type. Library code returns [`Result`];
//! the binary's edges (`main.rs`) wrap it in `anyhow` with context, and the
//! storage trait's callers receive it as an opaque [`HostError`], whose text
//! goes to the host's logs only (the component never shows it to a client).

use std::path::PathBuf;

use rcpat::storage::HostError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed (`what` is "create", "read", "write"...).
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or folder that is not what it must be to be trusted.
    #[error("refusing {}: {reason}", path.display())]
    Untrusted { path: PathBuf, reason: String },
    /// The key file or `RCPAT_SECRET_KEY` is malformed.
    #[error("{origin}: {reason}")]
    Keys {
        origin: String,
        reason: &'static str,
    },
    /// A stored secret will not decrypt (tampered, misplaced, or its key is
    /// missing from the key file).
    #[error("a stored secret cannot be decrypted: {0}")]
    Secret(String),
    /// A write's reply was already kept for its `Idempotency-Key`: the
    /// write is rolled back and answered `reply-kept` (never leaves a store).
    #[error("a reply is already kept for this idempotency key")]
    ReplyKept,
    /// The key file and storage disagree on what a key id is.
    #[error("{0}")]
    KeyConflict(String),
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("postgres: no connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("the SQLite writer has stopped")]
    WriterStopped,
    #[error("sqlite: a write could not be isolated; the batch was rolled back")]
    BatchRolledBack,
    #[error("database schema {found} is newer than this program ({known})")]
    SchemaTooNew { found: usize, known: usize },
    /// Stored data that breaks the schema's own rules.
    #[error("corrupt data in storage: {0}")]
    Corrupt(&'static str),
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("a user named {0} already exists")]
    UserExists(String),
    /// Input an administrator gave that cannot be accepted (the text says why).
    #[error("{0}")]
    Invalid(String),
    #[error("not a valid email address ({0})")]
    Address(String),
    #[error("building the message: {0}")]
    MailBuild(#[from] lettre::error::Error),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("QR code: {0}")]
    Qr(#[from] qrcode::types::QrError),
    #[error("{}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The embedded component cannot be decoded (a build defect).
    #[error("the embedded component: {0}")]
    Component(String),
    /// The fault injector's planned failure (tests).
    #[error("injected failure at call {0}")]
    Injected(usize),
    /// A storage trait call failed (already opaque).
    #[error("{0}")]
    Storage(HostError),
}

/// `?` on a storage trait call inside host code.
impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        Error::Storage(e)
    }
}

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::Invalid(reason.into())
    }
}

/// SQLite's errors, except our own errors raised inside a row reader or a
/// write (carried through rusqlite as a conversion failure), which come
/// back as themselves.
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::ToSqlConversionFailure(inner) if inner.is::<Error>() => {
                *inner.downcast::<Error>().expect("checked")
            }
            other => Error::Sqlite(other),
        }
    }
}

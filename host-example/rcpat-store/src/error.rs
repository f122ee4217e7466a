//! The store crate's one error type: what the admin trait, the key file and
//! the stores' own checks report. It names no backend's types: a backend's
//! driver error travels as [`Error::Backend`] (boxed, its text kept), and
//! the storage trait's callers receive any of them as an opaque
//! [`HostError`], whose text goes to the host's logs only.

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
    /// The fault injector's planned failure (tests).
    #[error("injected failure at call {0}")]
    Injected(usize),
    /// A storage trait call failed (already opaque).
    #[error("{0}")]
    Storage(HostError),
    /// A backend's own failure (its driver's error, boxed so this crate
    /// names no driver): a lost connection, a constraint, a full disk.
    #[error("{0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
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

    /// A backend's own error, kept as its source.
    pub fn backend(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Backend(Box::new(source))
    }
}

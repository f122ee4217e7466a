//! The host application's error type. Library code returns [`Result`];
//! the binary's edges (`main.rs`) wrap it in `anyhow` with context. What the
//! stores, the key file and owner-only files report is the store crate's
//! error ([`rcpat_store::Error`]), carried whole in [`Error::Store`].

use std::path::PathBuf;

use rcpat::storage::HostError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store, the key file or a trusted file failed.
    #[error(transparent)]
    Store(#[from] rcpat_store::Error),
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
}

/// `?` on a storage trait call inside host code.
impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        rcpat_store::Error::io(what, path, source).into()
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        rcpat_store::Error::invalid(reason).into()
    }
}

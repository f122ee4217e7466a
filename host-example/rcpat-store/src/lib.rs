//! Storage for the rcpat component, for any host: the admin trait and its
//! records ([`Admin`], [`NewUser`], [`TokenRecord`]...), with errors of
//! this crate's own ([`Error`]); the in-memory store ([`MemoryStorage`]);
//! the fault injector ([`FaultyStorage`]); the key file and the sealing of
//! secrets at rest ([`keys`]); owner-only files ([`files`]); and, behind
//! the `conformance` feature, the storage contract's test kit
//! ([`conformance`], [`storage_conformance_tests!`]) that any store runs
//! with a factory of its own.
//!
//! A store implements the component's storage contract,
//! [`rcpat::storage::Storage`] (semantics in `wit/world.wit`), and the
//! host's own [`Admin`] operations; a [`Backend`] is both. The SQLite and
//! PostgreSQL stores are crates of their own (`rcpat-store-sqlite`,
//! `rcpat-store-postgres`).

use rcpat::model::*;
pub use rcpat::storage::{HostError, HostResult, Storage};

pub mod audit_sql;
pub mod error;
pub mod faulty;
pub mod files;
pub mod keys;
pub mod memory;
pub mod random;
pub mod superseded;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Error, Result};
pub use faulty::{FaultMode, FaultyStorage};
pub use memory::MemoryStorage;

/// The schema version every durable backend migrates to: migration N holds
/// the same change in each (checked at compile time beside each list).
pub const SCHEMA_VERSION: usize = 17;

/// The permission the endpoints check (the component's name for it).
pub use rcpat::endpoints::PAT_PERMISSION;
/// Rocket.Chat's default roles for it.
pub const PAT_PERMISSION_DEFAULT_ROLES: &[&str] = &["admin", "user"];

/// The stored text of a token kind, the same in every SQL backend.
pub fn kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Login => "login",
        TokenKind::PersonalAccessToken => "pat",
    }
}

/// The stored text of a TOTP algorithm, and back (unknown text is SHA-1,
/// the enrolment default).
pub fn alg_str(a: TotpAlgorithm) -> &'static str {
    match a {
        TotpAlgorithm::Sha1 => "sha1",
        TotpAlgorithm::Sha256 => "sha256",
        TotpAlgorithm::Sha512 => "sha512",
    }
}

pub fn alg_from(s: &str) -> TotpAlgorithm {
    match s {
        "sha256" => TotpAlgorithm::Sha256,
        "sha512" => TotpAlgorithm::Sha512,
        _ => TotpAlgorithm::Sha1,
    }
}

/// A user as an administrator creates it.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub name: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub password_bcrypt: Option<String>,
    pub roles: Vec<String>,
    pub created_at: TimestampMs,
}

impl NewUser {
    /// A user with an id, a username (also its display name) and roles; no
    /// email, no password, created at time 0 (set the other fields with
    /// struct update syntax).
    pub fn new(id: impl Into<String>, username: impl Into<String>, roles: &[&str]) -> Self {
        let username = username.into();
        NewUser {
            id: id.into(),
            name: username.clone(),
            username,
            email: None,
            email_verified: false,
            password_bcrypt: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            created_at: 0,
        }
    }
}

/// A stored login token or PAT, as the host seeds it.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub hashed_token: String,
    pub kind: TokenKind,
    /// Set for personal access tokens.
    pub name: Option<String>,
    pub last_token_part: String,
    pub created_at: TimestampMs,
    pub bypass_two_factor: bool,
    /// When a PAT stops authenticating (always `None` for a login token).
    pub expires_at: Option<TimestampMs>,
}

impl TokenRecord {
    /// Refuses a record no backend stores: a login token with a name, or a
    /// personal access token without one. Every `Admin::add_token` checks it
    /// first, so the backends agree (PostgreSQL's token index relies on
    /// login tokens having no name, migration 15).
    pub fn check(&self) -> Result<()> {
        match (self.kind, &self.name) {
            (TokenKind::Login, Some(_)) => Err(Error::invalid("a login token has no name")),
            (TokenKind::PersonalAccessToken, None) => {
                Err(Error::invalid("a personal access token needs a name"))
            }
            _ => Ok(()),
        }
    }

    /// The stored form of a personal access token.
    pub fn personal_access_token(t: &PersonalAccessToken) -> Self {
        TokenRecord {
            hashed_token: t.hashed_token.clone(),
            kind: TokenKind::PersonalAccessToken,
            name: Some(t.name.clone()),
            last_token_part: t.last_token_part.clone(),
            created_at: t.created_at,
            bypass_two_factor: t.bypass_two_factor,
            expires_at: t.expires_at,
        }
    }

    /// A login (session) token issued by `login`.
    pub fn login(hashed_token: &str, created_at: TimestampMs) -> Self {
        TokenRecord {
            hashed_token: hashed_token.to_string(),
            kind: TokenKind::Login,
            name: None,
            last_token_part: String::new(),
            created_at,
            bypass_two_factor: false,
            expires_at: None,
        }
    }
}

/// A personal access token about to expire, with what its owner's notice needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiringToken {
    pub user_id: String,
    pub username: String,
    /// The owner's verified address (`None`: nobody to tell).
    pub email: Option<String>,
    pub name: String,
    pub hashed_token: String,
    pub expires_at: TimestampMs,
}

/// A user as listed by the admin CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub totp: bool,
    pub email_two_factor: bool,
}

/// The host's own operations on a store: creating users, enrolling 2FA,
/// seeding tokens. The component never calls them (they are not in the WIT).
pub trait Admin: Send + Sync {
    /// Fails if the id or username exists.
    fn create_user(&self, user: &NewUser) -> Result<()>;
    fn find_user_id(&self, username: &str) -> Result<Option<String>>;
    fn list_users(&self) -> Result<Vec<UserSummary>>;
    /// Whether the user holds `permission` (as `authenticate` answers it).
    fn has_permission(&self, user_id: &str, permission: &str) -> Result<bool>;
    /// Enrols (Some) or removes (None) TOTP, replacing backup codes.
    /// (The enrolment's `has_backup_codes` is not stored: reads derive it
    /// from the codes.)
    fn set_totp(&self, user_id: &str, totp: Option<(&TotpEnrolment, &BackupCodes)>) -> Result<()>;
    fn set_email_two_factor(&self, user_id: &str, enabled: bool) -> Result<()>;
    /// Which roles grant `permission` (Rocket.Chat's `updatePermission`).
    fn set_permission_roles(&self, permission: &str, roles: &[String]) -> Result<()>;
    fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<()>;
    /// A per-user grant (`Some(true)`), revocation (`Some(false)`) or neither
    /// (`None`: the roles decide) of `permission`.
    fn set_user_permission(
        &self,
        user_id: &str,
        permission: &str,
        grant: Option<bool>,
    ) -> Result<()>;
    /// Stores a login token (or PAT) for the user.
    fn add_token(&self, user_id: &str, token: &TokenRecord) -> Result<()>;
    /// All stored token hashes of the user with that PAT name (for checks).
    fn token_hashes_named(&self, user_id: &str, name: &str) -> Result<Vec<String>>;
    /// The id stamped on every audit event this store stores from now on
    /// (`stored-audit-event.host-id`): the host's own name for itself.
    fn set_host_id(&self, host_id: &str) -> Result<()>;
    /// Removes audit events older than `before`, at most `batch` per
    /// statement, each batch its own short write (so pruning never holds
    /// a write lock long); answers how many were removed.
    fn prune_audit_events(&self, before: TimestampMs, batch: u32) -> Result<u64>;
    /// PATs still valid at `now` that expire by `until` and whose owner has
    /// not been sent a notice for that token value, by expiry.
    fn expiring_tokens(&self, now: TimestampMs, until: TimestampMs) -> Result<Vec<ExpiringToken>>;
    /// Records, if no notice was recorded yet for this token value, that one
    /// is being sent at `at`; false when another run got there first (so
    /// two runs at once mail once).
    fn claim_expiry_notice(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: TimestampMs,
    ) -> Result<bool>;
    /// Forgets a claimed notice whose mail could not be sent (the next run retries).
    fn release_expiry_notice(&self, user_id: &str, hashed_token: &str) -> Result<()>;
    /// Re-encrypts every stored secret under the newest key (after `keys
    /// rotate`); returns how many were re-encrypted. Nothing to do for stores
    /// that keep no secrets at rest.
    fn reencrypt_secrets(&self) -> Result<usize> {
        Ok(0)
    }
    /// The fingerprint storage recorded for each key id that secrets were
    /// sealed under (`keys`), to check a key file against at start.
    fn key_fingerprints(&self) -> Result<Vec<(u32, String)>> {
        Ok(Vec::new())
    }
}

/// A complete store: the component's operations and the host's.
pub trait Backend: Storage + Admin {
    /// The audit events of `account`, oldest first (tests and checks; the
    /// read side is `list-audit-events`).
    fn audit_events(&self, account: &str) -> Result<Vec<AuditEvent>> {
        let filter = AuditFilter {
            account: Some(account.to_string()),
            ..AuditFilter::default()
        };
        let page = self
            .list_audit_events(&filter, 0, u32::MAX)
            .map_err(Error::Storage)?;
        Ok(page.events.into_iter().rev().map(|s| s.event).collect())
    }
}

impl<T: Storage + Admin + ?Sized> Backend for T {}

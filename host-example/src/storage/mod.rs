//! Storage for the component's `storage` import: the trait every backend
//! implements, and the backends (SQLite, memory, and a fault injector).
//!
//! Each method is one atomic operation: it happens completely or not at all.
//! The component's methods mirror `wit/world.wit`; the `admin` methods are the
//! host's own (creating users, enrolling 2FA, seeding tokens).

use rcpat::env::HostResult;
use rcpat::model::*;

pub mod faulty;
pub mod memory;
pub mod sqlite;

pub use faulty::{FaultMode, FaultyStorage};
pub use memory::MemoryStorage;
pub use sqlite::SqliteStorage;

/// The permission the endpoints check.
pub const PAT_PERMISSION: &str = "create-personal-access-tokens";
/// Rocket.Chat's default roles for it.
pub const PAT_PERMISSION_DEFAULT_ROLES: &[&str] = &["admin", "user"];

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
}

impl TokenRecord {
    /// The stored form of a personal access token.
    pub fn personal_access_token(t: &PersonalAccessToken) -> Self {
        TokenRecord {
            hashed_token: t.hashed_token.clone(),
            kind: TokenKind::PersonalAccessToken,
            name: Some(t.name.clone()),
            last_token_part: t.last_token_part.clone(),
            created_at: t.created_at,
            bypass_two_factor: t.bypass_two_factor,
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
        }
    }
}

/// One failed-login count (per account or per address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginCount {
    pub count: u32,
    pub last_at: TimestampMs,
}

impl LoginCount {
    /// The count as it stands at `at`: zero once a block has run out.
    fn current(self, at: TimestampMs, max: u32, block_ms: u64) -> u32 {
        if max > 0 && self.count >= max && at >= self.last_at.saturating_add(block_ms) {
            0
        } else {
            self.count
        }
    }

    /// Whether this count blocks a login at `at`.
    fn blocks(self, at: TimestampMs, max: u32, block_ms: u64) -> bool {
        max > 0 && self.current(at, max, block_ms) >= max
    }

    /// The count after one more attempt at `at`.
    fn next(self, at: TimestampMs, max: u32, block_ms: u64) -> Self {
        LoginCount {
            count: self.current(at, max, block_ms).saturating_add(1),
            last_at: at,
        }
    }
}

/// The rule of `reserve-login-attempt` (`wit/world.wit`), one place for every
/// backend: from the stored account and address counts, the refusal, or the
/// two counts to store.
pub fn admit_login(
    account: LoginCount,
    address: LoginCount,
    at: TimestampMs,
    l: &LoginLimits,
) -> Result<(LoginCount, LoginCount), LoginAdmission> {
    if account.blocks(at, l.max_per_account, l.account_block_ms) {
        return Err(LoginAdmission::AccountBlocked);
    }
    if address.blocks(at, l.max_per_address, l.address_block_ms) {
        return Err(LoginAdmission::AddressBlocked);
    }
    Ok((
        account.next(at, l.max_per_account, l.account_block_ms),
        address.next(at, l.max_per_address, l.address_block_ms),
    ))
}

/// The rule of `reserve-two-factor-attempt`, one place for every backend:
/// from the stored failure count and (when the caller asked for it and a
/// code is outstanding) the email code's attempts, the answer. When it is
/// granted, the backend stores `failures` and, if it passed attempts in,
/// `email_code_attempts`.
pub fn reserve_attempt(
    stored: FailureCount,
    email_attempts: Option<u32>,
    at: TimestampMs,
    window_start: TimestampMs,
    max_failed: u32,
    max_email_code_attempts: Option<u32>,
) -> AttemptReservation {
    let count = if stored.last_failed_at <= window_start {
        0
    } else {
        stored.count
    };
    let email_full = email_attempts
        .zip(max_email_code_attempts)
        .is_some_and(|(a, max)| a >= max);
    if count >= max_failed || email_full {
        return AttemptReservation {
            granted: false,
            failures: FailureCount {
                count,
                last_failed_at: stored.last_failed_at,
            },
            email_code_attempts: email_attempts.unwrap_or(0),
        };
    }
    AttemptReservation {
        granted: true,
        failures: FailureCount {
            count: count + 1,
            last_failed_at: at,
        },
        email_code_attempts: email_attempts.map_or(0, |a| a + 1),
    }
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

pub trait Storage: Send + Sync {
    // --- The component's operations (semantics in wit/world.wit) ---
    fn authenticate(&self, user_id: &str, hashed_token: &str) -> HostResult<Option<Session>>;
    fn find_user_for_login(&self, identifier: &LoginIdentifier) -> HostResult<Option<User>>;
    fn insert_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        created_at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn has_permission(&self, user_id: &str, permission: &str) -> HostResult<bool>;
    fn list_personal_access_tokens(&self, user_id: &str) -> HostResult<Vec<PersonalAccessToken>>;
    fn find_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>>;
    fn insert_personal_access_token(
        &self,
        user_id: &str,
        token: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn replace_personal_access_token(
        &self,
        user_id: &str,
        expected_hashed_token: &str,
        replacement: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn remove_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn reserve_two_factor_attempt(
        &self,
        user_id: &str,
        at: TimestampMs,
        window_start: TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<AttemptReservation>;
    fn release_two_factor_attempt(&self, user_id: &str, email_code_attempt: bool)
    -> HostResult<()>;
    fn reserve_login_attempt(
        &self,
        account: &str,
        address: &str,
        at: TimestampMs,
        limits: &LoginLimits,
    ) -> HostResult<LoginAdmission>;
    fn login_succeeded(&self, account: &str, address: &str) -> HostResult<()>;
    fn remove_login_token(&self, user_id: &str, hashed_token: &str) -> HostResult<WriteOutcome>;
    fn store_email_code(&self, user_id: &str, code: &EmailCode) -> HostResult<()>;

    // --- Administration (host only) ---
    /// Fails if the id or username exists.
    fn create_user(&self, user: &NewUser) -> HostResult<()>;
    fn find_user_id(&self, username: &str) -> HostResult<Option<String>>;
    fn list_users(&self) -> HostResult<Vec<UserSummary>>;
    /// Enrols (Some) or removes (None) TOTP, replacing backup codes.
    fn set_totp(&self, user_id: &str, totp: Option<&TotpEnrolment>) -> HostResult<()>;
    fn set_email_two_factor(&self, user_id: &str, enabled: bool) -> HostResult<()>;
    /// Which roles grant `permission` (Rocket.Chat's `updatePermission`).
    fn set_permission_roles(&self, permission: &str, roles: &[String]) -> HostResult<()>;
    fn set_user_roles(&self, user_id: &str, roles: &[String]) -> HostResult<()>;
    /// A per-user grant (`Some(true)`), revocation (`Some(false)`) or neither
    /// (`None`: the roles decide) of `permission`.
    fn set_user_permission(
        &self,
        user_id: &str,
        permission: &str,
        grant: Option<bool>,
    ) -> HostResult<()>;
    /// Stores a login token (or PAT) for the user.
    fn add_token(&self, user_id: &str, token: &TokenRecord) -> HostResult<()>;
    /// All stored token hashes of the user with that PAT name (for checks).
    fn token_hashes_named(&self, user_id: &str, name: &str) -> HostResult<Vec<String>>;
    /// Re-encrypts every stored secret under the newest key (after `keys
    /// rotate`); returns how many were re-encrypted. Nothing to do for stores
    /// that keep no secrets at rest.
    fn reencrypt_secrets(&self) -> HostResult<usize> {
        Ok(0)
    }
}

//! The host capabilities the logic runs against: exactly the component's
//! imports (storage, mail, wall clock, randomness), as one trait.
//!
//! Inside the component they are the WIT imports (`component.rs`); natively a
//! host implements the trait directly, which is how the native baseline and
//! the unit tests run the very same logic.

use crate::model::*;

/// A failed host call; the text is for the host's logs, never for clients.
pub type HostResult<T> = Result<T, String>;

pub trait Env {
    /// Wall-clock time, milliseconds since the Unix epoch.
    fn now_ms(&mut self) -> TimestampMs;
    /// `len` cryptographically secure random bytes.
    fn random_bytes(&mut self, len: usize) -> Vec<u8>;
    /// The host's secret key for hashing second-factor codes (kept outside
    /// storage, so a copied database does not yield the codes).
    fn code_key(&self) -> &[u8];

    fn authenticate(&mut self, user_id: &str, hashed_token: &str) -> HostResult<Option<Session>>;
    fn find_user_for_login(&mut self, identifier: &LoginIdentifier) -> HostResult<Option<User>>;
    fn insert_login_token(
        &mut self,
        user_id: &str,
        hashed_token: &str,
        created_at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn has_permission(&mut self, user_id: &str, permission: &str) -> HostResult<bool>;
    fn list_personal_access_tokens(
        &mut self,
        user_id: &str,
    ) -> HostResult<Vec<PersonalAccessToken>>;
    fn find_personal_access_token(
        &mut self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>>;
    fn insert_personal_access_token(
        &mut self,
        user_id: &str,
        token: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn replace_personal_access_token(
        &mut self,
        user_id: &str,
        expected_hashed_token: &str,
        replacement: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn remove_personal_access_token(
        &mut self,
        user_id: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome>;
    fn reserve_two_factor_attempt(
        &mut self,
        user_id: &str,
        at: TimestampMs,
        window_start: TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<AttemptReservation>;
    fn release_two_factor_attempt(
        &mut self,
        user_id: &str,
        email_code_attempt: bool,
    ) -> HostResult<()>;
    fn reserve_login_attempt(
        &mut self,
        account: &str,
        address: &str,
        at: TimestampMs,
        limits: &LoginLimits,
    ) -> HostResult<LoginAdmission>;
    fn login_succeeded(&mut self, account: &str, address: &str) -> HostResult<()>;
    fn remove_login_token(&mut self, user_id: &str, hashed_token: &str)
    -> HostResult<WriteOutcome>;
    fn store_email_code(&mut self, user_id: &str, code: &EmailCode) -> HostResult<()>;

    fn send_mail(&mut self, message: &MailMessage) -> HostResult<()>;
}

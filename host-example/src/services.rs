//! The capabilities a host gives the logic (storage, mail, clock, randomness),
//! exposed both as the component's imports and as the native [`Env`].

use std::sync::Arc;

use rcpat::env::{Env, HostResult};
use rcpat::model::*;

use crate::clock::{Clock, SystemClock};
use crate::keys::Keys;
use crate::mail::Mailer;
use crate::storage::Storage;

/// What one request runs against; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub storage: Arc<dyn Storage>,
    pub mailer: Arc<dyn Mailer>,
    pub clock: Arc<dyn Clock>,
    /// The host's secret key material (never in storage).
    pub keys: Arc<Keys>,
}

impl Services {
    /// Services with a fresh random key: right for a store that dies with the
    /// process (memory, tests); a durable store needs `with_keys` and a key
    /// file, or its codes stop matching at the next start.
    pub fn new(storage: Arc<dyn Storage>, mailer: Arc<dyn Mailer>) -> Self {
        Services {
            storage,
            mailer,
            clock: Arc::new(SystemClock),
            keys: Arc::new(Keys::random()),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_keys(mut self, keys: Arc<Keys>) -> Self {
        self.keys = keys;
        self
    }

    /// The key the component hashes second-factor codes with.
    pub fn code_key(&self) -> &[u8] {
        self.keys.code_key()
    }
}

/// OS randomness.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// The native (non-wasm) environment: the same logic linked directly.
pub struct NativeEnv<'a>(pub &'a Services);

impl Env for NativeEnv<'_> {
    fn now_ms(&mut self) -> TimestampMs {
        self.0.clock.now_ms()
    }
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        random_bytes(len)
    }
    fn code_key(&self) -> &[u8] {
        self.0.code_key()
    }
    fn authenticate(&mut self, user_id: &str, hashed_token: &str) -> HostResult<Option<Session>> {
        self.0.storage.authenticate(user_id, hashed_token)
    }
    fn find_user_for_login(&mut self, identifier: &LoginIdentifier) -> HostResult<Option<User>> {
        self.0.storage.find_user_for_login(identifier)
    }
    fn insert_login_token(
        &mut self,
        user_id: &str,
        hashed_token: &str,
        created_at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.0
            .storage
            .insert_login_token(user_id, hashed_token, created_at, proof)
    }
    fn has_permission(&mut self, user_id: &str, permission: &str) -> HostResult<bool> {
        self.0.storage.has_permission(user_id, permission)
    }
    fn list_personal_access_tokens(
        &mut self,
        user_id: &str,
    ) -> HostResult<Vec<PersonalAccessToken>> {
        self.0.storage.list_personal_access_tokens(user_id)
    }
    fn find_personal_access_token(
        &mut self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>> {
        self.0.storage.find_personal_access_token(user_id, name)
    }
    fn insert_personal_access_token(
        &mut self,
        user_id: &str,
        token: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.0
            .storage
            .insert_personal_access_token(user_id, token, proof)
    }
    fn replace_personal_access_token(
        &mut self,
        user_id: &str,
        expected: &str,
        replacement: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.0
            .storage
            .replace_personal_access_token(user_id, expected, replacement, proof)
    }
    fn remove_personal_access_token(
        &mut self,
        user_id: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.0
            .storage
            .remove_personal_access_token(user_id, name, proof)
    }
    fn reserve_two_factor_attempt(
        &mut self,
        user_id: &str,
        at: TimestampMs,
        window_start: TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<AttemptReservation> {
        self.0.storage.reserve_two_factor_attempt(
            user_id,
            at,
            window_start,
            max_failed,
            max_email_code_attempts,
        )
    }
    fn release_two_factor_attempt(
        &mut self,
        user_id: &str,
        email_code_attempt: bool,
    ) -> HostResult<()> {
        self.0
            .storage
            .release_two_factor_attempt(user_id, email_code_attempt)
    }
    fn reserve_login_attempt(
        &mut self,
        account: &str,
        address: &str,
        at: TimestampMs,
        limits: &LoginLimits,
    ) -> HostResult<LoginAdmission> {
        self.0
            .storage
            .reserve_login_attempt(account, address, at, limits)
    }
    fn login_succeeded(&mut self, account: &str, address: &str) -> HostResult<()> {
        self.0.storage.login_succeeded(account, address)
    }
    fn remove_login_token(
        &mut self,
        user_id: &str,
        hashed_token: &str,
    ) -> HostResult<WriteOutcome> {
        self.0.storage.remove_login_token(user_id, hashed_token)
    }
    fn store_email_code(&mut self, user_id: &str, code: &EmailCode) -> HostResult<()> {
        self.0.storage.store_email_code(user_id, code)
    }
    fn send_mail(&mut self, message: &MailMessage) -> HostResult<()> {
        self.0.mailer.send(message)
    }
}

//! Fault injection: a storage that fails its Nth call, to prove that no
//! failure point loses a token or leaves half a write.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcpat::model::*;

use super::{
    Admin, Backend, ExpiringToken, HostResult, NewUser, Storage, TokenRecord, UserSummary,
};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// The failing call reports an error without touching the data.
    Before,
    /// The failing call does its work, then reports an error (a lost reply).
    After,
}

/// Wraps a backend; component-facing call number `fail_at` (1-based) fails.
/// Admin calls are passed through uncounted.
pub struct FaultyStorage {
    inner: Arc<dyn Backend>,
    fail_at: usize,
    mode: FaultMode,
    calls: AtomicUsize,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Backend>, fail_at: usize, mode: FaultMode) -> Self {
        FaultyStorage {
            inner,
            fail_at,
            mode,
            calls: AtomicUsize::new(0),
        }
    }

    /// Component-facing calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn call<T>(&self, f: impl FnOnce() -> HostResult<T>) -> HostResult<T> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.fail_at {
            return f();
        }
        if self.mode == FaultMode::After {
            let _ = f();
        }
        Err(Error::Injected(n).into())
    }
}

impl Storage for FaultyStorage {
    fn authenticate(&self, u: &str, h: &str, p: Option<&str>) -> HostResult<Option<Session>> {
        self.call(|| self.inner.authenticate(u, h, p))
    }
    fn find_user_for_login(&self, id: &LoginIdentifier) -> HostResult<Option<User>> {
        self.call(|| self.inner.find_user_for_login(id))
    }
    fn insert_login_token(
        &self,
        u: &str,
        h: &str,
        at: TimestampMs,
        p: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.call(|| self.inner.insert_login_token(u, h, at, p))
    }
    fn find_backup_code(&self, u: &str, h: &str) -> HostResult<BackupCodeState> {
        self.call(|| self.inner.find_backup_code(u, h))
    }
    fn list_personal_access_tokens(&self, u: &str) -> HostResult<Vec<PersonalAccessToken>> {
        self.call(|| self.inner.list_personal_access_tokens(u))
    }
    fn find_personal_access_token(
        &self,
        u: &str,
        n: &str,
    ) -> HostResult<Option<PersonalAccessToken>> {
        self.call(|| self.inner.find_personal_access_token(u, n))
    }
    fn insert_personal_access_token(
        &self,
        u: &str,
        t: &PersonalAccessToken,
        p: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.call(|| self.inner.insert_personal_access_token(u, t, p))
    }
    fn replace_personal_access_token(
        &self,
        u: &str,
        h: &str,
        r: &PersonalAccessToken,
        p: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.call(|| self.inner.replace_personal_access_token(u, h, r, p))
    }
    fn remove_personal_access_token(
        &self,
        u: &str,
        n: &str,
        p: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.call(|| self.inner.remove_personal_access_token(u, n, p))
    }
    fn reserve_two_factor_attempt(
        &self,
        u: &str,
        at: TimestampMs,
        ws: TimestampMs,
        max: u32,
        email: Option<u32>,
    ) -> HostResult<AttemptReservation> {
        self.call(|| self.inner.reserve_two_factor_attempt(u, at, ws, max, email))
    }
    fn release_two_factor_attempt(&self, u: &str, e: bool) -> HostResult<()> {
        self.call(|| self.inner.release_two_factor_attempt(u, e))
    }
    fn reserve_login_attempt(
        &self,
        a: &str,
        ip: &str,
        at: TimestampMs,
        l: &LoginLimits,
    ) -> HostResult<LoginAdmission> {
        self.call(|| self.inner.reserve_login_attempt(a, ip, at, l))
    }
    fn login_succeeded(&self, a: &str, ip: &str, at: TimestampMs) -> HostResult<()> {
        self.call(|| self.inner.login_succeeded(a, ip, at))
    }
    fn remove_login_token(&self, u: &str, h: &str) -> HostResult<WriteOutcome> {
        self.call(|| self.inner.remove_login_token(u, h))
    }
    fn store_email_code(&self, u: &str, c: &EmailCode) -> HostResult<()> {
        self.call(|| self.inner.store_email_code(u, c))
    }
    fn record_token_use(
        &self,
        u: &str,
        h: &str,
        at: TimestampMs,
        stale: TimestampMs,
    ) -> HostResult<()> {
        self.call(|| self.inner.record_token_use(u, h, at, stale))
    }
    fn find_idempotent_reply(
        &self,
        u: &str,
        h: &str,
        key: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<IdempotentReply>> {
        self.call(|| self.inner.find_idempotent_reply(u, h, key, not_before))
    }
    fn reserve_idempotency_key(
        &self,
        u: &str,
        h: &str,
        key: &str,
        at: TimestampMs,
        lease_until: TimestampMs,
        not_before: TimestampMs,
    ) -> HostResult<KeyReservation> {
        self.call(|| {
            self.inner
                .reserve_idempotency_key(u, h, key, at, lease_until, not_before)
        })
    }
    fn release_idempotency_key(&self, u: &str, h: &str, key: &str) -> HostResult<()> {
        self.call(|| self.inner.release_idempotency_key(u, h, key))
    }
}

impl Admin for FaultyStorage {
    fn has_permission(&self, u: &str, p: &str) -> Result<bool> {
        self.inner.has_permission(u, p)
    }
    fn create_user(&self, n: &NewUser) -> Result<()> {
        self.inner.create_user(n)
    }
    fn find_user_id(&self, username: &str) -> Result<Option<String>> {
        self.inner.find_user_id(username)
    }
    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.inner.list_users()
    }
    fn set_totp(&self, u: &str, t: Option<(&TotpEnrolment, &BackupCodes)>) -> Result<()> {
        self.inner.set_totp(u, t)
    }
    fn set_email_two_factor(&self, u: &str, on: bool) -> Result<()> {
        self.inner.set_email_two_factor(u, on)
    }
    fn set_permission_roles(&self, p: &str, r: &[String]) -> Result<()> {
        self.inner.set_permission_roles(p, r)
    }
    fn set_user_roles(&self, u: &str, r: &[String]) -> Result<()> {
        self.inner.set_user_roles(u, r)
    }
    fn set_user_permission(&self, u: &str, p: &str, g: Option<bool>) -> Result<()> {
        self.inner.set_user_permission(u, p, g)
    }
    fn add_token(&self, u: &str, t: &TokenRecord) -> Result<()> {
        self.inner.add_token(u, t)
    }
    fn token_hashes_named(&self, u: &str, n: &str) -> Result<Vec<String>> {
        self.inner.token_hashes_named(u, n)
    }
    fn reencrypt_secrets(&self) -> Result<usize> {
        self.inner.reencrypt_secrets()
    }
    fn key_fingerprints(&self) -> Result<Vec<(u32, String)>> {
        self.inner.key_fingerprints()
    }
    fn expiring_tokens(&self, now: TimestampMs, until: TimestampMs) -> Result<Vec<ExpiringToken>> {
        self.inner.expiring_tokens(now, until)
    }
    fn claim_expiry_notice(&self, u: &str, h: &str, at: TimestampMs) -> Result<bool> {
        self.inner.claim_expiry_notice(u, h, at)
    }
    fn release_expiry_notice(&self, u: &str, h: &str) -> Result<()> {
        self.inner.release_expiry_notice(u, h)
    }
}

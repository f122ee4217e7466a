//! Fault injection: a storage that fails its Nth call, to prove that no
//! failure point loses a token or leaves half a write.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcpat::model::*;

use crate::error::{Error, Result};
use crate::{
    Admin, Backend, ExpiringToken, HostResult, NewUser, Storage, TokenRecord, UserSummary,
};

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

/// Every storage call counted and forwarded (generated from the one list).
macro_rules! forward_counted {
    ($($name:ident $wit:literal ($($arg:ident: [$($ty:tt)*]),*) -> [$($ret:tt)*];)*) => {
        impl Storage for FaultyStorage {
            $(fn $name(&self, $($arg: $($ty)*),*) -> HostResult<$($ret)*> {
                self.call(|| self.inner.$name($($arg),*))
            })*
        }
    };
}

rcpat::storage_calls!(forward_counted);

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
    fn set_host_id(&self, host_id: &str) -> Result<()> {
        self.inner.set_host_id(host_id)
    }
    fn prune_audit_events(&self, before: TimestampMs, batch: u32) -> Result<u64> {
        self.inner.prune_audit_events(before, batch)
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

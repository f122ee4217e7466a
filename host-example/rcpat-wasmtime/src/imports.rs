//! The component's imports, implemented over [`RcpatCtx`]: each forwards to
//! the storage trait, mail, clock or randomness (conversions are in
//! `conversions.rs`), reporting through the context's hooks.

use crate::RcpatCtx;
use crate::bindings::rcpat::tokens::{mail, storage as st};
use crate::bindings::wasi::clocks::wall_clock;
use crate::bindings::wasi::random::random;
use rcpat::storage::{HostResult, Storage};

/// Largest randomness request served (the component asks for 43 bytes at most).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The text the guest gets for any failed import. The real error goes to
/// the hooks, where it is still typed; the component never shows host error
/// text to a client, so it gets none to show.
const IMPORT_FAILED: &str = "host call failed (see the host's log)";

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

impl wall_clock::Host for RcpatCtx {
    fn now(&mut self) -> wall_clock::Datetime {
        let ms = self.clock.now_ms();
        wall_clock::Datetime {
            seconds: ms / 1000,
            nanoseconds: (ms % 1000) as u32 * 1_000_000,
        }
    }
    fn resolution(&mut self) -> wall_clock::Datetime {
        wall_clock::Datetime {
            seconds: 0,
            nanoseconds: 1_000_000,
        }
    }
}

impl random::Host for RcpatCtx {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!("guest asked for {len} random bytes (limit {MAX_RANDOM_BYTES})");
        }
        Ok(random_bytes(len as usize))
    }
    fn get_random_u64(&mut self) -> u64 {
        u64::from_le_bytes(random_bytes(8).try_into().unwrap())
    }
}

impl RcpatCtx {
    /// Runs one storage call for the guest: converts its answer, reports
    /// it, and hides its error.
    fn call_storage<T, W: From<T>>(
        &self,
        call: &'static str,
        f: impl FnOnce(&dyn Storage) -> HostResult<T>,
    ) -> Result<W, String> {
        let started = std::time::Instant::now();
        let answer = f(&*self.storage);
        self.hooks
            .storage_call(call, started.elapsed(), answer.as_ref().map(drop));
        answer.map(W::from).map_err(|_| IMPORT_FAILED.to_string())
    }
}

impl mail::Host for RcpatCtx {
    fn send(&mut self, msg: mail::Message) -> Result<(), String> {
        let sent = self.mail.send(&msg.into());
        self.hooks.mail(sent.as_ref().map(drop));
        sent.map_err(|_| IMPORT_FAILED.to_string())
    }
}

/// Lists convert element by element.
struct Many<T>(Vec<T>);

impl<T, U: From<T>> From<Many<T>> for Vec<U> {
    fn from(m: Many<T>) -> Self {
        m.0.into_iter().map(U::from).collect()
    }
}

impl st::Host for RcpatCtx {
    fn authenticate(
        &mut self,
        user: String,
        hash: String,
        permission: Option<String>,
    ) -> Result<Option<st::Session>, String> {
        self.call_storage("authenticate", |s| {
            Ok(s.authenticate(&user, &hash, permission.as_deref())?
                .map(Into::into))
        })
    }
    fn find_user_for_login(&mut self, id: st::LoginIdentifier) -> Result<Option<st::User>, String> {
        self.call_storage("find-user-for-login", |s| {
            Ok(s.find_user_for_login(&id.into())?.map(Into::into))
        })
    }
    fn insert_login_token(
        &mut self,
        user: String,
        hash: String,
        created_at: u64,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.call_storage("insert-login-token", |s| {
            s.insert_login_token(&user, &hash, created_at, &proof.into())
        })
    }
    fn find_backup_code(
        &mut self,
        user: String,
        hashed_code: String,
    ) -> Result<st::BackupCodeState, String> {
        self.call_storage("find-backup-code", |s| {
            s.find_backup_code(&user, &hashed_code)
        })
    }
    fn list_personal_access_tokens(
        &mut self,
        user: String,
    ) -> Result<Vec<st::PersonalAccessToken>, String> {
        self.call_storage("list-personal-access-tokens", |s| {
            s.list_personal_access_tokens(&user).map(Many)
        })
    }
    fn find_personal_access_token(
        &mut self,
        user: String,
        name: String,
    ) -> Result<Option<st::PersonalAccessToken>, String> {
        self.call_storage("find-personal-access-token", |s| {
            Ok(s.find_personal_access_token(&user, &name)?.map(Into::into))
        })
    }
    fn insert_personal_access_token(
        &mut self,
        user: String,
        token: st::PersonalAccessToken,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.call_storage("insert-personal-access-token", |s| {
            s.insert_personal_access_token(&user, &token.into(), &proof.into())
        })
    }
    fn replace_personal_access_token(
        &mut self,
        user: String,
        expected: String,
        replacement: st::PersonalAccessToken,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.call_storage("replace-personal-access-token", |s| {
            s.replace_personal_access_token(&user, &expected, &replacement.into(), &proof.into())
        })
    }
    fn remove_personal_access_token(
        &mut self,
        user: String,
        name: String,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.call_storage("remove-personal-access-token", |s| {
            s.remove_personal_access_token(&user, &name, &proof.into())
        })
    }
    fn reserve_two_factor_attempt(
        &mut self,
        user: String,
        at: u64,
        window_start: u64,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> Result<st::AttemptReservation, String> {
        self.call_storage("reserve-two-factor-attempt", |s| {
            s.reserve_two_factor_attempt(
                &user,
                at,
                window_start,
                max_failed,
                max_email_code_attempts,
            )
        })
    }
    fn release_two_factor_attempt(&mut self, user: String, email: bool) -> Result<(), String> {
        self.call_storage("release-two-factor-attempt", |s| {
            s.release_two_factor_attempt(&user, email)
        })
    }
    fn reserve_login_attempt(
        &mut self,
        account: String,
        address: String,
        at: u64,
        limits: st::LoginLimits,
    ) -> Result<st::LoginAdmission, String> {
        self.call_storage("reserve-login-attempt", |s| {
            s.reserve_login_attempt(&account, &address, at, &limits.into())
        })
    }
    fn login_succeeded(&mut self, account: String, address: String, at: u64) -> Result<(), String> {
        self.call_storage("login-succeeded", |s| {
            s.login_succeeded(&account, &address, at)
        })
    }
    fn remove_login_token(
        &mut self,
        user: String,
        hash: String,
    ) -> Result<st::WriteOutcome, String> {
        self.call_storage("remove-login-token", |s| s.remove_login_token(&user, &hash))
    }
    fn store_email_code(&mut self, user: String, code: st::EmailCode) -> Result<(), String> {
        self.call_storage("store-email-code", |s| {
            s.store_email_code(&user, &code.into())
        })
    }
    fn record_token_use(
        &mut self,
        user: String,
        hash: String,
        at: u64,
        stale: u64,
    ) -> Result<(), String> {
        self.call_storage("record-token-use", |s| {
            s.record_token_use(&user, &hash, at, stale)
        })
    }
    fn find_idempotent_reply(
        &mut self,
        user: String,
        hash: String,
        key: String,
        not_before: u64,
    ) -> Result<Option<st::IdempotentReply>, String> {
        self.call_storage("find-idempotent-reply", |s| {
            Ok(s.find_idempotent_reply(&user, &hash, &key, not_before)?
                .map(Into::into))
        })
    }
    fn reserve_idempotency_key(
        &mut self,
        user: String,
        hash: String,
        key: String,
        at: u64,
        lease_until: u64,
        not_before: u64,
    ) -> Result<st::KeyReservation, String> {
        self.call_storage("reserve-idempotency-key", |s| {
            Ok(st::KeyReservation::from(s.reserve_idempotency_key(
                &user,
                &hash,
                &key,
                at,
                lease_until,
                not_before,
            )?))
        })
    }
    fn release_idempotency_key(
        &mut self,
        user: String,
        hash: String,
        key: String,
    ) -> Result<(), String> {
        self.call_storage("release-idempotency-key", |s| {
            s.release_idempotency_key(&user, &hash, &key)
        })
    }
}

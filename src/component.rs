//! The component glue: WIT exports call the endpoints, WIT imports become an
//! [`Env`] and a [`Storage`]. Conversions are in `conversions.rs`; every rule
//! is in the other modules.

mod conversions;

use crate::env::Env;
use crate::model as m;
use crate::storage::{HostError, HostResult, Storage};

wit_bindgen::generate!({ world: "pat-service", path: "wit", generate_all });

use exports::rcpat::tokens::endpoints as ep;
use rcpat::tokens::{mail, storage as st};
use wasi::clocks::wall_clock;
use wasi::random::random;

struct Component;
export!(Component);

impl ep::Guest for Component {
    fn default_settings() -> ep::Settings {
        m::Settings::default().into()
    }
    fn handle(route: ep::Route, config: ep::Settings, req: ep::Request) -> ep::Response {
        let endpoint: Endpoint = match route {
            ep::Route::Login => crate::account::login,
            ep::Route::Logout => crate::account::logout,
            ep::Route::Me => crate::account::me,
            ep::Route::RegeneratePersonalAccessToken => crate::endpoints::regenerate,
            ep::Route::GeneratePersonalAccessToken => crate::endpoints::generate,
            ep::Route::GetPersonalAccessTokens => crate::endpoints::list,
            ep::Route::RemovePersonalAccessToken => crate::endpoints::remove,
        };
        run(endpoint, config, req)
    }
}

type Endpoint = fn(&mut dyn Env, &m::Settings, &m::Request) -> m::Response;

fn run(endpoint: Endpoint, config: ep::Settings, req: ep::Request) -> ep::Response {
    let settings = m::Settings::from(&config);
    let mut imports = Imports {
        code_key: config.code_key,
    };
    endpoint(&mut imports, &settings, &req.into()).into()
}

/// The component's imports as the logic's `Env`, with the host's code key
/// from the call's settings.
struct Imports {
    code_key: Vec<u8>,
}

impl Env for Imports {
    fn storage(&self) -> &dyn Storage {
        &WitStorage
    }
    fn now_ms(&mut self) -> m::TimestampMs {
        let t = wall_clock::now();
        t.seconds * 1000 + u64::from(t.nanoseconds / 1_000_000)
    }
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        random::get_random_bytes(len as u64)
    }
    fn code_key(&self) -> &[u8] {
        &self.code_key
    }
    fn send_mail(&mut self, message: &m::MailMessage) -> HostResult<()> {
        mail::send(&message.into()).map_err(HostError::msg)
    }
}

/// The `storage` import as the storage trait.
struct WitStorage;

impl Storage for WitStorage {
    fn authenticate(
        &self,
        user_id: &str,
        hashed_token: &str,
        permission: Option<&str>,
    ) -> HostResult<Option<m::Session>> {
        Ok(st::authenticate(user_id, hashed_token, permission)
            .map_err(HostError::msg)?
            .map(Into::into))
    }
    fn find_user_for_login(&self, id: &m::LoginIdentifier) -> HostResult<Option<m::User>> {
        Ok(st::find_user_for_login(&id.into())
            .map_err(HostError::msg)?
            .map(Into::into))
    }
    fn insert_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        created_at: m::TimestampMs,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::insert_login_token(user_id, hashed_token, created_at, &proof.into())
            .map(Into::into)
            .map_err(HostError::msg)
    }
    fn find_backup_code(&self, user_id: &str, hashed_code: &str) -> HostResult<m::BackupCodeState> {
        st::find_backup_code(user_id, hashed_code)
            .map(Into::into)
            .map_err(HostError::msg)
    }
    fn list_personal_access_tokens(
        &self,
        user_id: &str,
    ) -> HostResult<Vec<m::PersonalAccessToken>> {
        Ok(st::list_personal_access_tokens(user_id)
            .map_err(HostError::msg)?
            .into_iter()
            .map(Into::into)
            .collect())
    }
    fn find_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<m::PersonalAccessToken>> {
        Ok(st::find_personal_access_token(user_id, name)
            .map_err(HostError::msg)?
            .map(Into::into))
    }
    fn insert_personal_access_token(
        &self,
        user_id: &str,
        token: &m::PersonalAccessToken,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::insert_personal_access_token(user_id, &token.into(), &proof.into())
            .map(Into::into)
            .map_err(HostError::msg)
    }
    fn replace_personal_access_token(
        &self,
        user_id: &str,
        expected_hashed_token: &str,
        replacement: &m::PersonalAccessToken,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::replace_personal_access_token(
            user_id,
            expected_hashed_token,
            &replacement.into(),
            &proof.into(),
        )
        .map(Into::into)
        .map_err(HostError::msg)
    }
    fn remove_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::remove_personal_access_token(user_id, name, &proof.into())
            .map(Into::into)
            .map_err(HostError::msg)
    }
    fn reserve_two_factor_attempt(
        &self,
        user_id: &str,
        at: m::TimestampMs,
        window_start: m::TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<m::AttemptReservation> {
        st::reserve_two_factor_attempt(
            user_id,
            at,
            window_start,
            max_failed,
            max_email_code_attempts,
        )
        .map(Into::into)
        .map_err(HostError::msg)
    }
    fn release_two_factor_attempt(
        &self,
        user_id: &str,
        email_code_attempt: bool,
    ) -> HostResult<()> {
        st::release_two_factor_attempt(user_id, email_code_attempt).map_err(HostError::msg)
    }
    fn reserve_login_attempt(
        &self,
        account: &str,
        address: &str,
        at: m::TimestampMs,
        limits: &m::LoginLimits,
    ) -> HostResult<m::LoginAdmission> {
        st::reserve_login_attempt(account, address, at, limits.into())
            .map(Into::into)
            .map_err(HostError::msg)
    }
    fn login_succeeded(&self, account: &str, address: &str, at: m::TimestampMs) -> HostResult<()> {
        st::login_succeeded(account, address, at).map_err(HostError::msg)
    }
    fn remove_login_token(&self, user_id: &str, hashed_token: &str) -> HostResult<m::WriteOutcome> {
        st::remove_login_token(user_id, hashed_token)
            .map(Into::into)
            .map_err(HostError::msg)
    }
    fn store_email_code(&self, user_id: &str, code: &m::EmailCode) -> HostResult<()> {
        st::store_email_code(user_id, &code.into()).map_err(HostError::msg)
    }
    fn record_token_use(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: m::TimestampMs,
        stale_before: m::TimestampMs,
    ) -> HostResult<()> {
        st::record_token_use(user_id, hashed_token, at, stale_before).map_err(HostError::msg)
    }
    fn find_idempotent_reply(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        not_before: m::TimestampMs,
    ) -> HostResult<Option<m::IdempotentReply>> {
        st::find_idempotent_reply(user_id, presented_hashed_token, key, not_before)
            .map(|r| r.map(Into::into))
            .map_err(HostError::msg)
    }
    fn reserve_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        at: m::TimestampMs,
        lease_until: m::TimestampMs,
        not_before: m::TimestampMs,
    ) -> HostResult<m::KeyReservation> {
        st::reserve_idempotency_key(
            user_id,
            presented_hashed_token,
            key,
            at,
            lease_until,
            not_before,
        )
        .map(Into::into)
        .map_err(HostError::msg)
    }
    fn release_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
    ) -> HostResult<()> {
        st::release_idempotency_key(user_id, presented_hashed_token, key).map_err(HostError::msg)
    }
}

/// getrandom's entropy on wasm32-unknown-unknown (bcrypt pulls getrandom in;
/// the component itself reads randomness through `Env::random_bytes`).
#[unsafe(no_mangle)]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    let bytes = random::get_random_bytes(len as u64);
    // SAFETY: getrandom hands us a writable buffer of `len` bytes.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dest, len.min(bytes.len())) };
    if bytes.len() < len {
        Err(getrandom::Error::UNSUPPORTED)
    } else {
        Ok(())
    }
}

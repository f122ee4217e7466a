//! The component glue: WIT imports become an [`Env`], WIT exports call the
//! endpoints. Only conversions live here; every rule is in the other modules.

use crate::env::{Env, HostResult};
use crate::model::{self as m};

wit_bindgen::generate!({ world: "pat-service", path: "wit", generate_all });

use exports::rcpat::tokens::endpoints as ep;
use rcpat::tokens::{mail, storage as st};
use wasi::clocks::wall_clock;
use wasi::random::random;

struct Component;
export!(Component);

impl ep::Guest for Component {
    fn default_settings() -> ep::Settings {
        settings_to_wit(m::Settings::default())
    }
    fn login(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::account::login, config, req)
    }
    fn me(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::account::me, config, req)
    }
    fn logout(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::account::logout, config, req)
    }
    fn regenerate_personal_access_token(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::endpoints::regenerate, config, req)
    }
    fn generate_personal_access_token(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::endpoints::generate, config, req)
    }
    fn get_personal_access_tokens(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::endpoints::list, config, req)
    }
    fn remove_personal_access_token(config: ep::Settings, req: ep::Request) -> ep::Response {
        run(crate::endpoints::remove, config, req)
    }
}

type Endpoint = fn(&mut dyn Env, &m::Settings, &m::Request) -> m::Response;

fn run(endpoint: Endpoint, config: ep::Settings, req: ep::Request) -> ep::Response {
    let req = m::Request {
        headers: req
            .headers
            .into_iter()
            .map(|h| m::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        client_address: req.client_address,
        body: req.body,
    };
    let settings = settings_from_wit(&config);
    let mut imports = Imports {
        code_key: config.code_key,
    };
    let r = endpoint(&mut imports, &settings, &req);
    ep::Response {
        status: r.status,
        body: r.body,
    }
}

fn settings_from_wit(s: &ep::Settings) -> m::Settings {
    m::Settings {
        two_factor_enabled: s.two_factor_enabled,
        totp_enabled: s.totp_enabled,
        email_enabled: s.email_enabled,
        totp_max_delta: s.totp_max_delta,
        email_code_expiration_seconds: s.email_code_expiration_seconds,
        email_code_max_attempts: s.email_code_max_attempts,
        enforce_password_fallback: s.enforce_password_fallback,
        remember_for_seconds: s.remember_for_seconds,
        max_failed_attempts: s.max_failed_attempts,
        failed_attempts_window_seconds: s.failed_attempts_window_seconds,
        login_expiration_days: s.login_expiration_days,
        max_failed_logins_per_user: s.max_failed_logins_per_user,
        user_login_block_minutes: s.user_login_block_minutes,
        max_failed_logins_per_address: s.max_failed_logins_per_address,
        address_login_block_minutes: s.address_login_block_minutes,
        bypass_tokens_unrestricted: s.bypass_tokens_unrestricted,
    }
}

fn settings_to_wit(s: m::Settings) -> ep::Settings {
    ep::Settings {
        two_factor_enabled: s.two_factor_enabled,
        totp_enabled: s.totp_enabled,
        email_enabled: s.email_enabled,
        totp_max_delta: s.totp_max_delta,
        email_code_expiration_seconds: s.email_code_expiration_seconds,
        email_code_max_attempts: s.email_code_max_attempts,
        enforce_password_fallback: s.enforce_password_fallback,
        remember_for_seconds: s.remember_for_seconds,
        max_failed_attempts: s.max_failed_attempts,
        failed_attempts_window_seconds: s.failed_attempts_window_seconds,
        login_expiration_days: s.login_expiration_days,
        max_failed_logins_per_user: s.max_failed_logins_per_user,
        user_login_block_minutes: s.user_login_block_minutes,
        max_failed_logins_per_address: s.max_failed_logins_per_address,
        address_login_block_minutes: s.address_login_block_minutes,
        bypass_tokens_unrestricted: s.bypass_tokens_unrestricted,
        // Each host supplies its own secret.
        code_key: Vec::new(),
    }
}

/// The component's imports as the logic's `Env`, with the host's code key
/// from the call's settings.
struct Imports {
    code_key: Vec<u8>,
}

impl Env for Imports {
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
    fn authenticate(
        &mut self,
        user_id: &str,
        hashed_token: &str,
    ) -> HostResult<Option<m::Session>> {
        Ok(st::authenticate(user_id, hashed_token)?.map(session_from_wit))
    }
    fn find_user_for_login(
        &mut self,
        identifier: &m::LoginIdentifier,
    ) -> HostResult<Option<m::User>> {
        let id = match identifier {
            m::LoginIdentifier::Username(u) => st::LoginIdentifier::Username(u.clone()),
            m::LoginIdentifier::Email(e) => st::LoginIdentifier::Email(e.clone()),
        };
        Ok(st::find_user_for_login(&id)?.map(user_from_wit))
    }
    fn insert_login_token(
        &mut self,
        user_id: &str,
        hashed_token: &str,
        created_at: m::TimestampMs,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::insert_login_token(user_id, hashed_token, created_at, &proof_to_wit(proof))
            .map(outcome_from_wit)
    }
    fn has_permission(&mut self, user_id: &str, permission: &str) -> HostResult<bool> {
        st::has_permission(user_id, permission)
    }
    fn list_personal_access_tokens(
        &mut self,
        user_id: &str,
    ) -> HostResult<Vec<m::PersonalAccessToken>> {
        Ok(st::list_personal_access_tokens(user_id)?
            .into_iter()
            .map(pat_from_wit)
            .collect())
    }
    fn find_personal_access_token(
        &mut self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<m::PersonalAccessToken>> {
        Ok(st::find_personal_access_token(user_id, name)?.map(pat_from_wit))
    }
    fn insert_personal_access_token(
        &mut self,
        user_id: &str,
        token: &m::PersonalAccessToken,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::insert_personal_access_token(user_id, &pat_to_wit(token), &proof_to_wit(proof))
            .map(outcome_from_wit)
    }
    fn replace_personal_access_token(
        &mut self,
        user_id: &str,
        expected_hashed_token: &str,
        replacement: &m::PersonalAccessToken,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::replace_personal_access_token(
            user_id,
            expected_hashed_token,
            &pat_to_wit(replacement),
            &proof_to_wit(proof),
        )
        .map(outcome_from_wit)
    }
    fn remove_personal_access_token(
        &mut self,
        user_id: &str,
        name: &str,
        proof: &m::FactorProof,
    ) -> HostResult<m::WriteOutcome> {
        st::remove_personal_access_token(user_id, name, &proof_to_wit(proof)).map(outcome_from_wit)
    }
    fn reserve_two_factor_attempt(
        &mut self,
        user_id: &str,
        at: m::TimestampMs,
        window_start: m::TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<m::AttemptReservation> {
        let r = st::reserve_two_factor_attempt(
            user_id,
            at,
            window_start,
            max_failed,
            max_email_code_attempts,
        )?;
        Ok(m::AttemptReservation {
            granted: r.granted,
            failures: m::FailureCount {
                count: r.failures.count,
                last_failed_at: r.failures.last_failed_at,
            },
            email_code_attempts: r.email_code_attempts,
        })
    }
    fn release_two_factor_attempt(
        &mut self,
        user_id: &str,
        email_code_attempt: bool,
    ) -> HostResult<()> {
        st::release_two_factor_attempt(user_id, email_code_attempt)
    }
    fn reserve_login_attempt(
        &mut self,
        account: &str,
        address: &str,
        at: m::TimestampMs,
        limits: &m::LoginLimits,
    ) -> HostResult<m::LoginAdmission> {
        let limits = st::LoginLimits {
            max_per_account: limits.max_per_account,
            account_block_ms: limits.account_block_ms,
            max_per_address: limits.max_per_address,
            address_block_ms: limits.address_block_ms,
        };
        Ok(
            match st::reserve_login_attempt(account, address, at, limits)? {
                st::LoginAdmission::Admitted => m::LoginAdmission::Admitted,
                st::LoginAdmission::AccountBlocked => m::LoginAdmission::AccountBlocked,
                st::LoginAdmission::AddressBlocked => m::LoginAdmission::AddressBlocked,
            },
        )
    }
    fn login_succeeded(&mut self, account: &str, address: &str) -> HostResult<()> {
        st::login_succeeded(account, address)
    }
    fn remove_login_token(
        &mut self,
        user_id: &str,
        hashed_token: &str,
    ) -> HostResult<m::WriteOutcome> {
        st::remove_login_token(user_id, hashed_token).map(outcome_from_wit)
    }
    fn store_email_code(&mut self, user_id: &str, code: &m::EmailCode) -> HostResult<()> {
        st::store_email_code(user_id, &email_code_to_wit(code))
    }
    fn send_mail(&mut self, message: &m::MailMessage) -> HostResult<()> {
        mail::send(&mail::Message {
            to: message.to.clone(),
            subject: message.subject.clone(),
            text: message.text.clone(),
        })
    }
}

fn session_from_wit(s: st::Session) -> m::Session {
    m::Session {
        user: user_from_wit(s.user),
        token: m::LoginToken {
            hashed_token: s.token.hashed_token,
            kind: match s.token.kind {
                st::TokenKind::Login => m::TokenKind::Login,
                st::TokenKind::PersonalAccessToken => m::TokenKind::PersonalAccessToken,
            },
            name: s.token.name,
            created_at: s.token.created_at,
            bypass_two_factor: s.token.bypass_two_factor,
            two_factor_authorized_hash: s.token.two_factor_authorized_hash,
            two_factor_authorized_until: s.token.two_factor_authorized_until,
        },
    }
}

fn user_from_wit(u: st::User) -> m::User {
    m::User {
        id: u.id,
        username: u.username,
        name: u.name,
        roles: u.roles,
        created_at: u.created_at,
        verified_emails: u.verified_emails,
        password_bcrypt: u.password_bcrypt,
        totp: u.totp.map(|t| m::TotpEnrolment {
            secret: t.secret,
            algorithm: match t.algorithm {
                st::TotpAlgorithm::Sha1 => m::TotpAlgorithm::Sha1,
                st::TotpAlgorithm::Sha256 => m::TotpAlgorithm::Sha256,
                st::TotpAlgorithm::Sha512 => m::TotpAlgorithm::Sha512,
            },
            digits: t.digits,
            period: t.period,
            last_used_step: t.last_used_step,
            hashed_backup_codes: t.hashed_backup_codes,
            spent_backup_codes: t.spent_backup_codes,
        }),
        email_two_factor: u.email_two_factor,
        email_code: u.email_code.map(|c| m::EmailCode {
            code_hash: c.code_hash,
            salt: c.salt,
            expires_at: c.expires_at,
            attempts: c.attempts,
        }),
        failures: m::FailureCount {
            count: u.failures.count,
            last_failed_at: u.failures.last_failed_at,
        },
    }
}

fn pat_from_wit(t: st::PersonalAccessToken) -> m::PersonalAccessToken {
    m::PersonalAccessToken {
        name: t.name,
        hashed_token: t.hashed_token,
        last_token_part: t.last_token_part,
        created_at: t.created_at,
        bypass_two_factor: t.bypass_two_factor,
    }
}

fn pat_to_wit(t: &m::PersonalAccessToken) -> st::PersonalAccessToken {
    st::PersonalAccessToken {
        name: t.name.clone(),
        hashed_token: t.hashed_token.clone(),
        last_token_part: t.last_token_part.clone(),
        created_at: t.created_at,
        bypass_two_factor: t.bypass_two_factor,
    }
}

fn email_code_to_wit(c: &m::EmailCode) -> st::EmailCode {
    st::EmailCode {
        code_hash: c.code_hash.clone(),
        salt: c.salt.clone(),
        expires_at: c.expires_at,
        attempts: c.attempts,
    }
}

fn proof_to_wit(p: &m::FactorProof) -> st::FactorProof {
    st::FactorProof {
        session: p.session.clone(),
        used: match &p.used {
            m::FactorUse::None => st::FactorUse::None,
            m::FactorUse::TotpStep(s) => st::FactorUse::TotpStep(*s),
            m::FactorUse::BackupCode(h) => st::FactorUse::BackupCode(h.clone()),
            m::FactorUse::EmailCode(h) => st::FactorUse::EmailCode(h.clone()),
            m::FactorUse::Password => st::FactorUse::Password,
        },
        remember: p.remember.as_ref().map(|r| st::RememberGrant {
            hashed_login_token: r.hashed_login_token.clone(),
            fingerprint: r.fingerprint.clone(),
            until: r.until,
        }),
    }
}

fn outcome_from_wit(o: st::WriteOutcome) -> m::WriteOutcome {
    match o {
        st::WriteOutcome::Done => m::WriteOutcome::Done,
        st::WriteOutcome::NotFound => m::WriteOutcome::NotFound,
        st::WriteOutcome::NameTaken => m::WriteOutcome::NameTaken,
        st::WriteOutcome::FactorAlreadyUsed => m::WriteOutcome::FactorAlreadyUsed,
        st::WriteOutcome::CredentialsRevoked => m::WriteOutcome::CredentialsRevoked,
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

//! The component's imports, implemented over [`Services`]: conversions only.

use wasmtime::{ResourceLimiter, StoreLimits};

use rcpat::model as m;

use crate::bindings::rcpat::tokens::{mail, storage as st};
use crate::bindings::wasi::clocks::wall_clock;
use crate::bindings::wasi::random::random;
use crate::services::{Services, random_bytes};

/// Per-store data: the request's services and its resource limits.
pub struct HostState {
    pub services: Services,
    pub limits: PeakLimits,
}

/// `StoreLimits`, remembering the largest linear memory the guest asked for
/// (what one instance really costs).
pub struct PeakLimits {
    pub inner: StoreLimits,
    pub peak_memory: usize,
}

impl ResourceLimiter for PeakLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }
    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }
    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Largest randomness request served (the component asks for 43 bytes at most).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

impl wall_clock::Host for HostState {
    fn now(&mut self) -> wall_clock::Datetime {
        let ms = self.services.clock.now_ms();
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

impl random::Host for HostState {
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

impl mail::Host for HostState {
    fn send(&mut self, msg: mail::Message) -> Result<(), String> {
        self.services.mailer.send(&m::MailMessage {
            to: msg.to,
            subject: msg.subject,
            text: msg.text,
        })
    }
}

impl st::Host for HostState {
    fn authenticate(
        &mut self,
        user_id: String,
        hashed_token: String,
    ) -> Result<Option<st::Session>, String> {
        Ok(self
            .services
            .storage
            .authenticate(&user_id, &hashed_token)?
            .map(session_to_wit))
    }
    fn find_user_for_login(
        &mut self,
        identifier: st::LoginIdentifier,
    ) -> Result<Option<st::User>, String> {
        let id = match identifier {
            st::LoginIdentifier::Username(u) => m::LoginIdentifier::Username(u),
            st::LoginIdentifier::Email(e) => m::LoginIdentifier::Email(e),
        };
        Ok(self
            .services
            .storage
            .find_user_for_login(&id)?
            .map(user_to_wit))
    }
    fn insert_login_token(
        &mut self,
        user_id: String,
        hashed_token: String,
        created_at: u64,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.services
            .storage
            .insert_login_token(&user_id, &hashed_token, created_at, &proof_from_wit(proof))
            .map(outcome_to_wit)
    }
    fn has_permission(&mut self, user_id: String, permission: String) -> Result<bool, String> {
        self.services.storage.has_permission(&user_id, &permission)
    }
    fn list_personal_access_tokens(
        &mut self,
        user_id: String,
    ) -> Result<Vec<st::PersonalAccessToken>, String> {
        Ok(self
            .services
            .storage
            .list_personal_access_tokens(&user_id)?
            .into_iter()
            .map(pat_to_wit)
            .collect())
    }
    fn find_personal_access_token(
        &mut self,
        user_id: String,
        name: String,
    ) -> Result<Option<st::PersonalAccessToken>, String> {
        Ok(self
            .services
            .storage
            .find_personal_access_token(&user_id, &name)?
            .map(pat_to_wit))
    }
    fn insert_personal_access_token(
        &mut self,
        user_id: String,
        token: st::PersonalAccessToken,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.services
            .storage
            .insert_personal_access_token(&user_id, &pat_from_wit(token), &proof_from_wit(proof))
            .map(outcome_to_wit)
    }
    fn replace_personal_access_token(
        &mut self,
        user_id: String,
        expected_hashed_token: String,
        replacement: st::PersonalAccessToken,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.services
            .storage
            .replace_personal_access_token(
                &user_id,
                &expected_hashed_token,
                &pat_from_wit(replacement),
                &proof_from_wit(proof),
            )
            .map(outcome_to_wit)
    }
    fn remove_personal_access_token(
        &mut self,
        user_id: String,
        name: String,
        proof: st::FactorProof,
    ) -> Result<st::WriteOutcome, String> {
        self.services
            .storage
            .remove_personal_access_token(&user_id, &name, &proof_from_wit(proof))
            .map(outcome_to_wit)
    }
    fn reserve_two_factor_attempt(
        &mut self,
        user_id: String,
        at: u64,
        window_start: u64,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> Result<st::AttemptReservation, String> {
        let r = self.services.storage.reserve_two_factor_attempt(
            &user_id,
            at,
            window_start,
            max_failed,
            max_email_code_attempts,
        )?;
        Ok(st::AttemptReservation {
            granted: r.granted,
            failures: st::FailureCount {
                count: r.failures.count,
                last_failed_at: r.failures.last_failed_at,
            },
            email_code_attempts: r.email_code_attempts,
        })
    }
    fn release_two_factor_attempt(
        &mut self,
        user_id: String,
        email_code_attempt: bool,
    ) -> Result<(), String> {
        self.services
            .storage
            .release_two_factor_attempt(&user_id, email_code_attempt)
    }
    fn reserve_login_attempt(
        &mut self,
        account: String,
        address: String,
        at: u64,
        limits: st::LoginLimits,
    ) -> Result<st::LoginAdmission, String> {
        let limits = m::LoginLimits {
            max_per_account: limits.max_per_account,
            account_block_ms: limits.account_block_ms,
            max_per_address: limits.max_per_address,
            address_block_ms: limits.address_block_ms,
        };
        Ok(
            match self
                .services
                .storage
                .reserve_login_attempt(&account, &address, at, &limits)?
            {
                m::LoginAdmission::Admitted => st::LoginAdmission::Admitted,
                m::LoginAdmission::AccountBlocked => st::LoginAdmission::AccountBlocked,
                m::LoginAdmission::AddressBlocked => st::LoginAdmission::AddressBlocked,
            },
        )
    }
    fn login_succeeded(&mut self, account: String, address: String) -> Result<(), String> {
        self.services.storage.login_succeeded(&account, &address)
    }
    fn remove_login_token(
        &mut self,
        user_id: String,
        hashed_token: String,
    ) -> Result<st::WriteOutcome, String> {
        self.services
            .storage
            .remove_login_token(&user_id, &hashed_token)
            .map(outcome_to_wit)
    }
    fn store_email_code(&mut self, user_id: String, code: st::EmailCode) -> Result<(), String> {
        let code = m::EmailCode {
            code_hash: code.code_hash,
            salt: code.salt,
            expires_at: code.expires_at,
            attempts: code.attempts,
        };
        self.services.storage.store_email_code(&user_id, &code)
    }
}

fn session_to_wit(s: m::Session) -> st::Session {
    st::Session {
        user: user_to_wit(s.user),
        token: st::LoginToken {
            hashed_token: s.token.hashed_token,
            kind: match s.token.kind {
                m::TokenKind::Login => st::TokenKind::Login,
                m::TokenKind::PersonalAccessToken => st::TokenKind::PersonalAccessToken,
            },
            name: s.token.name,
            created_at: s.token.created_at,
            bypass_two_factor: s.token.bypass_two_factor,
            two_factor_authorized_hash: s.token.two_factor_authorized_hash,
            two_factor_authorized_until: s.token.two_factor_authorized_until,
        },
    }
}

fn user_to_wit(u: m::User) -> st::User {
    st::User {
        id: u.id,
        username: u.username,
        name: u.name,
        roles: u.roles,
        created_at: u.created_at,
        verified_emails: u.verified_emails,
        password_bcrypt: u.password_bcrypt,
        totp: u.totp.map(|t| st::TotpEnrolment {
            secret: t.secret,
            algorithm: match t.algorithm {
                m::TotpAlgorithm::Sha1 => st::TotpAlgorithm::Sha1,
                m::TotpAlgorithm::Sha256 => st::TotpAlgorithm::Sha256,
                m::TotpAlgorithm::Sha512 => st::TotpAlgorithm::Sha512,
            },
            digits: t.digits,
            period: t.period,
            last_used_step: t.last_used_step,
            hashed_backup_codes: t.hashed_backup_codes,
            spent_backup_codes: t.spent_backup_codes,
        }),
        email_two_factor: u.email_two_factor,
        email_code: u.email_code.map(|c| st::EmailCode {
            code_hash: c.code_hash,
            salt: c.salt,
            expires_at: c.expires_at,
            attempts: c.attempts,
        }),
        failures: st::FailureCount {
            count: u.failures.count,
            last_failed_at: u.failures.last_failed_at,
        },
    }
}

fn pat_to_wit(t: m::PersonalAccessToken) -> st::PersonalAccessToken {
    st::PersonalAccessToken {
        name: t.name,
        hashed_token: t.hashed_token,
        last_token_part: t.last_token_part,
        created_at: t.created_at,
        bypass_two_factor: t.bypass_two_factor,
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

fn proof_from_wit(p: st::FactorProof) -> m::FactorProof {
    m::FactorProof {
        session: p.session,
        used: match p.used {
            st::FactorUse::None => m::FactorUse::None,
            st::FactorUse::TotpStep(s) => m::FactorUse::TotpStep(s),
            st::FactorUse::BackupCode(h) => m::FactorUse::BackupCode(h),
            st::FactorUse::EmailCode(h) => m::FactorUse::EmailCode(h),
            st::FactorUse::Password => m::FactorUse::Password,
        },
        remember: p.remember.map(|r| m::RememberGrant {
            hashed_login_token: r.hashed_login_token,
            fingerprint: r.fingerprint,
            until: r.until,
        }),
    }
}

fn outcome_to_wit(o: m::WriteOutcome) -> st::WriteOutcome {
    match o {
        m::WriteOutcome::Done => st::WriteOutcome::Done,
        m::WriteOutcome::NotFound => st::WriteOutcome::NotFound,
        m::WriteOutcome::NameTaken => st::WriteOutcome::NameTaken,
        m::WriteOutcome::FactorAlreadyUsed => st::WriteOutcome::FactorAlreadyUsed,
        m::WriteOutcome::CredentialsRevoked => st::WriteOutcome::CredentialsRevoked,
    }
}

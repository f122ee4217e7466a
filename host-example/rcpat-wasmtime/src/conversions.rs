//! Every conversion between the generated WIT types (`bindings.rs`) and the
//! model, as `From` impls: the only host module that knows both shapes (the
//! component has the mirror image in `src/component/conversions.rs`).

use rcpat::model as m;

use crate::bindings::exports::rcpat::tokens::endpoints as ep;
use crate::bindings::rcpat::tokens::{mail, storage as st};

/// The settings as the component takes them, with the host's code key.
pub fn settings_to_wit(s: &m::Settings, code_key: &[u8]) -> ep::Settings {
    rcpat::copy_settings!(s => ep::Settings { code_key: code_key.to_vec() })
}

/// The component's defaults (its `code-key` is empty and dropped).
impl From<ep::Settings> for m::Settings {
    fn from(s: ep::Settings) -> Self {
        rcpat::copy_settings!(s => m::Settings {})
    }
}

impl From<&m::Request> for ep::Request {
    fn from(r: &m::Request) -> Self {
        ep::Request {
            headers: r
                .headers
                .iter()
                .map(|h| ep::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            client_address: r.client_address.clone(),
            query: r.query.clone(),
            body: r.body.clone(),
        }
    }
}

impl From<ep::Response> for m::Response {
    fn from(r: ep::Response) -> Self {
        m::Response {
            status: r.status,
            body: r.body,
            events: r
                .events
                .into_iter()
                .map(|e| match e {
                    ep::SecurityEvent::SupersededTokenReused(name) => {
                        m::SecurityEvent::SupersededTokenReused(name)
                    }
                })
                .collect(),
        }
    }
}

impl From<m::SupersededToken> for st::SupersededToken {
    fn from(t: m::SupersededToken) -> Self {
        st::SupersededToken {
            name: t.name,
            superseded_at: t.superseded_at,
        }
    }
}

impl From<m::RevokedToken> for st::RevokedToken {
    fn from(t: m::RevokedToken) -> Self {
        st::RevokedToken {
            name: t.name,
            verified_emails: t.verified_emails,
        }
    }
}

impl From<mail::Message> for m::MailMessage {
    fn from(msg: mail::Message) -> Self {
        m::MailMessage {
            to: msg.to,
            subject: msg.subject,
            text: msg.text,
        }
    }
}

impl From<st::LoginIdentifier> for m::LoginIdentifier {
    fn from(id: st::LoginIdentifier) -> Self {
        match id {
            st::LoginIdentifier::Username(u) => m::LoginIdentifier::Username(u),
            st::LoginIdentifier::Email(e) => m::LoginIdentifier::Email(e),
        }
    }
}

impl From<m::Session> for st::Session {
    fn from(s: m::Session) -> Self {
        st::Session {
            user: s.user.into(),
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
                last_used_at: s.token.last_used_at,
                expires_at: s.token.expires_at,
            },
            permitted: s.permitted,
        }
    }
}

impl From<m::User> for st::User {
    fn from(u: m::User) -> Self {
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
                has_backup_codes: t.has_backup_codes,
            }),
            email_two_factor: u.email_two_factor,
            email_code: u.email_code.map(|c| st::EmailCode {
                code_hash: c.code_hash,
                salt: c.salt,
                expires_at: c.expires_at,
                attempts: c.attempts,
            }),
            failures: u.failures.into(),
        }
    }
}

impl From<m::FailureCount> for st::FailureCount {
    fn from(f: m::FailureCount) -> Self {
        st::FailureCount {
            count: f.count,
            last_failed_at: f.last_failed_at,
        }
    }
}

impl From<m::PersonalAccessToken> for st::PersonalAccessToken {
    fn from(t: m::PersonalAccessToken) -> Self {
        st::PersonalAccessToken {
            name: t.name,
            hashed_token: t.hashed_token,
            last_token_part: t.last_token_part,
            created_at: t.created_at,
            bypass_two_factor: t.bypass_two_factor,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

impl From<st::PersonalAccessToken> for m::PersonalAccessToken {
    fn from(t: st::PersonalAccessToken) -> Self {
        m::PersonalAccessToken {
            name: t.name,
            hashed_token: t.hashed_token,
            last_token_part: t.last_token_part,
            created_at: t.created_at,
            bypass_two_factor: t.bypass_two_factor,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

impl From<st::EmailCode> for m::EmailCode {
    fn from(c: st::EmailCode) -> Self {
        m::EmailCode {
            code_hash: c.code_hash,
            salt: c.salt,
            expires_at: c.expires_at,
            attempts: c.attempts,
        }
    }
}

impl From<st::FactorProof> for m::FactorProof {
    fn from(p: st::FactorProof) -> Self {
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
            reply: p.reply.map(|w| m::IdempotentWrite {
                presented_hashed_token: w.presented_hashed_token,
                key: w.key,
                body_hash: w.body_hash,
                sealed_reply: w.sealed_reply,
                created_at: w.created_at,
                forget_before: w.forget_before,
            }),
            events: p.events.into_iter().map(m::AuditEvent::from).collect(),
        }
    }
}

/// The same variant, by name, from one enum to its mirror.
macro_rules! same_variant {
    ($v:expr, $from:path => $to:path; $($name:ident),*) => {{
        use $from as F;
        use $to as T;
        match $v { $(F::$name => T::$name),* }
    }};
}

// Each audit enum, both ways (events come in with writes, go out in pages).
fn kind_from_wit(k: st::AuditKind) -> m::AuditKind {
    same_variant!(k, st::AuditKind => m::AuditKind; LoginSucceeded, LoginFailed, LoginBlocked, LoggedOut, TokenGenerated, TokenRegenerated, TokenRemoved, TokenExpiredOnUse, TokenRevokedOnReuse, TwoFactorPassed, TwoFactorWrongCode, TwoFactorLockedOut)
}

fn kind_to_wit(k: m::AuditKind) -> st::AuditKind {
    same_variant!(k, m::AuditKind => st::AuditKind; LoginSucceeded, LoginFailed, LoginBlocked, LoggedOut, TokenGenerated, TokenRegenerated, TokenRemoved, TokenExpiredOnUse, TokenRevokedOnReuse, TwoFactorPassed, TwoFactorWrongCode, TwoFactorLockedOut)
}

impl From<st::AuditFilter> for m::AuditFilter {
    fn from(f: st::AuditFilter) -> Self {
        m::AuditFilter {
            account: f.account,
            since: f.since,
            kind: f.kind.map(kind_from_wit),
        }
    }
}

impl From<m::AuditPage> for st::AuditPage {
    fn from(p: m::AuditPage) -> Self {
        st::AuditPage {
            total: p.total,
            events: p
                .events
                .into_iter()
                .map(|s| st::StoredAuditEvent {
                    event: st::AuditEvent {
                        at: s.event.at,
                        account: s.event.account,
                        kind: kind_to_wit(s.event.kind),
                        token_name: s.event.token_name,
                        token_last_part: s.event.token_last_part,
                        method: s.event.method.map(|m| same_variant!(m, m::TwoFactorMethod => st::TwoFactorMethod; Totp, BackupCode, Email, Password, Remembered, Bypass)),
                        client_address: s.event.client_address,
                        user_agent: s.event.user_agent,
                    },
                    host_id: s.host_id,
                    count: s.count,
                })
                .collect(),
        }
    }
}

impl From<st::AuditEvent> for m::AuditEvent {
    fn from(e: st::AuditEvent) -> Self {
        m::AuditEvent {
            at: e.at,
            account: e.account,
            kind: kind_from_wit(e.kind),
            token_name: e.token_name,
            token_last_part: e.token_last_part,
            method: e.method.map(|m| same_variant!(m, st::TwoFactorMethod => m::TwoFactorMethod; Totp, BackupCode, Email, Password, Remembered, Bypass)),
            client_address: e.client_address,
            user_agent: e.user_agent,
        }
    }
}

impl From<m::IdempotentReply> for st::IdempotentReply {
    fn from(r: m::IdempotentReply) -> Self {
        st::IdempotentReply {
            body_hash: r.body_hash,
            sealed_reply: r.sealed_reply,
        }
    }
}

impl From<m::KeyReservation> for st::KeyReservation {
    fn from(r: m::KeyReservation) -> Self {
        match r {
            m::KeyReservation::Reserved => st::KeyReservation::Reserved,
            m::KeyReservation::InFlight => st::KeyReservation::InFlight,
            m::KeyReservation::Kept(kept) => st::KeyReservation::Kept(kept.into()),
        }
    }
}

impl From<m::WriteOutcome> for st::WriteOutcome {
    fn from(o: m::WriteOutcome) -> Self {
        match o {
            m::WriteOutcome::Done => st::WriteOutcome::Done,
            m::WriteOutcome::NotFound => st::WriteOutcome::NotFound,
            m::WriteOutcome::NameTaken => st::WriteOutcome::NameTaken,
            m::WriteOutcome::FactorAlreadyUsed => st::WriteOutcome::FactorAlreadyUsed,
            m::WriteOutcome::CredentialsRevoked => st::WriteOutcome::CredentialsRevoked,
            m::WriteOutcome::ReplyKept => st::WriteOutcome::ReplyKept,
        }
    }
}

impl From<m::AttemptReservation> for st::AttemptReservation {
    fn from(r: m::AttemptReservation) -> Self {
        st::AttemptReservation {
            granted: r.granted,
            failures: r.failures.into(),
            email_code_attempts: r.email_code_attempts,
        }
    }
}

impl From<st::LoginLimits> for m::LoginLimits {
    fn from(l: st::LoginLimits) -> Self {
        m::LoginLimits {
            max_per_account: l.max_per_account,
            account_block_ms: l.account_block_ms,
            max_per_address: l.max_per_address,
            address_block_ms: l.address_block_ms,
            known_address_ms: l.known_address_ms,
        }
    }
}

impl From<m::LoginAdmission> for st::LoginAdmission {
    fn from(a: m::LoginAdmission) -> Self {
        match a {
            m::LoginAdmission::Admitted => st::LoginAdmission::Admitted,
            m::LoginAdmission::AccountBlocked => st::LoginAdmission::AccountBlocked,
            m::LoginAdmission::AddressBlocked => st::LoginAdmission::AddressBlocked,
        }
    }
}

impl From<m::BackupCodeState> for st::BackupCodeState {
    fn from(s: m::BackupCodeState) -> Self {
        match s {
            m::BackupCodeState::Unused => st::BackupCodeState::Unused,
            m::BackupCodeState::Spent => st::BackupCodeState::Spent,
            m::BackupCodeState::Unknown => st::BackupCodeState::Unknown,
        }
    }
}

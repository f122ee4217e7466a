//! Every conversion between the generated WIT types and the model, as `From`
//! impls: the only place that knows both shapes (the host has its mirror in
//! `host-example/src/conversions.rs`).

use super::ep;
use super::st;
use crate::model as m;

impl From<&ep::Settings> for m::Settings {
    fn from(s: &ep::Settings) -> Self {
        crate::copy_settings!(s => m::Settings {})
    }
}

/// The defaults as the component exports them; each host adds its own key.
impl From<m::Settings> for ep::Settings {
    fn from(s: m::Settings) -> Self {
        crate::copy_settings!(s => ep::Settings { code_key: Vec::new() })
    }
}

impl From<ep::Request> for m::Request {
    fn from(r: ep::Request) -> Self {
        m::Request {
            headers: r
                .headers
                .into_iter()
                .map(|h| m::Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            client_address: r.client_address,
            body: r.body,
            query: r.query,
        }
    }
}

impl From<m::Response> for ep::Response {
    fn from(r: m::Response) -> Self {
        ep::Response {
            status: r.status,
            body: r.body,
            events: r
                .events
                .into_iter()
                .map(|e| match e {
                    m::SecurityEvent::SupersededTokenReused(name) => {
                        ep::SecurityEvent::SupersededTokenReused(name)
                    }
                })
                .collect(),
        }
    }
}

impl From<st::SupersededToken> for m::SupersededToken {
    fn from(t: st::SupersededToken) -> Self {
        m::SupersededToken {
            name: t.name,
            superseded_at: t.superseded_at,
        }
    }
}

impl From<st::RevokedToken> for m::RevokedToken {
    fn from(t: st::RevokedToken) -> Self {
        m::RevokedToken {
            name: t.name,
            verified_emails: t.verified_emails,
        }
    }
}

impl From<st::Session> for m::Session {
    fn from(s: st::Session) -> Self {
        m::Session {
            user: s.user.into(),
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
                last_used_at: s.token.last_used_at,
                expires_at: s.token.expires_at,
            },
            permitted: s.permitted,
        }
    }
}

impl From<st::User> for m::User {
    fn from(u: st::User) -> Self {
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
                has_backup_codes: t.has_backup_codes,
            }),
            email_two_factor: u.email_two_factor,
            email_code: u.email_code.map(|c| m::EmailCode {
                code_hash: c.code_hash,
                salt: c.salt,
                expires_at: c.expires_at,
                attempts: c.attempts,
            }),
            failures: u.failures.into(),
        }
    }
}

impl From<st::FailureCount> for m::FailureCount {
    fn from(f: st::FailureCount) -> Self {
        m::FailureCount {
            count: f.count,
            last_failed_at: f.last_failed_at,
        }
    }
}

impl From<&m::LoginIdentifier> for st::LoginIdentifier {
    fn from(id: &m::LoginIdentifier) -> Self {
        match id {
            m::LoginIdentifier::Username(u) => st::LoginIdentifier::Username(u.clone()),
            m::LoginIdentifier::Email(e) => st::LoginIdentifier::Email(e.clone()),
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

impl From<&m::PersonalAccessToken> for st::PersonalAccessToken {
    fn from(t: &m::PersonalAccessToken) -> Self {
        st::PersonalAccessToken {
            name: t.name.clone(),
            hashed_token: t.hashed_token.clone(),
            last_token_part: t.last_token_part.clone(),
            created_at: t.created_at,
            bypass_two_factor: t.bypass_two_factor,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

impl From<&m::EmailCode> for st::EmailCode {
    fn from(c: &m::EmailCode) -> Self {
        st::EmailCode {
            code_hash: c.code_hash.clone(),
            salt: c.salt.clone(),
            expires_at: c.expires_at,
            attempts: c.attempts,
        }
    }
}

impl From<&m::FactorProof> for st::FactorProof {
    fn from(p: &m::FactorProof) -> Self {
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
            reply: p.reply.as_ref().map(|w| st::IdempotentWrite {
                presented_hashed_token: w.presented_hashed_token.clone(),
                key: w.key.clone(),
                body_hash: w.body_hash.clone(),
                sealed_reply: w.sealed_reply.clone(),
                created_at: w.created_at,
                forget_before: w.forget_before,
            }),
            events: p.events.iter().map(st::AuditEvent::from).collect(),
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

// Each audit enum, both ways (events go out in writes, come back in pages).
fn kind_to_wit(k: m::AuditKind) -> st::AuditKind {
    same_variant!(k, m::AuditKind => st::AuditKind; LoginSucceeded, LoginFailed, LoginBlocked, LoggedOut, TokenGenerated, TokenRegenerated, TokenRemoved, TokenExpiredOnUse, TokenRevokedOnReuse, TwoFactorPassed, TwoFactorWrongCode, TwoFactorLockedOut)
}

fn kind_from_wit(k: st::AuditKind) -> m::AuditKind {
    same_variant!(k, st::AuditKind => m::AuditKind; LoginSucceeded, LoginFailed, LoginBlocked, LoggedOut, TokenGenerated, TokenRegenerated, TokenRemoved, TokenExpiredOnUse, TokenRevokedOnReuse, TwoFactorPassed, TwoFactorWrongCode, TwoFactorLockedOut)
}

impl From<&m::AuditFilter> for st::AuditFilter {
    fn from(f: &m::AuditFilter) -> Self {
        st::AuditFilter {
            account: f.account.clone(),
            since: f.since,
            kind: f.kind.map(kind_to_wit),
        }
    }
}

impl From<st::AuditPage> for m::AuditPage {
    fn from(p: st::AuditPage) -> Self {
        m::AuditPage {
            total: p.total,
            events: p
                .events
                .into_iter()
                .map(|s| m::StoredAuditEvent {
                    event: m::AuditEvent {
                        at: s.event.at,
                        account: s.event.account,
                        kind: kind_from_wit(s.event.kind),
                        token_name: s.event.token_name,
                        token_last_part: s.event.token_last_part,
                        method: s.event.method.map(|m| same_variant!(m, st::TwoFactorMethod => m::TwoFactorMethod; Totp, BackupCode, Email, Password, Remembered, Bypass)),
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

impl From<&m::AuditEvent> for st::AuditEvent {
    fn from(e: &m::AuditEvent) -> Self {
        st::AuditEvent {
            at: e.at,
            account: e.account.clone(),
            kind: kind_to_wit(e.kind),
            token_name: e.token_name.clone(),
            token_last_part: e.token_last_part.clone(),
            method: e.method.map(|m| same_variant!(m, m::TwoFactorMethod => st::TwoFactorMethod; Totp, BackupCode, Email, Password, Remembered, Bypass)),
            client_address: e.client_address.clone(),
            user_agent: e.user_agent.clone(),
        }
    }
}

impl From<st::IdempotentReply> for m::IdempotentReply {
    fn from(r: st::IdempotentReply) -> Self {
        m::IdempotentReply {
            body_hash: r.body_hash,
            sealed_reply: r.sealed_reply,
        }
    }
}

impl From<st::WriteOutcome> for m::WriteOutcome {
    fn from(o: st::WriteOutcome) -> Self {
        match o {
            st::WriteOutcome::Done => m::WriteOutcome::Done,
            st::WriteOutcome::NotFound => m::WriteOutcome::NotFound,
            st::WriteOutcome::NameTaken => m::WriteOutcome::NameTaken,
            st::WriteOutcome::FactorAlreadyUsed => m::WriteOutcome::FactorAlreadyUsed,
            st::WriteOutcome::CredentialsRevoked => m::WriteOutcome::CredentialsRevoked,
            st::WriteOutcome::ReplyKept => m::WriteOutcome::ReplyKept,
        }
    }
}

impl From<st::KeyReservation> for m::KeyReservation {
    fn from(r: st::KeyReservation) -> Self {
        match r {
            st::KeyReservation::Reserved => m::KeyReservation::Reserved,
            st::KeyReservation::InFlight => m::KeyReservation::InFlight,
            st::KeyReservation::Kept(kept) => m::KeyReservation::Kept(kept.into()),
        }
    }
}

impl From<st::AttemptReservation> for m::AttemptReservation {
    fn from(r: st::AttemptReservation) -> Self {
        m::AttemptReservation {
            granted: r.granted,
            failures: r.failures.into(),
            email_code_attempts: r.email_code_attempts,
        }
    }
}

impl From<&m::LoginLimits> for st::LoginLimits {
    fn from(l: &m::LoginLimits) -> Self {
        st::LoginLimits {
            max_per_account: l.max_per_account,
            account_block_ms: l.account_block_ms,
            max_per_address: l.max_per_address,
            address_block_ms: l.address_block_ms,
            known_address_ms: l.known_address_ms,
        }
    }
}

impl From<st::LoginAdmission> for m::LoginAdmission {
    fn from(a: st::LoginAdmission) -> Self {
        match a {
            st::LoginAdmission::Admitted => m::LoginAdmission::Admitted,
            st::LoginAdmission::AccountBlocked => m::LoginAdmission::AccountBlocked,
            st::LoginAdmission::AddressBlocked => m::LoginAdmission::AddressBlocked,
        }
    }
}

impl From<&m::MailMessage> for super::mail::Message {
    fn from(message: &m::MailMessage) -> Self {
        super::mail::Message {
            to: message.to.clone(),
            subject: message.subject.clone(),
            text: message.text.clone(),
        }
    }
}

impl From<st::BackupCodeState> for m::BackupCodeState {
    fn from(s: st::BackupCodeState) -> Self {
        match s {
            st::BackupCodeState::Unused => m::BackupCodeState::Unused,
            st::BackupCodeState::Spent => m::BackupCodeState::Spent,
            st::BackupCodeState::Unknown => m::BackupCodeState::Unknown,
        }
    }
}

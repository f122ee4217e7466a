//! Plain Rust mirrors of the WIT records (`wit/world.wit`).
//!
//! The logic works on these types so that it compiles and runs natively as
//! well as inside the component; `component.rs` (guest) and the host's
//! bindings convert between them and the generated WIT types.

/// Milliseconds since the Unix epoch (UTC).
pub type TimestampMs = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotpEnrolment {
    pub secret: String,
    pub algorithm: TotpAlgorithm,
    pub digits: u8,
    pub period: u32,
    pub last_used_step: u64,
    /// Whether backup codes were issued (see `Storage::find_backup_code`).
    pub has_backup_codes: bool,
}

/// Where one of a user's hashed backup codes stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupCodeState {
    Unused,
    /// Used already (a replay is recognised as such, not counted as a guess).
    Spent,
    Unknown,
}

impl BackupCodeState {
    /// From a stored code's `spent` flag (none: no such code), as SQL stores keep it.
    pub fn of_stored(spent: Option<bool>) -> Self {
        match spent {
            Some(false) => BackupCodeState::Unused,
            Some(true) => BackupCodeState::Spent,
            None => BackupCodeState::Unknown,
        }
    }
}

/// A user's hashed backup codes, as they are enrolled and as stores that
/// hold them as lists (memory, the fuzz store) keep them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupCodes {
    pub unused: Vec<String>,
    pub spent: Vec<String>,
}

impl BackupCodes {
    pub fn state(&self, hashed: &str) -> BackupCodeState {
        if self.unused.iter().any(|c| c == hashed) {
            BackupCodeState::Unused
        } else if self.spent.iter().any(|c| c == hashed) {
            BackupCodeState::Spent
        } else {
            BackupCodeState::Unknown
        }
    }

    /// Moves an unused code to the spent ones (nothing if it is not unused).
    pub fn spend(&mut self, hashed: &str) {
        if let Some(i) = self.unused.iter().position(|c| c == hashed) {
            self.spent.push(self.unused.remove(i));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.unused.is_empty() && self.spent.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailCode {
    pub code_hash: String,
    pub salt: String,
    pub expires_at: TimestampMs,
    pub attempts: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCount {
    pub count: u32,
    pub last_failed_at: TimestampMs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Login,
    PersonalAccessToken,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginToken {
    pub hashed_token: String,
    pub kind: TokenKind,
    /// The PAT's name; `None` for a session token.
    pub name: Option<String>,
    pub created_at: TimestampMs,
    pub bypass_two_factor: bool,
    pub two_factor_authorized_hash: Option<String>,
    pub two_factor_authorized_until: Option<TimestampMs>,
    /// When a PAT last authenticated a request (throttled; see `storage`).
    pub last_used_at: Option<TimestampMs>,
    /// When a PAT stops authenticating (`None`: never; always `None` for a session).
    pub expires_at: Option<TimestampMs>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: TimestampMs,
    pub verified_emails: Vec<String>,
    pub password_bcrypt: Option<String>,
    pub totp: Option<TotpEnrolment>,
    pub email_two_factor: bool,
    pub email_code: Option<EmailCode>,
    pub failures: FailureCount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginIdentifier {
    Username(String),
    Email(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub token: LoginToken,
    /// Whether the user holds the permission `authenticate` was asked about.
    pub permitted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonalAccessToken {
    pub name: String,
    pub hashed_token: String,
    pub last_token_part: String,
    pub created_at: TimestampMs,
    pub bypass_two_factor: bool,
    pub last_used_at: Option<TimestampMs>,
    /// From then on it answers 401 (`None`: never expires).
    pub expires_at: Option<TimestampMs>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FactorUse {
    None,
    TotpStep(u64),
    BackupCode(String),
    EmailCode(String),
    Password,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RememberGrant {
    pub hashed_login_token: String,
    pub fingerprint: String,
    pub until: TimestampMs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorProof {
    pub session: Option<String>,
    pub used: FactorUse,
    pub remember: Option<RememberGrant>,
    /// The reply to keep for retries (the request carried `Idempotency-Key`).
    pub reply: Option<IdempotentWrite>,
    /// The audit trail's events for the write's change, stored with it.
    pub events: Vec<AuditEvent>,
}

/// `audit-kind`: what an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    LoginSucceeded,
    LoginFailed,
    LoginBlocked,
    LoggedOut,
    TokenGenerated,
    TokenRegenerated,
    TokenRemoved,
    TokenExpiredOnUse,
    TokenRevokedOnReuse,
    TwoFactorPassed,
    TwoFactorWrongCode,
    TwoFactorLockedOut,
}

/// `two-factor-method`, as an audit event names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TwoFactorMethod {
    Totp,
    BackupCode,
    Email,
    Password,
    Remembered,
    Bypass,
}

impl AuditKind {
    /// The WIT name, as stores keep it.
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login-succeeded",
            AuditKind::LoginFailed => "login-failed",
            AuditKind::LoginBlocked => "login-blocked",
            AuditKind::LoggedOut => "logged-out",
            AuditKind::TokenGenerated => "token-generated",
            AuditKind::TokenRegenerated => "token-regenerated",
            AuditKind::TokenRemoved => "token-removed",
            AuditKind::TokenExpiredOnUse => "token-expired-on-use",
            AuditKind::TokenRevokedOnReuse => "token-revoked-on-reuse",
            AuditKind::TwoFactorPassed => "two-factor-passed",
            AuditKind::TwoFactorWrongCode => "two-factor-wrong-code",
            AuditKind::TwoFactorLockedOut => "two-factor-locked-out",
        }
    }
}

impl AuditKind {
    /// Kinds a flood could repeat without bound (a refusal changes nothing
    /// else): stores count them per account, address and minute.
    pub fn aggregated(self) -> bool {
        matches!(
            self,
            AuditKind::LoginFailed
                | AuditKind::LoginBlocked
                | AuditKind::TwoFactorLockedOut
                | AuditKind::TokenExpiredOnUse
        )
    }

    pub const ALL: [AuditKind; 12] = [
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::LoginBlocked,
        AuditKind::LoggedOut,
        AuditKind::TokenGenerated,
        AuditKind::TokenRegenerated,
        AuditKind::TokenRemoved,
        AuditKind::TokenExpiredOnUse,
        AuditKind::TokenRevokedOnReuse,
        AuditKind::TwoFactorPassed,
        AuditKind::TwoFactorWrongCode,
        AuditKind::TwoFactorLockedOut,
    ];

    /// The kind a stored name names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl TwoFactorMethod {
    pub const ALL: [TwoFactorMethod; 6] = [
        TwoFactorMethod::Totp,
        TwoFactorMethod::BackupCode,
        TwoFactorMethod::Email,
        TwoFactorMethod::Password,
        TwoFactorMethod::Remembered,
        TwoFactorMethod::Bypass,
    ];

    /// The method a stored name names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether a factor was checked (a code or the password), rather than
    /// excused (a bypass token, a remembered client).
    pub fn is_checked(self) -> bool {
        !matches!(self, TwoFactorMethod::Remembered | TwoFactorMethod::Bypass)
    }

    /// The WIT name, as stores keep it.
    pub fn name(self) -> &'static str {
        match self {
            TwoFactorMethod::Totp => "totp",
            TwoFactorMethod::BackupCode => "backup-code",
            TwoFactorMethod::Email => "email",
            TwoFactorMethod::Password => "password",
            TwoFactorMethod::Remembered => "remembered",
            TwoFactorMethod::Bypass => "bypass",
        }
    }
}

/// `audit-event`: one entry of the audit trail (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: TimestampMs,
    pub account: String,
    pub kind: AuditKind,
    pub token_name: Option<String>,
    pub token_last_part: Option<String>,
    pub method: Option<TwoFactorMethod>,
    pub client_address: String,
    pub user_agent: String,
}

/// `audit-filter`: which events `list-audit-events` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub account: Option<String>,
    pub since: Option<TimestampMs>,
    pub kind: Option<AuditKind>,
}

impl AuditFilter {
    /// Whether `e` passes every condition (for stores that filter in memory).
    pub fn admits(&self, e: &AuditEvent) -> bool {
        self.account.as_ref().is_none_or(|a| *a == e.account)
            && self.since.is_none_or(|s| e.at >= s)
            && self.kind.is_none_or(|k| k == e.kind)
    }
}

/// `stored-audit-event`: an event with the host that stored it and its count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditEvent {
    pub event: AuditEvent,
    pub host_id: String,
    pub count: u32,
}

/// `audit-page`: one page of the audit trail, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub total: u32,
    pub events: Vec<StoredAuditEvent>,
}

/// A reply kept for retries of a request, stored with its write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotentWrite {
    pub presented_hashed_token: String,
    pub key: String,
    pub body_hash: String,
    pub sealed_reply: Vec<u8>,
    pub created_at: TimestampMs,
    pub forget_before: TimestampMs,
}

/// A kept reply, as found for a retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotentReply {
    pub body_hash: String,
    pub sealed_reply: Vec<u8>,
}

/// The answer of `reserve_idempotency_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyReservation {
    Reserved,
    InFlight,
    Kept(IdempotentReply),
}

impl FactorProof {
    /// The proof for a request that needed no second factor.
    pub fn none() -> Self {
        FactorProof {
            session: None,
            used: FactorUse::None,
            remember: None,
            reply: None,
            events: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    pub max_per_account: u32,
    pub account_block_ms: u64,
    pub max_per_address: u32,
    pub address_block_ms: u64,
    pub known_address_ms: u64,
}

/// How long a right password makes its client address known for the
/// account (`login-limits.known-address-ms`): 30 days.
pub const KNOWN_ADDRESS_MS: u64 = 30 * 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginAdmission {
    Admitted,
    AccountBlocked,
    AddressBlocked,
}

/// The answer of `reserve_two_factor_attempt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptReservation {
    pub granted: bool,
    pub failures: FailureCount,
    pub email_code_attempts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Done,
    NotFound,
    NameTaken,
    FactorAlreadyUsed,
    CredentialsRevoked,
    ReplyKept,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailMessage {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub headers: Vec<Header>,
    pub client_address: String,
    pub body: Vec<u8>,
    /// The query string without its `?` (only the audit route reads it).
    pub query: String,
}

impl Request {
    /// Convenience for hosts and tests: headers given as text.
    pub fn new(headers: &[(&str, &str)], body: &[u8]) -> Self {
        Request {
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            client_address: "127.0.0.1".to_string(),
            body: body.to_vec(),
            query: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// What the reply does not show, for the host's log and metrics.
    pub events: Vec<SecurityEvent>,
}

impl Response {
    /// A reply with no security event.
    pub fn new(status: u16, body: String) -> Self {
        Response {
            status,
            body,
            events: Vec::new(),
        }
    }
}

/// `security-event`: what a reply hides from the client but the host logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A superseded value of the PAT with this name came back; its family was revoked.
    SupersededTokenReused(String),
}

/// `superseded-token`: a kept superseded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupersededToken {
    pub name: String,
    pub superseded_at: TimestampMs,
}

/// `revoked-token`: what reuse detection removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedToken {
    pub name: String,
    pub verified_emails: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub two_factor_enabled: bool,
    pub totp_enabled: bool,
    pub email_enabled: bool,
    pub totp_max_delta: u32,
    pub email_code_expiration_seconds: u32,
    pub email_code_max_attempts: u32,
    pub enforce_password_fallback: bool,
    pub remember_for_seconds: u32,
    pub max_failed_attempts: u32,
    pub failed_attempts_window_seconds: u32,
    pub login_expiration_days: u32,
    pub max_failed_logins_per_user: u32,
    pub user_login_block_minutes: u32,
    pub max_failed_logins_per_address: u32,
    pub address_login_block_minutes: u32,
    pub bypass_tokens_unrestricted: bool,
    pub show_token_last_use: bool,
    /// `token-prefix`: empty for Rocket.Chat's plain tokens.
    pub token_prefix: crate::token::TokenPrefix,
    /// Longest PAT lifetime in days; 0: none (Rocket.Chat's tokens never expire).
    pub max_token_lifetime_days: u32,
    /// Hours a reply is kept for `Idempotency-Key` retries; 0: the header is ignored.
    pub idempotency_key_hours: u32,
    /// Whether a superseded PAT value that comes back revokes its family.
    pub reuse_detection: bool,
    /// Days a superseded value is kept for reuse detection.
    pub superseded_token_retention_days: u32,
    /// Seconds after its replacement during which a superseded value is
    /// only an unknown token (requests already in flight with it).
    pub superseded_token_grace_seconds: u32,
}

/// Builds a `$to` from every setting of `$from`, plus `$extra` fields: the
/// one list of the settings' fields, for the WIT conversions on both sides
/// (the generated `settings` records use the same field names; the WIT one
/// adds the host's `code_key`).
#[macro_export]
macro_rules! copy_settings {
    ($from:expr => $to:path { $($extra:tt)* }) => {{
        let s = $from;
        $to {
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
            show_token_last_use: s.show_token_last_use,
            // A string in WIT, a checked value in the model.
            token_prefix: ::core::convert::Into::into(::core::clone::Clone::clone(&s.token_prefix)),
            max_token_lifetime_days: s.max_token_lifetime_days,
            idempotency_key_hours: s.idempotency_key_hours,
            reuse_detection: s.reuse_detection,
            superseded_token_retention_days: s.superseded_token_retention_days,
            superseded_token_grace_seconds: s.superseded_token_grace_seconds,
            $($extra)*
        }
    }};
}

impl Settings {
    /// The login limits as storage applies them.
    pub fn login_limits(&self) -> LoginLimits {
        LoginLimits {
            max_per_account: self.max_failed_logins_per_user,
            account_block_ms: u64::from(self.user_login_block_minutes) * 60_000,
            max_per_address: self.max_failed_logins_per_address,
            address_block_ms: u64::from(self.address_login_block_minutes) * 60_000,
            known_address_ms: KNOWN_ADDRESS_MS,
        }
    }
}

impl Default for Settings {
    /// Rocket.Chat's defaults, except remember-me (off here), the per-user
    /// failure limit (Rocket.Chat has none outside email codes) and bypass
    /// tokens, which here cannot mint or manage other tokens without a real
    /// second factor.
    fn default() -> Self {
        Settings {
            two_factor_enabled: true,
            totp_enabled: true,
            email_enabled: true,
            totp_max_delta: 1,
            email_code_expiration_seconds: 3600,
            email_code_max_attempts: 5,
            enforce_password_fallback: true,
            remember_for_seconds: 0,
            max_failed_attempts: 10,
            failed_attempts_window_seconds: 900,
            login_expiration_days: 90,
            max_failed_logins_per_user: 10,
            user_login_block_minutes: 5,
            max_failed_logins_per_address: 50,
            address_login_block_minutes: 5,
            bypass_tokens_unrestricted: false,
            show_token_last_use: false,
            token_prefix: crate::token::TokenPrefix::default(),
            max_token_lifetime_days: 0,
            idempotency_key_hours: 24,
            reuse_detection: true,
            superseded_token_retention_days: 30,
            superseded_token_grace_seconds: 10,
        }
    }
}

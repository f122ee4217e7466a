//! The second-factor check (Rocket.Chat's `checkCodeForUser`, reference R3),
//! with the hardening the issue asks for: single-use TOTP steps, a per-user
//! limit on wrong codes for every method, strict code formats and
//! constant-time comparisons.
//!
//! A passed check spends nothing itself: it returns a [`FactorProof`] that the
//! storage write of the endpoint spends in the same transaction, so a failure
//! anywhere leaves stored state untouched.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::env::Env;
use crate::model::*;
use crate::reply::{ApiError, TwoFactorDetails, TwoFactorFailure};
use crate::request::Headers;
use crate::time::iso8601;
use crate::token::{secret_eq, sha256_hex};
use crate::totp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Totp,
    Email,
    Password,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Email => "email",
            Method::Password => "password",
        }
    }
}

/// Backup codes: Meteor's `Random.id(8)` alphabet.
const BACKUP_ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";
const BACKUP_CODE_LEN: usize = 8;
const EMAIL_CODE_DIGITS: usize = 6;

/// A passed check: what the endpoint's write must spend, and the challenge
/// details to answer with should another request spend the code first.
pub struct Passed {
    pub proof: FactorProof,
    pub details: Option<TwoFactorDetails>,
}

impl Passed {
    fn without_factor() -> Self {
        Passed {
            proof: FactorProof::none(),
            details: None,
        }
    }

    /// The reply when the write finds the factor already spent.
    pub fn spent_error(self) -> ApiError {
        let details = self.details.unwrap_or(TwoFactorDetails {
            method: "totp",
            email_or_username: None,
            code_generated: false,
            code_expires: None,
            available_methods: Vec::new(),
        });
        ApiError::TwoFactor(TwoFactorFailure::Invalid, details)
    }
}

/// What a request offers for the check.
pub struct Attempt<'a> {
    /// The code (`x-2fa-code`, or a login body's `code`).
    pub code: Option<&'a str>,
    /// `x-2fa-method`.
    pub method: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub client_address: &'a str,
    /// The stored token the request authenticated with (none for a login).
    pub token: Option<&'a LoginToken>,
    /// Whether users without TOTP/email must give their password (not at
    /// login, where the password was just checked).
    pub password_fallback: bool,
}

impl<'a> Attempt<'a> {
    /// The attempt of an authenticated request.
    pub fn of_request(
        headers: &'a Headers,
        token: &'a LoginToken,
        client_address: &'a str,
    ) -> Self {
        Attempt {
            code: headers.two_factor_code.as_deref(),
            method: headers.two_factor_method.as_deref(),
            user_agent: headers.user_agent.as_deref(),
            client_address,
            token: Some(token),
            password_fallback: true,
        }
    }
}

/// Runs the check. `Err` is the reply (challenge or failure). The proof
/// also names the token the request authenticated with, so the write can
/// re-check that it still exists.
pub fn check(
    env: &mut dyn Env,
    settings: &Settings,
    user: &mut User,
    attempt: &Attempt,
) -> Result<Passed, ApiError> {
    let mut passed = check_code(env, settings, user, attempt)?;
    passed.proof.session = attempt.token.map(|t| t.hashed_token.clone());
    Ok(passed)
}

fn check_code(
    env: &mut dyn Env,
    settings: &Settings,
    user: &mut User,
    attempt: &Attempt,
) -> Result<Passed, ApiError> {
    if !settings.two_factor_enabled || attempt.token.is_some_and(|t| t.bypass_two_factor) {
        return Ok(Passed::without_factor());
    }
    let now = env.now_ms();
    let fingerprint = fingerprint(attempt.user_agent, attempt.client_address);
    let enabled = enabled_methods(settings, user);
    let remembered = match attempt.token {
        Some(token) if settings.remember_for_seconds > 0 => {
            is_remembered(settings, user, token, &fingerprint, now, &enabled)
        }
        _ => false,
    };
    if remembered {
        return Ok(Passed::without_factor());
    }

    let fallback = attempt.password_fallback && settings.enforce_password_fallback;
    let Some(method) = select_method(fallback, user, attempt.method, &enabled)? else {
        // No method for this user: Rocket.Chat lets the request through.
        return Ok(Passed::without_factor());
    };
    let available: Vec<&'static str> = enabled.iter().map(|m| m.name()).collect();
    let locked = is_locked(settings, user.failures, now);

    // Rocket.Chat computes the challenge data before looking at the code; for
    // email that may mail a fresh code. A locked user gets no new mail.
    let mut details = TwoFactorDetails {
        method: method.name(),
        email_or_username: None,
        code_generated: false,
        code_expires: None,
        available_methods: available,
    };
    if method == Method::Email {
        prepare_email_code(env, settings, user, now, locked, &mut details)?;
    }

    let code = attempt.code.unwrap_or("");
    if code.is_empty() {
        return Err(ApiError::TwoFactor(TwoFactorFailure::Required, details));
    }
    if locked {
        return Err(ApiError::TwoFactor(TwoFactorFailure::MaxAttempts, details));
    }

    match verify(settings, user, method, code, now) {
        Some(used) => {
            let remember = attempt
                .token
                .filter(|_| settings.remember_for_seconds > 0)
                .map(|token| RememberGrant {
                    hashed_login_token: token.hashed_token.clone(),
                    fingerprint,
                    until: now + u64::from(settings.remember_for_seconds) * 1000,
                });
            Ok(Passed {
                proof: FactorProof {
                    session: None,
                    used,
                    remember,
                },
                details: Some(details),
            })
        }
        None => {
            let email_attempt = method == Method::Email && user.email_code.is_some();
            let window_start = now.saturating_sub(window_ms(settings));
            let failures = env
                .record_two_factor_failure(&user.id, now, window_start, email_attempt)
                .map_err(|_| ApiError::StorageFailure)?;
            let email_exhausted = email_attempt
                && user
                    .email_code
                    .as_ref()
                    .is_some_and(|c| c.attempts + 1 >= settings.email_code_max_attempts);
            let kind = if email_exhausted || failures.count >= settings.max_failed_attempts {
                TwoFactorFailure::MaxAttempts
            } else {
                TwoFactorFailure::Invalid
            };
            Err(ApiError::TwoFactor(kind, details))
        }
    }
}

/// The factor a verified code spends, or `None` when the code is wrong.
fn verify(
    settings: &Settings,
    user: &User,
    method: Method,
    code: &str,
    now: TimestampMs,
) -> Option<FactorUse> {
    match method {
        Method::Totp => verify_totp(settings, user.totp.as_ref()?, code, now),
        Method::Email => verify_email(user.email_code.as_ref()?, code, now),
        Method::Password => verify_password(user.password_bcrypt.as_deref()?, code),
    }
}

fn verify_totp(
    settings: &Settings,
    totp: &TotpEnrolment,
    code: &str,
    now: TimestampMs,
) -> Option<FactorUse> {
    // An 8-character code is a backup code whenever the user has any
    // (Rocket.Chat's rule); an 8-digit TOTP enrolment may still use it as TOTP.
    if code.len() == BACKUP_CODE_LEN && !totp.hashed_backup_codes.is_empty() {
        if code.chars().all(|c| BACKUP_ALPHABET.contains(c)) {
            let hashed = sha256_hex(code.as_bytes());
            let mut hit = false;
            for stored in &totp.hashed_backup_codes {
                hit |= secret_eq(stored.as_bytes(), hashed.as_bytes());
            }
            if hit {
                return Some(FactorUse::BackupCode(hashed));
            }
        }
        if totp.digits as usize != BACKUP_CODE_LEN {
            return None;
        }
    }
    if code.len() != usize::from(totp.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let key = totp::decode_secret(&totp.secret)?;
    let now_step = totp::step_at(now / 1000, totp.period);
    totp::matching_step(
        &key,
        code,
        totp.digits,
        totp.algorithm,
        now_step,
        settings.totp_max_delta,
        totp.last_used_step,
    )
    .map(FactorUse::TotpStep)
}

fn verify_email(stored: &EmailCode, code: &str, now: TimestampMs) -> Option<FactorUse> {
    // Exactly six digits, or the `123-456` form the email shows.
    let digits: String = match code.as_bytes() {
        [a, b, c, b'-', d, e, f] => [*a, *b, *c, *d, *e, *f]
            .iter()
            .map(|&x| x as char)
            .collect(),
        _ => code.to_string(),
    };
    if digits.len() != EMAIL_CODE_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || now >= stored.expires_at
    {
        return None;
    }
    let hashed = email_code_hash(&stored.salt, &digits)?;
    secret_eq(hashed.as_bytes(), stored.code_hash.as_bytes())
        .then_some(FactorUse::EmailCode(hashed))
}

fn verify_password(bcrypt_hash: &str, code: &str) -> Option<FactorUse> {
    // The code is the hex SHA-256 of the password; Rocket.Chat lower-cases it.
    if code.len() != 64 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    bcrypt::verify(code.to_ascii_lowercase(), bcrypt_hash)
        .unwrap_or(false)
        .then_some(FactorUse::Password)
}

/// HMAC-SHA-256 of the digits keyed with the hex salt, as lowercase hex.
pub fn email_code_hash(salt_hex: &str, digits: &str) -> Option<String> {
    let salt = hex::decode(salt_hex).ok()?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&salt).ok()?;
    mac.update(digits.as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Enabled methods, in Rocket.Chat's order: TOTP, then email.
fn enabled_methods(settings: &Settings, user: &User) -> Vec<Method> {
    let mut methods = Vec::with_capacity(2);
    if settings.totp_enabled && user.totp.is_some() {
        methods.push(Method::Totp);
    }
    if settings.email_enabled && user.email_two_factor && !user.verified_emails.is_empty() {
        methods.push(Method::Email);
    }
    methods
}

/// Rocket.Chat's `getSecondFactorMethod` (R3.4): a named registered method
/// wins even when not enabled; otherwise the first enabled one; otherwise the
/// password fallback for users with a password. An unknown name is refused.
fn select_method(
    password_fallback: bool,
    user: &User,
    requested: Option<&str>,
    enabled: &[Method],
) -> Result<Option<Method>, ApiError> {
    match requested {
        Some("totp") => return Ok(Some(Method::Totp)),
        Some("email") => return Ok(Some(Method::Email)),
        None | Some("") | Some("password") => {}
        Some(_) => return Err(ApiError::InvalidTwoFactorMethod),
    }
    if let Some(first) = enabled.first() {
        return Ok(Some(*first));
    }
    Ok((password_fallback && user.password_bcrypt.is_some()).then_some(Method::Password))
}

/// Email challenge data (Rocket.Chat's `EmailCheck.processInvalidCode`):
/// reuse the outstanding code while it is unexpired and has tries left,
/// otherwise mail a new one. Mail goes out before the code is stored, so a
/// failed send leaves the stored code as it was.
fn prepare_email_code(
    env: &mut dyn Env,
    settings: &Settings,
    user: &mut User,
    now: TimestampMs,
    locked: bool,
    details: &mut TwoFactorDetails,
) -> Result<(), ApiError> {
    let email_or_username = if user.username.is_empty() {
        user.verified_emails.first().cloned().unwrap_or_default()
    } else {
        user.username.clone()
    };
    details.email_or_username = Some(email_or_username);
    let usable = user
        .email_code
        .as_ref()
        .filter(|c| now < c.expires_at && c.attempts < settings.email_code_max_attempts);
    if let Some(code) = usable {
        details.code_expires = Some(iso8601(code.expires_at));
        return Ok(());
    }
    if locked || user.verified_emails.is_empty() {
        return Ok(());
    }
    let digits = random_digits(env, EMAIL_CODE_DIGITS);
    let salt = hex::encode(env.random_bytes(16));
    let code_hash = email_code_hash(&salt, &digits).ok_or(ApiError::StorageFailure)?;
    let expires_at = now + u64::from(settings.email_code_expiration_seconds) * 1000;
    let message = MailMessage {
        to: user.verified_emails.clone(),
        subject: "Authentication code".into(),
        text: format!(
            "Here is your authentication code:\n\n{}-{}\n\nDo not provide this code to anyone.\n\
             If you did not try to sign in to your account, please ignore this email.\n",
            &digits[..3],
            &digits[3..]
        ),
    };
    env.send_mail(&message).map_err(|_| ApiError::MailFailure)?;
    let stored = EmailCode {
        code_hash,
        salt,
        expires_at,
        attempts: 0,
    };
    env.store_email_code(&user.id, &stored)
        .map_err(|_| ApiError::StorageFailure)?;
    user.email_code = Some(stored);
    details.code_generated = true;
    details.code_expires = Some(iso8601(expires_at));
    Ok(())
}

/// Uniform decimal digits by rejection sampling (bytes 250..=255 are skipped).
fn random_digits(env: &mut dyn Env, n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in env.random_bytes(n * 2) {
            if b < 250 && out.len() < n {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

fn window_ms(settings: &Settings) -> u64 {
    u64::from(settings.failed_attempts_window_seconds) * 1000
}

/// Locked while the user has used up the wrong-code allowance and the last
/// wrong code is younger than the window.
fn is_locked(settings: &Settings, failures: FailureCount, now: TimestampMs) -> bool {
    failures.count >= settings.max_failed_attempts
        && now < failures.last_failed_at.saturating_add(window_ms(settings))
}

/// Rocket.Chat's `isAuthorizedForToken` remember-me branches (R3.3), only
/// consulted when remember-me is on.
fn is_remembered(
    settings: &Settings,
    user: &User,
    token: &LoginToken,
    fingerprint: &str,
    now: TimestampMs,
    enabled: &[Method],
) -> bool {
    let remember_ms = u64::from(settings.remember_for_seconds) * 1000;
    if enabled.is_empty() && user.created_at.saturating_add(remember_ms) > now {
        return true;
    }
    match (
        &token.two_factor_authorized_hash,
        token.two_factor_authorized_until,
    ) {
        (Some(hash), Some(until)) => {
            until >= now && secret_eq(hash.as_bytes(), fingerprint.as_bytes())
        }
        _ => false,
    }
}

/// SHA-256 hex of `{"userAgent":…,"clientAddress":…}` (Rocket.Chat L3).
fn fingerprint(user_agent: Option<&str>, client_address: &str) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Client<'a> {
        user_agent: Option<&'a str>,
        client_address: &'a str,
    }
    sha256_hex(
        crate::reply::to_json(&Client {
            user_agent,
            client_address,
        })
        .as_bytes(),
    )
}

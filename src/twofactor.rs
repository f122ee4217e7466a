//! The second-factor check (Rocket.Chat's `checkCodeForUser`), hardened:
//! only methods enabled globally and for the user can be chosen, single-use
//! TOTP steps, a per-user limit on wrong codes for every method that holds
//! under concurrency (an attempt is reserved in storage before a code is
//! verified), codes stored keyed with a host secret, strict code formats,
//! constant-time comparisons, and bypass tokens that cannot mint or manage
//! other tokens without a real factor.
//!
//! A passed check spends nothing itself: it returns a [`FactorProof`] that the
//! storage write of the endpoint spends in the same transaction, so a failure
//! anywhere leaves stored state untouched.

use crate::codes::{self, BACKUP_ALPHABET, BACKUP_CODE_LEN, EMAIL_CODE_DIGITS};
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

/// A passed check: what the endpoint's write must spend, and the challenge
/// details to answer with should another request spend the code first.
pub struct Passed {
    pub proof: FactorProof,
    pub details: Option<TwoFactorDetails>,
    /// How the second factor was passed, for the audit trail (none: none
    /// was asked for: 2FA off, or no method for this user).
    pub method: Option<TwoFactorMethod>,
}

impl Passed {
    fn without_factor(method: Option<TwoFactorMethod>) -> Self {
        Passed {
            proof: FactorProof::none(),
            details: None,
            method,
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
    /// The request would mint a bypass token or regenerate or remove a token
    /// other than the one it presents: a bypass token does not excuse it
    /// from the second factor (unless `bypass-tokens-unrestricted`).
    pub sensitive: bool,
}

impl<'a> Attempt<'a> {
    /// The attempt of an authenticated request.
    pub fn of_request(
        headers: &'a Headers,
        token: &'a LoginToken,
        client_address: &'a str,
        sensitive: bool,
    ) -> Self {
        Attempt {
            code: headers.two_factor_code.as_deref(),
            method: headers.two_factor_method.as_deref(),
            user_agent: headers.user_agent.as_deref(),
            client_address,
            token: Some(token),
            password_fallback: true,
            sensitive,
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
    let bypass = attempt.token.is_some_and(|t| t.bypass_two_factor)
        && (settings.bypass_tokens_unrestricted || !attempt.sensitive);
    if !settings.two_factor_enabled {
        return Ok(Passed::without_factor(None));
    }
    if bypass {
        return Ok(Passed::without_factor(Some(TwoFactorMethod::Bypass)));
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
        return Ok(Passed::without_factor(Some(TwoFactorMethod::Remembered)));
    }

    let fallback = attempt.password_fallback && settings.enforce_password_fallback;
    let Some(method) = select_method(fallback, user, attempt.method, &enabled)? else {
        // No method for this user: Rocket.Chat lets the request through.
        return Ok(Passed::without_factor(None));
    };
    // Fail closed: without a real code key, stored codes could be tested
    // offline by anyone with the database. Before any mail, count or write.
    if env.code_key().len() < codes::MIN_CODE_KEY_LEN {
        return Err(ApiError::CodeKeyMissing);
    }
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
    // What the audit trail records of a refused or wrong code.
    let origin = crate::audit::Origin::new(attempt.client_address, attempt.user_agent);
    let audit_method = match method {
        Method::Totp => TwoFactorMethod::Totp,
        Method::Email => TwoFactorMethod::Email,
        Method::Password => TwoFactorMethod::Password,
    };
    let event = |kind| AuditEvent {
        method: Some(audit_method),
        ..origin.event(now, &user.id, kind)
    };
    if locked {
        crate::audit::record(env, &[event(AuditKind::TwoFactorLockedOut)]);
        return Err(ApiError::TwoFactor(TwoFactorFailure::MaxAttempts, details));
    }

    // Reserve the attempt before verifying it, atomically in storage, so
    // concurrent requests cannot evaluate more codes than the limit.
    let email_attempt = method == Method::Email && user.email_code.is_some();
    let reservation = env
        .storage()
        .reserve_two_factor_attempt(
            &user.id,
            now,
            now.saturating_sub(window_ms(settings)),
            max_failed(settings),
            email_attempt.then_some(settings.email_code_max_attempts),
        )
        .map_err(|_| ApiError::StorageFailure)?;
    if !reservation.granted {
        crate::audit::record(env, &[event(AuditKind::TwoFactorLockedOut)]);
        return Err(ApiError::TwoFactor(TwoFactorFailure::MaxAttempts, details));
    }

    match verify(&*env, settings, user, method, code, now)? {
        Verdict::Spent => {
            // Not a guess: give the attempt back.
            let _ = env
                .storage()
                .release_two_factor_attempt(&user.id, email_attempt);
            Err(ApiError::TwoFactor(TwoFactorFailure::Invalid, details))
        }
        Verdict::Right(used) => {
            // A right code is not a wrong one: give the attempt back now, so
            // that a twin of this code losing the race for it (or a later
            // check of the request failing) never counts against the user.
            // Should this fail, the write that spends the code resets the
            // count anyway; the request itself is unaffected.
            let _ = env
                .storage()
                .release_two_factor_attempt(&user.id, email_attempt);
            let remember = attempt
                .token
                .filter(|_| settings.remember_for_seconds > 0)
                .map(|token| RememberGrant {
                    hashed_login_token: token.hashed_token.clone(),
                    fingerprint,
                    until: now + u64::from(settings.remember_for_seconds) * 1000,
                });
            Ok(Passed {
                method: crate::audit::method_of(&used),
                proof: FactorProof {
                    session: None,
                    used,
                    remember,
                    reply: None,
                    events: Vec::new(),
                },
                details: Some(details),
            })
        }
        Verdict::Wrong => {
            let email_exhausted = email_attempt
                && reservation.email_code_attempts >= settings.email_code_max_attempts;
            let kind = if email_exhausted || reservation.failures.count >= max_failed(settings) {
                TwoFactorFailure::MaxAttempts
            } else {
                TwoFactorFailure::Invalid
            };
            // The reservation already counted it; the event records it.
            let mut events = vec![event(AuditKind::TwoFactorWrongCode)];
            if kind == TwoFactorFailure::MaxAttempts {
                events.push(event(AuditKind::TwoFactorLockedOut));
            }
            crate::audit::record(env, &events);
            Err(ApiError::TwoFactor(kind, details))
        }
    }
}

/// What a code turned out to be.
enum Verdict {
    /// Right: the factor the endpoint's write spends.
    Right(FactorUse),
    /// A code already spent (a replayed TOTP step, a used backup code): it
    /// is refused, but it is no guess, so it is not counted as a wrong code.
    /// This is how twins of a right code that lost the race to it end.
    Spent,
    /// Wrong: counted.
    Wrong,
}

impl From<Option<FactorUse>> for Verdict {
    fn from(used: Option<FactorUse>) -> Self {
        used.map_or(Verdict::Wrong, Verdict::Right)
    }
}

/// The verdict on `code`; only a backup code's lookup can fail (storage).
fn verify(
    env: &dyn Env,
    settings: &Settings,
    user: &User,
    method: Method,
    code: &str,
    now: TimestampMs,
) -> Result<Verdict, ApiError> {
    let key = env.code_key();
    Ok(match method {
        Method::Totp => match user.totp.as_ref() {
            Some(totp) => verify_totp(env, &user.id, settings, totp, code, now)?,
            None => Verdict::Wrong,
        },
        Method::Email => user
            .email_code
            .as_ref()
            .and_then(|stored| verify_email(key, stored, code, now))
            .into(),
        Method::Password => user
            .password_bcrypt
            .as_deref()
            .and_then(|hash| verify_password(hash, code))
            .into(),
    })
}

fn verify_totp(
    env: &dyn Env,
    user_id: &str,
    settings: &Settings,
    totp: &TotpEnrolment,
    code: &str,
    now: TimestampMs,
) -> Result<Verdict, ApiError> {
    // An 8-character code is a backup code whenever the user has any
    // (Rocket.Chat's rule); an 8-digit TOTP enrolment may still use it as
    // TOTP. The stored codes are keyed hashes, looked up by the hash: its
    // timing tells nothing about a code without the host's code key.
    if code.len() == BACKUP_CODE_LEN && totp.has_backup_codes {
        if code.bytes().all(|c| BACKUP_ALPHABET.contains(&c)) {
            let hashed = codes::backup_code_hash(env.code_key(), user_id, code);
            match env.storage().find_backup_code(user_id, &hashed) {
                Ok(BackupCodeState::Unused) => {
                    return Ok(Verdict::Right(FactorUse::BackupCode(hashed)));
                }
                Ok(BackupCodeState::Spent) => return Ok(Verdict::Spent),
                Ok(BackupCodeState::Unknown) => {}
                Err(_) => return Err(ApiError::StorageFailure),
            }
        }
        if totp.digits as usize != BACKUP_CODE_LEN {
            return Ok(Verdict::Wrong);
        }
    }
    Ok(verify_totp_code(settings, totp, code, now))
}

fn verify_totp_code(
    settings: &Settings,
    totp: &TotpEnrolment,
    code: &str,
    now: TimestampMs,
) -> Verdict {
    if code.len() != usize::from(totp.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Verdict::Wrong;
    }
    let Some(secret) = totp::decode_secret(&totp.secret) else {
        return Verdict::Wrong;
    };
    let now_step = totp::step_at(now / 1000, totp.period);
    let matching = |last_used_step| {
        totp::matching_step(
            &secret,
            code,
            totp.digits,
            totp.algorithm,
            now_step,
            settings.totp_max_delta,
            last_used_step,
        )
    };
    match matching(totp.last_used_step) {
        Some(step) => Verdict::Right(FactorUse::TotpStep(step)),
        // Right for a step already used: a replay.
        None if matching(0).is_some() => Verdict::Spent,
        None => Verdict::Wrong,
    }
}

fn verify_email(key: &[u8], stored: &EmailCode, code: &str, now: TimestampMs) -> Option<FactorUse> {
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
    let hashed = codes::email_code_hash(key, &stored.salt, &digits);
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

/// Method selection, stricter than Rocket.Chat's `getSecondFactorMethod`
/// (which honours `x-2fa-method: totp|email` even when that method is not
/// enabled, so a TOTP-only user could be sent and pass an emailed code): a
/// requested method is used only if it is enabled globally and for the user;
/// otherwise, and with no or `password` request, the first enabled method
/// wins, and the password fallback only when none is enabled. An unknown
/// name is refused.
fn select_method(
    password_fallback: bool,
    user: &User,
    requested: Option<&str>,
    enabled: &[Method],
) -> Result<Option<Method>, ApiError> {
    let requested = match requested {
        Some("totp") => Some(Method::Totp),
        Some("email") => Some(Method::Email),
        None | Some("") | Some("password") => None,
        Some(_) => return Err(ApiError::InvalidTwoFactorMethod),
    };
    if let Some(m) = requested.filter(|m| enabled.contains(m)) {
        return Ok(Some(m));
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
    let code_hash = codes::email_code_hash(env.code_key(), &salt, &digits);
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
    env.storage()
        .store_email_code(&user.id, &stored)
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

/// The per-user wrong-code limit; 0 in the settings means no limit.
fn max_failed(settings: &Settings) -> u32 {
    match settings.max_failed_attempts {
        0 => u32::MAX,
        n => n,
    }
}

/// Locked while the user has used up the wrong-code allowance and the last
/// wrong code is younger than the window (a cheap early answer from the
/// snapshot; the reservation is the check that holds under concurrency).
fn is_locked(settings: &Settings, failures: FailureCount, now: TimestampMs) -> bool {
    failures.count >= max_failed(settings)
        && now < failures.last_failed_at.saturating_add(window_ms(settings))
}

/// Rocket.Chat's `isAuthorizedForToken` remember-me branches, only
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

/// SHA-256 hex of `{"userAgent":…,"clientAddress":…}` (as Rocket.Chat).
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

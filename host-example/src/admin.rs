//! Administration: creating users, enrolling 2FA, issuing tokens. Token
//! values and hashes come from the component crate's `token` module, so the
//! host never has a second definition of them.

use data_encoding::BASE32_NOPAD;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rcpat::codes::{self, BACKUP_CODE_LEN};
use rcpat::model::{BackupCodes, TokenKind, TotpAlgorithm, TotpEnrolment};
use rcpat::token;

use crate::error::{Error, Result};
use crate::random::random_bytes;
pub use crate::random::random_id;
use crate::services::Services;
use crate::storage::{Admin, NewUser, TokenRecord};

/// Rocket.Chat's stored password: bcrypt of the digest.
pub fn hash_password(password: &str, cost: u32) -> Result<String> {
    Ok(bcrypt::hash(token::password_digest(password), cost)?)
}

/// Seconds per TOTP step of the enrolments this host makes (the
/// authenticator-app default; the step length is stored per enrolment).
pub const TOTP_PERIOD: u32 = 30;
/// The issuer an authenticator app shows.
pub const TOTP_ISSUER: &str = "Rocket.Chat";

/// What a URI component must encode: all but RFC 3986's unreserved characters.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `otpauth://` URI an authenticator app scans (Google's Key Uri
/// Format): issuer and account percent-encoded, so a name with a space,
/// `:`, `?`, `&` or `#` cannot change the URI's meaning.
pub fn otpauth_uri(account: &str, secret: &str, algorithm: TotpAlgorithm, digits: u8) -> String {
    let alg = match algorithm {
        TotpAlgorithm::Sha1 => "SHA1",
        TotpAlgorithm::Sha256 => "SHA256",
        TotpAlgorithm::Sha512 => "SHA512",
    };
    let issuer = utf8_percent_encode(TOTP_ISSUER, URI_COMPONENT);
    let label = utf8_percent_encode(account, URI_COMPONENT);
    format!(
        "otpauth://totp/{issuer}:{label}?secret={secret}&issuer={issuer}&algorithm={alg}&digits={digits}&period={TOTP_PERIOD}"
    )
}

/// Rocket.Chat's default bcrypt cost.
pub const BCRYPT_COST: u32 = 10;

pub struct UserSpec<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub password: Option<&'a str>,
    pub roles: &'a [&'a str],
}

/// Creates a user (email verified); returns the new id.
pub fn create_user(services: &Services, spec: &UserSpec, bcrypt_cost: u32) -> Result<String> {
    if spec.username.is_empty() {
        return Err(Error::invalid("the username must not be empty"));
    }
    if spec.username.chars().any(char::is_control) {
        return Err(Error::invalid(
            "the username must not contain control characters",
        ));
    }
    if let Some(email) = spec.email {
        crate::mail::validate_address(email)?;
    }
    if services.storage().find_user_id(spec.username)?.is_some() {
        return Err(rcpat_store::Error::UserExists(spec.username.into()).into());
    }
    let id = random_id(17);
    let password_bcrypt = spec
        .password
        .map(|p| hash_password(p, bcrypt_cost))
        .transpose()?;
    services.storage().create_user(&NewUser {
        id: id.clone(),
        username: spec.username.to_string(),
        name: spec.username.to_string(),
        email: spec.email.map(String::from),
        email_verified: spec.email.is_some(),
        password_bcrypt,
        roles: spec.roles.iter().map(|r| r.to_string()).collect(),
        created_at: services.clock().now_ms(),
    })?;
    Ok(id)
}

/// The id of `username`, or a clear error.
pub fn user_id(storage: &dyn Admin, username: &str) -> Result<String> {
    storage
        .find_user_id(username)?
        .ok_or_else(|| rcpat_store::Error::NoSuchUser(format!("named {username}")).into())
}

/// A fresh TOTP enrolment: what an authenticator app and the user need.
pub struct TotpSetup {
    pub secret: String,
    pub uri: String,
    pub backup_codes: Vec<String>,
}

/// Enrols TOTP (20-byte secret, 30 s steps) with 12 backup codes, replacing
/// any earlier enrolment. Backup codes are stored keyed-hashed under the
/// services' code key (`rcpat::codes`), as the component checks them.
pub fn enable_totp(
    services: &Services,
    user_id: &str,
    account: &str,
    algorithm: TotpAlgorithm,
    digits: u8,
) -> Result<TotpSetup> {
    if digits != 6 && digits != 8 {
        return Err(Error::invalid("TOTP codes have 6 or 8 digits"));
    }
    let secret = BASE32_NOPAD.encode(&random_bytes(20));
    let backup_codes: Vec<String> = (0..12).map(|_| random_id(BACKUP_CODE_LEN)).collect();
    let enrolment = TotpEnrolment {
        secret: secret.clone(),
        algorithm,
        digits,
        period: TOTP_PERIOD,
        last_used_step: 0,
        has_backup_codes: true,
    };
    let hashed = BackupCodes {
        unused: backup_codes
            .iter()
            .map(|c| codes::backup_code_hash(services.code_key(), user_id, c))
            .collect(),
        spent: Vec::new(),
    };
    services
        .storage()
        .set_totp(user_id, Some((&enrolment, &hashed)))?;
    let uri = otpauth_uri(account, &secret, algorithm, digits);
    Ok(TotpSetup {
        secret,
        uri,
        backup_codes,
    })
}

/// The TOTP code for `secret` at `now_ms` shifted by `step_offset` steps.
pub fn totp_code(
    secret: &str,
    algorithm: TotpAlgorithm,
    digits: u8,
    now_ms: u64,
    step_offset: i64,
) -> String {
    let key = rcpat::totp::decode_secret(secret).expect("a valid base32 secret");
    let step = rcpat::totp::step_at(now_ms / 1000, TOTP_PERIOD).saturating_add_signed(step_offset);
    rcpat::totp::hotp(&key, step, digits, algorithm)
}

/// Issues a login (session) token; returns its plaintext.
pub fn issue_login_token(services: &Services, user_id: &str) -> Result<String> {
    issue(services, user_id, TokenKind::Login, None, false)
}

/// Stores a PAT directly (seeding; the endpoint is the normal way); returns its plaintext.
pub fn issue_personal_access_token(
    services: &Services,
    user_id: &str,
    name: &str,
    bypass_two_factor: bool,
) -> Result<String> {
    issue(
        services,
        user_id,
        TokenKind::PersonalAccessToken,
        Some(name),
        bypass_two_factor,
    )
}

fn issue(
    services: &Services,
    user_id: &str,
    kind: TokenKind,
    name: Option<&str>,
    bypass: bool,
) -> Result<String> {
    let plaintext = token::new_token(&random_bytes(token::TOKEN_LEN));
    services.storage().add_token(
        user_id,
        &TokenRecord {
            hashed_token: token::hash_token(&plaintext),
            kind,
            name: name.map(String::from),
            last_token_part: token::last_part(&plaintext).to_string(),
            created_at: services.clock().now_ms(),
            bypass_two_factor: bypass,
            expires_at: None,
        },
    )?;
    Ok(plaintext)
}

/// A QR code of `text` for a terminal (two rows per character).
pub fn qr_code(text: &str) -> Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otpauth_uri_encodes_the_account_and_names_the_period() {
        assert_eq!(
            otpauth_uri("ann", "JBSWY3DP", TotpAlgorithm::Sha1, 6),
            "otpauth://totp/Rocket.Chat:ann?secret=JBSWY3DP&issuer=Rocket.Chat&algorithm=SHA1&digits=6&period=30"
        );
        let uri = otpauth_uri("a b:c?d&e#f/é", "S", TotpAlgorithm::Sha256, 8);
        assert!(
            uri.starts_with("otpauth://totp/Rocket.Chat:a%20b%3Ac%3Fd%26e%23f%2F%C3%A9?secret=S&"),
            "{uri}"
        );
        assert!(
            uri.ends_with("&algorithm=SHA256&digits=8&period=30"),
            "{uri}"
        );
    }
}

/// What `tokens notify-expiring` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExpiryNotices {
    /// (username, token name) of each notice mailed.
    pub sent: Vec<(String, String)>,
    /// Owners without a verified address (nobody to tell; retried next run).
    pub no_address: Vec<(String, String)>,
    /// Mails that failed (their claim is released, so the next run retries).
    pub failed: Vec<(String, String)>,
}

/// Mails the owner of every personal access token that expires within
/// `within_days`, once per token value: the notice is claimed in storage
/// before the mail goes out, so two runs at once send it once, and released
/// if the mail fails. A regenerated token is a new value with its own notice.
/// A token name as terminals and mail headers may show it: control
/// characters (ESC, CR, LF, …) escaped as `\u{1b}`, for names stored before
/// generation refused them.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn notify_expiring(services: &Services, within_days: u32) -> Result<ExpiryNotices> {
    let now = services.clock().now_ms();
    let until = now.saturating_add(u64::from(within_days) * rcpat::expiry::DAY_MS);
    let mut report = ExpiryNotices::default();
    for t in services.storage().expiring_tokens(now, until)? {
        let name = printable(&t.name);
        let who = (printable(&t.username), name.clone());
        let Some(email) = t.email else {
            report.no_address.push(who);
            continue;
        };
        if !services
            .storage()
            .claim_expiry_notice(&t.user_id, &t.hashed_token, now)?
        {
            continue;
        }
        let when = rcpat::time::iso8601(t.expires_at);
        let message = rcpat::model::MailMessage {
            to: vec![email],
            subject: format!("Your personal access token \"{name}\" expires soon"),
            text: format!(
                "Hello {},\n\nyour personal access token \"{}\" expires at {when}. \
                 From then on it is refused.\nTo keep using it, regenerate it before then \
                 (users.regeneratePersonalAccessToken); the new token gets a fresh lifetime.\n",
                who.0, name
            ),
        };
        match services.mailer().send(&message) {
            Ok(()) => report.sent.push(who),
            Err(e) => {
                tracing::warn!(event = "expiry_notice_failed", user = %t.user_id, error = %e, "expiry notice not sent");
                services
                    .storage()
                    .release_expiry_notice(&t.user_id, &t.hashed_token)?;
                report.failed.push(who);
            }
        }
    }
    Ok(report)
}

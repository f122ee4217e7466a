//! Reuse detection: a personal access token value that a regeneration
//! replaced should never be seen again. If it is, two parties held it (the
//! token was stolen, and whoever regenerated it may be the thief), so the
//! token's current value is revoked and its owner told.
//!
//! A regeneration keeps the value it replaced on the token's record (`keep`,
//! passed to `replace-personal-access-token`); a request whose token `authenticate`
//! does not know asks whether it is such a value (`unknown_token`), and
//! past the grace period after its replacement (requests already in flight
//! with it are no theft) revokes the family. The reply is the unknown
//! token's 401 either way: the presenter learns nothing.

use crate::env::Env;
use crate::model::*;
use crate::reply::ApiError;
use crate::time::iso8601;

/// Superseded values a token keeps (its newest): a bound on the row, and
/// on how far back a reuse is recognised for a token rotated often.
pub const SUPERSEDED_PER_TOKEN: u32 = 32;

/// The oldest superseded instant that still counts.
fn not_before(settings: &Settings, now: TimestampMs) -> TimestampMs {
    now.saturating_sub(u64::from(settings.superseded_token_retention_days) * 86_400_000)
}

/// How many superseded values a regeneration keeps; none with detection off.
pub(crate) fn keep(settings: &Settings) -> u32 {
    if settings.reuse_detection {
        SUPERSEDED_PER_TOKEN
    } else {
        0
    }
}

/// The error for a token `authenticate` did not find: the unknown token's
/// 401, after revoking the family if it is a kept superseded value. Only a
/// storage failure answers otherwise (500, nothing half-done: the
/// revocation is one atomic call, and the mail goes after it commits).
pub(crate) fn unknown_token(
    env: &mut dyn Env,
    settings: &Settings,
    user_id: &str,
    hashed_token: &str,
    origin: &crate::audit::Origin,
) -> ApiError {
    if !settings.reuse_detection {
        return ApiError::NotLoggedIn;
    }
    let now = env.now_ms();
    let not_before = not_before(settings, now);
    // A read first: an unknown token (the common 401) writes nothing.
    let superseded = match env
        .storage()
        .find_superseded_token(user_id, hashed_token, not_before)
    {
        Ok(Some(superseded)) => superseded,
        Ok(None) => return ApiError::NotLoggedIn,
        Err(_) => return ApiError::StorageFailure,
    };
    // Within the grace period, a request that set out before the
    // regeneration committed; after it, a second holder.
    let grace_ms = u64::from(settings.superseded_token_grace_seconds) * 1000;
    if now < superseded.superseded_at.saturating_add(grace_ms) {
        return ApiError::NotLoggedIn;
    }
    let event = AuditEvent {
        token_name: Some(superseded.name.clone()),
        ..origin.event(now, user_id, AuditKind::TokenRevokedOnReuse)
    };
    let revoked =
        match env
            .storage()
            .revoke_superseded_family(user_id, hashed_token, not_before, &[event])
        {
            Ok(Some(revoked)) => revoked,
            // Revoked already (a twin presentation won), or removed meanwhile.
            Ok(None) => return ApiError::NotLoggedIn,
            Err(_) => return ApiError::StorageFailure,
        };
    if !revoked.verified_emails.is_empty() {
        // Best effort: the revocation stands whether or not the mail goes
        // (the host's hooks report a failed send).
        let _ = env.send_mail(&notice(&revoked, &superseded, now, &origin.client_address));
    }
    ApiError::SupersededTokenReused(revoked.name)
}

/// The owner's mail: which token, when, from where; never a token value.
fn notice(
    revoked: &RevokedToken,
    superseded: &SupersededToken,
    now: TimestampMs,
    client_address: &str,
) -> MailMessage {
    // Names stored before control characters were refused could hold a
    // line break; a mail header must not.
    let name: String = revoked
        .name
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    MailMessage {
        to: revoked.verified_emails.clone(),
        subject: format!("Personal access token \"{name}\" revoked"),
        // Short lines: mail clients (and quoted-printable) wrap long ones.
        text: format!(
            "Your personal access token \"{name}\" was revoked at {now}.\n\n\
             An old value of this token, replaced when the token was\n\
             regenerated at {superseded_at}, was presented again\n\
             from {client_address}.\n\n\
             Once a token is regenerated, its old value is never used again by\n\
             its legitimate holder: someone else had a copy. The token may have\n\
             been stolen, and the regeneration may have been made by whoever\n\
             stole it.\n\n\
             The token no longer works. If you use it, generate a new one, and\n\
             check where its values were stored.\n",
            now = iso8601(now),
            superseded_at = iso8601(superseded.superseded_at),
        ),
    }
}

//! Personal access token lifetimes (not a Rocket.Chat feature; GitLab's
//! rules): an optional `expiresAt` on generate, the host's maximum lifetime
//! (`max-token-lifetime-days`), and a regenerated token renewed for the
//! lifetime its predecessor was given.

use crate::model::TimestampMs;
use crate::reply::ApiError;

pub const DAY_MS: u64 = 86_400_000;

/// Whether a token with this expiry no longer authenticates at `now`.
pub fn is_expired(expires_at: Option<TimestampMs>, now: TimestampMs) -> bool {
    expires_at.is_some_and(|at| now >= at)
}

/// The latest expiry the host allows for a token issued at `now`.
fn latest(now: TimestampMs, max_days: u32) -> Option<TimestampMs> {
    (max_days > 0).then(|| now.saturating_add(u64::from(max_days) * DAY_MS))
}

/// A new token's expiry: the one requested, which must lie after `now` and
/// within the host's maximum; without one, the maximum (or none).
pub fn for_new_token(
    now: TimestampMs,
    requested: Option<TimestampMs>,
    max_days: u32,
) -> Result<Option<TimestampMs>, ApiError> {
    let latest = latest(now, max_days);
    match requested {
        None => Ok(latest),
        Some(at) if at <= now => Err(ApiError::InvalidParam(
            "The 'expiresAt' param must be in the future".into(),
        )),
        Some(at) if latest.is_some_and(|l| at > l) => Err(ApiError::InvalidParam(format!(
            "The 'expiresAt' param must be at most {max_days} days from now"
        ))),
        Some(at) => Ok(Some(at)),
    }
}

/// The expiry of the replacement, issued at `now`, of a value issued at
/// `created_at` that expires at `expires_at`: the same lifetime again
/// (GitLab's rotate), capped by the host's maximum; a token that never
/// expired gets the maximum (or again none).
pub fn for_replacement(
    now: TimestampMs,
    created_at: TimestampMs,
    expires_at: Option<TimestampMs>,
    max_days: u32,
) -> Option<TimestampMs> {
    let renewed = expires_at.map(|at| now.saturating_add(at.saturating_sub(created_at).max(1)));
    match (renewed, latest(now, max_days)) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (r, l) => r.or(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_boundary_is_the_instant_itself() {
        assert!(!is_expired(None, u64::MAX));
        assert!(!is_expired(Some(1000), 999));
        assert!(is_expired(Some(1000), 1000));
    }

    #[test]
    fn new_tokens() {
        assert_eq!(for_new_token(10, None, 0), Ok(None));
        assert_eq!(for_new_token(10, None, 2), Ok(Some(10 + 2 * DAY_MS)));
        assert_eq!(for_new_token(10, Some(11), 0), Ok(Some(11)));
        assert!(for_new_token(10, Some(10), 0).is_err());
        assert_eq!(
            for_new_token(10, Some(10 + 2 * DAY_MS), 2),
            Ok(Some(10 + 2 * DAY_MS))
        );
        assert!(for_new_token(10, Some(11 + 2 * DAY_MS), 2).is_err());
    }

    #[test]
    fn replacements_renew_the_same_lifetime_within_the_maximum() {
        assert_eq!(for_replacement(500, 100, None, 0), None);
        assert_eq!(for_replacement(500, 100, Some(300), 0), Some(700));
        assert_eq!(for_replacement(500, 100, None, 1), Some(500 + DAY_MS));
        let long = Some(30 * DAY_MS);
        assert_eq!(for_replacement(5, 0, long, 7), Some(5 + 7 * DAY_MS));
        assert_eq!(for_replacement(5, 0, long, 90), Some(5 + 30 * DAY_MS));
    }
}

//! `GET /api/v1/audit.personalAccessTokens`: the audit trail for holders
//! of `view-personal-access-token-audit` (by default the `admin` role
//! only), newest first, with Rocket.Chat's paging (`count`, `offset`;
//! `count`, `offset` and `total` in the reply) and three filters
//! (`userId`, `since`, `type`). Not a Rocket.Chat route: its shapes are
//! Rocket.Chat's (the 401 and 403 of any route, `error-invalid-params`).

use serde::Serialize;

use crate::endpoints::{Authenticated, authenticate, respond};
use crate::env::Env;
use crate::model::*;
use crate::reply::{self, ApiError};
use crate::time::{iso8601, parse_iso8601};

/// The permission the route checks.
pub const AUDIT_PERMISSION: &str = "view-personal-access-token-audit";
/// Rocket.Chat's default roles for it: administrators only.
pub const AUDIT_PERMISSION_DEFAULT_ROLES: &[&str] = &["admin"];
/// Rocket.Chat's `API_Default_Count` and `API_Upper_Count_Limit`.
pub const DEFAULT_COUNT: u32 = 50;
pub const MAX_COUNT: u32 = 100;
/// Longest query string read (a user id, an instant, a kind and two numbers fit many times).
const MAX_QUERY_BYTES: usize = 2048;

/// The query, read strictly: each parameter at most once, nothing unknown.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    filter: AuditFilter,
    offset: u32,
    count: u32,
}

fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::InvalidParam(reason.into())
}

fn query(raw: &str) -> Result<Query, ApiError> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(invalid("The query string is too long"));
    }
    let mut q = Query {
        filter: AuditFilter::default(),
        offset: 0,
        count: DEFAULT_COUNT,
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if seen.iter().any(|k| *k == key) {
            return Err(invalid(format!("The '{key}' param is given twice")));
        }
        seen.push(key.to_string());
        let number = || {
            // Digits only: no sign, no space, no exponent.
            (!value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u32>().ok())
                .flatten()
        };
        match &*key {
            "count" => {
                let n = number().ok_or_else(|| invalid("The 'count' param must be a number"))?;
                q.count = if n == 0 {
                    DEFAULT_COUNT
                } else {
                    n.min(MAX_COUNT)
                };
            }
            "offset" => {
                q.offset =
                    number().ok_or_else(|| invalid("The 'offset' param must be a number"))?;
            }
            "userId" => {
                if value.is_empty() || value.len() > 64 {
                    return Err(invalid("The 'userId' param is invalid"));
                }
                q.filter.account = Some(value.to_string());
            }
            "since" => {
                q.filter.since = Some(parse_iso8601(&value).ok_or_else(|| {
                    invalid("The 'since' param must be a date (YYYY-MM-DD) or an ISO 8601 instant")
                })?);
            }
            "type" => {
                q.filter.kind = Some(AuditKind::from_name(&value).ok_or_else(|| {
                    invalid(format!(
                        "The 'type' param must be one of {}",
                        AuditKind::ALL.map(AuditKind::name).join(", ")
                    ))
                })?);
            }
            _ => return Err(invalid(format!("Unknown param '{key}'"))),
        }
    }
    Ok(q)
}

/// One event as the route answers it (and `host-example audit list --json`
/// prints it): the fields in this order, absent ones left out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item<'a> {
    ts: String,
    /// The user's id (or, for a login naming no user, its account key).
    user_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_token_part: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
    client_address: &'a str,
    user_agent: &'a str,
    host_id: &'a str,
    /// How many times it happened in its minute (flood-prone kinds).
    count: u32,
}

impl<'a> From<&'a StoredAuditEvent> for Item<'a> {
    fn from(s: &'a StoredAuditEvent) -> Self {
        Item {
            ts: iso8601(s.event.at),
            user_id: &s.event.account,
            kind: s.event.kind.name(),
            token_name: s.event.token_name.as_deref(),
            last_token_part: s.event.token_last_part.as_deref(),
            method: s.event.method.map(TwoFactorMethod::name),
            client_address: &s.event.client_address,
            user_agent: &s.event.user_agent,
            host_id: &s.host_id,
            count: s.count,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    events: Vec<Item<'a>>,
    count: usize,
    offset: u32,
    total: u32,
    success: bool,
}

/// The route: authentication, the permission (403 without it), the query
/// (400 `error-invalid-params`), then one read.
pub fn list(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    respond((|| {
        let Authenticated { session, .. } =
            authenticate(env, settings, req, Some(AUDIT_PERMISSION))?;
        if !session.permitted {
            return Err(ApiError::Forbidden);
        }
        let q = query(&req.query)?;
        let page = env
            .storage()
            .list_audit_events(&q.filter, q.offset, q.count)
            .map_err(|_| ApiError::StorageFailure)?;
        let events: Vec<Item> = page
            .events
            .iter()
            .take(q.count as usize)
            .map(Item::from)
            .collect();
        Ok(Response::new(
            200,
            reply::to_json(&Body {
                count: events.len(),
                events,
                offset: q.offset,
                total: page.total,
                success: true,
            }),
        ))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_strictly() {
        let q = query("count=500&offset=20&userId=u1&since=2026-12-07T10%3A00%3A00.000Z&type=token-regenerated").unwrap();
        assert_eq!(q.count, MAX_COUNT);
        assert_eq!(q.offset, 20);
        assert_eq!(q.filter.account.as_deref(), Some("u1"));
        assert_eq!(q.filter.since, parse_iso8601("2026-12-07T10:00:00.000Z"));
        assert_eq!(q.filter.kind, Some(AuditKind::TokenRegenerated));
        assert_eq!(query("").unwrap().count, DEFAULT_COUNT);
        assert_eq!(query("count=0").unwrap().count, DEFAULT_COUNT);
        for bad in [
            "count=-1",
            "count=1e3",
            "count=",
            "offset=9999999999",
            "count=1&count=2",
            "type=token-stolen",
            "since=yesterday",
            "userId=",
            "sort=ts",
        ] {
            assert!(
                matches!(query(bad), Err(ApiError::InvalidParam(_))),
                "{bad}"
            );
        }
        assert!(query(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }
}

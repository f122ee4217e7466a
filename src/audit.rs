//! The audit trail's events (issue 28, part 2): built here, stored by the
//! storage write that makes the change they record (`factor-proof.events`),
//! so an event exists if and only if its change committed. An event names
//! the user, what happened, the token's name and the new value's last six
//! characters, the second factor's method, the client's address and user
//! agent: never a token, code, password or secret.

use crate::model::*;
use crate::request::Headers;

/// Longest user agent an event keeps, in bytes (cut at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// Where a request came from, as events record it.
pub(crate) struct Origin {
    pub(crate) client_address: String,
    pub(crate) user_agent: String,
}

impl Origin {
    pub(crate) fn of(headers: &Headers, req: &Request) -> Self {
        Self::new(&req.client_address, headers.user_agent.as_deref())
    }

    pub(crate) fn new(client_address: &str, user_agent: Option<&str>) -> Self {
        let agent = user_agent.unwrap_or("");
        let mut end = agent.len().min(MAX_USER_AGENT_BYTES);
        while !agent.is_char_boundary(end) {
            end -= 1;
        }
        Origin {
            client_address: client_address.to_string(),
            user_agent: agent[..end].to_string(),
        }
    }

    /// One event of `kind` for `account` at `at`.
    pub(crate) fn event(&self, at: TimestampMs, account: &str, kind: AuditKind) -> AuditEvent {
        AuditEvent {
            at,
            account: account.to_string(),
            kind,
            token_name: None,
            token_last_part: None,
            method: None,
            client_address: self.client_address.clone(),
            user_agent: self.user_agent.clone(),
        }
    }

    /// The events of a change a second factor allowed: `two-factor-passed`
    /// when a factor was checked (not for a bypass token or a remembered
    /// client: nothing was checked, and the change's own `method` says
    /// which), then the change itself, naming its factor too, so one row
    /// answers "who changed this, when, from where, with which factor".
    pub(crate) fn with_factor(
        &self,
        passed_by: Option<TwoFactorMethod>,
        change: AuditEvent,
    ) -> Vec<AuditEvent> {
        let mut events = Vec::with_capacity(2);
        if let Some(method) = passed_by.filter(|m| m.is_checked()) {
            events.push(AuditEvent {
                method: Some(method),
                ..self.event(change.at, &change.account, AuditKind::TwoFactorPassed)
            });
        }
        events.push(AuditEvent {
            method: passed_by,
            ..change
        });
        events
    }

    /// The events of a token write (`with_factor`), naming the token and
    /// its new value's last part.
    pub(crate) fn token_write(
        &self,
        at: TimestampMs,
        account: &str,
        passed_by: Option<TwoFactorMethod>,
        kind: AuditKind,
        token: &PersonalAccessToken,
    ) -> Vec<AuditEvent> {
        let change = AuditEvent {
            token_name: Some(token.name.clone()),
            token_last_part: Some(token.last_token_part.clone()),
            ..self.event(at, account, kind)
        };
        self.with_factor(passed_by, change)
    }
}

/// Records events that are their own change. Best effort: if storage
/// fails, the change (the event) did not happen, and the request's reply
/// is what it was going to be.
pub(crate) fn record(env: &mut dyn crate::env::Env, events: &[AuditEvent]) {
    let _ = env.storage().record_audit_events(events);
}

/// The method a spent factor was passed by.
pub(crate) fn method_of(used: &FactorUse) -> Option<TwoFactorMethod> {
    match used {
        FactorUse::None => None,
        FactorUse::TotpStep(_) => Some(TwoFactorMethod::Totp),
        FactorUse::BackupCode(_) => Some(TwoFactorMethod::BackupCode),
        FactorUse::EmailCode(_) => Some(TwoFactorMethod::Email),
        FactorUse::Password => Some(TwoFactorMethod::Password),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_user_agent_is_cut_at_a_character_boundary() {
        let agent = format!("{}é", "a".repeat(MAX_USER_AGENT_BYTES - 1));
        let req = Request::new(&[("User-Agent", agent.as_str())], b"");
        let headers = crate::request::headers(&req).unwrap();
        let origin = Origin::of(&headers, &req);
        assert_eq!(origin.user_agent.len(), MAX_USER_AGENT_BYTES - 1);
        assert_eq!(origin.client_address, "127.0.0.1");
    }
}

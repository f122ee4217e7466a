//! The audit trail (issue 28, part 2; branch audit-trail): each change the
//! component makes stores its events in the write that makes it. First
//! checks on every backend; the full table of kinds, fault injection and
//! the SIGKILL test are still to come.

use crate::common::*;
use rcpat::model::{AuditKind, TwoFactorMethod};

fn kinds(fx: &Fx, account: &str) -> Vec<(AuditKind, Option<TwoFactorMethod>, Option<String>)> {
    fx.storage
        .audit_events(account)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.method, e.token_name))
        .collect()
}

#[test]
fn token_writes_logout_and_refusals_leave_their_events() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        let u = fx.user("audra", Some(PASSWORD));
        let totp = fx.enable_totp(&u);
        fx.pat(&u, "ci", false);
        // A wrong code, then a right one that regenerates.
        let wrong = fx.regenerate(&u, &u.login, Some(("totp", "000000")), "ci");
        assert_eq!(wrong.status, 400, "{name}: {}", wrong.body);
        let code = fx.totp(&totp, 0);
        let done = fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci");
        let token = done.token();
        let events = fx.storage.audit_events(&u.id).unwrap();
        let regenerated = events
            .iter()
            .find(|e| e.kind == AuditKind::TokenRegenerated)
            .unwrap();
        assert_eq!(
            regenerated.token_last_part.as_deref(),
            Some(&token[token.len() - 6..]),
            "{name}"
        );
        assert_eq!(regenerated.client_address, "127.0.0.1", "{name}");
        for e in &events {
            assert!(
                !e.user_agent.contains(&token)
                    && e.token_last_part.as_deref() != Some(token.as_str())
            );
        }
        // A refused write leaves nothing: the same code again.
        let replay = fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci");
        assert_eq!(replay.status, 400, "{name}");
        let logout = fx.call(Logout, &u, &u.login, None, "");
        assert_eq!(logout.status, 200, "{name}: {}", logout.body);
        assert_eq!(
            kinds(&fx, &u.id),
            [
                (
                    AuditKind::TwoFactorWrongCode,
                    Some(TwoFactorMethod::Totp),
                    None
                ),
                (
                    AuditKind::TwoFactorPassed,
                    Some(TwoFactorMethod::Totp),
                    None
                ),
                (AuditKind::TokenRegenerated, None, Some("ci".into())),
                (AuditKind::LoggedOut, None, None),
            ],
            "{name}"
        );
    }
}

#[test]
fn failed_logins_are_counted_per_minute_not_stored_one_by_one() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        let u = fx.user("lena", Some(PASSWORD));
        let login = |password: &str| {
            let body = format!(r#"{{"user":"lena","password":"{password}"}}"#);
            fx.send(Login, &rcpat::model::Request::new(&[], body.as_bytes()))
        };
        for _ in 0..3 {
            assert_eq!(login("wrong").status, 401, "{name}");
        }
        assert_eq!(
            kinds(&fx, &u.id),
            [(AuditKind::LoginFailed, None, None)],
            "{name}: one row"
        );
        fx.clock.advance_ms(60_000);
        assert_eq!(login("wrong").status, 401, "{name}");
        assert_eq!(login(PASSWORD).status, 200, "{name}");
        assert_eq!(
            kinds(&fx, &u.id),
            [
                (AuditKind::LoginFailed, None, None),
                (AuditKind::LoginFailed, None, None),
                (AuditKind::LoginSucceeded, None, None),
            ],
            "{name}: a new minute, a new row"
        );
    }
}

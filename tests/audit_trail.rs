//! The audit trail (issue 28, part 2): each change the component makes
//! stores its events in the write that makes it (here on every backend;
//! `fault_injection.rs` and `idempotency.rs`' SIGKILL test check that an
//! event exists if and only if its change committed); the admin route
//! `GET /api/v1/audit.personalAccessTokens`, `audit list` and pruning.

use crate::common::*;
use host_example::clock::Clock;
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
                (
                    AuditKind::TokenRegenerated,
                    Some(TwoFactorMethod::Totp),
                    Some("ci".into())
                ),
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

const AUDIT_403: &str = r#"{"success":false,"error":"User does not have the permissions required for this action [error-unauthorized]"}"#;

/// The audit route as `user` with `token`, with this query string.
fn audit(fx: &Fx, user: &User, token: &str, query: &str) -> Reply {
    let mut req = rcpat::model::Request::new(
        &[("X-User-Id", user.id.as_str()), ("X-Auth-Token", token)],
        b"",
    );
    req.query = query.to_string();
    fx.send(Audit, &req)
}

#[test]
fn the_audit_route_is_for_administrators_and_pages_and_filters() {
    for (name, backend) in backends() {
        backend.set_host_id("host-a").unwrap();
        let fx = Fx::with_storage(backend);
        let root = fx.user_with_roles("root", None, &["admin"]);
        let u = fx.user("uma", None);
        let pat = fx.pat(&u, "ci", false);
        let mut last_parts = Vec::new();
        for _ in 0..3 {
            fx.clock.advance_ms(1_000);
            let r = fx.regenerate(&u, &u.login, None, "ci");
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            let t = r.token();
            last_parts.push(t[t.len() - 6..].to_string());
        }
        // No credentials: the 401 of every route; a user: the 403.
        let anonymous = fx.send(Audit, &rcpat::model::Request::new(&[], b""));
        assert_eq!(anonymous.status, 401, "{name}");
        let denied = audit(&fx, &u, &u.login, "");
        assert_eq!(
            (denied.status, denied.body.as_str()),
            (403, AUDIT_403),
            "{name}"
        );
        // A grant opens it to that user; a revocation closes it to an admin.
        fx.storage
            .set_user_permission(&u.id, rcpat::audit_route::AUDIT_PERMISSION, Some(true))
            .unwrap();
        assert_eq!(audit(&fx, &u, &u.login, "").status, 200, "{name}");

        let all = audit(&fx, &root, &root.login, "");
        assert_eq!(all.status, 200, "{name}: {}", all.body);
        let events = all.json["events"].as_array().unwrap();
        assert_eq!(all.json["total"], events.len(), "{name}");
        assert_eq!(all.json["count"], events.len(), "{name}");
        assert_eq!(all.json["offset"], 0, "{name}");
        // Newest first: the last regeneration heads the list.
        let first = &events[0];
        assert_eq!(first["type"], "token-regenerated", "{name}: {first}");
        assert_eq!(first["userId"], u.id.as_str(), "{name}");
        assert_eq!(first["tokenName"], "ci", "{name}");
        assert_eq!(first["lastTokenPart"], last_parts[2].as_str(), "{name}");
        assert_eq!(first["clientAddress"], "127.0.0.1", "{name}");
        assert_eq!(first["hostId"], "host-a", "{name}");
        assert_eq!(first["count"], 1, "{name}");
        assert_eq!(
            first["ts"],
            rcpat::time::iso8601(T0 + 3_000).as_str(),
            "{name}"
        );
        assert!(
            !all.body.contains(&pat) && !all.body.contains(&u.login),
            "{name}: a secret"
        );

        // Paging: the second of the regenerations, alone.
        let page = audit(
            &fx,
            &root,
            &root.login,
            "type=token-regenerated&count=1&offset=1",
        );
        assert_eq!(page.json["total"], 3, "{name}: {}", page.body);
        assert_eq!(page.json["count"], 1, "{name}");
        assert_eq!(
            page.json["events"][0]["lastTokenPart"],
            last_parts[1].as_str(),
            "{name}"
        );
        // Past the end: nothing, and the total still.
        let past = audit(&fx, &root, &root.login, "type=token-regenerated&offset=3");
        assert_eq!(
            (past.json["count"].clone(), past.json["total"].clone()),
            (0.into(), 3.into()),
            "{name}"
        );
        // since (inclusive) and userId.
        let since = rcpat::time::iso8601(T0 + 2_000).replace(':', "%3A");
        let recent = audit(
            &fx,
            &root,
            &root.login,
            &format!("userId={}&since={since}", u.id),
        );
        assert_eq!(recent.json["total"], 2, "{name}: {}", recent.body);
        let nobody = audit(&fx, &root, &root.login, "userId=nobody");
        assert_eq!(nobody.json["total"], 0, "{name}");
        // Strict parameters, Rocket.Chat's 400.
        let bad = audit(&fx, &root, &root.login, "type=token-stolen");
        assert_eq!(bad.status, 400, "{name}");
        assert_eq!(
            bad.json["errorType"], "error-invalid-params",
            "{name}: {}",
            bad.body
        );
        assert_eq!(
            audit(&fx, &root, &root.login, "count=ten").status,
            400,
            "{name}"
        );
        assert_eq!(
            audit(&fx, &root, &root.login, "count=1&count=2").status,
            400,
            "{name}"
        );
    }
}

#[test]
fn pruning_removes_only_events_past_retention_in_batches() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        let u = fx.user("pia", None);
        fx.pat(&u, "ci", false);
        for _ in 0..5 {
            assert_eq!(
                fx.regenerate(&u, &u.login, None, "ci").status,
                200,
                "{name}"
            );
        }
        fx.clock.advance_ms(10 * 86_400_000);
        assert_eq!(
            fx.regenerate(&u, &u.login, None, "ci").status,
            200,
            "{name}"
        );
        let keep = std::time::Duration::from_secs(5 * 86_400);
        // Batches of 2: five old events take three statements.
        let before = fx.clock.now_ms() - keep.as_millis() as u64;
        assert_eq!(
            fx.storage.prune_audit_events(before, 2).unwrap(),
            5,
            "{name}"
        );
        assert_eq!(
            kinds(&fx, &u.id),
            [(AuditKind::TokenRegenerated, None, Some("ci".into()))],
            "{name}"
        );
        assert_eq!(
            host_example::audit::prune(&*fx.storage, fx.clock.now_ms(), keep).unwrap(),
            0,
            "{name}: nothing more"
        );
    }
}

/// Over real sockets: an administrator reads the trail `serve` stored,
/// stamped with its host id, and `audit list` prints the same events.
#[test]
fn over_http_and_the_cli() {
    let dir = temp_dir("audit-http");
    let db = dir.join("rcpat.sqlite");
    let (root, root_pat, user, pat) = {
        let services = host_example::startup::services_from(&host_example::config::Options {
            db: Some(db.clone()),
            ..Default::default()
        })
        .unwrap();
        let mk = |name: &str, roles: &[&str]| {
            let spec = host_example::admin::UserSpec {
                username: name,
                email: None,
                password: None,
                roles,
            };
            let id = host_example::admin::create_user(&services, &spec, COST).unwrap();
            let pat = host_example::admin::issue_personal_access_token(&services, &id, "ops", true)
                .unwrap();
            (id, pat)
        };
        let (root, root_pat) = mk("root", &["admin"]);
        let (user, pat) = mk("hugo", &["user"]);
        (root, root_pat, user, pat)
    };
    let (mut child, base) = serve_on(&dir, &["--db", db.to_str().unwrap(), "--host-id", "edge-7"]);
    let agent = http_agent();
    let mut r = agent
        .post(format!("{base}/api/v1/users.regeneratePersonalAccessToken"))
        .header("Content-Type", "application/json")
        .header("User-Agent", "deploy-bot/1.0")
        .header("X-User-Id", &user)
        .header("X-Auth-Token", &pat)
        .send(r#"{"tokenName":"ops"}"#)
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = serde_json::from_str::<serde_json::Value>(&r.body_mut().read_to_string().unwrap())
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let get = |id: &str, tok: &str, query: &str| {
        let mut r = agent
            .get(format!("{base}/api/v1/audit.personalAccessTokens{query}"))
            .header("X-User-Id", id)
            .header("X-Auth-Token", tok)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(get(&user, &token, ""), (403, AUDIT_403.to_string()));
    let (status, body) = get(&root, &root_pat, "?userId=");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&root, &root_pat, &format!("?userId={user}&count=10"));
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let e = &json["events"][0];
    assert_eq!(e["type"], "token-regenerated", "{body}");
    assert_eq!(e["method"], "bypass", "{body}");
    assert_eq!(e["hostId"], "edge-7", "{body}");
    assert_eq!(e["userAgent"], "deploy-bot/1.0", "{body}");
    assert_eq!(e["lastTokenPart"], &token[token.len() - 6..], "{body}");
    assert!(
        !body.contains(&token) && !body.contains(&pat),
        "a secret in the reply"
    );
    let _ = child.kill();
    let _ = child.wait();

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_host-example"))
            .args(["audit", "list", "--db", db.to_str().unwrap()])
            .args(args)
            .env_remove("RCPAT_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lines = cli(&["--user", "hugo", "--json"]);
    let first = lines.lines().next().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(first).unwrap(),
        *e,
        "the CLI prints what the route answers"
    );
    assert!(
        body.contains(&format!("[{first}")),
        "byte for byte, in the route's field order: {first}"
    );
    let table = cli(&["--type", "token-regenerated"]);
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(
        table.contains("\"ops\" …") && table.contains("edge-7") && table.contains("bypass"),
        "{table}"
    );
    assert!(!table.contains(&token));
    assert!(table.contains(" hugo "), "the user by name: {table}");
    assert_eq!(cli(&["--since", "2999-01-01"]), "");
}

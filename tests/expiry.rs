//! Personal access token expiry (issue 12): `expiresAt` on generate, the
//! host's `max-token-lifetime-days`, renewal on regeneration, 401 from the
//! expiry instant on, `expiresAt` in the list, and `tokens notify-expiring`
//! mailing each owner once per token value. Through the component in
//! wasmtime, on memory, SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::common::*;
use host_example::admin;
use host_example::clock::Clock;
use host_example::storage::{Backend, SqliteStorage};
use rcpat::time::iso8601;

const DAY: u64 = 86_400_000;

fn fx_on(backend: Arc<dyn Backend>) -> Fx {
    let mut fx = Fx::with_storage(backend);
    // The second factor is not the subject here.
    fx.settings.two_factor_enabled = false;
    fx
}

fn generate(fx: &Fx, u: &User, body: &str) -> Reply {
    fx.call(Generate, u, &u.login, None, body)
}

/// The listed entry of the token `name`.
fn listed(fx: &Fx, u: &User, name: &str) -> serde_json::Value {
    let r = fx.call(List, u, &u.login, None, "");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no token {name} in {}", r.body))
        .clone()
}

fn lifecycle(backend: Arc<dyn Backend>) {
    let fx = fx_on(backend);
    let u = fx.user("exp", None);
    let unknown = fx.call(Me, &u, "not-a-token-of-anyone", None, "");
    assert_eq!(unknown.status, 401);

    // A date: midnight UTC of that day. Listed with `expiresAt`, and the
    // four Rocket.Chat fields unchanged.
    let expires = T0 - T0 % DAY + 10 * DAY;
    let date = &iso8601(expires)[..10];
    let a = generate(
        &fx,
        &u,
        &format!(r#"{{"tokenName":"a","expiresAt":"{date}"}}"#),
    )
    .token();
    let item = listed(&fx, &u, "a");
    assert_eq!(item["expiresAt"], iso8601(expires).as_str());
    assert_eq!(item.as_object().unwrap().len(), 5, "{item}");

    // Valid to the millisecond before; from the instant on, 401 exactly as
    // an unknown token.
    assert_eq!(fx.call(Me, &u, &a, None, "").status, 200);
    fx.clock.advance_ms(expires - fx.clock.now_ms() - 1);
    assert_eq!(fx.call(Me, &u, &a, None, "").status, 200);
    fx.clock.advance_ms(1);
    let refused = fx.call(Me, &u, &a, None, "");
    assert_eq!((refused.status, refused.body), (401, unknown.body.clone()));
    // Nor can it rotate itself back to life.
    assert_eq!(fx.regenerate(&u, &a, None, "a").status, 401);

    // Regeneration renews the lifetime the token was given (5 days),
    // counted from the regeneration; the old value is gone at once.
    let now = fx.clock.now_ms();
    let b_expiry = iso8601(now + 5 * DAY);
    let b = generate(
        &fx,
        &u,
        &format!(r#"{{"tokenName":"b","expiresAt":"{b_expiry}"}}"#),
    )
    .token();
    fx.clock.advance_ms(2 * DAY);
    let b2 = fx.regenerate(&u, &b, None, "b").token();
    assert_eq!(
        listed(&fx, &u, "b")["expiresAt"],
        iso8601(fx.clock.now_ms() + 5 * DAY).as_str()
    );
    assert_eq!(fx.call(Me, &u, &b, None, "").status, 401);
    fx.clock.advance_ms(4 * DAY);
    assert_eq!(
        fx.call(Me, &u, &b2, None, "").status,
        200,
        "renewed past the first expiry"
    );

    // Refused: a past or present instant, a non-date, a non-string; nothing stored.
    let now = iso8601(fx.clock.now_ms());
    for body in [
        format!(r#"{{"tokenName":"c","expiresAt":"{now}"}}"#),
        r#"{"tokenName":"c","expiresAt":"2001-01-01"}"#.to_string(),
        r#"{"tokenName":"c","expiresAt":"next week"}"#.to_string(),
        r#"{"tokenName":"c","expiresAt":"2099-02-30"}"#.to_string(),
        r#"{"tokenName":"c","expiresAt":1900000000000}"#.to_string(),
    ] {
        let r = generate(&fx, &u, &body);
        assert_eq!(
            (r.status, r.error_type()),
            (400, "error-invalid-params"),
            "{body}: {}",
            r.body
        );
    }
    assert!(
        fx.storage
            .find_personal_access_token(&u.id, "c")
            .unwrap()
            .is_none()
    );

    // `null` is no expiry, as absent is; such a token never expires.
    let d = generate(&fx, &u, r#"{"tokenName":"d","expiresAt":null}"#).token();
    assert!(listed(&fx, &u, "d").get("expiresAt").is_none());
    fx.clock.advance_ms(3650 * DAY);
    assert_eq!(fx.call(Me, &u, &d, None, "").status, 200);
}

fn maximum(backend: Arc<dyn Backend>) {
    let mut fx = fx_on(backend);
    let u = fx.user("max", None);
    // A token from before the maximum was set: no expiry until rotated.
    let legacy = fx.pat(&u, "legacy", false);
    fx.settings.max_token_lifetime_days = 30;
    let now = fx.clock.now_ms();

    // Without `expiresAt`: the maximum.
    generate(&fx, &u, r#"{"tokenName":"e"}"#).token();
    assert_eq!(
        listed(&fx, &u, "e")["expiresAt"],
        iso8601(now + 30 * DAY).as_str()
    );
    // Up to the maximum, not past it.
    let at_max = iso8601(now + 30 * DAY);
    generate(
        &fx,
        &u,
        &format!(r#"{{"tokenName":"f","expiresAt":"{at_max}"}}"#),
    )
    .token();
    let past_max = iso8601(now + 30 * DAY + 1000);
    let r = generate(
        &fx,
        &u,
        &format!(r#"{{"tokenName":"g","expiresAt":"{past_max}"}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("at most 30 days"), "{}", r.body);

    // Rotating the legacy token brings it under the maximum.
    assert!(listed(&fx, &u, "legacy").get("expiresAt").is_none());
    fx.regenerate(&u, &legacy, None, "legacy").token();
    assert_eq!(
        listed(&fx, &u, "legacy")["expiresAt"],
        iso8601(now + 30 * DAY).as_str()
    );

    // A lower maximum caps a renewed lifetime.
    fx.settings.max_token_lifetime_days = 7;
    let e = fx
        .storage
        .find_personal_access_token(&u.id, "e")
        .unwrap()
        .unwrap();
    assert_eq!(e.expires_at, Some(now + 30 * DAY));
    let r = fx.call(Regenerate, &u, &u.login, None, r#"{"tokenName":"e"}"#);
    r.token();
    assert_eq!(
        listed(&fx, &u, "e")["expiresAt"],
        iso8601(now + 7 * DAY).as_str()
    );
}

fn notices(backend: Arc<dyn Backend>) {
    let fx = fx_on(backend);
    let u = fx.user("owner", None);
    let nomail = {
        // A user whose address is not verified gets no notice.
        let id = admin::create_user(
            &fx.services,
            &admin::UserSpec {
                username: "quiet",
                email: None,
                password: None,
                roles: &["user"],
            },
            COST,
        )
        .unwrap();
        let login = admin::issue_login_token(&fx.services, &id).unwrap();
        User {
            id,
            name: "quiet".into(),
            login,
        }
    };
    let now = fx.clock.now_ms();
    let at = |days: u64| iso8601(now + days * DAY);
    let soon = generate(
        &fx,
        &u,
        &format!(r#"{{"tokenName":"soon","expiresAt":"{}"}}"#, at(3)),
    )
    .token();
    generate(
        &fx,
        &u,
        &format!(r#"{{"tokenName":"later","expiresAt":"{}"}}"#, at(20)),
    )
    .token();
    generate(&fx, &u, r#"{"tokenName":"never"}"#).token();
    generate(
        &fx,
        &nomail,
        &format!(r#"{{"tokenName":"q","expiresAt":"{}"}}"#, at(2)),
    )
    .token();

    // A failed mail is not recorded as sent: the next run retries it.
    fx.mailer.fail.store(true, Ordering::SeqCst);
    let n = admin::notify_expiring(&fx.services, 7).unwrap();
    assert_eq!(n.failed, [("owner".to_string(), "soon".to_string())]);
    fx.mailer.fail.store(false, Ordering::SeqCst);

    let n = admin::notify_expiring(&fx.services, 7).unwrap();
    assert_eq!(n.sent, [("owner".to_string(), "soon".to_string())]);
    assert_eq!(n.no_address, [("quiet".to_string(), "q".to_string())]);
    let mail = fx.mailer.last().unwrap();
    assert_eq!(mail.to, ["owner@example.org"]);
    assert!(mail.subject.contains("\"soon\""), "{}", mail.subject);
    assert!(mail.text.contains(&at(3)), "{}", mail.text);
    assert!(
        !mail.text.contains(&soon),
        "the token itself is never mailed"
    );

    // Once per token value: a second run (or a second host) sends nothing.
    let n = admin::notify_expiring(&fx.services, 7).unwrap();
    assert!(n.sent.is_empty(), "{n:?}");
    assert_eq!(fx.mailer.count(), 1);

    // A regenerated token is a new value, renewed for 3 days: told again.
    fx.clock.advance_ms(DAY);
    fx.regenerate(&u, &soon, None, "soon").token();
    let n = admin::notify_expiring(&fx.services, 7).unwrap();
    assert_eq!(n.sent, [("owner".to_string(), "soon".to_string())]);
    assert_eq!(fx.mailer.count(), 2);

    // "later" enters the window 13 days on; expired tokens are not mailed.
    fx.clock.advance_ms(13 * DAY);
    let n = admin::notify_expiring(&fx.services, 7).unwrap();
    assert_eq!(n.sent, [("owner".to_string(), "later".to_string())]);
}

#[test]
fn expiry_on_every_backend() {
    for (name, backend) in backends() {
        eprintln!("backend: {name}");
        lifecycle(backend);
    }
}

#[test]
fn maximum_lifetime_on_every_backend() {
    for (name, backend) in backends() {
        eprintln!("backend: {name}");
        maximum(backend);
    }
}

#[test]
fn expiry_notices_on_every_backend() {
    for (name, backend) in backends() {
        eprintln!("backend: {name}");
        notices(backend);
    }
}

/// The command operators run from cron: on a SQLite file, through the
/// outbox, twice; one mail.
#[test]
fn notify_expiring_command_mails_once() {
    let dir = temp_dir("notify");
    let db = dir.join("rcpat.sqlite");
    let outbox = dir.join("outbox");
    {
        let keys = Arc::new(host_example::keys::Keys::load(&db.with_extension("key")).unwrap());
        let storage: Arc<dyn Backend> = Arc::new(SqliteStorage::open_with_keys(&db, keys).unwrap());
        let mut fx = fx_on(storage);
        fx.clock = Arc::new(host_example::clock::ManualClock::new(
            host_example::clock::SystemClock.now_ms(),
        ));
        fx.services = fx.services.clone().with_clock(fx.clock.clone());
        let u = fx.user("cron", None);
        let at = iso8601(fx.clock.now_ms() + 2 * DAY);
        generate(
            &fx,
            &u,
            &format!(r#"{{"tokenName":"deploy","expiresAt":"{at}"}}"#),
        )
        .token();
    }
    let run = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_host-example"))
            .args(["tokens", "notify-expiring", "--within-days", "7", "--db"])
            .arg(&db)
            .arg("--outbox")
            .arg(&outbox)
            .env_remove("RCPAT_CONFIG")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("notified cron: \"deploy\""), "{first}");
    assert!(first.contains("1 notices sent"), "{first}");
    let second = run();
    assert!(second.contains("0 notices sent"), "{second}");
    let mails: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(mails.len(), 1, "one mail in the outbox");
    let text = std::fs::read_to_string(mails[0].path()).unwrap();
    assert!(text.contains("cron@example.org"), "{text}");
}

//! Reuse detection (issue 28, part 1): a regenerated token's old value that
//! comes back revokes the token's current value, mails its owner, and tells
//! the host, while the presenter gets exactly the unknown token's 401. With
//! the exceptions (the `Idempotency-Key` retry of the very regeneration; a
//! token removed and generated again is a new family), the setting that
//! turns it off, the retention window, and the race between a presentation
//! and a regeneration. On memory, SQLite and PostgreSQL; over HTTP with the
//! log line, the metric and the mail in `http_server`-style tests below.

use std::io::BufRead;
use std::process::Stdio;
use std::sync::Arc;

use crate::common::*;
use host_example::storage::Backend;
use rcpat::model::{Request, SecurityEvent};

const UNKNOWN_401: &str = r#"{"status":"error","message":"You must be logged in to do this."}"#;
const DAY_MS: u64 = 86_400_000;
/// Past the default grace period (10 s) after a replacement.
const AFTER_GRACE_MS: u64 = 10_001;

fn list(fx: &Fx, u: &User, token: &str) -> Reply {
    fx.call(List, u, token, None, "")
}

/// A user with a PAT "ci" regenerated once by itself, the grace period
/// over: (user, old, current).
fn rotated(fx: &Fx, name: &str) -> (User, String, String) {
    let u = fx.user(name, None);
    let old = fx.pat(&u, "ci", false);
    let current = fx.regenerate(&u, &old, None, "ci").token();
    fx.clock.advance_ms(AFTER_GRACE_MS);
    (u, old, current)
}

fn superseded_kept(fx: &Fx, u: &User, token: &str) -> bool {
    fx.storage
        .find_superseded_token(&u.id, &rcpat::token::hash_token(token), 0)
        .unwrap()
        .is_some()
}

fn detects_and_revokes(name: &str, backend: Arc<dyn Backend>) {
    let fx = Fx::with_storage(backend);
    let (u, old, current) = rotated(&fx, "rita");
    let other = fx.pat(&u, "other", false);
    let session = u.login.clone();
    assert!(superseded_kept(&fx, &u, &old), "{name}");
    let unknown = list(&fx, &u, "no-such-token-at-all-0000000000000000000000");
    assert_eq!((unknown.status, unknown.body.as_str()), (401, UNKNOWN_401));
    assert!(unknown.events.is_empty(), "{name}");
    assert_eq!(fx.mailer.count(), 0, "{name}");

    // The old value, on any route: the unknown token's reply, byte for byte.
    let mail_before = fx.mailer.count();
    let reused = fx.call(Me, &u, &old, None, "");
    assert_eq!(
        (reused.status, reused.body.as_str()),
        (401, UNKNOWN_401),
        "{name}"
    );
    assert_eq!(
        reused.events,
        [SecurityEvent::SupersededTokenReused("ci".into())],
        "{name}"
    );
    // The family's current value is gone; nothing else is.
    assert!(
        !fx.authenticates(&u, &current),
        "{name}: the current value is revoked"
    );
    assert_eq!(
        fx.storage.find_personal_access_token(&u.id, "ci").unwrap(),
        None,
        "{name}"
    );
    assert!(fx.authenticates(&u, &other), "{name}: other tokens stay");
    assert!(fx.authenticates(&u, &session), "{name}: sessions stay");
    // The owner is told which token, when, from where; never a token value.
    assert_eq!(fx.mailer.count(), mail_before + 1, "{name}");
    let mail = fx.mailer.last().unwrap();
    assert_eq!(mail.to, ["rita@example.org"], "{name}");
    assert_eq!(
        mail.subject, "Personal access token \"ci\" revoked",
        "{name}"
    );
    assert!(mail.text.contains("\"ci\""), "{}", mail.text);
    assert!(mail.text.contains("from 127.0.0.1"), "{}", mail.text);
    assert!(
        mail.text.contains(&rcpat::time::iso8601(T0)),
        "{}",
        mail.text
    );
    for secret in [&old, &current, &other] {
        assert!(
            !mail.text.contains(secret.as_str()),
            "{name}: a token in the mail"
        );
        assert!(
            !mail.text.contains(&rcpat::token::hash_token(secret)),
            "{name}: a hash in the mail"
        );
    }

    // Again: 401, nothing left to revoke, no second mail or event.
    let again = fx.regenerate(&u, &old, None, "ci");
    assert_eq!(
        (again.status, again.body.as_str()),
        (401, UNKNOWN_401),
        "{name}"
    );
    assert!(again.events.is_empty(), "{name}");
    assert_eq!(fx.mailer.count(), mail_before + 1, "{name}");
    // The revoked current value is simply unknown now (it was removed, not superseded).
    let revoked = list(&fx, &u, &current);
    assert_eq!((revoked.status, revoked.events.len()), (401, 0), "{name}");
}

#[test]
fn a_superseded_value_presented_again_revokes_its_family() {
    for (name, backend) in backends() {
        detects_and_revokes(name, backend);
    }
}

#[test]
fn the_idempotent_retry_of_the_regeneration_is_not_theft() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        let u = fx.user("ida", None);
        let a = fx.pat(&u, "ci", false);
        let key = "rot-7c1e2f3a-9d4b-4e8a-b1c2";
        let with_key = |token: &str| {
            fx.send(
                Regenerate,
                &Request::new(
                    &[
                        ("X-User-Id", u.id.as_str()),
                        ("X-Auth-Token", token),
                        ("Idempotency-Key", key),
                    ],
                    br#"{"tokenName":"ci"}"#,
                ),
            )
        };
        let first = with_key(&a);
        let b = first.token();
        // The client lost the reply and retries with the value it holds,
        // after the grace period.
        fx.clock.advance_ms(AFTER_GRACE_MS);
        let retry = with_key(&a);
        assert_eq!((retry.status, &retry.body), (200, &first.body), "{name}");
        assert!(retry.events.is_empty(), "{name}");
        assert!(
            fx.authenticates(&u, &b),
            "{name}: the retry revoked nothing"
        );
        assert_eq!(fx.mailer.count(), 0, "{name}");
        // Once the kept reply has expired (24 hours), the retry is an
        // ordinary request with a replaced value: reuse.
        fx.clock.advance_ms(24 * 3_600_000);
        let late = with_key(&a);
        assert_eq!(
            (late.status, late.events.len()),
            (401, 1),
            "{name}: {}",
            late.body
        );
        assert!(!fx.authenticates(&u, &b), "{name}");
        // (And without the key at any time, of course.)
        let b2 = fx
            .call(Generate, &u, &u.login, None, r#"{"tokenName":"ci"}"#)
            .token();
        let c = fx.regenerate(&u, &b2, None, "ci").token();
        fx.clock.advance_ms(AFTER_GRACE_MS);
        assert_eq!(list(&fx, &u, &b2).events.len(), 1, "{name}");
        assert!(!fx.authenticates(&u, &c), "{name}");
    }
}

#[test]
fn a_token_removed_and_generated_again_is_a_new_family() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        let (u, old, current) = rotated(&fx, "remy");
        let removed = fx.call(Remove, &u, &u.login, None, r#"{"tokenName":"ci"}"#);
        assert_eq!(removed.status, 200, "{name}: {}", removed.body);
        let fresh = fx
            .call(Generate, &u, &u.login, None, r#"{"tokenName":"ci"}"#)
            .token();
        assert!(
            !superseded_kept(&fx, &u, &old),
            "{name}: forgotten with the removal"
        );
        for value in [&old, &current] {
            let r = list(&fx, &u, value);
            assert_eq!((r.status, r.events.len()), (401, 0), "{name}");
        }
        assert!(
            fx.authenticates(&u, &fresh),
            "{name}: the new family is untouched"
        );
        assert_eq!(fx.mailer.count(), 0, "{name}");
    }
}

#[test]
fn off_it_keeps_nothing_and_revokes_nothing() {
    for (name, backend) in backends() {
        let mut fx = Fx::with_storage(backend);
        fx.settings.reuse_detection = false;
        let (u, old, current) = rotated(&fx, "otto");
        assert!(!superseded_kept(&fx, &u, &old), "{name}: nothing stored");
        let r = list(&fx, &u, &old);
        assert_eq!(
            (r.status, r.body.as_str(), r.events.len()),
            (401, UNKNOWN_401, 0)
        );
        assert!(fx.authenticates(&u, &current), "{name}");
        // Turned on later, the values replaced while it was off are unknown.
        fx.settings.reuse_detection = true;
        assert_eq!(list(&fx, &u, &old).events.len(), 0, "{name}");
        assert!(fx.authenticates(&u, &current), "{name}");
    }
}

#[test]
fn within_the_grace_period_an_old_value_is_only_unknown() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        let u = fx.user("gina", None);
        let old = fx.pat(&u, "ci", false);
        let current = fx.regenerate(&u, &old, None, "ci").token();
        // A request that was on its way when the regeneration committed.
        fx.clock.advance_ms(9_999);
        let r = list(&fx, &u, &old);
        assert_eq!(
            (r.status, r.body.as_str(), r.events.len()),
            (401, UNKNOWN_401, 0)
        );
        assert!(fx.authenticates(&u, &current), "{name}");
        // The same value a moment after the grace period: reuse.
        fx.clock.advance_ms(1);
        assert_eq!(list(&fx, &u, &old).events.len(), 1, "{name}");
        assert!(!fx.authenticates(&u, &current), "{name}");
    }
}

#[test]
fn a_value_older_than_the_retention_is_unknown() {
    for (name, backend) in backends() {
        let mut fx = Fx::with_storage(backend);
        fx.settings.superseded_token_retention_days = 2;
        let (u, old, current) = rotated(&fx, "tess");
        fx.clock.advance_ms(2 * DAY_MS + 1);
        let r = list(&fx, &u, &old);
        assert_eq!((r.status, r.events.len()), (401, 0), "{name}");
        assert!(fx.authenticates(&u, &current), "{name}");
        // A token keeps its newest 32 values: 33 regenerations later, a
        // value is no longer recognised; the one after it still is.
        let mut values = vec![current];
        for _ in 0..33 {
            let next = fx
                .regenerate(&u, values.last().unwrap(), None, "ci")
                .token();
            values.push(next);
        }
        fx.clock.advance_ms(AFTER_GRACE_MS);
        let pushed_out = list(&fx, &u, &values[0]);
        assert_eq!(
            (pushed_out.status, pushed_out.events.len()),
            (401, 0),
            "{name}"
        );
        assert!(fx.authenticates(&u, &values[33]), "{name}");
        assert_eq!(
            list(&fx, &u, &values[1]).events.len(),
            1,
            "{name}: the 32nd newest"
        );
        assert!(!fx.authenticates(&u, &values[33]), "{name}");
    }
}

/// The old value presented while the current one regenerates itself, many
/// times over: whichever commits first, the family ends revoked (no token
/// of the name, and a regeneration that answered 200 handed out a value
/// that no longer authenticates), and the presenter always gets the 401.
#[test]
fn a_presentation_racing_a_regeneration_always_ends_revoked() {
    for (name, backend) in backends() {
        let fx = Fx::with_storage(backend);
        for round in 0..12 {
            let (u, old, current) = rotated(&fx, &format!("race{round}"));
            let (presented, regenerated) = std::thread::scope(|s| {
                let presenter = s.spawn(|| list(&fx, &u, &old));
                let regenerator = s.spawn(|| fx.regenerate(&u, &current, None, "ci"));
                (presenter.join().unwrap(), regenerator.join().unwrap())
            });
            assert_eq!(
                (presented.status, presented.body.as_str()),
                (401, UNKNOWN_401)
            );
            assert_eq!(
                fx.storage.find_personal_access_token(&u.id, "ci").unwrap(),
                None,
                "{name} round {round}: presented {:?}, regenerated {} {}",
                presented.events,
                regenerated.status,
                regenerated.body
            );
            if regenerated.status == 200 {
                assert!(!fx.authenticates(&u, &regenerated.token()), "{name}");
            } else {
                assert!(
                    [401, 409].contains(&regenerated.status),
                    "{name}: {}",
                    regenerated.body
                );
            }
        }
    }
}

/// Over HTTP, on SQLite: the reply on the wire, the security log line
/// (with the user and address, no token), the metric and the mailed notice.
#[test]
fn over_http_the_host_logs_counts_and_mails_it() {
    let dir = temp_dir("reuse-http");
    let db = dir.join("rcpat.sqlite");
    let (user, old) = {
        let services = host_example::startup::services_from(&host_example::config::Options {
            db: Some(db.clone()),
            ..Default::default()
        })
        .unwrap();
        let spec = host_example::admin::UserSpec {
            username: "hal",
            email: Some("hal@example.org"),
            password: None,
            roles: &["user"],
        };
        let id = host_example::admin::create_user(&services, &spec, COST).unwrap();
        let pat = host_example::admin::issue_personal_access_token(&services, &id, "deploy", false)
            .unwrap();
        (id, pat)
    };
    let mut child = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--superseded-token-grace-seconds", "0"])
        .arg("--db")
        .arg(&db)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    let log = collect(lines);
    let base = format!("http://{}", log_field(&listening, "addr"));
    let admin = format!("http://{}", log_field(&listening, "admin"));
    let agent = http_agent();
    let post = |token: &str| {
        let mut r = agent
            .post(format!("{base}/api/v1/users.regeneratePersonalAccessToken"))
            .header("Content-Type", "application/json")
            .header("X-User-Id", &user)
            .header("X-Auth-Token", token)
            .send(r#"{"tokenName":"deploy"}"#)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let (status, body) = post(&old);
    assert_eq!(status, 200, "{body}");
    let current = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(post(&old), (401, UNKNOWN_401.to_string()));
    assert_eq!(post(&current).0, 401, "revoked");

    let metrics = agent
        .get(format!("{admin}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "rcpat_token_reuse_detected_total 1"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().unwrap().join("\n");
    let line = log
        .lines()
        .find(|l| l.contains("token_reuse_detected"))
        .unwrap_or_else(|| panic!("no security line in:\n{log}"));
    assert!(line.contains(&user) && line.contains("127.0.0.1"), "{line}");
    assert!(line.contains("deploy"), "{line}");
    for secret in [&old, &current] {
        assert!(!log.contains(secret.as_str()), "a token in the log");
    }
    // The mail in the outbox: to the owner, naming the token.
    let outbox = dir.join("outbox");
    let mails: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(mail.contains("To: hal@example.org"), "{mail}");
    assert!(mail.contains("deploy"), "{mail}");
    for secret in [&old, &current] {
        assert!(!mail.contains(secret.as_str()), "a token in the mail");
    }
    // (The eml is read line by line by some clients: no bare token line either.)
    assert!(
        mail.as_bytes()
            .lines()
            .all(|l| !l.unwrap().contains(&current))
    );
}

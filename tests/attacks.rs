//! The second-factor and token rules as an attacker holding a stolen password
//! or session token would try to bend them, one test per hole: a method the
//! user never enabled, concurrent guesses past the limit, racing twins of a
//! right code, costly bodies, account enumeration by timing, codes recovered
//! from a copied database, bypass tokens managing other tokens, sessions
//! that never end.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use crate::common::*;
use host_example::storage::SqliteStorage;
use rcpat::model::{BackupCodeState, Request};
use serde_json::json;

fn sqlite_fx() -> Fx {
    Fx::with_storage(Arc::new(SqliteStorage::open_in_memory().unwrap()))
}

fn login_request(user: &str, password: &str, two_fa: Option<(&str, &str)>) -> Request {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some((method, code)) = two_fa {
        headers.extend([("x-2fa-method", method), ("x-2fa-code", code)]);
    }
    let body = json!({"user": user, "password": password}).to_string();
    Request::new(&headers, body.as_bytes())
}

fn failures(fx: &Fx, u: &User) -> u32 {
    fx.storage
        .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
        .unwrap()
        .expect("the session exists")
        .user
        .failures
        .count
}

#[test]
fn a_method_the_user_has_not_enabled_is_never_used() {
    for email_setting in [true, false] {
        let mut fx = Fx::new();
        fx.settings.email_enabled = email_setting;
        // TOTP only: email 2FA never turned on for this user.
        let u = fx.user("tom", Some(PASSWORD));
        let setup = fx.enable_totp(&u);
        fx.pat(&u, "ci", false);

        // PAT route: asking for email gets the TOTP challenge, and no mail.
        let r = fx.call(
            Regenerate,
            &u,
            &u.login,
            Some(("email", "")),
            r#"{"tokenName":"ci"}"#,
        );
        assert_eq!(r.error_type(), "totp-required", "{}", r.body);
        assert_eq!(r.json["details"]["method"], "totp");
        assert_eq!(r.json["details"]["availableMethods"], json!(["totp"]));
        // A code sent as "email" is checked as what it can be: TOTP.
        let r = fx.call(
            Generate,
            &u,
            &u.login,
            Some(("email", "123456")),
            r#"{"tokenName":"x"}"#,
        );
        assert_eq!(
            (r.error_type(), r.json["details"]["method"].as_str()),
            ("totp-invalid", Some("totp")),
            "{}",
            r.body
        );

        // Login: the same.
        let r = fx.send(Login, &login_request("tom", PASSWORD, Some(("email", ""))));
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (401, Some("totp-required"))
        );
        assert_eq!(r.json["details"]["method"], "totp");
        assert_eq!(
            fx.mailer.count(),
            0,
            "no code is ever mailed to a TOTP-only user"
        );

        // The user's real method still works.
        let code = fx.totp(&setup, 0);
        let r = fx.send(
            Login,
            &login_request("tom", PASSWORD, Some(("email", &code))),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// `threads` requests at once; returns their replies' error types.
fn at_once(
    threads: usize,
    request: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(threads));
    let request = Arc::new(request);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (barrier, request) = (barrier.clone(), request.clone());
            std::thread::spawn(move || {
                barrier.wait();
                request(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A six-digit code that is not the user's current TOTP code (nor a neighbour).
fn wrong_code(fx: &Fx, setup: &host_example::admin::TotpSetup, i: usize) -> String {
    let taken: Vec<String> = (-1..=1).map(|o| fx.totp(setup, o)).collect();
    (0..)
        .map(|k| format!("{:06}", (i * 7919 + k) % 1_000_000))
        .find(|c| !taken.contains(c))
        .unwrap()
}

#[test]
fn concurrent_wrong_codes_cannot_exceed_the_limit() {
    const GUESSES: usize = 64;
    // PAT route.
    let fx = Arc::new(sqlite_fx());
    let u = fx.user("gus", Some(PASSWORD));
    let setup = Arc::new(fx.enable_totp(&u));
    fx.pat(&u, "ci", false);
    let limit = fx.settings.max_failed_attempts as usize;
    let (f, uu, s) = (fx.clone(), u.clone(), setup.clone());
    let replies = at_once(GUESSES, move |i| {
        let code = wrong_code(&f, &s, i);
        let r = f.regenerate(&uu, &uu.login, Some(("totp", &code)), "ci");
        r.error_type().to_string()
    });
    let invalid = replies.iter().filter(|e| *e == "totp-invalid").count();
    let maxed = replies.iter().filter(|e| *e == "totp-max-attempts").count();
    assert_eq!(invalid + maxed, GUESSES, "{replies:?}");
    // Exactly `limit` codes were evaluated: the count, and the replies that
    // carried an evaluation below the limit.
    assert_eq!(failures(&fx, &u) as usize, limit);
    assert_eq!(invalid, limit - 1, "{replies:?}");

    // Login, with the right password and wrong codes. (The failed-login
    // limit is off here: 64 right passwords checked at the same instant
    // would each count until they succeed; that limit has its own test.)
    let mut fx = sqlite_fx();
    fx.settings.max_failed_logins_per_user = 0;
    let fx = Arc::new(fx);
    let u = fx.user("lia", Some(PASSWORD));
    let setup = Arc::new(fx.enable_totp(&u));
    let (f, s) = (fx.clone(), setup.clone());
    let replies = at_once(GUESSES, move |i| {
        let code = wrong_code(&f, &s, i);
        let r = f.send(
            Login,
            &login_request("lia", PASSWORD, Some(("totp", &code))),
        );
        r.json["error"].as_str().unwrap_or("").to_string()
    });
    assert_eq!(failures(&fx, &u) as usize, limit, "{replies:?}");
    assert_eq!(
        replies.iter().filter(|e| *e == "totp-invalid").count(),
        limit - 1,
        "{replies:?}"
    );
}

#[test]
fn racing_twins_of_a_right_code_do_not_lock_the_owner_out() {
    const TWINS: usize = 64;
    for round in 0..3 {
        let fx = Arc::new(sqlite_fx());
        let u = fx.user("ola", Some(PASSWORD));
        let setup = fx.enable_totp(&u);
        fx.pat(&u, "ci", false);
        let code = setup.backup_codes[0].clone();
        let (f, uu) = (fx.clone(), u.clone());
        let replies = at_once(TWINS, move |_| {
            let r = f.regenerate(&uu, &uu.login, Some(("totp", &code)), "ci");
            if r.status == 200 {
                "ok".to_string()
            } else {
                r.error_type().to_string()
            }
        });
        assert_eq!(
            replies.iter().filter(|r| *r == "ok").count(),
            1,
            "round {round}: {replies:?}"
        );
        // The owner is not locked out: the next right code works at once.
        let r = fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 0))), "ci");
        assert_eq!(r.status, 200, "round {round}: {} after {replies:?}", r.body);
        assert_eq!(failures(&fx, &u), 0);
    }
}

/// Median wall time of each of `fs` over `n` runs, taken in turns so that
/// other load on the machine (tests run in parallel) falls on all alike.
fn median_times(n: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut times = vec![Vec::new(); fs.len()];
    for _ in 0..n {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            let started = Instant::now();
            f();
            t.push(started.elapsed().as_secs_f64());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[n / 2]
        })
        .collect()
}

#[test]
fn many_keyed_bodies_cost_no_more_than_their_size() {
    let fx = Fx::new();
    // 7,000 distinct keys in about 62 KB, unauthenticated, at login (the
    // route that accepts bodies this large).
    let mut many = String::from("{");
    for i in 0..7000 {
        many.push_str(&format!("\"{i:04}\":0,"));
    }
    many.push_str("\"user\":\"nobody\"}");
    let one = format!("{{\"user\":\"{}\"}}", "x".repeat(many.len() - 11));
    assert!(many.len() > 60_000 && many.len() <= rcpat::reply::MAX_BODY_BYTES);
    let send = |body: &str| {
        let r = fx.send(Login, &Request::new(&[], body.as_bytes()));
        assert_eq!(r.status, 400, "{}", r.body);
    };
    let t = median_times(7, &mut [&mut || send(&many), &mut || send(&one)]);
    let (t_many, t_one) = (t[0], t[1]);
    // Quadratic duplicate detection made this ~200x; linear-ish is a few x.
    assert!(
        t_many < t_one * 25.0,
        "7,000 keys took {:.2} ms against {:.2} ms for one string of the same size",
        t_many * 1e3,
        t_one * 1e3
    );

    // The PAT routes refuse anything over a few KB before authentication.
    let r = fx.send(Regenerate, &Request::new(&[], many.as_bytes()));
    assert_eq!(
        (r.status, r.error_type()),
        (413, "error-request-too-large"),
        "{}",
        r.body
    );
    let u = fx.user("kim", None);
    fx.pat(&u, "ci", false);
    let padded = format!(r#"{{"tokenName":"ci","pad":"{}"}}"#, "x".repeat(4096));
    let r = fx.call(Regenerate, &u, &u.login, None, &padded);
    assert_eq!(r.status, 413, "{}", r.body);
}

#[test]
fn failed_logins_cost_the_same_whether_or_not_the_account_exists() {
    let fx = Fx::new();
    // Rocket.Chat's bcrypt cost, so a known user costs what the dummy does.
    host_example::admin::create_user(
        &fx.services,
        &host_example::admin::UserSpec {
            username: "known",
            email: Some("known@example.org"),
            password: Some(PASSWORD),
            roles: &["user"],
        },
        host_example::admin::BCRYPT_COST,
    )
    .unwrap();
    host_example::admin::create_user(
        &fx.services,
        &host_example::admin::UserSpec {
            username: "sso",
            email: None,
            password: None,
            roles: &["user"],
        },
        4,
    )
    .unwrap();
    let attempt = |user: &str| {
        let r = fx.send(Login, &login_request(user, "wrong password", None));
        assert_eq!(r.status, 401);
        r.body
    };
    // Identical replies...
    assert_eq!(attempt("known"), attempt("nobody"));
    assert_eq!(attempt("known"), attempt("sso"));
    assert_eq!(attempt("known"), attempt("nobody@example.org"));
    // ...and the same cost (before: 0.27 ms against 68 ms).
    let others = ["nobody", "sso", "nobody@example.org"];
    let t = median_times(
        5,
        &mut [
            &mut || drop(attempt("known")),
            &mut || drop(attempt(others[0])),
            &mut || drop(attempt(others[1])),
            &mut || drop(attempt(others[2])),
        ],
    );
    let known = t[0];
    for (other, t) in others.iter().zip(&t[1..]) {
        let ratio = t / known;
        assert!(
            (0.5..2.0).contains(&ratio),
            "{other}: {:.1} ms against {:.1} ms for a known user",
            t * 1e3,
            known * 1e3
        );
    }
}

#[test]
fn codes_cannot_be_recovered_from_a_copied_database_without_the_key() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let fx = sqlite_fx();
    let u = fx.user("dan", Some(PASSWORD));
    let setup = fx.enable_totp(&u);
    fx.storage.set_totp(&u.id, None).unwrap();
    fx.storage.set_email_two_factor(&u.id, true).unwrap();
    fx.pat(&u, "ci", false);
    // An emailed code goes out and is stored.
    let r = fx.regenerate(&u, &u.login, None, "ci");
    assert_eq!(r.json["details"]["codeGenerated"], true, "{}", r.body);
    let mailed = host_example::mail::code_in(&fx.mailer.last().unwrap().text).unwrap();
    let stored = fx
        .storage
        .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
        .unwrap()
        .unwrap()
        .user
        .email_code
        .unwrap();
    // The attack that recovered it in 1.5 s: try all 10^6 codes against the
    // salt. Without the key, no candidate matches.
    let salt = hex_decode(&stored.salt);
    let target = hex_decode(&stored.code_hash);
    let base = <Hmac<Sha256> as Mac>::new_from_slice(&salt).unwrap();
    let mut digits = *b"000000";
    for n in 0..1_000_000u32 {
        let mut rest = n;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let mut mac = base.clone();
        mac.update(&digits);
        assert!(
            mac.finalize().into_bytes().as_slice() != target.as_slice(),
            "code {n:06} recovered without the key"
        );
    }
    // With the key (which lives outside the database) the mailed code is
    // exactly the stored one: the check above could have failed.
    assert_eq!(
        rcpat::codes::email_code_hash(fx.services.code_key(), &stored.salt, &mailed),
        stored.code_hash
    );

    // Backup codes: no longer the unsalted SHA-256 of 46 bits.
    let v = fx.user("vic", Some(PASSWORD));
    let setup_v = fx.enable_totp(&v);
    assert_eq!(setup_v.backup_codes.len(), 12);
    for code in &setup_v.backup_codes {
        let state = |hashed: &str| fx.storage.find_backup_code(&v.id, hashed).unwrap();
        let plain = hex_encode(&Sha256::digest(code.as_bytes()));
        assert_eq!(
            state(&plain),
            BackupCodeState::Unknown,
            "backup code {code} stored unkeyed"
        );
        let keyed = rcpat::codes::backup_code_hash(fx.services.code_key(), &v.id, code);
        assert_eq!(state(&keyed), BackupCodeState::Unused);
    }
    // Another host's key (a copied database on the attacker's machine)
    // verifies nothing: vic's backup code fails there.
    let thief = Fx::with_storage(fx.storage.clone());
    thief.pat(&v, "ci", false);
    let r = thief.regenerate(&v, &v.login, Some(("totp", &setup_v.backup_codes[0])), "ci");
    assert_eq!(r.error_type(), "totp-invalid", "{}", r.body);
    let r = fx.regenerate(&v, &v.login, Some(("totp", &setup_v.backup_codes[0])), "ci");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(setup);
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn bypass_tokens_cannot_manage_other_tokens_without_a_second_factor() {
    let fx = Fx::new();
    let u = fx.user("bob", Some(PASSWORD));
    let setup = fx.enable_totp(&u);
    let robot = fx.pat(&u, "robot", true);
    fx.pat(&u, "ci", false);
    let challenged = |r: &Reply| r.error_type() == "totp-required";

    // A leaked bypass token cannot mint another bypass token...
    let r = fx.call(
        Generate,
        &u,
        &robot,
        None,
        r#"{"tokenName":"child","bypassTwoFactor":true}"#,
    );
    assert!(challenged(&r), "{}", r.body);
    // ...nor regenerate or remove another token...
    assert!(challenged(&fx.regenerate(&u, &robot, None, "ci")));
    let r = fx.call(Remove, &u, &robot, None, r#"{"tokenName":"ci"}"#);
    assert!(challenged(&r), "{}", r.body);
    assert!(fx.authenticates(&u, &robot));
    // ...but still rotates itself and creates ordinary tokens, as automation needs.
    let plain = fx.call(Generate, &u, &robot, None, r#"{"tokenName":"plain"}"#);
    assert_eq!(plain.status, 200, "{}", plain.body);
    let robot2 = fx.regenerate(&u, &robot, None, "robot").token();
    // With a real factor it may do the rest.
    let r = fx.call(
        Generate,
        &u,
        &robot2,
        Some(("totp", &fx.totp(&setup, 0))),
        r#"{"tokenName":"child","bypassTwoFactor":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Rocket.Chat's rule, as a setting: bypass means bypass.
    let mut rc = Fx::new();
    rc.settings.bypass_tokens_unrestricted = true;
    let w = rc.user("wes", Some(PASSWORD));
    rc.enable_totp(&w);
    let robot = rc.pat(&w, "robot", true);
    rc.pat(&w, "ci", false);
    let r = rc.call(
        Generate,
        &w,
        &robot,
        None,
        r#"{"tokenName":"child","bypassTwoFactor":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(rc.regenerate(&w, &robot, None, "ci").status, 200);
}

#[test]
fn sessions_expire_and_logout_ends_them() {
    let mut fx = Fx::new();
    let u = fx.user("sue", Some(PASSWORD));
    let pat = fx.pat(&u, "ci", false);
    let me = |fx: &Fx, token: &str| {
        let r = fx.send(
            Me,
            &Request::new(
                &[("X-User-Id", u.id.as_str()), ("X-Auth-Token", token)],
                b"",
            ),
        );
        r.status
    };
    // 90 days by default, counted from the login.
    fx.clock.advance_secs(90 * 86_400 - 1);
    assert_eq!(me(&fx, &u.login), 200);
    fx.clock.advance_secs(1);
    assert_eq!(me(&fx, &u.login), 401);
    // Personal access tokens do not expire; 0 days means sessions never do.
    assert_eq!(me(&fx, &pat), 200);
    fx.settings.login_expiration_days = 0;
    assert_eq!(me(&fx, &u.login), 200);
    fx.settings.login_expiration_days = 3650;
    fx.clock.advance_secs(10 * 365 * 86_400);
    assert_eq!(me(&fx, &u.login), 401, "a ten-year-old session");

    // Logout removes the presented session token, with Rocket.Chat's reply.
    let fx = Fx::new();
    let u = fx.user("sal", Some(PASSWORD));
    let other = host_example::admin::issue_login_token(&fx.services, &u.id).unwrap();
    let pat = fx.pat(&u, "ci", false);
    let logout = |token: &str| {
        fx.send(
            Logout,
            &Request::new(
                &[("X-User-Id", u.id.as_str()), ("X-Auth-Token", token)],
                b"",
            ),
        )
    };
    let r = logout(&u.login);
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            200,
            r#"{"status":"success","data":{"message":"You've been logged out!"}}"#
        )
    );
    assert!(!fx.authenticates(&u, &u.login));
    assert_eq!(logout(&u.login).status, 401);
    assert!(fx.authenticates(&u, &other), "other sessions stay");
    // A personal access token is not a session: removing it takes the
    // removal endpoint and its second factor.
    let r = logout(&pat);
    assert_eq!(
        (r.status, r.error_type()),
        (400, "error-logout-personal-access-token")
    );
    assert!(fx.authenticates(&u, &pat));
}

#[test]
fn failed_logins_block_the_account_then_the_address_until_the_block_passes() {
    let fx = sqlite_fx();
    fx.user("ann", Some(PASSWORD));
    let login = |user: &str, password: &str, address: &str| {
        let mut req = login_request(user, password, None);
        req.client_address = address.to_string();
        let r = fx.send(Login, &req);
        (
            r.status,
            r.json["error"].as_str().unwrap_or("").to_string(),
            r.body,
        )
    };
    // A success resets the account's count: 9 failures, a success, 9 more
    // (from elsewhere: the address of the success is now known for ann).
    for _ in 0..9 {
        assert_eq!(login("ann", "guess", "10.0.0.1").1, "Unauthorized");
    }
    assert_eq!(login("ann", PASSWORD, "10.0.0.1").0, 200);
    for _ in 0..9 {
        assert_eq!(login("ann", "guess", "10.0.0.2").1, "Unauthorized");
    }
    // The tenth failure blocks the account, from every address but the
    // ones ann logged in from, even with the right password, with
    // Rocket.Chat's reply.
    login("ann", "guess", "10.0.0.2");
    let (status, _, body) = login("ann", PASSWORD, "10.0.0.9");
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            r#"{"status":"error","error":"error-login-blocked-for-user","message":"Login has been temporarily blocked For User"}"#
        )
    );
    assert_eq!(login("ann", PASSWORD, "10.0.0.1").0, 200, "a known address");
    for _ in 0..10 {
        login("ann", "guess", "10.0.0.2");
    }
    // Another host on the same database sees the same block.
    let dir = temp_dir("shared");
    let path = dir.join("shared.sqlite");
    let a = Fx::with_storage(Arc::new(SqliteStorage::open(&path).unwrap()));
    a.user("bo", Some(PASSWORD));
    for _ in 0..10 {
        a.send(Login, &login_request("bo", "guess", None));
    }
    let b = Fx::with_storage(Arc::new(SqliteStorage::open(&path).unwrap()));
    let r = b.send(Login, &login_request("bo", PASSWORD, None));
    assert_eq!(
        r.json["error"], "error-login-blocked-for-user",
        "{}",
        r.body
    );
    // After five minutes the account may try again.
    fx.clock.advance_secs(5 * 60);
    assert_eq!(login("ann", PASSWORD, "10.0.0.1").0, 200);

    // 50 failures from one address, over any accounts (unknown ones too),
    // block the address; other addresses are unaffected.
    for i in 0..50 {
        let (_, error, _) = login(&format!("nobody{i}"), "guess", "10.0.0.66");
        assert_eq!(error, "Unauthorized", "attempt {i}");
    }
    let (status, error, _) = login("ann", PASSWORD, "10.0.0.66");
    assert_eq!(
        (status, error.as_str()),
        (401, "error-login-blocked-for-ip")
    );
    assert_eq!(login("ann", PASSWORD, "10.0.0.67").0, 200);
    fx.clock.advance_secs(5 * 60);
    assert_eq!(login("ann", PASSWORD, "10.0.0.66").0, 200);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

//! Second-factor behaviour through the component: TOTP windows and replay,
//! backup codes, emailed codes, the password fallback, bypass tokens, method
//! selection, the per-user failure limit, remember-me.

use crate::common::*;
use rcpat::model::{BackupCodeState, TotpAlgorithm};

fn totp_user(fx: &Fx) -> (User, host_example::admin::TotpSetup) {
    let u = fx.user("tina", Some(PASSWORD));
    let setup = fx.enable_totp(&u);
    fx.pat(&u, "ci", false);
    (u, setup)
}

#[test]
fn totp_window_edges() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    for (offset, ok) in [(-2, false), (2, false), (-1, true), (0, true), (1, true)] {
        let code = fx.totp(&setup, offset);
        let r = fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci");
        assert_eq!(r.status == 200, ok, "offset {offset}: {}", r.body);
        if !ok {
            assert_eq!(r.error_type(), "totp-invalid");
        }
        // Next attempt in a fresh step so single use does not interfere.
        fx.clock.advance_secs(90);
    }
}

#[test]
fn totp_max_delta_zero_accepts_only_the_current_step() {
    let mut fx = Fx::new();
    fx.settings.totp_max_delta = 0;
    let (u, setup) = totp_user(&fx);
    let r = fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, -1))), "ci");
    assert_eq!(r.error_type(), "totp-invalid");
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 0))), "ci")
            .status,
        200
    );
}

#[test]
fn totp_code_is_accepted_once() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    let code = fx.totp(&setup, 0);
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci")
            .status,
        200
    );
    let replay = fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci");
    assert_eq!((replay.status, replay.error_type()), (400, "totp-invalid"));
    // An earlier step is refused too once a later one was used...
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, -1))), "ci")
            .error_type(),
        "totp-invalid"
    );
    // ...and the next step works.
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 1))), "ci")
            .status,
        200
    );
}

#[test]
fn a_failed_request_does_not_spend_the_code() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    let code = fx.totp(&setup, 0);
    let r = fx.regenerate(&u, &u.login, Some(("totp", &code)), "does-not-exist");
    assert_eq!(r.error_type(), "error-token-does-not-exists");
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci")
            .status,
        200
    );
}

#[test]
fn totp_codes_are_parsed_strictly() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    let code = fx.totp(&setup, 0);
    // speakeasy accepts "+05924" for "005924"; we accept only the exact digits.
    let signed = format!("+{}", &code[1..]);
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let long = format!("{code}0");
    for bad in [
        signed.as_str(),
        spaced.as_str(),
        &code[..5],
        long.as_str(),
        "abcdef",
        "１２３４５６",
    ] {
        let r = fx.regenerate(&u, &u.login, Some(("totp", bad)), "ci");
        assert_eq!(r.error_type(), "totp-invalid", "{bad:?}");
    }
    // Surrounding whitespace is HTTP framing, not part of the value.
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &format!(" {code}\t"))), "ci")
            .status,
        200
    );
}

#[test]
fn sha256_and_sha512_eight_digit_enrolments() {
    for alg in [
        TotpAlgorithm::Sha256,
        TotpAlgorithm::Sha512,
        TotpAlgorithm::Sha1,
    ] {
        let fx = Fx::new();
        let u = fx.user("tina", None);
        let setup = host_example::admin::enable_totp(&fx.services, &u.id, "tina", alg, 8).unwrap();
        fx.pat(&u, "ci", false);
        let six = host_example::admin::totp_code(&setup.secret, alg, 6, T0, 0);
        assert_eq!(
            fx.regenerate(&u, &u.login, Some(("totp", &six)), "ci")
                .error_type(),
            "totp-invalid"
        );
        let eight = host_example::admin::totp_code(&setup.secret, alg, 8, T0, 0);
        assert_eq!(
            fx.regenerate(&u, &u.login, Some(("totp", &eight)), "ci")
                .status,
            200,
            "{alg:?}"
        );
        // Backup codes still work for 8-digit enrolments.
        assert_eq!(
            fx.regenerate(&u, &u.login, Some(("totp", &setup.backup_codes[0])), "ci")
                .status,
            200
        );
    }
}

#[test]
fn backup_codes_are_single_use() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    let code = &setup.backup_codes[3];
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", code)), "ci")
            .status,
        200
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", code)), "ci")
            .error_type(),
        "totp-invalid"
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &setup.backup_codes[4])), "ci")
            .status,
        200
    );
    let key = fx.services.code_key();
    let state = |code: &str| {
        let hashed = rcpat::codes::backup_code_hash(key, &u.id, code);
        fx.storage.find_backup_code(&u.id, &hashed).unwrap()
    };
    let states: Vec<_> = setup.backup_codes.iter().map(|c| state(c)).collect();
    let spent = states
        .iter()
        .filter(|s| **s == BackupCodeState::Spent)
        .count();
    let unused = states
        .iter()
        .filter(|s| **s == BackupCodeState::Unused)
        .count();
    assert_eq!((spent, unused), (2, 10));
    // Backup codes compare exactly (case matters).
    let swapped: String = setup.backup_codes[5]
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if swapped != setup.backup_codes[5] {
        assert_eq!(
            fx.regenerate(&u, &u.login, Some(("totp", &swapped)), "ci")
                .error_type(),
            "totp-invalid"
        );
    }
}

fn email_user(fx: &Fx) -> User {
    let u = fx.user("emma", Some(PASSWORD));
    fx.storage.set_email_two_factor(&u.id, true).unwrap();
    fx.pat(&u, "ci", false);
    u
}

fn mailed_code(fx: &Fx) -> String {
    host_example::mail::code_in(&fx.mailer.last().expect("a mail").text)
        .expect("a code in the mail")
}

#[test]
fn email_code_challenge_send_and_use() {
    let fx = Fx::new();
    let u = email_user(&fx);
    let r = fx.regenerate(&u, &u.login, None, "ci");
    assert_eq!(r.status, 400);
    assert_eq!(r.json["details"]["method"], "email");
    assert_eq!(r.json["details"]["codeGenerated"], true);
    assert_eq!(r.json["details"]["emailOrUsername"], "emma");
    assert_eq!(r.json["details"]["codeExpires"], "2027-01-15T09:00:15.000Z");
    assert_eq!(
        r.json["details"]["availableMethods"],
        serde_json::json!(["email"])
    );
    let mail = fx.mailer.last().unwrap();
    assert_eq!(
        (mail.to.as_slice(), mail.subject.as_str()),
        (&["emma@example.org".to_string()][..], "Authentication code")
    );
    let code = mailed_code(&fx);
    // The stored code is hashed: the plaintext appears nowhere in storage.
    let session = fx
        .storage
        .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
        .unwrap()
        .unwrap();
    let stored = session.user.email_code.unwrap();
    assert!(!stored.code_hash.contains(&code) && stored.code_hash.len() == 64);
    // A second challenge reuses the outstanding code: no new mail.
    let again = fx.regenerate(&u, &u.login, None, "ci");
    assert_eq!(again.json["details"]["codeGenerated"], false);
    assert_eq!(fx.mailer.count(), 1);
    // The dashed form from the mail works; the code is then spent.
    let dashed = format!("{}-{}", &code[..3], &code[3..]);
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("email", &dashed)), "ci")
            .status,
        200
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("email", &code)), "ci")
            .error_type(),
        "totp-invalid"
    );
}

#[test]
fn email_code_expires() {
    let fx = Fx::new();
    let u = email_user(&fx);
    fx.regenerate(&u, &u.login, None, "ci");
    let code = mailed_code(&fx);
    fx.clock.advance_secs(3600);
    let r = fx.regenerate(&u, &u.login, Some(("email", &code)), "ci");
    assert_eq!(r.error_type(), "totp-invalid");
    // The expired code was replaced by a fresh one, mailed at once.
    assert_eq!(r.json["details"]["codeGenerated"], true);
    assert_eq!(fx.mailer.count(), 2);
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("email", &mailed_code(&fx))), "ci")
            .status,
        200
    );
}

#[test]
fn email_code_attempts_are_limited_then_a_new_code_is_sent() {
    let fx = Fx::new();
    let u = email_user(&fx);
    fx.regenerate(&u, &u.login, None, "ci");
    let code = mailed_code(&fx);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for i in 1..=5 {
        let r = fx.regenerate(&u, &u.login, Some(("email", wrong)), "ci");
        let expected = if i < 5 {
            "totp-invalid"
        } else {
            "totp-max-attempts"
        };
        assert_eq!(r.error_type(), expected, "attempt {i}");
        assert_eq!(
            r.json["error"],
            if i < 5 {
                "TOTP Invalid [totp-invalid]"
            } else {
                "TOTP Maximun Failed Attempts Reached [totp-max-attempts]"
            }
        );
    }
    // The exhausted code no longer works, and the next request mails a new one (resend).
    let r = fx.regenerate(&u, &u.login, Some(("email", &code)), "ci");
    assert_eq!(r.json["details"]["codeGenerated"], true);
    assert_eq!(r.error_type(), "totp-invalid");
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("email", &mailed_code(&fx))), "ci")
            .status,
        200
    );
}

#[test]
fn email_code_format_is_strict() {
    let fx = Fx::new();
    let u = email_user(&fx);
    fx.regenerate(&u, &u.login, None, "ci");
    let code = mailed_code(&fx);
    for bad in [
        format!("{}.{}", &code[..3], &code[3..]),
        format!("{} {}", &code[..3], &code[3..]),
        format!("+{code}"),
        code[..5].to_string(),
    ] {
        assert_eq!(
            fx.regenerate(&u, &u.login, Some(("email", &bad)), "ci")
                .error_type(),
            "totp-invalid",
            "{bad}"
        );
    }
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("email", &code)), "ci")
            .status,
        200
    );
}

#[test]
fn mail_failure_is_a_clear_error_and_stores_no_code() {
    let fx = Fx::new();
    let u = email_user(&fx);
    fx.mailer
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = fx.regenerate(&u, &u.login, None, "ci");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body,
        r#"{"success":false,"error":"The authentication code email could not be sent [error-email-send-failed]","errorType":"error-email-send-failed"}"#
    );
    let session = fx
        .storage
        .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
        .unwrap()
        .unwrap();
    assert!(session.user.email_code.is_none());
}

#[test]
fn password_fallback() {
    let fx = Fx::new();
    let u = fx.user("pat", Some(PASSWORD));
    fx.pat(&u, "ci", false);
    // The plaintext password is not a valid code; its hex SHA-256 is, in either case.
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("password", PASSWORD)), "ci")
            .error_type(),
        "totp-invalid"
    );
    let code = password_code(PASSWORD);
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("password", &code)), "ci")
            .status,
        200
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("password", &code.to_uppercase())), "ci")
            .status,
        200
    );
    // The method header is optional for the password case.
    let r = fx.call(Regenerate, &u, &u.login, None, r#"{"tokenName":"ci"}"#);
    assert_eq!(r.json["details"]["method"], "password");
    let mut headers_only_code = rcpat::model::Request::new(
        &[
            ("X-User-Id", &u.id),
            ("X-Auth-Token", &u.login),
            ("x-2fa-code", &code),
        ],
        br#"{"tokenName":"ci"}"#,
    );
    headers_only_code.client_address = "10.0.0.1".into();
    assert_eq!(fx.send(Regenerate, &headers_only_code).status, 200);
    assert_eq!(
        fx.regenerate(
            &u,
            &u.login,
            Some(("password", &password_code("wrong"))),
            "ci"
        )
        .error_type(),
        "totp-invalid"
    );
}

#[test]
fn password_fallback_can_be_turned_off_and_users_without_methods_pass() {
    let mut fx = Fx::new();
    fx.settings.enforce_password_fallback = false;
    let u = fx.user("pat", Some(PASSWORD));
    fx.pat(&u, "ci", false);
    assert_eq!(fx.regenerate(&u, &u.login, None, "ci").status, 200);
    // A user with no password and no method is never challenged (Rocket.Chat's rule).
    let fx = Fx::new();
    let ldap = fx.user("ldap", None);
    fx.pat(&ldap, "ci", false);
    assert_eq!(fx.regenerate(&ldap, &ldap.login, None, "ci").status, 200);
}

#[test]
fn bypass_tokens_skip_two_factor_and_others_do_not() {
    let fx = Fx::new();
    let (u, _setup) = totp_user(&fx);
    let bypass = fx.pat(&u, "robot", true);
    let plain = fx.pat(&u, "human", false);
    assert_eq!(fx.regenerate(&u, &bypass, None, "robot").status, 200);
    assert_eq!(
        fx.regenerate(&u, &plain, None, "human").error_type(),
        "totp-required"
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, None, "human").error_type(),
        "totp-required"
    );
}

#[test]
fn two_factor_can_be_disabled_by_setting() {
    let mut fx = Fx::new();
    fx.settings.two_factor_enabled = false;
    let (u, _) = totp_user(&fx);
    assert_eq!(fx.regenerate(&u, &u.login, None, "ci").status, 200);
}

#[test]
fn method_selection() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    fx.storage.set_email_two_factor(&u.id, true).unwrap();
    // Default: the first enabled method (TOTP); both are listed.
    let r = fx.regenerate(&u, &u.login, None, "ci");
    assert_eq!(r.json["details"]["method"], "totp");
    assert_eq!(
        r.json["details"]["availableMethods"],
        serde_json::json!(["totp", "email"])
    );
    assert_eq!(fx.mailer.count(), 0);
    // x-2fa-method: email selects email (and mails a code).
    let r = fx.call(
        Regenerate,
        &u,
        &u.login,
        Some(("email", "")),
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(
        (r.json["details"]["method"].as_str(), fx.mailer.count()),
        (Some("email"), 1)
    );
    // "password" while a method is enabled still selects that method (TOTP).
    let r = fx.regenerate(
        &u,
        &u.login,
        Some(("password", &password_code(PASSWORD))),
        "ci",
    );
    assert_eq!(
        (r.error_type(), r.json["details"]["method"].as_str()),
        ("totp-invalid", Some("totp"))
    );
    // Naming a method the user lacks is not honoured (stricter than
    // Rocket.Chat): the user's own method, here the password fallback, is
    // checked instead.
    let plain = fx.user("plain", Some(PASSWORD));
    fx.pat(&plain, "ci", false);
    let r = fx.regenerate(&plain, &plain.login, Some(("totp", "123456")), "ci");
    assert_eq!(
        (r.error_type(), r.json["details"]["method"].as_str()),
        ("totp-invalid", Some("password"))
    );
    // Unknown method names are refused clearly.
    let r = fx.regenerate(&u, &u.login, Some(("sms", "123456")), "ci");
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            400,
            r#"{"success":false,"error":"The 'x-2fa-method' header must be totp, email or password [error-invalid-2fa-method]","errorType":"error-invalid-2fa-method"}"#
        )
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 0))), "ci")
            .status,
        200
    );
}

#[test]
fn wrong_codes_are_limited_per_user_for_every_method() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    let limit = fx.settings.max_failed_attempts;
    for i in 1..=limit {
        let r = fx.regenerate(&u, &u.login, Some(("totp", "000000")), "ci");
        let expected = if i < limit {
            "totp-invalid"
        } else {
            "totp-max-attempts"
        };
        if fx.totp(&setup, 0) != "000000" {
            assert_eq!(r.error_type(), expected, "attempt {i}");
        }
    }
    // Locked: even the right code (and the password method) is refused.
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 0))), "ci")
            .error_type(),
        "totp-max-attempts"
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &setup.backup_codes[0])), "ci")
            .error_type(),
        "totp-max-attempts"
    );
    // After the window the user may try again, and success resets the count.
    fx.clock
        .advance_secs(u64::from(fx.settings.failed_attempts_window_seconds));
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 0))), "ci")
            .status,
        200
    );
    let session = fx
        .storage
        .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
        .unwrap()
        .unwrap();
    assert_eq!(session.user.failures.count, 0);

    // The password method is limited too.
    let p = fx.user("pw", Some(PASSWORD));
    fx.pat(&p, "ci", false);
    for _ in 0..limit {
        fx.regenerate(
            &p,
            &p.login,
            Some(("password", &password_code("guess"))),
            "ci",
        );
    }
    let r = fx.regenerate(
        &p,
        &p.login,
        Some(("password", &password_code(PASSWORD))),
        "ci",
    );
    assert_eq!(r.error_type(), "totp-max-attempts");
}

#[test]
fn remember_me_is_off_by_default_and_keyed_on_client_when_on() {
    let fx = Fx::new();
    let (u, setup) = totp_user(&fx);
    assert_eq!(
        fx.regenerate(&u, &u.login, Some(("totp", &fx.totp(&setup, 0))), "ci")
            .status,
        200
    );
    assert_eq!(
        fx.regenerate(&u, &u.login, None, "ci").error_type(),
        "totp-required"
    );

    let mut fx = Fx::new();
    fx.settings.remember_for_seconds = 300;
    let (u, setup) = totp_user(&fx);
    fx.clock.advance_secs(600); // past the grace period after registration
    let req = |ua: &str, addr: &str, code: Option<&str>| {
        let mut headers = vec![
            ("X-User-Id", u.id.as_str()),
            ("X-Auth-Token", u.login.as_str()),
            ("User-Agent", ua),
        ];
        if let Some(c) = code {
            headers.push(("x-2fa-code", c));
        }
        let mut r = rcpat::model::Request::new(&headers, br#"{"tokenName":"ci"}"#);
        r.client_address = addr.into();
        r
    };
    let code = fx.totp(&setup, 0);
    assert_eq!(
        fx.send(Regenerate, &req("cli/1", "10.1.1.1", Some(&code)))
            .status,
        200
    );
    assert_eq!(
        fx.send(Regenerate, &req("cli/1", "10.1.1.1", None)).status,
        200,
        "remembered"
    );
    assert_eq!(
        fx.send(Regenerate, &req("cli/2", "10.1.1.1", None)).status,
        400,
        "other agent"
    );
    assert_eq!(
        fx.send(Regenerate, &req("cli/1", "10.9.9.9", None)).status,
        400,
        "other address"
    );
    fx.clock.advance_secs(301);
    assert_eq!(
        fx.send(Regenerate, &req("cli/1", "10.1.1.1", None)).status,
        400,
        "expired"
    );
}

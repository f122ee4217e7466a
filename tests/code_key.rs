//! A code key shorter than 32 bytes fails closed (contract 0.9.0): through
//! the component, every request that would check, store or mail a second
//! factor answers 500 `error-code-key-missing` and changes nothing; requests
//! that need no second factor still work; `serve`'s application refuses to
//! start with one.

use std::sync::Arc;

use crate::common::*;
use host_example::runtime::Endpoint::*;
use host_example::storage::MemoryStorage;

fn fx_with_key(key: &[u8]) -> Fx {
    let mut fx = Fx::new();
    fx.services = fx.services.clone().with_code_key(key);
    fx
}

fn assert_refused(reply: &Reply) {
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(
        reply.json["errorType"], "error-code-key-missing",
        "{}",
        reply.body
    );
    assert!(reply.body.contains("settings.code-key"), "{}", reply.body);
}

#[test]
fn short_code_keys_refuse_every_second_factor_check() {
    for key in [&b""[..], &[7u8; 31][..]] {
        let fx = fx_with_key(key);
        // TOTP: no challenge, no verification, no count.
        let u = fx.user("totp", Some(PASSWORD));
        let pat = fx.pat(&u, "ci", false);
        let setup = fx.enable_totp(&u);
        assert_refused(&fx.regenerate(&u, &u.login, None, "ci"));
        assert_refused(&fx.regenerate(&u, &u.login, Some(("totp", "000000")), "ci"));
        let code = fx.totp(&setup, 0);
        assert_refused(&fx.regenerate(&u, &u.login, Some(("totp", &code)), "ci"));
        assert_refused(&fx.regenerate(&u, &u.login, Some(("totp", &setup.backup_codes[0])), "ci"));
        let user = fx
            .storage
            .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None);
        let session = user.unwrap().unwrap();
        assert_eq!(
            session.user.failures.count, 0,
            "a refused check counts nothing"
        );
        assert!(fx.authenticates(&u, &pat), "the token is unchanged");
        // Login: the password checks out, the second factor is refused in
        // the login route's shape.
        let body = serde_json::json!({"user": "totp", "password": PASSWORD, "code": code});
        let login = fx.send(
            Login,
            &rcpat::model::Request::new(&[], body.to_string().as_bytes()),
        );
        assert_eq!(login.status, 500, "{}", login.body);
        assert_eq!(
            login.json["error"], "error-code-key-missing",
            "{}",
            login.body
        );
        // Email: no code mailed, none stored.
        let e = fx.user("mailed", Some(PASSWORD));
        fx.pat(&e, "ci", false);
        fx.storage.set_email_two_factor(&e.id, true).unwrap();
        let before = fx.mailer.count();
        assert_refused(&fx.regenerate(&e, &e.login, Some(("email", "123456")), "ci"));
        assert_refused(&fx.call(Generate, &e, &e.login, None, r#"{"tokenName":"other"}"#));
        assert_eq!(fx.mailer.count(), before, "no mail");
        let stored = fx
            .storage
            .authenticate(&e.id, &rcpat::token::hash_token(&e.login), None);
        assert!(
            stored.unwrap().unwrap().user.email_code.is_none(),
            "no code stored"
        );
        // What needs no second factor is unaffected.
        let me = fx.call(Me, &u, &u.login, None, "");
        assert_eq!(me.status, 200, "{}", me.body);
        let listed = fx.call(List, &u, &u.login, None, "");
        assert_eq!(listed.status, 200, "{}", listed.body);
        let plain = fx.user("plain", None);
        fx.pat(&plain, "ci", false);
        // No password, no TOTP, no email: no method, so no check.
        assert_eq!(fx.regenerate(&plain, &plain.login, None, "ci").status, 200);
    }
    // A 32-byte key: the usual challenge.
    let fx = fx_with_key(&[7u8; 32]);
    let u = fx.user("totp", Some(PASSWORD));
    fx.pat(&u, "ci", false);
    fx.enable_totp(&u);
    assert_eq!(
        fx.regenerate(&u, &u.login, None, "ci").error_type(),
        "totp-required"
    );
}

#[test]
fn the_server_refuses_to_start_with_a_short_code_key() {
    let storage = Arc::new(MemoryStorage::new());
    let services = host_example::services::Services::new(
        storage,
        Arc::new(host_example::mail::MemoryMailer::default()),
    );
    let app = |services: host_example::services::Services| {
        host_example::server::App::new(
            host_example::server::Backend::Native,
            services,
            rcpat::model::Settings::default(),
            host_example::server::Limits::default(),
        )
    };
    let err = app(services.clone().with_code_key(b"short"))
        .err()
        .expect("a short code key is refused");
    assert!(err.to_string().contains("settings.code-key"), "{err}");
    assert!(app(services).is_ok());
}

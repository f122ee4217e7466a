//! Bad input gets a defined Rocket.Chat-style error, never a trap, and
//! never reaches storage writes.

use std::sync::Arc;

use crate::common::*;
use host_example::storage::{Backend, FaultMode, FaultyStorage, MemoryStorage};
use rcpat::model::{Header, Request};

fn expect(r: &Reply, status: u16, body: &str) {
    assert_eq!((r.status, r.body.as_str()), (status, body));
}

/// A fixture whose storage counts calls (and never fails).
fn counting() -> (Fx, User, Arc<FaultyStorage>) {
    let inner: Arc<dyn Backend> = Arc::new(MemoryStorage::new());
    let setup = Fx::with_storage(inner.clone());
    let u = setup.user("bea", None);
    setup.pat(&u, "ci", false);
    let counter = Arc::new(FaultyStorage::new(inner, usize::MAX, FaultMode::Before));
    (Fx::with_storage(counter.clone()), u, counter)
}

#[test]
fn malformed_bodies() {
    let (fx, u, calls) = counting();
    let cases: &[(&[u8], &str)] = &[
        (b"{", "The request body is not valid JSON"),
        (b"tokenName=ci", "The request body is not valid JSON"),
        (
            b"{\"tokenName\":\"ci\"} trailing",
            "The request body is not valid JSON",
        ),
        (
            b"{\"tokenName\":\"\xc3\x28\"}",
            "The request body is not valid JSON",
        ),
        (b"[\"ci\"]", "The request body must be a JSON object"),
        (b"null", "The request body must be a JSON object"),
        (
            br#"{"tokenName":"ci","tokenName":"other"}"#,
            "The request body has a duplicated key",
        ),
    ];
    for (body, reason) in cases {
        let r = fx.send(
            Regenerate,
            &Request::new(&[("X-User-Id", &u.id), ("X-Auth-Token", &u.login)], body),
        );
        expect(
            &r,
            400,
            &format!(
                r#"{{"success":false,"error":"{reason} [error-invalid-body]","errorType":"error-invalid-body"}}"#
            ),
        );
    }
    // Deep nesting is refused by the parser's recursion limit, not a stack overflow.
    let deep = format!(r#"{{"tokenName":{}}}"#, "[".repeat(4_000));
    let r = fx.send(
        Regenerate,
        &Request::new(
            &[("X-User-Id", &u.id), ("X-Auth-Token", &u.login)],
            deep.as_bytes(),
        ),
    );
    assert_eq!(r.error_type(), "error-invalid-body");
    assert_eq!(
        calls.calls(),
        0,
        "malformed bodies are refused before storage"
    );
    // Nesting just inside the parser's limit fits the component's 64 KiB stack.
    for object in [false, true] {
        let (open, close) = if object {
            (r#"{"a":"#, "}")
        } else {
            ("[", "]")
        };
        let nested = format!(
            r#"{{"tokenName":{}1{}}}"#,
            open.repeat(126),
            close.repeat(126)
        );
        let headers = [
            ("X-User-Id", u.id.as_str()),
            ("X-Auth-Token", u.login.as_str()),
        ];
        let r = fx.send(Regenerate, &Request::new(&headers, nested.as_bytes()));
        assert_eq!(r.error_type(), "error-invalid-params", "{}", r.body);
    }
}

#[test]
fn oversized_body() {
    let (fx, u, calls) = counting();
    let big = format!(r#"{{"tokenName":"{}"}}"#, "a".repeat(70_000));
    let r = fx.send(
        Regenerate,
        &Request::new(
            &[("X-User-Id", &u.id), ("X-Auth-Token", &u.login)],
            big.as_bytes(),
        ),
    );
    expect(
        &r,
        413,
        r#"{"success":false,"error":"The request body exceeds 4096 bytes [error-request-too-large]","errorType":"error-request-too-large"}"#,
    );
    assert_eq!(calls.calls(), 0);
}

#[test]
fn token_name_of_the_wrong_type_or_size_never_reaches_storage() {
    let (fx, u, calls) = counting();
    for body in [
        r#"{"tokenName":1}"#,
        r#"{"tokenName":true}"#,
        r#"{"tokenName":{"$ne":null}}"#,
        r#"{"tokenName":["ci"]}"#,
    ] {
        let r = fx.call(Regenerate, &u, &u.login, None, body);
        expect(
            &r,
            400,
            r#"{"success":false,"error":"The 'tokenName' param must be a string [error-invalid-params]","errorType":"error-invalid-params"}"#,
        );
    }
    let long = format!(r#"{{"tokenName":"{}"}}"#, "x".repeat(201));
    let r = fx.call(Regenerate, &u, &u.login, None, &long);
    expect(
        &r,
        400,
        r#"{"success":false,"error":"The 'tokenName' param must be at most 200 characters [error-invalid-params]","errorType":"error-invalid-params"}"#,
    );
    // Each request authenticated (one call) and stopped there.
    assert_eq!(calls.calls(), 5);
    // Unicode names are names like any other.
    let r = fx.call(
        Generate,
        &u,
        &u.login,
        None,
        r#"{"tokenName":"déploiement 🚀"}"#,
    );
    assert_eq!(r.status, 200);
    let r = fx.call(
        Generate,
        &u,
        &u.login,
        None,
        r#"{"tokenName":"x","bypassTwoFactor":"yes"}"#,
    );
    assert_eq!(
        r.json["error"],
        "The 'bypassTwoFactor' param must be a boolean [error-invalid-params]"
    );
}

#[test]
fn duplicated_and_non_utf8_headers() {
    let (fx, u, calls) = counting();
    let body = br#"{"tokenName":"ci"}"#;
    let dup = Request::new(
        &[
            ("X-User-Id", &u.id),
            ("X-Auth-Token", &u.login),
            ("x-auth-token", &u.login),
        ],
        body,
    );
    expect(
        &fx.send(Regenerate, &dup),
        400,
        r#"{"success":false,"error":"The 'x-auth-token' header was sent more than once [error-invalid-header]","errorType":"error-invalid-header"}"#,
    );
    let dup_code = Request::new(
        &[
            ("X-User-Id", &u.id),
            ("X-Auth-Token", &u.login),
            ("x-2fa-code", "1"),
            ("X-2FA-Code", "2"),
        ],
        body,
    );
    assert_eq!(
        fx.send(Regenerate, &dup_code).error_type(),
        "error-invalid-header"
    );
    let mut bad = Request::new(&[("X-User-Id", &u.id)], body);
    bad.headers.push(Header {
        name: "X-Auth-Token".into(),
        value: vec![b'a', 0xff, b'b'],
    });
    expect(
        &fx.send(Regenerate, &bad),
        400,
        r#"{"success":false,"error":"The 'x-auth-token' header is not valid UTF-8 [error-invalid-header]","errorType":"error-invalid-header"}"#,
    );
    assert_eq!(calls.calls(), 0);
    // Headers that do not matter may repeat or hold anything.
    let mut other = Request::new(
        &[
            ("X-User-Id", &u.id),
            ("X-Auth-Token", &u.login),
            ("Accept", "a"),
            ("accept", "b"),
        ],
        body,
    );
    other.headers.push(Header {
        name: "X-Junk".into(),
        value: vec![0xff],
    });
    assert_eq!(fx.send(Regenerate, &other).status, 200);
}

#[test]
fn hostile_header_values_are_just_wrong_credentials() {
    let (fx, u, _) = counting();
    for token in ["", " ", "\u{0}", &"A".repeat(100_000), "' OR 1=1 --"] {
        let r = fx.send(
            Regenerate,
            &Request::new(
                &[("X-User-Id", &u.id), ("X-Auth-Token", token)],
                br#"{"tokenName":"ci"}"#,
            ),
        );
        assert_eq!(r.status, 401, "{:?}", &token[..token.len().min(10)]);
    }
}

#[test]
fn storage_failure_is_a_clear_error() {
    let inner: Arc<dyn Backend> = Arc::new(MemoryStorage::new());
    let setup = Fx::with_storage(inner.clone());
    let u = setup.user("sf", None);
    let fx = Fx::with_storage(Arc::new(FaultyStorage::new(inner, 1, FaultMode::Before)));
    let r = fx.regenerate(&u, &u.login, None, "ci");
    expect(
        &r,
        500,
        r#"{"success":false,"error":"Storage failure; nothing was changed [error-storage-failure]","errorType":"error-storage-failure"}"#,
    );
    assert!(
        !r.body.contains("injected"),
        "host error texts are not echoed to clients"
    );
}

#[test]
fn no_secret_appears_in_any_error_body() {
    let fx = Fx::new();
    let u = fx.user("sec", Some(PASSWORD));
    let setup = fx.enable_totp(&u);
    fx.pat(&u, "ci", false);
    let code = fx.totp(&setup, 0);
    let digest = password_code(PASSWORD);
    let replies = [
        fx.regenerate(&u, &u.login, Some(("totp", &code)), "missing"),
        fx.regenerate(&u, &u.login, Some(("totp", "123456")), "ci"),
        fx.regenerate(&u, &u.login, Some(("password", &digest)), "ci"),
        fx.regenerate(
            &u,
            &u.login,
            Some(("totp", &setup.backup_codes[0])),
            "missing",
        ),
        fx.regenerate(&u, "wrong", None, "ci"),
    ];
    for r in replies {
        for secret in [
            code.as_str(),
            digest.as_str(),
            setup.secret.as_str(),
            setup.backup_codes[0].as_str(),
            u.login.as_str(),
        ] {
            assert!(!r.body.contains(secret), "{} leaks a secret", r.body);
        }
    }
}

//! Every example of the endpoint documentation
//! (`shared/spec/regenerate-personal-access-token.txt`), byte for byte,
//! through the real component in wasmtime.

use crate::common::*;

#[test]
fn success_example_200() {
    let fx = Fx::new();
    let u = fx.user("alice", None);
    fx.pat(&u, "mypersonaltoken", false);
    let r = fx.regenerate(&u, &u.login, None, "mypersonaltoken");
    assert_eq!(r.status, 200);
    let token = r.token();
    assert_eq!(r.body, format!(r#"{{"token":"{token}","success":true}}"#));
    assert_eq!(token.len(), 43);
    assert!(
        token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
}

#[test]
fn bad_request_example_1_totp_required_password_method() {
    let fx = Fx::new();
    let u = fx.user("alice", Some(PASSWORD));
    fx.pat(&u, "mypersonaltoken", false);
    let r = fx.regenerate(&u, &u.login, None, "mypersonaltoken");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"success":false,"error":"TOTP Required [totp-required]","errorType":"totp-required","details":{"method":"password","codeGenerated":false,"availableMethods":[]}}"#
    );
}

#[test]
fn bad_request_example_2_token_name_required() {
    let fx = Fx::new();
    let u = fx.user("alice", Some(PASSWORD));
    let code = password_code(PASSWORD);
    for body in ["{}", "", r#"{"tokenName":""}"#, r#"{"tokenName":null}"#] {
        let r = fx.call(Regenerate, &u, &u.login, Some(("password", &code)), body);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(
            r.body, r#"{"success":false,"error":"The 'tokenName' param is required"}"#,
            "{body}"
        );
    }
}

#[test]
fn bad_request_example_3_not_authorized() {
    let fx = Fx::new();
    let u = fx.user_with_roles("guest", Some(PASSWORD), &["guest"]);
    let code = password_code(PASSWORD);
    let r = fx.call(
        Regenerate,
        &u,
        &u.login,
        Some(("password", &code)),
        r#"{"tokenName":"mypersonaltoken"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"success":false,"error":"Not Authorized [not-authorized]","errorType":"not-authorized","details":{"method":"personalAccessTokens:generateToken"}}"#
    );
}

#[test]
fn unauthorized_example_401() {
    let fx = Fx::new();
    let u = fx.user("alice", None);
    let expected = r#"{"status":"error","message":"You must be logged in to do this."}"#;
    let wrong_token = fx.regenerate(&u, "RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f", None, "x");
    assert_eq!(
        (wrong_token.status, wrong_token.body.as_str()),
        (401, expected)
    );
    let other_user = User {
        id: "rbAXPnMktTFbNpwtJ".into(),
        ..u.clone()
    };
    let r = fx.regenerate(&other_user, &u.login, None, "x");
    assert_eq!((r.status, r.body.as_str()), (401, expected));
    let no_headers = fx.send(
        Regenerate,
        &rcpat::model::Request::new(&[], br#"{"tokenName":"x"}"#),
    );
    assert_eq!(
        (no_headers.status, no_headers.body.as_str()),
        (401, expected)
    );
    let empty = fx.call(
        Regenerate,
        &User {
            id: String::new(),
            ..u.clone()
        },
        "",
        None,
        r#"{"tokenName":"x"}"#,
    );
    assert_eq!((empty.status, empty.body.as_str()), (401, expected));
}

#[test]
fn checks_run_in_documented_order() {
    // 401 before 2FA; 2FA before tokenName; tokenName before permission;
    // permission before existence.
    let fx = Fx::new();
    let u = fx.user_with_roles("guest", Some(PASSWORD), &["guest"]);
    assert_eq!(fx.call(Regenerate, &u, "nope", None, "{}").status, 401);
    assert_eq!(
        fx.call(Regenerate, &u, &u.login, None, "{}").error_type(),
        "totp-required"
    );
    let code = password_code(PASSWORD);
    let r = fx.call(Regenerate, &u, &u.login, Some(("password", &code)), "{}");
    assert_eq!(r.json["error"], "The 'tokenName' param is required");
    let r = fx.call(
        Regenerate,
        &u,
        &u.login,
        Some(("password", &code)),
        r#"{"tokenName":"missing"}"#,
    );
    assert_eq!(r.error_type(), "not-authorized");
}

#[test]
fn token_does_not_exist() {
    let fx = Fx::new();
    let u = fx.user("alice", None);
    let r = fx.regenerate(&u, &u.login, None, "tokenthatdoesnotexist");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"success":false,"error":"Token does not exist [error-token-does-not-exists]","errorType":"error-token-does-not-exists","details":{"method":"personalAccessTokens:regenerateToken"}}"#
    );
}

#[test]
fn regeneration_replaces_the_token_and_keeps_its_record() {
    let fx = Fx::new();
    let u = fx.user("alice", None);
    let old = fx.pat(&u, "ci", true);
    fx.clock.advance_secs(3600);
    let new = fx.regenerate(&u, &u.login, None, "ci").token();
    assert_ne!(old, new);
    assert!(
        !fx.authenticates(&u, &old),
        "the old token must stop working"
    );
    assert!(fx.authenticates(&u, &new));
    // Stored only as base64(SHA-256), with lastTokenPart, createdAt from the host clock, bypass carried over.
    let stored = fx
        .storage
        .find_personal_access_token(&u.id, "ci")
        .unwrap()
        .unwrap();
    assert_eq!(stored.hashed_token, rcpat::token::hash_token(&new));
    assert_eq!(stored.last_token_part, new[37..]);
    assert_eq!(stored.created_at, T0 + 3_600_000);
    assert!(stored.bypass_two_factor);
    // The old token now gets the documented 401 on any endpoint; the new one works.
    assert_eq!(fx.call(List, &u, &old, None, "").status, 401);
    let list = fx.call(List, &u, &new, None, "");
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body,
        format!(
            r#"{{"tokens":[{{"name":"ci","createdAt":"2027-01-15T09:00:15.000Z","lastTokenPart":"{}","bypassTwoFactor":true}}],"success":true}}"#,
            &new[37..]
        )
    );
}

#[test]
fn self_regeneration_with_the_pat_itself() {
    let fx = Fx::new();
    let u = fx.user("alice", Some(PASSWORD));
    let pat = fx.pat(&u, "self", true);
    // A bypass PAT skips 2FA, even though the user has a password.
    let new = fx.regenerate(&u, &pat, None, "self").token();
    assert_eq!(fx.regenerate(&u, &pat, None, "self").status, 401);
    let newer = fx.regenerate(&u, &new, None, "self").token();
    assert!(fx.authenticates(&u, &newer) && !fx.authenticates(&u, &new));
}

#[test]
fn sibling_endpoints() {
    let fx = Fx::new();
    let u = fx.user("alice", None);
    let empty = fx.call(List, &u, &u.login, None, "");
    assert_eq!(empty.body, r#"{"tokens":[],"success":true}"#);
    let t = fx
        .call(
            Generate,
            &u,
            &u.login,
            None,
            r#"{"tokenName":"a","bypassTwoFactor":true}"#,
        )
        .token();
    assert!(fx.authenticates(&u, &t));
    let dup = fx.call(Generate, &u, &u.login, None, r#"{"tokenName":"a"}"#);
    assert_eq!(
        dup.body,
        r#"{"success":false,"error":"A token with this name already exists [error-token-already-exists]","errorType":"error-token-already-exists","details":{"method":"personalAccessTokens:generateToken"}}"#
    );
    let removed = fx.call(Remove, &u, &u.login, None, r#"{"tokenName":"a"}"#);
    assert_eq!(
        (removed.status, removed.body.as_str()),
        (200, r#"{"success":true}"#)
    );
    assert!(!fx.authenticates(&u, &t));
    let again = fx.call(Remove, &u, &u.login, None, r#"{"tokenName":"a"}"#);
    assert_eq!(
        again.json["details"]["method"],
        "personalAccessTokens:removeToken"
    );
    assert_eq!(again.error_type(), "error-token-does-not-exists");

    let guest = fx.user_with_roles("guest", None, &["guest"]);
    let forbidden = fx.call(List, &guest, &guest.login, None, "");
    assert_eq!(
        (forbidden.status, forbidden.body.as_str()),
        (
            403,
            r#"{"success":false,"error":"User does not have the permissions required for this action [error-unauthorized]"}"#
        )
    );
    let r = fx.call(
        Remove,
        &guest,
        &guest.login,
        None,
        r#"{"tokenName":"tokenthatdoesnotexist"}"#,
    );
    assert_eq!(
        (r.error_type(), &r.json["details"]["method"]),
        (
            "not-authorized",
            &serde_json::json!("personalAccessTokens:removeToken")
        )
    );
    let r = fx.call(Generate, &guest, &guest.login, None, r#"{"tokenName":"x"}"#);
    assert_eq!(r.error_type(), "not-authorized");
}

#[test]
fn component_imports_exactly_its_world() {
    let rt = runtime();
    let engine = rt.engine_ref();
    let component = wasmtime::component::Component::new(engine, host_example::COMPONENT).unwrap();
    let ty = component.component_type();
    let mut imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    imports.sort();
    assert_eq!(
        imports,
        [
            "rcpat:tokens/mail@0.11.0",
            "rcpat:tokens/storage@0.11.0",
            "wasi:clocks/wall-clock@0.2.12",
            "wasi:random/random@0.2.12"
        ]
    );
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(exports, ["rcpat:tokens/endpoints@0.11.0"]);
}

#[test]
fn component_default_settings_are_rocket_chats() {
    let fx = Fx::new();
    let defaults = runtime().default_settings(&fx.services).unwrap();
    assert_eq!(defaults, rcpat::model::Settings::default());
    assert_eq!(
        (
            defaults.totp_max_delta,
            defaults.email_code_expiration_seconds,
            defaults.email_code_max_attempts
        ),
        (1, 3600, 5)
    );
    assert!(defaults.two_factor_enabled && defaults.enforce_password_fallback);
    assert_eq!(
        defaults.remember_for_seconds, 0,
        "remember-me is off by default here"
    );
}

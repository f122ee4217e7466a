//! Leak-scannable tokens (`token-prefix`): new personal access tokens carry
//! the prefix and a CRC32 checksum a scanner can check offline; a presented
//! token with the prefix but a wrong checksum is refused before any lookup;
//! without the setting, tokens stay Rocket.Chat's (the documented examples
//! are unchanged: tests/documentation_examples.rs).

use std::sync::Arc;

use crate::common::*;
use host_example::runtime::Endpoint::{Generate, List};
use host_example::storage::{FaultMode, FaultyStorage, MemoryStorage};
use rcpat::token::TokenPrefix;

/// The scanner's rule, written independently of the component: prefix, 43
/// characters of [A-Za-z0-9_-], then CRC32 (IEEE) of all before in 6 base62 digits.
fn scanner_accepts(prefix: &str, token: &str) -> bool {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let Some(rest) = token.strip_prefix(prefix) else {
        return false;
    };
    if rest.len() != 49
        || !rest[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return false;
    }
    let mut n = crc32fast::hash(&token.as_bytes()[..token.len() - 6]);
    let mut sum = [0u8; 6];
    for d in sum.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    token.ends_with(std::str::from_utf8(&sum).unwrap())
}

#[test]
fn generated_and_regenerated_tokens_carry_prefix_and_checksum() {
    let mut fx = Fx::new();
    fx.settings.token_prefix = TokenPrefix::parse("rcpat_").unwrap();
    let u = fx.user("alice", None);
    let r = fx.call(Generate, &u, &u.login, None, r#"{"tokenName":"ci"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.token();
    assert!(scanner_accepts("rcpat_", &first), "{first}");
    assert_eq!(r.body, format!(r#"{{"token":"{first}","success":true}}"#));
    // The prefixed token works, and regenerating it gives another prefixed one.
    let r = fx.regenerate(&u, &first, None, "ci");
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.token();
    assert!(scanner_accepts("rcpat_", &second) && second != first);
    assert!(fx.authenticates(&u, &second) && !fx.authenticates(&u, &first));
    // lastTokenPart is the token's last 6 characters, as always.
    let list = fx.call(List, &u, &second, None, "");
    assert_eq!(
        list.json["tokens"][0]["lastTokenPart"],
        &second[second.len() - 6..]
    );
    // An old unprefixed token keeps working after the setting is turned on.
    let old = fx.pat(&u, "legacy", false);
    assert_eq!(old.len(), 43);
    assert_eq!(fx.regenerate(&u, &old, None, "legacy").status, 200);
}

#[test]
fn a_prefixed_token_with_a_bad_checksum_costs_no_storage_call() {
    let faulty = Arc::new(FaultyStorage::new(
        Arc::new(MemoryStorage::new()),
        usize::MAX,
        FaultMode::Before,
    ));
    let mut fx = Fx::with_storage(faulty.clone());
    fx.settings.token_prefix = TokenPrefix::parse("rcpat_").unwrap();
    let u = fx.user("alice", None);
    let token = fx
        .call(Generate, &u, &u.login, None, r#"{"tokenName":"ci"}"#)
        .token();
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let before = faulty.calls();
    let r = fx.regenerate(&u, &forged, None, "ci");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        r#"{"status":"error","message":"You must be logged in to do this."}"#
    );
    assert_eq!(faulty.calls(), before, "the forged token reached storage");
    assert_eq!(fx.regenerate(&u, &token, None, "ci").status, 200);
}

#[test]
fn an_invalid_prefix_setting_mints_nothing() {
    let mut fx = Fx::new();
    fx.settings.token_prefix = TokenPrefix::from(String::from("no-dashes"));
    let u = fx.user("alice", None);
    let r = fx.call(Generate, &u, &u.login, None, r#"{"tokenName":"ci"}"#);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body,
        r#"{"success":false,"error":"The host's token-prefix setting is invalid [error-internal]","errorType":"error-internal"}"#
    );
    let list = fx.call(List, &u, &u.login, None, "");
    assert_eq!(list.json["tokens"], serde_json::json!([]));
}

#[test]
fn serve_refuses_to_start_with_an_invalid_prefix() {
    let dir = temp_dir("prefix-cli");
    let opts = host_example::config::Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        db: Some(dir.join("rcpat.sqlite")),
        outbox: Some(dir.join("outbox")),
        cache_dir: Some(shared_cache_dir()),
        token_prefix: Some("rcpat-".into()),
        ..Default::default()
    };
    let err = host_example::startup::RunningServer::start(&opts)
        .err()
        .expect("an invalid prefix stops the start");
    assert!(format!("{err:#}").contains("--token-prefix"), "{err:#}");
    // Too short to scan for (issue 26, item 3): refused too.
    for short in ["A", "ab", "r_c"] {
        assert_eq!(TokenPrefix::parse(short), None, "{short}");
        let opts = host_example::config::Options {
            token_prefix: Some(short.into()),
            ..opts.clone()
        };
        let err = host_example::startup::RunningServer::start(&opts)
            .err()
            .expect("a short prefix stops the start");
        assert!(format!("{err:#}").contains("4 to 16 characters"), "{err:#}");
    }
}

/// Issue 26, item 3: with `--token-prefix A`, plain tokens that happened to
/// start with "A" (1 in 64 of them) answered 401. Now only a token of the
/// prefixed form's exact length is judged by its checksum: plain PATs and
/// session tokens that start with the prefix work over HTTP; a token of the
/// prefixed shape with a wrong checksum is still refused before any lookup.
#[test]
fn plain_tokens_that_start_with_the_prefix_keep_working_over_http() {
    use host_example::storage::TokenRecord;
    use std::process::Stdio;
    let dir = temp_dir("prefix-http");
    let db = dir.join("prefix.sqlite");
    let (id, _) = seed_pat_users(&db, "p", 1).remove(0);
    let services = host_example::startup::services_from(&host_example::config::Options {
        db: Some(db.clone()),
        ..Default::default()
    })
    .unwrap();
    // 43-character tokens issued before the setting, starting with it.
    let plain_pat = format!("Abcd{}", "x".repeat(39));
    let plain_session = format!("Abcd{}", "y".repeat(39));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let pat = rcpat::model::PersonalAccessToken {
        name: "old".into(),
        hashed_token: rcpat::token::hash_token(&plain_pat),
        last_token_part: "xxxxxx".into(),
        created_at: now,
        bypass_two_factor: false,
        last_used_at: None,
        expires_at: None,
    };
    services
        .storage()
        .add_token(&id, &TokenRecord::personal_access_token(&pat))
        .unwrap();
    services
        .storage()
        .add_token(
            &id,
            &TokenRecord::login(&rcpat::token::hash_token(&plain_session), now),
        )
        .unwrap();
    drop(services);
    let mut child = serve_command(&dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--token-prefix",
            "Abcd",
        ])
        .arg("--db")
        .arg(&db)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    let base = format!("http://{}", log_field(&listening, "addr"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let me = |token: &str| {
        agent
            .get(format!("{base}/api/v1/me"))
            .header("X-User-Id", &id)
            .header("X-Auth-Token", token)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(me(&plain_pat), 200, "a plain PAT starting with the prefix");
    assert_eq!(
        me(&plain_session),
        200,
        "a session token starting with the prefix"
    );
    // A new token carries the prefix and works; its shape with one character
    // changed does not.
    let mut reply = agent
        .post(format!("{base}/api/v1/users.generatePersonalAccessToken"))
        .header("Content-Type", "application/json")
        .header("X-User-Id", &id)
        .header("X-Auth-Token", &plain_session)
        .send(r#"{"tokenName":"new"}"#)
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
    let fresh = body["token"].as_str().unwrap().to_string();
    assert!(scanner_accepts("Abcd", &fresh), "{fresh}");
    assert_eq!(me(&fresh), 200);
    let mut forged = fresh.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    assert_eq!(me(&String::from_utf8(forged).unwrap()), 401);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

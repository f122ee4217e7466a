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
    let err = host_example::server::RunningServer::start(&opts)
        .err()
        .expect("an invalid prefix stops the start");
    assert!(format!("{err:#}").contains("--token-prefix"), "{err:#}");
}

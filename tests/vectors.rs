//! `wit/vectors.json`, the hashes and formats a host computes or stores
//! itself, generated from the WIT's prose by an independent script
//! (`wit/vectors.py`): the component's code must produce each, and a
//! backup code enrolled from the file alone must work through the component.

use std::sync::Arc;

use serde_json::Value;

use crate::common::*;
use host_example::runtime::Endpoint::Login;
use host_example::storage::{Admin, MemoryStorage, NewUser};
use rcpat::model::{BackupCodes, TotpAlgorithm, TotpEnrolment};
use rcpat::token::TokenPrefix;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn hex(v: &Value, field: &str) -> Vec<u8> {
    let text = s(v, field);
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    let items = v[field].as_array().unwrap_or_else(|| panic!("{field}"));
    assert!(!items.is_empty(), "{field} has no vectors");
    items
}

#[test]
fn the_component_code_reproduces_every_vector() {
    let v = vectors();
    assert_eq!(
        s(&v["backup-code"], "alphabet").as_bytes(),
        rcpat::codes::BACKUP_ALPHABET
    );
    assert_eq!(v["backup-code"]["length"], rcpat::codes::BACKUP_CODE_LEN);
    for c in list(&v, "backup-code-hash") {
        let got =
            rcpat::codes::backup_code_hash(&hex(c, "code-key"), s(c, "user-id"), s(c, "code"));
        assert_eq!(got, s(c, "hash"), "{c}");
    }
    for c in list(&v, "email-code-hash") {
        let got = rcpat::codes::email_code_hash(&hex(c, "code-key"), s(c, "salt"), s(c, "digits"));
        assert_eq!(got, s(c, "hash"), "{c}");
    }
    for c in list(&v, "token-hash") {
        assert_eq!(
            rcpat::token::hash_token(s(c, "token")),
            s(c, "hashed"),
            "{c}"
        );
    }
    for c in list(&v, "token-from-random") {
        assert_eq!(
            rcpat::token::new_token(&hex(c, "random")),
            s(c, "token"),
            "{c}"
        );
    }
    for c in list(&v, "prefixed-token") {
        let prefix = TokenPrefix::parse(s(c, "prefix")).unwrap();
        let token = rcpat::token::with_prefix(&prefix, s(c, "random-part"));
        assert_eq!(token, s(c, "token"), "{c}");
        assert!(rcpat::token::prefixed_token_is_well_formed(&prefix, &token));
    }
    for c in list(&v, "checksum") {
        assert_eq!(
            rcpat::token::checksum(s(c, "text")),
            s(c, "checksum"),
            "{c}"
        );
    }
    for c in list(&v, "last-token-part") {
        assert_eq!(
            rcpat::token::last_part(s(c, "token")),
            s(c, "last-token-part")
        );
    }
    for c in list(&v, "password") {
        let digest = rcpat::token::sha256_hex(s(c, "password").as_bytes());
        assert_eq!(digest, s(c, "digest"));
        assert!(bcrypt::verify(&digest, s(c, "bcrypt")).unwrap());
    }
}

/// What the contract issue's third party could not do: enrol backup codes
/// and a password from the documentation alone, and have them work.
#[test]
fn a_user_seeded_from_the_vectors_alone_logs_in_and_regenerates() {
    let v = vectors();
    let backup = &list(&v, "backup-code-hash")[0];
    let password = &list(&v, "password")[0];
    let storage = Arc::new(MemoryStorage::new());
    let mut fx = Fx::with_storage(storage.clone());
    fx.services = fx.services.clone().with_code_key(&hex(backup, "code-key"));
    let id = s(backup, "user-id");
    storage
        .create_user(&NewUser {
            id: id.into(),
            username: "vector".into(),
            name: "vector".into(),
            email: Some("vector@example.org".into()),
            email_verified: true,
            password_bcrypt: Some(s(password, "bcrypt").into()),
            roles: vec!["user".into()],
            created_at: T0,
        })
        .unwrap();
    let enrolment = TotpEnrolment {
        secret: "JBSWY3DPEHPK3PXP".into(),
        algorithm: TotpAlgorithm::Sha1,
        digits: 6,
        period: 30,
        last_used_step: 0,
        has_backup_codes: true,
    };
    let codes = BackupCodes {
        unused: vec![s(backup, "hash").into()],
        spent: Vec::new(),
    };
    storage.set_totp(id, Some((&enrolment, &codes))).unwrap();
    let body = serde_json::json!({
        "user": "vector",
        "password": s(password, "password"),
        "code": s(backup, "code"),
    })
    .to_string();
    let reply = fx.send(Login, &rcpat::model::Request::new(&[], body.as_bytes()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The code is spent: a second login with it is refused.
    let again = fx.send(Login, &rcpat::model::Request::new(&[], body.as_bytes()));
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(again.json["error"], "totp-invalid", "{}", again.body);
}

//! Safe retries of token creation (issue 12; Stripe's idempotency keys).
//!
//! A client may send `Idempotency-Key` with `generate` or `regenerate`. The
//! request that first uses a key stores, in the same transaction as its
//! write, a record bound to (user, hash of the presented token, key, hash of
//! the body) holding its reply sealed with XChaCha20-Poly1305 under a key
//! derived (HKDF-SHA-256) from the presented token's plaintext, which the
//! server never stores: only that token's holder can read it back. A retry
//! with the same key, credentials and body gets the same reply, even after
//! the presented token was replaced by the very request it retries; the same
//! key with another body is refused. Records live `idempotency-key-hours`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::reply::ApiError;

/// Longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;
const NONCE_LEN: usize = 24;

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn parse_key(value: &str) -> Result<String, ApiError> {
    if value.is_empty() || value.len() > MAX_KEY_LEN || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::InvalidHeader(format!(
            "The 'idempotency-key' header must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(value.to_string())
}

/// What binds a retry to its first request: the route and the body,
/// hashed (one key sent to generate and then to regenerate with the same
/// body is two requests, not a retry).
pub fn body_hash(route: &str, body: &[u8]) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(route)
            .chain_update([0])
            .chain_update(body)
            .finalize(),
    )
}

fn cipher(presented_token: &str, user_id: &str) -> XChaCha20Poly1305 {
    let hk = hkdf::Hkdf::<Sha256>::new(
        Some(b"rcpat idempotent reply v1"),
        presented_token.as_bytes(),
    );
    let mut key = [0u8; 32];
    hk.expand(user_id.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    XChaCha20Poly1305::new(&key.into())
}

/// `reply` sealed for the holder of `presented_token`: nonce, then
/// ciphertext; the key and body hash are authenticated with it.
pub fn seal(
    presented_token: &str,
    user_id: &str,
    key: &str,
    body_hash: &str,
    reply: &str,
    nonce: &[u8],
) -> Vec<u8> {
    let nonce = XNonce::from_slice(&nonce[..NONCE_LEN]);
    let aad = [key.as_bytes(), b"\0", body_hash.as_bytes()].concat();
    let sealed = cipher(presented_token, user_id)
        .encrypt(
            nonce,
            Payload {
                msg: reply.as_bytes(),
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any length we produce");
    [nonce.as_slice(), &sealed].concat()
}

/// The reply `seal` stored, or `None` if these credentials cannot open it.
pub fn open(
    presented_token: &str,
    user_id: &str,
    key: &str,
    body_hash: &str,
    sealed: &[u8],
) -> Option<String> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let aad = [key.as_bytes(), b"\0", body_hash.as_bytes()].concat();
    let plain = cipher(presented_token, user_id)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .ok()?;
    String::from_utf8(plain).ok()
}

/// Random bytes for `seal`'s nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(parse_key("a").is_ok());
        assert!(parse_key(&"k".repeat(255)).is_ok());
        for bad in ["", " a", "a b", "é", "\t", &"k".repeat(256)] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_presented_token_opens_the_reply() {
        let nonce = [7u8; NONCE_LEN];
        let h = body_hash("regenerate", br#"{"tokenName":"a"}"#);
        assert_ne!(h, body_hash("generate", br#"{"tokenName":"a"}"#));
        let sealed = seal(
            "tok",
            "u1",
            "k1",
            &h,
            r#"{"token":"new","success":true}"#,
            &nonce,
        );
        assert_eq!(
            open("tok", "u1", "k1", &h, &sealed).as_deref(),
            Some(r#"{"token":"new","success":true}"#)
        );
        assert_eq!(open("other", "u1", "k1", &h, &sealed), None);
        assert_eq!(open("tok", "u2", "k1", &h, &sealed), None);
        assert_eq!(open("tok", "u1", "k2", &h, &sealed), None);
        assert_eq!(open("tok", "u1", "k1", "other", &sealed), None);
        assert!(
            !sealed.windows(3).any(|w| w == b"new"),
            "the token is not stored in clear"
        );
    }
}

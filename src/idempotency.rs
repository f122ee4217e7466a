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

/// Shortest key accepted: 16 random bytes in base64url are 22 characters
/// (a UUID is 36, 16 bytes in hex 32). The server cannot tell random from
/// guessable, but it can refuse keys too short to hold that much: a key is
/// half of what replays a kept reply (the other half is the presented
/// token, which may be an old, leaked one), so it must not be guessable.
pub const MIN_KEY_LEN: usize = 22;
/// Longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;
const NONCE_LEN: usize = 24;

/// `Idempotency-Key`: 22 to 255 visible ASCII characters.
pub fn parse_key(value: &str) -> Result<String, ApiError> {
    if value.len() < MIN_KEY_LEN
        || value.len() > MAX_KEY_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::InvalidHeader(format!(
            "The 'idempotency-key' header must be {MIN_KEY_LEN} to {MAX_KEY_LEN} visible ASCII \
             characters: 16 or more random bytes, such as a UUID"
        )));
    }
    Ok(value.to_string())
}

/// What a kept reply holds once opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The request retired the token it presented (a PAT rotating itself),
    /// so a retry presents a token that no longer authenticates.
    pub retired_presented: bool,
    /// The reply's body.
    pub body: String,
}

/// Leading byte of the sealed plaintext: whether the presented token was
/// retired by the request ('R') or kept ('K').
const RETIRED: u8 = b'R';
const KEPT: u8 = b'K';

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
    retired_presented: bool,
    nonce: &[u8],
) -> Vec<u8> {
    let nonce = XNonce::from_slice(&nonce[..NONCE_LEN]);
    let aad = [key.as_bytes(), b"\0", body_hash.as_bytes()].concat();
    let mark = if retired_presented { RETIRED } else { KEPT };
    let plain = [&[mark], reply.as_bytes()].concat();
    let sealed = cipher(presented_token, user_id)
        .encrypt(
            nonce,
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any length we produce");
    [nonce.as_slice(), &sealed].concat()
}

/// The reply `seal` stored, or `None` if these credentials cannot open it
/// (or it predates the retired mark: such a reply is not served).
pub fn open(
    presented_token: &str,
    user_id: &str,
    key: &str,
    body_hash: &str,
    sealed: &[u8],
) -> Option<Opened> {
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
    let (&mark, body) = plain.split_first()?;
    if mark != RETIRED && mark != KEPT {
        return None;
    }
    Some(Opened {
        retired_presented: mark == RETIRED,
        body: String::from_utf8(body.to_vec()).ok()?,
    })
}

/// Random bytes for `seal`'s nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_from_22_to_255() {
        assert!(parse_key("f47ac10b-58cc-4372-a567-0e02b2c3d479").is_ok());
        assert!(parse_key(&"k".repeat(22)).is_ok());
        assert!(parse_key(&"k".repeat(255)).is_ok());
        let spaced = format!("{} a", "k".repeat(22));
        for bad in [
            "",
            "a",
            "rotate-2026-11-28",
            &"k".repeat(21),
            &spaced,
            &"é".repeat(12),
            &"k".repeat(256),
        ] {
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
            true,
            &nonce,
        );
        assert_eq!(
            open("tok", "u1", "k1", &h, &sealed),
            Some(Opened {
                retired_presented: true,
                body: r#"{"token":"new","success":true}"#.into()
            })
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

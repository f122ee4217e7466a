//! Token values: generation, hashing, and the secret-safe comparisons.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Meteor's `Random.secret()` alphabet: 64 symbols, so each random byte's low
/// 6 bits pick one without bias.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Rocket.Chat's token length: 43 symbols of 6 bits, about 256 bits.
pub const TOKEN_LEN: usize = 43;
/// `lastTokenPart` is the last 6 characters.
pub const LAST_PART_LEN: usize = 6;

/// A fresh token from 43 random bytes.
pub fn new_token(random: &[u8]) -> String {
    assert_eq!(
        random.len(),
        TOKEN_LEN,
        "new_token takes exactly TOKEN_LEN random bytes"
    );
    random
        .iter()
        .map(|b| ALPHABET[(b & 63) as usize] as char)
        .collect()
}

/// Meteor's `Accounts._hashLoginToken`: base64(SHA-256(utf8 token)).
pub fn hash_token(token: &str) -> String {
    BASE64.encode(Sha256::digest(token.as_bytes()))
}

/// The last 6 characters (tokens are ASCII).
pub fn last_part(token: &str) -> &str {
    &token[token.len().saturating_sub(LAST_PART_LEN)..]
}

/// Lowercase hex SHA-256, as Rocket.Chat's `SHA256()` (backup codes, fingerprints).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What Rocket.Chat clients send for a password (and as the `password` 2FA
/// code): its lowercase hex SHA-256. Stored passwords are bcrypt of this.
pub fn password_digest(password: &str) -> String {
    sha256_hex(password.as_bytes())
}

/// Meteor's `Random.id` alphabet (user ids; also backup codes).
pub const ID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";

/// Constant-time equality for secrets and their digests.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_rocket_chat_shape() {
        let bytes: Vec<u8> = (0..43u8).map(|i| i.wrapping_mul(37)).collect();
        let t = new_token(&bytes);
        assert_eq!(t.len(), 43);
        assert!(
            t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(last_part(&t), &t[37..]);
    }

    #[test]
    fn every_symbol_is_reachable() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let all: String = bytes
            .chunks(43)
            .filter(|c| c.len() == 43)
            .map(new_token)
            .collect();
        for c in ALPHABET {
            assert!(all.as_bytes().contains(c), "{}", *c as char);
        }
    }

    #[test]
    fn hash_matches_meteor() {
        // node -e "console.log(require('crypto').createHash('sha256').update('abc').digest('base64'))"
        assert_eq!(
            hash_token("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn secret_eq_compares_contents_and_lengths() {
        assert!(secret_eq(b"123456", b"123456"));
        assert!(!secret_eq(b"123456", b"123457"));
        assert!(!secret_eq(b"12345", b"123456"));
    }
}

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

/// Shortest and longest `token-prefix`: a shorter one makes a scanner's
/// pattern match noise (GitHub's shortest is `ghp_`).
pub const MIN_PREFIX_LEN: usize = 4;
pub const MAX_PREFIX_LEN: usize = 16;
/// Length of the checksum a prefixed token ends with.
pub const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The host's `token-prefix` setting: empty (Rocket.Chat's plain tokens), 4
/// to 16 characters of `[A-Za-z0-9_]`, or invalid (the host passed something
/// else; minting then fails rather than issue an unscannable token). Copy,
/// like the rest of the settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenPrefix {
    bytes: [u8; MAX_PREFIX_LEN],
    /// The length, or `u8::MAX` for an invalid setting.
    len: u8,
}

impl TokenPrefix {
    pub const INVALID: TokenPrefix = TokenPrefix {
        bytes: [0; MAX_PREFIX_LEN],
        len: u8::MAX,
    };

    /// Parses the setting; `None` when it is not one of the accepted forms.
    pub fn parse(text: &str) -> Option<TokenPrefix> {
        let ok = (text.is_empty() || (MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&text.len()))
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        ok.then(|| {
            let mut bytes = [0; MAX_PREFIX_LEN];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            TokenPrefix {
                bytes,
                len: text.len() as u8,
            }
        })
    }

    pub fn is_valid(&self) -> bool {
        self.len != u8::MAX
    }

    /// The prefix ("" when none or invalid).
    pub fn as_str(&self) -> &str {
        if !self.is_valid() {
            return "";
        }
        // Only ASCII is ever stored.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

/// The WIT setting (a string) to the model's, invalid kept as invalid.
impl From<String> for TokenPrefix {
    fn from(text: String) -> Self {
        TokenPrefix::parse(&text).unwrap_or(TokenPrefix::INVALID)
    }
}

impl From<TokenPrefix> for String {
    fn from(p: TokenPrefix) -> Self {
        if p.is_valid() {
            p.as_str().into()
        } else {
            // Never a valid prefix, so it converts back to invalid.
            "(invalid)".into()
        }
    }
}

/// CRC32 (IEEE) of `text` in 6 base62 digits (62^6 > 2^32), most
/// significant first, as GitHub's token checksums.
pub fn checksum(text: &str) -> String {
    // Bitwise, without tables: a token is about 60 bytes, and a 1-16 KiB
    // table would grow the component for nothing.
    const CRC32: crc::Crc<u32, crc::NoTable> =
        crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);
    let mut n = CRC32.checksum(text.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| b as char).collect()
}

/// A new token as issued under `prefix`: the plain token, or the prefix, the
/// 43 random characters and the checksum of both.
pub fn with_prefix(prefix: &TokenPrefix, token: &str) -> String {
    if prefix.as_str().is_empty() {
        return token.into();
    }
    let body = format!("{}{token}", prefix.as_str());
    let sum = checksum(&body);
    body + &sum
}

/// Whether `token` has the prefixed form's shape: `prefix`, then exactly as
/// many characters as a prefixed token has. Only such a token is judged by
/// its checksum; any other (a plain 43-character token that happens to start
/// with the prefix, a session token) is looked up as it is, so whether a
/// token counts as prefixed never depends on its first characters by chance.
pub fn looks_prefixed(prefix: &TokenPrefix, token: &str) -> bool {
    let p = prefix.as_str();
    !p.is_empty() && token.len() == p.len() + TOKEN_LEN + CHECKSUM_LEN && token.starts_with(p)
}

/// Whether a token that carries `prefix` is well formed (its length and
/// checksum): a scanner's test, and the server's, before any lookup.
pub fn prefixed_token_is_well_formed(prefix: &TokenPrefix, token: &str) -> bool {
    let p = prefix.as_str();
    token.len() == p.len() + TOKEN_LEN + CHECKSUM_LEN && token.starts_with(p) && {
        let (body, sum) = token.split_at(token.len() - CHECKSUM_LEN);
        secret_eq(checksum(body).as_bytes(), sum.as_bytes())
    }
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
    fn checksum_is_crc32_in_six_base62_digits() {
        // CRC32("123456789") = 0xCBF43926, the standard check value.
        assert_eq!(checksum("123456789"), "3jZRME");
        assert_eq!(checksum(""), "000000");
    }

    #[test]
    fn prefixes_are_checked_and_tokens_carry_a_verifiable_checksum() {
        assert_eq!(TokenPrefix::parse(""), Some(TokenPrefix::default()));
        for bad in ["rcpat-", "r p", "é", "abcdefghijklmnopq"] {
            assert_eq!(TokenPrefix::parse(bad), None, "{bad}");
        }
        let p = TokenPrefix::parse("rcpat_").unwrap();
        assert_eq!(String::from(p), "rcpat_");
        assert!(!TokenPrefix::from(String::from("bad-prefix")).is_valid());
        let plain = new_token(&[7u8; TOKEN_LEN]);
        assert_eq!(with_prefix(&TokenPrefix::default(), &plain), plain);
        let t = with_prefix(&p, &plain);
        assert_eq!(t.len(), 6 + TOKEN_LEN + CHECKSUM_LEN);
        assert!(t.starts_with("rcpat_") && t[6..49] == plain);
        assert!(prefixed_token_is_well_formed(&p, &t));
        // Any one character changed, or one missing, fails the check.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(b).unwrap();
            assert!(!prefixed_token_is_well_formed(&p, &changed), "{changed}");
        }
        assert!(!prefixed_token_is_well_formed(&p, &t[..t.len() - 1]));
    }

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

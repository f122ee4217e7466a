//! Second-factor codes at rest: backup codes and emailed codes are stored as
//! HMAC-SHA-256 under the host's code key (kept outside storage), so a copied
//! database alone does not yield them, neither by lookup nor by trying all
//! 10^6 email codes. Hosts enrolling backup codes use the same functions.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Backup codes: Meteor's `Random.id(8)` alphabet (also Rocket.Chat's ids).
pub const BACKUP_ALPHABET: &[u8] = crate::token::ID_ALPHABET;
pub const BACKUP_CODE_LEN: usize = 8;
pub const EMAIL_CODE_DIGITS: usize = 6;
/// The shortest code key (`settings.code-key`) second-factor checks run
/// with: a shorter one (an empty one in particular) would let anyone with
/// the database test codes offline, so every check refuses to run instead.
pub const MIN_CODE_KEY_LEN: usize = 32;

/// Lowercase hex HMAC-SHA-256 under `key` of a domain label and parts, each
/// preceded by its length in bytes as 4 big-endian bytes, so that no two
/// inputs encode alike (`wit/world.wit` and `wit/vectors.json` spell it out
/// for hosts).
fn keyed_hash(key: &[u8], domain: &str, parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key");
    for part in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The stored form of one of `user_id`'s backup codes.
pub fn backup_code_hash(key: &[u8], user_id: &str, code: &str) -> String {
    keyed_hash(key, "backup-code", &[user_id.as_bytes(), code.as_bytes()])
}

/// The stored form of an emailed code (its 6 digits) with its random salt.
pub fn email_code_hash(key: &[u8], salt_hex: &str, digits: &str) -> String {
    keyed_hash(key, "email-code", &[salt_hex.as_bytes(), digits.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_key_user_and_domain() {
        let a = backup_code_hash(b"k1", "u1", "ABCDEFGH");
        assert_eq!(a.len(), 64);
        assert_eq!(a, backup_code_hash(b"k1", "u1", "ABCDEFGH"));
        assert_ne!(a, backup_code_hash(b"k2", "u1", "ABCDEFGH"));
        assert_ne!(a, backup_code_hash(b"k1", "u2", "ABCDEFGH"));
        // Length prefixes: moving bytes between parts changes the hash.
        assert_ne!(
            email_code_hash(b"k", "ab", "123456"),
            email_code_hash(b"k", "a", "b123456")
        );
        assert_ne!(
            email_code_hash(b"k", "00", "123456"),
            backup_code_hash(b"k", "00", "123456")
        );
    }
}

//! Randomness from the operating system: bytes, and Meteor-style ids. A
//! leaf module: keys, files, the cache, admin and storage all draw from it.

use rcpat::token;

/// `len` bytes from the operating system's source.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// A Meteor-style random id of `len` characters (unbiased rejection
/// sampling over `Random.id`'s alphabet, also the backup codes').
pub fn random_id(len: usize) -> String {
    const ID_ALPHABET: &[u8] = token::ID_ALPHABET;
    let n = ID_ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes(len * 2) {
            if (b as usize) < limit && out.len() < len {
                out.push(ID_ALPHABET[b as usize % n] as char);
            }
        }
    }
    out
}

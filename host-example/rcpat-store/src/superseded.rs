//! A token's superseded values (reuse detection, contract 0.10.0) as the
//! SQL stores keep them on the token's row: one blob of 24-byte entries,
//! newest first, each the first 16 bytes of the SHA-256 of the hash's text
//! (enough to recognise a value among one user's, and no use to anyone who
//! reads the database) and the instant it was superseded (u64, big-endian).
//! The family is the row: removing the token forgets them, a new token under
//! the name starts with none.

use rcpat::model::TimestampMs;
use sha2::{Digest, Sha256};

const KEY_LEN: usize = 16;
/// Bytes per entry.
pub const ENTRY_LEN: usize = KEY_LEN + 8;

fn key(hashed_token: &str) -> [u8; KEY_LEN] {
    let digest = Sha256::digest(hashed_token.as_bytes());
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&digest[..KEY_LEN]);
    key
}

/// The blob after a replacement superseded `hashed_token` at `at`: that
/// value first, then the newest of `kept`, `keep` entries in all (`None`
/// for 0: the row keeps nothing).
pub fn prepend(
    kept: Option<&[u8]>,
    hashed_token: &str,
    at: TimestampMs,
    keep: u32,
) -> Option<Vec<u8>> {
    let keep = keep as usize;
    if keep == 0 {
        return None;
    }
    let mut blob = Vec::with_capacity(keep.min(64) * ENTRY_LEN);
    blob.extend_from_slice(&key(hashed_token));
    blob.extend_from_slice(&at.to_be_bytes());
    let older = kept.unwrap_or_default();
    // Whole entries only (a blob of another length is read as far as it goes).
    let room = (keep - 1).min(older.len() / ENTRY_LEN) * ENTRY_LEN;
    blob.extend_from_slice(&older[..room]);
    Some(blob)
}

/// When `hashed_token` was superseded, if the blob keeps it at or after `not_before`.
pub fn find(kept: &[u8], hashed_token: &str, not_before: TimestampMs) -> Option<TimestampMs> {
    let key = key(hashed_token);
    kept.chunks_exact(ENTRY_LEN).find_map(|entry| {
        let at = TimestampMs::from_be_bytes(entry[KEY_LEN..].try_into().ok()?);
        (entry[..KEY_LEN] == key && at >= not_before).then_some(at)
    })
}

/// One entry: `hashed_token` superseded at `at` (for a store that prepends
/// it in SQL, bounded to `keep * ENTRY_LEN` bytes, as `prepend` does).
pub fn entry(hashed_token: &str, at: TimestampMs) -> Vec<u8> {
    let mut entry = key(hashed_token).to_vec();
    entry.extend_from_slice(&at.to_be_bytes());
    entry
}

/// The bytes a store can search for first (`instr`, `position`) before
/// `find` checks the entry: the value's key.
pub fn search_key(hashed_token: &str) -> Vec<u8> {
    key(hashed_token).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_bounded_and_found_by_instant() {
        let a = prepend(None, "a", 10, 3).unwrap();
        let b = prepend(Some(&a), "b", 20, 3).unwrap();
        let c = prepend(Some(&b), "c", 30, 3).unwrap();
        let d = prepend(Some(&c), "d", 40, 3).unwrap();
        assert_eq!(d.len(), 3 * ENTRY_LEN);
        assert_eq!(find(&d, "a", 0), None, "pushed out");
        assert_eq!(find(&d, "b", 0), Some(20));
        assert_eq!(find(&d, "d", 40), Some(40));
        assert_eq!(find(&d, "c", 31), None, "before not-before");
        assert_eq!(find(&d, "e", 0), None);
        assert_eq!(prepend(Some(&d), "e", 50, 0), None);
        // A truncated blob is read entry by entry, never past its end.
        assert_eq!(find(&d[..ENTRY_LEN + 5], "d", 0), Some(40));
        assert_eq!(prepend(Some(&d[..5]), "e", 50, 3).unwrap().len(), ENTRY_LEN);
    }
}

//! HOTP (RFC 4226) and TOTP (RFC 6238) with SHA-1, SHA-256 and SHA-512.

use hmac::{Hmac, Mac};

use crate::model::TotpAlgorithm;
use crate::token::secret_eq;

/// Decodes a base32 secret, ignoring case, spaces and `=` padding (as
/// authenticator apps and speakeasy's `.base32` output vary in these).
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let cleaned: String = secret
        .chars()
        .filter(|c| *c != ' ' && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &cleaned)?;
    (!bytes.is_empty()).then_some(bytes)
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// The HOTP value for `counter`, zero-padded to `digits`.
pub fn hotp(key: &[u8], counter: u64, digits: u8, algorithm: TotpAlgorithm) -> String {
    let msg = counter.to_be_bytes();
    let hs = match algorithm {
        TotpAlgorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(key, &msg),
        TotpAlgorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(key, &msg),
        TotpAlgorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(key, &msg),
    };
    // Dynamic truncation (RFC 4226 section 5.3).
    let offset = (hs[hs.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        hs[offset] & 0x7f,
        hs[offset + 1],
        hs[offset + 2],
        hs[offset + 3],
    ]);
    let value = u64::from(bin) % 10u64.pow(u32::from(digits));
    format!("{value:0width$}", width = usize::from(digits))
}

/// The time step containing `unix_seconds` (T0 = 0).
pub fn step_at(unix_seconds: u64, period: u32) -> u64 {
    unix_seconds / u64::from(period.max(1))
}

/// Finds the step in `now_step ± window` whose code equals `code`, skipping
/// steps at or before `last_used_step` (a code is accepted once only).
/// Every candidate is computed and compared in constant time.
pub fn matching_step(
    key: &[u8],
    code: &str,
    digits: u8,
    algorithm: TotpAlgorithm,
    now_step: u64,
    window: u32,
    last_used_step: u64,
) -> Option<u64> {
    let w = u64::from(window);
    let mut found = None;
    for step in now_step.saturating_sub(w)..=now_step.saturating_add(w) {
        let candidate = hotp(key, step, digits, algorithm);
        if secret_eq(candidate.as_bytes(), code.as_bytes())
            && step > last_used_step
            && found.is_none()
        {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use TotpAlgorithm::*;

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp(SEED20, counter as u64, 6, Sha1),
                *want,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b_all_hashes() {
        let rows: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, s1, s256, s512) in rows {
            let step = step_at(t, 30);
            assert_eq!(hotp(SEED20, step, 8, Sha1), s1, "sha1 t={t}");
            assert_eq!(hotp(SEED32, step, 8, Sha256), s256, "sha256 t={t}");
            assert_eq!(hotp(SEED64, step, 8, Sha512), s512, "sha512 t={t}");
            // Six-digit codes are the last six digits (value mod 10^6).
            assert_eq!(hotp(SEED20, step, 6, Sha1), &s1[2..], "sha1/6 t={t}");
        }
    }

    #[test]
    fn base32_secrets_decode_leniently_in_form_only() {
        assert_eq!(
            decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            SEED20
        );
        assert_eq!(
            decode_secret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap(),
            SEED20
        );
        assert_eq!(
            decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA====").unwrap(),
            SEED32
        );
        assert!(decode_secret("not base32!").is_none());
        assert!(decode_secret("").is_none());
    }

    #[test]
    fn window_edges_and_replay() {
        let now = step_at(1234567890, 30);
        let code = |s| hotp(SEED20, s, 6, Sha1);
        // ±1 step accepted, ±2 refused.
        assert_eq!(
            matching_step(SEED20, &code(now - 1), 6, Sha1, now, 1, 0),
            Some(now - 1)
        );
        assert_eq!(
            matching_step(SEED20, &code(now + 1), 6, Sha1, now, 1, 0),
            Some(now + 1)
        );
        assert_eq!(
            matching_step(SEED20, &code(now - 2), 6, Sha1, now, 1, 0),
            None
        );
        assert_eq!(
            matching_step(SEED20, &code(now + 2), 6, Sha1, now, 1, 0),
            None
        );
        // Window 0: only the current step.
        assert_eq!(
            matching_step(SEED20, &code(now - 1), 6, Sha1, now, 0, 0),
            None
        );
        assert_eq!(
            matching_step(SEED20, &code(now), 6, Sha1, now, 0, 0),
            Some(now)
        );
        // A used step (or an earlier one) is never accepted again.
        assert_eq!(
            matching_step(SEED20, &code(now), 6, Sha1, now, 1, now),
            None
        );
        assert_eq!(
            matching_step(SEED20, &code(now - 1), 6, Sha1, now, 1, now),
            None
        );
        assert_eq!(
            matching_step(SEED20, &code(now + 1), 6, Sha1, now, 1, now),
            Some(now + 1)
        );
    }
}

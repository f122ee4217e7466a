//! The host's secret keys, kept outside storage. A key file holds numbered
//! 32-byte master keys, one per line (`<id> <64 hex digits>`), created
//! owner-only on first use; `RCPAT_SECRET_KEY` (64 hex digits) may stand in
//! for a file holding one key. Purpose keys are derived from them with
//! HMAC-SHA-256 of a label, so a leaked derived key reveals no other:
//!
//! - the code key (backup and email codes are hashed under it) comes from
//!   the first key and never changes: codes cannot be re-hashed without
//!   their plaintext;
//! - TOTP secrets are encrypted (XChaCha20-Poly1305, the user id as
//!   associated data) under the newest key; each value records its key id,
//!   so `keys rotate` adds a key and re-encrypts, and older values stay
//!   readable meanwhile.
//!
//! A key file is trusted only if it is a regular file (not a symlink) owned
//! by this user and accessible to no one else; anything else is refused.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::files::{self, Exposure};
use crate::services::random_bytes;

/// The environment variable that supplies a master key instead of a file.
pub const KEY_ENV: &str = "RCPAT_SECRET_KEY";

const HEADER: &str = "# rcpat secret keys: owner-only; back up with the database; \
                      rotate with `host-example keys rotate`\n";
const NONCE_LEN: usize = 24;

pub struct Keys {
    /// Hashes second-factor codes (backup and email codes).
    code_key: [u8; 32],
    /// Encryption keys by id, ascending; the last one encrypts.
    secret_keys: Vec<(u32, [u8; 32])>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys derived from numbered master keys (ids ascending, at least one).
    fn from_masters(mut masters: Vec<(u32, [u8; 32])>) -> Result<Self, &'static str> {
        masters.sort_by_key(|(id, _)| *id);
        if masters.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("it names a key id twice");
        }
        let first = masters.first().ok_or("it holds no key")?.1;
        Ok(Keys {
            code_key: derive(&first, "rcpat/code-key/v1"),
            secret_keys: masters
                .iter()
                .map(|(id, m)| (*id, derive(m, "rcpat/totp-secret/v1")))
                .collect(),
        })
    }

    /// Keys from one master key.
    pub fn from_master(master: &[u8; 32]) -> Self {
        Self::from_masters(vec![(1, *master)]).expect("one key")
    }

    /// A fresh random key, for stores that do not outlive the process.
    pub fn random() -> Self {
        Self::from_master(&random_key())
    }

    /// The keys from `RCPAT_SECRET_KEY` if set, else from the key file at
    /// `path` (created, owner-only, with one new key if it does not exist).
    pub fn load(path: &Path) -> Result<Self> {
        match std::env::var(KEY_ENV) {
            Ok(hex) => parse_hex(hex.trim())
                .map(|m| Self::from_master(&m))
                .map_err(|reason| Error::Keys {
                    origin: KEY_ENV.into(),
                    reason,
                }),
            Err(_) => Self::from_masters(load_or_create(path)?).map_err(|reason| Error::Keys {
                origin: format!("key file {}", path.display()),
                reason,
            }),
        }
    }

    /// Adds a new newest key to the key file at `path` (kept: the older keys
    /// still decrypt what they encrypted, and the first derives the code
    /// key). Returns the keys including the new one.
    pub fn rotate(path: &Path) -> Result<Self> {
        if std::env::var_os(KEY_ENV).is_some() {
            return Err(Error::invalid(format!(
                "{KEY_ENV} is set: rotate keys in a key file (--secret-key-file)"
            )));
        }
        let mut masters = load_or_create(path)?;
        let next = masters.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
        masters.push((next, random_key()));
        files::write_private_atomically(path, render(&masters).as_bytes())?;
        Self::from_masters(masters).map_err(|reason| Error::Keys {
            origin: format!("key file {}", path.display()),
            reason,
        })
    }

    pub fn code_key(&self) -> &[u8] {
        &self.code_key
    }

    /// The id of the key that encrypts.
    pub fn current_id(&self) -> u32 {
        self.secret_keys.last().expect("at least one key").0
    }

    /// Encrypts `plaintext` bound to `context` (the user id) under the newest
    /// key: (key id, nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> (u32, Vec<u8>) {
        let (id, key) = self.secret_keys.last().expect("at least one key");
        let nonce: [u8; NONCE_LEN] = random_bytes(NONCE_LEN).try_into().expect("24 bytes");
        let sealed = XChaCha20Poly1305::new(key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length we store");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        (*id, out)
    }

    /// A text secret (a TOTP secret) as stored: base64 of `seal`'s output,
    /// and the key id to store beside it.
    pub fn seal_text(&self, context: &str, secret: &str) -> (String, u32) {
        let (id, sealed) = self.seal(context, secret.as_bytes());
        (data_encoding::BASE64.encode(&sealed), id)
    }

    /// The inverse of `seal_text`.
    pub fn open_text(&self, id: u32, context: &str, stored: &str) -> Result<String> {
        let sealed = data_encoding::BASE64
            .decode(stored.as_bytes())
            .map_err(|_| Error::Secret("not base64".into()))?;
        String::from_utf8(self.open(id, context, &sealed)?)
            .map_err(|_| Error::Secret("not text once decrypted".into()))
    }

    /// Decrypts what `seal` produced under key `id` for `context`.
    pub fn open(&self, id: u32, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let key = self
            .secret_keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, key)| key)
            .ok_or_else(|| {
                Error::Secret(format!(
                    "encrypted under key {id}, which the key file lacks"
                ))
            })?;
        if sealed.len() < NONCE_LEN {
            return Err(Error::Secret("truncated".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Secret(format!(
                    "it does not decrypt under key {id} (tampered or misplaced)"
                ))
            })
    }
}

fn random_key() -> [u8; 32] {
    random_bytes(32).try_into().expect("32 bytes")
}

fn derive(master: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC accepts any key");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

fn parse_hex(text: &str) -> Result<[u8; 32], &'static str> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a key must be 64 hexadecimal digits")
}

fn render(masters: &[(u32, [u8; 32])]) -> String {
    let mut text = HEADER.to_string();
    for (id, key) in masters {
        text.push_str(&format!("{id} {}\n", data_encoding::HEXLOWER.encode(key)));
    }
    text
}

fn parse_file(text: &str) -> Result<Vec<(u32, [u8; 32])>, &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| match line.split_once(' ') {
            // A bare key: a file written by hand (or an older version).
            None => parse_hex(line).map(|k| (1, k)),
            Some((id, hex)) => Ok((
                id.parse().map_err(|_| "a key id is not a number")?,
                parse_hex(hex.trim())?,
            )),
        })
        .collect()
}

/// Reads the key file, or creates it with one key (exclusively, mode 0600,
/// fsynced, its folder 0700 if new).
fn load_or_create(path: &Path) -> Result<Vec<(u32, [u8; 32])>> {
    let shown = path.display();
    let malformed = |reason| Error::Keys {
        origin: format!("key file {shown}"),
        reason,
    };
    match files::read_trusted(path, Exposure::Private)? {
        Some(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| malformed("not text"))?;
            parse_file(&text).map_err(malformed)
        }
        None => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                files::create_private_dir(dir)?;
            }
            let masters = vec![(1, random_key())];
            files::create_private_file(path, render(&masters).as_bytes())?;
            tracing::info!(path = %shown, "created a new secret key file");
            Ok(masters)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rcpat-keys-{name}-{}", crate::admin::random_id(8)))
    }

    #[test]
    fn key_file_is_created_private_reused_and_refused_when_exposed() {
        let dir = temp("file");
        let path = dir.join("sub").join("rcpat.key");
        let first = load_or_create(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(load_or_create(&path).unwrap(), first);
        // Readable by others: refused, not used.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("accessible to other users")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A symlink in its place: refused.
        let link = dir.join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            load_or_create(&link)
                .unwrap_err()
                .to_string()
                .contains("symlink")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_adds_a_key_and_keeps_the_code_key_and_old_secrets() {
        let dir = temp("rotate");
        let path = dir.join("rcpat.key");
        let before = Keys::load(&path).unwrap();
        let (id, sealed) = before.seal("user1", b"JBSWY3DPEHPK3PXP");
        let after = Keys::rotate(&path).unwrap();
        assert_eq!((id, after.current_id()), (1, 2));
        assert_eq!(after.code_key(), before.code_key());
        assert_eq!(
            after.open(id, "user1", &sealed).unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        // Bound to its user: moved to another row, it does not decrypt.
        assert!(after.open(id, "user2", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert!(after.open(id, "user1", &tampered).is_err());
        let (new_id, _) = after.seal("user1", b"x");
        assert_eq!(new_id, 2);
        assert_eq!(Keys::load(&path).unwrap().current_id(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn derived_keys_differ_from_the_master_and_each_master() {
        let a = Keys::from_master(&[1; 32]);
        let b = Keys::from_master(&[2; 32]);
        assert_ne!(a.code_key(), b.code_key());
        assert_ne!(a.code_key(), &[1u8; 32]);
        assert_eq!(parse_hex(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        assert!(parse_hex("abc").is_err());
        assert_eq!(parse_file(&"cd".repeat(32)).unwrap(), vec![(1, [0xcd; 32])]);
    }
}

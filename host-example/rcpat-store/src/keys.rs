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
//!   so `keys add` then `keys reencrypt` (or `keys rotate`, both at once)
//!   moves them to a new key, and older values stay readable meanwhile.
//!
//! Rotation is safe against itself and against running hosts:
//!
//! - the key file changes only under an exclusive lock on `<file>.lock`
//!   (`files::lock_exclusive`), re-read under that lock, and keys are only
//!   ever added, so two rotations on one machine add two keys;
//! - storage records each key id's *fingerprint* (`fingerprint`, which
//!   reveals nothing of the key) in the transaction that first writes a
//!   secret under it, and refuses to write under an id whose recorded
//!   fingerprint is another key's (`admit`): two machines that each made
//!   their own "key 2" cannot both write, so no secret is ever sealed under
//!   a key that the file of the host that wrote it does not hold;
//! - a running host that meets a secret under a key id it lacks re-reads its
//!   key file (at most once a second) and keeps the new keys if they only
//!   add to what it had.
//!
//! A key file is trusted only if it is a regular file (not a symlink) owned
//! by this user and accessible to no one else; anything else is refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::files::{self, Exposure};
use crate::random::random_bytes;

/// The environment variable that supplies a master key instead of a file.
pub const KEY_ENV: &str = "RCPAT_SECRET_KEY";

const HEADER: &str = "# rcpat secret keys: owner-only; back up with the database; \
                      add one with `host-example keys add`, never edit or remove one\n";
const NONCE_LEN: usize = 24;

/// The shortest time between two re-reads of the key file for an unknown
/// key id (a flood of requests for a user whose key is missing reads the
/// file once a second, not once a request).
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// TOTP encryption keys by id, ascending; the last one encrypts.
type SecretKeys = Vec<(u32, [u8; 32])>;

pub struct Keys {
    /// Hashes second-factor codes (backup and email codes).
    code_key: [u8; 32],
    secret_keys: RwLock<Arc<SecretKeys>>,
    /// Where the keys came from, if a file: re-read for an unknown key id.
    file: Option<PathBuf>,
    last_reload: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Whether a key may seal in a database (see `Keys::admit`).
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The database already knows this key under this id.
    Known,
    /// The database knows no key under this id: record this fingerprint in
    /// the same transaction as the first secret sealed under it.
    Record(String),
}

impl Keys {
    /// Keys derived from numbered master keys (ids ascending, at least one).
    fn from_masters(
        mut masters: Vec<(u32, [u8; 32])>,
        file: Option<PathBuf>,
    ) -> Result<Self, &'static str> {
        let (code_key, secret_keys) = derive_all(&mut masters)?;
        Ok(Keys {
            code_key,
            secret_keys: RwLock::new(Arc::new(secret_keys)),
            file,
            last_reload: Mutex::new(None),
        })
    }

    /// Keys from one master key.
    pub fn from_master(master: &[u8; 32]) -> Self {
        Self::from_masters(vec![(1, *master)], None).expect("one key")
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
            Err(_) => Self::load_locked(path, &Self::lock_file(path)?),
        }
    }

    /// Takes the key file's lock (`<path>.lock`), for a command that must
    /// run alone on the file from start to end: `keys rotate` holds it while
    /// it adds a key and re-encrypts under it, so concurrent rotations run
    /// one after the other and each re-encrypts every secret under its own
    /// key. Use `load_locked` and `add_locked` while holding it (taking the
    /// lock again from the same process would wait for itself).
    pub fn lock_file(path: &Path) -> Result<KeyFileLock> {
        Ok(KeyFileLock(lock(path)?))
    }

    /// `load` from the key file, with its lock held.
    pub fn load_locked(path: &Path, _held: &KeyFileLock) -> Result<Self> {
        let masters = load_or_create(path)?;
        Self::from_masters(masters, Some(path.to_path_buf()))
            .map_err(|reason| malformed(path, reason))
    }

    /// Adds a new newest key to the key file at `path`, under the file's
    /// lock, so concurrent adds each add their own id. The older keys stay:
    /// they still decrypt what they encrypted, and the first derives the
    /// code key. Returns the keys including the new one.
    pub fn add(path: &Path) -> Result<Self> {
        if std::env::var_os(KEY_ENV).is_some() {
            return Err(Error::invalid(format!(
                "{KEY_ENV} is set: add keys to a key file (--secret-key-file)"
            )));
        }
        Self::add_locked(path, &Self::lock_file(path)?)
    }

    /// `add`, with the key file's lock held.
    pub fn add_locked(path: &Path, _held: &KeyFileLock) -> Result<Self> {
        if std::env::var_os(KEY_ENV).is_some() {
            return Err(Error::invalid(format!(
                "{KEY_ENV} is set: add keys to a key file (--secret-key-file)"
            )));
        }
        let mut masters = load_or_create(path)?;
        let next = masters.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
        masters.push((next, random_key()));
        files::write_private_atomically(path, render(&masters).as_bytes())?;
        Self::from_masters(masters, Some(path.to_path_buf()))
            .map_err(|reason| malformed(path, reason))
    }

    pub fn code_key(&self) -> &[u8] {
        &self.code_key
    }

    fn current(&self) -> Arc<SecretKeys> {
        self.secret_keys.read().expect("keys lock").clone()
    }

    /// The id of the key that encrypts.
    pub fn current_id(&self) -> u32 {
        self.current().last().expect("at least one key").0
    }

    /// A public fingerprint of key `id` (32 hex digits of an HMAC under it):
    /// tells two keys apart without revealing either.
    pub fn fingerprint(&self, id: u32) -> Option<String> {
        let keys = self.current();
        let (_, key) = keys.iter().find(|(k, _)| *k == id)?;
        Some(data_encoding::HEXLOWER.encode(&derive(key, "rcpat/key-fingerprint/v1")[..16]))
    }

    /// Whether this file's key `id` may seal secrets in a database that
    /// records `recorded` as that id's fingerprint. `sample` is one secret
    /// the database already holds under `id` (user id, stored value), checked
    /// when no fingerprint is recorded yet (a database from before
    /// fingerprints): a key that does not open it is another key.
    pub fn admit(
        &self,
        id: u32,
        recorded: Option<&str>,
        sample: Option<(&str, &str)>,
    ) -> Result<Admission> {
        let ours = self
            .fingerprint(id)
            .ok_or_else(|| Error::Secret(format!("key {id} is not in the key file")))?;
        let conflict = || {
            Error::KeyConflict(format!(
                "key {id} of this key file is not the key {id} that storage's secrets are \
                 under: another `keys add` or `keys rotate` made its own key {id}. Use the key \
                 file of the host that made it (and remove this file's key {id} only if nothing \
                 was written under it)"
            ))
        };
        match recorded {
            Some(theirs) if theirs == ours => Ok(Admission::Known),
            Some(_) => Err(conflict()),
            None => match sample {
                Some((user, stored)) if self.open_text(id, user, stored).is_err() => {
                    Err(conflict())
                }
                _ => Ok(Admission::Record(ours)),
            },
        }
    }

    /// Checks this file's keys against the fingerprints storage records
    /// (id, fingerprint): a key under a known id that is another key is an
    /// error; ids storage knows that the file lacks are returned (their
    /// secrets will not open here until the file has them).
    pub fn check_recorded(&self, recorded: &[(u32, String)]) -> Result<Vec<u32>> {
        let mut missing = Vec::new();
        for (id, fingerprint) in recorded {
            match self.fingerprint(*id) {
                None => missing.push(*id),
                Some(_) => {
                    self.admit(*id, Some(fingerprint), None)?;
                }
            }
        }
        Ok(missing)
    }

    /// Encrypts `plaintext` bound to `context` (the user id) under the newest
    /// key: (key id, nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> (u32, Vec<u8>) {
        let keys = self.current();
        let (id, key) = keys.last().expect("at least one key");
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

    /// Decrypts what `seal` produced under key `id` for `context`. A key id
    /// this host lacks makes it re-read its key file first (see `reload`).
    pub fn open(&self, id: u32, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let key = match self.key(id) {
            Some(key) => key,
            None => {
                self.reload();
                self.key(id).ok_or_else(|| {
                    Error::Secret(format!(
                        "encrypted under key {id}, which the key file lacks"
                    ))
                })?
            }
        };
        if sealed.len() < NONCE_LEN {
            return Err(Error::Secret("truncated".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        XChaCha20Poly1305::new((&key).into())
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

    fn key(&self, id: u32) -> Option<[u8; 32]> {
        self.current()
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, key)| *key)
    }

    /// Re-reads the key file (at most once per `RELOAD_INTERVAL`) and keeps
    /// what it holds if it only adds keys to ours: the same code key, and
    /// every id we hold with the same key. Anything else (a file replaced
    /// by another deployment's, a key edited) is logged and ignored, so a
    /// bad file cannot take keys away from a running host.
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        {
            let mut last = self.last_reload.lock().expect("reload lock");
            if last.is_some_and(|at| at.elapsed() < RELOAD_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let read = files::read_trusted(path, Exposure::Private).and_then(|bytes| {
            let bytes = bytes.ok_or_else(|| Error::invalid("the key file is gone"))?;
            let text = String::from_utf8(bytes).map_err(|_| malformed(path, "not text"))?;
            let mut masters = parse_file(&text).map_err(|reason| malformed(path, reason))?;
            derive_all(&mut masters).map_err(|reason| malformed(path, reason))
        });
        let (code_key, keys) = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "cannot re-read the key file");
                return;
            }
        };
        let mut current = self.secret_keys.write().expect("keys lock");
        let only_adds = code_key == self.code_key && current.iter().all(|held| keys.contains(held));
        if !only_adds {
            tracing::error!(
                path = %path.display(),
                "the key file no longer holds this host's keys (changed or replaced, not added to); keeping the keys loaded at start"
            );
        } else if keys.len() > current.len() {
            tracing::info!(
                path = %path.display(),
                newest = keys.last().expect("at least one key").0,
                "loaded new keys from the key file"
            );
            *current = Arc::new(keys);
        }
    }
}

/// The code key and the encryption keys from master keys (sorted by id).
fn derive_all(masters: &mut [(u32, [u8; 32])]) -> Result<([u8; 32], SecretKeys), &'static str> {
    masters.sort_by_key(|(id, _)| *id);
    if masters.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("it names a key id twice");
    }
    let first = masters.first().ok_or("it holds no key")?.1;
    Ok((
        derive(&first, "rcpat/code-key/v1"),
        masters
            .iter()
            .map(|(id, m)| (*id, derive(m, "rcpat/totp-secret/v1")))
            .collect(),
    ))
}

fn malformed(path: &Path, reason: &'static str) -> Error {
    Error::Keys {
        origin: format!("key file {}", path.display()),
        reason,
    }
}

/// The lock that serializes changes to the key file at `path` (and its
/// creation): `<path>.lock` beside it.
/// A held lock on a key file (see `Keys::lock_file`); released when dropped.
pub struct KeyFileLock(#[expect(dead_code, reason = "held for its lock")] std::fs::File);

fn lock(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_private_dir(dir)?;
    }
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    files::lock_exclusive(Path::new(&name))
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

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rcpat-keys-{name}-{}", crate::random::random_id(8)))
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
        let after = Keys::add(&path).unwrap();
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

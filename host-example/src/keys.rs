//! The host's secret key material, kept outside storage: a 32-byte master key
//! from `RCPAT_SECRET_KEY` (64 hex digits) or a key file, created owner-only
//! on first use. Purpose keys are derived from it (HMAC-SHA-256 of a label),
//! so one file serves every use and a leaked derived key reveals no other.
//!
//! A key file is trusted only if it is a regular file (not a symlink) owned
//! by this user and readable by no one else; anything else is refused with
//! a clear error rather than used or overwritten.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::services::random_bytes;

/// The environment variable that supplies the master key instead of a file.
pub const KEY_ENV: &str = "RCPAT_SECRET_KEY";

pub struct Keys {
    /// Hashes second-factor codes (backup and email codes).
    code_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys derived from a master key.
    pub fn from_master(master: &[u8; 32]) -> Self {
        Keys {
            code_key: derive(master, "rcpat/code-key/v1"),
        }
    }

    /// A fresh random key, for stores that do not outlive the process.
    pub fn random() -> Self {
        let master: [u8; 32] = random_bytes(32).try_into().expect("32 bytes");
        Self::from_master(&master)
    }

    /// The master key from `RCPAT_SECRET_KEY` if set, else from `path`
    /// (created, owner-only, if it does not exist).
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::env::var(KEY_ENV) {
            Ok(hex) => parse_master(hex.trim())
                .map(|m| Self::from_master(&m))
                .map_err(|e| format!("{KEY_ENV}: {e}")),
            Err(_) => load_or_create(path).map(|m| Self::from_master(&m)),
        }
    }

    pub fn code_key(&self) -> &[u8] {
        &self.code_key
    }
}

fn derive(master: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC accepts any key");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

fn parse_master(text: &str) -> Result<[u8; 32], String> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .map_err(|_| "the key must be 64 hexadecimal digits".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "the key must be 64 hexadecimal digits".to_string())
}

/// Reads the key file, or creates it (exclusively, mode 0600, fsynced).
fn load_or_create(path: &Path) -> Result<[u8; 32], String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            check_private(path, &meta)?;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| format!("cannot open the key file {shown}: {e}"))?;
            // Re-check the opened file: the path may have been swapped meanwhile.
            check_private(path, &file.metadata().map_err(|e| e.to_string())?)?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text)
                .map_err(|e| format!("cannot read the key file {shown}: {e}"))?;
            parse_master(text.trim()).map_err(|e| format!("key file {shown}: {e}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::files::create_private_dir(dir)?;
            }
            let master: [u8; 32] = random_bytes(32).try_into().expect("32 bytes");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| format!("cannot create the key file {shown}: {e}"))?;
            // The umask may have narrowed the mode further; never widened it.
            file.write_all(format!("{}\n", data_encoding::HEXLOWER.encode(&master)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write the key file {shown}: {e}"))?;
            tracing::info!(path = %shown, "created a new secret key file");
            Ok(master)
        }
        Err(e) => Err(format!("cannot inspect the key file {shown}: {e}")),
    }
}

/// A regular file of this user's, readable and writable by no one else.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    let shown = path.display();
    if !meta.file_type().is_file() {
        return Err(format!("the key file {shown} is not a regular file"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("the key file {shown} belongs to another user"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "the key file {shown} is accessible to other users (chmod 600 it)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("rcpat-keys-{}", crate::admin::random_id(8)));
        let path = dir.join("sub").join("rcpat.key");
        let first = load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(load_or_create(&path).unwrap(), first);
        // Readable by others: refused, not used.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path).unwrap_err().contains("other users"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A symlink in its place: refused.
        let link = dir.join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            load_or_create(&link)
                .unwrap_err()
                .contains("not a regular file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn derived_keys_differ_from_the_master_and_each_master() {
        let a = Keys::from_master(&[1; 32]);
        let b = Keys::from_master(&[2; 32]);
        assert_ne!(a.code_key(), b.code_key());
        assert_ne!(a.code_key(), &[1u8; 32]);
        assert_eq!(parse_master(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        assert!(parse_master("abc").is_err());
    }
}

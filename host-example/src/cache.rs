//! The compiled component cached on disk, so a restart does not recompile.
//!
//! A cached artifact is native code that wasmtime runs without checking it,
//! so it is trusted only when it can be:
//! - the folder must be this user's and writable by no one else (created
//!   0700); otherwise the component is compiled in memory and nothing is
//!   read from or written to it;
//! - every artifact carries an HMAC-SHA-256 tag under a key kept in the
//!   folder (`cache.key`, 0600, created on first use) and is checked before
//!   it is deserialized: a flipped byte, a swapped or planted file, or a
//!   missing key means the artifact is recompiled (with one warning) and
//!   never executed;
//! - files are opened without following symlinks, and written to a
//!   temporary file created exclusively, fsynced, then renamed.
//!
//! The file name is a SHA-256 over the component's bytes and the engine's
//! precompile compatibility hash, so another build or configuration never
//! looks for a stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};
use crate::files::{self, Exposure};

/// How the component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a precompiled artifact whose tag checked out.
    Hit,
    /// Compiled, then stored for the next start (replacing any artifact
    /// that failed its check).
    Compiled,
    /// Compiled; no cache directory was configured.
    Disabled,
    /// Compiled in memory: the cache directory or its key could not be
    /// trusted, so it was neither read nor written.
    Untrusted,
}

impl CacheOutcome {
    /// A short name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Compiled => "compiled",
            CacheOutcome::Disabled => "disabled",
            CacheOutcome::Untrusted => "untrusted",
        }
    }
}

const TAG_LEN: usize = 32;
const KEY_FILE: &str = "cache.key";

/// The default cache folder: `$XDG_CACHE_HOME/rcpat`, else `~/.cache/rcpat`.
pub fn default_dir() -> Option<PathBuf> {
    dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// `default_dir` from the two variables (relative values are ignored, as the
/// XDG specification says).
fn dir_from(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    xdg.and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|h| h.join(".cache")))
        .map(|base| base.join("rcpat"))
}

/// The artifact path for `wasm` under `dir` for this engine.
pub fn artifact_path(engine: &Engine, wasm: &[u8], dir: &Path) -> PathBuf {
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut key = Sha256::new();
    key.update(wasm);
    key.update(compat.finish().to_le_bytes());
    key.update(env!("CARGO_PKG_VERSION").as_bytes());
    let name = data_encoding::HEXLOWER.encode(&key.finalize());
    dir.join(format!("{}.cwasm", &name[..32]))
}

/// The tag binds the artifact to its name (itself bound to the component),
/// so a genuine artifact of another component renamed into place fails too.
fn tag(key: &[u8], path: &Path, artifact: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key");
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    mac.update(&(name.len() as u64).to_be_bytes());
    mac.update(name);
    mac.update(artifact);
    mac
}

/// The folder's MAC key: read if trusted, created if absent.
fn cache_key(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join(KEY_FILE);
    match files::read_trusted(&path, Exposure::Private)? {
        Some(key) if key.len() == 32 => Ok(key),
        Some(_) => Err(files::untrusted_error(&path, "not a 32-byte key".into()).into()),
        None => {
            let key = crate::random::random_bytes(32);
            files::create_private_file(&path, &key)?;
            Ok(key)
        }
    }
}

/// Makes sure `dir` exists (0700 if new) and can be trusted.
fn trusted_dir(dir: &Path) -> Result<()> {
    files::create_private_dir(dir)?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("inspect", dir, e))?;
    match files::untrusted(&meta, true, Exposure::NotWritable) {
        Some(why) => Err(files::untrusted_error(dir, why).into()),
        None => Ok(()),
    }
}

/// Loads the compiled component from `dir`, or compiles and stores it.
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
    };
    let key = match trusted_dir(dir).and_then(|()| cache_key(dir)) {
        Ok(key) => key,
        Err(why) => {
            tracing::warn!(
                event = "cache_untrusted",
                reason = %why,
                "not using the compiled-component cache; compiling in memory"
            );
            return Ok((Component::new(engine, wasm)?, CacheOutcome::Untrusted));
        }
    };
    let path = artifact_path(engine, wasm, dir);
    match files::read_trusted(&path, Exposure::NotWritable) {
        Ok(None) => {}
        Ok(Some(bytes)) => {
            let verified = bytes.len() > TAG_LEN && {
                let (stored, artifact) = bytes.split_at(TAG_LEN);
                tag(&key, &path, artifact).verify_slice(stored).is_ok()
            };
            if verified {
                // SAFETY: the tag proves this program wrote these bytes for
                // this engine configuration (the name binds both), and the
                // key is readable only by this user; wasmtime checks the
                // version and configuration again.
                match unsafe { Component::deserialize(engine, &bytes[TAG_LEN..]) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(e) => tracing::warn!(
                        event = "cache_artifact_refused",
                        path = %path.display(),
                        error = %e,
                        "a cached component could not be loaded; recompiling"
                    ),
                }
            } else {
                tracing::warn!(
                    event = "cache_artifact_refused",
                    path = %path.display(),
                    "a cached component failed its integrity check; recompiling (it was not run)"
                );
            }
        }
        Err(why) => tracing::warn!(
            event = "cache_artifact_refused",
            reason = %why,
            "a cached component cannot be trusted; recompiling (it was not run)"
        ),
    }
    let compiled = engine.precompile_component(wasm)?;
    let mut file = tag(&key, &path, &compiled).finalize().into_bytes().to_vec();
    file.extend_from_slice(&compiled);
    // Replaces whatever was there (a symlink or planted file included: the
    // rename swaps the name, nothing is written through it).
    if let Err(why) = files::write_private_atomically(&path, &file) {
        tracing::warn!(reason = %why, "could not store the compiled component");
    }
    // SAFETY: `compiled` was just produced by this engine.
    let component = unsafe { Component::deserialize(engine, &compiled)? };
    Ok((component, CacheOutcome::Compiled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_folder_is_per_user_never_the_working_directory() {
        let some = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            dir_from(some("/x/cache"), some("/home/u")),
            Some("/x/cache/rcpat".into())
        );
        assert_eq!(
            dir_from(None, some("/home/u")),
            Some("/home/u/.cache/rcpat".into())
        );
        assert_eq!(
            dir_from(some("rel"), some("/home/u")),
            Some("/home/u/.cache/rcpat".into())
        );
        assert_eq!(dir_from(None, some("relative")), None);
        assert_eq!(dir_from(None, None), None);
    }
}

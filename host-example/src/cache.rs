//! The compiled component cached on disk, so a restart does not recompile.
//!
//! The file name is a SHA-256 over the component's bytes and the engine's
//! precompile compatibility hash (wasmtime version and every setting that
//! changes code), so a different build or configuration never loads a stale
//! artifact; it is written to a temporary file and renamed into place.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How the component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a precompiled artifact.
    Hit,
    /// Compiled, then stored for the next start.
    Compiled,
    /// Compiled; no cache directory was configured.
    Disabled,
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

/// Loads the compiled component from `dir`, or compiles and stores it.
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
    };
    let path = artifact_path(engine, wasm, dir);
    if path.exists() {
        // SAFETY: the artifact was written by this program for this engine
        // configuration (the name binds both); wasmtime also checks the
        // version and configuration before use.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, CacheOutcome::Hit)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cached component")
            }
        }
    }
    let bytes = engine.precompile_component(wasm)?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path)?;
    // SAFETY: `bytes` was just produced by this engine.
    let component = unsafe { Component::deserialize(engine, &bytes)? };
    Ok((component, CacheOutcome::Compiled))
}

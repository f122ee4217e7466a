//! The compiled-component cache is trusted only when it can be: a tampered,
//! swapped or symlinked artifact, a folder others can write or another user
//! owns, and a missing key all end in a recompile (or no cache at all), and
//! the untrusted bytes are never run.

use crate::common::temp_dir;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use host_example::cache::{self, CacheOutcome};
use host_example::runtime::{Endpoint, Runtime, RuntimeConfig};
use host_example::services::Services;
use host_example::storage::MemoryStorage;
use rcpat::model::{Request, Settings};

/// Loads the real component through the cache in `dir`; checks it answers
/// as the real one does (an unauthenticated `me` is a 401; the hostile guest
/// answers 200).
fn load(dir: &Path) -> CacheOutcome {
    let (runtime, outcome) =
        Runtime::cached(host_example::COMPONENT, RuntimeConfig::default(), Some(dir)).unwrap();
    let services = Services::new(
        std::sync::Arc::new(MemoryStorage::new()),
        std::sync::Arc::new(host_example::mail::MemoryMailer::default()),
    );
    let r = runtime
        .call(
            &services,
            Endpoint::Me,
            &Settings::default(),
            &Request::default(),
        )
        .unwrap();
    assert_eq!(r.status, 401, "the real component ran: {}", r.body);
    outcome
}

fn artifact(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("an artifact")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn tampered_and_swapped_artifacts_are_recompiled_never_run() {
    let dir = temp_dir("tamper").join("cache");
    assert_eq!(load(&dir), CacheOutcome::Compiled);
    assert_eq!((mode(&dir), mode(&dir.join("cache.key"))), (0o700, 0o600));
    let path = artifact(&dir);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(load(&dir), CacheOutcome::Hit);

    // 64 flipped bytes in the middle of the code.
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Compiled);
    assert_eq!(
        load(&dir),
        CacheOutcome::Hit,
        "the replacement is trusted again"
    );

    // A genuine artifact of another component (the hostile guest, compiled
    // by the same engine into the same folder, so tagged with the same key)
    // renamed to the expected name: refused, since the tag binds the name.
    let hostile = std::fs::read(host_example::HOSTILE_COMPONENT_PATH).unwrap();
    let engine = Runtime::engine(&RuntimeConfig::default()).unwrap();
    cache::load(&engine, &hostile, Some(&dir)).unwrap();
    let hostile_artifact = cache::artifact_path(&engine, &hostile, &dir);
    std::fs::rename(&hostile_artifact, &path).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Compiled);

    // A missing key: a new one is made; the old artifact no longer verifies.
    std::fs::remove_file(dir.join("cache.key")).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Compiled);
    assert_eq!(load(&dir), CacheOutcome::Hit);

    // The artifact replaced by a symlink to another file: not followed for
    // reading, and the recompile replaces the link instead of writing
    // through it.
    let victim = dir.parent().unwrap().join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Compiled);
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(
        !std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn folders_others_can_write_or_another_user_owns_are_not_used() {
    let dir = temp_dir("perm").join("cache");
    assert_eq!(load(&dir), CacheOutcome::Compiled);
    let path = artifact(&dir);

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Untrusted);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Hit);

    // An artifact others may write is not read either.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(load(&dir), CacheOutcome::Compiled);
    assert_eq!(mode(&path), 0o600);

    // Another user's folder (needs root to arrange; CI runs as root).
    if host_example::files::euid() == 0 {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc_chown(c.as_ptr(), 65534, 65534) }, 0);
        assert_eq!(load(&dir), CacheOutcome::Untrusted);
    } else {
        eprintln!("not root: the foreign-owner case needs root to arrange");
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

unsafe extern "C" {
    #[link_name = "chown"]
    fn libc_chown(path: *const std::ffi::c_char, owner: u32, group: u32) -> i32;
}

//! Files and folders the host creates or trusts: secrets, data and compiled
//! code. Created owner-only whatever the umask (0700 folders, 0600 files),
//! exclusively and without following symlinks; read only if they are what
//! they claim to be (a regular file or folder of this user's that no one else
//! may write, or, for secrets, read).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// What others may do with a file we trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Secrets: no access at all for group or others.
    Private,
    /// Data and code: others may read, never write.
    NotWritable,
}

impl Exposure {
    fn forbidden_bits(self) -> u32 {
        match self {
            Exposure::Private => 0o077,
            Exposure::NotWritable => 0o022,
        }
    }
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why `meta` (a file if `dir` is false) cannot be trusted, if so.
pub fn untrusted(meta: &std::fs::Metadata, dir: bool, exposure: Exposure) -> Option<String> {
    let kind_ok = if dir {
        meta.file_type().is_dir()
    } else {
        meta.file_type().is_file()
    };
    if !kind_ok {
        let what = if dir { "a folder" } else { "a regular file" };
        return Some(format!("not {what} (a symlink or something else)"));
    }
    if meta.uid() != euid() {
        return Some(format!("it belongs to another user (uid {})", meta.uid()));
    }
    if meta.mode() & exposure.forbidden_bits() != 0 {
        let what = match exposure {
            Exposure::Private => "accessible to other users",
            Exposure::NotWritable => "writable by other users",
        };
        return Some(format!("it is {what} (mode {:o})", meta.mode() & 0o777));
    }
    None
}

/// Creates `dir` (and missing parents) as 0700; an existing folder is left
/// as it is.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create", dir, e))?;
    // DirBuilder's mode is filtered by the umask; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("restrict", dir, e))
}

/// Reads `path` if it can be trusted: opened without following a symlink,
/// and checked on the open file (so a swap after the check cannot slip in).
/// `Ok(None)` if it does not exist.
pub fn read_trusted(path: &Path, exposure: Exposure) -> Result<Option<Vec<u8>>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(untrusted_error(path, "it is a symlink".into()));
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if let Some(why) = untrusted(&meta, false, exposure) {
        return Err(untrusted_error(path, why));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, created
/// exclusively (never through a planted file or symlink), 0600, fsynced,
/// then renamed into place and the folder fsynced.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let nonce: u64 = u64::from_le_bytes(crate::random::random_bytes(8).try_into().unwrap());
    let tmp = dir.join(format!(".{name}.{}-{nonce:016x}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}

/// An exclusive lock on the owner-only file at `path` (created if missing,
/// never through a symlink), held until the returned file is dropped. It
/// blocks until no other process holds it: `flock(2)`, so it covers every
/// process on this machine, and is released by the kernel when a holder
/// dies. Lock a file beside the one you replace: a rename swaps the inode.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                untrusted_error(path, "it is a symlink".into())
            } else {
                Error::io("create", path, e)
            }
        })?;
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if let Some(why) = untrusted(&meta, false, Exposure::Private) {
        return Err(untrusted_error(path, why));
    }
    file.lock().map_err(|e| Error::io("lock", path, e))?;
    Ok(file)
}

/// Creates `path` with `bytes`, owner-only, failing if it exists.
pub fn create_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

/// Makes an existing file owner-only (a database created by an older version
/// or another tool), refusing one that is not this user's regular file.
pub fn restrict_existing(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    if let Some(why) = untrusted(&meta, false, Exposure::NotWritable)
        .filter(|_| meta.uid() != euid() || !meta.file_type().is_file())
    {
        return Err(untrusted_error(path, why));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("restrict", path, e))?;
    }
    Ok(())
}

pub fn untrusted_error(path: &Path, reason: String) -> Error {
    Error::Untrusted {
        path: path.to_path_buf(),
        reason,
    }
}

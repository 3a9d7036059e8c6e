//! The state file on disk: private (directory 0700, files 0600; looser
//! modes found at start are tightened, with a note), read with a size cap
//! and only when it is a regular file of UTF-8, set aside under a new name
//! when it cannot be used (never deleted, never overwritten), and written
//! atomically: a temporary file, fsync, rename, fsync of the directory.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{ErrorKind, Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use nix::{errno::Errno, fcntl::OFlag};

use super::StateError;

/// The largest state file read (a full one, 1,024 services with their
/// whole history, is a few MiB): anything larger is set aside unread.
pub const MAX_STATE_BYTES: u64 = 64 << 20;
/// The state directory's mode.
pub const DIR_MODE: u32 = 0o700;
/// The state file's mode (and the set-aside copies').
pub const FILE_MODE: u32 = 0o600;

/// What reading the state file found.
#[derive(Debug)]
pub(super) enum Read {
    /// No file: a first start.
    Missing,
    /// Its text.
    Text(String),
    /// A file that cannot be state: why.
    Unusable(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its missing parents) with [`DIR_MODE`], or tightens
/// an existing one that group or others may enter, saying so in `notes`.
pub(super) fn prepare_dir(dir: &Path, notes: &mut Vec<String>) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io(dir))?;
    tighten(dir, DIR_MODE, notes)
}

/// Sets `path`'s permission bits to `mode` when it grants more, noting it.
pub(super) fn tighten(path: &Path, mode: u32, notes: &mut Vec<String>) -> Result<(), StateError> {
    let was = fs::symlink_metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o7777;
    if was & !mode == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))?;
    notes.push(format!(
        "{}: mode {was:04o} let others read the agent's state; now {mode:04o}",
        path.display()
    ));
    Ok(())
}

/// Reads the state file at `path` (see the module docs). Blocking.
pub(super) fn read(path: &Path) -> Result<Read, StateError> {
    // O_NOFOLLOW refuses a final symbolic link; O_NONBLOCK makes opening a
    // FIFO return at once (it is then refused as not a regular file).
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
            return Ok(Read::Unusable("a symbolic link".to_owned()))
        }
        Err(e) => return Err(io(path)(e)),
    };
    let meta = file.metadata().map_err(io(path))?;
    if !meta.file_type().is_file() {
        return Ok(Read::Unusable("not a regular file".to_owned()));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Ok(Read::Unusable(too_large(meta.len())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > MAX_STATE_BYTES {
        // It grew after the size check.
        return Ok(Read::Unusable(too_large(len)));
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Read::Text(text),
        Err(e) => Read::Unusable(format!(
            "not UTF-8 text (byte {} is not)",
            e.utf8_error().valid_up_to()
        )),
    })
}

fn too_large(len: u64) -> String {
    format!(
        "{len} bytes, more than the {} MiB a state file may hold",
        MAX_STATE_BYTES >> 20
    )
}

/// Moves the unusable file at `path` aside, to `<name>.bad-<unix time>`
/// (with `-2`, `-3`… when that exists: nothing is overwritten), private,
/// the rename made durable. Returns the new path.
pub(super) fn set_aside(path: &Path) -> Result<PathBuf, StateError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = parent(path);
    for n in 1u32..=1000 {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let aside = dir.join(format!("{name}.bad-{stamp}{suffix}"));
        match rename_no_replace(path, &aside) {
            Ok(()) => {
                // A directory or a link keeps its own mode.
                if fs::symlink_metadata(&aside).is_ok_and(|m| m.is_file()) {
                    let _ = fs::set_permissions(&aside, fs::Permissions::from_mode(FILE_MODE));
                }
                sync_dir(dir)?;
                return Ok(aside);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(path)(e)),
        }
    }
    Err(io(path)(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "1,000 set-aside copies of this second exist already",
    )))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: check, then rename (the
        // agent is the directory's only writer).
        Err(Errno::EINVAL) if !to.exists() => fs::rename(from, to),
        Err(Errno::EINVAL) => Err(ErrorKind::AlreadyExists.into()),
        Err(errno) => Err(errno.into()),
    }
}

/// Writes `bytes` to `path` atomically and durably (see the module docs).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // A temporary file left by an older agent may have a looser mode.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(parent(path))
}

/// fsync of a directory: a rename in it survives a power cut.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

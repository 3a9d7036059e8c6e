//! Reads the compose files a project's `config_files` label names. The
//! label comes from containers (which anyone with Docker access can
//! create), so the path is untrusted: only a regular file of at most
//! [`MAX_COMPOSE_FILE`] bytes is read — no FIFO (which would block a
//! reader forever), device or symbolic link — and callers read it off the
//! async workers.

// Reads untrusted bytes (labels, /proc, netlink answers): no byte-offset
// slicing of strings, no unchecked indexing, no unchecked arithmetic.
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::{fs::OpenOptions, io::Read, os::unix::fs::OpenOptionsExt, path::Path};

use nix::{errno::Errno, fcntl::OFlag};

/// The largest compose file read: real ones are a few KiB.
pub const MAX_COMPOSE_FILE: u64 = 1024 * 1024;

/// Why a compose file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ComposeFileError {
    /// Opening or reading failed (missing, unreadable, not UTF-8).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The path is a symbolic link.
    #[error("is a symbolic link (only regular files are read)")]
    Symlink,
    /// The path is a FIFO, device, socket or directory.
    #[error("is not a regular file")]
    NotRegular,
    /// The file is larger than [`MAX_COMPOSE_FILE`].
    #[error("is larger than {MAX_COMPOSE_FILE} bytes")]
    TooLarge,
}

/// The text of the regular file at `path`, if it is one of at most
/// [`MAX_COMPOSE_FILE`] bytes. Blocking: call it from a blocking thread.
pub fn read(path: &Path) -> Result<String, ComposeFileError> {
    // O_NOFOLLOW refuses a final symbolic link; O_NONBLOCK makes opening a
    // FIFO return at once (it is then refused as not regular).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if Errno::from_raw(code) == Errno::ELOOP => ComposeFileError::Symlink,
            _ => ComposeFileError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ComposeFileError::NotRegular);
    }
    if meta.len() > MAX_COMPOSE_FILE {
        return Err(ComposeFileError::TooLarge);
    }
    let mut text = String::new();
    file.take(MAX_COMPOSE_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_COMPOSE_FILE {
        // It grew after the size check.
        return Err(ComposeFileError::TooLarge);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("docker-compose.yml");
        std::fs::write(&good, "services: {}\n").expect("write");
        assert_eq!(read(&good).expect("regular file"), "services: {}\n");

        let link = dir.path().join("link.yml");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        assert!(matches!(read(&link), Err(ComposeFileError::Symlink)));

        let fifo = dir.path().join("fifo.yml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert!(matches!(read(&fifo), Err(ComposeFileError::NotRegular)));

        assert!(matches!(
            read(dir.path()),
            Err(ComposeFileError::NotRegular)
        ));

        let big = dir.path().join("big.yml");
        let file = std::fs::File::create(&big).expect("create");
        file.set_len(MAX_COMPOSE_FILE + 1).expect("set_len");
        assert!(matches!(read(&big), Err(ComposeFileError::TooLarge)));
        assert!(matches!(
            read(&dir.path().join("missing.yml")),
            Err(ComposeFileError::Io(_))
        ));
    }
}

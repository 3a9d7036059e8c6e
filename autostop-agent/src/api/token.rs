//! The API's bearer token: read from `agent.token_file`, which must be a
//! regular file that only its owner can read or write (mode 600 or 400);
//! required when the listener is not on loopback.

use std::{
    io::Read as _,
    net::SocketAddr,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use super::ApiError;

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Reads the token file (if any) and refuses a non-loopback listener
/// without one, and a token file that group or others can access.
pub fn load_token(
    listen: SocketAddr,
    token_file: Option<&Path>,
) -> Result<Option<String>, ApiError> {
    let Some(path) = token_file else {
        if listen.ip().is_loopback() {
            return Ok(None);
        }
        return Err(ApiError::TokenRequired(listen));
    };
    let fail = |reason: String| ApiError::Token {
        path: path.display().to_string(),
        reason,
    };
    // O_NONBLOCK: a FIFO in its place must not block the start.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".to_owned()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "group or others can access it (mode {mode:04o}); make it private with `chmod 600 {}`",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(fail(format!("larger than {MAX_TOKEN_BYTES} bytes")));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("empty".to_owned()));
    }
    Ok(Some(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn token_file(dir: &tempfile::TempDir, text: &str, mode: u32) -> std::path::PathBuf {
        let file = dir.path().join(format!("token-{mode:o}"));
        std::fs::write(&file, text).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        file
    }

    #[test]
    fn non_loopback_listener_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:3456".parse().expect("addr");
        assert!(matches!(
            load_token(public, None),
            Err(ApiError::TokenRequired(_))
        ));
        let local: SocketAddr = "127.0.0.1:3456".parse().expect("addr");
        assert!(matches!(load_token(local, None), Ok(None)));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = token_file(&dir, "abc\n", 0o600);
        assert_eq!(
            load_token(public, Some(&file)).expect("token"),
            Some("abc".to_owned())
        );
        let file = token_file(&dir, "  \n", 0o600);
        assert!(matches!(
            load_token(public, Some(&file)),
            Err(ApiError::Token { .. })
        ));
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_fix() {
        let local: SocketAddr = "127.0.0.1:3456".parse().expect("addr");
        let dir = tempfile::tempdir().expect("tempdir");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let file = token_file(&dir, "abc\n", mode);
            let err = load_token(local, Some(&file))
                .expect_err("mode")
                .to_string();
            assert!(
                err.contains("agent.token_file")
                    && err.contains(&format!("chmod 600 {}", file.display())),
                "{mode:o}: {err}"
            );
        }
        for mode in [0o600, 0o400] {
            let file = token_file(&dir, "abc\n", mode);
            assert_eq!(
                load_token(local, Some(&file)).expect("private"),
                Some("abc".into()),
                "{mode:o}"
            );
        }
        let err = load_token(local, Some(dir.path())).expect_err("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}

//! The API's bearer token: read from `agent.token_file`, which must be a
//! regular file owned by root or by the agent's own user that only its
//! owner can read or write (mode 600 or 400); required when the listener is
//! not on loopback. Checked at start, at each reload and by `autostop
//! check`.

use std::{
    fs::Metadata,
    io::Read as _,
    net::SocketAddr,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use super::ApiError;

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Reads the token file (if any) and refuses a non-loopback listener
/// without one, and a token file that is not the agent's ([`access`]).
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
    // The open file's own metadata: no swap between the check and the read.
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    access(&meta, path, nix::unistd::geteuid().as_raw()).map_err(fail)?;
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(fail(format!("larger than {MAX_TOKEN_BYTES} bytes")));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("empty".to_owned()));
    }
    if token.chars().any(char::is_control) {
        return Err(fail(
            "the token has control characters, which no Authorization header can carry".to_owned(),
        ));
    }
    Ok(Some(token.to_owned()))
}

/// `autostop check`: the same checks of `agent.token_file` as the agent's
/// (owner, mode, type), without reading it (`check` may run as another
/// user than the agent, who could not), for an agent running as root or
/// as the user running `check`.
pub fn check_token_file(path: &Path) -> Result<(), ApiError> {
    let fail = |reason: String| ApiError::Token {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    access(&meta, path, nix::unistd::geteuid().as_raw()).map_err(fail)
}

/// Refuses a token file that is not a regular file, not owned by root or
/// `agent_uid`, or that group or others can access; the reason names the
/// fix.
fn access(meta: &Metadata, path: &Path, agent_uid: u32) -> Result<(), String> {
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    refuse_owner_or_mode(meta.uid(), meta.permissions().mode(), path, agent_uid)
}

/// The owner and mode rules of [`access`], on their own.
fn refuse_owner_or_mode(uid: u32, mode: u32, path: &Path, agent_uid: u32) -> Result<(), String> {
    if uid != 0 && uid != agent_uid {
        return Err(format!(
            "owned by uid {uid}, neither root nor the agent's user (uid {agent_uid}): another user could change the token; `chown root {}`",
            path.display()
        ));
    }
    let mode = mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "group or others can access it (mode {mode:04o}); make it private with `chmod 600 {}`",
            path.display()
        ));
    }
    Ok(())
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
        let file = token_file(&dir, "a\u{1b}[2Jb\n", 0o600);
        let err = load_token(local, Some(&file)).expect_err("an escape");
        assert!(err.to_string().contains("control characters"), "{err}");
    }

    #[test]
    fn a_token_file_owned_by_another_user_is_refused_with_the_fix() {
        let path = Path::new("/etc/autostop/token");
        for (uid, agent) in [(1000, 0), (1000, 1001), (0, 1000)] {
            let verdict = refuse_owner_or_mode(uid, 0o100600, path, agent);
            if uid == 0 {
                assert_eq!(verdict, Ok(()), "root's file, agent {agent}");
                continue;
            }
            let err = verdict.expect_err("another user's file");
            assert!(
                err.contains(&format!("owned by uid {uid}"))
                    && err.contains(&format!("(uid {agent})"))
                    && err.contains("chown root /etc/autostop/token"),
                "{err}"
            );
        }
        assert_eq!(refuse_owner_or_mode(1000, 0o400, path, 1000), Ok(()));
        // The mode rule still applies to an owner that passes.
        let err = refuse_owner_or_mode(0, 0o620, path, 0).expect_err("group-writable");
        assert!(err.contains("chmod 600 /etc/autostop/token"), "{err}");
        // The agent's own files pass, through the file's metadata too.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = token_file(&dir, "abc\n", 0o600);
        check_token_file(&file).expect("the user's own file");
        let err = check_token_file(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().starts_with("agent.token_file "), "{err}");
    }
}

//! Runs `nft` and `conntrack` as child processes, with argv arrays (never a
//! shell string) and JSON on stdin, and turns failures into
//! [`NetfilterError`]s that carry the operation and the tool's stderr.

use std::{
    path::Path,
    process::{Output, Stdio},
};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{NetfilterError, Operation};

fn command(program: &Path, args: &[&str], stdin: bool) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn spawn_error(op: Operation, program: &Path, source: std::io::Error) -> NetfilterError {
    NetfilterError::Spawn {
        op,
        program: program.to_path_buf(),
        source,
    }
}

/// The error for a tool that ran and exited non-zero.
pub(crate) fn failed(op: Operation, program: &Path, output: &Output) -> NetfilterError {
    NetfilterError::Failed {
        op,
        program: program.to_path_buf(),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

/// Runs `program args…` with `input` on stdin (if any) and returns its
/// output, whatever the exit status.
pub(crate) async fn run(
    op: Operation,
    program: &Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Output, NetfilterError> {
    let mut child = tokio::process::Command::from(command(program, args, input.is_some()))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| spawn_error(op, program, e))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .await
            .map_err(|e| spawn_error(op, program, e))?;
        // Dropping stdin closes it, so the tool sees end of input.
    }
    child
        .wait_with_output()
        .await
        .map_err(|e| spawn_error(op, program, e))
}

/// Blocking twin of [`run`], for `Drop`, which cannot await.
pub(crate) fn run_blocking(
    op: Operation,
    program: &Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Output, NetfilterError> {
    use std::io::Write;
    let mut child = command(program, args, input.is_some())
        .spawn()
        .map_err(|e| spawn_error(op, program, e))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .map_err(|e| spawn_error(op, program, e))?;
    }
    child
        .wait_with_output()
        .map_err(|e| spawn_error(op, program, e))
}

/// Applies a JSON batch with `nft -j -f -`; nft commits it as one
/// transaction or not at all.
pub(crate) async fn nft_apply(
    op: Operation,
    nft: &Path,
    doc: &Value,
) -> Result<(), NetfilterError> {
    let input = doc.to_string();
    let output = run(op, nft, &["-j", "-f", "-"], Some(input.as_bytes())).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(op, nft, &output))
    }
}

/// Blocking twin of [`nft_apply`].
pub(crate) fn nft_apply_blocking(
    op: Operation,
    nft: &Path,
    doc: &Value,
) -> Result<(), NetfilterError> {
    let input = doc.to_string();
    let output = run_blocking(op, nft, &["-j", "-f", "-"], Some(input.as_bytes()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(op, nft, &output))
    }
}

/// Runs `nft -j ARGS…` (a listing) and parses its JSON answer.
pub(crate) async fn nft_list(
    op: Operation,
    nft: &Path,
    args: &[&str],
) -> Result<Value, NetfilterError> {
    let mut argv = vec!["-j"];
    argv.extend_from_slice(args);
    let output = run(op, nft, &argv, None).await?;
    if !output.status.success() {
        return Err(failed(op, nft, &output));
    }
    serde_json::from_slice(&output.stdout).map_err(|source| NetfilterError::Parse { op, source })
}

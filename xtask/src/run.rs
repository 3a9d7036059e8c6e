//! Small helpers to run commands and find the workspace.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{bail, Context as _};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo that runs this xtask (rustup's), for nested builds.
///
/// Without the package variables `cargo run` gave this process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …): build scripts such as
/// ring's rerun when those change, so a nested build would otherwise
/// rebuild what a plain `cargo build` in a shell had built, and the other
/// way round.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let ours = ["CARGO_PKG_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref());
        if ours {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// Runs `cmd` with inherited stdio and fails with its command line when it
/// does not exit 0.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` capturing its output; `None` when it could not start at all.
pub fn output(cmd: &mut Command) -> Option<Output> {
    cmd.output().ok()
}

/// Builds the agent binary (which builds and embeds the eBPF object).
pub fn cargo_build_agent(release: bool) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "autostop-agent", "--bin", "autostop"]);
    if release {
        cmd.arg("--release");
    }
    status(&mut cmd)
}

/// The agent built with the `test-hooks` feature (fault injection for the
/// liveness tests), beside the plain one: never installed anywhere. The
/// tests look for it under this name ([`autostop_fixtures::agent`]).
pub use autostop_fixtures::agent::TEST_HOOKS_BINARY;

/// Builds the debug agent with `--features test-hooks` and copies it to
/// [`TEST_HOOKS_BINARY`] beside the plain one. Build the plain agent after
/// this: the shared `autostop` path holds whichever build came last.
pub fn cargo_build_test_hooks_agent() -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--package",
        "autostop-agent",
        "--bin",
        "autostop",
        "--features",
        "test-hooks",
    ]);
    status(&mut cmd)?;
    let built = agent_binary(false);
    let hooks = built.with_file_name(TEST_HOOKS_BINARY);
    std::fs::copy(&built, &hooks)
        .with_context(|| format!("copying {} to {}", built.display(), hooks.display()))?;
    Ok(hooks)
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Path of the built agent binary.
pub fn agent_binary(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("autostop")
}

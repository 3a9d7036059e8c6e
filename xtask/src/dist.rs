//! `cargo xtask dist`: builds the release agent once and ships it three
//! ways under `target/dist/`:
//!
//! - `autostop_<version>_<arch>.deb` (`dist_deb`),
//! - the container image `autostop:<version>`, also saved as
//!   `autostop_<version>_image.tar.gz` for `docker load` (`dist_image`),
//! - `autostop-<version>-x86_64-linux-gnu.tar.gz`: binary, unit, example
//!   config, man pages, completions and README (here).
//!
//! The release binary and the `autostop-docs` helper (which renders the
//! man pages and completions from `autostop::cli`) come from one cargo
//! call, so the library is compiled once. `target/dist/` is emptied first:
//! what is there afterwards is this run's output only. Dates come from the
//! newest `packaging/debian/changelog` entry (`SOURCE_DATE_EPOCH`), whose
//! version must be the workspace's.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{dist_deb, dist_image, dist_licences, run};

/// The workspace version: the agent's, the package's and the image tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every output is made from.
pub struct Staged {
    /// The workspace root.
    pub root: PathBuf,
    /// `target/dist`.
    pub out: PathBuf,
    /// `target/dist/work`: scratch space (package tree, image context).
    pub work: PathBuf,
    /// The stripped release agent.
    pub binary: PathBuf,
    /// Rendered man pages (`*.1`).
    pub man: PathBuf,
    /// Completion scripts (`autostop`, `_autostop`, `autostop.fish`).
    pub completions: PathBuf,
    /// The newest changelog entry.
    pub changelog: dist_deb::Changelog,
}

/// `target/dist`, or `$CARGO_TARGET_DIR/dist`.
pub fn dist_dir() -> PathBuf {
    run::target_dir().join("dist")
}

/// Builds everything; prints each output with its size.
pub fn run() -> anyhow::Result<()> {
    let root = run::workspace_root();
    let out = dist_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    let work = out.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let changelog = dist_deb::Changelog::read(&root.join("packaging/debian/changelog"))?;
    if changelog.version != VERSION {
        bail!(
            "packaging/debian/changelog's newest entry is {}, the workspace version is {VERSION}: \
             add a changelog entry for {VERSION}",
            changelog.version
        );
    }
    check_compose_image(&root.join("packaging/compose.yaml"))?;

    println!("dist: building the release agent and autostop-docs");
    run::status(run::cargo().args([
        "build",
        "--release",
        "--package",
        "autostop-agent",
        "--bin",
        "autostop",
        "--bin",
        "autostop-docs",
    ]))?;
    let release = run::agent_binary(true);
    let binary = work.join("autostop");
    std::fs::copy(&release, &binary).with_context(|| format!("copying {}", release.display()))?;
    // As dh_strip does: symbols and notes off, the code unchanged.
    run::status(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&binary),
    )
    .context("stripping the agent (package binutils)")?;

    let docs = work.join("docs");
    run::status(
        Command::new(release.with_file_name("autostop-docs"))
            .arg(&docs)
            .args(["--date", &changelog.date]),
    )?;

    let staged = Staged {
        root,
        out: out.clone(),
        work,
        binary,
        man: docs.join("man"),
        completions: docs.join("completions"),
        changelog,
    };
    let bundled = dist_licences::bundled_crates(&staged.root)?;
    let deb = dist_deb::build(&staged, &bundled)?;
    let tarball = tarball(&staged)?;
    let (image, image_archive) = dist_image::build(&staged)?;

    println!("\n== dist ==");
    for path in [&deb, &tarball, &image_archive] {
        println!("{} ({})", path.display(), human_size(file_size(path)));
    }
    println!(
        "image {image} ({})",
        human_size(dist_image::image_size(&image)?)
    );
    Ok(())
}

/// Fails unless `packaging/compose.yaml` runs this version's image.
fn check_compose_image(path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let wanted = format!("image: autostop:{VERSION}");
    if !text.lines().any(|l| l.trim() == wanted) {
        bail!(
            "{} does not say `{wanted}`: update its image tag to the workspace version",
            path.display()
        );
    }
    Ok(())
}

/// The tarball: `autostop-<version>/` with the binary, the unit (for
/// `/usr/local/bin`, as README's from-source steps install it), the
/// example config, README, man pages and completions.
fn tarball(s: &Staged) -> anyhow::Result<PathBuf> {
    let name = format!("autostop-{VERSION}");
    let dir = s.work.join("tarball").join(&name);
    let copies: Vec<(PathBuf, PathBuf, u32)> = vec![
        (s.binary.clone(), dir.join("autostop"), 0o755),
        (
            s.root.join("packaging/autostop.service"),
            dir.join("autostop.service"),
            0o644,
        ),
        (
            s.root.join("packaging/autostop.toml"),
            dir.join("autostop.toml"),
            0o644,
        ),
        (
            s.root.join("packaging/compose.yaml"),
            dir.join("compose.yaml"),
            0o644,
        ),
        (s.root.join("README.md"), dir.join("README.md"), 0o644),
    ];
    for (from, to, mode) in &copies {
        install(from, to, *mode)?;
    }
    for (from_dir, to_dir) in [(&s.man, "man"), (&s.completions, "completions")] {
        for entry in read_dir_sorted(from_dir)? {
            let file_name = entry.file_name().context("a file name")?.to_owned();
            install(&entry, &dir.join(to_dir).join(file_name), 0o644)?;
        }
    }
    let path = s.out.join(format!("{name}-x86_64-linux-gnu.tar.gz"));
    run::status(
        Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(&path)
            .args([
                "--use-compress-program=gzip -9n",
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .arg(format!("--mtime=@{}", s.changelog.timestamp))
            .arg("--directory")
            .arg(s.work.join("tarball"))
            .arg(&name),
    )?;
    Ok(path)
}

/// Copies `from` to `to` (making its directories) with `mode`.
pub fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", to.display()))
}

/// Writes `text` to `to` (making its directories) with `mode`.
pub fn write(to: &Path, text: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", to.display()))
}

/// The entries of `dir`, sorted by name.
pub fn read_dir_sorted(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `12.3 MiB`.
pub fn human_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
    }

    #[test]
    fn the_compose_file_runs_this_version() {
        check_compose_image(&run::workspace_root().join("packaging/compose.yaml"))
            .expect("packaging/compose.yaml names the current image tag");
    }
}

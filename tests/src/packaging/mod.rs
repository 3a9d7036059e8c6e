//! Packaging fixtures: what `cargo xtask dist` made (`target/dist/`, or
//! `AUTOSTOP_DIST_DIR`), a throwaway dpkg root the .deb is installed into
//! ([`DpkgRoot`]: `dpkg --root` with the maintainer scripts run chrootless,
//! `DPKG_ROOT` set, so the live system is never touched), a record of the
//! host paths a mistaken script would write ([`HostPaths`]), the agent run
//! from its image through `packaging/compose.yaml` with docker-compose v1
//! ([`ComposeAgent`]), and readers of what was installed or built (man
//! pages, an image's files, a process's capabilities). Drop guards purge,
//! remove and take down what they made.

mod compose;
mod dpkg;

pub use compose::ComposeAgent;
pub use dpkg::{dependency_names, DpkgRoot};

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::docker::{docker, unique};

/// The workspace version: the package's and the image's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `AUTOSTOP_DIST_DIR`, or `target/dist` of this workspace.
pub fn dist_dir() -> PathBuf {
    std::env::var_os("AUTOSTOP_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_file("target/dist"))
}

/// A file of the repository.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// `dist_dir()/name`, which must exist.
pub fn dist_file(name: &str) -> PathBuf {
    let path = dist_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo xtask dist` first (or set AUTOSTOP_DIST_DIR)",
        path.display()
    );
    path
}

/// The .deb `cargo xtask dist` made for this machine's architecture.
pub fn deb() -> PathBuf {
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    dist_file(&format!("autostop_{VERSION}_{arch}.deb"))
}

/// The image tag, after checking Docker has it.
pub fn image() -> String {
    let tag = format!("autostop:{VERSION}");
    let found = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "image {tag} not found: run `cargo xtask dist` first");
    tag
}

/// Runs `cmd`, fails the test unless it exits 0, returns trimmed stdout.
pub fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// stdout and stderr of a finished command, for messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Host paths the package would own if installed for real: a maintainer
/// script that ignored `DPKG_ROOT` would create them. Records whether each
/// exists, to check nothing changed.
pub struct HostPaths(Vec<(PathBuf, bool)>);

impl HostPaths {
    /// Records the paths now.
    pub fn record() -> Self {
        let paths = [
            "/usr/bin/autostop",
            "/etc/autostop",
            "/var/lib/autostop",
            "/lib/systemd/system/autostop.service",
            "/usr/share/doc/autostop",
            "/etc/systemd/system/multi-user.target.wants/autostop.service",
        ];
        Self(
            paths
                .iter()
                .map(|p| (PathBuf::from(p), Path::new(p).exists()))
                .collect(),
        )
    }

    /// Fails if any path appeared or went away since [`Self::record`].
    pub fn assert_unchanged(&self) {
        for (path, existed) in &self.0 {
            assert_eq!(
                path.exists(),
                *existed,
                "{} changed on the live system during a DPKG_ROOT install",
                path.display()
            );
        }
    }
}

/// Whether `nft` lists table `inet NAME`.
pub fn nft_table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Files the .deb must install (paths inside the root), with their modes.
pub const INSTALLED_FILES: &[(&str, u32)] = &[
    ("usr/bin/autostop", 0o755),
    ("lib/systemd/system/autostop.service", 0o644),
    ("etc/autostop/autostop.toml", 0o640),
    ("usr/share/man/man1/autostop.1.gz", 0o644),
    ("usr/share/man/man1/autostop-run.1.gz", 0o644),
    ("usr/share/man/man1/autostop-check.1.gz", 0o644),
    ("usr/share/bash-completion/completions/autostop", 0o644),
    ("usr/share/zsh/vendor-completions/_autostop", 0o644),
    ("usr/share/fish/vendor_completions.d/autostop.fish", 0o644),
    ("usr/share/doc/autostop/copyright", 0o644),
    ("usr/share/doc/autostop/changelog.gz", 0o644),
    ("usr/share/doc/autostop/README.md", 0o644),
];

/// Capability bits (`include/uapi/linux/capability.h`).
pub const CAP_NET_ADMIN: u64 = 1 << 12;
/// See [`CAP_NET_ADMIN`].
pub const CAP_SYS_ADMIN: u64 = 1 << 21;

/// A field of `/proc/PID/status` (`CapEff`, `NoNewPrivs`, `Seccomp`, …).
pub fn proc_status(pid: i32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Renders man page `page` with `man --warnings -l`; fails the test on a
/// warning or error; returns the text.
pub fn render_man_page(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .output()
        .expect("man (package man-db)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man -l {}: {}",
        page.display(),
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Renders every man page in `dir` ([`render_man_page`]); returns their
/// texts.
pub fn render_man_pages(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| render_man_page(&entry.expect("entry").path()))
        .inspect(|text| assert!(text.contains("SYNOPSIS"), "{text}"))
        .collect()
}

/// Paths of `ldd BINARY`'s shared objects (the loader included).
pub fn ldd_paths(binary: &Path) -> BTreeSet<String> {
    stdout(Command::new("ldd").arg(binary))
        .lines()
        .filter_map(|l| match l.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        })
        .map(str::to_owned)
        .collect()
}

/// The files (everything but directories) of a container created from
/// `tag`, as `docker export` gives them, extracted into `into`; returns
/// their absolute paths inside the image.
pub fn image_files(tag: &str, into: &Path) -> BTreeSet<String> {
    let name = unique("astestimage");
    docker(&["create", "--name", &name, tag]);
    let _remove = RemoveContainer(name.clone());
    let tar = into.join("fs.tar");
    docker(&["export", "--output", &tar.to_string_lossy(), &name]);
    let rootfs = into.join("rootfs");
    std::fs::create_dir(&rootfs).expect("rootfs");
    stdout(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs),
    );
    let mut files = BTreeSet::new();
    let mut stack = vec![rootfs.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path);
            } else {
                let inside = path.strip_prefix(&rootfs).expect("inside the rootfs");
                files.insert(format!("/{}", inside.display()));
            }
        }
    }
    files
}

/// `docker rm -f NAME` on drop.
struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

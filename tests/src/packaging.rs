//! Packaging fixtures: what `cargo xtask dist` made (`target/dist/`, or
//! `AUTOSTOP_DIST_DIR`), a throwaway dpkg root the .deb is installed into
//! ([`DpkgRoot`]: `dpkg --root` with the maintainer scripts run chrootless,
//! `DPKG_ROOT` set, so the live system is never touched), a record of the
//! host paths a mistaken script would write ([`HostPaths`]), and the agent
//! run from its image through `packaging/compose.yaml` with docker-compose
//! v1 ([`ComposeAgent`]). Drop guards purge and take down what they made.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use crate::docker::{docker, free_port, unique};
use crate::e2e::http_get;
use crate::eventually;

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

/// A dpkg root in a temporary directory. Its database knows, from the
/// host's, exactly the packages the .deb depends on, so `dpkg -i` checks
/// `Depends` against this Debian 12 host without installing anything on
/// it. Maintainer scripts run on the host with `DPKG_ROOT` pointing here
/// (`--force-script-chrootless`). Dropping it purges the package.
pub struct DpkgRoot {
    dir: tempfile::TempDir,
    log: PathBuf,
    installed: bool,
}

impl DpkgRoot {
    /// An empty root whose database holds `deb`'s dependencies.
    pub fn new(deb: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(sub)).expect("dpkg admin dir");
        }
        std::fs::write(admin.join("available"), "").expect("available");
        let depends = stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"));
        let mut status = String::new();
        for name in dependency_names(&depends) {
            let stanza = stdout(Command::new("dpkg-query").args(["-s", &name]));
            let list = if stanza.contains("\nMulti-Arch: same") {
                let arch = stanza
                    .lines()
                    .find_map(|l| l.strip_prefix("Architecture: "))
                    .expect("Architecture");
                format!("{name}:{arch}.list")
            } else {
                format!("{name}.list")
            };
            std::fs::write(admin.join("info").join(list), "").expect("list file");
            status.push_str(&stanza);
            status.push_str("\n\n");
        }
        std::fs::write(admin.join("status"), status).expect("status");
        let log = dir.path().join("dpkg.log");
        Self {
            dir,
            log,
            installed: false,
        }
    }

    /// A path inside the root (`relative` without a leading `/`).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `dpkg --root … ARGS`, whatever its status.
    pub fn dpkg(&self, args: &[&str]) -> Output {
        Command::new("dpkg")
            .arg(format!("--root={}", self.dir.path().display()))
            .arg(format!("--log={}", self.log.display()))
            .arg("--force-script-chrootless")
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("running dpkg")
    }

    /// `dpkg -i deb`; fails the test unless it succeeds; returns its output.
    pub fn install(&mut self, deb: &Path) -> String {
        let out = self.dpkg(&["-i", &deb.to_string_lossy()]);
        assert!(out.status.success(), "dpkg -i: {}", output_text(&out));
        self.installed = true;
        output_text(&out)
    }

    /// `dpkg ACTION autostop` (`-r`, `--purge`); fails unless it succeeds.
    pub fn remove(&mut self, action: &str) -> String {
        let out = self.dpkg(&[action, "autostop"]);
        assert!(out.status.success(), "dpkg {action}: {}", output_text(&out));
        if action == "--purge" {
            self.installed = false;
        }
        output_text(&out)
    }

    /// Every path under the root but dpkg's own database and log.
    pub fn files(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                let relative = path.strip_prefix(self.dir.path()).expect("inside");
                if relative.starts_with("var/lib/dpkg") || path == self.log {
                    continue;
                }
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path.clone());
                }
                found.insert(relative.to_path_buf());
            }
        }
        found
    }
}

impl Drop for DpkgRoot {
    fn drop(&mut self) {
        if self.installed {
            let _ = self.dpkg(&["--purge", "autostop"]);
        }
    }
}

/// Package names of a `Depends` field (first of each alternative).
pub fn dependency_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| d.split('|').next()?.split_whitespace().next())
        .map(|n| n.split(':').next().unwrap_or(n).to_owned())
        .collect()
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

/// How long the containerised agent gets to answer and adopt its services.
const COMPOSE_UP: Duration = Duration::from_secs(60);

/// The agent run by docker-compose from `packaging/compose.yaml`, with a
/// project directory holding its config (`./autostop.toml`) and a small
/// override that gives it its own warm-up table name. The config gives it
/// its own status port and `docker_labels = false`. `down -v` on drop
/// (after printing its logs if the test failed).
pub struct ComposeAgent {
    dir: tempfile::TempDir,
    project: String,
    /// The status API (host network: reachable on the host's loopback).
    pub status: SocketAddr,
    /// The agent's nft table (`inet NAME`).
    pub nft_table: String,
}

impl ComposeAgent {
    /// Writes the config (`[agent]` plus `services`, raw TOML) and the
    /// override; starts nothing yet (see [`Self::up`]).
    pub fn new(services: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let nft_table = unique("astestc");
        std::fs::write(
            dir.path().join("autostop.toml"),
            format!(
                "[agent]\nstatus_listen = \"{status}\"\nstate_dir = \"/var/lib/autostop\"\n\
                 docker_labels = false\n\n{services}"
            ),
        )
        .expect("writing autostop.toml");
        std::fs::write(
            dir.path().join("override.yaml"),
            format!(
                "services:\n  autostop:\n    environment:\n      AUTOSTOP_NFT_TABLE: \"{nft_table}\"\n"
            ),
        )
        .expect("writing override.yaml");
        Self {
            dir,
            project: unique("astestcompose"),
            status,
            nft_table,
        }
    }

    /// `docker-compose up -d`; returns once every service is adopted.
    pub fn up(&self) {
        let out = self
            .compose(&["up", "-d"])
            .output()
            .expect("docker-compose");
        assert!(
            out.status.success(),
            "docker-compose up: {}",
            output_text(&out)
        );
        self.wait_adopted();
    }

    /// `docker-compose -p PROJECT --project-directory DIR -f
    /// packaging/compose.yaml -f DIR/override.yaml ARGS…`.
    pub fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p")
            .arg(&self.project)
            .arg("--project-directory")
            .arg(self.dir.path())
            .arg("-f")
            .arg(repo_file("packaging/compose.yaml"))
            .arg("-f")
            .arg(self.dir.path().join("override.yaml"))
            .args(args);
        cmd
    }

    fn wait_adopted(&self) {
        let adopted = eventually(COMPOSE_UP, || {
            let Ok(r) = http_get(self.status, "/api/services", &[], Duration::from_secs(2)) else {
                return false;
            };
            let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            list.as_array()
                .is_some_and(|l| l.iter().all(|s| s["state"] != "unknown"))
        });
        assert!(
            adopted,
            "the containerised agent did not adopt its services within {COMPOSE_UP:?}:\n{}",
            self.logs()
        );
    }

    /// The agent container's id.
    pub fn container(&self) -> String {
        let id = stdout(&mut self.compose(&["ps", "-q", "autostop"]));
        assert!(!id.is_empty(), "no autostop container in the project");
        id
    }

    /// The agent's host PID (the image runs it as its only process).
    pub fn pid(&self) -> i32 {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.container()]);
        pid.parse()
            .unwrap_or_else(|e| panic!("State.Pid {pid:?}: {e}"))
    }

    /// The agent's logs so far.
    pub fn logs(&self) -> String {
        self.compose(&["logs", "--no-color", "autostop"])
            .output()
            .map(|o| output_text(&o))
            .unwrap_or_else(|e| format!("docker-compose logs: {e}"))
    }

    /// The API state of service `name`.
    pub fn state(&self, name: &str) -> String {
        let r = http_get(
            self.status,
            &format!("/api/services/{name}"),
            &[],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("status API: {e}"));
        let service: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
        service["state"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until service `name` is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        let ok = eventually(timeout, || self.state(name) == state);
        assert!(
            ok,
            "service {name} not {state} within {timeout:?} (now {}):\n{}",
            self.state(name),
            self.logs()
        );
    }
}

impl Drop for ComposeAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[compose agent logs]\n{}", self.logs());
        }
        let _ = self.compose(&["down", "-v", "-t", "15"]).output();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.nft_table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether `nft` lists table `inet NAME`.
pub fn nft_table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::dependency_names;

    #[test]
    fn dependency_names_take_the_first_alternative() {
        assert_eq!(
            dependency_names("libc6 (>= 2.34), libgcc-s1 (>= 4.2) | foo, bar:any"),
            vec!["libc6", "libgcc-s1", "bar"]
        );
    }
}

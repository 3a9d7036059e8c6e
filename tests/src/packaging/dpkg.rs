//! A throwaway dpkg root ([`DpkgRoot`]) for installing the .deb without
//! touching the live system.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use super::{output_text, stdout};

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

    /// The permission bits of a path inside the root.
    pub fn mode(&self, relative: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.path(relative);
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o7777
    }

    /// Removes each of `relative` (in order), failing the test unless it
    /// is an empty directory.
    pub fn remove_empty_dirs(&self, relative: &[&str]) {
        for dir in relative {
            let path = self.path(dir);
            std::fs::remove_dir(&path)
                .unwrap_or_else(|e| panic!("{} is not an empty directory: {e}", path.display()));
        }
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

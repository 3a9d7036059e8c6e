//! The Debian package `autostop_<version>_<arch>.deb`, built with Debian's
//! own tools (`dpkg-shlibdeps` for `Depends`, `dpkg-deb` for the archive):
//!
//! - `/usr/bin/autostop` (stripped), `/lib/systemd/system/autostop.service`
//!   (`packaging/autostop.service` with `ExecStart=/usr/bin/autostop`),
//! - `/etc/autostop/autostop.toml`, a conffile (`packaging/autostop.toml`:
//!   no service until the administrator adds one), mode 0640 because an
//!   alert webhook URL in it is a secret; `/var/lib/autostop`,
//! - man pages (`man1/autostop*.1.gz`), bash/zsh/fish completions,
//! - `/usr/share/doc/autostop/`: copyright (with the licences of the crates
//!   linked into the binary), changelog, README.md, nginx examples,
//! - maintainer scripts from `packaging/debian/` that never start a
//!   half-configured agent, and lintian overrides with their reasons.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{
    dist::{install, read_dir_sorted, write, Staged, VERSION},
    run,
};

/// The package name.
const PACKAGE: &str = "autostop";

/// The installed binary (what the packaged unit runs).
const BINARY: &str = "usr/bin/autostop";

/// The conffile.
const CONFFILE: &str = "etc/autostop/autostop.toml";

/// What the synopsis and long description say.
const DESCRIPTION: &str = "\
stops idle Docker services and wakes them on the first packet
 autostop stops the Docker services nobody is using and starts them again
 on the first packet of traffic, so a small server keeps only what is in
 use in RAM. It watches each service's traffic in the kernel (eBPF),
 catches the first connection to a stopped service instead of letting it
 be refused, starts its compose project or containers and hands the
 connection over as soon as the app answers. nginx keeps pointing at the
 containers' published ports, unchanged.";

/// The newest entry of a Debian changelog.
pub struct Changelog {
    /// `Version`.
    pub version: String,
    /// `Maintainer` (the entry's signer).
    pub maintainer: String,
    /// The entry's date as seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub timestamp: u64,
    /// The same date as `YYYY-MM-DD` (man pages).
    pub date: String,
}

impl Changelog {
    /// Reads the newest entry with `dpkg-parsechangelog`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let field = |name: &str| -> anyhow::Result<String> {
            let out = Command::new("dpkg-parsechangelog")
                .arg("-l")
                .arg(path)
                .args(["-S", name])
                .output()
                .context("running dpkg-parsechangelog (package dpkg-dev)")?;
            if !out.status.success() {
                bail!(
                    "dpkg-parsechangelog -l {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let timestamp: u64 = field("Timestamp")?
            .parse()
            .with_context(|| format!("{}: the entry's date", path.display()))?;
        Ok(Self {
            version: field("Version")?,
            maintainer: field("Maintainer")?,
            timestamp,
            date: civil_date(timestamp),
        })
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time (Howard Hinnant's days-to-civil).
fn civil_date(timestamp: u64) -> String {
    let days = i64::try_from(timestamp / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `packaging/autostop.service` for the packaged binary's path.
fn packaged_unit(text: &str) -> anyhow::Result<String> {
    let from = "ExecStart=/usr/local/bin/autostop ";
    if text.matches(from).count() != 1 {
        bail!("packaging/autostop.service: expected one `{from}…` line to rewrite");
    }
    let unit = text.replacen(from, &format!("ExecStart=/{BINARY} "), 1);
    if unit.contains("/usr/local/") {
        bail!("packaging/autostop.service still names /usr/local/ after the rewrite");
    }
    Ok(unit)
}

/// Builds the package into `target/dist`; returns its path.
pub fn build(s: &Staged, bundled: &str) -> anyhow::Result<PathBuf> {
    // dpkg-shlibdeps expects the source-package layout: debian/control and
    // the package tree in debian/<package>.
    let tree = s.work.join("debian");
    let pkg = tree.join(PACKAGE);
    write(
        &tree.join("control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    stage_files(s, &pkg, bundled)?;
    let depends = shlibdeps(&s.work, &pkg.join(BINARY))?;
    let installed_size = installed_size_kib(&pkg)?;
    stage_control(s, &pkg, &depends, installed_size)?;

    let arch = architecture()?;
    let path = s.out.join(format!("{PACKAGE}_{VERSION}_{arch}.deb"));
    run::status(
        Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", s.changelog.timestamp.to_string())
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&pkg)
            .arg(&path),
    )?;
    Ok(path)
}

/// Every file the package installs.
fn stage_files(s: &Staged, pkg: &Path, bundled: &str) -> anyhow::Result<()> {
    let packaging = s.root.join("packaging");
    install(&s.binary, &pkg.join(BINARY), 0o755)?;
    let unit = std::fs::read_to_string(packaging.join("autostop.service"))
        .context("reading packaging/autostop.service")?;
    write(
        &pkg.join("lib/systemd/system/autostop.service"),
        packaged_unit(&unit)?.as_bytes(),
        0o644,
    )?;
    install(&packaging.join("autostop.toml"), &pkg.join(CONFFILE), 0o640)?;
    std::fs::create_dir_all(pkg.join("var/lib/autostop")).context("creating var/lib/autostop")?;

    for page in read_dir_sorted(&s.man)? {
        let name = page
            .file_name()
            .context("a man page name")?
            .to_string_lossy();
        gzip(
            &page,
            &pkg.join("usr/share/man/man1").join(format!("{name}.gz")),
        )?;
    }
    let completions = [
        ("autostop", "usr/share/bash-completion/completions/autostop"),
        ("_autostop", "usr/share/zsh/vendor-completions/_autostop"),
        (
            "autostop.fish",
            "usr/share/fish/vendor_completions.d/autostop.fish",
        ),
    ];
    for (file, to) in completions {
        install(&s.completions.join(file), &pkg.join(to), 0o644)?;
    }

    let doc = pkg.join("usr/share/doc").join(PACKAGE);
    let copyright = std::fs::read_to_string(packaging.join("debian/copyright.in"))
        .context("reading packaging/debian/copyright.in")?;
    if !copyright.contains("@BUNDLED_CRATES@") {
        bail!("packaging/debian/copyright.in lacks its @BUNDLED_CRATES@ line");
    }
    write(
        &doc.join("copyright"),
        copyright.replace("@BUNDLED_CRATES@", bundled).as_bytes(),
        0o644,
    )?;
    gzip(
        &packaging.join("debian/changelog"),
        &doc.join("changelog.gz"),
    )?;
    // Uncompressed: the unit's Documentation= names this file.
    install(&s.root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for conf in read_dir_sorted(&packaging.join("nginx"))? {
        let name = conf.file_name().context("an nginx example name")?;
        install(&conf, &doc.join("examples/nginx").join(name), 0o644)?;
    }
    install(
        &packaging.join("debian/lintian-overrides"),
        &pkg.join("usr/share/lintian/overrides").join(PACKAGE),
        0o644,
    )?;
    Ok(())
}

/// `DEBIAN/`: control, conffiles, md5sums and the maintainer scripts.
fn stage_control(s: &Staged, pkg: &Path, depends: &str, installed_size: u64) -> anyhow::Result<()> {
    let debian = pkg.join("DEBIAN");
    let control = format!(
        "Package: {PACKAGE}\nVersion: {VERSION}\nArchitecture: {arch}\n\
         Maintainer: {maintainer}\nInstalled-Size: {installed_size}\n\
         Depends: {depends}\nRecommends: docker.io | docker-ce\nSuggests: nginx\n\
         Section: admin\nPriority: optional\nDescription: {DESCRIPTION}\n",
        arch = architecture()?,
        maintainer = s.changelog.maintainer,
    );
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    write(
        &debian.join("conffiles"),
        format!("/{CONFFILE}\n").as_bytes(),
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &s.root.join("packaging/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    // As dh_md5sums: every file but the conffiles (dpkg tracks those).
    let mut files = Vec::new();
    walk(pkg, &mut |path, meta| {
        let relative = path.strip_prefix(pkg).unwrap_or(path);
        if meta.is_file() && !relative.starts_with("DEBIAN") && !relative.starts_with("etc") {
            files.push(relative.to_path_buf());
        }
    })?;
    files.sort();
    let out = Command::new("md5sum")
        .current_dir(pkg)
        .args(&files)
        .output()
        .context("running md5sum")?;
    if !out.status.success() {
        bail!("md5sum: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    write(&debian.join("md5sums"), &out.stdout, 0o644)?;
    // Directories as dpkg-deb wants them, whatever the umask made.
    let mut dirs = Vec::new();
    walk(pkg, &mut |path, meta| {
        if meta.is_dir() {
            dirs.push(path.to_path_buf());
        }
    })?;
    for dir in dirs {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 755 {}", dir.display()))?;
    }
    Ok(())
}

/// `Depends` from the binary's shared libraries (`dpkg-shlibdeps`).
fn shlibdeps(work: &Path, binary: &Path) -> anyhow::Result<String> {
    let out = Command::new("dpkg-shlibdeps")
        .current_dir(work)
        .arg("-O")
        .arg(binary.strip_prefix(work).unwrap_or(binary))
        .output()
        .context("running dpkg-shlibdeps (package dpkg-dev)")?;
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(depends.trim().to_owned())
}

/// `Installed-Size` as dpkg-gencontrol computes it: regular files and
/// symlinks rounded up to KiB, 1 KiB for anything else.
fn installed_size_kib(pkg: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    walk(pkg, &mut |path, meta| {
        if path
            .strip_prefix(pkg)
            .is_ok_and(|r| r.starts_with("DEBIAN"))
        {
            return;
        }
        total += if meta.is_file() || meta.is_symlink() {
            meta.len().div_ceil(1024)
        } else {
            1
        };
    })?;
    Ok(total)
}

/// `dpkg --print-architecture`.
fn architecture() -> anyhow::Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture")?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || arch.is_empty() {
        bail!("dpkg --print-architecture failed");
    }
    Ok(arch)
}

/// `gzip -9n` (no name or time stamp: reproducible) of `from` into `to`.
fn gzip(from: &Path, to: &Path) -> anyhow::Result<()> {
    let out = Command::new("gzip")
        .args(["-9n", "--stdout"])
        .arg(from)
        .output()
        .context("running gzip")?;
    if !out.status.success() {
        bail!(
            "gzip {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    write(to, &out.stdout, 0o644)
}

/// Calls `visit` on every entry under `dir` (not following symlinks).
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        visit(&path, &meta);
        if meta.is_dir() {
            walk(&path, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_796_083_200), "2026-12-01");
    }

    #[test]
    fn the_packaged_unit_runs_the_packaged_binary() {
        let path = run::workspace_root().join("packaging/autostop.service");
        let text = std::fs::read_to_string(&path).expect("reading the unit");
        let unit = packaged_unit(&text).expect("rewritten");
        assert!(
            unit.contains(
                "\nExecStart=/usr/bin/autostop run --config /etc/autostop/autostop.toml\n"
            ),
            "{unit}"
        );
        assert!(packaged_unit("ExecStart=/bin/true\n").is_err());
    }
}

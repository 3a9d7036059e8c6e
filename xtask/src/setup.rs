//! `cargo xtask setup`: makes a Debian 12 machine able to build and test
//! autostop. Idempotent: it checks each piece, installs only what is
//! missing and says what it did and what was already there.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::run;

/// Debian packages the build and the tests need, with why.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "Debian's rustc 1.96, which compiles the eBPF crate",
    ),
    (
        "libstd-rust-web-dev-bpf",
        "precompiled core for bpfel-unknown-none",
    ),
    ("llvm-22-dev", "LLVM 22 for bpf-linker"),
    (
        "libpolly-22-dev",
        "LLVM 22's Polly, needed to link bpf-linker",
    ),
    (
        "bpftool",
        "the kernel's own listing of programs and links, used by tests",
    ),
    (
        "nftables",
        "nft, which tests use to read the warm-up table (the agent uses netlink)",
    ),
    (
        "conntrack",
        "conntrack, which tests use to read conntrack entries (the agent uses netlink)",
    ),
    (
        "iproute2",
        "network namespaces and veth pairs for test clients",
    ),
    ("nginx-light", "the reverse proxy of the end-to-end tests"),
    (
        "libnginx-mod-stream",
        "nginx's stream module: `cargo xtask soak` reaches its raw TCP service through nginx",
    ),
    ("busybox-static", "test images built FROM scratch"),
    ("curl", "test clients"),
    (
        "systemd",
        "systemd-analyze verify of packaging/autostop.service (works without systemd as PID 1)",
    ),
    (
        "chromium",
        "the headless browser of the wait-page end-to-end tests",
    ),
    (
        "chromium-driver",
        "chromedriver, the WebDriver server those tests drive Chromium with",
    ),
    (
        "prometheus",
        "promtool, which checks and unit-tests packaging/prometheus/alerts.yml and the dashboard's queries",
    ),
    (
        "docker-compose",
        "compose v1: test projects, and the agent's own packaging/compose.yaml",
    ),
    (
        "dpkg-dev",
        "dpkg-shlibdeps and dpkg-parsechangelog for `cargo xtask dist`'s .deb",
    ),
    ("binutils", "strip, for the packaged agent"),
    (
        "ca-certificates",
        "the CA bundle `cargo xtask dist` copies into the container image",
    ),
    ("lintian", "checks the .deb (packaging tests)"),
    (
        "gcc",
        "builds the hibernate tests' memory-heavy app (a static C program)",
    ),
    (
        "libc6-dev",
        "the static C library that app links against",
    ),
    (
        "man-db",
        "man -l renders the packaged man pages (packaging tests)",
    ),
];

/// What `cargo xtask demo` needs of [`APT_PACKAGES`]: the BPF toolchain,
/// busybox for the demo image and curl for the commands it suggests.
/// Everything else only the tests, the bench and dist use.
const DEMO_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "busybox-static",
    "curl",
];

/// What a command needs set up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `cargo xtask demo`: only [`DEMO_PACKAGES`] (plus bpf-linker,
    /// bpffs, Docker).
    Demo,
    /// Building, testing, benchmarking and packaging: everything.
    Everything,
}

/// bpf-linker release line that matches LLVM 22 and aya-ebpf 0.2.
const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Oldest Debian rustc that ships `core` for the BPF target.
const MIN_BPF_RUSTC: (u32, u32) = (1, 96);

/// When to print the full report.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cargo xtask setup`: report every check.
    Always,
    /// Before `test` and `demo`: one line when nothing was missing.
    Quiet,
}

#[derive(Default)]
struct Report {
    did: Vec<String>,
    present: Vec<String>,
}

/// Checks and installs what `scope` needs; returns whether it changed
/// anything.
pub fn run(mode: Mode, scope: Scope) -> anyhow::Result<bool> {
    check_root()?;
    check_debian()?;
    let mut report = Report::default();
    apt_packages(&mut report, scope)?;
    check_bpf_rustc(&mut report)?;
    bpf_linker(&mut report)?;
    bpffs(&mut report)?;
    check_docker(&mut report)?;

    let changed = !report.did.is_empty();
    if mode == Mode::Always || changed {
        for line in &report.present {
            println!("setup: already there: {line}");
        }
        for line in &report.did {
            println!("setup: did: {line}");
        }
    }
    println!(
        "setup: {} installed or changed, {} already in place",
        report.did.len(),
        report.present.len()
    );
    Ok(changed)
}

fn check_root() -> anyhow::Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!("setup must run as root (it installs packages and loads BPF programs); run it with sudo or as root");
    }
    Ok(())
}

fn check_debian() -> anyhow::Result<()> {
    let release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let value = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    if value("ID=") != "debian" || value("VERSION_ID=") != "12" {
        bail!(
            "setup supports Debian 12 only (found ID={:?} VERSION_ID={:?}); see DEVELOPERS.md for the packages to install by hand",
            value("ID="),
            value("VERSION_ID=")
        );
    }
    Ok(())
}

fn installed_version(package: &str) -> Option<String> {
    let out =
        run::output(Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", package]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.strip_prefix("install ok installed ")?;
    Some(version.to_owned())
}

fn apt_packages(report: &mut Report, scope: Scope) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let wanted = APT_PACKAGES
        .iter()
        .filter(|(package, _)| scope == Scope::Everything || DEMO_PACKAGES.contains(package));
    for (package, why) in wanted {
        match installed_version(package) {
            Some(version) => report.present.push(format!("{package} {version}")),
            None => missing.push((*package, *why)),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    println!("setup: installing {}", names.join(" "));
    run::status(Command::new("apt-get").args(["update", "-q"]))?;
    run::status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&names),
    )
    .context("apt-get install failed")?;
    for (package, why) in missing {
        let version = installed_version(package)
            .with_context(|| format!("{package} is still not installed after apt-get"))?;
        report
            .did
            .push(format!("installed {package} {version} ({why})"));
    }
    Ok(())
}

fn check_bpf_rustc(report: &mut Report) -> anyhow::Result<()> {
    let out = run::output(Command::new("/usr/bin/rustc").arg("--version"))
        .context("running /usr/bin/rustc (package rustc-web)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = parse_version(text.split_whitespace().nth(1).unwrap_or(""));
    if version < MIN_BPF_RUSTC {
        bail!("/usr/bin/rustc is {text:?}; the eBPF build needs Debian's rustc-web >= 1.96");
    }
    if !Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").is_dir() {
        bail!("no precompiled core for bpfel-unknown-none under /usr/lib/rustlib (package libstd-rust-web-dev-bpf)");
    }
    report.present.push(format!("BPF compiler {}", text.trim()));
    Ok(())
}

fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn bpf_linker_version() -> Option<String> {
    let out = run::output(Command::new("bpf-linker").arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().nth(1).map(str::to_owned)
}

fn bpf_linker(report: &mut Report) -> anyhow::Result<()> {
    if let Some(version) = bpf_linker_version() {
        if version.starts_with(&format!("{BPF_LINKER_VERSION}.")) {
            report.present.push(format!("bpf-linker {version}"));
            return Ok(());
        }
        println!("setup: bpf-linker {version} is not {BPF_LINKER_VERSION}.x, reinstalling");
    }
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run::status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("PATH", path)
            .args(["install", "bpf-linker", "--force", "--version"])
            .arg(format!("~{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
    .context("cargo install bpf-linker failed")?;
    let version = bpf_linker_version()
        .context("bpf-linker is not on PATH after installing it (is ~/.cargo/bin on PATH?)")?;
    report
        .did
        .push(format!("installed bpf-linker {version} (LLVM 22)"));
    Ok(())
}

fn bpffs(report: &mut Report) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.nth(1) == Some("/sys/fs/bpf") && fields.next() == Some("bpf")
    });
    if mounted {
        report.present.push("bpffs on /sys/fs/bpf".to_owned());
        return Ok(());
    }
    fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    run::status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs on /sys/fs/bpf")?;
    report.did.push("mounted bpffs on /sys/fs/bpf".to_owned());
    Ok(())
}

fn check_docker(report: &mut Report) -> anyhow::Result<()> {
    let out =
        run::output(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
    match out {
        Some(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            report.present.push(format!("Docker Engine {version}"));
            Ok(())
        }
        Some(out) => bail!(
            "Docker is unreachable: {} (start the Docker Engine; autostop drives it through /var/run/docker.sock)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        None => bail!("the docker client is not installed; install Docker Engine first"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_needs_a_strict_subset_of_the_packages() {
        for package in DEMO_PACKAGES {
            assert!(
                APT_PACKAGES.iter().any(|(p, _)| p == package),
                "{package} is not in APT_PACKAGES"
            );
        }
        for heavy in ["chromium", "lintian", "prometheus", "nginx-light"] {
            assert!(!DEMO_PACKAGES.contains(&heavy), "{heavy}");
        }
    }
}

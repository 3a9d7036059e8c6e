//! The container image `autostop:<version>`, `FROM scratch`: the stripped
//! agent, exactly the shared objects `ldd` lists for it (glibc's loader,
//! libc, libgcc_s: rustup has no musl target here, and glibc 2.34+ keeps
//! the DNS and files name services inside libc, so nothing is loaded
//! later), Debian's CA bundle for https alert webhooks, the packaged
//! configuration and an empty state directory. Built with `docker build`
//! from a context prepared in `target/dist/work/image` and saved as
//! `autostop_<version>_image.tar.gz` for `docker load` (no registry).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{
    dist::{install, Staged, VERSION},
    run,
};

/// Debian's CA bundle (package ca-certificates), where rustls-native-certs
/// looks first.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Prepares the context, builds and saves the image; returns the tag and
/// the archive.
pub fn build(s: &Staged) -> anyhow::Result<(String, PathBuf)> {
    let context = s.work.join("image");
    let rootfs = context.join("rootfs");
    install(&s.binary, &rootfs.join("usr/bin/autostop"), 0o755)?;
    for library in shared_objects(&s.binary)? {
        let relative = library.strip_prefix("/").unwrap_or(&library);
        // The file itself, not the symlink ldd named.
        let real = std::fs::canonicalize(&library)
            .with_context(|| format!("resolving {}", library.display()))?;
        install(&real, &rootfs.join(relative), 0o755)?;
    }
    install(
        &Path::new("/").join(CA_BUNDLE),
        &rootfs.join(CA_BUNDLE),
        0o644,
    )
    .context("copying the CA bundle (package ca-certificates)")?;
    install(
        &s.root.join("packaging/autostop.toml"),
        &rootfs.join("etc/autostop/autostop.toml"),
        0o644,
    )?;
    std::fs::create_dir_all(rootfs.join("var/lib/autostop"))
        .context("creating var/lib/autostop")?;
    install(
        &s.root.join("packaging/Dockerfile"),
        &context.join("Dockerfile"),
        0o644,
    )?;

    let tag = format!("autostop:{VERSION}");
    println!("dist: docker build -t {tag}");
    run::status(
        Command::new("docker")
            .args(["build", "--quiet", "--tag", &tag, "--build-arg"])
            .arg(format!("VERSION={VERSION}"))
            .arg(&context),
    )?;
    let tar = s.work.join("image.tar");
    autostop_fixtures::docker::docker(&["save", "--output", &tar.to_string_lossy(), &tag])?;
    let archive = s.out.join(format!("autostop_{VERSION}_image.tar.gz"));
    let out = Command::new("gzip")
        .args(["-9n", "--stdout"])
        .arg(&tar)
        .output()
        .context("running gzip")?;
    if !out.status.success() {
        bail!(
            "gzip {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(&archive, out.stdout)
        .with_context(|| format!("writing {}", archive.display()))?;
    std::fs::remove_file(&tar).with_context(|| format!("removing {}", tar.display()))?;
    Ok((tag, archive))
}

/// The image's size as Docker reports it (bytes).
pub fn image_size(tag: &str) -> anyhow::Result<u64> {
    let text =
        autostop_fixtures::docker::docker(&["image", "inspect", "--format", "{{.Size}}", tag])?;
    text.trim()
        .parse()
        .with_context(|| format!("docker image inspect {tag}: size {text:?}"))
}

/// The shared objects `ldd` lists for `binary` (loader included; the vDSO
/// is the kernel's).
fn shared_objects(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let libraries = parse_ldd(&String::from_utf8_lossy(&out.stdout))?;
    if !libraries
        .iter()
        .any(|l| l.to_string_lossy().contains("ld-linux"))
    {
        bail!("ldd {} lists no dynamic loader", binary.display());
    }
    Ok(libraries)
}

/// Paths from `ldd` output lines: `name => /path (addr)` and
/// `/path (addr)`; `not found` is an error.
fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(path) if path.starts_with('/') => paths.push(PathBuf::from(path)),
            _ if line.starts_with("linux-vdso") => {}
            _ => bail!("ldd: unexpected line {line:?}"),
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1a)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1b)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c)\n";
        assert_eq!(
            parse_ldd(text).expect("parsed"),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}

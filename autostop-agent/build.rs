//! Builds the kernel programs (`autostop-ebpf`) from source for
//! `bpfel-unknown-none` and leaves the object in `OUT_DIR`, where
//! `src/bpf.rs` embeds it with `include_bytes_aligned!`.
//!
//! The toolchain route is the one in DEVELOPERS.md: Debian's rustc (which
//! ships a precompiled `core` for the BPF target) with `RUSTC_BOOTSTRAP=1` for
//! that build only, linked by `bpf-linker`. aya-build is not used because it
//! insists on `rustup run` and `-Z build-std`, neither of which works here.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Debian's rustc-web compiler; `AUTOSTOP_BPF_RUSTC` overrides it.
const DEFAULT_BPF_RUSTC: &str = "/usr/bin/rustc";
const BPF_TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("agent crate sits in the workspace");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));

    for watched in [
        "autostop-ebpf/src",
        "autostop-ebpf/Cargo.toml",
        "autostop-common/src",
        "autostop-common/Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=AUTOSTOP_BPF_RUSTC");

    let rustc = env::var("AUTOSTOP_BPF_RUSTC").unwrap_or_else(|_| DEFAULT_BPF_RUSTC.to_owned());
    let object = build_ebpf(workspace, &out_dir, &rustc);
    let embedded = out_dir.join("autostop.bpf.o");
    std::fs::copy(&object, &embedded).unwrap_or_else(|e| {
        panic!(
            "copying {} to {}: {e}",
            object.display(),
            embedded.display()
        )
    });
}

/// Runs the nested cargo build and returns the path of the linked object.
fn build_ebpf(workspace: &Path, out_dir: &Path, rustc: &str) -> PathBuf {
    let target_dir = out_dir.join("ebpf-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--package",
            "autostop-ebpf",
            "--release",
            "--target",
            BPF_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings (rustflags, wrappers, the host rustc, cargo's
    // per-package variables) must not leak into the BPF build.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOC"
            || key == "TARGET"
            || key == "HOST";
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
    // Lines the nested cargo prints must not be read as build-script output.
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));

    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for autostop-ebpf: {e}"));
    if !status.success() {
        panic!(
            "building autostop-ebpf for {BPF_TARGET} failed ({status}). The BPF toolchain is \
             Debian's rustc-web + libstd-rust-web-dev-bpf and bpf-linker 0.13 on PATH: run \
             `cargo xtask setup` (see DEVELOPERS.md)."
        );
    }
    target_dir
        .join(BPF_TARGET)
        .join("release")
        .join("autostop-ebpf")
}

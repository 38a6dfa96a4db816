//! Builds the XDP program (the `vrrp-ebpf` crate) for the BPF target with the nightly toolchain
//! and bpf-linker, and leaves the object in OUT_DIR, where `src/dataplane/mod.rs` embeds it. So one
//! `cargo build` builds both halves. `cargo xtask setup` installs what this needs.
//!
//! The nested build's output is kept: a build that succeeds prints nothing (cargo would show
//! every line of it as a warning); one that fails shows all of it in the error.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

/// The crate, and its binary (the object).
const EBPF: &str = "vrrp-ebpf";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("manifest dir has no parent"))?
        .join(EBPF);
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endianness {other}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let target_dir = out_dir.join("ebpf-target");
    // The bench-only programs go in only with the `bench` feature (cargo reruns this script,
    // in an OUT_DIR of its own, when the features change).
    let bench = env::var_os("CARGO_FEATURE_BENCH").is_some();
    let output = nested_build(target, &arch, &target_dir, bench).context(
        "building the XDP program failed; `cargo xtask setup` installs bpf-linker and the nightly's rust-src",
    )?;
    let object = target_dir.join(target).join("release").join(EBPF);
    std::fs::copy(&object, out_dir.join(EBPF)).with_context(|| {
        format!(
            "the XDP build succeeded but left no {}:\n{output}",
            object.display()
        )
    })?;
    Ok(())
}

/// `cargo +nightly build` of the eBPF crate, as aya-build runs it (`-Z build-std=core`, BTF,
/// the `bpf_target_arch` cfg); its combined output.
fn nested_build(
    target: &str,
    arch: &str,
    target_dir: &Path,
    bench: bool,
) -> anyhow::Result<String> {
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        EBPF,
        "--bins",
        "--release",
    ])
    .args(["--target", target, "-Z", "build-std=core", "--target-dir"])
    .arg(target_dir);
    if bench {
        cmd.args(["--features", "bench"]);
    }
    // The same flags as aya-build, separated as CARGO_ENCODED_RUSTFLAGS wants.
    let mut flags = OsString::new();
    flags.push(format!(
        "--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"
    ));
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    // The outer build's compiler settings are for the host, not for BPF.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(key);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?} (is rustup installed?)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

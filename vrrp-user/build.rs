//! Builds the XDP program (the `vrrp-ebpf` crate) for the BPF target with the nightly toolchain
//! and bpf-linker, and leaves the object in OUT_DIR, where `src/dataplane.rs` embeds it. So one
//! `cargo build` builds both halves. `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&metadata_dir)
        .parent()
        .ok_or_else(|| anyhow!("manifest dir has no parent"))?
        .join("vrrp-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "vrrp-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program failed; `cargo xtask setup` installs bpf-linker and the nightly's rust-src")
}

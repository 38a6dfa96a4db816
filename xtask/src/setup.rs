//! `cargo xtask setup`: installs, idempotently, what building, testing and the lab need on a
//! fresh machine. Each step first checks whether its result is already there, so a second run
//! takes well under a second.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};

/// Debian packages used by the tests and the lab.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "ethtool",
    "iputils-arping",
    "ndisc6",
    "tcpdump",
    "tshark",
    "nftables",
    "mariadb-server",
    "keepalived",
    "stress-ng",
    // The container image and its test (busybox: the image's /bin/sh), the Ansible role's
    // syntax check, the systemd unit's check.
    "busybox-static",
    "ansible-core",
    "systemd",
    // The unit under a real systemd: a Debian root booted by systemd-nspawn.
    "debootstrap",
    "systemd-container",
];

/// Installed with their recommended packages: podman's container stack (runc: see
/// xvrrp_lab::image::PODMAN_RUN).
const APT_WITH_RECOMMENDS: &[&str] = &["podman", "runc"];

/// The bpf-linker that builds with this machine's nightly (see ../shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

pub fn run() -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    apt_packages()?;
    bpffs()?;
    systemd_root();
    Ok(())
}

/// The Debian root the systemd test boots (xvrrp_lab::systemd): debootstrap from the
/// machine's own Debian mirror, once. A root that cannot be built is reported, not fatal: the
/// test then says it is skipped.
fn systemd_root() {
    use xvrrp_lab::systemd::{READY_MARK, ROOT};
    // procps: the unit's ExecReload runs /bin/kill.
    const INCLUDE: &str = "--include=systemd,systemd-sysv,dbus,iproute2,procps";
    let root = Path::new(ROOT);
    let suite = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_owned))
        })
        .unwrap_or_else(|| "bookworm".to_owned());
    // The mark names what the root was built from: another suite or package list rebuilds it.
    let mark = format!("{suite} {INCLUDE}\n");
    if std::fs::read_to_string(root.join(READY_MARK)).is_ok_and(|m| m == mark) {
        return;
    }
    eprintln!(
        "setup: building a Debian {suite} root with systemd at {ROOT} (debootstrap, about a minute)"
    );
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let built = status(
        Command::new("debootstrap")
            .args(["--variant=minbase", INCLUDE, &suite])
            .arg(&partial)
            .arg("http://deb.debian.org/debian")
            .stdout(Stdio::null()),
    )
    .and_then(|()| {
        let _ = std::fs::remove_dir_all(root);
        std::fs::rename(&partial, root)?;
        std::fs::write(root.join(READY_MARK), mark.as_bytes())?;
        Ok(())
    });
    if let Err(err) = built {
        eprintln!("setup: the systemd root could not be built ({err:#}); its test will be skipped");
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(st.success(), "{cmd:?} failed: {st}");
    Ok(())
}

/// The nightly toolchain's rust-src, needed for `-Z build-std=core`.
fn rust_src() -> anyhow::Result<()> {
    if !quiet(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--version"])) {
        bail!(
            "the {NIGHTLY} toolchain is missing; it builds the XDP program. \
             Install it with `rustup toolchain install {NIGHTLY}`"
        );
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to the {NIGHTLY} toolchain");
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// bpf-linker, linked against the nightly's own LLVM shared library: a plain
/// `cargo install bpf-linker` wants an LLVM that Debian does not have.
fn bpf_linker() -> anyhow::Result<()> {
    let bin = cargo_home().join("bin").join("bpf-linker");
    if let Ok(version) = output(Command::new(&bin).arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} LLVM (about a minute)"
    );
    let sysroot =
        output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib_dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    // The prefix must outlive the build: the binary's rpath points into it.
    let prefix = cargo_home().join("xvrrp-llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&llvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
                "--force",
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// cargo-fuzz, for `cargo xtask fuzz` only.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    if quiet(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz");
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn apt_packages() -> anyhow::Result<()> {
    apt_install(APT_PACKAGES, false)?;
    apt_install(APT_WITH_RECOMMENDS, true)
}

fn apt_install(packages: &[&str], recommends: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_ok_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    status(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args((!recommends).then_some("--no-install-recommends"))
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The BPF filesystem, where the daemon pins its maps.
fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf"))
    {
        return Ok(());
    }
    eprintln!("setup: mounting the BPF filesystem at /sys/fs/bpf");
    status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

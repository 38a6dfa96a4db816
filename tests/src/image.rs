//! The container image (`cargo xtask image`, and the container test): a root filesystem built
//! from scratch around the xvrrp binary (no registry, no base image), then `podman build` with
//! deploy/container/Containerfile.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use crate::run_with_timeout;

/// Where busybox comes from (Debian's busybox-static): `/bin/sh` for scripts in the image.
const BUSYBOX: &str = "/bin/busybox";

/// The shared libraries `bin` needs (ldd's paths, the loader included).
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = run_with_timeout(Command::new("ldd").arg(bin), Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn copy_into(root: &Path, file: &Path, at: &Path) -> anyhow::Result<()> {
    let dest = root.join(at.strip_prefix("/").unwrap_or(at));
    fs::create_dir_all(dest.parent().expect("a file has a parent"))?;
    fs::copy(file, &dest).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

/// Assembles the build context in `context`: Containerfile and rootfs/.
pub fn context(bin: &Path, context: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(context);
    let root = context.join("rootfs");
    for dir in ["etc/xvrrp", "run/xvrrp", "sys/fs/bpf", "tmp", "proc", "dev"] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy_into(&root, bin, Path::new("/usr/local/bin/xvrrp"))?;
    for lib in shared_libraries(bin)? {
        copy_into(&root, &lib, &lib)?;
    }
    if Path::new(BUSYBOX).exists() {
        copy_into(&root, Path::new(BUSYBOX), Path::new(BUSYBOX))?;
        for applet in ["sh", "ip", "cat", "echo", "sleep", "pidof", "logger"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    } else {
        eprintln!("image: {BUSYBOX} missing (busybox-static): the image has no shell for scripts");
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let containerfile = crate::workspace_root().join("deploy/container/Containerfile");
    fs::copy(&containerfile, context.join("Containerfile"))
        .with_context(|| format!("copying {}", containerfile.display()))?;
    Ok(())
}

/// Builds the image `tag` from `bin` with podman; the context goes to `work`.
pub fn build(bin: &Path, tag: &str, work: &Path) -> anyhow::Result<()> {
    context(bin, work)?;
    let out = run_with_timeout(
        Command::new("podman")
            .args(["build", "--quiet", "--tag", tag, "--file"])
            .arg(work.join("Containerfile"))
            .arg(work),
        Duration::from_secs(300),
    )?;
    if !out.status.success() {
        bail!(
            "podman build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Whether podman can run a container here; Err says why not.
pub fn podman_works(tag: &str) -> anyhow::Result<()> {
    let out = run_with_timeout(
        Command::new("podman").args(PODMAN_RUN).args([
            "--rm",
            "--network",
            "none",
            tag,
            "--version",
        ]),
        Duration::from_secs(60),
    )
    .context("running podman")?;
    ensure!(
        out.status.success(),
        "podman run fails here: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Options every `podman run` here takes: runc with cgroupfs (crun refuses hybrid cgroup
/// hierarchies), and resource limits no higher than this sandbox's own (it has no
/// CAP_SYS_RESOURCE to raise them). Harmless on an ordinary host.
pub const PODMAN_RUN: &[&str] = &[
    "--cgroup-manager=cgroupfs",
    "--runtime=runc",
    "run",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
];

//! A real systemd as PID 1 for the unit's test: a minimal Debian root (built once by
//! `cargo xtask setup` with debootstrap) booted by systemd-nspawn inside a lab host's network
//! namespace, with the xvrrp binary, the unit from deploy/systemd and the host's config bound in.
//! The root stays read-only (`--volatile=overlay`: what the boot writes lives in memory).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{Lab, run_with_timeout, wait_for};

/// Where `cargo xtask setup` builds the root.
pub const ROOT: &str = "/var/cache/xvrrp/systemd-root";
/// Written last into a complete root.
pub const READY_MARK: &str = ".xvrrp-root-ready";

/// Why the root cannot be booted here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(ROOT).join(READY_MARK).exists() {
        return Some(format!(
            "no systemd root at {ROOT} (cargo xtask setup builds it with debootstrap)"
        ));
    }
    if Command::new("systemd-nspawn")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Some("systemd-nspawn is missing (package systemd-container)".into());
    }
    None
}

/// A booted container; powered off (then killed) on drop.
pub struct Booted {
    nspawn: Child,
    /// The container's PID 1, as the host sees it.
    init: u32,
    /// Its machine name (nspawn keeps a directory of that name under /run/systemd/nspawn).
    machine: String,
    pub log: PathBuf,
}

impl Booted {
    /// Boots the root in the network namespace of lab host `host`, with `bin` as
    /// /usr/local/bin/xvrrp, `unit` as /etc/systemd/system/xvrrp@.service and `etc` as
    /// /etc/xvrrp; returns once systemd is up (at most 60 s).
    pub fn boot(
        lab: &Lab,
        host: &str,
        bin: &Path,
        unit: &Path,
        etc: &Path,
    ) -> anyhow::Result<Self> {
        let log = lab.workdir().join(format!("nspawn-{host}.log"));
        let ns = lab.host(host).ns.name().to_owned();
        let machine = format!("{ns}-sd");
        let bind_ro = |from: &Path, to: &str| format!("--bind-ro={}:{to}", from.display());
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
            ])
            .args(["--directory", ROOT, "--machine", machine.as_str()])
            .arg(format!("--network-namespace-path=/run/netns/{ns}"))
            // What the unit's own bounding set names, and what bpf() needs in a container.
            .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_ADMIN")
            .arg("--bind=/sys/fs/bpf")
            .arg(bind_ro(bin, "/usr/local/bin/xvrrp"))
            .arg(bind_ro(unit, "/etc/systemd/system/xvrrp@.service"))
            .arg(format!("--bind={}:/etc/xvrrp", etc.display()))
            .arg("--boot")
            // nspawn's own seccomp filter refuses bpf().
            .env("SYSTEMD_SECCOMP", "0")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(log.with_extension("err"))?)
            .spawn()
            .context("starting systemd-nspawn")?;
        let pid = nspawn.id();
        let mut booted = Self {
            nspawn,
            init: 0,
            machine,
            log,
        };
        // nspawn's child becomes the container's systemd (it execs it).
        let found = wait_for(Duration::from_secs(20), || {
            booted.init = children(pid)
                .into_iter()
                .find(|c| {
                    fs::read_to_string(format!("/proc/{c}/comm"))
                        .is_ok_and(|comm| comm.trim() == "systemd")
                })
                .unwrap_or(0);
            booted.init != 0
        });
        ensure!(
            found,
            "systemd-nspawn started no container: {}",
            booted.logs()
        );
        // "offline" until its bus is up.
        let mut state = String::new();
        wait_for(Duration::from_secs(60), || {
            state = booted
                .exec(
                    &["systemctl", "is-system-running", "--wait"],
                    Duration::from_secs(60),
                )
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                .unwrap_or_default();
            state == "running" || state == "degraded"
        });
        ensure!(
            state == "running" || state == "degraded",
            "the container's systemd is {state:?}: {}",
            booted.logs()
        );
        Ok(booted)
    }

    /// Runs `cmd` inside the container (all its namespaces), bounded by `within`.
    pub fn exec(&self, cmd: &[&str], within: Duration) -> anyhow::Result<Output> {
        run_with_timeout(
            Command::new("nsenter")
                .args(["--target", &self.init.to_string(), "--all"])
                .args(cmd),
            within,
        )
    }

    /// `systemctl ARGS` inside; fails with its output unless it succeeds.
    pub fn systemctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = vec!["systemctl"];
        cmd.extend_from_slice(args);
        let out = self.exec(&cmd, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "systemctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One property of `unit` (`systemctl show -p NAME --value`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", unit])
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The journal of `unit`.
    pub fn journal(&self, unit: &str) -> String {
        self.exec(
            &["journalctl", "--no-pager", "-o", "cat", "-u", unit],
            Duration::from_secs(30),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
    }

    /// What nspawn printed (the boot's console).
    pub fn logs(&self) -> String {
        let mut text = fs::read_to_string(&self.log).unwrap_or_default();
        text += &fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        text
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        self.stop();
        // What nspawn keeps for a machine while it runs; a container that did not power off
        // cleanly leaves it behind.
        let _ = fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.machine));
    }
}

impl Booted {
    /// Powers the container off (at most 20 s), then kills what is left.
    fn stop(&mut self) {
        if self.init != 0 {
            let _ = self.exec(&["systemctl", "poweroff"], Duration::from_secs(10));
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.init != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

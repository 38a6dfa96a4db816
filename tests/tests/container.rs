//! The container image: built from scratch around the binary (`cargo xtask image` does the
//! same), run by podman with CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_PERFMON only (and no seccomp
//! filter: podman's default one allows bpf() only with CAP_SYS_ADMIN) in a lab host's network namespace with the
//! host's /sys/fs/bpf, it takes the VIP, answers `xvrrp status`, keeps its pins on the host's
//! bpffs, and hands over on `podman stop`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use xvrrp_lab::{
    Lab, PIN_ROOT,
    image::{self, PODMAN_RUN},
    privileged, run_with_timeout, wait_for, xvrrp_bin,
};

const VIP: std::net::Ipv4Addr = xvrrp_lab::LAB_VIP;

/// A container (and its image) removed on drop.
struct Container {
    name: String,
    image: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "--force", "--time", "5", &self.name],
            vec!["rmi", "--force", &self.image],
        ] {
            let _ = run_with_timeout(Command::new("podman").args(args), Duration::from_secs(60));
        }
    }
}

fn podman(args: &[&str]) -> (bool, String) {
    let out = run_with_timeout(Command::new("podman").args(args), Duration::from_secs(60))
        .expect("podman");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_image_runs_with_four_capabilities_in_a_lab_host_and_takes_the_vip() {
    let test = "the_image_runs_with_four_capabilities_in_a_lab_host_and_takes_the_vip";
    if !privileged(test) {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        // `cargo xtask setup` installs podman; a machine without it cannot run this.
        eprintln!("{test}: skipped: podman is not installed (cargo xtask setup installs it)");
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let tag = format!("localhost/xvrrp-test:{}", lab.tag());
    let container = Container {
        name: format!("xvrrp-{}", lab.tag()),
        image: tag.clone(),
    };
    let started = Instant::now();
    image::build(&xvrrp_bin(), &tag, &lab.workdir().join("image")).expect("image");
    eprintln!("{test}: image built in {:?}", started.elapsed());
    if let Err(why) = image::podman_works(&tag) {
        eprintln!("{test}: skipped: this machine cannot run containers: {why:#}");
        return;
    }

    // a runs in the container, b as a plain process.
    let config_dir = lab.workdir().join("etc-a");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("xvrrp.toml"), lab.vrrp_config("a", 200, "")).unwrap();
    let netns = format!("ns:{}", lab.host("a").ns.path().display());
    let volume = format!("{}:/etc/xvrrp:ro", config_dir.display());
    let mut args: Vec<&str> = PODMAN_RUN.to_vec();
    args.extend([
        "--detach",
        "--name",
        &container.name,
        // Not --privileged: the capabilities the docs name, and nothing else; podman's default
        // seccomp profile would refuse bpf() without CAP_SYS_ADMIN.
        "--cap-drop=all",
        "--cap-add=NET_ADMIN,NET_RAW,BPF,PERFMON",
        "--security-opt=seccomp=unconfined",
        "--network",
        &netns,
        "--volume",
        "/sys/fs/bpf:/sys/fs/bpf",
        "--volume",
        &volume,
        &tag,
    ]);
    let (ok, out) = podman(&args);
    assert!(ok, "podman run: {out}");
    let mut b = lab
        .start_xvrrp("b", &lab.vrrp_config("b", 100, ""))
        .expect("b");

    let up = wait_for(Duration::from_secs(20), || {
        podman(&["logs", &container.name])
            .1
            .contains("xvrrp running")
    });
    assert!(up, "{}", podman(&["logs", &container.name]).1);
    lab.wait_answered_by("client", "a", VIP, 1, Duration::from_secs(10));

    // `xvrrp status` inside the container; the pins are on the host's bpffs.
    let iface = lab.host("a").iface.clone();
    let (ok, status) = podman(&["exec", &container.name, "xvrrp", "status", "-i", &iface]);
    assert!(ok && status.contains("master"), "{status}");
    let pins = std::path::Path::new(PIN_ROOT).join(&iface);
    assert!(pins.join("link").exists(), "no pins at {}", pins.display());
    let (ok, sh) = podman(&["exec", &container.name, "sh", "-c", "echo scripts can run"]);
    assert!(ok && sh.contains("scripts can run"), "{sh}");

    // podman stop sends SIGTERM: a graceful handover to b.
    let (ok, out) = podman(&["stop", "--time", "10", &container.name]);
    assert!(ok, "podman stop: {out}");
    lab.wait_answered_by("client", "b", VIP, 1, Duration::from_secs(5));
    let logs = podman(&["logs", &container.name]).1;
    assert!(logs.contains("SIGTERM: stopping"), "{logs}");
    assert!(
        !pins.join("link").exists(),
        "pins left after a stop: {}",
        pins.display()
    );
    b.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    drop(container);
}

//! The unit in deploy/systemd run by a real systemd as PID 1 (a Debian root booted by
//! systemd-nspawn in lab host a's network namespace; b runs xvrrp directly as the backup):
//! `systemctl start` returns once the daemon is ready, `systemctl reload` reloads, a hitless
//! restart (SIGUSR2: the binary executed again in place) answers every ARP request, the
//! watchdog restarts a frozen daemon (`Restart=always`), and `systemctl stop` resigns with
//! priority 0.

use std::{net::Ipv4Addr, time::Duration};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, privileged, systemd::Booted, wait_for, workspace_root, xvrrp_bin};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;

#[test]
fn the_unit_runs_under_a_real_systemd() {
    let test = "the_unit_runs_under_a_real_systemd";
    if !privileged(test) {
        return;
    }
    if let Some(why) = xvrrp_lab::systemd::unavailable() {
        eprintln!("{test}: skipped: {why}");
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let iface = lab.host("a").iface.clone();
    let etc = lab.workdir().join("etc-xvrrp");
    std::fs::create_dir_all(&etc).unwrap();
    let config = etc.join(format!("{iface}.toml"));
    std::fs::write(&config, lab.vrrp_config("a", 200, "")).unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut b = lab
        .start_xvrrp("b", &lab.vrrp_config("b", 100, ""))
        .unwrap();
    lab.wait_answered_by("client", "b", VIP, 2, Duration::from_secs(8));
    let unit_file = workspace_root().join("deploy/systemd/xvrrp@.service");
    let sd = Booted::boot(&lab, "a", &xvrrp_bin(), &unit_file, &etc).expect("boot");
    let unit = format!("xvrrp@{iface}.service");

    // Type=notify: start returns once READY is sent, and by then the control socket answers.
    sd.systemctl(&["start", &unit]).unwrap();
    assert_eq!(sd.property(&unit, "ActiveState"), "active");
    let status = sd
        .exec(&["xvrrp", "status", "-i", &iface], Duration::from_secs(10))
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("vrid51"),
        "{status:?}"
    );
    assert!(sd.property(&unit, "StatusText").contains("instance(s) on"));
    // a (200) preempts b.
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));

    // systemctl reload: SIGHUP, the file read again.
    let reloads = |sd: &Booted| sd.journal(&unit).matches("configuration reloaded").count();
    sd.systemctl(&["reload", &unit]).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || reloads(&sd) == 1),
        "{}",
        sd.journal(&unit)
    );

    // A hitless restart (SIGUSR2, as operations.md says): the daemon executes the binary
    // again in place, so the unit neither stops nor restarts; every ARP request of 300, 10 ms
    // apart, is answered, and b never notices.
    let first = sd.property(&unit, "MainPID");
    let restarts = sd.property(&unit, "NRestarts");
    let b_promotions = b.log().matches("new=master").count();
    let (sent, received) = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            lab.arp_probe("client", VIP, 300, Duration::from_millis(10))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(500));
        sd.systemctl(&["kill", "--kill-whom=main", "--signal=SIGUSR2", &unit])
            .unwrap();
        probe.join().unwrap()
    });
    assert!(
        wait_for(Duration::from_secs(5), || sd
            .journal(&unit)
            .contains("resuming after a hitless restart")),
        "{}",
        sd.journal(&unit)
    );
    let second = sd.property(&unit, "MainPID");
    assert_eq!(first, second, "{}", sd.journal(&unit));
    assert_eq!(sd.property(&unit, "NRestarts"), restarts);
    assert_eq!(sd.property(&unit, "ActiveState"), "active");
    assert!(
        sd.journal(&unit)
            .contains("executing the binary again in place"),
        "{}",
        sd.journal(&unit)
    );
    assert!(sent >= 250, "arping sent only {sent}");
    assert_eq!(
        received,
        sent,
        "answers were lost across the restart: {}",
        sd.journal(&unit)
    );
    assert_eq!(
        b.log().matches("new=master").count(),
        b_promotions,
        "{}",
        b.log()
    );

    // Frozen: the watchdog (WatchdogSec=5) has systemd kill and restart it.
    let restarts: u32 = sd.property(&unit, "NRestarts").parse().unwrap();
    let frozen = std::time::Instant::now();
    sd.exec(&["kill", "-STOP", &second], Duration::from_secs(5))
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || {
            sd.property(&unit, "NRestarts").parse::<u32>().unwrap_or(0) > restarts
                && sd.property(&unit, "ActiveState") == "active"
        }),
        "{}",
        sd.journal(&unit)
    );
    println!(
        "frozen daemon restarted by the watchdog after {:?}",
        frozen.elapsed()
    );
    assert_ne!(sd.property(&unit, "MainPID"), second);
    assert!(
        sd.journal(&unit).contains("watchdog"),
        "{}",
        sd.journal(&unit)
    );
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(10));

    // systemctl stop: a resigns with priority 0, and b takes over at once.
    let capture = lab.workdir().join("stop.pcap");
    let mut tcpdump = lab.capture_from("a", "ip proto 112", &capture).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sd.systemctl(&["stop", &unit]).unwrap();
    lab.wait_answered_by("client", "b", VIP, 2, Duration::from_secs(3));
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let a_ip = lab.host("a").ip.to_string();
    let lines = lab.captured(&capture).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{a_ip} > ")) && l.contains("prio 0")),
        "{lines:#?}"
    );
    assert_eq!(sd.property(&unit, "ActiveState"), "inactive");
    assert!(
        sd.journal(&unit).contains("stopped"),
        "{}",
        sd.journal(&unit)
    );
    drop(sd);
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

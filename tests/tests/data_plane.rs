//! The data plane in namespaces: neighbour discovery answered only by the master, the
//! heartbeat dead-man switch for a frozen or killed daemon, and foreign claims on a VIP.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use nix::sys::signal::Signal;
use xvrrp_lab::{
    Lab, PIN_ROOT, Proc, mac_text, per_cpu_counter, privileged, vip_counter, wait_for,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// xvrrp on `host` with VRID 51 for VIP and VRID 51 (IPv6) for VIP6.
fn start(lab: &Lab, host: &str, state: &str, heartbeat_limit_ms: u64) -> Proc {
    let iface = &lab.host(host).iface;
    lab.start_xvrrp(
        host,
        &format!(
            "interface = \"{iface}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = {heartbeat_limit_ms}\n\n\
             [[instance]]\nvrid = 51\nstate = \"{state}\"\nvips = [\"{VIP}/24\"]\n\n\
             [[instance]]\nname = \"v6\"\nvrid = 51\nstate = \"{state}\"\nvips = [\"{VIP6}/64\"]\n"
        ),
    )
    .expect("start xvrrp")
}

#[test]
fn neighbour_discovery_is_answered_only_by_the_master() {
    if !privileged("neighbour_discovery_is_answered_only_by_the_master") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let a_mac = mac_text(&lab.host("a").mac);
    let mut a = start(&lab, "a", "takeover", 250);
    let mut b = start(&lab, "b", "backup", 250);
    let macs = lab.ndisc("client", VIP6, 2).unwrap();
    assert!(!macs.is_empty(), "no answer; a:\n{}", a.log());
    assert!(
        macs.iter().all(|m| *m == a_mac),
        "answers from {macs:?}, A is {a_mac}"
    );
    assert_eq!(
        lab.arping("client", VIP, 2).unwrap(),
        vec![a_mac.clone(), a_mac.clone()]
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(lab.ndisc("client", VIP6, 1).unwrap().is_empty());
}

#[test]
fn a_frozen_daemon_stops_answering_within_the_heartbeat_limit() {
    if !privileged("a_frozen_daemon_stops_answering_within_the_heartbeat_limit") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let mut a = start(&lab, "a", "takeover", 200);
    assert_eq!(lab.arping("client", VIP, 1).unwrap().len(), 1);
    let pins = Path::new(PIN_ROOT).join(&lab.host("a").iface);

    let pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    // Within the limit (200 ms) plus a jiffy or two of the coarse clock, nobody answers.
    std::thread::sleep(Duration::from_millis(200 + 30));
    assert!(
        lab.arping("client", VIP, 1).unwrap().is_empty(),
        "answers went on after the daemon froze"
    );
    assert!(vip_counter(&pins, VIP.into(), "dropped_stale_heartbeat").unwrap() >= 1);

    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || lab
            .arping("client", VIP, 1)
            .unwrap()
            .len()
            == 1),
        "answers did not resume after SIGCONT"
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_killed_daemon_leaves_a_silent_program_and_a_restart_takes_over() {
    if !privileged("a_killed_daemon_leaves_a_silent_program_and_a_restart_takes_over") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let iface = lab.host("a").iface.clone();
    let mut a = start(&lab, "a", "takeover", 200);
    assert_eq!(lab.arping("client", VIP, 1).unwrap().len(), 1);
    a.stop(Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    // The program is still attached (its link is pinned) but no longer answers.
    let link = lab
        .run("a", "ip", &["link", "show", &iface], Duration::from_secs(5))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "program detached with the daemon"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(lab.arping("client", VIP, 2).unwrap().is_empty());
    let pins = Path::new(PIN_ROOT).join(&iface);
    assert!(vip_counter(&pins, VIP.into(), "dropped_stale_heartbeat").unwrap() >= 2);

    // A new daemon replaces the stale link and answers again.
    let mut again = start(&lab, "a", "takeover", 200);
    assert_eq!(
        lab.arping("client", VIP, 2).unwrap().len(),
        2,
        "{}",
        again.log()
    );
    assert!(
        again.log().contains("replacing the XDP link"),
        "{}",
        again.log()
    );
    again
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let link = lab
        .run("a", "ip", &["link", "show", &iface], Duration::from_secs(5))
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "a clean stop detaches"
    );
    assert!(!Path::new(PIN_ROOT).join(&iface).exists());
}

#[test]
fn a_foreign_gratuitous_arp_for_the_vip_is_counted_and_logged() {
    if !privileged("a_foreign_gratuitous_arp_for_the_vip_is_counted_and_logged") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let mut a = start(&lab, "a", "takeover", 250);
    let client_iface = lab.host("client").iface.clone();
    // The client claims the VIP: unsolicited ARP, as a second owner would send.
    lab.run(
        "client",
        "ip",
        &["addr", "add", &format!("{VIP}/32"), "dev", &client_iface],
        Duration::from_secs(5),
    )
    .unwrap();
    let out = lab
        .run(
            "client",
            "arping",
            &["-U", "-c", "2", "-I", &client_iface, &VIP.to_string()],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(out.status.success() || !out.stdout.is_empty(), "{out:?}");
    let stats = Path::new(PIN_ROOT)
        .join(&lab.host("a").iface)
        .join("vrid_stats");
    assert!(
        wait_for(Duration::from_secs(3), || per_cpu_counter(
            &stats,
            51,
            "foreign_owner"
        )
        .unwrap_or(0)
            >= 2),
        "foreign owner not counted"
    );
    assert!(
        wait_for(Duration::from_secs(3), || a
            .log()
            .contains("another host claims a VIP")),
        "{}",
        a.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

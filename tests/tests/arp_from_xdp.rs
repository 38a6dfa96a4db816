//! xvrrp on host A answers ARP for a VIP that is not one of A's addresses, from XDP; a client on
//! the bridge sees A's MAC (or the virtual MAC); after the daemon stops nobody answers, and
//! nothing is left behind.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, Proc, mac_text, namespaces, privileged, xvrrp_bin};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VRID: u8 = 51;

/// Starts xvrrp on `host` as the given state for VRID 51 and VIP 192.0.2.100/24.
fn start_xvrrp(lab: &Lab, host: &str, state: &str, virtual_mac: bool) -> Proc {
    let iface = &lab.host(host).iface;
    lab.start_xvrrp(
        host,
        &format!(
            "interface = \"{iface}\"\nxdp_mode = \"native\"\nconfigure_vips = false\n\n[[instance]]\nvrid = {VRID}\npriority = 200\n\
             state = \"{state}\"\nvips = [\"{VIP}/24\"]\nvirtual_mac = {virtual_mac}\n"
        ),
    )
    .expect("start xvrrp")
}

#[test]
fn master_answers_arp_for_vip_from_xdp_and_stops_when_the_daemon_stops() {
    if !privileged("master_answers_arp_for_vip_from_xdp_and_stops_when_the_daemon_stops") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let a_mac = mac_text(&lab.host("a").mac);
    let a_iface = lab.host("a").iface.clone();
    let lab_namespaces = lab.namespace_names();

    // Nobody owns the VIP before the daemon runs.
    assert!(lab.arping("client", VIP, 1).unwrap().is_empty());

    let mut a = start_xvrrp(&lab, "a", "takeover", false);
    assert!(
        a.log().contains("mode=\"native\""),
        "expected native XDP; log:\n{}",
        a.log()
    );
    // The VIP is not an address of host A: only XDP can be answering.
    let addrs = lab
        .run(
            "a",
            "ip",
            &["-4", "-o", "addr", "show"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(!String::from_utf8_lossy(&addrs.stdout).contains(&VIP.to_string()));

    let replies = lab.arping("client", VIP, 3).unwrap();
    assert_eq!(
        replies.len(),
        3,
        "client got {replies:?}; xvrrp log:\n{}",
        a.log()
    );
    assert!(
        replies.iter().all(|m| *m == a_mac),
        "replies {replies:?}, A is {a_mac}"
    );

    // bpftool reads the pinned maps with their BTF field names.
    let pin_dir = Path::new("/sys/fs/bpf/xvrrp").join(&a_iface);
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pin_dir.join("vips_v4"))
        .output()
        .expect("bpftool");
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("\"addr\""), "{dump}");
    assert!(dump.contains("\"vrid\": 51"), "{dump}");
    assert!(dump.contains("\"mac\""), "{dump}");
    assert!(dump.contains("\"addr\": [192,0,2,100"), "{dump}");
    assert!(dump.contains("\"mac\": [2,0,0,0,0,1"), "{dump}");
    let vrids = Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(pin_dir.join("vrids"))
        .args(["key", "51", "0", "0", "0"])
        .output()
        .expect("bpftool");
    let vrids = String::from_utf8_lossy(&vrids.stdout);
    assert!(vrids.contains("\"role\":2"), "{vrids}");
    assert_eq!(
        xvrrp_lab::vip_counter(&pin_dir, VIP.into(), "answered").unwrap(),
        3
    );

    // The backup drops requests for the VIP: still exactly one MAC answers.
    let mut b = start_xvrrp(&lab, "b", "backup", false);
    let replies = lab.arping("client", VIP, 2).unwrap();
    assert_eq!(
        replies,
        vec![a_mac.clone(), a_mac.clone()],
        "xvrrp b log:\n{}",
        b.log()
    );

    // Stopping the master: it resigns with priority 0, the backup takes over at once and
    // answers from its MAC; A leaves nothing pinned and exits cleanly.
    let b_mac = mac_text(&lab.host("b").mac);
    let status = a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "xvrrp exited with {status}; log:\n{}",
        a.log()
    );
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    assert!(
        xvrrp_lab::wait_for(Duration::from_secs(3), || lab
            .arping("client", VIP, 1)
            .unwrap()
            == vec![b_mac.clone()]),
        "B did not take over; b log:\n{}",
        b.log()
    );
    let status = b.stop(Signal::SIGINT, Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "xvrrp b exited with {status}; log:\n{}",
        b.log()
    );
    assert!(
        lab.arping("client", VIP, 2).unwrap().is_empty(),
        "answers with no daemon running"
    );

    drop(lab);
    let left: Vec<_> = namespaces()
        .into_iter()
        .filter(|n| lab_namespaces.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn virtual_mac_is_used_when_configured() {
    if !privileged("virtual_mac_is_used_when_configured") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let mut a = start_xvrrp(&lab, "a", "takeover", true);
    let replies = lab.arping("client", VIP, 2).unwrap();
    assert_eq!(
        replies,
        vec!["00:00:5e:00:01:33".to_owned(); 2],
        "xvrrp log:\n{}",
        a.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_bad_config_is_refused_and_nothing_is_applied() {
    if !privileged("a_bad_config_is_refused_and_nothing_is_applied") {
        return;
    }
    let lab = Lab::new(&["a"]).expect("lab");
    let iface = lab.host("a").iface.clone();
    let config = lab.workdir().join("bad.toml");
    std::fs::write(
        &config,
        format!("interface = \"{iface}\"\n[[instance]]\nvrid = 51\nvips = [\"192.0.2.100/24\", \"nope\"]\n"),
    )
    .unwrap();
    let out = lab
        .run(
            "a",
            xvrrp_bin().to_str().unwrap(),
            &["run", "--config", config.to_str().unwrap()],
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("bad.toml: instance[0].vips[1]: expected an IPv4 or IPv6 address"),
        "{log}"
    );
    assert!(!Path::new("/sys/fs/bpf/xvrrp").join(&iface).exists());
    let link = lab
        .run("a", "ip", &["link", "show", &iface], Duration::from_secs(5))
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "XDP attached despite a bad config"
    );
}

//! Interop with keepalived 2.2.7 (Debian) in mixed pairs: the higher priority wins whichever
//! daemon it is, failover works both ways, one MAC answers; tshark decodes xvrrp's adverts.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, Proc, mac_text, privileged, wait_for};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

/// keepalived on `host`: VRID 51, the VIP, `priority`, VRRP `version`, `advert_int` seconds.
fn keepalived(lab: &Lab, host: &str, priority: u8, version: u8, advert_int: &str) -> Proc {
    keepalived_with(lab, host, priority, version, advert_int, "")
}

/// The same with extra lines in the vrrp_instance block.
fn keepalived_with(
    lab: &Lab,
    host: &str,
    priority: u8,
    version: u8,
    advert_int: &str,
    extra: &str,
) -> Proc {
    lab.start_keepalived(
        host,
        &lab.keepalived_config(host, priority, version, advert_int, extra),
    )
    .expect("start keepalived")
}

fn xvrrp(lab: &Lab, host: &str, priority: u8, version: u8, interval_ms: u32) -> Proc {
    xvrrp_with(lab, host, priority, version, interval_ms, "")
}

fn xvrrp_with(
    lab: &Lab,
    host: &str,
    priority: u8,
    version: u8,
    interval_ms: u32,
    extra: &str,
) -> Proc {
    let iface = &lab.host(host).iface;
    lab.start_xvrrp(
        host,
        &format!(
            "interface = \"{iface}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\n\
             priority = {priority}\nversion = {version}\nadvert_interval_ms = {interval_ms}\nvips = [\"{VIP}/24\"]\n{extra}"
        ),
    )
    .expect("start xvrrp")
}

/// Waits until the client sees exactly `host` answer for the VIP, three times in a row.
fn answered_only_by(lab: &Lab, host: &str, within: Duration, logs: &[&Proc]) {
    let want = mac_text(&lab.host(host).mac);
    let ok = wait_for(within, || {
        lab.arping("client", VIP, 3).unwrap() == vec![want.clone(); 3]
    });
    let logs: Vec<String> = logs.iter().map(|p| p.log()).collect();
    assert!(
        ok,
        "{host} ({want}) is not the one answering; logs:\n{}",
        logs.join("\n----\n")
    );
}

#[test]
fn vrrpv3_xvrrp_master_with_a_keepalived_backup_both_ways() {
    if !privileged("vrrpv3_xvrrp_master_with_a_keepalived_backup_both_ways") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut ka = keepalived(&lab, "a", 100, 3, "0.1");
    let mut xv = xvrrp(&lab, "b", 200, 3, 100);
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&ka, &xv]);

    // tshark decodes xvrrp's adverts as VRRPv3 with a good checksum, nothing malformed.
    let text = tshark_adverts(&lab, Ipv4Addr::new(192, 0, 2, 2), false);
    assert!(
        text.contains("Virtual Router Redundancy Protocol"),
        "{text}"
    );
    assert!(
        text.contains("Version 3, Packet type 1 (Advertisement)"),
        "{text}"
    );
    assert!(text.contains("[Checksum Status: Good]"), "{text}");
    assert!(
        !text.contains("Malformed")
            && !text.contains("[incorrect")
            && !text.contains("Checksum Status: Bad"),
        "{text}"
    );

    // xvrrp dies: keepalived takes over; xvrrp returns: it preempts keepalived.
    xv.stop(Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(5), &[&ka]);
    let mut xv = xvrrp(&lab, "b", 200, 3, 100);
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&ka, &xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn vrrpv3_keepalived_master_with_an_xvrrp_backup_both_ways() {
    if !privileged("vrrpv3_keepalived_master_with_an_xvrrp_backup_both_ways") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut ka = keepalived(&lab, "a", 200, 3, "0.1");
    let mut xv = xvrrp(&lab, "b", 100, 3, 100);
    answered_only_by(&lab, "a", Duration::from_secs(5), &[&ka, &xv]);
    // keepalived stops (it resigns): xvrrp takes over; keepalived returns and preempts.
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&xv]);
    let mut ka = keepalived(&lab, "a", 200, 3, "0.1");
    answered_only_by(&lab, "a", Duration::from_secs(8), &[&ka, &xv]);
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn vrrpv2_xvrrp_master_with_a_keepalived_backup() {
    if !privileged("vrrpv2_xvrrp_master_with_a_keepalived_backup") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut ka = keepalived(&lab, "a", 100, 2, "1");
    let mut xv = xvrrp(&lab, "b", 200, 2, 1000);
    answered_only_by(&lab, "b", Duration::from_secs(8), &[&ka, &xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(8), &[&ka]);
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn vrrpv2_with_a_password_mixed_pair_elects_and_a_wrong_password_is_not_heard() {
    if !privileged("vrrpv2_with_a_password_mixed_pair_elects_and_a_wrong_password_is_not_heard") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let auth = "  authentication {\n    auth_type PASS\n    auth_pass s3cret\n  }\n";
    // keepalived, the lower priority, stays backup only if it takes xvrrp's adverts: they must
    // carry the password.
    let mut ka = keepalived_with(&lab, "a", 100, 2, "1", auth);
    let mut xv = xvrrp_with(&lab, "b", 200, 2, 1000, "auth_pass = \"s3cret\"\n");
    answered_only_by(&lab, "b", Duration::from_secs(8), &[&ka, &xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(8), &[&ka]);
    // With another password xvrrp does not take keepalived's adverts (counted as `auth`), so
    // even at a lower priority it finds no master and takes over too.
    let mut xv = xvrrp_with(&lab, "b", 50, 2, 1000, "auth_pass = \"other\"\n");
    let state = || lab.status("b").unwrap()["instances"][0]["state"].clone();
    assert!(
        wait_for(Duration::from_secs(8), || state() == "master"),
        "{}",
        xv.log()
    );
    let stats = Path::new(xvrrp_lab::PIN_ROOT)
        .join(&lab.host("b").iface)
        .join("vrid_stats");
    assert!(xvrrp_lab::per_cpu_counter(&stats, 51, "adverts_drop_auth").unwrap() >= 3);
    assert_eq!(
        xvrrp_lab::per_cpu_counter(&stats, 51, "adverts_valid").unwrap(),
        0
    );
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn vrrpv2_mixed_pair_elects_and_fails_over() {
    if !privileged("vrrpv2_mixed_pair_elects_and_fails_over") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut ka = keepalived(&lab, "a", 200, 2, "1");
    let mut xv = xvrrp(&lab, "b", 100, 2, 1000);
    answered_only_by(&lab, "a", Duration::from_secs(8), &[&ka, &xv]);
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    answered_only_by(&lab, "b", Duration::from_secs(8), &[&xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn vrrpv3_unicast_mixed_pair_elects_and_fails_over_both_ways() {
    if !privileged("vrrpv3_unicast_mixed_pair_elects_and_fails_over_both_ways") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let unicast_ka = "  unicast_src_ip 192.0.2.1\n  unicast_peer {\n    192.0.2.2\n  }\n";
    let unicast_xv = "unicast_peers = [\"192.0.2.1\"]\n";
    let mut ka = keepalived_with(&lab, "a", 100, 3, "0.1", unicast_ka);
    let mut xv = xvrrp_with(&lab, "b", 200, 3, 100, unicast_xv);
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&ka, &xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(5), &[&ka]);
    let mut xv = xvrrp_with(&lab, "b", 200, 3, 100, unicast_xv);
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&ka, &xv]);
    // Adverts from a host that is not a configured peer are dropped by the data plane.
    let stats = Path::new(xvrrp_lab::PIN_ROOT)
        .join(&lab.host("b").iface)
        .join("vrid_stats");
    assert_eq!(
        xvrrp_lab::per_cpu_counter(&stats, 51, "adverts_drop_peer").unwrap(),
        0
    );
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// Whether `host` has `addr` on its lab interface.
fn holds(lab: &Lab, host: &str, addr: Ipv4Addr) -> bool {
    let out = lab
        .run(
            host,
            "ip",
            &["-4", "-o", "addr", "show", "dev", &lab.host(host).iface],
            Duration::from_secs(5),
        )
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {addr}/"))
}

/// A migration done one VRID at a time: on the same two hosts and interfaces, xvrrp runs VRID 51
/// and keepalived VRID 52. keepalived's pair must still hear each other through xvrrp's XDP
/// program (which passes on adverts for VRIDs it does not run, and counts them) and elect one
/// master; xvrrp's own election is not disturbed.
#[test]
fn keepalived_beside_xvrrp_on_the_same_interfaces_elects_one_master_of_its_own_vrid() {
    if !privileged(
        "keepalived_beside_xvrrp_on_the_same_interfaces_elects_one_master_of_its_own_vrid",
    ) {
        return;
    }
    const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut xa = xvrrp(&lab, "a", 200, 3, 100);
    let mut xb = xvrrp(&lab, "b", 100, 3, 100);
    answered_only_by(&lab, "a", Duration::from_secs(5), &[&xa, &xb]);
    // keepalived's master is to be b, while xvrrp's is a.
    let vrid_52 = |host: &str, priority: u8| {
        let config = lab
            .keepalived_config(host, priority, 3, "0.1", "")
            .replace("virtual_router_id 51", "virtual_router_id 52")
            .replace(&format!("{VIP}/24"), &format!("{OTHER_VIP}/24"));
        lab.start_keepalived(host, &config).expect("keepalived")
    };
    let mut ka = vrid_52("a", 100);
    let mut kb = vrid_52("b", 150);
    let logs = |procs: &[&Proc]| -> String {
        procs
            .iter()
            .map(|p| p.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(
        wait_for(Duration::from_secs(5), || holds(&lab, "b", OTHER_VIP)
            && !holds(&lab, "a", OTHER_VIP)),
        "keepalived's VRID 52 never settled on b alone:\n{}",
        logs(&[&ka, &kb])
    );
    // For a second (ten of keepalived's advert intervals, three Master_Down_Intervals), a keeps
    // hearing b through its XDP program and stays backup: one holder of the address.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        assert!(
            holds(&lab, "b", OTHER_VIP) && !holds(&lab, "a", OTHER_VIP),
            "keepalived's VRID 52 has two masters or none:\n{}",
            logs(&[&ka, &kb])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // xvrrp on a counted what it passed on; its own VIP is still answered by a alone.
    let status = lab.status("a").expect("status");
    let heard = status["other_vrids"]
        .as_array()
        .and_then(|o| o.iter().find(|v| v["vrid"] == 52))
        .and_then(|v| v["adverts"].as_u64())
        .unwrap_or(0);
    assert!(heard >= 10, "{status:#}");
    assert!(
        lab.status_table("a")
            .unwrap()
            .contains("heard, not configured here: ipv4 52 (")
    );
    answered_only_by(&lab, "a", Duration::from_secs(2), &[&xa, &xb]);
    for p in [&mut ka, &mut kb, &mut xa, &mut xb] {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn excluded_addresses_keep_a_mixed_pair_to_one_master() {
    if !privileged("excluded_addresses_keep_a_mixed_pair_to_one_master") {
        return;
    }
    // keepalived's virtual_ipaddress_excluded is added with the VIPs but never listed in
    // adverts; xvrrp drops adverts whose list differs, so it must leave them out too.
    let excluded = Ipv4Addr::new(192, 0, 2, 150);
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut k = keepalived_with(
        &lab,
        "b",
        100,
        3,
        "0.1",
        &format!("  virtual_ipaddress_excluded {{\n    {excluded}/24\n  }}\n"),
    );
    let mut x = xvrrp_with(
        &lab,
        "a",
        200,
        3,
        100,
        &format!("vips_excluded = [\"{excluded}/24\"]\n"),
    );
    answered_only_by(&lab, "a", Duration::from_secs(8), &[&k, &x]);
    assert!(
        wait_for(Duration::from_secs(3), || holds(&lab, "a", excluded)),
        "the excluded address is not on the master"
    );
    assert!(!holds(&lab, "b", VIP) && !holds(&lab, "b", excluded));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !holds(&lab, "b", VIP),
        "keepalived took the VIP too:\n{}",
        k.log()
    );
    let stats = Path::new(xvrrp_lab::PIN_ROOT)
        .join(&lab.host("a").iface)
        .join("vrid_stats");
    assert_eq!(
        xvrrp_lab::per_cpu_counter(&stats, 51, "adverts_drop_addresses").unwrap(),
        0
    );
    // The excluded address is answered from XDP like the VIP, and both move on a handover.
    assert_eq!(lab.arping("client", excluded, 1).unwrap().len(), 1);
    x.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || holds(&lab, "b", VIP)
            && holds(&lab, "b", excluded)),
        "keepalived did not take both over:\n{}",
        k.log()
    );
    assert!(!holds(&lab, "a", excluded));
    k.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// How long after `since` `addr` appeared on `host` (polled every 20 ms, at most `within`).
fn appeared_after(
    lab: &Lab,
    host: &str,
    addr: Ipv4Addr,
    since: std::time::Instant,
    within: Duration,
) -> Option<Duration> {
    wait_for(within, || holds(lab, host, addr)).then(|| since.elapsed())
}

#[test]
fn state_master_waits_master_down_as_keepalived_does() {
    if !privileged("state_master_waits_master_down_as_keepalived_does") {
        return;
    }
    // Each alone in its own VRID, state MASTER, priority 150, 1 s adverts: keepalived 2.2.7
    // starts as backup and takes over after Master_Down_Interval, 3 s + (256 - 150) / 256 s.
    let lab = Lab::new(&["a", "b"]).expect("lab");
    let theirs = Ipv4Addr::new(192, 0, 2, 161);
    let ka_config = lab
        .keepalived_config("b", 150, 3, "1", "")
        .replace("state BACKUP", "state MASTER")
        .replace("virtual_router_id 51", "virtual_router_id 61")
        .replace(&VIP.to_string(), &theirs.to_string());
    let ka_started = std::time::Instant::now();
    let mut k = lab.start_keepalived("b", &ka_config).expect("keepalived");
    let ka = appeared_after(&lab, "b", theirs, ka_started, Duration::from_secs(8));
    let iface = lab.host("a").iface.clone();
    let mut x = lab
        .start_xvrrp(
            "a",
            &format!(
                "interface = \"{iface}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\nstate = \"master\"\n\
                 priority = 150\nadvert_interval_ms = 1000\nvips = [\"{VIP}/24\"]\n"
            ),
        )
        .expect("xvrrp");
    // Measured from "xvrrp running" (the engine starts just before it).
    let ours = appeared_after(
        &lab,
        "a",
        VIP,
        std::time::Instant::now(),
        Duration::from_secs(8),
    );
    eprintln!("state MASTER alone: keepalived took over after {ka:?}, xvrrp after {ours:?}");
    let (ka, ours) = (
        ka.expect("keepalived never took over"),
        ours.expect("xvrrp never took over"),
    );
    assert!(
        (Duration::from_millis(3_000)..Duration::from_millis(4_500)).contains(&ours),
        "xvrrp took over after {ours:?}:\n{}",
        x.log()
    );
    assert!(
        (Duration::from_millis(3_000)..Duration::from_millis(5_000)).contains(&ka),
        "keepalived took over after {ka:?} (is this 2.2.7?)"
    );
    assert!(
        ours.abs_diff(ka) < Duration::from_secs(1),
        "{ours:?} against {ka:?}"
    );
    assert!(x.log().contains("reason=no master seen"), "{}", x.log());
    x.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    k.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn vrrpv2_unicast_mixed_pair_elects_and_fails_over_both_ways() {
    if !privileged("vrrpv2_unicast_mixed_pair_elects_and_fails_over_both_ways") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let unicast_ka = "  unicast_src_ip 192.0.2.1\n  unicast_peer {\n    192.0.2.2\n  }\n";
    let unicast_xv = "unicast_peers = [\"192.0.2.1\"]\n";
    let mut ka = keepalived_with(&lab, "a", 100, 2, "1", unicast_ka);
    let mut xv = xvrrp_with(&lab, "b", 200, 2, 1000, unicast_xv);
    answered_only_by(&lab, "b", Duration::from_secs(8), &[&ka, &xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(8), &[&ka]);
    let mut xv = xvrrp_with(&lab, "b", 200, 2, 1000, unicast_xv);
    answered_only_by(&lab, "b", Duration::from_secs(8), &[&ka, &xv]);
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn ipv6_vrrpv3_mixed_pair_elects_and_fails_over_both_ways() {
    if !privileged("ipv6_vrrpv3_mixed_pair_elects_and_fails_over_both_ways") {
        return;
    }
    use std::net::Ipv6Addr;
    let vip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let ka_config = format!(
        "global_defs {{\n  router_id a\n  vrrp_version 3\n}}\n\
         vrrp_instance V6 {{\n  state BACKUP\n  interface {}\n  virtual_router_id 51\n  priority 100\n  \
         advert_int 0.1\n  virtual_ipaddress {{\n    {vip6}/64\n  }}\n}}\n",
        lab.host("a").iface
    );
    let mut ka = lab.start_keepalived("a", &ka_config).expect("keepalived");
    let xv_config = format!(
        "interface = \"{}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\n\
         priority = 200\nadvert_interval_ms = 100\nvips = [\"{vip6}/64\"]\n",
        lab.host("b").iface
    );
    let answered_by = |host: &str| {
        let want = mac_text(&lab.host(host).mac);
        wait_for(Duration::from_secs(8), || {
            let macs = lab.ndisc("client", vip6, 2).unwrap();
            !macs.is_empty() && macs.iter().all(|m| *m == want)
        })
    };
    let mut xv = lab.start_xvrrp("b", &xv_config).expect("xvrrp");
    assert!(
        answered_by("b"),
        "xvrrp:\n{}\nkeepalived:\n{}",
        xv.log(),
        ka.log()
    );
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        answered_by("a"),
        "keepalived did not take over:\n{}",
        ka.log()
    );
    let mut xv = lab.start_xvrrp("b", &xv_config).expect("xvrrp");
    assert!(answered_by("b"), "xvrrp did not take back:\n{}", xv.log());
    let stats = Path::new(xvrrp_lab::PIN_ROOT)
        .join(&lab.host("b").iface)
        .join("vrid_stats");
    assert_eq!(
        xvrrp_lab::per_cpu_counter(&stats, 307, "adverts_drop_checksum").unwrap()
            + xvrrp_lab::per_cpu_counter(&stats, 307, "adverts_drop_addresses").unwrap(),
        0,
        "keepalived's IPv6 adverts were dropped"
    );
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn instances_without_vips_elect_with_keepalived_and_run_their_notify_scripts() {
    if !privileged("instances_without_vips_elect_with_keepalived_and_run_their_notify_scripts") {
        return;
    }
    // keepalived runs an instance with no virtual_ipaddress under VRRPv2 (adverts with no
    // address, notify scripts only: a cloud floating IP moved by a script; under VRRPv3 it
    // refuses the config); xvrrp runs it too, beside it.
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let dir = lab.workdir().to_owned();
    let ka_flag = dir.join("keepalived-master");
    let ka_conf = format!(
        "global_defs {{\n  router_id b\n  vrrp_version 2\n}}\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  interface {}\n  virtual_router_id 51\n  priority 100\n  \
         advert_int 1\n  notify_master \"/usr/bin/touch {}\"\n}}\n",
        lab.host("b").iface,
        ka_flag.display()
    );
    let mut ka = lab.start_keepalived("b", &ka_conf).expect("keepalived");
    let log = dir.join("xvrrp-notify.log");
    let iface = &lab.host("a").iface;
    let mut xv = lab
        .start_xvrrp(
            "a",
            &format!(
                "interface = \"{iface}\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\npriority = 200\n\
                 version = 2\nadvert_interval_ms = 1000\nvips = []\n\
                 notify_master = \"echo master >> {}\"\nnotify_backup = \"echo backup >> {}\"\n",
                log.display(),
                log.display()
            ),
        )
        .expect("xvrrp");
    let master = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .last()
            == Some("master")
    };
    assert!(
        wait_for(Duration::from_secs(8), master),
        "xvrrp never ran notify_master:\n{}",
        xv.log()
    );
    // keepalived hears xvrrp's adverts (no address, as its own) and stays backup; xvrrp takes
    // keepalived's adverts (none dropped for their address list).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !ka_flag.exists(),
        "keepalived became master beside xvrrp:\n{}",
        ka.log()
    );
    assert!(!holds(&lab, "a", VIP) && !holds(&lab, "b", VIP));
    let stats = Path::new(xvrrp_lab::PIN_ROOT)
        .join(iface)
        .join("vrid_stats");
    assert_eq!(
        xvrrp_lab::per_cpu_counter(&stats, 51, "adverts_drop_addresses").unwrap(),
        0
    );
    // xvrrp resigns: keepalived takes over and runs its notify_master.
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || ka_flag.exists()),
        "keepalived did not take over:\n{}",
        ka.log()
    );
    // xvrrp comes back as backup under keepalived's adverts with priority 200 > 100:
    // it preempts, and keepalived hears it.
    let _ = std::fs::remove_file(&log);
    let backups = || ka.log().matches("Entering BACKUP STATE").count();
    let before = backups();
    let mut xv = lab
        .start_xvrrp(
            "a",
            &format!(
                "interface = \"{iface}\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\npriority = 200\n\
                 version = 2\nadvert_interval_ms = 1000\nvips = []\nnotify_master = \"echo master >> {}\"\n",
                log.display()
            ),
        )
        .expect("xvrrp");
    assert!(
        wait_for(Duration::from_secs(8), master),
        "xvrrp did not preempt:\n{}",
        xv.log()
    );
    assert!(
        wait_for(Duration::from_secs(3), || backups() > before),
        "keepalived did not step back:\n{}",
        ka.log()
    );
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// tshark's view of `host`'s adverts for 2 s, with its VRRPv3 checksum form set to the message
/// alone (`as_v2`) or with the IPv4 pseudo-header.
fn tshark_adverts(lab: &Lab, from: Ipv4Addr, as_v2: bool) -> String {
    let cap = lab
        .run(
            "client",
            "tshark",
            &[
                "-i",
                &lab.host("client").iface,
                "-a",
                "duration:2",
                "-f",
                &format!("ip proto 112 and src host {from}"),
                "-o",
                &format!(
                    "vrrp.v3_checksum_as_in_v2:{}",
                    if as_v2 { "TRUE" } else { "FALSE" }
                ),
                "-V",
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    String::from_utf8_lossy(&cap.stdout).into_owned()
}

#[test]
fn v3_checksum_as_v2_sends_the_checksum_without_the_pseudo_header() {
    if !privileged("v3_checksum_as_v2_sends_the_checksum_without_the_pseudo_header") {
        return;
    }
    // No peer here expects that form (keepalived 2.2.7 and FRR 8.4.4 have no such setting), so
    // the wire is checked with tshark both ways, and keepalived 2.2.7 shows why the setting
    // must match the peer: it drops such adverts and becomes master beside xvrrp.
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut xv = xvrrp_with(&lab, "b", 200, 3, 100, "v3_checksum_as_v2 = true\n");
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&xv]);
    let b = Ipv4Addr::new(192, 0, 2, 2);
    let plain = tshark_adverts(&lab, b, true);
    assert!(
        plain.contains("Version 3, Packet type 1 (Advertisement)")
            && plain.contains("[Checksum Status: Good]")
            && !plain.contains("Checksum Status: Bad"),
        "{plain}"
    );
    let pseudo = tshark_adverts(&lab, b, false);
    assert!(
        pseudo.contains("Checksum Status: Bad") && !pseudo.contains("[Checksum Status: Good]"),
        "{pseudo}"
    );
    let mut ka = keepalived(&lab, "a", 100, 3, "0.1");
    assert!(
        wait_for(Duration::from_secs(5), || holds(&lab, "a", VIP)),
        "keepalived 2.2.7 took the plain-checksum adverts:\n{}",
        ka.log()
    );
    assert!(ka.log().to_lowercase().contains("checksum"), "{}", ka.log());
    // Without the setting the pair settles on xvrrp.
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    let mut xv = xvrrp(&lab, "b", 200, 3, 100);
    answered_only_by(&lab, "b", Duration::from_secs(5), &[&ka, &xv]);
    xv.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    ka.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

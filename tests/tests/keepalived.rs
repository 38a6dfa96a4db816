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
                "ip proto 112 and src host 192.0.2.2",
                "-o",
                "vrrp.v3_checksum_as_in_v2:FALSE",
                "-V",
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&cap.stdout);
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

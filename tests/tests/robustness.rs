//! What the OS, operators and the network do to a running node, struck for real: a VIP deleted
//! from the master, a VIP that cannot be added, a configuration changed across a hitless
//! restart or a reload, a resume marker left too long, another cluster reusing our VRID on the
//! segment, and `auto` XDP on a veth.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, PIN_ROOT, Proc, per_cpu_counter, privileged, wait_for};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;
const VIP2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);

/// The addresses on every interface of `host`, as `ip -4 -o addr` prints them.
fn addresses(lab: &Lab, host: &str) -> String {
    let out = lab
        .run(host, "ip", &["-4", "-o", "addr"], Duration::from_secs(5))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has(lab: &Lab, host: &str, vip: Ipv4Addr) -> bool {
    addresses(lab, host).contains(&format!(" {vip}/"))
}

fn ip(lab: &Lab, host: &str, args: &[&str]) {
    let out = lab.run(host, "ip", args, Duration::from_secs(5)).unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

fn reload(lab: &Lab, p: &Proc, host: &str, config: &str) {
    std::fs::write(lab.workdir().join(format!("{host}.toml")), config).unwrap();
    let before = p.log().matches("configuration reloaded").count();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), Signal::SIGHUP).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .matches("configuration reloaded")
            .count()
            > before),
        "{}",
        p.log()
    );
}

/// The log line that says how the data plane was attached.
fn attached_line(p: &Proc) -> String {
    p.log()
        .lines()
        .find(|l| l.contains("data plane attached"))
        .unwrap_or_default()
        .to_owned()
}

/// xvrrp on a (priority 200) and b (100), the lab's usual config, once a answers for the VIP.
fn pair(lab: &Lab) -> (Proc, Proc) {
    let a = lab
        .start_xvrrp("a", &lab.vrrp_config("a", 200, ""))
        .unwrap();
    let b = lab
        .start_xvrrp("b", &lab.vrrp_config("b", 100, ""))
        .unwrap();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    (a, b)
}

fn instance_status(lab: &Lab, host: &str) -> serde_json::Value {
    lab.status(host).unwrap()["instances"][0].clone()
}

#[test]
fn a_vip_deleted_by_someone_else_is_put_back_at_once() {
    if !privileged("a_vip_deleted_by_someone_else_is_put_back_at_once") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a, mut b) = pair(&lab);
    // NetworkManager, systemd-networkd or an operator's `ip addr del`.
    for round in 1..=2u64 {
        let iface = lab.host("a").iface.clone();
        ip(
            &lab,
            "a",
            &["addr", "del", &format!("{VIP}/24"), "dev", &iface],
        );
        assert!(
            wait_for(Duration::from_secs(1), || has(&lab, "a", VIP)),
            "the VIP was not put back within 1 s (round {round}):\n{}",
            a.log()
        );
        lab.wait_answered_by("client", "a", VIP, 3, Duration::from_secs(2));
        let upkeep = &instance_status(&lab, "a")["vip_upkeep"];
        assert_eq!(upkeep["readded"], round, "{upkeep}");
        assert_eq!(upkeep["absent"].as_array().map(Vec::len), Some(0));
    }
    assert!(
        a.log()
            .contains("VIP deleted from the interface by someone else; adding it again"),
        "{}",
        a.log()
    );
    assert!(!b.log().contains("new=master"), "{}", b.log());
    // The backup's VIP was never there; deleting what is not there changes nothing.
    assert!(!has(&lab, "b", VIP));
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// A kernel slow to change addresses (the RTNL lock held by someone else: here the daemon's
/// fault knob delays every netlink change by 1.5 s) delays the VIP's removal only: the other
/// instance's adverts keep their 100 ms, the heartbeat stays fresh (200 ms limit), and its VIP
/// is answered throughout.
#[test]
fn a_slow_netlink_delays_no_advert_of_another_instance_nor_the_heartbeat() {
    if !privileged("a_slow_netlink_delays_no_advert_of_another_instance_nor_the_heartbeat") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let demote = lab.workdir().join("demote");
    std::fs::write(&demote, "0").unwrap();
    let config = |host: &str, priority: u8| {
        format!(
            "{}track_files = [\"demote\"]\n\n\
             [[instance]]\nname = \"web\"\nvrid = 52\npriority = {priority}\nadvert_interval_ms = 100\n\
             vips = [\"{VIP2}/24\"]\n\n\
             [[track_file]]\nname = \"demote\"\npath = \"{}\"\nweight = -120\ninterval_ms = 50\n",
            lab.vrrp_config(host, priority, "name = \"db\"\n"),
            demote.display()
        )
    };
    let mut a = lab
        .start_xvrrp_env(
            "a",
            &config("a", 200),
            &[("XVRRP_FAULT_NETLINK_DELAY_MS", "1500")],
        )
        .unwrap();
    // b runs db only, at 100, without the fault.
    let mut b = lab
        .start_xvrrp("b", &lab.vrrp_config("b", 100, "name = \"db\"\n"))
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || has(&lab, "a", VIP)
            && has(&lab, "a", VIP2)),
        "{}",
        a.log()
    );
    assert!(a.log().contains("XVRRP_FAULT_NETLINK_DELAY_MS is set"));
    lab.wait_answered_by("client", "a", VIP2, 2, Duration::from_secs(5));
    let capture = lab.workdir().join("adverts.pcap");
    let mut tcpdump = lab
        .capture_from("a", "ip proto 112", &capture)
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    // db on a drops to 80: b (100) preempts it, and a's removal of its VIP takes 1.5 s.
    std::fs::write(&demote, "1").unwrap();
    let demoted = std::time::Instant::now();
    let mut answers = Vec::new();
    let mut still_there_after_demotion = false;
    while demoted.elapsed() < Duration::from_secs(3) {
        answers.extend(lab.arping("client", VIP2, 1).expect("arping"));
        if (600..1200).contains(&demoted.elapsed().as_millis()) && has(&lab, "a", VIP) {
            still_there_after_demotion = true;
        }
    }
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    assert!(
        a.log().contains("instance=db old=master new=backup"),
        "{}",
        a.log()
    );
    // The removal was slow indeed (the fault struck), and it was carried out.
    assert!(still_there_after_demotion, "{}", a.log());
    assert!(
        wait_for(Duration::from_secs(3), || !has(&lab, "a", VIP)),
        "{}",
        a.log()
    );
    lab.wait_answered_by("client", "b", VIP, 2, Duration::from_secs(3));
    // Meanwhile web advertised every 100 ms and its VIP was answered from a's XDP (a stale
    // heartbeat would have dropped those requests).
    xvrrp_lab::assert_kept_advertising(&lab, "a", &capture, ("web", 52), 25, &answers);
    a.stop(Signal::SIGTERM, Duration::from_secs(15)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    // The stop waited for what was queued, then removed web's VIP.
    assert!(!has(&lab, "a", VIP2), "{}", a.log());
}

/// Without `heartbeat_limit_ms` the limit is twice the shortest advert interval (250 ms at
/// least): at 3 s adverts a frozen daemon's program still answers 2 s later and is quiet 8 s
/// later. A reload to longer intervals keeps the running limit; one to intervals shorter than
/// half of it is refused (it needs a restart).
#[test]
fn the_derived_heartbeat_limit_follows_the_advert_interval_and_reloads_keep_it_safe() {
    if !privileged(
        "the_derived_heartbeat_limit_follows_the_advert_interval_and_reloads_keep_it_safe",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let config = |interval: u32| {
        format!(
            "interface = \"{}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\npriority = 200\n\
             state = \"takeover\"\nadvert_interval_ms = {interval}\nvips = [\"{VIP}/24\"]\n",
            lab.host("a").iface
        )
    };
    let mut a = lab.start_xvrrp("a", &config(3000)).unwrap();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(5));
    assert!(a.log().contains("heartbeat_limit_ms=6000"), "{}", a.log());
    reload(&lab, &a, "a", &config(4000));
    std::fs::write(lab.workdir().join("a.toml"), config(1000)).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid() as i32), Signal::SIGHUP).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("went below half the running heartbeat limit (6000 ms")),
        "{}",
        a.log()
    );
    std::fs::write(lab.workdir().join("a.toml"), config(3000)).unwrap();
    // Frozen: the program answers while the heartbeat is under 6 s old (it was written at most
    // 3 s before the stop), and not after.
    let pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let early = lab.arping("client", VIP, 1).unwrap();
    std::thread::sleep(Duration::from_secs(8).saturating_sub(frozen.elapsed()));
    let late = lab.arping("client", VIP, 1).unwrap();
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    let a_mac = xvrrp_lab::mac_text(&lab.host("a").mac);
    assert_eq!(early, vec![a_mac], "2 s after the freeze");
    assert!(late.is_empty(), "8 s after the freeze: {late:?}");
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(5));
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// a (priority 200) and b (100) with `virtual_mac`, once a holds the VIP.
fn virtual_mac_pair(lab: &Lab) -> (Proc, Proc) {
    let cfg = |host: &str, priority: u8| lab.vrrp_config(host, priority, "virtual_mac = true\n");
    let a = lab.start_xvrrp("a", &cfg("a", 200)).unwrap();
    let b = lab.start_xvrrp("b", &cfg("b", 100)).unwrap();
    assert!(
        wait_for(Duration::from_secs(8), || has(lab, "a", VIP)),
        "{}",
        a.log()
    );
    (a, b)
}

#[test]
fn a_vip_that_cannot_be_added_takes_the_instance_out_so_that_the_peer_takes_over() {
    if !privileged("a_vip_that_cannot_be_added_takes_the_instance_out_so_that_the_peer_takes_over")
    {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    // With virtual_mac the VIP lives on the macvlan vrrp.51; deleting that link takes the VIP
    // with it, and every add fails until the daemon is restarted.
    let (mut a, mut b) = virtual_mac_pair(&lab);
    ip(&lab, "a", &["link", "del", "vrrp.51"]);
    assert!(
        wait_for(Duration::from_secs(5), || has(&lab, "b", VIP)),
        "the peer did not take over:\na:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    assert!(
        a.log()
            .contains("cannot add VIP: stepping out of the election"),
        "{}",
        a.log()
    );
    let st = instance_status(&lab, "a");
    assert_eq!(st["state"], "fault", "{st}");
    assert!(st["vip_upkeep"]["held_out"].as_u64() >= Some(1), "{st}");
    assert!(st["vip_upkeep"]["add_failures"].as_u64() >= Some(3), "{st}");
    // The client reaches the one host that has the VIP.
    let answers = lab.arping("client", VIP, 2).unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_hitless_restart_drops_what_the_new_configuration_no_longer_has() {
    if !privileged("a_hitless_restart_drops_what_the_new_configuration_no_longer_has") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let iface = lab.host("a").iface.clone();
    let cfg = |vips: &str| {
        format!(
            "interface = \"{iface}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\npriority = 200\n\
             vips = [{vips}]\n\n[[instance]]\nname = \"second\"\nvrid = 52\npriority = 200\nvips = [\"192.0.2.102/24\"]\n"
        )
    };
    let both = format!("\"{VIP}/24\", \"{VIP2}/24\"");
    let mut a = lab.start_xvrrp("a", &cfg(&both)).unwrap();
    lab.wait_answered_by("client", "a", VIP2, 2, Duration::from_secs(8));
    a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    // The new configuration has VIP but not VIP2, and no VRID 52.
    let one = format!(
        "interface = \"{iface}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\npriority = 200\n\
         vips = [\"{VIP}/24\"]\n"
    );
    let mut a = lab.start_xvrrp("a", &one).unwrap();
    assert!(attached_line(&a).contains("adopted"), "{}", a.log());
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(3));
    assert!(
        lab.arping("client", VIP2, 2).unwrap().is_empty(),
        "a VIP the configuration no longer has is still answered:\n{}",
        a.log()
    );
    assert!(!has(&lab, "a", VIP2), "{}", addresses(&lab, "a"));
    assert!(
        lab.arping("client", Ipv4Addr::new(192, 0, 2, 102), 1)
            .unwrap()
            .is_empty()
    );
    let log = a.log();
    assert!(
        log.contains("removed from the data plane what the configuration no longer has"),
        "{log}"
    );
    assert!(log.contains("vips=2") && log.contains("vrids=1"), "{log}");
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_stale_resume_marker_is_not_resumed_as_master() {
    if !privileged("a_stale_resume_marker_is_not_resumed_as_master") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a, mut b) = pair(&lab);
    a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    // 100 ms adverts: the marker is good for 1 s; b takes over meanwhile.
    lab.wait_answered_by("client", "b", VIP, 2, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1200));
    let mut a = lab
        .start_xvrrp("a", &lab.vrrp_config("a", 200, ""))
        .unwrap();
    let log = a.log();
    assert!(
        log.contains("not resuming after a hitless restart: the marker is"),
        "{log}"
    );
    assert!(!attached_line(&a).contains("adopted"), "{log}");
    // A fresh start: a preempts b as it would after any start.
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_reload_that_removes_a_unicast_peer_stops_taking_its_adverts() {
    if !privileged("a_reload_that_removes_a_unicast_peer_stops_taking_its_adverts") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_ip, b_ip) = (lab.host("a").ip, lab.host("b").ip);
    let spare = Ipv4Addr::new(192, 0, 2, 250);
    let a_cfg = |peers: &str| lab.vrrp_config("a", 100, &format!("unicast_peers = [{peers}]\n"));
    let mut a = lab
        .start_xvrrp("a", &a_cfg(&format!("\"{b_ip}\", \"{spare}\"")))
        .unwrap();
    let mut b = lab
        .start_xvrrp(
            "b",
            &lab.vrrp_config("b", 200, &format!("unicast_peers = [\"{a_ip}\"]\n")),
        )
        .unwrap();
    lab.wait_answered_by("client", "b", VIP, 2, Duration::from_secs(8));
    let stats = Path::new(PIN_ROOT)
        .join(&lab.host("a").iface)
        .join("vrid_stats");
    assert_eq!(per_cpu_counter(&stats, 51, "adverts_drop_peer").unwrap(), 0);
    let promoted = a.log().matches("new=master").count();
    // b is no longer a's peer: its adverts are dropped from now on, so a, hearing no master,
    // takes over (b still hears a, and keeps its own claim: the operator split them).
    reload(&lab, &a, "a", &a_cfg(&format!("\"{spare}\"")));
    assert!(
        wait_for(Duration::from_secs(3), || a
            .log()
            .matches("new=master")
            .count()
            > promoted),
        "a kept taking b's adverts after b left its peers:\n{}",
        a.log()
    );
    assert!(per_cpu_counter(&stats, 51, "adverts_drop_peer").unwrap() > 0);
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn another_cluster_reusing_our_vrid_cannot_demote_our_master() {
    if !privileged("another_cluster_reusing_our_vrid_cannot_demote_our_master") {
        return;
    }
    let lab = Lab::new(&["a", "b", "other", "client"]).expect("lab");
    let mut a = lab
        .start_xvrrp("a", &lab.vrrp_config("a", 150, ""))
        .unwrap();
    let mut b = lab
        .start_xvrrp("b", &lab.vrrp_config("b", 100, ""))
        .unwrap();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    let changes = a.log().matches("state change").count();
    // Another cluster on the segment runs VRID 51 too, for another VIP, at a higher priority.
    let other_iface = lab.host("other").iface.clone();
    let mut other = lab
        .start_xvrrp(
            "other",
            &format!(
                "interface = \"{other_iface}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\npriority = 250\n\
                 advert_interval_ms = 100\nvips = [\"192.0.2.150/24\"]\n"
            ),
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || has(
            &lab,
            "other",
            Ipv4Addr::new(192, 0, 2, 150)
        )),
        "{}",
        other.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        a.log().matches("state change").count(),
        changes,
        "our master changed state:\n{}",
        a.log()
    );
    assert!(!b.log().contains("new=master"), "{}", b.log());
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(1));
    let stats = Path::new(PIN_ROOT)
        .join(&lab.host("a").iface)
        .join("vrid_stats");
    assert!(per_cpu_counter(&stats, 51, "adverts_drop_addresses").unwrap() >= 5);
    let st = instance_status(&lab, "a");
    assert!(
        st["data_plane"]["adverts_dropped_by_reason"]["addresses"].as_u64() >= Some(5),
        "{st}"
    );
    for p in [&mut a, &mut b, &mut other] {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn auto_xdp_on_a_veth_attaches_in_generic_mode_and_answers() {
    if !privileged("auto_xdp_on_a_veth_attaches_in_generic_mode_and_answers") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let cfg = lab
        .vrrp_config("a", 200, "")
        .replace("xdp_mode = \"native\"", "xdp_mode = \"auto\"");
    let mut a = lab.start_xvrrp("a", &cfg).unwrap();
    assert!(attached_line(&a).contains("generic"), "{}", a.log());
    assert!(
        a.log().contains("veth: attaching in GENERIC mode"),
        "{}",
        a.log()
    );
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// vrrp_user::metrics::MAX_CONNECTIONS: metrics connections served at once.
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn thousands_of_metrics_connections_change_nothing_and_leak_nothing() {
    if !privileged("thousands_of_metrics_connections_change_nothing_and_leak_nothing") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let a_ip = lab.host("a").ip;
    let cfg = lab.vrrp_config("a", 200, "").replace(
        "\n\n[[instance]]",
        &format!("\n\n[metrics]\nlisten = \"{a_ip}:9650\"\n\n[[instance]]"),
    );
    let mut a = lab.start_xvrrp("a", &cfg).unwrap();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    let pins = Path::new(PIN_ROOT).join(&lab.host("a").iface);
    let changes = a.log().matches("state change").count();
    let before = fds(a.pid());
    let pid = a.pid();
    // 3000 connections from the client, held open together: every other one sends nothing
    // (half-open), the rest a scrape that is never read.
    let storm = lab
        .host("client")
        .ns
        .spawn_in(move || {
            let limit = libc::rlimit {
                rlim_cur: 8192,
                rlim_max: 8192,
            };
            // SAFETY: setrlimit with a valid struct.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
            let mut held = Vec::new();
            let (mut refused, mut most) = (0u32, 0usize);
            for i in 0..3000 {
                match std::net::TcpStream::connect_timeout(
                    &(a_ip, 9650).into(),
                    Duration::from_millis(200),
                ) {
                    Ok(mut s) => {
                        if i % 2 == 1 {
                            let _ =
                                std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\n\r\n");
                        }
                        held.push(s);
                    }
                    Err(_) => refused += 1,
                }
                if i % 500 == 0 {
                    most = most.max(fds(pid));
                }
            }
            most = most.max(fds(pid));
            std::thread::sleep(Duration::from_secs(1));
            most = most.max(fds(pid));
            Ok((held.len(), refused, most))
        })
        .unwrap();
    // Meanwhile the master answers, from a fresh heartbeat.
    for _ in 0..3 {
        assert_eq!(lab.arping("client", VIP, 1).unwrap().len(), 1);
    }
    let (held, refused, most) = storm.join().unwrap().unwrap();
    eprintln!("storm: {held} connected, {refused} not, daemon fds {before} -> at most {most}");
    assert!(held >= 1000, "only {held} connections were made");
    assert!(
        most <= before + METRICS_MAX_CONNECTIONS + 8,
        "the daemon held {most} fds (from {before})"
    );
    assert_eq!(
        xvrrp_lab::vip_counter(&pins, VIP.into(), "dropped_stale_heartbeat").unwrap(),
        0
    );
    assert_eq!(
        a.log().matches("state change").count(),
        changes,
        "{}",
        a.log()
    );
    // All closed: the daemon is back to where it was, and scrapes work.
    assert!(
        wait_for(Duration::from_secs(5), || fds(a.pid()) <= before + 1),
        "fds {} after the storm, {before} before",
        fds(a.pid())
    );
    let text = lab
        .host("client")
        .ns
        .run_in(move || {
            let mut s = std::net::TcpStream::connect((a_ip, 9650))?;
            std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\n\r\n")?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut s, &mut text)?;
            Ok(text)
        })
        .unwrap();
    assert!(text.contains("xvrrp_instance_state"), "{text}");
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn scripts_run_as_the_script_user() {
    if !privileged("scripts_run_as_the_script_user") {
        return;
    }
    let lab = Lab::new(&["a"]).expect("lab");
    let out = std::env::temp_dir().join(format!("xvrrp-script-user-{}", lab.tag()));
    let _ = std::fs::remove_file(&out);
    let cfg = lab
        .vrrp_config("a", 200, "track_scripts = [\"who\"]\n")
        .replace(
            "\n\n[[instance]]",
            &format!(
                "\nscript_user = \"nobody\"\n\n[[track_script]]\nname = \"who\"\n\
                 script = \"id -u > {} && id -G >> {}\"\ninterval_ms = 200\n\n[[instance]]",
                out.display(),
                out.display()
            ),
        );
    let mut a = lab.start_xvrrp("a", &cfg).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || std::fs::read_to_string(&out)
            .is_ok_and(|t| t.lines().count() == 2)),
        "{}",
        a.log()
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("65534"), "{text}");
    // Its own group only: root's supplementary groups are dropped.
    assert!(
        !lines.next().unwrap_or("").split(' ').any(|g| g == "0"),
        "{text}"
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    let _ = std::fs::remove_file(&out);
}

#[test]
fn an_interface_deleted_and_created_again_is_taken_up_again() {
    if !privileged("an_interface_deleted_and_created_again_is_taken_up_again") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a, mut b) = pair(&lab);
    let pid = a.pid();
    // A bond rebuilt, a veth re-created, a driver reloaded: same name, new index.
    lab.recreate_link("a").unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("the interface was created again")),
        "{}",
        a.log()
    );
    // a starts afresh on the new interface (the same process), and being the stronger, takes
    // the VIP back from b, answering from XDP again.
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(15));
    assert_eq!(a.pid(), pid);
    assert!(a.log().contains("starting afresh in place"), "{}", a.log());
    assert_eq!(
        a.log().matches("data plane attached").count(),
        2,
        "{}",
        a.log()
    );
    let iface = lab.host("a").iface.clone();
    let link = lab
        .run(
            "a",
            "ip",
            &["link", "show", "dev", &iface],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "no XDP program on the new interface: {link:?}"
    );
    assert!(has(&lab, "a", VIP), "{}", addresses(&lab, "a"));
    // Counted, in status and metrics.
    assert_eq!(lab.status("a").unwrap()["interface_recreated"], 1);
    assert!(
        lab.status_table("a")
            .unwrap()
            .contains("deleted and created again 1 time(s)")
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// Runs `xvrrp run` on `host` with `config` to its end (at most 20 s): exit code and output.
fn run_to_end(lab: &Lab, host: &str, config: &str) -> (Option<i32>, String) {
    let path = lab.workdir().join(format!("{host}-once.toml"));
    std::fs::write(&path, config).unwrap();
    let out = lab
        .run(
            host,
            xvrrp_lab::xvrrp_bin().to_str().unwrap(),
            &["run", "--config", path.to_str().unwrap()],
            Duration::from_secs(20),
        )
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn error_exits_leave_alone_what_they_do_not_own() {
    if !privileged("error_exits_leave_alone_what_they_do_not_own") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let cfg = lab.vrrp_config("a", 200, "");
    let mut a = lab.start_xvrrp("a", &cfg).unwrap();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    // Started twice on the same interface: the second refuses before it touches anything.
    let (code, log) = run_to_end(&lab, "a", &cfg);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("another xvrrp is running"), "{log}");
    assert!(has(&lab, "a", VIP));
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(1));
    assert!(a.running());
    // A port in use: refused before the data plane is loaded.
    let taken = lab
        .host("client")
        .ns
        .run_in(|| Ok(std::net::TcpListener::bind("127.0.0.1:0")?))
        .unwrap();
    let port = taken.local_addr().unwrap().port();
    let client_cfg = lab.vrrp_config("client", 200, "").replace(
        "\n\n[[instance]]",
        &format!("\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[instance]]"),
    );
    let (code, log) = run_to_end(&lab, "client", &client_cfg);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("binding the metrics endpoint"), "{log}");
    let iface = lab.host("client").iface.clone();
    assert!(!Path::new(PIN_ROOT).join(&iface).join("link").exists());
    let link = lab
        .run(
            "client",
            "ip",
            &["link", "show", &iface],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"));
    assert!(!has(&lab, "client", VIP));
    // A second daemon (another main interface) with an instance on the interface this one
    // serves: refused before it touches anything, naming the interface.
    for args in [
        &[
            "link", "add", "sec0", "type", "veth", "peer", "name", "sec0p",
        ][..],
        &["link", "set", "sec0p", "up"][..],
        &["link", "set", "sec0", "up"][..],
        &["addr", "add", "10.99.0.1/24", "dev", "sec0"][..],
    ] {
        let out = lab.run("a", "ip", args, Duration::from_secs(5)).unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let both = format!(
        "interface = \"sec0\"\n[[instance]]\nvrid = 9\nvips = [\"10.99.0.100/24\"]\n\n\
         [[instance]]\ninterface = \"{}\"\nvrid = 52\nvips = [\"192.0.2.152/24\"]\n",
        lab.host("a").iface
    );
    let (code, log) = run_to_end(&lab, "a", &both);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("another xvrrp serves {}", lab.host("a").iface)),
        "{log}"
    );
    assert!(!Path::new(PIN_ROOT).join("sec0").join("link").exists());
    assert!(
        !Path::new("/run/xvrrp/sec0.sock").exists(),
        "the refused daemon leaves no socket"
    );
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(1));
    assert!(a.running());
    // The interface missing: refused, naming it.
    let gone = cfg.replace(&lab.host("a").iface, "nosuchif0");
    let (code, log) = run_to_end(&lab, "client", &gone);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("nosuchif0"), "{log}");
    assert!(
        !Path::new("/run/xvrrp/nosuchif0.sock").exists(),
        "an error exit leaves no control socket"
    );
    drop(taken);
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_lossy_path_to_the_server_leaves_no_probe_connection_behind() {
    if !xvrrp_lab::mariadb::ready("a_lossy_path_to_the_server_leaves_no_probe_connection_behind") {
        return;
    }
    use xvrrp_lab::mariadb::{Mariadb, PROBE_USER};
    let lab = Lab::new(&["a", "db"]).expect("lab");
    let mut db = Mariadb::install(&lab, "db", 1).unwrap();
    db.start(&lab).unwrap();
    // The probe alone (a fencer keeps a connection of its own).
    let target = db
        .xvrrp_target("fence = false")
        .replace("127.0.0.1", &lab.host("db").ip.to_string())
        .replace("replication = true\n", "");
    let cfg = format!(
        "{}track_mysql = [\"local\"]\n\n{target}",
        lab.vrrp_config("a", 200, "")
    );
    let mut a = lab.start_xvrrp("a", &cfg).unwrap();
    let count = || -> u32 {
        db.sql(
            &lab,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{PROBE_USER}'"
            ),
        )
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(10), || count() == 2),
        "the probe did not connect: {}\n{}",
        count(),
        a.log()
    );
    // 30 s of 30 % loss on the path: checks time out, connections are given up and opened
    // anew; the server never holds more than the probe's two.
    lab.set_faults(&[], 30).unwrap();
    let started = std::time::Instant::now();
    let mut most = 0;
    while started.elapsed() < Duration::from_secs(30) {
        most = most.max(count());
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.set_faults(&[], 0).unwrap();
    let failures = lab.status("a").unwrap()["mysql"][0]["failures"]
        .as_u64()
        .unwrap_or(0);
    eprintln!("most probe connections seen: {most}; failed checks: {failures}");
    assert!(
        failures >= 1,
        "the loss never made a check fail:\n{}",
        a.log()
    );
    assert!(
        most <= 2,
        "the server held {most} probe connections at once"
    );
    assert!(
        wait_for(Duration::from_secs(10), || count() == 2),
        "{} probe connections after the loss",
        count()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_backup_sends_nothing_from_the_virtual_mac_while_it_starts_reloads_and_restarts() {
    if !privileged(
        "a_backup_sends_nothing_from_the_virtual_mac_while_it_starts_reloads_and_restarts",
    ) {
        return;
    }
    // A frame from the virtual MAC on the backup's port makes the switch send the master's
    // traffic there (FRR keeps its backup's macvlan in protodown for this reason).
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let cfg = |host: &str, priority: u8| lab.vrrp_config(host, priority, "virtual_mac = true\n");
    let mut a = lab.start_xvrrp("a", &cfg("a", 200)).unwrap();
    assert!(
        wait_for(Duration::from_secs(8), || has(&lab, "a", VIP)),
        "{}",
        a.log()
    );
    let file = lab.workdir().join("vmac-from-b.pcap");
    let mut capture = lab
        .capture_from("b", "ether src 00:00:5e:00:01:33", &file)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Starts, reloads (a changed priority starts the instance again), restarts hitlessly.
    let mut b = lab.start_xvrrp("b", &cfg("b", 100)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    reload(&lab, &b, "b", &cfg("b", 90));
    std::thread::sleep(Duration::from_secs(1));
    b.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    let mut b = lab.start_xvrrp("b", &cfg("b", 90)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(capture.id() as i32),
        Signal::SIGINT,
    );
    let _ = capture.wait();
    let frames = lab.captured(&file).unwrap();
    assert!(
        frames.is_empty(),
        "the backup sent from the virtual MAC:\n{}",
        frames.join("\n")
    );
    assert!(!has(&lab, "b", VIP));
    // A backup's macvlan is down; the master's is up.
    let link = |host: &str| {
        let out = lab
            .run(
                host,
                "ip",
                &["-o", "link", "show", "vrrp.51"],
                Duration::from_secs(5),
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(link("b").contains("state DOWN"), "{}", link("b"));
    assert!(!link("a").contains("state DOWN"), "{}", link("a"));
    // Failover: b's macvlan comes up with the VIP.
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || has(&lab, "b", VIP)),
        "{}",
        b.log()
    );
    assert!(!link("b").contains("state DOWN"), "{}", link("b"));
    assert!(
        wait_for(Duration::from_secs(3), || lab
            .arping("client", VIP, 1)
            .unwrap()
            == vec!["00:00:5e:00:01:33".to_owned()]),
        "the new master does not answer from the virtual MAC"
    );
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn with_a_virtual_mac_the_master_sends_its_adverts_from_it() {
    if !privileged("with_a_virtual_mac_the_master_sends_its_adverts_from_it") {
        return;
    }
    // RFC 5798 section 7.3: the virtual MAC is the source of the master's adverts, which keeps
    // switches learning it on the master's port; the backup still hears them.
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a, mut b) = virtual_mac_pair(&lab);
    let adverts_from = |host: &str, secs: u64| {
        let file = lab.workdir().join(format!("adverts-{host}-{secs}.pcap"));
        let mut capture = lab.capture_from(host, "ip proto 112", &file).unwrap();
        std::thread::sleep(Duration::from_secs(secs));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(capture.id() as i32),
            Signal::SIGINT,
        );
        let _ = capture.wait();
        lab.captured(&file).unwrap()
    };
    let frames = adverts_from("a", 2);
    assert!(frames.len() >= 5, "{frames:?}");
    assert!(
        frames
            .iter()
            .all(|f| f.contains("00:00:5e:00:01:33 > 01:00:5e:00:00:12") && f.contains("VRRPv3")),
        "{}",
        frames.join("\n")
    );
    // The backup takes them: it stays backup, and sends none.
    assert!(!has(&lab, "b", VIP));
    assert!(adverts_from("b", 1).is_empty());
    // The master resigns (its priority-0 advert from the virtual MAC too); b's adverts are
    // then from the virtual MAC.
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || has(&lab, "b", VIP)),
        "{}",
        b.log()
    );
    let frames = adverts_from("b", 2);
    assert!(
        !frames.is_empty()
            && frames
                .iter()
                .all(|f| f.contains("00:00:5e:00:01:33 > 01:00:5e:00:00:12")),
        "{}\n{}",
        frames.join("\n"),
        b.log()
    );
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// Replaces the map `file` that `host`'s daemon pinned with a new one made by `bpftool map
/// create` with `spec` (type, sizes, flags), as a daemon of another version would have left it.
fn pin_another_map(lab: &Lab, host: &str, file: &str, spec: &[&str]) -> std::path::PathBuf {
    let pinned = Path::new(PIN_ROOT).join(&lab.host(host).iface).join(file);
    std::fs::remove_file(&pinned).unwrap();
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&pinned)
        .args(spec)
        .status()
        .unwrap();
    assert!(made.success(), "bpftool map create {spec:?}");
    pinned
}

/// The value size of the map pinned at `path`.
fn value_size(path: &Path) -> u64 {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["bytes_value"].as_u64().expect("bytes_value")
}

/// Starts host a's daemon over the maps another version pinned: it must say it does not resume
/// and `why`, adopt nothing, and answer for the VIP afresh.
fn start_afresh(lab: &Lab, why: &str) -> Proc {
    let a = lab
        .start_xvrrp("a", &lab.vrrp_config("a", 200, ""))
        .unwrap();
    let log = a.log();
    assert!(
        log.contains("not resuming after a hitless restart: the pinned maps are another version's")
            && log.contains(why),
        "{log}"
    );
    assert!(!attached_line(&a).contains("adopted"), "{log}");
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    a
}

#[test]
fn maps_of_another_layout_or_mapping_beside_a_fresh_marker_are_not_resumed() {
    if !privileged("maps_of_another_layout_or_mapping_beside_a_fresh_marker_are_not_resumed") {
        return;
    }
    // An upgrade whose map layout changed must not adopt the old maps (the program would read
    // counters and states at the wrong offsets): it starts afresh, within the marker's age.
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a, mut b) = pair(&lab);
    a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    let spec = [
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "4",
        "name",
        "xv_old",
    ];
    let pinned = pin_another_map(&lab, "a", "vrid_stats", &spec);
    let mut a = start_afresh(&lab, "vrid_stats: key 4 / value 8 bytes, 4 entries");
    // With maps of this version pinned in place of the old one.
    assert_eq!(
        per_cpu_counter(&pinned, 51, "adverts_drop_peer").unwrap(),
        0,
        "the pinned map is not this version's"
    );
    // The same sizes, but a heartbeat the daemon cannot map into its memory (a version that
    // wrote it with bpf() calls): not adopted either.
    a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    let heartbeat = Path::new(PIN_ROOT)
        .join(&lab.host("a").iface)
        .join("heartbeat");
    let size = value_size(&heartbeat).to_string();
    let spec = [
        "type", "array", "key", "4", "value", &size, "entries", "1", "name", "xv_old",
    ];
    pin_another_map(&lab, "a", "heartbeat", &spec);
    let mut a = start_afresh(
        &lab,
        "heartbeat: not mappable, where this version's is mappable",
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_master_stuck_writing_its_log_goes_silent_and_the_backup_takes_over() {
    if !privileged("a_master_stuck_writing_its_log_goes_silent_and_the_backup_takes_over") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a, log) = lab
        .start_xvrrp_piped("a", &lab.vrrp_config("a", 200, ""))
        .unwrap();
    let _b = lab
        .start_xvrrp("b", &lab.vrrp_config("b", 100, ""))
        .unwrap();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(8));
    // Its log's reader stops (a stalled journald); each reload logs a few lines, so the
    // event loop's next write to the full pipe blocks. The pacer would send the master's
    // adverts on meanwhile: it must notice that the loop is stuck and stop.
    log.stop();
    let pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    let wchan = format!("/proc/{}/wchan", a.pid());
    let blocked = wait_for(Duration::from_secs(10), || {
        let _ = nix::sys::signal::kill(pid, Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(50));
        std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("pipe"))
    });
    assert!(blocked, "the daemon's thread never blocked writing its log");
    let stuck_at = Instant::now();
    let took = lab.wait_answered_by("client", "b", VIP, 2, Duration::from_secs(10));
    eprintln!("the backup answers {took:?} after the master's loop blocked");
    assert!(a.running(), "the stuck master should still be running");
    assert!(
        stuck_at.elapsed() >= Duration::from_secs(2),
        "the backup took over before the pacer's 3 s: {:?}",
        stuck_at.elapsed()
    );
    // Read again: the master thaws, and takes its VIP back (higher priority, preempt).
    log.resume();
    lab.wait_answered_by("client", "a", VIP, 2, Duration::from_secs(10));
    assert!(log.text().contains("pacer stops sending"), "{}", log.text());
}

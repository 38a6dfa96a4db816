//! Elections under faults made in the lab's bridge: a cut link, a partition that heals, and
//! random loss.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, Proc, privileged, wait_for};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;

fn start(lab: &Lab, host: &str, priority: u8) -> Proc {
    lab.start_xvrrp(host, &lab.vrrp_config(host, priority, ""))
        .expect("start xvrrp")
}

fn answered_only_by(lab: &Lab, host: &str, within: Duration) {
    lab.wait_answered_by("client", host, VIP, 2, within);
}

/// How many times the log says this instance became master.
fn promotions(p: &Proc) -> usize {
    p.log().matches("new=master").count()
}

#[test]
fn a_tracked_interface_with_a_weight_moves_the_priority_and_one_without_puts_in_fault() {
    if !privileged(
        "a_tracked_interface_with_a_weight_moves_the_priority_and_one_without_puts_in_fault",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let ip = |args: &[&str]| {
        let out = lab.run("a", "ip", args, Duration::from_secs(5)).unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    // Two veth pairs in a's namespace stand for an uplink and a storage link (this kernel has
    // no dummy interfaces); an end has carrier while both are up.
    for name in ["trk0", "trk1"] {
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "up"]);
        ip(&["link", "set", name, "up"]);
    }
    let mut a = lab
        .start_xvrrp(
            "a",
            &lab.vrrp_config(
                "a",
                200,
                "track_interfaces = [\"trk0\", { name = \"trk1\", weight = -150 }]\n",
            ),
        )
        .expect("start xvrrp");
    let mut b = start(&lab, "b", 100);
    answered_only_by(&lab, "a", Duration::from_secs(5));
    // trk1 down: 200 - 150 = 50 < 100, b takes over; a is a backup, not in Fault.
    ip(&["link", "set", "trk1", "down"]);
    answered_only_by(&lab, "b", Duration::from_secs(3));
    assert!(!a.log().contains("new=fault"), "{}", a.log());
    assert_eq!(
        lab.status("a").unwrap()["instances"][0]["effective_priority"],
        50
    );
    ip(&["link", "set", "trk1", "up"]);
    answered_only_by(&lab, "a", Duration::from_secs(5));
    // trk0 down: Fault.
    ip(&["link", "set", "trk0", "down"]);
    answered_only_by(&lab, "b", Duration::from_secs(3));
    assert!(
        wait_for(Duration::from_secs(3), || a.log().contains("new=fault")),
        "{}",
        a.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_cut_link_fails_over_and_the_master_returns_when_it_heals() {
    if !privileged("a_cut_link_fails_over_and_the_master_returns_when_it_heals") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut procs = vec![start(&lab, "a", 200), start(&lab, "b", 100)];
    answered_only_by(&lab, "a", Duration::from_secs(5));
    lab.set_link("a", false).unwrap();
    answered_only_by(&lab, "b", Duration::from_secs(3));
    // a saw its carrier go (netlink link event): Fault, not a master on a dead link.
    let a_iface = lab.host("a").iface.clone();
    assert!(
        wait_for(Duration::from_secs(3), || procs[0]
            .log()
            .contains("new=fault")),
        "a did not go to Fault:\n{}",
        procs[0].log()
    );
    assert!(
        procs[0]
            .log()
            .contains(&format!("tracked link:{a_iface} failed")),
        "{}",
        procs[0].log()
    );
    lab.set_link("a", true).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(5));
    for p in &mut procs {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn after_a_partition_heals_one_master_remains() {
    if !privileged("after_a_partition_heals_one_master_remains") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut procs = vec![start(&lab, "a", 200), start(&lab, "b", 100)];
    answered_only_by(&lab, "a", Duration::from_secs(5));
    // a alone on one side; b and the client on the other: b takes over there.
    lab.set_faults(&[&["a"], &["b", "client"]], 0).unwrap();
    answered_only_by(&lab, "b", Duration::from_secs(3));
    assert!(wait_for(Duration::from_secs(3), || procs[1]
        .log()
        .contains("new=master")));
    let healed = Instant::now();
    lab.set_faults(&[], 0).unwrap();
    answered_only_by(&lab, "a", Duration::from_secs(3));
    assert!(
        wait_for(Duration::from_secs(3), || procs[1]
            .log()
            .contains("new=backup")),
        "b never stepped down:\n{}",
        procs[1].log()
    );
    assert!(healed.elapsed() < Duration::from_secs(3));
    for p in &mut procs {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn two_percent_loss_at_100ms_adverts_causes_no_flap_in_60_seconds() {
    if !privileged("two_percent_loss_at_100ms_adverts_causes_no_flap_in_60_seconds") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut procs = vec![start(&lab, "a", 200), start(&lab, "b", 100)];
    answered_only_by(&lab, "a", Duration::from_secs(5));
    let before = (promotions(&procs[0]), promotions(&procs[1]));
    let stats = std::path::Path::new(xvrrp_lab::PIN_ROOT)
        .join(&lab.host("b").iface)
        .join("vrid_stats");
    let valid = || xvrrp_lab::per_cpu_counter(&stats, 51, "adverts_valid").unwrap();
    let heard_before = valid();
    lab.set_faults(&[], 2).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    lab.set_faults(&[], 0).unwrap();
    // About 600 adverts were sent; the loss really applied: some, not many, were lost.
    let heard = valid() - heard_before;
    assert!(
        (540..600).contains(&heard),
        "b heard {heard} adverts in 60 s"
    );
    assert_eq!(
        (promotions(&procs[0]), promotions(&procs[1])),
        before,
        "a master change under 2% loss; b:\n{}",
        procs[1].log()
    );
    for p in &mut procs {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

/// Sends `n` adverts of each bad kind from the client, all claiming priority 254 for VRID 51
/// (which would win the election if taken), plus some for a VRID not configured here (passed
/// on to the kernel, counted).
const FLOOD: &str = r#"
import socket, struct, sys
n = int(sys.argv[1]); src = sys.argv[2]
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def advert(vrid=51, prio=254, version=3, count=1, bad=False):
    body = bytearray(struct.pack('!BBBBH', (version << 4) | 1, vrid, prio, count, 10) + b'\0\0' + socket.inet_aton('192.0.2.100'))
    pseudo = socket.inet_aton(src) + socket.inet_aton('224.0.0.18') + struct.pack('!BBH', 0, 112, len(body))
    c = csum(pseudo + bytes(body))
    if bad: c ^= 0x5555
    body[6:8] = struct.pack('!H', c)
    return bytes(body)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
def send(payload, ttl=255):
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.sendto(payload, ('224.0.0.18', 0))
for _ in range(n):
    send(advert(), ttl=64)          # through a router: TTL
    send(advert(bad=True))          # checksum
    send(advert(version=2))         # another version
    send(advert(count=3))           # count against length
    send(advert(vrid=99))           # unknown VRID
    send(b'\x31\x33')               # truncated
"#;

#[test]
fn a_flood_of_bad_adverts_changes_nothing_and_is_counted() {
    if !privileged("a_flood_of_bad_adverts_changes_nothing_and_is_counted") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut procs = vec![start(&lab, "a", 200), start(&lab, "b", 100)];
    answered_only_by(&lab, "a", Duration::from_secs(5));
    let before = (promotions(&procs[0]), promotions(&procs[1]));
    let client_ip = lab.host("client").ip.to_string();
    let out = lab
        .run(
            "client",
            "python3",
            &["-c", FLOOD, "300", &client_ip],
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    answered_only_by(&lab, "a", Duration::from_secs(2));
    assert_eq!(
        (promotions(&procs[0]), promotions(&procs[1])),
        before,
        "the flood changed the election"
    );
    for host in ["a", "b"] {
        let stats = std::path::Path::new(xvrrp_lab::PIN_ROOT)
            .join(&lab.host(host).iface)
            .join("vrid_stats");
        let count = |slot, field| xvrrp_lab::per_cpu_counter(&stats, slot, field).unwrap();
        for field in [
            "adverts_drop_ttl",
            "adverts_drop_checksum",
            "adverts_drop_version",
            "adverts_drop_length",
        ] {
            assert_eq!(count(51, field), 300, "{host}: {field}");
        }
        // Another VRID's adverts are passed on (another daemon may run it), and counted.
        assert_eq!(count(99, "adverts_other_vrid"), 300, "{host}");
    }
    for p in &mut procs {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn a_split_brain_seen_on_the_wire_steps_the_lower_priority_down_and_the_winner_announces() {
    if !privileged(
        "a_split_brain_seen_on_the_wire_steps_the_lower_priority_down_and_the_winner_announces",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let a = start(&lab, "a", 200);
    let b = start(&lab, "b", 100);
    answered_only_by(&lab, "a", Duration::from_secs(10));
    // VRRP dropped between the two (a firewall on protocol 112): b hears no adverts and takes
    // over; its gratuitous ARP reaches a, which has never heard b's adverts and announces
    // again; that reaches b, which heard a's adverts (priority 200 over its 100) and steps
    // down for the hold-down. The client is left with a.
    lab.drop_vrrp_between(Some(("a", "b"))).expect("drop VRRP");
    assert!(
        wait_for(Duration::from_secs(5), || b
            .log()
            .contains("this node loses")),
        "b steps down: {}",
        b.log()
    );
    assert!(
        a.log().contains("announcing ours again"),
        "a announced again: {}",
        a.log()
    );
    assert_eq!(
        lab.status("b").expect("status")["instances"][0]["state"],
        "fault"
    );
    answered_only_by(&lab, "a", Duration::from_secs(3));
    // Healed: after its hold-down b hears a's adverts and stays backup.
    lab.drop_vrrp_between(None).expect("heal");
    assert!(
        wait_for(Duration::from_secs(10), || lab
            .status("b")
            .is_ok_and(|s| s["instances"][0]["state"] == "backup")),
        "{}",
        b.log()
    );
    answered_only_by(&lab, "a", Duration::from_secs(3));
    assert!(!a.log().contains("this node loses"), "{}", a.log());
    // A legitimate preemption is not a split brain: b, restarted at a higher priority, takes
    // over; its first gratuitous ARP comes with its first advert, and a says nothing of it.
    let before = a.log().matches("split brain seen on the wire").count();
    drop(b);
    let _b = start(&lab, "b", 250);
    answered_only_by(&lab, "b", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.log().matches("split brain seen on the wire").count(),
        before,
        "{}",
        a.log()
    );
}

#[test]
fn dont_track_primary_keeps_a_master_out_of_fault_when_its_link_goes() {
    if !privileged("dont_track_primary_keeps_a_master_out_of_fault_when_its_link_goes") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut a = lab
        .start_xvrrp(
            "a",
            &lab.vrrp_config("a", 200, "dont_track_primary = true\n"),
        )
        .expect("start xvrrp");
    let mut b = start(&lab, "b", 100);
    answered_only_by(&lab, "a", Duration::from_secs(5));
    lab.set_link("a", false).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // keepalived's dont_track_primary: no Fault for the instance's own link (b, hearing
    // nothing, takes over as it would from any silent master).
    assert!(!a.log().contains("new=fault"), "{}", a.log());
    assert_eq!(lab.status("a").unwrap()["instances"][0]["state"], "master");
    lab.set_link("a", true).unwrap();
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

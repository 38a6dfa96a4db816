//! VIPs on another interface than the adverts' (`dev`) and an instance's routes (keepalived's
//! `virtual_routes`), in a router-style lab: an outside network where the adverts go, and an
//! inside network where a second VIP lives and the routes point.

use std::{net::Ipv4Addr, time::Duration};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, mac_text, privileged, wait_for};

const INSIDE_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);

/// The config of `host`: the lab's VIP outside, one on the inside interface, a route through
/// an inside gateway and a blackhole route.
fn config(lab: &Lab, host: &str, priority: u8) -> String {
    let inside = lab.inside_iface(host);
    lab.vrrp_config(
        host,
        priority,
        &format!(
            "vips = [\"{}/24\", \"{INSIDE_VIP}/24 dev {inside}\"]\n\
             routes = [\"10.50.0.0/16 via 198.51.100.254 dev {inside}\", \"blackhole 10.60.0.0/16\"]\n",
            xvrrp_lab::LAB_VIP
        ),
    )
    .replace(&format!("vips = [\"{}/24\"]\n", xvrrp_lab::LAB_VIP), "")
}

/// Whether `host` has the inside VIP on its inside interface.
fn has_inside_vip(lab: &Lab, host: &str) -> bool {
    let out = lab
        .run(
            host,
            "ip",
            &["-br", "addr", "show", "dev", &lab.inside_iface(host)],
            Duration::from_secs(5),
        )
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!("{INSIDE_VIP}/24"))
}

/// `host`'s routes to 10.50.0.0/16 and 10.60.0.0/16, as `ip route` prints them.
fn routes(lab: &Lab, host: &str) -> Vec<String> {
    let mut found = Vec::new();
    for args in [
        &["route", "show", "10.50.0.0/16"][..],
        &["route", "show", "type", "blackhole"][..],
    ] {
        let out = lab
            .run(host, "ip", args, Duration::from_secs(5))
            .expect("ip route");
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_owned()),
        );
    }
    found
}

/// Whether `host` has both routes, and only then the other host has neither.
fn routed_by(lab: &Lab, host: &str, other: &str) -> bool {
    let mine = routes(lab, host);
    mine.iter()
        .any(|r| r.starts_with("10.50.0.0/16 via 198.51.100.254 dev"))
        && mine.iter().any(|r| r.starts_with("blackhole 10.60.0.0/16"))
        && routes(lab, other).is_empty()
        && has_inside_vip(lab, host)
        && !has_inside_vip(lab, other)
}

/// The MACs that answer the inside client's ARP request for the inside VIP.
fn inside_answer(lab: &Lab) -> Vec<String> {
    lab.arping_on("client", &lab.inside_iface("client"), INSIDE_VIP, 1)
        .expect("arping")
}

fn inside_mac(lab: &Lab, host: &str) -> String {
    let n = lab.host(host).mac[5];
    mac_text(&[0x02, 0, 0, 0, 0x01, n])
}

#[test]
fn a_vip_on_the_inside_and_the_routes_follow_the_master_across_faults() {
    if !privileged("a_vip_on_the_inside_and_the_routes_follow_the_master_across_faults") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    lab.add_inside().expect("inside network");
    let mut a = lab
        .start_xvrrp("a", &config(&lab, "a", 150))
        .expect("start a");
    let mut b = lab
        .start_xvrrp("b", &config(&lab, "b", 100))
        .expect("start b");
    assert!(
        wait_for(Duration::from_secs(5), || routed_by(&lab, "a", "b")),
        "a master with its inside VIP and routes: a {:?} b {:?}\n{}",
        routes(&lab, "a"),
        routes(&lab, "b"),
        a.log()
    );
    // The kernel answers for the inside VIP there (no XDP on the inside): a's inside MAC.
    assert_eq!(inside_answer(&lab), [inside_mac(&lab, "a")]);
    // The outside VIP is still answered by the data plane.
    lab.wait_answered_by("client", "a", xvrrp_lab::LAB_VIP, 2, Duration::from_secs(3));

    // A route deleted by an operator comes back, and the instance stays master.
    let out = lab
        .run(
            "a",
            "ip",
            &["route", "del", "10.50.0.0/16"],
            Duration::from_secs(5),
        )
        .expect("ip route del");
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_for(Duration::from_secs(3), || routed_by(&lab, "a", "b")),
        "the deleted route is back: {:?}\n{}",
        routes(&lab, "a"),
        a.log()
    );
    assert!(
        a.log().contains("route deleted by someone else"),
        "{}",
        a.log()
    );
    assert_eq!(a.log().matches("new=master").count(), 1, "{}", a.log());

    // The inside link of the master is cut: its instance goes to Fault (the VIP's interface
    // is tracked, as in keepalived), and b takes the inside VIP and the routes.
    lab.set_inside_link("a", false).expect("cut");
    assert!(
        wait_for(Duration::from_secs(5), || routed_by(&lab, "b", "a")),
        "b took over: a {:?} b {:?}\n{}\n{}",
        routes(&lab, "a"),
        routes(&lab, "b"),
        a.log(),
        b.log()
    );
    assert!(a.log().contains("new=fault"), "{}", a.log());
    assert!(
        wait_for(Duration::from_secs(3), || inside_answer(&lab)
            == [inside_mac(&lab, "b")]),
        "the inside client reaches b"
    );
    lab.wait_answered_by("client", "b", xvrrp_lab::LAB_VIP, 2, Duration::from_secs(3));

    // Back: a preempts, and everything moves back.
    lab.set_inside_link("a", true).expect("restore");
    assert!(
        wait_for(Duration::from_secs(8), || routed_by(&lab, "a", "b")),
        "back on a: a {:?} b {:?}\n{}",
        routes(&lab, "a"),
        routes(&lab, "b"),
        a.log()
    );

    // A stop takes the routes and the inside VIP away with it.
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || routed_by(&lab, "b", "a")),
        "b after a stopped: a {:?} b {:?}\n{}",
        routes(&lab, "a"),
        routes(&lab, "b"),
        b.log()
    );
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(routes(&lab, "b").is_empty(), "{:?}", routes(&lab, "b"));
    assert!(!has_inside_vip(&lab, "b"));
}

/// One daemon for two interfaces: the outside instance on the lab's interface, the inside one
/// (the same VRID: VRIDs are per interface) on the inside interface, in one sync group; the
/// inside one carries a route. The group's own notify scripts write to `<host>-group.log`.
fn router_config(lab: &Lab, host: &str, priority: u8) -> String {
    let log = group_log(lab, host);
    format!(
        "interface = \"{outside}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n\
         [[sync_group]]\nname = \"edge\"\ninstances = [\"out\", \"in\"]\n\
         notify_master = \"echo group-master >> {log}\"\nnotify = \"echo >> {log}\"\n\n\
         [[instance]]\nname = \"out\"\nvrid = 10\npriority = {priority}\nadvert_interval_ms = 100\n\
         vips = [\"{vip}/24\"]\n\n\
         [[instance]]\nname = \"in\"\ninterface = \"{inside}\"\nvrid = 10\npriority = {priority}\n\
         advert_interval_ms = 100\nvips = [\"{INSIDE_VIP}/24\"]\n\
         routes = [\"10.50.0.0/16 via 198.51.100.254\"]\n",
        outside = lab.host(host).iface,
        inside = lab.inside_iface(host),
        vip = xvrrp_lab::LAB_VIP,
        log = log.display(),
    )
}

fn group_log(lab: &Lab, host: &str) -> std::path::PathBuf {
    lab.workdir().join(format!("{host}-group.log"))
}

/// The lines of `host`'s group notify log.
fn group_lines(lab: &Lab, host: &str) -> Vec<String> {
    std::fs::read_to_string(group_log(lab, host))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `xvrrp status --json -i IFACE`.
fn status_by(iface: &str) -> serde_json::Value {
    let out = xvrrp_lab::run_with_timeout(
        std::process::Command::new(xvrrp_lab::xvrrp_bin()).args([
            "status",
            "--json",
            "--interface",
            iface,
        ]),
        Duration::from_secs(10),
    )
    .expect("xvrrp status");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status json")
}

/// Both VIPs answered by `host` (the outside one from the lab's client, the inside one on the
/// inside network), and the route there and not on `other`.
fn both_on(lab: &Lab, host: &str, other: &str, within: Duration) {
    lab.wait_answered_by("client", host, xvrrp_lab::LAB_VIP, 2, within);
    assert!(
        wait_for(within, || inside_answer(lab) == [inside_mac(lab, host)]),
        "the inside VIP answered by {host}"
    );
    assert!(
        wait_for(within, || {
            routes(lab, host)
                .iter()
                .any(|r| r.starts_with("10.50.0.0/16"))
                && routes(lab, other).is_empty()
        }),
        "the route on {host}: {:?}, {other}: {:?}",
        routes(lab, host),
        routes(lab, other)
    );
}

#[test]
fn one_daemon_serves_two_interfaces_and_a_sync_group_across_them_moves_together() {
    if !privileged("one_daemon_serves_two_interfaces_and_a_sync_group_across_them_moves_together") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    lab.add_inside().expect("inside network");
    let mut a = lab
        .start_xvrrp("a", &router_config(&lab, "a", 150))
        .expect("start a");
    let mut b = lab
        .start_xvrrp("b", &router_config(&lab, "b", 100))
        .expect("start b");
    let within = Duration::from_secs(5);
    both_on(&lab, "a", "b", within);
    // The group's own scripts ran, as keepalived runs them: the specific one, then the generic
    // one with GROUP, the name, the state and 0 appended.
    assert!(
        wait_for(within, || group_lines(&lab, "a")
            == ["GROUP edge BACKUP 0", "group-master", "GROUP edge MASTER 0"]),
        "{:?}",
        group_lines(&lab, "a")
    );
    // One status for both interfaces; both data planes pinned.
    let st = lab.status("a").unwrap();
    let on: Vec<(String, String)> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["interface"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        on,
        [
            (lab.host("a").iface.clone(), "master".to_owned()),
            (lab.inside_iface("a"), "master".to_owned())
        ],
        "{st}"
    );
    for iface in [lab.host("a").iface.clone(), lab.inside_iface("a")] {
        let pins = std::path::Path::new(xvrrp_lab::PIN_ROOT).join(&iface);
        assert!(pins.join("vrid_stats").exists(), "{}", pins.display());
    }
    // `xvrrp status -i` finds the daemon by either interface.
    let by_inside = status_by(&lab.inside_iface("a"));
    let names = |st: &serde_json::Value| -> Vec<String> {
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{} {}", i["name"], i["interface"]))
            .collect()
    };
    assert_eq!(names(&by_inside), names(&st), "{by_inside}");

    // Cutting either link moves both VIPs (and the route).
    lab.set_inside_link("a", false).expect("cut inside");
    both_on(&lab, "b", "a", within);
    assert!(
        wait_for(within, || group_lines(&lab, "a")
            .ends_with(&["GROUP edge FAULT 0".to_owned()])
            && group_lines(&lab, "b")
                .ends_with(&["GROUP edge MASTER 0".to_owned()])),
        "a {:?} b {:?}",
        group_lines(&lab, "a"),
        group_lines(&lab, "b")
    );
    lab.set_inside_link("a", true).expect("restore inside");
    both_on(&lab, "a", "b", Duration::from_secs(8));
    lab.set_link("a", false).expect("cut outside");
    both_on(&lab, "b", "a", within);
    lab.set_link("a", true).expect("restore outside");
    both_on(&lab, "a", "b", Duration::from_secs(8));

    // A hitless restart across both interfaces: b never becomes master meanwhile.
    let b_promoted = b.log().matches("new=master").count();
    a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    let mut a = lab
        .start_xvrrp("a", &router_config(&lab, "a", 150))
        .expect("restart a");
    both_on(&lab, "a", "b", within);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        b.log().matches("new=master").count(),
        b_promoted,
        "{}",
        b.log()
    );
    assert!(
        a.log().contains("resuming after a hitless restart"),
        "{}",
        a.log()
    );

    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    let alias = xvrrp_lab::control_socket(&lab.inside_iface("a"));
    assert!(
        std::fs::symlink_metadata(&alias).is_err(),
        "{} left",
        alias.display()
    );
    both_on(&lab, "b", "a", within);
    assert_eq!(
        group_lines(&lab, "a").last().map(String::as_str),
        Some("GROUP edge STOP 0"),
        "{:?}",
        group_lines(&lab, "a")
    );
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// The outside instance, and with `inside` the inside one too (no sync group).
fn outside_and_maybe_inside(lab: &Lab, host: &str, priority: u8, inside: bool) -> String {
    let mut config = format!(
        "interface = \"{}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n\
         [[instance]]\nname = \"out\"\nvrid = 10\npriority = {priority}\nadvert_interval_ms = 100\n\
         vips = [\"{}/24\"]\n",
        lab.host(host).iface,
        xvrrp_lab::LAB_VIP
    );
    if inside {
        config.push_str(&format!(
            "\n[[instance]]\nname = \"in\"\ninterface = \"{}\"\nvrid = 10\npriority = {priority}\n\
             advert_interval_ms = 100\nvips = [\"{INSIDE_VIP}/24\"]\n",
            lab.inside_iface(host)
        ));
    }
    config
}

/// Rewrites the config of `host`'s daemon `p` and sends it SIGHUP.
fn send_config(lab: &Lab, host: &str, p: &xvrrp_lab::Proc, config: &str) {
    std::fs::write(lab.workdir().join(format!("{host}.toml")), config).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), Signal::SIGHUP).unwrap();
}

/// [`send_config`], then waits for the reload's `n`th log line.
fn reload(lab: &Lab, host: &str, p: &xvrrp_lab::Proc, config: &str, n: usize) {
    send_config(lab, host, p, config);
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .matches("configuration reloaded")
            .count()
            >= n),
        "{}",
        p.log()
    );
}

#[test]
fn a_sighup_that_adds_an_interface_attaches_it_without_touching_the_others() {
    if !privileged("a_sighup_that_adds_an_interface_attaches_it_without_touching_the_others") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    lab.add_inside().expect("inside network");
    let mut a = lab
        .start_xvrrp("a", &outside_and_maybe_inside(&lab, "a", 150, false))
        .expect("start a");
    let mut b = lab
        .start_xvrrp("b", &outside_and_maybe_inside(&lab, "b", 100, true))
        .expect("start b");
    let within = Duration::from_secs(5);
    lab.wait_answered_by("client", "a", xvrrp_lab::LAB_VIP, 2, within);
    assert!(
        wait_for(within, || inside_answer(&lab) == [inside_mac(&lab, "b")]),
        "b serves the inside"
    );
    let inside_pins = std::path::Path::new(xvrrp_lab::PIN_ROOT).join(lab.inside_iface("a"));
    assert!(!inside_pins.exists());

    // a's file now names the inside interface too: SIGHUP attaches it and a takes the inside
    // VIP (a higher priority); the outside instance is not touched.
    reload(
        &lab,
        "a",
        &a,
        &outside_and_maybe_inside(&lab, "a", 150, true),
        1,
    );
    assert!(
        wait_for(within, || inside_answer(&lab) == [inside_mac(&lab, "a")]),
        "a serves the inside after the reload\n{}",
        a.log()
    );
    assert!(inside_pins.join("vrid_stats").exists());
    assert!(a.log().contains("a new interface is served"), "{}", a.log());
    assert!(a.log().contains("kept=[\"out\"]"), "{}", a.log());
    let out_on = |p: &xvrrp_lab::Proc| {
        p.log()
            .lines()
            .filter(|l| l.contains("instance=out") && l.contains("new=master"))
            .count()
    };
    assert_eq!(out_on(&a), 1, "{}", a.log());
    assert_eq!(out_on(&b), 0, "{}", b.log());
    lab.wait_answered_by("client", "a", xvrrp_lab::LAB_VIP, 2, within);

    // And back: the inside goes (its data plane detached and unpinned), b takes it.
    reload(
        &lab,
        "a",
        &a,
        &outside_and_maybe_inside(&lab, "a", 150, false),
        2,
    );
    assert!(
        wait_for(within, || inside_answer(&lab) == [inside_mac(&lab, "b")]),
        "b serves the inside again\n{}",
        a.log()
    );
    assert!(
        wait_for(within, || !inside_pins.exists()),
        "{}",
        inside_pins.display()
    );
    assert_eq!(out_on(&a), 1, "{}", a.log());
    assert_eq!(out_on(&b), 0, "{}", b.log());

    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// `host`'s routes in the main table, as `ip route` prints them.
fn main_routes(lab: &Lab, host: &str) -> String {
    let out = lab
        .run(host, "ip", &["route", "show"], Duration::from_secs(5))
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_route_is_retried_until_it_can_be_added_follows_a_reload_and_a_recreated_interface() {
    if !privileged(
        "a_route_is_retried_until_it_can_be_added_follows_a_reload_and_a_recreated_interface",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    lab.add_inside().expect("inside network");
    let inside = lab.inside_iface("a");
    let config = |routes: &str| {
        lab.vrrp_config(
            "a",
            150,
            &format!(
                "vips = [\"{}/24\", \"{INSIDE_VIP}/24 dev {inside}\"]\nroutes = [{routes}]\n",
                xvrrp_lab::LAB_VIP
            ),
        )
        .replace(&format!("vips = [\"{}/24\"]\n", xvrrp_lab::LAB_VIP), "")
    };
    // The gateway is on no connected network yet: the route cannot be added.
    let mut a = lab
        .start_xvrrp("a", &config("\"10.50.0.0/16 via 203.0.113.254\""))
        .expect("start a");
    let within = Duration::from_secs(5);
    assert!(
        wait_for(within, || a.log().contains("cannot add route")),
        "{}",
        a.log()
    );
    assert!(!main_routes(&lab, "a").contains("10.50.0.0/16"));
    // Once it is reachable, the retry adds it.
    let out = lab
        .run(
            "a",
            "ip",
            &["addr", "add", "203.0.113.1/24", "dev", &inside],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_for(within, || main_routes(&lab, "a")
            .contains("10.50.0.0/16 via 203.0.113.254")),
        "{}\n{}",
        main_routes(&lab, "a"),
        a.log()
    );
    assert!(
        a.log().contains("routes added after a failure"),
        "{}",
        a.log()
    );
    assert_eq!(
        a.log().matches("cannot add route").count(),
        1,
        "logged once"
    );

    // A reload that changes the routes of the master: the old one goes, the new one comes,
    // and the instance does not change state.
    send_config(
        &lab,
        "a",
        &a,
        &config("\"10.70.0.0/16 via 198.51.100.254\""),
    );
    assert!(
        wait_for(within, || {
            let r = main_routes(&lab, "a");
            r.contains("10.70.0.0/16 via 198.51.100.254") && !r.contains("10.50.0.0/16")
        }),
        "{}\n{}",
        main_routes(&lab, "a"),
        a.log()
    );
    assert_eq!(a.log().matches("new=master").count(), 1, "{}", a.log());

    // The interface the inside VIP and the route go on is deleted (the instance goes to
    // Fault) and created again under a new index: the VIP and the route are found there again.
    lab.recreate_inside("a", Duration::from_millis(500))
        .expect("recreate");
    assert!(a.log().contains("new=fault"), "{}", a.log());
    assert!(
        wait_for(Duration::from_secs(8), || has_inside_vip(&lab, "a")
            && main_routes(&lab, "a")
                .contains("10.70.0.0/16 via 198.51.100.254")),
        "{}\n{}",
        main_routes(&lab, "a"),
        a.log()
    );
    assert_eq!(a.log().matches("new=master").count(), 2, "{}", a.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(!main_routes(&lab, "a").contains("10.70.0.0/16"));
    assert!(!has_inside_vip(&lab, "a"));
}

#[test]
fn a_sighup_that_would_add_an_interface_another_daemon_serves_is_refused() {
    if !privileged("a_sighup_that_would_add_an_interface_another_daemon_serves_is_refused") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    lab.add_inside().expect("inside network");
    let inside = lab.inside_iface("a");
    // A second daemon on the same host serves the inside interface.
    let other = format!(
        "interface = \"{inside}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n\
         [[instance]]\nname = \"in\"\nvrid = 10\npriority = 150\nadvert_interval_ms = 100\n\
         vips = [\"{INSIDE_VIP}/24\"]\n"
    );
    let path = lab.workdir().join("other.toml");
    std::fs::write(&path, &other).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut b = lab
        .spawn(
            "a",
            &xvrrp_lab::xvrrp_bin(),
            &["run", "--config", path.to_str().unwrap()],
            "xvrrp-other",
        )
        .expect("second daemon");
    assert!(
        wait_for(Duration::from_secs(20), || b
            .log()
            .contains("xvrrp running")),
        "{}",
        b.log()
    );
    let mut a = lab
        .start_xvrrp("a", &outside_and_maybe_inside(&lab, "a", 150, false))
        .expect("start a");
    lab.wait_answered_by("client", "a", xvrrp_lab::LAB_VIP, 2, Duration::from_secs(5));
    // a's file now names the inside interface too: refused, nothing of it applied.
    send_config(
        &lab,
        "a",
        &a,
        &outside_and_maybe_inside(&lab, "a", 150, true),
    );
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("reload refused")),
        "{}",
        a.log()
    );
    assert!(
        a.log().contains(&format!("another xvrrp serves {inside}")),
        "{}",
        a.log()
    );
    assert!(
        !a.log().contains("a new interface is served"),
        "{}",
        a.log()
    );
    // The other daemon keeps its interface and answers there.
    assert!(b.running());
    assert!(
        wait_for(Duration::from_secs(3), || inside_answer(&lab)
            == [inside_mac(&lab, "a")]),
        "the other daemon still answers on the inside"
    );
    assert_eq!(status_by(&inside)["instances"][0]["name"], "in");
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

//! Elections on the wire: xvrrp daemons on three hosts elect the highest priority, and fail over
//! when the master is killed, frozen, or stopped; the client sees one MAC for the VIP.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, Proc, mac_text, privileged, wait_for};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;

/// xvrrp on `host` with `priority`, 100 ms adverts, starting as backup (RFC 5798 startup).
fn start(lab: &Lab, host: &str, priority: u8) -> Proc {
    lab.start_xvrrp(host, &lab.vrrp_config(host, priority, ""))
        .expect("start xvrrp")
}

/// Waits until the client sees exactly `host` answer for the VIP; returns how long it took.
fn until_answered_by(lab: &Lab, host: &str, within: Duration) -> Duration {
    lab.wait_answered_by("client", host, VIP, 1, within)
}

fn three_hosts() -> (Lab, Vec<Proc>) {
    let lab = Lab::new(&["a", "b", "c", "client"]).expect("lab");
    let procs = vec![
        start(&lab, "a", 100),
        start(&lab, "b", 200),
        start(&lab, "c", 150),
    ];
    (lab, procs)
}

#[test]
fn the_highest_priority_wins_and_only_it_answers() {
    if !privileged("the_highest_priority_wins_and_only_it_answers") {
        return;
    }
    let (lab, mut procs) = three_hosts();
    until_answered_by(&lab, "b", Duration::from_secs(5));
    // Several requests: every answer from b, never two MACs.
    let b = mac_text(&lab.host("b").mac);
    assert_eq!(
        lab.arping("client", VIP, 5).unwrap(),
        vec![b; 5],
        "b:\n{}",
        procs[1].log()
    );
    for p in &mut procs {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn a_killed_master_is_replaced_by_the_next_priority() {
    if !privileged("a_killed_master_is_replaced_by_the_next_priority") {
        return;
    }
    let (lab, mut procs) = three_hosts();
    until_answered_by(&lab, "b", Duration::from_secs(5));
    procs[1]
        .stop(Signal::SIGKILL, Duration::from_secs(5))
        .unwrap();
    // Master_Down_Interval for priority 150 at 100 ms: 300 ms + 41 ms; arping adds its own.
    let took = until_answered_by(&lab, "c", Duration::from_secs(3));
    assert!(
        took < Duration::from_millis(1_500),
        "failover took {took:?}"
    );
    let c = mac_text(&lab.host("c").mac);
    assert_eq!(
        lab.arping("client", VIP, 3).unwrap(),
        vec![c; 3],
        "one MAC only after failover"
    );
    for i in [0, 2] {
        procs[i]
            .stop(Signal::SIGTERM, Duration::from_secs(10))
            .unwrap();
    }
}

#[test]
fn a_frozen_master_is_replaced_and_takes_over_again_when_it_thaws() {
    if !privileged("a_frozen_master_is_replaced_and_takes_over_again_when_it_thaws") {
        return;
    }
    let (lab, mut procs) = three_hosts();
    until_answered_by(&lab, "b", Duration::from_secs(5));
    let b_pid = nix::unistd::Pid::from_raw(procs[1].pid() as i32);
    nix::sys::signal::kill(b_pid, Signal::SIGSTOP).unwrap();
    until_answered_by(&lab, "c", Duration::from_secs(3));
    nix::sys::signal::kill(b_pid, Signal::SIGCONT).unwrap();
    // b preempts c again (preempt is on by default).
    until_answered_by(&lab, "b", Duration::from_secs(5));
    for p in &mut procs {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn sigterm_hands_over_within_skew_time() {
    if !privileged("sigterm_hands_over_within_skew_time") {
        return;
    }
    let (lab, mut procs) = three_hosts();
    until_answered_by(&lab, "b", Duration::from_secs(5));
    let stopped = Instant::now();
    procs[1]
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let took = stopped.elapsed() + until_answered_by(&lab, "c", Duration::from_secs(3));
    // Skew_Time for priority 150 at 100 ms is 41 ms; the bound leaves room for arping.
    assert!(
        took < Duration::from_millis(1_200),
        "handover took {took:?}"
    );
    assert!(
        procs[2].log().contains("master resigned"),
        "{}",
        procs[2].log()
    );
    for i in [0, 2] {
        procs[i]
            .stop(Signal::SIGTERM, Duration::from_secs(10))
            .unwrap();
    }
}

/// Whether `host` has the VIP on its lab interface.
fn has_vip(lab: &Lab, host: &str) -> bool {
    let out = lab
        .run(
            host,
            "ip",
            &["-4", "-o", "addr", "show", "dev", &lab.host(host).iface],
            Duration::from_secs(5),
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/24"))
}

/// A TCP server on `host`, port 7777, that answers every connection with the host's name.
fn tcp_server(lab: &Lab, host: &str) -> Proc {
    let script = "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('0.0.0.0',7777))\ns.listen()\nwhile True:\n c,_=s.accept()\n c.sendall(sys.argv[1].encode())\n c.close()\n";
    lab.spawn(
        host,
        std::path::Path::new("python3"),
        &["-c", script, host],
        &format!("tcp-{host}"),
    )
    .unwrap()
}

/// Who answers a TCP connection to the VIP from the client.
fn tcp_through_vip(lab: &Lab) -> String {
    let script = format!(
        "import socket\ns=socket.create_connection(('{VIP}',7777),timeout=2)\nprint(s.recv(64).decode())"
    );
    let out = lab
        .run(
            "client",
            "python3",
            &["-c", &script],
            Duration::from_secs(10),
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The client's neighbour entry for the VIP, lowercased ("" when none).
fn client_neighbour(lab: &Lab) -> String {
    let out = lab
        .run(
            "client",
            "ip",
            &["neigh", "show", &VIP.to_string()],
            Duration::from_secs(5),
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

#[test]
fn the_vip_moves_with_the_master_and_clients_follow_it() {
    if !privileged("the_vip_moves_with_the_master_and_clients_follow_it") {
        return;
    }
    let (lab, mut procs) = three_hosts();
    let _servers: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|h| tcp_server(&lab, h))
        .collect();
    until_answered_by(&lab, "b", Duration::from_secs(5));
    assert!(
        wait_for(Duration::from_secs(3), || has_vip(&lab, "b")),
        "the master has no VIP"
    );
    assert!(
        !has_vip(&lab, "a") && !has_vip(&lab, "c"),
        "a backup holds the VIP"
    );
    assert!(
        wait_for(Duration::from_secs(5), || tcp_through_vip(&lab) == "b"),
        "TCP did not reach b"
    );

    procs[1]
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    assert!(!has_vip(&lab, "b"), "a stopped master keeps the VIP");
    assert!(
        wait_for(Duration::from_secs(3), || has_vip(&lab, "c")),
        "c did not take the VIP"
    );
    // c's gratuitous ARP updated the client's cache without the client asking.
    let c_mac = mac_text(&lab.host("c").mac);
    assert!(
        wait_for(Duration::from_secs(3), || client_neighbour(&lab)
            .contains(&c_mac)),
        "client cache: {}",
        client_neighbour(&lab)
    );
    assert_eq!(tcp_through_vip(&lab), "c");
    for i in [0, 2] {
        procs[i]
            .stop(Signal::SIGTERM, Duration::from_secs(10))
            .unwrap();
    }
    assert!(!has_vip(&lab, "c"));
}

#[test]
fn ipv6_elections_fail_over_and_only_the_master_answers_neighbour_discovery() {
    if !privileged("ipv6_elections_fail_over_and_only_the_master_answers_neighbour_discovery") {
        return;
    }
    let vip6: std::net::Ipv6Addr = "2001:db8::100".parse().unwrap();
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let start6 = |host: &str, priority: u8| {
        let iface = &lab.host(host).iface;
        lab.start_xvrrp(
            host,
            &format!(
                "interface = \"{iface}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\n\
                 priority = {priority}\nadvert_interval_ms = 100\nvips = [\"{vip6}/64\"]\n"
            ),
        )
        .expect("start xvrrp")
    };
    let mut a = start6("a", 100);
    let mut b = start6("b", 200);
    let only = |host: &str| {
        let want = mac_text(&lab.host(host).mac);
        wait_for(Duration::from_secs(5), || {
            let macs = lab.ndisc("client", vip6, 1).unwrap();
            !macs.is_empty() && macs.iter().all(|m| *m == want)
        })
    };
    assert!(only("b"), "b does not answer alone; b:\n{}", b.log());
    b.stop(Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    assert!(only("a"), "a did not take over; a:\n{}", a.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// xvrrp on `host` with `priority` tracking a script that succeeds while `flag` exists.
fn start_tracking(
    lab: &Lab,
    host: &str,
    priority: u8,
    flag: &std::path::Path,
    weight: i32,
) -> Proc {
    let iface = &lab.host(host).iface;
    lab.start_xvrrp(
        host,
        &format!(
            "interface = \"{iface}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n\
             [[track_script]]\nname = \"chk\"\nscript = \"test -e {}\"\ninterval_ms = 100\nfall = 2\nrise = 2\nweight = {weight}\n\n\
             [[instance]]\nvrid = 51\npriority = {priority}\nadvert_interval_ms = 100\nvips = [\"{VIP}/24\"]\n\
             track_scripts = [\"chk\"]\n",
            flag.display()
        ),
    )
    .expect("start xvrrp")
}

#[test]
fn a_failing_tracked_script_fails_over_and_recovery_takes_back() {
    if !privileged("a_failing_tracked_script_fails_over_and_recovery_takes_back") {
        return;
    }
    for weight in [0, -150] {
        let lab = Lab::new(&["a", "b", "client"]).expect("lab");
        let flag = lab.workdir().join("a-healthy");
        std::fs::write(&flag, "").unwrap();
        let mut a = start_tracking(&lab, "a", 200, &flag, weight);
        let mut b = start(&lab, "b", 100);
        until_answered_by(&lab, "a", Duration::from_secs(5));
        std::fs::remove_file(&flag).unwrap();
        until_answered_by(&lab, "b", Duration::from_secs(3));
        let expected = if weight == 0 {
            "new=fault"
        } else {
            "new=backup"
        };
        assert!(
            a.log().contains(expected),
            "weight {weight}: a's log:\n{}",
            a.log()
        );
        std::fs::write(&flag, "").unwrap();
        until_answered_by(&lab, "a", Duration::from_secs(5));
        a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
        b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

/// Sends SIGHUP to `p` and waits until it says it reloaded its configuration.
fn reload(p: &Proc) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), Signal::SIGHUP).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .contains("configuration reloaded")),
        "{}",
        p.log()
    );
}

/// A process named `name` (sleep, run through a symlink of that name) that dies with the test.
struct Service(std::process::Child);

impl Service {
    fn start(link: &std::path::Path) -> Self {
        Self(
            std::process::Command::new(link)
                .arg("600")
                .spawn()
                .expect("start the tracked process"),
        )
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_tracked_process_fails_over_at_once_takes_back_and_keeps_its_state_across_reload_and_restart() {
    if !privileged(
        "a_tracked_process_fails_over_at_once_takes_back_and_keeps_its_state_across_reload_and_restart",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    // A name no other process has: /proc is shared by every test and lab host.
    let name = format!("xvp{}", std::process::id());
    let link = lab.workdir().join(&name);
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sleep");
    std::os::unix::fs::symlink(sleep, &link).unwrap();
    let mut service = Service::start(&link);
    let iface = &lab.host("a").iface;
    // /proc is read every 3 s: only the pidfd can see the exit sooner.
    let config = |priority: u8| {
        format!(
            "interface = \"{iface}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n\
             [[track_process]]\nname = \"svc\"\nprocess = \"{name}\"\nscan_interval_ms = 3000\n\n\
             [[instance]]\nvrid = 51\npriority = {priority}\nadvert_interval_ms = 100\nvips = [\"{VIP}/24\"]\n\
             track_processes = [\"svc\"]\n"
        )
    };
    let mut a = lab.start_xvrrp("a", &config(200)).expect("start xvrrp");
    let mut b = start(&lab, "b", 100);
    until_answered_by(&lab, "a", Duration::from_secs(5));
    assert!(
        !a.log().contains("new=fault"),
        "a started in Fault though its process runs:\n{}",
        a.log()
    );
    service.kill();
    assert!(
        wait_for(Duration::from_millis(1_500), || a
            .log()
            .contains("new=fault")),
        "a was not in Fault within 1.5 s of the exit:\n{}",
        a.log()
    );
    until_answered_by(&lab, "b", Duration::from_secs(5));
    assert!(a.log().contains("tracked process changed"), "{}", a.log());
    // Back: the next read of /proc sees it, and a takes the VIP back.
    let _service = Service::start(&link);
    until_answered_by(&lab, "a", Duration::from_secs(8));
    // A reload that changes the instance starts it again from the process's known state (the
    // task reports only changes): it takes the VIP back, it does not sit in Fault.
    std::fs::write(lab.workdir().join("a.toml"), config(190)).unwrap();
    reload(&a);
    std::thread::sleep(Duration::from_millis(500));
    until_answered_by(&lab, "a", Duration::from_secs(3));
    let after_reload = a.log();
    let after_reload = &after_reload[after_reload.rfind("SIGHUP").unwrap_or(0)..];
    assert!(
        !after_reload.contains("new=fault"),
        "the reloaded instance went to Fault:\n{after_reload}"
    );
    // A hitless restart hands the process's state to the next daemon: no Fault, no failover.
    let b_took_over = b.log().matches("new=master").count();
    a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
    let mut a = lab.start_xvrrp("a", &config(190)).expect("restart xvrrp");
    assert!(
        a.log().contains("resuming after a hitless restart"),
        "{}",
        a.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    until_answered_by(&lab, "a", Duration::from_secs(1));
    assert!(!a.log().contains("new=fault"), "{}", a.log());
    assert_eq!(
        b.log().matches("new=master").count(),
        b_took_over,
        "b took over during the restart:\n{}\na after the restart:\n{}",
        b.log(),
        a.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn notify_scripts_and_the_event_stream_follow_every_change_in_order() {
    if !privileged("notify_scripts_and_the_event_stream_follow_every_change_in_order") {
        return;
    }
    use std::io::{BufRead as _, BufReader};
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let log = lab.workdir().join("notify.log");
    let events = lab.workdir().join("a.events");
    let iface = lab.host("a").iface.clone();
    let mut a = lab
        .start_xvrrp(
            "a",
            &format!(
                "interface = \"{iface}\"\nxdp_mode = \"native\"\nevent_socket = \"{}\"\n\n[[instance]]\nname = \"db\"\n\
                 vrid = 51\npriority = 100\nadvert_interval_ms = 100\nvips = [\"{VIP}/24\"]\n\
                 notify_master = \"echo master >> {log}\"\nnotify_backup = \"echo backup >> {log}\"\n\
                 notify_stop = \"echo stop >> {log}\"\nnotify = \"echo generic >> {log}\"\n",
                events.display(),
                log = log.display()
            ),
        )
        .expect("start xvrrp");
    let stream = std::os::unix::net::UnixStream::connect(&events).expect("event socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    until_answered_by(&lab, "a", Duration::from_secs(5));
    let mut b = start(&lab, "b", 200);
    until_answered_by(&lab, "b", Duration::from_secs(5));
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (
            first["instance"].as_str(),
            first["old"].as_str(),
            first["new"].as_str()
        ),
        (Some("db"), Some("backup"), Some("master")),
        "{first}"
    );
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["new"], "backup", "{second}");
    assert!(
        second["reason"].as_str().unwrap().contains("192.0.2.2"),
        "{second}"
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got,
        vec![
            // Startup enters backup, as with keepalived.
            "backup",
            "generic INSTANCE db BACKUP 100",
            "master",
            "generic INSTANCE db MASTER 100",
            "backup",
            "generic INSTANCE db BACKUP 100",
            "stop",
            "generic INSTANCE db STOP 100"
        ],
        "notify log"
    );
}

#[test]
fn a_hitless_restart_of_the_master_loses_no_answer_and_no_peer_notices() {
    if !privileged("a_hitless_restart_of_the_master_loses_no_answer_and_no_peer_notices") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let cfg = |host: &str, priority: u8| {
        format!(
            "interface = \"{}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\npriority = {priority}\n\
             vips = [\"{VIP}/24\"]\n",
            lab.host(host).iface
        )
    };
    let mut a = lab.start_xvrrp("a", &cfg("a", 200)).unwrap();
    let mut b = lab.start_xvrrp("b", &cfg("b", 100)).unwrap();
    until_answered_by(&lab, "a", Duration::from_secs(8));
    let (sent, received, a2) = std::thread::scope(|s| {
        // 300 requests, one every 10 ms, across the restart.
        let probe = s.spawn(|| {
            lab.arp_probe("client", VIP, 300, Duration::from_millis(10))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(500));
        a.stop(Signal::SIGUSR2, Duration::from_secs(10)).unwrap();
        let a2 = lab.start_xvrrp("a", &cfg("a", 200)).unwrap();
        let (sent, received) = probe.join().unwrap();
        (sent, received, a2)
    });
    let mut a = a2;
    assert!(
        a.log().contains("resuming after a hitless restart"),
        "{}",
        a.log()
    );
    assert!(sent >= 250, "arping sent only {sent}");
    assert_eq!(received, sent, "answers were lost across the restart");
    assert!(
        !b.log().contains("new=master"),
        "the backup noticed:\n{}",
        b.log()
    );
    assert!(has_vip(&lab, "a"), "the VIP left a");
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn nopreempt_and_preempt_delay_hold_back_a_returning_higher_priority() {
    if !privileged("nopreempt_and_preempt_delay_hold_back_a_returning_higher_priority") {
        return;
    }
    for (extra, takes_back_after) in [
        ("preempt = false\n", None),
        (
            "preempt_delay_ms = 1500\n",
            Some(Duration::from_millis(1500)),
        ),
    ] {
        let lab = Lab::new(&["a", "b", "client"]).expect("lab");
        let cfg = |host: &str, priority: u8, extra: &str| {
            format!(
                "interface = \"{}\"\nxdp_mode = \"native\"\n\n[[instance]]\nvrid = 51\npriority = {priority}\n\
                 advert_interval_ms = 100\nvips = [\"{VIP}/24\"]\n{extra}",
                lab.host(host).iface
            )
        };
        let mut b = lab.start_xvrrp("b", &cfg("b", 100, "")).unwrap();
        until_answered_by(&lab, "b", Duration::from_secs(3));
        let started = std::time::Instant::now();
        let mut a = lab.start_xvrrp("a", &cfg("a", 200, extra)).unwrap();
        match takes_back_after {
            None => {
                std::thread::sleep(Duration::from_secs(3));
                until_answered_by(&lab, "b", Duration::from_secs(1));
                assert!(
                    !a.log().contains("new=master"),
                    "nopreempt preempted:\n{}",
                    a.log()
                );
            }
            Some(delay) => {
                until_answered_by(&lab, "a", Duration::from_secs(6));
                assert!(
                    started.elapsed() >= delay,
                    "preempted after {:?}",
                    started.elapsed()
                );
            }
        }
        a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
        b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
}

#[test]
fn sighup_reload_changes_only_what_changed_and_refuses_a_bad_file() {
    if !privileged("sighup_reload_changes_only_what_changed_and_refuses_a_bad_file") {
        return;
    }
    let vip = |n: u8| Ipv4Addr::new(192, 0, 2, n);
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let config = |host: &str, instances: &[(&str, u8, u8, u8)]| {
        let mut text = format!(
            "interface = \"{}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n",
            lab.host(host).iface
        );
        for (name, vrid, last, priority) in instances {
            text.push_str(&format!(
                "\n[[instance]]\nname = \"{name}\"\nvrid = {vrid}\npriority = {priority}\nadvert_interval_ms = 100\n\
                 vips = [\"{}/24\"]\n",
                vip(*last)
            ));
        }
        text
    };
    let mut a = lab
        .start_xvrrp(
            "a",
            &config("a", &[("keep", 51, 100, 200), ("change", 52, 101, 200)]),
        )
        .unwrap();
    let mut b = lab
        .start_xvrrp(
            "b",
            &config("b", &[("keep", 51, 100, 100), ("change", 52, 101, 100)]),
        )
        .unwrap();
    lab.wait_answered_by("client", "a", vip(100), 1, Duration::from_secs(5));
    lab.wait_answered_by("client", "a", vip(101), 1, Duration::from_secs(5));
    let keep_changes = |p: &Proc| p.log().matches("instance=keep old=").count();
    let before = keep_changes(&a);

    // "change" drops below b, "new" appears, "keep" stays as it is.
    std::fs::write(
        lab.workdir().join("a.toml"),
        config(
            "a",
            &[
                ("keep", 51, 100, 200),
                ("change", 52, 101, 50),
                ("new", 53, 102, 200),
            ],
        ),
    )
    .unwrap();
    let a_pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    reload(&a);
    lab.wait_answered_by("client", "b", vip(101), 1, Duration::from_secs(5));
    lab.wait_answered_by("client", "a", vip(102), 1, Duration::from_secs(5));
    lab.wait_answered_by("client", "a", vip(100), 3, Duration::from_secs(1));
    assert_eq!(
        keep_changes(&a),
        before,
        "the unchanged instance flapped:\n{}",
        a.log()
    );

    // A bad file is refused whole; nothing changes.
    std::fs::write(lab.workdir().join("a.toml"), "interface = 7\n").unwrap();
    nix::sys::signal::kill(a_pid, Signal::SIGHUP).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("reload refused")),
        "{}",
        a.log()
    );
    assert!(
        a.log().contains(
            "a.toml: interface: line 1, column 13: invalid type: integer `7`, expected a string"
        ),
        "{}",
        a.log()
    );
    lab.wait_answered_by("client", "a", vip(100), 2, Duration::from_secs(1));
    lab.wait_answered_by("client", "b", vip(101), 2, Duration::from_secs(1));
    lab.wait_answered_by("client", "a", vip(102), 2, Duration::from_secs(1));
    assert!(a.running());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_sync_group_moves_together_with_a_tracked_file_and_a_fault() {
    if !privileged("a_sync_group_moves_together_with_a_tracked_file_and_a_fault") {
        return;
    }
    let vip = |n: u8| Ipv4Addr::new(192, 0, 2, n);
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let prio_file = lab.workdir().join("a-prio");
    let flag = lab.workdir().join("a-healthy");
    std::fs::write(&flag, "").unwrap();
    let instances = |priority: u8, tracks: [&str; 2]| {
        format!(
            "\n[[instance]]\nname = \"one\"\nvrid = 51\npriority = {priority}\nadvert_interval_ms = 100\nvips = [\"{}/24\"]\n{}\
             \n[[instance]]\nname = \"two\"\nvrid = 52\npriority = {priority}\nadvert_interval_ms = 100\nvips = [\"{}/24\"]\n{}",
            vip(100),
            tracks[0],
            vip(101),
            tracks[1]
        )
    };
    let head = |host: &str| {
        format!(
            "interface = \"{}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n",
            lab.host(host).iface
        )
    };
    let a_cfg = format!(
        "{}[[track_file]]\nname = \"prio\"\npath = \"{}\"\ninterval_ms = 100\n\n\
         [[track_script]]\nname = \"chk\"\nscript = \"test -e {}\"\ninterval_ms = 100\n\n\
         [[sync_group]]\nname = \"g\"\ninstances = [\"one\", \"two\"]\n{}",
        head("a"),
        prio_file.display(),
        flag.display(),
        instances(
            200,
            [
                "track_files = [\"prio\"]\n",
                "track_files = [\"prio\"]\ntrack_scripts = [\"chk\"]\n"
            ]
        )
    );
    let mut a = lab.start_xvrrp("a", &a_cfg).unwrap();
    let mut b = lab
        .start_xvrrp("b", &format!("{}{}", head("b"), instances(100, ["", ""])))
        .unwrap();
    let both = |host: &str, within: Duration| {
        lab.wait_answered_by("client", host, vip(100), 1, within);
        lab.wait_answered_by("client", host, vip(101), 1, within);
    };
    both("a", Duration::from_secs(5));
    // The file lowers both below b (group members share their tracking, as they should: with
    // one member still above its peer, preempting groups would drag each other back and forth).
    std::fs::write(&prio_file, "-150\n").unwrap();
    both("b", Duration::from_secs(5));
    // Back to 0: a preempts again.
    std::fs::write(&prio_file, "0\n").unwrap();
    both("a", Duration::from_secs(5));
    // Only "two" fails its check: the whole group goes to Fault, "one" too.
    std::fs::remove_file(&flag).unwrap();
    both("b", Duration::from_secs(5));
    assert!(
        a.log()
            .contains("instance=one old=master new=fault reason=sync group g follows two"),
        "{}",
        a.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// `ip -4 -o addr` of `host` (every interface).
fn addresses(lab: &Lab, host: &str) -> String {
    let out = lab
        .run(host, "ip", &["-4", "-o", "addr"], Duration::from_secs(5))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_virtual_mac_lives_on_a_macvlan_that_carries_the_labelled_vip() {
    if !privileged("a_virtual_mac_lives_on_a_macvlan_that_carries_the_labelled_vip") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let config = |host: &str, priority: u8| {
        format!(
            "interface = \"{}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\n\
             priority = {priority}\nadvert_interval_ms = 100\nvirtual_mac = true\nvips = [\"{VIP}/24 label vrrp.51:db\"]\n",
            lab.host(host).iface
        )
    };
    let mut a = lab.start_xvrrp("a", &config("a", 200)).unwrap();
    let mut b = lab.start_xvrrp("b", &config("b", 100)).unwrap();
    let _servers: Vec<Proc> = ["a", "b"].iter().map(|h| tcp_server(&lab, h)).collect();
    let vmac = "00:00:5e:00:01:33";
    // Without the macvlan, frames to the virtual MAC would not be taken by a's interface: a
    // TCP connection through the VIP shows that they are.
    assert!(
        wait_for(Duration::from_secs(8), || tcp_through_vip(&lab) == "a"),
        "TCP through the VIP did not reach a; a's log:\n{}",
        a.log()
    );
    assert!(
        client_neighbour(&lab).contains(vmac),
        "{}",
        client_neighbour(&lab)
    );
    let on_a = addresses(&lab, "a");
    assert!(
        on_a.lines().any(|l| l.contains("vrrp.51")
            && l.contains(&format!("{VIP}/24"))
            && l.contains("vrrp.51:db")),
        "a's addresses: {on_a}"
    );
    assert!(
        !addresses(&lab, "b").contains(&VIP.to_string()),
        "the backup holds the VIP"
    );

    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || tcp_through_vip(&lab) == "b"),
        "TCP did not follow the VIP to b; b's log:\n{}",
        b.log()
    );
    // The same virtual MAC moved: the client's cache needs no change.
    assert!(
        client_neighbour(&lab).contains(vmac),
        "{}",
        client_neighbour(&lab)
    );
    let links = lab
        .run("a", "ip", &["-o", "link"], Duration::from_secs(5))
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("vrrp.51"),
        "a stopped daemon left its macvlan behind"
    );
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_tracked_scripts_first_result_counts_before_the_node_can_be_master() {
    if !privileged("a_tracked_scripts_first_result_counts_before_the_node_can_be_master") {
        return;
    }
    // keepalived: a script's first result counts at once (no `fall` to wait out), and no
    // instance is promoted while a script it tracks has not reported.
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut b = start(&lab, "b", 100);
    until_answered_by(&lab, "b", Duration::from_secs(5));
    let config = lab
        .vrrp_config("a", 200, "track_scripts = [\"check\"]\n")
        .replace(
            "\n\n[[instance]]",
            "\n\n[[track_script]]\nname = \"check\"\nscript = \"sleep 0.3; exit 1\"\ninterval_ms = 1000\nfall = 3\n\n[[instance]]",
        );
    let mut a = lab.start_xvrrp("a", &config).expect("start xvrrp");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !a.log().contains("new=master"),
        "a was master before its failing script counted:\n{}",
        a.log()
    );
    assert!(
        a.log().contains("tracked script's first result"),
        "{}",
        a.log()
    );
    assert_eq!(lab.status("a").unwrap()["instances"][0]["state"], "fault");
    until_answered_by(&lab, "b", Duration::from_secs(1));
    assert_eq!(b.log().matches("new=master").count(), 1, "{}", b.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn notify_fault_runs_when_a_tracked_check_fails_and_master_when_it_recovers() {
    if !privileged("notify_fault_runs_when_a_tracked_check_fails_and_master_when_it_recovers") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let log = lab.workdir().join("notify-fault.log");
    let flag = lab.workdir().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let config = lab
        .vrrp_config(
            "a",
            200,
            &format!(
                "track_scripts = [\"check\"]\nnotify_master = \"echo master >> {log}\"\n\
                 notify_fault = \"echo fault >> {log}\"\nnotify = \"echo generic >> {log}\"\n",
                log = log.display()
            ),
        )
        .replace(
            "\n\n[[instance]]",
            &format!(
                "\n\n[[track_script]]\nname = \"check\"\nscript = \"test -e {}\"\ninterval_ms = 100\n\n[[instance]]",
                flag.display()
            ),
        );
    let mut a = lab.start_xvrrp("a", &config).expect("start xvrrp");
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(5), || lines()
            .contains(&"master".to_owned())),
        "{:?}\n{}",
        lines(),
        a.log()
    );
    std::fs::remove_file(&flag).unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || lines()
            .contains(&"fault".to_owned())),
        "notify_fault did not run: {:?}\n{}",
        lines(),
        a.log()
    );
    // The generic notify runs after notify_fault, in order.
    assert!(
        wait_for(Duration::from_secs(3), || lines().iter().any(|l| l
            .starts_with("generic INSTANCE")
            && l.ends_with(" FAULT 200"))),
        "{:?}",
        lines()
    );
    assert!(
        lab.arping("client", VIP, 1).unwrap().is_empty(),
        "a Fault instance answered"
    );
    std::fs::write(&flag, "").unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || lines()
            .iter()
            .filter(|l| *l == "master")
            .count()
            == 2),
        "{:?}",
        lines()
    );
    until_answered_by(&lab, "a", Duration::from_secs(3));
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

//! Living with the daemon: the Prometheus endpoint moves with the election and the data plane,
//! systemd's notify protocol (READY, WATCHDOG, STOPPING) is spoken, JSON logs name the
//! interface, instance, VRID and state.

use std::{
    io::Write as _,
    net::{Ipv4Addr, TcpStream},
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xvrrp_lab::{
    Lab,
    metrics::{self, sample},
    privileged, wait_for,
};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;
const PORT: u16 = 9650;

/// The lab's usual config for `host` with the metrics endpoint on 127.0.0.1:9650.
fn with_metrics(lab: &Lab, host: &str, priority: u8) -> String {
    lab.vrrp_config(host, priority, "").replacen(
        "[[instance]]",
        &format!("[metrics]\nlisten = \"127.0.0.1:{PORT}\"\n\n[[instance]]"),
        1,
    )
}

fn get(lab: &Lab, host: &str, path: &str) -> (String, String) {
    metrics::get(lab, host, PORT, path)
}

fn scrape(lab: &Lab, host: &str) -> String {
    metrics::scrape(lab, host, PORT)
}

#[test]
fn the_metrics_endpoint_follows_the_election_and_the_data_plane() {
    if !privileged("the_metrics_endpoint_follows_the_election_and_the_data_plane") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let mut a = lab
        .start_xvrrp("a", &with_metrics(&lab, "a", 200))
        .expect("a");
    let mut b = lab
        .start_xvrrp("b", &with_metrics(&lab, "b", 100))
        .expect("b");
    lab.wait_answered_by("client", "a", VIP, 1, Duration::from_secs(5));

    let inst = r#"vrid="51""#;
    let text = scrape(&lab, "a");
    assert_eq!(
        sample(&text, "xvrrp_instance_state", &[inst]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "xvrrp_instance_effective_priority", &[inst]),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, "xvrrp_transitions_total", &[inst, r#"to="master""#]),
        Some(1.0),
        "{text}"
    );
    let answered = sample(&text, "xvrrp_dataplane_answered_total", &[inst]).expect("answered");
    let sent = sample(&text, "xvrrp_adverts_sent_total", &[inst]).expect("sent");
    assert!(
        sample(
            &text,
            "xvrrp_dataplane_adverts_dropped_total",
            &[r#"reason="ttl""#]
        )
        .is_some(),
        "drop reasons are listed: {text}"
    );

    // Three more ARP requests answered from XDP, and adverts keep going out.
    assert_eq!(lab.arping("client", VIP, 3).unwrap().len(), 3);
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(&lab, "a");
    let answered_now = sample(&text, "xvrrp_dataplane_answered_total", &[inst]).expect("answered");
    assert!(
        answered_now >= answered + 3.0,
        "answered {answered} -> {answered_now}"
    );
    assert!(sample(&text, "xvrrp_adverts_sent_total", &[inst]).unwrap() > sent);

    let text = scrape(&lab, "b");
    assert_eq!(sample(&text, "xvrrp_instance_state", &[inst]), Some(1.0));
    assert!(sample(&text, "xvrrp_adverts_received_total", &[inst]).unwrap() > 0.0);
    assert!(sample(&text, "xvrrp_dataplane_adverts_valid_total", &[inst]).unwrap() > 0.0);
    // b saw the broadcast requests (arping then asks a's MAC directly) and kept quiet.
    let seen = sample(&text, "xvrrp_dataplane_requests_total", &[inst]).unwrap();
    let quiet = sample(
        &text,
        "xvrrp_dataplane_requests_dropped_total",
        &[inst, r#"reason="not_master""#],
    )
    .unwrap();
    assert!(seen >= 1.0 && quiet == seen, "{text}");
    assert_eq!(
        sample(&text, "xvrrp_dataplane_answered_total", &[inst]),
        Some(0.0)
    );

    // Other paths and methods are refused; the endpoint survives garbage.
    assert_eq!(get(&lab, "b", "/").0, "HTTP/1.1 404 Not Found");
    lab.host("b")
        .ns
        .run_in(|| {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, PORT))?;
            s.write_all(&[0xff; 9000])?;
            Ok(())
        })
        .unwrap();

    // Failover: b's transition to master is counted with its reason.
    a.stop(Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    lab.wait_answered_by("client", "b", VIP, 1, Duration::from_secs(5));
    let text = scrape(&lab, "b");
    assert_eq!(sample(&text, "xvrrp_instance_state", &[inst]), Some(2.0));
    assert_eq!(
        sample(
            &text,
            "xvrrp_transitions_total",
            &[inst, r#"to="master""#, r#"reason="master_down""#]
        ),
        Some(1.0),
        "{text}"
    );
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping_and_json_logs() {
    if !privileged("systemd_notify_ready_watchdog_and_stopping_and_json_logs") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let socket_path = lab.workdir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut a = lab
        .start_xvrrp_env(
            "a",
            &lab.vrrp_config("a", 200, ""),
            &[
                ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
                ("WATCHDOG_USEC", "400000"),
                ("XVRRP_LOG_FORMAT", "json"),
            ],
        )
        .expect("a");
    let mut messages: Vec<(Instant, String)> = Vec::new();
    let mut buf = [0u8; 512];
    let mut read_for = |d: Duration, messages: &mut Vec<(Instant, String)>| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(n) = socket.recv(&mut buf) {
                messages.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    };
    read_for(Duration::from_millis(1500), &mut messages);
    let ready = messages
        .iter()
        .position(|(_, m)| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {messages:?}"));
    let status = &messages[ready].1;
    assert!(
        status.contains("STATUS=1 instance(s) on"),
        "READY comes with a status: {status:?}"
    );
    let pings = messages
        .iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .count();
    // Every half of the 400 ms watchdog: about 7 in 1.5 s.
    assert!(
        (4..=12).contains(&pings),
        "{pings} watchdog pings: {messages:?}"
    );
    lab.wait_answered_by("client", "a", VIP, 1, Duration::from_secs(5));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid() as i32), Signal::SIGTERM).unwrap();
    messages.clear();
    let stopped = wait_for(Duration::from_secs(5), || {
        read_for(Duration::from_millis(100), &mut messages);
        messages.iter().any(|(_, m)| m.trim() == "STOPPING=1")
    });
    assert!(stopped, "no STOPPING=1: {messages:?}");
    assert!(wait_for(Duration::from_secs(10), || !a.running()));

    // JSON logs: every line an object; the state change names interface, instance, VRID and
    // state.
    let log = a.log();
    let iface = lab.host("a").iface.clone();
    let mut changes = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let fields = &v["fields"];
        if fields["message"] == "state change" {
            changes += 1;
            assert_eq!(fields["vrid"], 51, "{line}");
            assert!(fields["instance"].is_string(), "{line}");
            assert!(fields["state"].is_string(), "{line}");
            assert_eq!(v["spans"][0]["interface"], iface.as_str(), "{line}");
        }
    }
    assert!(changes >= 2, "init->backup->master: {log}");
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "only JSON lines: {log}"
    );
}

/// The metric names a Grafana dashboard's queries use (`xvrrp_...`).
fn dashboard_metrics(path: &std::path::Path) -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("xvrrp_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_in_a_real_scrape() {
    if !xvrrp_lab::mariadb::ready("every_metric_the_grafana_dashboard_queries_is_in_a_real_scrape")
    {
        return;
    }
    use xvrrp_lab::mariadb::{PROBE_PASSWORD, PROBE_USER, master_master_pair};
    let names = dashboard_metrics(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/grafana/xvrrp-dashboard.json"),
    );
    assert!(names.len() >= 20, "{names:?}");
    // A MySQL master with a fenced, replicating server, a peer and a write lease: every family
    // has samples.
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, _b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let (me, peer) = (lab.host("a").ip, lab.host("b").ip);
    let config = format!(
        "{}track_mysql = [\"local\"]\n\n{}[[mysql]]\nname = \"peer\"\nhost = \"{peer}\"\nuser = \"{PROBE_USER}\"\n\
         password = \"{PROBE_PASSWORD}\"\ntimeout_ms = 300\n\n[write_lease]\nlisten = \"{me}:5405\"\n\
         peer = \"{peer}:5405\"\nkey = \"0123456789abcdef0123456789abcdef\"\nlease_ms = 2000\n",
        with_metrics(&lab, "a", 200),
        a_db.xvrrp_target("fence = true\npeer = \"peer\"")
    );
    let mut a = lab.start_xvrrp("a", &config).expect("start xvrrp");
    lab.wait_answered_by("client", "a", VIP, 1, Duration::from_secs(10));
    let mut missing = Vec::new();
    let ok = wait_for(Duration::from_secs(10), || {
        let text = scrape(&lab, "a");
        missing = names
            .iter()
            .filter(|n| {
                !text.lines().any(|l| {
                    l.strip_prefix(n.as_str())
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
            })
            .cloned()
            .collect();
        missing.is_empty()
    });
    assert!(
        ok,
        "the dashboard queries metrics a scrape does not have: {missing:?}\n{}",
        a.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

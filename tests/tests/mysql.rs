//! MySQL-aware failover on a real MariaDB master-master pair: xvrrp on each host probes its
//! local server, fences it with read_only, and the VIP follows the healthy server.

use std::{net::Ipv4Addr, time::Duration};

use nix::sys::signal::Signal;
use xvrrp_lab::{
    Lab, Proc, advert_times,
    mariadb::{self, APP_PASSWORD, APP_USER, Mariadb, master_master_pair, ready},
    metrics::{sample, scrape},
    wait_for,
};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;

/// xvrrp on `host` at `priority`, tracking and fencing its local server.
fn start_xvrrp(lab: &Lab, db: &Mariadb, priority: u8, target_extra: &str) -> Proc {
    let config = format!(
        "{}track_mysql = [\"local\"]\n\n{}",
        lab.vrrp_config(&db.host, priority, ""),
        db.xvrrp_target(target_extra)
    );
    lab.start_xvrrp(&db.host, &config).expect("start xvrrp")
}

/// The server_id of whoever answers a query through the VIP from the client, as the app user
/// (None: no answer within about a second).
fn server_through_vip(lab: &Lab) -> Option<u32> {
    let out = lab
        .run(
            "client",
            "mariadb",
            &[
                "--no-defaults",
                "-h",
                &VIP.to_string(),
                "-u",
                APP_USER,
                &format!("-p{APP_PASSWORD}"),
                "--connect-timeout=1",
                "-N",
                "-B",
                "-e",
                "SELECT @@server_id",
            ],
            Duration::from_secs(5),
        )
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Waits until the VIP is answered by `db`'s server and the fencing agrees: `db` writable,
/// `other` read-only.
fn settled_on(lab: &Lab, db: &Mariadb, other: &Mariadb, within: Duration) -> bool {
    wait_for(within, || {
        server_through_vip(lab) == Some(db.server_id)
            && db.read_only(lab).is_ok_and(|ro| !ro)
            && other.read_only(lab).is_ok_and(|ro| ro)
    })
}

#[test]
fn the_vip_follows_a_killed_mysqld_and_read_only_flips_in_order() {
    if !ready("the_vip_follows_a_killed_mysqld_and_read_only_flips_in_order") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let mut a = start_xvrrp(&lab, &a_db, 200, "");
    let mut b = start_xvrrp(&lab, &b_db, 100, "");
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a did not become the writable master; a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );

    let killed = std::time::Instant::now();
    a_db.signal(Signal::SIGKILL).unwrap();
    let moved = mariadb::wait_served_by(
        &lab,
        "client",
        VIP,
        &b_db,
        Duration::from_millis(50),
        Duration::from_secs(10),
    )
    .unwrap();
    let Some(moved) = moved else {
        panic!(
            "the VIP did not move to b; a:\n{}\nb:\n{}",
            a.log(),
            b.log()
        );
    };
    println!(
        "mysqld SIGKILLed on the master: first query answered by the other server through the VIP after {} ms (100 ms adverts)",
        (moved - killed).as_millis()
    );
    assert!(a.log().contains("server gone"), "a's log:\n{}", a.log());
    assert!(
        wait_for(Duration::from_secs(5), || b_db
            .read_only(&lab)
            .is_ok_and(|ro| !ro)),
        "b took the VIP but stayed read-only; b:\n{}",
        b.log()
    );

    // a's server comes back: a takes the VIP back (priority 200), b is fenced again.
    a_db.start(&lab).unwrap();
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(15)),
        "no failback to a; a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    for p in [&mut a, &mut b] {
        p.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    }
    // A master that stops fences its server first.
    assert!(
        a_db.read_only(&lab).unwrap(),
        "a stopped master left its server writable"
    );
}

#[test]
fn a_replica_with_its_sql_thread_stopped_does_not_take_the_vip_from_a_healthy_master() {
    if !ready("a_replica_with_its_sql_thread_stopped_does_not_take_the_vip_from_a_healthy_master") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    // b is master; a has the higher priority but its replica is not applying.
    let b = start_xvrrp(&lab, &b_db, 100, "");
    assert!(
        settled_on(&lab, &b_db, &a_db, Duration::from_secs(10)),
        "b:\n{}",
        b.log()
    );
    a_db.sql(&lab, "STOP SLAVE SQL_THREAD").unwrap();
    let a = start_xvrrp(&lab, &a_db, 200, "");
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("SQL thread not running")),
        "a did not see its stopped SQL thread:\n{}",
        a.log()
    );
    // Several master-down intervals: a must stay backup, b master and writable.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        server_through_vip(&lab),
        Some(b_db.server_id),
        "a:\n{}",
        a.log()
    );
    assert!(a_db.read_only(&lab).unwrap(), "a was unfenced");
    let st = lab.status("a").unwrap();
    assert_eq!(st["instances"][0]["state"], "backup", "{st}");
    assert_eq!(st["instances"][0]["effective_priority"], 50, "{st}");

    // Replication applies again: a is healthy, and preempts.
    a_db.sql(&lab, "START SLAVE SQL_THREAD").unwrap();
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a did not take over once healthy; a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
}

/// The state of the first instance on `host`, as `xvrrp status` shows it.
fn state(lab: &Lab, host: &str) -> String {
    lab.status(host)
        .ok()
        .and_then(|st| st["instances"][0]["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn a_wrong_password_a_server_not_started_and_a_hanging_server_each_say_so_and_fail_over() {
    if !ready(
        "a_wrong_password_a_server_not_started_and_a_hanging_server_each_say_so_and_fail_over",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let mut b = start_xvrrp(&lab, &b_db, 100, "");

    // A wrong password: a (priority 200) stays in Fault and never takes the VIP.
    let config = format!(
        "{}track_mysql = [\"local\"]\n\n{}",
        lab.vrrp_config("a", 200, ""),
        a_db.xvrrp_target("")
            .replace(mariadb::PROBE_PASSWORD, "not-the-password")
    );
    let mut a = lab.start_xvrrp("a", &config).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("authentication failed")),
        "{}",
        a.log()
    );
    assert!(
        !a.log().contains("not-the-password"),
        "the password was logged"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&lab, "a"), "fault");
    assert_eq!(state(&lab, "b"), "master", "{}", b.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();

    // The right password, but a's server is not started: Fault, "not running".
    a_db.signal(Signal::SIGTERM).unwrap();
    let a = start_xvrrp(&lab, &a_db, 200, "");
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("server not running (connection refused)")),
        "{}",
        a.log()
    );
    assert_eq!(state(&lab, "a"), "fault");
    assert_eq!(state(&lab, "b"), "master");

    // a's server starts: a takes over (priority 200).
    a_db.start(&lab).unwrap();
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );

    // a's server hangs (SIGSTOP): probes time out, fall 2 at 100 ms, a goes to Fault and b
    // takes the VIP.
    let stopped = std::time::Instant::now();
    a_db.signal(Signal::SIGSTOP).unwrap();
    let moved = mariadb::wait_served_by(
        &lab,
        "client",
        VIP,
        &b_db,
        Duration::from_millis(100),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        moved.is_some(),
        "b did not take over; a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    println!(
        "mysqld SIGSTOPped on the master: VIP answered by the other server after {} ms",
        (moved.unwrap() - stopped).as_millis()
    );
    assert!(
        a.log().contains("timed out: server hanging or unreachable"),
        "{}",
        a.log()
    );
    assert_eq!(state(&lab, "a"), "fault");
    assert!(
        wait_for(Duration::from_secs(3), || b_db
            .read_only(&lab)
            .is_ok_and(|ro| !ro)),
        "b stayed read-only"
    );
    a_db.signal(Signal::SIGCONT).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// The UTC times (as MariaDB prints DATETIME(6)) at which `log` says `what`.
fn log_times(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split_whitespace().next())
        .map(|t| t.trim_end_matches('Z').replace('T', " "))
        .collect()
}

/// Rows the server `server_id` took while its xvrrp had it fenced: between a "fenced" line
/// and the next "writes enabled" line of that daemon's log.
fn writes_while_fenced(db: &Mariadb, lab: &Lab, log: &str) -> Vec<String> {
    let fenced = log_times(log, "fenced: read_only ON");
    // Logged right before read_only is cleared.
    let enabled = log_times(log, "setting read_only OFF");
    let rows = db
        .sql(
            lab,
            &format!(
                "SELECT k, at FROM appdb.writes WHERE server = {}",
                db.server_id
            ),
        )
        .unwrap();
    rows.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, at)| {
            fenced.iter().any(|f| {
                let until = enabled.iter().find(|e| *e > f);
                *at > f.as_str() && until.is_none_or(|u| *at < u.as_str())
            })
        })
        .map(|(k, at)| format!("{k} at {at}"))
        .collect()
}

#[test]
fn every_acknowledged_write_survives_five_failovers_and_failbacks() {
    if !ready("every_acknowledged_write_survives_five_failovers_and_failbacks") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let a = start_xvrrp(&lab, &a_db, 200, "");
    let b = start_xvrrp(&lab, &b_db, 100, "");
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a:\n{}",
        a.log()
    );
    let writer = mariadb::Writer::start(&lab, "client", VIP).unwrap();
    for round in 1..=5 {
        let t0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        a_db.signal(Signal::SIGKILL).unwrap();
        // a's server is dead: only b can be asked.
        assert!(
            wait_for(Duration::from_secs(10), || server_through_vip(&lab)
                == Some(b_db.server_id)
                && b_db.read_only(&lab).is_ok_and(|ro| !ro)),
            "round {round}: no failover to b; b:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
        a_db.start(&lab).unwrap();
        assert!(
            settled_on(&lab, &a_db, &b_db, Duration::from_secs(15)),
            "round {round}: no failback to a; a:\n{}\nb:\n{}",
            a.log(),
            b.log()
        );
        println!(
            "round {round}: failover and failback in {} ms",
            t0.elapsed().as_millis()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let acked = writer.finish().unwrap();
    assert!(
        acked.len() > 100,
        "the writer got only {} writes through",
        acked.len()
    );
    // Replication converges; then every acknowledged write is on both servers.
    let keys = |db: &Mariadb| -> std::collections::HashSet<String> {
        db.sql(&lab, "SELECT k FROM appdb.writes")
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let converged = wait_for(Duration::from_secs(30), || {
        let (on_a, on_b) = (keys(&a_db), keys(&b_db));
        acked.iter().all(|k| on_a.contains(k) && on_b.contains(k))
    });
    let (on_a, on_b) = (keys(&a_db), keys(&b_db));
    let missing: Vec<_> = acked
        .iter()
        .filter(|k| !on_a.contains(*k) || !on_b.contains(*k))
        .take(10)
        .collect();
    assert!(
        converged,
        "acknowledged writes missing (first 10): {missing:?}; a: {}, b: {}",
        a_db.sql_vertical(&lab, "SHOW SLAVE STATUS")
            .unwrap_or_default(),
        b_db.sql_vertical(&lab, "SHOW SLAVE STATUS")
            .unwrap_or_default()
    );
    // A fenced server took no write.
    for (db, log) in [(&a_db, a.log()), (&b_db, b.log())] {
        let bad = writes_while_fenced(db, &lab, &log);
        assert!(
            bad.is_empty(),
            "{} took writes while fenced: {bad:?}",
            db.host
        );
    }
    println!(
        "{} acknowledged writes through 5 failovers and 5 failbacks, all on both servers",
        acked.len()
    );
}

#[test]
fn a_custom_query_with_an_unexpected_result_fails_over_and_status_shows_the_probes() {
    if !ready("a_custom_query_with_an_unexpected_result_fails_over_and_status_shows_the_probes") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let a = start_xvrrp(
        &lab,
        &a_db,
        200,
        "query = \"SELECT @@global.max_connections\"\nexpect = \"50\"",
    );
    let b = start_xvrrp(&lab, &b_db, 100, "");
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a:\n{}",
        a.log()
    );
    let table = lab.status_table("a").unwrap();
    let line = table
        .lines()
        .find(|l| l.starts_with("local "))
        .unwrap_or_else(|| panic!("no MySQL line in:\n{table}"));
    for want in [
        "127.0.0.1:3306",
        " up ",
        " OFF ",
        "healthy (io Yes, sql Yes",
    ] {
        assert!(line.contains(want), "{want:?} not in {line:?}");
    }
    let st = lab.status("b").unwrap();
    assert_eq!(st["mysql"][0]["read_only"], true, "{st}");
    assert_eq!(st["mysql"][0]["reconnects"], 0, "{st}");

    // The query's answer changes: a's check fails (weight 0: Fault) and b takes over.
    a_db.sql(&lab, "SET GLOBAL max_connections = 60").unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || server_through_vip(&lab)
            == Some(b_db.server_id)),
        "no failover; a:\n{}",
        a.log()
    );
    let st = lab.status("a").unwrap();
    assert_eq!(st["mysql"][0]["alive"], false, "{st}");
    let reason = st["mysql"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("check failed") && reason.contains("expected \"50\""),
        "{reason}"
    );
    assert_eq!(st["instances"][0]["state"], "fault", "{st}");

    a_db.sql(&lab, "SET GLOBAL max_connections = 50").unwrap();
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a did not come back; a:\n{}",
        a.log()
    );
    drop(b);
}

#[test]
fn the_probe_speaks_tls_when_asked_and_an_unknown_host_is_named() {
    if !ready("the_probe_speaks_tls_when_asked_and_an_unknown_host_is_named") {
        return;
    }
    let lab = Lab::new(&["a", "client"]).expect("lab");
    let mut db = Mariadb::install(&lab, "a", 1).unwrap();
    let ca = db.enable_tls(&lab).unwrap();
    db.start(&lab).unwrap();
    db.require_tls(&lab).unwrap();
    let alive = |lab: &Lab| {
        lab.status("a")
            .ok()
            .map(|st| st["mysql"][0]["alive"].clone())
    };

    // The probe user must use TLS: without it, the server refuses the login.
    let mut a = start_xvrrp(&lab, &db, 200, "");
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("authentication failed")),
        "{}",
        a.log()
    );
    assert_eq!(state(&lab, "a"), "fault");
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();

    let a = start_xvrrp(
        &lab,
        &db,
        200,
        &format!("tls = true\ntls_ca = \"{}\"", ca.display()),
    );
    assert!(
        wait_for(Duration::from_secs(5), || alive(&lab)
            == Some(serde_json::Value::Bool(true))),
        "the TLS probe did not come up:\n{}",
        a.log()
    );
    assert!(
        wait_for(Duration::from_secs(5), || state(&lab, "a") == "master"),
        "{}",
        a.log()
    );
    drop(a);

    // A host name that does not resolve is said so.
    let config = format!(
        "{}track_mysql = [\"local\"]\n\n{}",
        lab.vrrp_config("a", 200, ""),
        db.xvrrp_target("").replace("127.0.0.1", "db.invalid")
    );
    let a = lab.start_xvrrp("a", &config).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .contains("unknown host \"db.invalid\"")),
        "{}",
        a.log()
    );
    assert_eq!(state(&lab, "a"), "fault");
}

#[test]
fn the_metrics_endpoint_shows_the_probe_rounds_their_latency_and_a_dead_server() {
    if !ready("the_metrics_endpoint_shows_the_probe_rounds_their_latency_and_a_dead_server") {
        return;
    }
    const PORT: u16 = 9651;
    let lab = Lab::new(&["a"]).expect("lab");
    let mut db = Mariadb::install(&lab, "a", 1).expect("install");
    db.start(&lab).expect("mariadb");
    let config = format!(
        "{}track_mysql = [\"local\"]\n\n{}\n[metrics]\nlisten = \"127.0.0.1:{PORT}\"\n",
        lab.vrrp_config("a", 200, ""),
        db.xvrrp_target("").replace("replication = true\n", "")
    );
    let a = lab.start_xvrrp("a", &config).expect("xvrrp");
    let target = r#"target="local""#;
    let up = |text: &str| sample(text, "xvrrp_mysql_up", &[target]);
    // Up, master, and writable (read_only is cleared on promotion).
    assert!(
        wait_for(Duration::from_secs(10), || {
            let text = scrape(&lab, "a", PORT);
            up(&text) == Some(1.0)
                && sample(&text, "xvrrp_instance_state", &[r#"vrid="51""#]) == Some(2.0)
                && sample(&text, "xvrrp_mysql_read_only", &[target]) == Some(0.0)
        }),
        "never up, master and writable:\n{}\na:\n{}",
        scrape(&lab, "a", PORT),
        a.log()
    );
    let first = scrape(&lab, "a", PORT);
    let probes = sample(&first, "xvrrp_mysql_probes_total", &[target]).expect("probes");
    let rounds = sample(
        &first,
        "xvrrp_mysql_probe_duration_seconds_count",
        &[target],
    )
    .expect("histogram");
    assert!(rounds >= 1.0, "{first}");

    // Rounds every 100 ms: both counters move, and the histogram's time is a real duration.
    std::thread::sleep(Duration::from_millis(600));
    let later = scrape(&lab, "a", PORT);
    let probes_now = sample(&later, "xvrrp_mysql_probes_total", &[target]).unwrap();
    let rounds_now = sample(
        &later,
        "xvrrp_mysql_probe_duration_seconds_count",
        &[target],
    )
    .unwrap();
    assert!(probes_now >= probes + 3.0, "{probes} -> {probes_now}");
    assert!(rounds_now >= rounds + 3.0, "{rounds} -> {rounds_now}");
    let seconds = sample(&later, "xvrrp_mysql_probe_duration_seconds_sum", &[target]).unwrap();
    assert!(
        seconds > 0.0 && seconds / rounds_now < 0.3,
        "mean round {} s",
        seconds / rounds_now
    );
    assert_eq!(
        sample(&later, "xvrrp_mysql_probe_failures_total", &[target]),
        Some(0.0)
    );

    // mysqld killed: the target goes down, failures are counted, the instance is in Fault.
    db.signal(Signal::SIGKILL).expect("kill mysqld");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let text = scrape(&lab, "a", PORT);
            up(&text) == Some(0.0)
                && sample(&text, "xvrrp_mysql_probe_failures_total", &[target])
                    .is_some_and(|f| f >= 1.0)
                && sample(&text, "xvrrp_instance_state", &[r#"vrid="51""#]) == Some(3.0)
        }),
        "{}\na:\n{}",
        scrape(&lab, "a", PORT),
        a.log()
    );
}

#[test]
fn a_promotion_waits_for_the_relay_log_by_default_even_without_replication_checks() {
    if !ready("a_promotion_waits_for_the_relay_log_by_default_even_without_replication_checks") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    // takeover = "wait_catch_up" is the default; it used to do nothing without replication.
    let extra = "fence = true";
    let config = |db: &Mariadb, priority: u8| {
        format!(
            "{}track_mysql = [\"local\"]\n\n{}",
            lab.vrrp_config(&db.host, priority, ""),
            db.xvrrp_target(extra)
                .replace("replication = true\n", "")
                .replace("max_lag_s = 5\nreplication_weight = -150\n", "")
        )
    };
    let mut a = lab.start_xvrrp("a", &config(&a_db, 200)).expect("a");
    let mut b = lab.start_xvrrp("b", &config(&b_db, 100)).expect("b");
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(10)),
        "a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
    assert!(
        a.log().contains("relay log applied: enabling writes"),
        "{}",
        a.log()
    );
    assert!(!a.log().contains("takeover at once"), "{}", a.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_fence_held_off_by_a_lock_delays_no_advert_of_another_instance_nor_the_heartbeat() {
    if !ready("a_fence_held_off_by_a_lock_delays_no_advert_of_another_instance_nor_the_heartbeat") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    mariadb::create_counter(&lab, &a_db).expect("counter");
    let demote_file = |host: &str| lab.workdir().join(format!("demote-{host}"));
    let demote = demote_file("a");
    std::fs::write(&demote, "0").unwrap();
    std::fs::write(demote_file("b"), "0").unwrap();
    // `db` follows and fences the local server; `web` on the same daemon follows nothing.
    let config = |db: &Mariadb, priority: u8| {
        format!(
            "{}track_mysql = [\"local\"]\ntrack_files = [\"demote\"]\n\n\
             [[instance]]\nname = \"web\"\nvrid = 52\npriority = {priority}\nadvert_interval_ms = 100\n\
             vips = [\"192.0.2.101/24\"]\n\n\
             [[track_file]]\nname = \"demote\"\npath = \"{}\"\nweight = -120\ninterval_ms = 100\n\n{}",
            lab.vrrp_config(&db.host, priority, "name = \"db\"\n"),
            demote_file(&db.host).display(),
            db.xvrrp_target("")
        )
    };
    let mut a = lab.start_xvrrp("a", &config(&a_db, 150)).expect("start a");
    let mut b = lab.start_xvrrp("b", &config(&b_db, 100)).expect("start b");
    assert!(
        settled_on(&lab, &a_db, &b_db, Duration::from_secs(15)),
        "{}",
        a.log()
    );
    let web = Ipv4Addr::new(192, 0, 2, 101);
    lab.wait_answered_by("client", "a", web, 2, Duration::from_secs(5));

    // A session holds a write lock on a's server for 3 s: setting read_only waits for it.
    let _holder = lab
        .spawn(
            "a",
            std::path::Path::new("/usr/bin/mariadb"),
            &[
                &a_db.defaults_arg(),
                "-e",
                "LOCK TABLES appdb.counter WRITE; SELECT SLEEP(3);",
            ],
            "lock-holder",
        )
        .expect("lock holder");
    std::thread::sleep(Duration::from_millis(300));
    let capture = lab.workdir().join("adverts.pcap");
    let mut tcpdump = lab
        .capture_from("a", "ip proto 112", &capture)
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    // `db` on a drops to 30: b preempts it, and a's fence of its server is held off by the lock.
    let fences_before = a.log().matches("fenced: read_only ON").count();
    std::fs::write(&demote, "1").unwrap();
    let demoted = std::time::Instant::now();
    let mut answers = Vec::new();
    while demoted.elapsed() < Duration::from_secs(3) {
        answers.extend(lab.arping("client", web, 1).expect("arping"));
    }
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log()
            .matches("fenced: read_only ON")
            .count()
            > fences_before),
        "{}",
        a.log()
    );
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    // The fence was held off for seconds...
    let log = a.log();
    let fenced_at = log.rfind("fenced: read_only ON").unwrap();
    let demoted_at = log
        .find("instance=db old=master new=backup")
        .unwrap_or_else(|| panic!("db demoted:\n{log}"));
    assert!(demoted_at < fenced_at, "{log}");
    let held = log_times(&log, "fenced: read_only ON");
    let left = log_times(&log, "instance=db old=master new=backup");
    println!("db demoted at {left:?}, fenced at {held:?}");
    let seconds = |t: &str| {
        advert_times(
            &[format!("{} vrid 0,", t.split(' ').nth(1).unwrap_or(""))],
            0,
        )
        .first()
        .copied()
        .unwrap_or(0.0)
    };
    let held_off = seconds(held.last().unwrap()) - seconds(&left[0]);
    assert!(
        held_off > 1.5,
        "the lock held the fence off {held_off} s only"
    );
    // ...while `web` advertised every 100 ms, its VIP answered throughout by a's XDP (a stale
    // heartbeat would drop those requests), and b never took it.
    xvrrp_lab::assert_kept_advertising(&lab, "a", &capture, ("web", 52), 20, &answers);
    assert!(
        !b.log()
            .lines()
            .any(|l| l.contains("instance=web") && l.contains("new=master")),
        "{}",
        b.log()
    );
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

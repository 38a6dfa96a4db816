//! MySQL-aware failover on a real MariaDB master-master pair: xvrrp on each host probes its
//! local server, fences it with read_only, and the VIP follows the healthy server.

use std::{net::Ipv4Addr, time::Duration};

use nix::sys::signal::Signal;
use xvrrp_lab::{
    Lab, Proc,
    mariadb::{self, APP_PASSWORD, APP_USER, Mariadb, master_master_pair},
    privileged, wait_for,
};

const VIP: Ipv4Addr = xvrrp_lab::LAB_VIP;

/// Whether this test can run: root, and MariaDB installed (`cargo xtask setup` installs it).
fn ready(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    assert!(
        mariadb::available(),
        "{test}: mariadb-server is not installed (cargo xtask setup installs it)"
    );
    true
}

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

    a_db.signal(Signal::SIGKILL).unwrap();
    let moved = mariadb::wait_answer(
        &lab,
        "client",
        VIP,
        "SELECT @@server_id",
        &b_db.server_id.to_string(),
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
        moved.as_millis()
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

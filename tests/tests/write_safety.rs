//! Never two writable servers: a real MariaDB master-master pair behind xvrrp, with faults
//! struck on the lab bridge and on the processes, and both servers' read_only sampled every
//! 50 ms throughout.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use xvrrp_lab::{
    Lab, Proc,
    mariadb::{self, Mariadb, PROBE_PASSWORD, PROBE_USER, master_master_pair},
    privileged, wait_for,
};

const KEY: &str = "lab-shared-lease-key-0123456789";
const LEASE_PORT: u16 = 5405;

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

/// xvrrp on `db`'s host at `priority`, tracking and fencing its server; with `lease`, a write
/// lease with the other host (and `witness`, when given) and the peer's server fenced over SQL.
fn start(lab: &Lab, db: &Mariadb, other: &Mariadb, priority: u8, lease: bool) -> Proc {
    let me = lab.host(&db.host).ip;
    let peer = lab.host(&other.host).ip;
    let mut config = format!(
        "{}track_mysql = [\"local\"]\n\n{}",
        lab.vrrp_config(&db.host, priority, ""),
        db.xvrrp_target(if lease { "peer = \"peer\"" } else { "" })
    );
    if lease {
        config.push_str(&format!(
            "[[mysql]]\nname = \"peer\"\nhost = \"{peer}\"\nuser = \"{PROBE_USER}\"\n\
             password = \"{PROBE_PASSWORD}\"\ntimeout_ms = 300\n\n\
             [write_lease]\nlisten = \"{me}:{LEASE_PORT}\"\npeer = \"{peer}:{LEASE_PORT}\"\n\
             key = \"{KEY}\"\nlease_ms = 2000\n"
        ));
    }
    lab.start_xvrrp(&db.host, &config).expect("start xvrrp")
}

/// Whether each server is writable (None: no answer), sampled every 50 ms for `span`; panics
/// at the first sample where both are. Returns the samples and the longest stretch without a
/// writable server.
fn sample_never_both_writable(
    lab: &Lab,
    a: &Mariadb,
    b: &Mariadb,
    span: Duration,
) -> (usize, Duration) {
    let started = Instant::now();
    let (mut samples, mut longest, mut since) = (0, Duration::ZERO, None::<Instant>);
    while started.elapsed() < span {
        let wa = a.read_only(lab).ok().map(|ro| !ro);
        let wb = b.read_only(lab).ok().map(|ro| !ro);
        samples += 1;
        assert!(
            !(wa == Some(true) && wb == Some(true)),
            "sample {samples} at {:?}: both servers writable",
            started.elapsed()
        );
        if wa == Some(true) || wb == Some(true) {
            since = None;
        } else {
            let s = *since.get_or_insert_with(Instant::now);
            longest = longest.max(s.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (samples, longest)
}

fn writable(lab: &Lab, db: &Mariadb) -> bool {
    db.read_only(lab).is_ok_and(|ro| !ro)
}

#[test]
fn with_a_write_lease_vrrp_dropped_between_the_nodes_never_makes_both_servers_writable() {
    if !ready("with_a_write_lease_vrrp_dropped_between_the_nodes_never_makes_both_servers_writable")
    {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let _a = start(&lab, &a_db, &b_db, 200, true);
    let b = start(&lab, &b_db, &a_db, 100, true);
    assert!(
        wait_for(Duration::from_secs(20), || writable(&lab, &a_db)
            && !writable(&lab, &b_db)),
        "a writable, b fenced"
    );
    lab.drop_vrrp_between(Some(("a", "b"))).expect("drop VRRP");
    let (samples, longest) = sample_never_both_writable(&lab, &a_db, &b_db, Duration::from_secs(8));
    println!("VRRP dropped: {samples} samples, longest without a writable server {longest:?}");
    // b heard no adverts, became master, asked for the lease, and yielded to a's claim: its
    // instance is in Fault (no VIP claimed for a fenced server), a stays writable.
    let status = lab.status("b").expect("b status");
    assert_eq!(status["lease"]["blocked"], true, "{status}");
    assert_eq!(status["instances"][0]["state"], "fault", "{status}");
    assert!(writable(&lab, &a_db), "the higher claim keeps writes");
    assert!(longest < Duration::from_secs(1), "writes stayed available");
    lab.drop_vrrp_between(None).expect("heal");
    assert!(
        wait_for(Duration::from_secs(30), || lab
            .status("b")
            .is_ok_and(|s| s["instances"][0]["state"] == "backup")),
        "b back to backup after its hold-down (five lease times), hearing a's adverts: {}",
        b.log()
    );
    let (samples, _) = sample_never_both_writable(&lab, &a_db, &b_db, Duration::from_secs(2));
    println!("healed: {samples} samples");
}

#[test]
fn without_a_write_lease_vrrp_dropped_between_the_nodes_makes_both_writable() {
    // The fault above is real: without the lease, fencing alone lets both servers take writes
    // (what keepalived does too).
    if !ready("without_a_write_lease_vrrp_dropped_between_the_nodes_makes_both_writable") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let _a = start(&lab, &a_db, &b_db, 200, false);
    let _b = start(&lab, &b_db, &a_db, 100, false);
    assert!(wait_for(Duration::from_secs(20), || writable(&lab, &a_db)
        && !writable(&lab, &b_db)));
    lab.drop_vrrp_between(Some(("a", "b"))).expect("drop VRRP");
    assert!(
        wait_for(Duration::from_secs(10), || writable(&lab, &a_db)
            && writable(&lab, &b_db)),
        "both writable"
    );
}

#[test]
fn a_master_whose_xvrrp_is_killed_has_its_server_fenced_over_sql_by_the_new_master() {
    if !ready("a_master_whose_xvrrp_is_killed_has_its_server_fenced_over_sql_by_the_new_master") {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");
    let a = start(&lab, &a_db, &b_db, 200, true);
    let b = start(&lab, &b_db, &a_db, 100, true);
    assert!(wait_for(Duration::from_secs(20), || writable(&lab, &a_db)
        && !writable(&lab, &b_db)));
    // SIGKILL leaves a's server writable: nothing on a can fence it any more.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid() as i32), Signal::SIGKILL)
        .expect("kill xvrrp on a");
    let started = Instant::now();
    let (samples, longest) = sample_never_both_writable(&lab, &a_db, &b_db, Duration::from_secs(6));
    assert!(writable(&lab, &b_db), "b took writes over");
    assert!(
        !writable(&lab, &a_db),
        "b set a's server read_only over SQL"
    );
    let log = b.log();
    assert!(log.contains("the peer's server is read_only"), "{log}");
    println!(
        "xvrrp killed on a: {samples} samples in {:?}; longest without a writable server {longest:?} (a stayed writable until b fenced it)",
        started.elapsed()
    );
}

//! `xvrrp import-keepalived` on real-world keepalived.conf files (tests/fixtures/keepalived):
//! every config it writes passes `xvrrp check-config`, the report lists what it left out; and
//! in the lab, a daemon running an imported MySQL master-master config fails over with a real
//! keepalived peer running the original.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nix::sys::signal::Signal;
use xvrrp_lab::{
    Lab, assert_valid_config, mac_text,
    mariadb::{self, Mariadb, PROBE_PASSWORD, PROBE_USER, master_master_pair},
    privileged, run_with_timeout, scratch_dir, wait_for, xvrrp_bin,
};

const VIP: std::net::Ipv4Addr = xvrrp_lab::LAB_VIP;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/keepalived")
        .join(name)
}

/// Imports `conf` into `dir`; (the files written, by name, and the report on stderr).
fn import(conf: &Path, dir: &Path) -> (Vec<(String, String)>, String) {
    let out = run_with_timeout(
        Command::new(xvrrp_bin())
            .arg("import-keepalived")
            .arg(conf)
            .arg("-o")
            .arg(format!("{}/", dir.display())),
        Duration::from_secs(20),
    )
    .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{report}");
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    for (name, _) in &files {
        assert_valid_config(&dir.join(name));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(name)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{name} may hold a password: 0600");
    }
    (files, report)
}

#[test]
fn real_world_keepalived_configs_import_into_valid_configs_and_say_what_was_left_out() {
    let dir = scratch_dir("import-fixtures");

    let (files, report) = import(&fixture("mysql-master-master.conf"), &dir.join("mysql"));
    assert_eq!(files.len(), 1);
    let (name, toml) = &files[0];
    assert_eq!(name, "eth0.toml");
    // The mysqladmin ping script is a native probe with the script's credentials and timing.
    for want in [
        "[[mysql]]\nname = \"chk_mysql\"\nhost = \"127.0.0.1\"\nport = 3306\nuser = \"keepalived\"\npassword = \"S3cret\"\ninterval_ms = 2000\ntimeout_ms = 3000\nrise = 2\nfall = 2\nweight = 0\nfence = false\n",
        "track_mysql = [\"chk_mysql\"]",
        "preempt = false",
        "version = 2\nauth_pass = \"1111\"\n",
        "unicast_peers = [\"10.0.0.12\"]",
        "vips = [\"10.0.0.100/24 label eth0:vip\"]",
    ] {
        assert!(toml.contains(want), "{want:?} not in:\n{toml}");
    }
    assert!(!toml.contains("[[track_script]]"), "{toml}");
    for want in ["becomes a native MySQL probe", "notification_email"] {
        assert!(report.contains(want), "{want:?} not in:\n{report}");
    }
    // auth_type PASS is carried over (VRRPv2), not reported as left out.
    assert!(!report.contains("authentication"), "{report}");

    let (files, report) = import(&fixture("router-sync-group.conf"), &dir.join("router"));
    // One daemon for the host: one file; the sync group across the interfaces is carried, the
    // inside instance names its interface, and its routes come along.
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["eth0.toml"]);
    let toml = &files[0].1;
    for want in [
        "interface = \"eth0\"\n",
        "[[sync_group]]\nname = \"G_EDGE\"\ninstances = [\"VI_OUT\", \"VI_IN\"]\nnotify_master = \"/etc/keepalived/edge-master.sh\"\n",
        "[[sync_group]]\nname = \"G_LOCAL\"",
        "name = \"VI_IN\"\ninterface = \"eth1\"\n",
        "routes = [\"0.0.0.0/0 via 203.0.113.1 dev eth0\"]",
    ] {
        assert!(toml.contains(want), "{want:?} not in:\n{toml}");
    }
    assert!(
        !report.contains("several interfaces") && !report.contains("virtual_routes"),
        "{report}"
    );
    assert!(
        report.contains("router-sync-group.conf:60: virtual_server: xvrrp does no load balancing"),
        "{report}"
    );

    let (files, report) = import(&fixture("haproxy-pair.conf"), &dir.join("haproxy"));
    let toml = &files[0].1;
    for want in [
        "name = \"chk_haproxy_weight-40\"",
        "weight = -40",
        "advert_interval_ms = 100",
        "version = 3",
        "vips = [\"192.168.50.10/32\", \"192.168.50.11/24\"]",
        "garp_master_refresh_ms = 60000",
    ] {
        assert!(toml.contains(want), "{want:?} not in:\n{toml}");
    }
    assert!(
        report.contains("brd 192.168.50.255 is not carried"),
        "{report}"
    );

    // keepalived's process tracking is carried, with its delays and a weight override.
    let (files, report) = import(&fixture("nginx-track-process.conf"), &dir.join("nginx"));
    let toml = &files[0].1;
    for want in [
        "[[track_process]]\nname = \"chk_nginx\"\nprocess = \"nginx\"\nweight = -60\ndelay_ms = 1500\n",
        "[[track_process]]\nname = \"chk_fpm_weight-20\"\nprocess = \"/usr/sbin/php-fpm8.2\"\nargs = [\"--nodaemonize\"]\nparam_match = \"initial\"\nquorum = 1\nquorum_max = 1\nweight = -20\n",
        "track_processes = [\"chk_nginx\", \"chk_fpm_weight-20\"]",
        "auth_pass = \"zabbix\"",
    ] {
        assert!(toml.contains(want), "{want:?} not in:\n{toml}");
    }
    assert!(
        !report.contains("process tracking is not supported"),
        "{report}"
    );
    assert!(report.contains("chk_fpm weight -20"), "{report}");

    // Includes are followed; an instance of mixed families keeps its own family.
    let (files, report) = import(&fixture("ipv6-vmac.conf"), &dir.join("vmac"));
    let toml = &files[0].1;
    for want in [
        "vmac_interface = \"vrrp.70\"",
        "virtual_mac = true",
        "advert_interval_ms = 50",
        "preempt_delay_ms = 10000",
        "[[track_file]]\nname = \"maint\"\npath = \"/etc/keepalived/maintenance\"\nweight = -100",
    ] {
        assert!(toml.contains(want), "{want:?} not in:\n{toml}");
    }
    assert!(
        report.contains("conf.d/service.conf:6: vrrp_instance VI_V4: 2001:db8:70::1/64 is of the other address family"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One fixture of the corpus (tests/fixtures/keepalived/corpus): `NAME.conf` and what its
/// import must give, in `NAME.expect`, one expectation per line:
/// `writes FILE` (the files written, all of them), `FILE has TEXT` / `FILE lacks TEXT`,
/// `report TEXT` (stderr), `refused TEXT` (exit 1, nothing written, TEXT on stderr).
/// TEXT may hold `\n` for a line break.
fn check_fixture(conf: &Path, expect: &str, out: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let _ = std::fs::remove_dir_all(out);
    // Run beside the file, so that messages name it as `NAME.conf:LINE`.
    let result = run_with_timeout(
        Command::new(xvrrp_bin())
            .current_dir(conf.parent().unwrap())
            .arg("import-keepalived")
            .arg(conf.file_name().unwrap())
            .arg("-o")
            .arg(format!("{}/", out.display())),
        Duration::from_secs(20),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    let mut written: Vec<String> = std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    written.sort();
    let mut writes = Vec::new();
    let mut refused = false;
    for line in expect.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let text = |t: &str| t.replace("\\n", "\n");
        match verb {
            "writes" => writes.push(rest.to_owned()),
            "report" if !stderr.contains(&text(rest)) => {
                problems.push(format!("report lacks {rest:?}"))
            }
            "refused" => {
                refused = true;
                if result.status.code() != Some(1) || !stderr.contains(&text(rest)) {
                    problems.push(format!(
                        "expected a refusal with {rest:?}, got {:?}",
                        result.status.code()
                    ));
                }
            }
            "report" => {}
            file => {
                let (how, want) = rest.split_once(' ').unwrap_or((rest, ""));
                let body = std::fs::read_to_string(out.join(file)).unwrap_or_default();
                let found = body.contains(&text(want));
                match how {
                    "has" if !found => problems.push(format!("{file} lacks {want:?}:\n{body}")),
                    "lacks" if found => problems.push(format!("{file} has {want:?}:\n{body}")),
                    "has" | "lacks" => {}
                    _ => problems.push(format!("bad expectation line {line:?}")),
                }
            }
        }
    }
    if refused {
        if !written.is_empty() {
            problems.push(format!("refused, yet wrote {written:?}"));
        }
    } else {
        if !result.status.success() {
            problems.push(format!("exit {:?}", result.status.code()));
        }
        writes.sort();
        if written != writes {
            problems.push(format!("wrote {written:?}, expected {writes:?}"));
        }
        for name in &written {
            let check = run_with_timeout(
                Command::new(xvrrp_bin())
                    .arg("check-config")
                    .arg(out.join(name)),
                Duration::from_secs(20),
            )
            .unwrap();
            if !check.status.success() {
                problems.push(format!(
                    "check-config refuses {name}: {}",
                    String::from_utf8_lossy(&check.stderr)
                ));
            }
        }
    }
    if problems.is_empty() {
        return problems;
    }
    vec![format!(
        "{}:\n  - {}\n--- stderr:\n{stderr}",
        conf.display(),
        problems.join("\n  - ")
    )]
}

#[test]
fn every_config_of_the_corpus_imports_as_its_expectation_says() {
    let dir = scratch_dir("import-corpus");
    let corpus = fixture("corpus");
    let mut confs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    confs.sort();
    // With the five of the test above: at least 20 real-world-style configs.
    assert!(
        confs.len() >= 15,
        "only {} configs in the corpus",
        confs.len()
    );
    let mut problems = Vec::new();
    for conf in &confs {
        let expect = std::fs::read_to_string(conf.with_extension("expect"))
            .unwrap_or_else(|e| panic!("{}: no .expect: {e}", conf.display()));
        assert!(
            expect
                .lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#')),
            "{}: the expectation is empty",
            conf.display()
        );
        let name = conf.file_stem().unwrap().to_string_lossy().into_owned();
        problems.extend(check_fixture(conf, &expect, &dir.join(name)));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The usual master-master keepalived.conf for `db`'s host: a `mariadb-admin ping` script.
fn mysql_keepalived_conf(lab: &Lab, db: &Mariadb, priority: u8) -> String {
    lab.keepalived_config(
        &db.host,
        priority,
        3,
        "0.1",
        "  track_script {\n    chk_mysql\n  }\n",
    )
    .replacen(
        "vrrp_instance",
        &format!(
            "vrrp_script chk_mysql {{\n  script \"/usr/bin/mariadb-admin -u{PROBE_USER} -p{PROBE_PASSWORD} -h 127.0.0.1 --connect-timeout=1 ping\"\n  interval 1\n  timeout 1\n  fall 2\n  rise 2\n}}\n\nvrrp_instance"
        ),
        1,
    )
}

#[test]
fn an_imported_mysql_pair_config_fails_over_with_keepalived_running_the_original() {
    let test = "an_imported_mysql_pair_config_fails_over_with_keepalived_running_the_original";
    if !privileged(test) {
        return;
    }
    assert!(
        mariadb::available(),
        "{test}: mariadb-server is not installed (cargo xtask setup installs it)"
    );
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let (mut a_db, b_db) = master_master_pair(&lab, "a", "b").expect("pair");

    // a: the keepalived.conf imported and run by xvrrp; b: keepalived with its own original.
    let conf = lab.workdir().join("keepalived-a-original.conf");
    std::fs::write(&conf, mysql_keepalived_conf(&lab, &a_db, 200)).unwrap();
    let (files, report) = import(&conf, &lab.workdir().join("imported"));
    assert!(report.contains("becomes a native MySQL probe"), "{report}");
    let mut a = lab.start_xvrrp("a", &files[0].1).expect("xvrrp on a");
    let mut b = lab
        .start_keepalived("b", &mysql_keepalived_conf(&lab, &b_db, 100))
        .expect("keepalived on b");

    let within = Duration::from_secs(15);
    let attempt = Duration::from_millis(500);
    let served = mariadb::wait_served_by(&lab, "client", VIP, &a_db, attempt, within).unwrap();
    assert!(
        served.is_some(),
        "a's server never answered through the VIP:\n{}",
        a.log()
    );

    // mysqld dies on a: xvrrp's native probe sees it, a resigns, keepalived on b takes over.
    a_db.signal(Signal::SIGKILL).unwrap();
    let served = mariadb::wait_served_by(&lab, "client", VIP, &b_db, attempt, within).unwrap();
    assert!(
        served.is_some(),
        "b's server never answered through the VIP\nxvrrp:\n{}\nkeepalived:\n{}",
        a.log(),
        b.log()
    );
    assert!(a.log().contains("state change"), "{}", a.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

/// A router-style keepalived.conf: an IPv4 and an IPv6 instance in one sync group, the IPv4 one
/// tracking a maintenance-flag script.
fn sync_group_keepalived_conf(lab: &Lab, host: &str, priority: u8, flag: &Path) -> String {
    let iface = &lab.host(host).iface;
    format!(
        "global_defs {{\n  router_id {host}\n  vrrp_version 3\n}}\n\
         vrrp_script chk_maint {{\n  script \"/usr/bin/test ! -e {flag}\"\n  interval 1\n  fall 1\n  rise 1\n}}\n\
         vrrp_sync_group G {{\n  group {{\n    V4\n    V6\n  }}\n}}\n\
         vrrp_instance V4 {{\n  state BACKUP\n  interface {iface}\n  virtual_router_id 51\n  priority {priority}\n  \
         advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n  track_script {{\n    chk_maint\n  }}\n}}\n\
         vrrp_instance V6 {{\n  state BACKUP\n  interface {iface}\n  virtual_router_id 52\n  priority {priority}\n  \
         advert_int 0.1\n  virtual_ipaddress {{\n    {VIP6}/64\n  }}\n}}\n",
        flag = flag.display()
    )
}

const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

#[test]
fn an_imported_ipv6_sync_group_moves_together_with_keepalived_running_the_original() {
    if !privileged(
        "an_imported_ipv6_sync_group_moves_together_with_keepalived_running_the_original",
    ) {
        return;
    }
    let lab = Lab::new(&["a", "b", "client"]).expect("lab");
    let flag_a = lab.workdir().join("maintenance-a");
    let flag_b = lab.workdir().join("maintenance-b");
    let conf = lab.workdir().join("keepalived-a-original.conf");
    std::fs::write(&conf, sync_group_keepalived_conf(&lab, "a", 200, &flag_a)).unwrap();
    let (files, report) = import(&conf, &lab.workdir().join("imported"));
    assert_eq!(files.len(), 1, "{report}");
    assert!(
        files[0]
            .1
            .contains("[[sync_group]]\nname = \"G\"\ninstances = [\"V4\", \"V6\"]"),
        "{}",
        files[0].1
    );
    let mut a = lab.start_xvrrp("a", &files[0].1).expect("xvrrp on a");
    let mut b = lab
        .start_keepalived("b", &sync_group_keepalived_conf(&lab, "b", 100, &flag_b))
        .expect("keepalived on b");
    // Both VIPs answered by one host, the same for both families.
    let answered_by = |host: &str| {
        let want = mac_text(&lab.host(host).mac);
        wait_for(Duration::from_secs(10), || {
            lab.arping("client", VIP, 2).unwrap() == vec![want.clone(); 2] && {
                let macs = lab.ndisc("client", VIP6, 2).unwrap();
                !macs.is_empty() && macs.iter().all(|m| *m == want)
            }
        })
    };
    assert!(
        answered_by("a"),
        "xvrrp:\n{}\nkeepalived:\n{}",
        a.log(),
        b.log()
    );
    // The IPv4 member's script fails on a: the group goes, both VIPs move to keepalived.
    std::fs::write(&flag_a, "").unwrap();
    assert!(
        answered_by("b"),
        "the group did not move to b\nxvrrp:\n{}\nkeepalived:\n{}",
        a.log(),
        b.log()
    );
    // And back once the flag is gone (priority 200 preempts).
    std::fs::remove_file(&flag_a).unwrap();
    assert!(
        answered_by("a"),
        "the group did not come back to a\nxvrrp:\n{}\nkeepalived:\n{}",
        a.log(),
        b.log()
    );
    // Now keepalived's member fails: xvrrp keeps both.
    std::fs::write(&flag_b, "").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(answered_by("a"), "{}", b.log());
    a.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
    b.stop(Signal::SIGTERM, Duration::from_secs(10)).unwrap();
}

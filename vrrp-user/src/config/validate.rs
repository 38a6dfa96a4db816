//! The second step of loading a config: the raw tables checked one by one into the typed
//! [`Config`]. Every problem is collected with its key path (none hides another), and a value
//! out of range is replaced by the nearest valid one so that the checks after it still run.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use super::*;

/// The problems found so far, and the checks that add to them.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

/// How a range is described in a message: "expected {described}, got {value}".
#[derive(Clone, Copy)]
enum Range {
    /// "milliseconds from LO to HI"
    Ms,
    /// "a count from LO to HI"
    Count,
    /// "LO to HI"
    Plain,
    /// "LO to HI (0: fault while failing)", for the weight of a tracked object.
    Weight,
    /// The whole description, bounds included.
    Described(&'static str),
}

impl Checker {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// `v` when it lies in `lo..=hi`; otherwise a problem at `key` and the nearest bound.
    fn range(&mut self, key: impl Into<String>, v: i64, lo: i64, hi: i64, how: Range) -> i64 {
        if !(lo..=hi).contains(&v) {
            let expected = match how {
                Range::Ms => format!("milliseconds from {lo} to {hi}"),
                Range::Count => format!("a count from {lo} to {hi}"),
                Range::Plain => format!("{lo} to {hi}"),
                Range::Weight => format!("{lo} to {hi} (0: fault while failing)"),
                Range::Described(text) => text.to_owned(),
            };
            self.problem(key, format!("expected {expected}, got {v}"));
        }
        v.clamp(lo, hi)
    }

    /// A unique, non-empty name among `taken` (the names of the tables before it).
    fn unique<'a>(&mut self, key: String, name: &str, taken: impl Iterator<Item = &'a String>) {
        if let Some(m) = unique_name(name, taken) {
            self.problem(key, m);
        }
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut c = Checker::default();
    let interface = raw.interface;
    if !is_interface_name(&interface) || interface.bytes().any(|b| b.is_ascii_whitespace()) {
        c.problem(
            "interface",
            format!(
                "expected a network interface name of 1 to 15 characters without '/', ':' or spaces, got {interface:?}"
            ),
        );
    }
    let explicit_limit = raw
        .heartbeat_limit_ms
        .map(|v| c.range("heartbeat_limit_ms", v, 10, 60_000, Range::Ms) as u64);
    if raw.instance.is_empty() {
        c.problem("instance", "expected at least one [[instance]] table");
    }
    let track_files = track_files(&mut c, raw.track_file);
    let track_processes = track_processes(&mut c, raw.track_process);
    let track_scripts = track_scripts(&mut c, raw.track_script);
    let mysql = mysql_targets(&mut c, raw.mysql);
    let tracked = Tracked {
        scripts: &track_scripts,
        files: &track_files,
        processes: &track_processes,
        mysql: &mysql,
    };
    let instances = instances(&mut c, raw.instance, &interface, &tracked);
    let sync_groups = sync_groups(&mut c, raw.sync_group, &instances);
    mysql_peers(&mut c, &mysql);
    // The fence a lease must leave time for: the servers instances track (a peer's target is
    // only fenced before writes are enabled).
    let fenced: Vec<MysqlTarget> = mysql
        .iter()
        .filter(|t| instances.iter().any(|i| i.track_mysql.contains(&t.name)))
        .cloned()
        .collect();
    let write_lease = raw
        .write_lease
        .and_then(|w| write_lease(&mut c, w, &fenced));
    let metrics_listen = raw.metrics.and_then(|m| match m.listen.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            c.problem(
                "metrics.listen",
                format!(
                    "expected ADDRESS:PORT such as \"127.0.0.1:9650\" or \"[::1]:9650\", got {:?}",
                    m.listen
                ),
            );
            None
        }
    });
    let script_user = raw.script_user.as_deref().and_then(|text| {
        crate::scripts::ScriptUser::resolve(text)
            .map_err(|m| c.problem("script_user", m))
            .ok()
    });
    if raw.enable_script_security {
        for (key, command) in script_commands(&track_scripts, &instances, &sync_groups) {
            if let Some(m) = crate::scripts::insecure(command) {
                c.problem(key, m);
            }
        }
    }
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let heartbeat_limit_ms = explicit_limit.unwrap_or_else(|| derived_heartbeat_limit(&instances));
    Ok(Config {
        heartbeat_limit_explicit: explicit_limit.is_some(),
        xdp_mode: raw.xdp_mode,
        bpffs: raw.bpffs.unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS)),
        heartbeat_limit_ms,
        configure_vips: raw.configure_vips,
        control_socket: raw
            .control_socket
            .unwrap_or_else(|| crate::control::default_socket(&interface)),
        event_socket: raw.event_socket,
        metrics_listen,
        interface,
        track_scripts,
        track_files,
        track_processes,
        mysql,
        sync_groups,
        instances,
        write_lease,
        script_user,
    })
}

/// `heartbeat_limit_ms` when the file has none: twice the shortest advert interval, 250 ms
/// at least. Below the backups' Master_Down_Interval (3 intervals and the skew), so a frozen
/// daemon's program goes quiet before the peer takes over; and long enough that the heartbeat
/// is written on the adverts' own wake-ups, with no timer of its own (idle CPU).
pub fn derived_heartbeat_limit(instances: &[Instance]) -> u64 {
    instances
        .iter()
        .map(|i| 2 * 10 * u64::from(i.advert_interval_cs))
        .min()
        .map_or(DEFAULT_HEARTBEAT_LIMIT_MS as u64, |d| {
            d.max(DEFAULT_HEARTBEAT_LIMIT_MS as u64)
        })
}

fn track_files(c: &mut Checker, raw: Vec<RawTrackFile>) -> Vec<TrackFile> {
    let mut out: Vec<TrackFile> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("track_file[{i}].{key}");
        c.unique(at("name"), &t.name, out.iter().map(|f| &f.name));
        let weight = c.range(at("weight"), t.weight, -254, 254, Range::Plain);
        let interval_ms = c.range(at("interval_ms"), t.interval_ms, 10, 3_600_000, Range::Ms);
        out.push(TrackFile {
            name: t.name,
            path: t.path,
            weight: weight as i32,
            weight_reverse: t.weight_reverse,
            interval_ms: interval_ms as u64,
        });
    }
    out
}

fn track_processes(c: &mut Checker, raw: Vec<RawTrackProcess>) -> Vec<TrackProcess> {
    let mut out: Vec<TrackProcess> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("track_process[{i}].{key}");
        c.unique(at("name"), &t.name, out.iter().map(|p| &p.name));
        if t.process.is_empty() || t.process.contains('\0') {
            c.problem(
                at("process"),
                format!(
                    "expected a process name (as in /proc/PID/comm) or, with full_command, a command, got {:?}",
                    t.process
                ),
            );
        }
        let param_match = match t.param_match.as_deref() {
            None | Some("exact") => ParamMatch::Exact,
            Some("partial") => ParamMatch::Partial,
            Some("initial") => ParamMatch::Initial,
            Some(other) => {
                c.problem(
                    at("param_match"),
                    format!("expected \"exact\", \"partial\" or \"initial\", got {other:?}"),
                );
                ParamMatch::Exact
            }
        };
        // keepalived: param_match without parameters means "no parameters at all".
        let args = match (t.args, t.param_match.is_some()) {
            (None, true) => Some(Vec::new()),
            (args, _) => args,
        };
        // keepalived: quorum_max = 0 alone means "must not run".
        let quorum = t
            .quorum
            .unwrap_or(if t.quorum_max == Some(0) { 0 } else { 1 });
        let quorum = c.range(at("quorum"), quorum, 0, 100_000, Range::Count);
        let quorum_max = t.quorum_max.map(|max| {
            if !(quorum..=100_000).contains(&max) {
                c.problem(
                    at("quorum_max"),
                    format!("expected a count from quorum ({quorum}) to 100000, got {max}"),
                );
            }
            max.clamp(0, 100_000) as u32
        });
        let weight = c.range(at("weight"), t.weight, -254, 254, Range::Weight);
        let delay = |c: &mut Checker, key: &str, v: Option<i64>| {
            let v = v.or(t.delay_ms).unwrap_or(0);
            c.range(at(key), v, 0, 3_600_000, Range::Ms) as u64
        };
        let fork_delay_ms = delay(c, "fork_delay_ms", t.fork_delay_ms);
        let terminate_delay_ms = delay(c, "terminate_delay_ms", t.terminate_delay_ms);
        let scan_interval_ms = c.range(
            at("scan_interval_ms"),
            t.scan_interval_ms,
            10,
            3_600_000,
            Range::Ms,
        );
        out.push(TrackProcess {
            name: t.name,
            process: t.process,
            args,
            param_match,
            full_command: t.full_command,
            quorum: quorum as u32,
            quorum_max,
            weight: weight as i32,
            weight_reverse: t.weight_reverse,
            fork_delay_ms,
            terminate_delay_ms,
            scan_interval_ms: scan_interval_ms as u64,
        });
    }
    out
}

fn track_scripts(c: &mut Checker, raw: Vec<RawTrackScript>) -> Vec<TrackScript> {
    let mut out: Vec<TrackScript> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("track_script[{i}].{key}");
        c.unique(at("name"), &t.name, out.iter().map(|s| &s.name));
        if t.script.trim().is_empty() {
            c.problem(at("script"), "expected a command to run with /bin/sh -c");
        }
        let interval_ms = c.range(at("interval_ms"), t.interval_ms, 10, 3_600_000, Range::Ms);
        let timeout_ms = t.timeout_ms.unwrap_or(t.interval_ms);
        let timeout_ms = c.range(at("timeout_ms"), timeout_ms, 10, 3_600_000, Range::Ms);
        let rise = c.range(at("rise"), t.rise, 1, 1000, Range::Count);
        let fall = c.range(at("fall"), t.fall, 1, 1000, Range::Count);
        let weight = c.range(at("weight"), t.weight, -254, 254, Range::Weight);
        out.push(TrackScript {
            name: t.name,
            script: t.script,
            interval_ms: interval_ms as u64,
            timeout_ms: timeout_ms as u64,
            rise: rise as u32,
            fall: fall as u32,
            weight: weight as i32,
            weight_reverse: t.weight_reverse,
            init_fail: t.init_fail,
        });
    }
    out
}

fn mysql_targets(c: &mut Checker, raw: Vec<RawMysql>) -> Vec<MysqlTarget> {
    let mut out: Vec<MysqlTarget> = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("mysql[{i}].{key}");
        c.unique(at("name"), &m.name, out.iter().map(|t| &t.name));
        let Some((user, password, password_source, host, port)) = credentials(c, &at, &m) else {
            continue;
        };
        let port = c.range(
            at("port"),
            port,
            1,
            65535,
            Range::Described("a TCP port from 1 to 65535"),
        );
        let interval_ms = c.range(
            at("interval_ms"),
            m.interval_ms,
            10,
            3_600_000,
            Range::Plain,
        );
        let timeout_ms = c.range(at("timeout_ms"), m.timeout_ms, 10, 600_000, Range::Plain);
        let rise = c.range(at("rise"), m.rise, 1, 1000, Range::Plain);
        let fall = c.range(at("fall"), m.fall, 1, 1000, Range::Plain);
        let weight = c.range(at("weight"), m.weight, -254, 254, Range::Plain);
        let replication_weight = c.range(
            at("replication_weight"),
            m.replication_weight,
            -254,
            254,
            Range::Plain,
        );
        let max_lag_s = c.range(at("max_lag_s"), m.max_lag_s, 0, 86_400, Range::Plain);
        let catch_up_ms = c.range(
            at("catch_up_timeout_ms"),
            m.catch_up_timeout_ms,
            0,
            3_600_000,
            Range::Plain,
        );
        let escalate_ms = c.range(
            at("fence_escalate_ms"),
            m.fence_escalate_ms,
            0,
            3_600_000,
            Range::Plain,
        );
        if m.tls_ca.is_some() && !m.tls {
            c.problem(at("tls_ca"), "expected only with tls = true");
        }
        if m.expect.is_some() && m.query.is_none() {
            c.problem(at("expect"), "expected only with query");
        }
        let catch_up_timeout_ms = match m.takeover.as_str() {
            "wait_catch_up" => Some(catch_up_ms as u64),
            "at_once" => None,
            other => {
                c.problem(
                    at("takeover"),
                    format!("expected \"wait_catch_up\" or \"at_once\", got {other:?}"),
                );
                None
            }
        };
        out.push(MysqlTarget {
            name: m.name,
            host,
            port: port as u16,
            user,
            password: Secret::new(password),
            password_source,
            tls: m.tls,
            tls_ca: m.tls_ca,
            interval_ms: interval_ms as u64,
            timeout_ms: timeout_ms as u64,
            rise: rise as u32,
            fall: fall as u32,
            weight: weight as i32,
            query: m.query,
            expect: m.expect,
            replication: m.replication.then_some(ReplicationCheck {
                max_lag_s: max_lag_s as u64,
                weight: replication_weight as i32,
            }),
            fence: m.fence,
            catch_up_timeout_ms,
            peer: m.peer,
            fence_escalate_ms: u64::try_from(escalate_ms).ok().filter(|ms| *ms > 0),
        });
    }
    out
}

/// A MySQL target's user, password (and where it comes from), host and port: from the table,
/// the environment or the option file's `[client]` section. None without a user.
fn credentials(
    c: &mut Checker,
    at: &impl Fn(&str) -> String,
    m: &RawMysql,
) -> Option<(String, String, PasswordSource, String, i64)> {
    let given = [
        m.password.is_some(),
        m.password_env.is_some(),
        m.option_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        c.problem(
            at("password"),
            "expected one of password, password_env and option_file, got more than one",
        );
    }
    let mut client = BTreeMap::new();
    if let Some(path) = &m.option_file {
        match read_option_file(path) {
            Ok(found) => client = found,
            Err(message) => c.problem(at("option_file"), message),
        }
    }
    let (password, source) = if let Some(p) = &m.password {
        (p.clone(), PasswordSource::ConfigFile)
    } else if let Some(var) = &m.password_env {
        match std::env::var(var) {
            Ok(p) => (p, PasswordSource::Env(var.clone())),
            Err(_) => {
                c.problem(
                    at("password_env"),
                    format!(
                        "expected the name of a set environment variable, but {var:?} is not set"
                    ),
                );
                (String::new(), PasswordSource::Env(var.clone()))
            }
        }
    } else if let Some(path) = &m.option_file {
        (
            client.get("password").cloned().unwrap_or_default(),
            PasswordSource::OptionFile(path.clone()),
        )
    } else {
        (String::new(), PasswordSource::None)
    };
    let Some(user) = m.user.clone().or_else(|| client.get("user").cloned()) else {
        c.problem(
            at("user"),
            "expected a user name, here or in the option file's [client] section",
        );
        return None;
    };
    let host = m
        .host
        .clone()
        .or_else(|| client.get("host").cloned())
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = m
        .port
        .or_else(|| client.get("port").and_then(|p| p.parse().ok()))
        .unwrap_or(3306);
    Some((user, password, source, host, port))
}

/// A `peer` names another target.
fn mysql_peers(c: &mut Checker, mysql: &[MysqlTarget]) {
    for (i, t) in mysql.iter().enumerate() {
        if let Some(peer) = &t.peer
            && (peer == &t.name || !mysql.iter().any(|o| o.name == *peer))
        {
            c.problem(
                format!("mysql[{i}].peer"),
                format!(
                    "expected the name of another [[mysql]] target (the peer's server), got {peer:?}"
                ),
            );
        }
    }
}

/// The tracked objects instances may name.
struct Tracked<'a> {
    scripts: &'a [TrackScript],
    files: &'a [TrackFile],
    processes: &'a [TrackProcess],
    mysql: &'a [MysqlTarget],
}

/// What the instances checked so far have taken: VRIDs per family, and every VIP's key.
#[derive(Default)]
struct Taken {
    /// (interface, IPv6, VRID): VRIDs are per interface and family.
    vrids: BTreeMap<(String, bool, u8), usize>,
    vips: BTreeMap<IpAddr, String>,
    routes: Vec<(Route, String)>,
}

fn instances(
    c: &mut Checker,
    raw: Vec<RawInstance>,
    interface: &str,
    tracked: &Tracked,
) -> Vec<Instance> {
    let mut taken = Taken::default();
    raw.into_iter()
        .enumerate()
        .map(|(i, inst)| instance(c, i, inst, interface, tracked, &mut taken))
        .collect()
}

fn instance(
    c: &mut Checker,
    i: usize,
    inst: RawInstance,
    interface: &str,
    tracked: &Tracked,
    taken: &mut Taken,
) -> Instance {
    let at = |key: &str| format!("instance[{i}].{key}");
    // VRIDs and VIPs are of the first VIP's family (IPv4 without VIPs).
    let ipv6 = inst
        .vips
        .first()
        .and_then(|v| parse_vip(v).ok())
        .is_some_and(|v| v.addr.is_ipv6());
    let interface = own_interface(c, i, &inst, interface);
    let (vrid, version, priority) = identity(c, i, &inst, (interface, ipv6), taken);
    let auth_pass = auth_pass(c, &at, inst.auth_pass.as_deref(), version);
    let vmac_interface = vmac_interface(c, &at, &inst, vrid, ipv6, interface);
    let dev = vmac_interface.as_deref().unwrap_or(interface);
    let (vips, vips_excluded) = addresses(c, i, &inst, ipv6, dev, taken);
    let routes = routes(c, i, &inst, taken);
    let interval_ok = match version {
        2 => {
            (1000..=255_000).contains(&inst.advert_interval_ms)
                && inst.advert_interval_ms % 1000 == 0
        }
        _ => (10..=40_950).contains(&inst.advert_interval_ms) && inst.advert_interval_ms % 10 == 0,
    };
    if !interval_ok {
        c.problem(
            at("advert_interval_ms"),
            format!(
                "expected {}, got {}",
                if version == 2 {
                    "whole seconds from 1000 to 255000 for VRRPv2"
                } else {
                    "a multiple of 10 from 10 to 40950 (VRRPv3 counts centiseconds)"
                },
                inst.advert_interval_ms
            ),
        );
    }
    let preempt_delay_ms = c.range(
        at("preempt_delay_ms"),
        inst.preempt_delay_ms,
        0,
        3_600_000,
        Range::Ms,
    );
    let (source, unicast_peers) = endpoints(c, i, &inst, ipv6);
    let track_interfaces = references(c, i, &inst, tracked);
    let garp = garp(c, &at, &inst);
    let startup_delay_ms = c.range(
        at("startup_delay_ms"),
        inst.startup_delay_ms,
        0,
        3_600_000,
        Range::Plain,
    );
    let down_timer_adverts = c.range(
        at("down_timer_adverts"),
        inst.down_timer_adverts,
        1,
        100,
        Range::Described("a count of advert intervals from 1 to 100"),
    );
    let notify_timeout_ms = c.range(
        at("notify_timeout_ms"),
        inst.notify_timeout_ms,
        10,
        600_000,
        Range::Ms,
    );
    let name = instance_name(c, i, inst.name.clone(), vrid);
    Instance {
        name,
        interface: interface.to_owned(),
        vrid,
        priority,
        state: inst.state,
        version,
        vips,
        vips_excluded,
        virtual_mac: inst.virtual_mac,
        vmac_interface,
        advert_interval_cs: (inst.advert_interval_ms.clamp(10, 40_950) / 10) as u16,
        preempt: inst.preempt,
        preempt_delay_ms: preempt_delay_ms as u64,
        source,
        unicast_peers,
        unicast_check_ttl: inst.unicast_check_ttl,
        skip_check_adv_addr: inst.skip_check_adv_addr,
        auth_pass,
        track_scripts: inst.track_scripts,
        track_interfaces,
        routes,
        track_files: inst.track_files,
        track_processes: inst.track_processes,
        track_mysql: inst.track_mysql,
        garp,
        startup_delay_ms: startup_delay_ms as u64,
        down_timer_adverts: down_timer_adverts as u32,
        lower_prio_no_advert: inst.lower_prio_no_advert,
        higher_prio_send_advert: inst.higher_prio_send_advert,
        dont_track_primary: inst.dont_track_primary,
        v3_checksum_as_v2: inst.v3_checksum_as_v2,
        notify: Notify {
            master: inst.notify_master,
            backup: inst.notify_backup,
            fault: inst.notify_fault,
            stop: inst.notify_stop,
            generic: inst.notify,
            timeout_ms: notify_timeout_ms as u64,
        },
    }
}

/// An instance's VRID (unique per family), VRRP version and priority, and the checks that
/// depend on the version alone.
fn identity(
    c: &mut Checker,
    i: usize,
    inst: &RawInstance,
    (interface, ipv6): (&str, bool),
    taken: &mut Taken,
) -> (u8, u8, u8) {
    let at = |key: &str| format!("instance[{i}].{key}");
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    let vrid = match u8::try_from(inst.vrid) {
        Ok(v) if v >= 1 => {
            if let Some(first) = taken.vrids.insert((interface.to_owned(), ipv6, v), i) {
                c.problem(
                    at("vrid"),
                    format!(
                        "expected a VRID not used by another {family} instance on {interface}, but {v} is also instance[{first}]'s"
                    ),
                );
            }
            v
        }
        _ => {
            c.problem(
                at("vrid"),
                format!("expected an integer from 1 to 255, got {}", inst.vrid),
            );
            0
        }
    };
    let version = match inst.version {
        2 if ipv6 => {
            c.problem(
                at("version"),
                "expected 3 for IPv6 VIPs (VRRPv2 is IPv4 only), got 2",
            );
            2
        }
        2 | 3 => inst.version as u8,
        other => {
            c.problem(at("version"), format!("expected 2 or 3, got {other}"));
            3
        }
    };
    let priority = match u8::try_from(inst.priority) {
        Ok(p) if p >= 1 => p,
        _ => {
            c.problem(
                at("priority"),
                format!(
                    "expected an integer from 1 to 254, or 255 for the address owner, got {}",
                    inst.priority
                ),
            );
            0
        }
    };
    if inst.v3_checksum_as_v2 && (version != 3 || ipv6) {
        c.problem(
            at("v3_checksum_as_v2"),
            "expected it only with version = 3 and IPv4 VIPs (VRRPv2 has no pseudo-header, and IPv6 always uses it)",
        );
    }
    if inst.vips.is_empty() && version == 3 {
        c.problem(
            at("vips"),
            "expected at least one VIP with version = 3 (RFC 5798 requires one, and keepalived refuses such an instance too); an instance without VIPs runs VRRPv2 (version = 2)",
        );
    }
    (vrid, version, priority)
}

/// A VRRPv2 simple-text password, zero-padded to the 8 bytes an advert carries.
fn auth_pass(
    c: &mut Checker,
    at: &impl Fn(&str) -> String,
    pass: Option<&str>,
    version: u8,
) -> Option<[u8; 8]> {
    match pass {
        None => None,
        Some(_) if version != 2 => {
            c.problem(
                at("auth_pass"),
                format!(
                    "expected no password with version = {version} (VRRPv3 has no authentication; set version = 2 to speak to a keepalived peer with auth_type PASS)"
                ),
            );
            None
        }
        Some(pass) if pass.is_empty() || pass.len() > 8 => {
            c.problem(
                at("auth_pass"),
                format!(
                    "expected 1 to 8 bytes (a VRRPv2 advert carries 8; keepalived sends the first 8 of a longer one), got {}",
                    pass.len()
                ),
            );
            None
        }
        Some(pass) => {
            let mut padded = [0u8; 8];
            padded[..pass.len()].copy_from_slice(pass.as_bytes());
            Some(padded)
        }
    }
}

/// The macvlan of a virtual MAC: named, or `vrrp.<vrid>` / `vrrp6.<vrid>`.
fn vmac_interface(
    c: &mut Checker,
    at: &impl Fn(&str) -> String,
    inst: &RawInstance,
    vrid: u8,
    ipv6: bool,
    interface: &str,
) -> Option<String> {
    if !inst.virtual_mac {
        if inst.vmac_interface.is_some() {
            c.problem(
                at("vmac_interface"),
                "expected only with virtual_mac = true",
            );
        }
        return None;
    }
    let name = inst
        .vmac_interface
        .clone()
        .unwrap_or_else(|| format!("{}.{vrid}", if ipv6 { "vrrp6" } else { "vrrp" }));
    if !is_interface_name(&name) || name == interface {
        c.problem(
            at("vmac_interface"),
            format!(
                "expected a name for a new macvlan interface (1-15 characters, no '/', ':' or space, not the interface itself), got {name:?}"
            ),
        );
    }
    Some(name)
}

/// The VIPs (all of the instance's family) and the excluded addresses (either family), each
/// once in the file, with labels that fit `dev`, the device they go on.
fn addresses(
    c: &mut Checker,
    i: usize,
    inst: &RawInstance,
    ipv6: bool,
    dev: &str,
    taken: &mut Taken,
) -> (Vec<Vip>, Vec<Vip>) {
    // iproute2's rule: a label is the device's name, or starts with it and a colon.
    let label_problem = |vip: &Vip| {
        let label = vip.label.as_ref()?;
        let dev = vip.dev.as_deref().unwrap_or(dev);
        (label.len() > 15 || (label != dev && !label.starts_with(&format!("{dev}:")))).then(|| {
            format!(
                "expected a label of at most 15 characters that is {dev:?} or starts with \"{dev}:\" (the interface the VIP is on), got {label:?}"
            )
        })
    };
    let mut admit = |c: &mut Checker, key: String, text: &str, one_family: bool| {
        // `dev` naming the interface the VIPs go on anyway says nothing.
        let parsed = parse_vip(text).map(|mut vip| {
            if vip.dev.as_deref() == Some(dev) {
                vip.dev = None;
            }
            vip
        });
        let problem = match parsed {
            Err(message) => message,
            Ok(vip) if one_family && vip.addr.is_ipv6() != ipv6 => format!(
                "expected an {} address like the instance's first VIP (one family per instance), got {text:?}",
                if ipv6 { "IPv6" } else { "IPv4" }
            ),
            Ok(vip) => match label_problem(&vip) {
                Some(m) => m,
                None => match taken.vips.insert(vip.addr, key.clone()) {
                    Some(other) => {
                        format!("expected each VIP once, but {} is also {other}", vip.addr)
                    }
                    None => return Some(vip),
                },
            },
        };
        c.problem(key, problem);
        None
    };
    let mut vips = Vec::new();
    for (j, text) in inst.vips.iter().enumerate() {
        vips.extend(admit(c, format!("instance[{i}].vips[{j}]"), text, true));
    }
    let mut excluded = Vec::new();
    for (j, text) in inst.vips_excluded.iter().enumerate() {
        excluded.extend(admit(
            c,
            format!("instance[{i}].vips_excluded[{j}]"),
            text,
            false,
        ));
    }
    (vips, excluded)
}

/// The instance's own interface, or the configuration's.
fn own_interface<'a>(
    c: &mut Checker,
    i: usize,
    inst: &'a RawInstance,
    default: &'a str,
) -> &'a str {
    match inst.interface.as_deref() {
        Some(own) if !is_interface_name(own) => {
            c.problem(
                format!("instance[{i}].interface"),
                format!(
                    "expected a network interface name of 1 to 15 characters without '/', ':' or spaces, got {own:?}"
                ),
            );
            default
        }
        Some(own) => own,
        None => default,
    }
}

/// The instance's name: as given (not empty), or after its VRID.
fn instance_name(c: &mut Checker, i: usize, name: Option<String>, vrid: u8) -> String {
    match name {
        Some(name) if name.is_empty() => {
            c.problem(format!("instance[{i}].name"), "expected a non-empty name");
            name
        }
        Some(name) => name,
        None => format!("vrid{vrid}"),
    }
}

/// The routes added while master, each once in the file (two instances cannot both own the
/// route to one destination in one table at one metric).
fn routes(c: &mut Checker, i: usize, inst: &RawInstance, taken: &mut Taken) -> Vec<Route> {
    let mut routes = Vec::new();
    for (j, text) in inst.routes.iter().enumerate() {
        let key = format!("instance[{i}].routes[{j}]");
        match super::route::parse(text) {
            Err(message) => c.problem(key, message),
            Ok(route) => match taken.routes.iter().find(|(r, _)| r.same_slot(&route)) {
                Some((_, other)) => c.problem(
                    key,
                    format!(
                        "expected each route once (destination, table and metric), but {route} is also {other}"
                    ),
                ),
                None => {
                    taken.routes.push((route.clone(), key));
                    routes.push(route);
                }
            },
        }
    }
    routes
}

/// The source of the adverts, if set, and the unicast peers: of the instance's family.
fn endpoints(
    c: &mut Checker,
    i: usize,
    inst: &RawInstance,
    ipv6: bool,
) -> (Option<IpAddr>, Vec<IpAddr>) {
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    let source = inst
        .source
        .as_ref()
        .and_then(|text| match text.parse::<IpAddr>() {
            Ok(a) if a.is_ipv6() == ipv6 => Some(a),
            _ => {
                c.problem(
                    format!("instance[{i}].source"),
                    format!(
                        "expected an {} address of this host, the source of the adverts, got {text:?}",
                        if ipv6 { "IPv6 (link-local)" } else { "IPv4" }
                    ),
                );
                None
            }
        });
    let mut peers = Vec::new();
    for (j, text) in inst.unicast_peers.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(a) if a.is_ipv6() == ipv6 && !a.is_multicast() && !a.is_unspecified() => {
                peers.push(a)
            }
            _ => c.problem(
                format!("instance[{i}].unicast_peers[{j}]"),
                format!("expected the {family} unicast address of a peer, got {text:?}"),
            ),
        }
    }
    (source, peers)
}

/// The tracked objects an instance names exist; its tracked interfaces, read.
fn references(
    c: &mut Checker,
    i: usize,
    inst: &RawInstance,
    tracked: &Tracked,
) -> Vec<TrackedInterface> {
    // (key, the names listed, what they must name, whether a name exists)
    type List<'a> = (&'a str, &'a [String], &'a str, &'a dyn Fn(&str) -> bool);
    let lists: [List; 4] = [
        (
            "track_scripts",
            &inst.track_scripts,
            "[[track_script]]",
            &|n| tracked.scripts.iter().any(|t| t.name == n),
        ),
        ("track_mysql", &inst.track_mysql, "[[mysql]] target", &|n| {
            tracked.mysql.iter().any(|t| t.name == n)
        }),
        ("track_files", &inst.track_files, "[[track_file]]", &|n| {
            tracked.files.iter().any(|t| t.name == n)
        }),
        (
            "track_processes",
            &inst.track_processes,
            "[[track_process]]",
            &|n| tracked.processes.iter().any(|t| t.name == n),
        ),
    ];
    for (key, names, what, exists) in lists {
        for (j, name) in names.iter().enumerate() {
            if !exists(name) {
                c.problem(
                    format!("instance[{i}].{key}[{j}]"),
                    format!("expected the name of a {what}, got {name:?}"),
                );
            }
        }
    }
    let mut interfaces = Vec::new();
    for (j, entry) in inst.track_interfaces.iter().enumerate() {
        let key = format!("instance[{i}].track_interfaces[{j}]");
        match tracked_interface(entry) {
            Some(t) if is_interface_name(&t.name) => interfaces.push(t),
            Some(t) => c.problem(
                key,
                format!("expected a network interface name, got {:?}", t.name),
            ),
            None => c.problem(
                key,
                format!(
                    "expected an interface name, or a table {{ name = \"eth1\", weight = -10 }} (weight -254 to 254, 0: Fault while down; optional weight_reverse = true), got {entry}"
                ),
            ),
        }
    }
    interfaces
}

/// The gratuitous ARP / NA settings; the lower-priority ones default to the master ones.
fn garp(c: &mut Checker, at: &impl Fn(&str) -> String, inst: &RawInstance) -> Garp {
    let mut bounded =
        |key: &str, v: i64, max: i64| c.range(at(key), v, 0, max, Range::Plain) as u64;
    let delay_ms = bounded("garp_master_delay_ms", inst.garp_master_delay_ms, 3_600_000);
    let repeat = bounded("garp_master_repeat", inst.garp_master_repeat, 1_000) as u32;
    let refresh_ms = bounded(
        "garp_master_refresh_ms",
        inst.garp_master_refresh_ms,
        3_600_000,
    );
    let refresh_repeat = bounded(
        "garp_master_refresh_repeat",
        inst.garp_master_refresh_repeat,
        1_000,
    ) as u32;
    let interval_ms = bounded("garp_interval_ms", inst.garp_interval_ms, 10_000);
    let lower_prio_delay_ms = match inst.garp_lower_prio_delay_ms {
        Some(v) => bounded("garp_lower_prio_delay_ms", v, 3_600_000),
        None => delay_ms,
    };
    let lower_prio_repeat = match inst.garp_lower_prio_repeat {
        Some(v) => bounded("garp_lower_prio_repeat", v, 1_000) as u32,
        None => repeat,
    };
    Garp {
        delay_ms,
        repeat,
        refresh_ms,
        refresh_repeat,
        interval_ms,
        lower_prio_repeat,
        lower_prio_delay_ms,
    }
}

fn sync_groups(c: &mut Checker, raw: Vec<RawSyncGroup>, instances: &[Instance]) -> Vec<SyncGroup> {
    let mut out: Vec<SyncGroup> = Vec::new();
    for (g, group) in raw.into_iter().enumerate() {
        c.unique(
            format!("sync_group[{g}].name"),
            &group.name,
            out.iter().map(|s| &s.name),
        );
        for (j, member) in group.instances.iter().enumerate() {
            let key = format!("sync_group[{g}].instances[{j}]");
            if !instances.iter().any(|i| i.name == *member) {
                c.problem(
                    key,
                    format!("expected the name of an [[instance]], got {member:?}"),
                );
            } else if let Some(other) = out.iter().find(|s| s.instances.contains(member)) {
                c.problem(
                    key,
                    format!(
                        "expected an instance in one sync group only, but {member:?} is also in {:?}",
                        other.name
                    ),
                );
            }
        }
        let timeout_ms = c.range(
            format!("sync_group[{g}].notify_timeout_ms"),
            group.notify_timeout_ms,
            10,
            600_000,
            Range::Ms,
        );
        out.push(SyncGroup {
            name: group.name,
            instances: group.instances,
            notify: Notify {
                master: group.notify_master,
                backup: group.notify_backup,
                fault: group.notify_fault,
                stop: group.notify_stop,
                generic: group.notify,
                timeout_ms: timeout_ms as u64,
            },
        });
    }
    out
}

/// Every command xvrrp runs with `/bin/sh -c`, with its key path.
fn script_commands<'a>(
    track_scripts: &'a [TrackScript],
    instances: &'a [Instance],
    groups: &'a [SyncGroup],
) -> Vec<(String, &'a str)> {
    let mut all: Vec<(String, &str)> = track_scripts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("track_script[{i}].script"), t.script.as_str()))
        .collect();
    let notifying = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| (format!("instance[{i}]"), &inst.notify))
        .chain(
            groups
                .iter()
                .enumerate()
                .map(|(g, group)| (format!("sync_group[{g}]"), &group.notify)),
        );
    for (at, n) in notifying {
        for (key, cmd) in [
            ("notify_master", &n.master),
            ("notify_backup", &n.backup),
            ("notify_fault", &n.fault),
            ("notify_stop", &n.stop),
            ("notify", &n.generic),
        ] {
            if let Some(cmd) = cmd {
                all.push((format!("{at}.{key}"), cmd.as_str()));
            }
        }
    }
    all
}

/// `[write_lease]`, checked.
fn write_lease(c: &mut Checker, w: RawWriteLease, mysql: &[MysqlTarget]) -> Option<WriteLease> {
    let mut problem = |key: String, message: String| c.problem(key, message);
    let at = |key: &str| format!("write_lease.{key}");
    let mut addr = |key: &str, text: &str| match text.parse::<std::net::SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(a),
        _ => {
            problem(
                at(key),
                format!(
                    "expected ADDRESS:PORT of a host (not 0.0.0.0 or port 0), such as \"192.0.2.1:5405\", got {text:?}"
                ),
            );
            None
        }
    };
    let listen = addr("listen", &w.listen);
    let peer = addr("peer", &w.peer);
    let witness = match &w.witness {
        Some(text) => Some(addr("witness", text)?),
        None => None,
    };
    let key_env = w.key_env.clone();
    let key = match (w.key, w.key_env) {
        (Some(k), None) => Some((k, true)),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(k) => Some((k, false)),
            Err(_) => {
                problem(
                    at("key_env"),
                    format!(
                        "expected the name of a set environment variable, but {var:?} is not set"
                    ),
                );
                None
            }
        },
        _ => {
            problem(at("key"), "expected one of key and key_env".into());
            None
        }
    };
    if let Some((k, _)) = &key
        && k.len() < 16
    {
        problem(
            at("key"),
            format!(
                "expected a shared key of at least 16 bytes, got {}",
                k.len()
            ),
        );
    }
    let fence_lead_ms = mysql
        .iter()
        .filter(|t| t.fence)
        .map(|t| 2 * t.timeout_ms)
        .max()
        .unwrap_or(0);
    let lease_ms = match u32::try_from(w.lease_ms) {
        Ok(ms) if (100..=60_000).contains(&ms) && u64::from(ms) >= 3 * fence_lead_ms => Some(ms),
        _ => {
            problem(
                at("lease_ms"),
                format!(
                    "expected 100 to 60000 and at least 3 x the time a fence may take (2 x the largest timeout_ms of a fenced [[mysql]] target: {fence_lead_ms}), got {}",
                    w.lease_ms
                ),
            );
            None
        }
    };
    let (key, key_in_file) = key?;
    Some(WriteLease {
        listen: listen?,
        peer: peer?,
        witness,
        key: Secret::new(key),
        key_in_file,
        key_env,
        lease_ms: lease_ms?,
    })
}

/// A `track_interfaces` entry: a name (Fault while down), or `{ name, weight, weight_reverse }`.
fn tracked_interface(entry: &toml::Value) -> Option<TrackedInterface> {
    match entry {
        toml::Value::String(name) => Some(TrackedInterface {
            name: name.clone(),
            weight: 0,
            weight_reverse: false,
        }),
        toml::Value::Table(t) => {
            if t.keys()
                .any(|k| !["name", "weight", "weight_reverse"].contains(&k.as_str()))
            {
                return None;
            }
            let weight = match t.get("weight") {
                None => 0,
                Some(w) => w.as_integer().filter(|w| (-254..=254).contains(w))?,
            };
            let weight_reverse = match t.get("weight_reverse") {
                None => false,
                Some(r) => r.as_bool()?,
            };
            Some(TrackedInterface {
                name: t.get("name")?.as_str()?.to_owned(),
                weight: weight as i32,
                weight_reverse,
            })
        }
        _ => None,
    }
}

/// What is wrong with `name` for a table whose names must be unique and non-empty, if anything:
/// `taken` are the names of the tables before it.
fn unique_name<'a>(name: &str, mut taken: impl Iterator<Item = &'a String>) -> Option<String> {
    (name.is_empty() || taken.any(|n| n == name))
        .then(|| format!("expected a unique, non-empty name, got {name:?}"))
}

/// Whether `name` can name a network interface.
pub(super) fn is_interface_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && !name.contains(['/', ':', ' '])
}

fn parse_vip(text: &str) -> Result<Vip, String> {
    let expected = "expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\"";
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("");
    let (mut dev, mut label) = (None, None);
    let rest: Vec<&str> = words.collect();
    for pair in rest.chunks(2) {
        let slot = match pair {
            ["dev", _] if dev.is_none() => &mut dev,
            ["label", _] if label.is_none() => &mut label,
            _ => {
                return Err(format!(
                    "{expected}, then optionally \"dev INTERFACE\" and \"label NAME\", got {text:?}"
                ));
            }
        };
        *slot = Some(pair[1].to_owned());
    }
    if let Some(d) = dev.as_deref().filter(|d| !is_interface_name(d)) {
        return Err(format!(
            "{expected}; after dev an interface name (1 to 15 characters, no '/', ':' or space), got {d:?}"
        ));
    }
    let text = first;
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{expected}, got {text:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("{expected}, got the prefix {p:?} (0-{max})")),
        },
    };
    let unusable = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.is_loopback(),
    };
    if unusable {
        return Err(format!("{expected} that is a unicast address, got {addr}"));
    }
    if label.is_some() && addr.is_ipv6() {
        return Err(format!(
            "{expected}; a label only on IPv4 (the kernel has no IPv6 address labels), got {text:?} with a label"
        ));
    }
    Ok(Vip {
        addr,
        prefix,
        dev,
        label,
    })
}

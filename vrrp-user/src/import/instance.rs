//! One keepalived `vrrp_instance` block as an xvrrp `[[instance]]` table.

use super::*;

/// What a vrrp_instance block says, gathered statement by statement before its table is
/// finished (some keys depend on others: the version on the addresses' family, the password
/// on the version).
struct Draft {
    interface: String,
    vips: Vec<String>,
    excluded: Vec<String>,
    routes: Vec<String>,
    scripts: Vec<String>,
    mysql: Vec<String>,
    files: Vec<String>,
    procs: Vec<String>,
    track_ifaces: Vec<String>,
    peers: Vec<String>,
    version: String,
    garp: Vec<(String, String)>,
    skip_check: bool,
    vmac: bool,
    native_ipv6: bool,
    v3_plain: bool,
    /// authentication { auth_type ..., auth_pass ... }: where, the type, the password.
    auth: Option<(String, String, String)>,
}

pub(super) fn instance(
    node: &Node,
    name: &str,
    g: &Globals,
    (checks, processes): (&mut BTreeMap<String, Check>, &mut BTreeMap<String, Table>),
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> (String, Table) {
    let mut t = Table::new("instance");
    t.set("name", q(name));
    t.origin = format!("vrrp_instance {name} ({})", node.at);
    for flag in &g.flags {
        t.set(flag, "true".into());
    }
    let mut d = Draft {
        interface: String::new(),
        vips: Vec::new(),
        excluded: Vec::new(),
        routes: Vec::new(),
        scripts: Vec::new(),
        mysql: Vec::new(),
        files: Vec::new(),
        procs: Vec::new(),
        track_ifaces: Vec::new(),
        peers: Vec::new(),
        // keepalived's default is VRRPv2: keep it, so that the peers still running keepalived
        // during the migration understand each other.
        version: g.version.clone().unwrap_or_else(|| "2".into()),
        garp: g.garp.clone(),
        skip_check: g.skip_check_adv_addr,
        vmac: false,
        native_ipv6: false,
        v3_plain: g.v3_checksum_as_v2,
        auth: None,
    };
    let who = format!("vrrp_instance {name}");
    for c in node.children() {
        rest_of_line(c, &who, dropped);
        if !setting(c, &mut t, &mut d, &who, changed, dropped)
            && !addresses(c, &mut d, &who, dropped)
        {
            tracking(c, &mut d, &who, (checks, processes), changed, dropped);
        }
    }
    finish(node, &who, t, d, changed, dropped)
}

/// A statement that sets a key of the instance; false if `c` is none of those.
fn setting(
    c: &Node,
    t: &mut Table,
    d: &mut Draft,
    who: &str,
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> bool {
    let at = &c.at;
    let arg = c.arg(1).unwrap_or("");
    match c.key() {
        "interface" => d.interface = arg.to_owned(),
        "state" => t.set(
            "state",
            q(if arg.eq_ignore_ascii_case("master") {
                "master"
            } else {
                "backup"
            }),
        ),
        "virtual_router_id" => t.set("vrid", arg.to_owned()),
        "priority" => t.set("priority", arg.to_owned()),
        "advert_int" => {
            if let Some(v) = ms(arg) {
                t.set("advert_interval_ms", v.to_string());
            }
        }
        "version" => d.version = arg.to_owned(),
        "nopreempt" => t.set("preempt", "false".into()),
        "preempt" => t.set("preempt", "true".into()),
        "preempt_delay" => {
            if let Some(v) = ms(arg) {
                t.set("preempt_delay_ms", v.to_string());
            }
        }
        // keepalived takes (and ignores) a prefix here too.
        "unicast_src_ip" | "mcast_src_ip" => {
            t.set("source", q(arg.split('/').next().unwrap_or(arg)))
        }
        "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
            let command = c.words[1..].join(" ");
            if command.contains("read_only") {
                changed.push(format!(
                    "{at}: {who}: {}: this script toggles read_only; xvrrp can do it itself, in order with the VIP moves ([[mysql]] fence = true); kept as is",
                    c.key()
                ));
            }
            t.set(c.key(), q(&command));
        }
        "use_vmac" => {
            d.vmac = true;
            if let Some(n) = c.arg(1) {
                t.set("vmac_interface", q(n));
            }
        }
        "vmac_xmit_base" => {}
        "garp_master_delay" => d.garp.push(("garp_master_delay_ms".into(), arg.into())),
        "garp_master_repeat" => d.garp.push(("garp_master_repeat".into(), arg.into())),
        "garp_master_refresh" => d.garp.push(("garp_master_refresh_ms".into(), arg.into())),
        "garp_master_refresh_repeat" => {
            d.garp.push(("garp_master_refresh_repeat".into(), arg.into()))
        }
        "garp_interval" | "gna_interval" => d.garp.push(("garp_interval_ms".into(), arg.into())),
        "authentication" => {
            let get = |key: &str| {
                c.children()
                    .iter()
                    .find(|a| a.key() == key)
                    .map(|a| a.words[1..].join(" "))
                    .unwrap_or_default()
            };
            d.auth = Some((at.to_string(), get("auth_type"), get("auth_pass")));
        }
        "skip_check_adv_addr" => d.skip_check = true,
        "garp_lower_prio_delay" => d.garp.push(("garp_lower_prio_delay_ms".into(), arg.into())),
        "garp_lower_prio_repeat" => d.garp.push(("garp_lower_prio_repeat".into(), arg.into())),
        "down_timer_adverts" => d.garp.push(("down_timer_adverts".into(), arg.into())),
        "dont_track_primary" | "lower_prio_no_advert" | "higher_prio_send_advert" => {
            if keepalived_bool(c.arg(1)) {
                t.set(c.key(), "true".into());
            }
        }
        "no_accept" => dropped.push(format!(
            "{at}: {who}: no_accept: xvrrp always accepts traffic to the VIPs (RFC 5798 Accept_Mode True); it adds no firewall rules"
        )),
        "mcast_dst_ip" => dropped.push(format!(
            "{at}: {who}: mcast_dst_ip: xvrrp sends adverts to 224.0.0.18 / ff02::12 only, so peers on {arg} would not hear it; use unicast_peer on both sides instead"
        )),
        "unicast_ttl" => changed.push(format!(
            "{at}: {who}: unicast_ttl {arg}: xvrrp sends unicast adverts with TTL 255, which keepalived peers take whatever their unicast_ttl"
        )),
        "check_unicast_src" => changed.push(format!(
            "{at}: {who}: check_unicast_src: xvrrp always takes unicast adverts from its configured peers only"
        )),
        // An IPv6 instance: VRRPv3 (with no VIP keepalived refuses it, and so does the
        // check of the converted config).
        "native_ipv6" => d.native_ipv6 = true,
        // Newer keepalived (2.2.7 does not know it).
        "v3_checksum_as_v2" => d.v3_plain = keepalived_bool(c.arg(1)),
        "debug" | "accept" => {}
        "smtp_alert" => dropped.push(format!(
            "{at}: {who}: smtp_alert: no e-mail; use notify scripts or Prometheus alerts"
        )),
        _ => return false,
    }
    true
}

/// The address blocks (VIPs, excluded addresses, unicast peers); false if `c` is none.
fn addresses(c: &Node, d: &mut Draft, who: &str, dropped: &mut Vec<String>) -> bool {
    match c.key() {
        "unicast_peer" => {
            for p in c.children() {
                // keepalived takes (and ignores) a prefix on a peer's address.
                if let Some(addr) = p.arg(0) {
                    d.peers
                        .push(addr.split('/').next().unwrap_or(addr).to_owned());
                }
                if p.words.len() > 1 {
                    dropped.push(format!(
                        "{}: {who}: unicast_peer {}: options after the address are not supported",
                        p.at,
                        p.words.join(" ")
                    ));
                }
            }
        }
        "virtual_ipaddress" => {
            for v in c.children() {
                if let Some(vip) = address(v, &d.interface, who, dropped) {
                    d.vips.push(vip);
                }
            }
        }
        "virtual_routes" => {
            for r in c.children() {
                if let Some(route) = super::route(r, who, dropped) {
                    d.routes.push(route);
                }
            }
        }
        // Added with the VIPs, never listed in adverts (a keepalived peer drops adverts
        // whose list differs): either family.
        "virtual_ipaddress_excluded" => {
            for v in c.children() {
                if let Some(vip) = address(v, &d.interface, who, dropped) {
                    d.excluded.push(vip);
                }
            }
        }
        _ => return false,
    }
    true
}

/// The tracking blocks (scripts, files, processes, interfaces); anything else is reported.
fn tracking(
    c: &Node,
    d: &mut Draft,
    who: &str,
    (checks, processes): (&mut BTreeMap<String, Check>, &mut BTreeMap<String, Table>),
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) {
    match c.key() {
        "track_script" => {
            for s in c.children() {
                for (script, weight) in tracked(s) {
                    let Some(check) = checks.get(&script).cloned() else {
                        dropped.push(format!(
                            "{}: {who}: track_script {script}: no vrrp_script of that name",
                            s.at
                        ));
                        continue;
                    };
                    // A weight given here overrides the script's: a copy with that weight.
                    let script = match weight {
                        None => script,
                        Some(w) => {
                            let mut c2 = check.clone();
                            let reverse = match &c2 {
                                Check::Script(_) => reversed(s),
                                Check::Mysql(_) => {
                                    if reversed(s) == Some(true) {
                                        dropped.push(format!(
                                                "{}: {who}: track_script {script}: weight reverse is not supported for a native MySQL probe; the weight is applied as written",
                                                s.at
                                            ));
                                    }
                                    None
                                }
                            };
                            let (Check::Script(tt) | Check::Mysql(tt)) = &mut c2;
                            let copy = weighted_copy(tt, &script, w, reverse);
                            checks.insert(copy.clone(), c2);
                            changed.push(format!(
                                    "{}: {who}: track_script {script} weight {w}: xvrrp has weights on the check, so it tracks a copy named {copy}",
                                    s.at
                                ));
                            copy
                        }
                    };
                    match checks.get(&script) {
                        Some(Check::Mysql(_)) => d.mysql.push(script),
                        _ => d.scripts.push(script),
                    }
                }
            }
        }
        "track_file" => {
            for f in c.children() {
                for (file, weight) in tracked(f) {
                    if weight.is_some() {
                        dropped.push(format!(
                                "{}: {who}: track_file {file}: the weight here is not supported; the track_file's own weight applies",
                                f.at
                            ));
                    }
                    d.files.push(file);
                }
            }
        }
        "track_process" => {
            for p in c.children() {
                for (process, weight) in tracked(p) {
                    let Some(table) = processes.get(&process).cloned() else {
                        dropped.push(format!(
                                "{}: {who}: track_process {process}: no vrrp_track_process of that name",
                                p.at
                            ));
                        continue;
                    };
                    // A weight given here overrides the process's: a copy with that weight.
                    let process = match weight {
                        None => process,
                        Some(w) => {
                            let mut t2 = table;
                            let copy = weighted_copy(&mut t2, &process, w, reversed(p));
                            processes.insert(copy.clone(), t2);
                            changed.push(format!(
                                    "{}: {who}: track_process {process} weight {w}: xvrrp has weights on the tracked process, so it tracks a copy named {copy}",
                                    p.at
                                ));
                            copy
                        }
                    };
                    d.procs.push(process);
                }
            }
        }
        "track_interface" => {
            for i in c.children() {
                for (iface, weight) in tracked(i) {
                    // keepalived's weight 0 is Fault, as a bare name is.
                    let entry = match weight.filter(|w| *w != 0) {
                        None if reversed(i) != Some(true) => q(&iface),
                        w => {
                            let mut e =
                                format!("{{ name = {}, weight = {}", q(&iface), w.unwrap_or(0));
                            if reversed(i) == Some(true) {
                                e.push_str(", weight_reverse = true");
                            }
                            e + " }"
                        }
                    };
                    d.track_ifaces.push(entry);
                }
            }
        }
        _ => dropped.push(unknown_here(c, "in vrrp_instance", who)),
    }
}

/// The instance's table, from what its statements said; the interface it runs on (empty: left
/// out).
fn finish(
    node: &Node,
    who: &str,
    mut t: Table,
    mut d: Draft,
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> (String, Table) {
    // A mix of families: xvrrp instances are one family each (as VRRPv3 says).
    // "ADDR/PFX [label L]": IPv6 when the address has a colon.
    let v6 = |vip: &str| {
        vip.split_whitespace()
            .next()
            .is_some_and(|a| a.contains(':'))
    };
    if let Some(first) = d.vips.first().cloned() {
        let v6_first = v6(&first);
        let (keep, other): (Vec<String>, Vec<String>) =
            d.vips.iter().cloned().partition(|s| v6(s) == v6_first);
        if !other.is_empty() {
            dropped.push(format!(
                "{}: {who}: {} is of the other address family than {}; an xvrrp instance has one family: add an instance with the same VRID for it",
                node.at,
                other.join(", "),
                first
            ));
        }
        d.vips = keep;
    }
    if d.interface.is_empty() {
        dropped.push(format!(
            "{}: {who}: no interface; the instance is left out",
            node.at
        ));
    }
    // VRRPv2 counts whole seconds: keepalived rounds a fraction; so does the import.
    if d.version == "2"
        && let Some(v) = t
            .get("advert_interval_ms")
            .and_then(|v| v.parse::<i64>().ok())
    {
        // Saturating: a huge advert_int (found by the fuzzer) must not overflow; check-config
        // then refuses the value.
        let whole = (v.saturating_add(999) / 1000).max(1).saturating_mul(1000);
        if whole != v {
            changed.push(format!(
                "{}: {who}: advert_int {}s with VRRPv2 is rounded to {}s as keepalived does (version 3 allows fractions)",
                node.at,
                v as f64 / 1000.0,
                whole / 1000
            ));
            t.set("advert_interval_ms", whole.to_string());
        }
    }
    let auth_pass = auth_pass(who, d.auth.take(), &d.version, changed, dropped);
    // keepalived runs IPv6 instances as VRRPv3 whatever vrrp_version says (v2 is IPv4 only).
    let ipv6 = d.vips.first().map_or(d.native_ipv6, |vip| v6(vip));
    if ipv6 && d.version == "2" {
        changed.push(format!(
            "{}: {who}: IPv6 runs VRRPv3 (as keepalived runs it under vrrp_version 2)",
            node.at
        ));
        d.version = "3".into();
    }
    t.set("version", d.version.clone());
    if let Some(pass) = auth_pass {
        t.set("auth_pass", pass);
    }
    if d.v3_plain {
        if d.version == "3" && !ipv6 {
            t.set("v3_checksum_as_v2", "true".into());
        } else {
            dropped.push(format!(
                "{}: {who}: v3_checksum_as_v2: only VRRPv3 over IPv4 has the choice; ignored, as keepalived ignores it",
                node.at
            ));
        }
    }
    if d.vips.is_empty() && d.version == "2" && !d.interface.is_empty() {
        changed.push(format!(
            "{}: {who}: no virtual_ipaddress: it sends adverts and runs its notify scripts only, as keepalived runs it with VRRPv2",
            node.at
        ));
    }
    let interface = std::mem::take(&mut d.interface);
    write_lists(&mut t, d);
    (interface, t)
}

/// The VRRPv2 password of an `authentication` block (`at`, auth_type, auth_pass), as a TOML
/// string, if it can be carried.
fn auth_pass(
    who: &str,
    auth: Option<(String, String, String)>,
    version: &str,
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> Option<String> {
    let (at, kind, pass) = auth?;
    match kind.to_ascii_uppercase().as_str() {
        _ if version != "2" => dropped.push(format!(
            "{at}: {who}: authentication: VRRPv3 has none (keepalived ignores it with version 3 too)"
        )),
        "PASS" if !pass.is_empty() => {
            // keepalived sends the first 8 bytes of a longer password.
            let mut end = pass.len().min(8);
            while !pass.is_char_boundary(end) {
                end -= 1;
            }
            if end < pass.len() {
                changed.push(format!(
                    "{at}: {who}: auth_pass is longer than 8 bytes; keepalived uses its first 8, and so does the import"
                ));
            }
            return Some(q(&pass[..end]));
        }
        "AH" => dropped.push(format!(
            "{at}: {who}: authentication: auth_type AH (IPsec AH) is not supported; remove it on the keepalived peers during the migration, or they reject xvrrp's adverts"
        )),
        _ => dropped.push(format!(
            "{at}: {who}: authentication: expected auth_type PASS with an auth_pass, or AH; left out"
        )),
    }
    None
}

/// The addresses, tracked objects and announcement settings, in the table's order.
fn write_lists(t: &mut Table, d: Draft) {
    t.set("vips", list(&d.vips));
    if !d.routes.is_empty() {
        t.set("routes", list(&d.routes));
    }
    if !d.excluded.is_empty() {
        t.set("vips_excluded", list(&d.excluded));
    }
    if d.vmac {
        t.set("virtual_mac", "true".into());
    }
    for (key, items) in [
        ("unicast_peers", &d.peers),
        ("track_scripts", &d.scripts),
        ("track_mysql", &d.mysql),
        ("track_files", &d.files),
        ("track_processes", &d.procs),
    ] {
        if !items.is_empty() {
            t.set(key, list(items));
        }
    }
    if !d.track_ifaces.is_empty() {
        t.set(
            "track_interfaces",
            format!("[{}]", d.track_ifaces.join(", ")),
        );
    }
    if d.skip_check {
        t.set("skip_check_adv_addr", "true".to_owned());
    }
    for (key, value) in d.garp {
        let v = if key.ends_with("_ms") {
            ms(&value)
        } else {
            value.parse().ok()
        };
        if let Some(v) = v {
            t.set(&key, v.to_string());
        }
    }
}

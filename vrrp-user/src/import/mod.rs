//! `xvrrp import-keepalived`: a keepalived.conf turned into xvrrp configs (one per interface,
//! since one xvrrp daemon serves one interface), with a list of what could not be carried over
//! and why.
//!
//! The VRRP side only: `global_defs` (what applies), `vrrp_script`, `vrrp_track_file`,
//! `vrrp_sync_group`, `vrrp_instance` with its addresses, tracking, unicast peers, notify
//! scripts and gratuitous ARP settings. A `vrrp_script` that runs `mysqladmin ping` (or
//! `mariadb-admin`, or `mysql -e QUERY`) becomes a native `[[mysql]]` probe. Pure: text in,
//! text out; only `include` reads other files.

mod instance;
mod parse;

use instance::instance;
pub use parse::{parse_file, parse_text};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// A statement of keepalived's configuration: its words, and the block that follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub words: Vec<String>,
    pub block: Option<Vec<Node>>,
    /// Where it is: "file:line".
    pub at: String,
    /// Its block was still open at the end of the file: keepalived closes it there (and
    /// warns), and so does the import.
    pub closed_by_eof: bool,
}

impl Node {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{at}: {message}")]
    Syntax { at: String, message: String },
}

/// What the import produced.
#[derive(Debug, Default)]
pub struct Imported {
    /// One config per interface, in the order the instances came.
    pub files: Vec<ImportedFile>,
    /// What changed on the way (carried over, but differently).
    pub changed: Vec<String>,
    /// What could not be carried over, and why.
    pub dropped: Vec<String>,
}

#[derive(Debug)]
pub struct ImportedFile {
    pub interface: String,
    /// The xvrrp configuration (TOML).
    pub toml: String,
    /// Where each of its `[[instance]]` tables comes from, in order: "vrrp_instance X
    /// (k.conf:3)".
    pub instances: Vec<String>,
}

impl ImportedFile {
    /// Names the keepalived statement behind a `check-config` problem with this file: a
    /// problem with `instance[N]` gets " (from vrrp_instance X (k.conf:3))".
    pub fn locate(&self, problem: &str) -> String {
        // The instance the problem is about: the first one it names.
        let origin = self
            .instances
            .iter()
            .enumerate()
            .filter_map(|(i, o)| problem.find(&format!("instance[{i}]")).map(|at| (at, o)))
            .min_by_key(|(at, _)| *at)
            .map(|(_, o)| o);
        match origin {
            Some(o) => format!("{problem} (from {o})"),
            None => problem.to_owned(),
        }
    }
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// Seconds (possibly fractional) as milliseconds.
fn ms(s: &str) -> Option<i64> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * 1000.0).round() as i64)
}

/// A `[[...]]` table being written: keys in order.
#[derive(Debug, Default, Clone)]
struct Table {
    name: String,
    keys: Vec<(String, String)>,
    /// The keepalived statement it comes from, for messages: "vrrp_instance X (k.conf:3)".
    origin: String,
}

impl Table {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            keys: Vec::new(),
            origin: String::new(),
        }
    }

    /// Sets `key` to `value`, a TOML value as written. Anything that is not exactly one TOML
    /// value (a number with trailing garbage from the keepalived file, a line break that would
    /// open a table) is written as a string instead, so that the file stays TOML and
    /// `check-config` names the key.
    fn set(&mut self, key: &str, value: String) {
        // keepalived reads `051` as 51; TOML does not allow the leading zero.
        let value = if value.len() > 1
            && value.starts_with('0')
            && value.bytes().all(|b| b.is_ascii_digit())
        {
            let trimmed = value.trim_start_matches('0');
            if trimmed.is_empty() {
                "0".to_owned()
            } else {
                trimmed.to_owned()
            }
        } else {
            value
        };
        let one_value = format!("x = {value}")
            .parse::<toml::Table>()
            .is_ok_and(|t| t.len() == 1);
        let value = if one_value { value } else { q(&value) };
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.keys.push((key.into(), value)),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "\n[[{}]]", self.name);
        for (k, v) in &self.keys {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
}

/// A vrrp_script: kept as a script, or turned into a MySQL probe.
#[derive(Debug, Clone)]
enum Check {
    Script(Table),
    Mysql(Table),
}

/// A MySQL probe from a `mysqladmin ping` / `mysql -e` command line, if it is one.
fn mysql_probe(name: &str, command: &str, at: &str, changed: &mut Vec<String>) -> Option<Table> {
    let mut words = shell_words(command);
    // `sh -c "..."` / `bash -c '...'`
    if words.len() == 3
        && ["sh", "bash", "/bin/sh", "/bin/bash"].contains(&words[0].as_str())
        && words[1] == "-c"
    {
        words = shell_words(&words[2]);
    }
    let program = Path::new(words.first()?)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let admin = matches!(program.as_str(), "mysqladmin" | "mariadb-admin");
    let client = matches!(program.as_str(), "mysql" | "mariadb");
    if !admin && !client {
        return None;
    }
    let mut t = Table::new("mysql");
    t.set("name", q(name));
    let (mut user, mut password, mut host, mut port, mut query, mut option_file) =
        (None, None, None, None, None, None);
    let mut pinged = false;
    let mut it = words.iter().skip(1).peekable();
    while let Some(w) = it.next() {
        let mut value = |short: &str, long: &str| -> Option<String> {
            if let Some(v) = w.strip_prefix(&format!("{long}=")) {
                return Some(v.to_owned());
            }
            if w == long || w == short {
                return it.next().cloned();
            }
            w.strip_prefix(short)
                .filter(|v| !v.is_empty() && short.len() == 2)
                .map(str::to_owned)
        };
        if let Some(v) = value("-u", "--user") {
            user = Some(v);
        } else if w.starts_with("--password=") || (w.starts_with("-p") && w.len() > 2) {
            password = Some(
                w.strip_prefix("--password=")
                    .or_else(|| w.strip_prefix("-p"))
                    .unwrap_or_default()
                    .to_owned(),
            );
        } else if let Some(v) = value("-h", "--host") {
            host = Some(v);
        } else if let Some(v) = value("-P", "--port") {
            port = Some(v);
        } else if let Some(v) = value("-e", "--execute") {
            query = Some(v);
        } else if let Some(v) = w
            .strip_prefix("--defaults-file=")
            .or_else(|| w.strip_prefix("--defaults-extra-file="))
        {
            option_file = Some(v.to_owned());
        } else if let Some(v) = value("-S", "--socket") {
            changed.push(format!(
                "{at}: vrrp_script {name}: the socket {v} becomes TCP to 127.0.0.1 (xvrrp probes over TCP only)"
            ));
        } else if w == "ping" || w == "status" {
            pinged = true;
        }
    }
    if (admin && !pinged) || (client && query.is_none()) {
        return None;
    }
    t.set("host", q(host.as_deref().unwrap_or("127.0.0.1")));
    if let Some(port) = port.and_then(|p| p.parse::<u16>().ok()) {
        t.set("port", port.to_string());
    }
    match (&option_file, &user) {
        (Some(f), _) => {
            t.set("option_file", q(f));
            if let Some(u) = &user {
                t.set("user", q(u));
            }
        }
        (None, Some(u)) => t.set("user", q(u)),
        (None, None) => {
            t.set("user", q("xvrrp_probe"));
            changed.push(format!(
                "{at}: vrrp_script {name}: the command names no user (mysqladmin ping succeeds even when access is denied); the native probe logs in as 'xvrrp_probe': CREATE USER 'xvrrp_probe'@'127.0.0.1' IDENTIFIED BY '...'; then set password_env"
            ));
        }
    }
    if let Some(p) = password {
        t.set("password", q(&p));
        changed.push(format!(
            "{at}: vrrp_script {name}: its password is now in the xvrrp config, which must stay mode 0600 (xvrrp refuses it readable by others); password_env or option_file keep it out"
        ));
    }
    if let Some(query) = query {
        t.set("query", q(&query));
    }
    changed.push(format!(
        "{at}: vrrp_script {name}: `{program}` becomes a native MySQL probe ([[mysql]] {name}): a persistent connection, no fork per check, a dead server seen at once; fencing is off as keepalived had none (fence = true sets read_only on the backup)"
    ));
    Some(t)
}

/// Words of a shell command line: whitespace-separated, with '...' and "..." quoting.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// keepalived's global settings that become instance defaults.
#[derive(Debug, Default)]
struct Globals {
    version: Option<String>,
    garp: Vec<(String, String)>,
    /// `script_user USER [GROUP]`, as `user[:group]`.
    script_user: Option<String>,
    script_security: bool,
    skip_check_adv_addr: bool,
    v3_checksum_as_v2: bool,
    /// Instance booleans set for every instance (`lower_prio_no_advert`, ...).
    flags: Vec<String>,
}

/// keepalived's optional `<BOOL>` argument: absent means true.
fn keepalived_bool(arg: Option<&str>) -> bool {
    !matches!(
        arg.map(str::to_ascii_lowercase).as_deref(),
        Some("off" | "false" | "no" | "0")
    )
}

fn globals(node: &Node, changed: &mut Vec<String>, dropped: &mut Vec<String>) -> Globals {
    let mut g = Globals::default();
    for c in node.children() {
        let at = &c.at;
        let arg = c.arg(1).unwrap_or("");
        rest_of_line(c, "global_defs", dropped);
        match c.key() {
            "vrrp_version" => g.version = Some(arg.to_owned()),
            "vrrp_garp_master_delay" => g.garp.push(("garp_master_delay_ms".into(), arg.into())),
            "vrrp_garp_master_repeat" => g.garp.push(("garp_master_repeat".into(), arg.into())),
            "vrrp_garp_master_refresh" => {
                g.garp.push(("garp_master_refresh_ms".into(), arg.into()))
            }
            "vrrp_garp_master_refresh_repeat" => {
                g.garp.push(("garp_master_refresh_repeat".into(), arg.into()))
            }
            "vrrp_garp_interval" | "vrrp_gna_interval" => {
                g.garp.push(("garp_interval_ms".into(), arg.into()))
            }
            "vrrp_garp_lower_prio_delay" => {
                g.garp.push(("garp_lower_prio_delay_ms".into(), arg.into()))
            }
            "vrrp_garp_lower_prio_repeat" => {
                g.garp.push(("garp_lower_prio_repeat".into(), arg.into()))
            }
            "vrrp_startup_delay" => g.garp.push(("startup_delay_ms".into(), arg.into())),
            "vrrp_lower_prio_no_advert" | "vrrp_higher_prio_send_advert" => {
                if keepalived_bool(c.arg(1)) {
                    g.flags.push(c.key().trim_start_matches("vrrp_").to_owned());
                }
            }
            "router_id" | "vrrp_no_swap" | "checker_no_swap" | "vrrp_priority"
            | "checker_priority" | "vrrp_rt_priority" | "vrrp_cpu_affinity" => {}
            "notification_email" | "notification_email_from" | "smtp_server"
            | "smtp_connect_timeout" | "smtp_alert" | "smtp_helo" => dropped.push(format!(
                "{at}: {}: e-mail alerts are not sent by xvrrp; use notify scripts, the event_socket or Prometheus alerts",
                c.key()
            )),
            "enable_script_security" => g.script_security = true,
            "script_user" => {
                g.script_user = Some(match c.arg(2) {
                    Some(group) => format!("{arg}:{group}"),
                    None => arg.to_owned(),
                })
            }
            "vrrp_skip_check_adv_addr" => g.skip_check_adv_addr = true,
            "v3_checksum_as_v2" | "vrrp_v3_checksum_as_v2" => {
                g.v3_checksum_as_v2 = keepalived_bool(c.arg(1))
            }
            "vrrp_check_unicast_src" => changed.push(format!(
                "{at}: vrrp_check_unicast_src: xvrrp always takes unicast adverts from configured peers only"
            )),
            "vrrp_strict" => dropped.push(format!(
                "{at}: vrrp_strict: no strict mode; xvrrp adds no iptables rules and accepts traffic to the VIPs"
            )),
            "vrrp_iptables" | "vrrp_ipsets" | "vrrp_nftables" => dropped.push(format!(
                "{at}: {}: xvrrp sets no firewall rules",
                c.key()
            )),
            "vrrp_mcast_group4" | "vrrp_mcast_group6" => dropped.push(format!(
                "{at}: {}: xvrrp uses the standard groups 224.0.0.18 / ff02::12",
                c.key()
            )),
            "enable_snmp_vrrp" | "enable_snmp_keepalived" | "enable_snmp_rfcv2"
            | "enable_snmp_rfcv3" | "enable_traps" | "snmp_socket" => dropped.push(format!(
                "{at}: {}: no SNMP; xvrrp serves Prometheus metrics ([metrics] listen)",
                c.key()
            )),
            "vrrp_notify_fifo" | "notify_fifo" | "vrrp_notify_fifo_script" | "notify_fifo_script" => {
                dropped.push(format!(
                    "{at}: {}: xvrrp streams state changes as JSON lines on a unix socket instead (event_socket)",
                    c.key()
                ))
            }
            other if home_block(other).is_some_and(|b| b != "in global_defs") => {
                dropped.push(unknown_here(c, "in global_defs", "global_defs"))
            }
            other => dropped.push(format!(
                "{at}: global_defs {other}: no xvrrp equivalent; ignored"
            )),
        }
    }
    g
}

/// Converts parsed keepalived configuration.
pub fn convert(nodes: &[Node]) -> Imported {
    let mut changed = Vec::new();
    let mut dropped = Vec::new();
    let mut g = Globals::default();
    let mut checks: BTreeMap<String, Check> = BTreeMap::new();
    let mut track_files: BTreeMap<String, Table> = BTreeMap::new();
    let mut processes: BTreeMap<String, Table> = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut instances: Vec<(String, Table)> = Vec::new();
    unclosed(nodes, &mut changed);

    // What instances refer to is read first: keepalived allows it anywhere in the file.
    let definition = |n: &&Node| {
        matches!(
            n.key(),
            "global_defs"
                | "vrrp_script"
                | "vrrp_track_file"
                | "track_file"
                | "vrrp_track_process"
                | "track_process"
        )
    };
    let ordered = nodes
        .iter()
        .filter(definition)
        .chain(nodes.iter().filter(|n| !definition(n)));
    for node in ordered {
        let at = &node.at;
        match node.key() {
            "global_defs" => g = globals(node, &mut changed, &mut dropped),
            "vrrp_script" => {
                let (name, check) = vrrp_script(node, &mut changed, &mut dropped);
                checks.insert(name, check);
            }
            "vrrp_track_file" | "track_file" => {
                let (name, t) = track_file(node, &mut dropped);
                track_files.insert(name, t);
            }
            "vrrp_sync_group" => groups.push(sync_group(node, &mut dropped)),
            "vrrp_instance" => {
                let name = node.arg(1).unwrap_or("").to_owned();
                let (interface, table) = instance(
                    node,
                    &name,
                    &g,
                    (&mut checks, &mut processes),
                    &mut changed,
                    &mut dropped,
                );
                if !interface.is_empty() {
                    instances.push((interface, table));
                }
            }
            "virtual_server" | "virtual_server_group" | "real_server" => dropped.push(format!(
                "{at}: {}: xvrrp does no load balancing (IPVS); keep keepalived's checker or use IPVS tools for it",
                node.key()
            )),
            "vrrp_track_process" | "track_process" => {
                let name = node.arg(1).unwrap_or("").to_owned();
                let t = track_process(node, &name, &mut changed, &mut dropped);
                processes.insert(name, t);
            }
            "bfd_instance" => dropped.push(format!("{at}: bfd_instance: BFD is not supported")),
            "static_ipaddress" | "static_routes" | "static_rules" => dropped.push(format!(
                "{at}: {}: xvrrp manages only the VIPs; configure static addresses and routes with the system",
                node.key()
            )),
            "}" => dropped.push(format!(
                "{at}: a '}}' that closes no block: keepalived ignores it (with a warning), and so does the import; check the braces before it"
            )),
            other if home_block(other).is_some() => {
                dropped.push(unknown_here(node, "at the top level", "top level"))
            }
            other => dropped.push(format!("{at}: {other}: not known; ignored")),
        }
    }

    let defs = Definitions {
        globals: &g,
        checks: &checks,
        track_files: &track_files,
        processes: &processes,
        groups: &groups,
    };
    let files = files(&instances, &defs, &mut dropped);
    unused(&instances, &checks, &processes, &mut dropped);
    let mut seen = std::collections::BTreeSet::new();
    dropped.retain(|d| seen.insert(d.clone()));
    Imported {
        files,
        changed,
        dropped,
    }
}

/// A `vrrp_script`: a native MySQL probe when it runs a MySQL client, a script otherwise.
fn vrrp_script(
    node: &Node,
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> (String, Check) {
    let at = &node.at;
    let name = node.arg(1).unwrap_or("").to_owned();
    let mut t = Table::new("track_script");
    t.set("name", q(&name));
    let mut command = String::new();
    let (mut interval, mut timeout, mut rise, mut fall, mut weight) =
        (None, None, None, None, None);
    let mut reverse = false;
    let mut init_fail = false;
    for c in node.children() {
        let arg = c.arg(1).unwrap_or("");
        rest_of_line(c, &format!("vrrp_script {name}"), dropped);
        match c.key() {
            "script" => command = c.words[1..].join(" "),
            "interval" => interval = ms(arg),
            "timeout" => timeout = ms(arg),
            "rise" => rise = arg.parse::<i64>().ok(),
            "fall" => fall = arg.parse::<i64>().ok(),
            "weight" => {
                weight = arg.parse::<i64>().ok();
                reverse = c.arg(2) == Some("reverse");
            }
            "user" => dropped.push(format!(
                "{}: vrrp_script {name}: user: scripts run as xvrrp's user",
                c.at
            )),
            "init_fail" => init_fail = true,
            other => dropped.push(format!(
                "{}: vrrp_script {name}: {other}: not supported; ignored",
                c.at
            )),
        }
    }
    let check = match mysql_probe(&name, &command, at, changed) {
        Some(mut m) => {
            m.set("interval_ms", interval.unwrap_or(1000).to_string());
            if let Some(t) = timeout {
                m.set("timeout_ms", t.to_string());
            }
            m.set("rise", rise.unwrap_or(1).to_string());
            m.set("fall", fall.unwrap_or(1).to_string());
            m.set("weight", weight.unwrap_or(0).to_string());
            if reverse {
                dropped.push(format!(
                    "{at}: vrrp_script {name}: weight reverse is not supported for a native MySQL probe; the weight is applied as written"
                ));
            }
            m.set("fence", "false".into());
            Check::Mysql(m)
        }
        None => {
            t.set("script", q(&command));
            if init_fail {
                t.set("init_fail", "true".into());
            }
            if let Some(i) = interval {
                t.set("interval_ms", i.to_string());
            }
            if let Some(v) = timeout {
                t.set("timeout_ms", v.to_string());
            }
            if let Some(v) = rise {
                t.set("rise", v.to_string());
            }
            if let Some(v) = fall {
                t.set("fall", v.to_string());
            }
            if let Some(v) = weight {
                t.set("weight", v.to_string());
            }
            if reverse {
                t.set("weight_reverse", "true".into());
            }
            if [
                "killall -0 mysqld",
                "pidof mysqld",
                "pgrep mysqld",
                "mariadbd",
            ]
            .iter()
            .any(|p| command.contains(p))
            {
                changed.push(format!(
                    "{at}: vrrp_script {name}: checks the mysqld process only; kept as a script, but a native [[mysql]] probe (see docs/configuration.md) also sees a hung or refusing server"
                ));
            }
            Check::Script(t)
        }
    };
    (name, check)
}

/// A `vrrp_track_file` as a `[[track_file]]` table.
fn track_file(node: &Node, dropped: &mut Vec<String>) -> (String, Table) {
    let name = node.arg(1).unwrap_or("").to_owned();
    let mut t = Table::new("track_file");
    t.set("name", q(&name));
    for c in node.children() {
        rest_of_line(c, &format!("track_file {name}"), dropped);
        match (c.key(), c.arg(1)) {
            ("file", Some(f)) => t.set("path", q(f)),
            ("weight", Some(w)) => {
                t.set("weight", w.to_owned());
                if c.arg(2) == Some("reverse") {
                    t.set("weight_reverse", "true".into());
                }
            }
            (other, _) => dropped.push(format!(
                "{}: track_file {name}: {other}: not supported; ignored",
                c.at
            )),
        }
    }
    (name, t)
}

/// A `vrrp_sync_group`: its name, its members, where it is, and its notify scripts (key,
/// command).
struct Group {
    name: String,
    members: Vec<String>,
    at: String,
    notify: Vec<(String, String)>,
}

fn sync_group(node: &Node, dropped: &mut Vec<String>) -> Group {
    let name = node.arg(1).unwrap_or("").to_owned();
    let mut members = Vec::new();
    let mut notify = Vec::new();
    for c in node.children() {
        match c.key() {
            "group" => {
                for m in c.children() {
                    members.extend(m.words.iter().cloned());
                }
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                notify.push((c.key().to_owned(), c.words[1..].join(" ")));
            }
            "track_interface" | "track_script" | "track_file"
            | "track_process" | "global_tracking" | "sync_group_tracking_weight"
            | "smtp_alert" => dropped.push(format!(
                "{}: vrrp_sync_group {name}: {other}: not supported on a group by xvrrp; set it on the member instances",
                c.at,
                other = c.key()
            )),
            _ => dropped.push(unknown_here(
                c,
                "in vrrp_sync_group",
                &format!("vrrp_sync_group {name}"),
            )),
        }
    }
    Group {
        name,
        members,
        at: node.at.clone(),
        notify,
    }
}

/// What instances may refer to, by name.
struct Definitions<'a> {
    globals: &'a Globals,
    checks: &'a BTreeMap<String, Check>,
    track_files: &'a BTreeMap<String, Table>,
    processes: &'a BTreeMap<String, Table>,
    groups: &'a [Group],
}

/// One file per interface, in the order the instances came, with what its instances follow.
fn files(
    instances: &[(String, Table)],
    defs: &Definitions,
    dropped: &mut Vec<String>,
) -> Vec<ImportedFile> {
    // One daemon serves the host: one file, named after the first instance's interface (the
    // one `xvrrp@<interface>` reads); instances elsewhere name their own interface.
    let Some((iface, _)) = instances.first() else {
        return Vec::new();
    };
    let names: Vec<String> = instances
        .iter()
        .filter_map(|(_, t)| t.get("name").map(str::to_owned))
        .collect();
    let mut out = format!(
        "# Imported from keepalived by `xvrrp import-keepalived`.\ninterface = {}\n",
        q(iface)
    );
    if let Some(user) = &defs.globals.script_user {
        out.push_str(&format!("script_user = {}\n", q(user)));
    }
    if defs.globals.script_security {
        out.push_str("enable_script_security = true\n");
    }
    // What the instances follow.
    let followed = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = instances
            .iter()
            .filter_map(|(_, t)| t.get(key))
            .flat_map(|l| {
                toml::from_str::<toml::Table>(&format!("x = {l}"))
                    .ok()
                    .and_then(|t| t.get("x").cloned())
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
            })
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for name in followed("track_scripts") {
        if let Some(Check::Script(t)) = defs.checks.get(&name) {
            t.write(&mut out);
        }
    }
    for name in followed("track_mysql") {
        if let Some(Check::Mysql(t)) = defs.checks.get(&name) {
            t.write(&mut out);
        }
    }
    for name in followed("track_files") {
        if let Some(t) = defs.track_files.get(&name) {
            t.write(&mut out);
        }
    }
    for name in followed("track_processes") {
        if let Some(t) = defs.processes.get(&name) {
            t.write(&mut out);
        }
    }
    for Group {
        name: group,
        members,
        at,
        notify,
    } in defs.groups
    {
        let here: Vec<String> = members
            .iter()
            .filter(|m| names.contains(&q(m)))
            .cloned()
            .collect();
        if here.len() < members.len() {
            dropped.push(format!(
                "{at}: vrrp_sync_group {group}: a member is not a vrrp_instance of this file; the group is not carried over"
            ));
            continue;
        }
        let mut t = Table::new("sync_group");
        t.set("name", q(group));
        t.set("instances", list(&here));
        for (key, command) in notify {
            t.set(key, q(command));
        }
        t.write(&mut out);
    }
    for (own, t) in instances {
        let mut t = t.clone();
        if own != iface {
            t.keys
                .insert(1.min(t.keys.len()), ("interface".into(), q(own)));
        }
        t.write(&mut out);
    }
    vec![ImportedFile {
        interface: iface.clone(),
        toml: out,
        instances: instances.iter().map(|(_, t)| t.origin.clone()).collect(),
    }]
}

/// Reports the scripts and processes no instance tracks.
fn unused(
    instances: &[(String, Table)],
    checks: &BTreeMap<String, Check>,
    processes: &BTreeMap<String, Table>,
    dropped: &mut Vec<String>,
) {
    for (name, check) in checks {
        // Tracked as it is, or through a copy with another weight.
        let copies = format!("\"{name}_weight");
        let used = instances.iter().any(|(_, t)| {
            ["track_scripts", "track_mysql"].iter().any(|k| {
                t.get(k)
                    .is_some_and(|l| l.contains(&q(name)) || l.contains(&copies))
            })
        });
        if !used {
            let kind = match check {
                Check::Script(_) => "vrrp_script",
                Check::Mysql(_) => "vrrp_script (MySQL)",
            };
            dropped.push(format!("{kind} {name}: no instance tracks it; left out"));
        }
    }
    for name in processes.keys() {
        let copies = format!("\"{name}_weight");
        let used = instances.iter().any(|(_, t)| {
            t.get("track_processes")
                .is_some_and(|l| l.contains(&q(name)) || l.contains(&copies))
        });
        if !used {
            dropped.push(format!(
                "vrrp_track_process {name}: no instance tracks it; left out"
            ));
        }
    }
}

/// How many words keepalived reads after a keyword that takes a fixed number of them; it
/// ignores the rest of the line, even another keyword (checked with keepalived 2.2.7:
/// `virtual_router_id 51 priority 150` leaves the priority at its default).
fn arity(key: &str) -> Option<usize> {
    Some(match key {
        "nopreempt" | "native_ipv6" | "enable_script_security" => 0,
        "state"
        | "interface"
        | "virtual_router_id"
        | "priority"
        | "advert_int"
        | "version"
        | "preempt_delay"
        | "unicast_src_ip"
        | "mcast_src_ip"
        | "garp_master_delay"
        | "garp_master_repeat"
        | "garp_master_refresh"
        | "garp_master_refresh_repeat"
        | "garp_interval"
        | "gna_interval"
        | "garp_lower_prio_delay"
        | "garp_lower_prio_repeat"
        | "down_timer_adverts"
        | "unicast_ttl"
        | "vrrp_version"
        | "vrrp_garp_master_delay"
        | "vrrp_garp_master_repeat"
        | "vrrp_garp_master_refresh"
        | "vrrp_garp_master_refresh_repeat"
        | "vrrp_garp_interval"
        | "vrrp_gna_interval"
        | "vrrp_garp_lower_prio_delay"
        | "vrrp_garp_lower_prio_repeat"
        | "vrrp_startup_delay"
        | "router_id"
        | "interval"
        | "timeout"
        | "rise"
        | "fall"
        | "file" => 1,
        _ => return None,
    })
}

/// Reports words after what keepalived reads of `c` (see [`arity`]): ignored by keepalived,
/// and by the import.
fn rest_of_line(c: &Node, who: &str, dropped: &mut Vec<String>) {
    let Some(n) = arity(c.key()) else {
        return;
    };
    if c.words.len() > n + 1 {
        dropped.push(format!(
            "{}: {who}: {}: `{}` after it on the same line is ignored: keepalived reads one keyword per line and ignores the rest, and so does the import",
            c.at,
            c.words[..=n].join(" "),
            c.words[n + 1..].join(" ")
        ));
    }
}

/// The block keepalived reads `key` in, for keywords met in another one: keepalived 2.2.7
/// warns 'Unknown keyword' there and ignores them (checked: `priority` in global_defs or a
/// sync group, `vrrp_garp_master_delay` or a `vrrp_script` block in an instance).
fn home_block(key: &str) -> Option<&'static str> {
    const INSTANCE: &[&str] = &[
        "state",
        "interface",
        "virtual_router_id",
        "priority",
        "advert_int",
        "nopreempt",
        "preempt_delay",
        "virtual_ipaddress",
        "virtual_ipaddress_excluded",
        "unicast_peer",
        "unicast_src_ip",
        "mcast_src_ip",
        "track_interface",
        "authentication",
        "use_vmac",
        "garp_master_delay",
        "garp_master_repeat",
        "garp_master_refresh",
        "version",
        "skip_check_adv_addr",
        "dont_track_primary",
    ];
    const TOP: &[&str] = &[
        "global_defs",
        "vrrp_instance",
        "vrrp_sync_group",
        "vrrp_script",
        "vrrp_track_file",
        "vrrp_track_process",
        "virtual_server",
        "static_ipaddress",
        "static_routes",
    ];
    if INSTANCE.contains(&key) {
        Some("in vrrp_instance")
    } else if TOP.contains(&key) {
        Some("at the top level")
    } else if key.starts_with("vrrp_")
        || matches!(key, "router_id" | "script_user" | "enable_script_security")
    {
        Some("in global_defs")
    } else {
        None
    }
}

/// The report for a keyword that `block` does not take.
fn unknown_here(c: &Node, block: &str, what: &str) -> String {
    match home_block(c.key()) {
        Some(home) if home != block => format!(
            "{}: {what}: {}: keepalived reads it only {home}; here it warns 'Unknown keyword' and ignores it, and so does the import",
            c.at,
            c.key()
        ),
        _ => format!("{}: {what}: {}: not supported; ignored", c.at, c.key()),
    }
}

/// Notes for the blocks the end of a file closed.
fn unclosed(nodes: &[Node], changed: &mut Vec<String>) {
    for n in nodes {
        if n.closed_by_eof {
            changed.push(format!(
                "{}: {}: this block is never closed; keepalived closes it at the end of the file (with a warning), and so does the import",
                n.at,
                n.words.join(" ")
            ));
        }
        unclosed(n.children(), changed);
    }
}

/// A vrrp_track_process as a [[track_process]] table.
fn track_process(
    node: &Node,
    name: &str,
    changed: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> Table {
    let mut t = Table::new("track_process");
    t.set("name", q(name));
    let (mut quorum, mut quorum_max) = (None, None);
    for c in node.children() {
        let arg = c.arg(1).unwrap_or("");
        match c.key() {
            "process" => {
                t.set("process", q(arg));
                // Parameters after the command: matched against the command line.
                if c.words.len() > 2 {
                    t.set("args", list(&c.words[2..]));
                }
            }
            "param_match" => t.set(
                "param_match",
                q(match arg {
                    "initial" | "partial" => arg,
                    _ => "exact",
                }),
            ),
            "full_command" => t.set("full_command", "true".into()),
            "weight" => {
                if let Ok(w) = arg.parse::<i64>() {
                    t.set("weight", w.to_string());
                }
                if c.arg(2) == Some("reverse") {
                    t.set("weight_reverse", "true".into());
                }
            }
            "quorum" => quorum = arg.parse::<i64>().ok(),
            "quorum_max" => quorum_max = arg.parse::<i64>().ok(),
            "delay" | "fork_delay" | "terminate_delay" => {
                if let Some(v) = ms(arg) {
                    t.set(&format!("{}_ms", c.key()), v.to_string());
                }
            }
            other => dropped.push(format!(
                "{}: vrrp_track_process {name}: {other}: not supported; ignored",
                c.at
            )),
        }
    }
    if t.get("process")
        .is_some_and(|p| ["\"mysqld\"", "\"mariadbd\""].contains(&p))
    {
        changed.push(format!(
            "{}: vrrp_track_process {name}: checks the mysqld process only; kept, but a native [[mysql]] probe (see docs/configuration.md) also sees a hung or refusing server",
            node.at
        ));
    }
    if let Some(v) = quorum {
        t.set("quorum", v.to_string());
    }
    if let Some(v) = quorum_max {
        t.set("quorum_max", v.to_string());
    }
    changed.push(format!(
        "{}: vrrp_track_process {name}: an exit is seen at once (pidfd), a start at the next read of /proc (scan_interval_ms, 1 s by default; keepalived hears of both from the kernel)",
        node.at
    ));
    t
}

/// One vrrp_instance: (interface, the [[instance]] table).
/// `NAME [weight W]` lines of track_* blocks (several names on one line too).
fn tracked(line: &Node) -> Vec<(String, Option<i64>)> {
    match line.words.iter().position(|w| w == "weight") {
        Some(p) => {
            let w = line.arg(p + 1).and_then(|w| w.parse().ok());
            line.words[..p].iter().map(|n| (n.clone(), w)).collect()
        }
        None => line.words.iter().map(|n| (n.clone(), None)).collect(),
    }
}

/// `reverse` / `noreverse` after the weight on a track line, if either is there.
fn reversed(line: &Node) -> Option<bool> {
    line.words.iter().find_map(|w| match w.as_str() {
        "reverse" => Some(true),
        "noreverse" | "no_reverse" => Some(false),
        _ => None,
    })
}

/// Makes `t` (a copy of tracked object `name`'s table) carry the weight of a track line, and
/// names it after it; returns that name.
fn weighted_copy(t: &mut Table, name: &str, weight: i64, reverse: Option<bool>) -> String {
    let copy = match reverse {
        Some(true) => format!("{name}_weight{weight}_reverse"),
        _ => format!("{name}_weight{weight}"),
    };
    t.set("name", q(&copy));
    t.set("weight", weight.to_string());
    if let Some(r) = reverse {
        t.set("weight_reverse", r.to_string());
    }
    copy
}

/// A virtual_ipaddress line as an xvrrp VIP ("ADDR/PFX [label L]").
fn address(v: &Node, interface: &str, who: &str, dropped: &mut Vec<String>) -> Option<String> {
    let addr = v.arg(0)?;
    let addr = if addr.contains('/') {
        addr.to_owned()
    } else if addr.contains(':') {
        format!("{addr}/128")
    } else {
        format!("{addr}/32")
    };
    let (mut label, mut dev) = (None, None);
    let mut words = v.words.iter().skip(1);
    while let Some(w) = words.next() {
        let value = words.clone().next().cloned().unwrap_or_default();
        match w.as_str() {
            "label" => {
                label = Some(value);
                words.next();
            }
            "dev" => {
                words.next();
                if value != interface {
                    dev = Some(value);
                }
            }
            "brd" | "broadcast" | "scope" | "preferred_lft" | "metric" => {
                words.next();
                dropped.push(format!(
                    "{}: {who}: {addr}: {w} {value} is not carried (the kernel's default applies)",
                    v.at
                ));
            }
            "no_track" | "home" | "nodad" | "noprefixroute" | "autojoin" => {}
            other if other.split('/').next().is_some_and(|a| a.parse::<IpAddr>().is_ok()) => {
                dropped.push(format!(
                    "{}: {who}: {other} follows {addr} on the same line: keepalived reads one address per line and ignores the rest (with a warning), and so does the import",
                    v.at
                ))
            }
            other => dropped.push(format!(
                "{}: {who}: {addr}: {other}: not supported; ignored",
                v.at
            )),
        }
    }
    let mut vip = addr;
    if let Some(d) = dev {
        vip = format!("{vip} dev {d}");
    }
    if let Some(l) = label {
        vip = format!("{vip} label {l}");
    }
    Some(vip)
}

/// A virtual_routes line as an xvrrp route (`ip route` syntax, which keepalived's follows);
/// a route with an option xvrrp does not carry is left out, and said so.
fn route(r: &Node, who: &str, dropped: &mut Vec<String>) -> Option<String> {
    let line = r.words.join(" ");
    let mut kind = None;
    let mut dest = None;
    let mut options = Vec::new();
    let mut words = r.words.iter().map(String::as_str);
    while let Some(w) = words.next() {
        match w {
            "blackhole" | "unreachable" | "prohibit" | "unicast" if dest.is_none() => {
                kind = Some(w);
            }
            "to" => dest = words.next(),
            "no_track" => {}
            "via" | "gw" | "src" | "dev" | "metric" | "priority" | "preference" | "table"
            | "scope" => {
                options.push(w);
                options.push(words.next().unwrap_or(""));
            }
            "onlink" => options.push(w),
            "protocol" | "proto" => {
                words.next();
            }
            _ if dest.is_none() => dest = Some(w),
            other => {
                dropped.push(format!(
                    "{}: {who}: virtual_routes {line}: {other} is not supported; the route is left out",
                    r.at
                ));
                return None;
            }
        }
    }
    let text: Vec<&str> = kind
        .into_iter()
        .chain(dest)
        .chain(options.iter().copied())
        .collect();
    match crate::config::parse_route(&text.join(" ")) {
        Ok(route) => Some(route.to_string()),
        Err(why) => {
            dropped.push(format!(
                "{}: {who}: virtual_routes {line}: left out: {why}",
                r.at
            ));
            None
        }
    }
}

/// Imports `path`: the xvrrp configs and the report.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    Ok(convert(&parse_file(path)?))
}

/// The report for people: what changed, what was left out.
pub fn report(imported: &Imported) -> String {
    let mut out = String::new();
    if !imported.changed.is_empty() {
        out.push_str("Carried over differently:\n");
        for c in &imported.changed {
            let _ = writeln!(out, "  - {c}");
        }
    }
    if !imported.dropped.is_empty() {
        out.push_str("Not carried over:\n");
        for d in &imported.dropped {
            let _ = writeln!(out, "  - {d}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use parse::wildcard;

    fn convert_text(text: &str) -> Imported {
        convert(&parse_text(text, "k.conf").expect("parses"))
    }

    #[test]
    fn blocks_open_on_the_same_or_the_next_line_and_comments_and_quotes_are_handled() {
        let nodes = parse_text(
            "a {\n  b 1 # comment\n  c \"x y\" ! more\n}\nd\n{\n e { f g }\n}\n",
            "k.conf",
        )
        .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].words, ["a"]);
        let a = nodes[0].children();
        assert_eq!(a[0].words, ["b", "1"]);
        assert_eq!(a[1].words, ["c", "x y"]);
        assert_eq!(nodes[1].words, ["d"]);
        assert_eq!(nodes[1].at, "k.conf:5");
        assert_eq!(nodes[1].children()[0].children()[0].words, ["f", "g"]);
    }

    #[test]
    fn unbalanced_braces_are_read_as_keepalived_2_2_7_reads_them() {
        // Blocks still open at the end of the file are closed there, innermost first.
        let nodes = parse_text("a {\n b {\n c 1\n", "k.conf").unwrap();
        assert!(nodes[0].closed_by_eof && nodes[0].children()[0].closed_by_eof);
        assert_eq!(nodes[0].children()[0].children()[0].words, ["c", "1"]);
        // A '}' that closes nothing is a statement of its own, reported and ignored.
        let nodes = parse_text("a\n}\nb\n", "k.conf").unwrap();
        let words: Vec<_> = nodes.iter().map(|n| n.words.join(" ")).collect();
        assert_eq!(words, ["a", "}", "b"]);
        let imported = convert_text(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 5\n virtual_ipaddress {\n 192.0.2.1\n",
        );
        assert_eq!(imported.files.len(), 1, "the instance is carried over");
        assert!(imported.files[0].toml.contains("vips = [\"192.0.2.1/32\"]"));
        assert_eq!(
            imported.changed,
            [
                "k.conf:1: vrrp_instance V: this block is never closed; keepalived closes it at the end of the file (with a warning), and so does the import",
                "k.conf:4: virtual_ipaddress: this block is never closed; keepalived closes it at the end of the file (with a warning), and so does the import",
            ]
        );
        let imported = convert_text("}\n");
        assert_eq!(
            imported.dropped,
            [
                "k.conf:1: a '}' that closes no block: keepalived ignores it (with a warning), and so does the import; check the braces before it"
            ]
        );
    }

    #[test]
    fn several_keywords_on_a_line_and_keywords_in_the_wrong_block_are_ignored_as_keepalived_does() {
        // keepalived 2.2.7 reads one keyword per line, one address per line, and warns about
        // (and ignores) keywords of another block.
        let imported = convert_text(
            "global_defs {\n priority 120\n vrrp_version 3 router_id r1\n}\n\
             vrrp_instance V { state MASTER\n interface eth0\n virtual_router_id 5 priority 150\n\
             vrrp_garp_master_delay 3\n virtual_ipaddress { 192.0.2.1 192.0.2.2 }\n}\n",
        );
        let toml = &imported.files[0].toml;
        assert!(toml.contains("state = \"master\""), "{toml}");
        assert!(toml.contains("version = 3"), "{toml}");
        assert!(!toml.contains("priority"), "{toml}");
        assert!(!toml.contains("garp_master_delay"), "{toml}");
        assert!(toml.contains("vips = [\"192.0.2.1/32\"]"), "{toml}");
        assert_eq!(
            imported.dropped,
            [
                "k.conf:2: global_defs: priority: keepalived reads it only in vrrp_instance; here it warns 'Unknown keyword' and ignores it, and so does the import",
                "k.conf:3: global_defs: vrrp_version 3: `router_id r1` after it on the same line is ignored: keepalived reads one keyword per line and ignores the rest, and so does the import",
                "k.conf:7: vrrp_instance V: virtual_router_id 5: `priority 150` after it on the same line is ignored: keepalived reads one keyword per line and ignores the rest, and so does the import",
                "k.conf:8: vrrp_instance V: vrrp_garp_master_delay: keepalived reads it only in global_defs; here it warns 'Unknown keyword' and ignores it, and so does the import",
                "k.conf:9: vrrp_instance V: 192.0.2.2 follows 192.0.2.1/32 on the same line: keepalived reads one address per line and ignores the rest (with a warning), and so does the import",
            ]
        );
        // A whole instance on one line: only `state` is read, so there is no interface.
        let imported =
            convert_text("vrrp_instance V { state MASTER interface eth0 virtual_router_id 5 }\n");
        assert!(imported.files.is_empty());
        assert!(imported.dropped[0].contains("`interface eth0 virtual_router_id 5` after it"));
    }

    #[test]
    fn keepalived_definitions_leading_zeros_and_peer_prefixes_are_read_as_keepalived_does() {
        let out = convert_text(
            "$IFACE=eth0\n$VIP=192.0.2.1/24\r\nvrrp_instance V {\r\n interface $IFACE\n virtual_router_id 051\n\
             priority 0100\n unicast_peer {\n 192.0.2.2/24\n }\n virtual_ipaddress {\n ${VIP}\n }\n}\n",
        );
        let text = &out.files[0].toml;
        for want in [
            "interface = \"eth0\"",
            "vrid = 51\n",
            "priority = 100\n",
            "vips = [\"192.0.2.1/24\"]",
            "unicast_peers = [\"192.0.2.2\"]",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        crate::config::parse(text, std::path::Path::new("x.toml")).unwrap();
        let err = parse_text("vrrp_instance V {\n interface ${NOPE}\n}\n", "k.conf")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k.conf:2") && err.contains("$NOPE is not defined"),
            "{err}"
        );
        // A `$` in a password is left alone.
        assert!(parse_text("x {\n auth_pass pa$$w0rd\n}\n", "k.conf").is_ok());
    }

    #[test]
    fn template_placeholders_are_refused_with_their_line() {
        for (text, line) in [
            ("vrrp_instance V {\n interface {{ iface }}\n}\n", 2),
            ("vrrp_instance V {\n{% if x %}\n}\n", 2),
            ("vrrp_instance V {\n priority <PRIORITY>\n}\n", 2),
            ("vrrp_instance V {\n\n virtual_router_id __VRID__\n}\n", 3),
        ] {
            let err = parse_text(text, "t.conf").unwrap_err().to_string();
            assert!(
                err.contains(&format!("t.conf:{line}")) && err.contains("template placeholder"),
                "{err}"
            );
        }
        // Not placeholders: a comment, an ordinary word.
        assert!(parse_text("# {{ not a problem }}\nx <= y\n", "t.conf").is_ok());
    }

    #[test]
    fn wildcards_match_in_linear_time_and_nesting_is_bounded() {
        for (p, n, want) in [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYd", false),
            ("**x", "yyx", true),
        ] {
            assert_eq!(wildcard(p, n), want, "{p} {n}");
        }
        let started = std::time::Instant::now();
        let name = "a".repeat(200);
        assert!(!wildcard(&format!("{}b", "a*".repeat(30)), &name));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let deep = format!("{}{}", "x {\n".repeat(40), "}\n".repeat(40));
        let err = parse_text(&deep, "k.conf").unwrap_err().to_string();
        assert!(err.contains("nested more than 32 deep"), "{err}");
        assert!(parse_text(&"{".repeat(100_000), "k.conf").is_err());
    }

    #[test]
    fn keepalived_advert_knobs_are_carried_or_refused_with_a_reason() {
        let out = convert_text(
            "global_defs {\n vrrp_startup_delay 2\n vrrp_lower_prio_no_advert\n vrrp_garp_lower_prio_repeat 2\n}\n\
             vrrp_instance V {\n interface eth0\n virtual_router_id 7\n higher_prio_send_advert\n\
             dont_track_primary\n down_timer_adverts 4\n garp_lower_prio_delay 10\n no_accept\n\
             mcast_dst_ip 224.0.0.99\n unicast_ttl 10\n check_unicast_src\n accept\n\
             virtual_ipaddress {\n 192.0.2.1\n }\n}\n",
        );
        let text = &out.files[0].toml;
        for want in [
            "startup_delay_ms = 2000\n",
            "lower_prio_no_advert = true\n",
            "garp_lower_prio_repeat = 2\n",
            "higher_prio_send_advert = true\n",
            "dont_track_primary = true\n",
            "down_timer_adverts = 4\n",
            "garp_lower_prio_delay_ms = 10000\n",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let dropped = out.dropped.join("\n");
        assert!(
            dropped.contains("no_accept: xvrrp always accepts"),
            "{dropped}"
        );
        assert!(
            dropped.contains("mcast_dst_ip: xvrrp sends adverts to 224.0.0.18"),
            "{dropped}"
        );
        let changed = out.changed.join("\n");
        assert!(changed.contains("unicast_ttl 10"), "{changed}");
        assert!(changed.contains("check_unicast_src"), "{changed}");
        crate::config::parse(text, std::path::Path::new("x.toml")).unwrap();
    }

    #[test]
    fn an_ipv6_instance_under_vrrp_version_2_runs_vrrpv3_as_in_keepalived() {
        let out = convert_text(
            "global_defs {\n vrrp_version 2\n}\nvrrp_instance V6 {\n interface eth0\n virtual_router_id 7\n\
             virtual_ipaddress {\n 2001:db8::1/64\n }\n}\n",
        );
        let text = &out.files[0].toml;
        assert!(text.contains("version = 3\n"), "{text}");
        assert!(
            out.changed.join("\n").contains("IPv6 runs VRRPv3"),
            "{:?}",
            out.changed
        );
        crate::config::parse(text, std::path::Path::new("x.toml")).unwrap();
    }

    #[test]
    fn excluded_addresses_stay_out_of_the_vips() {
        let out = convert_text(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.1/24\n }\n\
             virtual_ipaddress_excluded {\n 192.0.2.9/24\n 2001:db8::9/64\n }\n}\n",
        );
        let text = &out.files[0].toml;
        assert!(text.contains("vips = [\"192.0.2.1/24\"]\n"), "{text}");
        assert!(
            text.contains("vips_excluded = [\"192.0.2.9/24\", \"2001:db8::9/64\"]\n"),
            "{text}"
        );
        let all = format!("{:?}{:?}", out.changed, out.dropped);
        assert!(!all.contains("excluded"), "{all}");
        crate::config::parse(text, std::path::Path::new("x.toml")).unwrap();
    }

    #[test]
    fn a_huge_vrrpv2_advert_int_is_rounded_without_overflow() {
        // Found by the fuzzer: 10^74 seconds saturate the milliseconds, which the rounding to
        // whole seconds must not overflow.
        let out = convert_text(&format!(
            "vrrp_instance V {{\n interface eth0\n virtual_router_id 7\n advert_int 1{}.05\n}}\n",
            "0".repeat(74)
        ));
        let toml = &out.files[0].toml;
        assert!(
            toml.contains("advert_interval_ms = 9223372036854775000"),
            "{toml}"
        );
    }

    #[test]
    fn values_that_are_not_toml_are_written_as_strings() {
        // Found by `cargo xtask fuzz` (the keepalived target).
        let out = convert_text(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 7\n priority 110skip_chvert_int\n\
             advert_int 1\n virtual_ipaddress {\n 192.0.2.1\n }\n}\n",
        );
        let text = &out.files[0].toml;
        let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert_eq!(
            table["instance"][0]["priority"].as_str(),
            Some("110skip_chvert_int")
        );
        let mut t = Table::new("instance");
        t.set("vrid", "1\n[evil]\nx = 2".to_owned());
        let back: toml::Table = format!("vrid = {}", t.get("vrid").unwrap())
            .parse()
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back["vrid"].as_str(), Some("1\n[evil]\nx = 2"));
    }

    #[test]
    fn script_user_script_security_and_skip_check_adv_addr_are_carried_over() {
        let out = convert_text(
            "global_defs {\n script_user nobody nogroup\n enable_script_security\n vrrp_skip_check_adv_addr\n}\n\
             vrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.1\n }\n}\n\
             vrrp_instance W {\n interface eth0\n virtual_router_id 8\n skip_check_adv_addr\n virtual_ipaddress {\n 192.0.2.2\n }\n}\n",
        );
        let text = &out.files[0].toml;
        assert!(
            text.contains("script_user = \"nobody:nogroup\"\n"),
            "{text}"
        );
        assert!(text.contains("enable_script_security = true\n"), "{text}");
        assert_eq!(
            text.matches("skip_check_adv_addr = true").count(),
            2,
            "{text}"
        );
        let all = format!("{:?}{:?}", out.changed, out.dropped);
        assert!(
            !all.contains("script_user") && !all.contains("skip_check"),
            "{all}"
        );
        let config: toml::Table = toml::from_str(text).unwrap();
        assert_eq!(config["script_user"].as_str(), Some("nobody:nogroup"));
    }

    #[test]
    fn mysql_commands_become_native_probes() {
        let mut notes = Vec::new();
        let t = mysql_probe(
            "m",
            "/usr/bin/mysqladmin --user=ka --password=pw --host=db --port 3307 ping",
            "x",
            &mut notes,
        )
        .unwrap();
        assert_eq!(t.get("user"), Some("\"ka\""));
        assert_eq!(t.get("password"), Some("\"pw\""));
        assert_eq!(t.get("host"), Some("\"db\""));
        assert_eq!(t.get("port"), Some("3307"));
        let t = mysql_probe(
            "m",
            "bash -c 'mysql -uroot -e \"SELECT 1\"'",
            "x",
            &mut notes,
        )
        .unwrap();
        assert_eq!(t.get("query"), Some("\"SELECT 1\""));
        assert_eq!(t.get("user"), Some("\"root\""));
        let t = mysql_probe(
            "m",
            "mariadb-admin --defaults-file=/etc/keepalived/my.cnf ping",
            "x",
            &mut notes,
        )
        .unwrap();
        assert_eq!(t.get("option_file"), Some("\"/etc/keepalived/my.cnf\""));
        assert_eq!(t.get("user"), None);
        // Not a ping, not a query, not MySQL at all.
        assert!(mysql_probe("m", "mysqladmin flush-logs", "x", &mut notes).is_none());
        assert!(mysql_probe("m", "mysql -uroot", "x", &mut notes).is_none());
        assert!(mysql_probe("m", "killall -0 mysqld", "x", &mut notes).is_none());
    }

    #[test]
    fn keepalived_defaults_and_units_are_carried() {
        let i = convert_text(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 7\n advert_int 0.02\n preempt_delay 1.5\n virtual_ipaddress {\n 192.0.2.1\n }\n}\n",
        );
        let toml = &i.files[0].toml;
        // keepalived's default is VRRPv2 (whole seconds); a bare address is a /32.
        assert!(toml.contains("version = 2\n"), "{toml}");
        assert!(toml.contains("advert_interval_ms = 1000\n"), "{toml}");
        assert!(i.changed[0].contains("rounded to 1s"), "{:?}", i.changed);
        assert!(toml.contains("preempt_delay_ms = 1500\n"), "{toml}");
        assert!(toml.contains("vips = [\"192.0.2.1/32\"]\n"), "{toml}");
        crate::config::parse(toml, Path::new("eth0.toml")).expect("valid");
        let i = convert_text(
            "global_defs {\n vrrp_version 3\n}\nvrrp_instance V {\n interface eth0\n virtual_router_id 7\n advert_int 0.02\n virtual_ipaddress {\n 192.0.2.1\n }\n}\n",
        );
        let toml = &i.files[0].toml;
        assert!(toml.contains("advert_interval_ms = 20\n"), "{toml}");
        crate::config::parse(toml, Path::new("eth0.toml")).expect("valid");
    }

    #[test]
    fn vrrpv2_passwords_are_carried_and_the_rest_of_authentication_is_reported() {
        let instance = |version: &str, auth: &str| {
            format!(
                "vrrp_instance V {{\n interface eth0\n virtual_router_id 7\n{version} authentication {{\n{auth} }}\n virtual_ipaddress {{\n 192.0.2.1/24\n }}\n}}\n"
            )
        };
        let i = convert_text(&instance("", "  auth_type PASS\n  auth_pass s3cret\n"));
        let toml = &i.files[0].toml;
        assert!(
            toml.contains("version = 2\nauth_pass = \"s3cret\"\n"),
            "{toml}"
        );
        let config = crate::config::parse(toml, Path::new("eth0.toml")).expect("valid");
        assert_eq!(config.instances[0].auth_pass, Some(*b"s3cret\0\0"));
        assert!(i.dropped.is_empty() && i.changed.is_empty(), "{i:?}");
        // keepalived truncates a longer password to 8 bytes: so does the import, and says so.
        let i = convert_text(&instance("", "  auth_type pass\n  auth_pass 0123456789\n"));
        assert!(
            i.files[0].toml.contains("auth_pass = \"01234567\"\n"),
            "{}",
            i.files[0].toml
        );
        assert!(
            i.changed[0].contains("longer than 8 bytes"),
            "{:?}",
            i.changed
        );
        // AH, VRRPv3 and a missing password are left out, each with its line.
        for (version, auth, says) in [
            ("", "  auth_type AH\n  auth_pass x\n", "IPsec AH"),
            (
                " version 3\n",
                "  auth_type PASS\n  auth_pass x\n",
                "VRRPv3 has none",
            ),
            (
                "",
                "  auth_type PASS\n",
                "expected auth_type PASS with an auth_pass",
            ),
        ] {
            let i = convert_text(&instance(version, auth));
            assert!(
                !i.files[0].toml.contains("auth_pass"),
                "{}",
                i.files[0].toml
            );
            let all = i.dropped.join("\n");
            assert!(
                all.contains("vrrp_instance V: authentication") && all.contains(says),
                "{all}"
            );
        }
    }

    #[test]
    fn a_weight_on_the_track_line_tracks_a_copy_with_that_weight() {
        let i = convert_text(
            "vrrp_script s {\n script \"true\"\n weight -10\n}\nvrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.1/24\n }\n track_script {\n s weight -50\n }\n}\n",
        );
        let config = crate::config::parse(&i.files[0].toml, Path::new("x.toml")).expect("valid");
        assert_eq!(config.track_scripts.len(), 1);
        assert_eq!(config.track_scripts[0].name, "s_weight-50");
        assert_eq!(config.track_scripts[0].weight, -50);
        assert!(i.dropped.is_empty(), "{:?}", i.dropped);
    }

    #[test]
    fn weights_and_reversed_weights_of_scripts_files_and_interfaces_are_carried() {
        let i = convert_text(
            "vrrp_script s {\n script \"true\"\n weight 10 reverse\n}\n\
             vrrp_script t {\n script \"false\"\n}\n\
             vrrp_track_file f {\n file /run/prio\n weight -2 reverse\n}\n\
             vrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.1/24\n }\n\
             track_script {\n s\n t weight 5 reverse\n }\n track_file {\n f\n }\n\
             track_interface {\n eth1\n eth2 weight -10\n eth3 weight 5 reverse\n eth4 weight 0\n }\n}\n",
        );
        let config = crate::config::parse(&i.files[0].toml, Path::new("x.toml")).expect("valid");
        let scripts: Vec<(&str, i32, bool)> = config
            .track_scripts
            .iter()
            .map(|t| (t.name.as_str(), t.weight, t.weight_reverse))
            .collect();
        assert_eq!(scripts, [("s", 10, true), ("t_weight5_reverse", 5, true)]);
        assert_eq!(
            (
                config.track_files[0].weight,
                config.track_files[0].weight_reverse
            ),
            (-2, true)
        );
        let links: Vec<(&str, i32, bool)> = config.instances[0]
            .track_interfaces
            .iter()
            .map(|t| (t.name.as_str(), t.weight, t.weight_reverse))
            .collect();
        assert_eq!(
            links,
            [
                ("eth1", 0, false),
                ("eth2", -10, false),
                ("eth3", 5, true),
                ("eth4", 0, false)
            ]
        );
        assert!(i.dropped.is_empty(), "{:?}", i.dropped);
    }

    #[test]
    fn tracked_processes_are_carried_even_when_defined_after_the_instance() {
        let i = convert_text(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.1/24\n }\n\
             track_process {\n lb\n db weight -30 reverse\n nope\n }\n}\n\
             vrrp_track_process lb {\n process /usr/sbin/haproxy -f \"/etc/haproxy/a b.cfg\"\n param_match partial\n\
             weight -20\n quorum 2\n delay 0.5\n fork_delay 0.25\n}\n\
             vrrp_track_process db {\n process mariadbd\n}\n\
             vrrp_track_process unused {\n process x\n quorum_max 0\n}\n",
        );
        let config = crate::config::parse(&i.files[0].toml, Path::new("x.toml")).expect("valid");
        let names: Vec<&str> = config
            .track_processes
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["db_weight-30_reverse", "lb"], "{}", i.files[0].toml);
        assert_eq!(
            config.instances[0].track_processes,
            ["lb", "db_weight-30_reverse"]
        );
        let lb = &config.track_processes[1];
        assert_eq!(lb.process, "/usr/sbin/haproxy");
        assert_eq!(
            lb.args,
            Some(vec!["-f".to_owned(), "/etc/haproxy/a b.cfg".to_owned()])
        );
        assert_eq!(lb.param_match, crate::config::ParamMatch::Partial);
        assert_eq!((lb.weight, lb.quorum), (-20, 2));
        assert_eq!((lb.fork_delay_ms, lb.terminate_delay_ms), (250, 500));
        let db = &config.track_processes[0];
        assert_eq!(
            (db.process.as_str(), db.weight, db.weight_reverse),
            ("mariadbd", -30, true)
        );
        assert!(!lb.weight_reverse);
        let dropped = i.dropped.join("\n");
        let changed = i.changed.join("\n");
        assert!(!dropped.contains("reverse"), "{dropped}");
        assert!(
            dropped.contains("track_process nope: no vrrp_track_process of that name"),
            "{dropped}"
        );
        assert!(
            dropped.contains("vrrp_track_process unused: no instance tracks it"),
            "{dropped}"
        );
        assert!(
            changed.contains("vrrp_track_process db: checks the mysqld process only"),
            "{changed}"
        );
        assert!(changed.contains("an exit is seen at once"), "{changed}");
    }

    #[test]
    fn unknown_and_unsupported_statements_are_listed_not_silently_lost() {
        let i = convert_text(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.1/24 scope link\n }\n frobnicate 3\n}\nlvs_thing {\n}\n",
        );
        let all = i.dropped.join("\n");
        assert!(
            all.contains("k.conf:5: vrrp_instance V: 192.0.2.1/24: scope link is not carried"),
            "{all}"
        );
        assert!(
            all.contains("k.conf:7: vrrp_instance V: frobnicate"),
            "{all}"
        );
        assert!(all.contains("k.conf:9: lvs_thing: not known"), "{all}");
    }
}

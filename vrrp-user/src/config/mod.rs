//! The TOML configuration: parsing, validation and the typed result the daemon runs on.
//!
//! Parsing happens in two steps. The file is first deserialized into raw structs that refuse
//! unknown keys (the error carries the key path, e.g. `instance[1].vips[0]`); the raw values
//! are then validated all at once, so that one run of `xvrrp check-config` reports every
//! problem, each with the file, the key path and what was expected. Nothing of a config with a
//! problem is ever applied: the daemon only sees a [`Config`] once all of it is valid.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod route;
mod validate;

pub use route::{Route, RouteKind, RouteScope, parse as parse_route};

use validate::validate;

/// One problem in a config file: where, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `instance[1].vips[0]`; empty for the file as a whole.
    pub key: String,
    /// What was expected, and what was found.
    pub message: String,
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, Problem { key, message }) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let file = self.file.display();
            if key.is_empty() {
                write!(f, "{file}: {message}")?;
            } else {
                write!(f, "{file}: {key}: {message}")?;
            }
        }
        Ok(())
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttach {
    /// Native (driver) mode, falling back to generic mode with a warning.
    #[default]
    Auto,
    /// Native mode only: fail if the driver cannot.
    Native,
    /// Generic (skb) mode: slower, works on any interface.
    Generic,
}

/// How an instance starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    /// keepalived's `state MASTER`, as keepalived 2.2.7 runs it: below priority 255 the
    /// instance starts as backup and becomes master after Master_Down_Interval unless it hears
    /// a master (measured side by side with keepalived in the lab); priority 255 takes over at
    /// once, as in every state.
    Master,
    #[default]
    Backup,
    /// xvrrp only: become master at startup without waiting (a better master's advert, or
    /// this node's answer to a worse one, settles it within one delivery). It overrides
    /// `preempt = false` at startup.
    Takeover,
}

/// A virtual address with its prefix length, optionally on another interface than its
/// instance's (`dev`, keepalived's) and, for IPv4, with an address label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix: u8,
    /// The interface the VIP goes on when it is not the instance's own.
    pub dev: Option<String>,
    /// The kernel's address label (`ip addr ... label eth0:vip`); IPv4 only.
    pub label: Option<String>,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)?;
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        match &self.label {
            Some(label) => write!(f, " label {label}"),
            None => Ok(()),
        }
    }
}

/// One VRRP instance: a VRID on the interface with its VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    /// The interface its adverts go out on and its data plane runs on: its own `interface`,
    /// or the configuration's.
    pub interface: String,
    pub vrid: u8,
    /// 1-254, or 255 for the address owner.
    pub priority: u8,
    pub state: InitialState,
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// All of one family. None (VRRPv2 only, as keepalived): an instance that only sends
    /// adverts and runs its notify scripts (e.g. to move a cloud provider's floating IP).
    pub vips: Vec<Vip>,
    /// keepalived's `virtual_ipaddress_excluded`: added, removed and announced with the VIPs,
    /// answered from XDP while master, but never listed in adverts (either address family).
    pub vips_excluded: Vec<Vip>,
    /// Answer from the VRRP virtual MAC 00:00:5e:00:01:VRID instead of the interface's MAC.
    pub virtual_mac: bool,
    /// With `virtual_mac`: the macvlan interface that carries the virtual MAC and the VIPs
    /// (keepalived's use_vmac), `vrrp.<vrid>` (IPv6: `vrrp6.<vrid>`) unless named.
    pub vmac_interface: Option<String>,
    /// Advert interval, centiseconds.
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay_ms: u64,
    /// Source of our adverts; the interface's first address of the family when None.
    pub source: Option<IpAddr>,
    /// Unicast mode: adverts go to these peers, and are accepted only from them.
    pub unicast_peers: Vec<IpAddr>,
    /// Unicast mode: require TTL / hop limit 255 on received adverts (off: peers may be routed).
    pub unicast_check_ttl: bool,
    /// keepalived's `vrrp_startup_delay`: the instance stays in Initialize this long at start.
    pub startup_delay_ms: u64,
    /// keepalived's `down_timer_adverts`: Master_Down_Interval is this many advert intervals
    /// (and the skew); 3 in the RFCs.
    pub down_timer_adverts: u32,
    /// keepalived's `lower_prio_no_advert`: a master does not answer a lower-priority advert
    /// at once (RFC 5798), it waits for its next interval.
    pub lower_prio_no_advert: bool,
    /// keepalived's `higher_prio_send_advert`: a master hearing a better one sends one advert
    /// before it becomes backup.
    pub higher_prio_send_advert: bool,
    /// keepalived's `dont_track_primary`: the interface's link state does not put the
    /// instance in Fault.
    pub dont_track_primary: bool,
    /// keepalived's `v3_checksum_as_v2` (FRR's `no checksum-with-ipv4-pseudoheader`): VRRPv3
    /// adverts over IPv4 are sent with the checksum of the message alone, without the IPv4
    /// pseudo-header. Both forms are always accepted.
    pub v3_checksum_as_v2: bool,
    /// keepalived's `skip_check_adv_addr`: adverts from the master last heard are taken even
    /// when their address list differs from this instance's (from any other sender they are
    /// dropped, as always).
    pub skip_check_adv_addr: bool,
    /// VRRPv2 simple text authentication (keepalived's auth_type PASS): the password,
    /// zero-padded to 8 bytes. Sent in every advert, required in every advert taken.
    pub auth_pass: Option<[u8; 8]>,
    /// Names of the `[[track_script]]`s this instance follows.
    pub track_scripts: Vec<String>,
    /// Names of the `[[track_file]]`s this instance follows.
    pub track_files: Vec<String>,
    /// Names of the `[[track_process]]`es this instance follows.
    pub track_processes: Vec<String>,
    /// Names of the `[[mysql]]` targets this instance follows (and fences).
    pub track_mysql: Vec<String>,
    /// Gratuitous ARP / unsolicited NA after a takeover (keepalived's garp_* settings).
    pub garp: Garp,
    /// Other interfaces whose link the instance follows (its own always puts it in Fault).
    pub track_interfaces: Vec<TrackedInterface>,
    /// Routes added while master and removed on leaving it (keepalived's `virtual_routes`).
    pub routes: Vec<Route>,
    pub notify: Notify,
}

/// An interface an instance tracks (keepalived's track_interface): with weight 0 its loss of
/// link (down, or no carrier) means Fault; otherwise the weight applies as a script's does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedInterface {
    pub name: String,
    pub weight: i32,
    pub weight_reverse: bool,
}

/// A tracked script (keepalived's vrrp_script): run periodically; its exit status is the health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackScript {
    pub name: String,
    /// Run with `/bin/sh -c`.
    pub script: String,
    pub interval_ms: u64,
    /// A run taking longer is killed (its whole process group) and counts as a failure.
    pub timeout_ms: u64,
    /// Successes in a row that make a failed script good again.
    pub rise: u32,
    /// Failures in a row that make a good script failed.
    pub fall: u32,
    /// keepalived's weight: 0 = Fault while failed; > 0 added while good; < 0 added while failed.
    pub weight: i32,
    /// keepalived's `weight ... reverse`: the adjustment goes the other way (a positive weight
    /// is subtracted while good, a negative one added while failed; weight 0: Fault while good).
    pub weight_reverse: bool,
    /// keepalived's `init_fail`: the script starts failed, and needs `rise` successes (without
    /// it, the first result, awaited before the instances start, counts at once).
    pub init_fail: bool,
}

/// keepalived's notify scripts of one instance (run with `/bin/sh -c`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    /// When the instance stops (the daemon shuts down).
    pub stop: Option<String>,
    /// Called on every change with `INSTANCE <name> <MASTER|BACKUP|FAULT|STOP> <priority>`.
    pub generic: Option<String>,
    pub timeout_ms: u64,
}

/// A secret (a password): never shown by Debug or Display.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Where a MySQL target's password came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// `password` in the config file itself (which must then not be readable by others).
    ConfigFile,
    /// `password_env`: this environment variable.
    Env(String),
    /// `option_file`: a MySQL option file's [client] section.
    OptionFile(PathBuf),
    /// None given: an empty password.
    None,
}

/// A MySQL / MariaDB server to probe (and to fence, with `fence`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MysqlTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub password_source: PasswordSource,
    pub tls: bool,
    /// With `tls`: a PEM file of the CA(s) that signed the server's certificate (default: the
    /// web PKI roots).
    pub tls_ca: Option<PathBuf>,
    pub interval_ms: u64,
    /// Bounds every call (connect, each query, SET GLOBAL).
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    /// Added to the priority while the server is down; 0: Fault.
    pub weight: i32,
    /// A query whose first column of the first row must equal `expect` (when given).
    pub query: Option<String>,
    pub expect: Option<String>,
    /// Replication health as a track of its own.
    pub replication: Option<ReplicationCheck>,
    /// read_only ON whenever this node is not master; OFF once it owns the VIP.
    pub fence: bool,
    /// On promotion, wait at most this long for the relay log to be applied before enabling
    /// writes; None: take over at once.
    pub catch_up_timeout_ms: Option<u64>,
    /// A fence held off by a lock wait this long kills the application's sessions; None:
    /// never.
    pub fence_escalate_ms: Option<u64>,
    /// The peer's server (another `[[mysql]]` target's name): set read_only before this node
    /// enables writes, and kept read_only while this node is master.
    pub peer: Option<String>,
}

/// The write lease (`[write_lease]`): writes are enabled only while a majority of {this node,
/// its peer, the witness} grants a time-bounded lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteLease {
    /// This node's address (its identity among the voters) and UDP port.
    pub listen: std::net::SocketAddr,
    /// The peer's `listen`.
    pub peer: std::net::SocketAddr,
    /// The witness (`xvrrp witness`); None: without one, a node that cannot hear its peer
    /// holds the lease alone.
    pub witness: Option<std::net::SocketAddr>,
    /// The key shared by the pair and the witness (HMAC-SHA256).
    pub key: Secret,
    /// Whether the key is written in the config file (which must then not be readable by
    /// others).
    pub key_in_file: bool,
    /// The environment variable the key came from (`key_env`).
    pub key_env: Option<String>,
    pub lease_ms: u32,
}

/// How replication health counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationCheck {
    /// Lag beyond this (Seconds_Behind_Master) is unhealthy.
    pub max_lag_s: u64,
    /// Added to the priority while unhealthy; 0: Fault.
    pub weight: i32,
}

/// A tracked file (keepalived's track_file): the number in it, times the weight, is added to
/// the priority of the instances that follow it; -254 or less puts them in Fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackFile {
    pub name: String,
    pub path: PathBuf,
    pub weight: i32,
    /// keepalived's `weight ... reverse`: the number times the weight is subtracted.
    pub weight_reverse: bool,
    /// How often the file is read.
    pub interval_ms: u64,
}

/// How the arguments of a tracked process are compared (keepalived's param_match).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParamMatch {
    /// The process has exactly these arguments.
    #[default]
    Exact,
    /// Its first arguments are these; more may follow.
    Partial,
    /// Its command line starts with this one: the last argument given may be the start of a
    /// longer one, and more may follow.
    Initial,
}

/// A tracked process (keepalived's vrrp_track_process): good while the number of running
/// processes that match is within the quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackProcess {
    pub name: String,
    /// Matched exactly against the process name (`/proc/PID/comm`, 15 bytes at most), or, with
    /// `full_command` or `args`, against the first word of the command line.
    pub process: String,
    /// The arguments to match (the command line after its first word); None: any.
    pub args: Option<Vec<String>>,
    pub param_match: ParamMatch,
    /// Match `process` against the first word of the command line instead of the name.
    pub full_command: bool,
    /// Fewest matching processes for the track to be good.
    pub quorum: u32,
    /// Most matching processes for the track to be good (None: no limit).
    pub quorum_max: Option<u32>,
    /// keepalived's weight: 0 = Fault while failed; > 0 added while good; < 0 added while failed.
    pub weight: i32,
    /// keepalived's `weight ... reverse`: the adjustment goes the other way (a positive weight
    /// is subtracted while good, a negative one added while failed; weight 0: Fault while good).
    pub weight_reverse: bool,
    /// How long a quorum gained must hold before the track is good again.
    pub fork_delay_ms: u64,
    /// How long a quorum lost must stay lost before the track fails.
    pub terminate_delay_ms: u64,
    /// How often /proc is read for new processes (an exit is seen at once, via a pidfd).
    pub scan_interval_ms: u64,
}

impl TrackProcess {
    /// A track of the process named `process`, with the defaults of the config file.
    pub fn new(name: &str, process: &str) -> Self {
        Self {
            name: name.into(),
            process: process.into(),
            args: None,
            param_match: ParamMatch::Exact,
            full_command: false,
            quorum: 1,
            quorum_max: None,
            weight: 0,
            weight_reverse: false,
            fork_delay_ms: 0,
            terminate_delay_ms: 0,
            scan_interval_ms: default_scan_interval_ms() as u64,
        }
    }
}

/// Instances that change state together (keepalived's vrrp_sync_group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    pub instances: Vec<String>,
    /// The group's own notify scripts (keepalived's, on the group): run when the group as a
    /// whole becomes master, backup or faulty, or stops.
    pub notify: Notify,
}

/// Announcements after a takeover, in milliseconds (keepalived's garp_master_* and
/// garp_interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Garp {
    /// Second burst after this; 0 for none.
    pub delay_ms: u64,
    /// Announcements per VIP in each burst.
    pub repeat: u32,
    /// Refresh period while master; 0 for none.
    pub refresh_ms: u64,
    pub refresh_repeat: u32,
    /// Gap between two announcements.
    pub interval_ms: u64,
    /// Announcements per VIP when a master hears a lower-priority advert (keepalived's
    /// `garp_lower_prio_repeat`; default `repeat`).
    pub lower_prio_repeat: u32,
    /// The second such burst after this (`garp_lower_prio_delay`; default `delay_ms`).
    pub lower_prio_delay_ms: u64,
}

/// A valid configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub interface: String,
    pub xdp_mode: XdpAttach,
    /// Root of the BPF filesystem; maps are pinned under `<bpffs>/xvrrp/<interface>/`.
    pub bpffs: PathBuf,
    /// The data plane stops answering for VIPs when the daemon's heartbeat is older than this.
    pub heartbeat_limit_ms: u64,
    /// Whether the file sets `heartbeat_limit_ms` (false: derived from the advert intervals,
    /// see [`validate::derived_heartbeat_limit`]).
    pub heartbeat_limit_explicit: bool,
    /// Add the VIPs to the interface while master (false: only answer ARP / ND for them).
    pub configure_vips: bool,
    /// The control socket `xvrrp status` reads.
    pub control_socket: PathBuf,
    /// The JSON-lines event stream of state changes (None: off).
    pub event_socket: Option<PathBuf>,
    /// Where the Prometheus endpoint listens (None: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub track_scripts: Vec<TrackScript>,
    pub track_files: Vec<TrackFile>,
    pub track_processes: Vec<TrackProcess>,
    pub mysql: Vec<MysqlTarget>,
    pub sync_groups: Vec<SyncGroup>,
    pub instances: Vec<Instance>,
    pub write_lease: Option<WriteLease>,
    /// Who tracked and notify scripts run as (keepalived's `script_user`); None: xvrrp's own
    /// user.
    pub script_user: Option<crate::scripts::ScriptUser>,
}

impl Instance {
    /// The VIPs and the excluded addresses: all the instance puts on the interface, answers
    /// for and announces while master.
    pub fn all_vips(&self) -> impl Iterator<Item = &Vip> {
        self.vips.iter().chain(&self.vips_excluded)
    }

    /// The interfaces other than `own` (the instance's) that its VIPs and routes go on, each
    /// once: their links are tracked as the instance's own is (keepalived's behaviour).
    pub fn other_devs(&self, own: &str) -> Vec<String> {
        let mut devs: Vec<String> = self
            .all_vips()
            .filter_map(|v| v.dev.clone())
            .chain(self.routes.iter().filter_map(|r| r.dev.clone()))
            .filter(|d| d != own)
            .collect();
        devs.sort();
        devs.dedup();
        devs
    }

    /// Whether the instance's VIPs are IPv6 (an instance without VIPs is IPv4).
    pub fn ipv6(&self) -> bool {
        self.family().is_v6()
    }

    /// The family of the instance's VIPs (an instance without VIPs is IPv4).
    pub fn family(&self) -> vrrp_common::vrrp::Family {
        self.vips
            .first()
            .map_or(vrrp_common::vrrp::Family::V4, |v| {
                vrrp_common::vrrp::Family::of(&v.addr)
            })
    }
}

impl Config {
    /// Whether some instance follows the object `name` in the list `pick` gives (its
    /// `track_scripts`, `track_files` or `track_mysql`).
    pub fn tracked(&self, pick: impl Fn(&Instance) -> &Vec<String>, name: &str) -> bool {
        self.instances
            .iter()
            .any(|i| pick(i).iter().any(|n| n == name))
    }

    /// The environment variables that hold secrets (`password_env`, `key_env`): scripts run
    /// without them.
    pub fn secret_env(&self) -> Vec<String> {
        self.mysql
            .iter()
            .filter_map(|t| match &t.password_source {
                PasswordSource::Env(var) => Some(var.clone()),
                _ => None,
            })
            .chain(self.write_lease.iter().filter_map(|w| w.key_env.clone()))
            .collect()
    }

    /// Where the maps of the data plane on `iface` are pinned.
    pub fn pin_dir_of(&self, iface: &str) -> PathBuf {
        self.bpffs.join("xvrrp").join(iface)
    }

    /// Where the maps of the data plane on the configuration's `interface` are pinned.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir_of(&self.interface)
    }

    /// The interfaces the instances run on, each once: the configuration's `interface` first
    /// when an instance runs there, then the others in the order instances name them.
    pub fn interfaces(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let used = self.instances.iter().map(|i| &i.interface);
        for name in used.clone().filter(|n| **n == self.interface).chain(used) {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        all
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: String,
    #[serde(default)]
    xdp_mode: XdpAttach,
    #[serde(default)]
    bpffs: Option<PathBuf>,
    #[serde(default)]
    heartbeat_limit_ms: Option<i64>,
    #[serde(default = "default_true")]
    configure_vips: bool,
    #[serde(default)]
    control_socket: Option<PathBuf>,
    #[serde(default)]
    event_socket: Option<PathBuf>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    track_script: Vec<RawTrackScript>,
    #[serde(default)]
    track_file: Vec<RawTrackFile>,
    #[serde(default)]
    track_process: Vec<RawTrackProcess>,
    #[serde(default)]
    mysql: Vec<RawMysql>,
    #[serde(default)]
    sync_group: Vec<RawSyncGroup>,
    #[serde(default)]
    instance: Vec<RawInstance>,
    #[serde(default)]
    write_lease: Option<RawWriteLease>,
    #[serde(default)]
    script_user: Option<String>,
    #[serde(default)]
    enable_script_security: bool,
}

/// Its Debug shows no key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWriteLease {
    listen: String,
    peer: String,
    #[serde(default)]
    witness: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_env: Option<String>,
    #[serde(default = "default_lease_ms")]
    lease_ms: i64,
}

impl fmt::Debug for RawWriteLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawWriteLease")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

const fn default_lease_ms() -> i64 {
    3_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    vrid: i64,
    #[serde(default = "default_priority")]
    priority: i64,
    #[serde(default)]
    state: InitialState,
    #[serde(default = "default_version")]
    version: i64,
    #[serde(default)]
    vips: Vec<String>,
    #[serde(default)]
    vips_excluded: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    virtual_mac: bool,
    #[serde(default)]
    vmac_interface: Option<String>,
    #[serde(default = "default_advert_interval_ms")]
    advert_interval_ms: i64,
    #[serde(default = "default_true")]
    preempt: bool,
    #[serde(default)]
    preempt_delay_ms: i64,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    unicast_peers: Vec<String>,
    #[serde(default)]
    unicast_check_ttl: bool,
    #[serde(default)]
    skip_check_adv_addr: bool,
    #[serde(default)]
    auth_pass: Option<String>,
    #[serde(default)]
    track_scripts: Vec<String>,
    #[serde(default)]
    track_interfaces: Vec<toml::Value>,
    #[serde(default)]
    track_files: Vec<String>,
    #[serde(default)]
    track_processes: Vec<String>,
    #[serde(default)]
    track_mysql: Vec<String>,
    #[serde(default = "default_garp_delay_ms")]
    garp_master_delay_ms: i64,
    #[serde(default = "default_garp_repeat")]
    garp_master_repeat: i64,
    #[serde(default)]
    garp_master_refresh_ms: i64,
    #[serde(default = "default_one")]
    garp_master_refresh_repeat: i64,
    #[serde(default)]
    garp_interval_ms: i64,
    #[serde(default)]
    garp_lower_prio_delay_ms: Option<i64>,
    #[serde(default)]
    garp_lower_prio_repeat: Option<i64>,
    #[serde(default)]
    startup_delay_ms: i64,
    #[serde(default = "default_down_timer_adverts")]
    down_timer_adverts: i64,
    #[serde(default)]
    lower_prio_no_advert: bool,
    #[serde(default)]
    higher_prio_send_advert: bool,
    #[serde(default)]
    dont_track_primary: bool,
    #[serde(default)]
    v3_checksum_as_v2: bool,
    #[serde(default)]
    notify_master: Option<String>,
    #[serde(default)]
    notify_backup: Option<String>,
    #[serde(default)]
    notify_fault: Option<String>,
    #[serde(default)]
    notify_stop: Option<String>,
    #[serde(default)]
    notify: Option<String>,
    #[serde(default = "default_notify_timeout_ms")]
    notify_timeout_ms: i64,
}

const fn default_notify_timeout_ms() -> i64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrackScript {
    name: String,
    script: String,
    #[serde(default = "default_advert_interval_ms")]
    interval_ms: i64,
    #[serde(default)]
    timeout_ms: Option<i64>,
    #[serde(default = "default_one")]
    rise: i64,
    #[serde(default = "default_one")]
    fall: i64,
    #[serde(default)]
    weight: i64,
    #[serde(default)]
    weight_reverse: bool,
    #[serde(default)]
    init_fail: bool,
}

const fn default_down_timer_adverts() -> i64 {
    3
}

const fn default_one() -> i64 {
    1
}

const fn default_garp_delay_ms() -> i64 {
    5_000
}

const fn default_garp_repeat() -> i64 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrackFile {
    name: String,
    path: PathBuf,
    #[serde(default = "default_one")]
    weight: i64,
    #[serde(default)]
    weight_reverse: bool,
    #[serde(default = "default_advert_interval_ms")]
    interval_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrackProcess {
    name: String,
    process: String,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    param_match: Option<String>,
    #[serde(default)]
    full_command: bool,
    #[serde(default)]
    quorum: Option<i64>,
    #[serde(default)]
    quorum_max: Option<i64>,
    #[serde(default)]
    weight: i64,
    #[serde(default)]
    weight_reverse: bool,
    #[serde(default)]
    delay_ms: Option<i64>,
    #[serde(default)]
    fork_delay_ms: Option<i64>,
    #[serde(default)]
    terminate_delay_ms: Option<i64>,
    #[serde(default = "default_scan_interval_ms")]
    scan_interval_ms: i64,
}

const fn default_scan_interval_ms() -> i64 {
    1_000
}

/// Its Debug shows no password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    name: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    option_file: Option<PathBuf>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_ca: Option<PathBuf>,
    #[serde(default = "default_mysql_interval_ms")]
    interval_ms: i64,
    #[serde(default = "default_mysql_timeout_ms")]
    timeout_ms: i64,
    #[serde(default = "default_two")]
    rise: i64,
    #[serde(default = "default_two")]
    fall: i64,
    #[serde(default)]
    weight: i64,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    replication: bool,
    #[serde(default = "default_max_lag_s")]
    max_lag_s: i64,
    #[serde(default)]
    replication_weight: i64,
    #[serde(default = "default_true")]
    fence: bool,
    #[serde(default = "default_takeover")]
    takeover: String,
    #[serde(default = "default_catch_up_timeout_ms")]
    catch_up_timeout_ms: i64,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default = "default_fence_escalate_ms")]
    fence_escalate_ms: i64,
}

const fn default_fence_escalate_ms() -> i64 {
    2_000
}

impl fmt::Debug for RawMysql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMysql")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const fn default_mysql_interval_ms() -> i64 {
    1000
}

const fn default_mysql_timeout_ms() -> i64 {
    1000
}

const fn default_two() -> i64 {
    2
}

const fn default_max_lag_s() -> i64 {
    30
}

fn default_takeover() -> String {
    "wait_catch_up".into()
}

const fn default_catch_up_timeout_ms() -> i64 {
    5000
}

/// The [client] section of a MySQL option file: user, password, host, port.
fn read_option_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "expected a readable MySQL option file, got {}: {e}",
            path.display()
        )
    })?;
    let mut section = String::new();
    let mut found = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        if section != "client" {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        found.insert(key.trim().replace('-', "_"), value.to_owned());
    }
    Ok(found)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyncGroup {
    name: String,
    instances: Vec<String>,
    #[serde(default)]
    notify_master: Option<String>,
    #[serde(default)]
    notify_backup: Option<String>,
    #[serde(default)]
    notify_fault: Option<String>,
    #[serde(default)]
    notify_stop: Option<String>,
    #[serde(default)]
    notify: Option<String>,
    #[serde(default = "default_notify_timeout_ms")]
    notify_timeout_ms: i64,
}

const fn default_advert_interval_ms() -> i64 {
    1000
}

const fn default_true() -> bool {
    true
}

const fn default_priority() -> i64 {
    100
}

const fn default_version() -> i64 {
    3
}

/// The least `heartbeat_limit_ms` derived from the advert intervals.
pub const DEFAULT_HEARTBEAT_LIMIT_MS: i64 = 250;

/// The default BPF filesystem mount point.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            key: String::new(),
            message: format!("cannot read the file: {err}"),
        }],
    })?;
    let config = parse(&text, path)?;
    // A password in the file: the file must not be readable by others.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(path)
            .map(|m| m.permissions())
            .map_err(|err| ConfigError {
                file: path.to_owned(),
                problems: vec![Problem {
                    key: String::new(),
                    message: format!("cannot read the file's permissions: {err}"),
                }],
            })?,
    );
    let problems: Vec<Problem> = config
        .mysql
        .iter()
        .enumerate()
        .filter(|(_, t)| t.password_source == PasswordSource::ConfigFile && mode & 0o004 != 0)
        .map(|(i, _)| format!("mysql[{i}].password"))
        .chain(
            config
                .write_lease
                .as_ref()
                .filter(|w| w.key_in_file && mode & 0o004 != 0)
                .map(|_| "write_lease.key".to_owned()),
        )
        .map(|key| Problem {
            key,
            message: format!(
                "expected a file not readable by others when it holds a password, but its mode is {:o} (chmod o-r, or use password_env or option_file)",
                mode & 0o777
            ),
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError {
            file: path.to_owned(),
            problems,
        });
    }
    Ok(config)
}

/// Parses and validates config text; `file` only names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|err| {
        fail(vec![Problem {
            key: String::new(),
            message: format!("not valid TOML: {}", one_line(&err.to_string())),
        }])
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let message = one_line(&err.into_inner().to_string());
        fail(vec![Problem {
            key: if key == "." { String::new() } else { key },
            message,
        }])
    })?;
    validate(raw).map_err(fail)
}

/// toml's messages quote the offending line over several lines; keep the location and the
/// message on one.
fn one_line(message: &str) -> String {
    let message = message.trim();
    let mut lines = message.lines();
    match (lines.next(), message.lines().last()) {
        (Some(first), Some(last)) if first.starts_with("TOML parse error at ") => {
            format!(
                "{}: {}",
                first.trim_start_matches("TOML parse error at "),
                last.trim()
            )
        }
        _ => message.lines().map(str::trim).collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    fn errors(text: &str) -> Vec<String> {
        parse_str(text)
            .expect_err("config should be refused")
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    const GOOD: &str = r#"
        interface = "eth0"

        [[instance]]
        name = "mysql"
        vrid = 51
        priority = 150
        state = "master"
        vips = ["192.0.2.100/24", "192.0.2.101"]
        virtual_mac = true

        [[instance]]
        vrid = 52
        vips = ["198.51.100.7/32"]
    "#;

    #[test]
    fn a_valid_config_parses_with_defaults() {
        let config = parse_str(GOOD).unwrap();
        assert_eq!(config.interface, "eth0");
        assert_eq!(config.xdp_mode, XdpAttach::Auto);
        assert_eq!(config.bpffs, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(config.pin_dir(), PathBuf::from("/sys/fs/bpf/xvrrp/eth0"));
        assert_eq!(config.instances.len(), 2);
        let mysql = &config.instances[0];
        assert_eq!(mysql.name, "mysql");
        assert_eq!((mysql.vrid, mysql.priority), (51, 150));
        assert_eq!(mysql.state, InitialState::Master);
        assert!(mysql.virtual_mac);
        assert_eq!(
            mysql.vips,
            vec![
                Vip {
                    addr: IpAddr::from([192, 0, 2, 100]),
                    prefix: 24,
                    dev: None,
                    label: None,
                },
                Vip {
                    addr: IpAddr::from([192, 0, 2, 101]),
                    prefix: 32,
                    dev: None,
                    label: None,
                }
            ]
        );
        let second = &config.instances[1];
        assert_eq!(second.name, "vrid52");
        assert_eq!(second.priority, 100);
        assert_eq!(second.state, InitialState::Backup);
        assert!(!second.virtual_mac);
    }

    #[test]
    fn xdp_mode_and_bpffs_are_read() {
        let config = parse_str(
            "interface = \"eth1\"\nxdp_mode = \"generic\"\nbpffs = \"/run/bpf\"\n[[instance]]\nvrid = 1\nvips = [\"10.1.1.1\"]\n",
        )
        .unwrap();
        assert_eq!(config.xdp_mode, XdpAttach::Generic);
        assert_eq!(config.pin_dir(), PathBuf::from("/run/bpf/xvrrp/eth1"));
    }

    #[test]
    fn unknown_top_level_key_is_refused() {
        let errs = errors("interface = \"eth0\"\nintreface = 1\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("test.toml: "), "{errs:?}");
        assert!(errs[0].contains("unknown field `intreface`"), "{errs:?}");
    }

    #[test]
    fn unknown_instance_key_names_its_path() {
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"10.0.0.1\"]\n[[instance]]\nvrid = 2\nvips = [\"10.0.0.2\"]\npriorty = 3\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("test.toml: instance[1].priorty: "),
            "{errs:?}"
        );
        assert!(errs[0].contains("unknown field `priorty`"), "{errs:?}");
    }

    #[test]
    fn wrong_type_names_the_key_and_the_expected_type() {
        let errs = errors("interface = \"eth0\"\n[[instance]]\nvrid = \"fifty\"\nvips = []\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("test.toml: instance[0].vrid: "),
            "{errs:?}"
        );
        assert!(errs[0].contains("expected i64"), "{errs:?}");
    }

    #[test]
    fn bad_state_value_names_the_choices() {
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 5\nstate = \"leader\"\nvips = [\"10.0.0.1\"]\n",
        );
        assert!(
            errs[0].starts_with("test.toml: instance[0].state: "),
            "{errs:?}"
        );
        assert!(
            errs[0].contains("master") && errs[0].contains("backup"),
            "{errs:?}"
        );
    }

    #[test]
    fn missing_required_key() {
        let errs = errors("[[instance]]\nvrid = 1\nvips = [\"10.0.0.1\"]\n");
        assert!(errs[0].contains("missing field `interface`"), "{errs:?}");
    }

    #[test]
    fn syntax_error_is_reported_with_its_location() {
        let errs = errors("interface = \"eth0\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs,
            vec![
                "test.toml: not valid TOML: line 1, column 18: invalid basic string, expected `\"`"
            ]
        );
    }

    #[test]
    fn mysql_targets_and_where_their_passwords_come_from() {
        let dir = std::env::temp_dir().join(format!("xvrrp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let option_file = dir.join("my.cnf");
        std::fs::write(
            &option_file,
            "[mysqld]\nuser=mysql\n[client]\nuser = probe\npassword = \"from-file\"\nport=3307\n",
        )
        .unwrap();
        let text = format!(
            "interface = \"eth0\"\n[[mysql]]\nname = \"inline\"\nuser = \"u\"\npassword = \"inline-secret\"\n\
             replication = true\nreplication_weight = -50\ntakeover = \"at_once\"\n\
             [[mysql]]\nname = \"opt\"\noption_file = \"{}\"\n\
             [[instance]]\nvrid = 1\nvips = [\"10.0.0.1\"]\ntrack_mysql = [\"inline\", \"opt\"]\n",
            option_file.display()
        );
        let config = parse_str(&text).unwrap();
        let [inline, opt] = &config.mysql[..] else {
            panic!("two targets")
        };
        assert_eq!(inline.password.expose(), "inline-secret");
        assert_eq!(inline.password_source, PasswordSource::ConfigFile);
        assert_eq!(inline.catch_up_timeout_ms, None);
        assert_eq!(
            inline.replication,
            Some(ReplicationCheck {
                max_lag_s: 30,
                weight: -50
            })
        );
        assert_eq!((opt.user.as_str(), opt.port), ("probe", 3307));
        assert_eq!(opt.password.expose(), "from-file");
        assert_eq!(opt.catch_up_timeout_ms, Some(5000));
        // Never shown.
        assert!(!format!("{config:?}").contains("inline-secret"));
        assert!(!format!("{config:?}").contains("from-file"));

        // A password in a file others can read is refused, naming the key.
        let path = dir.join("xvrrp.toml");
        std::fs::write(&path, &text).unwrap();
        let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
        std::fs::set_permissions(&path, mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("xvrrp.toml: mysql[0].password: expected a file not readable by others when it holds a password, but its mode is 644"),
            "{err}"
        );
        std::fs::set_permissions(&path, mode(0o600)).unwrap();
        assert!(load(&path).is_ok());

        let errs = errors(
            "interface = \"eth0\"\n[[mysql]]\nname = \"x\"\npassword = \"p\"\npassword_env = \"XVRRP_TEST_UNSET_VARIABLE\"\n\
             takeover = \"later\"\nexpect = \"1\"\nport = 0\n[[instance]]\nvrid = 1\nvips = [\"10.0.0.1\"]\ntrack_mysql = [\"y\"]\n",
        );
        assert_eq!(
            errs,
            [
                "test.toml: mysql[0].password: expected one of password, password_env and option_file, got more than one",
                "test.toml: mysql[0].user: expected a user name, here or in the option file's [client] section",
                "test.toml: instance[0].track_mysql[0]: expected the name of a [[mysql]] target, got \"y\"",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vips_on_other_interfaces_and_routes() {
        let config = parse_str(
            r#"
            interface = "eth0"
            [[instance]]
            vrid = 51
            vips = ["192.0.2.100/24", "198.51.100.100/24 dev eth1 label eth1:in", "192.0.2.101 dev eth0"]
            routes = ["10.50.0.0/16 via 198.51.100.254 dev eth1", "blackhole 10.60.0.0/16", "default via 192.0.2.254 dev eth2 table 7"]
            track_interfaces = [{ name = "eth2", weight = -20 }]
            "#,
        )
        .unwrap();
        let i = &config.instances[0];
        assert_eq!(i.vips[1].dev.as_deref(), Some("eth1"));
        assert_eq!(
            i.vips[1].to_string(),
            "198.51.100.100/24 dev eth1 label eth1:in"
        );
        assert_eq!(
            i.vips[2].dev, None,
            "the instance's own interface named is no other"
        );
        assert_eq!(i.routes.len(), 3);
        assert_eq!(i.routes[0].dev.as_deref(), Some("eth1"));
        assert_eq!(i.other_devs("eth0"), ["eth1", "eth2"]);

        let errs = errors(
            r#"
            interface = "eth0"
            [[instance]]
            vrid = 1
            vips = ["192.0.2.1/24 dev eth1 label eth0:x", "192.0.2.2 dev", "192.0.2.3 dev eth1 dev eth2", "192.0.2.4 dev a/b"]
            routes = ["10.50.0.0/16", "10.60.0.0/16 dev eth1"]
            [[instance]]
            vrid = 2
            vips = ["192.0.2.5"]
            routes = ["10.60.0.0/16 via 192.0.2.254 table main"]
            "#,
        );
        let expect = [
            "test.toml: instance[0].vips[0]: expected a label of at most 15 characters that is \"eth1\" or starts with \"eth1:\" (the interface the VIP is on), got \"eth0:x\"",
            "test.toml: instance[0].vips[1]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\", then optionally \"dev INTERFACE\" and \"label NAME\", got \"192.0.2.2 dev\"",
            "test.toml: instance[0].vips[2]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\", then optionally \"dev INTERFACE\" and \"label NAME\", got \"192.0.2.3 dev eth1 dev eth2\"",
            "test.toml: instance[0].vips[3]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\"; after dev an interface name (1 to 15 characters, no '/', ':' or space), got \"a/b\"",
        ];
        assert_eq!(errs[..4], expect);
        assert!(
            errs[4].starts_with(
                "test.toml: instance[0].routes[0]: expected a route as `ip route` writes it"
            ) && errs[4].ends_with("needs via or dev)"),
            "{}",
            errs[4]
        );
        assert_eq!(
            errs[5],
            "test.toml: instance[1].routes[0]: expected each route once (destination, table and metric), but 10.60.0.0/16 via 192.0.2.254 table 254 is also instance[0].routes[1]"
        );
        assert_eq!(errs.len(), 6);
    }

    #[test]
    fn labels_and_virtual_mac_interfaces() {
        let config = parse_str(
            r#"
            interface = "eth0"
            [[instance]]
            vrid = 51
            virtual_mac = true
            vips = ["192.0.2.100/24 label vrrp.51:db", "192.0.2.101"]
            [[instance]]
            vrid = 52
            vips = ["192.0.2.102/24 label eth0"]
            [[instance]]
            vrid = 51
            virtual_mac = true
            vmac_interface = "v6vip"
            vips = ["2001:db8::100/64"]
            "#,
        )
        .unwrap();
        let [a, b, c] = &config.instances[..] else {
            panic!("three instances")
        };
        assert_eq!(a.vmac_interface.as_deref(), Some("vrrp.51"));
        assert_eq!(a.vips[0].label.as_deref(), Some("vrrp.51:db"));
        assert_eq!(a.vips[0].to_string(), "192.0.2.100/24 label vrrp.51:db");
        assert_eq!(a.vips[1].label, None);
        assert_eq!(b.vmac_interface, None);
        assert_eq!(b.vips[0].label.as_deref(), Some("eth0"));
        assert_eq!(c.vmac_interface.as_deref(), Some("v6vip"));

        let errs = errors(
            r#"
            interface = "eth0"
            [[instance]]
            vrid = 1
            vips = ["192.0.2.1/24 label eth1:x", "192.0.2.2 label", "192.0.2.3 lable eth0:a"]
            vmac_interface = "vm1"
            [[instance]]
            vrid = 2
            virtual_mac = true
            vmac_interface = "eth0"
            vips = ["2001:db8::1 label eth0:v6"]
            [[instance]]
            vrid = 3
            virtual_mac = true
            vips = ["192.0.2.9 label eth0:9"]
            "#,
        );
        let expect = [
            "test.toml: instance[0].vmac_interface: expected only with virtual_mac = true",
            "test.toml: instance[0].vips[0]: expected a label of at most 15 characters that is \"eth0\" or starts with \"eth0:\" (the interface the VIP is on), got \"eth1:x\"",
            "test.toml: instance[0].vips[1]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\", then optionally \"dev INTERFACE\" and \"label NAME\", got \"192.0.2.2 label\"",
            "test.toml: instance[0].vips[2]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\", then optionally \"dev INTERFACE\" and \"label NAME\", got \"192.0.2.3 lable eth0:a\"",
            "test.toml: instance[1].vmac_interface: expected a name for a new macvlan interface (1-15 characters, no '/', ':' or space, not the interface itself), got \"eth0\"",
            "test.toml: instance[1].vips[0]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\"; a label only on IPv4 (the kernel has no IPv6 address labels), got \"2001:db8::1\" with a label",
            "test.toml: instance[2].vips[0]: expected a label of at most 15 characters that is \"vrrp.3\" or starts with \"vrrp.3:\" (the interface the VIP is on), got \"eth0:9\"",
        ];
        assert_eq!(errs, expect);
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let errs = errors(
            r#"
            interface = "this-name-is-far-too-long"
            heartbeat_limit_ms = 5
            [[instance]]
            vrid = 0
            priority = 300
            version = 4
            vips = ["192.0.2.1/33", "not-an-ip", "2001:db8::1", "224.0.0.18"]
            [[instance]]
            vrid = 7
            name = ""
            vips = []
            [[instance]]
            vrid = 7
            vips = ["192.0.2.9", "192.0.2.9"]
            [[instance]]
            vrid = 7
            version = 2
            vips = ["2001:db8::7/64"]
            "#,
        );
        let expect = [
            "test.toml: interface: expected a network interface name of 1 to 15 characters",
            "test.toml: heartbeat_limit_ms: expected milliseconds from 10 to 60000, got 5",
            "test.toml: instance[0].vrid: expected an integer from 1 to 255, got 0",
            "test.toml: instance[0].version: expected 2 or 3, got 4",
            "test.toml: instance[0].priority: expected an integer from 1 to 254, or 255 for the address owner, got 300",
            "test.toml: instance[0].vips[0]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\", got the prefix \"33\" (0-32)",
            "test.toml: instance[0].vips[1]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\", got \"not-an-ip\"",
            "test.toml: instance[0].vips[2]: expected an IPv4 address like the instance's first VIP (one family per instance), got \"2001:db8::1\"",
            "test.toml: instance[0].vips[3]: expected an IPv4 or IPv6 address with an optional /prefix, like \"192.0.2.100/24\" or \"2001:db8::100/64\" that is a unicast address, got 224.0.0.18",
            "test.toml: instance[1].vips: expected at least one VIP with version = 3",
            "test.toml: instance[1].name: expected a non-empty name",
            "test.toml: instance[2].vrid: expected a VRID not used by another IPv4 instance on this-name-is-far-too-long, but 7 is also instance[1]'s",
            "test.toml: instance[2].vips[1]: expected each VIP once, but 192.0.2.9 is also instance[2].vips[0]",
            "test.toml: instance[3].version: expected 3 for IPv6 VIPs (VRRPv2 is IPv4 only), got 2",
        ];
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        for (got, want) in errs.iter().zip(expect) {
            assert!(got.starts_with(want), "got {got:?}\nwant {want:?}");
        }
    }

    #[test]
    fn a_vrrpv2_password_is_padded_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 51\nversion = 2\nadvert_interval_ms = 1000\n\
             auth_pass = \"1111\"\nvips = [\"192.0.2.100\"]\n[[instance]]\nvrid = 52\nversion = 2\n\
             advert_interval_ms = 1000\nvips = [\"192.0.2.101\"]\n",
        )
        .unwrap();
        assert_eq!(config.instances[0].auth_pass, Some(*b"1111\0\0\0\0"));
        assert_eq!(config.instances[1].auth_pass, None);
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 51\nauth_pass = \"1111\"\nvips = [\"192.0.2.100\"]\n\
             [[instance]]\nvrid = 52\nversion = 2\nadvert_interval_ms = 1000\nauth_pass = \"123456789\"\n\
             vips = [\"192.0.2.101\"]\n[[instance]]\nvrid = 53\nversion = 2\nadvert_interval_ms = 1000\n\
             auth_pass = \"\"\nvips = [\"192.0.2.102\"]\n",
        );
        let expect = [
            "test.toml: instance[0].auth_pass: expected no password with version = 3 (VRRPv3 has no authentication",
            "test.toml: instance[1].auth_pass: expected 1 to 8 bytes (a VRRPv2 advert carries 8; keepalived sends the first 8 of a longer one), got 9",
            "test.toml: instance[2].auth_pass: expected 1 to 8 bytes (a VRRPv2 advert carries 8; keepalived sends the first 8 of a longer one), got 0",
        ];
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        for (got, want) in errs.iter().zip(expect) {
            assert!(got.starts_with(want), "got {got:?}\nwant {want:?}");
        }
    }

    #[test]
    fn the_heartbeat_limit_is_twice_the_shortest_advert_interval_unless_set() {
        let limit = |intervals: &[u32], explicit: Option<u32>| {
            let mut text = String::from("interface = \"eth0\"\n");
            if let Some(ms) = explicit {
                text += &format!("heartbeat_limit_ms = {ms}\n");
            }
            for (i, ms) in intervals.iter().enumerate() {
                text += &format!(
                    "[[instance]]\nvrid = {}\nadvert_interval_ms = {ms}\nvips = [\"192.0.2.{}/24\"]\n",
                    i + 1,
                    i + 1
                );
            }
            let c = parse_str(&text).unwrap();
            (c.heartbeat_limit_ms, c.heartbeat_limit_explicit)
        };
        // 100 ms adverts: 250 ms, the least (twice would be 200).
        assert_eq!(limit(&[100], None), (250, false));
        assert_eq!(limit(&[1000], None), (2000, false));
        // The shortest interval sets it.
        assert_eq!(limit(&[3000, 1000, 2000], None), (2000, false));
        assert_eq!(limit(&[1000], Some(300)), (300, true));
    }

    #[test]
    fn ipv6_instances_and_versions_parse() {
        let config = parse_str(
            "interface = \"eth0\"\nheartbeat_limit_ms = 100\n[[instance]]\nvrid = 51\nvips = [\"2001:db8::100/64\"]\n\
             [[instance]]\nvrid = 51\nversion = 2\nvips = [\"192.0.2.100\"]\n",
        )
        .unwrap();
        assert_eq!(config.heartbeat_limit_ms, 100);
        assert!(config.configure_vips, "on by default");
        assert_eq!(config.control_socket, PathBuf::from("/run/xvrrp/eth0.sock"));
        assert!(config.instances[0].ipv6());
        assert_eq!(config.instances[0].vips[0].prefix, 64);
        assert_eq!(config.instances[0].version, 3);
        assert!(
            !config.instances[1].ipv6(),
            "the same VRID may serve each family"
        );
        assert_eq!(config.instances[1].version, 2);
    }

    #[test]
    fn election_keys_are_read_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\nadvert_interval_ms = 20\n\
             preempt = false\npreempt_delay_ms = 5000\nsource = \"192.0.2.7\"\n",
        )
        .unwrap();
        let i = &config.instances[0];
        assert_eq!(
            (i.advert_interval_cs, i.preempt, i.preempt_delay_ms),
            (2, false, 5000)
        );
        assert_eq!(i.source, Some("192.0.2.7".parse().unwrap()));
        assert!(i.unicast_peers.is_empty());
        let unicast = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\nunicast_peers = [\"192.0.2.2\", \"192.0.2.3\"]\n",
        )
        .unwrap();
        assert_eq!(unicast.instances[0].unicast_peers.len(), 2);
        assert_eq!(
            errors(
                "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\nunicast_peers = [\"fe80::1\"]\n"
            ),
            vec![
                "test.toml: instance[0].unicast_peers[0]: expected the IPv4 unicast address of a peer, got \"fe80::1\""
            ]
        );
        assert_eq!(
            parse_str(GOOD).unwrap().instances[0].advert_interval_cs,
            100
        );
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\nadvert_interval_ms = 15\n\
             source = \"2001:db8::1\"\n[[instance]]\nvrid = 2\nversion = 2\nvips = [\"192.0.2.2\"]\nadvert_interval_ms = 1500\n",
        );
        assert_eq!(
            errs,
            vec![
                "test.toml: instance[0].advert_interval_ms: expected a multiple of 10 from 10 to 40950 (VRRPv3 counts centiseconds), got 15",
                "test.toml: instance[0].source: expected an IPv4 address of this host, the source of the adverts, got \"2001:db8::1\"",
                "test.toml: instance[1].advert_interval_ms: expected whole seconds from 1000 to 255000 for VRRPv2, got 1500",
            ]
        );
    }

    #[test]
    fn track_scripts_are_read_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n[[track_script]]\nname = \"mysql\"\nscript = \"mysqladmin ping\"\ninterval_ms = 500\n\
             fall = 2\nweight = -50\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_scripts = [\"mysql\"]\n",
        )
        .unwrap();
        let t = &config.track_scripts[0];
        assert_eq!(
            (t.interval_ms, t.timeout_ms, t.rise, t.fall, t.weight),
            (500, 500, 1, 2, -50)
        );
        assert_eq!(config.instances[0].track_scripts, vec!["mysql".to_owned()]);
        let errs = errors(
            "interface = \"eth0\"\n[[track_script]]\nname = \"x\"\nscript = \" \"\nrise = 0\nweight = 300\n\
             [[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_scripts = [\"nope\"]\n",
        );
        assert_eq!(
            errs,
            vec![
                "test.toml: track_script[0].script: expected a command to run with /bin/sh -c",
                "test.toml: track_script[0].rise: expected a count from 1 to 1000, got 0",
                "test.toml: track_script[0].weight: expected -254 to 254 (0: fault while failing), got 300",
                "test.toml: instance[0].track_scripts[0]: expected the name of a [[track_script]], got \"nope\"",
            ]
        );
    }

    #[test]
    fn an_instance_without_vips_is_valid_and_track_names_do_not_collide() {
        // No VIPs is an instance of adverts and notify scripts only (as keepalived runs it
        // with VRRPv2; with VRRPv3 it refuses it).
        let errs = errors("interface = \"eth0\"\n[[instance]]\nvrid = 300\nversion = 2\n");
        assert_eq!(
            errs,
            ["test.toml: instance[0].vrid: expected an integer from 1 to 255, got 300"]
        );
        let errs = errors("interface = \"eth0\"\n[[instance]]\nvrid = 300\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[1].starts_with(
                "test.toml: instance[0].vips: expected at least one VIP with version = 3"
            ),
            "{errs:?}"
        );
        // A script and a file may share a name: they are two tracks (engine::TrackId).
        let config = parse_str(
            "interface = \"eth0\"\n[[track_file]]\nname = \"x\"\npath = \"/run/x\"\n\
             [[track_script]]\nname = \"x\"\nscript = \"true\"\n\
             [[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_scripts = [\"x\"]\ntrack_files = [\"x\"]\n",
        )
        .unwrap();
        assert_eq!(
            (
                config.track_scripts[0].name.as_str(),
                config.track_files[0].name.as_str()
            ),
            ("x", "x")
        );
    }

    #[test]
    fn keepalived_timing_and_advert_knobs_are_read_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\nstartup_delay_ms = 2000\n\
             down_timer_adverts = 5\nlower_prio_no_advert = true\nhigher_prio_send_advert = true\nv3_checksum_as_v2 = true\n\
             dont_track_primary = true\ngarp_master_repeat = 3\ngarp_lower_prio_delay_ms = 0\n",
        )
        .unwrap();
        let i = &config.instances[0];
        assert_eq!((i.startup_delay_ms, i.down_timer_adverts), (2000, 5));
        assert!(i.lower_prio_no_advert && i.higher_prio_send_advert && i.dont_track_primary);
        assert!(i.v3_checksum_as_v2);
        // The lower-priority burst defaults to the master's repeat; its delay was set to 0.
        assert_eq!(
            (i.garp.lower_prio_repeat, i.garp.lower_prio_delay_ms),
            (3, 0)
        );
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ndown_timer_adverts = 0\n\
             startup_delay_ms = -1\ngarp_lower_prio_repeat = 5000\n",
        );
        assert_eq!(
            errs,
            vec![
                "test.toml: instance[0].garp_lower_prio_repeat: expected 0 to 1000, got 5000",
                "test.toml: instance[0].startup_delay_ms: expected 0 to 3600000, got -1",
                "test.toml: instance[0].down_timer_adverts: expected a count of advert intervals from 1 to 100, got 0",
            ]
        );
        // The checksum form is a choice of VRRPv3 over IPv4 only.
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nversion = 2\nvips = [\"192.0.2.1\"]\nv3_checksum_as_v2 = true\n\
             [[instance]]\nvrid = 2\nvips = [\"2001:db8::2\"]\nv3_checksum_as_v2 = true\n",
        );
        let expected = "expected it only with version = 3 and IPv4 VIPs (VRRPv2 has no pseudo-header, and IPv6 always uses it)";
        assert_eq!(
            errs,
            [
                format!("test.toml: instance[0].v3_checksum_as_v2: {expected}"),
                format!("test.toml: instance[1].v3_checksum_as_v2: {expected}"),
            ]
        );
    }

    #[test]
    fn excluded_addresses_are_read_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\n\
             vips_excluded = [\"192.0.2.9/24 label eth0:x\", \"2001:db8::9/64\"]\n",
        )
        .unwrap();
        let i = &config.instances[0];
        assert_eq!(i.vips.len(), 1);
        assert_eq!(i.vips_excluded.len(), 2);
        assert!(!i.ipv6(), "the family is the VIPs'");
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\n\
             vips_excluded = [\"192.0.2.1\", \"nope\", \"192.0.2.8 label other\"]\n",
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].contains("instance[0].vips_excluded[0]: expected each VIP once"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("instance[0].vips_excluded[1]: expected an IPv4 or IPv6"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("instance[0].vips_excluded[2]: expected a label"),
            "{errs:?}"
        );
    }

    #[test]
    fn script_user_and_script_security_are_checked() {
        let config = parse_str(
            "interface = \"eth0\"\nscript_user = \"nobody\"\nenable_script_security = true\n\
             [[track_script]]\nname = \"x\"\nscript = \"/bin/sh -c true\"\n\
             [[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_scripts = [\"x\"]\n",
        )
        .unwrap();
        assert_eq!(config.script_user.as_ref().map(|u| u.uid), Some(65534));
        let errs = errors(
            "interface = \"eth0\"\nscript_user = \"no-such-user-xvrrp\"\nenable_script_security = true\n\
             [[track_script]]\nname = \"x\"\nscript = \"/tmp/xvrrp-no-such-dir/check --now\"\n\
             [[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_scripts = [\"x\"]\nnotify_master = \"/tmp/xvrrp-notify.sh master\"\n",
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("test.toml: script_user: expected an existing user"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with(
                "test.toml: track_script[0].script: enable_script_security: /tmp is writable"
            ),
            "{errs:?}"
        );
        // Anyone may create a file in /tmp (sticky or not).
        assert!(
            errs[2].starts_with(
                "test.toml: instance[0].notify_master: enable_script_security: /tmp is writable"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn sync_groups_and_track_files_are_read_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n[[track_file]]\nname = \"prio\"\npath = \"/run/prio\"\nweight = -10\n\
             [[sync_group]]\nname = \"g\"\ninstances = [\"a\", \"b\"]\n\
             [[instance]]\nname = \"a\"\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_files = [\"prio\"]\n\
             [[instance]]\nname = \"b\"\nvrid = 2\nvips = [\"192.0.2.2\"]\n",
        )
        .unwrap();
        assert_eq!(
            config.sync_groups[0].instances,
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(
            (
                config.track_files[0].weight,
                config.track_files[0].interval_ms
            ),
            (-10, 1000)
        );
        assert_eq!(config.instances[0].track_files, vec!["prio".to_owned()]);
        assert_eq!(
            config.instances[0].garp,
            Garp {
                delay_ms: 5_000,
                repeat: 5,
                refresh_ms: 0,
                refresh_repeat: 1,
                interval_ms: 0,
                lower_prio_repeat: 5,
                lower_prio_delay_ms: 5_000,
            },
            "keepalived's defaults"
        );
        let tuned = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\ngarp_master_delay_ms = 0\n\
             garp_master_repeat = 2\ngarp_master_refresh_ms = 60000\ngarp_interval_ms = 5\n",
        )
        .unwrap();
        assert_eq!(
            tuned.instances[0].garp,
            Garp {
                delay_ms: 0,
                repeat: 2,
                refresh_ms: 60_000,
                refresh_repeat: 1,
                interval_ms: 5,
                lower_prio_repeat: 2,
                lower_prio_delay_ms: 0,
            }
        );
        let errs = errors(
            "interface = \"eth0\"\n[[sync_group]]\nname = \"g\"\ninstances = [\"a\", \"x\"]\n\
             [[sync_group]]\nname = \"h\"\ninstances = [\"a\"]\n\
             [[instance]]\nname = \"a\"\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_files = [\"nope\"]\n",
        );
        assert_eq!(
            errs,
            vec![
                "test.toml: instance[0].track_files[0]: expected the name of a [[track_file]], got \"nope\"",
                "test.toml: sync_group[0].instances[1]: expected the name of an [[instance]], got \"x\"",
                "test.toml: sync_group[1].instances[0]: expected an instance in one sync group only, but \"a\" is also in \"g\"",
            ]
        );
    }

    #[test]
    fn tracked_interfaces_are_names_or_weighted_tables() {
        let config = parse_str(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\n\
             track_interfaces = [\"eth1\", { name = \"eth2\", weight = -10 }, \
             { name = \"eth3\", weight = 5, weight_reverse = true }]\n",
        )
        .unwrap();
        let t = |name: &str, weight, weight_reverse| TrackedInterface {
            name: name.into(),
            weight,
            weight_reverse,
        };
        assert_eq!(
            config.instances[0].track_interfaces,
            vec![
                t("eth1", 0, false),
                t("eth2", -10, false),
                t("eth3", 5, true)
            ]
        );
        let errs = errors(
            "interface = \"eth0\"\n[[instance]]\nvrid = 1\nvips = [\"192.0.2.1\"]\n\
             track_interfaces = [\"bad/name\", { name = \"eth2\", weight = 300 }, 7, \
             { name = \"eth3\", colour = \"red\" }]\n",
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(
            errs[0],
            "test.toml: instance[0].track_interfaces[0]: expected a network interface name, got \"bad/name\""
        );
        for (j, got) in [(1, "300"), (2, "7"), (3, "colour")] {
            assert!(
                errs[j].starts_with(&format!(
                    "test.toml: instance[0].track_interfaces[{j}]: expected an interface name, or a table"
                )) && errs[j].contains(got),
                "{}",
                errs[j]
            );
        }
    }

    #[test]
    fn tracked_processes_are_read_with_keepalived_defaults_and_checked() {
        let config = parse_str(
            "interface = \"eth0\"\n\
             [[track_process]]\nname = \"db\"\nprocess = \"mariadbd\"\n\
             [[track_process]]\nname = \"lb\"\nprocess = \"/usr/sbin/haproxy\"\nargs = [\"-f\"]\n\
             param_match = \"partial\"\nquorum = 2\nquorum_max = 4\nweight = -20\ndelay_ms = 500\n\
             fork_delay_ms = 100\nscan_interval_ms = 200\n\
             [[track_process]]\nname = \"none\"\nprocess = \"/bin/worker\"\nparam_match = \"exact\"\n\
             [[track_process]]\nname = \"never\"\nprocess = \"telnetd\"\nquorum_max = 0\n\
             [[instance]]\nname = \"a\"\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_processes = [\"db\", \"lb\"]\n",
        )
        .unwrap();
        assert_eq!(
            config.track_processes[0],
            TrackProcess::new("db", "mariadbd"),
            "the defaults"
        );
        assert_eq!(config.track_processes[0].quorum, 1);
        assert_eq!(config.track_processes[0].scan_interval_ms, 1_000);
        let lb = &config.track_processes[1];
        assert_eq!(lb.args, Some(vec!["-f".to_owned()]));
        assert_eq!(lb.param_match, ParamMatch::Partial);
        assert_eq!((lb.quorum, lb.quorum_max, lb.weight), (2, Some(4), -20));
        assert_eq!(
            (lb.fork_delay_ms, lb.terminate_delay_ms, lb.scan_interval_ms),
            (100, 500, 200),
            "delay_ms sets both delays; fork_delay_ms overrides one"
        );
        assert_eq!(
            config.track_processes[2].args,
            Some(vec![]),
            "param_match without args: no arguments at all (keepalived)"
        );
        assert_eq!(
            (
                config.track_processes[3].quorum,
                config.track_processes[3].quorum_max
            ),
            (0, Some(0)),
            "quorum_max 0 alone: must not run (keepalived)"
        );
        assert_eq!(
            config.instances[0].track_processes,
            vec!["db".to_owned(), "lb".to_owned()]
        );
        let errs = errors(
            "interface = \"eth0\"\n\
             [[track_process]]\nname = \"p\"\nprocess = \"\"\nparam_match = \"fuzzy\"\nquorum = 3\nquorum_max = 2\n\
             weight = 300\nterminate_delay_ms = -1\nscan_interval_ms = 1\n\
             [[track_process]]\nname = \"p\"\nprocess = \"x\"\n\
             [[instance]]\nname = \"a\"\nvrid = 1\nvips = [\"192.0.2.1\"]\ntrack_processes = [\"q\"]\n",
        );
        assert_eq!(
            errs,
            vec![
                "test.toml: track_process[0].process: expected a process name (as in /proc/PID/comm) or, with full_command, a command, got \"\"",
                "test.toml: track_process[0].param_match: expected \"exact\", \"partial\" or \"initial\", got \"fuzzy\"",
                "test.toml: track_process[0].quorum_max: expected a count from quorum (3) to 100000, got 2",
                "test.toml: track_process[0].weight: expected -254 to 254 (0: fault while failing), got 300",
                "test.toml: track_process[0].terminate_delay_ms: expected milliseconds from 0 to 3600000, got -1",
                "test.toml: track_process[0].scan_interval_ms: expected milliseconds from 10 to 3600000, got 1",
                "test.toml: track_process[1].name: expected a unique, non-empty name, got \"p\"",
                "test.toml: instance[0].track_processes[0]: expected the name of a [[track_process]], got \"q\"",
            ]
        );
    }

    #[test]
    fn a_write_lease_is_read_and_every_problem_named() {
        let base = "interface = \"eth0\"\n[[mysql]]\nname = \"local\"\nuser = \"u\"\ntimeout_ms = 300\npeer = \"other\"\n\
                    [[mysql]]\nname = \"other\"\nhost = \"192.0.2.2\"\nuser = \"u\"\n\
                    [[instance]]\nvrid = 1\nvips = [\"192.0.2.100\"]\ntrack_mysql = [\"local\"]\n";
        let config = parse_str(&format!(
            "{base}[write_lease]\nlisten = \"192.0.2.1:5405\"\npeer = \"192.0.2.2:5405\"\n\
             witness = \"192.0.2.3:5405\"\nkey = \"0123456789abcdef\"\nlease_ms = 2000\n"
        ))
        .expect("valid");
        let w = config.write_lease.expect("lease");
        assert_eq!(w.listen, "192.0.2.1:5405".parse().unwrap());
        assert_eq!(w.witness, Some("192.0.2.3:5405".parse().unwrap()));
        assert_eq!((w.lease_ms, w.key_in_file), (2000, true));
        assert_eq!(config.mysql[0].peer.as_deref(), Some("other"));

        // A key in a file others can read is refused, naming the key; a key from the
        // environment is one of the variables scripts do not see.
        let dir = std::env::temp_dir().join(format!("xvrrp-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xvrrp.toml");
        std::fs::write(
            &path,
            format!(
                "{base}[write_lease]\nlisten = \"192.0.2.1:5405\"\npeer = \"192.0.2.2:5405\"\n\
                 key = \"0123456789abcdef\"\nlease_ms = 2000\n"
            ),
        )
        .unwrap();
        let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
        std::fs::set_permissions(&path, mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("xvrrp.toml: write_lease.key: expected a file not readable by others"),
            "{err}"
        );
        std::fs::set_permissions(&path, mode(0o600)).unwrap();
        assert!(load(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        // SAFETY: this test's own variable; nothing else reads it.
        unsafe { std::env::set_var("XVRRP_TEST_LEASE_KEY", "0123456789abcdef") };
        let from_env = parse_str(&format!(
            "{base}[write_lease]\nlisten = \"192.0.2.1:5405\"\npeer = \"192.0.2.2:5405\"\n\
             key_env = \"XVRRP_TEST_LEASE_KEY\"\nlease_ms = 2000\n"
        ))
        .expect("valid");
        assert_eq!(
            from_env.secret_env(),
            vec!["XVRRP_TEST_LEASE_KEY".to_owned()]
        );
        assert_eq!(
            errors(&format!(
                "{base}[write_lease]\nlisten = \"0.0.0.0:5405\"\npeer = \"nope\"\nkey = \"short\"\nlease_ms = 1000\n"
            )),
            vec![
                "test.toml: write_lease.listen: expected ADDRESS:PORT of a host (not 0.0.0.0 or port 0), such as \"192.0.2.1:5405\", got \"0.0.0.0:5405\"",
                "test.toml: write_lease.peer: expected ADDRESS:PORT of a host (not 0.0.0.0 or port 0), such as \"192.0.2.1:5405\", got \"nope\"",
                "test.toml: write_lease.key: expected a shared key of at least 16 bytes, got 5",
                "test.toml: write_lease.lease_ms: expected 100 to 60000 and at least 3 x the time a fence may take (2 x the largest timeout_ms of a fenced [[mysql]] target: 600), got 1000",
            ]
        );
        assert_eq!(
            errors(&base.replace("peer = \"other\"", "peer = \"local\"")),
            vec![
                "test.toml: mysql[0].peer: expected the name of another [[mysql]] target (the peer's server), got \"local\""
            ]
        );
    }

    #[test]
    fn no_instance_is_refused() {
        let errs = errors("interface = \"eth0\"\n");
        assert_eq!(
            errs,
            vec!["test.toml: instance: expected at least one [[instance]] table"]
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = load(Path::new("/nonexistent/xvrrp.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/xvrrp.toml: cannot read the file"),
            "{err}"
        );
    }
}

//! The control socket: a unix socket (mode 0600) on which the daemon answers each connection
//! with its status as one JSON document; `xvrrp status` reads it and prints a table or the JSON.

use std::{
    io::{self, Read as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::engine::State;

/// The default control socket of an interface's daemon.
pub fn default_socket(interface: &str) -> PathBuf {
    Path::new("/run/xvrrp").join(format!("{interface}.sock"))
}

/// The status of a daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub interface: String,
    pub instances: Vec<InstanceStatus>,
    /// The MySQL targets probed.
    #[serde(default)]
    pub mysql: Vec<MysqlStatus>,
    /// VRIDs heard on the interface that no instance here runs (their adverts are passed on to
    /// the kernel): another VRRP daemon's, or a peer configured with a different VRID.
    #[serde(default)]
    pub other_vrids: Vec<OtherVrid>,
    /// The write lease, when configured.
    #[serde(default)]
    pub lease: Option<crate::lease::task::LeaseStatus>,
    /// Times the interface was deleted and created again and the daemon started afresh on it
    /// (in the same process).
    #[serde(default)]
    pub interface_recreated: u64,
}

/// Adverts the data plane saw for a VRID not configured here.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OtherVrid {
    /// The interface it was heard on.
    #[serde(default)]
    pub interface: String,
    pub vrid: u8,
    pub family: String,
    pub adverts: u64,
}

/// What the probe of a MySQL target last found.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MysqlStatus {
    pub name: String,
    /// host:port
    pub address: String,
    /// None until the first result.
    pub alive: Option<bool>,
    /// Why the last round failed ("" when it did not).
    pub reason: String,
    pub version: String,
    pub read_only: Option<bool>,
    /// With `replication`: the last replica status read.
    pub replication: Option<ReplicationStatus>,
    pub probes: u64,
    pub failures: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// How long the last round of checks took, microseconds.
    pub last_round_us: u64,
    /// With `fence`: fenced, unfenced, fencing, unfencing, down, or failed: why.
    #[serde(default)]
    pub fence: String,
    /// With `peer`: the peer's server's read_only as last seen (None: not seen, or
    /// unreachable).
    #[serde(default)]
    pub peer_read_only: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicationStatus {
    pub healthy: bool,
    /// Why not healthy ("" when it is).
    pub problem: String,
    pub io_running: String,
    pub sql_running: bool,
    pub seconds_behind: Option<u64>,
    pub last_io_error: String,
}

/// The status of one instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    /// The interface it runs on.
    #[serde(default)]
    pub interface: String,
    pub vrid: u8,
    pub family: String,
    pub state: crate::engine::State,
    pub effective_priority: u8,
    pub advert_interval_ms: u32,
    /// The master heard, if another node is or was master.
    pub master: Option<MasterStatus>,
    pub vips: Vec<String>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub became_master: u64,
    pub address_mismatch: u64,
    /// The data plane's counters for this VRID.
    pub data_plane: DataPlaneCounters,
    /// Keeping the VIPs on the interface (with `configure_vips`).
    #[serde(default)]
    pub vip_upkeep: VipUpkeep,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MasterStatus {
    pub address: String,
    pub priority: u8,
    pub advert_interval_ms: u32,
    /// How long ago its last advert was taken into account.
    pub seen_ms_ago: u64,
}

/// What keeping an instance's VIPs on the interface took (crate::keeper).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VipUpkeep {
    /// VIPs this master wants that are not on the interface now (the data plane does not
    /// answer for them).
    pub absent: Vec<String>,
    /// VIPs found deleted by someone else and added again.
    pub readded: u64,
    /// Attempts to add a VIP that failed.
    pub add_failures: u64,
    /// Times the instance stepped out of the election because a VIP could not be added.
    pub held_out: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DataPlaneCounters {
    pub requests: u64,
    pub answered: u64,
    pub dropped_not_master: u64,
    pub dropped_stale_heartbeat: u64,
    /// Requests passed to the kernel because the VIP is not on the interface.
    #[serde(default)]
    pub passed_vip_absent: u64,
    pub adverts_valid: u64,
    pub adverts_dropped: u64,
    /// `adverts_dropped` by reason: ttl, version, length, checksum, peer, auth, addresses.
    #[serde(default)]
    pub adverts_dropped_by_reason: std::collections::BTreeMap<String, u64>,
    pub foreign_owner: u64,
}

/// Binds the control socket, replacing a stale one, with mode 0600.
pub fn bind(path: &Path) -> io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket that answers belongs to a running daemon: a second one on the same interface
    // would fight it for the XDP program, the VIPs and MySQL.
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another xvrrp is running with this control socket (it answers); stop it first",
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Reads a daemon's status from its control socket.
pub fn query(path: &Path) -> io::Result<Status> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {e} (is xvrrp running?)", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The status as a table, one line per instance.
pub fn table(status: &Status) -> String {
    let mut out = format!(
        "{:<12} {:>4} {:<4} {:<7} {:>4} {:>8}  {:<28} {:>10} {:>10}  vips\n",
        "instance",
        "vrid",
        "fam",
        "state",
        "prio",
        "interval",
        "master (priority, seen ago)",
        "answered",
        "adv rx/tx"
    );
    for i in &status.instances {
        let master = match &i.master {
            Some(m) if i.state != State::Master => {
                format!("{} ({}, {} ms)", m.address, m.priority, m.seen_ms_ago)
            }
            _ if i.state == State::Master => "this node".to_owned(),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<12} {:>4} {:<4} {:<7} {:>4} {:>6}ms  {:<28} {:>10} {:>10}  {}\n",
            i.name,
            i.vrid,
            i.family,
            i.state,
            i.effective_priority,
            i.advert_interval_ms,
            master,
            i.data_plane.answered,
            format!("{}/{}", i.adverts_received, i.adverts_sent),
            i.vips.join(",")
        ));
        if !i.interface.is_empty() && i.interface != status.interface {
            out.push_str(&format!("{:<12} on interface {}\n", "", i.interface));
        }
        let u = &i.vip_upkeep;
        if !u.absent.is_empty() {
            out.push_str(&format!(
                "{:<12} VIP NOT ON THE INTERFACE: {} (not answered; {} failed adds)\n",
                "",
                u.absent.join(","),
                u.add_failures
            ));
        }
        if u.readded > 0 || u.held_out > 0 {
            out.push_str(&format!(
                "{:<12} VIPs deleted by others and put back: {}; held out for failed adds: {}\n",
                "", u.readded, u.held_out
            ));
        }
    }
    if !status.mysql.is_empty() {
        mysql_table(&mut out, &status.mysql);
    }
    if let Some(l) = &status.lease {
        lease_line(&mut out, l);
    }
    if status.interface_recreated > 0 {
        out.push_str(&format!(
            "\ninterface {} deleted and created again {} time(s): the daemon started afresh on it\n",
            status.interface, status.interface_recreated
        ));
    }
    if !status.other_vrids.is_empty() {
        let heard: Vec<String> = status
            .other_vrids
            .iter()
            .map(|o| {
                // The interface is named when it is not the configuration's own.
                if o.interface.is_empty() || o.interface == status.interface {
                    format!("{} {} ({} adverts)", o.family, o.vrid, o.adverts)
                } else {
                    format!(
                        "{} {} on {} ({} adverts)",
                        o.family, o.vrid, o.interface, o.adverts
                    )
                }
            })
            .collect();
        out.push_str(&format!(
            "\nheard, not configured here: {}\n",
            heard.join(", ")
        ));
    }
    out
}

/// The MySQL targets' part of the table.
fn mysql_table(out: &mut String, mysql: &[MysqlStatus]) {
    out.push_str(&format!(
        "\n{:<12} {:<22} {:<6} {:<10} {:<34} {:>8} {:>8}  {}\n",
        "mysql", "address", "alive", "read_only", "replication", "probes", "round", "last failure"
    ));
    for m in mysql {
        let yes_no = |b: Option<bool>, yes: &str, no: &str| match b {
            Some(true) => yes.to_owned(),
            Some(false) => no.to_owned(),
            None => "?".to_owned(),
        };
        let replication = match &m.replication {
            None => "-".to_owned(),
            Some(r) => format!(
                "{} (io {}, sql {}, lag {})",
                if r.healthy { "healthy" } else { "UNHEALTHY" },
                r.io_running,
                if r.sql_running { "Yes" } else { "No" },
                r.seconds_behind.map_or("-".to_owned(), |l| format!("{l}s"))
            ),
        };
        out.push_str(&format!(
            "{:<12} {:<22} {:<6} {:<10} {:<34} {:>8} {:>6}us  {}\n",
            m.name,
            m.address,
            yes_no(m.alive, "up", "DOWN"),
            yes_no(m.read_only, "ON", "OFF"),
            replication,
            m.probes,
            m.last_round_us,
            m.reason
        ));
        if !m.fence.is_empty() {
            out.push_str(&format!(
                "{:<12} fence {}{}\n",
                "",
                m.fence,
                match m.peer_read_only {
                    Some(true) => ", peer read_only ON",
                    Some(false) => ", peer read_only OFF",
                    None => "",
                }
            ));
        }
    }
}

/// The write lease's line of the table.
fn lease_line(out: &mut String, l: &crate::lease::task::LeaseStatus) {
    out.push_str(&format!(
        "\nwrite lease: {}{}{} (node {}, peer {}, {})\n",
        if l.held { "HELD" } else { "not held" },
        l.held_for_ms
            .map_or(String::new(), |ms| format!(" for {ms} ms")),
        if l.blocked {
            ", BLOCKED: yielded to a stronger holder"
        } else {
            ""
        },
        l.node,
        l.peer,
        match &l.witness {
            Some(w) => format!("witness {w}"),
            None => "NO WITNESS: a partition between the nodes can make both writable".to_owned(),
        }
    ));
    if let Some((holder, ms)) = &l.own_vote {
        out.push_str(&format!("own vote: granted to {holder} for {ms} ms\n"));
    }
}

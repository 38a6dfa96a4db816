//! The control socket: a unix socket (mode 0600) on which the daemon answers each connection
//! with its status as one JSON document; `xvrrp status` reads it and prints a table or the JSON.

use std::{
    io::{self, Read as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// The default control socket of an interface's daemon.
pub fn default_socket(interface: &str) -> PathBuf {
    Path::new("/run/xvrrp").join(format!("{interface}.sock"))
}

/// The status of a daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub interface: String,
    pub instances: Vec<InstanceStatus>,
}

/// The status of one instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub vrid: u8,
    pub family: String,
    pub state: String,
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
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MasterStatus {
    pub address: String,
    pub priority: u8,
    pub advert_interval_ms: u32,
    /// How long ago its last advert was taken into account.
    pub seen_ms_ago: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DataPlaneCounters {
    pub requests: u64,
    pub answered: u64,
    pub dropped_not_master: u64,
    pub dropped_stale_heartbeat: u64,
    pub adverts_valid: u64,
    pub adverts_dropped: u64,
    pub foreign_owner: u64,
}

/// Binds the control socket, replacing a stale one, with mode 0600.
pub fn bind(path: &Path) -> io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
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
            Some(m) if i.state != "master" => {
                format!("{} ({}, {} ms)", m.address, m.priority, m.seen_ms_ago)
            }
            _ if i.state == "master" => "this node".to_owned(),
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
    }
    out
}

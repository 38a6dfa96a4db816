//! The userspace side of the XDP data plane: loads the embedded program, attaches it, pins its
//! maps, and writes what the program reads (VIPs and per-VRID roles).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use tracing::{info, warn};
use vrrp_common::{
    CLOCK_PROGRAM_NAME, Counters, EVENTS_BYTES, GLOBAL_IFACE_MAC, Heartbeat, Liveness, MAP_EVENTS,
    MAP_HEARTBEAT, MAP_LIVENESS, MAP_PEERS, MAP_VIP_STATS, MAP_VIPS_V4, MAP_VIPS_V6,
    MAP_VRID_STATS, MAP_VRIDS, MAX_PEERS, MAX_SLOTS, MAX_VIPS, PROGRAM_NAME, PeerKey, Vip4Key,
    Vip6Key, VipStats, VipValue, VridState, VridStats,
    jiffies::{self, Calibration, JiffyClock, next_check_in},
    slot, vip_flags, vip_slot,
};

use crate::config::XdpAttach;

mod mapped;
use mapped::Mapped;
pub use vrrp_common::vrrp::Family;

/// The XDP object, built by build.rs from the `vrrp-ebpf` crate.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vrrp-ebpf"));

/// File names of the pinned maps under the pin directory, by map name in the object.
pub const PINNED_MAPS: [(&str, &str); 9] = [
    (MAP_VIPS_V4, "vips_v4"),
    (MAP_VIPS_V6, "vips_v6"),
    (MAP_VRIDS, "vrids"),
    (MAP_LIVENESS, "liveness"),
    (MAP_VRID_STATS, "vrid_stats"),
    (MAP_VIP_STATS, "vip_stats"),
    (MAP_PEERS, "peers"),
    (MAP_HEARTBEAT, "heartbeat"),
    (MAP_EVENTS, "events"),
];

/// Each pinned map's key size, value size and capacity as this build's program has them, by
/// pin name: a hitless restart may take over only maps of the same layout (and mappable where
/// this build maps them: [`mappable`]).
fn layout(file: &str) -> Option<(u32, u32, u32)> {
    use std::mem::size_of;
    let size = |n: usize| n as u32;
    Some(match file {
        "vips_v4" => (
            size(size_of::<Vip4Key>()),
            size(size_of::<VipValue>()),
            MAX_VIPS,
        ),
        "vips_v6" => (
            size(size_of::<Vip6Key>()),
            size(size_of::<VipValue>()),
            MAX_VIPS,
        ),
        "vrids" => (4, size(size_of::<VridState>()), MAX_SLOTS),
        "liveness" => (4, size(size_of::<Liveness>()), MAX_SLOTS),
        "vrid_stats" => (4, size(size_of::<VridStats>()), MAX_SLOTS),
        "vip_stats" => (4, size(size_of::<VipStats>()), MAX_VIPS),
        "peers" => (size(size_of::<PeerKey>()), 4, MAX_PEERS),
        "heartbeat" => (4, size(size_of::<Heartbeat>()), 1),
        "events" => (0, 0, EVENTS_BYTES),
        _ => return None,
    })
}

/// Whether the maps pinned in `pin_dir` have this build's layout; if not, which differs (a
/// daemon of another version left them, and its program's maps cannot be taken over).
pub fn pinned_layout_differs(pin_dir: &Path) -> Option<String> {
    for (_, file) in PINNED_MAPS {
        let path = pin_dir.join(file);
        let info = match aya::maps::MapInfo::from_pin(&path) {
            Ok(info) => info,
            Err(err) => return Some(format!("{}: {err}", path.display())),
        };
        let found = (info.key_size(), info.value_size(), info.max_entries());
        let want = layout(file)?;
        let mmapable = info.map_flags() & vrrp_common::MAP_F_MMAPABLE as u32 != 0;
        if mmapable != mappable(file) {
            return Some(format!(
                "{}: {}mappable, where this version's is {}",
                path.display(),
                if mmapable { "" } else { "not " },
                if mappable(file) { "mappable" } else { "not" }
            ));
        }
        if found != want {
            return Some(format!(
                "{}: key {} / value {} bytes, {} entries, where this version has {} / {}, {}",
                path.display(),
                found.0,
                found.1,
                found.2,
                want.0,
                want.1,
                want.2
            ));
        }
    }
    None
}

/// Whether this build's program creates the pinned map `file` with BPF_F_MMAPABLE (the daemon
/// reads and writes it through memory).
fn mappable(file: &str) -> bool {
    matches!(file, "liveness" | "heartbeat")
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock heartbeats are written with (turned into the
/// kernel's jiffies, which the request gate reads).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`, which the
/// XDP program stamps liveness and events with.
pub fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Levels of aya-log-ebpf (the `AYA_LOG_LEVEL` global of the program).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum KernelLogLevel {
    Info = 3,
    Debug = 4,
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("loading the XDP object failed")]
    Load(#[source] aya::EbpfError),
    #[error("cannot measure the kernel's jiffies against CLOCK_MONOTONIC: {0}")]
    Clock(String),
    #[error("the XDP object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("map {name} has an unexpected type")]
    MapType {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("updating map {name} failed")]
    MapUpdate {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the XDP program failed to {action}")]
    Program {
        action: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching XDP to {iface} in {mode} mode failed")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("pinning map {name} at {path} failed")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "XDP was attached to {iface} through netlink; xvrrp needs bpf_link (Linux 5.9 or later)"
    )]
    NoBpfLink { iface: String },
    #[error("{action} {path} failed")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = DataPlaneError> = std::result::Result<T, E>;

/// The attach mode actually in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

/// File name of the pinned XDP link under the pin directory.
pub const PINNED_LINK: &str = "link";

/// A loaded XDP program and its maps.
pub struct DataPlane {
    ebpf: Ebpf,
    maps: Maps,
    pin_dir: Option<PathBuf>,
    /// The XDP link, pinned in bpffs: the program stays attached if the daemon dies, and then
    /// the heartbeat check is what stops its answers.
    attachment: Option<PinnedLink>,
    /// Leave the program, link and pins in place on drop (a hitless restart follows).
    keep: bool,
    /// What the heartbeat entry holds: the last deadline, the roles the gate reads, the clock
    /// and limit the deadline is made with.
    heartbeat: Heartbeat,
    /// The heartbeat entry and the liveness entries, mapped: written and read without a
    /// syscall on the loop's wake-ups.
    heartbeat_mapped: std::sync::Arc<Mapped<Heartbeat>>,
    liveness: Mapped<Liveness>,
    /// Requests counted for VIPs since removed, by VRID slot: kept in the VRID's totals, so
    /// that they never go back.
    retired: std::collections::HashMap<u32, VipStats>,
    /// When the clock was last checked against a fresh sample (CLOCK_MONOTONIC ns), and when
    /// it is checked next.
    clock_checked_ns: u64,
    clock_check_every_ns: u64,
}

/// Writes a data plane's heartbeat deadline (word 0 of the heartbeat entry, `until`) from
/// another thread: the roles, clock and limit in the entry stay the loop's to write.
pub struct Beater {
    mapped: std::sync::Arc<Mapped<Heartbeat>>,
    clock: JiffyClock,
    limit_ns: u64,
}

impl Beater {
    /// The heartbeat of `mono_ns` (CLOCK_MONOTONIC), as [`DataPlane::heartbeat`] writes it.
    pub fn beat(&self, mono_ns: u64) {
        const _: () = assert!(std::mem::offset_of!(Heartbeat, until) == 0);
        let until = self.clock.deadline(mono_ns, self.limit_ns);
        if let Some(entry) = self.mapped.entry(0) {
            // SAFETY: the first, aligned word of the mapped entry (kept mapped by the Arc).
            unsafe { entry.cast::<u64>().write_volatile(until) };
        }
    }
}

/// How long measuring the clock may take (two to a few ticks; the slowest kernel ticks at 24 Hz).
const CLOCK_MEASURE_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);

impl DataPlane {
    /// Loads the program into the kernel (not yet attached anywhere) with the MAC of the
    /// interface it will serve.
    pub fn load(
        iface_mac: [u8; 6],
        heartbeat_limit_ns: u64,
        log_level: KernelLogLevel,
    ) -> Result<Self> {
        Self::load_with(iface_mac, heartbeat_limit_ns, log_level, None)
    }

    /// Loads the program over the maps pinned in `pin_dir` by a daemon that stopped for a
    /// hitless restart: VIPs, roles, liveness and counters carry over.
    pub fn load_resuming(
        iface_mac: [u8; 6],
        heartbeat_limit_ns: u64,
        log_level: KernelLogLevel,
        pin_dir: &Path,
    ) -> Result<Self> {
        Self::load_with(iface_mac, heartbeat_limit_ns, log_level, Some(pin_dir))
    }

    fn load_with(
        iface_mac: [u8; 6],
        heartbeat_limit_ns: u64,
        log_level: KernelLogLevel,
        reuse: Option<&Path>,
    ) -> Result<Self> {
        let level = log_level as u8;
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_IFACE_MAC, &iface_mac, true)
            .override_global(aya_log::LEVEL, &level, false);
        let pins: Vec<(&'static str, PathBuf)> = reuse
            .map(|dir| {
                PINNED_MAPS
                    .iter()
                    .map(|(name, file)| (*name, dir.join(file)))
                    .collect()
            })
            .unwrap_or_default();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(XDP_OBJECT).map_err(DataPlaneError::Load)?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|source| DataPlaneError::Program {
            action: "load (verifier)",
            source,
        })?;
        let maps = Maps::take(&mut ebpf)?;
        let map_io = |what: &'static str| {
            move |source| DataPlaneError::Io {
                action: "mmap",
                path: PathBuf::from(what),
                source,
            }
        };
        let heartbeat_mapped = std::sync::Arc::new(
            Mapped::<Heartbeat>::new(&maps.heartbeat, 1).map_err(map_io(MAP_HEARTBEAT))?,
        );
        let liveness =
            Mapped::<Liveness>::new(&maps.liveness, MAX_SLOTS).map_err(map_io(MAP_LIVENESS))?;
        // A resumed program keeps answering for the masters the last daemon left.
        let mut heartbeat = heartbeat_mapped.get(0).unwrap_or_default();
        let clock_program = clock_program(&mut ebpf)?;
        clock_program
            .load()
            .map_err(|source| DataPlaneError::Program {
                action: "load the clock sample (verifier)",
                source,
            })?;
        heartbeat.clock = measure_clock(clock_program)?;
        heartbeat.limit_ns = heartbeat_limit_ns;
        Ok(Self {
            ebpf,
            maps,
            pin_dir: reuse.map(Path::to_owned),
            attachment: None,
            keep: false,
            heartbeat,
            heartbeat_mapped,
            liveness,
            clock_checked_ns: monotonic_ns(),
            clock_check_every_ns: jiffies::CHECK_FIRST_NS,
            retired: std::collections::HashMap::new(),
        })
    }

    /// When the heartbeat's clock is next checked (CLOCK_MONOTONIC ns): by the first
    /// [`Self::heartbeat`] from then on.
    pub fn next_clock_check_ns(&self) -> u64 {
        self.clock_checked_ns
            .saturating_add(self.clock_check_every_ns)
    }

    /// The clock the heartbeat's deadlines are made with.
    pub fn jiffy_clock(&self) -> JiffyClock {
        self.heartbeat.clock
    }

    /// Checks the clock against a fresh sample (one BPF_PROG_TEST_RUN of the clock program; when,
    /// see [`next_check_in`]): a better anchor is taken, and a clock that disagrees with the
    /// kernel by more than a jiffy is measured again.
    fn check_clock(&mut self) -> Result<()> {
        let clock = self.heartbeat.clock;
        let program = clock_program(&mut self.ebpf)?;
        let (jiffies, mono) = clock_sample(program)?;
        let check = clock.check(jiffies, mono);
        self.clock_check_every_ns = next_check_in(self.clock_check_every_ns, check);
        self.heartbeat.clock = match clock.after(check, jiffies, mono) {
            Some(clock) => clock,
            None => {
                let measured = measure_clock(program)?;
                warn!(
                    tick_ns = measured.tick_ns,
                    was = clock.tick_ns,
                    jiffies,
                    predicted = clock.at(mono),
                    "the kernel's jiffies left the heartbeat's clock; measured again"
                );
                measured
            }
        };
        self.clock_checked_ns = mono;
        Ok(())
    }

    /// Starts forwarding the program's aya-log records to the `log` crate (and so to tracing).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                warn!(error = %err, "kernel-side logs are not available");
                None
            }
        }
    }

    /// The XDP program, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        xdp_program(&mut self.ebpf)
    }

    /// Another program of the object (the bench programs `xvrrp_bench`, `xvrrp_bench_base`),
    /// loaded into the kernel on first use. The daemon never loads them.
    pub fn extra_program(&mut self, name: &'static str) -> Result<&mut Xdp> {
        let program = named_program(&mut self.ebpf, name)?;
        if program.fd().is_err() {
            program.load().map_err(|source| DataPlaneError::Program {
                action: "load (verifier)",
                source,
            })?;
        }
        Ok(program)
    }

    /// Attaches the program to `iface` and pins the link as `<pin_dir>/link`. A link left
    /// there by a daemon that did not stop cleanly is replaced.
    pub fn attach(&mut self, iface: &str, mode: XdpAttach, pin_dir: &Path) -> Result<Attached> {
        create_dir(pin_dir)?;
        let link_path = pin_dir.join(PINNED_LINK);
        if link_path.exists() {
            warn!(path = %link_path.display(), "replacing the XDP link of a daemon that did not stop cleanly");
            match PinnedLink::from_pin(&link_path) {
                // Unpinned and dropped: detached.
                Ok(stale) => drop(stale.unpin()),
                Err(_) => drop(std::fs::remove_file(&link_path)),
            }
        }
        let program = xdp_program(&mut self.ebpf)?;
        let attach = |program: &mut Xdp, mode: XdpMode, name: &'static str| {
            program
                .attach(iface, mode)
                .map_err(|source| DataPlaneError::Attach {
                    iface: iface.to_owned(),
                    mode: name,
                    source,
                })
        };
        let veth = is_veth(iface);
        let (id, attached) = match mode {
            XdpAttach::Native => {
                if veth {
                    warn!(
                        iface,
                        "native XDP on a veth: its ARP / ND answers (XDP_TX) are lost unless the PEER veth \
                         also runs an XDP program; use xdp_mode = \"generic\" (or \"auto\") unless it does"
                    );
                }
                (
                    attach(program, XdpMode::Driver, "native")?,
                    Attached::Native,
                )
            }
            XdpAttach::Auto if veth => {
                info!(
                    iface,
                    "veth: attaching in GENERIC mode (native XDP_TX answers on a veth are lost unless its \
                     peer runs an XDP program; set xdp_mode = \"native\" where it does)"
                );
                (attach(program, XdpMode::Skb, "generic")?, Attached::Generic)
            }
            XdpAttach::Generic => (attach(program, XdpMode::Skb, "generic")?, Attached::Generic),
            XdpAttach::Auto => match attach(program, XdpMode::Driver, "native") {
                Ok(id) => (id, Attached::Native),
                Err(err) => {
                    warn!(
                        iface,
                        error = %error_chain(&err),
                        "native XDP is not available on this interface; falling back to GENERIC mode, \
                         which answers ARP from the slower skb path"
                    );
                    (attach(program, XdpMode::Skb, "generic")?, Attached::Generic)
                }
            },
        };
        self.hold_link(id, pin_dir, iface)?;
        Ok(attached)
    }

    /// Takes the program's link `id` and pins it as `<pin_dir>/link`.
    fn hold_link(
        &mut self,
        id: aya::programs::xdp::XdpLinkId,
        pin_dir: &Path,
        iface: &str,
    ) -> Result<()> {
        let program = xdp_program(&mut self.ebpf)?;
        let link = program
            .take_link(id)
            .map_err(|source| DataPlaneError::Program {
                action: "hand over its link",
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|_| DataPlaneError::NoBpfLink {
            iface: iface.to_owned(),
        })?;
        let link_path = pin_dir.join(PINNED_LINK);
        self.attachment = Some(
            fd_link
                .pin(&link_path)
                .map_err(|source| DataPlaneError::Pin {
                    name: "xdp link",
                    path: link_path,
                    source,
                })?,
        );
        self.pin_dir = Some(pin_dir.to_owned());
        Ok(())
    }

    /// Takes over the link pinned in `pin_dir` by the previous daemon, atomically replacing its
    /// program with this one (same maps), so that no packet goes unanswered.
    pub fn adopt(&mut self, pin_dir: &Path) -> Result<()> {
        let link_path = pin_dir.join(PINNED_LINK);
        let io = |source| DataPlaneError::Io {
            action: "adopting the XDP link at",
            path: link_path.clone(),
            source,
        };
        let pinned = PinnedLink::from_pin(&link_path)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        // Unpinned only while this process holds the link: the program stays attached.
        let fd_link = pinned.unpin().map_err(io)?;
        let xdp_link =
            XdpLink::try_from(fd_link).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let program = xdp_program(&mut self.ebpf)?;
        let id = program
            .attach_to_link(xdp_link)
            .map_err(|source| DataPlaneError::Program {
                action: "replace the program on the pinned link",
                source,
            })?;
        self.hold_link(id, pin_dir, &pin_dir.display().to_string())?;
        Ok(())
    }

    /// Leaves the program attached and everything pinned when this is dropped, and writes
    /// `marker` (outside bpffs, which holds no plain files) so that the next daemon resumes
    /// (a hitless restart).
    pub fn leave_for_restart(&mut self, marker: &Path, contents: &[u8]) -> Result<()> {
        self.keep = true;
        std::fs::write(marker, contents).map_err(|source| DataPlaneError::Io {
            action: "writing",
            path: marker.to_owned(),
            source,
        })
    }

    /// Pins every shared map under `dir` (created if needed) so that bpftool can read them.
    /// Stale pins left by a daemon that did not clean up are replaced.
    pub fn pin(&mut self, dir: &Path) -> Result<()> {
        create_dir(dir)?;
        for (name, file) in PINNED_MAPS {
            let path = dir.join(file);
            let map = self
                .maps
                .named(name)
                .ok_or(DataPlaneError::Missing { what: "map", name })?;
            if path.exists() && self.keep_pins_of(&path, map) {
                continue;
            }
            if path.exists() {
                warn!(path = %path.display(), "replacing a stale pinned map");
                std::fs::remove_file(&path).map_err(|source| DataPlaneError::Io {
                    action: "removing",
                    path: path.clone(),
                    source,
                })?;
            }
            let map = self
                .maps
                .named(name)
                .ok_or(DataPlaneError::Missing { what: "map", name })?;
            map.pin(&path).map_err(|source| DataPlaneError::Pin {
                name,
                path: path.clone(),
                source,
            })?;
        }
        self.pin_dir = Some(dir.to_owned());
        Ok(())
    }

    /// Whether the map pinned at `path` is this map (it was loaded from that pin).
    fn keep_pins_of(&self, path: &Path, map: &aya::maps::Map) -> bool {
        let pinned = MapData::from_pin(path)
            .ok()
            .and_then(|m| m.info().ok())
            .map(|i| i.id());
        let ours = map_id(map);
        pinned.is_some() && pinned == ours
    }

    /// Detaches the program, removes the pins made by [`Self::attach`] and [`Self::pin`], and
    /// the directory if it is left empty.
    pub fn unpin(&mut self) {
        if self.keep {
            return;
        }
        if let Some(link) = self.attachment.take() {
            match link.unpin() {
                // Dropping the last reference detaches the program.
                Ok(fd_link) => drop(fd_link),
                Err(err) => warn!(error = %err, "cannot unpin the XDP link"),
            }
        }
        let Some(dir) = self.pin_dir.take() else {
            return;
        };
        for (_, file) in PINNED_MAPS {
            let path = dir.join(file);
            if let Err(err) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), error = %err, "cannot remove pinned map");
            }
        }
        // Not an error when another interface's daemon still has pins beside ours.
        let _ = std::fs::remove_dir(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Publishes a VIP: requests for `addr` are answered from `value.mac` while this node is a
    /// live master of `value.vrid` (in the family of `addr`).
    pub fn set_vip(&mut self, addr: IpAddr, value: VipValue) -> Result<()> {
        match addr {
            IpAddr::V4(a) => hash_map::<Vip4Key, VipValue>(&mut self.maps.vips_v4, MAP_VIPS_V4)?
                .insert(Vip4Key { addr: a.octets() }, value, 0),
            IpAddr::V6(a) => hash_map::<Vip6Key, VipValue>(&mut self.maps.vips_v6, MAP_VIPS_V6)?
                .insert(Vip6Key { addr: a.octets() }, value, 0),
        }
        .map_err(|source| update_error(addr, source))
    }

    /// Marks a published VIP as absent from the interface (requests for it pass to the kernel,
    /// unanswered by the program) or present again.
    pub fn set_vip_absent(&mut self, addr: IpAddr, absent: bool) -> Result<()> {
        let current = self
            .vip(addr)?
            .map_err(|source| update_error(addr, source))?;
        let flags = if absent {
            current.flags | vip_flags::ABSENT
        } else {
            current.flags & !vip_flags::ABSENT
        };
        if flags == current.flags {
            return Ok(());
        }
        self.set_vip(addr, VipValue { flags, ..current })
    }

    /// Every published VIP (IPv4 first) and its entry.
    fn vips(&self) -> Result<Vec<(IpAddr, VipValue)>> {
        let v4 = hash_map_ref::<Vip4Key, VipValue>(&self.maps.vips_v4, MAP_VIPS_V4)?;
        let v6 = hash_map_ref::<Vip6Key, VipValue>(&self.maps.vips_v6, MAP_VIPS_V6)?;
        let vips = v4
            .iter()
            .filter_map(|e| e.ok())
            .map(|(k, v)| (IpAddr::from(k.addr), v))
            .chain(
                v6.iter()
                    .filter_map(|e| e.ok())
                    .map(|(k, v)| (IpAddr::from(k.addr), v)),
            )
            .collect();
        Ok(vips)
    }

    /// A published VIP's entry (the lookup's own error, KeyNotFound for one not published).
    fn vip(&self, addr: IpAddr) -> Result<Result<VipValue, aya::maps::MapError>> {
        Ok(match addr {
            IpAddr::V4(a) => hash_map_ref::<Vip4Key, VipValue>(&self.maps.vips_v4, MAP_VIPS_V4)?
                .get(&Vip4Key { addr: a.octets() }, 0),
            IpAddr::V6(a) => hash_map_ref::<Vip6Key, VipValue>(&self.maps.vips_v6, MAP_VIPS_V6)?
                .get(&Vip6Key { addr: a.octets() }, 0),
        })
    }

    /// Removes from the maps what `keep` does not name: VIPs, configured VRIDs (reset to
    /// unconfigured) and unicast peers. A hitless restart or a reload with a changed
    /// configuration inherits maps filled by the old one; what it removed must stop being
    /// answered or accepted. Returns how many entries of each went.
    pub fn prune(&mut self, keep: &Keep) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        for (addr, _) in self.vips()? {
            if !keep.vips.contains(&addr) {
                self.remove_vip(addr)?;
                pruned.vips += 1;
            }
        }
        for family in [Family::V4, Family::V6] {
            for vrid in 0..=u8::MAX {
                if keep.slots.contains(&slot(family.is_v6(), vrid)) {
                    continue;
                }
                if self.vrid(family, vrid)? != VridState::default() {
                    self.set_vrid(family, vrid, VridState::default())?;
                    pruned.vrids += 1;
                }
            }
        }
        let mut peers = hash_map::<PeerKey, u32>(&mut self.maps.peers, MAP_PEERS)?;
        let gone: Vec<PeerKey> = peers
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !keep.peers.contains(k))
            .collect();
        for k in gone {
            match peers.remove(&k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => pruned.peers += 1,
                Err(source) => {
                    return Err(DataPlaneError::MapUpdate {
                        name: MAP_PEERS,
                        source,
                    });
                }
            }
        }
        Ok(pruned)
    }

    /// Withdraws a VIP: the program passes requests for it to the kernel again. Its request
    /// counts stay in its VRID's totals ([`DataPlane::request_stats`]).
    pub fn remove_vip(&mut self, addr: IpAddr) -> Result<()> {
        let counted = match self.vip(addr)? {
            Ok(vip) => Some((
                vip_slot(&vip, addr.is_ipv6()),
                self.vip_stats(vip.stats_index)?,
            )),
            Err(_) => None,
        };
        let result = match addr {
            IpAddr::V4(a) => hash_map::<Vip4Key, VipValue>(&mut self.maps.vips_v4, MAP_VIPS_V4)?
                .remove(&Vip4Key { addr: a.octets() }),
            IpAddr::V6(a) => hash_map::<Vip6Key, VipValue>(&mut self.maps.vips_v6, MAP_VIPS_V6)?
                .remove(&Vip6Key { addr: a.octets() }),
        };
        match result {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {
                if let Some((slot, stats)) = counted {
                    self.retired.entry(slot).or_default().add(&stats);
                }
                Ok(())
            }
            Err(source) => Err(update_error(addr, source)),
        }
    }

    /// Sets the whole state of a VRID (role, flags, version).
    /// The role goes to both maps: the gate on requests reads the copy in the heartbeat entry,
    /// written first on a demotion and last on a promotion, so that neither map ever claims
    /// more than the other.
    pub fn set_vrid(&mut self, family: Family, vrid: u8, state: VridState) -> Result<()> {
        let slot = slot(family.is_v6(), vrid);
        let master = state.role == vrrp_common::role::MASTER;
        // The copy changes only where it is written next: a promotion whose first write fails
        // must not reach the gate with the next heartbeat.
        if !master && self.heartbeat.set_master(slot, false) {
            self.write_heartbeat(1)?;
        }
        array::<VridState>(&mut self.maps.vrids, MAP_VRIDS)?
            .set(slot, state, 0)
            .map_err(|source| DataPlaneError::MapUpdate {
                name: MAP_VRIDS,
                source,
            })?;
        if master && self.heartbeat.set_master(slot, true) {
            self.write_heartbeat(1)?;
        }
        Ok(())
    }

    /// The state of a VRID.
    pub fn vrid(&self, family: Family, vrid: u8) -> Result<VridState> {
        array_ref::<VridState>(&self.maps.vrids, MAP_VRIDS)?
            .get(&slot(family.is_v6(), vrid), 0)
            .map_err(|source| DataPlaneError::MapUpdate {
                name: MAP_VRIDS,
                source,
            })
    }

    /// Sets this node's role for a VRID (one of `vrrp_common::role`), keeping its flags.
    pub fn set_role(&mut self, family: Family, vrid: u8, role: u32) -> Result<()> {
        let state = VridState {
            role,
            ..self.vrid(family, vrid)?
        };
        self.set_vrid(family, vrid, state)
    }

    /// Allows unicast adverts for a VRID from `peer`.
    pub fn add_peer(&mut self, vrid: u8, peer: IpAddr) -> Result<()> {
        let key = peer_key(vrid, peer);
        hash_map::<PeerKey, u32>(&mut self.maps.peers, MAP_PEERS)?
            .insert(key, 1, 0)
            .map_err(|source| DataPlaneError::MapUpdate {
                name: MAP_PEERS,
                source,
            })
    }

    /// Writes the heartbeat the program checks before answering for a VIP: for a heartbeat at
    /// `mono_ns` (CLOCK_MONOTONIC), the gate stays open for the limit, in whole jiffies. The
    /// clock is checked against the kernel's jiffies first when a check is due.
    pub fn heartbeat(&mut self, mono_ns: u64) -> Result<()> {
        if mono_ns.saturating_sub(self.clock_checked_ns) >= self.clock_check_every_ns {
            self.check_clock()?;
        }
        self.heartbeat.until = self
            .heartbeat
            .clock
            .deadline(mono_ns, self.heartbeat.limit_ns);
        self.write_heartbeat(0)
    }

    /// A writer of the heartbeat's deadline for another thread (the pacer), with the clock
    /// and limit as they are now (a new one is needed when [`Self::jiffy_clock`] changes).
    pub fn beater(&self) -> Beater {
        Beater {
            mapped: self.heartbeat_mapped.clone(),
            clock: self.heartbeat.clock,
            limit_ns: self.heartbeat.limit_ns,
        }
    }

    /// Writes the heartbeat entry through the mapping from word `from` on, a word at a time
    /// (each word whole, as the program reads them). A change of roles writes from word 1:
    /// the deadline (word 0) stays as the last heartbeat left it, whichever thread wrote it.
    fn write_heartbeat(&mut self, from: usize) -> Result<()> {
        const WORDS: usize = size_of::<Heartbeat>() / 8;
        // SAFETY: Heartbeat is repr(C), made only of u64s (its size is asserted in vrrp-common).
        let words: [u64; WORDS] = unsafe { std::mem::transmute(self.heartbeat) };
        let entry = self
            .heartbeat_mapped
            .entry(0)
            .ok_or(DataPlaneError::Missing {
                what: "entry",
                name: MAP_HEARTBEAT,
            })?
            .cast::<u64>();
        for (i, word) in words.into_iter().enumerate().skip(from) {
            // SAFETY: within the mapped entry, aligned (page-aligned base, 8-byte words).
            unsafe { entry.add(i).write_volatile(word) };
        }
        Ok(())
    }

    /// The last valid advert seen for a VRID.
    pub fn liveness(&self, family: Family, vrid: u8) -> Result<Liveness> {
        self.liveness
            .get(slot(family.is_v6(), vrid))
            .ok_or(DataPlaneError::Missing {
                what: "entry",
                name: MAP_LIVENESS,
            })
    }

    /// A VRID's counters, summed over all CPUs.
    pub fn vrid_stats(&self, family: Family, vrid: u8) -> Result<VridStats> {
        per_cpu_sum(
            &self.maps.vrid_stats,
            MAP_VRID_STATS,
            slot(family.is_v6(), vrid),
        )
    }

    /// The request counters of every VRID slot with VIPs: the program counts each request
    /// once, in its VIP's counters; these are summed over the slot's VIPs (those this daemon
    /// removed included) and over all CPUs.
    pub fn request_stats(&self) -> Result<RequestTotals> {
        let mut by_slot = self.retired.clone();
        for (addr, vip) in self.vips()? {
            let stats = self.vip_stats(vip.stats_index)?;
            by_slot
                .entry(vip_slot(&vip, addr.is_ipv6()))
                .or_default()
                .add(&stats);
        }
        Ok(RequestTotals(by_slot))
    }

    /// A VIP's counters (by its `stats_index`), summed over all CPUs.
    pub fn vip_stats(&self, stats_index: u32) -> Result<VipStats> {
        per_cpu_sum(&self.maps.vip_stats, MAP_VIP_STATS, stats_index)
    }

    /// The event ring buffer; it can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.maps.events.take().ok_or(DataPlaneError::Missing {
            what: "map",
            name: MAP_EVENTS,
        })?;
        RingBuf::try_from(map).map_err(|source| DataPlaneError::MapType {
            name: MAP_EVENTS,
            source,
        })
    }
}

/// Each VRID's request counters, summed over its VIPs ([`DataPlane::request_stats`]).
#[derive(Clone, Debug, Default)]
pub struct RequestTotals(std::collections::HashMap<u32, VipStats>);

impl RequestTotals {
    /// The request counters of `family`'s VRID `vrid` (zero where it has no VIP).
    pub fn of(&self, family: Family, vrid: u8) -> VipStats {
        self.0
            .get(&slot(family.is_v6(), vrid))
            .copied()
            .unwrap_or_default()
    }
}

/// The clock sample program of the object ([`CLOCK_PROGRAM_NAME`]).
fn clock_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    named_program(ebpf, CLOCK_PROGRAM_NAME)
}

/// One (jiffies, CLOCK_MONOTONIC ns) sample from the clock program.
fn clock_sample(program: &mut Xdp) -> Result<(u64, u64)> {
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .map_err(|source| DataPlaneError::Program {
            action: "run the clock sample",
            source,
        })?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&out[i..i + 8]);
        u64::from_ne_bytes(b)
    };
    Ok((word(0), word(8)))
}

/// Measures how CLOCK_MONOTONIC maps to the kernel's jiffies: samples until jiffies have
/// changed often enough to tell HZ (three ticks or a few more: 3-40 ms at the usual HZ).
fn measure_clock(program: &mut Xdp) -> Result<JiffyClock> {
    let start = std::time::Instant::now();
    let mut calibration = Calibration::new();
    let mut samples = 0u32;
    while start.elapsed() < CLOCK_MEASURE_LIMIT {
        let (jiffies, mono) = clock_sample(program)?;
        samples += 1;
        if let Some(clock) = calibration.push(jiffies, mono) {
            tracing::debug!(tick_ns = clock.tick_ns, samples, took = ?start.elapsed(), "measured the kernel's jiffies");
            return Ok(clock);
        }
    }
    Err(DataPlaneError::Clock(format!(
        "no HZ the kernel can be built with fits {samples} samples over {:?}",
        CLOCK_MEASURE_LIMIT
    )))
}

/// A per-CPU array entry summed over all CPUs.
fn per_cpu_sum<T: Counters + aya::Pod>(map: &Map, name: &'static str, index: u32) -> Result<T> {
    let array: PerCpuArray<&MapData, T> =
        PerCpuArray::try_from(map).map_err(|source| DataPlaneError::MapType { name, source })?;
    let per_cpu = array
        .get(&index, 0)
        .map_err(|source| DataPlaneError::MapUpdate { name, source })?;
    let mut total = T::default();
    for cpu in per_cpu.iter() {
        total.add(cpu);
    }
    Ok(total)
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    map: &'a mut Map,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>> {
    HashMap::try_from(map).map_err(|source| DataPlaneError::MapType { name, source })
}

fn hash_map_ref<'a, K: aya::Pod, V: aya::Pod>(
    map: &'a Map,
    name: &'static str,
) -> Result<HashMap<&'a MapData, K, V>> {
    HashMap::try_from(map).map_err(|source| DataPlaneError::MapType { name, source })
}

fn array<'a, V: aya::Pod>(
    map: &'a mut Map,
    name: &'static str,
) -> Result<Array<&'a mut MapData, V>> {
    Array::try_from(map).map_err(|source| DataPlaneError::MapType { name, source })
}

fn array_ref<'a, V: aya::Pod>(map: &'a Map, name: &'static str) -> Result<Array<&'a MapData, V>> {
    Array::try_from(map).map_err(|source| DataPlaneError::MapType { name, source })
}

/// The object's shared maps, taken out of it once it is loaded: each access goes to its field
/// and is typed there, with no lookup by name.
struct Maps {
    vips_v4: Map,
    vips_v6: Map,
    vrids: Map,
    liveness: Map,
    vrid_stats: Map,
    vip_stats: Map,
    peers: Map,
    heartbeat: Map,
    /// The event ring, until the loop takes it.
    events: Option<Map>,
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(DataPlaneError::Missing { what: "map", name })
        };
        Ok(Self {
            vips_v4: take(MAP_VIPS_V4)?,
            vips_v6: take(MAP_VIPS_V6)?,
            vrids: take(MAP_VRIDS)?,
            liveness: take(MAP_LIVENESS)?,
            vrid_stats: take(MAP_VRID_STATS)?,
            vip_stats: take(MAP_VIP_STATS)?,
            peers: take(MAP_PEERS)?,
            heartbeat: take(MAP_HEARTBEAT)?,
            events: Some(take(MAP_EVENTS)?),
        })
    }

    /// The map of object name `name` (one of [`PINNED_MAPS`]), if it is still here.
    fn named(&self, name: &str) -> Option<&Map> {
        Some(match name {
            MAP_VIPS_V4 => &self.vips_v4,
            MAP_VIPS_V6 => &self.vips_v6,
            MAP_VRIDS => &self.vrids,
            MAP_LIVENESS => &self.liveness,
            MAP_VRID_STATS => &self.vrid_stats,
            MAP_VIP_STATS => &self.vip_stats,
            MAP_PEERS => &self.peers,
            MAP_HEARTBEAT => &self.heartbeat,
            MAP_EVENTS => self.events.as_ref()?,
            _ => return None,
        })
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| DataPlaneError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })
}

fn map_id(map: &aya::maps::Map) -> Option<u32> {
    use aya::maps::Map;
    let data: &MapData = match map {
        Map::Array(m) | Map::PerCpuArray(m) | Map::HashMap(m) | Map::RingBuf(m) => m,
        _ => return None,
    };
    data.info().ok().map(|i| i.id())
}

/// Whether `iface` is a veth (its driver, as `ethtool -i` reports it).
pub fn is_veth(iface: &str) -> bool {
    // struct ethtool_drvinfo: cmd, then driver[32], ... (196 bytes in all).
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct Ifreq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    let mut req = Ifreq {
        name: [0; libc::IFNAMSIZ],
        data: info.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return false;
    }
    req.name[..name.len()].copy_from_slice(name);
    // SAFETY: a datagram socket, closed below, and an ioctl given a valid ifreq whose data
    // points to a buffer of the size SIOCETHTOOL / ETHTOOL_GDRVINFO writes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        libc::close(fd);
        rc == 0 && info[4..4 + 5] == *b"veth\0"
    }
}

/// What [`DataPlane::prune`] keeps.
#[derive(Debug, Default)]
pub struct Keep {
    pub vips: std::collections::HashSet<IpAddr>,
    /// [`slot`]s of the configured VRIDs.
    pub slots: std::collections::HashSet<u32>,
    pub peers: std::collections::HashSet<PeerKey>,
}

/// What [`DataPlane::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub vips: usize,
    pub vrids: usize,
    pub peers: usize,
}

/// The key of a unicast peer in the peers map.
pub fn peer_key(vrid: u8, peer: IpAddr) -> PeerKey {
    let mut addr = [0u8; 16];
    let ipv6 = match peer {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            false
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            true
        }
    };
    PeerKey {
        slot: slot(ipv6, vrid),
        addr,
    }
}

fn update_error(addr: IpAddr, source: aya::maps::MapError) -> DataPlaneError {
    DataPlaneError::MapUpdate {
        name: if addr.is_ipv4() {
            MAP_VIPS_V4
        } else {
            MAP_VIPS_V6
        },
        source,
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.unpin();
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    named_program(ebpf, PROGRAM_NAME)
}

/// The XDP program `name` of the object.
fn named_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(DataPlaneError::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DataPlaneError::Program {
            action: "be used as XDP",
            source,
        })
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// The MAC address of a network interface in the current network namespace.
pub fn interface_mac(iface: &str) -> std::io::Result<[u8; 6]> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    for ifaddr in addrs {
        if ifaddr.interface_name != iface {
            continue;
        }
        if let Some(mac) = ifaddr
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(mac);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no network interface named {iface:?} with a MAC address"),
    ))
}

/// Mounts the BPF filesystem at `path` unless one is mounted there already.
pub fn ensure_bpffs(path: &Path) -> std::io::Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    if let Ok(fs) = nix::sys::statfs::statfs(path)
        && fs.filesystem_type().0 == BPF_FS_MAGIC
    {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(std::io::Error::from)?;
    info!(path = %path.display(), "mounted the BPF filesystem");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the embedded object holds `name` (a program's or a map's symbol).
    fn holds(name: &[u8]) -> bool {
        XDP_OBJECT.windows(name.len()).any(|w| w == name)
    }

    #[test]
    #[cfg(not(feature = "bench"))]
    fn the_daemons_object_carries_no_bench_program() {
        assert!(
            holds(b"XVRRP_VIPS4") && holds(b"xvrrp"),
            "not the XDP object?"
        );
        for bench_only in [&b"xvrrp_bench"[..], b"xvrrp_ref", b"XVRRP_BENCHBUF"] {
            assert!(
                !holds(bench_only),
                "{} is in the daemon's object",
                String::from_utf8_lossy(bench_only)
            );
        }
    }

    #[test]
    #[cfg(feature = "bench")]
    fn the_bench_object_carries_the_bench_programs_and_the_references() {
        for name in [&b"xvrrp_bench_base"[..], b"xvrrp_ref\0", b"xvrrp_ref_pass"] {
            assert!(holds(name), "{}", String::from_utf8_lossy(name));
        }
    }
}

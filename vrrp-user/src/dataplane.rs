//! The userspace side of the XDP data plane: loads the embedded program, attaches it, pins its
//! maps, and writes what the program reads (VIPs and per-VRID roles).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
};
use tracing::{info, warn};
use vrrp_common::{
    GLOBAL_IFACE_MAC, MAP_STATS, MAP_VIPS_V4, MAP_VRIDS, PROGRAM_NAME, Stats, Vip4Key, VipValue,
    VridState,
};

use crate::config::XdpAttach;

/// The XDP object, built by build.rs from the `vrrp-ebpf` crate.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vrrp-ebpf"));

/// File names of the pinned maps under the pin directory, by map name in the object.
pub const PINNED_MAPS: [(&str, &str); 3] = [
    (MAP_VIPS_V4, "vips_v4"),
    (MAP_VRIDS, "vrids"),
    (MAP_STATS, "stats"),
];

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

/// A loaded XDP program and its maps.
pub struct DataPlane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
}

impl DataPlane {
    /// Loads the program into the kernel (not yet attached anywhere) with the MAC of the
    /// interface it will serve.
    pub fn load(iface_mac: [u8; 6], log_level: KernelLogLevel) -> Result<Self> {
        let level = log_level as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_IFACE_MAC, &iface_mac, true)
            .override_global(aya_log::LEVEL, &level, false)
            .load(XDP_OBJECT)
            .map_err(DataPlaneError::Load)?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|source| DataPlaneError::Program {
            action: "load (verifier)",
            source,
        })?;
        Ok(Self {
            ebpf,
            pin_dir: None,
        })
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

    /// Attaches the program to `iface`.
    pub fn attach(&mut self, iface: &str, mode: XdpAttach) -> Result<Attached> {
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
        match mode {
            XdpAttach::Native => {
                attach(program, XdpMode::Driver, "native").map(|_| Attached::Native)
            }
            XdpAttach::Generic => {
                attach(program, XdpMode::Skb, "generic").map(|_| Attached::Generic)
            }
            XdpAttach::Auto => match attach(program, XdpMode::Driver, "native") {
                Ok(_) => Ok(Attached::Native),
                Err(err) => {
                    warn!(
                        iface,
                        error = %error_chain(&err),
                        "native XDP is not available on this interface; falling back to GENERIC mode, \
                         which answers ARP from the slower skb path"
                    );
                    attach(program, XdpMode::Skb, "generic").map(|_| Attached::Generic)
                }
            },
        }
    }

    /// Pins every shared map under `dir` (created if needed) so that bpftool can read them.
    /// Stale pins left by a daemon that did not clean up are replaced.
    pub fn pin(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| DataPlaneError::Io {
            action: "creating",
            path: dir.to_owned(),
            source,
        })?;
        for (name, file) in PINNED_MAPS {
            let path = dir.join(file);
            if path.exists() {
                warn!(path = %path.display(), "replacing a stale pinned map");
                std::fs::remove_file(&path).map_err(|source| DataPlaneError::Io {
                    action: "removing",
                    path: path.clone(),
                    source,
                })?;
            }
            let map = self
                .ebpf
                .map(name)
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

    /// Removes the pins made by [`Self::pin`] and the directory if it is left empty.
    pub fn unpin(&mut self) {
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

    /// Publishes a VIP: requests for `addr` are answered from `value.mac` while this node is
    /// master of `value.vrid`.
    pub fn set_vip_v4(&mut self, addr: Ipv4Addr, value: VipValue) -> Result<()> {
        let mut map = self.vips_v4()?;
        map.insert(
            Vip4Key {
                addr: addr.octets(),
            },
            value,
            0,
        )
        .map_err(|source| DataPlaneError::MapUpdate {
            name: MAP_VIPS_V4,
            source,
        })
    }

    /// Withdraws a VIP: the program passes requests for it to the kernel again.
    pub fn remove_vip_v4(&mut self, addr: Ipv4Addr) -> Result<()> {
        let mut map = self.vips_v4()?;
        match map.remove(&Vip4Key {
            addr: addr.octets(),
        }) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DataPlaneError::MapUpdate {
                name: MAP_VIPS_V4,
                source,
            }),
        }
    }

    /// Sets this node's role for `vrid` (one of `vrrp_common::role`).
    pub fn set_role(&mut self, vrid: u8, role: u32) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(MAP_VRIDS)
            .ok_or(DataPlaneError::Missing {
                what: "map",
                name: MAP_VRIDS,
            })?;
        let mut array: Array<&mut MapData, VridState> =
            Array::try_from(map).map_err(|source| DataPlaneError::MapType {
                name: MAP_VRIDS,
                source,
            })?;
        array
            .set(u32::from(vrid), VridState { role }, 0)
            .map_err(|source| DataPlaneError::MapUpdate {
                name: MAP_VRIDS,
                source,
            })
    }

    /// The packet counters, summed over all CPUs.
    pub fn stats(&self) -> Result<Stats> {
        let map = self.ebpf.map(MAP_STATS).ok_or(DataPlaneError::Missing {
            what: "map",
            name: MAP_STATS,
        })?;
        let array: PerCpuArray<&MapData, Stats> =
            PerCpuArray::try_from(map).map_err(|source| DataPlaneError::MapType {
                name: MAP_STATS,
                source,
            })?;
        let per_cpu = array
            .get(&0, 0)
            .map_err(|source| DataPlaneError::MapUpdate {
                name: MAP_STATS,
                source,
            })?;
        let mut total = Stats::default();
        for cpu in per_cpu.iter() {
            total.add(cpu);
        }
        Ok(total)
    }

    fn vips_v4(&mut self) -> Result<HashMap<&mut MapData, Vip4Key, VipValue>> {
        let map = self
            .ebpf
            .map_mut(MAP_VIPS_V4)
            .ok_or(DataPlaneError::Missing {
                what: "map",
                name: MAP_VIPS_V4,
            })?;
        HashMap::try_from(map).map_err(|source| DataPlaneError::MapType {
            name: MAP_VIPS_V4,
            source,
        })
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.unpin();
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(DataPlaneError::Missing {
            what: "program",
            name: PROGRAM_NAME,
        })?;
    program
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

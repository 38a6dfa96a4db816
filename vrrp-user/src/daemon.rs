//! The daemon: one event loop that owns the data plane and reacts to signals.

use std::{net::IpAddr, os::fd::AsRawFd as _, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};
use vrrp_common::{
    Event, VipValue, VridState, event, role, virtual_mac_v4, virtual_mac_v6, vrid_flags,
};

use crate::{
    config::{Config, InitialState},
    dataplane::{self, DataPlane, KernelLogLevel},
};

/// Runs the daemon until SIGTERM or SIGINT, then detaches and removes what it pinned.
pub async fn run(config: Config, kernel_log: KernelLogLevel) -> anyhow::Result<()> {
    let iface = config.interface.as_str();
    dataplane::ensure_bpffs(&config.bpffs)
        .with_context(|| format!("mounting the BPF filesystem at {}", config.bpffs.display()))?;
    let iface_mac = dataplane::interface_mac(iface)?;
    let heartbeat_limit = Duration::from_millis(config.heartbeat_limit_ms);
    let mut dp = DataPlane::load(iface_mac, heartbeat_limit.as_nanos() as u64, kernel_log)?;
    let logger = dp.take_logger();

    // Everything the program reads is in place before it sees its first packet.
    let mut stats_index = 0u32;
    for inst in &config.instances {
        let ipv6 = inst.ipv6();
        let state = match inst.state {
            InitialState::Master => role::MASTER,
            InitialState::Backup => role::BACKUP,
        };
        let mac = match (inst.virtual_mac, ipv6) {
            (false, _) => iface_mac,
            (true, false) => virtual_mac_v4(inst.vrid),
            (true, true) => virtual_mac_v6(inst.vrid),
        };
        for vip in &inst.vips {
            dp.set_vip(
                vip.addr,
                VipValue {
                    vrid: inst.vrid,
                    flags: 0,
                    mac,
                    stats_index,
                },
            )?;
            stats_index += 1;
        }
        dp.set_vrid(
            ipv6,
            inst.vrid,
            VridState {
                role: state,
                flags: vrid_flags::CONFIGURED,
                version: u32::from(inst.version),
            },
        )?;
        info!(
            vrid = inst.vrid,
            iface,
            instance = %inst.name,
            state = role::name(state),
            priority = inst.priority,
            version = inst.version,
            vips = %inst.vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            mac = %format_mac(&mac),
            "instance configured"
        );
    }
    dp.heartbeat(dataplane::monotonic_coarse_ns())?;
    let pin_dir = config.pin_dir();
    let attached = dp.attach(iface, config.xdp_mode, &pin_dir)?;
    dp.pin(&pin_dir)?;
    info!(
        iface,
        mode = ?attached,
        pinned = %pin_dir.display(),
        heartbeat_limit_ms = config.heartbeat_limit_ms,
        "xvrrp running"
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut logs = match logger {
        Some(logger) => {
            let fd = logger.as_raw_fd();
            // SAFETY: the logger owns its ring buffer's fd, which stays open and the same for
            // as long as the logger lives, and the logger lives inside the AsyncFd.
            match unsafe { AsyncFd::register(logger) } {
                Ok(logs) => Some(logs),
                Err(err) => {
                    warn!(fd, error = %err, "cannot poll kernel-side logs");
                    None
                }
            }
        }
        None => None,
    };
    let mut events = match dp.take_events() {
        // SAFETY: the ring buffer owns its fd for as long as it lives inside the AsyncFd.
        Ok(ring) => unsafe { AsyncFd::register(ring) }.ok(),
        Err(err) => {
            warn!(error = %err, "data-plane events are not available");
            None
        }
    };
    // The dead-man switch: the data plane answers for VIPs only while this keeps ticking.
    let mut heartbeat = tokio::time::interval((heartbeat_limit / 10).max(Duration::from_millis(1)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = heartbeat.tick() => dp.heartbeat(dataplane::monotonic_coarse_ns())?,
            ready = async { events.as_mut().expect("guarded by the if").readable_mut().await },
                if events.is_some() => {
                match ready {
                    Ok(mut guard) => {
                        while let Some(item) = guard.get_inner_mut().next() {
                            log_event(iface, &item);
                        }
                        guard.clear_ready();
                    }
                    Err(err) => {
                        warn!(error = %err, "data-plane events stopped");
                        events = None;
                    }
                }
            }
            ready = async { logs.as_mut().expect("guarded by the if").readable_mut().await },
                if logs.is_some() => {
                match ready {
                    Ok(mut guard) => {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                    Err(err) => {
                        warn!(error = %err, "kernel-side logs stopped");
                        logs = None;
                    }
                }
            }
        }
    }

    for inst in &config.instances {
        dp.set_role(inst.ipv6(), inst.vrid, role::INIT)?;
        let s = dp.vrid_stats(inst.ipv6(), inst.vrid)?;
        info!(
            vrid = inst.vrid,
            requests = s.requests,
            answered = s.answered,
            dropped_not_master = s.dropped_not_master,
            dropped_stale_heartbeat = s.dropped_stale_heartbeat,
            adverts_valid = s.adverts_valid,
            foreign_owner = s.foreign_owner,
            "detaching"
        );
    }
    drop(dp);
    info!("stopped");
    Ok(())
}

/// Logs one event from the data plane's ring buffer.
fn log_event(iface: &str, bytes: &[u8]) {
    if bytes.len() != std::mem::size_of::<Event>() {
        warn!(len = bytes.len(), "malformed data-plane event");
        return;
    }
    // SAFETY: the length is that of an Event, a Pod; read_unaligned copes with any alignment.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let ipv6 = e.slot >= 256;
    let vrid = (e.slot % 256) as u8;
    let addr = if ipv6 {
        IpAddr::from(e.addr)
    } else {
        IpAddr::from([e.addr[0], e.addr[1], e.addr[2], e.addr[3]])
    };
    match e.kind {
        event::MASTER_CHANGED => info!(
            iface, vrid, ipv6, master = %addr, priority = e.priority, interval_cs = e.interval_cs,
            version = e.version, "advert from a new master, or a changed one"
        ),
        event::PRIORITY_ZERO => {
            info!(iface, vrid, ipv6, master = %addr, "master resigned (priority 0)")
        }
        event::FOREIGN_OWNER => warn!(
            iface, vrid, ipv6, vip = %addr, mac = %format_mac(&e.mac),
            "another host claims a VIP this node is master of (split brain seen on the wire)"
        ),
        other => warn!(kind = other, "unknown data-plane event"),
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

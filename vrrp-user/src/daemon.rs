//! The daemon: one event loop that owns the data plane and reacts to signals.

use std::os::fd::AsRawFd as _;

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};
use vrrp_common::{VipValue, role, virtual_mac_v4};

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
    let mut dp = DataPlane::load(iface_mac, kernel_log)?;
    let logger = dp.take_logger();

    // Everything the program reads is in place before it sees its first packet.
    for inst in &config.instances {
        let state = match inst.state {
            InitialState::Master => role::MASTER,
            InitialState::Backup => role::BACKUP,
        };
        let mac = if inst.virtual_mac {
            virtual_mac_v4(inst.vrid)
        } else {
            iface_mac
        };
        for vip in &inst.vips {
            dp.set_vip_v4(
                vip.addr,
                VipValue {
                    vrid: inst.vrid,
                    flags: 0,
                    mac,
                },
            )?;
        }
        dp.set_role(inst.vrid, state)?;
        info!(
            vrid = inst.vrid,
            iface,
            instance = %inst.name,
            state = role::name(state),
            priority = inst.priority,
            vips = %inst.vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            mac = %format_mac(&mac),
            "instance configured"
        );
    }
    let attached = dp.attach(iface, config.xdp_mode)?;
    let pin_dir = config.pin_dir();
    dp.pin(&pin_dir)?;
    info!(
        iface,
        mode = ?attached,
        pinned = %pin_dir.display(),
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
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
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
        dp.set_role(inst.vrid, role::INIT)?;
    }
    let stats = dp.stats()?;
    info!(
        arp_vip_requests = stats.arp_vip_requests,
        arp_replied = stats.arp_replied,
        arp_dropped_not_master = stats.arp_dropped_not_master,
        "detaching"
    );
    drop(dp);
    info!("stopped");
    Ok(())
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

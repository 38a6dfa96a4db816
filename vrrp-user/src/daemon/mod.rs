//! The daemon: one event loop that owns the engine, the data plane, the advert sockets and the
//! timers. The engine decides; this shell carries out its actions and feeds it what happens:
//!
//! - adverts come from the data plane: its ring buffer says at once when a VRID's master
//!   changes or resigns, and each VRID's liveness entry (the last valid advert) is read just
//!   before a timer is allowed to fire, so a master that keeps advertising keeps the backups
//!   waiting without the daemon waking for every advert;
//! - adverts go out on raw sockets;
//! - roles go to the data plane, which answers for the VIPs of the VRIDs this node is master of
//!   while the heartbeat written here is fresh.
//!
//! - VIPs are added to and removed from the interface through netlink, and announced with
//!   gratuitous ARP / unsolicited NA on the engine's schedule.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, info, warn};
use vrrp_common::{
    Event, VipValue, VridState, checksum_form, event, role, virtual_mac_v4, virtual_mac_v6,
    vrid_flags,
};

use crate::{
    config::{Config, InitialState, Instance, Vip},
    control,
    dataplane::{self, DataPlane, KernelLogLevel},
    engine::{
        Action, AnnouncePolicy, Auth, ChecksumForm, Engine, Family, Heard, InstanceConfig,
        InstanceKey, State, SyncGroupConfig, Time, TrackConfig, TrackId, TrackInput, Transport,
        Version,
    },
    garp::Announcer,
    hooks::{self, Hooks, StateEvent},
    keeper::{Failed, VipKeeper},
    metrics::{self, Metrics},
    mysql::{self, Fencer},
    netlink::{self, Addresses},
    process, track,
    wire::{self, AdvertSockets},
};

mod event_loop;
mod events;
mod netops;
mod pacer;
pub use pacer::{runtime_parked, runtime_unparked};
mod reload;
mod resume;
mod routes;
mod shell;
mod shutdown;
mod site;
mod tracking;

use self::{
    event_loop::{Inputs, Running, Stop, event_loop},
    events::*,
    netops::{NetDone, NetOp, NetQueue},
    reload::*,
    resume::*,
    shell::*,
    shutdown::*,
    site::*,
    tracking::*,
};

/// The control socket and, when configured, the metrics endpoint.
async fn bind_listeners(
    config: &Config,
) -> anyhow::Result<(tokio::net::UnixListener, Option<tokio::net::TcpListener>)> {
    let control = control::bind(&config.control_socket).with_context(|| {
        format!(
            "binding the control socket {}",
            config.control_socket.display()
        )
    })?;
    let rest = async {
        socket_aliases(config)?;
        match config.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics endpoint {addr}"))?;
                info!(%addr, "metrics at http://{addr}/metrics");
                anyhow::Ok(Some(listener))
            }
            None => Ok(None),
        }
    };
    match rest.await {
        Ok(metrics_listener) => Ok((control, metrics_listener)),
        Err(e) => {
            // The socket is this daemon's (bound above): it goes with it.
            remove_socket_aliases(config);
            let _ = std::fs::remove_file(&config.control_socket);
            Err(e)
        }
    }
}

/// Each other interface served gets `/run/xvrrp/<interface>.sock` as a symlink to the control
/// socket, so that `xvrrp status -i <interface>` finds the daemon. A socket there that answers
/// is another xvrrp's, which serves that interface: refused before anything is touched.
fn socket_aliases(config: &Config) -> anyhow::Result<()> {
    for iface in config.interfaces() {
        let alias = control::default_socket(&iface);
        if alias == config.control_socket {
            continue;
        }
        if std::fs::symlink_metadata(&alias).is_ok() {
            if std::fs::read_link(&alias).is_ok_and(|t| t == config.control_socket) {
                continue;
            }
            if std::os::unix::net::UnixStream::connect(&alias).is_ok() {
                anyhow::bail!(
                    "another xvrrp serves {iface} (its control socket {} answers); stop it first",
                    alias.display()
                );
            }
            let _ = std::fs::remove_file(&alias);
        }
        std::os::unix::fs::symlink(&config.control_socket, &alias)
            .with_context(|| format!("linking {} to the control socket", alias.display()))?;
    }
    Ok(())
}

/// Removes the symlinks [`socket_aliases`] made.
fn remove_socket_aliases(config: &Config) {
    for iface in config.interfaces() {
        let alias = control::default_socket(&iface);
        if std::fs::read_link(&alias).is_ok_and(|t| t == config.control_socket) {
            let _ = std::fs::remove_file(&alias);
        }
    }
}

/// The engine's clock: CLOCK_MONOTONIC in microseconds. The data plane's times
/// (CLOCK_MONOTONIC_COARSE) are on the same time base, a jiffy behind at most.
pub fn now() -> Time {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Time(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

/// Runs the daemon until SIGTERM or SIGINT, then resigns, detaches and removes what it pinned.
/// The control socket and the metrics endpoint are bound first (a daemon already running
/// there, or a port in use, stops it before it touches anything). Any later error exit fences
/// the MySQL servers it fences and removes its VIPs from the interface before it returns.
pub async fn run(
    config: Config,
    config_path: &std::path::Path,
    kernel_log: KernelLogLevel,
) -> anyhow::Result<()> {
    let listeners = bind_listeners(&config).await?;
    let safety = ErrorExit::of(&config);
    let result = run_bound(config, config_path, kernel_log, listeners).await;
    if result.is_err() {
        safety.clean_up().await;
    }
    result
}

/// What an error exit puts right, from the configuration: the servers it fences, its routes,
/// its VIPs, and the control socket with its links.
struct ErrorExit {
    config: Config,
}

impl ErrorExit {
    fn of(config: &Config) -> Self {
        Self {
            config: config.clone(),
        }
    }

    /// Each VIP and the interface it goes on (its own `dev`, its macvlan, or its instance's).
    fn vips(&self) -> Vec<(IpAddr, &str)> {
        if !self.config.configure_vips {
            return Vec::new();
        }
        self.config
            .instances
            .iter()
            .flat_map(|i| {
                i.all_vips().map(|v| {
                    let dev = v.dev.as_ref().or(i.vmac_interface.as_ref());
                    (v.addr, dev.unwrap_or(&i.interface).as_str())
                })
            })
            .collect()
    }

    /// Fences each server once, removes the routes and the VIPs (from the interface, or their
    /// macvlan) and the control socket, then says what it could not put right.
    async fn clean_up(self) {
        let config = &self.config;
        remove_socket_aliases(config);
        let _ = std::fs::remove_file(&config.control_socket);
        let mut left = Vec::new();
        for t in config.mysql.iter().filter(|t| t.fence) {
            match mysql::fence_once(t).await {
                Ok(()) => info!(target = %t.name, "error exit: the server is read-only"),
                Err(e) => left.push(format!("MySQL {} may be writable ({e})", t.name)),
            }
        }
        let vips = self.vips();
        if let Ok(addresses) = Addresses::connect() {
            for route in config.instances.iter().flat_map(|i| &i.routes) {
                if let Err(e) = addresses.remove_route(route).await {
                    left.push(format!("the route {route} may still be there ({e})"));
                }
            }
            for (addr, dev) in &vips {
                let Ok(index) = nix::net::if_::if_nametoindex(*dev) else {
                    continue;
                };
                if let Err(e) = addresses.remove(index, *addr).await {
                    left.push(format!("VIP {addr} may still be on {dev} ({e})"));
                }
            }
        } else if !vips.is_empty() {
            left.push("the VIPs may still be on the interface (no netlink)".to_owned());
        }
        if left.is_empty() {
            info!("error exit: servers fenced and VIPs removed");
        } else {
            warn!(left = %left.join("; "), "error exit: could not put everything right");
        }
    }
}

async fn run_bound(
    config: Config,
    config_path: &std::path::Path,
    kernel_log: KernelLogLevel,
    (control, metrics_listener): (tokio::net::UnixListener, Option<tokio::net::TcpListener>),
) -> anyhow::Result<()> {
    // Tracked and notify scripts never see the variables that hold secrets.
    track::hide_from_scripts(config.secret_env());
    track::run_scripts_as(config.script_user.as_ref());
    dataplane::ensure_bpffs(&config.bpffs)
        .with_context(|| format!("mounting the BPF filesystem at {}", config.bpffs.display()))?;
    let heartbeat_limit = Duration::from_millis(config.heartbeat_limit_ms);
    let interfaces = config.interfaces();
    // Every interface is there before any data plane loads (a second each).
    for iface in &interfaces {
        interface(iface).with_context(|| format!("interface {iface}"))?;
    }
    // A daemon that stopped for a hitless restart left its programs attached and its maps
    // pinned, with a marker: take them over instead of starting afresh. What the tracks last
    // said, as it left them: the instances start from it, not from a Fault that would drop
    // the VIP until the first probe.
    let marker = config.control_socket.with_extension("resume");
    let resumed = take_marker(&marker, &config.pin_dir_of(&interfaces[0]), &config);
    let resume = resumed.is_some();
    let Resumed {
        inputs: resumed_inputs,
        adverts: resumed_adverts,
        lease: resumed_lease,
        vips: resumed_vips,
    } = resumed.unwrap_or_default();
    let (tracked_processes, start_inputs) = start_inputs(&config, resume, &resumed_inputs).await;
    let (resuming, bridges) = bridge_restart(&config, resume, &resumed_adverts);
    let (opened, (engine_configs, macs, primaries)) =
        open_ports(&config, &interfaces, kernel_log, &resuming, &start_inputs)?;
    let mut engine = Engine::new(engine_configs, sync_groups(&config))?;
    let metrics = Metrics::new(&config.interface);
    let carried = Carried {
        inputs: &start_inputs,
        lease: resumed_lease,
        resume,
    };
    let (
        Trackers {
            tasks: _tasks,
            fencers,
            mysql_status,
            lease,
        },
        (_track_tx, track_rx),
        host_rx,
        links,
    ) = watch(&config, carried, tracked_processes, &metrics)?;
    let addresses = Addresses::connect().context("opening netlink")?;
    let (ports, vmacs) = attach_ports(opened, &config, &resuming, &addresses).await?;
    let (net, net_rx) = NetQueue::start(addresses.clone());
    if resume {
        let _ = std::fs::remove_file(&marker);
    }
    let mut shell = Shell::new(ShellParts {
        hooks: Hooks::start(&config).context("starting the notify hooks and the event stream")?,
        ports,
        addresses,
        net,
        configure_vips: config.configure_vips,
        announcer: Announcer::open().context("opening the announcement socket")?,
        vmacs,
        fencers,
        mysql_status,
        macs,
        metrics,
        lease,
        primaries,
        links,
        kernel_log,
        heartbeat_limit,
    });
    shell.place_vips(&config);
    shell.groups = config
        .sync_groups
        .iter()
        .map(|g| (g.name.clone(), g.instances.clone(), None))
        .collect();
    shell.take_over_vips(&resumed_vips).await;
    // From here on the engine sends the adverts and the loop keeps the heartbeats.
    for bridge in bridges {
        bridge.stop();
    }
    engine.start(now());
    shell.apply(&mut engine).await;
    // Only the masters resumed at start take over the previous daemon's VIPs as they are.
    shell.resumed_vips.clear();

    let running = Running {
        engine,
        shell,
        config,
        config_path,
        // The last input of every track: an instance a reload starts again starts from them
        // (the tasks behind them only report changes).
        track_inputs: start_inputs,
        heartbeat_limit,
    };
    let inputs = Inputs {
        track_rx,
        host_rx,
        net_rx,
        control,
        metrics_listener,
    };
    let (why, running) = event_loop(running, inputs).await?;
    conclude(why, running).await
}

/// The interfaces whose program a hitless restart left (when resuming), and a bridge for
/// each: its heartbeat kept fresh and its masters' adverts sent while this daemon loads.
fn bridge_restart(
    config: &Config,
    resume: bool,
    adverts: &[ResumeAdvert],
) -> (Vec<String>, Vec<HeartbeatBridge>) {
    let interfaces = config.interfaces();
    let resuming: Vec<String> = interfaces
        .iter()
        .filter(|iface| resume && can_resume(&config.pin_dir_of(iface)))
        .cloned()
        .collect();
    let every = Duration::from_millis(config.heartbeat_limit_ms) / 10;
    let bridges = resuming
        .iter()
        .map(|iface| {
            // Markers of a daemon that served one interface name none.
            let mine = adverts
                .iter()
                .filter(|a| a.iface == *iface || (a.iface.is_empty() && *iface == interfaces[0]))
                .cloned()
                .collect();
            HeartbeatBridge::start(&config.pin_dir_of(iface), every, iface, mine)
        })
        .collect();
    (resuming, bridges)
}

/// Attaches (or adopts) each opened data plane, pins it and makes its virtual MACs; the
/// ports by index and the macvlans by name.
async fn attach_ports(
    opened: Vec<(Port, Published)>,
    config: &Config,
    resuming: &[String],
    addresses: &Addresses,
) -> anyhow::Result<(BTreeMap<u32, Port>, HashMap<String, u32>)> {
    let mut ports = BTreeMap::new();
    let mut vmacs = HashMap::new();
    for (mut port, published) in opened {
        let port_resume = resuming.contains(&port.site.iface);
        let wanted = published.wanted_vmacs;
        vmacs.extend(attach_port(&mut port, wanted, config, port_resume, addresses).await?);
        ports.insert(port.site.ifindex, port);
    }
    Ok((ports, vmacs))
}

/// Attaches (or adopts) one port's data plane with its instances published, pins it and
/// makes the virtual MACs its instances want (instance, macvlan name, MAC); the macvlans by
/// name.
async fn attach_port(
    port: &mut Port,
    wanted_vmacs: Vec<(String, String, [u8; 6])>,
    config: &Config,
    resume: bool,
    addresses: &Addresses,
) -> anyhow::Result<HashMap<String, u32>> {
    let iface = port.site.iface.clone();
    port.dp.heartbeat(dataplane::monotonic_ns())?;
    attach(&mut port.dp, config, &iface, &port.pin_dir, resume)?;
    let (made, sysctls) = virtual_macs(
        addresses,
        wanted_vmacs,
        (&iface, port.site.ifindex),
        resume,
        &port.site.sources,
    )
    .await?;
    port.sysctls = sysctls;
    Ok(made)
}

/// Whether the program and maps a hitless restart left in `pin_dir` can be taken over.
fn can_resume(pin_dir: &std::path::Path) -> bool {
    pin_dir.join(dataplane::PINNED_LINK).exists()
        && dataplane::pinned_layout_differs(pin_dir).is_none()
}

/// One interface made ready to serve: its data plane loaded (or taken over after a hitless
/// restart) with its instances published, its advert sockets open; what publishing gave.
/// The instances, MACs and primary addresses every interface's data plane published.
type PublishedAll = (
    Vec<InstanceConfig>,
    HashMap<InstanceKey, [u8; 6]>,
    HashMap<InstanceKey, IpAddr>,
);

/// Opens the `interfaces` of `config` ([`open_port`]; those in `resuming` take over what a
/// hitless restart left), and gathers what their data planes published for the engine.
fn open_ports(
    config: &Config,
    interfaces: &[String],
    kernel_log: KernelLogLevel,
    resuming: &[String],
    start_inputs: &HashMap<TrackId, TrackInput>,
) -> anyhow::Result<(Vec<(Port, Published)>, PublishedAll)> {
    let mut opened = Vec::new();
    for iface in interfaces {
        let port_resume = resuming.contains(iface);
        opened.push(
            open_port(config, iface, kernel_log, port_resume, start_inputs)
                .with_context(|| format!("interface {iface}"))?,
        );
    }
    let (mut configs, mut macs, mut primaries) = (Vec::new(), HashMap::new(), HashMap::new());
    for (_, published) in &mut opened {
        configs.append(&mut published.configs);
        macs.extend(published.macs.drain());
        primaries.extend(published.primaries.drain());
    }
    Ok((opened, (configs, macs, primaries)))
}

fn open_port(
    config: &Config,
    iface: &str,
    kernel_log: KernelLogLevel,
    resume: bool,
    start_inputs: &HashMap<TrackId, TrackInput>,
) -> anyhow::Result<(Port, Published)> {
    let (iface_mac, ifindex) = interface(iface)?;
    let limit_ns = Duration::from_millis(config.heartbeat_limit_ms).as_nanos() as u64;
    let pin_dir = config.pin_dir_of(iface);
    let dp = if resume {
        info!(iface, pinned = %pin_dir.display(), "resuming after a hitless restart");
        DataPlane::load_resuming(iface_mac, limit_ns, kernel_log, &pin_dir)?
    } else {
        DataPlane::load(iface_mac, limit_ns, kernel_log)?
    };
    port_on(
        config,
        (iface, iface_mac, ifindex),
        dp,
        resume,
        start_inputs,
    )
}

/// [`open_port`] with the data plane loaded already (a reload loads it off the loop), on
/// interface `iface` of that MAC and index.
fn port_on(
    config: &Config,
    (iface, iface_mac, ifindex): (&str, [u8; 6], u32),
    mut dp: DataPlane,
    resume: bool,
    start_inputs: &HashMap<TrackId, TrackInput>,
) -> anyhow::Result<(Port, Published)> {
    let pin_dir = config.pin_dir_of(iface);
    let logger = dp.take_logger();
    let (sources, sockets) = open_advert_sockets(config, iface, ifindex)?;
    // Everything the program reads is in place before it sees its first packet.
    let site = Site {
        iface: iface.to_owned(),
        ifindex,
        iface_mac,
        sources,
    };
    let published = site.publish_all(&mut dp, config, resume, start_inputs)?;
    // A hitless restart inherits the old daemon's maps: what this configuration has not goes.
    prune_maps(&mut dp, config, iface)?;
    let port = Port {
        site,
        dp,
        sockets: std::sync::Arc::new(sockets),
        stats_index: published.stats_index,
        pin_dir,
        sysctls: Vec::new(),
        logger,
    };
    Ok((port, published))
}

/// The interface's MAC and index.
fn interface(iface: &str) -> anyhow::Result<([u8; 6], u32)> {
    let iface_mac = dataplane::interface_mac(iface)?;
    let ifindex =
        nix::net::if_::if_nametoindex(iface).with_context(|| format!("no interface {iface}"))?;
    Ok((iface_mac, ifindex))
}

/// What the instances start from: the tracks a hitless restart carried over, the tracked
/// processes read once now (fresher than what a restart carried), and, on a fresh start, the
/// tracked scripts' first results (keepalived's semantics: no instance is promoted before its
/// scripts have reported). Also the tracked processes, for their tasks.
async fn start_inputs(
    config: &Config,
    resume: bool,
    resumed: &HashMap<TrackId, TrackInput>,
) -> (
    Vec<crate::config::TrackProcess>,
    HashMap<TrackId, TrackInput>,
) {
    let tracked_processes: Vec<_> = config
        .track_processes
        .iter()
        .filter(|t| config.tracked(|i| &i.track_processes, &t.name))
        .cloned()
        .collect();
    let mut start_inputs = resumed.clone();
    start_inputs.extend(process::initial_inputs(&tracked_processes));
    if !resume {
        let scripts: Vec<_> = config
            .track_scripts
            .iter()
            .filter(|t| config.tracked(|i| &i.track_scripts, &t.name))
            .cloned()
            .collect();
        start_inputs.extend(track::first_results(&scripts).await);
    }
    (tracked_processes, start_inputs)
}

/// The advert sources of each family, and the advert sockets over them.
fn open_advert_sockets(
    config: &Config,
    iface: &str,
    ifindex: u32,
) -> anyhow::Result<(HashMap<Family, IpAddr>, AdvertSockets)> {
    let sources = advert_sources(config, iface)?;
    let v4_src = sources.get(&Family::V4).and_then(|a| match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let v6_src = sources.get(&Family::V6).and_then(|a| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let sockets = AdvertSockets::open(iface, ifindex, v4_src, v6_src)
        .context("opening the advert sockets")?;
    Ok((sources, sockets))
}

/// Attaches the program (or, after a hitless restart, adopts the one left attached) and pins
/// it with the maps.
fn attach(
    dp: &mut DataPlane,
    config: &Config,
    iface: &str,
    pin_dir: &std::path::Path,
    resume: bool,
) -> anyhow::Result<()> {
    let attached = if resume {
        dp.adopt(pin_dir)?;
        "adopted"
    } else {
        match dp.attach(iface, config.xdp_mode, pin_dir)? {
            dataplane::Attached::Native => "native",
            dataplane::Attached::Generic => "generic",
        }
    };
    dp.pin(pin_dir)?;
    info!(iface, mode = attached, pinned = %pin_dir.display(), "data plane attached");
    Ok(())
}

/// Starts what reports to the loop: the tracked scripts, files, processes, MySQL probes and
/// the write lease (as tasks), and the link and address events; their receivers.
#[allow(clippy::type_complexity)]
fn watch(
    config: &Config,
    carried: Carried,
    tracked_processes: Vec<crate::config::TrackProcess>,
    metrics: &Metrics,
) -> anyhow::Result<(
    Trackers,
    (
        tokio::sync::mpsc::UnboundedSender<(TrackId, TrackInput)>,
        tokio::sync::mpsc::UnboundedReceiver<(TrackId, TrackInput)>,
    ),
    tokio::sync::mpsc::UnboundedReceiver<netlink::HostEvent>,
    tokio::sync::mpsc::UnboundedSender<(u32, String)>,
)> {
    let (track_tx, track_rx) = tokio::sync::mpsc::unbounded_channel();
    let trackers = spawn_trackers(config, carried, tracked_processes, metrics, &track_tx)?;
    let (host_tx, host_rx) = tokio::sync::mpsc::unbounded_channel();
    let links = watch_links(config, &track_tx, host_tx)?;
    // The loop keeps a sender, so that its track channel never closes.
    Ok((trackers, (track_tx, track_rx), host_rx, links))
}

/// The engine's sync groups.
fn sync_groups(config: &Config) -> Vec<SyncGroupConfig> {
    config
        .sync_groups
        .iter()
        .map(|g| SyncGroupConfig {
            name: g.name.clone(),
            members: g.instances.clone(),
        })
        .collect()
}

/// Stops the way `why` asks: handing over for a hitless restart, or as on SIGTERM (fenced,
/// resigned, VIPs removed, detached), then an error for systemd to restart on, or an exec of
/// the daemon afresh on a re-created interface.
async fn conclude(why: Stop, running: Running<'_>) -> anyhow::Result<()> {
    let Running {
        engine,
        mut shell,
        config,
        track_inputs,
        heartbeat_limit,
        ..
    } = running;
    let config = &config;
    // Under systemd a hitless restart executes the binary again in place: the unit does not
    // stop.
    let in_place = matches!(why, Stop::Hitless) && under_systemd();
    if !in_place {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
    match why {
        Stop::Hitless => {
            // The netlink changes asked before are carried out (the next daemon does not know
            // of them), within half the heartbeat limit so that the data plane stays fresh.
            shell.net.drain(heartbeat_limit / 2).await;
            leave_for_restart(&mut shell, &engine, config, &track_inputs)?;
            if in_place {
                drop(shell);
                return Err(restart_in_place());
            }
            Ok(())
        }
        Stop::ForGood => stop(shell, engine, config).await,
        Stop::Failed(why) => {
            tracing::error!(%why, "stopping as on SIGTERM, then exiting with an error");
            stop(shell, engine, config).await?;
            Err(anyhow::anyhow!(why))
        }
        Stop::Reexec => {
            stop(shell, engine, config).await?;
            Err(reexec())
        }
    }
}

/// Counts, across the restarts in place, how often the interface was re-created.
const RECREATED_ENV: &str = "XVRRP_INTERFACE_RECREATED";

/// Times this daemon started afresh on a re-created interface (status and metrics).
pub(super) fn interface_recreated() -> u64 {
    std::env::var(RECREATED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Executes this program again with the same arguments, in this process (systemd keeps
/// tracking it); returns only if that fails.
/// Whether systemd runs the daemon (as a `Type=notify` service: it set `NOTIFY_SOCKET`).
fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// SIGUSR2 under systemd: executes the binary at the path it was started from (the new one,
/// if it was replaced) with the same arguments, in the same process. Restarting through the
/// unit's `Restart=always` would add `RestartSec` and `ExecStartPre` to the handover, and the
/// heartbeat limit and the backups' Master_Down_Interval leave no room for them (the systemd
/// test lost ARP answers that way). Only returns if the exec failed; exiting non-zero then
/// lets systemd restart the unit the ordinary way.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let mut args = std::env::args_os();
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| "/proc/self/exe".into());
    info!(binary = %path.display(), "hitless restart: executing the binary again in place");
    let err = std::process::Command::new(&path).args(args).exec();
    anyhow::anyhow!("cannot execute {} again in place: {err}", path.display())
}

fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    info!("starting afresh in place");
    let err = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env(RECREATED_ENV, (interface_recreated() + 1).to_string())
        .exec();
    anyhow::anyhow!("cannot start afresh in place: {err}")
}

fn key_of(c: &InstanceConfig) -> InstanceKey {
    InstanceKey {
        iface: c.iface,
        family: c.family(),
        vrid: c.vrid,
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

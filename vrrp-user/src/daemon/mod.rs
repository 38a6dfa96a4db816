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
    collections::{HashMap, HashSet},
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
        InstanceKey, State, SyncGroupConfig, Time, TrackConfig, TrackInput, Transport, Version,
    },
    garp::Announcer,
    hooks::{self, Hooks, StateEvent},
    metrics::{self, Metrics},
    mysql::{self, Fencer},
    netlink::{self, Addresses},
    process, track,
    wire::{self, AdvertSockets},
};

mod events;
mod reload;
mod resume;
mod shell;
mod shutdown;
mod site;
mod tracking;

use self::{events::*, reload::*, resume::*, shell::*, shutdown::*, site::*, tracking::*};

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
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint {addr}"))?,
        ),
        None => None,
    };
    if let Some(addr) = config.metrics_listen {
        info!(%addr, "metrics at http://{addr}/metrics");
    }
    Ok((control, metrics_listener))
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
pub async fn run(
    config: Config,
    config_path: &std::path::Path,
    kernel_log: KernelLogLevel,
) -> anyhow::Result<()> {
    let iface_name = config.interface.clone();
    let iface = iface_name.as_str();
    dataplane::ensure_bpffs(&config.bpffs)
        .with_context(|| format!("mounting the BPF filesystem at {}", config.bpffs.display()))?;
    let iface_mac = dataplane::interface_mac(iface)?;
    let ifindex =
        nix::net::if_::if_nametoindex(iface).with_context(|| format!("no interface {iface}"))?;
    let heartbeat_limit = Duration::from_millis(config.heartbeat_limit_ms);
    let pin_dir = config.pin_dir();
    // A daemon that stopped for a hitless restart left its program attached and its maps
    // pinned, with a marker: take them over instead of starting afresh.
    let marker = config.control_socket.with_extension("resume");
    let resume = marker.exists() && pin_dir.join(dataplane::PINNED_LINK).exists();
    // What the tracks last said, as the daemon this one takes over from left it: the instances
    // start from it, not from a Fault that would drop the VIP until the first probe.
    let (resumed_inputs, resumed_adverts, resumed_lease) = if resume {
        decode_resume(&std::fs::read(&marker).unwrap_or_default())
    } else {
        (HashMap::new(), Vec::new(), None)
    };
    // Tracked processes are read once now, so that instances start from what runs (not from a
    // Fault until the task's first read); this is fresher than what a restart carried over.
    let tracked_processes: Vec<_> = config
        .track_processes
        .iter()
        .filter(|t| config.tracked(|i| &i.track_processes, &t.name))
        .cloned()
        .collect();
    let mut start_inputs = resumed_inputs.clone();
    start_inputs.extend(process::initial_inputs(&tracked_processes));
    let bridge = resume
        .then(|| HeartbeatBridge::start(&pin_dir, heartbeat_limit / 10, iface, resumed_adverts));
    let mut dp = if resume {
        info!(iface, pinned = %pin_dir.display(), "resuming after a hitless restart");
        DataPlane::load_resuming(
            iface_mac,
            heartbeat_limit.as_nanos() as u64,
            kernel_log,
            &pin_dir,
        )?
    } else {
        DataPlane::load(iface_mac, heartbeat_limit.as_nanos() as u64, kernel_log)?
    };
    let logger = dp.take_logger();

    let sources = advert_sources(&config, iface)?;
    let v4_src = sources.get(&false).and_then(|a| match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let v6_src = sources.get(&true).and_then(|a| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let sockets = AdvertSockets::open(iface, ifindex, v4_src, v6_src)
        .context("opening the advert sockets")?;

    // Everything the program reads is in place before it sees its first packet.
    let site = Site {
        iface: iface.to_owned(),
        ifindex,
        iface_mac,
        sources: sources.clone(),
    };
    let Published {
        configs: engine_configs,
        macs,
        primaries,
        wanted_vmacs,
        mut stats_index,
    } = site.publish_all(&mut dp, &config, resume, &start_inputs)?;
    let groups = config
        .sync_groups
        .iter()
        .map(|g| SyncGroupConfig {
            name: g.name.clone(),
            members: g.instances.clone(),
        })
        .collect();
    let mut engine = Engine::new(engine_configs, groups)?;
    // Tracked scripts that some instance follows run as tasks reporting changes here.
    let (track_tx, mut track_rx) = tokio::sync::mpsc::unbounded_channel();
    let metrics = Metrics::new(iface);
    let Trackers {
        tasks: _tasks,
        fencers,
        mysql_status,
        lease,
    } = spawn_trackers(
        &config,
        Carried {
            inputs: &resumed_inputs,
            lease: resumed_lease,
            resume,
        },
        tracked_processes,
        &metrics,
        &track_tx,
    )?;
    watch_links(&config, iface, &track_tx)?;
    dp.heartbeat(dataplane::monotonic_coarse_ns())?;
    let attached = if resume {
        dp.adopt(&pin_dir)?;
        let _ = std::fs::remove_file(&marker);
        "adopted"
    } else {
        match dp.attach(iface, config.xdp_mode, &pin_dir)? {
            dataplane::Attached::Native => "native",
            dataplane::Attached::Generic => "generic",
        }
    };
    dp.pin(&pin_dir)?;
    info!(iface, mode = attached, pinned = %pin_dir.display(), "data plane attached");

    let addresses = Addresses::connect().context("opening netlink")?;
    let (vmacs, sysctls) =
        virtual_macs(&addresses, wanted_vmacs, (iface, ifindex), resume, &sources).await?;
    let mut shell = Shell {
        hooks: Hooks::start(&config).context("starting the notify hooks and the event stream")?,
        dp,
        sockets,
        addresses,
        configure_vips: config.configure_vips,
        announcer: Announcer::open(ifindex).context("opening the announcement socket")?,
        vips: HashMap::new(),
        vip_keys: HashMap::new(),
        vmacs,
        fencers,
        fences: HashMap::new(),
        writable: HashMap::new(),
        mysql_status,
        macs,
        last_heard: HashMap::new(),
        metrics,
        deferred: None,
        lease,
        advertisers: HashMap::new(),
        primaries,
        split: crate::split::SplitBrain::default(),
    };
    shell.place_vips(&config, ifindex);
    // From here on the engine sends the adverts and the loop keeps the heartbeat.
    if let Some(bridge) = bridge {
        bridge.stop();
    }
    engine.start(now());
    shell.apply(&mut engine).await;

    let (control, metrics_listener) = bind_listeners(&config).await?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut config = config;
    let mut hitless = false;
    let (mut logs, mut events) = rings(logger, &mut shell.dp);
    // The dead-man switch: the data plane answers for VIPs only while the heartbeat is fresh.
    // It is written whenever the loop wakes (adverts, probes, events; at most every eighth of
    // the limit), and by a timer of its own only when nothing else woke the loop for half the
    // limit: a wake-up may come half the limit late before the data plane goes quiet. A master
    // at 100 ms adverts with the default 250 ms limit then never wakes for the heartbeat alone
    // (a timer every quarter of the limit was a third of an idle daemon's CPU).
    let heartbeat_every = (heartbeat_limit / 2).max(Duration::from_millis(1));
    let heartbeat_gap = heartbeat_limit / 8;
    let mut last_heartbeat = Instant::now();
    // The engine's next deadline and the heartbeat's, on one timerfd.
    let mut alarm = crate::alarm::Alarm::new().context("creating the timerfd")?;
    // systemd (Type=notify): ready once the data plane, the VIPs' owner and the control socket
    // are in place; the watchdog is fed from this loop, so a stuck loop is restarted.
    // "xvrrp running" is the log's word for the same moment (tests and operators wait for it):
    // the control socket and the metrics endpoint already answer.
    let ready = format!("{} instance(s) on {iface}", config.instances.len());
    info!(
        iface,
        instances = config.instances.len(),
        heartbeat_limit_ms = config.heartbeat_limit_ms,
        "xvrrp running"
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&ready),
    ]);
    let mut watchdog = sd_notify::watchdog_enabled().map(|every| {
        let mut t = tokio::time::interval((every / 2).max(Duration::from_millis(10)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let epoch = (Instant::now(), now());
    let mut contested = shell.lease.as_ref().map(|l| l.contested.clone());
    // The last input of every track: an instance a reload starts again starts from them (the
    // tasks behind them only report changes).
    let mut track_inputs: HashMap<String, TrackInput> = start_inputs;
    loop {
        if last_heartbeat.elapsed() >= heartbeat_gap {
            shell.dp.heartbeat(dataplane::monotonic_coarse_ns())?;
            last_heartbeat = Instant::now();
        }
        let next = match (engine.poll_timeout(), shell.split.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = next.map(|t| {
            let (instant, time) = epoch;
            instant + Duration::from_micros(t.since(time))
        });
        let heartbeat_due = last_heartbeat + heartbeat_every;
        alarm.set(deadline.map_or(heartbeat_due, |d| d.min(heartbeat_due)))?;
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                on_sighup(config_path, &mut config, &mut engine, &mut shell, (&site, &track_inputs), &mut stats_index).await;
            }
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = sigusr2.recv() => {
                info!("SIGUSR2: stopping for a hitless restart; the data plane, VIPs and roles stay");
                hitless = true;
                break;
            }
            r = async { contested.as_mut().expect("guarded").changed().await }, if contested.is_some() => {
                if r.is_ok() {
                    shell.reannounce(&engine);
                } else {
                    contested = None;
                }
            }
            Some((name, input)) = track_rx.recv() => {
                engine.set_track(now(), &name, input);
                track_inputs.insert(name, input);
                shell.apply(&mut engine).await;
            }
            conn = control.accept() => {
                if let Ok((stream, _)) = conn {
                    shell.answer_status(stream, &engine, &config).await;
                }
            }
            conn = async { metrics_listener.as_ref().expect("guarded").accept().await },
                if metrics_listener.is_some() => {
                if let Ok((stream, _)) = conn {
                    shell.answer_metrics(stream, &engine, &config);
                }
            }
            fired = alarm.fired() => {
                fired.context("the timerfd")?;
                // The heartbeat is written at the top of the loop; the engine's timer may be due.
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    shell.on_timer(&mut engine, &mut track_inputs);
                    shell.apply(&mut engine).await;
                }
            }
            ready = async { events.as_mut().expect("guarded by the if").readable_mut().await },
                if events.is_some() => {
                match ready {
                    Ok(mut guard) => {
                        let mut seen = Vec::new();
                        while let Some(item) = guard.get_inner_mut().next() {
                            if let Some(e) = log_event(iface, ifindex, &item) {
                                seen.push(e);
                            }
                        }
                        guard.clear_ready();
                        shell.on_events(&mut engine, seen);
                        shell.apply(&mut engine).await;
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

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if hitless {
        return leave_for_restart(&mut shell, &engine, &config, &track_inputs, &pin_dir);
    }
    stop(shell, engine, &config, &sysctls).await
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

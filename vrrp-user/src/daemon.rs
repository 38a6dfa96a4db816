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

/// The engine's view of one configured instance.
fn engine_config(
    inst: &Instance,
    iface: &str,
    ifindex: u32,
    primary: IpAddr,
    config: &Config,
) -> InstanceConfig {
    let (scripts, files) = (&config.track_scripts, &config.track_files);
    let mut c = InstanceConfig::new(
        &inst.name,
        ifindex,
        inst.vrid,
        primary,
        inst.vips.iter().map(|v| v.addr).collect(),
    );
    c.version = if inst.version == 2 {
        Version::V2
    } else {
        Version::V3
    };
    c.priority = inst.priority;
    c.auth = inst.auth_pass.map_or(Auth::None, Auth::Simple);
    c.advert_interval_cs = inst.advert_interval_cs;
    c.preempt = inst.preempt;
    c.preempt_delay_us = inst.preempt_delay_ms * 1_000;
    c.start_as_master = inst.state == InitialState::Master;
    c.announce = AnnouncePolicy {
        delay_us: inst.garp.delay_ms * 1_000,
        repeat: inst.garp.repeat,
        refresh_us: inst.garp.refresh_ms * 1_000,
        refresh_repeat: inst.garp.refresh_repeat,
        pacing_us: inst.garp.interval_ms * 1_000,
    };
    c.tracks = inst
        .track_scripts
        .iter()
        .filter_map(|name| scripts.iter().find(|t| t.name == *name))
        .map(|t| TrackConfig {
            name: t.name.clone(),
            weight: t.weight,
            reverse: t.weight_reverse,
            initial: TrackInput::Up,
        })
        .collect();
    c.tracks.extend(
        inst.track_files
            .iter()
            .filter_map(|name| files.iter().find(|t| t.name == *name))
            .map(|t| TrackConfig {
                name: t.name.clone(),
                weight: t.weight,
                reverse: t.weight_reverse,
                initial: TrackInput::Value(0),
            }),
    );
    // Tracked processes start down; the daemon reads /proc before it starts the instances.
    c.tracks.extend(
        inst.track_processes
            .iter()
            .filter_map(|name| config.track_processes.iter().find(|t| t.name == *name))
            .map(|t| TrackConfig {
                name: process::track_name(&t.name),
                weight: t.weight,
                reverse: t.weight_reverse,
                initial: TrackInput::Down,
            }),
    );
    // MySQL targets start down: no takeover before the first probe has answered.
    for t in inst
        .track_mysql
        .iter()
        .filter_map(|name| config.mysql.iter().find(|t| t.name == *name))
    {
        c.tracks.push(TrackConfig {
            name: mysql::alive_track(&t.name),
            weight: t.weight,
            reverse: false,
            initial: TrackInput::Down,
        });
        if let Some(r) = &t.replication {
            c.tracks.push(TrackConfig {
                name: mysql::replication_track(&t.name),
                weight: r.weight,
                reverse: false,
                initial: TrackInput::Down,
            });
        }
    }
    // With a write lease, an instance that fences stays in Fault while the node yielded the
    // lease to a stronger holder (its server could not be made writable).
    let fences = inst
        .track_mysql
        .iter()
        .any(|n| config.mysql.iter().any(|t| t.name == *n && t.fence));
    if config.write_lease.is_some() && fences {
        c.tracks.push(TrackConfig {
            name: crate::lease::task::TRACK.to_owned(),
            weight: 0,
            reverse: false,
            initial: TrackInput::Up,
        });
    }
    // Out of the election while it lost a split brain seen on the wire (crate::split).
    c.tracks.push(TrackConfig {
        name: crate::split::track_name(InstanceKey {
            iface: ifindex,
            family: if inst.ipv6() { Family::V6 } else { Family::V4 },
            vrid: inst.vrid,
        }),
        weight: 0,
        reverse: false,
        initial: TrackInput::Up,
    });
    // The instance's own interface (no link: Fault, as in keepalived), and the others it
    // tracks, with their weights.
    c.tracks.push(TrackConfig {
        name: netlink::link_track_name(iface),
        weight: 0,
        reverse: false,
        initial: TrackInput::Up,
    });
    for link in &inst.track_interfaces {
        c.tracks.push(TrackConfig {
            name: netlink::link_track_name(&link.name),
            weight: link.weight,
            reverse: link.weight_reverse,
            initial: TrackInput::Up,
        });
    }
    if !inst.unicast_peers.is_empty() {
        c.transport = Transport::Unicast {
            peers: inst.unicast_peers.clone(),
            check_ttl: inst.unicast_check_ttl,
        };
    }
    c
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

    // The primary address of each family in use: the configured source, or the interface's.
    let mut sources: HashMap<bool, IpAddr> = HashMap::new();
    for inst in &config.instances {
        let ipv6 = inst.ipv6();
        let source = match inst.source {
            Some(s) => s,
            None => match sources.get(&ipv6) {
                Some(s) => *s,
                None => wire::interface_address(iface, ipv6)?.with_context(|| {
                    format!(
                        "instance {}: {iface} has no {} address to send adverts from; set `source`",
                        inst.name,
                        if ipv6 { "link-local IPv6" } else { "IPv4" }
                    )
                })?,
            },
        };
        sources.entry(ipv6).or_insert(source);
    }
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
    let mut stats_index = 0u32;
    let mut engine_configs = Vec::new();
    let mut macs = HashMap::new();
    let mut primaries = HashMap::new();
    let mut wanted_vmacs = Vec::new();
    for inst in &config.instances {
        // On resume the role the data plane has stays until the engine says otherwise.
        let was = if resume {
            dp.vrid(inst.ipv6(), inst.vrid)
                .map(|v| v.role)
                .unwrap_or(role::INIT)
        } else {
            role::INIT
        };
        let (mut engine_config, mac) =
            site.publish(&mut dp, inst, &config, &mut stats_index, was)?;
        engine_config.resume_as_master = was == role::MASTER;
        for track in &mut engine_config.tracks {
            if let Some(input) = start_inputs.get(&track.name) {
                track.initial = *input;
            }
        }
        macs.insert(key_of(&engine_config), mac);
        primaries.insert(key_of(&engine_config), engine_config.primary);
        if let Some(name) = &inst.vmac_interface {
            wanted_vmacs.push((&inst.name, name, mac));
        }
        engine_configs.push(engine_config);
    }
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
    let _scripts: Vec<_> = config
        .track_scripts
        .iter()
        .filter(|t| config.tracked(|i| &i.track_scripts, &t.name))
        .map(|t| {
            let up = resumed_inputs.get(&t.name) != Some(&TrackInput::Down);
            track::spawn(t.clone(), up, track_tx.clone())
        })
        .collect();
    let _files: Vec<_> = config
        .track_files
        .iter()
        .filter(|t| config.tracked(|i| &i.track_files, &t.name))
        .map(|t| track::spawn_file(t.clone(), track_tx.clone()))
        .collect();
    // Tracked processes that some instance follows: one task reads /proc for all of them.
    let _processes = process::spawn(tracked_processes, track_tx.clone());
    // MySQL targets that some instance follows: probes as tracking input, fencers for write
    // fencing.
    let tracked_mysql: Vec<_> = config
        .mysql
        .iter()
        .filter(|t| config.tracked(|i| &i.track_mysql, &t.name))
        .collect();
    let mysql_status: Vec<mysql::SharedStatus> =
        tracked_mysql.iter().map(|t| mysql::new_status(t)).collect();
    let metrics = Metrics::new(iface);
    // The write lease: fencers enable writes only while it is held.
    let lease = match &config.write_lease {
        Some(w) => {
            let guard_ms = w.lease_ms / 10
                + tracked_mysql
                    .iter()
                    .filter(|t| t.fence)
                    .map(|t| 2 * t.timeout_ms as u32)
                    .max()
                    .unwrap_or(0);
            let grant = resumed_lease.map(|g| crate::lease::voter::Grant {
                to: crate::lease::wire::NodeId::new(g.to),
                priority: g.priority,
                until: now().plus(g.remaining_ms * 1_000),
            });
            Some(crate::lease::task::spawn(
                w,
                guard_ms,
                now,
                track_tx.clone(),
                grant,
            )?)
        }
        None => None,
    };
    let fencers: HashMap<String, Fencer> = tracked_mysql
        .iter()
        .zip(&mysql_status)
        .filter(|(t, _)| t.fence)
        .map(|(t, status)| {
            let gate = mysql::FenceGate {
                // A daemon resuming a master does not fence its server while it renews the
                // lease it held (at most a lease time).
                resume_grace: match (&config.write_lease, resume) {
                    (Some(w), true) => Duration::from_millis(u64::from(w.lease_ms)),
                    _ => Duration::ZERO,
                },
                held: lease.as_ref().map(|l| l.held.clone()),
                peer: t
                    .peer
                    .as_ref()
                    .and_then(|p| config.mysql.iter().find(|m| m.name == *p))
                    .cloned(),
            };
            (
                t.name.clone(),
                Fencer::spawn((*t).clone(), gate, status.clone()),
            )
        })
        .collect();
    if let Some(l) = &lease {
        mysql::report_fenced(
            fencers.values().map(Fencer::state).collect(),
            l.fenced.clone(),
        );
    }
    let _probes: Vec<_> = tracked_mysql
        .iter()
        .zip(&mysql_status)
        .map(|(t, status)| {
            let latency = metrics.probe_latency(&t.name);
            let fencer = fencers.get(&t.name).cloned();
            mysql::spawn_probe(
                (*t).clone(),
                track_tx.clone(),
                status.clone(),
                latency,
                fencer,
            )
        })
        .collect();
    // Link state of the interface and the tracked ones, from netlink events.
    let mut links = HashMap::new();
    for name in std::iter::once(iface.to_owned()).chain(
        config
            .instances
            .iter()
            .flat_map(|i| i.track_interfaces.iter().map(|t| t.name.clone())),
    ) {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .with_context(|| format!("tracked interface {name}"))?;
        links.insert(index, name);
    }
    netlink::watch_links(links, track_tx.clone()).context("watching link state")?;
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

    // Virtual MACs live on macvlans (keepalived's use_vmac): the NIC then accepts frames to
    // them, and the VIPs go there. A resumed daemon keeps them as they are.
    let addresses = Addresses::connect().context("opening netlink")?;
    let mut vmacs = HashMap::new();
    for (instance, name, mac) in wanted_vmacs {
        let index = if resume {
            addresses.keep_macvlan(name, ifindex, mac).await
        } else {
            addresses.macvlan(name, ifindex, mac).await
        }
        .with_context(|| format!("instance {instance}: the virtual MAC's interface {name}"))?;
        info!(%instance, vmac_interface = %name, mac = %format_mac(&mac), "virtual MAC interface ready");
        vmacs.insert(name.clone(), index);
    }
    // With a VIP on a macvlan, the parent must not put the VIP as the sender of its own ARP
    // requests (that would teach neighbours the parent's MAC for the VIP): arp_announce 2.
    let sysctls = if vmacs.is_empty() || !sources.contains_key(&false) {
        Vec::new()
    } else {
        set_sysctls(&[(format!("net/ipv4/conf/{iface}/arp_announce"), "2")])
    };
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
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut config = config;
    let mut hitless = false;
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
    let mut events = match shell.dp.take_events() {
        // SAFETY: the ring buffer owns its fd for as long as it lives inside the AsyncFd.
        Ok(ring) => unsafe { AsyncFd::register(ring) }.ok(),
        Err(err) => {
            warn!(error = %err, "data-plane events are not available");
            None
        }
    };
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
                info!(file = %config_path.display(), "SIGHUP: reloading the configuration");
                if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
                }
                match reload(config_path, &config, &mut engine, &mut shell, (&site, &track_inputs), &mut stats_index) {
                    Ok(new) => config = new,
                    Err(err) => {
                        for line in format!("{err:#}").lines() {
                            tracing::error!("{line}");
                        }
                        tracing::error!("reload refused; the running configuration is kept");
                    }
                }
                shell.apply(&mut engine).await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
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
                if let Ok((mut stream, _)) = conn {
                    let status = shell.status(&engine, &config);
                    let text = serde_json::to_string(&status).unwrap_or_default();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        tokio::io::AsyncWriteExt::write_all(&mut stream, text.as_bytes()),
                    )
                    .await;
                }
            }
            conn = async { metrics_listener.as_ref().expect("guarded").accept().await },
                if metrics_listener.is_some() => {
                if let Ok((stream, _)) = conn {
                    let status = shell.status(&engine, &config);
                    let body = shell.metrics.render(&status);
                    tokio::spawn(metrics::respond(stream, body));
                }
            }
            fired = alarm.fired() => {
                fired.context("the timerfd")?;
                // The heartbeat is written at the top of the loop; the engine's timer may be due.
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    // Adverts heard since the last look may move the timer that is due.
                    shell.refresh_liveness(&mut engine);
                    let t = now();
                    if engine.poll_timeout().is_some_and(|d| d <= t) {
                        engine.handle_timeout(t);
                    }
                    shell.judge_claims(&mut engine, t, &mut track_inputs);
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
                        for e in seen {
                            match e {
                                DpEvent::Heard(key, h, at_ns, mac) => {
                                    shell.advertisers.insert((key, mac), (h.priority, h.src));
                                    shell.feed(&mut engine, key, h, at_ns);
                                }
                                DpEvent::Claim(key, mac) => {
                                    let grace = engine
                                        .advert_interval_cs(key)
                                        .map_or(1_500_000, |cs| u64::from(cs) * 15_000)
                                        .max(20_000);
                                    shell.split.observe(now(), key, mac, grace);
                                }
                            }
                        }
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
        // The next daemon takes over within the heartbeat limit: nothing is released.
        shell.dp.heartbeat(dataplane::monotonic_coarse_ns())?;
        let adverts = master_adverts(&engine);
        shell.dp.leave_for_restart(
            &marker,
            &encode_resume(&track_inputs, adverts, shell.resume_grant()),
        )?;
        let _ = std::fs::remove_file(&config.control_socket);
        info!("stopped; the next xvrrp resumes from {}", pin_dir.display());
        return Ok(());
    }
    // 6.4.3 Shutdown: a master resigns with priority 0, then the data plane is let go. Its
    // VIPs (fenced already) stay until the new master advertises: its gratuitous ARP is what
    // moves the clients, and until it comes they still reach this host.
    let resigned_ns = dataplane::monotonic_coarse_ns();
    shell.deferred = Some(Vec::new());
    // Fence first, then resign: the priority-0 advert lets the peer take over at once.
    shell.fence_all().await;
    engine.shutdown(now());
    shell.apply(&mut engine).await;
    let deferred = shell.deferred.take().unwrap_or_default();
    if !deferred.is_empty() {
        shell.await_successor(&config, &deferred, resigned_ns).await;
        for (key, dev, addr) in deferred {
            if let Err(err) = shell.addresses.remove(dev, addr).await {
                warn!(vrid = key.vrid, vip = %addr, error = %err, "cannot remove VIP");
            }
        }
    }
    release_lease(&shell, &config).await;
    for inst in &config.instances {
        let s = shell.dp.vrid_stats(inst.ipv6(), inst.vrid)?;
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
    // The data plane lets go first; then the stop notifications run to the end (each bounded by
    // its timeout).
    restore_sysctls(&sysctls);
    for name in shell.vmacs.keys() {
        if let Err(err) = shell.addresses.remove_link(name).await {
            warn!(vmac_interface = %name, error = %err, "cannot remove the virtual MAC's interface");
        }
    }
    let Shell { hooks, dp, .. } = shell;
    drop(dp);
    hooks.finish().await;
    let _ = std::fs::remove_file(&config.control_socket);
    if let Some(events) = &config.event_socket {
        let _ = std::fs::remove_file(events);
    }
    info!("stopped");
    Ok(())
}

/// On a stop: no instance is a candidate any more; the lease is released once every server
/// reads back fenced (at most the fence's escalation time and a second; otherwise it runs
/// out at the voters).
async fn release_lease(shell: &Shell, config: &Config) {
    let Some(lease) = &shell.lease else { return };
    lease.want.send_replace(None);
    // Long enough for a fence held off by a lock to escalate (kill the sessions) and read
    // back.
    let bound = config
        .mysql
        .iter()
        .filter(|t| t.fence)
        .map(|t| t.fence_escalate_ms.unwrap_or(0) + 2 * t.timeout_ms)
        .max()
        .unwrap_or(0)
        + 1_000;
    let mut held = lease.held.clone();
    let released = tokio::time::timeout(Duration::from_millis(bound), held.wait_for(|h| !*h)).await;
    if released.is_ok() {
        info!("write lease released");
    } else {
        warn!(
            "write lease not released (a server is not confirmed fenced); it runs out at the voters"
        );
    }
}

/// Keeps the pinned heartbeat fresh while a resuming daemon loads and verifies its program, so
/// that the data plane never stops answering during a hitless restart, and sends the old
/// daemon's last advert of each master instance at its interval, so that no backup's
/// Master_Down timer runs out meanwhile (loading takes longer than 3 intervals of 100 ms).
struct HeartbeatBridge {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Advert sockets for the bridge, from the sources the adverts were sent from.
fn bridge_sockets(iface: &str, adverts: &[ResumeAdvert]) -> Option<AdvertSockets> {
    let v4 = adverts.iter().find_map(|a| match a.src {
        IpAddr::V4(s) => Some(s),
        IpAddr::V6(_) => None,
    });
    let v6 = adverts.iter().find_map(|a| match a.src {
        IpAddr::V6(s) => Some(s),
        IpAddr::V4(_) => None,
    });
    let ifindex = nix::net::if_::if_nametoindex(iface).ok()?;
    match AdvertSockets::open(iface, ifindex, v4, v6) {
        Ok(s) => Some(s),
        Err(err) => {
            warn!(iface, error = %err, "cannot open advert sockets to bridge the restart");
            None
        }
    }
}

impl HeartbeatBridge {
    fn start(
        pin_dir: &std::path::Path,
        every: Duration,
        iface: &str,
        adverts: Vec<ResumeAdvert>,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = pin_dir.join("heartbeat");
        let flag = stop.clone();
        let iface = iface.to_owned();
        let thread = std::thread::spawn(move || {
            let mut hb = match aya::maps::MapData::from_pin(&path) {
                Ok(map) => aya::maps::Array::<_, vrrp_common::Heartbeat>::try_from(
                    aya::maps::Map::Array(map),
                )
                .ok(),
                Err(_) => {
                    warn!(path = %path.display(), "cannot open the pinned heartbeat");
                    None
                }
            };
            let sockets = if adverts.is_empty() {
                None
            } else {
                bridge_sockets(&iface, &adverts)
            };
            let tick = adverts
                .iter()
                .map(|a| Duration::from_millis(a.interval_ms.max(10)))
                .fold(every, Duration::min)
                .max(Duration::from_millis(1));
            let mut due = vec![Instant::now(); adverts.len()];
            while !flag.load(Ordering::SeqCst) {
                if let Some(hb) = hb.as_mut() {
                    let _ = hb.set(
                        0,
                        vrrp_common::Heartbeat {
                            ns: dataplane::monotonic_coarse_ns(),
                        },
                        0,
                    );
                }
                if let Some(sockets) = &sockets {
                    for (a, at) in adverts.iter().zip(due.iter_mut()) {
                        if Instant::now() >= *at {
                            let _ = sockets.send(a.dst, &a.bytes);
                            *at += Duration::from_millis(a.interval_ms.max(10));
                        }
                    }
                }
                std::thread::sleep(tick);
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// SIGHUP: validates the file and the engine's view of it whole, then applies what changed;
/// instances whose configuration is the same are not touched. Returns the new configuration.
fn reload(
    path: &std::path::Path,
    old: &Config,
    engine: &mut Engine,
    shell: &mut Shell,
    (site, inputs): (&Site, &HashMap<String, TrackInput>),
    stats_index: &mut u32,
) -> anyhow::Result<Config> {
    let new = crate::config::load(path)?;
    if let Some(key) = needs_restart(old, &new) {
        anyhow::bail!("{}: {key} changed, which needs a restart", path.display());
    }
    let mut configs = new
        .instances
        .iter()
        .map(|inst| site.engine_config(inst, &new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for track in configs.iter_mut().flat_map(|c| c.tracks.iter_mut()) {
        if let Some(input) = inputs.get(&track.name) {
            track.initial = *input;
        }
    }
    let done = engine.reconfigure(now(), configs)?;
    // What the stopped instances had and the new configuration has not leaves the data plane.
    let new_vips: Vec<IpAddr> = new
        .instances
        .iter()
        .flat_map(|i| i.vips.iter().map(|v| v.addr))
        .collect();
    for inst in old
        .instances
        .iter()
        .filter(|i| done.stopped.contains(&i.name))
    {
        for vip in inst.vips.iter().filter(|v| !new_vips.contains(&v.addr)) {
            shell.dp.remove_vip(vip.addr)?;
        }
        let still = new
            .instances
            .iter()
            .any(|n| n.vrid == inst.vrid && n.ipv6() == inst.ipv6());
        if !still {
            shell
                .dp
                .set_vrid(inst.ipv6(), inst.vrid, VridState::default())?;
        }
    }
    for inst in new
        .instances
        .iter()
        .filter(|i| done.started.contains(&i.name))
    {
        let (c, mac) = site.publish(&mut shell.dp, inst, &new, stats_index, role::INIT)?;
        shell.macs.insert(key_of(&c), mac);
        shell.primaries.insert(key_of(&c), c.primary);
    }
    shell.place_vips(&new, site.ifindex);
    shell.hooks.reconfigure(&new, &done.started);
    info!(kept = ?done.kept, stopped = ?done.stopped, started = ?done.started, "configuration reloaded");
    Ok(new)
}

/// What instances are published against: the interface and its addresses.
struct Site {
    iface: String,
    ifindex: u32,
    iface_mac: [u8; 6],
    /// The advert source per family (true: IPv6).
    sources: HashMap<bool, IpAddr>,
}

impl Site {
    /// Publishes an instance to the data plane (VIPs, VRID state with `role`, unicast peers)
    /// and returns its engine configuration and the MAC it answers from.
    fn publish(
        &self,
        dp: &mut DataPlane,
        inst: &Instance,
        config: &Config,
        stats_index: &mut u32,
        role: u32,
    ) -> anyhow::Result<(InstanceConfig, [u8; 6])> {
        let ipv6 = inst.ipv6();
        let mac = match (inst.virtual_mac, ipv6) {
            (false, _) => self.iface_mac,
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
                    stats_index: *stats_index,
                },
            )?;
            *stats_index += 1;
        }
        let mut flags = vrid_flags::CONFIGURED;
        if !inst.unicast_peers.is_empty() {
            flags |= vrid_flags::UNICAST;
            if inst.unicast_check_ttl {
                flags |= vrid_flags::UNICAST_CHECK_TTL;
            }
            for peer in &inst.unicast_peers {
                dp.add_peer(inst.vrid, *peer)?;
            }
        }
        if inst.auth_pass.is_some() {
            flags |= vrid_flags::AUTH_SIMPLE;
        }
        dp.set_vrid(
            ipv6,
            inst.vrid,
            VridState {
                role,
                flags,
                version: u32::from(inst.version),
                auth: inst.auth_pass.unwrap_or_default(),
                ..VridState::default()
            },
        )?;
        let engine_config = self.engine_config(inst, config)?;
        let primary = engine_config.primary;
        info!(
            vrid = inst.vrid, iface = %self.iface, instance = %inst.name, priority = inst.priority, version = inst.version,
            advert_interval_ms = u32::from(inst.advert_interval_cs) * 10, %primary,
            vips = %inst.vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            mac = %format_mac(&mac), "instance configured"
        );
        Ok((engine_config, mac))
    }

    /// The engine's configuration of an instance.
    fn engine_config(&self, inst: &Instance, config: &Config) -> anyhow::Result<InstanceConfig> {
        let ipv6 = inst.ipv6();
        let Some(primary) = inst.source.or_else(|| self.sources.get(&ipv6).copied()) else {
            anyhow::bail!(
                "instance {}: no {} advert socket; a new address family needs a restart",
                inst.name,
                if ipv6 { "IPv6" } else { "IPv4" }
            );
        };
        Ok(engine_config(
            inst,
            &self.iface,
            self.ifindex,
            primary,
            config,
        ))
    }
}

/// Sets sysctls (paths under /proc/sys, in this network namespace) and returns what they held,
/// for [`restore_sysctls`]; a failure is logged and skipped.
fn set_sysctls(settings: &[(String, &str)]) -> Vec<(String, String)> {
    let mut old = Vec::new();
    for (key, value) in settings {
        let path = std::path::Path::new("/proc/sys").join(key);
        match std::fs::read_to_string(&path).and_then(|was| {
            std::fs::write(&path, value)?;
            Ok(was)
        }) {
            Ok(was) => {
                info!(sysctl = %key, value, was = was.trim(), "sysctl set");
                old.push((key.clone(), was.trim().to_owned()));
            }
            Err(err) => warn!(sysctl = %key, error = %err, "cannot set sysctl"),
        }
    }
    old
}

/// Puts back what [`set_sysctls`] changed.
fn restore_sysctls(old: &[(String, String)]) {
    for (key, value) in old {
        if let Err(err) = std::fs::write(std::path::Path::new("/proc/sys").join(key), value) {
            warn!(sysctl = %key, error = %err, "cannot restore sysctl");
        }
    }
}

/// What a daemon stopping for a hitless restart leaves the next one in its marker: the last
/// input of every track, and the last advert of every master instance (the next daemon's
/// bridge sends them on while its program loads, so that backups hear no silence).
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct ResumeState {
    #[serde(default)]
    tracks: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    adverts: Vec<ResumeAdvert>,
    /// The write lease's own vote as it stood: the next daemon's voter starts from it (no
    /// quiet period), so that a holder renews its lease at once.
    #[serde(default)]
    lease: Option<ResumeGrant>,
}

/// A vote carried over a hitless restart.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ResumeGrant {
    to: IpAddr,
    priority: u8,
    remaining_ms: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ResumeAdvert {
    src: IpAddr,
    dst: IpAddr,
    interval_ms: u64,
    bytes: Vec<u8>,
}

fn encode_resume(
    inputs: &HashMap<String, TrackInput>,
    adverts: Vec<ResumeAdvert>,
    lease: Option<ResumeGrant>,
) -> Vec<u8> {
    let tracks = inputs
        .iter()
        .map(|(name, input)| {
            let v = match input {
                TrackInput::Up => "up".to_owned(),
                TrackInput::Down => "down".to_owned(),
                TrackInput::Value(n) => n.to_string(),
            };
            (name.clone(), v)
        })
        .collect();
    serde_json::to_vec(&ResumeState {
        tracks,
        adverts,
        lease,
    })
    .unwrap_or_default()
}

/// What every master instance advertises now, with its source and interval, for the marker.
fn master_adverts(engine: &Engine) -> Vec<ResumeAdvert> {
    engine
        .master_adverts()
        .into_iter()
        .filter_map(|action| match action {
            Action::Send {
                key,
                src,
                dst,
                bytes,
            } => Some(ResumeAdvert {
                src,
                dst,
                interval_ms: u64::from(engine.advert_interval_cs(key)?) * 10,
                bytes,
            }),
            _ => None,
        })
        .collect()
}

/// [`encode_resume`] read back; anything else (an empty marker from an older daemon) is none.
type Resumed = (
    HashMap<String, TrackInput>,
    Vec<ResumeAdvert>,
    Option<ResumeGrant>,
);

fn decode_resume(bytes: &[u8]) -> Resumed {
    let state: ResumeState = serde_json::from_slice(bytes).unwrap_or_default();
    let inputs = state
        .tracks
        .into_iter()
        .filter_map(|(name, v)| {
            let input = match v.as_str() {
                "up" => TrackInput::Up,
                "down" => TrackInput::Down,
                n => TrackInput::Value(n.parse().ok()?),
            };
            Some((name, input))
        })
        .collect();
    (inputs, state.adverts, state.lease)
}

/// The first setting a reload cannot change without a restart, if any differs.
fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let interfaces = |c: &Config| {
        sorted(
            c.instances
                .iter()
                .flat_map(|i| i.track_interfaces.iter().map(|t| t.name.clone()))
                .collect(),
        )
    };
    let tracked_processes = |c: &Config| {
        sorted(
            c.instances
                .iter()
                .flat_map(|i| i.track_processes.clone())
                .collect(),
        )
    };
    let tracked_mysql = |c: &Config| {
        sorted(
            c.instances
                .iter()
                .flat_map(|i| i.track_mysql.clone())
                .collect(),
        )
    };
    // Which instance has which virtual MAC interface.
    let vmacs = |c: &Config| {
        sorted(
            c.instances
                .iter()
                .filter_map(|i| {
                    let name = i.vmac_interface.as_ref()?;
                    Some(format!("{}={name}", i.name))
                })
                .collect(),
        )
    };
    [
        ("interface", old.interface != new.interface),
        ("xdp_mode", old.xdp_mode != new.xdp_mode),
        ("bpffs", old.bpffs != new.bpffs),
        (
            "heartbeat_limit_ms",
            old.heartbeat_limit_ms != new.heartbeat_limit_ms,
        ),
        ("configure_vips", old.configure_vips != new.configure_vips),
        ("control_socket", old.control_socket != new.control_socket),
        ("event_socket", old.event_socket != new.event_socket),
        ("metrics.listen", old.metrics_listen != new.metrics_listen),
        ("track_script", old.track_scripts != new.track_scripts),
        ("track_file", old.track_files != new.track_files),
        (
            "track_process (or which processes instances track)",
            old.track_processes != new.track_processes
                || tracked_processes(old) != tracked_processes(new),
        ),
        (
            "mysql (or which targets instances track)",
            old.mysql != new.mysql || tracked_mysql(old) != tracked_mysql(new),
        ),
        ("sync_group", old.sync_groups != new.sync_groups),
        ("write_lease", old.write_lease != new.write_lease),
        ("track_interfaces", interfaces(old) != interfaces(new)),
        ("virtual_mac / vmac_interface", vmacs(old) != vmacs(new)),
    ]
    .into_iter()
    .find_map(|(key, differs)| differs.then_some(key))
}

fn key_of(c: &InstanceConfig) -> InstanceKey {
    InstanceKey {
        iface: c.iface,
        family: c.family(),
        vrid: c.vrid,
    }
}

/// What the loop owns besides the engine.
struct Shell {
    hooks: Hooks,
    dp: DataPlane,
    sockets: AdvertSockets,
    addresses: Addresses,
    /// Whether VIPs are added to and removed from interfaces.
    configure_vips: bool,
    announcer: Announcer,
    /// Each VIP (prefix, label) and the index of the interface it goes on.
    vips: HashMap<IpAddr, (Vip, u32)>,
    /// The instance each VIP belongs to.
    vip_keys: HashMap<IpAddr, InstanceKey>,
    /// The macvlans of virtual MACs: name, index.
    vmacs: HashMap<String, u32>,
    /// The fencer of each fenced MySQL target, by name.
    fencers: HashMap<String, Fencer>,
    /// The MySQL targets each instance fences.
    fences: HashMap<InstanceKey, Vec<Fencer>>,
    /// Whether each fenced target (by name) was last told to be writable.
    writable: HashMap<String, bool>,
    /// What each MySQL probe last found.
    mysql_status: Vec<mysql::SharedStatus>,
    /// The MAC each instance answers and announces from.
    macs: HashMap<InstanceKey, [u8; 6]>,
    /// The liveness time last fed to the engine, per instance.
    last_heard: HashMap<InstanceKey, u64>,
    metrics: Metrics,
    /// While stopping: VIPs to remove once a successor advertises (instance, device, address).
    deferred: Option<Vec<(InstanceKey, u32, IpAddr)>>,
    /// The write lease, when configured.
    lease: Option<crate::lease::task::LeaseHandle>,
    /// Who sent the adverts heard, by instance and MAC: (priority, address).
    advertisers: HashMap<(InstanceKey, [u8; 6]), (u8, IpAddr)>,
    /// Each instance's primary address (its claim's tie-breaker).
    primaries: HashMap<InstanceKey, IpAddr>,
    /// Claims on our VIPs by other hosts, judged after a grace.
    split: crate::split::SplitBrain,
}

impl Shell {
    /// Where each VIP of `config` goes (its instance's macvlan, or the interface), and which
    /// MySQL servers each instance fences.
    fn place_vips(&mut self, config: &Config, ifindex: u32) {
        self.fences = config
            .instances
            .iter()
            .map(|inst| {
                let key = InstanceKey {
                    iface: ifindex,
                    family: if inst.ipv6() { Family::V6 } else { Family::V4 },
                    vrid: inst.vrid,
                };
                let fencers = inst
                    .track_mysql
                    .iter()
                    .filter_map(|name| self.fencers.get(name).cloned())
                    .collect();
                (key, fencers)
            })
            .collect();
        self.vip_keys = config
            .instances
            .iter()
            .flat_map(|inst| {
                let key = InstanceKey {
                    iface: ifindex,
                    family: if inst.ipv6() { Family::V6 } else { Family::V4 },
                    vrid: inst.vrid,
                };
                inst.vips.iter().map(move |v| (v.addr, key))
            })
            .collect();
        self.vips = config
            .instances
            .iter()
            .flat_map(|inst| {
                let dev = inst
                    .vmac_interface
                    .as_ref()
                    .and_then(|name| self.vmacs.get(name).copied())
                    .unwrap_or(ifindex);
                inst.vips.iter().map(move |v| (v.addr, (v.clone(), dev)))
            })
            .collect();
    }

    /// Feeds an advert the data plane saw at `at_ns`, unless already fed.
    fn feed(&mut self, engine: &mut Engine, key: InstanceKey, heard: Heard, at_ns: u64) {
        let last = self.last_heard.entry(key).or_default();
        if at_ns <= *last && heard.priority != 0 {
            return;
        }
        *last = at_ns;
        if let Err(why) = engine.handle_heard(Time(at_ns / 1_000), key, &heard) {
            debug!(vrid = key.vrid, src = %heard.src, ?why, "advert not taken");
        }
    }

    /// Reads each instance's liveness entry and feeds what is new.
    fn refresh_liveness(&mut self, engine: &mut Engine) {
        for key in engine.keys() {
            let ipv6 = key.family == Family::V6;
            let Ok(live) = self.dp.liveness(ipv6, key.vrid) else {
                continue;
            };
            if live.last_seen_ns == 0 {
                continue;
            }
            let heard = Heard {
                src: map_addr(ipv6, live.src),
                priority: live.priority,
                interval_cs: live.interval_cs,
                count: live.count,
                form: form_of(live.checksum_form),
            };
            self.feed(engine, key, heard, live.last_seen_ns);
        }
    }

    /// Waits until every instance of `deferred` has heard an advert with a priority above 0
    /// since `resigned_ns` (a new master), or three of its advert intervals passed (3 s at
    /// most): the time the VIPs stay after a resignation.
    async fn await_successor(
        &self,
        config: &Config,
        deferred: &[(InstanceKey, u32, IpAddr)],
        resigned_ns: u64,
    ) {
        let mut keys: Vec<InstanceKey> = deferred.iter().map(|(k, _, _)| *k).collect();
        keys.dedup();
        let interval_ms = keys
            .iter()
            .filter_map(|k| {
                config
                    .instances
                    .iter()
                    .find(|i| i.vrid == k.vrid && i.ipv6() == (k.family == Family::V6))
            })
            .map(|i| u64::from(i.advert_interval_cs) * 10)
            .max()
            .unwrap_or(1000);
        let grace = Duration::from_millis((3 * interval_ms).clamp(20, 3000));
        let started = Instant::now();
        let succeeded = |key: &InstanceKey| {
            self.dp
                .liveness(key.family == Family::V6, key.vrid)
                .is_ok_and(|l| l.last_seen_ns >= resigned_ns && l.priority > 0)
        };
        while started.elapsed() < grace && !keys.iter().all(succeeded) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Its gratuitous ARP went out with that advert; a moment for the clients to take it.
        tokio::time::sleep(Duration::from_millis(2)).await;
        info!(
            waited_ms = started.elapsed().as_millis() as u64,
            successor_heard = keys.iter().all(succeeded),
            "releasing the VIPs"
        );
    }

    /// The status `xvrrp status` shows.
    fn status(&self, engine: &Engine, config: &Config) -> control::Status {
        let t = now();
        let instances: Vec<_> = engine
            .status()
            .into_iter()
            .map(|st| {
                let ipv6 = st.key.family == Family::V6;
                let dp = self.dp.vrid_stats(ipv6, st.key.vrid).unwrap_or_default();
                let vips = config
                    .instances
                    .iter()
                    .find(|i| i.name == st.name)
                    .map(|i| i.vips.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                control::InstanceStatus {
                    name: st.name.clone(),
                    vrid: st.key.vrid,
                    family: if ipv6 { "ipv6" } else { "ipv4" }.into(),
                    state: st.state.to_string(),
                    effective_priority: st.effective_priority,
                    advert_interval_ms: u32::from(st.master_adver_interval_cs) * 10,
                    master: st.master.map(|m| control::MasterStatus {
                        address: m.addr.to_string(),
                        priority: m.priority,
                        advert_interval_ms: u32::from(m.interval_cs) * 10,
                        seen_ms_ago: t.since(m.at) / 1_000,
                    }),
                    vips,
                    adverts_sent: st.counters.adverts_sent,
                    adverts_received: st.counters.adverts_received,
                    became_master: st.counters.became_master,
                    address_mismatch: st.counters.address_mismatch,
                    data_plane: control::DataPlaneCounters {
                        requests: dp.requests,
                        answered: dp.answered,
                        dropped_not_master: dp.dropped_not_master,
                        dropped_stale_heartbeat: dp.dropped_stale_heartbeat,
                        adverts_valid: dp.adverts_valid,
                        adverts_dropped: dp.adverts_drop_ttl
                            + dp.adverts_drop_version
                            + dp.adverts_drop_length
                            + dp.adverts_drop_checksum
                            + dp.adverts_drop_peer
                            + dp.adverts_drop_auth,
                        adverts_dropped_by_reason: [
                            ("ttl", dp.adverts_drop_ttl),
                            ("version", dp.adverts_drop_version),
                            ("length", dp.adverts_drop_length),
                            ("checksum", dp.adverts_drop_checksum),
                            ("peer", dp.adverts_drop_peer),
                            ("auth", dp.adverts_drop_auth),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                        foreign_owner: dp.foreign_owner,
                    },
                }
            })
            .collect();
        control::Status {
            interface: config.interface.clone(),
            other_vrids: self.other_vrids(&instances),
            instances,
            mysql: self
                .mysql_status
                .iter()
                .filter_map(|s| s.lock().ok().map(|s| s.clone()))
                .collect(),
            lease: self
                .lease
                .as_ref()
                .and_then(|l| l.status.lock().ok().map(|s| s.clone())),
        }
    }

    /// The VRIDs the data plane heard adverts for that none of `instances` runs (512 per-CPU
    /// slots read: a millisecond or so, at a status request or a scrape).
    fn other_vrids(&self, instances: &[control::InstanceStatus]) -> Vec<control::OtherVrid> {
        let ours: HashSet<(bool, u8)> = instances
            .iter()
            .map(|i| (i.family == "ipv6", i.vrid))
            .collect();
        [false, true]
            .into_iter()
            .flat_map(|ipv6| (0..=u8::MAX).map(move |vrid| (ipv6, vrid)))
            .filter(|key| !ours.contains(key))
            .filter_map(|(ipv6, vrid)| {
                let adverts = self.dp.vrid_stats(ipv6, vrid).ok()?.adverts_other_vrid;
                (adverts > 0).then(|| control::OtherVrid {
                    vrid,
                    family: if ipv6 { "ipv6" } else { "ipv4" }.into(),
                    adverts,
                })
            })
            .collect()
    }

    /// Asks the fencers of the MySQL servers `key` fences to set read_only, without waiting:
    /// adverts and the heartbeat go on while a fence waits (the write lease, when configured,
    /// keeps the peer from enabling writes until the fence reads back).
    fn fence(&mut self, key: InstanceKey) {
        for fencer in self.fences.get(&key).into_iter().flatten() {
            fencer.request_fence();
            self.writable.insert(fencer.name().to_owned(), false);
        }
    }

    /// After the actions: a server is writable only while every instance that fences it is
    /// master (IPv4 and IPv6 instances, or a sync group, tracking one server), and then only
    /// once those instances own their VIPs and the data plane answers for them (the actions
    /// just carried out). Each change goes to the fencer once.
    fn reconcile_fences(&mut self, engine: &Engine) {
        let masters: HashSet<InstanceKey> = engine.masters().map(|(key, _)| key).collect();
        for (name, fencer) in &self.fencers {
            let mut keys = self
                .fences
                .iter()
                .filter(|(_, fs)| fs.iter().any(|f| f.name() == name))
                .map(|(key, _)| key)
                .peekable();
            let writable = keys.peek().is_some() && keys.all(|key| masters.contains(key));
            if self.writable.get(name) != Some(&writable) {
                if writable {
                    fencer.unfence();
                } else {
                    fencer.request_fence();
                }
                self.writable.insert(name.clone(), writable);
            }
        }
    }

    /// Sets read_only on every fenced server and waits for each first attempt (at most twice
    /// its timeout): on a stop, before the priority-0 advert lets the peer take over.
    async fn fence_all(&self) {
        for fencer in self.fencers.values() {
            fencer.fence().await;
        }
    }

    /// Carries out the engine's actions, in order.
    async fn apply(&mut self, engine: &mut Engine) {
        while let Some(action) = engine.poll_action() {
            // Every line about an instance names it, its VRID and its state.
            let (instance, state) = engine
                .name_and_state(action.key())
                .map(|(n, s)| (n.to_owned(), s.to_string()))
                .unwrap_or_default();
            match action {
                Action::Send {
                    key, dst, bytes, ..
                } => {
                    if let Err(err) = self.sockets.send(dst, &bytes) {
                        warn!(vrid = key.vrid, %instance, %state, %dst, error = %err, "cannot send advert");
                    }
                }
                Action::DataPlane { key, role } => {
                    let ipv6 = key.family == Family::V6;
                    if let Err(err) = self.dp.set_role(ipv6, key.vrid, role) {
                        warn!(vrid = key.vrid, %instance, %state, error = %dataplane::error_chain(&err), "cannot publish the role");
                    }
                }
                Action::AddVips { key, vips, .. } if self.configure_vips => {
                    for addr in vips {
                        let Some((vip, dev)) = self.vips.get(&addr) else {
                            continue;
                        };
                        if let Err(err) = self.addresses.add(*dev, vip).await {
                            warn!(vrid = key.vrid, %instance, %state, vip = %addr, error = %err, "cannot add VIP");
                        }
                    }
                }
                Action::RemoveVips { key, vips, .. } if self.configure_vips => {
                    self.fence(key);
                    for addr in vips {
                        let dev = self.vips.get(&addr).map_or(key.iface, |(_, dev)| *dev);
                        if let Some(deferred) = &mut self.deferred {
                            deferred.push((key, dev, addr));
                            continue;
                        }
                        if let Err(err) = self.addresses.remove(dev, addr).await {
                            warn!(vrid = key.vrid, %instance, %state, vip = %addr, error = %err, "cannot remove VIP");
                        }
                    }
                }
                Action::RemoveVips { key, .. } => self.fence(key),
                Action::AddVips { .. } => {}
                Action::Announce { key, addr } => {
                    let mac = self.macs.get(&key).copied().unwrap_or_default();
                    if let Err(err) = self.announcer.announce(addr, mac) {
                        warn!(vrid = key.vrid, %instance, %state, %addr, error = %err, "cannot announce VIP");
                    }
                }
                Action::StateChanged {
                    key,
                    name,
                    old,
                    new,
                    reason,
                } => {
                    // Not master, and not just demoted (RemoveVips fenced then): read-only.
                    if old != State::Master && new != State::Master {
                        self.fence(key);
                    }
                    let priority = engine.effective_priority(&name).unwrap_or(0);
                    let family = if key.family == Family::V6 {
                        "ipv6"
                    } else {
                        "ipv4"
                    };
                    let new = new.to_string();
                    self.metrics
                        .transition(&name, key.vrid, family, &new, reason.kind());
                    let reason = reason.to_string();
                    self.hooks.state_changed(StateEvent {
                        time_ms: hooks::unix_ms(),
                        instance: name,
                        vrid: key.vrid,
                        family,
                        old: old.to_string(),
                        new,
                        reason,
                        priority,
                    });
                }
            }
        }
        self.reconcile_fences(engine);
        self.claim_lease(engine);
    }

    /// The write lease's own vote, for the resume marker of a hitless restart.
    fn resume_grant(&self) -> Option<ResumeGrant> {
        let status = self.lease.as_ref()?.status.lock().ok()?.clone();
        let (to, remaining_ms) = status.own_vote?;
        Some(ResumeGrant {
            to: to.parse().ok()?,
            priority: status.own_vote_priority,
            remaining_ms,
        })
    }

    /// Judges the claims on our VIPs whose grace is over (crate::split), and lets held-out
    /// losers run again.
    fn judge_claims(
        &mut self,
        engine: &mut Engine,
        t: Time,
        inputs: &mut HashMap<String, TrackInput>,
    ) {
        use crate::split::Verdict;
        for key in self.split.expired(t) {
            info!(
                vrid = key.vrid,
                "split-brain hold-down over: the instance runs again"
            );
            let name = crate::split::track_name(key);
            engine.set_track(t, &name, TrackInput::Up);
            inputs.insert(name, TrackInput::Up);
        }
        let masters: HashMap<InstanceKey, u8> = engine.masters().collect();
        for (key, mac) in self.split.due(t) {
            let ours = (
                masters.get(&key).copied().unwrap_or(0),
                self.primaries
                    .get(&key)
                    .copied()
                    .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            );
            let theirs = self.advertisers.get(&(key, mac)).copied();
            let instance = engine
                .name_and_state(key)
                .map(|(n, _)| n.to_owned())
                .unwrap_or_default();
            let mac_text = format_mac(&mac);
            match self
                .split
                .judge(t, key, masters.contains_key(&key), ours, theirs)
            {
                Verdict::Preempted => {
                    debug!(vrid = key.vrid, %instance, mac = %mac_text, "the host that announced our VIP preempted us");
                }
                Verdict::Win { theirs } => {
                    warn!(vrid = key.vrid, %instance, mac = %mac_text, their_priority = theirs.0, their_address = %theirs.1,
                        our_priority = ours.0, "split brain seen on the wire: this node wins; announcing its VIPs again");
                    self.announce_instance(key);
                }
                Verdict::Lose { theirs } => {
                    let interval_us = engine
                        .advert_interval_cs(key)
                        .map_or(1_000_000, |cs| u64::from(cs) * 10_000);
                    let hold_us = (30 * interval_us).clamp(3_000_000, 60_000_000);
                    warn!(vrid = key.vrid, %instance, mac = %mac_text, their_priority = theirs.0, their_address = %theirs.1,
                        our_priority = ours.0, hold_down_ms = hold_us / 1_000,
                        "split brain seen on the wire: this node loses; fencing and stepping down for the hold-down");
                    self.fence(key);
                    self.split.hold(key, t.plus(hold_us));
                    let name = crate::split::track_name(key);
                    engine.set_track(t, &name, TrackInput::Down);
                    inputs.insert(name, TrackInput::Down);
                }
                Verdict::Unknown { announce } => {
                    if announce {
                        warn!(vrid = key.vrid, %instance, mac = %mac_text,
                            "split brain seen on the wire: another host claims a VIP of ours and none of its adverts was heard; announcing ours again");
                        self.announce_instance(key);
                    }
                }
            }
        }
    }

    /// Announces the VIPs of instance `key` again.
    fn announce_instance(&self, key: InstanceKey) {
        let mac = self.macs.get(&key).copied().unwrap_or_default();
        for addr in self.vips.keys() {
            if self.vip_keys.get(addr) == Some(&key)
                && let Err(err) = self.announcer.announce(*addr, mac)
            {
                warn!(vrid = key.vrid, vip = %addr, error = %err, "cannot announce VIP");
            }
        }
    }

    /// Announces the VIPs of every master instance that fences again (a weaker master that
    /// could not hear our adverts may have drawn the clients to itself).
    fn reannounce(&self, engine: &Engine) {
        for (key, _) in engine.masters() {
            if self.fences.get(&key).is_some_and(|f| !f.is_empty()) {
                self.announce_instance(key);
            }
        }
    }

    /// Tells the write lease whether this node is a candidate: the highest priority of the
    /// master instances that fence a server, or none.
    fn claim_lease(&self, engine: &Engine) {
        let Some(lease) = &self.lease else { return };
        let want = engine
            .masters()
            .filter(|(key, _)| self.fences.get(key).is_some_and(|f| !f.is_empty()))
            .map(|(_, priority)| priority)
            .max();
        lease.want.send_if_modified(|w| {
            let changed = *w != want;
            *w = want;
            changed
        });
    }
}

/// An address as the maps hold it: IPv6 in 16 bytes, IPv4 in the first 4.
fn map_addr(ipv6: bool, bytes: [u8; 16]) -> IpAddr {
    if ipv6 {
        IpAddr::from(bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

fn form_of(form: u8) -> ChecksumForm {
    if form == checksum_form::PLAIN {
        ChecksumForm::Plain
    } else {
        ChecksumForm::PseudoHeader
    }
}

/// What an event from the data plane's ring buffer means to the daemon.
enum DpEvent {
    /// An advert to feed the engine: the instance, the advert, when it was seen, and its
    /// sender's MAC.
    Heard(InstanceKey, Heard, u64, [u8; 6]),
    /// Another host announced a VIP of this instance (from this MAC).
    Claim(InstanceKey, [u8; 6]),
}

/// Logs one event from the data plane's ring buffer and says what it means.
fn log_event(iface: &str, ifindex: u32, bytes: &[u8]) -> Option<DpEvent> {
    if bytes.len() != std::mem::size_of::<Event>() {
        warn!(len = bytes.len(), "malformed data-plane event");
        return None;
    }
    // SAFETY: the length is that of an Event, a Pod; read_unaligned copes with any alignment.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let ipv6 = e.slot >= 256;
    let vrid = (e.slot % 256) as u8;
    let addr = map_addr(ipv6, e.addr);
    let key = InstanceKey {
        iface: ifindex,
        family: if ipv6 { Family::V6 } else { Family::V4 },
        vrid,
    };
    let heard = Heard {
        src: addr,
        priority: e.priority,
        interval_cs: e.interval_cs,
        count: e.count,
        form: form_of(e.checksum_form),
    };
    match e.kind {
        event::MASTER_CHANGED => {
            debug!(iface, vrid, ipv6, master = %addr, priority = e.priority, interval_cs = e.interval_cs,
                "advert from a new master, or a changed one");
            Some(DpEvent::Heard(key, heard, e.at_ns, e.mac))
        }
        event::PRIORITY_ZERO => {
            info!(iface, vrid, ipv6, master = %addr, "master resigned (priority 0)");
            Some(DpEvent::Heard(key, heard, e.at_ns, e.mac))
        }
        event::FOREIGN_OWNER => {
            // Judged after a grace (crate::split): a preempting master's first announcement
            // comes with its first advert.
            debug!(iface, vrid, ipv6, vip = %addr, mac = %format_mac(&e.mac),
                "another host announced a VIP this node is master of");
            Some(DpEvent::Claim(key, e.mac))
        }
        other => {
            warn!(kind = other, "unknown data-plane event");
            None
        }
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_inputs_and_adverts_survive_the_resume_marker() {
        let inputs = HashMap::from([
            ("mysql:db".to_owned(), TrackInput::Up),
            ("process:svc".to_owned(), TrackInput::Down),
            ("prio".to_owned(), TrackInput::Value(-42)),
        ]);
        let adverts = vec![ResumeAdvert {
            src: "192.0.2.1".parse().unwrap(),
            dst: "224.0.0.18".parse().unwrap(),
            interval_ms: 100,
            bytes: vec![0x31, 51, 200, 1],
        }];
        let lease = Some(ResumeGrant {
            to: "192.0.2.1".parse().unwrap(),
            priority: 200,
            remaining_ms: 1500,
        });
        assert_eq!(
            decode_resume(&encode_resume(&inputs, adverts.clone(), lease)),
            (inputs, adverts, lease)
        );
        let (none, no_adverts, no_lease) = decode_resume(b"");
        assert!(no_lease.is_none());
        assert!(
            none.is_empty() && no_adverts.is_empty(),
            "an older daemon's empty marker"
        );
        let (odd, _, _) = decode_resume(b"{\"tracks\": {\"x\": \"sideways\"}}");
        assert!(odd.is_empty());
    }
}

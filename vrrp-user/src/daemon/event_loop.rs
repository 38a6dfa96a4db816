//! The event loop: gather inputs (signals, timers, the data plane's events, track changes,
//! control and metrics requests, the write lease), hand each to its handler, and carry out the
//! engine's actions through the shell. It also keeps the data plane's heartbeat fresh.

use super::*;

/// Why the loop ended.
pub(super) enum Stop {
    /// SIGTERM / SIGINT.
    ForGood,
    /// SIGUSR2.
    Hitless,
    /// Something the daemon cannot run without stopped (the link and address events): stop
    /// as on SIGTERM, then exit non-zero.
    Failed(String),
    /// The interface was deleted and created again, and is up: stop as on SIGTERM, then start
    /// afresh in place (the same process, executed again), attaching to the new interface.
    Reexec,
}

/// What the loop works on; handed back when it ends.
pub(super) struct Running<'a> {
    pub(super) engine: Engine,
    pub(super) shell: Shell,
    pub(super) config: Config,
    pub(super) config_path: &'a std::path::Path,
    pub(super) site: Site,
    pub(super) stats_index: u32,
    pub(super) track_inputs: HashMap<String, TrackInput>,
    pub(super) heartbeat_limit: Duration,
}

/// The sources of input the loop owns.
pub(super) struct Inputs {
    pub(super) track_rx: tokio::sync::mpsc::UnboundedReceiver<(String, TrackInput)>,
    pub(super) host_rx: tokio::sync::mpsc::UnboundedReceiver<netlink::HostEvent>,
    pub(super) control: tokio::net::UnixListener,
    pub(super) metrics_listener: Option<tokio::net::TcpListener>,
    pub(super) logger: Option<KernelLog>,
}

/// Runs until a signal stops the daemon.
pub(super) async fn event_loop<'a>(
    running: Running<'a>,
    inputs: Inputs,
) -> anyhow::Result<(Stop, Running<'a>)> {
    let Running {
        mut engine,
        mut shell,
        mut config,
        config_path,
        site,
        mut stats_index,
        mut track_inputs,
        heartbeat_limit,
    } = running;
    let Inputs {
        mut track_rx,
        mut host_rx,
        control,
        metrics_listener,
        logger,
    } = inputs;
    let iface = site.iface.clone();
    let iface = iface.as_str();
    let ifindex = site.ifindex;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut sighup = signal(SignalKind::hangup())?;
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
    // The interface came back under a new index: start afresh once it is up.
    let mut relinked = false;
    let why = loop {
        if last_heartbeat.elapsed() >= heartbeat_gap {
            if let Err(err) = shell.dp.heartbeat(dataplane::monotonic_coarse_ns()) {
                break Stop::Failed(format!(
                    "cannot write the heartbeat: {}",
                    dataplane::error_chain(&err)
                ));
            }
            last_heartbeat = Instant::now();
        }
        let next = [
            engine.poll_timeout(),
            shell.split.next_deadline(),
            shell.keeper.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let deadline = next.map(|t| {
            let (instant, time) = epoch;
            instant + Duration::from_micros(t.since(time))
        });
        let heartbeat_due = last_heartbeat + heartbeat_every;
        if let Err(err) = alarm.set(deadline.map_or(heartbeat_due, |d| d.min(heartbeat_due))) {
            break Stop::Failed(format!("cannot set the timerfd: {err}"));
        }
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Stop::ForGood; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Stop::ForGood; }
            _ = sighup.recv() => {
                on_sighup(config_path, &mut config, &mut engine, &mut shell, (&site, &track_inputs), &mut stats_index).await;
            }
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = sigusr2.recv() => {
                info!("SIGUSR2: stopping for a hitless restart; the data plane, VIPs and roles stay");
                break Stop::Hitless;
            }
            r = async { contested.as_mut().expect("guarded").changed().await }, if contested.is_some() => {
                if r.is_ok() {
                    shell.reannounce(&engine);
                } else {
                    contested = None;
                }
            }
            event = host_rx.recv() => match event {
                Some(netlink::HostEvent::AddressGone { ifindex, addr }) => {
                    shell.on_address_gone(&mut engine, ifindex, addr).await;
                    shell.apply(&mut engine).await;
                }
                Some(netlink::HostEvent::LinkGone { name }) if name == iface => {
                    warn!(iface, "the interface is gone: its instances are in Fault until it comes back");
                }
                Some(netlink::HostEvent::LinkBack { name }) if name == iface => {
                    info!(iface, "the interface was created again: the daemon starts afresh on it once it is up");
                    relinked = true;
                    if netlink::link_up(iface).unwrap_or(false) {
                        break Stop::Reexec;
                    }
                }
                Some(netlink::HostEvent::LinkGone { .. } | netlink::HostEvent::LinkBack { .. }) => {}
                Some(netlink::HostEvent::StreamEnded) | None => {
                    tracing::error!("the link and address events stopped: link state and deleted VIPs would go unseen; stopping");
                    break Stop::Failed("the link and address events stopped".to_owned());
                }
            },
            Some((name, input)) = track_rx.recv() => {
                if relinked && input == TrackInput::Up && name == netlink::link_track_name(iface) {
                    break Stop::Reexec;
                }
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
                if let Err(err) = fired {
                    break Stop::Failed(format!("the timerfd: {err}"));
                }
                // The heartbeat is written at the top of the loop; the engine's timer may be due.
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    shell.on_timer(&mut engine, &mut track_inputs);
                    shell.upkeep_vips(&mut engine).await;
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
    };
    Ok((
        why,
        Running {
            engine,
            shell,
            config,
            config_path,
            site,
            stats_index,
            track_inputs,
            heartbeat_limit,
        },
    ))
}

//! The event loop, a short driver: [`Sources::next`] waits for one [`Input`] (a signal, the
//! timer, the data plane's events, a track change, a link or address event, a control or
//! metrics request, the write lease), [`Loop::handle`] hands it to its handler, and the shell
//! carries out the engine's actions. The loop also keeps the data plane's heartbeat fresh
//! (the pacer does while it sends masters' adverts: the loop then wakes only for its own
//! deadlines).

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
    pub(super) track_inputs: HashMap<TrackId, TrackInput>,
    pub(super) heartbeat_limit: Duration,
}

/// The sources of input the loop owns.
pub(super) struct Inputs {
    pub(super) track_rx: tokio::sync::mpsc::UnboundedReceiver<(TrackId, TrackInput)>,
    pub(super) host_rx: tokio::sync::mpsc::UnboundedReceiver<netlink::HostEvent>,
    /// The results of the netlink task.
    pub(super) net_rx: tokio::sync::mpsc::UnboundedReceiver<NetDone>,
    pub(super) control: tokio::net::UnixListener,
    pub(super) metrics_listener: Option<tokio::net::TcpListener>,
}

/// One thing the loop reacts to.
enum Input {
    /// SIGTERM or SIGINT (its name).
    Stop(&'static str),
    Reload,
    Hitless,
    Watchdog,
    /// The write lease became contested.
    Contested,
    Host(Option<netlink::HostEvent>),
    /// A VIP, route or virtual-MAC change the netlink task carried out.
    Net(NetDone),
    Track(TrackId, TrackInput),
    Control(tokio::net::UnixStream),
    Metrics(tokio::net::TcpStream),
    /// The timerfd fired (the heartbeat is due, or the engine's next deadline).
    Timer(std::io::Result<()>),
    /// The data plane's events, drained from its ring.
    DataPlane(Vec<DpEvent>),
    /// The data planes a reload waited for (none: their loading stopped).
    Loaded(Option<Loaded>),
    /// Something the loop only had to service itself (kernel-side logs flushed, a source that
    /// ended, a connection that failed).
    Nothing,
}

/// Where inputs come from.
struct Sources {
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
    sigusr2: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
    watchdog: Option<tokio::time::Interval>,
    contested: Option<tokio::sync::watch::Receiver<u64>>,
    inputs: Inputs,
    alarm: crate::alarm::Alarm,
    events: Vec<Ring>,
    /// The kernel-side logs, by interface index.
    logs: Vec<(u32, AsyncFd<KernelLog>)>,
    /// The data planes a reload is loading.
    loading: Option<tokio::sync::oneshot::Receiver<Loaded>>,
}

impl Sources {
    /// Waits for the next input.
    async fn next(&mut self) -> Input {
        let Self {
            sigterm,
            sigint,
            sigusr2,
            sighup,
            watchdog,
            contested,
            inputs,
            alarm,
            events,
            logs,
            loading,
        } = self;
        tokio::select! {
            _ = sigterm.recv() => Input::Stop("SIGTERM"),
            _ = sigint.recv() => Input::Stop("SIGINT"),
            _ = sighup.recv() => Input::Reload,
            _ = sigusr2.recv() => Input::Hitless,
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => Input::Watchdog,
            r = async { contested.as_mut().expect("guarded").changed().await }, if contested.is_some() => {
                if r.is_ok() {
                    Input::Contested
                } else {
                    *contested = None;
                    Input::Nothing
                }
            }
            event = inputs.host_rx.recv() => Input::Host(event),
            Some(done) = inputs.net_rx.recv() => Input::Net(done),
            Some((name, input)) = inputs.track_rx.recv() => Input::Track(name, input),
            conn = inputs.control.accept() => conn.map_or(Input::Nothing, |(s, _)| Input::Control(s)),
            conn = async { inputs.metrics_listener.as_ref().expect("guarded").accept().await },
                if inputs.metrics_listener.is_some() => conn.map_or(Input::Nothing, |(s, _)| Input::Metrics(s)),
            fired = alarm.fired() => Input::Timer(fired),
            seen = next_events(events), if !events.is_empty() => Input::DataPlane(seen),
            loaded = async { loading.as_mut().expect("guarded").await }, if loading.is_some() => {
                *loading = None;
                Input::Loaded(loaded.ok())
            }
            () = flush_logs(logs), if !logs.is_empty() => Input::Nothing,
        }
    }
}

/// The loop's own state besides what it runs.
struct Loop<'a> {
    running: Running<'a>,
    /// The engine's clock against the monotonic clock.
    epoch: (Instant, Time),
    last_heartbeat: Instant,
    /// The interface came back under a new index: start afresh once it is up.
    relinked: bool,
}

impl Loop<'_> {
    /// Writes the heartbeat if it is due, and sets the timerfd to the next deadline (the
    /// engine's, the split-brain and VIP hold-downs', the heartbeat's); that deadline.
    fn arm(&mut self, alarm: &mut crate::alarm::Alarm) -> Result<Option<Instant>, Stop> {
        // The dead-man switch: the data plane answers for VIPs only while the heartbeat is
        // fresh. It is written whenever the loop wakes (adverts, probes, events; at most every
        // eighth of the limit), and by a timer of its own only when nothing else woke the loop
        // for half the limit: a wake-up may come half the limit late before the data plane goes
        // quiet. While the pacer sends masters' adverts, it writes the heartbeat with them
        // (crate::daemon::pacer), and the loop's own timer is only for the clock's checks.
        let limit = self.running.heartbeat_limit;
        if self.last_heartbeat.elapsed() >= limit / 8 {
            let ns = dataplane::monotonic_ns();
            for port in self.running.shell.ports.values_mut() {
                port.dp.heartbeat(ns).map_err(|err| {
                    Stop::Failed(format!(
                        "cannot write the heartbeat on {}: {}",
                        port.site.iface,
                        dataplane::error_chain(&err)
                    ))
                })?;
            }
            self.last_heartbeat = Instant::now();
            self.running.shell.sync_beats();
        }
        let Running { engine, shell, .. } = &self.running;
        let next = [
            engine.poll_timeout(),
            shell.split.next_deadline(),
            shell.keeper.next_deadline(),
            shell.next_route_retry(),
        ]
        .into_iter()
        .flatten()
        .min();
        let (instant, time) = self.epoch;
        let deadline = next.map(|t| instant + Duration::from_micros(t.since(time)));
        // While the pacer sends masters' adverts it also writes the heartbeat: the loop wakes
        // for its own deadlines, and to check the heartbeat's clock when that is due.
        // (A check comes with a heartbeat, written at most every eighth of the limit.)
        let heartbeat_due = if shell.pacer.is_active() {
            shell
                .next_clock_check()
                .max(self.last_heartbeat + limit / 8)
        } else {
            self.last_heartbeat + (limit / 2).max(Duration::from_millis(1))
        };
        alarm
            .set(deadline.map_or(heartbeat_due, |d| d.min(heartbeat_due)))
            .map_err(|err| Stop::Failed(format!("cannot set the timerfd: {err}")))?;
        Ok(deadline)
    }

    /// Hands one input to its handler; the reason to stop, if it is one.
    async fn handle(&mut self, input: Input, deadline: Option<Instant>) -> Option<Stop> {
        let Running {
            engine,
            shell,
            config,
            config_path,
            track_inputs,
            ..
        } = &mut self.running;
        match input {
            Input::Stop(signal) => {
                info!("{signal}: stopping");
                return Some(Stop::ForGood);
            }
            Input::Hitless => {
                info!(
                    "SIGUSR2: stopping for a hitless restart; the data plane, VIPs and roles stay"
                );
                return Some(Stop::Hitless);
            }
            Input::Reload => {
                on_sighup(config_path, config, engine, shell, track_inputs).await;
            }
            Input::Watchdog => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Input::Contested => shell.reannounce(engine),
            Input::Nothing => {}
            Input::Host(event) => return self.on_host(event).await,
            Input::Net(done) => {
                shell.on_net_done(engine, done);
                shell.apply(engine).await;
            }
            Input::Track(name, input) => {
                if self.relinked
                    && input == TrackInput::Up
                    && shell
                        .ports
                        .values()
                        .any(|p| name == netlink::link_track_name(&p.site.iface))
                {
                    return Some(Stop::Reexec);
                }
                engine.set_track(now(), &name, input);
                track_inputs.insert(name, input);
                shell.apply(engine).await;
            }
            Input::Control(stream) => shell.answer_status(stream, engine, config).await,
            Input::Metrics(stream) => shell.answer_metrics(stream, engine, config),
            Input::Timer(Err(err)) => return Some(Stop::Failed(format!("the timerfd: {err}"))),
            Input::Timer(Ok(())) => {
                // The heartbeat is written before each wait; the engine's timer may be due.
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    shell.on_timer(engine, track_inputs);
                    shell.upkeep_vips(engine);
                    shell.retry_routes(engine);
                    shell.apply(engine).await;
                }
            }
            Input::DataPlane(seen) => {
                shell.on_events(engine, seen);
                shell.apply(engine).await;
            }
            Input::Loaded(loaded) => {
                if on_loaded(loaded, config, engine, shell, track_inputs).await {
                    on_sighup(config_path, config, engine, shell, track_inputs).await;
                }
            }
        }
        None
    }

    /// A link or address event.
    async fn on_host(&mut self, event: Option<netlink::HostEvent>) -> Option<Stop> {
        let Running { engine, shell, .. } = &mut self.running;
        let served = |name: &str| shell.ports.values().any(|p| p.site.iface == name);
        match event {
            Some(netlink::HostEvent::AddressGone { ifindex, addr }) => {
                shell.on_address_gone(engine, ifindex, addr);
                shell.apply(engine).await;
            }
            Some(netlink::HostEvent::LinkGone { name }) if served(&name) => {
                warn!(
                    iface = %name,
                    "the interface is gone: its instances are in Fault until it comes back"
                );
            }
            Some(netlink::HostEvent::LinkBack { name }) if served(&name) => {
                info!(
                    iface = %name,
                    "the interface was created again: the daemon starts afresh once it is up"
                );
                self.relinked = true;
                if netlink::link_up(&name).unwrap_or(false) {
                    return Some(Stop::Reexec);
                }
            }
            Some(netlink::HostEvent::RouteGone { to, prefix, table }) => {
                shell.on_route_gone(engine, (to, prefix, table));
            }
            Some(netlink::HostEvent::LinkGone { .. } | netlink::HostEvent::LinkBack { .. }) => {}
            Some(netlink::HostEvent::StreamEnded) | None => {
                tracing::error!(
                    "the link and address events stopped: link state and deleted VIPs would go unseen; stopping"
                );
                return Some(Stop::Failed(
                    "the link and address events stopped".to_owned(),
                ));
            }
        }
        None
    }
}

/// Tells systemd (Type=notify) and the log that the daemon runs: the data plane, the VIPs'
/// owner, the control socket and the metrics endpoint are in place. "xvrrp running" is the
/// log's word for that moment (tests and operators wait for it). The watchdog, if systemd
/// asks for one, is fed from the loop, so a stuck loop is restarted.
fn announce_ready(config: &Config) -> Option<tokio::time::Interval> {
    let iface = config.interfaces().join(", ");
    let ready = format!("{} instance(s) on {iface}", config.instances.len());
    info!(
        %iface,
        instances = config.instances.len(),
        heartbeat_limit_ms = config.heartbeat_limit_ms,
        "xvrrp running"
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&ready),
    ]);
    sd_notify::watchdog_enabled().map(|every| {
        let mut t = tokio::time::interval((every / 2).max(Duration::from_millis(10)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    })
}

/// Runs until a signal (or a failure) stops the daemon.
pub(super) async fn event_loop<'a>(
    mut running: Running<'a>,
    inputs: Inputs,
) -> anyhow::Result<(Stop, Running<'a>)> {
    let (sigterm, sigint) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let (sigusr2, sighup) = (
        signal(SignalKind::user_defined2())?,
        signal(SignalKind::hangup())?,
    );
    let (mut events, mut logs) = (Vec::new(), Vec::new());
    sync_rings(&mut events, &mut logs, &mut running.shell.ports);
    // The engine's next deadline and the heartbeat's, on one timerfd.
    let alarm = crate::alarm::Alarm::new().context("creating the timerfd")?;
    let mut sources = Sources {
        sigterm,
        sigint,
        sigusr2,
        sighup,
        watchdog: announce_ready(&running.config),
        contested: running.shell.lease.as_ref().map(|l| l.contested.clone()),
        inputs,
        alarm,
        events,
        logs,
        loading: None,
    };
    let mut lp = Loop {
        running,
        epoch: (Instant::now(), now()),
        last_heartbeat: Instant::now(),
        relinked: false,
    };
    let why = loop {
        let deadline = match lp.arm(&mut sources.alarm) {
            Ok(deadline) => deadline,
            Err(stop) => break stop,
        };
        let input = sources.next().await;
        if let Some(stop) = lp.handle(input, deadline).await {
            break stop;
        }
        let shell = &mut lp.running.shell;
        if std::mem::take(&mut shell.ports_changed) {
            sync_rings(&mut sources.events, &mut sources.logs, &mut shell.ports);
        }
        if let Some(rx) = shell.pending_reload.as_mut().and_then(|p| p.loading.take()) {
            sources.loading = Some(rx);
        }
    };
    // Whatever follows (a resignation, a hitless hand-over) runs without the pacer: the
    // engine has every master's adverts back.
    let Running { engine, shell, .. } = &mut lp.running;
    shell.stop_pacer(engine);
    Ok((why, lp.running))
}

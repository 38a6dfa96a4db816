//! SIGHUP: the new file validated whole, then only what changed applied.

use super::*;

/// Data planes loaded for the interfaces a reload adds, by name (or why one could not be).
pub(super) type Loaded = Vec<(String, anyhow::Result<DataPlane>)>;

/// A reload that waits for the data planes of the interfaces it adds: loading one is the
/// kernel verifying the XDP program, about a second, so it runs off the loop and adverts and
/// the heartbeat go on meanwhile.
pub(super) struct PendingReload {
    pub(super) config: Config,
    /// Where the loaded data planes arrive; the loop takes it and waits on it.
    pub(super) loading: Option<tokio::sync::oneshot::Receiver<Loaded>>,
    /// Another SIGHUP came meanwhile: reload again once this one is done.
    pub(super) again: bool,
}

/// SIGHUP, first half: the file validated whole (refused whole otherwise); the data planes of
/// the interfaces it adds start loading off the loop. None when there is nothing to wait for.
fn prepare(
    path: &std::path::Path,
    old: &Config,
    shell: &Shell,
) -> anyhow::Result<(Config, Option<tokio::sync::oneshot::Receiver<Loaded>>)> {
    let mut new = crate::config::load(path)?;
    // A heartbeat limit derived from the advert intervals: the running program's limit stays
    // (it is fixed when the program loads). Longer intervals keep the shorter running limit
    // (safe: the heartbeat is only written more often); shorter ones than it allows would let
    // a frozen daemon's program answer after the peer took over, so they need a restart.
    if !old.heartbeat_limit_explicit && !new.heartbeat_limit_explicit {
        if new.heartbeat_limit_ms < old.heartbeat_limit_ms {
            anyhow::bail!(
                "{}: the shortest advert_interval_ms went below half the running heartbeat limit \
                 ({} ms, derived from the advert intervals at start), which needs a restart",
                path.display(),
                old.heartbeat_limit_ms
            );
        }
        new.heartbeat_limit_ms = old.heartbeat_limit_ms;
    }
    if let Some(key) = needs_restart(old, &new) {
        anyhow::bail!("{}: {key} changed, which needs a restart", path.display());
    }
    // Every link it watches exists (as at startup).
    watched_links(&new)?;
    let mut jobs = Vec::new();
    for iface in new.interfaces() {
        if shell.index_of(&iface) == 0 {
            let (mac, _) = interface(&iface).with_context(|| format!("interface {iface}"))?;
            // Another daemon serving it would lose its XDP program to this one.
            let alias = control::default_socket(&iface);
            if !std::fs::read_link(&alias).is_ok_and(|t| t == new.control_socket)
                && std::os::unix::net::UnixStream::connect(&alias).is_ok()
            {
                anyhow::bail!(
                    "another xvrrp serves {iface} (its control socket {} answers)",
                    alias.display()
                );
            }
            jobs.push((iface, mac));
        }
    }
    if jobs.is_empty() {
        return Ok((new, None));
    }
    let limit_ns = Duration::from_millis(new.heartbeat_limit_ms).as_nanos() as u64;
    let level = shell.kernel_log;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let loaded: Loaded = jobs
            .into_iter()
            .map(|(iface, mac)| {
                let dp = DataPlane::load(mac, limit_ns, level).map_err(anyhow::Error::from);
                (iface, dp)
            })
            .collect();
        let _ = tx.send(loaded);
    });
    Ok((new, Some(rx)))
}

/// SIGHUP, second half: with the added interfaces' data planes `loaded`, applies what changed;
/// instances whose configuration is the same are not touched. An added interface gets its
/// instances published, then its program attached and pinned, without touching the others;
/// one the file no longer names is let go once its instances have resigned
/// ([`retire_ports`]). Returns the new configuration.
async fn finish(
    new: Config,
    loaded: Loaded,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<TrackId, TrackInput>,
) -> anyhow::Result<Config> {
    track::hide_from_scripts(new.secret_env());
    let links = watched_links(&new)?;
    let fresh = add_ports(&new, loaded, shell, inputs).await?;
    if let Err(e) = apply_config(&new, engine, shell, inputs, &fresh) {
        // Nothing of the file is applied: the data planes it added go again.
        drop_ports(shell, fresh.keys());
        return Err(e);
    }
    for (_, published) in fresh {
        shell.macs.extend(published.macs);
        shell.primaries.extend(published.primaries);
        shell.ports_changed = true;
    }
    for link in links {
        let _ = shell.links.send(link);
    }
    Ok(new)
}

/// Publishes and attaches the `loaded` data planes; what publishing gave, by interface index.
/// On a failure, those added so far are let go again.
async fn add_ports(
    new: &Config,
    loaded: Loaded,
    shell: &mut Shell,
    inputs: &HashMap<TrackId, TrackInput>,
) -> anyhow::Result<BTreeMap<u32, Published>> {
    let mut fresh = BTreeMap::new();
    for (iface, dp) in loaded {
        let added = async {
            let (mac, index) = interface(&iface)?;
            let (mut port, mut published) = port_on(new, (&iface, mac, index), dp?, false, inputs)?;
            let wanted = std::mem::take(&mut published.wanted_vmacs);
            let made = attach_port(&mut port, wanted, new, false, &shell.addresses).await?;
            anyhow::Ok((port, published, made))
        };
        match added.await {
            Ok((port, published, made)) => {
                shell.vmacs.extend(made);
                info!(%iface, "a new interface is served");
                fresh.insert(port.site.ifindex, published);
                shell.ports.insert(port.site.ifindex, port);
            }
            Err(e) => {
                drop_ports(shell, fresh.keys());
                return Err(e.context(format!("interface {iface}")));
            }
        }
    }
    Ok(fresh)
}

/// Lets the data planes of `indexes` go (a reload that is not applied).
fn drop_ports<'a>(shell: &mut Shell, indexes: impl Iterator<Item = &'a u32>) {
    for index in indexes {
        shell.ports.remove(index);
    }
}

/// The part of a reload that cannot fail half-way: the engine reconfigured, the instances it
/// started published (those on `fresh` ports are already), the maps pruned, the VIPs placed.
fn apply_config(
    new: &Config,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<TrackId, TrackInput>,
    fresh: &BTreeMap<u32, Published>,
) -> anyhow::Result<()> {
    let mut configs = new
        .instances
        .iter()
        .map(
            |inst| match shell.ports.get(&shell.index_of(&inst.interface)) {
                Some(port) => port.site.engine_config(inst, new),
                None => anyhow::bail!("instance {}: its interface is not served", inst.name),
            },
        )
        .collect::<anyhow::Result<Vec<_>>>()?;
    for track in configs.iter_mut().flat_map(|c| c.tracks.iter_mut()) {
        if let Some(input) = inputs.get(&track.name) {
            track.initial = *input;
        }
    }
    let done = engine.reconfigure(now(), configs)?;
    for inst in new
        .instances
        .iter()
        .filter(|i| done.started.contains(&i.name))
    {
        let index = shell.index_of(&inst.interface);
        if fresh.contains_key(&index) {
            continue;
        }
        let Some(port) = shell.ports.get_mut(&index) else {
            continue;
        };
        let (c, mac) =
            port.site
                .publish(&mut port.dp, inst, new, &mut port.stats_index, role::INIT)?;
        shell.macs.insert(key_of(&c), mac);
        shell.primaries.insert(key_of(&c), c.primary);
    }
    // What the new configuration has not (VIPs, VRIDs, unicast peers) leaves the data planes.
    for port in shell.ports.values_mut() {
        prune_maps(&mut port.dp, new, &port.site.iface)?;
    }
    shell.place_vips(new);
    let vips: HashSet<IpAddr> = shell.vips.keys().copied().collect();
    shell.keeper.retain(|a| vips.contains(a));
    shell.hooks.reconfigure(new, &done.started);
    track::run_scripts_as(new.script_user.as_ref());
    info!(kept = ?done.kept, stopped = ?done.stopped, started = ?done.started, "configuration reloaded");
    Ok(())
}

/// After a reload, once the instances it stopped have resigned: the data planes of the
/// interfaces `config` no longer names are detached and unpinned, their sysctls restored.
pub(super) fn retire_ports(config: &Config, shell: &mut Shell) {
    let served = config.interfaces();
    let gone: Vec<u32> = shell
        .ports
        .iter()
        .filter(|(_, p)| !served.contains(&p.site.iface))
        .map(|(index, _)| *index)
        .collect();
    for index in gone {
        if let Some(port) = shell.ports.remove(&index) {
            restore_sysctls(&port.sysctls);
            let alias = control::default_socket(&port.site.iface);
            if std::fs::read_link(&alias).is_ok_and(|t| t == config.control_socket) {
                let _ = std::fs::remove_file(&alias);
            }
            info!(iface = %port.site.iface, "an interface is no longer served: its data plane is detached");
            shell.ports_changed = true;
        }
    }
}

/// The first setting a reload cannot change without a restart, if any differs.
pub(super) fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    // What the instances of a configuration name, sorted, each once.
    let across = |c: &Config, names: fn(&Instance) -> Vec<String>| {
        sorted(c.instances.iter().flat_map(names).collect())
    };
    // The links watched: tracked interfaces and those VIPs and routes go on.
    let tracked_processes = |c: &Config| across(c, |i| i.track_processes.clone());
    let tracked_mysql = |c: &Config| across(c, |i| i.track_mysql.clone());
    // Which instance has which virtual MAC interface.
    let vmacs = |c: &Config| {
        across(c, |i| {
            i.vmac_interface
                .iter()
                .map(|name| format!("{}={name}", i.name))
                .collect()
        })
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
        ("virtual_mac / vmac_interface", vmacs(old) != vmacs(new)),
    ]
    .into_iter()
    .find_map(|(key, differs)| differs.then_some(key))
}

/// SIGHUP: systemd hears RELOADING, the file is checked (or refused whole, and the running
/// configuration kept); a reload that adds an interface waits for its data plane off the loop
/// ([`on_loaded`]); otherwise it is applied at once, the engine's actions carried out, and
/// systemd hears READY.
pub(super) async fn on_sighup(
    path: &std::path::Path,
    config: &mut Config,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<TrackId, TrackInput>,
) {
    info!(file = %path.display(), "SIGHUP: reloading the configuration");
    if let Some(pending) = &mut shell.pending_reload {
        info!("a reload is still loading a data plane; the file is read again once it is done");
        pending.again = true;
        return;
    }
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
    }
    match prepare(path, config, shell) {
        Ok((new, None)) => {
            conclude_reload(Ok((new, Vec::new())), config, engine, shell, inputs).await
        }
        Ok((new, Some(rx))) => {
            info!("loading the data planes of the interfaces the file adds");
            shell.pending_reload = Some(PendingReload {
                config: new,
                loading: Some(rx),
                again: false,
            });
        }
        Err(err) => conclude_reload(Err(err), config, engine, shell, inputs).await,
    }
}

/// The data planes a pending reload waited for are loaded: it is applied. True when another
/// SIGHUP came meanwhile (the loop reloads again).
pub(super) async fn on_loaded(
    loaded: Option<Loaded>,
    config: &mut Config,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<TrackId, TrackInput>,
) -> bool {
    let Some(pending) = shell.pending_reload.take() else {
        return false;
    };
    let ready = match loaded {
        Some(loaded) => Ok((pending.config, loaded)),
        None => Err(anyhow::anyhow!("loading the data planes stopped")),
    };
    conclude_reload(ready, config, engine, shell, inputs).await;
    pending.again
}

/// Applies a checked configuration (or logs why it is refused), carries out the engine's
/// actions, and tells systemd the daemon is ready.
async fn conclude_reload(
    ready: anyhow::Result<(Config, Loaded)>,
    config: &mut Config,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<TrackId, TrackInput>,
) {
    let old_routes = shell.routes.clone();
    let result = match ready {
        Ok((new, loaded)) => finish(new, loaded, engine, shell, inputs).await,
        Err(e) => Err(e),
    };
    let reloaded = match result {
        Ok(new) => {
            *config = new;
            true
        }
        Err(err) => {
            for line in format!("{err:#}").lines() {
                tracing::error!("{line}");
            }
            tracing::error!("reload refused; the running configuration is kept");
            false
        }
    };
    shell.apply(engine).await;
    if reloaded {
        shell.rerouted(engine, old_routes);
        retire_ports(config, shell);
        if let Err(err) = socket_aliases(config) {
            warn!(error = %format!("{err:#}"), "cannot link the control socket for a new interface");
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

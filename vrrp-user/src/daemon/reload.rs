//! SIGHUP: the new file validated whole, then only what changed applied.

use super::*;

/// SIGHUP: validates the file and the engine's view of it whole, then applies what changed;
/// instances whose configuration is the same are not touched. Returns the new configuration.
pub(super) fn reload(
    path: &std::path::Path,
    old: &Config,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<String, TrackInput>,
) -> anyhow::Result<Config> {
    let new = crate::config::load(path)?;
    track::hide_from_scripts(new.secret_env());
    if let Some(key) = needs_restart(old, &new) {
        anyhow::bail!("{}: {key} changed, which needs a restart", path.display());
    }
    let port_of = |inst: &Instance| {
        shell
            .ports
            .values()
            .find(|p| p.site.iface == inst.interface)
    };
    let mut configs = new
        .instances
        .iter()
        .map(|inst| match port_of(inst) {
            Some(port) => port.site.engine_config(inst, &new),
            None => anyhow::bail!("instance {}: a new interface needs a restart", inst.name),
        })
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
        let Some(port) = shell.ports.get_mut(&index) else {
            continue;
        };
        let (c, mac) =
            port.site
                .publish(&mut port.dp, inst, &new, &mut port.stats_index, role::INIT)?;
        shell.macs.insert(key_of(&c), mac);
        shell.primaries.insert(key_of(&c), c.primary);
    }
    // What the new configuration has not (VIPs, VRIDs, unicast peers) leaves the data planes.
    for port in shell.ports.values_mut() {
        prune_maps(&mut port.dp, &new, &port.site.iface)?;
    }
    shell.place_vips(&new);
    let vips: HashSet<IpAddr> = shell.vips.keys().copied().collect();
    shell.keeper.retain(|a| vips.contains(a));
    shell.hooks.reconfigure(&new, &done.started);
    track::run_scripts_as(new.script_user.as_ref());
    info!(kept = ?done.kept, stopped = ?done.stopped, started = ?done.started, "configuration reloaded");
    Ok(new)
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
    let interfaces = |c: &Config| {
        sorted(
            c.instances
                .iter()
                .flat_map(|i| {
                    i.track_interfaces
                        .iter()
                        .map(|t| t.name.clone())
                        .chain(i.other_devs(&i.interface))
                })
                .collect(),
        )
    };
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
        (
            "the interfaces instances run on",
            sorted(old.interfaces()) != sorted(new.interfaces()),
        ),
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
        (
            "track_interfaces (or the interfaces VIPs and routes go on)",
            interfaces(old) != interfaces(new),
        ),
        ("virtual_mac / vmac_interface", vmacs(old) != vmacs(new)),
    ]
    .into_iter()
    .find_map(|(key, differs)| differs.then_some(key))
}

/// SIGHUP: systemd hears RELOADING, the file is reloaded (or refused whole, and the running
/// configuration kept), the engine's actions are carried out, and systemd hears READY.
pub(super) async fn on_sighup(
    path: &std::path::Path,
    config: &mut Config,
    engine: &mut Engine,
    shell: &mut Shell,
    inputs: &HashMap<String, TrackInput>,
) {
    info!(file = %path.display(), "SIGHUP: reloading the configuration");
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
    }
    let old_routes = shell.routes.clone();
    let reloaded = match reload(path, config, engine, shell, inputs) {
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
        shell.rerouted(engine, old_routes).await;
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

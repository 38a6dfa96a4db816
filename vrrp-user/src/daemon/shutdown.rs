//! Stopping: for a hitless restart (SIGUSR2), or for good (SIGTERM / SIGINT).

use super::*;

/// The most a stop waits for the netlink changes asked before it.
pub(super) const NETLINK_DRAIN: Duration = Duration::from_secs(5);

/// SIGUSR2: the next daemon takes over within the heartbeat limit, so nothing is released:
/// the data plane, the VIPs and the roles stay, and the resume marker says what the next one
/// needs (the tracks' last inputs, each master's advert, the write lease's own vote).
pub(super) fn leave_for_restart(
    shell: &mut Shell,
    engine: &Engine,
    config: &Config,
    track_inputs: &HashMap<TrackId, TrackInput>,
) -> anyhow::Result<()> {
    let marker = config.control_socket.with_extension("resume");
    let names: HashMap<u32, String> = shell
        .ports
        .iter()
        .map(|(index, p)| (*index, p.site.iface.clone()))
        .collect();
    let adverts = master_adverts(engine, &names);
    let contents = encode_resume(
        track_inputs,
        adverts,
        shell.resume_grant(),
        shell.master_vips(engine),
    );
    let ns = dataplane::monotonic_ns();
    for port in shell.ports.values_mut() {
        port.dp.heartbeat(ns)?;
        port.dp.leave_for_restart(&marker, &contents)?;
        info!(iface = %port.site.iface, "stopped; the next xvrrp resumes from {}", port.pin_dir.display());
    }
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

/// SIGTERM / SIGINT: fence, resign with priority 0 (RFC 5798 6.4.3), keep the VIPs until a
/// successor advertises, release the write lease, let the data plane go, then let the stop
/// notifications run to their end.
pub(super) async fn stop(
    mut shell: Shell,
    mut engine: Engine,
    config: &Config,
) -> anyhow::Result<()> {
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
        shell.await_successor(config, &deferred, resigned_ns).await;
    }
    // What the netlink task was asked before the stop is done first (a VIP added just before
    // must not come back after its removal below).
    shell.net.drain(NETLINK_DRAIN).await;
    for key in std::mem::take(&mut shell.deferred_routes) {
        shell.remove_routes_now(key).await;
    }
    if !deferred.is_empty() {
        for (key, dev, addr) in deferred {
            if let Err(err) = shell.addresses.remove(dev, addr).await {
                warn!(vrid = key.vrid, vip = %addr, error = %err, "cannot remove VIP");
            }
        }
    }
    release_lease(&shell, config).await;
    let requests = shell.request_totals();
    for inst in &config.instances {
        let key = shell.key_of(inst);
        let Some(dp) = shell.dp(key) else {
            continue;
        };
        let s = dp.vrid_stats(inst.family(), inst.vrid)?;
        let r = requests
            .get(&key.iface)
            .map(|totals| totals.of(inst.family(), inst.vrid))
            .unwrap_or_default();
        info!(
            iface = %inst.interface,
            vrid = inst.vrid,
            requests = r.requests(),
            answered = r.answered,
            dropped_not_master = r.dropped_not_master,
            dropped_stale_heartbeat = r.dropped_stale_heartbeat,
            adverts_valid = s.adverts_valid,
            foreign_owner = s.foreign_owner,
            "detaching"
        );
    }
    // The data plane lets go first; then the stop notifications run to the end (each bounded by
    // its timeout).
    for port in shell.ports.values() {
        restore_sysctls(&port.sysctls);
    }
    for name in shell.vmacs.keys() {
        if let Err(err) = shell.addresses.remove_link(name).await {
            warn!(vmac_interface = %name, error = %err, "cannot remove the virtual MAC's interface");
        }
    }
    let Shell { hooks, ports, .. } = shell;
    drop(ports);
    hooks.finish().await;
    remove_socket_aliases(config);
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
pub(super) async fn release_lease(shell: &Shell, config: &Config) {
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

//! The tasks that feed the engine's tracks (scripts, files, processes, MySQL probes) and the
//! MySQL side of the daemon (fencers, the write lease), spawned once at start.

use super::*;

/// What a daemon that resumes after a hitless restart carries over.
pub(super) struct Carried<'a> {
    pub(super) inputs: &'a HashMap<TrackId, TrackInput>,
    pub(super) lease: Option<ResumeGrant>,
    pub(super) resume: bool,
}

/// The spawned tasks (kept while the daemon runs) and the MySQL side.
pub(super) struct Trackers {
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) fencers: HashMap<String, Fencer>,
    pub(super) mysql_status: Vec<mysql::SharedStatus>,
    pub(super) lease: Option<crate::lease::task::LeaseHandle>,
}

/// Spawns a task for every tracked script, file, process set and MySQL target some instance
/// follows, the fencers of the fenced targets and the write lease; changes go to `track_tx`.
pub(super) fn spawn_trackers(
    config: &Config,
    resumed: Carried<'_>,
    tracked_processes: Vec<crate::config::TrackProcess>,
    metrics: &Metrics,
    track_tx: &tokio::sync::mpsc::UnboundedSender<(TrackId, TrackInput)>,
) -> anyhow::Result<Trackers> {
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = config
        .track_scripts
        .iter()
        .filter(|t| config.tracked(|i| &i.track_scripts, &t.name))
        .map(|t| {
            let up =
                resumed.inputs.get(&TrackId::Script(t.name.clone())) != Some(&TrackInput::Down);
            track::spawn(t.clone(), up, track_tx.clone())
        })
        .collect();
    tasks.extend(
        config
            .track_files
            .iter()
            .filter(|t| config.tracked(|i| &i.track_files, &t.name))
            .map(|t| track::spawn_file(t.clone(), track_tx.clone())),
    );
    // Tracked processes that some instance follows: one task reads /proc for all of them.
    tasks.push(process::spawn(tracked_processes, track_tx.clone()));
    // MySQL targets that some instance follows: probes as tracking input, fencers for write
    // fencing.
    let tracked_mysql: Vec<_> = config
        .mysql
        .iter()
        .filter(|t| config.tracked(|i| &i.track_mysql, &t.name))
        .collect();
    let mysql_status: Vec<mysql::SharedStatus> =
        tracked_mysql.iter().map(|t| mysql::new_status(t)).collect();
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
            let grant = resumed.lease.map(|g| crate::lease::voter::Grant {
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
                resume_grace: match (&config.write_lease, resumed.resume) {
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
    tasks.extend(tracked_mysql.iter().zip(&mysql_status).map(|(t, status)| {
        let latency = metrics.probe_latency(&t.name);
        let fencer = fencers.get(&t.name).cloned();
        mysql::spawn_probe(
            (*t).clone(),
            track_tx.clone(),
            status.clone(),
            latency,
            fencer,
        )
    }));
    Ok(Trackers {
        tasks,
        fencers,
        mysql_status,
        lease,
    })
}

/// The links a configuration watches (index -> name): the interfaces served, those tracked,
/// and those VIPs and routes go on. Each must exist.
pub(super) fn watched_links(config: &Config) -> anyhow::Result<HashMap<u32, String>> {
    let mut links = HashMap::new();
    for name in config
        .interfaces()
        .into_iter()
        .chain(config.instances.iter().flat_map(|i| {
            i.track_interfaces
                .iter()
                .map(|t| t.name.clone())
                .chain(i.other_devs(&i.interface))
        }))
    {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .with_context(|| format!("tracked interface {name}"))?;
        links.insert(index, name);
    }
    Ok(links)
}

/// Watches the link state of [`watched_links`] (netlink events); changes go to `track_tx`,
/// deleted addresses and routes and the end of the events to `host_tx`. The sender adds links
/// to watch.
pub(super) fn watch_links(
    config: &Config,
    track_tx: &tokio::sync::mpsc::UnboundedSender<(TrackId, TrackInput)>,
    host_tx: tokio::sync::mpsc::UnboundedSender<netlink::HostEvent>,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedSender<(u32, String)>> {
    netlink::watch_links(watched_links(config)?, track_tx.clone(), host_tx)
        .context("watching link state")
}

//! A hitless restart: the marker a daemon stopping with SIGUSR2 leaves (the tracks' last
//! inputs, each master's advert, the write lease's own vote), and the bridge that keeps the
//! heartbeat fresh and the adverts going while the next daemon loads.

use super::*;

/// Keeps the pinned heartbeat fresh while a resuming daemon loads and verifies its program, so
/// that the data plane never stops answering during a hitless restart, and sends the old
/// daemon's last advert of each master instance at its interval, so that no backup's
/// Master_Down timer runs out meanwhile (loading takes longer than 3 intervals of 100 ms).
pub(super) struct HeartbeatBridge {
    pub(super) stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(super) thread: std::thread::JoinHandle<()>,
}

impl HeartbeatBridge {
    pub(super) fn start(
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
                    // Only the deadline changes, made with the clock and limit the stopped
                    // daemon left beside it: the roles are the loading daemon's.
                    let mut value = hb.get(&0, 0).unwrap_or_default();
                    value.until = value
                        .clock
                        .deadline(dataplane::monotonic_ns(), value.limit_ns);
                    let _ = hb.set(0, value, 0);
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

    pub(super) fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// Advert sockets for the bridge, from the sources the adverts were sent from.
pub(super) fn bridge_sockets(iface: &str, adverts: &[ResumeAdvert]) -> Option<AdvertSockets> {
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

/// What a daemon stopping for a hitless restart leaves the next one in its marker: the last
/// input of every track, and the last advert of every master instance (the next daemon's
/// bridge sends them on while its program loads, so that backups hear no silence).
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct ResumeState {
    #[serde(default)]
    pub(super) tracks: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(super) adverts: Vec<ResumeAdvert>,
    /// The write lease's own vote as it stood: the next daemon's voter starts from it (no
    /// quiet period), so that a holder renews its lease at once.
    #[serde(default)]
    pub(super) lease: Option<ResumeGrant>,
    /// The boot the marker was written in (/proc/sys/kernel/random/boot_id).
    #[serde(default)]
    pub(super) boot_id: String,
    /// When it was written, CLOCK_MONOTONIC microseconds.
    #[serde(default)]
    pub(super) written_us: u64,
    /// The VIPs the masters had on their interfaces (address, interface index): the next
    /// daemon removes those its configuration no longer has.
    #[serde(default)]
    pub(super) vips: Vec<(IpAddr, u32)>,
}

/// What the marker at `marker` carries, when there is one beside a pinned link in `pin_dir`
/// and it may be resumed from ([`refuse_resume`]); a refused marker is removed, and logged.
pub(super) fn take_marker(
    marker: &std::path::Path,
    pin_dir: &std::path::Path,
    config: &Config,
) -> Option<Resumed> {
    if !marker.exists() || !pin_dir.join(dataplane::PINNED_LINK).exists() {
        return None;
    }
    let carried = std::fs::read(marker).unwrap_or_default();
    let refused = refuse_resume(
        &carried,
        pin_dir,
        (now().0, &boot_id()),
        marker_bound(config),
    );
    if let Some(why) = refused {
        warn!(marker = %marker.display(),
            "not resuming after a hitless restart: {why}; starting afresh");
        let _ = std::fs::remove_file(marker);
        return None;
    }
    Some(decode_resume(&carried))
}

/// The id of the running boot.
pub(super) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The longest a marker may wait for the next daemon: the slowest instance's Master_Down
/// interval (3 intervals and a skew of at most one), 1 s at least. A daemon that comes later
/// finds its peers have taken over, and must not claim master from the maps.
pub(super) fn marker_bound(config: &Config) -> Duration {
    let slowest_ms = config
        .instances
        .iter()
        .map(|i| u64::from(i.advert_interval_cs) * 10)
        .max()
        .unwrap_or(1000);
    Duration::from_millis((4 * slowest_ms).max(1000))
}

/// Why the marker `bytes`, found beside pinned maps in `pin_dir`, must not be resumed from
/// (the daemon then starts afresh), if it must not: written in another boot, older than
/// `bound`, or beside maps of another layout.
pub(super) fn refuse_resume(
    bytes: &[u8],
    pin_dir: &std::path::Path,
    (now_us, boot): (u64, &str),
    bound: Duration,
) -> Option<String> {
    let state: ResumeState = serde_json::from_slice(bytes).unwrap_or_default();
    if state.boot_id.is_empty() || state.boot_id != boot {
        return Some("the marker is from another boot (or from an older xvrrp)".to_owned());
    }
    let age = Duration::from_micros(now_us.saturating_sub(state.written_us));
    if age > bound {
        return Some(format!(
            "the marker is {} ms old, more than the {} ms a peer waits before it takes over",
            age.as_millis(),
            bound.as_millis()
        ));
    }
    dataplane::pinned_layout_differs(pin_dir)
        .map(|d| format!("the pinned maps are another version's ({d})"))
}

/// A vote carried over a hitless restart.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct ResumeGrant {
    pub(super) to: IpAddr,
    pub(super) priority: u8,
    pub(super) remaining_ms: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct ResumeAdvert {
    /// The interface it goes out on (empty in markers of daemons that served one).
    #[serde(default)]
    pub(super) iface: String,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) interval_ms: u64,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn encode_resume(
    inputs: &HashMap<TrackId, TrackInput>,
    adverts: Vec<ResumeAdvert>,
    lease: Option<ResumeGrant>,
    vips: Vec<(IpAddr, u32)>,
) -> Vec<u8> {
    let tracks = inputs
        .iter()
        .filter_map(|(name, input)| {
            let v = match input {
                TrackInput::Up => "up".to_owned(),
                TrackInput::Down => "down".to_owned(),
                TrackInput::Value(n) => n.to_string(),
            };
            Some((marker_key(name)?, v))
        })
        .collect();
    serde_json::to_vec(&ResumeState {
        tracks,
        adverts,
        lease,
        boot_id: boot_id(),
        written_us: now().0,
        vips,
    })
    .unwrap_or_default()
}

/// What every master instance advertises now, with its source and interval, for the marker.
pub(super) fn master_adverts(engine: &Engine, names: &HashMap<u32, String>) -> Vec<ResumeAdvert> {
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
                iface: names.get(&key.iface).cloned().unwrap_or_default(),
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
#[derive(Debug, Default, PartialEq)]
pub(super) struct Resumed {
    pub(super) inputs: HashMap<TrackId, TrackInput>,
    pub(super) adverts: Vec<ResumeAdvert>,
    pub(super) lease: Option<ResumeGrant>,
    pub(super) vips: Vec<(IpAddr, u32)>,
}

/// A track as the marker names it: its kind and its object's name. Holds (split brain, VIPs)
/// are not carried: they start afresh.
fn marker_key(id: &TrackId) -> Option<String> {
    Some(match id {
        TrackId::Script(n) => format!("script:{n}"),
        TrackId::File(n) => format!("file:{n}"),
        TrackId::Process(n) => format!("process:{n}"),
        TrackId::Mysql(n) => format!("mysql:{n}"),
        TrackId::Replication(n) => format!("replication:{n}"),
        TrackId::Link(n) => format!("link:{n}"),
        TrackId::WriteLease => "write_lease".to_owned(),
        TrackId::SplitBrain(_) | TrackId::VipsHeld(_) => return None,
    })
}

/// The tracks a marker key names: [`marker_key`]'s, and those of markers written by xvrrp
/// before tracks were typed (a plain name was a script's or a file's; replication was
/// `mysql:NAME:replication`; holds are not carried).
fn tracks_of(key: &str) -> Vec<TrackId> {
    let own = |n: &str| n.to_owned();
    match key.split_once(':') {
        Some(("script", n)) => vec![TrackId::Script(own(n))],
        Some(("file", n)) => vec![TrackId::File(own(n))],
        Some(("process", n)) => vec![TrackId::Process(own(n))],
        Some(("replication", n)) => vec![TrackId::Replication(own(n))],
        Some(("mysql", n)) => match n.strip_suffix(":replication") {
            Some(target) => vec![TrackId::Replication(own(target))],
            None => vec![TrackId::Mysql(own(n))],
        },
        Some(("link", n)) => vec![TrackId::Link(own(n))],
        Some(("split_brain" | "vips", _)) => Vec::new(),
        None if key == "write_lease" => vec![TrackId::WriteLease],
        _ => vec![TrackId::Script(own(key)), TrackId::File(own(key))],
    }
}

pub(super) fn decode_resume(bytes: &[u8]) -> Resumed {
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
            Some(tracks_of(&name).into_iter().map(move |id| (id, input)))
        })
        .flatten()
        .collect();
    Resumed {
        inputs,
        adverts: state.adverts,
        lease: state.lease,
        vips: state.vips,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_inputs_and_adverts_survive_the_resume_marker() {
        let inputs = HashMap::from([
            (TrackId::Mysql("db".into()), TrackInput::Up),
            (TrackId::Replication("db".into()), TrackInput::Down),
            (TrackId::Process("svc".into()), TrackInput::Down),
            (TrackId::File("prio".into()), TrackInput::Value(-42)),
            (TrackId::Script("prio".into()), TrackInput::Up),
            (TrackId::Link("eth0".into()), TrackInput::Up),
            (TrackId::WriteLease, TrackInput::Up),
        ]);
        let adverts = vec![ResumeAdvert {
            iface: "eth1".into(),
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
        let vips = vec![("192.0.2.100".parse().unwrap(), 7)];
        assert_eq!(
            decode_resume(&encode_resume(
                &inputs,
                adverts.clone(),
                lease,
                vips.clone()
            )),
            Resumed {
                inputs,
                adverts,
                lease,
                vips
            }
        );
        assert_eq!(
            decode_resume(b""),
            Resumed::default(),
            "an older daemon's empty marker"
        );
        let odd = decode_resume(b"{\"tracks\": {\"x\": \"sideways\"}}");
        assert!(odd.inputs.is_empty());
    }

    #[test]
    fn a_marker_of_an_xvrrp_before_typed_tracks_is_read_too() {
        let old = br#"{"tracks": {"mysql:db": "up", "mysql:db:replication": "down",
            "chk": "down", "split_brain:v4:51": "down", "write_lease": "up"}}"#;
        let inputs = decode_resume(old).inputs;
        assert_eq!(
            inputs.get(&TrackId::Mysql("db".into())),
            Some(&TrackInput::Up)
        );
        assert_eq!(
            inputs.get(&TrackId::Replication("db".into())),
            Some(&TrackInput::Down)
        );
        // A plain name was a script's or a file's: whichever exists takes it.
        assert_eq!(
            inputs.get(&TrackId::Script("chk".into())),
            Some(&TrackInput::Down)
        );
        assert_eq!(
            inputs.get(&TrackId::File("chk".into())),
            Some(&TrackInput::Down)
        );
        assert_eq!(inputs.get(&TrackId::WriteLease), Some(&TrackInput::Up));
        assert_eq!(inputs.len(), 5, "{inputs:?}");
    }

    #[test]
    fn a_marker_from_another_boot_or_too_old_is_not_resumed() {
        let bytes = encode_resume(&HashMap::new(), Vec::new(), None, Vec::new());
        let state: ResumeState = serde_json::from_slice(&bytes).unwrap();
        let boot = boot_id();
        assert!(!boot.is_empty());
        let bound = Duration::from_secs(1);
        let missing = std::path::Path::new("/nonexistent/xvrrp-test");
        let at = |us: u64| (state.written_us + us, boot.as_str());
        // Fresh and in this boot: only the (missing) maps are left to refuse it.
        let why = refuse_resume(&bytes, missing, at(500_000), bound).unwrap();
        assert!(why.contains("another version"), "{why}");
        let why = refuse_resume(&bytes, missing, at(1_500_000), bound).unwrap();
        assert!(why.contains("ms old"), "{why}");
        let why =
            refuse_resume(&bytes, missing, (state.written_us, "another-boot"), bound).unwrap();
        assert!(why.contains("another boot"), "{why}");
        let why = refuse_resume(b"", missing, at(0), bound).unwrap();
        assert!(why.contains("another boot"), "{why}");
    }
}

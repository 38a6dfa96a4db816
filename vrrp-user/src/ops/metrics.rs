//! The Prometheus endpoint (`[metrics] listen`): the daemon's status, the data plane's map
//! counters, state transitions by reason and MySQL probe latencies, in the OpenMetrics text
//! format, at `GET /metrics`.
//!
//! Most values are read from the status snapshot at each scrape (the maps and the engine keep
//! the counts; nothing is counted twice). Transitions and probe latencies are events, recorded
//! as they happen.

use std::{sync::atomic::Ordering, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::control::Status;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Probe round latency buckets: 100 µs to ~3.3 s, doubling.
fn probe_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The metrics of one daemon.
pub struct Metrics {
    registry: Registry,
    interface: String,
    // From the status snapshot, refilled at each scrape.
    state: Family<Labels, Gauge>,
    priority: Family<Labels, Gauge>,
    adverts_sent: Family<Labels, Counter>,
    adverts_received: Family<Labels, Counter>,
    became_master: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    answered: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    adverts_valid: Family<Labels, Counter>,
    adverts_dropped: Family<Labels, Counter>,
    foreign_owner: Family<Labels, Counter>,
    adverts_other_vrid: Family<Labels, Counter>,
    vips_readded: Family<Labels, Counter>,
    vip_add_failures: Family<Labels, Counter>,
    vips_absent: Family<Labels, Gauge>,
    interface_recreated: Family<Labels, Counter>,
    mysql_up: Family<Labels, Gauge>,
    mysql_read_only: Family<Labels, Gauge>,
    mysql_replication_healthy: Family<Labels, Gauge>,
    mysql_replication_lag: Family<Labels, Gauge>,
    mysql_probes: Family<Labels, Counter>,
    mysql_failures: Family<Labels, Counter>,
    mysql_reconnects: Family<Labels, Counter>,
    mysql_fenced: Family<Labels, Gauge>,
    mysql_peer_read_only: Family<Labels, Gauge>,
    lease_held: Family<Labels, Gauge>,
    lease_blocked: Family<Labels, Gauge>,
    // Events.
    transitions: Family<Labels, Counter>,
    probe_seconds: Histograms,
}

/// The numeric code of a state name, as `xvrrp_instance_state` gives it.
fn state_code(state: crate::engine::State) -> i64 {
    use crate::engine::State;
    match state {
        State::Initialize => 0,
        State::Backup => 1,
        State::Master => 2,
        State::Fault => 3,
    }
}

impl Metrics {
    pub fn new(interface: &str) -> Self {
        let mut registry = Registry::with_prefix("xvrrp");
        // A metric registered under `name`: a family of series unless another value is given.
        macro_rules! metric {
            ($name:literal, $help:literal) => {
                metric!($name, $help, Family::default())
            };
            ($name:literal, $help:literal, $value:expr) => {{
                let m = $value;
                registry.register($name, $help, m.clone());
                m
            }};
        }
        Self {
            interface: interface.to_owned(),
            state: metric!(
                "instance_state",
                "VRRP state: 0 init, 1 backup, 2 master, 3 fault"
            ),
            priority: metric!("instance_effective_priority", "Priority after tracking"),
            adverts_sent: metric!("adverts_sent", "Adverts sent"),
            adverts_received: metric!("adverts_received", "Adverts taken in by the election"),
            became_master: metric!("became_master", "Times this instance became master"),
            requests: metric!(
                "dataplane_requests",
                "ARP requests / neighbour solicitations for the VIPs seen by XDP"
            ),
            answered: metric!(
                "dataplane_answered",
                "ARP replies / neighbour advertisements sent by XDP"
            ),
            dropped: metric!(
                "dataplane_requests_dropped",
                "Requests for the VIPs not answered, by reason"
            ),
            adverts_valid: metric!(
                "dataplane_adverts_valid",
                "Adverts the XDP program validated"
            ),
            adverts_dropped: metric!(
                "dataplane_adverts_dropped",
                "Adverts the XDP program dropped, by reason"
            ),
            foreign_owner: metric!(
                "dataplane_foreign_owner",
                "ARP / ND traffic showing another MAC claiming a VIP"
            ),
            adverts_other_vrid: metric!(
                "dataplane_adverts_other_vrid",
                "Adverts for a VRID no instance here runs, passed on to the kernel"
            ),
            vips_readded: metric!(
                "vips_readded",
                "VIPs found deleted by someone else and added again"
            ),
            vip_add_failures: metric!(
                "vip_add_failures",
                "Attempts to add a VIP to the interface that failed"
            ),
            vips_absent: metric!(
                "vips_absent",
                "VIPs a master wants that are not on the interface now"
            ),
            interface_recreated: metric!(
                "interface_recreated",
                "Times the interface was deleted and created again (the daemon started afresh on it)"
            ),
            mysql_up: metric!(
                "mysql_up",
                "1 when the last probe round of the MySQL target succeeded"
            ),
            mysql_read_only: metric!("mysql_read_only", "@@global.read_only as last read"),
            mysql_fenced: metric!(
                "mysql_fenced",
                "1 while the fencer knows the server takes no writes (read_only read back, or not running); the state label says which fence state"
            ),
            mysql_peer_read_only: metric!(
                "mysql_peer_read_only",
                "The peer's server's read_only as last seen by this node's fencer"
            ),
            lease_held: metric!(
                "write_lease_held",
                "1 while this node holds the write lease (its fenced servers may be writable)"
            ),
            lease_blocked: metric!(
                "write_lease_blocked",
                "1 while this node yielded the write lease to a stronger holder (its fencing instances are in Fault)"
            ),
            mysql_replication_healthy: metric!(
                "mysql_replication_healthy",
                "1 when the replica status was healthy at the last round"
            ),
            mysql_replication_lag: metric!(
                "mysql_replication_lag_seconds",
                "Seconds_Behind_Master as last read"
            ),
            mysql_probes: metric!("mysql_probes", "Probe rounds"),
            mysql_failures: metric!("mysql_probe_failures", "Probe rounds that failed"),
            mysql_reconnects: metric!(
                "mysql_reconnects",
                "Probe connections opened after the first"
            ),
            transitions: metric!("transitions", "State changes, by new state and reason"),
            probe_seconds: metric!(
                "mysql_probe_duration_seconds",
                "Duration of a probe round (read_only, the optional query, replica status)",
                Histograms::new_with_constructor(probe_histogram)
            ),
            registry,
        }
    }

    fn instance(&self, interface: &str, name: &str, vrid: u8, family: &str) -> Labels {
        let interface = if interface.is_empty() {
            self.interface.clone()
        } else {
            interface.to_owned()
        };
        vec![
            ("interface", interface),
            ("instance", name.to_owned()),
            ("vrid", vrid.to_string()),
            ("family", family.to_owned()),
        ]
    }

    /// Counts a state change.
    pub fn transition(
        &self,
        interface: &str,
        name: &str,
        vrid: u8,
        family: &str,
        new: &str,
        reason: &str,
    ) {
        let mut labels = self.instance(interface, name, vrid, family);
        labels.push(("to", new.to_owned()));
        labels.push(("reason", reason.to_owned()));
        self.transitions.get_or_create(&labels).inc();
    }

    /// The histogram a MySQL target's probe records its round durations in.
    pub fn probe_latency(&self, target: &str) -> Histogram {
        self.probe_seconds
            .get_or_create_owned(&vec![("target", target.to_owned())])
    }

    /// The metrics text for this status.
    pub fn render(&self, status: &Status) -> String {
        for family in [
            &self.adverts_sent,
            &self.adverts_received,
            &self.became_master,
            &self.requests,
            &self.answered,
            &self.dropped,
            &self.adverts_valid,
            &self.adverts_dropped,
            &self.foreign_owner,
            &self.adverts_other_vrid,
            &self.vips_readded,
            &self.vip_add_failures,
            &self.interface_recreated,
            &self.mysql_probes,
            &self.mysql_failures,
            &self.mysql_reconnects,
        ] {
            family.clear();
        }
        for family in [
            &self.state,
            &self.priority,
            &self.vips_absent,
            &self.mysql_up,
            &self.mysql_read_only,
            &self.mysql_replication_healthy,
            &self.mysql_replication_lag,
            &self.mysql_fenced,
            &self.mysql_peer_read_only,
            &self.lease_held,
            &self.lease_blocked,
        ] {
            family.clear();
        }
        for i in &status.instances {
            self.render_instance(i);
        }
        set_counter(
            &self.interface_recreated,
            &vec![("interface", self.interface.clone())],
            status.interface_recreated,
        );
        for o in &status.other_vrids {
            let interface = if o.interface.is_empty() {
                self.interface.clone()
            } else {
                o.interface.clone()
            };
            let labels = vec![
                ("interface", interface),
                ("vrid", o.vrid.to_string()),
                ("family", o.family.clone()),
            ];
            set_counter(&self.adverts_other_vrid, &labels, o.adverts);
        }
        for m in &status.mysql {
            self.render_mysql(m);
        }
        if let Some(l) = &status.lease {
            let labels = vec![("node", l.node.clone()), ("peer", l.peer.clone())];
            self.lease_held
                .get_or_create(&labels)
                .set(i64::from(l.held));
            self.lease_blocked
                .get_or_create(&labels)
                .set(i64::from(l.blocked));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// One instance's series.
    fn render_instance(&self, i: &crate::control::InstanceStatus) {
        let set = set_counter;
        let labels = self.instance(&i.interface, &i.name, i.vrid, &i.family);
        self.state.get_or_create(&labels).set(state_code(i.state));
        self.priority
            .get_or_create(&labels)
            .set(i64::from(i.effective_priority));
        set(&self.adverts_sent, &labels, i.adverts_sent);
        set(&self.adverts_received, &labels, i.adverts_received);
        set(&self.became_master, &labels, i.became_master);
        let dp = &i.data_plane;
        set(&self.requests, &labels, dp.requests);
        set(&self.answered, &labels, dp.answered);
        set(&self.adverts_valid, &labels, dp.adverts_valid);
        set(&self.foreign_owner, &labels, dp.foreign_owner);
        let with = |reason: &str| {
            let mut l = labels.clone();
            l.push(("reason", reason.to_owned()));
            l
        };
        set(&self.dropped, &with("not_master"), dp.dropped_not_master);
        set(
            &self.dropped,
            &with("stale_heartbeat"),
            dp.dropped_stale_heartbeat,
        );
        set(&self.dropped, &with("vip_absent"), dp.passed_vip_absent);
        let u = &i.vip_upkeep;
        set(&self.vips_readded, &labels, u.readded);
        set(&self.vip_add_failures, &labels, u.add_failures);
        self.vips_absent
            .get_or_create(&labels)
            .set(u.absent.len() as i64);
        for (reason, n) in &dp.adverts_dropped_by_reason {
            set(&self.adverts_dropped, &with(reason), *n);
        }
    }

    /// One MySQL target's series.
    fn render_mysql(&self, m: &crate::control::MysqlStatus) {
        let set = set_counter;
        let labels = vec![("target", m.name.clone()), ("address", m.address.clone())];
        let flag = |b: bool| i64::from(b);
        if let Some(alive) = m.alive {
            self.mysql_up.get_or_create(&labels).set(flag(alive));
        }
        if let Some(ro) = m.read_only {
            self.mysql_read_only.get_or_create(&labels).set(flag(ro));
        }
        if let Some(r) = &m.replication {
            self.mysql_replication_healthy
                .get_or_create(&labels)
                .set(flag(r.healthy));
            if let Some(lag) = r.seconds_behind {
                self.mysql_replication_lag
                    .get_or_create(&labels)
                    .set(lag as i64);
            }
        }
        set(&self.mysql_probes, &labels, m.probes);
        set(&self.mysql_failures, &labels, m.failures);
        set(&self.mysql_reconnects, &labels, m.reconnects);
        if !m.fence.is_empty() {
            let state = m.fence.split(':').next().unwrap_or_default().to_owned();
            let mut l = labels.clone();
            l.push(("state", state.clone()));
            self.mysql_fenced
                .get_or_create(&l)
                .set(flag(state == "fenced" || state == "down"));
        }
        if let Some(ro) = m.peer_read_only {
            self.mysql_peer_read_only
                .get_or_create(&labels)
                .set(flag(ro));
        }
    }
}

/// Sets a counter series to a value read elsewhere (the engine's or the data plane's count).
fn set_counter(family: &Family<Labels, Counter>, labels: &Labels, value: u64) {
    family
        .get_or_create(labels)
        .inner()
        .store(value, Ordering::Relaxed);
}

/// At most this many metrics connections are served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A scrape within this long of the last one is served the same snapshot: the per-CPU maps are
/// walked at most once per this interval, however many clients ask.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(500);

/// The metrics endpoint's side of the event loop: the last rendered text and the connection
/// budget.
pub struct Endpoint {
    snapshot: Option<(std::time::Instant, std::sync::Arc<str>)>,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            snapshot: None,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl Endpoint {
    /// A connection slot, or None when [`MAX_CONNECTIONS`] are being served (the caller
    /// closes the connection).
    pub fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The snapshot, if younger than [`SNAPSHOT_MAX_AGE`].
    pub fn snapshot(&self) -> Option<std::sync::Arc<str>> {
        self.snapshot
            .as_ref()
            .filter(|(at, _)| at.elapsed() < SNAPSHOT_MAX_AGE)
            .map(|(_, body)| body.clone())
    }

    /// Keeps `body` as the snapshot and returns it.
    pub fn store(&mut self, body: String) -> std::sync::Arc<str> {
        let body: std::sync::Arc<str> = body.into();
        self.snapshot = Some((std::time::Instant::now(), body.clone()));
        body
    }

    /// Serves `stream` with `body` off the loop, holding `permit` until it is done.
    pub fn serve(
        stream: tokio::net::TcpStream,
        body: std::sync::Arc<str>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        tokio::spawn(async move {
            respond(stream, &body).await;
            drop(permit);
        });
    }
}

/// Answers one HTTP connection with `body` for `GET /metrics` (404 for any other path, 405 for
/// any other method). The request is read for at most 2 s and 8 KiB; a client that sends
/// nothing useful gets nothing.
pub async fn respond(mut stream: tokio::net::TcpStream, body: &str) {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), read).await,
        Ok(true)
    ) {
        return;
    }
    let line = request
        .split(|b| *b == b'\r')
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let mut words = line.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body.to_owned(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "xvrrp serves /metrics only\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{DataPlaneCounters, InstanceStatus, MysqlStatus, OtherVrid};

    #[test]
    fn an_instance_on_another_interface_is_labelled_and_shown_with_it() {
        let mut st = status(crate::engine::State::Master, 1);
        let mut inside = st.instances[0].clone();
        inside.name = "in".into();
        inside.interface = "eth1".into();
        inside.vrid = 10;
        st.instances.push(inside);
        st.other_vrids.push(OtherVrid {
            interface: "eth1".into(),
            vrid: 53,
            family: "ipv4".into(),
            adverts: 4,
        });
        let text = Metrics::new("eth0").render(&st);
        assert!(
            text.contains(r#"interface="eth1",instance="in",vrid="10",family="ipv4""#),
            "{text}"
        );
        assert!(
            text.contains(r#"interface="eth0",instance="db",vrid="51",family="ipv4""#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"xvrrp_dataplane_adverts_other_vrid_total{interface="eth1",vrid="53",family="ipv4"}"#
            ),
            "{text}"
        );
        let table = crate::control::table(&st);
        assert!(table.contains("on interface eth1\n"), "{table}");
        assert_eq!(table.matches("on interface").count(), 1, "{table}");
        assert!(
            table.contains(
                "heard, not configured here: ipv4 52 (10 adverts), ipv4 53 on eth1 (4 adverts)"
            ),
            "{table}"
        );
    }

    fn status(state: crate::engine::State, answered: u64) -> Status {
        Status {
            interface: "eth0".into(),
            instances: vec![InstanceStatus {
                name: "db".into(),
                interface: "eth0".into(),
                vrid: 51,
                family: "ipv4".into(),
                state,
                effective_priority: 150,
                advert_interval_ms: 100,
                master: None,
                vips: vec!["192.0.2.100/24".into()],
                adverts_sent: 7,
                adverts_received: 3,
                became_master: 1,
                address_mismatch: 0,
                vip_upkeep: Default::default(),
                data_plane: DataPlaneCounters {
                    answered,
                    adverts_dropped_by_reason: [("ttl".to_owned(), 2)].into(),
                    ..DataPlaneCounters::default()
                },
            }],
            mysql: vec![MysqlStatus {
                name: "local".into(),
                address: "127.0.0.1:3306".into(),
                alive: Some(true),
                read_only: Some(false),
                probes: 12,
                fence: "unfenced".into(),
                peer_read_only: Some(true),
                ..MysqlStatus::default()
            }],
            other_vrids: vec![OtherVrid {
                interface: "eth0".into(),
                vrid: 52,
                family: "ipv4".into(),
                adverts: answered * 10,
            }],
            lease: Some(crate::lease::task::LeaseStatus {
                node: "192.0.2.1:5405".into(),
                peer: "192.0.2.2:5405".into(),
                held: true,
                ..Default::default()
            }),
            interface_recreated: 0,
        }
    }

    fn value(text: &str, prefix: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    }

    #[test]
    fn renders_the_snapshot_and_the_events() {
        let m = Metrics::new("eth0");
        m.transition("eth0", "db", 51, "ipv4", "master", "master_down");
        m.probe_latency("local").observe(0.0004);
        let text = m.render(&status(crate::engine::State::Master, 5));
        let inst = r#"{interface="eth0",instance="db",vrid="51",family="ipv4"}"#;
        assert_eq!(
            value(&text, &format!("xvrrp_instance_state{inst}")).as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&text, &format!("xvrrp_dataplane_answered_total{inst}")).as_deref(),
            Some("5")
        );
        assert!(text.contains(r#"reason="ttl"} 2"#), "{text}");
        assert!(
            text.contains(r#"to="master",reason="master_down"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"xvrrp_mysql_probe_duration_seconds_count{target="local"} 1"#),
            "{text}"
        );
        assert_eq!(
            value(&text, "xvrrp_mysql_probes_total{").as_deref(),
            Some("12")
        );
        let other =
            r#"xvrrp_dataplane_adverts_other_vrid_total{interface="eth0",vrid="52",family="ipv4"}"#;
        assert_eq!(value(&text, other).as_deref(), Some("50"), "{text}");
        assert_eq!(
            value(
                &text,
                "xvrrp_mysql_fenced{target=\"local\",address=\"127.0.0.1:3306\",state=\"unfenced\"}"
            )
            .as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            value(&text, "xvrrp_mysql_peer_read_only{").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "xvrrp_write_lease_held{").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "xvrrp_write_lease_blocked{").as_deref(),
            Some("0")
        );
        // The next scrape sees the new snapshot.
        let text = m.render(&status(crate::engine::State::Backup, 9));
        assert_eq!(
            value(&text, &format!("xvrrp_instance_state{inst}")).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, &format!("xvrrp_dataplane_answered_total{inst}")).as_deref(),
            Some("9")
        );
        assert_eq!(value(&text, other).as_deref(), Some("90"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}

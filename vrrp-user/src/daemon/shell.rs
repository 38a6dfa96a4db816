//! What the event loop owns besides the engine, and the executor of the engine's actions:
//! adverts out, roles and VIPs to the data plane and the interface, fences, announcements,
//! hooks; status and the split-brain and write-lease glue.

use super::*;

/// What the loop owns besides the engine.
pub(super) struct Shell {
    pub(super) hooks: Hooks,
    /// The interfaces served, by index.
    pub(super) ports: BTreeMap<u32, Port>,
    pub(super) addresses: Addresses,
    /// The netlink task's queue: VIP, route and virtual-MAC changes run there.
    pub(super) net: NetQueue,
    /// Whether VIPs are added to and removed from interfaces.
    pub(super) configure_vips: bool,
    pub(super) announcer: Announcer,
    /// Each VIP (prefix, label) and the index of the interface it goes on.
    pub(super) vips: HashMap<IpAddr, (Vip, u32)>,
    /// The instance each VIP belongs to.
    pub(super) vip_keys: HashMap<IpAddr, InstanceKey>,
    /// Each instance's routes, added while it is master.
    pub(super) routes: HashMap<InstanceKey, Vec<crate::config::Route>>,
    /// Instances whose routes failed, and when they are tried again.
    pub(super) route_retry: HashMap<InstanceKey, Time>,
    /// The macvlans of virtual MACs: name, index.
    pub(super) vmacs: HashMap<String, u32>,
    /// The IPv4 identification of the last advert sent from a virtual MAC.
    pub(super) advert_id: u16,
    /// The fencer of each fenced MySQL target, by name.
    pub(super) fencers: HashMap<String, Fencer>,
    /// The MySQL targets each instance fences.
    pub(super) fences: HashMap<InstanceKey, Vec<Fencer>>,
    /// Whether each fenced target (by name) was last told to be writable.
    pub(super) writable: HashMap<String, bool>,
    /// What each MySQL probe last found.
    pub(super) mysql_status: Vec<mysql::SharedStatus>,
    /// The MAC each instance answers and announces from.
    pub(super) macs: HashMap<InstanceKey, [u8; 6]>,
    /// The liveness time last fed to the engine, per instance.
    pub(super) last_heard: HashMap<InstanceKey, u64>,
    pub(super) metrics: Metrics,
    /// While stopping: VIPs to remove once a successor advertises (instance, device, address).
    pub(super) deferred: Option<Vec<(InstanceKey, u32, IpAddr)>>,
    /// While stopping: the instances whose routes go with them.
    pub(super) deferred_routes: Vec<InstanceKey>,
    /// The write lease, when configured.
    pub(super) lease: Option<crate::lease::task::LeaseHandle>,
    /// Who sent the adverts heard, by instance and MAC: (priority, address).
    pub(super) advertisers: HashMap<(InstanceKey, [u8; 6]), (u8, IpAddr)>,
    /// Each instance's primary address (its claim's tie-breaker).
    pub(super) primaries: HashMap<InstanceKey, IpAddr>,
    /// Claims on our VIPs by other hosts, judged after a grace.
    pub(super) split: crate::split::SplitBrain,
    /// Whether the VIPs masters want are on their interfaces (with `configure_vips`).
    pub(super) keeper: VipKeeper,
    /// After a hitless restart: the VIPs the previous daemon's masters had on their
    /// interfaces (its marker). A resumed master counts them present at once (they are added
    /// again all the same), so that its servers are not fenced while the add runs.
    pub(super) resumed_vips: HashSet<IpAddr>,
    /// The metrics endpoint's snapshot and connection budget.
    pub(super) endpoint: metrics::Endpoint,
    /// Each sync group: its members, and the state the group as a whole was last in.
    pub(super) groups: Vec<(String, Vec<String>, Option<State>)>,
    /// Adds links to the link watcher.
    pub(super) links: tokio::sync::mpsc::UnboundedSender<(u32, String)>,
    /// The kernel-side log level data planes are loaded with.
    pub(super) kernel_log: KernelLogLevel,
    /// A reload added or removed ports: the loop polls their rings and logs.
    pub(super) ports_changed: bool,
    /// A reload waiting for the data planes of the interfaces it adds.
    pub(super) pending_reload: Option<PendingReload>,
    /// Sends steady masters' adverts (and the heartbeat meanwhile) off the loop.
    pub(super) pacer: super::pacer::Pacer,
    /// The heartbeat clock of each port the pacer's beats were made with.
    pub(super) beat_clocks: Vec<(u32, vrrp_common::jiffies::JiffyClock)>,
}

/// What a shell is built from at startup.
pub(super) struct ShellParts {
    pub(super) hooks: Hooks,
    pub(super) ports: BTreeMap<u32, Port>,
    pub(super) addresses: Addresses,
    pub(super) net: NetQueue,
    pub(super) configure_vips: bool,
    pub(super) announcer: Announcer,
    pub(super) vmacs: HashMap<String, u32>,
    pub(super) fencers: HashMap<String, Fencer>,
    pub(super) mysql_status: Vec<mysql::SharedStatus>,
    pub(super) macs: HashMap<InstanceKey, [u8; 6]>,
    pub(super) metrics: Metrics,
    pub(super) lease: Option<crate::lease::task::LeaseHandle>,
    pub(super) primaries: HashMap<InstanceKey, IpAddr>,
    pub(super) links: tokio::sync::mpsc::UnboundedSender<(u32, String)>,
    pub(super) kernel_log: KernelLogLevel,
    pub(super) heartbeat_limit: Duration,
}

impl Shell {
    /// A shell with nothing placed, fenced, heard or held down yet.
    pub(super) fn new(p: ShellParts) -> Self {
        Self {
            hooks: p.hooks,
            ports: p.ports,
            addresses: p.addresses,
            net: p.net,
            configure_vips: p.configure_vips,
            announcer: p.announcer,
            vips: HashMap::new(),
            vip_keys: HashMap::new(),
            routes: HashMap::new(),
            route_retry: HashMap::new(),
            vmacs: p.vmacs,
            advert_id: 0,
            fencers: p.fencers,
            fences: HashMap::new(),
            writable: HashMap::new(),
            mysql_status: p.mysql_status,
            macs: p.macs,
            last_heard: HashMap::new(),
            metrics: p.metrics,
            deferred: None,
            deferred_routes: Vec::new(),
            lease: p.lease,
            advertisers: HashMap::new(),
            primaries: p.primaries,
            split: crate::split::SplitBrain::default(),
            keeper: VipKeeper::default(),
            resumed_vips: HashSet::new(),
            endpoint: metrics::Endpoint::default(),
            groups: Vec::new(),
            links: p.links,
            kernel_log: p.kernel_log,
            ports_changed: false,
            pending_reload: None,
            pacer: super::pacer::Pacer::new(
                p.heartbeat_limit / 2,
                super::pacer::STALE,
                &super::pacer::RUNTIME,
            ),
            beat_clocks: Vec::new(),
        }
    }
}

impl Shell {
    /// The index of the served interface `name` (0 if it is not served).
    pub(super) fn index_of(&self, name: &str) -> u32 {
        self.ports
            .iter()
            .find(|(_, p)| p.site.iface == name)
            .map_or(0, |(index, _)| *index)
    }

    /// The engine's key of a configured instance.
    pub(super) fn key_of(&self, inst: &Instance) -> InstanceKey {
        instance_key(inst, self.index_of(&inst.interface))
    }

    /// The data plane instance `key` runs on.
    pub(super) fn dp(&self, key: InstanceKey) -> Option<&DataPlane> {
        self.ports.get(&key.iface).map(|p| &p.dp)
    }

    /// [`Shell::dp`], to write to.
    fn dp_mut(&mut self, key: InstanceKey) -> Option<&mut DataPlane> {
        self.ports.get_mut(&key.iface).map(|p| &mut p.dp)
    }

    /// The name of the interface of index `index` served here.
    pub(super) fn iface_name(&self, index: u32) -> &str {
        self.ports.get(&index).map_or("", |p| p.site.iface.as_str())
    }

    /// Where each VIP of `config` goes (its instance's macvlan, or the interface), and which
    /// MySQL servers each instance fences.
    pub(super) fn place_vips(&mut self, config: &Config) {
        self.fences = config
            .instances
            .iter()
            .map(|inst| {
                let key = self.key_of(inst);
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
                let key = self.key_of(inst);
                inst.all_vips().map(move |v| (v.addr, key))
            })
            .collect();
        self.vips = config
            .instances
            .iter()
            .flat_map(|inst| {
                let own = inst
                    .vmac_interface
                    .as_ref()
                    .and_then(|name| self.vmacs.get(name).copied())
                    .unwrap_or_else(|| self.index_of(&inst.interface));
                // A VIP on another interface: its index now (0 if it is missing: looked up
                // again at each add).
                inst.all_vips().map(move |v| {
                    let dev = match &v.dev {
                        Some(name) => nix::net::if_::if_nametoindex(name.as_str()).unwrap_or(0),
                        None => own,
                    };
                    (v.addr, (v.clone(), dev))
                })
            })
            .collect();
        self.routes = config
            .instances
            .iter()
            .filter(|inst| !inst.routes.is_empty())
            .map(|inst| (self.key_of(inst), inst.routes.clone()))
            .collect();
    }

    /// Feeds an advert the data plane saw at `at_ns`, unless already fed.
    pub(super) fn feed(&mut self, engine: &mut Engine, key: InstanceKey, heard: Heard, at_ns: u64) {
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
    pub(super) fn refresh_liveness(&mut self, engine: &mut Engine) {
        for key in engine.keys() {
            let Some(Ok(live)) = self.dp(key).map(|dp| dp.liveness(key.family, key.vrid)) else {
                continue;
            };
            if live.last_seen_ns == 0 {
                continue;
            }
            let heard = Heard {
                src: map_addr(key.family, live.src),
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
    pub(super) async fn await_successor(
        &self,
        config: &Config,
        deferred: &[(InstanceKey, u32, IpAddr)],
        resigned_ns: u64,
    ) {
        let mut keys: Vec<InstanceKey> = deferred.iter().map(|(k, _, _)| *k).collect();
        keys.dedup();
        let interval_ms = keys
            .iter()
            .filter_map(|k| config.instances.iter().find(|i| self.key_of(i) == *k))
            .map(|i| u64::from(i.advert_interval_cs) * 10)
            .max()
            .unwrap_or(1000);
        let grace = Duration::from_millis((3 * interval_ms).clamp(20, 3000));
        let started = Instant::now();
        let succeeded = |key: &InstanceKey| {
            self.dp(*key).is_some_and(|dp| {
                dp.liveness(key.family, key.vrid)
                    .is_ok_and(|l| l.last_seen_ns >= resigned_ns && l.priority > 0)
            })
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

    /// What the data plane's ring buffer said: adverts to the engine (and who sent them, by
    /// MAC), claims on our VIPs to the split-brain judge (after a grace of one and a half
    /// advert intervals).
    pub(super) fn on_events(&mut self, engine: &mut Engine, seen: Vec<DpEvent>) {
        for e in seen {
            match e {
                DpEvent::Heard(key, h, at_ns, mac) => {
                    self.advertisers.insert((key, mac), (h.priority, h.src));
                    self.feed(engine, key, h, at_ns);
                }
                DpEvent::Claim(key, mac) => {
                    let grace = engine
                        .advert_interval_cs(key)
                        .map_or(1_500_000, |cs| u64::from(cs) * 15_000)
                        .max(20_000);
                    self.split.observe(now(), key, mac, grace);
                }
            }
        }
    }

    /// A timer is due: adverts heard since the last look may move it, then the engine's
    /// timers and the split-brain judge run.
    pub(super) fn on_timer(
        &mut self,
        engine: &mut Engine,
        inputs: &mut HashMap<TrackId, TrackInput>,
    ) {
        self.refresh_liveness(engine);
        let t = now();
        if engine.poll_timeout().is_some_and(|d| d <= t) {
            engine.handle_timeout(t);
        }
        self.judge_claims(engine, t, inputs);
    }

    /// Answers a control-socket connection with the status as JSON (at most 2 s).
    pub(super) async fn answer_status(
        &self,
        mut stream: tokio::net::UnixStream,
        engine: &Engine,
        config: &Config,
    ) {
        let text = serde_json::to_string(&self.status(engine, config)).unwrap_or_default();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncWriteExt::write_all(&mut stream, text.as_bytes()),
        )
        .await;
    }

    /// Answers a metrics connection off the loop, from a snapshot at most
    /// [`metrics::SNAPSHOT_MAX_AGE`] old (the maps are walked at most that often, however many
    /// ask), within a connection budget (more are closed at once).
    pub(super) fn answer_metrics(
        &mut self,
        stream: tokio::net::TcpStream,
        engine: &Engine,
        config: &Config,
    ) {
        let Some(permit) = self.endpoint.permit() else {
            return;
        };
        let body = match self.endpoint.snapshot() {
            Some(body) => body,
            None => {
                let text = self.metrics.render(&self.status(engine, config));
                self.endpoint.store(text)
            }
        };
        metrics::Endpoint::serve(stream, body, permit);
    }

    /// Each port's request counters by VRID (requests are counted per VIP: summed once per
    /// port, not once per instance), by interface index.
    pub(super) fn request_totals(&self) -> HashMap<u32, dataplane::RequestTotals> {
        self.ports
            .iter()
            .filter_map(|(iface, port)| Some((*iface, port.dp.request_stats().ok()?)))
            .collect()
    }

    /// The status `xvrrp status` shows.
    pub(super) fn status(&self, engine: &Engine, config: &Config) -> control::Status {
        let t = now();
        let requests = self.request_totals();
        let instances: Vec<_> = engine
            .status()
            .into_iter()
            .map(|st| {
                let dp = self
                    .dp(st.key)
                    .and_then(|dp| dp.vrid_stats(st.key.family, st.key.vrid).ok())
                    .unwrap_or_default();
                let req = requests
                    .get(&st.key.iface)
                    .map(|totals| totals.of(st.key.family, st.key.vrid))
                    .unwrap_or_default();
                let vips = config
                    .instances
                    .iter()
                    .find(|i| i.name == st.name)
                    .map(|i| {
                        i.vips
                            .iter()
                            .map(ToString::to_string)
                            .chain(i.vips_excluded.iter().map(|v| format!("{v} (excluded)")))
                            .collect()
                    })
                    .unwrap_or_default();
                control::InstanceStatus {
                    name: st.name.clone(),
                    interface: self.iface_name(st.key.iface).to_owned(),
                    vrid: st.key.vrid,
                    family: st.key.family.name().into(),
                    state: st.state,
                    effective_priority: st.effective_priority,
                    advert_interval_ms: u32::from(st.master_adver_interval_cs) * 10,
                    master: st.master.map(|m| control::MasterStatus {
                        address: m.addr.to_string(),
                        priority: m.priority,
                        advert_interval_ms: u32::from(m.interval_cs) * 10,
                        seen_ms_ago: t.since(m.at) / 1_000,
                    }),
                    vips,
                    // Those the pacer sent so far are the engine's once it takes them back.
                    adverts_sent: st.counters.adverts_sent + self.pacer.sent(st.key),
                    adverts_received: st.counters.adverts_received,
                    became_master: st.counters.became_master,
                    address_mismatch: st.counters.address_mismatch,
                    vip_upkeep: {
                        let c = self.keeper.counts(st.key);
                        control::VipUpkeep {
                            absent: self
                                .keeper
                                .absent(st.key)
                                .iter()
                                .map(ToString::to_string)
                                .collect(),
                            readded: c.readded,
                            add_failures: c.add_failures,
                            held_out: c.held_out,
                        }
                    },
                    data_plane: control::DataPlaneCounters {
                        requests: req.requests(),
                        answered: req.answered,
                        dropped_not_master: req.dropped_not_master,
                        dropped_stale_heartbeat: req.dropped_stale_heartbeat,
                        passed_vip_absent: req.passed_absent,
                        adverts_valid: dp.adverts_valid,
                        adverts_dropped: dp.adverts_drop_ttl
                            + dp.adverts_drop_version
                            + dp.adverts_drop_length
                            + dp.adverts_drop_checksum
                            + dp.adverts_drop_peer
                            + dp.adverts_drop_auth
                            + dp.adverts_drop_addresses,
                        adverts_dropped_by_reason: [
                            ("ttl", dp.adverts_drop_ttl),
                            ("version", dp.adverts_drop_version),
                            ("length", dp.adverts_drop_length),
                            ("checksum", dp.adverts_drop_checksum),
                            ("peer", dp.adverts_drop_peer),
                            ("auth", dp.adverts_drop_auth),
                            ("addresses", dp.adverts_drop_addresses),
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
            interface_recreated: interface_recreated(),
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
    pub(super) fn other_vrids(
        &self,
        instances: &[control::InstanceStatus],
    ) -> Vec<control::OtherVrid> {
        let ours: HashSet<(&str, &str, u8)> = instances
            .iter()
            .map(|i| (i.interface.as_str(), i.family.as_str(), i.vrid))
            .collect();
        let mut others = Vec::new();
        for port in self.ports.values() {
            let iface = port.site.iface.as_str();
            for (family, vrid) in [Family::V4, Family::V6]
                .into_iter()
                .flat_map(|family| (0..=u8::MAX).map(move |vrid| (family, vrid)))
                .filter(|(family, vrid)| !ours.contains(&(iface, family.name(), *vrid)))
            {
                let Ok(stats) = port.dp.vrid_stats(family, vrid) else {
                    continue;
                };
                if stats.adverts_other_vrid > 0 {
                    others.push(control::OtherVrid {
                        interface: iface.to_owned(),
                        vrid,
                        family: family.name().into(),
                        adverts: stats.adverts_other_vrid,
                    });
                }
            }
        }
        others
    }

    /// Asks the fencers of the MySQL servers `key` fences to set read_only, without waiting:
    /// adverts and the heartbeat go on while a fence waits (the write lease, when configured,
    /// keeps the peer from enabling writes until the fence reads back).
    pub(super) fn fence(&mut self, key: InstanceKey) {
        for fencer in self.fences.get(&key).into_iter().flatten() {
            fencer.request_fence();
            self.writable.insert(fencer.name().to_owned(), false);
        }
    }

    /// After the actions: a server is writable only while every instance that fences it is
    /// master (IPv4 and IPv6 instances, or a sync group, tracking one server), and then only
    /// once those instances own their VIPs and the data plane answers for them (the actions
    /// just carried out). Each change goes to the fencer once.
    pub(super) fn reconcile_fences(&mut self, engine: &Engine) {
        let masters: HashSet<InstanceKey> = engine.masters().map(|(key, _)| key).collect();
        for (name, fencer) in &self.fencers {
            let mut keys = self
                .fences
                .iter()
                .filter(|(_, fs)| fs.iter().any(|f| f.name() == name))
                .map(|(key, _)| key)
                .peekable();
            // With configure_vips, also only while every VIP of those instances is on its
            // interface (crate::keeper).
            let writable = keys.peek().is_some()
                && keys.all(|key| {
                    masters.contains(key) && (!self.configure_vips || self.keeper.all_present(*key))
                });
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
    pub(super) async fn fence_all(&self) {
        for fencer in self.fencers.values() {
            fencer.fence().await;
        }
    }

    /// Carries out the engine's actions, in order.
    pub(super) async fn apply(&mut self, engine: &mut Engine) {
        // Every line about an instance names it, its VRID and its state (made only for a line:
        // an advert sent on every wake-up of the loop costs no allocation).
        let who = |engine: &Engine, key| {
            engine
                .name_and_state(key)
                .map(|(n, s)| (n.to_owned(), s.to_string()))
                .unwrap_or_default()
        };
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Send {
                    key,
                    src,
                    dst,
                    bytes,
                } => {
                    if let Err(err) = self.send_advert(key, src, dst, &bytes) {
                        let (instance, state) = who(engine, key);
                        warn!(vrid = key.vrid, %instance, %state, %dst, error = %err, "cannot send advert");
                    }
                }
                Action::DataPlane { key, role } => {
                    let set = match self.dp_mut(key) {
                        Some(dp) => dp
                            .set_role(key.family, key.vrid, role)
                            .map_err(|e| dataplane::error_chain(&e)),
                        None => Err("no data plane on its interface".to_owned()),
                    };
                    if let Err(err) = set {
                        let (instance, state) = who(engine, key);
                        warn!(vrid = key.vrid, %instance, %state, error = %err, "cannot publish the role");
                    }
                }
                // The netlink calls run in the netlink task, in this order (crate::daemon::netops):
                // the results come back as inputs.
                Action::AddVips { key, vips, .. } if self.configure_vips => {
                    self.set_vmac_up(key, &vips, true);
                    for addr in vips {
                        let generation = self.keeper.want(key, addr);
                        if self.resumed_vips.remove(&addr) {
                            self.keeper.added(addr, generation);
                        }
                        self.add_vip(engine, key, addr, generation, false);
                    }
                    self.add_routes(key);
                }
                Action::RemoveVips { key, vips, .. } if self.configure_vips => {
                    self.fence(key);
                    // Routes go first (one may use a VIP as its source); on a stop, with the
                    // VIPs once a successor advertises.
                    self.remove_or_defer_routes(key);
                    for &addr in &vips {
                        self.keeper.unwant(addr);
                        let dev = self.vips.get(&addr).map_or(key.iface, |(_, dev)| *dev);
                        if let Some(deferred) = &mut self.deferred {
                            deferred.push((key, dev, addr));
                            continue;
                        }
                        self.net.push(NetOp::RemoveVip { key, dev, addr });
                    }
                    if self.deferred.is_none() {
                        self.set_vmac_up(key, &vips, false);
                    }
                }
                // Without configure_vips the macvlan still carries the virtual MAC: the NIC
                // takes frames to it only while it is up.
                Action::RemoveVips { key, vips, .. } => {
                    self.fence(key);
                    self.remove_or_defer_routes(key);
                    self.set_vmac_up(key, &vips, false);
                }
                Action::AddVips { key, vips, .. } => {
                    self.set_vmac_up(key, &vips, true);
                    self.add_routes(key);
                }
                Action::Announce { key, addr } => self.announce_one(key, addr),
                Action::Unpace { key } => {
                    if let Some(sent) = self.pacer.remove(key) {
                        engine.count_paced(key, sent);
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
                    let family = key.family.name();
                    let new = new.to_string();
                    let iface = self.iface_name(key.iface).to_owned();
                    self.metrics
                        .transition(&iface, &name, key.vrid, family, &new, reason.kind());
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
        self.notify_groups(engine);
        self.pace(engine);
    }

    /// Hands the periodic adverts of steady masters to the pacer (those sent from a virtual
    /// MAC stay the loop's: each such frame carries a fresh IP ID).
    fn pace(&mut self, engine: &mut Engine) {
        let can = |key: InstanceKey| {
            self.ports.contains_key(&key.iface) && self.macs.get(&key) != Some(&virtual_mac(key))
        };
        let paced = engine.take_paced(can);
        if paced.is_empty() {
            return;
        }
        let (t, at) = (now(), Instant::now());
        for p in paced {
            let entry = super::pacer::Entry {
                key: p.key,
                wire: self.ports[&p.key.iface].sockets.clone(),
                adverts: p.adverts,
                every: Duration::from_micros(p.every_us),
                next: at + Duration::from_micros(p.next.since(t)),
            };
            if let Err(err) = self.pacer.add(entry) {
                warn!(error = %err, "cannot start the pacer thread: the loop sends the adverts");
                engine.unpace(p.key, now(), 0);
            }
        }
        self.sync_beats();
    }

    /// Gives the pacer a heartbeat writer per port when the ports or their clocks differ from
    /// those its writers were made with (none after a stop of the pacer).
    pub(super) fn sync_beats(&mut self) {
        if !self.pacer.is_active() {
            return;
        }
        let clocks: Vec<_> = self
            .ports
            .iter()
            .map(|(i, p)| (*i, p.dp.jiffy_clock()))
            .collect();
        if clocks == self.beat_clocks {
            return;
        }
        let beats = self
            .ports
            .values()
            .map(|p| {
                let beater = p.dp.beater();
                Box::new(move |ns| beater.beat(ns)) as super::pacer::Beat
            })
            .collect();
        self.pacer.set_beats(beats);
        self.beat_clocks = clocks;
    }

    /// When the loop must wake to check a port's heartbeat clock (the heartbeat it writes
    /// checks it), at most [`vrrp_common::jiffies::CHECK_MAX_NS`] from now.
    pub(super) fn next_clock_check(&self) -> Instant {
        let now_ns = dataplane::monotonic_ns();
        let due = self
            .ports
            .values()
            .map(|p| p.dp.next_clock_check_ns())
            .min()
            .unwrap_or(u64::MAX);
        let wait = due
            .saturating_sub(now_ns)
            .clamp(1_000_000, vrrp_common::jiffies::CHECK_MAX_NS);
        Instant::now() + Duration::from_nanos(wait)
    }

    /// Stops the pacer: the engine sends the adverts again (counting the pacer's).
    pub(super) fn stop_pacer(&mut self, engine: &mut Engine) {
        let t = now();
        for (key, sent) in self.pacer.stop() {
            engine.unpace(key, t, sent);
        }
        self.beat_clocks.clear();
    }

    /// Runs a sync group's notify scripts when the group as a whole changed state: a member in
    /// Fault makes it faulty; all members master, backup (or stopped) make it so; a mix on
    /// the way from one to the other changes nothing.
    fn notify_groups(&mut self, engine: &Engine) {
        for (name, members, last) in &mut self.groups {
            let states: Vec<State> = members.iter().filter_map(|m| engine.state_of(m)).collect();
            let all = |s: State| !states.is_empty() && states.iter().all(|x| *x == s);
            let now = if states.contains(&State::Fault) {
                State::Fault
            } else if all(State::Master) {
                State::Master
            } else if all(State::Backup) {
                State::Backup
            } else if all(State::Initialize) {
                State::Initialize
            } else {
                continue;
            };
            // A group that never ran has nothing to stop.
            if *last != Some(now) && !(last.is_none() && now == State::Initialize) {
                info!(group = %name, state = %now, "sync group changed state");
                self.hooks.group_changed(name, &now.to_string());
                *last = Some(now);
            }
        }
    }

    /// Sends an advert: from the instance's virtual MAC when it has one and the advert goes to
    /// the multicast group (RFC 5798 section 7.3, which keeps switches learning the virtual
    /// MAC on the master's port), through the advert sockets otherwise.
    fn send_advert(
        &mut self,
        key: InstanceKey,
        src: IpAddr,
        dst: IpAddr,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let vmac = virtual_mac(key);
        if self.macs.get(&key) == Some(&vmac) {
            self.advert_id = self.advert_id.wrapping_add(1);
            if let Some(frame) = crate::wire::advert_frame(vmac, src, dst, bytes, self.advert_id) {
                return self.announcer.send_frame_on(key.iface, &frame);
            }
        }
        match self.ports.get(&key.iface) {
            Some(port) => port.sockets.send(dst, bytes),
            None => Err(std::io::Error::other("no advert socket on its interface")),
        }
    }

    /// Brings the macvlans (virtual MACs) that `vips` of instance `key` live on up (a new
    /// master) or down (a backup sends nothing from the virtual MAC).
    pub(super) fn set_vmac_up(&self, key: InstanceKey, vips: &[IpAddr], up: bool) {
        let mut devs: Vec<u32> = vips
            .iter()
            .filter_map(|a| self.vips.get(a).map(|(_, dev)| *dev))
            .filter(|dev| self.vmacs.values().any(|i| i == dev))
            .collect();
        devs.sort_unstable();
        devs.dedup();
        for dev in devs {
            self.net.push(NetOp::SetUp { key, dev, up });
        }
    }

    /// Asks the netlink task to add a VIP a master wants (for the keeper's want
    /// `generation`); [`Shell::on_vip_added`] takes the result. `announce`: announced once
    /// there (a VIP back after a failure or a deletion).
    fn add_vip(
        &mut self,
        engine: &mut Engine,
        key: InstanceKey,
        addr: IpAddr,
        generation: u64,
        announce: bool,
    ) {
        let Some((vip, mut dev)) = self.vips.get(&addr).cloned() else {
            return;
        };
        // A VIP on another interface: looked up by name each time (it may have been
        // re-created under a new index, or be missing).
        if let Some(name) = &vip.dev {
            match nix::net::if_::if_nametoindex(name.as_str()) {
                Ok(index) => {
                    dev = index;
                    self.vips.insert(addr, (vip.clone(), dev));
                }
                Err(_) => {
                    let err = std::io::Error::other(format!("no interface {name}"));
                    self.on_vip_added(engine, key, addr, generation, Err(err));
                    return;
                }
            }
        }
        self.net.push(NetOp::AddVip {
            key,
            vip,
            dev,
            generation,
            announce,
        });
    }

    /// How adding a VIP went: the keeper learns it (failures are retried, and after a few take
    /// the instance out of the election for a hold-down, crate::keeper), and the data plane
    /// answers for the VIP only while it is there. True when it is there (and the result not
    /// stale).
    fn on_vip_added(
        &mut self,
        engine: &mut Engine,
        key: InstanceKey,
        addr: IpAddr,
        generation: u64,
        result: std::io::Result<()>,
    ) -> bool {
        let t = now();
        // A result for an earlier want (the VIP let go, or wanted again, since) changes
        // nothing.
        let present = match result {
            Ok(()) if self.keeper.added(addr, generation) => true,
            Ok(()) => return false,
            Err(err) => {
                match self.keeper.failed(t, addr, generation) {
                    Some(Failed::HoldOut(until)) => {
                        warn!(vrid = key.vrid, vip = %addr, error = %err, attempts = crate::keeper::MAX_FAILURES,
                            hold_down_ms = until.since(t) / 1_000,
                            "cannot add VIP: stepping out of the election for the hold-down, so that the peer takes over");
                        engine.set_track(t, &crate::keeper::track_name(key), TrackInput::Down);
                    }
                    Some(Failed::Retry(_)) => {
                        warn!(vrid = key.vrid, vip = %addr, error = %err, retry_ms = crate::keeper::RETRY_US / 1_000,
                            "cannot add VIP; it is not answered until it is there, and tried again");
                    }
                    None => return false,
                }
                false
            }
        };
        // The data plane answers only for the VIPs on its own interface.
        let own = self.vips.get(&addr).is_some_and(|(v, _)| v.dev.is_none());
        if own && let Some(Err(err)) = self.dp_mut(key).map(|dp| dp.set_vip_absent(addr, !present))
        {
            warn!(vrid = key.vrid, vip = %addr, error = %dataplane::error_chain(&err), "cannot publish whether the VIP is on the interface");
        }
        present
    }

    /// A netlink change the netlink task carried out (crate::daemon::netops).
    pub(super) fn on_net_done(&mut self, engine: &mut Engine, done: NetDone) {
        let NetDone { op, results } = done;
        match op {
            NetOp::AddVip {
                key,
                vip,
                generation,
                announce,
                ..
            } => {
                let result = results.into_iter().next().unwrap_or(Ok(()));
                let added = self.on_vip_added(engine, key, vip.addr, generation, result);
                if added && announce {
                    info!(vrid = key.vrid, vip = %vip.addr, "VIP added again; announcing it");
                    self.announce_one(key, vip.addr);
                    // The kernel drops a route with the source address it used, without
                    // telling: the instance's routes are added again.
                    self.add_routes(key);
                }
            }
            NetOp::RemoveVip { key, addr, .. } => {
                if let Some(Err(err)) = results.into_iter().next() {
                    warn!(vrid = key.vrid, vip = %addr, error = %err, "cannot remove VIP");
                }
            }
            NetOp::AddRoutes { key, routes } => self.on_routes_added(key, &routes, results),
            NetOp::RemoveRoutes {
                key,
                routes,
                dropped,
            } => Self::on_routes_removed(key, &routes, dropped, results),
            NetOp::SetUp { key, up, .. } => {
                if let Some(Err(err)) = results.into_iter().next() {
                    warn!(vrid = key.vrid, error = %err, up, "cannot set the virtual MAC interface up or down");
                }
            }
        }
    }

    /// An address left an interface. A VIP a master wants is marked absent in the data plane
    /// at once and added again (then announced), unless a retry is already scheduled.
    pub(super) fn on_address_gone(&mut self, engine: &mut Engine, ifindex: u32, addr: IpAddr) {
        if !self.configure_vips || self.vips.get(&addr).is_none_or(|(_, dev)| *dev != ifindex) {
            return;
        }
        let add_now = self.keeper.deleted(addr);
        if !self.keeper.is_absent(addr) {
            return;
        }
        let Some(key) = self.vip_keys.get(&addr).copied() else {
            return;
        };
        let own_interface = self.vips.get(&addr).is_some_and(|(v, _)| v.dev.is_none());
        if own_interface
            && let Some(Err(err)) = self.dp_mut(key).map(|dp| dp.set_vip_absent(addr, true))
        {
            warn!(vrid = key.vrid, vip = %addr, error = %dataplane::error_chain(&err), "cannot publish that the VIP is not on the interface");
        }
        if add_now && let Some(generation) = self.keeper.generation(addr) {
            warn!(vrid = key.vrid, vip = %addr, "VIP deleted from the interface by someone else; adding it again");
            self.add_vip(engine, key, addr, generation, true);
        }
    }

    /// Retries the VIPs whose retry is due, and lets instances whose hold-down is over run
    /// again.
    pub(super) fn upkeep_vips(&mut self, engine: &mut Engine) {
        let t = now();
        for key in self.keeper.expired(t) {
            info!(
                vrid = key.vrid,
                "VIP hold-down over: the instance runs again"
            );
            engine.set_track(t, &crate::keeper::track_name(key), TrackInput::Up);
        }
        for addr in self.keeper.due(t) {
            let Some(key) = self.vip_keys.get(&addr).copied() else {
                continue;
            };
            if let Some(generation) = self.keeper.generation(addr) {
                self.add_vip(engine, key, addr, generation, true);
            }
        }
    }

    /// The VIPs of the master instances and the interfaces they are on, for the resume marker.
    pub(super) fn master_vips(&self, engine: &Engine) -> Vec<(IpAddr, u32)> {
        let masters: HashSet<InstanceKey> = engine.masters().map(|(key, _)| key).collect();
        self.vips
            .iter()
            .filter(|(addr, _)| self.vip_keys.get(addr).is_some_and(|k| masters.contains(k)))
            .map(|(addr, (_, dev))| (*addr, *dev))
            .collect()
    }

    /// After a hitless restart, the VIPs the previous daemon's masters had (its marker): those
    /// this configuration has are kept for the masters resumed at start ([`Shell::resumed_vips`]),
    /// the others removed from their interfaces.
    pub(super) async fn take_over_vips(&mut self, carried: &[(IpAddr, u32)]) {
        for &(addr, dev) in carried {
            if self.vips.contains_key(&addr) {
                self.resumed_vips.insert(addr);
                continue;
            }
            if !self.configure_vips {
                continue;
            }
            match self.addresses.remove(dev, addr).await {
                Ok(()) => info!(vip = %addr, "removed a VIP the configuration no longer has"),
                Err(err) => {
                    warn!(vip = %addr, error = %err, "cannot remove a VIP the configuration no longer has")
                }
            }
        }
    }

    /// The write lease's own vote, for the resume marker of a hitless restart.
    pub(super) fn resume_grant(&self) -> Option<ResumeGrant> {
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
    pub(super) fn judge_claims(
        &mut self,
        engine: &mut Engine,
        t: Time,
        inputs: &mut HashMap<TrackId, TrackInput>,
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
        let due = self.split.due(t);
        if due.is_empty() {
            return;
        }
        let masters: HashMap<InstanceKey, u8> = engine.masters().collect();
        for (key, mac) in due {
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
    pub(super) fn announce_instance(&self, key: InstanceKey) {
        for addr in self.vips.keys() {
            if self.vip_keys.get(addr) == Some(&key) {
                self.announce_one(key, *addr);
            }
        }
    }

    /// Announces one VIP of instance `key`: from the instance's MAC on its interface, or, for
    /// a VIP on another interface (`dev`), from that interface's MAC on it.
    fn announce_one(&self, key: InstanceKey, addr: IpAddr) {
        let sent = match self.vips.get(&addr) {
            Some((
                Vip {
                    dev: Some(name), ..
                },
                index,
            )) => dataplane::interface_mac(name)
                .and_then(|mac| self.announcer.announce_on(*index, addr, mac)),
            _ => {
                let mac = self.macs.get(&key).copied().unwrap_or_default();
                self.announcer.announce_on(key.iface, addr, mac)
            }
        };
        if let Err(err) = sent {
            warn!(vrid = key.vrid, vip = %addr, error = %err, "cannot announce VIP");
        }
    }

    /// Announces the VIPs of every master instance that fences again (a weaker master that
    /// could not hear our adverts may have drawn the clients to itself).
    pub(super) fn reannounce(&self, engine: &Engine) {
        for (key, _) in engine.masters() {
            if self.fences.get(&key).is_some_and(|f| !f.is_empty()) {
                self.announce_instance(key);
            }
        }
    }

    /// Tells the write lease whether this node is a candidate: the highest priority of the
    /// master instances that fence a server, or none.
    pub(super) fn claim_lease(&self, engine: &Engine) {
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

/// The VRRP virtual MAC of an instance.
fn virtual_mac(key: InstanceKey) -> [u8; 6] {
    match key.family {
        Family::V4 => virtual_mac_v4(key.vrid),
        Family::V6 => virtual_mac_v6(key.vrid),
    }
}

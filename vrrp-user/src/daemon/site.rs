//! What instances are published against: the interface, its addresses, and the engine's view
//! of each configured instance; the sysctls a virtual MAC needs.

use super::*;

/// The engine's view of one configured instance.
pub(super) fn engine_config(
    inst: &Instance,
    iface: &str,
    ifindex: u32,
    primary: IpAddr,
    config: &Config,
) -> InstanceConfig {
    let mut c = InstanceConfig::new(
        &inst.name,
        ifindex,
        inst.vrid,
        primary,
        inst.vips.iter().map(|v| v.addr).collect(),
    );
    c.excluded = inst.vips_excluded.iter().map(|v| v.addr).collect();
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
    c.start_as_master = inst.state == InitialState::Takeover;
    c.announce = AnnouncePolicy {
        delay_us: inst.garp.delay_ms * 1_000,
        repeat: inst.garp.repeat,
        refresh_us: inst.garp.refresh_ms * 1_000,
        refresh_repeat: inst.garp.refresh_repeat,
        pacing_us: inst.garp.interval_ms * 1_000,
        lower_prio_repeat: inst.garp.lower_prio_repeat,
        lower_prio_delay_us: inst.garp.lower_prio_delay_ms * 1_000,
    };
    c.startup_delay_us = inst.startup_delay_ms * 1_000;
    c.down_factor = inst.down_timer_adverts;
    c.answer_lower_priority = !inst.lower_prio_no_advert;
    c.advert_before_yield = inst.higher_prio_send_advert;
    if inst.v3_checksum_as_v2 {
        c.checksum_form = ChecksumForm::Plain;
    }
    c.tracks = tracked(inst, config);
    c.tracks.extend(guards(inst, iface, ifindex, config));
    if !inst.unicast_peers.is_empty() {
        c.transport = Transport::Unicast {
            peers: inst.unicast_peers.clone(),
            check_ttl: inst.unicast_check_ttl,
        };
    }
    c
}

fn track(name: TrackId, weight: i32, reverse: bool, initial: TrackInput) -> TrackConfig {
    TrackConfig {
        name,
        weight,
        reverse,
        initial,
    }
}

/// The tracks of what the instance's configuration follows: scripts (up until their first
/// result, which comes before the start), files, processes (down: the daemon reads /proc
/// before it starts the instances) and MySQL targets (down: no takeover before the first
/// probe has answered).
fn tracked(inst: &Instance, config: &Config) -> Vec<TrackConfig> {
    let mut tracks = Vec::new();
    for t in inst
        .track_scripts
        .iter()
        .filter_map(|name| config.track_scripts.iter().find(|t| t.name == *name))
    {
        tracks.push(track(
            TrackId::Script(t.name.clone()),
            t.weight,
            t.weight_reverse,
            TrackInput::Up,
        ));
    }
    for t in inst
        .track_files
        .iter()
        .filter_map(|name| config.track_files.iter().find(|t| t.name == *name))
    {
        let initial = TrackInput::Value(0);
        let name = TrackId::File(t.name.clone());
        tracks.push(track(name, t.weight, t.weight_reverse, initial));
    }
    for t in inst
        .track_processes
        .iter()
        .filter_map(|name| config.track_processes.iter().find(|t| t.name == *name))
    {
        let name = process::track_name(&t.name);
        tracks.push(track(name, t.weight, t.weight_reverse, TrackInput::Down));
    }
    for t in inst
        .track_mysql
        .iter()
        .filter_map(|name| config.mysql.iter().find(|t| t.name == *name))
    {
        let name = mysql::alive_track(&t.name);
        tracks.push(track(name, t.weight, false, TrackInput::Down));
        if let Some(r) = &t.replication {
            let name = mysql::replication_track(&t.name);
            tracks.push(track(name, r.weight, false, TrackInput::Down));
        }
    }
    tracks
}

/// The tracks the daemon keeps for the instance's safety: the write lease (an instance that
/// fences stays in Fault while the node yielded the lease to a stronger holder), a split brain
/// lost on the wire (crate::split), a VIP that cannot be added (crate::keeper), its own
/// interface (no link: Fault, as in keepalived, unless dont_track_primary), and the other
/// interfaces it tracks, with their weights.
fn guards(inst: &Instance, iface: &str, ifindex: u32, config: &Config) -> Vec<TrackConfig> {
    let key = instance_key(inst, ifindex);
    let fences = inst
        .track_mysql
        .iter()
        .any(|n| config.mysql.iter().any(|t| t.name == *n && t.fence));
    let mut tracks = Vec::new();
    if config.write_lease.is_some() && fences {
        let name = crate::lease::task::TRACK;
        tracks.push(track(name, 0, false, TrackInput::Up));
    }
    tracks.push(track(
        crate::split::track_name(key),
        0,
        false,
        TrackInput::Up,
    ));
    if config.configure_vips {
        tracks.push(track(
            crate::keeper::track_name(key),
            0,
            false,
            TrackInput::Up,
        ));
    }
    if !inst.dont_track_primary {
        let name = netlink::link_track_name(iface);
        tracks.push(track(name, 0, false, TrackInput::Up));
    }
    // The interfaces its VIPs and routes go on, as keepalived tracks them (unless tracked
    // with a weight below).
    for dev in inst.other_devs(iface) {
        if !inst.track_interfaces.iter().any(|t| t.name == dev) {
            let name = netlink::link_track_name(&dev);
            tracks.push(track(name, 0, false, TrackInput::Up));
        }
    }
    for link in &inst.track_interfaces {
        let name = netlink::link_track_name(&link.name);
        tracks.push(track(
            name,
            link.weight,
            link.weight_reverse,
            TrackInput::Up,
        ));
    }
    tracks
}

/// One interface the daemon serves: what its instances are published against, its data plane
/// and its advert sockets.
pub(super) struct Port {
    pub(super) site: Site,
    pub(super) dp: DataPlane,
    /// Shared with the pacer, which sends steady masters' adverts through them.
    pub(super) sockets: std::sync::Arc<AdvertSockets>,
    /// The next free per-VIP stats slot of its data plane.
    pub(super) stats_index: u32,
    pub(super) pin_dir: std::path::PathBuf,
    /// The sysctls set for its virtual MACs, to restore on a stop.
    pub(super) sysctls: Vec<(String, String)>,
    /// The data plane's kernel-side log, until the loop polls it.
    pub(super) logger: Option<KernelLog>,
}

/// What instances are published against: the interface and its addresses.
pub(super) struct Site {
    pub(super) iface: String,
    pub(super) ifindex: u32,
    pub(super) iface_mac: [u8; 6],
    /// The advert source per family (true: IPv6).
    pub(super) sources: HashMap<Family, IpAddr>,
}

impl Site {
    /// Publishes an instance to the data plane (VIPs, VRID state with `role`, unicast peers)
    /// and returns its engine configuration and the MAC it answers from.
    pub(super) fn publish(
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
        // A VIP on another interface is answered there by the kernel, not by this data plane.
        for vip in inst.all_vips().filter(|v| v.dev.is_none()) {
            // An excluded address may be of the other family: its role is in our slot.
            let flags = if vip.addr.is_ipv6() == ipv6 {
                0
            } else {
                vrrp_common::vip_flags::OTHER_FAMILY
            };
            dp.set_vip(
                vip.addr,
                VipValue {
                    vrid: inst.vrid,
                    flags,
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
        // Adverts listing other addresses are another cluster's (RFC 5798 7.1, as keepalived).
        flags |= vrid_flags::CHECK_ADDRESSES;
        if inst.skip_check_adv_addr {
            flags |= vrid_flags::SKIP_CHECK_SAME_MASTER;
        }
        let octets: Vec<Vec<u8>> = inst
            .vips
            .iter()
            .map(|v| match v.addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            })
            .collect();
        let addr_hash = vrrp_common::vrrp::address_set_hash(octets.iter().map(Vec::as_slice));
        dp.set_vrid(
            inst.family(),
            inst.vrid,
            VridState {
                role,
                flags,
                version: u32::from(inst.version),
                auth: inst.auth_pass.unwrap_or_default(),
                addr_hash,
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

    /// Publishes every instance of `config` (see [`Site::publish`]); on resume each VRID keeps
    /// the role the data plane has until the engine says otherwise, and the instances start
    /// from `start_inputs` (the tracks as last known).
    pub(super) fn publish_all(
        &self,
        dp: &mut DataPlane,
        config: &Config,
        resume: bool,
        start_inputs: &HashMap<TrackId, TrackInput>,
    ) -> anyhow::Result<Published> {
        let mut stats_index = 0u32;
        let mut engine_configs = Vec::new();
        let mut macs = HashMap::new();
        let mut primaries = HashMap::new();
        let mut wanted_vmacs = Vec::new();
        for inst in config
            .instances
            .iter()
            .filter(|i| i.interface == self.iface)
        {
            // On resume the role the data plane has stays until the engine says otherwise.
            let was = if resume {
                dp.vrid(inst.family(), inst.vrid)
                    .map(|v| v.role)
                    .unwrap_or(role::INIT)
            } else {
                role::INIT
            };
            let (mut engine_config, mac) = self.publish(dp, inst, config, &mut stats_index, was)?;
            engine_config.resume_as_master = was == role::MASTER;
            for track in &mut engine_config.tracks {
                if let Some(input) = start_inputs.get(&track.name) {
                    track.initial = *input;
                }
            }
            macs.insert(key_of(&engine_config), mac);
            primaries.insert(key_of(&engine_config), engine_config.primary);
            if let Some(name) = &inst.vmac_interface {
                wanted_vmacs.push((inst.name.clone(), name.clone(), mac));
            }
            engine_configs.push(engine_config);
        }
        Ok(Published {
            configs: engine_configs,
            macs,
            primaries,
            wanted_vmacs,
            stats_index,
        })
    }

    /// The engine's configuration of an instance.
    pub(super) fn engine_config(
        &self,
        inst: &Instance,
        config: &Config,
    ) -> anyhow::Result<InstanceConfig> {
        let family = inst.family();
        let Some(primary) = inst.source.or_else(|| self.sources.get(&family).copied()) else {
            anyhow::bail!(
                "instance {}: no {} advert socket on {}; a new address family on an interface needs a restart",
                inst.name,
                family.name(),
                self.iface
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
pub(super) fn set_sysctls(settings: &[(String, &str)]) -> Vec<(String, String)> {
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
pub(super) fn restore_sysctls(old: &[(String, String)]) {
    for (key, value) in old {
        if let Err(err) = std::fs::write(std::path::Path::new("/proc/sys").join(key), value) {
            warn!(sysctl = %key, error = %err, "cannot restore sysctl");
        }
    }
}

/// What the data plane's maps on `iface` hold for `config`: the VIPs, VRIDs and unicast peers
/// of its instances there.
pub(super) fn keep_of(config: &Config, iface: &str) -> dataplane::Keep {
    let mut keep = dataplane::Keep::default();
    for inst in config.instances.iter().filter(|i| i.interface == iface) {
        keep.vips
            .extend(inst.all_vips().filter(|v| v.dev.is_none()).map(|v| v.addr));
        keep.slots.insert(vrrp_common::slot(inst.ipv6(), inst.vrid));
        keep.peers.extend(
            inst.unicast_peers
                .iter()
                .map(|p| dataplane::peer_key(inst.vrid, *p)),
        );
    }
    keep
}

/// Removes from the maps what `config` does not have (left by the daemon a hitless restart
/// took over from, or by the configuration a reload replaced), and logs what went.
pub(super) fn prune_maps(dp: &mut DataPlane, config: &Config, iface: &str) -> anyhow::Result<()> {
    let pruned = dp
        .prune(&keep_of(config, iface))
        .context("removing what the configuration no longer has from the maps")?;
    if pruned != dataplane::Pruned::default() {
        info!(
            iface,
            vips = pruned.vips,
            vrids = pruned.vrids,
            unicast_peers = pruned.peers,
            "removed from the data plane what the configuration no longer has"
        );
    }
    Ok(())
}

/// The engine's key of a configured instance on the interface `ifindex`.
pub(super) fn instance_key(inst: &Instance, ifindex: u32) -> InstanceKey {
    InstanceKey {
        iface: ifindex,
        family: if inst.ipv6() { Family::V6 } else { Family::V4 },
        vrid: inst.vrid,
    }
}

/// What publishing the instances gives the daemon.
pub(super) struct Published {
    pub(super) configs: Vec<InstanceConfig>,
    /// The MAC each instance answers and announces from.
    pub(super) macs: HashMap<InstanceKey, [u8; 6]>,
    /// Each instance's primary address.
    pub(super) primaries: HashMap<InstanceKey, IpAddr>,
    /// (instance, macvlan name, virtual MAC) of the instances with `virtual_mac`.
    pub(super) wanted_vmacs: Vec<(String, String, [u8; 6])>,
    /// The next free per-VIP stats slot.
    pub(super) stats_index: u32,
}

/// The advert source of each address family in use on `iface`: the configured `source`, or
/// the interface's first address of the family (IPv6: link-local).
pub(super) fn advert_sources(
    config: &Config,
    iface: &str,
) -> anyhow::Result<HashMap<Family, IpAddr>> {
    // The primary address of each family in use: the configured source, or the interface's.
    let mut sources: HashMap<Family, IpAddr> = HashMap::new();
    for inst in config.instances.iter().filter(|i| i.interface == iface) {
        let family = inst.family();
        let source = match inst.source {
            Some(s) => s,
            None => match sources.get(&family) {
                Some(s) => *s,
                None => wire::interface_address(iface, family.is_v6())?.with_context(|| {
                    format!(
                        "instance {}: {iface} has no {} address to send adverts from; set `source`",
                        inst.name,
                        if family.is_v6() {
                            "link-local IPv6"
                        } else {
                            "IPv4"
                        }
                    )
                })?,
            },
        };
        sources.entry(family).or_insert(source);
    }
    Ok(sources)
}

/// The macvlans of virtual MACs (keepalived's use_vmac): the NIC then accepts frames to them,
/// and the VIPs go there; a resumed daemon keeps them as they are. With an IPv4 VIP on a
/// macvlan, the parent must not use the VIP as the sender of its own ARP requests (that would
/// teach neighbours the parent's MAC for it): arp_announce 2, restored on stop. Returns the
/// macvlans by name and the sysctls to restore.
pub(super) async fn virtual_macs(
    addresses: &Addresses,
    wanted: Vec<(String, String, [u8; 6])>,
    (iface, ifindex): (&str, u32),
    resume: bool,
    sources: &HashMap<Family, IpAddr>,
) -> anyhow::Result<(HashMap<String, u32>, Vec<(String, String)>)> {
    let mut vmacs = HashMap::new();
    for (instance, name, mac) in wanted {
        let index = if resume {
            addresses.keep_macvlan(&name, ifindex, mac).await
        } else {
            addresses.macvlan(&name, ifindex, mac).await
        }
        .with_context(|| format!("instance {instance}: the virtual MAC's interface {name}"))?;
        info!(%instance, vmac_interface = %name, mac = %format_mac(&mac), "virtual MAC interface ready");
        vmacs.insert(name.clone(), index);
    }
    let sysctls = if vmacs.is_empty() || !sources.contains_key(&Family::V4) {
        Vec::new()
    } else {
        set_sysctls(&[(format!("net/ipv4/conf/{iface}/arp_announce"), "2")])
    };
    Ok((vmacs, sysctls))
}

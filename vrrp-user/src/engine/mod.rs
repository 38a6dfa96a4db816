//! The VRRP engine: pure, sans-IO. It knows nothing of sockets, netlink, tokio or the system
//! clock. It is driven by inputs that carry `now` ([`Engine::start`],
//! [`Engine::handle_packet`], [`Engine::handle_timeout`], [`Engine::set_track`],
//! [`Engine::shutdown`]), is asked when it next needs to run ([`Engine::poll_timeout`]), and
//! hands out what the shell must do as [`Action`]s ([`Engine::poll_action`]).
//!
//! Time is integer microseconds ([`Time`]), never floats.

pub mod advert;
pub mod announce;
mod instance;

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub use advert::{Advert, Auth, ChecksumForm, DecodeError, Family, Version};
pub use announce::AnnouncePolicy;
use instance::Instance;
pub use instance::{Counters, InstanceStatus, MasterSeen, Reason, State};
use vrrp_common::vrrp::{MCAST_V4, MCAST_V6};

/// Microseconds in a centisecond, the unit of VRRPv3 intervals.
pub const CS: u64 = 10_000;

/// A point in time: microseconds since an epoch of the caller's choosing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const fn plus(self, micros: u64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// Microseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The multicast group adverts of a family are sent to.
pub fn multicast_group(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(MCAST_V4)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(MCAST_V6)),
    }
}

/// Identifies an instance: VRIDs are per interface and per address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    /// The interface, as an opaque number chosen by the shell (e.g. its ifindex).
    pub iface: u32,
    pub family: Family,
    pub vrid: u8,
}

/// How adverts travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// To 224.0.0.18 / ff02::12, received with TTL / hop limit 255.
    Multicast,
    /// To each peer; adverts are accepted only from them, with TTL 255 when `check_ttl`.
    Unicast { peers: Vec<IpAddr>, check_ttl: bool },
}

/// What a track follows. Each kind is its own namespace: a `[[track_script]]` and a
/// `[[track_file]]` of the same name are two tracks. Its text (logs, reasons) is the object's
/// name, prefixed by its kind except for scripts and files.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackId {
    Script(String),
    File(String),
    Process(String),
    /// A MySQL target's liveness.
    Mysql(String),
    /// A MySQL target's replication health.
    Replication(String),
    /// An interface's link.
    Link(String),
    /// The write lease (an instance that fences steps out while a stronger holder has it).
    WriteLease,
    /// An instance held out after losing a split brain on the wire.
    SplitBrain(InstanceKey),
    /// An instance held out while its VIPs cannot be added.
    VipsHeld(InstanceKey),
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = |f: &mut fmt::Formatter<'_>, what: &str, k: &InstanceKey| {
            let family = match k.family {
                Family::V4 => "v4",
                Family::V6 => "v6",
            };
            write!(f, "{what}:{family}:{}@{}", k.vrid, k.iface)
        };
        match self {
            Self::Script(n) | Self::File(n) => f.write_str(n),
            Self::Process(n) => write!(f, "process:{n}"),
            Self::Mysql(n) => write!(f, "mysql:{n}"),
            Self::Replication(n) => write!(f, "mysql:{n}:replication"),
            Self::Link(n) => write!(f, "link:{n}"),
            Self::WriteLease => f.write_str("write_lease"),
            Self::SplitBrain(k) => held(f, "split_brain", k),
            Self::VipsHeld(k) => held(f, "vips", k),
        }
    }
}

/// A script's track, as tests and simulations name them.
impl From<&str> for TrackId {
    fn from(name: &str) -> Self {
        Self::Script(name.to_owned())
    }
}

/// A tracked object of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    /// What [`Engine::set_track`] updates (shared by every instance tracking it).
    pub name: TrackId,
    /// keepalived's weight: 0 = Fault when down; > 0 added while up; < 0 added while down;
    /// for values, the multiplier.
    pub weight: i32,
    pub reverse: bool,
    /// The state assumed until the first report.
    pub initial: TrackInput,
}

/// A report from a tracked object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackInput {
    Up,
    Down,
    /// A number, e.g. read from a tracked file.
    Value(i64),
}

/// The configuration of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub iface: u32,
    pub vrid: u8,
    pub version: Version,
    /// 1-254, or 255 for the address owner.
    pub priority: u8,
    /// Our advert interval, centiseconds (VRRPv2 sends whole seconds).
    pub advert_interval_cs: u16,
    pub preempt: bool,
    /// keepalived's preempt_delay: how long a higher-priority backup waits, after startup or
    /// after first seeing a lower-priority master, before preempting it. Microseconds.
    pub preempt_delay_us: u64,
    /// RFC 5798 Accept_Mode: passed to the shell with the VIPs.
    pub accept_mode: bool,
    /// Our primary address: the source of our adverts and the tie-breaker.
    pub primary: IpAddr,
    pub vips: Vec<IpAddr>,
    /// keepalived's `virtual_ipaddress_excluded`: added, removed and announced with the VIPs,
    /// never listed in adverts (either family).
    pub excluded: Vec<IpAddr>,
    pub transport: Transport,
    /// The checksum form we send for VRRPv3 over IPv4 (IPv6 always uses the pseudo-header).
    pub checksum_form: ChecksumForm,
    /// VRRPv2 authentication.
    pub auth: Auth,
    /// The factor of Master_Down_Interval (3 in the RFCs).
    pub down_factor: u32,
    /// A master answers a lower-priority advert at once (RFC 9568); false: discard it (RFC 5798,
    /// keepalived's `lower_prio_no_advert`).
    pub answer_lower_priority: bool,
    /// keepalived's `higher_prio_send_advert`: a master hearing a better one sends one advert of
    /// its own before it becomes backup.
    pub advert_before_yield: bool,
    /// Time in Initialize before the startup event. Microseconds.
    pub startup_delay_us: u64,
    /// keepalived's `state MASTER`: a non-owner becomes master at startup instead of waiting
    /// Master_Down_Interval as backup.
    pub start_as_master: bool,
    /// A hitless restart found this instance master: it resumes as master at startup.
    pub resume_as_master: bool,
    pub announce: AnnouncePolicy,
    pub tracks: Vec<TrackConfig>,
}

impl InstanceConfig {
    /// The VIPs and the excluded addresses: what a master puts on the interface and announces.
    pub fn all_vips(&self) -> Vec<IpAddr> {
        self.vips.iter().chain(&self.excluded).copied().collect()
    }

    /// A configuration with the RFC defaults: VRRPv3, priority 100, 1 s adverts, preempt on.
    pub fn new(name: &str, iface: u32, vrid: u8, primary: IpAddr, vips: Vec<IpAddr>) -> Self {
        Self {
            name: name.to_owned(),
            iface,
            vrid,
            version: Version::V3,
            priority: 100,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay_us: 0,
            accept_mode: false,
            primary,
            vips,
            excluded: Vec::new(),
            transport: Transport::Multicast,
            checksum_form: ChecksumForm::PseudoHeader,
            auth: Auth::None,
            down_factor: 3,
            answer_lower_priority: true,
            advert_before_yield: false,
            startup_delay_us: 0,
            start_as_master: false,
            resume_as_master: false,
            announce: AnnouncePolicy::default(),
            tracks: Vec::new(),
        }
    }

    pub fn family(&self) -> Family {
        advert::family_of(&self.primary)
    }
}

/// Instances that change state together (keepalived's vrrp_sync_group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroupConfig {
    pub name: String,
    /// Instance names.
    pub members: Vec<String>,
}

/// What the shell must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert (IP protocol 112, TTL / hop limit 255) from `src` to `dst`.
    Send {
        key: InstanceKey,
        src: IpAddr,
        dst: IpAddr,
        bytes: Vec<u8>,
    },
    /// Add these VIPs to the interface.
    AddVips {
        key: InstanceKey,
        vips: Vec<IpAddr>,
        accept_mode: bool,
    },
    /// Remove these VIPs from the interface.
    RemoveVips {
        key: InstanceKey,
        vips: Vec<IpAddr>,
        accept_mode: bool,
    },
    /// Publish this role (`vrrp_common::role`) for the VRID to the data plane.
    DataPlane { key: InstanceKey, role: u32 },
    /// Send one gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) for `addr`.
    Announce { key: InstanceKey, addr: IpAddr },
    /// Stop sending the instance's periodic adverts on its behalf (they were handed over with
    /// [`Engine::take_paced`]): the engine sends them again from here on. Comes before any
    /// other action of the instance that follows it.
    Unpace { key: InstanceKey },
    /// The state changed (for notify scripts, the event stream and status).
    StateChanged {
        key: InstanceKey,
        name: String,
        old: State,
        new: State,
        reason: Reason,
    },
}

impl Action {
    /// The instance the action is about.
    pub fn key(&self) -> InstanceKey {
        match self {
            Self::Send { key, .. }
            | Self::AddVips { key, .. }
            | Self::RemoveVips { key, .. }
            | Self::DataPlane { key, .. }
            | Self::Announce { key, .. }
            | Self::Unpace { key }
            | Self::StateChanged { key, .. } => *key,
        }
    }
}

/// The periodic adverts of a master, handed to the shell to send without waking the engine
/// ([`Engine::take_paced`]): `adverts` (destination, VRRP message) every `every_us`, from the
/// slot `next` on, until the engine asks for them back with [`Action::Unpace`] or the shell
/// gives them back with [`Engine::unpace`]. What a master sends while nothing happens never
/// changes, so the engine need not wake for it; the engine's other timers still run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paced {
    pub key: InstanceKey,
    pub adverts: Vec<(IpAddr, Vec<u8>)>,
    pub every_us: u64,
    pub next: Time,
}

/// Why a received packet was discarded. Every discard is counted; none changes the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Discard {
    /// Malformed or with a bad checksum.
    Decode(DecodeErrorKind),
    /// No instance for this interface, family and VRID.
    UnknownVrid,
    /// TTL / hop limit not 255.
    Ttl,
    VersionMismatch,
    /// VRRPv2 authentication differs.
    AuthMismatch,
    /// VRRPv2 advert interval differs from ours.
    IntervalMismatch,
    /// Unicast mode: the source is not a configured peer.
    PeerNotAllowed,
    /// Our own advert, looped back.
    OwnAdvert,
}

/// [`DecodeError`] without its payload, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecodeErrorKind {
    Truncated,
    Version,
    Type,
    V2OverIpv6,
    ZeroInterval,
    AuthType,
    Checksum,
}

impl From<DecodeError> for DecodeErrorKind {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Truncated { .. } => Self::Truncated,
            DecodeError::UnknownVersion(_) => Self::Version,
            DecodeError::UnknownType(_) => Self::Type,
            DecodeError::V2OverIpv6 => Self::V2OverIpv6,
            DecodeError::ZeroInterval => Self::ZeroInterval,
            DecodeError::UnknownAuthType(_) => Self::AuthType,
            DecodeError::BadChecksum { .. } => Self::Checksum,
        }
    }
}

/// An advert the data plane validated and summarised (its liveness entry or event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub src: IpAddr,
    pub priority: u8,
    pub interval_cs: u16,
    /// Number of addresses it carried.
    pub count: u8,
    pub form: ChecksumForm,
}

/// A received VRRP packet: the IP payload with what the IP header said.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    pub iface: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub bytes: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("instance {0}: two instances use VRID {1} on the same interface and family")]
    DuplicateVrid(String, u8),
    #[error("instance {0}: {1}")]
    Invalid(String, &'static str),
    #[error("sync group {0}: unknown instance {1}")]
    UnknownMember(String, String),
    #[error("sync group {0}: instance {1} is already in sync group {2}")]
    TwoGroups(String, String, String),
}

/// What a reload did, by instance name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    pub kept: Vec<String>,
    pub stopped: Vec<String>,
    pub started: Vec<String>,
}

/// All the instances of a daemon.
pub struct Engine {
    instances: Vec<Instance>,
    by_key: BTreeMap<InstanceKey, usize>,
    /// Group index of each instance.
    group_of: Vec<Option<usize>>,
    groups: Vec<SyncGroupConfig>,
    actions: VecDeque<Action>,
    /// Discards of packets no instance took (malformed, unknown VRID).
    pub discarded: BTreeMap<Discard, u64>,
}

impl Engine {
    pub fn new(
        configs: Vec<InstanceConfig>,
        groups: Vec<SyncGroupConfig>,
    ) -> Result<Self, EngineError> {
        let mut by_key = BTreeMap::new();
        let mut instances = Vec::new();
        for cfg in configs {
            validate(&cfg)?;
            let inst = Instance::new(cfg);
            if by_key.insert(inst.key(), instances.len()).is_some() {
                return Err(EngineError::DuplicateVrid(
                    inst.cfg.name.clone(),
                    inst.cfg.vrid,
                ));
            }
            instances.push(inst);
        }
        let mut group_of = vec![None; instances.len()];
        for (g, group) in groups.iter().enumerate() {
            for member in &group.members {
                let i = instances
                    .iter()
                    .position(|inst| inst.cfg.name == *member)
                    .ok_or_else(|| {
                        EngineError::UnknownMember(group.name.clone(), member.clone())
                    })?;
                if let Some(other) = group_of[i] {
                    let other: &SyncGroupConfig = &groups[other];
                    return Err(EngineError::TwoGroups(
                        group.name.clone(),
                        member.clone(),
                        other.name.clone(),
                    ));
                }
                group_of[i] = Some(g);
            }
        }
        Ok(Self {
            instances,
            by_key,
            group_of,
            groups,
            actions: VecDeque::new(),
            discarded: BTreeMap::new(),
        })
    }

    /// A new configuration (SIGHUP): instances whose configuration is unchanged keep running
    /// untouched; the others shut down (a master resigns with priority 0) and the new and
    /// changed ones start. Validated whole first: on error nothing changes.
    pub fn reconfigure(
        &mut self,
        now: Time,
        configs: Vec<InstanceConfig>,
    ) -> Result<Reload, EngineError> {
        let mut keys = BTreeMap::new();
        for (i, c) in configs.iter().enumerate() {
            validate(c)?;
            let key = InstanceKey {
                iface: c.iface,
                family: c.family(),
                vrid: c.vrid,
            };
            if keys.insert(key, i).is_some() {
                return Err(EngineError::DuplicateVrid(c.name.clone(), c.vrid));
            }
        }
        // Start-up hints (and the inputs a track starts from) do not make a configuration
        // different.
        let same = |a: &InstanceConfig, b: &InstanceConfig| {
            let mut b = b.clone();
            b.start_as_master = a.start_as_master;
            b.resume_as_master = a.resume_as_master;
            for (x, y) in a.tracks.iter().zip(b.tracks.iter_mut()) {
                y.initial = x.initial;
            }
            *a == b
        };
        let mut reload = Reload::default();
        let mut kept = Vec::new();
        for mut inst in std::mem::take(&mut self.instances) {
            if configs
                .iter()
                .any(|c| c.name == inst.cfg.name && same(&inst.cfg, c))
            {
                reload.kept.push(inst.cfg.name.clone());
                kept.push(inst);
            } else {
                let mut out = Vec::new();
                inst.shutdown(now, &mut out);
                self.actions.extend(out);
                reload.stopped.push(inst.cfg.name.clone());
            }
        }
        self.instances = kept;
        let mut fresh = Vec::new();
        for c in configs {
            if !reload.kept.contains(&c.name) {
                reload.started.push(c.name.clone());
                self.instances.push(Instance::new(c));
                fresh.push(self.instances.len() - 1);
            }
        }
        self.by_key = self
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.key(), i))
            .collect();
        // Groups keep their members by name; a member that is gone leaves its group.
        self.group_of = self
            .instances
            .iter()
            .map(|inst| {
                self.groups
                    .iter()
                    .position(|g| g.members.contains(&inst.cfg.name))
            })
            .collect();
        for i in fresh {
            self.run(i, now, |inst, now, out| inst.start(now, out));
        }
        Ok(reload)
    }

    /// The startup event for every instance.
    pub fn start(&mut self, now: Time) {
        for i in 0..self.instances.len() {
            self.run(i, now, |inst, now, out| inst.start(now, out));
        }
    }

    /// The shutdown event: masters resign with priority 0 and release their VIPs.
    pub fn shutdown(&mut self, now: Time) {
        for i in 0..self.instances.len() {
            let mut out = Vec::new();
            self.instances[i].shutdown(now, &mut out);
            self.actions.extend(out);
        }
    }

    /// A VRRP packet from the wire (or the data plane).
    pub fn handle_packet(&mut self, now: Time, rx: &Received<'_>) -> Result<(), Discard> {
        let (advert, form) = match Advert::decode(rx.bytes, rx.src, rx.dst) {
            Ok(decoded) => decoded,
            Err(err) => return Err(self.count(Discard::Decode(err.into()))),
        };
        let key = InstanceKey {
            iface: rx.iface,
            family: advert::family_of(&rx.src),
            vrid: advert.vrid,
        };
        let Some(&i) = self.by_key.get(&key) else {
            return Err(self.count(Discard::UnknownVrid));
        };
        let mut result = Ok(());
        self.run(i, now, |inst, now, out| {
            result = inst.handle_advert(now, rx.src, rx.ttl, &advert, form, out);
        });
        result
    }

    /// An advert the data plane validated, for the instance `key`.
    pub fn handle_heard(
        &mut self,
        now: Time,
        key: InstanceKey,
        heard: &Heard,
    ) -> Result<(), Discard> {
        let Some(&i) = self.by_key.get(&key) else {
            return Err(self.count(Discard::UnknownVrid));
        };
        let mut result = Ok(());
        self.run(i, now, |inst, now, out| {
            result = inst.handle_heard(now, heard, out)
        });
        result
    }

    /// The keys of the instances.
    pub fn keys(&self) -> Vec<InstanceKey> {
        self.instances.iter().map(Instance::key).collect()
    }

    fn count(&mut self, why: Discard) -> Discard {
        *self.discarded.entry(why).or_default() += 1;
        why
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        for i in 0..self.instances.len() {
            if self.instances[i].next_timeout().is_some_and(|t| t <= now) {
                self.run(i, now, |inst, now, out| inst.handle_timeout(now, out));
            }
        }
    }

    /// A tracked object reported; every instance tracking `name` takes it into account.
    pub fn set_track(&mut self, now: Time, name: &TrackId, input: TrackInput) {
        for i in 0..self.instances.len() {
            let Some(index) = self.instances[i]
                .cfg
                .tracks
                .iter()
                .position(|t| t.name == *name)
            else {
                continue;
            };
            let old_priority = self.instances[i].effective_priority();
            if self.instances[i].set_track(index, input) {
                self.run(i, now, |inst, now, out| {
                    inst.apply_tracking(now, old_priority, out)
                });
            }
        }
        // A group leaves Fault only when none of its members has a fault of its own.
        for g in 0..self.groups.len() {
            let members: Vec<usize> = (0..self.instances.len())
                .filter(|&i| self.group_of[i] == Some(g))
                .collect();
            let faulty = members
                .iter()
                .any(|&i| self.instances[i].own_fault().is_some());
            if !faulty
                && members
                    .iter()
                    .any(|&i| self.instances[i].state == State::Fault)
            {
                for &i in &members {
                    if self.instances[i].state == State::Fault {
                        self.run(i, now, |inst, now, out| {
                            inst.leave_fault(now, Reason::TrackRecovered, out)
                        });
                    }
                }
            }
        }
    }

    /// The earliest time at which [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.instances
            .iter()
            .filter_map(Instance::next_timeout)
            .min()
    }

    /// Hands the periodic adverts of every master that `can` accepts to the shell (see
    /// [`Paced`]); those already handed over are not handed again.
    pub fn take_paced(&mut self, can: impl Fn(InstanceKey) -> bool) -> Vec<Paced> {
        // `can` is asked only about instances that could be handed over.
        self.instances
            .iter_mut()
            .filter_map(|i| i.take_paced(&can))
            .collect()
    }

    /// The shell stopped sending `key`'s adverts at `now`, having sent `sent` of them: the
    /// engine sends them again from the next slot after `now` (a no-op if it already took them
    /// back).
    pub fn unpace(&mut self, key: InstanceKey, now: Time, sent: u64) {
        if let Some(&i) = self.by_key.get(&key) {
            self.instances[i].unpace(now);
        }
        self.count_paced(key, sent);
    }

    /// Counts adverts the shell sent on `key`'s behalf.
    pub fn count_paced(&mut self, key: InstanceKey, sent: u64) {
        if let Some(&i) = self.by_key.get(&key) {
            self.instances[i].counters.adverts_sent += sent;
        }
    }

    /// The instances whose periodic adverts the shell sends.
    pub fn paced(&self) -> Vec<InstanceKey> {
        self.instances
            .iter()
            .filter(|i| i.is_paced())
            .map(Instance::key)
            .collect()
    }

    /// The next thing the shell must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn status(&self) -> Vec<InstanceStatus> {
        self.instances.iter().map(Instance::status).collect()
    }

    /// The master instances and their effective priorities, without building a whole status.
    pub fn masters(&self) -> impl Iterator<Item = (InstanceKey, u8)> + '_ {
        self.instances
            .iter()
            .filter(|i| i.state == State::Master)
            .map(|i| (i.key(), i.effective_priority()))
    }

    /// The effective priority of the instance `name`, without building a whole status.
    pub fn effective_priority(&self, name: &str) -> Option<u8> {
        self.instances
            .iter()
            .find(|i| i.cfg.name == name)
            .map(Instance::effective_priority)
    }

    /// The name and state of the instance `key`, for log lines.
    /// The advert every master instance sends now, as [`Action::Send`]s (not queued).
    pub fn master_adverts(&self) -> Vec<Action> {
        self.instances
            .iter()
            .flat_map(Instance::master_adverts)
            .collect()
    }

    /// The advert interval an instance is configured with, in centiseconds.
    pub fn advert_interval_cs(&self, key: InstanceKey) -> Option<u16> {
        self.instances
            .iter()
            .find(|i| i.key() == key)
            .map(|i| i.cfg.advert_interval_cs)
    }

    pub fn name_and_state(&self, key: InstanceKey) -> Option<(&str, State)> {
        self.instances
            .iter()
            .find(|i| i.key() == key)
            .map(|i| (i.cfg.name.as_str(), i.state))
    }

    pub fn state_of(&self, name: &str) -> Option<State> {
        self.instances
            .iter()
            .find(|i| i.cfg.name == name)
            .map(|i| i.state)
    }

    /// Runs `f` on instance `i`, queues its actions, and carries its state changes to the
    /// rest of its sync group.
    fn run(&mut self, i: usize, now: Time, f: impl FnOnce(&mut Instance, Time, &mut Vec<Action>)) {
        let mut out = Vec::new();
        f(&mut self.instances[i], now, &mut out);
        let changes: Vec<State> = out
            .iter()
            .filter_map(|a| match a {
                Action::StateChanged { new, .. } => Some(*new),
                _ => None,
            })
            .collect();
        self.actions.extend(out);
        if let (Some(g), Some(&new)) = (self.group_of[i], changes.last()) {
            self.follow_group(g, i, now, new);
        }
    }

    /// Sync group rules (keepalived): one member in Fault puts the group in Fault; one
    /// becoming Master takes the others along; one becoming Backup takes the masters along.
    fn follow_group(&mut self, g: usize, leader: usize, now: Time, new: State) {
        let reason = Reason::SyncGroup {
            group: self.groups[g].name.clone(),
            member: self.instances[leader].cfg.name.clone(),
        };
        for j in 0..self.instances.len() {
            if j == leader || self.group_of[j] != Some(g) {
                continue;
            }
            let inst = &mut self.instances[j];
            let mut out = Vec::new();
            match (new, inst.state) {
                (State::Fault, State::Backup | State::Master) => {
                    inst.transition(now, State::Fault, reason.clone(), &mut out)
                }
                (State::Master, State::Backup) => {
                    inst.transition(now, State::Master, reason.clone(), &mut out)
                }
                (State::Backup, State::Master) => {
                    inst.transition(now, State::Backup, reason.clone(), &mut out)
                }
                _ => {}
            }
            self.actions.extend(out);
        }
    }
}

fn validate(cfg: &InstanceConfig) -> Result<(), EngineError> {
    let bad = |why| Err(EngineError::Invalid(cfg.name.clone(), why));
    if cfg.vrid == 0 {
        return bad("VRID 0 is not valid");
    }
    if cfg.priority == 0 {
        return bad("priority 0 is reserved for a master that resigns");
    }
    if cfg
        .vips
        .iter()
        .any(|v| advert::family_of(v) != cfg.family())
    {
        return bad("VIPs and primary address are of different families");
    }
    if cfg.version == Version::V2 && cfg.family() == Family::V6 {
        return bad("VRRPv2 is IPv4 only");
    }
    match cfg.version {
        Version::V3 if cfg.advert_interval_cs == 0 || cfg.advert_interval_cs > 4095 => {
            bad("VRRPv3 advert interval must be 1-4095 centiseconds")
        }
        Version::V2 if cfg.advert_interval_cs == 0 || cfg.advert_interval_cs > 25500 => {
            bad("VRRPv2 advert interval must be 1-255 seconds")
        }
        _ if cfg.down_factor == 0 => bad("down factor must be at least 1"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

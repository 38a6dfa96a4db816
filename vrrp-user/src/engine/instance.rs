//! One VRRP instance: the state machine of RFC 5798 / RFC 9568 section 6 (and RFC 3768 for
//! VRRPv2), with keepalived's extensions (Fault, tracking, preempt_delay, startup delay).
//!
//! [`Instance::transition`] is the one place that changes state; it emits the side effects of
//! each transition in a deliberate order (the data plane stops answering before VIPs go, and
//! claims them only after they are in place) and logs old state, new state and reason.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use tracing::{debug, info, warn};
use vrrp_common::role;

use super::{
    Action, CS, Discard, Heard, InstanceConfig, InstanceKey, Time, TrackInput, Transport,
    advert::{Advert, Auth, ChecksumForm, Family, Version},
    announce::Announcer,
};

/// The states of an instance (as status and the event stream write them: "init", "backup",
/// "master", "fault").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or shut down.
    #[serde(rename = "init")]
    Initialize,
    Backup,
    Master,
    /// A tracked object failed (keepalived): no adverts, no VIPs.
    Fault,
}

impl State {
    /// The role the data plane is told for this state.
    pub const fn data_plane_role(self) -> u32 {
        match self {
            Self::Initialize => role::INIT,
            Self::Backup => role::BACKUP,
            Self::Master => role::MASTER,
            Self::Fault => role::FAULT,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that a table's width applies.
        f.pad(match self {
            Self::Initialize => "init",
            Self::Backup => "backup",
            Self::Master => "master",
            Self::Fault => "fault",
        })
    }
}

/// Why a state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Startup as a non-owner (RFC 5798 6.4.1).
    Startup,
    /// Startup configured to be master at once (keepalived's `state MASTER`).
    StartAsMaster,
    /// Startup after a hitless restart of a master.
    Resumed,
    /// Priority 255: the address owner is master at once (6.4.1).
    AddressOwner,
    /// No advert from a master within Master_Down_Interval (6.4.2).
    MasterDown { last_master: Option<IpAddr> },
    /// The master resigned with priority 0 and Skew_Time passed (6.4.2).
    MasterResigned { from: IpAddr },
    /// Preemption: the master's priority is lower than ours (6.4.2).
    Preempted { lower_master: IpAddr, priority: u8 },
    /// An advert with a higher priority, or an equal one from a higher address (6.4.3).
    HigherPriority { from: IpAddr, priority: u8 },
    /// A tracked object failed (keepalived's FAULT).
    TrackFailed { track: super::TrackId },
    /// Every tracked object is up again.
    TrackRecovered,
    /// Another instance of the sync group changed state.
    SyncGroup { group: String, member: String },
    /// The daemon is stopping (6.4.3 Shutdown).
    Shutdown,
}

impl Reason {
    /// The kind of reason, without addresses or names: a bounded set (metrics label it).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::StartAsMaster => "start_as_master",
            Self::Resumed => "resumed",
            Self::AddressOwner => "address_owner",
            Self::MasterDown { .. } => "master_down",
            Self::MasterResigned { .. } => "master_resigned",
            Self::Preempted { .. } => "preempted",
            Self::HigherPriority { .. } => "higher_priority",
            Self::TrackFailed { .. } => "track_failed",
            Self::TrackRecovered => "track_recovered",
            Self::SyncGroup { .. } => "sync_group",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Startup => write!(f, "startup"),
            Self::StartAsMaster => write!(f, "startup as master"),
            Self::Resumed => write!(f, "resumed as master after a hitless restart"),
            Self::AddressOwner => write!(f, "address owner (priority 255)"),
            Self::MasterDown {
                last_master: Some(m),
            } => write!(f, "master {m} down"),
            Self::MasterDown { last_master: None } => write!(f, "no master seen"),
            Self::MasterResigned { from } => write!(f, "master {from} resigned (priority 0)"),
            Self::Preempted {
                lower_master,
                priority,
            } => {
                write!(
                    f,
                    "preempting lower-priority master {lower_master} (priority {priority})"
                )
            }
            Self::HigherPriority { from, priority } => {
                write!(f, "advert from {from} with priority {priority}")
            }
            Self::TrackFailed { track } => write!(f, "tracked {track} failed"),
            Self::TrackRecovered => write!(f, "tracked objects recovered"),
            Self::SyncGroup { group, member } => write!(f, "sync group {group} follows {member}"),
            Self::Shutdown => write!(f, "shutdown"),
        }
    }
}

/// The fields of an accepted advert the state machine uses.
struct AdvertSeen {
    priority: u8,
    interval_cs: u16,
}

/// What an instance counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub priority_zero_sent: u64,
    pub priority_zero_received: u64,
    pub became_master: u64,
    /// Adverts whose address list differs from ours (logged, not fatal).
    pub address_mismatch: u64,
    /// Adverts discarded, by reason.
    pub discarded: BTreeMap<Discard, u64>,
}

/// The last master heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterSeen {
    pub addr: IpAddr,
    pub priority: u8,
    pub interval_cs: u16,
    pub at: Time,
}

/// A read-only snapshot of an instance, for status output.
#[derive(Clone, Debug)]
pub struct InstanceStatus {
    pub name: String,
    pub key: InstanceKey,
    pub state: State,
    pub effective_priority: u8,
    pub master_adver_interval_cs: u16,
    pub master: Option<MasterSeen>,
    pub counters: Counters,
    pub peer_checksum_forms: Vec<(IpAddr, ChecksumForm)>,
}

/// What a tracked object contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contribution {
    Delta(i64),
    Fault,
}

#[derive(Debug)]
pub(crate) struct Instance {
    pub cfg: InstanceConfig,
    pub state: State,
    started: Option<Time>,
    startup_timer: Option<Time>,
    adver_timer: Option<Time>,
    master_down_timer: Option<Time>,
    master_adver_interval_us: u64,
    /// Why the Master_Down_Timer would fire now.
    down_reason: Reason,
    /// Since when a lower-priority master has been accepted while preempt_delay runs.
    lower_master_since: Option<Time>,
    tracks: Vec<Contribution>,
    announcer: Announcer,
    master: Option<MasterSeen>,
    peer_forms: BTreeMap<IpAddr, ChecksumForm>,
    pub counters: Counters,
    /// The last adverts encoded and the priority they carry: a master sends the same bytes
    /// every interval (the configuration never changes under a running instance).
    sent: Option<(u8, Vec<Action>)>,
    /// A master whose periodic adverts the shell sends (see [`super::Paced`]): the first
    /// slot the shell took, so that the Adver_Timer can be re-armed on the same grid (the
    /// interval is the instance's own). The Adver_Timer is off meanwhile.
    paced: Option<Time>,
}

impl Instance {
    pub fn new(cfg: InstanceConfig) -> Self {
        let tracks = cfg
            .tracks
            .iter()
            .map(|t| contribution(t.weight, t.reverse, t.initial))
            .collect();
        Self {
            master_adver_interval_us: u64::from(cfg.advert_interval_cs) * CS,
            cfg,
            state: State::Initialize,
            started: None,
            startup_timer: None,
            adver_timer: None,
            master_down_timer: None,
            down_reason: Reason::MasterDown { last_master: None },
            lower_master_since: None,
            tracks,
            announcer: Announcer::default(),
            master: None,
            peer_forms: BTreeMap::new(),
            counters: Counters::default(),
            sent: None,
            paced: None,
        }
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            iface: self.cfg.iface,
            family: self.cfg.family(),
            vrid: self.cfg.vrid,
        }
    }

    /// The priority after tracking: the address owner stays 255; others are clamped to 1-254
    /// (keepalived's semantics: the sum of the weights of the tracked objects).
    pub fn effective_priority(&self) -> u8 {
        if self.cfg.priority == 255 {
            return 255;
        }
        let delta: i64 = self
            .tracks
            .iter()
            .map(|c| match c {
                Contribution::Delta(d) => *d,
                Contribution::Fault => 0,
            })
            .sum();
        (i64::from(self.cfg.priority) + delta).clamp(1, 254) as u8
    }

    /// The first tracked object in fault, if any.
    pub fn own_fault(&self) -> Option<&super::TrackId> {
        self.tracks
            .iter()
            .position(|c| *c == Contribution::Fault)
            .map(|i| &self.cfg.tracks[i].name)
    }

    fn own_interval_us(&self) -> u64 {
        u64::from(self.cfg.advert_interval_cs) * CS
    }

    /// Skew_Time: RFC 5798 section 6.1 for VRRPv3 (scaled by Master_Adver_Interval), RFC 3768
    /// section 6.1 for VRRPv2 (fractions of a second). Microseconds, so nothing truncates to 0.
    pub fn skew_us(&self) -> u64 {
        let weight = 256 - u64::from(self.effective_priority());
        match self.cfg.version {
            Version::V3 => weight * self.master_adver_interval_us / 256,
            Version::V2 => weight * 1_000_000 / 256,
        }
    }

    /// Master_Down_Interval = down_factor x Master_Adver_Interval + Skew_Time (6.1).
    pub fn master_down_interval_us(&self) -> u64 {
        u64::from(self.cfg.down_factor) * self.master_adver_interval_us + self.skew_us()
    }

    pub fn next_timeout(&self) -> Option<Time> {
        [
            self.startup_timer,
            self.adver_timer,
            self.master_down_timer,
            self.announcer.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn status(&self) -> InstanceStatus {
        InstanceStatus {
            name: self.cfg.name.clone(),
            key: self.key(),
            state: self.state,
            effective_priority: self.effective_priority(),
            master_adver_interval_cs: (self.master_adver_interval_us / CS) as u16,
            master: self.master,
            counters: self.counters.clone(),
            peer_checksum_forms: self.peer_forms.iter().map(|(a, f)| (*a, *f)).collect(),
        }
    }

    // ---- inputs ----

    /// Startup event (6.4.1), after the configured startup delay.
    pub fn start(&mut self, now: Time, out: &mut Vec<Action>) {
        self.started = Some(now);
        if self.cfg.startup_delay_us > 0 {
            self.startup_timer = Some(now.plus(self.cfg.startup_delay_us));
        } else {
            self.leave_initialize(now, out);
        }
    }

    fn leave_initialize(&mut self, now: Time, out: &mut Vec<Action>) {
        self.startup_timer = None;
        if let Some(track) = self.own_fault() {
            let track = track.to_owned();
            self.transition(now, State::Fault, Reason::TrackFailed { track }, out);
        } else if self.cfg.priority == 255 {
            // 6.4.1: the owner sends an advert, announces, and becomes master.
            self.transition(now, State::Master, Reason::AddressOwner, out);
        } else if self.cfg.resume_as_master {
            // A hitless restart: this node was master and its data plane never stopped.
            self.transition(now, State::Master, Reason::Resumed, out);
        } else if self.cfg.start_as_master {
            // keepalived's `state MASTER`: take over at once; a better master's advert (or our
            // answer to a worse one) settles it within one delivery.
            self.transition(now, State::Master, Reason::StartAsMaster, out);
        } else {
            self.master_adver_interval_us = self.own_interval_us();
            self.transition(now, State::Backup, Reason::Startup, out);
        }
    }

    /// Shutdown event (6.4.2, 6.4.3): a master resigns with priority 0.
    pub fn shutdown(&mut self, now: Time, out: &mut Vec<Action>) {
        self.startup_timer = None;
        self.transition(now, State::Initialize, Reason::Shutdown, out);
    }

    /// Timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.startup_timer.is_some_and(|t| t <= now) {
            self.leave_initialize(now, out);
        }
        if self.state == State::Backup && self.master_down_timer.is_some_and(|t| t <= now) {
            // 6.4.2: Master_Down_Timer fired: become master.
            let reason = self.down_reason.clone();
            self.transition(now, State::Master, reason, out);
        }
        if self.state == State::Master && self.adver_timer.is_some_and(|t| t <= now) {
            // 6.4.3: Adver_Timer fired: send an advert and rearm.
            self.send_advert(self.effective_priority(), out);
            self.adver_timer = Some(now.plus(self.own_interval_us()));
        }
        if self.state == State::Master {
            let key = self.key();
            for addr in self
                .announcer
                .poll(now, &self.cfg.all_vips(), &self.cfg.announce)
            {
                out.push(Action::Announce { key, addr });
            }
        }
    }

    /// Checks an advert for this instance against the receive rules of RFC 5798 section 7.1
    /// (and RFC 3768 section 7.1 for VRRPv2); the engine has already verified the checksum.
    fn accept(&self, src: IpAddr, ttl: u8, advert: &Advert) -> Result<(), Discard> {
        if src == self.cfg.primary {
            return Err(Discard::OwnAdvert);
        }
        match &self.cfg.transport {
            // 7.1: the TTL / hop limit of a multicast advert must be 255.
            Transport::Multicast => {
                if ttl != 255 {
                    return Err(Discard::Ttl);
                }
            }
            Transport::Unicast { peers, check_ttl } => {
                if !peers.contains(&src) {
                    return Err(Discard::PeerNotAllowed);
                }
                if *check_ttl && ttl != 255 {
                    return Err(Discard::Ttl);
                }
            }
        }
        if advert.version != self.cfg.version {
            return Err(Discard::VersionMismatch);
        }
        if self.cfg.version == Version::V2 {
            // RFC 3768 7.1: the auth type must match ours, and for simple text the password.
            match (self.cfg.auth, advert.auth) {
                (Auth::None, Auth::None) => {}
                (Auth::Simple(ours), Auth::Simple(theirs)) if ours == theirs => {}
                _ => return Err(Discard::AuthMismatch),
            }
            // RFC 3768 7.1: the advert interval must be the locally configured one.
            if advert.interval_cs != self.cfg.advert_interval_cs.div_ceil(100) * 100 {
                return Err(Discard::IntervalMismatch);
            }
        }
        Ok(())
    }

    /// A received advert (6.4.2 in Backup, 6.4.3 in Master).
    pub fn handle_advert(
        &mut self,
        now: Time,
        src: IpAddr,
        ttl: u8,
        advert: &Advert,
        form: ChecksumForm,
        out: &mut Vec<Action>,
    ) -> Result<(), Discard> {
        if let Err(why) = self.accept(src, ttl, advert) {
            *self.counters.discarded.entry(why).or_default() += 1;
            return Err(why);
        }
        let mismatch = !same_set(&advert.addrs, &self.cfg.vips);
        self.process(
            now,
            src,
            advert.priority,
            advert.interval_cs,
            mismatch,
            form,
            out,
        );
        Ok(())
    }

    /// An advert the data plane validated (TTL, version, length, checksum, unicast peer) and
    /// summarised; the rules that need the instance are applied here.
    pub fn handle_heard(
        &mut self,
        now: Time,
        heard: &Heard,
        out: &mut Vec<Action>,
    ) -> Result<(), Discard> {
        let why = if heard.src == self.cfg.primary {
            Some(Discard::OwnAdvert)
        } else if self.cfg.version == Version::V2
            && heard.interval_cs != self.cfg.advert_interval_cs.div_ceil(100) * 100
        {
            Some(Discard::IntervalMismatch)
        } else {
            None
        };
        if let Some(why) = why {
            *self.counters.discarded.entry(why).or_default() += 1;
            return Err(why);
        }
        // Only the count is known: a different count is a different list.
        let mismatch = usize::from(heard.count) != self.cfg.vips.len();
        self.process(
            now,
            heard.src,
            heard.priority,
            heard.interval_cs,
            mismatch,
            heard.form,
            out,
        );
        Ok(())
    }

    /// The state machine's part of receiving an accepted advert.
    #[allow(clippy::too_many_arguments)]
    fn process(
        &mut self,
        now: Time,
        src: IpAddr,
        priority: u8,
        interval_cs: u16,
        address_mismatch: bool,
        form: ChecksumForm,
        out: &mut Vec<Action>,
    ) {
        let advert = AdvertSeen {
            priority,
            interval_cs,
        };
        self.counters.adverts_received += 1;
        if self.peer_forms.insert(src, form) != Some(form) && self.cfg.family() == Family::V4 {
            debug!(vrid = self.cfg.vrid, instance = %self.cfg.name, state = %self.state, peer = %src, ?form, "peer's VRRPv3 checksum form");
        }
        // 7.1: a different address list is logged and counted, not fatal.
        if advert.priority != 0 && address_mismatch {
            self.counters.address_mismatch += 1;
            if self.counters.address_mismatch == 1 {
                warn!(vrid = self.cfg.vrid, instance = %self.cfg.name, state = %self.state, peer = %src, ours = ?self.cfg.vips,
                    "advert's address list differs from ours");
            }
        }
        if advert.priority == 0 {
            self.counters.priority_zero_received += 1;
        }
        let local = self.effective_priority();
        match self.state {
            State::Backup => {
                if advert.priority == 0 {
                    // 6.4.2: the master resigned: take over after Skew_Time only.
                    self.master_down_timer = Some(now.plus(self.skew_us()));
                    self.down_reason = Reason::MasterResigned { from: src };
                    return;
                }
                let lower = advert.priority < local;
                let delaying = lower && self.cfg.preempt && self.preempt_delayed(now);
                if !self.cfg.preempt || !lower || delaying {
                    // 6.4.2: accept this master; VRRPv3 learns its interval.
                    self.record_master(now, src, &advert);
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval_us = u64::from(advert.interval_cs) * CS;
                    }
                    self.master_down_timer = Some(now.plus(self.master_down_interval_us()));
                    self.down_reason = Reason::MasterDown {
                        last_master: Some(src),
                    };
                    if !lower {
                        self.lower_master_since = None;
                    }
                } else {
                    // 6.4.2: preempt: discard, so that the Master_Down_Timer fires.
                    self.down_reason = Reason::Preempted {
                        lower_master: src,
                        priority: advert.priority,
                    };
                }
            }
            State::Master => {
                if advert.priority == 0 {
                    // 6.4.3: another master resigned: advertise at once.
                    self.send_advert(local, out);
                    self.adver_timer = Some(now.plus(self.own_interval_us()));
                } else if advert.priority > local
                    || (advert.priority == local && ip_greater(&src, &self.cfg.primary))
                {
                    // keepalived's higher_prio_send_advert: one advert of ours first.
                    if self.cfg.advert_before_yield {
                        self.send_advert(local, out);
                    }
                    // 6.4.3: a better master: become backup.
                    self.record_master(now, src, &advert);
                    self.master_adver_interval_us = match self.cfg.version {
                        Version::V3 => u64::from(advert.interval_cs) * CS,
                        Version::V2 => self.own_interval_us(),
                    };
                    self.transition(
                        now,
                        State::Backup,
                        Reason::HigherPriority {
                            from: src,
                            priority: advert.priority,
                        },
                        out,
                    );
                    self.down_reason = Reason::MasterDown {
                        last_master: Some(src),
                    };
                } else {
                    if self.cfg.answer_lower_priority {
                        // RFC 9568 6.4.3: answer a lower-priority master at once, so it yields
                        // within one delivery instead of one advert interval.
                        self.send_advert(local, out);
                        self.adver_timer = Some(now.plus(self.own_interval_us()));
                    }
                    // keepalived: announce the VIPs again (garp_lower_prio_repeat, and again
                    // after garp_lower_prio_delay), so that clients the lower one drew come back.
                    let vips = self.cfg.all_vips();
                    self.announcer
                        .lower_priority_heard(now, &vips, &self.cfg.announce);
                    for addr in self.announcer.poll(now, &vips, &self.cfg.announce) {
                        out.push(Action::Announce {
                            key: self.key(),
                            addr,
                        });
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// Whether preempt_delay still holds back preemption of a lower-priority master.
    fn preempt_delayed(&mut self, now: Time) -> bool {
        let delay = self.cfg.preempt_delay_us;
        if delay == 0 {
            return false;
        }
        let since = *self.lower_master_since.get_or_insert(now);
        let started = self.started.unwrap_or(now);
        now < since.plus(delay) || now < started.plus(delay)
    }

    fn record_master(&mut self, now: Time, src: IpAddr, advert: &AdvertSeen) {
        self.master = Some(MasterSeen {
            addr: src,
            priority: advert.priority,
            interval_cs: advert.interval_cs,
            at: now,
        });
    }

    /// A tracked object changed. Returns true when the effective priority or fault changed.
    pub fn set_track(&mut self, index: usize, input: TrackInput) -> bool {
        let t = &self.cfg.tracks[index];
        let new = contribution(t.weight, t.reverse, input);
        let old = std::mem::replace(&mut self.tracks[index], new);
        old != new
    }

    /// Applies the tracking result: Fault in or out, and an advert at once when a master's
    /// priority changed.
    pub fn apply_tracking(&mut self, now: Time, old_priority: u8, out: &mut Vec<Action>) {
        match (self.own_fault(), self.state) {
            (Some(track), State::Backup | State::Master) => {
                let track = track.to_owned();
                self.transition(now, State::Fault, Reason::TrackFailed { track }, out);
            }
            (None, State::Fault) => self.leave_fault(now, Reason::TrackRecovered, out),
            (None, State::Master) if self.effective_priority() != old_priority => {
                self.send_advert(self.effective_priority(), out);
                self.adver_timer = Some(now.plus(self.own_interval_us()));
            }
            _ => {}
        }
    }

    /// Out of Fault: as at startup, the owner is master at once, others start as backup.
    pub fn leave_fault(&mut self, now: Time, reason: Reason, out: &mut Vec<Action>) {
        if self.cfg.priority == 255 {
            self.transition(now, State::Master, reason, out);
        } else {
            self.master_adver_interval_us = self.own_interval_us();
            self.transition(now, State::Backup, reason, out);
        }
    }

    // ---- effects ----

    /// Hands the periodic adverts of a master to the shell: the adverts it sent last (at its
    /// effective priority), the interval, and the next slot; the Adver_Timer is off until
    /// [`Self::stop_pacing`] or [`Self::unpace`]. None unless this is a master with its
    /// Adver_Timer armed and its adverts encoded at its effective priority, that `can` accepts.
    pub fn take_paced(&mut self, can: impl Fn(InstanceKey) -> bool) -> Option<super::Paced> {
        let next = self.adver_timer?;
        let priority = self.effective_priority();
        let adverts = match (&self.sent, self.state) {
            (Some((p, adverts)), State::Master) if *p == priority && self.paced.is_none() => {
                adverts
                    .iter()
                    .filter_map(|a| match a {
                        Action::Send { dst, bytes, .. } => Some((*dst, bytes.clone())),
                        _ => None,
                    })
                    .collect()
            }
            _ => return None,
        };
        if !can(self.key()) {
            return None;
        }
        self.adver_timer = None;
        self.paced = Some(next);
        Some(super::Paced {
            key: self.key(),
            adverts,
            every_us: self.own_interval_us(),
            next,
        })
    }

    /// The engine takes its adverts back (it is about to send or change state): the shell is
    /// told first, so that nothing it sends on the instance's behalf follows what comes next.
    fn stop_pacing(&mut self, out: &mut Vec<Action>) {
        if self.paced.take().is_some() {
            out.push(Action::Unpace { key: self.key() });
        }
    }

    /// The shell stopped sending on the instance's behalf at `now` (having sent every slot
    /// due by then): the Adver_Timer is re-armed at the first slot after `now`.
    pub fn unpace(&mut self, now: Time) {
        if let Some(first) = self.paced.take() {
            let every = self.own_interval_us().max(1);
            self.adver_timer = Some(if now < first {
                first
            } else {
                first.plus((now.since(first) / every + 1) * every)
            });
        }
    }

    /// Whether the shell sends this instance's periodic adverts.
    pub fn is_paced(&self) -> bool {
        self.paced.is_some()
    }

    fn send_advert(&mut self, priority: u8, out: &mut Vec<Action>) {
        // The engine sends itself: the shell stops sending on its behalf first.
        self.stop_pacing(out);
        match &self.sent {
            Some((p, adverts)) if *p == priority => out.extend(adverts.iter().cloned()),
            _ => {
                let adverts = self.adverts(priority);
                out.extend(adverts.iter().cloned());
                self.sent = Some((priority, adverts));
            }
        }
        self.counters.adverts_sent += 1;
        if priority == 0 {
            self.counters.priority_zero_sent += 1;
        }
    }

    /// The advert with `priority`, one [`Action::Send`] per destination (the multicast group,
    /// or every unicast peer).
    fn adverts(&self, priority: u8) -> Vec<Action> {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: self.cfg.advert_interval_cs,
            addrs: self.cfg.vips.clone(),
            auth: self.cfg.auth,
        };
        let key = self.key();
        let src = self.cfg.primary;
        let dsts: Vec<IpAddr> = match &self.cfg.transport {
            Transport::Multicast => vec![super::multicast_group(self.cfg.family())],
            Transport::Unicast { peers, .. } => peers.clone(),
        };
        dsts.into_iter()
            .filter_map(|dst| match advert.encode(self.cfg.checksum_form, src, dst) {
                Ok(bytes) => Some(Action::Send {
                    key,
                    src,
                    dst,
                    bytes,
                }),
                // Configs are validated; an advert that cannot be encoded is a bug to log.
                Err(err) => {
                    warn!(vrid = self.cfg.vrid, instance = %self.cfg.name, state = %self.state, %dst, ?err, "cannot encode advert");
                    None
                }
            })
            .collect()
    }

    /// What this instance advertises now if it is master (for a hitless restart to send on
    /// while the next daemon loads); nothing otherwise.
    pub fn master_adverts(&self) -> Vec<Action> {
        if self.state == State::Master {
            self.adverts(self.effective_priority())
        } else {
            Vec::new()
        }
    }

    /// The one function that changes state. It emits, in order, the side effects of leaving
    /// the old state and entering the new one, then logs and reports the change.
    pub fn transition(&mut self, now: Time, new: State, reason: Reason, out: &mut Vec<Action>) {
        let old = self.state;
        if old == new {
            return;
        }
        self.stop_pacing(out);
        let key = self.key();
        self.state = new;
        self.lower_master_since = None;
        // Leaving.
        match old {
            State::Master => {
                // The data plane stops answering first, then announcements stop; on
                // shutdown or fault the master resigns with priority 0 (6.4.3), then the VIPs go.
                out.push(Action::DataPlane {
                    key,
                    role: new.data_plane_role(),
                });
                self.announcer.stop();
                self.adver_timer = None;
                if matches!(new, State::Initialize | State::Fault) {
                    self.send_advert(0, out);
                }
                out.push(Action::RemoveVips {
                    key,
                    vips: self.cfg.all_vips(),
                    accept_mode: self.cfg.accept_mode,
                });
            }
            State::Backup => self.master_down_timer = None,
            State::Initialize | State::Fault => {}
        }
        // Entering.
        match new {
            State::Master => {
                // 6.4.1 / 6.4.2: advertise at once, take the VIPs, then let the data plane
                // claim them, then announce them.
                self.counters.became_master += 1;
                self.master_down_timer = None;
                self.send_advert(self.effective_priority(), out);
                self.adver_timer = Some(now.plus(self.own_interval_us()));
                out.push(Action::AddVips {
                    key,
                    vips: self.cfg.all_vips(),
                    accept_mode: self.cfg.accept_mode,
                });
                out.push(Action::DataPlane {
                    key,
                    role: role::MASTER,
                });
                self.announcer
                    .start(now, &self.cfg.all_vips(), &self.cfg.announce);
                for addr in self
                    .announcer
                    .poll(now, &self.cfg.all_vips(), &self.cfg.announce)
                {
                    out.push(Action::Announce { key, addr });
                }
            }
            State::Backup => {
                self.master_down_timer = Some(now.plus(self.master_down_interval_us()));
                self.down_reason = Reason::MasterDown {
                    last_master: self.master.map(|m| m.addr),
                };
                if old != State::Master {
                    out.push(Action::DataPlane {
                        key,
                        role: role::BACKUP,
                    });
                }
            }
            State::Initialize | State::Fault => {
                self.master_down_timer = None;
                if old != State::Master {
                    out.push(Action::DataPlane {
                        key,
                        role: new.data_plane_role(),
                    });
                }
            }
        }
        info!(vrid = key.vrid, instance = %self.cfg.name, %old, %new, %reason, state = %new, "state change");
        out.push(Action::StateChanged {
            key,
            name: self.cfg.name.clone(),
            old,
            new,
            reason,
        });
    }
}

/// keepalived's tracking semantics. Up/down objects: weight 0 puts the instance in Fault when
/// down; a positive weight is added while up; a negative weight is added while down. `reverse`
/// (keepalived's `weight W reverse`) turns the adjustment around: a positive weight is
/// subtracted while up, a negative one is subtracted (so, added) while down, and weight 0 means
/// Fault while up. A value (track_file) is multiplied by the weight (by minus the weight with
/// `reverse`); -254 or less is Fault; with weight 0 any value but 0 is Fault.
fn contribution(weight: i32, reverse: bool, input: TrackInput) -> Contribution {
    let weight = i64::from(weight);
    let signed = if reverse { -weight } else { weight };
    match input {
        TrackInput::Up | TrackInput::Down => {
            let up = input == TrackInput::Up;
            match weight {
                0 if up == reverse => Contribution::Fault,
                0 => Contribution::Delta(0),
                w if (w > 0) == up => Contribution::Delta(signed),
                _ => Contribution::Delta(0),
            }
        }
        // Weight 0 on a value: Fault while it is not 0 (with `reverse`, while it is 0).
        TrackInput::Value(v) if weight == 0 => {
            if (v != 0) != reverse {
                Contribution::Fault
            } else {
                Contribution::Delta(0)
            }
        }
        TrackInput::Value(v) => {
            let d = v.saturating_mul(signed);
            if d <= -254 {
                Contribution::Fault
            } else {
                Contribution::Delta(d)
            }
        }
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The tie-break of 6.4.3: the higher primary address wins, compared as unsigned integers.
fn ip_greater(a: &IpAddr, b: &IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(*a) > u32::from(*b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(*a) > u128::from(*b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_follows_keepalived() {
        use Contribution::*;
        use TrackInput::*;
        assert_eq!(contribution(0, false, Up), Delta(0));
        assert_eq!(contribution(0, false, Down), Fault);
        assert_eq!(contribution(0, true, Up), Fault);
        assert_eq!(contribution(10, false, Up), Delta(10));
        assert_eq!(contribution(10, false, Down), Delta(0));
        assert_eq!(contribution(-20, false, Up), Delta(0));
        assert_eq!(contribution(-20, false, Down), Delta(-20));
        assert_eq!(contribution(-20, true, Up), Delta(0));
        assert_eq!(contribution(-20, true, Down), Delta(20));
        assert_eq!(contribution(10, true, Up), Delta(-10));
        assert_eq!(contribution(10, true, Down), Delta(0));
        assert_eq!(contribution(0, false, Value(-30)), Fault);
        assert_eq!(contribution(0, false, Value(0)), Delta(0));
        assert_eq!(contribution(0, true, Value(0)), Fault);
        assert_eq!(contribution(0, true, Value(3)), Delta(0));
        assert_eq!(contribution(2, false, Value(7)), Delta(14));
        assert_eq!(contribution(1, false, Value(-254)), Fault);
        assert_eq!(contribution(-1, true, Value(5)), Delta(5));
    }

    #[test]
    fn tie_break_compares_addresses_as_integers() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(ip_greater(&a, &b));
        assert!(!ip_greater(&b, &a));
        let c: IpAddr = "fe80::2".parse().unwrap();
        let d: IpAddr = "fe80::1:0".parse().unwrap();
        assert!(ip_greater(&d, &c));
    }
}

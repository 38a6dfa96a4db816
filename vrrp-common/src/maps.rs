//! Map names, capacities and the key/value types of every map shared with the kernel.
//!
//! Byte order is part of each field's contract and is named in its doc: addresses are kept as
//! byte arrays in network order (as they stand in the packet), counters, states and times in
//! host order. Times are `CLOCK_MONOTONIC_COARSE` nanoseconds (the kernel's
//! `bpf_ktime_get_coarse_ns`), which the daemon reads with `clock_gettime` as well, except the
//! heartbeat's deadline, in the kernel's jiffies (see [`crate::jiffies`]).

use crate::jiffies::JiffyClock;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "xvrrp";
/// Name of the program the daemon samples the kernel's jiffies with (BPF_PROG_TEST_RUN only,
/// never attached): it writes jiffies, then CLOCK_MONOTONIC ns, into the frame's first 16
/// bytes, native byte order.
pub const CLOCK_PROGRAM_NAME: &str = "xvrrp_clock";

/// IPv4 VIPs this node serves: [`Vip4Key`] -> [`VipValue`].
pub const MAP_VIPS_V4: &str = "XVRRP_VIPS4";
/// IPv6 VIPs this node serves: [`Vip6Key`] -> [`VipValue`].
pub const MAP_VIPS_V6: &str = "XVRRP_VIPS6";
/// Array indexed by [`slot`] (family and VRID): [`VridState`], written by the daemon.
pub const MAP_VRIDS: &str = "XVRRP_VRIDS";
/// Array indexed by [`slot`]: [`Liveness`] of the master heard for that VRID, written by XDP.
pub const MAP_LIVENESS: &str = "XVRRP_LIVENESS";
/// Per-CPU array indexed by [`slot`]: [`VridStats`].
pub const MAP_VRID_STATS: &str = "XVRRP_VRIDSTATS";
/// Per-CPU array indexed by [`VipValue::stats_index`]: [`VipStats`].
pub const MAP_VIP_STATS: &str = "XVRRP_VIPSTATS";
/// Unicast peers allowed per VRID: [`PeerKey`] -> u32 (1).
pub const MAP_PEERS: &str = "XVRRP_PEERS";
/// Array with one [`Heartbeat`], written by the daemon every few milliseconds.
pub const MAP_HEARTBEAT: &str = "XVRRP_HEARTBT";
/// Ring buffer of [`Event`]s for the daemon.
pub const MAP_EVENTS: &str = "XVRRP_EVENTS";

/// BPF_F_MMAPABLE: an array map the daemon maps into its memory ([`MAP_LIVENESS`],
/// [`MAP_HEARTBEAT`]), read and written without a syscall.
pub const MAP_F_MMAPABLE: usize = 1 << 10;

/// Capacity of each VIP map, and of [`MAP_VIP_STATS`].
pub const MAX_VIPS: u32 = 1024;
/// Slots of the per-VRID arrays: 256 VRIDs for IPv4, then 256 for IPv6 (separate spaces).
pub const MAX_SLOTS: u32 = 512;
/// Capacity of [`MAP_PEERS`].
pub const MAX_PEERS: u32 = 1024;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 64 * 1024;

/// Name of the load-time global holding the interface's own MAC address (`[u8; 6]`).
pub const GLOBAL_IFACE_MAC: &str = "XVRRP_IFACE_MAC";

/// The slot of the per-VRID arrays for a VRID of IPv4 (`ipv6` false) or IPv6.
pub const fn slot(ipv6: bool, vrid: u8) -> u32 {
    vrid as u32 + if ipv6 { 256 } else { 0 }
}

/// Key of [`MAP_VIPS_V4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip4Key {
    /// The virtual IPv4 address, network byte order.
    pub addr: [u8; 4],
}

/// Key of [`MAP_VIPS_V6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip6Key {
    /// The virtual IPv6 address, network byte order.
    pub addr: [u8; 16],
}

/// Value of the VIP maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipValue {
    /// The VRID whose state (in its family's slot of [`MAP_VRIDS`]) decides the answers.
    pub vrid: u8,
    /// [`vip_flags`] bits.
    pub flags: u8,
    /// Source MAC of the answers: the interface's, or the VRRP virtual MAC.
    pub mac: [u8; 6],
    /// Index of this VIP's counters in [`MAP_VIP_STATS`], host byte order.
    pub stats_index: u32,
}

/// Bits of [`VipValue::flags`].
pub mod vip_flags {
    /// The VIP is not on the interface (someone deleted it, or adding it failed): requests for
    /// it pass to the kernel, unanswered by the data plane, whatever the role.
    pub const ABSENT: u8 = 1;
    /// The VIP's instance runs the other address family (keepalived's
    /// `virtual_ipaddress_excluded` of either family): its role is in that family's slot.
    pub const OTHER_FAMILY: u8 = 2;
}

/// The slot of [`MAP_VRIDS`] whose role decides the answers for a VIP of family `ipv6`.
pub const fn vip_slot(vip: &VipValue, ipv6: bool) -> u32 {
    slot(ipv6 != (vip.flags & vip_flags::OTHER_FAMILY != 0), vip.vrid)
}

/// Role of this node for one VRID, as published by the daemon in [`VridState::role`].
pub mod role {
    /// Not configured or not started: the VIP is neither answered nor defended.
    pub const INIT: u32 = 0;
    /// Another node is master: requests for the VIP are dropped.
    pub const BACKUP: u32 = 1;
    /// This node is master: requests for the VIP are answered from XDP.
    pub const MASTER: u32 = 2;
    /// A tracked check failed: like backup for the data plane.
    pub const FAULT: u32 = 3;

    /// Name of a role value, for logs and status output.
    pub const fn name(role: u32) -> &'static str {
        match role {
            INIT => "init",
            BACKUP => "backup",
            MASTER => "master",
            FAULT => "fault",
            _ => "unknown",
        }
    }
}

/// Bits of [`VridState::flags`].
pub mod vrid_flags {
    /// The VRID is configured on this interface: its adverts are validated and tracked.
    pub const CONFIGURED: u32 = 1;
    /// Unicast mode: adverts are accepted only from the peers in [`super::MAP_PEERS`].
    pub const UNICAST: u32 = 2;
    /// Unicast mode: require TTL / hop limit 255 as for multicast.
    pub const UNICAST_CHECK_TTL: u32 = 4;
    /// VRRPv2 simple text authentication: adverts must carry auth type 1 and
    /// [`super::VridState::auth`]; without this flag, auth type 0.
    pub const AUTH_SIMPLE: u32 = 8;
    /// Adverts whose address list (by [`super::VridState::addr_hash`]) differs are dropped.
    pub const CHECK_ADDRESSES: u32 = 16;
    /// With [`CHECK_ADDRESSES`]: except from the master last heard (keepalived's
    /// `skip_check_adv_addr`).
    pub const SKIP_CHECK_SAME_MASTER: u32 = 32;
}

/// Value of [`MAP_VRIDS`]. Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VridState {
    /// One of the [`role`] constants.
    pub role: u32,
    /// [`vrid_flags`] bits.
    pub flags: u32,
    /// The VRRP version the instance runs (2 or 3); adverts of another version are dropped.
    pub version: u32,
    /// With [`vrid_flags::AUTH_SIMPLE`]: the VRRPv2 password, zero-padded.
    pub auth: [u8; 8],
    /// With [`vrid_flags::CHECK_ADDRESSES`]: [`crate::vrrp::address_set_hash`] of the
    /// instance's VIPs.
    pub addr_hash: u32,
}

/// Key of [`MAP_PEERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// [`slot`] of the VRID, host byte order.
    pub slot: u32,
    /// The peer's address, network order; an IPv4 address fills the first 4 bytes, rest zero.
    pub addr: [u8; 16],
}

/// Checksum forms, as in [`Liveness::checksum_form`].
pub mod checksum_form {
    /// The VRRP message alone.
    pub const PLAIN: u8 = 1;
    /// The message and the IP pseudo-header.
    pub const PSEUDO_HEADER: u8 = 2;
}

/// Value of [`MAP_LIVENESS`]: the last valid advert for a VRID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Liveness {
    /// When it arrived, CLOCK_MONOTONIC_COARSE nanoseconds; 0 if never.
    pub last_seen_ns: u64,
    /// Its source address, network order (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    pub priority: u8,
    pub version: u8,
    /// Number of addresses it carried.
    pub count: u8,
    /// One of [`checksum_form`].
    pub checksum_form: u8,
    /// Advertised interval, centiseconds, host order.
    pub interval_cs: u16,
    pub _pad: [u8; 6],
}

/// Value of [`MAP_HEARTBEAT`] (index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The request gate is open while the kernel's jiffies are at most this: the jiffy of the
    /// daemon's last heartbeat plus the heartbeat limit in whole jiffies (0: never open).
    pub until: u64,
    /// Bit `slot % 64` of word `slot / 64` set: this node is master of that slot's VRID. A copy
    /// of the roles in [`MAP_VRIDS`], kept beside the heartbeat so that the gate on every
    /// request is one lookup; the daemon writes both.
    pub masters: [u64; MASTER_WORDS],
    /// How the daemon that wrote it turns CLOCK_MONOTONIC into jiffies.
    pub clock: JiffyClock,
    /// The heartbeat limit `until` is made with, nanoseconds.
    pub limit_ns: u64,
}

/// Words of [`Heartbeat::masters`]: one bit per slot.
pub const MASTER_WORDS: usize = MAX_SLOTS as usize / 64;

impl Heartbeat {
    /// Whether this node is master of `slot`'s VRID (false for a slot out of range).
    #[inline(always)]
    pub fn is_master(&self, slot: u32) -> bool {
        match self.masters.get((slot / 64) as usize) {
            Some(word) => word & (1 << (slot % 64)) != 0,
            None => false,
        }
    }

    /// Records whether this node is master of `slot`'s VRID; whether that changed anything.
    pub fn set_master(&mut self, slot: u32, master: bool) -> bool {
        let Some(word) = self.masters.get_mut((slot / 64) as usize) else {
            return false;
        };
        let bit = 1 << (slot % 64);
        let before = *word;
        if master {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        *word != before
    }
}

/// Event kinds, as in [`Event::kind`].
pub mod event {
    /// A VRID's master changed: another source, priority or interval than the last advert.
    pub const MASTER_CHANGED: u32 = 1;
    /// A master resigned: an advert with priority 0.
    pub const PRIORITY_ZERO: u32 = 2;
    /// An ARP reply / gratuitous ARP (or NA) for a VIP we are master of, from another MAC.
    pub const FOREIGN_OWNER: u32 = 3;
}

/// An entry of the [`MAP_EVENTS`] ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// One of the [`event`] kinds.
    pub kind: u32,
    /// The [`slot`] concerned.
    pub slot: u32,
    /// CLOCK_MONOTONIC_COARSE nanoseconds.
    pub at_ns: u64,
    /// Advert source, or for FOREIGN_OWNER the VIP; network order.
    pub addr: [u8; 16],
    pub priority: u8,
    pub version: u8,
    pub count: u8,
    pub checksum_form: u8,
    pub interval_cs: u16,
    pub _pad: [u8; 2],
    /// For FOREIGN_OWNER: the other owner's MAC; for an advert: its sender's MAC.
    pub mac: [u8; 6],
    pub _pad2: [u8; 2],
}

/// Value of [`MAP_VRID_STATS`] (per CPU). Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VridStats {
    pub adverts_valid: u64,
    pub adverts_drop_ttl: u64,
    pub adverts_drop_version: u64,
    pub adverts_drop_length: u64,
    pub adverts_drop_checksum: u64,
    /// Adverts for a VRID not configured on this interface: passed to the kernel unvalidated
    /// (another VRRP daemon on the same interface may run it), counted in that VRID's slot.
    pub adverts_other_vrid: u64,
    pub adverts_drop_peer: u64,
    pub adverts_drop_auth: u64,
    /// Adverts whose address list is not the instance's.
    pub adverts_drop_addresses: u64,
    /// Claims on this VRID's VIPs from another MAC while it is master here.
    pub foreign_owner: u64,
}

/// Value of [`MAP_VIP_STATS`] (per CPU). Host byte order.
///
/// Each ARP request or neighbour solicitation for the VIP is counted once, in the field of its
/// verdict, and only here (not per VRID too: one counter per request is part of the answer's
/// cost); a VRID's request counters are the sum over its VIPs, which the daemon computes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStats {
    pub answered: u64,
    pub dropped_not_master: u64,
    pub dropped_stale_heartbeat: u64,
    /// Requests passed to the kernel because the VIP is not on the interface.
    pub passed_absent: u64,
    pub foreign_owner: u64,
}

impl VipStats {
    /// Requests for the VIP, whatever their verdict.
    pub const fn requests(&self) -> u64 {
        self.answered + self.dropped_not_master + self.dropped_stale_heartbeat + self.passed_absent
    }
}

/// Sums counters of the same layout (every field a u64), e.g. over CPUs.
pub trait Counters: Copy + Default {
    /// Adds `other` to `self`, field by field.
    fn add(&mut self, other: &Self);
}

macro_rules! counters {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl Counters for $ty {
            fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters!(VridStats {
    adverts_valid,
    adverts_drop_ttl,
    adverts_drop_version,
    adverts_drop_length,
    adverts_drop_checksum,
    adverts_other_vrid,
    adverts_drop_peer,
    adverts_drop_auth,
    adverts_drop_addresses,
    foreign_owner,
});
counters!(VipStats {
    answered,
    dropped_not_master,
    dropped_stale_heartbeat,
    passed_absent,
    foreign_owner,
});

// Sizes are part of the kernel ABI of the maps: any change must be deliberate.
const _: () = assert!(core::mem::size_of::<Vip4Key>() == 4);
const _: () = assert!(core::mem::size_of::<Vip6Key>() == 16);
const _: () = assert!(core::mem::size_of::<VipValue>() == 12);
const _: () = assert!(core::mem::size_of::<VridState>() == 24);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 20);
const _: () = assert!(core::mem::size_of::<Liveness>() == 40);
const _: () = assert!(core::mem::size_of::<Heartbeat>() == 8 + 8 * MASTER_WORDS + 24 + 8);
const _: () = assert!(core::mem::size_of::<Event>() == 48);
const _: () = assert!(core::mem::size_of::<VridStats>() == 10 * 8);
const _: () = assert!(core::mem::size_of::<VipStats>() == 5 * 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers and byte arrays, with no padding
    // (the sizes are asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Vip4Key {}
    unsafe impl aya::Pod for super::Vip6Key {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::VridState {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::Liveness {}
    unsafe impl aya::Pod for super::Heartbeat {}
    unsafe impl aya::Pod for crate::jiffies::JiffyClock {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::VridStats {}
    unsafe impl aya::Pod for super::VipStats {}
}

/// The VRRP virtual MAC of a VRID for IPv4 (RFC 5798 section 7.3): 00:00:5e:00:01:VRID.
pub const fn virtual_mac_v4(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vrid]
}

/// The VRRP virtual MAC of a VRID for IPv6 (RFC 5798 section 7.3): 00:00:5e:00:02:VRID.
pub const fn virtual_mac_v6(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x02, vrid]
}

/// Whether the heartbeat is fresh when the kernel's jiffies are `jiffies`: the gate is open
/// until its deadline (the kernel's jiffies are never 0, so an entry never written is stale).
#[inline(always)]
pub const fn heartbeat_fresh(jiffies: u64, until: u64) -> bool {
    jiffies <= until
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_macs_follow_rfc_5798() {
        assert_eq!(virtual_mac_v4(51), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac_v6(7), [0, 0, 0x5e, 0, 2, 7]);
    }

    #[test]
    fn counters_add_every_field() {
        let mut a = VipStats {
            answered: 2,
            dropped_not_master: 3,
            dropped_stale_heartbeat: 4,
            passed_absent: 6,
            foreign_owner: 5,
        };
        a.add(&a.clone());
        assert_eq!(
            a,
            VipStats {
                answered: 4,
                dropped_not_master: 6,
                dropped_stale_heartbeat: 8,
                passed_absent: 12,
                foreign_owner: 10
            }
        );
        assert_eq!(a.requests(), 4 + 6 + 8 + 12, "every verdict is a request");
        let mut v = VridStats::default();
        v.add(&VridStats {
            foreign_owner: 7,
            adverts_valid: 1,
            ..Default::default()
        });
        assert_eq!((v.foreign_owner, v.adverts_valid), (7, 1));
    }

    #[test]
    fn slots_keep_families_apart() {
        assert_eq!(slot(false, 51), 51);
        assert_eq!(slot(true, 51), 307);
        assert!(slot(true, 255) < MAX_SLOTS);
    }

    #[test]
    fn master_bits_follow_each_slot_alone() {
        let mut hb = Heartbeat::default();
        assert!(!hb.is_master(slot(false, 51)));
        assert!(hb.set_master(slot(false, 51), true));
        assert!(
            !hb.set_master(slot(false, 51), true),
            "no change the second time"
        );
        assert!(hb.set_master(slot(true, 255), true));
        assert!(hb.is_master(slot(false, 51)) && hb.is_master(slot(true, 255)));
        for other in [
            slot(false, 50),
            slot(false, 52),
            slot(true, 51),
            slot(false, 255),
        ] {
            assert!(!hb.is_master(other), "slot {other}");
        }
        assert!(hb.set_master(slot(false, 51), false));
        assert!(!hb.is_master(slot(false, 51)) && hb.is_master(slot(true, 255)));
        assert!(!hb.is_master(MAX_SLOTS) && !hb.set_master(MAX_SLOTS, true));
    }

    #[test]
    fn heartbeat_freshness() {
        assert!(heartbeat_fresh(1_000, 1_000));
        assert!(!heartbeat_fresh(1_001, 1_000));
        assert!(heartbeat_fresh(900, 1_000));
        assert!(
            !heartbeat_fresh(1, Heartbeat::default().until),
            "never written is never fresh"
        );
    }

    #[test]
    fn role_names() {
        assert_eq!(role::name(role::MASTER), "master");
        assert_eq!(role::name(99), "unknown");
    }
}

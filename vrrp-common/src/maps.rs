//! Map names, capacities and the key/value types of every map shared with the kernel.
//!
//! Byte order is part of each field's contract and is named in its doc: addresses are kept as
//! byte arrays in network order (as they stand in the packet), counters and states in host order.

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "xvrrp";

/// Map of the IPv4 VIPs this node serves: [`Vip4Key`] -> [`VipValue`].
pub const MAP_VIPS_V4: &str = "XVRRP_VIPS4";
/// Array indexed by VRID (0-255): [`VridState`].
pub const MAP_VRIDS: &str = "XVRRP_VRIDS";
/// Per-CPU array with one [`Stats`] entry.
pub const MAP_STATS: &str = "XVRRP_STATS";

/// Capacity of [`MAP_VIPS_V4`].
pub const MAX_VIPS_V4: u32 = 1024;
/// Capacity of [`MAP_VRIDS`]: one slot per possible VRID.
pub const MAX_VRIDS: u32 = 256;

/// Name of the load-time global holding the interface's own MAC address (`[u8; 6]`).
pub const GLOBAL_IFACE_MAC: &str = "XVRRP_IFACE_MAC";

/// Key of [`MAP_VIPS_V4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip4Key {
    /// The virtual IPv4 address, network byte order.
    pub addr: [u8; 4],
}

/// Value of [`MAP_VIPS_V4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipValue {
    /// The VRID whose state in [`MAP_VRIDS`] decides whether this VIP is answered.
    pub vrid: u8,
    /// Reserved, zero.
    pub flags: u8,
    /// Source MAC of the answers: the interface's, or the VRRP virtual MAC 00:00:5e:00:01:VRID.
    pub mac: [u8; 6],
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

/// Value of [`MAP_VRIDS`], indexed by VRID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VridState {
    /// One of the [`role`] constants, host byte order.
    pub role: u32,
}

/// Value of the per-CPU [`MAP_STATS`] array (one entry, index 0). Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// ARP requests seen whose target is a configured VIP.
    pub arp_vip_requests: u64,
    /// ARP replies sent by XDP_TX.
    pub arp_replied: u64,
    /// ARP requests for a VIP dropped because this node is not master of its VRID.
    pub arp_dropped_not_master: u64,
}

impl Stats {
    /// Adds another CPU's counters to these.
    pub fn add(&mut self, other: &Stats) {
        self.arp_vip_requests += other.arp_vip_requests;
        self.arp_replied += other.arp_replied;
        self.arp_dropped_not_master += other.arp_dropped_not_master;
    }
}

// Sizes are part of the kernel ABI of the maps: any change must be deliberate.
const _: () = assert!(core::mem::size_of::<Vip4Key>() == 4);
const _: () = assert!(core::mem::size_of::<VipValue>() == 8);
const _: () = assert!(core::mem::size_of::<VridState>() == 4);
const _: () = assert!(core::mem::size_of::<Stats>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers and byte arrays, with no padding
    // (the sizes are asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Vip4Key {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::VridState {}
    unsafe impl aya::Pod for super::Stats {}
}

/// The VRRP virtual MAC of a VRID for IPv4 (RFC 5798 section 7.3): 00:00:5e:00:01:VRID.
pub const fn virtual_mac_v4(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vrid]
}

/// The VRRP virtual MAC of a VRID for IPv6 (RFC 5798 section 7.3): 00:00:5e:00:02:VRID.
pub const fn virtual_mac_v6(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x02, vrid]
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
    fn stats_add_sums_every_counter() {
        let mut a = Stats {
            arp_vip_requests: 1,
            arp_replied: 2,
            arp_dropped_not_master: 3,
        };
        a.add(&Stats {
            arp_vip_requests: 10,
            arp_replied: 20,
            arp_dropped_not_master: 30,
        });
        assert_eq!(
            a,
            Stats {
                arp_vip_requests: 11,
                arp_replied: 22,
                arp_dropped_not_master: 33
            }
        );
    }

    #[test]
    fn role_names() {
        assert_eq!(role::name(role::MASTER), "master");
        assert_eq!(role::name(99), "unknown");
    }
}

//! Ethernet and ARP (IPv4 over Ethernet) headers as byte views, and the pure decision of what
//! the data plane does with an ARP frame.
//!
//! Headers are `#[repr(C)]` structs of byte arrays (alignment 1), so the eBPF program can view
//! a bounds-checked packet pointer as one, and host tests can build them from byte slices.

use crate::VipValue;

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// ARP operation: request.
pub const ARP_OP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_OP_REPLY: u16 = 2;
/// ARP hardware type of Ethernet.
pub const ARP_HTYPE_ETHERNET: u16 = 1;

/// An Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub ethertype: [u8; 2],
}

impl EthHdr {
    pub const LEN: usize = 14;

    pub const fn ethertype(&self) -> u16 {
        u16::from_be_bytes(self.ethertype)
    }
}

/// An ARP packet for IPv4 over Ethernet (RFC 826), 28 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpIpv4 {
    /// Hardware type, network byte order.
    pub htype: [u8; 2],
    /// Protocol type, network byte order.
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    /// Operation, network byte order.
    pub oper: [u8; 2],
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol (IPv4) address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol (IPv4) address.
    pub tpa: [u8; 4],
}

impl ArpIpv4 {
    pub const LEN: usize = 28;

    pub const fn oper(&self) -> u16 {
        u16::from_be_bytes(self.oper)
    }

    /// Whether this is ARP for IPv4 over Ethernet, the only kind xvrrp answers.
    pub const fn is_ipv4_over_ethernet(&self) -> bool {
        u16::from_be_bytes(self.htype) == ARP_HTYPE_ETHERNET
            && u16::from_be_bytes(self.ptype) == ETH_P_IPV4
            && self.hlen == 6
            && self.plen == 4
    }
}

const _: () = assert!(core::mem::size_of::<EthHdr>() == EthHdr::LEN);
const _: () = assert!(core::mem::size_of::<ArpIpv4>() == ArpIpv4::LEN);

/// The broadcast MAC address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// If this ARP packet asks who has an address, the address asked for.
///
/// Gratuitous ARP (sender and target address equal) is an announcement, not a question, and
/// is left to the kernel; an ARP probe (sender address 0.0.0.0, RFC 5227) is a question.
#[inline(always)]
pub fn asked_address(arp: &ArpIpv4) -> Option<[u8; 4]> {
    if !arp.is_ipv4_over_ethernet() || arp.oper() != ARP_OP_REQUEST || arp.spa == arp.tpa {
        return None;
    }
    Some(arp.tpa)
}

/// Whether a frame with this destination MAC is for this host: broadcast, multicast, the
/// interface's own MAC or the MAC the VIP is answered from. Others only reach us in
/// promiscuous mode and are not ours to answer (the kernel drops them the same way).
#[inline(always)]
pub fn addressed_to_us(dst: &[u8; 6], iface_mac: &[u8; 6], vip_mac: &[u8; 6]) -> bool {
    dst[0] & 1 == 1 || dst == iface_mac || dst == vip_mac
}

/// What the data plane does with a request (ARP or neighbour solicitation) for a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewrite the request into a reply and transmit it back (XDP_TX).
    Reply,
    /// Drop it: this node is not master of the VIP's VRID, so the kernel must not answer either.
    DropNotMaster,
    /// Drop it: this node is master, but the daemon's heartbeat is stale (frozen or killed), so
    /// the claim is no longer trusted.
    DropStaleHeartbeat,
    /// Pass it to the kernel: this node is a live master, but the VIP is not on the interface
    /// (deleted by someone else, or not added yet), so the data plane does not claim it.
    PassAbsent,
}

/// The verdict for a request for a VIP: answered only while this node is master of its VRID
/// AND the daemon's heartbeat is fresh AND the VIP is on the interface (`absent` false).
pub const fn vip_request_verdict(master: bool, heartbeat_fresh: bool, absent: bool) -> Verdict {
    if !master {
        Verdict::DropNotMaster
    } else if !heartbeat_fresh {
        Verdict::DropStaleHeartbeat
    } else if absent {
        Verdict::PassAbsent
    } else {
        Verdict::Reply
    }
}

/// If this ARP packet claims an address (a reply, or a gratuitous ARP) from a MAC that is
/// neither `ours` nor `iface_mac`, the claimed address and the claiming MAC.
#[inline(always)]
pub fn foreign_claim(
    arp: &ArpIpv4,
    ours: &[u8; 6],
    iface_mac: &[u8; 6],
) -> Option<([u8; 4], [u8; 6])> {
    if !arp.is_ipv4_over_ethernet() {
        return None;
    }
    let claims = arp.oper() == ARP_OP_REPLY || (arp.oper() == ARP_OP_REQUEST && arp.spa == arp.tpa);
    (claims && arp.sha != *ours && arp.sha != *iface_mac).then_some((arp.spa, arp.sha))
}

/// Rewrites an ARP request, in place, into the reply that `vip` answers it with: the frame goes
/// back to the asker, from `vip.mac`, saying that the asked address is at `vip.mac`.
#[inline(always)]
pub fn rewrite_to_reply(eth: &mut EthHdr, arp: &mut ArpIpv4, vip: &VipValue) {
    let asker_mac = arp.sha;
    let asker_ip = arp.spa;
    eth.dst = eth.src;
    eth.src = vip.mac;
    arp.oper = ARP_OP_REPLY.to_be_bytes();
    arp.spa = arp.tpa;
    arp.sha = vip.mac;
    arp.tha = asker_mac;
    arp.tpa = asker_ip;
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    fn request(spa: [u8; 4], tpa: [u8; 4]) -> (EthHdr, ArpIpv4) {
        (
            EthHdr {
                dst: BROADCAST,
                src: CLIENT_MAC,
                ethertype: ETH_P_ARP.to_be_bytes(),
            },
            ArpIpv4 {
                htype: [0, 1],
                ptype: [8, 0],
                hlen: 6,
                plen: 4,
                oper: [0, 1],
                sha: CLIENT_MAC,
                spa,
                tha: [0; 6],
                tpa,
            },
        )
    }

    #[test]
    fn a_request_asks_for_its_target() {
        let (_, arp) = request([192, 0, 2, 10], [192, 0, 2, 100]);
        assert_eq!(asked_address(&arp), Some([192, 0, 2, 100]));
    }

    #[test]
    fn an_arp_probe_is_a_question() {
        let (_, arp) = request([0, 0, 0, 0], [192, 0, 2, 100]);
        assert_eq!(asked_address(&arp), Some([192, 0, 2, 100]));
    }

    #[test]
    fn gratuitous_arp_and_replies_are_not_questions() {
        let (_, garp) = request([192, 0, 2, 100], [192, 0, 2, 100]);
        assert_eq!(asked_address(&garp), None);
        let (_, mut reply) = request([192, 0, 2, 10], [192, 0, 2, 100]);
        reply.oper = [0, 2];
        assert_eq!(asked_address(&reply), None);
    }

    #[test]
    fn arp_for_other_hardware_or_protocols_is_not_ours() {
        let (_, mut arp) = request([192, 0, 2, 10], [192, 0, 2, 100]);
        arp.htype = [0, 6];
        assert_eq!(asked_address(&arp), None);
        let (_, mut arp) = request([192, 0, 2, 10], [192, 0, 2, 100]);
        arp.plen = 16;
        assert_eq!(asked_address(&arp), None);
    }

    #[test]
    fn only_a_live_master_replies() {
        assert_eq!(vip_request_verdict(true, true, false), Verdict::Reply);
        assert_eq!(
            vip_request_verdict(true, false, false),
            Verdict::DropStaleHeartbeat
        );
        assert_eq!(vip_request_verdict(true, true, true), Verdict::PassAbsent);
        assert_eq!(
            vip_request_verdict(true, false, true),
            Verdict::DropStaleHeartbeat
        );
        for (fresh, absent) in [(true, false), (false, false), (true, true)] {
            assert_eq!(
                vip_request_verdict(false, fresh, absent),
                Verdict::DropNotMaster
            );
        }
    }

    #[test]
    fn foreign_claims_are_replies_and_gratuitous_arp_from_other_macs() {
        let other = [0x02, 9, 9, 9, 9, 9];
        let (_, mut reply) = request([192, 0, 2, 100], [192, 0, 2, 10]);
        reply.oper = [0, 2];
        reply.sha = other;
        assert_eq!(
            foreign_claim(&reply, &OUR_MAC, &OUR_MAC),
            Some(([192, 0, 2, 100], other))
        );
        let (_, mut garp) = request([192, 0, 2, 100], [192, 0, 2, 100]);
        garp.sha = other;
        assert_eq!(
            foreign_claim(&garp, &OUR_MAC, &OUR_MAC),
            Some(([192, 0, 2, 100], other))
        );
        // Our own replies (interface or virtual MAC) and plain requests are not claims.
        reply.sha = OUR_MAC;
        assert_eq!(
            foreign_claim(&reply, &crate::virtual_mac_v4(1), &OUR_MAC),
            None
        );
        let (_, req) = request([192, 0, 2, 10], [192, 0, 2, 100]);
        assert_eq!(foreign_claim(&req, &OUR_MAC, &OUR_MAC), None);
    }

    #[test]
    fn destination_filter() {
        let vmac = crate::virtual_mac_v4(51);
        assert!(addressed_to_us(&BROADCAST, &OUR_MAC, &vmac));
        assert!(addressed_to_us(&OUR_MAC, &OUR_MAC, &vmac));
        assert!(addressed_to_us(&vmac, &OUR_MAC, &vmac));
        assert!(!addressed_to_us(&[0x02, 9, 9, 9, 9, 9], &OUR_MAC, &vmac));
    }

    #[test]
    fn reply_rewrite_swaps_roles() {
        let (mut eth, mut arp) = request([192, 0, 2, 10], [192, 0, 2, 100]);
        let vip = VipValue {
            vrid: 51,
            flags: 0,
            mac: OUR_MAC,
            stats_index: 0,
        };
        rewrite_to_reply(&mut eth, &mut arp, &vip);
        assert_eq!(eth.dst, CLIENT_MAC);
        assert_eq!(eth.src, OUR_MAC);
        assert_eq!(eth.ethertype(), ETH_P_ARP);
        assert_eq!(arp.oper(), ARP_OP_REPLY);
        assert_eq!(arp.sha, OUR_MAC);
        assert_eq!(arp.spa, [192, 0, 2, 100]);
        assert_eq!(arp.tha, CLIENT_MAC);
        assert_eq!(arp.tpa, [192, 0, 2, 10]);
    }
}

//! IPv6 neighbour discovery for the VIPs (RFC 4861): a neighbour solicitation for a VIP is
//! rewritten in place into the neighbour advertisement that answers it.
//!
//! The data plane answers the common form itself: a solicitation from a unicast source with
//! exactly one option, the source link-layer address (86 bytes on the wire, the same size as
//! the advertisement, so no resizing). Other forms (duplicate address detection from ::, no
//! option, more options) are left to the kernel on a live master and dropped elsewhere.

use crate::arp::EthHdr;

pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const ICMPV6_NS: u8 = 135;
pub const ICMPV6_NA: u8 = 136;
pub const OPT_SOURCE_LLADDR: u8 = 1;
pub const OPT_TARGET_LLADDR: u8 = 2;
/// NA flags: Solicited and Override (Router is 0: a VIP is not a router by itself).
pub const NA_FLAGS_SOLICITED_OVERRIDE: u8 = 0x60;
/// NA flag: Override only (unsolicited announcements).
pub const NA_FLAG_OVERRIDE: u8 = 0x20;

/// An IPv6 header, 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version, traffic class, flow label.
    pub vtc_flow: [u8; 4],
    /// Network byte order.
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    pub const LEN: usize = 40;

    pub const fn payload_len(&self) -> u16 {
        u16::from_be_bytes(self.payload_len)
    }
}

/// The fixed part of a neighbour solicitation or advertisement, 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdHead {
    pub icmp_type: u8,
    pub code: u8,
    /// Network byte order.
    pub checksum: [u8; 2],
    /// NA: R, S, O flags in the first byte; NS: reserved.
    pub flags: [u8; 4],
    pub target: [u8; 16],
}

/// A link-layer address option, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdOpt {
    pub opt_type: u8,
    /// In units of 8 bytes.
    pub opt_len: u8,
    pub mac: [u8; 6],
}

impl NdHead {
    pub const LEN: usize = 24;
}

impl NdOpt {
    pub const LEN: usize = 8;
}

/// Length of the ICMPv6 message the data plane answers with: head and one option.
pub const ND_LEN: usize = NdHead::LEN + NdOpt::LEN;

const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == Ipv6Hdr::LEN);
const _: () = assert!(core::mem::size_of::<NdHead>() == NdHead::LEN);
const _: () = assert!(core::mem::size_of::<NdOpt>() == NdOpt::LEN);

const fn is_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

const fn is_unspecified(a: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether this IPv6 packet is an ICMPv6 neighbour solicitation that passes the validity checks
/// of RFC 4861 section 7.1.1 that concern us (hop limit 255, code 0, target not multicast):
/// the address it asks for, and whether it has the form the data plane answers (a unicast
/// source and exactly one option, the source link-layer address, in `opt`).
#[inline(always)]
pub fn solicited_target(
    ip: &Ipv6Hdr,
    head: &NdHead,
    opt: Option<&NdOpt>,
) -> Option<([u8; 16], bool)> {
    if ip.next_header != IPPROTO_ICMPV6
        || ip.hop_limit != 255
        || head.icmp_type != ICMPV6_NS
        || head.code != 0
        || is_multicast(&head.target)
    {
        return None;
    }
    let answerable = ip.payload_len() as usize == ND_LEN
        && opt.is_some_and(|o| o.opt_type == OPT_SOURCE_LLADDR && o.opt_len == 1)
        && !is_unspecified(&ip.src);
    Some((head.target, answerable))
}

/// If this packet is a neighbour advertisement claiming its target with a target link-layer
/// address that is neither `ours` nor `iface_mac`: the target and that MAC.
#[inline(always)]
pub fn foreign_claim(
    ip: &Ipv6Hdr,
    head: &NdHead,
    opt: &NdOpt,
    ours: &[u8; 6],
    iface_mac: &[u8; 6],
) -> Option<([u8; 16], [u8; 6])> {
    let claims = ip.next_header == IPPROTO_ICMPV6
        && head.icmp_type == ICMPV6_NA
        && ip.payload_len() as usize == ND_LEN
        && opt.opt_type == OPT_TARGET_LLADDR
        && opt.opt_len == 1;
    (claims && opt.mac != *ours && opt.mac != *iface_mac).then_some((head.target, opt.mac))
}

fn as_bytes<T, const N: usize>(v: &T) -> &[u8; N] {
    const { assert!(core::mem::size_of::<T>() == N) };
    // SAFETY: T is one of the repr(C) byte structs above, of size N and alignment 1.
    unsafe { &*(v as *const T as *const [u8; N]) }
}

/// The ICMPv6 checksum (RFC 4443 section 2.3) of a head and option sent from `src` to `dst`.
#[inline(always)]
pub fn icmp6_checksum(src: &[u8; 16], dst: &[u8; 16], head: &NdHead, opt: &NdOpt) -> u16 {
    use crate::vrrp::{fold, sum};
    let mut h = *head;
    h.checksum = [0; 2];
    let acc = sum(
        as_bytes::<_, 8>(opt),
        sum(as_bytes::<_, 24>(&h), sum(dst, sum(src, 0))),
    );
    !fold(acc + ND_LEN as u32 + u32::from(IPPROTO_ICMPV6))
}

/// Rewrites a neighbour solicitation, in place, into the advertisement that answers it from
/// `mac`: to the asker, from the VIP, Solicited and Override set, with the target link-layer
/// address option, hop limit 255 and a correct checksum.
#[inline(always)]
pub fn rewrite_to_advert(
    eth: &mut EthHdr,
    ip: &mut Ipv6Hdr,
    head: &mut NdHead,
    opt: &mut NdOpt,
    mac: &[u8; 6],
) {
    eth.dst = eth.src;
    eth.src = *mac;
    ip.vtc_flow = [0x60, 0, 0, 0];
    ip.hop_limit = 255;
    ip.dst = ip.src;
    ip.src = head.target;
    head.icmp_type = ICMPV6_NA;
    head.code = 0;
    head.flags = [NA_FLAGS_SOLICITED_OVERRIDE, 0, 0, 0];
    opt.opt_type = OPT_TARGET_LLADDR;
    opt.opt_len = 1;
    opt.mac = *mac;
    head.checksum = icmp6_checksum(&ip.src, &ip.dst, head, opt).to_be_bytes();
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const CLIENT: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    const VIP: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    fn ns() -> (EthHdr, Ipv6Hdr, NdHead, NdOpt) {
        (
            EthHdr {
                dst: [0x33, 0x33, 0xff, 0, 0x01, 0],
                src: CLIENT_MAC,
                ethertype: ETH_P_IPV6.to_be_bytes(),
            },
            Ipv6Hdr {
                vtc_flow: [0x60, 0, 0, 0],
                payload_len: [0, 32],
                next_header: IPPROTO_ICMPV6,
                hop_limit: 255,
                src: CLIENT,
                dst: [
                    0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0x01, 0,
                ],
            },
            NdHead {
                icmp_type: ICMPV6_NS,
                code: 0,
                checksum: [0; 2],
                flags: [0; 4],
                target: VIP,
            },
            NdOpt {
                opt_type: OPT_SOURCE_LLADDR,
                opt_len: 1,
                mac: CLIENT_MAC,
            },
        )
    }

    #[test]
    fn a_solicitation_asks_for_its_target() {
        let (_, ip, head, opt) = ns();
        assert_eq!(solicited_target(&ip, &head, Some(&opt)), Some((VIP, true)));
    }

    #[test]
    fn invalid_solicitations_are_not_questions() {
        let (_, mut ip, head, opt) = ns();
        ip.hop_limit = 64;
        assert_eq!(solicited_target(&ip, &head, Some(&opt)), None);
        let (_, ip, mut head, opt) = ns();
        head.code = 1;
        assert_eq!(solicited_target(&ip, &head, Some(&opt)), None);
        let (_, ip, mut head, opt) = ns();
        head.target[0] = 0xff;
        assert_eq!(solicited_target(&ip, &head, Some(&opt)), None);
    }

    #[test]
    fn dad_and_optionless_solicitations_are_left_to_the_kernel() {
        let (_, mut ip, head, opt) = ns();
        ip.src = [0; 16];
        assert_eq!(solicited_target(&ip, &head, Some(&opt)), Some((VIP, false)));
        let (_, mut ip, head, _) = ns();
        ip.payload_len = [0, 24];
        assert_eq!(solicited_target(&ip, &head, None), Some((VIP, false)));
    }

    #[test]
    fn the_advert_answers_the_asker_with_a_valid_checksum() {
        let (mut eth, mut ip, mut head, mut opt) = ns();
        rewrite_to_advert(&mut eth, &mut ip, &mut head, &mut opt, &OUR_MAC);
        assert_eq!((eth.dst, eth.src), (CLIENT_MAC, OUR_MAC));
        assert_eq!((ip.src, ip.dst, ip.hop_limit), (VIP, CLIENT, 255));
        assert_eq!(head.icmp_type, ICMPV6_NA);
        assert_eq!(head.flags, [0x60, 0, 0, 0]);
        assert_eq!(
            (opt.opt_type, opt.opt_len, opt.mac),
            (OPT_TARGET_LLADDR, 1, OUR_MAC)
        );
        // Verifying: the one's complement sum over pseudo-header and message is 0xffff.
        use crate::vrrp::{fold, sum};
        let acc = sum(
            as_bytes::<_, 8>(&opt),
            sum(as_bytes::<_, 24>(&head), sum(&ip.dst, sum(&ip.src, 0))),
        );
        assert_eq!(fold(acc + 32 + 58), 0xffff);
    }

    #[test]
    fn a_known_checksum() {
        // An NA from fe80::1 to fe80::2 for 2001:db8::100 from 02:00:00:00:00:01, checksum
        // computed independently (python, RFC 1071 algorithm): 0xe7e4.
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let head = NdHead {
            icmp_type: ICMPV6_NA,
            code: 0,
            checksum: [0; 2],
            flags: [0x60, 0, 0, 0],
            target: VIP,
        };
        let opt = NdOpt {
            opt_type: 2,
            opt_len: 1,
            mac: OUR_MAC,
        };
        assert_eq!(icmp6_checksum(&src, &dst, &head, &opt), 0xe7e4);
    }

    #[test]
    fn foreign_advertisements_are_claims() {
        let other = [0x02, 9, 9, 9, 9, 9];
        let (mut eth, mut ip, mut head, mut opt) = ns();
        rewrite_to_advert(&mut eth, &mut ip, &mut head, &mut opt, &other);
        assert_eq!(
            foreign_claim(&ip, &head, &opt, &OUR_MAC, &OUR_MAC),
            Some((VIP, other))
        );
        let (mut eth, mut ip, mut head, mut opt) = ns();
        rewrite_to_advert(&mut eth, &mut ip, &mut head, &mut opt, &OUR_MAC);
        assert_eq!(foreign_claim(&ip, &head, &opt, &OUR_MAC, &OUR_MAC), None);
    }
}

//! The IPv4 header and the 802.1Q tag, as byte views.

/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;

/// An 802.1Q tag as it follows the source MAC: TCI, then the inner EtherType.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    /// Network byte order.
    pub ethertype: [u8; 2],
}

impl VlanHdr {
    pub const LEN: usize = 4;

    pub const fn ethertype(&self) -> u16 {
        u16::from_be_bytes(self.ethertype)
    }
}

/// An IPv4 header without options, 20 bytes (options follow; see [`Ipv4Hdr::header_len`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    pub const LEN: usize = 20;

    /// The header length with options (IHL x 4), if the version is 4 and IHL at least 5.
    pub const fn header_len(&self) -> Option<usize> {
        let ihl = (self.version_ihl & 0x0f) as usize;
        if self.version_ihl >> 4 == 4 && ihl >= 5 {
            Some(ihl * 4)
        } else {
            None
        }
    }

    /// The payload length, if the total length covers the header.
    pub const fn payload_len(&self) -> Option<usize> {
        let total = u16::from_be_bytes(self.total_len) as usize;
        match self.header_len() {
            Some(h) if total >= h => Some(total - h),
            _ => None,
        }
    }

    /// Whether this is a fragment (more fragments, or a non-zero offset).
    pub const fn is_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag) & 0x3fff != 0
    }

    pub const fn dst_is_multicast(&self) -> bool {
        self.dst[0] & 0xf0 == 0xe0
    }
}

const _: () = assert!(core::mem::size_of::<VlanHdr>() == VlanHdr::LEN);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == Ipv4Hdr::LEN);

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(version_ihl: u8, total: u16, frag: u16) -> Ipv4Hdr {
        Ipv4Hdr {
            version_ihl,
            tos: 0,
            total_len: total.to_be_bytes(),
            id: [0; 2],
            frag: frag.to_be_bytes(),
            ttl: 255,
            protocol: 112,
            checksum: [0; 2],
            src: [192, 0, 2, 1],
            dst: [224, 0, 0, 18],
        }
    }

    #[test]
    fn options_are_honoured() {
        assert_eq!(hdr(0x45, 32, 0).payload_len(), Some(12));
        assert_eq!(hdr(0x46, 36, 0).header_len(), Some(24));
        assert_eq!(hdr(0x46, 36, 0).payload_len(), Some(12));
        assert_eq!(hdr(0x44, 32, 0).header_len(), None);
        assert_eq!(hdr(0x65, 32, 0).header_len(), None);
        assert_eq!(hdr(0x4f, 40, 0).payload_len(), None);
    }

    #[test]
    fn fragments_and_multicast() {
        assert!(
            !hdr(0x45, 32, 0x4000).is_fragment(),
            "DF alone is not a fragment"
        );
        assert!(hdr(0x45, 32, 0x2000).is_fragment());
        assert!(hdr(0x45, 32, 0x0001).is_fragment());
        assert!(hdr(0x45, 32, 0).dst_is_multicast());
    }
}

//! VRRP advertisements on the wire: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798, RFC 9568) for IPv4
//! and IPv6. A zero-copy view checked once ([`AdvertView::parse`]), checksum verification in
//! every form peers use, and an allocation-free encoder. `no_std`, so the XDP program can use
//! the same code as the daemon.
//!
//! Wire enums are never built straight from a byte: unknown versions, types and auth types are
//! typed errors carrying the raw value.

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The TTL / hop limit every advert is sent with and, for multicast, must arrive with.
pub const VRRP_TTL: u8 = 255;
/// 224.0.0.18
pub const MCAST_V4: [u8; 4] = [224, 0, 0, 18];
/// ff02::12
pub const MCAST_V6: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
/// Advertisement type, the only one defined.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed header (both versions).
pub const HEADER_LEN: usize = 8;
/// Length of the VRRPv2 authentication data.
pub const V2_AUTH_LEN: usize = 8;
/// VRRPv2 auth type of simple text passwords (0 is none; 2, IP AH, is not supported).
pub const AUTH_TYPE_SIMPLE: u8 = 1;
/// Largest advert: v3, IPv6, 255 addresses.
pub const MAX_LEN: usize = HEADER_LEN + 255 * 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub const fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn addr_len(self) -> usize {
        match self {
            Self::V4 => 4,
            Self::V6 => 16,
        }
    }

    pub const fn is_v6(self) -> bool {
        matches!(self, Self::V6)
    }

    /// The family of `addr`.
    pub const fn of(addr: &core::net::IpAddr) -> Self {
        match addr {
            core::net::IpAddr::V4(_) => Self::V4,
            core::net::IpAddr::V6(_) => Self::V6,
        }
    }

    /// "ipv4" or "ipv6", as status, metrics and the event stream name it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

/// VRRPv2 authentication (RFC 3768 section 5.3.6; type 2, IP AH, is not supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    None,
    /// Simple text password, zero-padded to 8 bytes.
    Simple([u8; 8]),
}

/// What the checksum covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumForm {
    /// The VRRP message alone: VRRPv2 always; VRRPv3 over IPv4 as RFC 9568 says.
    Plain,
    /// The message and the IP pseudo-header (source, destination, protocol, length): VRRPv3
    /// over IPv6 always; VRRPv3 over IPv4 as keepalived and FRR send it by default.
    PseudoHeader,
}

/// Why bytes are not a valid advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Fewer bytes than the header or than the address count needs.
    Truncated {
        needed: usize,
        got: usize,
    },
    UnknownVersion(u8),
    UnknownType(u8),
    /// VRRPv2 is IPv4 only.
    V2OverIpv6,
    /// An advert interval of zero.
    ZeroInterval,
    UnknownAuthType(u8),
    /// The checksum matches none of the forms allowed for this version and family.
    BadChecksum {
        received: u16,
    },
}

/// A checked view of an advert. The slice is trimmed to the message length that the count
/// implies, so trailing bytes (Ethernet padding) are ignored.
#[derive(Clone, Copy, Debug)]
pub struct AdvertView<'a> {
    bytes: &'a [u8],
    version: Version,
    family: Family,
}

/// The length of an advert with `count` addresses.
pub const fn message_len(version: Version, family: Family, count: usize) -> usize {
    match version {
        Version::V2 => HEADER_LEN + count * 4 + V2_AUTH_LEN,
        Version::V3 => HEADER_LEN + count * family.addr_len(),
    }
}

impl<'a> AdvertView<'a> {
    /// Checks the structure (not the checksum, which needs the IP addresses: see
    /// [`Self::verify_checksum`]).
    pub fn parse(bytes: &'a [u8], family: Family) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        let version = match bytes[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            other => return Err(DecodeError::UnknownVersion(other)),
        };
        if bytes[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DecodeError::UnknownType(bytes[0] & 0x0f));
        }
        if version == Version::V2 && family == Family::V6 {
            return Err(DecodeError::V2OverIpv6);
        }
        // A count of zero is an instance without addresses (keepalived sends those); the
        // receiver's address check decides about it.
        let count = usize::from(bytes[3]);
        let len = message_len(version, family, count);
        if bytes.len() < len {
            return Err(DecodeError::Truncated {
                needed: len,
                got: bytes.len(),
            });
        }
        let view = Self {
            bytes: &bytes[..len],
            version,
            family,
        };
        if view.interval_cs() == 0 {
            return Err(DecodeError::ZeroInterval);
        }
        if version == Version::V2 {
            match bytes[4] {
                0 | 1 => {}
                other => return Err(DecodeError::UnknownAuthType(other)),
            }
        }
        Ok(view)
    }

    /// Parses and verifies the checksum against the IP source and destination the advert came
    /// with; returns the form the sender used.
    pub fn parse_verified(
        bytes: &'a [u8],
        src: &[u8],
        dst: &[u8],
    ) -> Result<(Self, ChecksumForm), DecodeError> {
        let family = if src.len() == 16 {
            Family::V6
        } else {
            Family::V4
        };
        let view = Self::parse(bytes, family)?;
        let form = view.verify_checksum(src, dst)?;
        Ok((view, form))
    }

    /// Which checksum form matches, trying those allowed for this version and family.
    pub fn verify_checksum(&self, src: &[u8], dst: &[u8]) -> Result<ChecksumForm, DecodeError> {
        let plain = || fold(sum(self.bytes, 0)) == 0xffff;
        let pseudo = || {
            fold(sum(
                self.bytes,
                pseudo_sum(self.family, src, dst, self.bytes.len()),
            )) == 0xffff
        };
        let ok = match (self.version, self.family) {
            (Version::V2, _) => plain().then_some(ChecksumForm::Plain),
            (Version::V3, Family::V6) => pseudo().then_some(ChecksumForm::PseudoHeader),
            (Version::V3, Family::V4) => {
                if pseudo() {
                    Some(ChecksumForm::PseudoHeader)
                } else if plain() {
                    Some(ChecksumForm::Plain)
                } else {
                    None
                }
            }
        };
        ok.ok_or(DecodeError::BadChecksum {
            received: self.checksum(),
        })
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn vrid(&self) -> u8 {
        self.bytes[1]
    }

    pub fn priority(&self) -> u8 {
        self.bytes[2]
    }

    pub fn count(&self) -> u8 {
        self.bytes[3]
    }

    /// The advert interval in centiseconds (VRRPv2's whole seconds are converted).
    pub fn interval_cs(&self) -> u16 {
        match self.version {
            Version::V2 => u16::from(self.bytes[5]) * 100,
            Version::V3 => u16::from_be_bytes([self.bytes[4] & 0x0f, self.bytes[5]]),
        }
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.bytes[6], self.bytes[7]])
    }

    /// The `i`-th address (4 or 16 bytes), network order.
    pub fn address(&self, i: usize) -> Option<&'a [u8]> {
        let len = self.family.addr_len();
        let start = HEADER_LEN + i * len;
        (i < usize::from(self.count())).then(|| &self.bytes[start..start + len])
    }

    /// VRRPv2 authentication; `Auth::None` for VRRPv3.
    pub fn auth(&self) -> Auth {
        match (self.version, self.bytes[4]) {
            (Version::V2, 1) => {
                let start = self.bytes.len() - V2_AUTH_LEN;
                let mut pass = [0u8; 8];
                pass.copy_from_slice(&self.bytes[start..]);
                Auth::Simple(pass)
            }
            _ => Auth::None,
        }
    }
}

/// The header fields of an advert to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertFields {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds; VRRPv2 sends whole seconds (rounded up, at least 1); VRRPv3 at most 4095.
    pub interval_cs: u16,
    pub auth: Auth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// No addresses, more than 255, or one of the wrong length for the family.
    BadAddresses,
    /// The buffer is smaller than the advert.
    BufferTooSmall { needed: usize },
    /// VRRPv2 over IPv6, or an interval the version cannot carry.
    Unsupported,
}

/// Writes an advert into `buf` and returns its length. `addrs` are the VIPs (all 4 or all 16
/// bytes); `src` and `dst` are the IP addresses it will be sent with, for the checksum.
pub fn emit(
    buf: &mut [u8],
    fields: &AdvertFields,
    addrs: &[&[u8]],
    form: ChecksumForm,
    src: &[u8],
    dst: &[u8],
) -> Result<usize, EncodeError> {
    let family = match src.len() {
        16 => Family::V6,
        4 => Family::V4,
        _ => return Err(EncodeError::BadAddresses),
    };
    let count = addrs.len();
    if count > 255 || addrs.iter().any(|a| a.len() != family.addr_len()) {
        return Err(EncodeError::BadAddresses);
    }
    if fields.version == Version::V2 && family == Family::V6 {
        return Err(EncodeError::Unsupported);
    }
    let len = message_len(fields.version, family, count);
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall { needed: len });
    }
    let buf = &mut buf[..len];
    buf[0] = (fields.version.number() << 4) | TYPE_ADVERTISEMENT;
    buf[1] = fields.vrid;
    buf[2] = fields.priority;
    buf[3] = count as u8;
    match fields.version {
        Version::V2 => {
            let secs = fields.interval_cs.div_ceil(100);
            if secs == 0 || secs > 255 {
                return Err(EncodeError::Unsupported);
            }
            buf[4] = match fields.auth {
                Auth::None => 0,
                Auth::Simple(_) => 1,
            };
            buf[5] = secs as u8;
        }
        Version::V3 => {
            if fields.interval_cs == 0 || fields.interval_cs > 0x0fff {
                return Err(EncodeError::Unsupported);
            }
            buf[4..6].copy_from_slice(&fields.interval_cs.to_be_bytes());
        }
    }
    buf[6] = 0;
    buf[7] = 0;
    let addr_len = family.addr_len();
    for (i, addr) in addrs.iter().enumerate() {
        let start = HEADER_LEN + i * addr_len;
        buf[start..start + addr_len].copy_from_slice(addr);
    }
    if fields.version == Version::V2 {
        let auth = match fields.auth {
            Auth::None => [0; 8],
            Auth::Simple(pass) => pass,
        };
        buf[len - V2_AUTH_LEN..].copy_from_slice(&auth);
    }
    let initial = match (fields.version, family, form) {
        (Version::V2, _, _) | (Version::V3, Family::V4, ChecksumForm::Plain) => 0,
        _ => pseudo_sum(family, src, dst, len),
    };
    let checksum = !fold(sum(buf, initial));
    buf[6..8].copy_from_slice(&checksum.to_be_bytes());
    Ok(len)
}

/// Why the data plane drops an advert for a VRID (each is counted per VRID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvertDrop {
    /// TTL / hop limit not 255 where it must be.
    Ttl,
    /// Not version 2 or 3, not type 1, or not the version the instance runs.
    Version,
    /// Malformed: the IP payload length does not match the address count, a zero interval, or
    /// an unknown VRRPv2 auth type.
    Length,
    Checksum,
    /// Unicast mode: the source is not a configured peer.
    Peer,
    /// VRRPv2: the auth type is not the instance's, or the simple text password differs.
    Auth,
    /// The advert's address list is not the instance's (RFC 5798 7.1; keepalived drops it too):
    /// another cluster on the segment reusing the VRID.
    Addresses,
}

/// One step of the address-set hash: `word` (a big-endian 32-bit word of an address, read as
/// a number) folded into `cur`, the hash of the address so far (`first`: the address's first
/// word). Shared by the data plane, which walks an advert's words, and
/// [`address_set_hash`].
#[inline(always)]
pub const fn address_hash_step(cur: u32, word: u32, first: bool) -> u32 {
    // murmur3's finaliser over the word mixed into the address's running hash.
    let mut x = if first { 0x9e37_79b9 } else { cur } ^ word;
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    x
}

/// The hash of a set of addresses (each 4 or 16 bytes), the same in any order: the wrapping
/// sum of each address's hash. The data plane compares an advert's with the instance's.
pub fn address_set_hash<'a>(addresses: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut set = 0u32;
    for addr in addresses {
        let mut cur = 0;
        for (i, word) in addr.chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            cur = address_hash_step(cur, word, i == 0);
        }
        set = set.wrapping_add(cur);
    }
    set
}

/// Whether a protocol-112 payload is CARP rather than VRRP. CARP (OpenBSD/FreeBSD) shares the
/// protocol number, the multicast group, version 2 and type 1; its payload is 36 bytes with an
/// auth length of 7 words in the byte where VRRPv2 has its address count, and a VRRPv2 advert
/// with 7 addresses is 44 bytes long, so the two never match.
pub const fn is_carp(hdr: &[u8; HEADER_LEN], payload_len: usize) -> bool {
    hdr[0] == 0x21 && payload_len == 36 && hdr[3] == 7
}

/// The checks of an advert header that need nothing but its first 8 bytes, the IP payload
/// length and what the IP header said. `expected_version` is the instance's (2 or 3).
pub fn check_header(
    hdr: &[u8; HEADER_LEN],
    payload_len: usize,
    family: Family,
    ttl: u8,
    need_ttl_255: bool,
    expected_version: u32,
) -> Result<Version, AdvertDrop> {
    let version = match hdr[0] {
        0x21 => Version::V2,
        0x31 => Version::V3,
        _ => return Err(AdvertDrop::Version),
    };
    if u32::from(version.number()) != expected_version
        || (version == Version::V2 && family == Family::V6)
    {
        return Err(AdvertDrop::Version);
    }
    if need_ttl_255 && ttl != VRRP_TTL {
        return Err(AdvertDrop::Ttl);
    }
    let count = hdr[3] as usize;
    let interval_zero = match version {
        Version::V2 => hdr[5] == 0 || hdr[4] > 1,
        Version::V3 => hdr[4] & 0x0f == 0 && hdr[5] == 0,
    };
    if interval_zero || payload_len != message_len(version, family, count) {
        return Err(AdvertDrop::Length);
    }
    Ok(version)
}

/// Where a VRRPv2 advert's authentication data starts, from its address count.
pub const fn v2_auth_offset(count: u8) -> usize {
    HEADER_LEN + count as usize * 4
}

/// RFC 3768 7.1 for a VRRPv2 advert: its auth type must be the instance's, and with simple text
/// its password (`data`, the advert's last 8 bytes) too. `ours` is the instance's zero-padded
/// password, None without authentication.
pub fn v2_auth_ok(
    auth_type: u8,
    data: &[u8; V2_AUTH_LEN],
    ours: Option<&[u8; V2_AUTH_LEN]>,
) -> bool {
    match ours {
        None => auth_type == 0,
        // Compared as one word: the XDP program cannot call memcmp.
        Some(pass) => {
            auth_type == AUTH_TYPE_SIMPLE && u64::from_ne_bytes(*data) == u64::from_ne_bytes(*pass)
        }
    }
}

/// Which checksum form (`crate::checksum_form`) an advert verifies in, from the sum of its
/// bytes (`plain`) and of its IP pseudo-header (`pseudo`), both unfolded; None if none allowed
/// for its version and family does.
pub fn verified_form(version: Version, family: Family, plain: u64, pseudo: u64) -> Option<u8> {
    use crate::checksum_form::{PLAIN, PSEUDO_HEADER};
    let plain_ok = fold64(plain) == 0xffff;
    let pseudo_ok = fold64(plain + pseudo) == 0xffff;
    match (version, family) {
        (Version::V2, _) => plain_ok.then_some(PLAIN),
        (Version::V3, Family::V6) => pseudo_ok.then_some(PSEUDO_HEADER),
        (Version::V3, Family::V4) if pseudo_ok => Some(PSEUDO_HEADER),
        (Version::V3, Family::V4) => plain_ok.then_some(PLAIN),
    }
}

/// Folds a sum of 16- or 32-bit big-endian words into a 16-bit one's complement sum.
pub const fn fold64(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// One's complement sum of 16-bit big-endian words (a trailing odd byte is padded with zero),
/// added to `initial`, not yet folded.
pub fn sum(bytes: &[u8], initial: u32) -> u32 {
    let mut acc = initial;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([pair[0], pair[1]])));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds carries into 16 bits.
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The sum of the IP pseudo-header (RFC 768 for IPv4, RFC 8200 section 8.1 for IPv6).
pub fn pseudo_sum(family: Family, src: &[u8], dst: &[u8], len: usize) -> u32 {
    let acc = sum(dst, sum(src, 0));
    match family {
        Family::V4 => acc + u32::from(IPPROTO_VRRP) + len as u32,
        Family::V6 => acc + ((len as u32) >> 16) + (len as u32 & 0xffff) + u32::from(IPPROTO_VRRP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from keepalived 2.2.7 (Debian 12) in a namespace with tcpdump: vrid 51,
    // priority 150, advert_int 1, VIP 192.0.2.100 / 2001:db8::100, sender 192.0.2.1.
    const KA_V2: [u8; 20] = [
        0x21, 0x33, 0x96, 0x01, 0x01, 0x01, 0x18, 0x19, 0xc0, 0x00, 0x02, 0x64, b's', b'e', b'c',
        b'r', b'e', b't', b'1', 0x00,
    ];
    const KA_V3_V4: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0xd3, 0x71, 0xc0, 0x00, 0x02, 0x64,
    ];
    const KA_V3_V6: [u8; 24] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0x59, 0xc3, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0x01, 0x00,
    ];
    const SRC4: [u8; 4] = [192, 0, 2, 1];
    const VIP4: [u8; 4] = [192, 0, 2, 100];
    const SRC6: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0xec, 0x30, 0xa6, 0xff, 0xfe, 0x3d, 0x20, 0x5e,
    ];
    const VIP6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    fn encode(
        fields: AdvertFields,
        addrs: &[&[u8]],
        form: ChecksumForm,
        src: &[u8],
        dst: &[u8],
    ) -> ([u8; MAX_LEN], usize) {
        let mut buf = [0u8; MAX_LEN];
        let len = emit(&mut buf, &fields, addrs, form, src, dst).unwrap();
        (buf, len)
    }

    #[test]
    fn the_address_set_hash_ignores_order_and_tells_lists_apart() {
        let a: [u8; 4] = [10, 0, 0, 1];
        let b: [u8; 4] = [10, 0, 0, 2];
        let c: [u8; 4] = [10, 0, 0, 3];
        let d: [u8; 4] = [10, 0, 0, 4];
        let h = |l: &[&[u8]]| address_set_hash(l.iter().copied());
        assert_eq!(h(&[&a, &b]), h(&[&b, &a]));
        // Sums that a plain word sum would confuse (1 + 4 = 2 + 3).
        assert_ne!(h(&[&a, &d]), h(&[&b, &c]));
        assert_ne!(h(&[&a]), h(&[&a, &b]));
        assert_ne!(h(&[&a]), h(&[&b]));
        // IPv6: words swapped between two addresses make another set.
        let x: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let mut y = x;
        y[12..].copy_from_slice(&[0, 0, 2, 0]);
        y[8..12].copy_from_slice(&[0, 0, 0, 7]);
        let (mut x2, mut y2) = (x, y);
        x2[12..].copy_from_slice(&y[12..]);
        y2[12..].copy_from_slice(&x[12..]);
        assert_ne!(h(&[&x, &y]), h(&[&x2, &y2]));
        assert_eq!(h(&[&x, &y]), h(&[&y, &x]));
    }

    #[test]
    fn keepalived_v2_advert_decodes() {
        let (view, form) = AdvertView::parse_verified(&KA_V2, &SRC4, &MCAST_V4).unwrap();
        assert_eq!(form, ChecksumForm::Plain);
        assert_eq!(view.version(), Version::V2);
        assert_eq!((view.vrid(), view.priority(), view.count()), (51, 150, 1));
        assert_eq!(view.interval_cs(), 100);
        assert_eq!(view.address(0), Some(&VIP4[..]));
        assert_eq!(view.address(1), None);
        assert_eq!(view.auth(), Auth::Simple(*b"secret1\0"));
    }

    #[test]
    fn keepalived_v2_advert_is_reproduced_byte_for_byte() {
        let fields = AdvertFields {
            version: Version::V2,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            auth: Auth::Simple(*b"secret1\0"),
        };
        let (buf, len) = encode(fields, &[&VIP4], ChecksumForm::Plain, &SRC4, &MCAST_V4);
        assert_eq!(&buf[..len], &KA_V2);
    }

    #[test]
    fn an_advert_without_addresses_round_trips_in_both_versions() {
        // keepalived runs instances without VIPs and sends such adverts (count 0).
        for (version, auth) in [
            (Version::V3, Auth::None),
            (Version::V2, Auth::Simple(*b"pw\0\0\0\0\0\0")),
        ] {
            let fields = AdvertFields {
                version,
                vrid: 9,
                priority: 120,
                interval_cs: 100,
                auth,
            };
            let (buf, len) = encode(fields, &[], ChecksumForm::PseudoHeader, &SRC4, &MCAST_V4);
            assert_eq!(len, message_len(version, Family::V4, 0));
            assert_eq!(buf[3], 0);
            let (view, _) = AdvertView::parse_verified(&buf[..len], &SRC4, &MCAST_V4).unwrap();
            assert_eq!((view.count(), view.address(0)), (0, None));
            let mut hdr = [0u8; HEADER_LEN];
            hdr.copy_from_slice(&buf[..HEADER_LEN]);
            assert_eq!(
                check_header(
                    &hdr,
                    len,
                    Family::V4,
                    255,
                    true,
                    u32::from(version.number())
                ),
                Ok(version)
            );
        }
        assert_eq!(address_set_hash([]), 0);
    }

    #[test]
    fn keepalived_v3_ipv4_advert_uses_the_pseudo_header() {
        let (view, form) = AdvertView::parse_verified(&KA_V3_V4, &SRC4, &MCAST_V4).unwrap();
        assert_eq!(form, ChecksumForm::PseudoHeader);
        assert_eq!(view.version(), Version::V3);
        assert_eq!(view.interval_cs(), 100);
        assert_eq!(view.auth(), Auth::None);
        let fields = AdvertFields {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            auth: Auth::None,
        };
        let (buf, len) = encode(
            fields,
            &[&VIP4],
            ChecksumForm::PseudoHeader,
            &SRC4,
            &MCAST_V4,
        );
        assert_eq!(&buf[..len], &KA_V3_V4);
        // The same advert in the RFC 9568 form verifies as Plain.
        let (buf, len) = encode(fields, &[&VIP4], ChecksumForm::Plain, &SRC4, &MCAST_V4);
        assert_ne!(&buf[..len], &KA_V3_V4);
        let (_, form) = AdvertView::parse_verified(&buf[..len], &SRC4, &MCAST_V4).unwrap();
        assert_eq!(form, ChecksumForm::Plain);
    }

    #[test]
    fn keepalived_v3_ipv6_advert_round_trips() {
        let (view, form) = AdvertView::parse_verified(&KA_V3_V6, &SRC6, &MCAST_V6).unwrap();
        assert_eq!(form, ChecksumForm::PseudoHeader);
        assert_eq!(view.family(), Family::V6);
        assert_eq!(view.address(0), Some(&VIP6[..]));
        let fields = AdvertFields {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            auth: Auth::None,
        };
        let (buf, len) = encode(
            fields,
            &[&VIP6],
            ChecksumForm::PseudoHeader,
            &SRC6,
            &MCAST_V6,
        );
        assert_eq!(&buf[..len], &KA_V3_V6);
    }

    #[test]
    fn ipv6_without_pseudo_header_is_refused() {
        let fields = AdvertFields {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            auth: Auth::None,
        };
        // Encoding asks for Plain, but IPv6 always uses the pseudo-header: the encoder does so.
        let (buf, len) = encode(fields, &[&VIP6], ChecksumForm::Plain, &SRC6, &MCAST_V6);
        assert_eq!(&buf[..len], &KA_V3_V6);
        // A checksum over the message alone does not verify over IPv6.
        let mut plain = KA_V3_V6;
        plain[6] = 0;
        plain[7] = 0;
        let c = !fold(sum(&plain, 0));
        plain[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            AdvertView::parse_verified(&plain, &SRC6, &MCAST_V6).unwrap_err(),
            DecodeError::BadChecksum { received: c }
        );
    }

    #[test]
    fn a_wrong_destination_breaks_the_pseudo_header_checksum() {
        // keepalived checksums unicast adverts over the real destination.
        let err = AdvertView::parse_verified(&KA_V3_V6, &SRC6, &VIP6).unwrap_err();
        assert_eq!(err, DecodeError::BadChecksum { received: 0x59c3 });
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut padded = [0u8; 46];
        padded[..12].copy_from_slice(&KA_V3_V4);
        let (view, _) = AdvertView::parse_verified(&padded, &SRC4, &MCAST_V4).unwrap();
        assert_eq!(view.as_bytes(), &KA_V3_V4);
    }

    #[test]
    fn structural_errors_are_typed() {
        let check = |bytes: &[u8], family, want| {
            assert_eq!(AdvertView::parse(bytes, family).unwrap_err(), want)
        };
        check(
            &KA_V3_V4[..7],
            Family::V4,
            DecodeError::Truncated { needed: 8, got: 7 },
        );
        check(
            &KA_V3_V4[..11],
            Family::V4,
            DecodeError::Truncated {
                needed: 12,
                got: 11,
            },
        );
        check(
            &KA_V2[..19],
            Family::V4,
            DecodeError::Truncated {
                needed: 20,
                got: 19,
            },
        );
        let mut b = KA_V3_V4;
        b[0] = 0x41;
        check(&b, Family::V4, DecodeError::UnknownVersion(4));
        b[0] = 0x32;
        check(&b, Family::V4, DecodeError::UnknownType(2));
        let mut b = KA_V3_V4;
        b[3] = 2;
        check(
            &b,
            Family::V4,
            DecodeError::Truncated {
                needed: 16,
                got: 12,
            },
        );
        let mut b = KA_V3_V4;
        b[4] = 0xf0;
        b[5] = 0;
        check(&b, Family::V4, DecodeError::ZeroInterval);
        let mut b = KA_V2;
        b[4] = 2;
        check(&b, Family::V4, DecodeError::UnknownAuthType(2));
        check(&KA_V2, Family::V6, DecodeError::V2OverIpv6);
        let mut b = KA_V3_V4;
        b[2] = 151;
        assert_eq!(
            AdvertView::parse_verified(&b, &SRC4, &MCAST_V4).unwrap_err(),
            DecodeError::BadChecksum { received: 0xd371 }
        );
    }

    /// The sum of an advert as the XDP program computes it: 32-bit big-endian words.
    fn sum32(bytes: &[u8]) -> u64 {
        bytes
            .chunks(4)
            .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
            .sum()
    }

    #[test]
    fn word_sums_verify_every_form_of_the_keepalived_captures() {
        use crate::checksum_form::{PLAIN, PSEUDO_HEADER};
        let p4 = u64::from(pseudo_sum(Family::V4, &SRC4, &MCAST_V4, 12));
        assert_eq!(
            verified_form(Version::V3, Family::V4, sum32(&KA_V3_V4), p4),
            Some(PSEUDO_HEADER)
        );
        let p6 = u64::from(pseudo_sum(Family::V6, &SRC6, &MCAST_V6, 24));
        assert_eq!(
            verified_form(Version::V3, Family::V6, sum32(&KA_V3_V6), p6),
            Some(PSEUDO_HEADER)
        );
        let p2 = u64::from(pseudo_sum(Family::V4, &SRC4, &MCAST_V4, 20));
        assert_eq!(
            verified_form(Version::V2, Family::V4, sum32(&KA_V2), p2),
            Some(PLAIN)
        );
        let fields = AdvertFields {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            auth: Auth::None,
        };
        let (buf, len) = encode(fields, &[&VIP4], ChecksumForm::Plain, &SRC4, &MCAST_V4);
        assert_eq!(
            verified_form(Version::V3, Family::V4, sum32(&buf[..len]), p4),
            Some(PLAIN)
        );
        let mut bad = KA_V3_V4;
        bad[2] = 1;
        assert_eq!(
            verified_form(Version::V3, Family::V4, sum32(&bad), p4),
            None
        );
        // IPv6 does not accept the plain form.
        assert_eq!(
            verified_form(Version::V3, Family::V6, sum32(&KA_V3_V6), 0),
            None
        );
    }

    #[test]
    fn header_checks_name_their_reason() {
        let h = |b: &[u8]| <[u8; 8]>::try_from(&b[..8]).unwrap();
        let v3 = h(&KA_V3_V4);
        assert_eq!(
            check_header(&v3, 12, Family::V4, 255, true, 3),
            Ok(Version::V3)
        );
        assert_eq!(
            check_header(&v3, 12, Family::V4, 64, true, 3),
            Err(AdvertDrop::Ttl)
        );
        assert_eq!(
            check_header(&v3, 12, Family::V4, 64, false, 3),
            Ok(Version::V3)
        );
        assert_eq!(
            check_header(&v3, 12, Family::V4, 255, true, 2),
            Err(AdvertDrop::Version)
        );
        assert_eq!(
            check_header(&v3, 16, Family::V4, 255, true, 3),
            Err(AdvertDrop::Length)
        );
        assert_eq!(
            check_header(&v3, 12, Family::V6, 255, true, 3),
            Err(AdvertDrop::Length)
        );
        let v2 = h(&KA_V2);
        assert_eq!(
            check_header(&v2, 20, Family::V4, 255, true, 2),
            Ok(Version::V2)
        );
        assert_eq!(
            check_header(&v2, 20, Family::V6, 255, true, 2),
            Err(AdvertDrop::Version)
        );
        let mut t = v3;
        t[0] = 0x32;
        assert_eq!(
            check_header(&t, 12, Family::V4, 255, true, 3),
            Err(AdvertDrop::Version)
        );
        // No addresses: the length must still match the count.
        let mut z = v3;
        z[3] = 0;
        assert_eq!(
            check_header(&z, 12, Family::V4, 255, true, 3),
            Err(AdvertDrop::Length)
        );
    }

    #[test]
    fn carp_is_told_apart_from_vrrp() {
        // A CARP advert: version 2, type 1, vhid 51, advskew 0, authlen 7, demotion 0,
        // advbase 1, checksum, 8 counter bytes, 20 HMAC bytes.
        let mut carp = [0u8; 36];
        carp[..8].copy_from_slice(&[0x21, 51, 0, 7, 0, 1, 0, 0]);
        let hdr = <[u8; 8]>::try_from(&carp[..8]).unwrap();
        assert!(is_carp(&hdr, 36));
        // As VRRPv2 it would claim 7 addresses: 44 bytes, so the length check refuses it too.
        assert_eq!(
            check_header(&hdr, 36, Family::V4, 255, true, 2),
            Err(AdvertDrop::Length)
        );
        // A real VRRPv2 advert is not CARP.
        assert!(!is_carp(&<[u8; 8]>::try_from(&KA_V2[..8]).unwrap(), 20));
    }

    #[test]
    fn v2_authentication_matches_type_and_password() {
        let pass = *b"1111\0\0\0\0";
        // Without a password: only auth type 0, whatever the data.
        assert!(v2_auth_ok(0, &[0; 8], None));
        assert!(v2_auth_ok(0, &pass, None));
        assert!(!v2_auth_ok(AUTH_TYPE_SIMPLE, &pass, None));
        assert!(!v2_auth_ok(2, &[0; 8], None));
        // With one: type 1 and the same 8 bytes, padding included.
        assert!(v2_auth_ok(AUTH_TYPE_SIMPLE, &pass, Some(&pass)));
        assert!(!v2_auth_ok(0, &pass, Some(&pass)));
        assert!(!v2_auth_ok(2, &pass, Some(&pass)));
        assert!(!v2_auth_ok(AUTH_TYPE_SIMPLE, b"1111\0\0\0x", Some(&pass)));
        assert!(!v2_auth_ok(AUTH_TYPE_SIMPLE, b"1112\0\0\0\0", Some(&pass)));
        // The data sits after the addresses.
        assert_eq!(v2_auth_offset(1), 12);
        assert_eq!(v2_auth_offset(255), 8 + 255 * 4);
    }

    #[test]
    fn reserved_bits_do_not_change_the_v3_interval() {
        let mut b = KA_V3_V4;
        b[4] |= 0xf0;
        let view = AdvertView::parse(&b, Family::V4).unwrap();
        assert_eq!(view.interval_cs(), 100);
    }

    #[test]
    fn encoder_refuses_what_it_cannot_send() {
        let mut buf = [0u8; MAX_LEN];
        let mut fields = AdvertFields {
            version: Version::V3,
            vrid: 1,
            priority: 100,
            interval_cs: 4096,
            auth: Auth::None,
        };
        let e = |buf: &mut [u8], f: &AdvertFields, a: &[&[u8]], s: &[u8]| {
            emit(buf, f, a, ChecksumForm::Plain, s, &MCAST_V4)
        };
        assert_eq!(
            e(&mut buf, &fields, &[&VIP4], &SRC4),
            Err(EncodeError::Unsupported)
        );
        fields.interval_cs = 100;
        assert_eq!(
            e(&mut buf, &fields, &[&VIP6], &SRC4),
            Err(EncodeError::BadAddresses)
        );
        assert_eq!(
            e(&mut buf[..11], &fields, &[&VIP4], &SRC4),
            Err(EncodeError::BufferTooSmall { needed: 12 })
        );
        fields.version = Version::V2;
        assert_eq!(
            emit(
                &mut buf,
                &fields,
                &[&VIP6],
                ChecksumForm::Plain,
                &SRC6,
                &MCAST_V6
            ),
            Err(EncodeError::Unsupported)
        );
        // VRRPv2 rounds sub-second intervals up to one second.
        fields.interval_cs = 20;
        let len = e(&mut buf, &fields, &[&VIP4], &SRC4).unwrap();
        assert_eq!(
            AdvertView::parse(&buf[..len], Family::V4)
                .unwrap()
                .interval_cs(),
            100
        );
    }
}

//! Announcing a VIP after a takeover, so that neighbours update their caches at once:
//! gratuitous ARP (an RFC 5227 announcement) for IPv4, an unsolicited neighbour advertisement
//! (RFC 4861 section 7.2.6, Override set) for IPv6. Whole frames on an AF_PACKET socket that
//! receives nothing (protocol 0).

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use vrrp_common::nd::{self, NdHead, NdOpt};

/// The announcement frame for `vip` from `mac`.
pub fn frame(vip: IpAddr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(86);
    match vip {
        IpAddr::V4(a) => {
            f.extend_from_slice(&[0xff; 6]);
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
            f.extend_from_slice(&mac);
            f.extend_from_slice(&a.octets());
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            let mut head = NdHead {
                icmp_type: nd::ICMPV6_NA,
                code: 0,
                checksum: [0; 2],
                flags: [nd::NA_FLAG_OVERRIDE, 0, 0, 0],
                target: a.octets(),
            };
            let opt = NdOpt {
                opt_type: nd::OPT_TARGET_LLADDR,
                opt_len: 1,
                mac,
            };
            head.checksum = nd::icmp6_checksum(&a.octets(), &all_nodes, &head, &opt).to_be_bytes();
            f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[
                0x86,
                0xdd,
                0x60,
                0,
                0,
                0,
                0,
                nd::ND_LEN as u8,
                nd::IPPROTO_ICMPV6,
                255,
            ]);
            f.extend_from_slice(&a.octets());
            f.extend_from_slice(&all_nodes);
            f.extend_from_slice(&[
                head.icmp_type,
                head.code,
                head.checksum[0],
                head.checksum[1],
            ]);
            f.extend_from_slice(&head.flags);
            f.extend_from_slice(&head.target);
            f.extend_from_slice(&[opt.opt_type, opt.opt_len]);
            f.extend_from_slice(&opt.mac);
        }
    }
    f
}

/// A packet socket for announcements (and adverts from a virtual MAC), on any interface.
pub struct Announcer {
    fd: OwnedFd,
}

impl Announcer {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); protocol 0 receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends the announcement for `vip` from `mac` on interface `ifindex`.
    pub fn announce_on(&self, ifindex: u32, vip: IpAddr, mac: [u8; 6]) -> io::Result<()> {
        self.send_frame_on(ifindex, &frame(vip, mac))
    }

    /// Sends a whole Ethernet frame (its first six bytes are the destination) on interface
    /// `ifindex`.
    pub fn send_frame_on(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set below describe the target.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and the address outlive the call; the sizes are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    #[test]
    fn gratuitous_arp_is_an_rfc_5227_announcement() {
        let f = frame("192.0.2.100".parse().unwrap(), MAC);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[192, 0, 2, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[192, 0, 2, 100]);
    }

    #[test]
    fn unsolicited_na_has_override_and_a_valid_checksum() {
        let f = frame("2001:db8::100".parse().unwrap(), MAC);
        assert_eq!(f.len(), 86);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[21], 255, "hop limit");
        assert_eq!(f[54], 136);
        assert_eq!(f[58], 0x20, "Override, not Solicited");
        assert_eq!(&f[80..86], &MAC);
        // The one's complement sum over pseudo-header and message verifies.
        let mut acc: u32 = f[22..54]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        acc += f[54..86]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        acc += 32 + 58;
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        assert_eq!(acc, 0xffff);
    }
}

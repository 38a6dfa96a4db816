//! Sending adverts: raw IP sockets (protocol 112) bound to the interface, with TTL / hop limit
//! 255, multicast on the interface, and our primary address as source (the engine has already
//! checksummed the advert over it). Adverts are received from the data plane, not from these
//! sockets: a filter drops everything they would receive.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use vrrp_common::vrrp::{self, IPPROTO_VRRP, MCAST_V4, MCAST_V6, VRRP_TTL};

/// DSCP CS6 (network control), as keepalived and FRR send adverts.
const TOS_CS6: u32 = 0xc0;

/// The advert sockets of one interface.
pub struct AdvertSockets {
    ifindex: u32,
    v4: Option<Socket>,
    v6: Option<Socket>,
}

fn drop_everything(socket: &Socket) -> io::Result<()> {
    // Classic BPF "ret #0": receive nothing; adverts come from the data plane.
    socket.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])
}

impl AdvertSockets {
    /// Opens a socket for each family that has a source address, and joins the VRRP group on
    /// the interface (so that the NIC's multicast filter lets adverts through to XDP).
    pub fn open(
        iface: &str,
        ifindex: u32,
        v4_src: Option<Ipv4Addr>,
        v6_src: Option<Ipv6Addr>,
    ) -> io::Result<Self> {
        let protocol = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let v4 = match v4_src {
            Some(src) => {
                let s = Socket::new(Domain::IPV4, Type::RAW, protocol)?;
                s.bind_device(Some(iface.as_bytes()))?;
                s.set_multicast_if_v4(&src)?;
                s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_multicast_loop_v4(false)?;
                s.set_tos_v4(TOS_CS6)?;
                s.join_multicast_v4_n(
                    &Ipv4Addr::from(MCAST_V4),
                    &InterfaceIndexOrAddress::Index(ifindex),
                )?;
                s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
                drop_everything(&s)?;
                Some(s)
            }
            None => None,
        };
        let v6 = match v6_src {
            Some(src) => {
                let s = Socket::new(Domain::IPV6, Type::RAW, protocol)?;
                s.bind_device(Some(iface.as_bytes()))?;
                s.set_multicast_if_v6(ifindex)?;
                s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_multicast_loop_v6(false)?;
                s.join_multicast_v6(&Ipv6Addr::from(MCAST_V6), ifindex)?;
                s.bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, ifindex)))?;
                drop_everything(&s)?;
                Some(s)
            }
            None => None,
        };
        Ok(Self { ifindex, v4, v6 })
    }

    /// Sends one advert (the VRRP message) to `dst`.
    pub fn send(&self, dst: IpAddr, bytes: &[u8]) -> io::Result<()> {
        let (socket, addr) = match dst {
            IpAddr::V4(a) => (&self.v4, SocketAddr::V4(SocketAddrV4::new(a, 0))),
            IpAddr::V6(a) => (
                &self.v6,
                SocketAddr::V6(SocketAddrV6::new(a, 0, 0, self.ifindex)),
            ),
        };
        let socket = socket.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, format!("no socket for {dst}"))
        })?;
        socket.send_to(bytes, &SockAddr::from(addr)).map(drop)
    }
}

/// The Ethernet frame of an advert sent to a multicast group from `mac` (the instance's
/// virtual MAC, RFC 5798 section 7.3: the source of its adverts), with the IP header the
/// advert sockets would have written: TTL / hop limit 255, DSCP CS6, protocol 112. `id` is the
/// IPv4 identification. None for a unicast destination (which needs the neighbour's MAC: those
/// adverts go through the advert sockets) or mixed families.
pub fn advert_frame(
    mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    vrrp: &[u8],
    id: u16,
) -> Option<Vec<u8>> {
    let mut f = Vec::with_capacity(14 + 40 + vrrp.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) if d.is_multicast() => {
            let o = d.octets();
            f.extend_from_slice(&[0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]);
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + vrrp.len()) as u16;
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[1] = TOS_CS6 as u8;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[8] = VRRP_TTL;
            ip[9] = IPPROTO_VRRP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&o);
            let checksum = !vrrp::fold(vrrp::sum(&ip, 0));
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) if d.is_multicast() => {
            let o = d.octets();
            f.extend_from_slice(&[0x33, 0x33, o[12], o[13], o[14], o[15]]);
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[0x86, 0xdd]);
            // Version 6, traffic class CS6, no flow label.
            let tc = TOS_CS6 as u8;
            f.extend_from_slice(&[0x60 | (tc >> 4), tc << 4, 0, 0]);
            f.extend_from_slice(&(vrrp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[IPPROTO_VRRP, VRRP_TTL]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&o);
        }
        _ => return None,
    }
    f.extend_from_slice(vrrp);
    Some(f)
}

/// The first address of a family on an interface (IPv6: the link-local one, the source of
/// VRRPv3 adverts over IPv6 per RFC 5798 section 5.1.2.1).
pub fn interface_address(iface: &str, ipv6: bool) -> io::Result<Option<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for ifaddr in addrs.filter(|a| a.interface_name == iface) {
        let Some(addr) = ifaddr.address else { continue };
        if !ipv6 && let Some(sin) = addr.as_sockaddr_in() {
            return Ok(Some(IpAddr::V4(sin.ip())));
        }
        if ipv6
            && let Some(sin6) = addr.as_sockaddr_in6()
            && sin6.ip().segments()[0] & 0xffc0 == 0xfe80
        {
            return Ok(Some(IpAddr::V6(sin6.ip())));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 51];

    #[test]
    fn an_advert_frame_from_the_virtual_mac_carries_the_ip_header_of_the_sockets() {
        let vrrp = [0x31, 51, 150, 1, 0, 100, 0xab, 0xcd, 192, 0, 2, 100];
        let f = advert_frame(
            VMAC,
            "192.0.2.1".parse().unwrap(),
            "224.0.0.18".parse().unwrap(),
            &vrrp,
            7,
        )
        .unwrap();
        assert_eq!(&f[..6], &[0x01, 0x00, 0x5e, 0, 0, 0x12]);
        assert_eq!(&f[6..12], &VMAC);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        assert_eq!((ip[0], ip[1], ip[8], ip[9]), (0x45, 0xc0, 255, 112));
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 32);
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 7);
        assert_eq!(&ip[12..16], &[192, 0, 2, 1]);
        assert_eq!(&ip[16..20], &[224, 0, 0, 18]);
        // The header checksum verifies.
        assert_eq!(vrrp::fold(vrrp::sum(ip, 0)), 0xffff);
        assert_eq!(&f[34..], &vrrp);

        let f = advert_frame(
            [0x00, 0x00, 0x5e, 0x00, 0x02, 51],
            "fe80::1".parse().unwrap(),
            "ff02::12".parse().unwrap(),
            &vrrp,
            0,
        )
        .unwrap();
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 0x12]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(&f[14..18], &[0x6c, 0x00, 0, 0], "version 6, class CS6");
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 12);
        assert_eq!((f[20], f[21]), (112, 255));
        assert_eq!(f.len(), 14 + 40 + 12);
        // Unicast adverts need the neighbour's MAC: not built here.
        assert!(
            advert_frame(
                VMAC,
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                &vrrp,
                0
            )
            .is_none()
        );
    }
}

//! Sending adverts: raw IP sockets (protocol 112) bound to the interface, with TTL / hop limit
//! 255, multicast on the interface, and our primary address as source (the engine has already
//! checksummed the advert over it). Adverts are received from the data plane, not from these
//! sockets: a filter drops everything they would receive.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use vrrp_common::vrrp::{IPPROTO_VRRP, MCAST_V4, MCAST_V6, VRRP_TTL};

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

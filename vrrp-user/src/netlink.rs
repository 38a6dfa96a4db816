//! VIPs on the interface, through rtnetlink (never by running `ip`). A master adds its VIPs so
//! that the kernel accepts traffic to them; the data plane still decides who answers ARP / ND.

use std::{io, net::IpAddr, time::Duration};

use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};

/// Every netlink call is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Adds and removes addresses on one interface.
pub struct Addresses {
    handle: rtnetlink::Handle,
    ifindex: u32,
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl Addresses {
    /// Opens a netlink connection (its task runs on the current tokio runtime).
    pub fn connect(ifindex: u32) -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle, ifindex })
    }

    /// Adds `addr/prefix` (IPv6 without duplicate address detection, as a VIP moves between
    /// hosts by design); an address already there is replaced, so this is idempotent.
    pub async fn add(&self, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut req = self
            .handle
            .address()
            .add(self.ifindex, addr, prefix)
            .replace();
        if addr.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        tokio::time::timeout(TIMEOUT, req.execute())
            .await
            .map_err(|_| err("adding an address", "netlink timed out"))?
            .map_err(|e| err(&format!("adding {addr}/{prefix}"), e))
    }

    /// Removes `addr` if present.
    pub async fn remove(&self, addr: IpAddr) -> io::Result<()> {
        let found = tokio::time::timeout(
            TIMEOUT,
            self.handle
                .address()
                .get()
                .set_link_index_filter(self.ifindex)
                .set_address_filter(addr)
                .execute()
                .try_collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| err("listing addresses", "netlink timed out"))?
        .map_err(|e| err("listing addresses", e))?;
        for msg in found {
            tokio::time::timeout(TIMEOUT, self.handle.address().del(msg).execute())
                .await
                .map_err(|_| err("removing an address", "netlink timed out"))?
                .map_err(|e| err(&format!("removing {addr}"), e))?;
        }
        Ok(())
    }
}

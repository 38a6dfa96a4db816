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

/// The track name under which an interface's link state reaches the engine.
pub fn link_track_name(iface: &str) -> String {
    format!("link:{iface}")
}

/// Whether an interface is up with carrier, now.
pub fn link_up(iface: &str) -> io::Result<bool> {
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    let flags = addrs
        .filter(|a| a.interface_name == iface)
        .map(|a| a.flags)
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface}")))?;
    Ok(flags.contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING))
}

/// Reports the link state of `ifaces` (ifindex -> name) as tracking input on every change,
/// from rtnetlink link events (not polling), after reporting the current state of each.
pub fn watch_links(
    ifaces: std::collections::HashMap<u32, String>,
    tx: tokio::sync::mpsc::UnboundedSender<(String, crate::engine::TrackInput)>,
) -> io::Result<()> {
    use futures::StreamExt as _;
    use netlink_packet_route::{RouteNetlinkMessage, link::LinkFlags};
    use rtnetlink::{packet_core::NetlinkPayload, sys::AsyncSocket as _};

    use crate::engine::TrackInput;

    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(
            0,
            rtnetlink::constants::RTMGRP_LINK,
        ))?;
    tokio::spawn(conn);
    let mut last = std::collections::HashMap::new();
    for (index, name) in &ifaces {
        let up = link_up(name)?;
        last.insert(*index, up);
        let _ = tx.send((
            link_track_name(name),
            if up { TrackInput::Up } else { TrackInput::Down },
        ));
    }
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload
            else {
                continue;
            };
            let Some(name) = ifaces.get(&link.header.index) else {
                continue;
            };
            let up = link
                .header
                .flags
                .contains(LinkFlags::Up | LinkFlags::Running);
            if last.insert(link.header.index, up) != Some(up) {
                tracing::info!(iface = %name, up, "link state changed");
                let input = if up { TrackInput::Up } else { TrackInput::Down };
                if tx.send((link_track_name(name), input)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

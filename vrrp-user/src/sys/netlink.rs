//! VIPs on the interface, through rtnetlink (never by running `ip`). A master adds its VIPs so
//! that the kernel accepts traffic to them; the data plane still decides who answers ARP / ND.

use std::{io, net::IpAddr, time::Duration};

use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};

use crate::config::{Route, RouteKind, RouteScope, Vip};

/// Every netlink call is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Adds and removes addresses, and makes the macvlans of virtual MACs. Clones share one
/// netlink connection.
#[derive(Clone)]
pub struct Addresses {
    handle: rtnetlink::Handle,
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Bounds a netlink request by [`TIMEOUT`], naming it in the error.
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> io::Result<T> {
    tokio::time::timeout(TIMEOUT, request)
        .await
        .map_err(|_| err(what, "netlink timed out"))?
        .map_err(|e| err(what, e))
}

impl Addresses {
    /// Opens a netlink connection (its task runs on the current tokio runtime).
    pub fn connect() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Adds `vip` (its prefix and label; IPv6 without duplicate address detection, as a VIP
    /// moves between hosts by design) on `ifindex`; an address already there is replaced, so
    /// this is idempotent.
    pub async fn add(&self, ifindex: u32, vip: &Vip) -> io::Result<()> {
        let mut req = self
            .handle
            .address()
            .add(ifindex, vip.addr, vip.prefix)
            .replace();
        let msg = req.message_mut();
        if vip.addr.is_ipv6() {
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        if let Some(label) = &vip.label {
            msg.attributes.push(AddressAttribute::Label(label.clone()));
        }
        bounded(&format!("adding {vip}"), req.execute()).await
    }

    /// Removes `addr` from `ifindex` if present.
    pub async fn remove(&self, ifindex: u32, addr: IpAddr) -> io::Result<()> {
        let found = bounded(
            "listing addresses",
            self.handle
                .address()
                .get()
                .set_link_index_filter(ifindex)
                .set_address_filter(addr)
                .execute()
                .try_collect::<Vec<_>>(),
        )
        .await?;
        for msg in found {
            bounded(
                &format!("removing {addr}"),
                self.handle.address().del(msg).execute(),
            )
            .await?;
        }
        Ok(())
    }

    /// Adds `route` (or replaces the one in its slot: idempotent). Its `dev` is looked up by
    /// name now, so a re-created interface is found under its new index.
    pub async fn add_route(&self, route: &Route) -> io::Result<()> {
        let msg = route_message(route)?;
        bounded(
            &format!("adding the route {route}"),
            self.handle.route().add(msg).replace().execute(),
        )
        .await
    }

    /// Removes `route`; one that is not there (deleted, or gone with its interface) is fine.
    pub async fn remove_route(&self, route: &Route) -> io::Result<()> {
        let msg = match route_message(route) {
            Ok(msg) => msg,
            // Its interface is gone, and the kernel took the route with it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match tokio::time::timeout(TIMEOUT, self.handle.route().del(msg).execute()).await {
            Err(_) => Err(err(
                &format!("removing the route {route}"),
                "netlink timed out",
            )),
            Ok(Ok(())) => Ok(()),
            Ok(Err(rtnetlink::Error::NetlinkError(e))) if e.raw_code() == -libc::ESRCH => Ok(()),
            Ok(Err(e)) => Err(err(&format!("removing the route {route}"), e)),
        }
    }

    /// The index of the interface `name`, if there is one.
    async fn index_of(&self, name: &str) -> io::Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match tokio::time::timeout(TIMEOUT, links.try_next()).await {
            Err(_) => Err(err("looking up a link", "netlink timed out")),
            Ok(Ok(link)) => Ok(link.map(|l| l.header.index)),
            // No such device.
            Ok(Err(rtnetlink::Error::NetlinkError(e))) if e.raw_code() == -libc::ENODEV => Ok(None),
            Ok(Err(e)) => Err(err(&format!("looking up {name}"), e)),
        }
    }

    /// Makes `name` a macvlan of `parent` with address `mac`, up, and returns its index. A
    /// link of that name left from an earlier run is replaced (a hitless restart keeps it:
    /// see [`Addresses::keep_macvlan`]).
    pub async fn macvlan(&self, name: &str, parent: u32, mac: [u8; 6]) -> io::Result<u32> {
        if let Some(index) = self.index_of(name).await? {
            self.delete_link(name, index).await?;
        }
        self.create_macvlan(name, parent, mac).await
    }

    /// Like [`Addresses::macvlan`], but a link of that name is kept as it is (with its
    /// addresses): on resume the VIPs stay where they are.
    pub async fn keep_macvlan(&self, name: &str, parent: u32, mac: [u8; 6]) -> io::Result<u32> {
        match self.index_of(name).await? {
            Some(index) => Ok(index),
            None => self.create_macvlan(name, parent, mac).await,
        }
    }

    /// Creates the macvlan DOWN and without IPv6 link-local address generation: a backup must
    /// send nothing from the virtual MAC (no MLD report, DAD or router solicitation would draw
    /// the switch's forwarding of the virtual MAC to it). It is brought up only while an
    /// instance that uses it is master ([`Addresses::set_up`]).
    async fn create_macvlan(&self, name: &str, parent: u32, mac: [u8; 6]) -> io::Result<u32> {
        use rtnetlink::{LinkMacVlan, packet_route::link::MacVlanMode};
        let msg = LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
            .address(mac.to_vec())
            .build();
        bounded(
            &format!("creating the macvlan {name}"),
            self.handle.link().add(msg).execute(),
        )
        .await?;
        // addr_gen_mode 1 (none): no fe80:: from the virtual MAC when it comes up. Without IPv6
        // on the host the file is not there, and there is nothing to generate.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "1");
        self.index_of(name)
            .await?
            .ok_or_else(|| err(&format!("creating the macvlan {name}"), "it is not there"))
    }

    /// Brings the interface `index` up or down.
    pub async fn set_up(&self, index: u32, up: bool) -> io::Result<()> {
        let builder = rtnetlink::LinkUnspec::new_with_index(index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        bounded(
            &format!("setting link {index} {}", if up { "up" } else { "down" }),
            self.handle.link().set(msg).execute(),
        )
        .await
    }

    /// Deletes the interface `name` if it is there.
    pub async fn remove_link(&self, name: &str) -> io::Result<()> {
        match self.index_of(name).await? {
            Some(index) => self.delete_link(name, index).await,
            None => Ok(()),
        }
    }

    async fn delete_link(&self, name: &str, index: u32) -> io::Result<()> {
        bounded(
            &format!("deleting {name}"),
            self.handle.link().del(index).execute(),
        )
        .await
    }
}

/// The netlink message for `route` (protocol static, as `ip route add` writes by hand).
fn route_message(route: &Route) -> io::Result<netlink_packet_route::route::RouteMessage> {
    use netlink_packet_route::route::{RouteScope as Scope, RouteType};
    let bad = |e: _| err(&format!("the route {route}"), format!("{e:?}"));
    let mut b = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.to, route.prefix)
        .map_err(bad)?
        .table_id(route.table());
    if let Some(via) = route.via {
        b = b.gateway(via).map_err(bad)?;
    }
    if let Some(src) = route.src {
        b = b.pref_source(src).map_err(bad)?;
    }
    if let Some(dev) = &route.dev {
        let index = nix::net::if_::if_nametoindex(dev.as_str()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the route {route}: no interface {dev}"),
            )
        })?;
        b = b.output_interface(index);
    }
    if let Some(metric) = route.metric {
        b = b.priority(metric);
    }
    if route.onlink {
        b = b.onlink();
    }
    b = b.kind(match route.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
    });
    // As `ip route`: a unicast route without a gateway is on the link.
    let scope = match route.scope {
        Some(RouteScope::Global) => Scope::Universe,
        Some(RouteScope::Link) => Scope::Link,
        Some(RouteScope::Host) => Scope::Host,
        None if route.kind == RouteKind::Unicast && route.via.is_none() => Scope::Link,
        None => Scope::Universe,
    };
    Ok(b.scope(scope).build())
}

/// The track name under which an interface's link state reaches the engine.
pub fn link_track_name(iface: &str) -> crate::engine::TrackId {
    crate::engine::TrackId::Link(iface.to_owned())
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

/// What the host's netlink events tell the event loop besides link state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// An address left an interface (deleted by anyone, xvrrp included).
    AddressGone { ifindex: u32, addr: IpAddr },
    /// A watched interface was deleted (its link track went down).
    LinkGone { name: String },
    /// An interface of a watched name appeared again (re-created: a new index).
    LinkBack { name: String },
    /// A static route left a table (deleted by anyone, xvrrp included; a route the kernel
    /// drops with its interface or source address is not always told).
    RouteGone { to: IpAddr, prefix: u8, table: u32 },
    /// The event stream ended: link and address changes would no longer be seen.
    StreamEnded,
}

/// The address an RTM_NEWADDR / RTM_DELADDR message is about (IFA_LOCAL, else IFA_ADDRESS).
fn address_of(msg: &netlink_packet_route::address::AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(addr) => Some(*addr),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(addr) => Some(*addr),
            _ => None,
        })
    })
}

/// What an RTM_DELROUTE of a static route (the protocol xvrrp adds its routes with) is about;
/// routes of routing daemons and the kernel are not the loop's business.
fn static_route_gone(msg: &netlink_packet_route::route::RouteMessage) -> Option<HostEvent> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
    if msg.header.protocol != RouteProtocol::Static {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut to = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => to = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => to = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    let ipv6 = msg.header.address_family == netlink_packet_route::AddressFamily::Inet6;
    let to = to.unwrap_or(if ipv6 {
        IpAddr::from([0u16; 8])
    } else {
        IpAddr::from([0u8; 4])
    });
    Some(HostEvent::RouteGone {
        to,
        prefix: msg.header.destination_prefix_length,
        table,
    })
}

/// Reports the link state of `ifaces` (ifindex -> name) as tracking input on every change,
/// from rtnetlink link events (not polling), after reporting the current state of each; and
/// every address deleted from any interface to `host`. If the event stream ends, `host` hears
/// [`HostEvent::StreamEnded`]. The sender it returns adds interfaces (index, name) to watch
/// (a reload that names new ones): each is reported at once, then on every change.
pub fn watch_links(
    ifaces: std::collections::HashMap<u32, String>,
    tx: tokio::sync::mpsc::UnboundedSender<(crate::engine::TrackId, crate::engine::TrackInput)>,
    host: tokio::sync::mpsc::UnboundedSender<HostEvent>,
) -> io::Result<tokio::sync::mpsc::UnboundedSender<(u32, String)>> {
    use futures::StreamExt as _;
    use netlink_packet_route::{RouteNetlinkMessage, link::LinkFlags};
    use rtnetlink::{constants, packet_core::NetlinkPayload, sys::AsyncSocket as _};

    use crate::engine::TrackInput;

    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(
            0,
            constants::RTMGRP_LINK
                | constants::RTMGRP_IPV4_IFADDR
                | constants::RTMGRP_IPV6_IFADDR
                | constants::RTMGRP_IPV4_ROUTE
                | constants::RTMGRP_IPV6_ROUTE,
        ))?;
    tokio::spawn(conn);
    let mut watched: std::collections::HashSet<String> = ifaces.values().cloned().collect();
    let (more_tx, mut more) = tokio::sync::mpsc::unbounded_channel::<(u32, String)>();
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
        let mut ifaces = ifaces;
        loop {
            let msg = tokio::select! {
                next = messages.next() => match next {
                    Some((msg, _)) => msg,
                    None => break,
                },
                Some((index, name)) = more.recv() => {
                    if watched.insert(name.clone()) {
                        let up = link_up(&name).unwrap_or(false);
                        last.insert(index, up);
                        ifaces.insert(index, name.clone());
                        tracing::info!(iface = %name, up, "watching a link the configuration now names");
                        let input = if up { TrackInput::Up } else { TrackInput::Down };
                        let _ = tx.send((link_track_name(&name), input));
                    }
                    continue;
                }
            };
            let link = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    let Some(name) = ifaces.remove(&link.header.index) else {
                        continue;
                    };
                    tracing::warn!(iface = %name, "a watched interface was deleted");
                    if last.remove(&link.header.index) != Some(false) {
                        let _ = tx.send((link_track_name(&name), TrackInput::Down));
                    }
                    let _ = host.send(HostEvent::LinkGone { name });
                    continue;
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => {
                    if let Some(gone) = static_route_gone(&r) {
                        let _ = host.send(gone);
                    }
                    continue;
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                    if let Some(addr) = address_of(&a) {
                        let _ = host.send(HostEvent::AddressGone {
                            ifindex: a.header.index,
                            addr,
                        });
                    }
                    continue;
                }
                _ => continue,
            };
            if !ifaces.contains_key(&link.header.index) {
                // A watched name under a new index: the interface was re-created.
                let name = link.attributes.iter().find_map(|a| match a {
                    netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                let Some(name) = name.filter(|n| watched.contains(n)) else {
                    continue;
                };
                ifaces.retain(|_, n| *n != name);
                ifaces.insert(link.header.index, name.clone());
                tracing::info!(iface = %name, index = link.header.index, "a watched interface is back (re-created)");
                let _ = host.send(HostEvent::LinkBack { name });
            }
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
        let _ = host.send(HostEvent::StreamEnded);
    });
    Ok(more_tx)
}

//! The data plane's ring buffer: what each event means to the daemon.

use super::*;

/// An address as the maps hold it: IPv6 in 16 bytes, IPv4 in the first 4.
pub(super) fn map_addr(family: Family, bytes: [u8; 16]) -> IpAddr {
    match family {
        Family::V6 => IpAddr::from(bytes),
        Family::V4 => IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
    }
}

pub(super) fn form_of(form: u8) -> ChecksumForm {
    if form == checksum_form::PLAIN {
        ChecksumForm::Plain
    } else {
        ChecksumForm::PseudoHeader
    }
}

/// What an event from the data plane's ring buffer means to the daemon.
pub(super) enum DpEvent {
    /// An advert to feed the engine: the instance, the advert, when it was seen, and its
    /// sender's MAC.
    Heard(InstanceKey, Heard, u64, [u8; 6]),
    /// Another host announced a VIP of this instance (from this MAC).
    Claim(InstanceKey, [u8; 6]),
}

/// Logs one event from the data plane's ring buffer and says what it means.
pub(super) fn log_event(iface: &str, ifindex: u32, bytes: &[u8]) -> Option<DpEvent> {
    if bytes.len() != std::mem::size_of::<Event>() {
        warn!(len = bytes.len(), "malformed data-plane event");
        return None;
    }
    // SAFETY: the length is that of an Event, a Pod; read_unaligned copes with any alignment.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let ipv6 = e.slot >= 256;
    let family = if ipv6 { Family::V6 } else { Family::V4 };
    let vrid = (e.slot % 256) as u8;
    let addr = map_addr(family, e.addr);
    let key = InstanceKey {
        iface: ifindex,
        family,
        vrid,
    };
    let heard = Heard {
        src: addr,
        priority: e.priority,
        interval_cs: e.interval_cs,
        count: e.count,
        form: form_of(e.checksum_form),
    };
    match e.kind {
        event::MASTER_CHANGED => {
            debug!(iface, vrid, ipv6, master = %addr, priority = e.priority, interval_cs = e.interval_cs,
                "advert from a new master, or a changed one");
            Some(DpEvent::Heard(key, heard, e.at_ns, e.mac))
        }
        event::PRIORITY_ZERO => {
            info!(iface, vrid, ipv6, master = %addr, "master resigned (priority 0)");
            Some(DpEvent::Heard(key, heard, e.at_ns, e.mac))
        }
        event::FOREIGN_OWNER => {
            // Judged after a grace (crate::split): a preempting master's first announcement
            // comes with its first advert.
            debug!(iface, vrid, ipv6, vip = %addr, mac = %format_mac(&e.mac),
                "another host announced a VIP this node is master of");
            Some(DpEvent::Claim(key, e.mac))
        }
        other => {
            warn!(kind = other, "unknown data-plane event");
            None
        }
    }
}

/// The kernel-side log, as the data plane hands it over.
pub(super) type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The data plane's event ring.
pub(super) type EventRing = aya::maps::RingBuf<aya::maps::MapData>;

/// One data plane's event ring, registered with the runtime, and the interface it is on.
pub(super) struct Ring {
    pub(super) iface: String,
    pub(super) ifindex: u32,
    pub(super) fd: AsyncFd<EventRing>,
}

/// Polls the event ring and the kernel-side log of every port, and of no other: those of ports
/// a reload added are registered with the runtime, those of ports it removed dropped (any
/// that cannot be polled is logged).
pub(super) fn sync_rings(
    events: &mut Vec<Ring>,
    logs: &mut Vec<(u32, AsyncFd<KernelLog>)>,
    ports: &mut BTreeMap<u32, Port>,
) {
    events.retain(|r| ports.contains_key(&r.ifindex));
    logs.retain(|(index, _)| ports.contains_key(index));
    for (index, port) in ports.iter_mut() {
        if let Some(logger) = port.logger.take() {
            let fd = logger.as_raw_fd();
            // SAFETY: the logger owns its ring buffer's fd, which stays open and the same for
            // as long as the logger lives, and the logger lives inside the AsyncFd.
            match unsafe { AsyncFd::register(logger) } {
                Ok(l) => logs.push((*index, l)),
                Err(err) => warn!(fd, error = %err, "cannot poll kernel-side logs"),
            }
        }
        if events.iter().any(|r| r.ifindex == *index) {
            continue;
        }
        let iface = port.site.iface.clone();
        match port.dp.take_events() {
            // SAFETY: the ring buffer owns its fd for as long as it lives inside the AsyncFd.
            Ok(ring) => match unsafe { AsyncFd::register(ring) } {
                Ok(fd) => events.push(Ring {
                    iface,
                    ifindex: *index,
                    fd,
                }),
                Err(err) => warn!(%iface, error = %err, "data-plane events are not available"),
            },
            Err(err) => warn!(%iface, error = %err, "data-plane events are not available"),
        }
    }
}

/// Waits until one of `items` is ready and `serve` has taken what it holds. One that fails is
/// dropped from the list (`serve` logs why) and yields `R::default()`.
async fn serve_first<T, R: Default>(
    items: &mut Vec<T>,
    mut serve: impl FnMut(&mut T, &mut std::task::Context<'_>) -> std::task::Poll<Option<R>>,
) -> R {
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        for i in 0..items.len() {
            match serve(&mut items[i], cx) {
                Poll::Ready(Some(r)) => return Poll::Ready(r),
                Poll::Ready(None) => {
                    items.remove(i);
                    return Poll::Ready(R::default());
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Waits until one of `rings` has events, and drains it. A ring that fails is dropped from
/// the list (logged).
pub(super) async fn next_events(rings: &mut Vec<Ring>) -> Vec<DpEvent> {
    serve_first(rings, |ring, cx| {
        ring.fd.poll_read_ready_mut(cx).map(|ready| match ready {
            Ok(mut guard) => {
                let mut seen = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    seen.extend(log_event(&ring.iface, ring.ifindex, &item));
                }
                guard.clear_ready();
                Some(seen)
            }
            Err(err) => {
                warn!(iface = %ring.iface, error = %err, "data-plane events stopped");
                None
            }
        })
    })
    .await
}

/// Waits until one of the kernel-side logs has lines, and flushes it to the daemon's log.
pub(super) async fn flush_logs(logs: &mut Vec<(u32, AsyncFd<KernelLog>)>) {
    serve_first(logs, |(_, log), cx| {
        log.poll_read_ready_mut(cx).map(|ready| match ready {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
                Some(())
            }
            Err(err) => {
                warn!(error = %err, "kernel-side logs stopped");
                None
            }
        })
    })
    .await
}

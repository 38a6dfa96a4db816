//! The xvrrp XDP program.
//!
//! - ARP requests and IPv6 neighbour solicitations for a VIP are answered here (XDP_TX) only
//!   while this node is master of the VIP's VRID AND the daemon's heartbeat is fresh; otherwise
//!   they are dropped, so the kernel cannot answer either.
//! - VRRP adverts for the VRIDs configured on the interface are validated (TTL, version, length,
//!   checksum in every accepted form, unicast peer); a valid one updates the VRID's liveness
//!   entry and, when the master changes or resigns, pushes an event; an invalid one is dropped
//!   and counted by reason.
//! - A claim on a VIP we are master of from another MAC is counted and pushed as an event.
//!
//! It only bounds-checks, looks up, counts and rewrites; every decision is a pure function of
//! `vrrp_common`, unit-tested on the host. Anything that is not ours is `XDP_PASS`, untouched.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    btf_maps::{Array, HashMap, PerCpuArray, RingBuf},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use vrrp_common::{
    EVENTS_BYTES, Event, Heartbeat, Liveness, MAP_F_MMAPABLE, MAX_PEERS, MAX_SLOTS, MAX_VIPS,
    PeerKey, Vip4Key, Vip6Key, VipStats, VipValue, VridState, VridStats,
    arp::{self, ArpIpv4, ETH_P_ARP, ETH_P_IPV4, EthHdr, Verdict},
    event, heartbeat_fresh,
    ip::Ipv4Hdr,
    nd::{self, ETH_P_IPV6, IPPROTO_ICMPV6, Ipv6Hdr, NdHead, NdOpt},
    role, slot, vip_flags, vip_slot, vrid_flags,
    vrrp::{self, AdvertDrop, Family, HEADER_LEN, IPPROTO_VRRP, V2_AUTH_LEN, Version},
};

#[btf_map]
static XVRRP_VIPS4: HashMap<Vip4Key, VipValue, { MAX_VIPS as usize }> = HashMap::new();
#[btf_map]
static XVRRP_VIPS6: HashMap<Vip6Key, VipValue, { MAX_VIPS as usize }> = HashMap::new();
#[btf_map]
static XVRRP_VRIDS: Array<VridState, { MAX_SLOTS as usize }> = Array::new();
#[btf_map]
static XVRRP_LIVENESS: Array<Liveness, { MAX_SLOTS as usize }, MAP_F_MMAPABLE> = Array::new();
#[btf_map]
static XVRRP_VRIDSTATS: PerCpuArray<VridStats, { MAX_SLOTS as usize }> = PerCpuArray::new();
#[btf_map]
static XVRRP_VIPSTATS: PerCpuArray<VipStats, { MAX_VIPS as usize }> = PerCpuArray::new();
#[btf_map]
static XVRRP_PEERS: HashMap<PeerKey, u32, { MAX_PEERS as usize }> = HashMap::new();
#[btf_map]
static XVRRP_HEARTBT: Array<Heartbeat, 1, MAP_F_MMAPABLE> = Array::new();
#[btf_map]
static XVRRP_EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

/// The MAC address of the interface the program is attached to, set at load time.
#[unsafe(no_mangle)]
static XVRRP_IFACE_MAC: Global<[u8; 6]> = Global::new([0; 6]);

#[xdp]
pub fn xvrrp(ctx: XdpContext) -> u32 {
    handle::<false>(&ctx)
}

/// The daemon's clock sample (run with BPF_PROG_TEST_RUN, never attached): the kernel's
/// jiffies, then CLOCK_MONOTONIC ns, in the frame's first 16 bytes, native byte order. The
/// daemon measures from these how its clock maps to the jiffies the request gate reads.
#[xdp]
pub fn xvrrp_clock(ctx: XdpContext) -> u32 {
    let Ok(out) = ptr_at::<[u8; 16]>(&ctx, 0) else {
        return XDP_ABORTED;
    };
    // SAFETY: helpers without arguments.
    let (jiffies, mono) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    let mut sample = [0u8; 16];
    sample[..8].copy_from_slice(&jiffies.to_ne_bytes());
    sample[8..].copy_from_slice(&mono.to_ne_bytes());
    // SAFETY: ptr_at checked that the 16 bytes lie within the frame.
    unsafe { core::ptr::write_unaligned(out, sample) };
    XDP_PASS
}

/// The program. `BARE` (only in the bench's reference program) compiles out the role and
/// heartbeat gate and the counters, and leaves the parsing, the VIP lookup and the rewrite: a
/// bare responder that answers every request for a VIP in the table.
#[inline(always)]
fn handle<const BARE: bool>(ctx: &XdpContext) -> u32 {
    match try_xvrrp::<BARE>(ctx) {
        Ok(action) => action,
        Err(()) => XDP_PASS,
    }
}

#[cfg(feature = "bench")]
mod bench;

/// A pointer to a `T` at `offset` in the packet, if the whole `T` lies within it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// A `&mut T` at `offset` in the packet.
#[inline(always)]
fn at<'a, T>(ctx: &XdpContext, offset: usize) -> Result<&'a mut T, ()> {
    // SAFETY: ptr_at checked that the whole T lies within the packet; the packet outlives the
    // program run, and every T used here is a repr(C) struct of bytes (alignment 1).
    ptr_at::<T>(ctx, offset).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn now_ns() -> u64 {
    // The coarse clock costs a few ns where the fine one costs ~30 ns here; its resolution (a
    // jiffy) is far below any advert interval. (The request gate reads jiffies, cheaper still.)
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn count_vrid(slot: u32, update: impl FnOnce(&mut VridStats)) {
    if let Some(stats) = XVRRP_VRIDSTATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by the program running on this CPU.
        update(unsafe { &mut *stats });
    }
}

#[inline(always)]
fn count_vip(vip: &VipValue, update: impl FnOnce(&mut VipStats)) {
    if let Some(stats) = XVRRP_VIPSTATS.get_ptr_mut(vip.stats_index) {
        // SAFETY: as above.
        update(unsafe { &mut *stats });
    }
}

// Inlined into every program that runs it, so that the bench object's programs time the same
// code as the daemon's (where it has one caller and LLVM inlines it anyway), not a BPF-to-BPF
// call returning its result through the stack.
#[inline(always)]
fn try_xvrrp<const BARE: bool>(ctx: &XdpContext) -> Result<u32, ()> {
    let eth: &mut EthHdr = at(ctx, 0)?;
    // A VLAN-tagged frame (802.1Q, 802.1ad) belongs to a VLAN device over this interface, not
    // to it: it passes untouched, like every ethertype that is not ours.
    match eth.ethertype() {
        ETH_P_ARP => on_arp::<BARE>(ctx, eth, EthHdr::LEN),
        ETH_P_IPV4 => on_ipv4(ctx, EthHdr::LEN),
        ETH_P_IPV6 => on_ipv6::<BARE>(ctx, eth, EthHdr::LEN),
        _ => Ok(XDP_PASS),
    }
}

/// Whether to answer a request for `vip`, counted once, by verdict, in the VIP's counters
/// (the daemon sums a VRID's from its VIPs': one counter per request is part of the cost).
#[inline(always)]
fn request_verdict<const BARE: bool>(vip: &VipValue, slot: u32) -> Verdict {
    if BARE {
        return Verdict::Reply;
    }
    // The role and the heartbeat in one lookup; jiffies (inlined by the verifier, no helper
    // call) are read only on a master.
    let (master, fresh) = match XVRRP_HEARTBT.get(0) {
        // SAFETY: a helper without arguments.
        Some(hb) if hb.is_master(slot) => {
            (true, heartbeat_fresh(unsafe { bpf_jiffies64() }, hb.until))
        }
        _ => (false, false),
    };
    let verdict = arp::vip_request_verdict(master, fresh, vip.flags & vip_flags::ABSENT != 0);
    // One increment per arm: the verifier rejects a pointer chosen among a map value's fields.
    count_vip(vip, |s| match verdict {
        Verdict::Reply => s.answered += 1,
        Verdict::DropNotMaster => s.dropped_not_master += 1,
        Verdict::DropStaleHeartbeat => s.dropped_stale_heartbeat += 1,
        Verdict::PassAbsent => s.passed_absent += 1,
    });
    verdict
}

/// Counts and reports another MAC claiming a VIP we are master of.
#[inline(always)]
fn foreign_owner<const BARE: bool>(vip: &VipValue, slot: u32, addr: [u8; 16], mac: [u8; 6]) {
    if BARE {
        return;
    }
    if XVRRP_VRIDS.get(slot).map_or(role::INIT, |s| s.role) != role::MASTER {
        return;
    }
    count_vrid(slot, |s| s.foreign_owner += 1);
    count_vip(vip, |s| s.foreign_owner += 1);
    let _ = XVRRP_EVENTS.output(
        Event {
            kind: event::FOREIGN_OWNER,
            slot,
            at_ns: now_ns(),
            addr,
            mac,
            ..Event::default()
        },
        0,
    );
}

#[inline(always)]
fn on_arp<const BARE: bool>(ctx: &XdpContext, eth: &mut EthHdr, l3: usize) -> Result<u32, ()> {
    let arp: &mut ArpIpv4 = at(ctx, l3)?;
    let iface_mac = XVRRP_IFACE_MAC.load();
    if let Some(addr) = arp::asked_address(arp) {
        // SAFETY: the value is copied out at once.
        let Some(vip) = (unsafe { XVRRP_VIPS4.get(Vip4Key { addr }) }).copied() else {
            return Ok(XDP_PASS);
        };
        if !arp::addressed_to_us(&eth.dst, &iface_mac, &vip.mac) {
            return Ok(XDP_PASS);
        }
        let slot = vip_slot(&vip, false);
        return Ok(match request_verdict::<BARE>(&vip, slot) {
            Verdict::Reply => {
                arp::rewrite_to_reply(eth, arp, &vip);
                XDP_TX
            }
            Verdict::PassAbsent => XDP_PASS,
            Verdict::DropNotMaster | Verdict::DropStaleHeartbeat => {
                debug!(
                    ctx,
                    "arp for {:i} dropped: not a live master of vrid {}",
                    u32::from_be_bytes(addr),
                    vip.vrid
                );
                XDP_DROP
            }
        });
    }
    // A reply or a gratuitous ARP: a claim, if it is for one of our VIPs from another MAC.
    // SAFETY: as above.
    if let Some(vip) = (unsafe { XVRRP_VIPS4.get(Vip4Key { addr: arp.spa }) }).copied()
        && let Some((addr, mac)) = arp::foreign_claim(arp, &vip.mac, &iface_mac)
    {
        let mut wide = [0u8; 16];
        wide[..4].copy_from_slice(&addr);
        foreign_owner::<BARE>(&vip, vip_slot(&vip, false), wide, mac);
    }
    Ok(XDP_PASS)
}

#[inline(always)]
fn on_ipv4(ctx: &XdpContext, l3: usize) -> Result<u32, ()> {
    let ip: &mut Ipv4Hdr = at(ctx, l3)?;
    if ip.protocol != IPPROTO_VRRP || ip.is_fragment() {
        return Ok(XDP_PASS);
    }
    let (Some(header_len), Some(payload_len)) = (ip.header_len(), ip.payload_len()) else {
        return Ok(XDP_PASS);
    };
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&ip.src);
    let pseudo = vrrp::pseudo_sum(Family::V4, &ip.src, &ip.dst, payload_len);
    on_advert(
        ctx,
        l3 + header_len,
        payload_len,
        Family::V4,
        ip.ttl,
        src,
        u64::from(pseudo),
    )
}

#[inline(always)]
fn on_ipv6<const BARE: bool>(ctx: &XdpContext, eth: &mut EthHdr, l3: usize) -> Result<u32, ()> {
    let ip: &mut Ipv6Hdr = at(ctx, l3)?;
    match ip.next_header {
        IPPROTO_VRRP => {
            let payload_len = usize::from(ip.payload_len());
            let pseudo = vrrp::pseudo_sum(Family::V6, &ip.src, &ip.dst, payload_len);
            on_advert(
                ctx,
                l3 + Ipv6Hdr::LEN,
                payload_len,
                Family::V6,
                ip.hop_limit,
                ip.src,
                u64::from(pseudo),
            )
        }
        IPPROTO_ICMPV6 => on_nd::<BARE>(ctx, eth, ip, l3 + Ipv6Hdr::LEN),
        _ => Ok(XDP_PASS),
    }
}

#[inline(always)]
fn on_nd<const BARE: bool>(
    ctx: &XdpContext,
    eth: &mut EthHdr,
    ip: &mut Ipv6Hdr,
    l4: usize,
) -> Result<u32, ()> {
    let head: &mut NdHead = at(ctx, l4)?;
    let opt: Option<&mut NdOpt> = at(ctx, l4 + NdHead::LEN).ok();
    let iface_mac = XVRRP_IFACE_MAC.load();
    if let Some((target, answerable)) = nd::solicited_target(ip, head, opt.as_deref()) {
        // SAFETY: the value is copied out at once.
        let Some(vip) = (unsafe { XVRRP_VIPS6.get(Vip6Key { addr: target }) }).copied() else {
            return Ok(XDP_PASS);
        };
        if !arp::addressed_to_us(&eth.dst, &iface_mac, &vip.mac) && eth.dst[0] & 1 == 0 {
            return Ok(XDP_PASS);
        }
        let slot = vip_slot(&vip, true);
        return Ok(match (request_verdict::<BARE>(&vip, slot), opt) {
            (Verdict::Reply, Some(opt)) if answerable => {
                nd::rewrite_to_advert(eth, ip, head, opt, &vip.mac);
                XDP_TX
            }
            // A live master leaves the forms it does not answer itself to the kernel, and the
            // VIPs not on the interface.
            (Verdict::Reply | Verdict::PassAbsent, _) => XDP_PASS,
            (Verdict::DropNotMaster | Verdict::DropStaleHeartbeat, _) => XDP_DROP,
        });
    }
    if let Some(opt) = opt
        && head.icmp_type == nd::ICMPV6_NA
        // SAFETY: as above.
        && let Some(vip) = (unsafe { XVRRP_VIPS6.get(Vip6Key { addr: head.target }) }).copied()
        && let Some((addr, mac)) = nd::foreign_claim(ip, head, opt, &vip.mac, &iface_mac)
    {
        foreign_owner::<BARE>(&vip, vip_slot(&vip, true), addr, mac);
    }
    Ok(XDP_PASS)
}

/// A VRRP advert (or CARP, or garbage) at `off`, `payload_len` bytes of IP payload.
#[inline(always)]
fn on_advert(
    ctx: &XdpContext,
    off: usize,
    payload_len: usize,
    family: Family,
    ttl: u8,
    src: [u8; 16],
    pseudo: u64,
) -> Result<u32, ()> {
    let hdr: &mut [u8; HEADER_LEN] = at(ctx, off)?;
    if vrrp::is_carp(hdr, payload_len) {
        return Ok(XDP_PASS);
    }
    let slot = slot(family == Family::V6, hdr[1]);
    let state = XVRRP_VRIDS.get(slot).copied().unwrap_or_default();
    if state.flags & vrid_flags::CONFIGURED == 0 {
        // Not ours: another VRRP daemon on this interface may run this VRID (keepalived beside
        // xvrrp during a migration), so it gets the advert as it would without XDP.
        count_vrid(slot, |s| s.adverts_other_vrid += 1);
        return Ok(XDP_PASS);
    }
    let verdict = validate(
        ctx,
        off,
        payload_len,
        family,
        ttl,
        &src,
        pseudo,
        slot,
        &state,
    );
    match verdict {
        Ok(form) => {
            count_vrid(slot, |s| s.adverts_valid += 1);
            // The sender's MAC goes with the events: a host that later announces a VIP of ours
            // is known by it (split brain judged in the daemon).
            let mac = at::<EthHdr>(ctx, 0).map(|eth| eth.src).unwrap_or_default();
            record(slot, hdr, &src, form, mac);
            Ok(XDP_PASS)
        }
        Err(why) => {
            count_vrid(slot, |s| match why {
                AdvertDrop::Ttl => s.adverts_drop_ttl += 1,
                AdvertDrop::Version => s.adverts_drop_version += 1,
                AdvertDrop::Length => s.adverts_drop_length += 1,
                AdvertDrop::Checksum => s.adverts_drop_checksum += 1,
                AdvertDrop::Peer => s.adverts_drop_peer += 1,
                AdvertDrop::Auth => s.adverts_drop_auth += 1,
                AdvertDrop::Addresses => s.adverts_drop_addresses += 1,
            });
            Ok(XDP_DROP)
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn validate(
    ctx: &XdpContext,
    off: usize,
    payload_len: usize,
    family: Family,
    ttl: u8,
    src: &[u8; 16],
    pseudo: u64,
    slot: u32,
    state: &VridState,
) -> Result<u8, AdvertDrop> {
    let unicast = state.flags & vrid_flags::UNICAST != 0;
    let need_ttl_255 = !unicast || state.flags & vrid_flags::UNICAST_CHECK_TTL != 0;
    let hdr: &mut [u8; HEADER_LEN] = at(ctx, off).map_err(|()| AdvertDrop::Length)?;
    let version = vrrp::check_header(hdr, payload_len, family, ttl, need_ttl_255, state.version)?;
    if version == Version::V2 {
        // The offset comes from the (bounded) count, which check_header matched to the length.
        let data: &mut [u8; V2_AUTH_LEN] =
            at(ctx, off + vrrp::v2_auth_offset(hdr[3])).map_err(|()| AdvertDrop::Length)?;
        let ours = (state.flags & vrid_flags::AUTH_SIMPLE != 0).then_some(&state.auth);
        if !vrrp::v2_auth_ok(hdr[4], data, ours) {
            return Err(AdvertDrop::Auth);
        }
    }
    if unicast {
        // SAFETY: only tested for presence.
        let allowed = unsafe { XVRRP_PEERS.get(PeerKey { slot, addr: *src }) }.is_some();
        if !allowed {
            return Err(AdvertDrop::Peer);
        }
    }
    let (plain, addr_hash) =
        sum_advert(ctx, off, payload_len, family, usize::from(hdr[3])).ok_or(AdvertDrop::Length)?;
    let form = vrrp::verified_form(version, family, plain, pseudo).ok_or(AdvertDrop::Checksum)?;
    if state.flags & vrid_flags::CHECK_ADDRESSES != 0 && addr_hash != state.addr_hash {
        // keepalived's skip_check_adv_addr: the master last heard may change its list.
        let same_master = state.flags & vrid_flags::SKIP_CHECK_SAME_MASTER != 0
            && XVRRP_LIVENESS
                .get(slot)
                .is_some_and(|l| l.last_seen_ns != 0 && l.src == *src);
        if !same_master {
            return Err(AdvertDrop::Addresses);
        }
    }
    Ok(form)
}

/// Reads the big-endian 32-bit word at `bytes[i..i + 4]`.
#[inline(always)]
fn word_at(bytes: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
}

/// The sum of the big-endian 32-bit words of the advert at `off` (`len` bytes, whole words, its
/// length already matched to its `count` addresses), and the address-set hash of those
/// addresses as [`vrrp::address_set_hash`] computes it. One iteration per address, not per
/// word: the verifier walks at most 255 of them.
#[inline(always)]
fn sum_advert(
    ctx: &XdpContext,
    off: usize,
    len: usize,
    family: Family,
    count: usize,
) -> Option<(u64, u32)> {
    let hdr: &mut [u8; HEADER_LEN] = at(ctx, off).ok()?;
    let mut acc = u64::from(word_at(hdr, 0)) + u64::from(word_at(hdr, 4));
    let mut set = 0u32;
    let mut pos = off + HEADER_LEN;
    if family == Family::V6 {
        for a in 0..usize::from(u8::MAX) {
            if a >= count {
                break;
            }
            let addr: &mut [u8; 16] = at(ctx, pos).ok()?;
            let mut cur = 0;
            for lane in 0..4 {
                let w = word_at(addr, lane * 4);
                acc += u64::from(w);
                cur = vrrp::address_hash_step(cur, w, lane == 0);
            }
            set = set.wrapping_add(cur);
            pos += 16;
        }
    } else {
        for a in 0..usize::from(u8::MAX) {
            if a >= count {
                break;
            }
            let addr: &mut [u8; 4] = at(ctx, pos).ok()?;
            let w = word_at(addr, 0);
            acc += u64::from(w);
            set = set.wrapping_add(vrrp::address_hash_step(0, w, true));
            pos += 4;
        }
    }
    // VRRPv2's authentication data.
    if len == pos - off + V2_AUTH_LEN {
        let auth: &mut [u8; V2_AUTH_LEN] = at(ctx, pos).ok()?;
        acc += u64::from(word_at(auth, 0)) + u64::from(word_at(auth, 4));
    }
    Some((acc, set))
}

/// Updates the VRID's liveness entry, and pushes an event when its master changed or resigned.
#[inline(always)]
fn record(slot: u32, hdr: &[u8; HEADER_LEN], src: &[u8; 16], form: u8, mac: [u8; 6]) {
    let Some(live) = XVRRP_LIVENESS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a slot of an array map; concurrent writers (other CPUs) write the same kind of
    // values, and a torn entry only delays the daemon's view by one advert.
    let live = unsafe { &mut *live };
    let priority = hdr[2];
    let interval_cs = match hdr[0] >> 4 {
        2 => u16::from(hdr[5]) * 100,
        _ => u16::from_be_bytes([hdr[4] & 0x0f, hdr[5]]),
    };
    let now = now_ns();
    let changed = live.src != *src || live.priority != priority || live.interval_cs != interval_cs;
    live.last_seen_ns = now;
    live.src = *src;
    live.priority = priority;
    live.version = hdr[0] >> 4;
    live.count = hdr[3];
    live.checksum_form = form;
    live.interval_cs = interval_cs;
    if changed || priority == 0 {
        let _ = XVRRP_EVENTS.output(
            Event {
                kind: if priority == 0 {
                    event::PRIORITY_ZERO
                } else {
                    event::MASTER_CHANGED
                },
                slot,
                at_ns: now,
                addr: *src,
                priority,
                version: hdr[0] >> 4,
                count: hdr[3],
                checksum_form: form,
                interval_cs,
                mac,
                ..Event::default()
            },
            0,
        );
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! The xvrrp XDP program: answers ARP for the VIPs of the VRIDs this node is master of.
//!
//! It only bounds-checks, looks up and rewrites; every decision is a pure function of
//! `vrrp_common`, unit-tested on the host. Anything that is not ours is `XDP_PASS`, untouched.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use vrrp_common::{
    MAX_VIPS_V4, MAX_VRIDS, Stats, Vip4Key, VipValue, VridState,
    arp::{self, ArpIpv4, ETH_P_ARP, EthHdr, Verdict},
    role,
};

/// IPv4 VIPs this node serves (key: address in network order).
#[btf_map]
static XVRRP_VIPS4: HashMap<Vip4Key, VipValue, { MAX_VIPS_V4 as usize }> = HashMap::new();

/// This node's role per VRID, written by the daemon.
#[btf_map]
static XVRRP_VRIDS: Array<VridState, { MAX_VRIDS as usize }> = Array::new();

/// Packet counters (per CPU; the daemon sums them).
#[btf_map]
static XVRRP_STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

/// The MAC address of the interface the program is attached to, set at load time.
#[unsafe(no_mangle)]
static XVRRP_IFACE_MAC: Global<[u8; 6]> = Global::new([0; 6]);

#[xdp]
pub fn xvrrp(ctx: XdpContext) -> u32 {
    match try_xvrrp(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_PASS,
    }
}

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

#[inline(always)]
fn count(update: impl FnOnce(&mut Stats)) {
    if let Some(stats) = XVRRP_STATS.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot is only touched by the program running on this CPU.
        update(unsafe { &mut *stats });
    }
}

fn try_xvrrp(ctx: &XdpContext) -> Result<u32, ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the header lies within the packet.
    let eth = unsafe { &mut *eth };
    if eth.ethertype() != ETH_P_ARP {
        return Ok(xdp_action::XDP_PASS);
    }
    let arp: *mut ArpIpv4 = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: as above.
    let arp = unsafe { &mut *arp };
    let Some(addr) = arp::asked_address(arp) else {
        return Ok(xdp_action::XDP_PASS);
    };
    // SAFETY: the value is copied out at once; the daemon may replace it concurrently, and a
    // torn read of an 8-byte value is no worse than reading the old or the new one.
    let Some(vip) = (unsafe { XVRRP_VIPS4.get(Vip4Key { addr }) }).copied() else {
        return Ok(xdp_action::XDP_PASS);
    };
    if !arp::addressed_to_us(&eth.dst, &XVRRP_IFACE_MAC.load(), &vip.mac) {
        return Ok(xdp_action::XDP_PASS);
    }
    count(|s| s.arp_vip_requests += 1);
    let role = XVRRP_VRIDS
        .get(u32::from(vip.vrid))
        .map_or(role::INIT, |state| state.role);
    match arp::vip_request_verdict(role) {
        Verdict::Reply => {
            arp::rewrite_to_reply(eth, arp, &vip);
            count(|s| s.arp_replied += 1);
            Ok(xdp_action::XDP_TX)
        }
        Verdict::Drop => {
            count(|s| s.arp_dropped_not_master += 1);
            debug!(
                ctx,
                "arp for {:i} dropped: not master of vrid {}",
                u32::from_be_bytes(addr),
                vip.vrid
            );
            Ok(xdp_action::XDP_DROP)
        }
        Verdict::Pass => Ok(xdp_action::XDP_PASS),
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

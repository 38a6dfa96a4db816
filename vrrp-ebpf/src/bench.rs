//! Bench-only programs (the `bench` feature; never in the object the daemon loads): timing
//! harnesses for BPF_PROG_TEST_RUN, a traffic generator, and bare reference programs that
//! `cargo xtask bench` times beside xvrrp's program so that its cost is a ratio in one run.

use super::{handle, ptr_at};
use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_PASS, XDP_TX},
    btf_maps::PerCpuArray,
    helpers::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::{btf_map, xdp},
    programs::XdpContext,
};

/// The first [`BENCH_LEN`] bytes of the frame are saved, the program runs, and the bytes are
/// restored, so that BPF_PROG_TEST_RUN with `repeat` times the same path every time. `cargo
/// xtask bench` subtracts [`xvrrp_bench_base`].
#[xdp]
pub fn xvrrp_bench(ctx: XdpContext) -> u32 {
    bench(&ctx, handle::<false>)
}

/// The save and restore of [`xvrrp_bench`] without any program.
#[xdp]
pub fn xvrrp_bench_base(ctx: XdpContext) -> u32 {
    bench(&ctx, |_| XDP_PASS)
}

/// The reference for xvrrp's request paths (ARP and neighbour solicitation), in the same
/// harness: the same program with the role and heartbeat gate and the counters compiled out, so
/// the same parsing, VIP lookup and rewrite. xvrrp's cost over it is what its safety costs.
#[xdp]
pub fn xvrrp_ref(ctx: XdpContext) -> u32 {
    bench(&ctx, handle::<true>)
}

/// The reference for a frame that is not xvrrp's: a program that passes everything.
#[xdp]
pub fn xvrrp_ref_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// A traffic generator for BPF_PROG_TEST_RUN live frames. Live frames recycle pages with
/// whatever the last program wrote (an answered request comes back as a reply), so every frame
/// is rewritten into the same ARP request before it is transmitted: who has 192.0.2.100, from
/// 02:00:00:00:00:10 / 192.0.2.10 (the bench's addresses).
#[xdp]
pub fn xvrrp_bench_gen(ctx: XdpContext) -> u32 {
    match ptr_at::<[u8; BENCH_ARP_REQUEST.len()]>(&ctx, 0) {
        Ok(frame) => {
            // SAFETY: ptr_at checked the bounds.
            unsafe { core::ptr::write_volatile(frame, BENCH_ARP_REQUEST) };
            XDP_TX
        }
        Err(()) => XDP_ABORTED,
    }
}

const BENCH_ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x10, 0x08, 0x06, // Ethernet
    0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // ARP request, IPv4 over Ethernet
    0x02, 0, 0, 0, 0, 0x10, 192, 0, 2, 10, // sender
    0, 0, 0, 0, 0, 0, 192, 0, 2, 100, // target
];

/// Frames the bench programs take are padded to this length.
const BENCH_LEN: usize = 128;

/// Where [`bench`] saves the frame (the stack has no room for it).
#[btf_map]
static XVRRP_BENCHBUF: PerCpuArray<[u8; BENCH_LEN], 1> = PerCpuArray::new();

#[inline(always)]
fn bench(ctx: &XdpContext, run: impl Fn(&XdpContext) -> u32) -> u32 {
    let Some(saved) = XVRRP_BENCHBUF.get_ptr_mut(0) else {
        return XDP_ABORTED;
    };
    // Copied with helpers rather than through a packet pointer, so that the verifier sees the
    // program's own bounds checks exactly as in `xvrrp`.
    let len = BENCH_LEN as u32;
    // SAFETY: the scratch slot is this CPU's and BENCH_LEN bytes long.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, saved.cast(), len) } != 0 {
        return XDP_ABORTED;
    }
    let verdict = run(ctx);
    // SAFETY: as above; the frame was at least BENCH_LEN bytes and the program never resizes it.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, saved.cast(), len) };
    verdict
}

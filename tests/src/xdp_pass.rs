//! Two-instruction XDP programs (return a constant action), loaded and attached with raw bpf(2)
//! calls so the lab needs no object file. The pass program, attached to the bridge side of each
//! veth, makes the kernel deliver frames that the host side sends with XDP_TX in native mode;
//! the benches use a TX program as a live-frames traffic generator and a drop program as a sink.

use std::os::fd::{AsRawFd as _, OwnedFd};

use anyhow::Context as _;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `r0 = action; exit`.
fn insns(action: u32) -> [u64; 2] {
    let imm = action.to_le_bytes();
    [
        // opcode 0xb7 (mov64 imm), dst r0
        u64::from_le_bytes([0xb7, 0x00, 0x00, 0x00, imm[0], imm[1], imm[2], imm[3]]),
        // opcode 0x95 (exit)
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ]
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: attr is a zero-extended bpf_attr of 128 bytes that outlives the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn put_u32(attr: &mut [u8; 128], offset: usize, v: u32) {
    attr[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], offset: usize, v: u64) {
    attr[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads the pass program.
pub fn load() -> anyhow::Result<OwnedFd> {
    load_returning(XDP_PASS)
}

/// Loads a program that returns `action` for every frame.
pub fn load_returning(action: u32) -> anyhow::Result<OwnedFd> {
    static LICENSE: &[u8] = b"GPL\0";
    let code = insns(action);
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP); // prog_type
    put_u32(&mut attr, 4, code.len() as u32); // insn_cnt
    put_u64(&mut attr, 8, code.as_ptr() as u64); // insns
    put_u64(&mut attr, 16, LICENSE.as_ptr() as u64); // license
    put_u32(&mut attr, 68, BPF_XDP); // expected_attach_type
    super::owned_fd(
        bpf(BPF_PROG_LOAD, &mut attr),
        "BPF_PROG_LOAD of the pass program",
    )
}

/// Attaches `prog` in native mode to `iface` of the calling thread's namespace; the
/// attachment lasts as long as the returned link fd.
pub fn attach_native(prog: &OwnedFd, iface: &str) -> anyhow::Result<OwnedFd> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("no interface {iface}"));
    }
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32); // prog_fd
    put_u32(&mut attr, 4, ifindex); // target_ifindex
    put_u32(&mut attr, 8, BPF_XDP); // attach_type
    put_u32(&mut attr, 12, XDP_FLAGS_DRV_MODE); // flags
    super::owned_fd(
        bpf(BPF_LINK_CREATE, &mut attr),
        "BPF_LINK_CREATE (XDP, native)",
    )
}

/// Runs `prog` on `frame` `repeat` times in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES), as
/// if received on `ifindex`: a program returning XDP_TX makes this an in-kernel traffic
/// generator transmitting out of that interface. Returns the wall-clock time it took.
pub fn live_frames(
    prog: &OwnedFd,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch: u32,
) -> anyhow::Result<std::time::Duration> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32); // prog_fd
    put_u32(&mut attr, 8, frame.len() as u32); // data_size_in
    put_u64(&mut attr, 16, frame.as_ptr() as u64); // data_in
    put_u32(&mut attr, 32, repeat); // repeat
    put_u32(&mut attr, 40, std::mem::size_of_val(&ctx) as u32); // ctx_size_in
    put_u64(&mut attr, 48, ctx.as_ptr() as u64); // ctx_in
    put_u32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES); // flags
    put_u32(&mut attr, 72, batch); // batch_size
    let start = std::time::Instant::now();
    let ret = bpf(BPF_PROG_TEST_RUN, &mut attr);
    let took = start.elapsed();
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN (live frames)");
    }
    Ok(took)
}

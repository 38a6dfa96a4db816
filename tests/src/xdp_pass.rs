//! A two-instruction XDP program that passes every frame, loaded and attached with raw bpf(2)
//! calls so the lab needs no object file. Attached to the bridge side of each veth, it makes
//! the kernel deliver frames that the host side sends with XDP_TX in native mode.

use std::os::fd::{AsRawFd as _, OwnedFd};

use anyhow::Context as _;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `r0 = XDP_PASS (2); exit`.
const PASS_INSNS: [u64; 2] = [
    // opcode 0xb7 (mov64 imm), dst r0, imm 2
    u64::from_le_bytes([0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]),
    // opcode 0x95 (exit)
    u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
];

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
    static LICENSE: &[u8] = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP); // prog_type
    put_u32(&mut attr, 4, PASS_INSNS.len() as u32); // insn_cnt
    put_u64(&mut attr, 8, PASS_INSNS.as_ptr() as u64); // insns
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

//! The real XDP object, loaded into the kernel and run on crafted frames with
//! BPF_PROG_TEST_RUN: verdicts, rewritten bytes and counters.

use std::net::Ipv4Addr;

use aya::programs::{TestRun as _, TestRunOptions};
use vrrp_common::{VipValue, role, virtual_mac_v4};
use vrrp_user::dataplane::{DataPlane, KernelLogLevel};
use xvrrp_lab::privileged;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const CLIENT_IP: [u8; 4] = [192, 0, 2, 10];
const VIP: [u8; 4] = [192, 0, 2, 100];
const BACKUP_VIP: [u8; 4] = [192, 0, 2, 101];

/// An Ethernet + ARP frame, built field by field (not with the code under test).
fn arp_frame(
    eth_dst: [u8; 6],
    oper: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&oper.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

fn request_for(tpa: [u8; 4]) -> Vec<u8> {
    arp_frame([0xff; 6], 1, CLIENT_MAC, CLIENT_IP, [0; 6], tpa)
}

struct Fixture {
    dp: DataPlane,
}

impl Fixture {
    /// VIP mastered (vrid 51, interface MAC), BACKUP_VIP on vrid 52 as backup.
    fn new() -> Self {
        let mut dp = DataPlane::load(IFACE_MAC, KernelLogLevel::Info).expect("load the XDP object");
        dp.set_vip_v4(
            Ipv4Addr::from(VIP),
            VipValue {
                vrid: 51,
                flags: 0,
                mac: IFACE_MAC,
            },
        )
        .unwrap();
        dp.set_role(51, role::MASTER).unwrap();
        dp.set_vip_v4(
            Ipv4Addr::from(BACKUP_VIP),
            VipValue {
                vrid: 52,
                flags: 0,
                mac: IFACE_MAC,
            },
        )
        .unwrap();
        dp.set_role(52, role::BACKUP).unwrap();
        Self { dp }
    }

    /// Runs the program once on `frame`: the verdict and the frame as it left the program.
    fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let mut out = vec![0u8; frame.len().max(64) + 256];
        let result = self.dp.program().unwrap().test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    fn verdict_unchanged(&mut self, frame: &[u8]) -> u32 {
        let (verdict, out) = self.run(frame).expect("test run");
        assert_eq!(
            out, frame,
            "a frame that is not answered must leave untouched"
        );
        verdict
    }
}

#[test]
fn arp_request_for_a_mastered_vip_is_answered_with_exact_bytes() {
    if !privileged("arp_request_for_a_mastered_vip_is_answered_with_exact_bytes") {
        return;
    }
    let mut fx = Fixture::new();
    let expected = arp_frame(CLIENT_MAC, 2, IFACE_MAC, VIP, CLIENT_MAC, CLIENT_IP);
    // The reply goes to the asker, from our MAC, and says VIP is at our MAC.
    assert_eq!(&expected[0..6], &CLIENT_MAC);
    assert_eq!(&expected[6..12], &IFACE_MAC);
    let (verdict, out) = fx.run(&request_for(VIP)).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, expected);

    // With Ethernet padding to 60 bytes, the padding is kept and the rest is the same.
    let mut padded = request_for(VIP);
    padded.resize(60, 0);
    let (verdict, out) = fx.run(&padded).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(&out[..42], &expected[..]);
    assert_eq!(&out[42..], &[0u8; 18]);

    // A unicast request to our MAC (a cache refresh) and an ARP probe are answered too.
    let unicast = arp_frame(IFACE_MAC, 1, CLIENT_MAC, CLIENT_IP, [0; 6], VIP);
    assert_eq!(fx.run(&unicast).unwrap().0, XDP_TX);
    let probe = arp_frame([0xff; 6], 1, CLIENT_MAC, [0; 4], [0; 6], VIP);
    let (verdict, out) = fx.run(&probe).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        arp_frame(CLIENT_MAC, 2, IFACE_MAC, VIP, CLIENT_MAC, [0; 4])
    );

    let stats = fx.dp.stats().unwrap();
    assert_eq!(stats.arp_vip_requests, 4);
    assert_eq!(stats.arp_replied, 4);
    assert_eq!(stats.arp_dropped_not_master, 0);
}

#[test]
fn the_virtual_mac_answers_when_configured() {
    if !privileged("the_virtual_mac_answers_when_configured") {
        return;
    }
    let mut fx = Fixture::new();
    let vmac = virtual_mac_v4(51);
    fx.dp
        .set_vip_v4(
            Ipv4Addr::from(VIP),
            VipValue {
                vrid: 51,
                flags: 0,
                mac: vmac,
            },
        )
        .unwrap();
    let (verdict, out) = fx.run(&request_for(VIP)).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        arp_frame(CLIENT_MAC, 2, vmac, VIP, CLIENT_MAC, CLIENT_IP)
    );
    // A request unicast to the virtual MAC is ours as well.
    let unicast = arp_frame(vmac, 1, CLIENT_MAC, CLIENT_IP, [0; 6], VIP);
    assert_eq!(fx.run(&unicast).unwrap().0, XDP_TX);
}

#[test]
fn arp_request_for_a_vip_not_mastered_is_dropped() {
    if !privileged("arp_request_for_a_vip_not_mastered_is_dropped") {
        return;
    }
    let mut fx = Fixture::new();
    assert_eq!(fx.verdict_unchanged(&request_for(BACKUP_VIP)), XDP_DROP);
    // Demoting the master's VRID turns its answers into drops at once.
    for r in [role::BACKUP, role::FAULT, role::INIT] {
        fx.dp.set_role(51, r).unwrap();
        assert_eq!(
            fx.verdict_unchanged(&request_for(VIP)),
            XDP_DROP,
            "role {r}"
        );
    }
    let stats = fx.dp.stats().unwrap();
    assert_eq!(stats.arp_dropped_not_master, 4);
    assert_eq!(stats.arp_replied, 0);
}

#[test]
fn everything_else_passes_untouched() {
    if !privileged("everything_else_passes_untouched") {
        return;
    }
    let mut fx = Fixture::new();
    // ARP for an address that is not a VIP.
    assert_eq!(fx.verdict_unchanged(&request_for([192, 0, 2, 1])), XDP_PASS);
    // ARP replies, also for the VIP (another host's answer is not ours to drop).
    let reply = arp_frame(IFACE_MAC, 2, CLIENT_MAC, CLIENT_IP, IFACE_MAC, VIP);
    assert_eq!(fx.verdict_unchanged(&reply), XDP_PASS);
    // Gratuitous ARP announcing the VIP.
    let garp = arp_frame([0xff; 6], 1, CLIENT_MAC, VIP, [0; 6], VIP);
    assert_eq!(fx.verdict_unchanged(&garp), XDP_PASS);
    // A request unicast to some other host's MAC (seen only in promiscuous mode).
    let other = arp_frame([0x02, 9, 9, 9, 9, 9], 1, CLIENT_MAC, CLIENT_IP, [0; 6], VIP);
    assert_eq!(fx.verdict_unchanged(&other), XDP_PASS);
    // ARP over another hardware type.
    let mut token_ring = request_for(VIP);
    token_ring[15] = 6;
    assert_eq!(fx.verdict_unchanged(&token_ring), XDP_PASS);
    // An IPv4/UDP frame to the VIP.
    let mut udp = Vec::new();
    udp.extend_from_slice(&IFACE_MAC);
    udp.extend_from_slice(&CLIENT_MAC);
    udp.extend_from_slice(&[0x08, 0x00]);
    udp.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    udp.extend_from_slice(&CLIENT_IP);
    udp.extend_from_slice(&VIP);
    udp.extend_from_slice(&[0x30, 0x39, 0x0c, 0xea, 0, 8, 0, 0]);
    assert_eq!(fx.verdict_unchanged(&udp), XDP_PASS);
    assert_eq!(fx.dp.stats().unwrap().arp_vip_requests, 0);
}

#[test]
fn truncated_frames_pass_at_every_length() {
    if !privileged("truncated_frames_pass_at_every_length") {
        return;
    }
    let mut fx = Fixture::new();
    let full = request_for(VIP);
    let mut ran = 0;
    for len in 0..full.len() {
        match fx.run(&full[..len]) {
            Ok((verdict, out)) => {
                assert_eq!(verdict, XDP_PASS, "length {len}");
                assert_eq!(out, &full[..len], "length {len}");
                ran += 1;
            }
            // The kernel refuses to run XDP on less than an Ethernet header.
            Err(err) => assert!(len < 14, "length {len}: {err}"),
        }
    }
    assert!(ran >= 42 - 14, "only {ran} lengths were run");
    assert_eq!(fx.dp.stats().unwrap().arp_vip_requests, 0);
}

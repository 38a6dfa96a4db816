//! The real XDP object, loaded into the kernel and run on crafted frames with
//! BPF_PROG_TEST_RUN: verdicts, rewritten bytes, map contents, counters and events.
//!
//! Frames are built field by field here, not with the code under test; checksums of answers
//! are verified with this file's own RFC 1071 implementation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use vrrp_common::{
    Event, VipValue, VridState, checksum_form, event, role, virtual_mac_v4, vrid_flags,
};
use vrrp_user::{
    dataplane::{DataPlane, Family, KernelLogLevel, monotonic_coarse_ns, monotonic_ns},
    engine::{Advert, Auth, ChecksumForm, Version},
};
use xvrrp_lab::privileged;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const OTHER_MAC: [u8; 6] = [0x02, 9, 9, 9, 9, 9];
const CLIENT_IP: [u8; 4] = [192, 0, 2, 10];
const VIP: [u8; 4] = [192, 0, 2, 100];
const BACKUP_VIP: [u8; 4] = [192, 0, 2, 101];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const BACKUP_VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01,
];
const PEER: [u8; 4] = [192, 0, 2, 2];
const PEER6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
const HB_LIMIT_NS: u64 = 250_000_000;

// ---- frame builders ----

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, vlan: Option<u16>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn arp_frame(
    eth_dst: [u8; 6],
    oper: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = eth(eth_dst, sha, 0x0806, None);
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

/// RFC 1071, written independently of the code under test.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u32::from(chunk[0]) << 8 | u32::from(chunk[1])
        } else {
            u32::from(chunk[0]) << 8
        };
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, proto: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0xc0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0, 0, ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    let c = internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv6(src: [u8; 16], dst: [u8; 16], hop: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

fn icmp6_checksum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(msg);
    internet_checksum(&pseudo)
}

const SOLICITED_NODE: [u8; 16] = [
    0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0x01, 0x00,
];

/// A neighbour solicitation for `target` from CLIENT6 with the source link-layer option.
fn ns_for(target: [u8; 16], src: [u8; 16], with_option: bool, vlan: Option<u16>) -> Vec<u8> {
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target);
    if with_option {
        msg.extend_from_slice(&[1, 1]);
        msg.extend_from_slice(&CLIENT_MAC);
    }
    let c = icmp6_checksum(&src, &SOLICITED_NODE, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth([0x33, 0x33, 0xff, 0, 0x01, 0], CLIENT_MAC, 0x86dd, vlan);
    f.extend_from_slice(&ipv6(src, SOLICITED_NODE, 255, 58, &msg));
    f
}

/// The neighbour advertisement expected in answer to `ns_for(target, CLIENT6, true, vlan)`.
fn na_expected(target: [u8; 16], from: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
    let mut msg = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    msg.extend_from_slice(&target);
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&from);
    let c = icmp6_checksum(&target, &CLIENT6, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(CLIENT_MAC, from, 0x86dd, vlan);
    f.extend_from_slice(&ipv6(target, CLIENT6, 255, 58, &msg));
    f
}

fn advert_bytes(
    version: Version,
    vrid: u8,
    priority: u8,
    src: IpAddr,
    dst: IpAddr,
    form: ChecksumForm,
) -> Vec<u8> {
    let addrs = match src {
        IpAddr::V4(_) => vec![IpAddr::from(VIP)],
        IpAddr::V6(_) => vec![IpAddr::from(VIP6)],
    };
    Advert {
        version,
        vrid,
        priority,
        interval_cs: 100,
        addrs,
        auth: if version == Version::V2 {
            Auth::Simple(*b"secret1\0")
        } else {
            Auth::None
        },
    }
    .encode(form, src, dst)
    .unwrap()
}

const MCAST4: [u8; 4] = [224, 0, 0, 18];
const MCAST6: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];

/// A VRRPv3 IPv4 advert frame for `vrid` from PEER (priority, TTL, checksum form chosen).
fn advert4(vrid: u8, priority: u8, ttl: u8, form: ChecksumForm) -> Vec<u8> {
    let payload = advert_bytes(
        Version::V3,
        vrid,
        priority,
        IpAddr::from(PEER),
        IpAddr::from(MCAST4),
        form,
    );
    let mut f = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
    f.extend_from_slice(&ipv4(PEER, MCAST4, ttl, 112, &[], &payload));
    f
}

// ---- fixture ----

struct Fixture {
    dp: DataPlane,
    events: RingBuf<MapData>,
}

impl Fixture {
    /// Master of IPv4 VRID 51 (VIP, stats 0) and IPv6 VRID 51 (VIP6, stats 2); backup of IPv4
    /// VRID 52 (BACKUP_VIP, stats 1) and IPv6 VRID 52 (BACKUP_VIP6, stats 3); VRRPv2 on IPv4
    /// VRID 60; unicast IPv4 VRID 70 from PEER; heartbeat fresh.
    fn new() -> Self {
        let mut dp = DataPlane::load(IFACE_MAC, HB_LIMIT_NS, KernelLogLevel::Info)
            .expect("load the XDP object");
        let vip = |vrid, stats_index| VipValue {
            vrid,
            flags: 0,
            mac: IFACE_MAC,
            stats_index,
        };
        dp.set_vip(IpAddr::from(VIP), vip(51, 0)).unwrap();
        dp.set_vip(IpAddr::from(BACKUP_VIP), vip(52, 1)).unwrap();
        dp.set_vip(IpAddr::from(VIP6), vip(51, 2)).unwrap();
        dp.set_vip(IpAddr::from(BACKUP_VIP6), vip(52, 3)).unwrap();
        let state = |role, flags, version| VridState {
            role,
            flags,
            version,
            ..VridState::default()
        };
        let configured = vrid_flags::CONFIGURED;
        for ipv6 in [false, true] {
            dp.set_vrid(family_of_flag(ipv6), 51, state(role::MASTER, configured, 3))
                .unwrap();
            dp.set_vrid(family_of_flag(ipv6), 52, state(role::BACKUP, configured, 3))
                .unwrap();
        }
        // VRRPv2 with a simple text password, and without authentication.
        dp.set_vrid(
            Family::V4,
            60,
            VridState {
                auth: *b"secret1\0",
                ..state(role::BACKUP, configured | vrid_flags::AUTH_SIMPLE, 2)
            },
        )
        .unwrap();
        dp.set_vrid(Family::V4, 61, state(role::BACKUP, configured, 2))
            .unwrap();
        dp.set_vrid(
            Family::V4,
            70,
            state(role::BACKUP, configured | vrid_flags::UNICAST, 3),
        )
        .unwrap();
        dp.set_vrid(
            Family::V4,
            71,
            state(
                role::BACKUP,
                configured | vrid_flags::UNICAST | vrid_flags::UNICAST_CHECK_TTL,
                3,
            ),
        )
        .unwrap();
        dp.add_peer(70, IpAddr::from(PEER)).unwrap();
        dp.add_peer(71, IpAddr::from(PEER)).unwrap();
        dp.heartbeat(monotonic_ns()).unwrap();
        let events = dp.take_events().unwrap();
        Self { dp, events }
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

    /// A VRID's request counters, as the daemon reports them (summed over its VIPs).
    fn requests(&self, family: Family, vrid: u8) -> vrrp_common::VipStats {
        self.dp.request_stats().unwrap().of(family, vrid)
    }

    fn verdict_unchanged(&mut self, frame: &[u8]) -> u32 {
        let (verdict, out) = self.run(frame).expect("test run");
        assert_eq!(
            out, frame,
            "a frame that is not answered must leave untouched"
        );
        verdict
    }

    fn events(&mut self) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(item.len(), std::mem::size_of::<Event>());
            // SAFETY: the program writes whole Events; read_unaligned copes with any alignment.
            all.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        all
    }
}

// ---- ARP ----

#[test]
fn arp_request_for_a_mastered_vip_is_answered_with_exact_bytes() {
    if !privileged("arp_request_for_a_mastered_vip_is_answered_with_exact_bytes") {
        return;
    }
    let mut fx = Fixture::new();
    let expected = arp_frame(CLIENT_MAC, 2, IFACE_MAC, VIP, CLIENT_MAC, CLIENT_IP);
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

    let s = fx.requests(Family::V4, 51);
    assert_eq!((s.requests(), s.answered, s.dropped_not_master), (4, 4, 0));
    let v = fx.dp.vip_stats(0).unwrap();
    assert_eq!((v.requests(), v.answered), (4, 4));

    // A VIP withdrawn (a reload dropped it) leaves its counts in its VRID's totals: they are
    // counters, and never go back.
    fx.dp.remove_vip(IpAddr::from(VIP)).unwrap();
    assert_eq!(fx.verdict_unchanged(&request_for(VIP)), XDP_PASS);
    assert_eq!(fx.requests(Family::V4, 51).answered, 4);
}

#[test]
fn vlan_tagged_frames_pass_untouched_and_uncounted() {
    if !privileged("vlan_tagged_frames_pass_untouched_and_uncounted") {
        return;
    }
    let mut fx = Fixture::new();
    // A tagged frame belongs to a VLAN device over the interface (a trunk parent), never to
    // the instances of the interface itself.
    let tag = |f: &[u8], ethertype: [u8; 2]| {
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&ethertype);
        t.extend_from_slice(&[0x00, 0x2a]);
        t.extend_from_slice(&f[12..]);
        t
    };
    let live_before = fx.dp.liveness(Family::V4, 51).unwrap();
    for ethertype in [[0x81, 0x00], [0x88, 0xa8]] {
        for frame in [
            request_for(VIP),
            request_for(BACKUP_VIP),
            ns_for(VIP6, CLIENT6, true, None),
            advert4(51, 200, 255, ChecksumForm::PseudoHeader),
            advert4(51, 200, 64, ChecksumForm::PseudoHeader),
        ] {
            assert_eq!(
                fx.verdict_unchanged(&tag(&frame, ethertype)),
                XDP_PASS,
                "{ethertype:x?}"
            );
        }
    }
    for ipv6 in [false, true] {
        for vrid in [51, 52] {
            assert_eq!(
                fx.dp.vrid_stats(family_of_flag(ipv6), vrid).unwrap(),
                Default::default(),
                "ipv6 {ipv6} vrid {vrid}"
            );
            assert_eq!(
                fx.requests(family_of_flag(ipv6), vrid),
                Default::default(),
                "ipv6 {ipv6} vrid {vrid}"
            );
        }
    }
    assert_eq!(fx.dp.liveness(Family::V4, 51).unwrap(), live_before);
    assert!(fx.events().is_empty());
}

#[test]
fn a_vip_not_on_the_interface_is_left_to_the_kernel() {
    if !privileged("a_vip_not_on_the_interface_is_left_to_the_kernel") {
        return;
    }
    let mut fx = Fixture::new();
    let absent = |vrid, stats_index| VipValue {
        vrid,
        flags: vrrp_common::vip_flags::ABSENT,
        mac: IFACE_MAC,
        stats_index,
    };
    fx.dp.set_vip(IpAddr::from(VIP), absent(51, 0)).unwrap();
    fx.dp.set_vip(IpAddr::from(VIP6), absent(51, 2)).unwrap();
    fx.dp
        .set_vip(IpAddr::from(BACKUP_VIP), absent(52, 1))
        .unwrap();
    assert_eq!(fx.verdict_unchanged(&request_for(VIP)), XDP_PASS);
    assert_eq!(
        fx.verdict_unchanged(&ns_for(VIP6, CLIENT6, true, None)),
        XDP_PASS
    );
    // Not master: still dropped, so that the kernel cannot answer either.
    assert_eq!(fx.verdict_unchanged(&request_for(BACKUP_VIP)), XDP_DROP);
    assert_eq!(fx.dp.vip_stats(0).unwrap().passed_absent, 1);
    assert_eq!(fx.dp.vip_stats(2).unwrap().passed_absent, 1);
    assert_eq!(fx.requests(Family::V4, 51).passed_absent, 1);
    assert_eq!(fx.requests(Family::V4, 51).answered, 0);
    // Back on the interface: answered again.
    fx.dp
        .set_vip(
            IpAddr::from(VIP),
            VipValue {
                flags: 0,
                ..absent(51, 0)
            },
        )
        .unwrap();
    assert_eq!(fx.run(&request_for(VIP)).unwrap().0, XDP_TX);
}

#[test]
fn the_virtual_mac_answers_when_configured() {
    if !privileged("the_virtual_mac_answers_when_configured") {
        return;
    }
    let mut fx = Fixture::new();
    let vmac = virtual_mac_v4(51);
    fx.dp
        .set_vip(
            IpAddr::from(VIP),
            VipValue {
                vrid: 51,
                flags: 0,
                mac: vmac,
                stats_index: 0,
            },
        )
        .unwrap();
    let (verdict, out) = fx.run(&request_for(VIP)).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        arp_frame(CLIENT_MAC, 2, vmac, VIP, CLIENT_MAC, CLIENT_IP)
    );
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
    for r in [role::BACKUP, role::FAULT, role::INIT] {
        fx.dp.set_role(Family::V4, 51, r).unwrap();
        assert_eq!(
            fx.verdict_unchanged(&request_for(VIP)),
            XDP_DROP,
            "role {r}"
        );
    }
    let s = fx.requests(Family::V4, 51);
    assert_eq!((s.dropped_not_master, s.answered), (3, 0));
    assert_eq!(fx.dp.vip_stats(1).unwrap().dropped_not_master, 1);
}

#[test]
fn a_stale_heartbeat_stops_the_answers_and_a_fresh_one_restores_them() {
    if !privileged("a_stale_heartbeat_stops_the_answers_and_a_fresh_one_restores_them") {
        return;
    }
    let mut fx = Fixture::new();
    let now = monotonic_ns();
    fx.dp.heartbeat(now - HB_LIMIT_NS - 50_000_000).unwrap();
    assert_eq!(fx.verdict_unchanged(&request_for(VIP)), XDP_DROP);
    assert_eq!(
        fx.verdict_unchanged(&ns_for(VIP6, CLIENT6, true, None)),
        XDP_DROP
    );
    let s = fx.requests(Family::V4, 51);
    assert_eq!((s.dropped_stale_heartbeat, s.dropped_not_master), (1, 0));
    assert_eq!(fx.dp.vip_stats(0).unwrap().dropped_stale_heartbeat, 1);
    fx.dp.heartbeat(monotonic_ns()).unwrap();
    assert_eq!(fx.run(&request_for(VIP)).unwrap().0, XDP_TX);

    // The limit holds to within a jiffy or two (the gate reads the kernel's jiffies): a
    // heartbeat the limit less three jiffies ago still opens it, one the limit and two jiffies
    // ago no longer does.
    let tick = fx.dp.jiffy_clock().tick_ns;
    fx.dp
        .heartbeat(monotonic_ns() - HB_LIMIT_NS + 3 * tick)
        .unwrap();
    assert_eq!(fx.run(&request_for(VIP)).unwrap().0, XDP_TX);
    fx.dp
        .heartbeat(monotonic_ns() - HB_LIMIT_NS - 2 * tick)
        .unwrap();
    assert_eq!(fx.verdict_unchanged(&request_for(VIP)), XDP_DROP);
}

/// CONFIG_HZ of the running kernel, where it publishes its configuration.
fn config_hz() -> Option<u64> {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r)",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn the_heartbeat_clock_follows_the_kernels_jiffies() {
    if !privileged("the_heartbeat_clock_follows_the_kernels_jiffies") {
        return;
    }
    use vrrp_common::jiffies::{Check, HZ_CHOICES, tick_ns};
    let mut fx = Fixture::new();
    let clock = fx.dp.jiffy_clock();
    match config_hz() {
        Some(hz) => assert_eq!(clock.tick_ns, tick_ns(hz), "CONFIG_HZ={hz}"),
        None => {
            eprintln!("the kernel's configuration is not published: HZ checked against the list");
            assert!(HZ_CHOICES.map(tick_ns).contains(&clock.tick_ns));
        }
    }
    // Over half a second, every sample of the kernel's jiffies agrees with the clock: it is
    // never ahead of them (a deadline made with it never outlives the limit), never more than
    // a jiffy behind.
    let program = fx
        .dp
        .extra_program(vrrp_common::CLOCK_PROGRAM_NAME)
        .unwrap();
    let start = std::time::Instant::now();
    let mut samples = 0;
    while start.elapsed() < std::time::Duration::from_millis(500) {
        let mut out = [0u8; 64];
        program
            .test_run(TestRunOptions {
                data_in: Some(&[0u8; 64]),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        let jiffies = u64::from_ne_bytes(out[..8].try_into().unwrap());
        let mono = u64::from_ne_bytes(out[8..16].try_into().unwrap());
        assert_ne!(
            clock.check(jiffies, mono),
            Check::Off,
            "jiffies {jiffies} at {mono}: the clock says {}",
            clock.at(mono)
        );
        samples += 1;
        std::thread::sleep(std::time::Duration::from_micros(700));
    }
    assert!(samples > 100, "{samples} samples");
}

#[test]
fn other_arp_and_other_traffic_pass_untouched() {
    if !privileged("other_arp_and_other_traffic_pass_untouched") {
        return;
    }
    let mut fx = Fixture::new();
    assert_eq!(fx.verdict_unchanged(&request_for([192, 0, 2, 1])), XDP_PASS);
    let reply = arp_frame(IFACE_MAC, 2, CLIENT_MAC, CLIENT_IP, IFACE_MAC, VIP);
    assert_eq!(fx.verdict_unchanged(&reply), XDP_PASS);
    let other = arp_frame([0x02, 9, 9, 9, 9, 8], 1, CLIENT_MAC, CLIENT_IP, [0; 6], VIP);
    assert_eq!(fx.verdict_unchanged(&other), XDP_PASS);
    let mut token_ring = request_for(VIP);
    token_ring[15] = 6;
    assert_eq!(fx.verdict_unchanged(&token_ring), XDP_PASS);
    let mut udp = eth(IFACE_MAC, CLIENT_MAC, 0x0800, None);
    udp.extend_from_slice(&ipv4(
        CLIENT_IP,
        VIP,
        64,
        17,
        &[],
        &[0x30, 0x39, 0x0c, 0xea, 0, 8, 0, 0],
    ));
    assert_eq!(fx.verdict_unchanged(&udp), XDP_PASS);
    let mut tcp6 = eth(IFACE_MAC, CLIENT_MAC, 0x86dd, None);
    tcp6.extend_from_slice(&ipv6(CLIENT6, VIP6, 64, 6, &[0; 20]));
    assert_eq!(fx.verdict_unchanged(&tcp6), XDP_PASS);
    assert_eq!(fx.requests(Family::V4, 51).requests(), 0);
}

#[test]
fn truncated_frames_pass_at_every_length() {
    if !privileged("truncated_frames_pass_at_every_length") {
        return;
    }
    let mut fx = Fixture::new();
    for full in [
        request_for(VIP),
        ns_for(VIP6, CLIENT6, true, None),
        advert4(51, 100, 255, ChecksumForm::PseudoHeader),
    ] {
        let mut ran = 0;
        for len in 0..full.len() {
            match fx.run(&full[..len]) {
                Ok((verdict, out)) => {
                    // A truncated advert for a configured VRID may be dropped; nothing else.
                    let advert = full[12..14] == [0x08, 0x00];
                    assert!(
                        verdict == XDP_PASS || (advert && verdict == XDP_DROP),
                        "length {len}: {verdict}"
                    );
                    assert_eq!(out, &full[..len], "length {len}");
                    ran += 1;
                }
                // The kernel refuses to run XDP on less than an Ethernet header.
                Err(err) => assert!(len < 14, "length {len}: {err}"),
            }
        }
        assert!(ran >= full.len() - 14, "only {ran} lengths were run");
    }
    let s = fx.dp.vrid_stats(Family::V4, 51).unwrap();
    assert_eq!(
        (fx.requests(Family::V4, 51).requests(), s.adverts_valid),
        (0, 0)
    );
}

// ---- neighbour discovery ----

#[test]
fn neighbour_solicitation_for_a_mastered_vip_gets_an_exact_advertisement() {
    if !privileged("neighbour_solicitation_for_a_mastered_vip_gets_an_exact_advertisement") {
        return;
    }
    let mut fx = Fixture::new();
    let (verdict, out) = fx.run(&ns_for(VIP6, CLIENT6, true, None)).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, na_expected(VIP6, IFACE_MAC, None));
    // The checksum of what left verifies: the sum with the checksum field in is 0.
    assert_eq!(icmp6_checksum(&out[22..38], &out[38..54], &out[54..]), 0);
    let s = fx.requests(Family::V6, 51);
    assert_eq!((s.requests(), s.answered), (1, 1));
    assert_eq!(fx.dp.vip_stats(2).unwrap().answered, 1);
}

#[test]
fn neighbour_solicitations_elsewhere_are_dropped_or_passed() {
    if !privileged("neighbour_solicitations_elsewhere_are_dropped_or_passed") {
        return;
    }
    let mut fx = Fixture::new();
    assert_eq!(
        fx.verdict_unchanged(&ns_for(BACKUP_VIP6, CLIENT6, true, None)),
        XDP_DROP
    );
    let other = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x09,
    ];
    assert_eq!(
        fx.verdict_unchanged(&ns_for(other, CLIENT6, true, None)),
        XDP_PASS
    );
    // Duplicate address detection and option-less solicitations: the kernel of a live master
    // handles them; elsewhere they are dropped.
    assert_eq!(
        fx.verdict_unchanged(&ns_for(VIP6, [0; 16], false, None)),
        XDP_PASS
    );
    assert_eq!(
        fx.verdict_unchanged(&ns_for(VIP6, CLIENT6, false, None)),
        XDP_PASS
    );
    assert_eq!(
        fx.verdict_unchanged(&ns_for(BACKUP_VIP6, [0; 16], false, None)),
        XDP_DROP
    );
    // Hop limit other than 255: not a valid solicitation, not ours.
    let mut bad_hop = ns_for(VIP6, CLIENT6, true, None);
    bad_hop[21] = 64;
    assert_eq!(fx.verdict_unchanged(&bad_hop), XDP_PASS);
}

// ---- adverts ----

#[test]
fn valid_adverts_in_every_form_update_liveness_and_pass() {
    if !privileged("valid_adverts_in_every_form_update_liveness_and_pass") {
        return;
    }
    let mut fx = Fixture::new();
    let before = monotonic_coarse_ns();
    // VRRPv3 over IPv4, pseudo-header form (keepalived, FRR) and plain form (RFC 9568).
    for form in [ChecksumForm::PseudoHeader, ChecksumForm::Plain] {
        assert_eq!(
            fx.verdict_unchanged(&advert4(52, 150, 255, form)),
            XDP_PASS,
            "{form:?}"
        );
        let live = fx.dp.liveness(Family::V4, 52).unwrap();
        let want = match form {
            ChecksumForm::PseudoHeader => checksum_form::PSEUDO_HEADER,
            ChecksumForm::Plain => checksum_form::PLAIN,
        };
        assert_eq!(live.checksum_form, want);
    }
    let live = fx.dp.liveness(Family::V4, 52).unwrap();
    assert!(
        live.last_seen_ns >= before.saturating_sub(10_000_000),
        "{live:?}"
    );
    assert_eq!(&live.src[..4], &PEER);
    assert_eq!(
        (live.priority, live.version, live.count, live.interval_cs),
        (150, 3, 1, 100)
    );
    // VRRPv2 with simple-password auth.
    let payload = advert_bytes(
        Version::V2,
        60,
        120,
        IpAddr::from(PEER),
        IpAddr::from(MCAST4),
        ChecksumForm::Plain,
    );
    let mut v2 = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
    v2.extend_from_slice(&ipv4(PEER, MCAST4, 255, 112, &[], &payload));
    assert_eq!(fx.verdict_unchanged(&v2), XDP_PASS);
    assert_eq!(fx.dp.liveness(Family::V4, 60).unwrap().version, 2);
    // VRRPv3 over IPv6.
    let payload = advert_bytes(
        Version::V3,
        52,
        110,
        IpAddr::from(PEER6),
        IpAddr::from(MCAST6),
        ChecksumForm::PseudoHeader,
    );
    let mut v6 = eth([0x33, 0x33, 0, 0, 0, 0x12], OTHER_MAC, 0x86dd, None);
    v6.extend_from_slice(&ipv6(PEER6, MCAST6, 255, 112, &payload));
    assert_eq!(fx.verdict_unchanged(&v6), XDP_PASS);
    let live6 = fx.dp.liveness(Family::V6, 52).unwrap();
    assert_eq!((live6.src, live6.priority), (PEER6, 110));
    // IPv4 with options (router alert).
    let payload = advert_bytes(
        Version::V3,
        51,
        90,
        IpAddr::from(PEER),
        IpAddr::from(MCAST4),
        ChecksumForm::PseudoHeader,
    );
    let mut opts = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
    opts.extend_from_slice(&ipv4(PEER, MCAST4, 255, 112, &[0x94, 0x04, 0, 0], &payload));
    assert_eq!(fx.verdict_unchanged(&opts), XDP_PASS);
    assert_eq!(fx.dp.liveness(Family::V4, 51).unwrap().priority, 90);
    assert_eq!(fx.dp.vrid_stats(Family::V4, 52).unwrap().adverts_valid, 2);
}

#[test]
fn events_fire_on_a_new_master_a_changed_priority_and_priority_zero_only() {
    if !privileged("events_fire_on_a_new_master_a_changed_priority_and_priority_zero_only") {
        return;
    }
    let mut fx = Fixture::new();
    let f = |p| advert4(52, p, 255, ChecksumForm::PseudoHeader);
    for frame in [f(150), f(150), f(150), f(160), f(160), f(0)] {
        assert_eq!(fx.verdict_unchanged(&frame), XDP_PASS);
    }
    let events = fx.events();
    let kinds: Vec<(u32, u8)> = events.iter().map(|e| (e.kind, e.priority)).collect();
    assert_eq!(
        kinds,
        vec![
            (event::MASTER_CHANGED, 150),
            (event::MASTER_CHANGED, 160),
            (event::PRIORITY_ZERO, 0)
        ]
    );
    assert_eq!(events[0].slot, 52);
    assert_eq!(&events[0].addr[..4], &PEER);
}

#[test]
fn invalid_adverts_are_dropped_and_counted_by_reason() {
    if !privileged("invalid_adverts_are_dropped_and_counted_by_reason") {
        return;
    }
    let mut fx = Fixture::new();
    let good = advert4(52, 150, 255, ChecksumForm::PseudoHeader);
    // TTL.
    assert_eq!(
        fx.verdict_unchanged(&advert4(52, 150, 254, ChecksumForm::PseudoHeader)),
        XDP_DROP
    );
    // Version 4 (checksum left as is: the version is checked first).
    let mut bad = good.clone();
    bad[34] = 0x41;
    assert_eq!(fx.verdict_unchanged(&bad), XDP_DROP);
    // A VRRPv2 advert to a VRRPv3 instance.
    let payload = advert_bytes(
        Version::V2,
        52,
        120,
        IpAddr::from(PEER),
        IpAddr::from(MCAST4),
        ChecksumForm::Plain,
    );
    let mut v2 = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
    v2.extend_from_slice(&ipv4(PEER, MCAST4, 255, 112, &[], &payload));
    assert_eq!(fx.verdict_unchanged(&v2), XDP_DROP);
    // Count 2 with one address.
    let mut bad = good.clone();
    bad[37] = 2;
    assert_eq!(fx.verdict_unchanged(&bad), XDP_DROP);
    // Checksum.
    let mut bad = good.clone();
    bad[36] = 151;
    assert_eq!(fx.verdict_unchanged(&bad), XDP_DROP);
    let s = fx.dp.vrid_stats(Family::V4, 52).unwrap();
    assert_eq!(
        (
            s.adverts_drop_ttl,
            s.adverts_drop_version,
            s.adverts_drop_length,
            s.adverts_drop_checksum,
            s.adverts_valid
        ),
        (1, 2, 1, 1, 0)
    );
    // A VRID not configured here is another daemon's business: passed on, unvalidated (even
    // with a bad checksum), and counted in its own slot.
    assert_eq!(
        fx.verdict_unchanged(&advert4(99, 150, 255, ChecksumForm::PseudoHeader)),
        XDP_PASS
    );
    let mut bad = advert4(99, 150, 255, ChecksumForm::PseudoHeader);
    bad[36] = 151;
    assert_eq!(fx.verdict_unchanged(&bad), XDP_PASS);
    assert_eq!(
        fx.dp.vrid_stats(Family::V4, 99).unwrap().adverts_other_vrid,
        2
    );
    assert_eq!(
        fx.dp
            .vrid_stats(Family::V4, 99)
            .unwrap()
            .adverts_drop_checksum,
        0
    );
    // None of them touched the liveness entry, and none raised an event.
    assert_eq!(fx.dp.liveness(Family::V4, 52).unwrap().last_seen_ns, 0);
    assert!(fx.events().is_empty());
}

#[test]
fn an_address_of_the_other_family_follows_its_instances_role() {
    if !privileged("an_address_of_the_other_family_follows_its_instances_role") {
        return;
    }
    let mut fx = Fixture::new();
    // keepalived's virtual_ipaddress_excluded: an IPv6 address of an IPv4 instance. IPv4
    // VRID 51 is master here, 52 backup; the IPv6 slots are made the other way round.
    fx.dp.set_role(Family::V6, 51, role::BACKUP).unwrap();
    fx.dp.set_role(Family::V6, 52, role::MASTER).unwrap();
    let other = |vrid, stats_index| VipValue {
        vrid,
        flags: vrrp_common::vip_flags::OTHER_FAMILY,
        mac: IFACE_MAC,
        stats_index,
    };
    fx.dp.set_vip(IpAddr::from(VIP6), other(51, 2)).unwrap();
    fx.dp
        .set_vip(IpAddr::from(BACKUP_VIP6), other(52, 3))
        .unwrap();
    assert_eq!(
        fx.run(&ns_for(VIP6, CLIENT6, true, None)).unwrap().0,
        XDP_TX
    );
    assert_eq!(
        fx.verdict_unchanged(&ns_for(BACKUP_VIP6, CLIENT6, true, None)),
        XDP_DROP
    );
    // Counted in the instance's slot.
    assert_eq!(fx.requests(Family::V4, 51).answered, 1);
    assert_eq!(fx.requests(Family::V6, 51).requests(), 0);
}

/// A VRRPv3 advert frame for `vrid` from `src` carrying `addrs` (IPv4 or IPv6 by `src`).
fn advert_with(vrid: u8, src: IpAddr, addrs: &[IpAddr]) -> Vec<u8> {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::from(MCAST4),
        IpAddr::V6(_) => IpAddr::from(MCAST6),
    };
    let payload = Advert {
        version: Version::V3,
        vrid,
        priority: 100,
        interval_cs: 100,
        addrs: addrs.to_vec(),
        auth: Auth::None,
    }
    .encode(ChecksumForm::PseudoHeader, src, dst)
    .unwrap();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut f = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
            f.extend_from_slice(&ipv4(s.octets(), d.octets(), 255, 112, &[], &payload));
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = eth([0x33, 0x33, 0, 0, 0, 0x12], OTHER_MAC, 0x86dd, None);
            f.extend_from_slice(&ipv6(s.octets(), d.octets(), 255, 112, &payload));
            f
        }
        _ => unreachable!(),
    }
}

#[test]
fn adverts_with_another_address_list_are_dropped_unless_skipped_for_the_same_master() {
    if !privileged(
        "adverts_with_another_address_list_are_dropped_unless_skipped_for_the_same_master",
    ) {
        return;
    }
    let mut fx = Fixture::new();
    let ours4 = [IpAddr::from(VIP), IpAddr::from(BACKUP_VIP)];
    let ours6 = [IpAddr::from(VIP6), IpAddr::from(BACKUP_VIP6)];
    let octets = |a: &IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let hash = |l: &[IpAddr]| {
        let bytes: Vec<Vec<u8>> = l.iter().map(octets).collect();
        vrrp_common::vrrp::address_set_hash(bytes.iter().map(Vec::as_slice))
    };
    let checked = |flags| VridState {
        role: role::BACKUP,
        flags: vrid_flags::CONFIGURED | vrid_flags::CHECK_ADDRESSES | flags,
        version: 3,
        ..VridState::default()
    };
    for (vrid, flags) in [(53, 0), (54, vrid_flags::SKIP_CHECK_SAME_MASTER)] {
        fx.dp
            .set_vrid(
                Family::V4,
                vrid,
                VridState {
                    addr_hash: hash(&ours4),
                    ..checked(flags)
                },
            )
            .unwrap();
        fx.dp
            .set_vrid(
                Family::V6,
                vrid,
                VridState {
                    addr_hash: hash(&ours6),
                    ..checked(flags)
                },
            )
            .unwrap();
    }
    let peer = IpAddr::from(PEER);
    let other = IpAddr::from([192, 0, 2, 3]);
    let neighbour4 = [
        IpAddr::from([192, 0, 2, 100]),
        IpAddr::from([192, 0, 2, 102]),
    ];
    // The same list in another order is ours.
    assert_eq!(
        fx.verdict_unchanged(&advert_with(53, peer, &[ours4[1], ours4[0]])),
        XDP_PASS
    );
    // Another cluster's list (same count, one address differs), a subset, a superset.
    for list in [
        &neighbour4[..],
        &ours4[..1],
        &[ours4[0], ours4[1], neighbour4[1]][..],
    ] {
        assert_eq!(
            fx.verdict_unchanged(&advert_with(53, other, list)),
            XDP_DROP,
            "{list:?}"
        );
    }
    let s = fx.dp.vrid_stats(Family::V4, 53).unwrap();
    assert_eq!((s.adverts_valid, s.adverts_drop_addresses), (1, 3));
    assert_eq!(&fx.dp.liveness(Family::V4, 53).unwrap().src[..4], &PEER);
    // IPv6: the same.
    assert_eq!(
        fx.verdict_unchanged(&advert_with(53, IpAddr::from(PEER6), &ours6)),
        XDP_PASS
    );
    assert_eq!(
        fx.verdict_unchanged(&advert_with(53, IpAddr::from(PEER6), &ours6[..1])),
        XDP_DROP
    );
    assert_eq!(
        fx.dp
            .vrid_stats(Family::V6, 53)
            .unwrap()
            .adverts_drop_addresses,
        1
    );
    // skip_check_adv_addr: a master never heard is checked; the master last heard may change
    // its list.
    assert_eq!(
        fx.verdict_unchanged(&advert_with(54, peer, &neighbour4)),
        XDP_DROP
    );
    assert_eq!(
        fx.verdict_unchanged(&advert_with(54, peer, &ours4)),
        XDP_PASS
    );
    assert_eq!(
        fx.verdict_unchanged(&advert_with(54, peer, &neighbour4)),
        XDP_PASS
    );
    assert_eq!(
        fx.verdict_unchanged(&advert_with(54, other, &neighbour4)),
        XDP_DROP
    );
    let s = fx.dp.vrid_stats(Family::V4, 54).unwrap();
    assert_eq!((s.adverts_valid, s.adverts_drop_addresses), (2, 2));
}

/// A VRRPv2 advert frame for `vrid` from the peer with `auth`.
fn advert_v2(vrid: u8, auth: Auth) -> Vec<u8> {
    let payload = Advert {
        version: Version::V2,
        vrid,
        priority: 120,
        interval_cs: 100,
        addrs: vec![IpAddr::from(VIP)],
        auth,
    }
    .encode(
        ChecksumForm::Plain,
        IpAddr::from(PEER),
        IpAddr::from(MCAST4),
    )
    .unwrap();
    let mut frame = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
    frame.extend_from_slice(&ipv4(PEER, MCAST4, 255, 112, &[], &payload));
    frame
}

#[test]
fn vrrpv2_authentication_must_match_the_instances() {
    if !privileged("vrrpv2_authentication_must_match_the_instances") {
        return;
    }
    let mut fx = Fixture::new();
    // VRID 60 has password "secret1": only that password is taken.
    let right = Auth::Simple(*b"secret1\0");
    assert_eq!(fx.verdict_unchanged(&advert_v2(60, right)), XDP_PASS);
    for wrong in [
        Auth::Simple(*b"secret2\0"),
        Auth::Simple(*b"secret1x"),
        Auth::None,
    ] {
        assert_eq!(
            fx.verdict_unchanged(&advert_v2(60, wrong)),
            XDP_DROP,
            "{wrong:?}"
        );
    }
    let s = fx.dp.vrid_stats(Family::V4, 60).unwrap();
    assert_eq!((s.adverts_valid, s.adverts_drop_auth), (1, 3));
    // VRID 61 has none: a password is a mismatch too (RFC 3768 7.1).
    assert_eq!(fx.verdict_unchanged(&advert_v2(61, Auth::None)), XDP_PASS);
    assert_eq!(fx.verdict_unchanged(&advert_v2(61, right)), XDP_DROP);
    let s = fx.dp.vrid_stats(Family::V4, 61).unwrap();
    assert_eq!((s.adverts_valid, s.adverts_drop_auth), (1, 1));
    // Only the accepted ones reached the liveness map.
    assert_eq!(fx.dp.liveness(Family::V4, 60).unwrap().priority, 120);
    assert_eq!(fx.events().len(), 2);
}

#[test]
fn carp_is_not_taken_for_vrrp() {
    if !privileged("carp_is_not_taken_for_vrrp") {
        return;
    }
    let mut fx = Fixture::new();
    let mut carp = vec![0x21, 52, 0, 7, 0, 1, 0, 0];
    carp.extend_from_slice(&[0xaa; 28]);
    let c = internet_checksum(&carp);
    carp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth([0x01, 0, 0x5e, 0, 0, 0x12], OTHER_MAC, 0x0800, None);
    f.extend_from_slice(&ipv4(PEER, MCAST4, 255, 112, &[], &carp));
    assert_eq!(fx.verdict_unchanged(&f), XDP_PASS);
    let s = fx.dp.vrid_stats(Family::V4, 52).unwrap();
    assert_eq!(
        (
            s.adverts_valid,
            s.adverts_drop_length,
            s.adverts_drop_version
        ),
        (0, 0, 0)
    );
}

#[test]
fn unicast_adverts_are_accepted_only_from_configured_peers() {
    if !privileged("unicast_adverts_are_accepted_only_from_configured_peers") {
        return;
    }
    let mut fx = Fixture::new();
    let me = [192, 0, 2, 1];
    let unicast = |vrid, src: [u8; 4], ttl| {
        let payload = advert_bytes(
            Version::V3,
            vrid,
            100,
            IpAddr::from(src),
            IpAddr::from(me),
            ChecksumForm::PseudoHeader,
        );
        let mut f = eth(IFACE_MAC, OTHER_MAC, 0x0800, None);
        f.extend_from_slice(&ipv4(src, me, ttl, 112, &[], &payload));
        f
    };
    assert_eq!(
        fx.verdict_unchanged(&unicast(70, PEER, 64)),
        XDP_PASS,
        "through a router"
    );
    assert_eq!(
        fx.verdict_unchanged(&unicast(70, [192, 0, 2, 66], 255)),
        XDP_DROP
    );
    assert_eq!(
        fx.dp.vrid_stats(Family::V4, 70).unwrap().adverts_drop_peer,
        1
    );
    assert_eq!(
        fx.verdict_unchanged(&unicast(71, PEER, 64)),
        XDP_DROP,
        "TTL checked on 71"
    );
    assert_eq!(fx.verdict_unchanged(&unicast(71, PEER, 255)), XDP_PASS);
    assert_eq!(
        fx.dp.vrid_stats(Family::V4, 71).unwrap().adverts_drop_ttl,
        1
    );
}

// ---- foreign owners ----

#[test]
fn a_foreign_claim_on_a_mastered_vip_is_counted_and_reported() {
    if !privileged("a_foreign_claim_on_a_mastered_vip_is_counted_and_reported") {
        return;
    }
    let mut fx = Fixture::new();
    let garp = arp_frame([0xff; 6], 1, OTHER_MAC, VIP, [0; 6], VIP);
    assert_eq!(fx.verdict_unchanged(&garp), XDP_PASS);
    let reply = arp_frame(CLIENT_MAC, 2, OTHER_MAC, VIP, CLIENT_MAC, CLIENT_IP);
    assert_eq!(fx.verdict_unchanged(&reply), XDP_PASS);
    // Not ours to defend: a claim on a VIP we are backup for.
    let garp_backup = arp_frame([0xff; 6], 1, OTHER_MAC, BACKUP_VIP, [0; 6], BACKUP_VIP);
    assert_eq!(fx.verdict_unchanged(&garp_backup), XDP_PASS);
    // An unsolicited NA for the IPv6 VIP from another MAC.
    let mut msg = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    msg.extend_from_slice(&VIP6);
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&OTHER_MAC);
    let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let c = icmp6_checksum(&VIP6, &all_nodes, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut na = eth([0x33, 0x33, 0, 0, 0, 1], OTHER_MAC, 0x86dd, None);
    na.extend_from_slice(&ipv6(VIP6, all_nodes, 255, 58, &msg));
    assert_eq!(fx.verdict_unchanged(&na), XDP_PASS);

    assert_eq!(fx.dp.vrid_stats(Family::V4, 51).unwrap().foreign_owner, 2);
    assert_eq!(fx.dp.vip_stats(0).unwrap().foreign_owner, 2);
    assert_eq!(fx.dp.vrid_stats(Family::V4, 52).unwrap().foreign_owner, 0);
    assert_eq!(fx.dp.vrid_stats(Family::V6, 51).unwrap().foreign_owner, 1);
    let events = fx.events();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e.kind == event::FOREIGN_OWNER && e.mac == OTHER_MAC)
    );
    assert_eq!(&events[0].addr[..4], &VIP);
    assert_eq!(events[2].addr, VIP6);
    let _ = Ipv4Addr::from(VIP);
    let _ = Ipv6Addr::from(VIP6);
}

/// The address family a test's `ipv6` flag names.
fn family_of_flag(ipv6: bool) -> Family {
    if ipv6 { Family::V6 } else { Family::V4 }
}

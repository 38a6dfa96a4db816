//! Data-plane benchmarks (run as root by `cargo xtask bench`); prints a table and writes
//! target/bench/dataplane.json.
//!
//! 1. Per-packet cost with BPF_PROG_TEST_RUN (repeat 10^6, the middle half of 12 rounds
//!    averaged: the kernel reports whole nanoseconds, and the rounds' spread gives the fraction). The kernel does
//!    not restore a frame between repetitions, so an answered ARP request would be a reply from
//!    the second repetition on. The object carries two bench programs: `xvrrp_bench` saves the
//!    frame, runs the real program and restores the frame; `xvrrp_bench_base` only saves and
//!    restores. Their difference is the program's cost on that frame, every repetition on the
//!    same path. Frames the program leaves intact are also timed directly. Bare reference
//!    programs (the same program with the role and heartbeat gate and the counters compiled
//!    out, for ARP and NS; a program that passes everything) are timed the same way, and
//!    xvrrp's cost is reported against them as a ratio.
//! 2. Answered ARP requests per second through a veth pair on one core: an in-kernel generator
//!    (BPF_PROG_TEST_RUN live frames, XDP_TX) sends requests for the VIP out of `gen`; on `dut`
//!    either xvrrp's XDP program or the kernel (VIP on the interface) answers; a drop program on
//!    `gen` counts the replies (ethtool's rx_queue_0_xdp_drops), in the same run.

use std::{
    net::IpAddr,
    os::fd::AsFd as _,
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions};
use vrrp_common::{VipValue, VridState, role, vrid_flags};
use vrrp_user::{
    config::XdpAttach,
    dataplane::{DataPlane, KernelLogLevel, monotonic_ns},
    engine::{Advert, Auth, ChecksumForm, Version},
};
use xvrrp_lab::{Netns, xdp_pass};

const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const VIP: [u8; 4] = [192, 0, 2, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 12;
const BENCH_LEN: usize = 128;

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GEN_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&GEN_MAC);
    f.extend_from_slice(&[192, 0, 2, 10]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&VIP);
    f
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn neighbour_solicitation() -> Vec<u8> {
    let dst = [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0x01, 0x00,
    ];
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&VIP6);
    msg.extend_from_slice(&[1, 1]);
    msg.extend_from_slice(&GEN_MAC);
    let mut pseudo = CLIENT6.to_vec();
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
    pseudo.extend_from_slice(&msg);
    let c = checksum(&pseudo);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0xff, 0, 0x01, 0];
    f.extend_from_slice(&GEN_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
    f.extend_from_slice(&CLIENT6);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&msg);
    f
}

fn ipv4_frame(dst_mac: [u8; 6], proto: u8, dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&GEN_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 255, proto, 0, 0, 192, 0, 2, 2]);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

fn advert() -> Vec<u8> {
    let bytes = Advert {
        version: Version::V3,
        vrid: 52,
        priority: 150,
        interval_cs: 100,
        addrs: vec![IpAddr::from(VIP)],
        auth: Auth::None,
    }
    .encode(
        ChecksumForm::PseudoHeader,
        IpAddr::from([192, 0, 2, 2]),
        IpAddr::from([224, 0, 0, 18]),
    )
    .unwrap();
    ipv4_frame([0x01, 0, 0x5e, 0, 0, 0x12], 112, [224, 0, 0, 18], &bytes)
}

fn tcp() -> Vec<u8> {
    let mut seg = vec![
        0x30, 0x39, 0x0c, 0xea, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
    ];
    seg.extend_from_slice(&[0; 4]);
    ipv4_frame(IFACE_MAC, 6, [192, 0, 2, 1], &seg)
}

fn padded(mut f: Vec<u8>) -> Vec<u8> {
    f.resize(BENCH_LEN, 0);
    f
}

/// The mean of the middle half of `v`: robust to a round disturbed by something else, and
/// finer than the kernel's whole nanoseconds where the rounds differ.
fn middle_mean(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let quarter = v.len() / 4;
    let middle = &v[quarter..v.len() - quarter];
    middle.iter().sum::<f64>() / middle.len() as f64
}

/// The middle mean over ROUNDS of the per-repetition time (ns) of `program` on `frame`, and its verdict.
fn time(dp: &mut DataPlane, program: &'static str, frame: &[u8]) -> (f64, u32) {
    let mut rounds = Vec::new();
    let mut verdict = 0;
    for _ in 0..ROUNDS {
        dp.heartbeat(monotonic_ns()).unwrap();
        let prog = if program == "xvrrp" {
            dp.program().unwrap()
        } else {
            dp.extra_program(program).unwrap()
        };
        let mut out = vec![0u8; frame.len() + 64];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: REPEAT,
                ..Default::default()
            })
            .expect("test run");
        verdict = r.return_value;
        rounds.push(r.duration.as_nanos() as f64);
    }
    (middle_mean(rounds), verdict)
}

fn fixture() -> DataPlane {
    let mut dp = DataPlane::load(IFACE_MAC, 60_000_000_000, KernelLogLevel::Info).expect("load");
    let vip = VipValue {
        vrid: 51,
        flags: 0,
        mac: IFACE_MAC,
        stats_index: 0,
    };
    dp.set_vip(IpAddr::from(VIP), vip).unwrap();
    dp.set_vip(
        IpAddr::from(VIP6),
        VipValue {
            stats_index: 1,
            ..vip
        },
    )
    .unwrap();
    let master = VridState {
        role: role::MASTER,
        flags: vrid_flags::CONFIGURED,
        version: 3,
        ..VridState::default()
    };
    dp.set_vrid(vrrp_user::dataplane::Family::V4, 51, master)
        .unwrap();
    dp.set_vrid(vrrp_user::dataplane::Family::V6, 51, master)
        .unwrap();
    dp.set_vrid(
        vrrp_user::dataplane::Family::V4,
        52,
        VridState {
            role: role::BACKUP,
            ..master
        },
    )
    .unwrap();
    dp.heartbeat(monotonic_ns()).unwrap();
    dp
}

struct Row {
    name: &'static str,
    ns: f64,
    target: Option<f64>,
    how: String,
}

/// xvrrp's cost on a path against a bare reference program's, timed the same way in the same
/// run: absolute nanoseconds move from one machine to the next, the ratio should not.
struct Ratio {
    path: &'static str,
    xvrrp_ns: f64,
    reference: &'static str,
    reference_ns: f64,
    target: f64,
}

impl Ratio {
    fn value(&self) -> f64 {
        self.xvrrp_ns / self.reference_ns.max(0.1)
    }
}

fn per_packet() -> (Vec<Row>, Vec<Ratio>) {
    let mut dp = fixture();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for (name, frame, expect, target, reference) in [
        (
            "ARP request -> reply",
            padded(arp_request()),
            3,
            Some(20.0),
            Some("xvrrp_ref"),
        ),
        (
            "NS -> NA",
            padded(neighbour_solicitation()),
            3,
            None,
            Some("xvrrp_ref"),
        ),
        ("valid advert", padded(advert()), 2, Some(25.0), None),
        ("unrelated TCP frame", padded(tcp()), 2, Some(10.0), None),
    ] {
        let (with, verdict) = time(&mut dp, "xvrrp_bench", &frame);
        assert_eq!(verdict, expect, "{name}: unexpected verdict");
        let (base, _) = time(&mut dp, "xvrrp_bench_base", &frame);
        let ns = (with - base).max(0.0);
        rows.push(Row {
            name,
            ns,
            target,
            how: format!("bench {with:.1} - restore-only {base:.1} ns"),
        });
        if let Some(reference) = reference {
            let (bare, verdict) = time(&mut dp, reference, &frame);
            assert_eq!(verdict, expect, "{name}: the reference does not answer");
            ratios.push(Ratio {
                path: name,
                xvrrp_ns: ns,
                reference,
                reference_ns: (bare - base).max(0.0),
                target: 1.3,
            });
        }
        if expect == 2 {
            let (direct, verdict) = time(&mut dp, "xvrrp", &frame);
            assert_eq!(verdict, expect);
            rows.push(Row {
                name,
                ns: direct,
                target,
                how: "direct (frame left intact), incl. ~8 ns harness floor".into(),
            });
            if name == "unrelated TCP frame" {
                let (pass, _) = time(&mut dp, "xvrrp_ref_pass", &frame);
                ratios.push(Ratio {
                    path: name,
                    xvrrp_ns: direct,
                    reference: "xvrrp_ref_pass",
                    reference_ns: pass,
                    target: 1.1,
                });
            }
        }
    }
    (rows, ratios)
}

/// Loads per object in [`verifier_times`].
const LOADS: usize = 5;

/// The median time (s) the kernel takes to load (verify and JIT) the `xvrrp` program of today's
/// object and of the reference object kept from before the verifier work (see
/// benches/reference/README.md), in the same run.
fn verifier_times() -> (f64, f64) {
    static REFERENCE: &[u8] = aya::include_bytes_aligned!("reference/xvrrp-fcd9a29.o");
    let time = |object: &[u8]| {
        let mut loads = Vec::new();
        for _ in 0..LOADS {
            let mut ebpf = aya::EbpfLoader::new().load(object).expect("object loads");
            let program: &mut aya::programs::Xdp = ebpf
                .program_mut("xvrrp")
                .expect("the object has xvrrp")
                .try_into()
                .expect("an XDP program");
            let start = Instant::now();
            program.load().expect("the verifier accepts it");
            loads.push(start.elapsed().as_secs_f64());
        }
        loads.sort_by(f64::total_cmp);
        loads[loads.len() / 2]
    };
    (time(vrrp_user::dataplane::XDP_OBJECT), time(REFERENCE))
}

fn ethtool_counter(iface: &str, name: &str) -> u64 {
    let out = Command::new("ethtool")
        .args(["-S", iface])
        .output()
        .expect("ethtool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

/// Replies per second seen on `gen` while the generator sends `frames` requests.
fn flood(generator: &mut DataPlane, gen_ifindex: u32, frames: u32) -> (f64, u64, Duration) {
    let before = ethtool_counter("gen", "rx_queue_0_xdp_drops");
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let frame = arp_request();
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, gen_ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let prog = generator
        .extra_program("xvrrp_bench_gen")
        .expect("generator");
    let start = Instant::now();
    prog.test_run(TestRunOptions {
        data_in: Some(&frame),
        ctx_in: Some(&ctx),
        repeat: frames,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..Default::default()
    })
    .expect("live frames");
    let took = start.elapsed();
    // Let the last replies drain.
    std::thread::sleep(Duration::from_millis(200));
    let replies = ethtool_counter("gen", "rx_queue_0_xdp_drops") - before;
    (replies as f64 / took.as_secs_f64(), replies, took)
}

fn live() -> Vec<(String, f64, u64, Duration)> {
    let ns = Netns::create(&format!("xvb{}", std::process::id())).expect("netns");
    nix::sched::setns(
        std::fs::File::open(ns.path()).unwrap().as_fd(),
        nix::sched::CloneFlags::CLONE_NEWNET,
    )
    .expect("setns");
    ip(&[
        "link",
        "add",
        "gen",
        "address",
        "02:00:00:00:00:10",
        "type",
        "veth",
        "peer",
        "name",
        "dut",
        "address",
        "02:00:00:00:00:01",
    ]);
    ip(&["link", "set", "gen", "up"]);
    ip(&["link", "set", "dut", "up"]);
    let gen_ifindex = nix::net::if_::if_nametoindex("gen").unwrap();
    let sink = xdp_pass::load_returning(xdp_pass::XDP_DROP).unwrap();
    let _sink_link = xdp_pass::attach_native(&sink, "gen").unwrap();
    let mut generator =
        DataPlane::load(GEN_MAC, 1, KernelLogLevel::Info).expect("load the generator");
    let frames = 5_000_000;
    let mut results = Vec::new();

    // The kernel answering: the VIP on dut, a pass program there (the veth XDP_TX quirk).
    ip(&["addr", "add", "192.0.2.100/24", "dev", "dut"]);
    ip(&[
        "neigh",
        "replace",
        "192.0.2.10",
        "lladdr",
        "02:00:00:00:00:10",
        "dev",
        "dut",
    ]);
    {
        let pass = xdp_pass::load().unwrap();
        let _link = xdp_pass::attach_native(&pass, "dut").unwrap();
        flood(&mut generator, gen_ifindex, 100_000);
        let (pps, replies, took) = flood(&mut generator, gen_ifindex, frames / 5);
        results.push((
            "kernel (VIP on the interface)".to_owned(),
            pps,
            replies,
            took,
        ));
    }
    // xvrrp answering from XDP.
    {
        let mut dp = fixture();
        let pin =
            std::path::PathBuf::from(format!("/sys/fs/bpf/xvrrp-bench-{}", std::process::id()));
        dp.attach("dut", XdpAttach::Native, &pin)
            .expect("attach xvrrp");
        flood(&mut generator, gen_ifindex, 100_000);
        let (pps, replies, took) = flood(&mut generator, gen_ifindex, frames);
        let s = dp.vip_stats(0).unwrap();
        println!(
            "  (dut: xvrrp requests {} answered {}; veth xdp_packets {} xdp_tx {} xdp_tx_errors {} drops {}; gen xdp_packets {})",
            s.requests(),
            s.answered,
            ethtool_counter("dut", "rx_queue_0_xdp_packets"),
            ethtool_counter("dut", "rx_queue_0_xdp_tx"),
            ethtool_counter("dut", "rx_queue_0_xdp_tx_errors"),
            ethtool_counter("dut", "rx_queue_0_drops"),
            ethtool_counter("gen", "rx_queue_0_xdp_packets"),
        );
        results.push(("xvrrp XDP".to_owned(), pps, replies, took));
        dp.unpin();
        let _ = std::fs::remove_dir_all(&pin);
    }
    results
}

/// An ARP flood from the lab's client through the bridge while xvrrp runs on a (master,
/// priority 200) and b (backup) with 100 ms adverts: the answers a gives, and whether the
/// election holds (master changes, adverts b took in).
fn flood_with_daemons(seconds: u64) -> anyhow::Result<serde_json::Value> {
    use xvrrp_lab::{LAB_VIP, Lab, PIN_ROOT, per_cpu_counter, vip_counter};
    let lab = Lab::new(&["a", "b", "client"])?;
    let mut daemons = Vec::new();
    for (host, priority) in [("a", 200), ("b", 100)] {
        daemons.push(lab.start_xvrrp(host, &lab.vrrp_config(host, priority, ""))?);
    }
    lab.wait_answered_by("client", "a", LAB_VIP, 1, Duration::from_secs(10));
    let pins = |host: &str| std::path::Path::new(PIN_ROOT).join(&lab.host(host).iface);
    let stats = |host: &str, field: &str| {
        per_cpu_counter(&pins(host).join("vrid_stats"), 51, field).unwrap_or(0)
    };
    let masters = |d: &[xvrrp_lab::Proc]| {
        d.iter()
            .map(|p| p.log().matches("new=master").count())
            .sum::<usize>()
    };
    let (masters_before, answered_before, adverts_before) = (
        masters(&daemons),
        vip_counter(&pins("a"), LAB_VIP.into(), "answered").unwrap_or(0),
        stats("b", "adverts_valid"),
    );
    let client = lab.host("client");
    let (iface, mac, ip) = (client.iface.clone(), client.mac, client.ip);
    let sent = client.ns.run_in(move || {
        let mut frame = arp_request();
        frame[6..12].copy_from_slice(&mac);
        frame[22..28].copy_from_slice(&mac);
        frame[28..32].copy_from_slice(&ip.octets());
        let ifindex = nix::net::if_::if_nametoindex(iface.as_str())?;
        let mut generator = DataPlane::load(mac, 1, KernelLogLevel::Info)?;
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let prog = generator.extra_program("xvrrp_bench_gen")?;
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: 200_000,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })?;
            sent += 200_000;
        }
        Ok((sent, start.elapsed()))
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let (frames, took) = sent;
    let answered =
        vip_counter(&pins("a"), LAB_VIP.into(), "answered").unwrap_or(0) - answered_before;
    let adverts = stats("b", "adverts_valid") - adverts_before;
    let changes = masters(&daemons) - masters_before;
    let running = daemons.iter_mut().all(xvrrp_lab::Proc::running);
    println!(
        "  {frames} requests in {took:.2?} ({:.2} M/s offered); a answered {answered} ({:.2} Mpps); \
         b took in {adverts} adverts from a (expected about {}); master changes {changes}; daemons running: {running}",
        frames as f64 / took.as_secs_f64() / 1e6,
        answered as f64 / took.as_secs_f64() / 1e6,
        took.as_millis() / 100,
    );
    Ok(serde_json::json!({
        "seconds": took.as_secs_f64(), "requests": frames, "answered": answered,
        "adverts_received_by_backup": adverts, "master_changes": changes, "daemons_running": running,
    }))
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the data-plane bench needs root (BPF, namespaces)");
        return;
    }
    println!(
        "Data-plane cost per packet (BPF_PROG_TEST_RUN, repeat {REPEAT}, middle half of {ROUNDS} rounds):"
    );
    println!("{:<24} {:>9} {:>9}  method", "path", "ns/pkt", "target");
    let (rows, ratios) = per_packet();
    for r in &rows {
        let target = r.target.map_or("-".to_owned(), |t| format!("<= {t:.0}"));
        let mark = match r.target {
            Some(t) if r.ns > t => "  (over target)",
            _ => "",
        };
        println!(
            "{:<24} {:>9.1} {:>9}  {}{mark}",
            r.name, r.ns, target, r.how
        );
    }
    println!();
    println!("Against bare reference programs in the same run (same harness, same frames):");
    println!(
        "{:<24} {:>9} {:<16} {:>9} {:>7} {:>7}",
        "path", "xvrrp ns", "reference", "ref ns", "ratio", "target"
    );
    for r in &ratios {
        let mark = if r.value() > r.target {
            "  (over target)"
        } else {
            ""
        };
        println!(
            "{:<24} {:>9.1} {:<16} {:>9.1} {:>6.2}x {:>6.1}x{mark}",
            r.path,
            r.xvrrp_ns,
            r.reference,
            r.reference_ns,
            r.value(),
            r.target
        );
    }
    println!();
    // XVRRP_BENCH_QUICK=1: the per-packet part alone (about 20 s), e.g. while changing the
    // program.
    if std::env::var_os("XVRRP_BENCH_QUICK").is_some() {
        return;
    }
    let verifier = verifier_times();
    println!("Loading the XDP program (the kernel's verifier), median of {LOADS} loads:");
    println!(
        "  today's program {:>8.1} ms   reference (fcd9a29) {:>8.1} ms   {:.1}x faster  (target >= 5x){}",
        verifier.0 * 1e3,
        verifier.1 * 1e3,
        verifier.1 / verifier.0,
        if verifier.1 / verifier.0 < 5.0 {
            "  (under target)"
        } else {
            ""
        }
    );
    println!();
    println!("ARP answers per second through veth on one core (live frames):");
    let live = live();
    for (name, pps, replies, took) in &live {
        println!(
            "{name:<32} {:>8.2} Mpps  ({replies} replies in {took:.2?})",
            pps / 1e6
        );
    }
    let (kernel, xdp) = (live[0].1, live[1].1);
    let ratio = xdp / kernel.max(1.0);
    println!("xvrrp / kernel: {ratio:.1}x   (targets: >= 5 Mpps and >= 5x)");
    println!();
    println!(
        "The same flood through the lab's bridge while xvrrp runs an election (100 ms adverts, 10 s):"
    );
    let during_flood = flood_with_daemons(10).unwrap_or_else(|err| {
        println!("  failed: {err:#}");
        serde_json::Value::Null
    });

    let json = serde_json::json!({
        "per_packet_ns": rows.iter().map(|r| serde_json::json!({
            "path": r.name, "ns": r.ns, "target_ns": r.target, "method": r.how,
        })).collect::<Vec<_>>(),
        "against_references": ratios.iter().map(|r| serde_json::json!({
            "path": r.path, "xvrrp_ns": r.xvrrp_ns, "reference": r.reference,
            "reference_ns": r.reference_ns, "ratio": r.value(), "target_ratio": r.target,
        })).collect::<Vec<_>>(),
        "arp_answers_pps": live.iter().map(|(n, pps, replies, took)| serde_json::json!({
            "responder": n, "pps": pps, "replies": replies, "seconds": took.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "xvrrp_over_kernel": ratio,
        "verifier_s": { "today": verifier.0, "reference_fcd9a29": verifier.1,
                        "speedup": verifier.1 / verifier.0, "target_speedup": 5.0 },
        "flood_with_daemons": during_flood,
        // The commit measured, for the plots (`cargo xtask plot`).
        "commit": std::process::Command::new("git")
            .args(["log", "-1", "--format=%h %cs"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dataplane.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("written: target/bench/dataplane.json");
}

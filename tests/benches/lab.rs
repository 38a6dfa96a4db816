//! Lab benchmarks (run as root by `cargo xtask bench`): xvrrp and keepalived 2.2.7 side by side
//! in the namespace lab, in the same run, so that ratios hold on a noisy machine. Prints a table
//! (each figure with its target and keepalived's beside it) and writes target/bench/lab.json.
//!
//! 3. Failover outage: a client sends a UDP probe to the VIP every millisecond; echo servers on
//!    the hosts answer from the VIP. The master host fails (daemon and echo server SIGKILLed:
//!    a crash; both SIGSTOPped: a frozen host; its link cut; or the daemon alone SIGTERMed: a
//!    graceful handover) and the longest gap between answers is the outage.
//! 4. MySQL failure to VIP moved: mysqld SIGKILLed on the master, time to the first query
//!    answered through the VIP by the other server; keepalived with the usual `mysqladmin ping`
//!    vrrp_script (interval 1 s, fall 2).
//! 5. Probe cost: xvrrp's per-round latency and CPU while probing every 100 ms, reconnects;
//!    beside it, the fork/exec `mariadb-admin ping` keepalived runs.
//! 6. False failovers with both cores busy (stress-ng) and 1% random loss at 20 ms adverts.
//! 7. Footprint: RSS and CPU at idle with 1 and 64 instances at 100 ms adverts, and 1 at 1 s;
//!    beside them, a bare thread sending the same adverts at the same times (the floor).
//!
//! Arguments (after `--`): `--trials N` (failover trials per cell, default 20), `--intervals
//! 1000,100,20,10`, `--stress-seconds S` (default 600), `--only outage,mysql,probe,stress,footprint`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, UdpSocket},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;
use serde_json::json;
use xvrrp_lab::{
    LAB_VIP, Lab, Proc,
    mariadb::{self, Mariadb, master_master_pair},
    wait_for,
};

const ECHO_PORT: u16 = 7000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Daemon {
    Xvrrp,
    Keepalived,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::Xvrrp => "xvrrp",
            Daemon::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    LinkCut,
    Term,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL (host crash)",
            Fault::Stop => "SIGSTOP (frozen host)",
            Fault::LinkCut => "link cut",
            Fault::Term => "SIGTERM (graceful)",
        }
    }
}

struct Args {
    trials: usize,
    intervals: Vec<u32>,
    stress_seconds: u64,
    only: Option<Vec<String>>,
    /// Outage faults to run: kill, stop, link, term.
    faults: Vec<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        trials: 20,
        intervals: vec![1000, 100, 20, 10],
        stress_seconds: 600,
        only: None,
        faults: ["kill", "stop", "link", "term"].map(String::from).to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--trials" => a.trials = it.next().context("--trials N")?.parse()?,
            "--intervals" => {
                a.intervals = it
                    .next()
                    .context("--intervals A,B")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--stress-seconds" => {
                a.stress_seconds = it.next().context("--stress-seconds S")?.parse()?;
            }
            "--only" => {
                a.only = Some(
                    it.next()
                        .context("--only A,B")?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "--faults" => {
                a.faults = it
                    .next()
                    .context("--faults kill,stop,link,term")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            // What cargo bench passes.
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

/// One line of the table.
struct Figure {
    what: String,
    xvrrp: String,
    keepalived: String,
    target: String,
    /// What VRRP allows for this cell (the outage cells of crash-like faults), or "-".
    floor: String,
}

struct Report {
    figures: Vec<Figure>,
    json: BTreeMap<String, serde_json::Value>,
}

impl Report {
    fn add(&mut self, what: String, xvrrp: String, keepalived: String, target: &str) {
        self.add_with_floor(what, xvrrp, keepalived, target, "-".to_owned());
    }

    fn add_with_floor(
        &mut self,
        what: String,
        xvrrp: String,
        keepalived: String,
        target: &str,
        floor: String,
    ) {
        println!(
            "  {what}: xvrrp {xvrrp} | keepalived {keepalived} | floor {floor} | target {target}"
        );
        self.figures.push(Figure {
            what,
            xvrrp,
            keepalived,
            target: target.to_owned(),
            floor,
        });
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

// ---------------------------------------------------------------------------------------------
// The failover outage.

/// A UDP echo server on `host`, bound to the VIP (IP_FREEBIND: it need not be there yet),
/// answering with the host's name.
fn echo_server(lab: &Lab, host: &str) -> anyhow::Result<Proc> {
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_IP,15,1)\n\
         s.bind(('{LAB_VIP}',{ECHO_PORT}))\nname=sys.argv[1].encode()\nwhile True:\n d,a=s.recvfrom(64)\n s.sendto(name,a)\n"
    );
    lab.spawn(
        host,
        Path::new("python3"),
        &["-c", &script, host],
        &format!("echo-{host}"),
    )
}

/// Answers the client got: (time since the prober started, host name's first byte).
type Answers = Arc<Mutex<Vec<(Duration, u8)>>>;

/// Sends a probe to the VIP every millisecond from the client and records the answers.
struct Prober {
    stop: Arc<AtomicBool>,
    answers: Answers,
    start: Instant,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Prober {
    fn start(lab: &Lab) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let answers: Answers = Arc::default();
        let start = Instant::now();
        let (flag, out) = (stop.clone(), answers.clone());
        let thread = lab.host("client").ns.spawn_in(move || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_nonblocking(true)?;
            let mut buf = [0u8; 64];
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let _ = sock.send_to(b"p", (LAB_VIP, ECHO_PORT));
                next += Duration::from_millis(1);
                loop {
                    while let Ok((n, _)) = sock.recv_from(&mut buf) {
                        if n > 0 {
                            out.lock().expect("answers").push((start.elapsed(), buf[0]));
                        }
                    }
                    let now = Instant::now();
                    if now >= next {
                        break;
                    }
                    std::thread::sleep((next - now).min(Duration::from_micros(200)));
                }
            }
            Ok(())
        })?;
        Ok(Self {
            stop,
            answers,
            start,
            thread,
        })
    }

    /// Whether `host` answered every probe of the last `span` (allowing a little jitter).
    fn steady(&self, host: &str, span: Duration) -> bool {
        let now = self.start.elapsed();
        let Some(from) = now.checked_sub(span) else {
            return false;
        };
        let a = self.answers.lock().expect("answers");
        let recent: Vec<_> = a.iter().filter(|(t, _)| *t >= from).collect();
        recent.len() as f64 >= span.as_millis() as f64 * 0.8
            && recent.iter().all(|(_, h)| *h == host.as_bytes()[0])
    }

    /// Stops it; the answers.
    fn finish(self) -> anyhow::Result<Vec<(Duration, u8)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("prober panicked"))??;
        Ok(std::mem::take(&mut *self.answers.lock().expect("answers")))
    }
}

/// The longest gap between answers from `at` on (the fault), counting from the last answer
/// before it.
fn longest_gap(answers: &[(Duration, u8)], at: Duration) -> Duration {
    let mut last = answers
        .iter()
        .rev()
        .find(|(t, _)| *t <= at)
        .map_or(at, |(t, _)| *t);
    let mut gap = Duration::ZERO;
    for (t, _) in answers.iter().filter(|(t, _)| *t > at) {
        gap = gap.max(*t - last);
        last = *t;
    }
    gap
}

/// The daemon on `host`; priority 200 starts as master (keepalived's `state MASTER`), so that
/// a trial need not wait for the first election.
fn start_daemon(
    lab: &Lab,
    daemon: Daemon,
    host: &str,
    priority: u8,
    interval_ms: u32,
) -> anyhow::Result<Proc> {
    let master = priority == 200;
    match daemon {
        Daemon::Xvrrp => {
            let hb = (interval_ms * 2).clamp(10, 250);
            let config = lab
                .vrrp_config(
                    host,
                    priority,
                    if master { "state = \"takeover\"\n" } else { "" },
                )
                .replace(
                    "advert_interval_ms = 100",
                    &format!("advert_interval_ms = {interval_ms}"),
                )
                .replace(
                    "heartbeat_limit_ms = 200",
                    &format!("heartbeat_limit_ms = {hb}"),
                );
            lab.start_xvrrp(host, &config)
        }
        Daemon::Keepalived => {
            let advert = format!("{}", f64::from(interval_ms) / 1000.0);
            let mut config = lab.keepalived_config(host, priority, 3, &advert, "");
            if master {
                config = config.replace("state BACKUP", "state MASTER");
            }
            lab.start_keepalived(host, &config)
        }
    }
}

/// Watches the lab network from the client for the master's adverts (an AF_PACKET socket: the
/// bridge floods 224.0.0.18 to every port), so that a fault can be placed at a chosen phase of
/// the master's advert cycle.
struct AdvertWatch {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Option<Instant>>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl AdvertWatch {
    fn start(lab: &Lab, from: Ipv4Addr) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(None));
        let (flag, out) = (stop.clone(), last.clone());
        let thread = lab.host("client").ns.spawn_in(move || {
            // SAFETY: plain socket calls on a descriptor this closure owns and closes.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM,
                    i32::from((libc::ETH_P_IP as u16).to_be()),
                );
                if fd < 0 {
                    bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
                }
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                let mut buf = [0u8; 128];
                while !flag.load(Ordering::Relaxed) {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    // An IPv4 header with protocol 112 (VRRP) from the master.
                    if n >= 20 && buf[9] == 112 && buf[12..16] == from.octets() {
                        *out.lock().expect("adverts") = Some(Instant::now());
                    }
                }
                libc::close(fd);
            }
            Ok(())
        })?;
        Ok(Self {
            stop,
            last,
            thread: Some(thread),
        })
    }

    /// When the next advert from the master arrives (within `timeout`).
    fn next(&self, timeout: Duration) -> anyhow::Result<Instant> {
        let since = Instant::now();
        loop {
            if let Some(t) = *self.last.lock().expect("adverts")
                && t > since
            {
                return Ok(t);
            }
            if since.elapsed() > timeout {
                bail!("no advert from the master within {timeout:?}");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for AdvertWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The phase of the advert cycle at which trial `i` of `n` places its fault: the cycle cut into
/// `n` equal strata, one trial in the middle of each, in an order that spreads them out. Both
/// daemons get the same phases, so their figures differ by what they do, not by luck.
fn phase(i: u32, n: u32) -> f64 {
    let n = n.max(1);
    // A stride coprime with n visits every stratum once; near n / golden ratio, consecutive
    // trials land far apart.
    let target = f64::from(n) * 0.618;
    let stride = (1..n.max(2))
        .filter(|s| gcd(*s, n) == 1)
        .min_by(|a, b| {
            (f64::from(*a) - target)
                .abs()
                .total_cmp(&(f64::from(*b) - target).abs())
        })
        .unwrap_or(1);
    (f64::from((i * stride) % n) + 0.5) / f64::from(n)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Removes the VIP from `host` (a killed daemon leaves it).
fn drop_vip(lab: &Lab, host: &str) {
    let iface = lab.host(host).iface.clone();
    let _ = lab.run(
        host,
        "ip",
        &["addr", "del", &format!("{LAB_VIP}/24"), "dev", &iface],
        Duration::from_secs(5),
    );
}

/// Signals a process and all its descendants at once (keepalived's VRRP work is done by a
/// child, which a signal to the parent alone would leave running or stop gracefully).
fn signal(p: &Proc, s: Signal) {
    for pid in tree(p.pid()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s);
    }
}

/// One failover trial: a master (priority 200) and a backup (100) up and steady; the fault
/// on a; the outage the client saw.
fn outage_trial(
    lab: &Lab,
    daemon: Daemon,
    interval_ms: u32,
    fault: Fault,
    phase: f64,
) -> anyhow::Result<Duration> {
    let mut echo_a = echo_server(lab, "a")?;
    let mut echo_b = echo_server(lab, "b")?;
    let mut a = start_daemon(lab, daemon, "a", 200, interval_ms)?;
    let mut b = start_daemon(lab, daemon, "b", 100, interval_ms)?;
    let prober = Prober::start(lab)?;
    let adverts = AdvertWatch::start(lab, lab.host("a").ip)?;
    let interval = Duration::from_millis(u64::from(interval_ms));
    // The backup has heard a few adverts.
    let settle = Duration::from_millis(300) + interval * 2;
    if !wait_for(Duration::from_secs(20) + interval * 10, || {
        prober.steady("a", settle)
    }) {
        bail!(
            "{} on a never answered steadily; a:\n{}",
            daemon.name(),
            a.log()
        );
    }
    // The fault at the given phase of the master's advert cycle, counted from the arrival of an
    // advert at the client (the backup hears it at the same moment).
    let advert = adverts.next(interval * 5 + Duration::from_secs(1))?;
    let fault_at = advert + interval.mul_f64(phase);
    while Instant::now() < fault_at {
        std::thread::sleep(Duration::from_micros(50));
    }
    let at = prober.start.elapsed();
    match fault {
        Fault::Kill => {
            signal(&a, Signal::SIGKILL);
            signal(&echo_a, Signal::SIGKILL);
        }
        Fault::Stop => {
            signal(&a, Signal::SIGSTOP);
            signal(&echo_a, Signal::SIGSTOP);
        }
        Fault::LinkCut => lab.set_link("a", false)?,
        // The daemon's own graceful stop (keepalived's parent tells its child).
        Fault::Term => {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid() as i32), Signal::SIGTERM);
        }
    }
    let moved = wait_for(Duration::from_secs(10) + interval * 10, || {
        prober.steady("b", Duration::from_millis(100))
    });
    let answers = prober.finish()?;
    // Back to a clean lab for the next trial.
    if fault == Fault::Stop {
        signal(&a, Signal::SIGCONT);
        signal(&echo_a, Signal::SIGCONT);
    }
    if fault == Fault::LinkCut {
        lab.set_link("a", true)?;
    }
    for p in [&a, &b] {
        signal(p, Signal::SIGKILL);
    }
    let _ = a.stop(Signal::SIGKILL, Duration::from_secs(10));
    let _ = b.stop(Signal::SIGKILL, Duration::from_secs(10));
    let _ = echo_a.stop(Signal::SIGKILL, Duration::from_secs(5));
    let _ = echo_b.stop(Signal::SIGKILL, Duration::from_secs(5));
    drop_vip(lab, "a");
    drop_vip(lab, "b");
    if !moved {
        bail!(
            "{} on b never took over after {}",
            daemon.name(),
            fault.name()
        );
    }
    Ok(longest_gap(&answers, at))
}

fn outage(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "3. failover outage ({} trials per cell; UDP probe every 1 ms)",
        args.trials
    );
    for &interval_ms in &args.intervals {
        for (fault, key) in [
            (Fault::Kill, "kill"),
            (Fault::Stop, "stop"),
            (Fault::LinkCut, "link"),
            (Fault::Term, "term"),
        ] {
            if !args.faults.iter().any(|f| f == key) {
                continue;
            }
            let mut cell = BTreeMap::new();
            for daemon in [Daemon::Xvrrp, Daemon::Keepalived] {
                let lab = Lab::new(&["a", "b", "client"])?;
                let mut gaps = Vec::new();
                for i in 0..args.trials {
                    let phase = phase(i as u32, args.trials as u32);
                    // A failed trial is retried at the same phase (twice at most), so that both
                    // daemons' figures come from the same phases.
                    for attempt in 1..=3 {
                        match outage_trial(&lab, daemon, interval_ms, fault, phase) {
                            Ok(gap) => {
                                gaps.push(gap.as_secs_f64() * 1000.0);
                                break;
                            }
                            Err(err) => eprintln!("  trial failed (attempt {attempt}): {err:#}"),
                        }
                    }
                }
                cell.insert(daemon.name(), p50_p99(gaps.clone()));
                report.json.insert(
                    format!(
                        "outage.{}.{}ms.{}",
                        daemon.name(),
                        interval_ms,
                        fault.name()
                    ),
                    json!({ "gaps_ms": gaps }),
                );
            }
            let text = |d: Daemon| {
                let (p50, p99) = cell[d.name()];
                format!("p50 {p50:.0} ms, p99 {p99:.0} ms")
            };
            let target = match (fault, interval_ms) {
                (Fault::Term, _) => "<= 10 ms at 10 ms adverts; <= keepalived",
                (_, 10) => "p99 <= 50 ms; <= keepalived",
                _ => "<= keepalived",
            };
            // A crash-like fault: the backup (priority 100) waits out Master_Down_Interval
            // from the last advert it heard, 3 intervals and Skew_Time, minus the phase at
            // which the fault came. A graceful stop has no such floor (priority 0).
            let floor = match fault {
                Fault::Term => "-".to_owned(),
                _ => {
                    let i = f64::from(interval_ms);
                    let mdi = 3.0 * i + (256.0 - 100.0) / 256.0 * i;
                    let floors: Vec<f64> = (0..args.trials)
                        .map(|t| mdi - phase(t as u32, args.trials as u32) * i)
                        .collect();
                    // `cargo xtask plot` draws the floor beside the two daemons' outages.
                    report.json.insert(
                        format!("floor.{interval_ms}ms.{}", fault.name()),
                        json!({ "floors_ms": floors }),
                    );
                    let (f50, f99) = p50_p99(floors);
                    format!("p50 {f50:.0} ms, p99 {f99:.0} ms")
                }
            };
            report.add_with_floor(
                format!("outage, {} ms adverts, {}", interval_ms, fault.name()),
                text(Daemon::Xvrrp),
                text(Daemon::Keepalived),
                target,
                floor,
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// MySQL failure to VIP moved, and probe cost.

fn keepalived_mysql_config(lab: &Lab, db: &Mariadb, priority: u8, advert: &str) -> String {
    let script = format!(
        "vrrp_script mysql {{\n  script \"/usr/bin/mariadb-admin {} --connect-timeout=1 ping\"\n  interval 1\n  timeout 1\n  fall 2\n  rise 2\n  weight 0\n}}\n",
        db.defaults_arg()
    );
    let base = lab
        .keepalived_config(
            &db.host,
            priority,
            3,
            advert,
            "  track_script {\n    mysql\n  }\n",
        )
        .replacen("global_defs {\n", "global_defs {\n  script_user root\n", 1);
    format!("{script}{base}")
}

fn mysql_failover(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let trials = args.trials.clamp(1, 10);
    let interval_ms = 20u32;
    println!(
        "4. mysqld SIGKILLed on the master -> first query through the VIP answered by the other server ({trials} trials, {interval_ms} ms adverts)"
    );
    let mut cell = BTreeMap::new();
    for daemon in [Daemon::Xvrrp, Daemon::Keepalived] {
        let lab = Lab::new(&["a", "b", "client"])?;
        let (mut a_db, b_db) = master_master_pair(&lab, "a", "b")?;
        // keepalived does not fence: the servers must take writes without it.
        if daemon == Daemon::Keepalived {
            for db in [&a_db, &b_db] {
                db.sql(&lab, "SET GLOBAL read_only = 0")?;
            }
        }
        let start = |db: &Mariadb, priority: u8| -> anyhow::Result<Proc> {
            match daemon {
                Daemon::Xvrrp => lab.start_xvrrp(
                    &db.host,
                    &format!(
                        "{}track_mysql = [\"local\"]\n\n{}",
                        lab.vrrp_config(&db.host, priority, "")
                            .replace(
                                "advert_interval_ms = 100",
                                &format!("advert_interval_ms = {interval_ms}")
                            )
                            .replace("heartbeat_limit_ms = 200", "heartbeat_limit_ms = 40"),
                        db.xvrrp_target("")
                    ),
                ),
                Daemon::Keepalived => lab.start_keepalived(
                    &db.host,
                    &keepalived_mysql_config(
                        &lab,
                        db,
                        priority,
                        &format!("{}", f64::from(interval_ms) / 1000.0),
                    ),
                ),
            }
        };
        let _a = start(&a_db, 200)?;
        let _b = start(&b_db, 100)?;
        let mut times = Vec::new();
        for _ in 0..trials {
            let steady = mariadb::wait_served_by(
                &lab,
                "client",
                LAB_VIP,
                &a_db,
                Duration::from_millis(200),
                Duration::from_secs(30),
            )?;
            if steady.is_none() {
                eprintln!("  {}: a never answered through the VIP", daemon.name());
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            let killed = Instant::now();
            a_db.signal(Signal::SIGKILL)?;
            let moved = mariadb::wait_served_by(
                &lab,
                "client",
                LAB_VIP,
                &b_db,
                Duration::from_millis(50),
                Duration::from_secs(20),
            )?;
            match moved {
                Some(t) => times.push((t - killed).as_secs_f64() * 1000.0),
                None => eprintln!("  {}: the VIP did not move", daemon.name()),
            }
            a_db.start(&lab)?;
            if daemon == Daemon::Keepalived {
                a_db.sql(&lab, "SET GLOBAL read_only = 0")?;
            }
        }
        report.json.insert(
            format!("mysql_failover.{}", daemon.name()),
            json!({ "ms": times }),
        );
        cell.insert(daemon.name(), p50_p99(times));
    }
    let text = |d: Daemon| {
        let (p50, p99) = cell[d.name()];
        format!("p50 {p50:.0} ms, max {p99:.0} ms")
    };
    report.add(
        format!("mysqld SIGKILL -> VIP answered by the other server ({interval_ms} ms adverts)"),
        text(Daemon::Xvrrp),
        text(Daemon::Keepalived),
        "<= 50 ms for xvrrp",
    );
    Ok(())
}

/// CPU time (user + system) of a process so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    // The scheduler's own run time of every thread, in ns (/proc/PID/task/TID/schedstat). The
    // tick-sampled utime + stime of /proc/PID/stat have 10 ms granularity and, for a daemon that
    // wakes on a timer, can be charged a whole tick per wake-up or none.
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        total += run_time(&task?.path())?;
    }
    Ok(total)
}

/// The run time of the thread whose /proc directory is `task` (its schedstat's first field).
fn run_time(task: &Path) -> anyhow::Result<Duration> {
    let schedstat = std::fs::read_to_string(task.join("schedstat"))?;
    let ns = schedstat
        .split_whitespace()
        .next()
        .context("schedstat")?
        .parse::<u64>()?;
    Ok(Duration::from_nanos(ns))
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .split_whitespace()
        .next()
        .context("VmRSS value")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn probe_cost(report: &mut Report) -> anyhow::Result<()> {
    println!("5. probe cost (xvrrp probing every 100 ms: 30 s of CPU, then 30 s of round times)");
    let lab = Lab::new(&["a", "client"])?;
    let mut db = Mariadb::install(&lab, "a", 1)?;
    db.start(&lab)?;
    let xv = lab.start_xvrrp(
        "a",
        &format!(
            "{}track_mysql = [\"local\"]\n\n{}",
            lab.vrrp_config("a", 200, ""),
            db.xvrrp_target("replication = false")
                .replace("replication = true\n", "")
        ),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    // CPU first, with nothing else asking the daemon anything (each `xvrrp status` costs it a
    // connection and a JSON document).
    let before = cpu_time(xv.pid())?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let cpu =
        (cpu_time(xv.pid())? - before).as_secs_f64() / started.elapsed().as_secs_f64() * 100.0;
    // Then the round times, sampled from `xvrrp status`.
    let started = Instant::now();
    let mut rounds = Vec::new();
    let mut last_probes = 0;
    while started.elapsed() < Duration::from_secs(30) {
        let st = lab.status("a")?;
        let m = &st["mysql"][0];
        let probes = m["probes"].as_u64().unwrap_or(0);
        if probes != last_probes {
            rounds.push(m["last_round_us"].as_f64().unwrap_or(f64::NAN) / 1000.0);
            last_probes = probes;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = lab.status("a")?;
    let reconnects = st["mysql"][0]["reconnects"].as_u64().unwrap_or(u64::MAX);
    // keepalived's probe: fork/exec of mariadb-admin ping.
    let mut exec = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let out = lab.run(
            "a",
            "mariadb-admin",
            &[&db.defaults_arg(), "ping"],
            Duration::from_secs(10),
        )?;
        if out.status.success() {
            exec.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let (p50, p99) = p50_p99(rounds.clone());
    let (e50, e99) = p50_p99(exec.clone());
    report.add(
        "MySQL probe round latency (one query: SELECT @@global.read_only)".into(),
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        format!("mariadb-admin ping exec: p50 {e50:.1} ms, p99 {e99:.1} ms"),
        "p99 <= 1 ms",
    );
    report.add(
        "daemon CPU while probing every 100 ms".into(),
        format!("{cpu:.2}% of one core, {reconnects} reconnects"),
        "-".into(),
        "<= 0.5%, 0 reconnects",
    );
    report.json.insert(
        "probe".into(),
        json!({ "round_ms": rounds, "exec_ms": exec, "cpu_percent": cpu, "reconnects": reconnects }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// False failovers under stress, and the footprint.

/// Master transitions so far, from the daemon's log.
fn masters_entered(daemon: Daemon, log: &str) -> usize {
    let mark = match daemon {
        Daemon::Xvrrp => "new=master",
        Daemon::Keepalived => "Entering MASTER STATE",
    };
    log.lines().filter(|l| l.contains(mark)).count()
}

fn stress(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let secs = args.stress_seconds;
    println!(
        "6. false failovers: {secs} s, stress-ng on both cores, 1% random loss, 20 ms adverts"
    );
    let mut labs = Vec::new();
    for daemon in [Daemon::Xvrrp, Daemon::Keepalived] {
        let lab = Lab::new(&["a", "b"])?;
        let a = start_daemon(&lab, daemon, "a", 200, 20)?;
        let b = start_daemon(&lab, daemon, "b", 100, 20)?;
        labs.push((daemon, lab, a, b));
    }
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<usize> = labs
        .iter()
        .map(|(d, _, a, b)| masters_entered(*d, &a.log()) + masters_entered(*d, &b.log()))
        .collect();
    for (_, lab, ..) in &labs {
        lab.set_faults(&[], 1)?;
    }
    let mut load = std::process::Command::new("stress-ng")
        .args(["--cpu", "2", "--timeout", &format!("{secs}s"), "--quiet"])
        .spawn()
        .context("stress-ng (cargo xtask setup installs it)")?;
    std::thread::sleep(Duration::from_secs(secs));
    let _ = load.kill();
    let _ = load.wait();
    let changes: Vec<usize> = labs
        .iter()
        .zip(&before)
        .map(|((d, _, a, b), n)| masters_entered(*d, &a.log()) + masters_entered(*d, &b.log()) - n)
        .collect();
    report.add(
        format!("master changes in {secs} s under stress and 1% loss (20 ms adverts)"),
        changes[0].to_string(),
        changes[1].to_string(),
        "0 for xvrrp",
    );
    report.json.insert(
        "stress".into(),
        json!({ "seconds": secs, "xvrrp": changes[0], "keepalived": changes[1] }),
    );
    Ok(())
}

/// The floor an idle master's CPU is measured against: a bare thread in a lab of its own that
/// sends the same adverts at the same times as the daemons (all instances' at once, every
/// interval) and does nothing else: a timed sleep, then one `sendto` per advert on a raw socket
/// set up as xvrrp's are, with the VIPs on its interface as the masters have them. What it
/// costs is what the kernel charges a sender for the wake-up and for the frames through the
/// lab's veth and bridge, which no daemon sending through sockets can go below.
struct BareSender {
    stop: Arc<AtomicBool>,
    /// The thread's id, once it runs.
    tid: Arc<std::sync::atomic::AtomicU32>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    // After the thread: the lab goes once the thread has stopped.
    _lab: Lab,
}

impl BareSender {
    fn start(vips: &[Ipv4Addr], interval_ms: u32) -> anyhow::Result<Self> {
        use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
        use vrrp_common::vrrp::{self, AdvertFields, Auth, ChecksumForm, Version};
        let lab = Lab::new(&["a"])?;
        let host = lab.host("a");
        let (iface, src) = (host.iface.clone(), host.ip);
        // The VIPs on its interface, as on the masters'.
        for vip in vips {
            host.ns
                .ip(&["addr", "add", &format!("{vip}/24"), "dev", &iface])?;
        }
        let dst = Ipv4Addr::from(vrrp::MCAST_V4);
        let adverts = vips
            .iter()
            .enumerate()
            .map(|(i, vip)| {
                let mut buf = [0u8; 64];
                let fields = AdvertFields {
                    version: Version::V3,
                    vrid: u8::try_from(i + 1)?,
                    priority: 200,
                    interval_cs: u16::try_from(interval_ms / 10)?,
                    auth: Auth::None,
                };
                let len = vrrp::emit(
                    &mut buf,
                    &fields,
                    &[&vip.octets()],
                    ChecksumForm::PseudoHeader,
                    &src.octets(),
                    &dst.octets(),
                )
                .map_err(|e| anyhow::anyhow!("encoding an advert: {e:?}"))?;
                Ok(buf[..len].to_vec())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (stop2, tid2) = (stop.clone(), tid.clone());
        let every = Duration::from_millis(u64::from(interval_ms));
        let thread = host.ns.spawn_in(move || {
            let s = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(i32::from(vrrp::IPPROTO_VRRP))),
            )?;
            s.bind_device(Some(iface.as_bytes()))?;
            s.set_multicast_if_v4(&src)?;
            s.set_multicast_ttl_v4(255)?;
            s.set_ttl_v4(255)?;
            s.set_multicast_loop_v4(false)?;
            s.set_tos_v4(0xc0)?;
            s.join_multicast_v4_n(&dst, &InterfaceIndexOrAddress::Address(src))?;
            s.bind(&SockAddr::from(std::net::SocketAddrV4::new(src, 0)))?;
            let to = SockAddr::from(std::net::SocketAddrV4::new(dst, 0));
            tid2.store(nix::unistd::gettid().as_raw() as u32, Ordering::Relaxed);
            let mut next = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                for advert in &adverts {
                    s.send_to(advert, &to)?;
                }
                next += every;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(())
        })?;
        Ok(Self {
            stop,
            tid,
            thread: Some(thread),
            _lab: lab,
        })
    }

    /// The thread's CPU time so far (scheduler run time).
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let tid = self.tid.load(Ordering::Relaxed);
        anyhow::ensure!(tid != 0, "the bare sender has not started");
        run_time(Path::new(&format!("/proc/self/task/{tid}")))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result.context("the bare sender"),
            Some(Err(_)) => bail!("the bare sender panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for BareSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn footprint(report: &mut Report) -> anyhow::Result<()> {
    // Both daemons run at once, each in a lab of its own, and are timed over the same window:
    // this VM's idle CPU drifts by a factor of two over minutes, which one daemon after the
    // other would read as a difference between them. The window opens once start-up is over
    // (xvrrp checks its heartbeat clock 1, 3, 7, 15 and 31 s after loading, then 32 and then
    // 64 s apart: one check in the window; keepalived sends its gratuitous ARPs): what an idle
    // daemon costs for as long as it runs.
    const SETTLE: Duration = Duration::from_secs(35);
    const WINDOW: Duration = Duration::from_secs(60);
    println!(
        "7. footprint at idle, master of all instances, nothing tracked, default heartbeat limit (both daemons side by side, {} s from {} s after start)",
        WINDOW.as_secs(),
        SETTLE.as_secs()
    );
    for (count, interval_ms) in [(1u32, 100u32), (64, 100), (1, 1000)] {
        let mut cell = BTreeMap::new();
        let ips: Vec<Ipv4Addr> = (0..count)
            .map(|i| Ipv4Addr::new(192, 0, 2, 100 + i as u8))
            .collect();
        let mut running = Vec::new();
        for daemon in [Daemon::Xvrrp, Daemon::Keepalived] {
            let lab = Lab::new(&["a"])?;
            let iface = lab.host("a").iface.clone();
            let proc = match daemon {
                Daemon::Xvrrp => {
                    let mut config = format!("interface = \"{iface}\"\nxdp_mode = \"native\"\n");
                    for (i, ip) in ips.iter().enumerate() {
                        config.push_str(&format!(
                            "\n[[instance]]\nvrid = {}\npriority = 200\nstate = \"takeover\"\nadvert_interval_ms = {interval_ms}\nvips = [\"{ip}/24\"]\n",
                            i + 1
                        ));
                    }
                    lab.start_xvrrp("a", &config)?
                }
                Daemon::Keepalived => {
                    let mut config =
                        "global_defs {\n  router_id a\n  vrrp_version 3\n}\n".to_owned();
                    for (i, ip) in ips.iter().enumerate() {
                        config.push_str(&format!(
                            "vrrp_instance VI_{n} {{\n  state MASTER\n  interface {iface}\n  virtual_router_id {n}\n  priority 200\n  advert_int {advert}\n  virtual_ipaddress {{\n    {ip}/24\n  }}\n}}\n",
                            n = i + 1,
                            advert = f64::from(interval_ms) / 1000.0
                        ));
                    }
                    lab.start_keepalived("a", &config)?
                }
            };
            // The process first: it is stopped before its lab goes.
            running.push((daemon, proc, lab));
        }
        let bare = BareSender::start(&ips, interval_ms)?;
        std::thread::sleep(SETTLE);
        // keepalived forks a VRRP child: count the whole process tree.
        let trees: Vec<Vec<u32>> = running.iter().map(|(_, p, _)| tree(p.pid())).collect();
        let sample = |pids: &Vec<u32>| -> Vec<Duration> {
            pids.iter().filter_map(|p| cpu_time(*p).ok()).collect()
        };
        let before: Vec<_> = trees.iter().map(sample).collect();
        let bare_before = bare.cpu_time()?;
        std::thread::sleep(WINDOW);
        let after: Vec<_> = trees.iter().map(sample).collect();
        let bare_cpu =
            (bare.cpu_time()? - bare_before).as_secs_f64() / WINDOW.as_secs_f64() * 100.0;
        bare.stop()?;
        report.json.insert(
            format!("footprint.bare_sender.{count}x{interval_ms}ms"),
            json!({ "cpu_percent": bare_cpu }),
        );
        for (i, (daemon, _, _)) in running.iter().enumerate() {
            let cpu = after[i]
                .iter()
                .zip(&before[i])
                .map(|(a, b)| (*a - *b).as_secs_f64())
                .sum::<f64>()
                / WINDOW.as_secs_f64()
                * 100.0;
            let rss: f64 = trees[i].iter().filter_map(|p| rss_mib(*p).ok()).sum();
            cell.insert(daemon.name(), (rss, cpu));
            report.json.insert(
                format!("footprint.{}.{count}x{interval_ms}ms", daemon.name()),
                json!({ "rss_mib": rss, "cpu_percent": cpu }),
            );
        }
        drop(running);
        let text = |d: Daemon| {
            let (rss, cpu) = cell[d.name()];
            format!("RSS {rss:.1} MiB, CPU {cpu:.3}%")
        };
        report.add_with_floor(
            format!("footprint, {count} instance(s) at {interval_ms} ms adverts"),
            text(Daemon::Xvrrp),
            text(Daemon::Keepalived),
            match (count, interval_ms) {
                (64, _) => "< 30 MB, < 1% of one core, CPU at most a tenth of keepalived's",
                _ => "CPU at or below keepalived's",
            },
            format!("bare sender of the same adverts: CPU {bare_cpu:.3}%"),
        );
    }
    Ok(())
}

/// `pid` and its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_owned()))
                    .and_then(|r| {
                        r.split_whitespace()
                            .nth(1)
                            .and_then(|x| x.parse::<u32>().ok())
                    });
                if ppid == Some(parent) && !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        i += 1;
    }
    all
}

fn main() -> anyhow::Result<()> {
    xvrrp_lab::remove_labs_on_interrupt();
    let args = args()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab benchmarks need root (network namespaces, BPF)");
    }
    let wanted = |s: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    let mut report = Report {
        figures: Vec::new(),
        json: BTreeMap::new(),
    };
    if wanted("outage") {
        outage(&args, &mut report)?;
    }
    if wanted("mysql") {
        mysql_failover(&args, &mut report)?;
    }
    if wanted("probe") {
        probe_cost(&mut report)?;
    }
    if wanted("footprint") {
        footprint(&mut report)?;
    }
    if wanted("stress") {
        stress(&args, &mut report)?;
    }
    println!(
        "\n| what | xvrrp | keepalived 2.2.7 | protocol floor | target |\n|---|---|---|---|---|"
    );
    for f in &report.figures {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.what, f.xvrrp, f.keepalived, f.floor, f.target
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("lab.json");
    // The commit measured, for the plots (`cargo xtask plot`).
    if let Ok(out) = std::process::Command::new("git")
        .args(["log", "-1", "--format=%h %cs"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        report.json.insert("commit".into(), json!(commit));
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report.json)?)?;
    println!("\nwritten: {}", path.display());
    Ok(())
}

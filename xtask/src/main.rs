//! `cargo xtask`: set-up, build, run, test and the namespace lab.

mod plot;
mod setup;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use xvrrp_lab::{Lab, PIN_ROOT, mac_text, mariadb};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent; fast when all is present).
    Setup,
    /// Build the daemon and its XDP program.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Without --config: a demo lab (two hosts running xvrrp and a client on a bridge, in
    /// network namespaces) until Ctrl-C. With --config: the daemon on this host.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stop the demo lab by itself after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Play a failover: this many seconds after the start, kill -9 the master's (host a's)
        /// MariaDB; the demo restarts it 5 s later and the VIP comes back.
        #[arg(long)]
        failover_after: Option<u64>,
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests, BPF_PROG_TEST_RUN tests and namespace tests (needs root).
    Test {
        /// Passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks (printed, with targets; JSON under target/bench/). Needs root.
    /// Arguments go to the lab benchmarks: --trials N, --intervals 1000,100,20,10,
    /// --stress-seconds S, --only outage,mysql,probe,footprint,stress,
    /// --faults kill,stop,link,term; --skip-dataplane skips the data-plane and tracking parts.
    Bench {
        #[arg(long)]
        skip_dataplane: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Draw the last bench run's figures (target/bench/*.json) as SVG files beside them;
    /// --to DIR copies them there too (docs/bench for the README).
    Plot {
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Fuzz the advert decoder, the keepalived.conf import and the TOML config loader with
    /// cargo-fuzz (libFuzzer), each for a bounded time.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build the container image with podman, from scratch around the release binary (no
    /// registry needed); --save writes it as an OCI archive too.
    Image {
        #[arg(long, default_value = "localhost/xvrrp:latest")]
        tag: String,
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Build an empty lab (hosts a, b, client on a bridge) and keep it until Ctrl-C.
    Lab {
        #[arg(long, default_value = "a,b,client")]
        hosts: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => build(release).map(drop),
        Cmd::Run {
            config,
            duration,
            failover_after,
            release,
        } => {
            setup::run()?;
            let bin = build(release)?;
            match config {
                Some(config) => run_daemon(&bin, &config),
                None => demo(
                    &bin,
                    duration.map(Duration::from_secs),
                    failover_after.map(Duration::from_secs),
                ),
            }
        }
        Cmd::Test { args } => test(&args),
        Cmd::Fuzz { seconds } => fuzz(seconds),
        Cmd::Bench {
            skip_dataplane,
            args,
        } => {
            setup::run()?;
            let bin = build(true)?;
            if !skip_dataplane {
                status(
                    cargo()
                        .args([
                            "bench",
                            "--package",
                            "vrrp-user",
                            "--features",
                            "bench",
                            "--bench",
                            "dataplane",
                        ])
                        .env("XVRRP_BIN", &bin),
                )?;
                status(cargo().args(["bench", "--package", "vrrp-user", "--bench", "tracking"]))?;
            }
            status(
                cargo()
                    .args(["bench", "--package", "xvrrp-lab", "--bench", "lab", "--"])
                    .args(&args)
                    .env("XVRRP_BIN", &bin),
            )?;
            plot(None)
        }
        Cmd::Plot { to } => plot(to.as_deref()),
        Cmd::Image { tag, save } => {
            setup::run()?;
            let bin = build(true)?;
            let work = workspace_root().join("target").join("image");
            xvrrp_lab::image::build(&bin, &tag, &work)?;
            println!("built {tag} (context: {})", work.display());
            if let Some(path) = save {
                status(
                    Command::new("podman")
                        .args(["save", "--format", "oci-archive", "--output"])
                        .arg(&path)
                        .arg(&tag),
                )?;
                println!("saved {}", path.display());
            }
            Ok(())
        }
        Cmd::Lab { hosts } => {
            setup::run()?;
            let names: Vec<&str> = hosts.split(',').map(str::trim).collect();
            let lab = Lab::new(&names)?;
            println!("lab {} is up:", lab.tag());
            for h in lab.hosts() {
                println!(
                    "  {:8} ns {:14} iface {:12} {}  (enter: nsenter --net=/run/netns/{} bash)",
                    h.name,
                    h.ns.name(),
                    h.iface,
                    h.ip,
                    h.ns.name()
                );
            }
            println!("{LAB_KNOBS}Ctrl-C removes it.");
            lab_console(&lab);
            Ok(())
        }
    }
}

const LAB_KNOBS: &str = "Knobs, typed here one per line:\n  cut HOST | restore HOST     take a host's link to the bridge down / up\n  \
     partition a,b client        drop frames between the groups (space-separated, comma-joined)\n  \
     loss PERCENT                drop this share of all frames at random (0 stops it)\n  \
     heal                        no partition, no loss\n";

/// Applies knob commands read from stdin to `lab` until Ctrl-C (or end of input, then waits).
fn lab_console(lab: &Lab) {
    install_handlers();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut loss = 0u32;
    while !INTERRUPTED.load(Ordering::SeqCst) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let known = |h: &str| lab.hosts().iter().any(|x| x.name == h);
        let result = match words.as_slice() {
            [] => continue,
            ["cut" | "restore", host] if known(host) => lab.set_link(host, words[0] == "restore"),
            ["partition", rest @ ..]
                if rest.len() >= 2 && rest.iter().all(|g| g.split(',').all(known)) =>
            {
                groups = rest
                    .iter()
                    .map(|g| g.split(',').map(str::to_owned).collect())
                    .collect();
                apply_faults(lab, &groups, loss)
            }
            ["loss", p] if p.parse::<u32>().is_ok_and(|p| p <= 100) => {
                loss = p.parse().unwrap_or(0);
                apply_faults(lab, &groups, loss)
            }
            ["heal"] => {
                groups.clear();
                loss = 0;
                apply_faults(lab, &groups, loss)
            }
            _ => {
                println!("not understood: {line:?}\n{LAB_KNOBS}");
                continue;
            }
        };
        match result {
            Ok(()) => println!("done: {line}"),
            Err(err) => println!("failed: {line}: {err:#}"),
        }
    }
}

fn apply_faults(lab: &Lab, groups: &[Vec<String>], loss: u32) -> anyhow::Result<()> {
    let groups: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    let refs: Vec<&[&str]> = groups.iter().map(Vec::as_slice).collect();
    lab.set_faults(&refs, loss)
}

fn workspace_root() -> PathBuf {
    xvrrp_lab::workspace_root()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(st.success(), "{cmd:?} failed: {st}");
    Ok(())
}

/// Builds the `xvrrp` binary (and the XDP object inside it) and returns its path.
/// Draws the bench figures; with `to`, copies them there.
fn plot(to: Option<&Path>) -> anyhow::Result<()> {
    let dir = workspace_root().join("target").join("bench");
    let commit = Command::new("git")
        .args(["log", "-1", "--format=%h %cs"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "commit unknown".to_owned());
    let written = plot::run(&dir, &commit)?;
    for path in &written {
        println!("drew {}", path.display());
        if let Some(to) = to {
            std::fs::create_dir_all(to)?;
            let name = path.file_name().expect("a file");
            std::fs::copy(path, to.join(name))?;
        }
    }
    if written.is_empty() {
        println!("nothing to draw: no bench results in {}", dir.display());
    }
    Ok(())
}

fn build(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "vrrp-user", "--bin", "xvrrp"]);
    if release {
        cmd.arg("--release");
    }
    status(&mut cmd)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    Ok(target_dir
        .join(if release { "release" } else { "debug" })
        .join("xvrrp"))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    let bin = build(false)?;
    // Privileged tests fail instead of skipping when they cannot run.
    status(
        cargo()
            .arg("test")
            .args(args)
            .env("XVRRP_REQUIRE_PRIVILEGED", "1")
            .env("XVRRP_BIN", &bin),
    )?;
    // The bench object (the `bench` feature) has unit tests of its own: its programs are there.
    if args.is_empty() {
        status(cargo().args([
            "test",
            "--package",
            "vrrp-user",
            "--features",
            "bench",
            "--lib",
        ]))?;
    }
    Ok(())
}

/// The fuzz targets: the advert decoder, the keepalived.conf reader and import, the TOML
/// config loader. Each is seeded from fuzz/corpus/<target>.
const FUZZ_TARGETS: [&str; 3] = ["decode", "keepalived", "config"];

/// Runs each fuzz target for `seconds`; new inputs go to target/fuzz-corpus/<target>, crashes
/// to fuzz/artifacts/<target>.
fn fuzz(seconds: u64) -> anyhow::Result<()> {
    setup::run()?;
    setup::cargo_fuzz()?;
    let root = workspace_root();
    for target in FUZZ_TARGETS {
        let work = root.join("target").join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&work)?;
        println!("== fuzz target {target}, {seconds} s");
        status(
            Command::new("cargo")
                .current_dir(&root)
                .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target])
                .arg(&work)
                .arg(root.join("fuzz").join("corpus").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-max_len=65536"),
        )?;
    }
    Ok(())
}

fn run_daemon(bin: &Path, config: &Path) -> anyhow::Result<()> {
    let err = std::os::unix::process::CommandExt::exec(
        Command::new(bin).arg("run").arg("--config").arg(config),
    );
    bail!("cannot run {}: {err}", bin.display())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Returns on SIGINT/SIGTERM, or when `limit` has passed.
fn install_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }.expect("sigaction");
    }
}

const DEMO_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

/// The embedded default: hosts a (master) and b (backup) run xvrrp for one VIP, and a client
/// resolves the VIP every second, showing which host answers.
fn demo(
    bin: &Path,
    limit: Option<Duration>,
    failover_after: Option<Duration>,
) -> anyhow::Result<()> {
    install_handlers();
    let mut lab = Lab::new(&["a", "b", "client"])?;
    lab.set_xvrrp_bin(bin);
    println!("starting MariaDB on hosts a and b, replicating from each other...");
    let (a_db, b_db) = mariadb::master_master_pair(&lab, "a", "b")?;
    let mut dbs = [a_db, b_db];
    let mut daemons = Vec::new();
    for (db, priority) in dbs.iter().zip([200, 100]) {
        let host = db.host.clone();
        let iface = &lab.host(&host).iface;
        let proc = lab.start_xvrrp(
            &host,
            &format!(
                "# host {host} of the xvrrp demo lab\ninterface = \"{iface}\"\n\n[[instance]]\nname = \"demo\"\n\
                 vrid = 51\npriority = {priority}\nadvert_interval_ms = 100\nvips = [\"{DEMO_VIP}/24\"]\n\
                 track_mysql = [\"local\"]\n\n{}",
                db.xvrrp_target("")
            ),
        )?;
        daemons.push((host, proc));
    }
    let client = lab.host("client");
    println!(
        "xvrrp demo lab {} (Ctrl-C stops it and removes everything):",
        lab.tag()
    );
    for h in lab.hosts() {
        println!(
            "  host {:7} {:12} mac {}  iface {}  netns {}",
            h.name,
            h.ip.to_string(),
            mac_text(&h.mac),
            h.iface,
            h.ns.name()
        );
    }
    println!(
        "  VIP {DEMO_VIP}: host a (priority 200) and host b (priority 100) each run MariaDB, replicating\n  \
         from each other, and xvrrp probing and fencing their own server. A client writes through the VIP."
    );
    println!("  The VIP is not an address of either host: XDP answers ARP for it on the master.");
    println!(
        "  Inspect: bpftool map dump pinned {PIN_ROOT}/{}/vips_v4   (also vrids, stats)",
        lab.host("a").iface
    );
    println!(
        "  Ask yourself: nsenter --net=/run/netns/{} arping -c 3 -I {} {DEMO_VIP}",
        client.ns.name(),
        client.iface
    );
    let writer = mariadb::Writer::start(&lab, "client", DEMO_VIP)?;
    let start = Instant::now();
    let mut shown_status = false;
    let mut last_acked = 0;
    let mut down_since: [Option<Instant>; 2] = [None, None];
    let mut failover = failover_after;
    while !INTERRUPTED.load(Ordering::SeqCst) && limit.is_none_or(|l| start.elapsed() < l) {
        if failover.is_some_and(|after| start.elapsed() >= after) {
            failover = None;
            println!(
                "failover: kill -9 {} (host a's MariaDB, the master's); the demo restarts it 5 s later",
                dbs[0].pid().unwrap_or_default()
            );
            dbs[0].signal(Signal::SIGKILL)?;
        }
        let replies = lab.arping("client", DEMO_VIP, 1)?;
        let owner = |mac: &str| {
            lab.hosts()
                .iter()
                .find(|h| mac_text(&h.mac) == mac)
                .map_or("unknown host", |h| h.name.as_str())
                .to_owned()
        };
        match replies.as_slice() {
            [] => println!("client: who has {DEMO_VIP}? no answer"),
            macs => {
                let seen: Vec<String> = macs
                    .iter()
                    .map(|m| format!("{m} (host {})", owner(m)))
                    .collect();
                println!("client: {DEMO_VIP} is at {}", seen.join(", "));
            }
        }
        let progress = writer.progress();
        let acked = progress.acked.load(Ordering::Relaxed);
        let via = match progress.server.load(Ordering::Relaxed) {
            0 => "no server".to_owned(),
            id => format!("host {}'s server", if id == 1 { "a" } else { "b" }),
        };
        let servers: Vec<String> = dbs
            .iter_mut()
            .map(|db| {
                let state = if !db.running() {
                    "down".to_owned()
                } else {
                    match db.read_only(&lab) {
                        Ok(true) => "read-only".to_owned(),
                        Ok(false) => "writable".to_owned(),
                        Err(_) => "not answering".to_owned(),
                    }
                };
                format!("{}: MariaDB {state}", db.host)
            })
            .collect();
        println!(
            "        writes acknowledged {acked} (+{}), failed {}, now through {via}; {}",
            acked - last_acked,
            progress.failed.load(Ordering::Relaxed),
            servers.join(", ")
        );
        last_acked = acked;
        if !shown_status && !replies.is_empty() {
            shown_status = true;
            for host in ["a", "b"] {
                println!("xvrrp status on host {host}:\n{}", lab.status_table(host)?);
            }
            println!(
                "Try a failover: kill -9 {}   (host a's MariaDB): the VIP moves to b in well under a\n\
                 second and b's server becomes writable; the demo restarts a's MariaDB 5 s later and a\n\
                 takes the VIP back once its replica lags at most 5 s (writes pause while it applies\n\
                 the rest: the catch-up wait). Or kill -9 {} (a's xvrrp).",
                dbs[0].pid().unwrap_or_default(),
                daemons[0].1.pid()
            );
        }
        for (db, down) in dbs.iter_mut().zip(down_since.iter_mut()) {
            if db.running() {
                *down = None;
            } else if down.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5) {
                println!("restarting MariaDB on host {}", db.host);
                if let Err(err) = db.start(&lab) {
                    // MariaDB 10.11 can fail its own crash recovery after a kill -9 (seen once
                    // here: an InnoDB assertion in the purge of the transactions it rolled
                    // back); a second start is tried (not known to always succeed).
                    let why = err.to_string();
                    println!(
                        "  it did not come up ({}); starting it once more",
                        why.lines().next().unwrap_or_default()
                    );
                    db.start(&lab)?;
                }
                *down = None;
                println!("  its pid is now {}", db.pid().unwrap_or_default());
            }
        }
        for (host, proc) in &mut daemons {
            if !proc.running() {
                bail!("xvrrp on host {host} exited:\n{}", proc.log());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let acked = writer.finish()?;
    println!("the client's writes acknowledged: {}", acked.len());
    println!("stopping");
    for (host, mut proc) in daemons {
        match proc.stop(Signal::SIGTERM, Duration::from_secs(10)) {
            Ok(st) if st.success() => {}
            Ok(st) => eprintln!("xvrrp on host {host} exited with {st}:\n{}", proc.log()),
            Err(err) => eprintln!("xvrrp on host {host}: {err:#}"),
        }
    }
    drop(lab);
    println!("lab removed");
    Ok(())
}

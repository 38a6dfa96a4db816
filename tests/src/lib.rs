//! A network-namespace lab for xvrrp: hosts joined by veths to a bridge, processes run inside
//! them, and everything removed on drop.
//!
//! Every lab has a unique tag (process id and a counter), which names its namespaces and its
//! interfaces, so that labs of tests running in parallel never collide (the daemon pins its maps
//! under `/sys/fs/bpf/xvrrp/<interface>/`, so interface names must be unique too). The bridge
//! lives in a namespace of its own: deleting the lab's namespaces deletes every veth, and the
//! root namespace is never touched.
//!
//! Per ../shared/TOOLCHAIN.md, a frame an XDP program sends with XDP_TX in native mode on a veth
//! is lost unless the peer veth has an XDP program too; the lab attaches a two-instruction
//! "pass" program to every bridge-side veth end, so native XDP_TX is really exercised.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};

pub mod image;
pub mod mariadb;
pub mod metrics;
pub mod systemd;
pub mod xdp_pass;

/// Skips a privileged test (returning false) unless running as root. With
/// `XVRRP_REQUIRE_PRIVILEGED=1` (set by `cargo xtask test`), not being root is a failure instead,
/// so CI can never pass by skipping.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("XVRRP_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{test} needs root (network namespaces, BPF) and XVRRP_REQUIRE_PRIVILEGED=1 is set");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, BPF)");
    false
}

/// The `xvrrp` binary under test: `$XVRRP_BIN`, or the one beside the running test executable
/// (target/<profile>/xvrrp, tests run from target/<profile>/deps/).
pub fn xvrrp_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("XVRRP_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("xvrrp")
}

/// A fresh, empty directory of the test's own (removed first if a previous run left it).
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xvrrp-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// Panics with xvrrp's own words unless `xvrrp check-config path` accepts the file.
pub fn assert_valid_config(path: &Path) {
    let out = run_with_timeout(
        Command::new(xvrrp_bin()).arg("check-config").arg(path),
        Duration::from_secs(20),
    )
    .expect("running xvrrp check-config");
    assert!(
        out.status.success(),
        "{} does not validate: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

/// A unique short tag for one lab: 4 hex digits of the pid and 2 of a counter.
fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:04x}{:02x}", std::process::id() & 0xffff, n & 0xff)
}

/// Runs a command to completion within `timeout`, killing it if it takes longer.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let desc = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.with_context(|| format!("waiting for {desc}")),
        Err(_) => {
            // SAFETY: plain kill(2); the waiting thread reaps the child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            bail!("{desc} did not finish within {timeout:?}")
        }
    }
}

/// Runs `ip` (root namespace) and fails with its stderr if it fails.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = run_with_timeout(Command::new("ip").args(args), Duration::from_secs(10))?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside this namespace (network only: the mount namespace, and so
    /// /sys/fs/bpf, stays the caller's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        let ns = fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        let mut cmd = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; the fd is owned by the closure and stays open
        // until the child execs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.spawn_in(f)?
            .join()
            .map_err(|_| anyhow!("namespace thread panicked"))?
    }
}

impl Netns {
    /// Runs `f` on a thread that has entered this namespace, in the background.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
        let ns = fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        Ok(std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            eprintln!("lab: cannot delete namespace {}: {err:#}", self.name);
        }
    }
}

/// Names of the network namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// For programs that run labs until interrupted (the benchmarks): on SIGINT or SIGTERM, kill
/// every process in a namespace this process made, delete those namespaces, and exit 130.
/// Handlers, not a blocked signal mask: the daemons the labs start inherit a mask, and a
/// daemon with SIGTERM blocked never stops.
pub fn remove_labs_on_interrupt() {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!(
                "lab: no runtime for the interrupt handler ({err}); an interrupt leaves namespaces"
            );
            return;
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        runtime.block_on(async { signal(SignalKind::interrupt()) }),
        runtime.block_on(async { signal(SignalKind::terminate()) }),
    ) else {
        eprintln!("lab: cannot handle SIGINT/SIGTERM; an interrupt leaves namespaces");
        return;
    };
    std::thread::spawn(move || {
        let name = runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        });
        let prefix = format!("xv{:04x}", std::process::id() & 0xffff);
        let mine: Vec<String> = namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        eprintln!(
            "lab: {name}: removing {} namespace(s) and the processes in them",
            mine.len()
        );
        for ns in &mine {
            if let Ok(out) = run_with_timeout(
                Command::new("ip").args(["netns", "pids", ns]),
                Duration::from_secs(5),
            ) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        for ns in &mine {
            let _ = ip(&["netns", "del", ns]);
        }
        std::process::exit(130);
    });
}

/// One host of the lab: its namespace and its interface on the bridge.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub ns: Netns,
    /// The host's interface on the lab network (unique across labs).
    pub iface: String,
    pub ip: Ipv4Addr,
    /// 2001:db8::<n>/64.
    pub ip6: Ipv6Addr,
    pub mac: [u8; 6],
}

/// The VIP the lab's tests and demo use.
pub const LAB_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

/// The control socket a daemon serving `iface` answers at (its own, or a link to it).
pub fn control_socket(iface: &str) -> PathBuf {
    Path::new("/run/xvrrp").join(format!("{iface}.sock"))
}

/// Where xvrrp pins its maps, one directory per interface.
pub const PIN_ROOT: &str = "/sys/fs/bpf/xvrrp";

/// The lab subnet: 192.0.2.0/24 (TEST-NET-1), only ever inside the lab's own namespaces.
pub const SUBNET_PREFIX: u8 = 24;

/// Adds bridge `name` in the switch's namespace, up, with no STP and no forwarding delay:
/// ports forward at once.
fn add_bridge(switch: &Netns, name: &str) -> anyhow::Result<()> {
    switch.ip(&["link", "add", name, "type", "bridge"])?;
    switch.ip(&[
        "link",
        "set",
        name,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ])?;
    // A switch forwards frames without running the IP firewall over them: with br_netfilter
    // in the kernel, bridged frames would go through iptables' hooks of the switch's namespace
    // too (about a sixth of the CPU an advert costs its sender here, the same for every
    // daemon). The lab's own faults are nftables rules of the bridge family, which need none.
    sysctl(
        switch,
        &[
            "-eqw",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ],
    )?;
    switch.ip(&["link", "set", name, "up"])
}

/// Runs `sysctl args` in `ns`.
fn sysctl(ns: &Netns, args: &[&str]) -> anyhow::Result<()> {
    let out = run_with_timeout(ns.command("sysctl")?.args(args), Duration::from_secs(5))?;
    ensure!(
        out.status.success(),
        "sysctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A lab: hosts on one bridge. Hosts get 192.0.2.1, .2, ... in the order given.
pub struct Lab {
    tag: String,
    // Fields drop in order: processes first (they hold nothing of the lab), then the XDP links,
    // the hosts and the switch.
    xdp_links: std::sync::Mutex<Vec<OwnedFd>>,
    hosts: Vec<Host>,
    switch: Netns,
    workdir: PathBuf,
    /// The xvrrp binary [`Lab::start_xvrrp`] runs.
    xvrrp: PathBuf,
}

impl Lab {
    pub fn new(host_names: &[&str]) -> anyhow::Result<Self> {
        ensure!(host_names.len() < 100, "too many hosts");
        let tag = unique_tag();
        let switch = Netns::create(&format!("xv{tag}-sw"))?;
        add_bridge(&switch, "br0")?;
        let workdir = std::env::temp_dir().join(format!("xvrrp-lab-{tag}"));
        fs::create_dir_all(&workdir)?;
        let mut lab = Self {
            tag: tag.clone(),
            xdp_links: std::sync::Mutex::new(Vec::new()),
            hosts: Vec::new(),
            switch,
            workdir,
            xvrrp: xvrrp_bin(),
        };
        let pass = xdp_pass::load().context("loading the XDP pass program for the bridge ports")?;
        for (i, name) in host_names.iter().enumerate() {
            let ns = Netns::create(&format!("xv{tag}-{name}"))?;
            // No duplicate address detection: addresses (link-local ones too) are usable at
            // once, as daemons bind to them right after the lab is built.
            sysctl(
                &ns,
                &[
                    "-qw",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.accept_dad=0",
                ],
            )?;
            let iface = format!("xv{tag}h{i}");
            let idx = u8::try_from(i + 1)?;
            let mac = [0x02, 0x00, 0x00, 0x00, 0x00, idx];
            let host_ip = Ipv4Addr::new(192, 0, 2, idx);
            let host_ip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(idx));
            lab.plug(&ns, i, &pass)?;
            lab.hosts.push(Host {
                name: (*name).to_owned(),
                ns,
                iface,
                ip: host_ip,
                ip6: host_ip6,
                mac,
            });
        }
        Ok(lab)
    }

    /// Creates host `i`'s veth in `ns`, its port on the bridge (with an XDP pass program, so
    /// that native XDP_TX answers are delivered), its addresses, and brings it up.
    fn plug(&self, ns: &Netns, i: usize, pass: &OwnedFd) -> anyhow::Result<()> {
        let tag = &self.tag;
        let iface = format!("xv{tag}h{i}");
        let port = format!("xv{tag}p{i}");
        let idx = u8::try_from(i + 1)?;
        let mac_text = mac_text(&[0x02, 0x00, 0x00, 0x00, 0x00, idx]);
        self.veth_to_switch(ns, (&iface, &mac_text), &port, "br0")?;
        let host_ip = Ipv4Addr::new(192, 0, 2, idx);
        ns.ip(&[
            "addr",
            "add",
            &format!("{host_ip}/{SUBNET_PREFIX}"),
            "dev",
            &iface,
        ])?;
        let host_ip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(idx));
        ns.ip(&[
            "addr",
            "add",
            &format!("{host_ip6}/64"),
            "dev",
            &iface,
            "nodad",
        ])?;
        ns.ip(&["link", "set", &iface, "up"])?;
        let port_name = port.clone();
        let prog = pass.try_clone()?;
        let link = self
            .switch
            .run_in(move || xdp_pass::attach_native(&prog, &port_name))
            .with_context(|| format!("attaching the pass program to {port}"))?;
        self.xdp_links.lock().expect("xdp links").push(link);
        Ok(())
    }

    /// A veth from `iface` (with `mac`) in `ns` to `port` on the switch's `bridge`, the port up.
    fn veth_to_switch(
        &self,
        ns: &Netns,
        (iface, mac): (&str, &str),
        port: &str,
        bridge: &str,
    ) -> anyhow::Result<()> {
        ip(&[
            "link",
            "add",
            iface,
            "netns",
            ns.name(),
            "address",
            mac,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.switch.name(),
        ])?;
        self.switch
            .ip(&["link", "set", port, "master", bridge, "up"])
    }

    /// Adds a second network, the inside: a bridge of its own beside the lab's and, on each
    /// host, an interface on it ([`Lab::inside_iface`]) with 198.51.100.<n>/24 and MAC
    /// 02:00:00:00:01:<n> (n as in the lab's addresses). Its bridge ports carry the XDP pass
    /// program, as the lab's do, so that a data plane on the inside can answer with XDP_TX.
    pub fn add_inside(&self) -> anyhow::Result<()> {
        let pass = xdp_pass::load().context("loading the XDP pass program for the inside ports")?;
        add_bridge(&self.switch, "br1")?;
        for h in &self.hosts {
            self.plug_inside(h, &pass)?;
        }
        Ok(())
    }

    /// Host `h`'s interface on the inside network, its port, address and pass program.
    fn plug_inside(&self, h: &Host, pass: &OwnedFd) -> anyhow::Result<()> {
        let (iface, port) = (self.inside_iface(&h.name), self.inside_port(&h.name));
        let n = h.mac[5];
        let mac = mac_text(&[0x02, 0, 0, 0, 0x01, n]);
        self.veth_to_switch(&h.ns, (&iface, &mac), &port, "br1")?;
        h.ns.ip(&["addr", "add", &format!("198.51.100.{n}/24"), "dev", &iface])?;
        h.ns.ip(&["link", "set", &iface, "up"])?;
        let prog = pass.try_clone()?;
        let link = self
            .switch
            .run_in(move || xdp_pass::attach_native(&prog, &port))
            .context("attaching the pass program to an inside port")?;
        self.xdp_links.lock().expect("xdp links").push(link);
        Ok(())
    }

    /// Deletes `host`'s inside interface (its veth: the bridge port goes with it), waits
    /// `gone`, and creates it again under the same name, MAC and address (a new ifindex).
    pub fn recreate_inside(&self, host: &str, gone: Duration) -> anyhow::Result<()> {
        let h = self.host(host);
        h.ns.ip(&["link", "del", &self.inside_iface(host)])?;
        std::thread::sleep(gone);
        let pass = xdp_pass::load().context("loading the XDP pass program")?;
        self.plug_inside(h, &pass)
    }

    /// `host`'s interface on the inside network ([`Lab::add_inside`]).
    pub fn inside_iface(&self, host: &str) -> String {
        let i = self.host_index(host);
        format!("xv{}n{i}", self.tag)
    }

    /// The inside bridge's port of `host`.
    fn inside_port(&self, host: &str) -> String {
        let i = self.host_index(host);
        format!("xv{}q{i}", self.tag)
    }

    fn host_index(&self, host: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.name == host)
            .expect("host")
    }

    /// Cuts (`up` false) or restores a host's link to the inside network.
    pub fn set_inside_link(&self, host: &str, up: bool) -> anyhow::Result<()> {
        let port = self.inside_port(host);
        self.switch
            .ip(&["link", "set", &port, if up { "up" } else { "down" }])
    }

    /// Deletes `host`'s interface and creates it again under the same name, with the same MAC
    /// and addresses, as a rebuilt bond or a reloaded driver does (a new ifindex).
    pub fn recreate_link(&self, host: &str) -> anyhow::Result<()> {
        let i = self
            .hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| anyhow!("no host {host}"))?;
        let h = &self.hosts[i];
        h.ns.ip(&["link", "del", &h.iface])?;
        let pass = xdp_pass::load().context("loading the XDP pass program")?;
        self.plug(&h.ns, i, &pass)
    }

    /// Runs this xvrrp binary instead of [`xvrrp_bin`]'s.
    pub fn set_xvrrp_bin(&mut self, bin: &Path) {
        self.xvrrp = bin.to_owned();
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A directory for this lab's files (configs, logs), removed on drop.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// Names of every namespace of this lab.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![self.switch.name().to_owned()];
        names.extend(self.hosts.iter().map(|h| h.ns.name().to_owned()));
        names
    }

    /// Starts a long-running process on a host; its stdout and stderr go to `<log>.log` in the
    /// work directory.
    pub fn spawn(
        &self,
        host: &str,
        program: &Path,
        args: &[&str],
        log: &str,
    ) -> anyhow::Result<Proc> {
        self.spawn_env(host, program, args, &[], log)
    }

    /// [`Lab::spawn`] with environment variables added.
    pub fn spawn_env(
        &self,
        host: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &str,
    ) -> anyhow::Result<Proc> {
        let log_path = self.workdir.join(format!("{log}.log"));
        let out = fs::File::create(&log_path)?;
        let err = out.try_clone()?;
        let child = self
            .host(host)
            .ns
            .command(program)?
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} on {host}", program.display()))?;
        Ok(Proc {
            child: Some(child),
            log: log_path,
        })
    }

    /// Runs a command on a host to completion within `timeout`.
    pub fn run(
        &self,
        host: &str,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        run_with_timeout(self.host(host).ns.command(program)?.args(args), timeout)
    }

    /// Sends one ARP request per `count` from `host` for `target` and returns the MAC
    /// addresses of the replies, in order (empty when nobody answered).
    pub fn arping(&self, host: &str, target: Ipv4Addr, count: u32) -> anyhow::Result<Vec<String>> {
        let iface = self.host(host).iface.clone();
        self.arping_on(host, &iface, target, count)
    }

    /// [`Lab::arping`] out of another interface of `host` (the inside network's, say).
    pub fn arping_on(
        &self,
        host: &str,
        iface: &str,
        target: Ipv4Addr,
        count: u32,
    ) -> anyhow::Result<Vec<String>> {
        let out = self.run(
            host,
            "arping",
            &[
                "-c",
                &count.to_string(),
                "-w",
                &(count + 2).to_string(),
                "-I",
                iface,
                &target.to_string(),
            ],
            Duration::from_secs(u64::from(count) + 10),
        )?;
        Ok(parse_arping(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Lab {
    /// Writes `config` (TOML) for `host` and starts `xvrrp run` with it there; returns once
    /// the daemon has pinned its maps (or fails with its log if it exits or takes over 20 s).
    pub fn start_xvrrp(&self, host: &str, config: &str) -> anyhow::Result<Proc> {
        self.start_xvrrp_env(host, config, &[])
    }

    /// Writes `host`'s daemon config, readable by root only (it may hold a password: xvrrp
    /// refuses such a file if others can read it); its path.
    fn write_config(&self, host: &str, config: &str) -> anyhow::Result<PathBuf> {
        let path = self.workdir.join(format!("{host}.toml"));
        fs::write(&path, config)?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(path)
    }

    /// [`Lab::start_xvrrp`] with environment variables added (`XVRRP_LOG_FORMAT`,
    /// `NOTIFY_SOCKET`, ...).
    pub fn start_xvrrp_env(
        &self,
        host: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let path = self.write_config(host, config)?;
        let mut proc = self.spawn_env(
            host,
            &self.xvrrp,
            &[
                "run",
                "--config",
                path.to_str().expect("utf-8 path"),
                "--log-level",
                "info,vrrp_user=debug",
            ],
            env,
            &format!("xvrrp-{host}"),
        )?;
        wait_running(&mut proc, host, Proc::log)?;
        Ok(proc)
    }

    /// [`Lab::start_xvrrp`] with the daemon's output going to a pipe of one page (its
    /// [`Proc::log`] stays empty) that a [`PipedLog`] reads until told to stop: a log consumer
    /// that stops reading (a stalled journald), whose full pipe blocks the daemon's next write.
    pub fn start_xvrrp_piped(&self, host: &str, config: &str) -> anyhow::Result<(Proc, PipedLog)> {
        let path = self.write_config(host, config)?;
        let (read, write) = nix::unistd::pipe()?;
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096))?;
        let child = self
            .host(host)
            .ns
            .command(&self.xvrrp)?
            .args(["run", "--config", path.to_str().expect("utf-8 path")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write))
            .spawn()
            .with_context(|| format!("starting xvrrp on {host}"))?;
        let mut proc = Proc {
            child: Some(child),
            log: self.workdir.join(format!("xvrrp-{host}-piped.none")),
        };
        let log = PipedLog::read(fs::File::from(read));
        wait_running(&mut proc, host, |_| log.text())?;
        Ok((proc, log))
    }

    /// A keepalived.conf for `host`: VRID 51 for [`LAB_VIP`]/24 at `priority`, VRRP `version`,
    /// `advert_int` seconds (fractions with VRRPv3), starting as backup; `extra` lines go into
    /// the vrrp_instance block.
    pub fn keepalived_config(
        &self,
        host: &str,
        priority: u8,
        version: u8,
        advert_int: &str,
        extra: &str,
    ) -> String {
        format!(
            "global_defs {{\n  router_id {host}\n  vrrp_version {version}\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {}\n  virtual_router_id 51\n  priority {priority}\n  \
             advert_int {advert_int}\n  virtual_ipaddress {{\n    {LAB_VIP}/24\n  }}\n{extra}}}\n",
            self.host(host).iface
        )
    }

    /// Writes `config` and starts keepalived (in the foreground, logging to its log file) on
    /// `host`.
    pub fn start_keepalived(&self, host: &str, config: &str) -> anyhow::Result<Proc> {
        let conf = self.workdir.join(format!("keepalived-{host}.conf"));
        fs::write(&conf, config)?;
        // Pid files of their own per start: a killed keepalived's children may linger as
        // zombies for a while, and keepalived refuses to start over a live-looking pid.
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let start = STARTS.fetch_add(1, Ordering::Relaxed);
        let pid = |n: &str| {
            self.workdir
                .join(format!("{host}-{n}-{start}.pid"))
                .to_string_lossy()
                .into_owned()
        };
        self.spawn(
            host,
            Path::new("keepalived"),
            &[
                "-n",
                "-l",
                "-D",
                "-f",
                &conf.to_string_lossy(),
                "-p",
                &pid("ka"),
                "-r",
                &pid("vrrp"),
            ],
            &format!("keepalived-{host}"),
        )
    }

    /// The bridge-side port of a host.
    /// Starts `tcpdump` on `host`'s bridge port, in the switch's namespace, writing the frames
    /// the host sends (ingress) that match `filter` to `file`; kill the child to stop it.
    pub fn capture_from(
        &self,
        host: &str,
        filter: &str,
        file: &Path,
    ) -> anyhow::Result<std::process::Child> {
        let child = self
            .switch
            .command("tcpdump")?
            .args(["-i", &self.port(host), "-Q", "in", "-nn", "-e", "-U", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(child)
    }

    /// The frames in a capture file, one line each (`tcpdump -r`).
    pub fn captured(&self, file: &Path) -> anyhow::Result<Vec<String>> {
        let out = run_with_timeout(
            Command::new("tcpdump")
                .args(["-r"])
                .arg(file)
                .args(["-nn", "-e"]),
            Duration::from_secs(10),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn port(&self, host: &str) -> String {
        let i = self
            .hosts
            .iter()
            .position(|h| h.name == host)
            .expect("host");
        format!("xv{}p{i}", self.tag)
    }

    /// Cuts (`up` false) or restores a host's link to the bridge.
    pub fn set_link(&self, host: &str, up: bool) -> anyhow::Result<()> {
        let port = self.port(host);
        self.switch
            .ip(&["link", "set", &port, if up { "up" } else { "down" }])
    }

    /// Replaces the bridge's filter: frames between hosts of different `groups` are dropped
    /// (a partition; empty groups: none), and `loss_percent` of all other frames at random.
    pub fn set_faults(&self, groups: &[&[&str]], loss_percent: u32) -> anyhow::Result<()> {
        let mut rules = String::from(
            "table bridge xvlab\ndelete table bridge xvlab\ntable bridge xvlab {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n",
        );
        for (g, group) in groups.iter().enumerate() {
            for (o, other) in groups.iter().enumerate() {
                if g == o {
                    continue;
                }
                for a in *group {
                    for b in *other {
                        rules.push_str(&format!(
                            "  iifname \"{}\" oifname \"{}\" drop\n",
                            self.port(a),
                            self.port(b)
                        ));
                    }
                }
            }
        }
        if loss_percent > 0 {
            rules.push_str(&format!("  numgen random mod 100 < {loss_percent} drop\n"));
        }
        rules.push_str(" }\n}\n");
        self.nft("faults.nft", &rules)
    }

    /// Loads nftables `rules` in the bridge's namespace (written to `file` in the workdir).
    fn nft(&self, file: &str, rules: &str) -> anyhow::Result<()> {
        let path = self.workdir.join(file);
        fs::write(&path, rules)?;
        let out = run_with_timeout(
            self.switch.command("nft")?.arg("-f").arg(&path),
            Duration::from_secs(10),
        )?;
        ensure!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Drops VRRP (IP protocol 112) between hosts `x` and `y` both ways, and nothing else (a
    /// firewall or security group that blocks VRRP, IGMP snooping without a querier); `None`
    /// lets it through again.
    pub fn drop_vrrp_between(&self, hosts: Option<(&str, &str)>) -> anyhow::Result<()> {
        let mut rules = String::from("table bridge xvvrrp\ndelete table bridge xvvrrp\n");
        if let Some((x, y)) = hosts {
            let (px, py) = (self.port(x), self.port(y));
            rules.push_str(&format!(
                "table bridge xvvrrp {{\n chain forward {{\n  type filter hook forward priority -1; policy accept;\n\
                   iifname \"{px}\" oifname \"{py}\" ip protocol 112 drop\n\
                   iifname \"{py}\" oifname \"{px}\" ip protocol 112 drop\n }}\n}}\n"
            ));
        }
        self.nft("vrrp.nft", &rules)
    }

    /// `xvrrp status` (the table) of the daemon on `host`.
    pub fn status_table(&self, host: &str) -> anyhow::Result<String> {
        let out = run_with_timeout(
            Command::new(&self.xvrrp).args(["status", "--interface", &self.host(host).iface]),
            Duration::from_secs(10),
        )?;
        ensure!(
            out.status.success(),
            "xvrrp status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `xvrrp status --json` of the daemon on `host`.
    pub fn status(&self, host: &str) -> anyhow::Result<serde_json::Value> {
        let out = run_with_timeout(
            Command::new(&self.xvrrp).args([
                "status",
                "--json",
                "--interface",
                &self.host(host).iface,
            ]),
            Duration::from_secs(10),
        )?;
        ensure!(
            out.status.success(),
            "xvrrp status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The lab's usual daemon config for `host`: VRID 51 for [`LAB_VIP`]/24 at `priority`,
    /// 100 ms adverts, a 200 ms heartbeat limit, starting as backup; `extra` lines are added
    /// to the instance.
    pub fn vrrp_config(&self, host: &str, priority: u8, extra: &str) -> String {
        format!(
            "interface = \"{}\"\nxdp_mode = \"native\"\nheartbeat_limit_ms = 200\n\n[[instance]]\nvrid = 51\n\
             priority = {priority}\nadvert_interval_ms = 100\nvips = [\"{LAB_VIP}/24\"]\n{extra}",
            self.host(host).iface
        )
    }

    /// Waits until the client host `from` sees exactly `host` answer for `vip`, `tries`
    /// requests in a row; how long it took. Panics after `within`.
    pub fn wait_answered_by(
        &self,
        from: &str,
        host: &str,
        vip: Ipv4Addr,
        tries: u32,
        within: Duration,
    ) -> Duration {
        let want = mac_text(&self.host(host).mac);
        let start = Instant::now();
        let ok = wait_for(within, || {
            self.arping(from, vip, tries).unwrap() == vec![want.clone(); tries as usize]
        });
        assert!(
            ok,
            "{host} ({want}) is not the one answering for {vip} within {within:?}"
        );
        start.elapsed()
    }

    /// Sends `count` ARP requests for `target` from `host`, one every `every`, and returns
    /// (sent, replies received): a fine-grained probe (iputils arping paces in whole seconds).
    pub fn arp_probe(
        &self,
        host: &str,
        target: Ipv4Addr,
        count: u32,
        every: Duration,
    ) -> anyhow::Result<(u32, u32)> {
        const PROBE: &str = r#"
import socket, struct, sys, time
iface, src_ip, target, count, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((iface, 0))
mac = s.getsockname()[4]
req = b'\xff' * 6 + mac + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(src_ip) + b'\0' * 6 + socket.inet_aton(target)
s.setblocking(False)
replies = 0
def drain():
    global replies
    while True:
        try:
            f = s.recv(128)
        except BlockingIOError:
            return
        if len(f) >= 42 and f[20:22] == b'\x00\x02' and f[28:32] == socket.inet_aton(target):
            replies += 1
start = time.monotonic()
for i in range(count):
    s.send(req)
    while time.monotonic() < start + (i + 1) * every:
        drain()
        time.sleep(0.0005)
end = time.monotonic() + 0.5
while time.monotonic() < end:
    drain()
    time.sleep(0.001)
print(count, replies)
"#;
        let h = self.host(host);
        let out = self.run(
            host,
            "python3",
            &[
                "-c",
                PROBE,
                &h.iface,
                &h.ip.to_string(),
                &target.to_string(),
                &count.to_string(),
                &every.as_secs_f64().to_string(),
            ],
            every * count + Duration::from_secs(10),
        )?;
        ensure!(
            out.status.success(),
            "arp probe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut nums = text.split_whitespace().map(str::parse::<u32>);
        match (nums.next(), nums.next()) {
            (Some(Ok(sent)), Some(Ok(got))) => Ok((sent, got)),
            _ => bail!("arp probe printed {text:?}"),
        }
    }

    /// Sends neighbour solicitations from `host` for `target` and returns the MAC addresses
    /// of every advertisement received, lowercased (empty when nobody answered).
    pub fn ndisc(&self, host: &str, target: Ipv6Addr, tries: u32) -> anyhow::Result<Vec<String>> {
        let iface = self.host(host).iface.clone();
        let out = self.run(
            host,
            "ndisc6",
            &[
                "-n",
                "-m",
                "-r",
                &tries.to_string(),
                "-w",
                "1000",
                &target.to_string(),
                &iface,
            ],
            Duration::from_secs(u64::from(tries) * 2 + 10),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once("Target link-layer address:"))
            .map(|(_, mac)| mac.trim().to_ascii_lowercase())
            .collect())
    }
}

/// Sums a counter over the CPUs of a pinned per-CPU array map, read with bpftool.
pub fn per_cpu_counter(map: &Path, index: u32, field: &str) -> anyhow::Result<u64> {
    let json = bpftool_lookup(map, &index.to_le_bytes())?;
    // With BTF, bpftool puts the decoded fields under "formatted".
    let values = json["formatted"]["values"]
        .as_array()
        .ok_or_else(|| anyhow!("no formatted per-CPU values in {json}"))?;
    let mut total = 0;
    for v in values {
        total += v["value"][field]
            .as_u64()
            .ok_or_else(|| anyhow!("no field {field} in {v}"))?;
    }
    Ok(total)
}

/// A counter of a VIP's requests (`answered`, `dropped_stale_heartbeat`, ...) in the data plane
/// pinned under `pin_dir`, summed over CPUs: the program counts requests per VIP only. Found
/// as an operator would, with bpftool: the VIP's entry names its slot in `vip_stats`.
pub fn vip_counter(pin_dir: &Path, vip: IpAddr, field: &str) -> anyhow::Result<u64> {
    let json = match vip {
        IpAddr::V4(a) => bpftool_lookup(&pin_dir.join("vips_v4"), &a.octets())?,
        IpAddr::V6(a) => bpftool_lookup(&pin_dir.join("vips_v6"), &a.octets())?,
    };
    let index = json["formatted"]["value"]["stats_index"]
        .as_u64()
        .ok_or_else(|| anyhow!("no stats_index in {json}"))?;
    per_cpu_counter(&pin_dir.join("vip_stats"), index as u32, field)
}

/// `bpftool -j map lookup pinned MAP key BYTES..`, parsed.
fn bpftool_lookup(map: &Path, key: &[u8]) -> anyhow::Result<serde_json::Value> {
    let key: Vec<String> = key.iter().map(u8::to_string).collect();
    let out = run_with_timeout(
        Command::new("bpftool")
            .args(["-j", "map", "lookup", "pinned"])
            .arg(map)
            .arg("key")
            .args(&key),
        Duration::from_secs(10),
    )?;
    ensure!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.xdp_links.lock().map(|mut l| l.clear()).ok();
        // A daemon killed by a failed test cannot unpin its maps: remove what it left.
        for (i, host) in self.hosts.iter().enumerate() {
            for iface in [host.iface.clone(), format!("xv{}n{i}", self.tag)] {
                let pins = Path::new(PIN_ROOT).join(&iface);
                if pins.exists() {
                    let _ = fs::remove_dir_all(&pins);
                }
                for ext in ["sock", "resume"] {
                    let _ = fs::remove_file(Path::new("/run/xvrrp").join(format!("{iface}.{ext}")));
                }
            }
        }
        self.hosts.clear();
        if std::env::var_os("XVRRP_KEEP_LAB_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.workdir);
        }
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`, the way arping and ndisc6 print it (lowercased).
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC addresses in iputils arping's reply lines ("Unicast reply from A [MAC]  0.1ms"),
/// lowercased.
pub fn parse_arping(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let start = l.find('[')?;
            let end = l[start..].find(']')? + start;
            Some(l[start + 1..end].to_ascii_lowercase())
        })
        .collect()
}

/// Waits until xvrrp on `host` logs that it runs (as `log` reads its output); an error with
/// the log if it stops first or takes more than 20 s. Pins may be left by a killed daemon:
/// readiness is the daemon's own word.
fn wait_running(proc: &mut Proc, host: &str, log: impl Fn(&Proc) -> String) -> anyhow::Result<()> {
    let up = wait_for(Duration::from_secs(20), || {
        log(proc).contains("xvrrp running") || !proc.running()
    });
    ensure!(
        up && proc.running(),
        "xvrrp did not come up on {host}; log:\n{}",
        log(proc)
    );
    Ok(())
}

/// A process's output read from a pipe by a thread of its own, until [`PipedLog::stop`].
pub struct PipedLog {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reading: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PipedLog {
    fn read(mut pipe: fs::File) -> Self {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (t, r) = (text.clone(), reading.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                if !r.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                match std::io::Read::read(&mut pipe, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => t
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Self { text, reading }
    }

    /// What was read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Stops reading (after at most the read under way): the writer's pipe fills.
    pub fn stop(&self) {
        self.reading.store(false, Ordering::Relaxed);
    }

    /// Reads again.
    pub fn resume(&self) {
        self.reading.store(true, Ordering::Relaxed);
    }
}

/// A process started in the lab, killed on drop if still running.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the process wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` and waits for the process to exit, at most `timeout`.
    pub fn stop(
        &mut self,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> anyhow::Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("already stopped"))?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("process {pid} did not exit within {timeout:?} of {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An OwnedFd from a raw syscall result.
fn owned_fd(ret: libc::c_long, what: &str) -> anyhow::Result<OwnedFd> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_owned());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// The times (seconds, from tcpdump) of the adverts for `vrid` in a capture.
pub fn advert_times(lines: &[String], vrid: u8) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| l.contains(&format!("vrid {vrid},")))
        .filter_map(|l| {
            // HH:MM:SS.ffffff
            let t = l.split_whitespace().next()?;
            let mut parts = t.split(':');
            let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
            Some(
                h.parse::<f64>().ok()? * 3600.0
                    + m.parse::<f64>().ok()? * 60.0
                    + s.parse::<f64>().ok()?,
            )
        })
        .collect()
}

/// While a slow operation ran on `host`'s daemon: the adverts of `vrid` (instance `name`, in
/// `capture`) kept their 100 ms (none over 250 ms apart, at least `min` seen), every ARP
/// request for its VIP (`answers`, at least 10) was answered by `host`, and the instance is
/// master with no request dropped for a stale heartbeat. Prints the longest gap.
pub fn assert_kept_advertising(
    lab: &Lab,
    host: &str,
    capture: &Path,
    (name, vrid): (&str, u8),
    min: usize,
    answers: &[String],
) {
    let times = advert_times(&lab.captured(capture).expect("capture"), vrid);
    assert!(times.len() > min, "{times:?}");
    let worst = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    println!(
        "{name}'s adverts: {} seen, longest gap {:.0} ms",
        times.len(),
        worst * 1000.0
    );
    assert!(
        worst < 0.25,
        "an advert of {name} was {:.0} ms late",
        worst * 1000.0
    );
    let mac = mac_text(&lab.host(host).mac);
    assert!(
        answers.len() >= 10 && answers.iter().all(|m| *m == mac),
        "{answers:?}"
    );
    let st = lab.status(host).expect("status");
    let inst = st["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no instance {name}: {st}"));
    assert_eq!(inst["state"], "master", "{st}");
    assert_eq!(inst["data_plane"]["dropped_stale_heartbeat"], 0, "{st}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arping_output_is_parsed() {
        let out = "ARPING 192.0.2.100 from 192.0.2.3 xv1\n\
                   Unicast reply from 192.0.2.100 [02:00:00:00:00:01]  0.058ms\n\
                   Unicast reply from 192.0.2.100 [00:00:5E:00:01:33]  0.040ms\n\
                   Sent 2 probes (1 broadcast(s))\nReceived 2 response(s)\n";
        assert_eq!(
            parse_arping(out),
            vec!["02:00:00:00:00:01", "00:00:5e:00:01:33"]
        );
        assert!(parse_arping("Sent 3 probes\nReceived 0 response(s)\n").is_empty());
    }

    #[test]
    fn tags_are_unique_and_fit_interface_names() {
        let a = unique_tag();
        let b = unique_tag();
        assert_ne!(a, b);
        assert!(format!("xv{a}h99").len() <= 15);
    }
}

//! Tracked scripts (keepalived's vrrp_script): each runs every interval with `/bin/sh -c` in a
//! process group of its own; a run that outlives its timeout has its whole group killed and
//! counts as a failure; every child is reaped. Rise and fall turn runs into state changes,
//! which go to the event loop as engine inputs.

pub mod mysql;
pub mod process;
pub mod scripts;

use std::{process::Stdio, time::Duration};

#[cfg(test)]
use std::os::unix::process::CommandExt as _;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::TrackScript,
    engine::{TrackId, TrackInput},
};

/// keepalived's rise / fall: `fall` failures in a row make a good object failed, `rise`
/// successes in a row make a failed one good again.
#[derive(Clone, Debug)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    streak: u32,
}

impl RiseFall {
    pub fn new(rise: u32, fall: u32, initially_up: bool) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: initially_up,
            streak: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one result; returns the new state when it flips.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= if self.up { self.fall } else { self.rise } {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

/// Runs the script once: true if it exited 0 within its timeout.
pub async fn run_once(t: &TrackScript) -> bool {
    run_command(&t.name, &t.script, &[], Duration::from_millis(t.timeout_ms)).await
}

/// The environment variables that hold xvrrp's secrets (MySQL passwords, the write lease's
/// key): scripts never see them.
static SECRET_ENV: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Names the environment variables holding secrets, which [`run_command`] removes from every
/// script's environment (tracked and notify scripts).
pub fn hide_from_scripts(names: impl IntoIterator<Item = String>) {
    if let Ok(mut secret) = SECRET_ENV.lock() {
        secret.extend(names);
        secret.sort();
        secret.dedup();
    }
}

/// The user and group scripts run as (`script_user`), if not xvrrp's own.
static SCRIPT_USER: std::sync::Mutex<Option<(u32, u32)>> = std::sync::Mutex::new(None);

/// Sets who [`run_command`] runs scripts as (None: xvrrp's own user).
pub fn run_scripts_as(user: Option<&crate::scripts::ScriptUser>) {
    if let Ok(mut u) = SCRIPT_USER.lock() {
        *u = user.map(|u| (u.uid, u.gid));
    }
}

/// Runs `/bin/sh -c command` with `args` as $1... in a process group of its own; true if it
/// exited 0 within `timeout`. The group is killed afterwards (a timed-out command, and anything
/// it left running), and the child is always reaped. The variables holding xvrrp's secrets are
/// removed from its environment. `what` names it in logs.
pub async fn run_command(what: &str, command: &str, args: &[String], timeout: Duration) -> bool {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    if let Ok(secret) = SECRET_ENV.lock() {
        for name in secret.iter() {
            cmd.env_remove(name);
        }
    }
    if let Ok(Some((uid, gid))) = SCRIPT_USER.lock().map(|u| *u) {
        // Supplementary groups are dropped with the change of user.
        cmd.uid(uid).gid(gid);
    }
    cmd.arg("-c")
        .arg(command)
        .arg("xvrrp")
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            warn!(what, error = %err, "cannot run the command");
            return false;
        }
    };
    let pgid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let result = tokio::time::timeout(timeout, child.wait()).await;
    if let Some(pgid) = pgid {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    match result {
        Ok(Ok(status)) => status.success(),
        Ok(Err(err)) => {
            warn!(what, error = %err, "waiting for the command failed");
            false
        }
        Err(_) => {
            warn!(
                what,
                timeout_ms = timeout.as_millis() as u64,
                "command timed out; its process group was killed"
            );
            let _ = child.wait().await;
            false
        }
    }
}

/// Runs `t` forever, sending (name, Up/Down) on every change of its rise/fall state, from
/// `initially_up` (what the engine starts from: up, or what a hitless restart carried over).
pub fn spawn(
    t: TrackScript,
    initially_up: bool,
    tx: mpsc::UnboundedSender<(TrackId, TrackInput)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut state = RiseFall::new(t.rise, t.fall, initially_up);
        let mut ticker = tokio::time::interval(Duration::from_millis(t.interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let ok = run_once(&t).await;
            if let Some(up) = state.record(ok) {
                info!(track = %t.name, state = if up { "up" } else { "down" }, "tracked script changed");
                if tx
                    .send((
                        TrackId::Script(t.name.clone()),
                        if up { TrackInput::Up } else { TrackInput::Down },
                    ))
                    .is_err()
                {
                    return;
                }
            }
        }
    })
}

/// keepalived's start of tracked scripts: each runs once, all at once, and its first result
/// counts as it is (no rise or fall); a script with `init_fail` starts failed without waiting.
/// The instances start from these, so none is promoted before its scripts have reported.
pub async fn first_results(
    scripts: &[TrackScript],
) -> std::collections::HashMap<TrackId, TrackInput> {
    let runs = scripts.iter().map(|t| async move {
        let ok = !t.init_fail && run_once(t).await;
        info!(track = %t.name, state = if ok { "up" } else { "down" }, init_fail = t.init_fail, "tracked script's first result");
        let input = if ok { TrackInput::Up } else { TrackInput::Down };
        (TrackId::Script(t.name.clone()), input)
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

/// The number in a tracked file: its first whitespace-separated word as an integer; a missing
/// file or anything else reads as 0 (keepalived's behaviour).
pub fn read_number(path: &std::path::Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse().ok()))
        .unwrap_or(0)
}

/// Reads `t` every interval, sending (name, Value(n)) whenever the number changes (and once at
/// the start).
pub fn spawn_file(
    t: crate::config::TrackFile,
    tx: mpsc::UnboundedSender<(TrackId, TrackInput)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(t.interval_ms));
        loop {
            ticker.tick().await;
            let n = read_number(&t.path);
            if last != Some(n) {
                info!(track = %t.name, value = n, "tracked file changed");
                last = Some(n);
                if tx
                    .send((TrackId::File(t.name.clone()), TrackInput::Value(n)))
                    .is_err()
                {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_needs_consecutive_failures_and_rise_consecutive_successes() {
        let mut rf = RiseFall::new(2, 3, true);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(true), None, "a success resets the streak");
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), Some(false));
        assert!(!rf.is_up());
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(true), Some(true));
    }

    #[test]
    fn a_tracked_file_reads_its_first_number_or_zero() {
        let dir = std::env::temp_dir().join(format!("xvrrp-track-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("n");
        assert_eq!(read_number(&f), 0, "missing");
        std::fs::write(&f, "-42\n").unwrap();
        assert_eq!(read_number(&f), -42);
        std::fs::write(&f, "  17 extra words").unwrap();
        assert_eq!(read_number(&f), 17);
        std::fs::write(&f, "nonsense").unwrap();
        assert_eq!(read_number(&f), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut rf = RiseFall::new(1, 1, true);
        assert_eq!(rf.record(false), Some(false));
        assert_eq!(rf.record(true), Some(true));
    }

    fn script(s: &str, timeout_ms: u64) -> TrackScript {
        TrackScript {
            name: "t".into(),
            script: s.into(),
            interval_ms: 100,
            timeout_ms,
            rise: 1,
            fall: 1,
            weight: 0,
            weight_reverse: false,
            init_fail: false,
        }
    }

    #[tokio::test]
    async fn first_results_count_at_once_and_init_fail_starts_down_without_running() {
        let good = TrackScript {
            name: "good".into(),
            ..script("exit 0", 2_000)
        };
        let bad = TrackScript {
            name: "bad".into(),
            fall: 3,
            ..script("exit 1", 2_000)
        };
        let never = TrackScript {
            name: "never".into(),
            init_fail: true,
            ..script("sleep 5", 10_000)
        };
        let started = std::time::Instant::now();
        let r = first_results(&[good, bad, never]).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "init_fail ran the script"
        );
        assert_eq!(r[&"good".into()], TrackInput::Up);
        assert_eq!(
            r[&"bad".into()],
            TrackInput::Down,
            "fall 3 does not delay the first result"
        );
        assert_eq!(r[&"never".into()], TrackInput::Down);
    }

    #[tokio::test]
    async fn exit_status_is_the_health() {
        assert!(run_once(&script("exit 0", 2_000)).await);
        assert!(!run_once(&script("exit 3", 2_000)).await);
        assert!(!run_once(&script("/nonexistent/command", 2_000)).await);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group_and_leaves_no_zombie() {
        // A duration nothing else sleeps for marks the script's processes in ps.
        let marker = format!("sleep {}", 3000 + std::process::id() % 1000);
        let started = std::time::Instant::now();
        // The script and a background grandchild both sleep; both must be gone.
        let ok = run_once(&script(&format!("{marker} & {marker}"), 300)).await;
        assert!(!ok);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The check below can see such processes: ones started the same way are visible.
        let running = || {
            let ps = std::process::Command::new("ps")
                .args(["-eo", "args"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter(|l| l.trim() == marker)
                .count()
        };
        let mut probe = std::process::Command::new("sh")
            .args(["-c", &format!("{marker} & {marker}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = running();
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(probe.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = probe.wait();
        assert_eq!(seen, 2, "the probe's sleeps are not visible to the check");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ps = std::process::Command::new("ps")
            .args(["-eo", "stat,ppid,args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert_eq!(running(), 0, "the script survived:\n{ps}");
        let me = std::process::id().to_string();
        let zombies: Vec<&str> = ps
            .lines()
            .filter(|l| l.starts_with('Z') && l.split_whitespace().nth(1) == Some(me.as_str()))
            .collect();
        assert!(zombies.is_empty(), "zombies: {zombies:?}");
    }

    #[tokio::test]
    async fn scripts_never_see_the_variables_that_hold_secrets() {
        // SAFETY: these variables are this test's own; nothing else reads them.
        unsafe {
            std::env::set_var("XVRRP_TEST_HIDDEN_SECRET", "s3cret");
            std::env::set_var("XVRRP_TEST_VISIBLE_VALUE", "plain");
        }
        hide_from_scripts(["XVRRP_TEST_HIDDEN_SECRET".to_owned()]);
        let t = Duration::from_secs(5);
        assert!(
            run_command("t", "test -z \"$XVRRP_TEST_HIDDEN_SECRET\"", &[], t).await,
            "the secret is removed"
        );
        assert!(
            run_command("t", "test \"$XVRRP_TEST_VISIBLE_VALUE\" = plain", &[], t).await,
            "the rest of the environment is passed"
        );
    }
}

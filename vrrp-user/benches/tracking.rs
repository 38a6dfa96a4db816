//! Tracked-process benchmarks (run by `cargo xtask bench`); prints a table and writes
//! target/bench/tracking.json.
//!
//! 1. One read of /proc as the tracking task makes it (every process's stat; with a track on
//!    the command line, every cmdline too): the median of 200 reads, and what it costs of one
//!    core at the default scan interval (1 s).
//! 2. Exit to report: a tracked process is SIGKILLed; the time until the task reports the track
//!    down. The scan interval is 60 s, so only the pidfd can see the exit in time: 20 trials,
//!    median and max.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vrrp_user::{config::TrackProcess, engine::TrackInput, process};

fn track(process: &str, full_command: bool) -> TrackProcess {
    let mut t = TrackProcess::new("bench", process);
    t.full_command = full_command;
    t.scan_interval_ms = 60_000;
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn scan_cost(tracks: &[TrackProcess]) -> Duration {
    let _ = process::scan(tracks);
    median(
        (0..200)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(process::scan(tracks));
                t.elapsed()
            })
            .collect(),
    )
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(vrrp_user::engine::TrackId, TrackInput)>,
) -> TrackInput {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the task reported nothing within 5 s")
        .expect("the task ended")
        .1
}

fn main() {
    let processes = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    let by_name = scan_cost(&[track("xvrrp-bench-none", false)]);
    let by_line = scan_cost(&[track("/nonexistent/xvrrp-bench", true)]);
    // Percent of one core when it runs once a second.
    let share = |d: Duration| d.as_secs_f64() * 100.0;

    // A process with a name of its own: sleep, run through a symlink of that name.
    let dir = std::env::temp_dir().join(format!("xvrrp-bench-track-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let name = format!("xvb{}", std::process::id());
    let link = dir.join(&name);
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sleep");
    let _ = std::os::unix::fs::symlink(sleep, &link);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exits: Vec<Duration> = runtime.block_on(async {
        let mut took = Vec::new();
        for _ in 0..20 {
            let mut child = std::process::Command::new(&link)
                .arg("600")
                .spawn()
                .expect("start the tracked process");
            let (tx, mut rx) = mpsc::unbounded_channel();
            let task = process::spawn(vec![track(&name, false)], tx);
            assert_eq!(next(&mut rx).await, TrackInput::Up);
            let killed = Instant::now();
            let _ = child.kill();
            assert_eq!(next(&mut rx).await, TrackInput::Down);
            took.push(killed.elapsed());
            let _ = child.wait();
            task.abort();
        }
        took
    });
    let _ = std::fs::remove_dir_all(&dir);
    let max = *exits.iter().max().expect("trials");
    let exit = median(exits.clone());

    println!("tracked processes ({processes} processes running):");
    println!(
        "  one read of /proc, by name             {:>8.1} us  ({:.3}% of a core at the default 1 s interval)",
        by_name.as_secs_f64() * 1e6,
        share(by_name)
    );
    println!(
        "  one read of /proc, by command line     {:>8.1} us  ({:.3}% of a core at 1 s)",
        by_line.as_secs_f64() * 1e6,
        share(by_line)
    );
    println!(
        "  SIGKILL -> track reported down (pidfd)  median {:.0} us, max {:.0} us (20 trials; /proc read every 60 s)",
        exit.as_secs_f64() * 1e6,
        max.as_secs_f64() * 1e6
    );
    let json = serde_json::json!({
        "processes_running": processes,
        "scan_by_name_us": by_name.as_secs_f64() * 1e6,
        "scan_by_command_line_us": by_line.as_secs_f64() * 1e6,
        "exit_to_report_us": {
            "median": exit.as_secs_f64() * 1e6,
            "max": max.as_secs_f64() * 1e6,
            "trials": exits.len(),
        },
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&out);
    std::fs::write(
        out.join("tracking.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("writing target/bench/tracking.json");
    println!("written: target/bench/tracking.json");
}

//! What a state change sets off besides the engine's own actions:
//!
//! - notify scripts, keepalived's: `notify_master` / `notify_backup` / `notify_fault` /
//!   `notify_stop` for the new state, then the generic `notify` with `INSTANCE <name> <STATE>
//!   <priority>` as arguments. Run in order per instance (a queue each), each with a timeout
//!   that kills its process group. A sync group's own scripts likewise, when the group as a
//!   whole changes state (`GROUP <name> <STATE> 0` for the generic one);
//! - an ordered JSON-lines event stream on a unix socket (what keepalived's notify_fifo is for):
//!   every connected reader gets one line per state change.

use std::{collections::HashMap, time::Duration};

use serde::Serialize;
use tokio::{
    io::AsyncWriteExt as _,
    sync::{broadcast, mpsc},
};
use tracing::{info, warn};

use crate::{config::Config, track::run_command};

/// One line of the event stream.
#[derive(Clone, Debug, Serialize)]
pub struct StateEvent {
    /// Unix time, milliseconds.
    pub time_ms: u128,
    pub instance: String,
    pub vrid: u8,
    pub family: &'static str,
    pub old: String,
    pub new: String,
    pub reason: String,
    pub priority: u8,
}

/// The commands of one instance, by when they run.
#[derive(Clone, Debug, Default)]
struct Commands {
    master: Option<String>,
    backup: Option<String>,
    fault: Option<String>,
    stop: Option<String>,
    generic: Option<String>,
    timeout: Duration,
}

pub struct Hooks {
    queues: HashMap<String, mpsc::UnboundedSender<StateEvent>>,
    /// The sync groups' queues, by group name.
    group_queues: HashMap<String, mpsc::UnboundedSender<StateEvent>>,
    runners: Vec<tokio::task::JoinHandle<()>>,
    /// The longest a queue can take to drain what is in it at shutdown.
    drain_bound: Duration,
    events: broadcast::Sender<String>,
}

impl Hooks {
    /// Starts a runner per instance that has notify commands, and the event stream's listener.
    pub fn start(config: &Config) -> std::io::Result<Self> {
        let (events, _) = broadcast::channel(1024);
        let mut queues = HashMap::new();
        let mut runners = Vec::new();
        let mut drain_bound = Duration::ZERO;
        for inst in &config.instances {
            let (tx, runner, bound) = spawn_queue(&inst.name, &inst.notify, "INSTANCE");
            drain_bound = drain_bound.max(bound);
            runners.push(runner);
            queues.insert(inst.name.clone(), tx);
        }
        let mut group_queues = HashMap::new();
        for group in &config.sync_groups {
            let (tx, runner, bound) = spawn_queue(&group.name, &group.notify, "GROUP");
            drain_bound = drain_bound.max(bound);
            runners.push(runner);
            group_queues.insert(group.name.clone(), tx);
        }
        if let Some(path) = &config.event_socket {
            let listener = crate::control::bind(path)?;
            tokio::spawn(serve(listener, events.clone()));
        }
        Ok(Self {
            queues,
            group_queues,
            runners,
            drain_bound,
            events,
        })
    }

    /// After a reload: instances that `started` get their (new) commands; instances no longer
    /// configured lose their queue once it has run what it holds.
    pub fn reconfigure(&mut self, config: &Config, started: &[String]) {
        self.queues
            .retain(|name, _| config.instances.iter().any(|i| i.name == *name));
        for inst in config
            .instances
            .iter()
            .filter(|i| started.contains(&i.name))
        {
            let (tx, runner, bound) = spawn_queue(&inst.name, &inst.notify, "INSTANCE");
            self.drain_bound = self.drain_bound.max(bound);
            self.runners.push(runner);
            self.queues.insert(inst.name.clone(), tx);
        }
    }

    /// Lets the queued notify scripts run to the end (bounded by their timeouts).
    pub async fn finish(mut self) {
        self.queues.clear();
        self.group_queues.clear();
        let runners = std::mem::take(&mut self.runners);
        let all = async {
            for r in runners {
                let _ = r.await;
            }
        };
        if tokio::time::timeout(self.drain_bound, all).await.is_err() {
            warn!("notify scripts still queued at shutdown were abandoned");
        }
    }

    /// A state change: queued for the instance's scripts, and sent to every reader.
    pub fn state_changed(&self, event: StateEvent) {
        if let Ok(line) = serde_json::to_string(&event) {
            // No reader is not an error.
            let _ = self.events.send(line + "\n");
        }
        if let Some(q) = self.queues.get(&event.instance) {
            let _ = q.send(event);
        }
    }

    /// A sync group as a whole changed state (`new`: master, backup, fault, or init on a stop):
    /// queued for the group's scripts.
    pub fn group_changed(&self, group: &str, new: &str) {
        if let Some(q) = self.group_queues.get(group) {
            let _ = q.send(StateEvent {
                time_ms: unix_ms(),
                instance: group.to_owned(),
                vrid: 0,
                family: "",
                old: String::new(),
                new: new.to_owned(),
                reason: "sync_group".to_owned(),
                priority: 0,
            });
        }
    }
}

/// Starts the notify queue of an instance or a sync group (`kind`: INSTANCE or GROUP): its
/// sender, its runner, and how long draining it can take at shutdown (it holds at most the
/// last changes: stop, two commands, and one more).
fn spawn_queue(
    name: &str,
    notify: &crate::config::Notify,
    kind: &'static str,
) -> (
    mpsc::UnboundedSender<StateEvent>,
    tokio::task::JoinHandle<()>,
    Duration,
) {
    let commands = Commands {
        master: notify.master.clone(),
        backup: notify.backup.clone(),
        fault: notify.fault.clone(),
        stop: notify.stop.clone(),
        generic: notify.generic.clone(),
        timeout: Duration::from_millis(notify.timeout_ms),
    };
    let bound = commands.timeout * 4;
    let (tx, rx) = mpsc::unbounded_channel();
    (
        tx,
        tokio::spawn(run_queue(name.to_owned(), kind, commands, rx)),
        bound,
    )
}

/// Runs one instance's (or sync group's) notify commands, one state change after the other.
async fn run_queue(
    name: String,
    kind: &'static str,
    commands: Commands,
    mut rx: mpsc::UnboundedReceiver<StateEvent>,
) {
    while let Some(e) = rx.recv().await {
        let specific = match e.new.as_str() {
            "master" => &commands.master,
            "backup" => &commands.backup,
            "fault" => &commands.fault,
            "init" => &commands.stop,
            _ => &None,
        };
        let state = if e.new == "init" {
            "STOP".to_owned()
        } else {
            e.new.to_uppercase()
        };
        if let Some(cmd) = specific {
            let ok = run_command(&format!("notify_{}", e.new), cmd, &[], commands.timeout).await;
            info!(kind, name = %name, state = %e.new, ok, "notify script ran");
        }
        if let Some(cmd) = &commands.generic {
            let args = [kind.to_owned(), name.clone(), state, e.priority.to_string()];
            // As keepalived runs it: the four words after the command's own arguments (a
            // script path gets them as $1-$4).
            let cmd = format!("{cmd} \"$@\"");
            let ok = run_command("notify", &cmd, &args, commands.timeout).await;
            info!(kind, name = %name, state = %e.new, ok, "generic notify script ran");
        }
    }
}

/// Accepts readers of the event stream; each gets every line from its connection on.
async fn serve(listener: tokio::net::UnixListener, events: broadcast::Sender<String>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let mut rx = events.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(line) => {
                        if stream.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(
                            lost = n,
                            "an event-stream reader is too slow; events were dropped for it"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

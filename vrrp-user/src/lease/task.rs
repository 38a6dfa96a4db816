//! The write lease on a UDP socket: the daemon's node ([`spawn`]) and `xvrrp witness`
//! ([`run_witness`]).
//!
//! ```text
//!  daemon loop ──want (priority of the master instances that fence, or none)──▶ ┐
//!  fencers ─────fenced (every fenced server read back read_only, or down)─────▶ │ node task ◀─UDP─▶ peer, witness
//!  fencers ◀────held (writes may be enabled)─────────────────────────────────── │
//!  engine ◀─────track "write_lease" Down while blocked (yielded to a stronger holder) ┘
//! ```

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::watch};
use tracing::{info, warn};

use crate::engine::TrackId;

use super::{
    node::{Dest, Node, NodeConfig, Output},
    voter::Voter,
    wire::{self, NodeId},
};
use crate::{
    config::WriteLease,
    engine::{Time, TrackInput},
};

/// The engine track a blocked node's instances follow (weight 0: Fault while blocked).
pub const TRACK: crate::engine::TrackId = crate::engine::TrackId::WriteLease;

/// What `xvrrp status` shows of the lease.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LeaseStatus {
    /// This node's address and port.
    pub node: String,
    pub peer: String,
    /// None: no witness (a true partition can give both nodes the lease).
    pub witness: Option<String>,
    /// Whether this node holds the lease (its servers may be writable).
    pub held: bool,
    /// How long the lease is still held on this node's clock, ms.
    pub held_for_ms: Option<u64>,
    /// Whether this node is a candidate (some instance that fences is master).
    pub candidate: bool,
    /// Whether this node yielded to a stronger holder (its instances are in Fault).
    pub blocked: bool,
    /// Who holds this node's own vote, and for how long more (ms).
    pub own_vote: Option<(String, u64)>,
    /// The priority that vote was granted at.
    #[serde(default)]
    pub own_vote_priority: u8,
    /// Datagrams dropped: bad length, magic or authentication.
    pub dropped: u64,
}

/// The daemon's side of the lease.
pub struct LeaseHandle {
    /// The claim's priority while some instance that fences is master.
    pub want: watch::Sender<Option<u8>>,
    /// True while every fenced server is read back read_only (or down): only then is the
    /// lease released.
    pub fenced: watch::Sender<bool>,
    /// Whether the lease is held.
    pub held: watch::Receiver<bool>,
    /// Counts the times a weaker master asked for the lease this node holds (the daemon
    /// announces the VIPs again).
    pub contested: watch::Receiver<u64>,
    pub status: Arc<Mutex<LeaseStatus>>,
}

/// The wall clock in microseconds: a restarted node's counters start above its last run's.
fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// Binds the node's socket and runs it; track changes go to `tracks`. `resumed`: the own
/// vote a daemon stopping for a hitless restart left.
pub fn spawn(
    cfg: &WriteLease,
    guard_ms: u32,
    now: fn() -> Time,
    tracks: tokio::sync::mpsc::UnboundedSender<(TrackId, TrackInput)>,
    resumed: Option<super::voter::Grant>,
) -> anyhow::Result<LeaseHandle> {
    let std_socket = std::net::UdpSocket::bind(cfg.listen)
        .with_context(|| format!("binding the write lease's socket {}", cfg.listen))?;
    std_socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_socket)?;
    let node_cfg = NodeConfig {
        me: NodeId::new(cfg.listen.ip()),
        peer: NodeId::new(cfg.peer.ip()),
        witness: cfg.witness.map(|w| NodeId::new(w.ip())),
        lease_ms: cfg.lease_ms,
        guard_ms,
    };
    if cfg.witness.is_none() {
        warn!(
            peer = %cfg.peer,
            "write lease without a witness: a node that cannot hear its peer holds the lease alone, so a partition between the two can make both servers writable (set write_lease.witness)"
        );
    }
    let (want, want_rx) = watch::channel(None);
    let (fenced, fenced_rx) = watch::channel(true);
    let (held_tx, held) = watch::channel(false);
    let (contested_tx, contested) = watch::channel(0u64);
    let status = Arc::new(Mutex::new(LeaseStatus {
        node: cfg.listen.to_string(),
        peer: cfg.peer.to_string(),
        witness: cfg.witness.map(|w| w.to_string()),
        ..LeaseStatus::default()
    }));
    let epoch = (Instant::now(), now());
    let task = Task {
        socket,
        key: cfg.key.expose().as_bytes().to_vec(),
        peer: cfg.peer,
        witness: cfg.witness,
        held: held_tx,
        contested: contested_tx,
        tracks,
        shared: status.clone(),
        dropped: 0,
        now,
        epoch,
    };
    let node = Node::new(node_cfg, now(), first_seq(), resumed);
    tokio::spawn(task.run(node, want_rx, fenced_rx));
    Ok(LeaseHandle {
        want,
        fenced,
        held,
        contested,
        status,
    })
}

/// The lease's owner stopped listening: the task ends.
struct Closed;

/// The task that runs a node of the lease: its socket, and where its outputs go.
struct Task {
    socket: UdpSocket,
    key: Vec<u8>,
    peer: std::net::SocketAddr,
    witness: Option<std::net::SocketAddr>,
    held: watch::Sender<bool>,
    contested: watch::Sender<u64>,
    tracks: tokio::sync::mpsc::UnboundedSender<(TrackId, TrackInput)>,
    shared: Arc<Mutex<LeaseStatus>>,
    /// Datagrams dropped (bad MAC, malformed).
    dropped: u64,
    now: fn() -> Time,
    /// The node's clock against the monotonic clock.
    epoch: (Instant, Time),
}

impl Task {
    async fn run(
        mut self,
        mut node: Node,
        mut want_rx: watch::Receiver<Option<u8>>,
        mut fenced_rx: watch::Receiver<bool>,
    ) {
        let now = self.now;
        let mut buf = [0u8; 256];
        let mut last_want = None;
        loop {
            // Released only once the servers are fenced; until then the node keeps its grants
            // with a claim of priority 0: it neither yields (its server may still be
            // writable) nor keeps a real candidate out of the election.
            let want = *want_rx.borrow();
            let effective = match want {
                Some(p) => Some(p),
                None if !*fenced_rx.borrow() => Some(0),
                None => None,
            };
            if effective != last_want {
                node.set_want(now(), effective);
                last_want = effective;
            }
            if self.outputs(&mut node).is_err() {
                return;
            }
            self.publish(&node, want.is_some());
            let (instant, time) = self.epoch;
            let deadline = node
                .poll_timeout()
                .map(|t| instant + Duration::from_micros(t.since(time)));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, src)) = r else { continue };
                    self.on_datagram(&mut node, &buf[..n], src);
                }
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    node.handle_timeout(now());
                    tracing::trace!(blocked = node.blocked(), held = node.held(), "write lease timer");
                }
                r = want_rx.changed() => if r.is_err() { return },
                r = fenced_rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// Carries out what the node asks: messages out, and its state to the daemon.
    fn outputs(&self, node: &mut Node) -> Result<(), Closed> {
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send(dest, msg) => {
                    let to = match dest {
                        Dest::Peer => Some(self.peer),
                        Dest::Witness => self.witness,
                    };
                    if let Some(to) = to {
                        let _ = self.socket.try_send_to(&wire::encode(&msg, &self.key), to);
                    }
                }
                Output::Held(h) => {
                    info!(
                        held = h,
                        "write lease {}",
                        if h { "held" } else { "not held" }
                    );
                    let _ = self.held.send(h);
                }
                Output::Contested => {
                    info!("write lease contested by a weaker master: announcing the VIPs again");
                    self.contested.send_modify(|n| *n += 1);
                }
                Output::Blocked(b) => {
                    if b {
                        warn!(
                            "write lease: yielded to a stronger holder; instances that fence stay in Fault while it holds"
                        );
                    } else {
                        info!("write lease: no other holder any more; instances may run again");
                    }
                    let input = if b { TrackInput::Down } else { TrackInput::Up };
                    if self.tracks.send((TRACK, input)).is_err() {
                        return Err(Closed);
                    }
                }
            }
        }
        Ok(())
    }

    /// The node's state for `xvrrp status` and the metrics.
    fn publish(&self, node: &Node, candidate: bool) {
        if let Ok(mut s) = self.shared.lock() {
            let t = (self.now)();
            s.held = node.held();
            s.held_for_ms = node.held_until().map(|u| u.since(t) / 1_000);
            s.candidate = candidate;
            s.blocked = node.blocked();
            let own = node.own_grant(t);
            s.own_vote = own.map(|g| (g.to.to_string(), g.until.since(t) / 1_000));
            s.own_vote_priority = own.map_or(0, |g| g.priority);
            s.dropped = self.dropped;
        }
    }

    /// A datagram: handed to the node if it authenticates (answered where it came from),
    /// dropped and counted otherwise.
    fn on_datagram(&mut self, node: &mut Node, bytes: &[u8], src: std::net::SocketAddr) {
        match wire::decode(bytes, &self.key) {
            Ok(msg) => {
                let dest = if src == self.peer {
                    Some(Dest::Peer)
                } else if Some(src) == self.witness {
                    Some(Dest::Witness)
                } else {
                    None
                };
                if let Some(answer) = node.handle((self.now)(), dest, &msg) {
                    let _ = self
                        .socket
                        .try_send_to(&wire::encode(&answer, &self.key), src);
                }
            }
            Err(err) => {
                self.dropped += 1;
                warn!(%src, error = %err, "write lease: datagram dropped");
            }
        }
    }
}

/// `xvrrp witness`: one vote, granted to one node at a time, until the process ends.
pub async fn run_witness(
    listen: SocketAddr,
    key: Vec<u8>,
    max_lease_ms: u32,
    now: fn() -> Time,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let mut voter = Voter::new(NodeId::new(listen.ip()), now(), max_lease_ms, None);
    info!(%listen, max_lease_ms, "xvrrp witness running (granting nothing for the first lease time)");
    let mut buf = [0u8; 256];
    let mut holder = None;
    loop {
        let (n, src) = socket.recv_from(&mut buf).await?;
        let msg = match wire::decode(&buf[..n], &key) {
            Ok(m) => m,
            Err(err) => {
                warn!(%src, error = %err, "datagram dropped");
                continue;
            }
        };
        let t = now();
        if let Some(answer) = voter.handle(t, &msg) {
            let _ = socket.try_send_to(&wire::encode(&answer, &key), src);
        }
        let current = voter.current(t).map(|g| g.to);
        if current != holder {
            match current {
                Some(to) => info!(holder = %to, "vote granted"),
                None => info!("vote free"),
            }
            holder = current;
        }
    }
}

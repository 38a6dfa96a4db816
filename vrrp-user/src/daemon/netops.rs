//! The netlink calls the loop asks for (VIPs and routes added and removed, virtual-MAC
//! interfaces brought up or down) run here, in one task of their own, in the order asked,
//! each bounded by the netlink timeout; each result comes back to the loop as an input. A
//! kernel slow to answer (the RTNL lock held by someone else) then delays the address
//! change only: adverts, the heartbeat and every other input go on meanwhile.
//!
//! One queue keeps the order the engine wants: a VIP added and then removed by a quick
//! demotion is removed last; a master's routes are added after its VIPs and removed before
//! them.

use std::{io, net::IpAddr, time::Duration};

use tokio::sync::mpsc;
use tracing::warn;

use crate::{
    config::{Route, Vip},
    engine::InstanceKey,
    sys::netlink::Addresses,
};

/// One change asked of the kernel.
#[derive(Debug)]
pub(super) enum NetOp {
    /// Adds `vip` on interface `dev` for master `key`. `generation` is the keeper's count of
    /// wants of the address when asked: a result for an older want is stale. `announce`: the
    /// VIP came back after a failure or a deletion, so it is announced once added (a new
    /// master's announcements come from the engine).
    AddVip {
        key: InstanceKey,
        vip: Vip,
        dev: u32,
        generation: u64,
        announce: bool,
    },
    RemoveVip {
        key: InstanceKey,
        dev: u32,
        addr: IpAddr,
    },
    /// Adds (or replaces) every route of master `key`.
    AddRoutes {
        key: InstanceKey,
        routes: Vec<Route>,
    },
    /// Removes routes of `key`; `dropped`: they left the configuration (a reload).
    RemoveRoutes {
        key: InstanceKey,
        routes: Vec<Route>,
        dropped: bool,
    },
    /// Brings the virtual-MAC interface `dev` up or down.
    SetUp {
        key: InstanceKey,
        dev: u32,
        up: bool,
    },
}

/// A change carried out, and how each of its calls went (one per route for the routes, one
/// otherwise).
#[derive(Debug)]
pub(super) struct NetDone {
    pub(super) op: NetOp,
    pub(super) results: Vec<io::Result<()>>,
}

/// The queue to the netlink task.
pub(super) struct NetQueue {
    tx: Option<mpsc::UnboundedSender<NetOp>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The fault knob of the lab tests: every netlink change waits this long first, as behind a
/// kernel whose RTNL lock is held. Read once, at startup.
const DELAY_VAR: &str = "XVRRP_FAULT_NETLINK_DELAY_MS";

impl NetQueue {
    /// Starts the task; its results arrive on the returned receiver.
    pub(super) fn start(addresses: Addresses) -> (Self, mpsc::UnboundedReceiver<NetDone>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<NetOp>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let delay = std::env::var(DELAY_VAR)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        if let Some(d) = delay {
            warn!(
                delay_ms = d.as_millis() as u64,
                "{DELAY_VAR} is set: every netlink change is delayed (a test fault)"
            );
        }
        let task = tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let results = carry_out(&addresses, &op).await;
                // The loop gone (stopping): the rest of the queue still runs, in order.
                let _ = done_tx.send(NetDone { op, results });
            }
        });
        (
            Self {
                tx: Some(tx),
                task: Some(task),
            },
            done_rx,
        )
    }

    /// Queues `op` behind what was asked before.
    pub(super) fn push(&self, op: NetOp) {
        if let Some(tx) = &self.tx
            && tx.send(op).is_err()
        {
            warn!("the netlink task has ended: a VIP or route change is lost");
        }
    }

    /// Closes the queue and waits (at most `bound`) until what was asked is done: before a
    /// stop removes the VIPs itself, or a hitless restart hands them over.
    pub(super) async fn drain(&mut self, bound: Duration) {
        self.tx = None;
        if let Some(task) = self.task.take()
            && tokio::time::timeout(bound, task).await.is_err()
        {
            warn!(
                bound_ms = bound.as_millis() as u64,
                "netlink changes still queued when stopping"
            );
        }
    }
}

async fn carry_out(addresses: &Addresses, op: &NetOp) -> Vec<io::Result<()>> {
    match op {
        NetOp::AddVip { vip, dev, .. } => vec![addresses.add(*dev, vip).await],
        NetOp::RemoveVip { dev, addr, .. } => vec![addresses.remove(*dev, *addr).await],
        NetOp::AddRoutes { routes, .. } | NetOp::RemoveRoutes { routes, .. } => {
            let add = matches!(op, NetOp::AddRoutes { .. });
            let mut results = Vec::with_capacity(routes.len());
            for route in routes {
                results.push(if add {
                    addresses.add_route(route).await
                } else {
                    addresses.remove_route(route).await
                });
            }
            results
        }
        NetOp::SetUp { dev, up, .. } => vec![addresses.set_up(*dev, *up).await],
    }
}

//! One vote of the write lease: granted to one node at a time, for a bounded time.

use std::collections::HashMap;

use super::wire::{Msg, NodeId};
use crate::engine::Time;

/// The voter's grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub to: NodeId,
    pub priority: u8,
    /// When the grant runs out on this voter's clock.
    pub until: Time,
}

/// A voter: it grants to one node at a time, until the grant runs out or is released; a
/// request or release whose counter is not above the sender's last one is a replay and is
/// dropped. A voter that starts (or restarts) grants nothing during a quiet period as long as
/// the longest lease it grants: it may have forgotten a grant that still runs elsewhere.
#[derive(Debug)]
pub struct Voter {
    me: NodeId,
    grant: Option<Grant>,
    last_seq: HashMap<NodeId, u64>,
    quiet_until: Time,
    max_lease_ms: u32,
}

/// The id a refusal names when no node holds the grant (the quiet period).
pub const NOBODY: NodeId = NodeId([0; 16]);

impl Voter {
    /// A voter that starts at `now`, granting at most `max_lease_ms`. With `grant`, a grant it
    /// knew before (a hitless restart) and no quiet period.
    pub fn new(me: NodeId, now: Time, max_lease_ms: u32, grant: Option<Grant>) -> Self {
        let quiet_until = if grant.is_some() {
            now
        } else {
            now.plus(u64::from(max_lease_ms) * 1_000)
        };
        Self {
            me,
            grant,
            last_seq: HashMap::new(),
            quiet_until,
            max_lease_ms,
        }
    }

    /// The grant, while it runs.
    pub fn current(&self, now: Time) -> Option<Grant> {
        self.grant.filter(|g| g.until > now)
    }

    /// Whether the quiet period after start is over.
    pub fn quiet(&self, now: Time) -> bool {
        now < self.quiet_until
    }

    fn fresh(&mut self, from: NodeId, seq: u64) -> bool {
        let last = self.last_seq.entry(from).or_insert(0);
        if seq <= *last {
            return false;
        }
        *last = seq;
        true
    }

    /// A refusal of request `seq` of `to`: the grant runs for another node, or (no grant)
    /// the quiet period after start runs (a quiet period that is over gives 0).
    fn refusal(&self, now: Time, to: NodeId, seq: u64) -> Msg {
        let (holder, priority, remaining_us) = match self.current(now) {
            Some(g) => (g.to, g.priority, g.until.since(now)),
            None => (NOBODY, 0, self.quiet_until.since(now)),
        };
        Msg::Refuse {
            from: self.me,
            to,
            seq,
            holder,
            priority,
            remaining_ms: u32::try_from(remaining_us.div_ceil(1_000)).unwrap_or(u32::MAX),
        }
    }

    /// Handles a request or release; returns the answer to send back, if any.
    pub fn handle(&mut self, now: Time, msg: &Msg) -> Option<Msg> {
        match *msg {
            Msg::Request {
                from,
                priority,
                seq,
                lease_ms,
            } => {
                if !self.fresh(from, seq) {
                    return None;
                }
                let free = match self.current(now) {
                    Some(g) => g.to == from,
                    None => !self.quiet(now),
                };
                if !free {
                    return Some(self.refusal(now, from, seq));
                }
                let lease_ms = lease_ms.min(self.max_lease_ms);
                self.grant = Some(Grant {
                    to: from,
                    priority,
                    until: now.plus(u64::from(lease_ms) * 1_000),
                });
                Some(Msg::Grant {
                    from: self.me,
                    to: from,
                    seq,
                    lease_ms,
                })
            }
            Msg::Release { from, seq } => {
                if self.fresh(from, seq) && self.grant.is_some_and(|g| g.to == from) {
                    self.grant = None;
                }
                None
            }
            Msg::Grant { .. } | Msg::Refuse { .. } => None,
        }
    }
}

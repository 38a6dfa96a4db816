//! A node of the write lease: its own vote, and the candidate that asks the other voters
//! (the peer, and the witness when there is one) for theirs. Pure: it takes `now` and
//! returns what to send and what changed.
//!
//! The rules, each tested in this module:
//! - a candidate holds the lease while a majority of {itself, the peer, the witness} granted
//!   it, from when it sent the request that won them, for the lease time less a guard (the
//!   clock-rate margin and the time a fence takes): every voter's grant outlasts the
//!   holder's belief, so the holder has fenced its server before any voter grants another;
//! - without a witness, a peer that has not answered for a lease time is not counted: the
//!   node then holds on its own vote (a crashed peer must not stop writes; a true partition
//!   can then give both sides the lease, which `xvrrp status` and the docs say);
//! - two candidates that hear of each other decide by claim (priority, then address): the
//!   lower one yields (it is blocked: its instances go to Fault, and its server is fenced
//!   before the lease is released) for a hold-down of five lease times;
//! - with a witness, a candidate refused by the witness for a holder that keeps renewing,
//!   and that outranks it or cannot be heard, yields the same way, so that clients are not
//!   split between a writable server and a fenced one.

use std::collections::VecDeque;

use super::{
    voter::{Grant, NOBODY, Voter},
    wire::{Msg, NodeId},
};
use crate::engine::Time;

/// Which other voter a message goes to or came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    Peer,
    Witness,
}

/// What the node tells its shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Send(Dest, Msg),
    /// The lease is held (writes may be enabled) or no longer held (fence now).
    Held(bool),
    /// The node yielded to a stronger holder: its instances stay out of the election while
    /// true.
    Blocked(bool),
    /// A weaker node asked for the lease while this one holds it: it was master too (adverts
    /// lost between the two) and may have announced the VIPs; the shell announces them again.
    Contested,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub me: NodeId,
    pub peer: NodeId,
    pub witness: Option<NodeId>,
    pub lease_ms: u32,
    /// Taken off the lease on the holder's side: clock-rate margin plus the time a fence may
    /// take.
    pub guard_ms: u32,
}

impl NodeConfig {
    fn lease_us(&self) -> u64 {
        u64::from(self.lease_ms) * 1_000
    }

    /// A renewal every quarter of the lease.
    fn renew_us(&self) -> u64 {
        self.lease_us() / 4
    }

    /// A round that did not win a majority is tried again this soon.
    fn retry_us(&self) -> u64 {
        (self.lease_us() / 20).clamp(10_000, 100_000)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Round {
    seq: u64,
    sent: Time,
    own: bool,
    peer: bool,
    witness: bool,
}

/// What a voter last said of another holder.
#[derive(Clone, Copy, Debug)]
struct Heard {
    holder: NodeId,
    until: Time,
}

#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    voter: Voter,
    seq: u64,
    /// The claim's priority while a candidate.
    want: Option<u8>,
    round: Option<Round>,
    next_round: Time,
    held_until: Option<Time>,
    last_from_peer: Option<Time>,
    asked_peer_since: Option<Time>,
    heard_peer: Option<Heard>,
    heard_witness: Option<Heard>,
    blocked_until: Option<Time>,
    /// The holder this node yielded to: its release ends the block at once.
    yielded_to: Option<NodeId>,
    last_contested: Option<Time>,
    out: VecDeque<Output>,
}

impl Node {
    /// A node started at `now`; `first_seq` must be above any counter an earlier run of this
    /// node sent (the daemon takes the wall clock in microseconds). `grant`: the own voter's
    /// grant carried over a hitless restart.
    pub fn new(cfg: NodeConfig, now: Time, first_seq: u64, grant: Option<Grant>) -> Self {
        Self {
            voter: Voter::new(cfg.me, now, cfg.lease_ms, grant),
            cfg,
            seq: first_seq,
            want: None,
            round: None,
            next_round: now,
            held_until: None,
            last_from_peer: None,
            asked_peer_since: None,
            heard_peer: None,
            heard_witness: None,
            blocked_until: None,
            yielded_to: None,
            last_contested: None,
            out: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn held(&self) -> bool {
        self.held_until.is_some()
    }

    pub fn blocked(&self) -> bool {
        self.blocked_until.is_some()
    }

    /// The own voter's grant (for status and for a hitless restart).
    pub fn own_grant(&self, now: Time) -> Option<Grant> {
        self.voter.current(now)
    }

    /// Until when this node holds the lease, on its own clock.
    pub fn held_until(&self) -> Option<Time> {
        self.held_until
    }

    /// Whether the peer counts as gone: asked for a few retries without an answer, and heard
    /// from for no lease time (since it was last heard, or since first asked).
    pub fn peer_silent(&self, now: Time) -> bool {
        let Some(asked) = self.asked_peer_since else {
            return false;
        };
        now.since(asked) >= 2 * self.cfg.retry_us()
            && now.since(self.last_from_peer.unwrap_or(asked)) >= self.cfg.lease_us()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn send(&mut self, now: Time, msg: Msg) {
        if self.asked_peer_since.is_none() {
            self.asked_peer_since = Some(now);
        }
        self.out.push_back(Output::Send(Dest::Peer, msg));
        if self.cfg.witness.is_some() {
            self.out.push_back(Output::Send(Dest::Witness, msg));
        }
    }

    /// Becomes a candidate with this priority (Some), or stops being one (None): the caller
    /// passes None only once its server is fenced, since the release lets another node enable
    /// writes.
    pub fn set_want(&mut self, now: Time, want: Option<u8>) {
        match (self.want, want) {
            (None, Some(p)) => {
                self.want = Some(p);
                if !self.blocked() {
                    self.start_round(now);
                }
            }
            (Some(old), Some(p)) => {
                self.want = Some(p);
                // The voters learn the new claim at once (the own voter now): a peer that asks
                // meanwhile must not be refused in the name of the old one.
                if old != p && !self.blocked() {
                    self.start_round(now);
                }
            }
            (Some(_), None) => {
                self.want = None;
                self.round = None;
                self.set_held(None);
                if self.voter.current(now).is_some_and(|g| g.to == self.cfg.me) {
                    let seq = self.next_seq();
                    // The own voter takes the release like any other.
                    self.voter.handle(
                        now,
                        &Msg::Release {
                            from: self.cfg.me,
                            seq,
                        },
                    );
                }
                let seq = self.next_seq();
                self.send(
                    now,
                    Msg::Release {
                        from: self.cfg.me,
                        seq,
                    },
                );
            }
            (None, None) => {}
        }
    }

    fn set_held(&mut self, until: Option<Time>) {
        let was = self.held();
        self.held_until = until;
        if was != self.held() {
            self.out.push_back(Output::Held(self.held()));
        }
    }

    fn start_round(&mut self, now: Time) {
        let Some(priority) = self.want else { return };
        let seq = self.next_seq();
        let request = Msg::Request {
            from: self.cfg.me,
            priority,
            seq,
            lease_ms: self.cfg.lease_ms,
        };
        let own = matches!(self.voter.handle(now, &request), Some(Msg::Grant { .. }));
        self.round = Some(Round {
            seq,
            sent: now,
            own,
            ..Round::default()
        });
        self.send(now, request);
        self.next_round = now.plus(if self.held() {
            self.cfg.renew_us()
        } else {
            self.cfg.retry_us()
        });
        self.check_majority(now);
    }

    fn check_majority(&mut self, now: Time) {
        let Some(r) = self.round else { return };
        if self.blocked() {
            return;
        }
        let votes = usize::from(r.own) + usize::from(r.peer) + usize::from(r.witness);
        let needed = if self.cfg.witness.is_some() || !self.peer_silent(now) {
            2
        } else {
            1
        };
        if votes >= needed {
            let until = r
                .sent
                .plus(self.cfg.lease_us())
                .0
                .saturating_sub(u64::from(self.cfg.guard_ms) * 1_000);
            if until > now.0 {
                let until = Time(until).max(self.held_until.unwrap_or(Time(0)));
                self.set_held(Some(until));
                // The next renewal a quarter lease after this win, not after a failed try.
                if self.next_round.since(now) < self.cfg.renew_us() {
                    self.next_round = r.sent.plus(self.cfg.renew_us()).max(self.next_round);
                }
            }
        }
    }

    /// The next time [`Node::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t: Option<Time> = None;
        let mut at = |x: Time| t = Some(t.map_or(x, |t| t.min(x)));
        if self.want.is_some() && !self.blocked() {
            at(self.next_round);
        }
        if let Some(h) = self.held_until {
            at(h);
        }
        if let Some(b) = self.blocked_until {
            at(b);
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Time) {
        if self.held_until.is_some_and(|h| now >= h) {
            self.set_held(None);
        }
        if self.blocked_until.is_some_and(|until| now >= until) {
            self.unblock(now);
        }
        if self.want.is_some() && !self.blocked() && now >= self.next_round {
            self.start_round(now);
        }
    }

    /// Yields: a holder stops holding (the shell fences); a candidate that does not hold is
    /// blocked for a hold-down of five lease times. Blocking only keeps the instances out of the election (no VIP claimed for a
    /// server that cannot be writable); writes stay governed by the lease alone, so a block
    /// that ends while the other still holds costs availability, never safety.
    fn yield_to(&mut self, now: Time, holder: NodeId) {
        self.round = None;
        if self.held() {
            // The holder gives way (a preemption that VRRP may well be carrying out too): it
            // stops holding, and its shell fences. Only if it still competes after that (it
            // asks again and is refused) is it blocked.
            self.set_held(None);
            self.next_round = now.plus(self.cfg.retry_us());
            return;
        }
        self.yielded_to = Some(holder);
        if self.blocked_until.is_none() {
            self.out.push_back(Output::Blocked(true));
        }
        self.blocked_until = Some(now.plus(5 * self.cfg.lease_us()));
    }

    fn unblock(&mut self, now: Time) {
        self.blocked_until = None;
        self.yielded_to = None;
        self.out.push_back(Output::Blocked(false));
        if self.want.is_some() {
            self.start_round(now);
        }
    }

    /// Whether a claim beats this node's, so that this node yields. A claim of priority 0
    /// (a node that is no longer master but whose server is not confirmed fenced) never
    /// yields: it keeps its grants until the fence reads back.
    fn outranks(&self, priority: u8, other: NodeId) -> bool {
        match self.want {
            Some(mine) if mine > 0 => (priority, other) > (mine, self.cfg.me),
            _ => false,
        }
    }

    /// Handles a message from `dest`'s address (None: from elsewhere, a voter's answer is then
    /// not counted); returns the answer to send back, if any.
    pub fn handle(&mut self, now: Time, dest: Option<Dest>, msg: &Msg) -> Option<Msg> {
        if dest == Some(Dest::Peer) && msg.from() == self.cfg.peer {
            self.last_from_peer = Some(now);
            self.asked_peer_since = None;
        }
        match *msg {
            Msg::Request { from, priority, .. } => {
                let answer = self.voter.handle(now, msg);
                // A stronger candidate that this voter refused competes with this node (a
                // renewal it was granted, in flight when it released, does not).
                let refused = matches!(answer, Some(Msg::Refuse { .. }));
                if refused && from != self.cfg.me && self.outranks(priority, from) {
                    self.yield_to(now, from);
                } else if refused
                    && from != self.cfg.me
                    && self.held()
                    && self
                        .last_contested
                        .is_none_or(|t| now.since(t) >= 1_000_000)
                {
                    // At most once a second: the competitor asks again at every retry.
                    self.last_contested = Some(now);
                    self.out.push_back(Output::Contested);
                }
                answer
            }
            Msg::Release { from, .. } => {
                let had = self.voter.current(now).is_some_and(|g| g.to == from);
                let answer = self.voter.handle(now, msg);
                let released = had && self.voter.current(now).is_none();
                // The holder this node yielded to gave the lease back (it demoted or stopped):
                // no reason to stay out of the election.
                if released && self.blocked() && self.yielded_to == Some(from) {
                    self.unblock(now);
                } else if released && self.want.is_some() && !self.held() && !self.blocked() {
                    // A candidate waiting for that grant asks again now, not at its next retry.
                    self.start_round(now);
                }
                answer
            }
            Msg::Grant { from, to, seq, .. } => {
                let dest = dest.filter(|d| self.expected(*d, from))?;
                if to != self.cfg.me {
                    return None;
                }
                if let Some(r) = self.round.as_mut().filter(|r| r.seq == seq) {
                    match dest {
                        Dest::Peer => r.peer = true,
                        Dest::Witness => r.witness = true,
                    }
                    self.check_majority(now);
                }
                None
            }
            Msg::Refuse {
                from,
                to,
                seq,
                holder,
                priority,
                remaining_ms,
            } => {
                let dest = dest.filter(|d| self.expected(*d, from))?;
                let current = self.round.is_some_and(|r| r.seq == seq);
                if to != self.cfg.me || !current {
                    return None;
                }
                let until = now.plus(u64::from(remaining_ms) * 1_000);
                let heard = Heard { holder, until };
                let slot = match dest {
                    Dest::Peer => &mut self.heard_peer,
                    Dest::Witness => &mut self.heard_witness,
                };
                // A holder whose grant ran further than this voter said before renewed it.
                let tolerance = self.cfg.lease_us() / 8;
                let renewing =
                    slot.is_some_and(|h| h.holder == holder && until.0 > h.until.0 + tolerance);
                *slot = Some(heard);
                if holder == NOBODY || holder == self.cfg.me {
                    return None;
                }
                if self.blocked() {
                    return None;
                }
                let yields = match dest {
                    // The peer answered: it is alive, and holds its own vote.
                    Dest::Peer => holder == self.cfg.peer && self.outranks(priority, holder),
                    Dest::Witness => {
                        renewing && (self.outranks(priority, holder) || self.peer_silent(now))
                    }
                };
                if yields {
                    self.yield_to(now, holder);
                }
                None
            }
        }
    }

    fn expected(&self, dest: Dest, from: NodeId) -> bool {
        match dest {
            Dest::Peer => from == self.cfg.peer,
            Dest::Witness => Some(from) == self.cfg.witness,
        }
    }
}

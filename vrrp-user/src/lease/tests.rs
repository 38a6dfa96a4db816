//! Two nodes and a witness on a simulated network and clock: the lease is never held by both
//! at once, under every fault; and it moves when it should.

use std::collections::HashSet;

use super::{
    node::{Dest, Node, NodeConfig, Output},
    voter::Voter,
    wire::{Msg, NodeId},
};
use crate::engine::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Who {
    A,
    B,
    W,
}

fn id(who: Who) -> NodeId {
    NodeId::new(std::net::IpAddr::from([
        192,
        0,
        2,
        match who {
            Who::A => 1,
            Who::B => 2,
            Who::W => 3,
        },
    ]))
}

const LEASE_MS: u32 = 1000;
const GUARD_MS: u32 = 200;
const MS: u64 = 1_000;

struct Sim {
    now: Time,
    a: Node,
    b: Node,
    w: Option<Voter>,
    queue: Vec<(Time, Who, Who, Msg)>,
    cut: HashSet<(Who, Who)>,
    dead: HashSet<Who>,
    latency: u64,
    /// Per mille of messages lost, from `rng`.
    loss: u64,
    rng: u64,
    /// Every change of held / blocked, with its time.
    log: Vec<(Time, Who, Output)>,
    both_held_at: Option<Time>,
}

impl Sim {
    fn new(witness: bool) -> Self {
        let now = Time(1_000_000_000);
        let cfg = |me, peer| NodeConfig {
            me: id(me),
            peer: id(peer),
            witness: witness.then(|| id(Who::W)),
            lease_ms: LEASE_MS,
            guard_ms: GUARD_MS,
        };
        let mut sim = Self {
            now,
            a: Node::new(cfg(Who::A, Who::B), now, 1_000, None),
            b: Node::new(cfg(Who::B, Who::A), now, 1_000, None),
            w: witness.then(|| Voter::new(id(Who::W), now, LEASE_MS, None)),
            queue: Vec::new(),
            cut: HashSet::new(),
            dead: HashSet::new(),
            latency: 200,
            loss: 0,
            rng: 1,
            log: Vec::new(),
            both_held_at: None,
        };
        // Past the voters' quiet period after start.
        sim.run_for(1100 * MS);
        sim
    }

    fn random(&mut self, below: u64) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.rng >> 33) % below
    }

    fn node(&mut self, who: Who) -> &mut Node {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
            Who::W => unreachable!(),
        }
    }

    fn want(&mut self, who: Who, want: Option<u8>) {
        let now = self.now;
        self.node(who).set_want(now, want);
        self.drain(who);
    }

    fn partition(&mut self, x: Who, y: Who) {
        self.cut.insert((x, y));
        self.cut.insert((y, x));
    }

    fn send(&mut self, from: Who, to: Who, msg: Msg) {
        if self.dead.contains(&from) || self.dead.contains(&to) || self.cut.contains(&(from, to)) {
            return;
        }
        if self.loss > 0 && self.random(1000) < self.loss {
            return;
        }
        self.queue
            .push((self.now.plus(self.latency), from, to, msg));
    }

    fn drain(&mut self, who: Who) {
        while let Some(out) = self.node(who).poll_output() {
            match out {
                Output::Send(dest, msg) => {
                    let to = match (dest, who) {
                        (Dest::Witness, _) => Who::W,
                        (Dest::Peer, Who::A) => Who::B,
                        (Dest::Peer, _) => Who::A,
                    };
                    self.send(who, to, msg);
                }
                other => self.log.push((self.now, who, other)),
            }
        }
    }

    fn check(&mut self) {
        if self.a.held() && self.b.held() && self.both_held_at.is_none() {
            self.both_held_at = Some(self.now);
        }
    }

    fn run_for(&mut self, us: u64) {
        let end = self.now.plus(us);
        loop {
            let timers = [(Who::A, &self.a), (Who::B, &self.b)]
                .into_iter()
                .filter(|(w, _)| !self.dead.contains(w))
                .filter_map(|(w, n)| Some((n.poll_timeout()?, w)))
                .min();
            let next_msg = self.queue.iter().map(|m| m.0).min();
            let next = match (timers.map(|t| t.0), next_msg) {
                (Some(t), Some(m)) => t.min(m),
                (t, m) => match t.or(m) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            if let Some(i) = self.queue.iter().position(|m| m.0 <= self.now) {
                let (_, from, to, msg) = self.queue.remove(i);
                if std::env::var("LEASE_TRACE").is_ok() {
                    eprintln!(
                        "{:?} {from:?}->{to:?} {msg:?} held a {} b {}",
                        self.now,
                        self.a.held(),
                        self.b.held()
                    );
                }
                if self.dead.contains(&to) {
                    continue;
                }
                let now = self.now;
                let answer = match to {
                    Who::W => self.w.as_mut().and_then(|w| w.handle(now, &msg)),
                    node => {
                        let dest = if from == Who::W {
                            Dest::Witness
                        } else {
                            Dest::Peer
                        };
                        let a = self.node(node).handle(now, Some(dest), &msg);
                        self.drain(node);
                        a
                    }
                };
                if let Some(answer) = answer {
                    self.send(to, from, answer);
                }
            } else if let Some((_, who)) = timers {
                let now = self.now;
                self.node(who).handle_timeout(now);
                self.drain(who);
            }
            self.check();
        }
        self.now = end;
        for who in [Who::A, Who::B] {
            if !self.dead.contains(&who) {
                let now = self.now;
                self.node(who).handle_timeout(now);
                self.drain(who);
            }
        }
        self.check();
    }

    fn first(&self, who: Who, out: Output) -> Option<Time> {
        self.log
            .iter()
            .find(|(_, w, o)| *w == who && *o == out)
            .map(|e| e.0)
    }
}

#[test]
fn a_lone_candidate_holds_the_lease_once_its_peer_grants_it() {
    let mut sim = Sim::new(false);
    let start = sim.now;
    sim.want(Who::A, Some(200));
    sim.run_for(10 * MS);
    let held = sim.first(Who::A, Output::Held(true)).expect("A holds");
    assert!(held.since(start) <= 2 * sim.latency, "one round trip");
    sim.run_for(5_000 * MS);
    assert!(sim.a.held(), "renewed");
    assert_eq!(sim.first(Who::A, Output::Held(false)), None, "never lapsed");
    assert!(!sim.b.held() && !sim.b.blocked());
}

#[test]
fn two_candidates_that_hear_each_other_leave_the_lease_to_the_higher_claim() {
    for (pa, pb) in [(200, 100), (100, 200), (150, 150)] {
        let mut sim = Sim::new(false);
        sim.want(Who::A, Some(pa));
        sim.want(Who::B, Some(pb));
        sim.run_for(300 * MS);
        // Equal priorities: the higher address (B) wins.
        let (winner, loser) = if pa > pb {
            (Who::A, Who::B)
        } else {
            (Who::B, Who::A)
        };
        assert!(
            sim.first(loser, Output::Blocked(true)).is_some(),
            "{pa}/{pb}"
        );
        // The loser's shell fences, its instances leave the election, and it releases.
        sim.want(loser, None);
        sim.run_for(3_000 * MS);
        let yielded = sim.first(loser, Output::Blocked(true)).expect("yielded");
        assert!(sim.node(winner).held(), "{pa}/{pb}: the higher claim holds");
        assert!(!sim.node(loser).held());
        assert!(sim.node(loser).blocked(), "blocked for the hold-down");
        sim.run_for(3_000 * MS);
        let unblocked = sim.first(loser, Output::Blocked(false)).expect("unblocked");
        let blocked_for = unblocked.since(yielded);
        let lease = u64::from(LEASE_MS) * MS;
        assert!(
            (5 * lease..6 * lease).contains(&blocked_for),
            "{blocked_for}"
        );
        assert_eq!(sim.both_held_at, None, "{pa}/{pb}");
    }
}

#[test]
fn a_crashed_holder_gives_the_lease_to_its_peer_only_after_its_own_belief_ran_out() {
    let mut sim = Sim::new(false);
    sim.want(Who::A, Some(200));
    sim.run_for(500 * MS);
    assert!(sim.a.held());
    sim.dead.insert(Who::A);
    let a_until = sim.a.held_until().expect("held");
    sim.want(Who::B, Some(100));
    sim.run_for(3_000 * MS);
    let b_held = sim.first(Who::B, Output::Held(true)).expect("B takes over");
    assert!(
        b_held > a_until,
        "B held at {b_held:?}, A believed until {a_until:?}"
    );
    assert!(
        b_held.since(a_until) < u64::from(LEASE_MS) * MS,
        "within a lease time of A's last renewal"
    );
}

#[test]
fn a_released_lease_moves_to_the_peer_at_once() {
    let mut sim = Sim::new(true);
    sim.want(Who::A, Some(200));
    sim.run_for(500 * MS);
    assert!(sim.a.held());
    sim.want(Who::A, None);
    let released = sim.now;
    sim.want(Who::B, Some(100));
    sim.run_for(100 * MS);
    let b_held = sim
        .first(Who::B, Output::Held(true))
        .unwrap_or_else(|| panic!("B holds: {:?}", sim.log));
    assert!(
        b_held.since(released) <= 4 * sim.latency,
        "a round trip, not a lease time"
    );
    assert_eq!(sim.both_held_at, None);
}

#[test]
fn with_a_witness_a_partitioned_peer_neither_holds_nor_claims_while_the_holder_renews() {
    let mut sim = Sim::new(true);
    sim.want(Who::A, Some(100));
    sim.run_for(500 * MS);
    assert!(sim.a.held());
    sim.partition(Who::A, Who::B);
    // B (even with the higher priority) cannot get a majority: A renews with the witness.
    sim.want(Who::B, Some(200));
    sim.run_for(4_000 * MS);
    assert!(sim.a.held(), "A keeps the lease with the witness's vote");
    assert!(!sim.b.held());
    assert!(
        sim.b.blocked(),
        "B yields: it does not claim the VIP for a fenced server"
    );
    assert_eq!(sim.both_held_at, None);
}

#[test]
fn with_a_witness_an_isolated_holder_lapses_before_the_other_side_takes_the_lease() {
    let mut sim = Sim::new(true);
    sim.want(Who::A, Some(200));
    sim.run_for(500 * MS);
    sim.partition(Who::A, Who::B);
    sim.partition(Who::A, Who::W);
    sim.want(Who::B, Some(100));
    sim.run_for(5_000 * MS);
    let a_lapsed = sim.first(Who::A, Output::Held(false)).expect("A lapses");
    let b_held = sim.first(Who::B, Output::Held(true)).expect("B takes over");
    assert!(b_held > a_lapsed);
    assert!(!sim.a.held(), "one vote of three is not a majority");
    assert_eq!(sim.both_held_at, None);
}

#[test]
fn without_a_witness_a_true_partition_gives_both_sides_the_lease() {
    // The documented limit: nothing can tell a crashed peer from an unreachable one.
    let mut sim = Sim::new(false);
    sim.want(Who::A, Some(200));
    sim.run_for(500 * MS);
    sim.partition(Who::A, Who::B);
    sim.want(Who::B, Some(100));
    sim.run_for(5_000 * MS);
    assert!(sim.a.held() && sim.b.held());
    assert!(sim.both_held_at.is_some());
}

#[test]
fn a_dead_witness_stops_nothing_while_the_peer_answers() {
    let mut sim = Sim::new(true);
    sim.dead.insert(Who::W);
    sim.want(Who::A, Some(200));
    sim.run_for(3_000 * MS);
    assert!(sim.a.held());
    assert_eq!(sim.first(Who::A, Output::Held(false)), None);
}

#[test]
fn a_restarted_voter_grants_nothing_for_a_lease_time() {
    let now = Time(5_000_000);
    let mut w = Voter::new(id(Who::W), now, LEASE_MS, None);
    let ask = |seq| Msg::Request {
        from: id(Who::B),
        priority: 100,
        seq,
        lease_ms: LEASE_MS,
    };
    assert!(
        matches!(w.handle(now.plus(10 * MS), &ask(1)), Some(Msg::Refuse { remaining_ms, .. }) if remaining_ms > 900)
    );
    assert!(matches!(
        w.handle(now.plus(1_001 * MS), &ask(2)),
        Some(Msg::Grant { .. })
    ));
    // A replayed request is dropped; so is a replayed release.
    assert_eq!(w.handle(now.plus(1_002 * MS), &ask(2)), None);
    w.handle(
        now.plus(1_003 * MS),
        &Msg::Release {
            from: id(Who::B),
            seq: 1,
        },
    );
    assert!(
        w.current(now.plus(1_003 * MS)).is_some(),
        "stale release ignored"
    );
}

#[test]
fn answers_to_an_old_round_or_from_a_stranger_count_for_nothing() {
    let now = Time(10_000_000);
    let cfg = NodeConfig {
        me: id(Who::A),
        peer: id(Who::B),
        witness: None,
        lease_ms: LEASE_MS,
        guard_ms: GUARD_MS,
    };
    let mut a = Node::new(cfg, now, 100, None);
    let t = now.plus(2_000 * MS);
    a.set_want(t, Some(200));
    while a.poll_output().is_some() {}
    let grant = |from, seq| Msg::Grant {
        from,
        to: id(Who::A),
        seq,
        lease_ms: LEASE_MS,
    };
    a.handle(t, Some(Dest::Peer), &grant(id(Who::B), 50));
    assert!(!a.held(), "a grant for another round");
    a.handle(t, Some(Dest::Peer), &grant(id(Who::W), 101));
    assert!(!a.held(), "a grant from someone not the peer");
    a.handle(t, Some(Dest::Peer), &grant(id(Who::B), 101));
    assert!(a.held());
}

#[test]
fn with_a_witness_no_mix_of_faults_gives_both_nodes_the_lease_at_once() {
    for seed in 1..=60u64 {
        let mut sim = Sim::new(true);
        sim.rng = seed;
        for _ in 0..150 {
            match sim.random(10) {
                0 => {
                    let p = Some(1 + sim.random(254) as u8);
                    let who = if sim.random(2) == 0 { Who::A } else { Who::B };
                    let want = if sim.node(who).held() || sim.random(2) == 0 {
                        None
                    } else {
                        p
                    };
                    sim.want(who, want);
                }
                1 => {
                    let p = Some(1 + sim.random(254) as u8);
                    let who = if sim.random(2) == 0 { Who::A } else { Who::B };
                    sim.want(who, p);
                }
                2 => {
                    let pairs = [(Who::A, Who::B), (Who::A, Who::W), (Who::B, Who::W)];
                    let (x, y) = pairs[sim.random(3) as usize];
                    sim.partition(x, y);
                }
                3 => sim.cut.clear(),
                4 => {
                    // The witness dies, or restarts with nothing remembered.
                    if sim.dead.remove(&Who::W) {
                        sim.w = Some(Voter::new(id(Who::W), sim.now, LEASE_MS, None));
                    } else {
                        sim.dead.insert(Who::W);
                    }
                }
                5 => sim.loss = sim.random(500),
                6 => sim.latency = 100 + sim.random(20_000),
                _ => {}
            }
            let step = 10 + sim.random(400);
            sim.run_for(step * MS);
            assert_eq!(sim.both_held_at, None, "seed {seed}: both held");
        }
        let holds = sim.log.iter().filter(|e| e.2 == Output::Held(true)).count();
        assert!(holds > 2, "seed {seed}: the lease was held {holds} times");
    }
}

/// Without a witness, silence from the peer for a lease time counts as its death: loss heavy
/// enough to silence it that long (30% both ways did, in some seeds) splits the pair like a
/// partition. Up to 10% loss, and delays, never do.
#[test]
fn without_a_witness_up_to_ten_percent_loss_and_delay_never_give_both_the_lease() {
    for seed in std::env::var("LEASE_SEED").map_or(1..=60u64, |s| {
        let s = s.parse().unwrap();
        s..=s
    }) {
        let mut sim = Sim::new(false);
        sim.rng = seed;
        for _ in 0..150 {
            match sim.random(6) {
                0 | 1 => {
                    let who = if sim.random(2) == 0 { Who::A } else { Who::B };
                    let want = if sim.random(2) == 0 {
                        None
                    } else {
                        Some(1 + sim.random(254) as u8)
                    };
                    sim.want(who, want);
                }
                2 => sim.loss = sim.random(100),
                3 => sim.latency = 100 + sim.random(5_000),
                _ => {}
            }
            let step = 10 + sim.random(400);
            sim.run_for(step * MS);
            assert_eq!(sim.both_held_at, None, "seed {seed}: both held");
        }
        let holds = sim.log.iter().filter(|e| e.2 == Output::Held(true)).count();
        assert!(holds > 2, "seed {seed}: the lease was held {holds} times");
    }
}

#[test]
fn a_yielded_node_rejoins_at_once_when_the_holder_releases() {
    let mut sim = Sim::new(false);
    sim.want(Who::A, Some(200));
    sim.run_for(300 * MS);
    sim.want(Who::B, Some(100));
    sim.run_for(300 * MS);
    assert!(sim.b.blocked());
    sim.want(Who::B, None);
    sim.run_for(300 * MS);
    // A demotes: fenced, it releases; B is no longer kept out.
    sim.want(Who::A, None);
    let released = sim.now;
    sim.run_for(10 * MS);
    let unblocked = sim
        .first(Who::B, Output::Blocked(false))
        .expect("unblocked");
    assert!(unblocked.since(released) <= 2 * sim.latency);
}

#[test]
fn a_node_finishing_its_fence_keeps_its_grants_and_keeps_nobody_out() {
    let mut sim = Sim::new(false);
    sim.want(Who::A, Some(200));
    sim.run_for(300 * MS);
    // A demoted, but its server is not confirmed fenced: it claims at priority 0.
    sim.want(Who::A, Some(0));
    sim.want(Who::B, Some(100));
    sim.run_for(3_000 * MS);
    assert!(!sim.b.held(), "B waits for A's release");
    assert!(
        !sim.b.blocked() && !sim.a.blocked(),
        "nobody yields to a claim of 0, nor does it"
    );
    sim.want(Who::A, None);
    sim.run_for(10 * MS);
    assert!(sim.b.held(), "the release hands over at once");
    assert_eq!(sim.both_held_at, None);
}

#[test]
fn a_holder_preempted_by_a_stronger_claim_gives_way_without_being_blocked() {
    // VRRP preemption: B outranks the holder A and both hear each other.
    let mut sim = Sim::new(false);
    sim.want(Who::A, Some(100));
    sim.run_for(300 * MS);
    sim.want(Who::B, Some(200));
    sim.run_for(10 * MS);
    assert!(!sim.a.held(), "A stops holding");
    assert!(
        !sim.a.blocked(),
        "a holder that gives way is not kept out of the election"
    );
    // VRRP demotes A; once fenced it releases.
    sim.want(Who::A, None);
    sim.run_for(50 * MS);
    assert!(sim.b.held());
    assert!(!sim.a.blocked() && !sim.b.blocked());
    assert_eq!(sim.both_held_at, None);
}

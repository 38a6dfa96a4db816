//! The engine on a simulated network: N routers, each an `Engine`, joined by an in-process
//! multicast segment with latency, random loss and partitions, driven by a virtual clock (no
//! sleeping). Invariants are checked over many seeded runs.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{IpAddr, Ipv4Addr},
};

use vrrp_user::engine::{Action, Engine, InstanceConfig, Received, State, Time};

const SEC: u64 = 1_000_000;
const MS: u64 = 1_000;

/// xorshift64*: a small deterministic generator, so every run is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Router {
    engine: Engine,
    up: bool,
    state: State,
}

struct Packet {
    at: u64,
    seq: u64,
    to: usize,
    from: IpAddr,
    dst: IpAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Packet {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Packet {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Net {
    now: u64,
    routers: Vec<Router>,
    queue: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    rng: Rng,
    latency: (u64, u64),
    /// Loss in parts per million.
    loss_ppm: u64,
    /// Partition label per router: packets cross only between equal labels.
    side: Vec<u8>,
    /// Every state change: (time, router, new state).
    history: Vec<(u64, usize, State)>,
}

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8))
}

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))
}

/// A router config with the given priority and interval; tests adjust the rest.
fn config(i: usize, priority: u8, interval_cs: u16) -> InstanceConfig {
    let mut c = InstanceConfig::new(&format!("r{i}"), 1, 51, addr(i), vec![vip()]);
    c.priority = priority;
    c.advert_interval_cs = interval_cs;
    c
}

impl Net {
    fn new(seed: u64, configs: Vec<InstanceConfig>) -> Self {
        let n = configs.len();
        Self {
            now: 0,
            routers: configs
                .into_iter()
                .map(|c| Router {
                    engine: Engine::new(vec![c], vec![]).unwrap(),
                    up: false,
                    state: State::Initialize,
                })
                .collect(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            latency: (100, 2 * MS),
            loss_ppm: 0,
            side: vec![0; n],
            history: Vec::new(),
        }
    }

    fn start(&mut self, i: usize) {
        self.routers[i].up = true;
        self.routers[i].engine.start(Time(self.now));
        self.drain(i);
    }

    /// SIGKILL: the router stops at once, sending nothing more.
    fn crash(&mut self, i: usize) {
        self.routers[i].up = false;
        self.set_state(i, State::Initialize);
    }

    /// SIGTERM: the engine shuts down (a master resigns with priority 0).
    fn stop(&mut self, i: usize) {
        self.routers[i].engine.shutdown(Time(self.now));
        self.drain(i);
        self.routers[i].up = false;
    }

    fn set_state(&mut self, i: usize, s: State) {
        if self.routers[i].state != s {
            self.routers[i].state = s;
            self.history.push((self.now, i, s));
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(action) = self.routers[i].engine.poll_action() {
            match action {
                Action::Send {
                    src, dst, bytes, ..
                } => {
                    for to in 0..self.routers.len() {
                        if to == i || self.side[to] != self.side[i] {
                            continue;
                        }
                        if self.rng.below(1_000_000) < self.loss_ppm {
                            continue;
                        }
                        let (lo, hi) = self.latency;
                        let at = self.now + lo + self.rng.below(hi - lo + 1);
                        self.seq += 1;
                        self.queue.push(Reverse(Packet {
                            at,
                            seq: self.seq,
                            to,
                            from: src,
                            dst,
                            bytes: bytes.clone(),
                        }));
                    }
                }
                Action::StateChanged { new, .. } => self.set_state(i, new),
                _ => {}
            }
        }
    }

    /// Runs the network until `until`.
    fn run_until(&mut self, until: u64) {
        loop {
            let next_packet = self.queue.peek().map(|p| p.0.at);
            let next_timer = self
                .routers
                .iter()
                .filter(|r| r.up)
                .filter_map(|r| r.engine.poll_timeout())
                .map(|t| t.0)
                .min();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = next;
            while self.queue.peek().is_some_and(|p| p.0.at <= self.now) {
                let Reverse(p) = self.queue.pop().unwrap();
                if !self.routers[p.to].up {
                    continue;
                }
                let rx = Received {
                    iface: 1,
                    src: p.from,
                    dst: p.dst,
                    ttl: 255,
                    bytes: &p.bytes,
                };
                let _ = self.routers[p.to].engine.handle_packet(Time(self.now), &rx);
                self.drain(p.to);
            }
            for i in 0..self.routers.len() {
                if self.routers[i].up
                    && self.routers[i]
                        .engine
                        .poll_timeout()
                        .is_some_and(|t| t.0 <= self.now)
                {
                    self.routers[i].engine.handle_timeout(Time(self.now));
                    self.drain(i);
                }
            }
        }
        self.now = until;
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| self.routers[i].up && self.routers[i].state == State::Master)
            .collect()
    }

    /// Master changes (becoming master) after `from`.
    fn promotions_since(&self, from: u64) -> usize {
        self.history
            .iter()
            .filter(|(t, _, s)| *t > from && *s == State::Master)
            .count()
    }

    /// The longest stretch after `from` during which more than one router was master.
    fn longest_multi_master_since(&self, from: u64, until: u64) -> u64 {
        let mut state = vec![State::Initialize; self.routers.len()];
        let mut longest = 0;
        let mut since: Option<u64> = None;
        for &(t, i, s) in
            self.history
                .iter()
                .chain(std::iter::once(&(until, usize::MAX, State::Initialize)))
        {
            if i != usize::MAX {
                state[i] = s;
            }
            let many = state.iter().filter(|s| **s == State::Master).count() > 1;
            match (many, since) {
                (true, None) => since = Some(t.max(from)),
                (false, Some(s)) => {
                    if t > from {
                        longest = longest.max(t - s);
                    }
                    since = None;
                }
                _ => {}
            }
        }
        longest
    }
}

/// Master_Down_Interval in µs for a VRRPv3 priority and interval.
fn mdi(priority: u8, interval_cs: u16) -> u64 {
    let interval = u64::from(interval_cs) * 10 * MS;
    3 * interval + (256 - u64::from(priority)) * interval / 256
}

#[test]
fn the_highest_priority_wins_within_the_rfc_bound_over_many_seeds() {
    for seed in 0..200 {
        let mut rng = Rng::new(seed + 1000);
        let n = 2 + rng.below(4) as usize;
        let interval = [100u16, 10, 2][rng.below(3) as usize];
        // Distinct priorities; sometimes one is the address owner.
        let mut prios: Vec<u8> = (0..n).map(|i| 10 + (i as u8) * 40).collect();
        for i in (1..n).rev() {
            prios.swap(i, rng.below(i as u64 + 1) as usize);
        }
        if seed % 7 == 0 {
            prios[0] = 255;
        }
        let configs = (0..n).map(|i| config(i, prios[i], interval)).collect();
        let mut net = Net::new(seed, configs);
        let mut last_start = 0;
        for i in 0..n {
            net.now = rng.below(2 * u64::from(interval) * 10 * MS);
            last_start = last_start.max(net.now);
            net.start(i);
        }
        net.now = 0;
        let best = (0..n).max_by_key(|&i| prios[i]).unwrap();
        let bound = last_start + mdi(prios[best], interval) + 2 * u64::from(interval) * 10 * MS;
        net.run_until(bound);
        assert_eq!(
            net.masters(),
            vec![best],
            "seed {seed}: prios {prios:?}, history {:?}",
            net.history
        );
        let settled = net.now;
        net.run_until(settled + 50 * u64::from(interval) * 10 * MS);
        assert_eq!(
            net.masters(),
            vec![best],
            "seed {seed}: changed after settling"
        );
        assert_eq!(net.promotions_since(settled), 0, "seed {seed}");
    }
}

#[test]
fn equal_priorities_go_to_the_highest_address() {
    for seed in 0..50 {
        let n = 3;
        let mut net = Net::new(seed, (0..n).map(|i| config(i, 100, 100)).collect());
        for i in 0..n {
            net.start(i);
        }
        net.run_until(10 * SEC);
        assert_eq!(net.masters(), vec![n - 1], "seed {seed}: {:?}", net.history);
    }
}

#[test]
fn after_a_partition_heals_two_masters_last_less_than_one_master_down_interval() {
    for seed in 0..100 {
        let mut rng = Rng::new(seed + 7);
        let interval = [100u16, 10][rng.below(2) as usize];
        let prios = [200u8, 150, 100];
        let mut net = Net::new(
            seed,
            (0..3).map(|i| config(i, prios[i], interval)).collect(),
        );
        for i in 0..3 {
            net.start(i);
        }
        let t = u64::from(interval) * 10 * MS;
        net.run_until(10 * t);
        assert_eq!(net.masters(), vec![0]);
        // Cut the master off: the others elect r1 within the bound; two masters meanwhile.
        net.side = vec![1, 0, 0];
        net.run_until(10 * t + mdi(150, interval) + 3 * t);
        assert_eq!(net.masters(), vec![0, 1], "seed {seed}");
        let healed = net.now + rng.below(t);
        net.run_until(healed);
        net.side = vec![0, 0, 0];
        let end = healed + 20 * t;
        net.run_until(end);
        assert_eq!(net.masters(), vec![0], "seed {seed}: {:?}", net.history);
        let overlap = net.longest_multi_master_since(healed, end);
        assert!(
            overlap <= mdi(100, interval),
            "seed {seed}: two masters for {overlap} us after the heal"
        );
    }
}

#[test]
fn a_priority_zero_release_hands_over_within_skew_time_and_one_delivery() {
    for seed in 0..100 {
        let mut net = Net::new(
            seed,
            vec![
                config(0, 200, 100),
                config(1, 150, 100),
                config(2, 100, 100),
            ],
        );
        for i in 0..3 {
            net.start(i);
        }
        net.run_until(10 * SEC);
        assert_eq!(net.masters(), vec![0]);
        let released = net.now + Rng::new(seed).below(SEC);
        net.run_until(released);
        net.stop(0);
        net.run_until(released + 10 * SEC);
        assert_eq!(net.masters(), vec![1], "seed {seed}");
        let (took_over, _, _) = *net
            .history
            .iter()
            .find(|(t, i, s)| *t >= released && *i == 1 && *s == State::Master)
            .unwrap();
        let skew_150 = (256 - 150) * SEC / 256;
        let max_delivery = net.latency.1;
        assert!(
            took_over - released <= skew_150 + max_delivery,
            "seed {seed}: handover took {} us",
            took_over - released
        );
        // r2's shorter wait (skew of priority 100 is longer) never made it master.
        assert!(
            !net.history
                .iter()
                .any(|(t, i, s)| *t >= released && *i == 2 && *s == State::Master)
        );
    }
}

/// r0 (priority 100) is master; r1 (priority 200) starts at 10 s with the given settings.
fn late_higher_priority(seed: u64, preempt: bool, preempt_delay: u64) -> Net {
    let mut high = config(1, 200, 100);
    high.preempt = preempt;
    high.preempt_delay_us = preempt_delay;
    let mut net = Net::new(seed, vec![config(0, 100, 100), high]);
    net.start(0);
    net.run_until(10 * SEC);
    assert_eq!(net.masters(), vec![0]);
    net.start(1);
    net
}

fn became_master_at(net: &Net, i: usize) -> Option<u64> {
    net.history
        .iter()
        .find(|(_, r, s)| *r == i && *s == State::Master)
        .map(|(t, _, _)| *t)
}

#[test]
fn preempt_takes_over_from_a_lower_priority_master() {
    for seed in 0..30 {
        let mut net = late_higher_priority(seed, true, 0);
        net.run_until(70 * SEC);
        assert_eq!(net.masters(), vec![1]);
        let t = became_master_at(&net, 1).unwrap();
        assert!(
            t - 10 * SEC <= mdi(200, 100) + 2 * MS,
            "seed {seed}: preempted after {} us",
            t - 10 * SEC
        );
    }
}

#[test]
fn nopreempt_leaves_a_lower_priority_master_in_place() {
    for seed in 0..30 {
        let mut net = late_higher_priority(seed, false, 0);
        net.run_until(70 * SEC);
        assert_eq!(net.masters(), vec![0], "seed {seed}");
        assert_eq!(became_master_at(&net, 1), None);
    }
}

#[test]
fn preempt_delay_waits_then_preempts() {
    for seed in 0..30 {
        let mut net = late_higher_priority(seed, true, 20 * SEC);
        net.run_until(70 * SEC);
        assert_eq!(net.masters(), vec![1], "seed {seed}");
        let waited = became_master_at(&net, 1).unwrap() - 10 * SEC;
        assert!(
            waited >= 20 * SEC,
            "seed {seed}: preempted after {waited} us"
        );
        assert!(
            waited <= 20 * SEC + mdi(200, 100) + SEC + 2 * MS,
            "seed {seed}: {waited} us"
        );
    }
}

#[test]
fn backups_learn_the_masters_interval_and_fail_over_at_its_pace() {
    for seed in 0..30 {
        // The master advertises every 50 ms; the backups are configured for 1 s.
        let mut net = Net::new(
            seed,
            vec![config(0, 200, 5), config(1, 150, 100), config(2, 100, 100)],
        );
        net.start(0);
        net.run_until(SEC);
        net.start(1);
        net.start(2);
        net.run_until(5 * SEC);
        assert_eq!(net.masters(), vec![0]);
        for r in 1..3 {
            let st = &net.routers[r].engine.status()[0];
            assert_eq!(
                st.master_adver_interval_cs, 5,
                "seed {seed}: r{r} did not learn"
            );
        }
        let crash = net.now;
        net.crash(0);
        net.run_until(crash + 5 * SEC);
        assert_eq!(net.masters(), vec![1], "seed {seed}");
        let took = became_master_at(&net, 1).unwrap() - crash;
        // Learned: 3 x 50 ms + skew, far below 3 x 1 s.
        assert!(
            took <= mdi(150, 5) + 2 * MS,
            "seed {seed}: failover took {took} us"
        );
    }
}

#[test]
fn with_one_percent_loss_no_spurious_master_change_in_ten_thousand_intervals() {
    for seed in 0..3 {
        let mut net = Net::new(seed, vec![config(0, 200, 100), config(1, 100, 100)]);
        net.loss_ppm = 10_000;
        net.start(0);
        net.start(1);
        net.run_until(10 * SEC);
        assert_eq!(net.masters(), vec![0]);
        let settled = net.now;
        net.run_until(settled + 10_000 * SEC);
        assert_eq!(
            net.promotions_since(settled),
            0,
            "seed {seed}: {:?}",
            &net.history[..net.history.len().min(20)]
        );
        assert_eq!(net.masters(), vec![0]);
    }
}

#[test]
fn with_heavy_loss_the_simulation_does_see_flaps() {
    // The same scenario at 40% loss: proves the loss test above can fail.
    let mut net = Net::new(1, vec![config(0, 200, 100), config(1, 100, 100)]);
    net.loss_ppm = 400_000;
    net.start(0);
    net.start(1);
    net.run_until(10 * SEC);
    let settled = net.now;
    net.run_until(settled + 2_000 * SEC);
    assert!(net.promotions_since(settled) > 0);
}

#[test]
fn a_crashed_master_is_replaced_within_master_down_interval() {
    for seed in 0..50 {
        let mut net = Net::new(seed, vec![config(0, 200, 10), config(1, 150, 10)]);
        net.start(0);
        net.start(1);
        net.run_until(2 * SEC);
        let crash = net.now + Rng::new(seed).below(100 * MS);
        net.run_until(crash);
        net.crash(0);
        net.run_until(crash + SEC);
        let took = became_master_at(&net, 1).unwrap() - crash;
        assert!(took <= mdi(150, 10), "seed {seed}: {took} us");
        assert!(
            took >= mdi(150, 10) - 100 * MS - 2 * MS,
            "seed {seed}: too early: {took} us"
        );
    }
}

//! The pacer: a thread that sends the periodic adverts of steady masters, and meanwhile
//! writes the data plane's heartbeat, so that the event loop need not wake for them. A master
//! that nothing happens to sends the same bytes every interval; the engine hands them over
//! ([`crate::engine::Engine::take_paced`]) and takes them back before it does anything else
//! to the instance ([`crate::engine::Action::Unpace`]).
//!
//! The thread blocks on a condition variable until the next advert or heartbeat is due, sends,
//! and blocks again: one futex wait and one sendto per advert, no event loop, no epoll. The
//! loop then wakes only for its own deadlines (and the heartbeat clock's checks).
//!
//! A stuck loop must still be silenced as a dead one would be. The runtime's thread marks
//! when it parks (waits for input) and when it wakes ([`runtime_parked`],
//! [`runtime_unparked`]); a thread that has not parked for [`STALE`] and is not running either
//! (the kernel has it asleep in a call: a blocking write to a full pipe, a lock never
//! released, a hung file system) is stuck, and the pacer stops sending and stops the heartbeat
//! until it parks again: the data plane stops answering within the heartbeat limit, and peers
//! take over after Master_Down_Interval. A thread that runs all along (a flood of requests to
//! serve) is not stuck: the adverts go on. One that spins forever is left to the systemd
//! watchdog, which the loop feeds.

use std::{
    io,
    net::IpAddr,
    ops::Range,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::engine::InstanceKey;

/// How long the runtime's thread may go without parking before the pacer stops.
pub(super) const STALE: Duration = Duration::from_secs(3);

/// What the runtime's thread marks for the pacer.
pub(super) struct Marks {
    /// Since when the thread has been out of its wait for input (CLOCK_MONOTONIC ns),
    /// [`PARKED`] while it waits, 0 before it ever marked (nothing known: never stuck).
    busy_since: AtomicU64,
    /// The thread's id (0: not known yet).
    tid: AtomicU32,
}

impl Marks {
    pub(super) const fn new() -> Self {
        Self {
            busy_since: AtomicU64::new(0),
            tid: AtomicU32::new(0),
        }
    }

    fn parked(&self) {
        self.busy_since.store(PARKED, Ordering::Relaxed);
    }

    fn unparked(&self) {
        if self.tid.load(Ordering::Relaxed) == 0 {
            self.tid
                .store(nix::unistd::gettid().as_raw() as u32, Ordering::Relaxed);
        }
        self.busy_since
            .store(crate::dataplane::monotonic_ns().max(1), Ordering::Relaxed);
    }

    /// Whether the thread has been out of its wait for longer than `stale` and the kernel
    /// does not have it running (or its state cannot be read).
    fn stuck(&self, stale: Duration) -> bool {
        let busy = match self.busy_since.load(Ordering::Relaxed) {
            0 | PARKED => return false,
            since => crate::dataplane::monotonic_ns().saturating_sub(since),
        };
        busy > stale.as_nanos() as u64 && !running(self.tid.load(Ordering::Relaxed))
    }
}

/// The runtime's marks.
pub(super) static RUNTIME: Marks = Marks::new();

const PARKED: u64 = u64::MAX;

/// The runtime's `on_thread_park` hook.
pub fn runtime_parked() {
    RUNTIME.parked();
}

/// The runtime's `on_thread_unpark` hook.
pub fn runtime_unparked() {
    RUNTIME.unparked();
}

/// Whether the kernel has thread `tid` of this process running or runnable (state R).
fn running(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "R")
        })
        .unwrap_or(false)
}

/// Where paced adverts go out: a port's advert sockets.
pub(super) trait Wire: Send + Sync {
    /// Sends one advert (destination, VRRP message).
    fn send(&self, dst: IpAddr, bytes: &[u8]) -> io::Result<()>;
}

impl Wire for crate::sys::wire::AdvertSockets {
    fn send(&self, dst: IpAddr, bytes: &[u8]) -> io::Result<()> {
        crate::sys::wire::AdvertSockets::send(self, dst, bytes)
    }
}

/// Writes one data plane's heartbeat for a CLOCK_MONOTONIC time (ns).
pub(super) type Beat = Box<dyn Fn(u64) + Send>;

/// One master's adverts, as the engine handed them over. Entries of one port share its wire
/// (the same `Arc`).
pub(super) struct Entry {
    pub(super) key: InstanceKey,
    pub(super) wire: Arc<dyn Wire>,
    pub(super) adverts: Vec<(IpAddr, Vec<u8>)>,
    pub(super) every: Duration,
    pub(super) next: Instant,
}

/// One master's schedule. What it sends is in the [`Arena`]: a thread that wakes after an
/// interval asleep finds its caches cold, and the slots, the adverts and the wires each in one
/// block of memory are a few cache misses per wake-up where an allocation per advert was a few
/// per advert (with 64 masters, about a seventh of the pacer's CPU).
struct Slot {
    key: InstanceKey,
    next: Instant,
    every: Duration,
    /// Index of its wire in [`Arena::wires`].
    wire: usize,
    /// Its adverts in [`Arena::adverts`].
    adverts: Range<usize>,
    sent: u64,
    /// A send failed since the last success (logged once).
    failing: bool,
}

/// What the slots send: each advert's destination and bytes, and the wires.
#[derive(Default)]
struct Arena {
    /// Destination and the advert's bytes in [`Arena::bytes`].
    adverts: Vec<(IpAddr, Range<usize>)>,
    bytes: Vec<u8>,
    wires: Vec<Arc<dyn Wire>>,
}

impl Arena {
    /// Adds `adverts` to go out on `wire`: the wire's index and the adverts' range.
    fn add(&mut self, wire: Arc<dyn Wire>, adverts: &[(IpAddr, Vec<u8>)]) -> (usize, Range<usize>) {
        let wire = match self.wires.iter().position(|w| Arc::ptr_eq(w, &wire)) {
            Some(i) => i,
            None => {
                self.wires.push(wire);
                self.wires.len() - 1
            }
        };
        let start = self.adverts.len();
        for (dst, bytes) in adverts {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(bytes);
            self.adverts.push((*dst, at..self.bytes.len()));
        }
        (wire, start..self.adverts.len())
    }

    /// Keeps only what `slots` send (after a removal), and points them at where it now is.
    fn compact(&mut self, slots: &mut [Slot]) {
        let old = std::mem::take(self);
        for slot in slots {
            let adverts: Vec<_> = old.adverts[slot.adverts.clone()]
                .iter()
                .map(|(dst, r)| (*dst, old.bytes[r.clone()].to_vec()))
                .collect();
            (slot.wire, slot.adverts) = self.add(old.wires[slot.wire].clone(), &adverts);
        }
    }
}

struct State {
    slots: Vec<Slot>,
    arena: Arena,
    beats: Vec<Beat>,
    beat_every: Duration,
    last_beat: Option<Instant>,
    /// What the runtime's thread marks.
    marks: &'static Marks,
    stale: Duration,
    stalled: bool,
    quit: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// The pacer, as the event loop holds it. The thread starts with the first entry.
pub(super) struct Pacer {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
    /// The keys paced (the loop's own copy: asked on every wake-up without the lock).
    keys: Vec<InstanceKey>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic in the thread while it held the lock leaves the state as it was: usable.
    shared
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pacer {
    /// A pacer that writes the heartbeat every `beat_every` while it sends (half the
    /// heartbeat limit, as the loop does) and stops while the thread marking `marks` (the
    /// runtime's: [`RUNTIME`]) is stuck for `stale`.
    pub(super) fn new(beat_every: Duration, stale: Duration, marks: &'static Marks) -> Self {
        let state = State {
            slots: Vec::new(),
            arena: Arena::default(),
            beats: Vec::new(),
            beat_every: beat_every.max(Duration::from_millis(1)),
            last_beat: None,
            marks,
            stale,
            stalled: false,
            quit: false,
        };
        Self {
            shared: Arc::new((Mutex::new(state), Condvar::new())),
            thread: None,
            keys: Vec::new(),
        }
    }

    /// Whether any master's adverts are paced (the pacer then writes the heartbeat).
    pub(super) fn is_active(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Starts sending `entry`'s adverts from its `next` slot on.
    pub(super) fn add(&mut self, entry: Entry) -> io::Result<()> {
        if self.thread.is_none() {
            let shared = self.shared.clone();
            self.thread = Some(
                std::thread::Builder::new()
                    .name("xvrrp-pacer".into())
                    .spawn(move || run(&shared))?,
            );
        }
        if !self.keys.contains(&entry.key) {
            self.keys.push(entry.key);
        }
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        if st.slots.iter().any(|s| s.key == entry.key) {
            st.slots.retain(|s| s.key != entry.key);
            st.arena.compact(&mut st.slots);
        }
        let (wire, adverts) = st.arena.add(entry.wire, &entry.adverts);
        st.slots.push(Slot {
            key: entry.key,
            next: entry.next,
            every: entry.every,
            wire,
            adverts,
            sent: 0,
            failing: false,
        });
        drop(guard);
        self.shared.1.notify_one();
        Ok(())
    }

    /// Stops sending `key`'s adverts, after sending any slot due by now that the thread has
    /// not sent yet (so that none is skipped); how many it sent. None if it was not paced.
    pub(super) fn remove(&mut self, key: InstanceKey) -> Option<u64> {
        let at = self.keys.iter().position(|k| *k == key)?;
        self.keys.swap_remove(at);
        let mut st = lock(&self.shared);
        let st = &mut *st;
        let i = st.slots.iter().position(|s| s.key == key)?;
        let mut slot = st.slots.swap_remove(i);
        let now = Instant::now();
        if slot.next <= now && !st.stalled {
            send(&mut slot, &st.arena, now);
        }
        st.arena.compact(&mut st.slots);
        Some(slot.sent)
    }

    /// How many adverts the pacer has sent for `key` so far.
    pub(super) fn sent(&self, key: InstanceKey) -> u64 {
        if !self.keys.contains(&key) {
            return 0;
        }
        lock(&self.shared)
            .slots
            .iter()
            .find(|s| s.key == key)
            .map_or(0, |s| s.sent)
    }

    /// The heartbeats to write while anything is paced (one per data plane).
    pub(super) fn set_beats(&self, beats: Vec<Beat>) {
        lock(&self.shared).beats = beats;
    }

    /// Stops the thread; how many adverts it sent for each key still paced.
    pub(super) fn stop(&mut self) -> Vec<(InstanceKey, u64)> {
        let Some(thread) = self.thread.take() else {
            return Vec::new();
        };
        let mut st = lock(&self.shared);
        st.quit = true;
        let sent = st.slots.drain(..).map(|s| (s.key, s.sent)).collect();
        st.arena = Arena::default();
        st.beats.clear();
        drop(st);
        self.shared.1.notify_one();
        let _ = thread.join();
        self.keys.clear();
        // A stopped pacer can start again (a daemon that goes on after a stop of the loop).
        lock(&self.shared).quit = false;
        sent
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `slot`'s adverts, due by `now`, and moves it on to its next.
fn send(slot: &mut Slot, arena: &Arena, now: Instant) {
    let mut ok = true;
    let wire = &arena.wires[slot.wire];
    for (dst, bytes) in &arena.adverts[slot.adverts.clone()] {
        if let Err(err) = wire.send(*dst, &arena.bytes[bytes.clone()]) {
            ok = false;
            if !slot.failing {
                warn!(vrid = slot.key.vrid, %dst, error = %err, "cannot send advert");
            }
        }
    }
    slot.failing = !ok;
    slot.sent += 1;
    slot.next += slot.every;
    // Late by more than an interval (the host was frozen): one advert now, then on time.
    if slot.next <= now {
        slot.next = now + slot.every;
    }
}

/// The thread.
fn run(shared: &Shared) {
    let mut st = lock(shared);
    loop {
        if st.quit {
            return;
        }
        let now = Instant::now();
        if st.slots.is_empty() {
            st = shared.1.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        if st.marks.stuck(st.stale) {
            if !st.stalled {
                st.stalled = true;
                warn!(
                    stale_ms = st.stale.as_millis() as u64,
                    "the event loop's thread has been stuck in a call that long: the pacer stops sending adverts and the heartbeat until it waits for input again"
                );
            }
            let poll = st.beat_every;
            st = shared
                .1
                .wait_timeout(st, poll)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        if st.stalled {
            st.stalled = false;
            info!("the event loop's thread waits for input again: the pacer sends again");
        }
        let mut sent = false;
        let State { slots, arena, .. } = &mut *st;
        for slot in slots.iter_mut().filter(|s| s.next <= now) {
            send(slot, arena, now);
            sent = true;
        }
        let beat_every = st.beat_every;
        if sent || st.last_beat.is_none_or(|b| now >= b + beat_every / 4) {
            let ns = crate::dataplane::monotonic_ns();
            for beat in &st.beats {
                beat(ns);
            }
            st.last_beat = Some(now);
        }
        let next = st
            .slots
            .iter()
            .map(|s| s.next)
            .chain(st.last_beat.map(|b| b + beat_every))
            .min()
            .unwrap_or(now + beat_every);
        let wait = next.saturating_duration_since(Instant::now());
        st = shared
            .1
            .wait_timeout(st, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::engine::Family;

    fn key(vrid: u8) -> InstanceKey {
        InstanceKey {
            iface: 1,
            family: Family::V4,
            vrid,
        }
    }

    /// A wire that reports each advert and when it went out.
    struct Recorder(Mutex<mpsc::Sender<(Instant, Vec<u8>)>>);

    impl Wire for Recorder {
        fn send(&self, _: IpAddr, bytes: &[u8]) -> io::Result<()> {
            let _ = self
                .0
                .lock()
                .unwrap()
                .send((Instant::now(), bytes.to_vec()));
            Ok(())
        }
    }

    /// What a [`Recorder`] saw: each advert's bytes and when it went out.
    type Sent = mpsc::Receiver<(Instant, Vec<u8>)>;

    fn wire() -> (Arc<dyn Wire>, Sent) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Recorder(Mutex::new(tx))), rx)
    }

    fn entry(vrid: u8, wire: &Arc<dyn Wire>, every_ms: u64, next: Instant) -> Entry {
        Entry {
            key: key(vrid),
            wire: wire.clone(),
            adverts: vec![("224.0.0.18".parse().unwrap(), vec![vrid])],
            every: Duration::from_millis(every_ms),
            next,
        }
    }

    #[test]
    fn it_sends_every_interval_from_the_first_slot_and_beats_meanwhile() {
        let (wire, rx) = wire();
        let beats = Arc::new(AtomicU64::new(0));
        static MARKS: Marks = Marks::new();
        let mut pacer = Pacer::new(Duration::from_millis(40), STALE, &MARKS);
        let b = beats.clone();
        pacer.set_beats(vec![Box::new(move |_| {
            b.fetch_add(1, Ordering::Relaxed);
        })]);
        assert!(!pacer.is_active());
        let start = Instant::now();
        let first = start + Duration::from_millis(30);
        pacer.add(entry(7, &wire, 20, first)).unwrap();
        assert!(pacer.is_active());
        let times: Vec<Instant> = (0..10)
            .map(|_| rx.recv_timeout(Duration::from_secs(2)).expect("sent").0)
            .collect();
        // None before its slot (the first late by a little leaves the grid where it was, so
        // the span may be a little under nine intervals); ten within twice that (a slot
        // missed by more than an interval, on a loaded machine, moves the grid on).
        for (i, at) in times.iter().enumerate() {
            let slot = first + Duration::from_millis(20 * i as u64);
            assert!(
                *at >= slot,
                "advert {i} sent before its slot: {:?}",
                *at - start
            );
        }
        let span = times[9] - times[0];
        assert!(span < Duration::from_millis(400), "{span:?}");
        assert!(beats.load(Ordering::Relaxed) >= 10);
        let sent = pacer.remove(key(7)).expect("paced");
        assert!(sent >= 10, "{sent}");
        assert!(!pacer.is_active());
        // Nothing after its removal.
        while rx.try_recv().is_ok() {}
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(pacer.remove(key(7)), None);
    }

    type Adverts = Vec<(IpAddr, Vec<u8>)>;

    /// What each paced key sends, read back from the pacer's arena: (VRID, wire, adverts).
    fn sends(pacer: &Pacer) -> Vec<(u8, usize, Adverts)> {
        let st = lock(&pacer.shared);
        st.slots
            .iter()
            .map(|s| {
                let adverts = st.arena.adverts[s.adverts.clone()]
                    .iter()
                    .map(|(dst, r)| (*dst, st.arena.bytes[r.clone()].to_vec()))
                    .collect();
                (s.key.vrid, s.wire, adverts)
            })
            .collect()
    }

    #[test]
    fn masters_of_one_port_share_its_wire_and_a_removal_or_replacement_keeps_the_others_adverts() {
        static MARKS: Marks = Marks::new();
        let mut pacer = Pacer::new(Duration::from_secs(1), STALE, &MARKS);
        let ((one, _rx1), (two, _rx2)) = (wire(), wire());
        let later = Instant::now() + Duration::from_secs(60);
        let adverts = |vrid: u8| -> Adverts {
            vec![
                ("224.0.0.18".parse().unwrap(), vec![vrid; usize::from(vrid)]),
                ("192.0.2.9".parse().unwrap(), vec![vrid, 0xff]),
            ]
        };
        for (vrid, w) in [(1, &one), (2, &one), (3, &two), (4, &one)] {
            let mut e = entry(vrid, w, 1000, later);
            e.adverts = adverts(vrid);
            pacer.add(e).unwrap();
        }
        let got = sends(&pacer);
        assert_eq!(
            got.iter().map(|(v, w, _)| (*v, *w)).collect::<Vec<_>>(),
            [(1, 0), (2, 0), (3, 1), (4, 0)]
        );
        assert_eq!(lock(&pacer.shared).arena.wires.len(), 2);
        for (vrid, _, a) in &got {
            assert_eq!(*a, adverts(*vrid));
        }
        // The only master on wire two goes: its wire and bytes go, the others' stay theirs.
        assert_eq!(pacer.remove(key(3)), Some(0));
        // A master handed over again replaces what it sent.
        let mut e = entry(1, &one, 1000, later);
        e.adverts = adverts(9);
        pacer.add(e).unwrap();
        let got = sends(&pacer);
        assert_eq!(
            got.iter().map(|(v, w, _)| (*v, *w)).collect::<Vec<_>>(),
            [(2, 0), (4, 0), (1, 0)]
        );
        assert_eq!(got[0].2, adverts(2));
        assert_eq!(got[1].2, adverts(4));
        assert_eq!(got[2].2, adverts(9));
        let st = lock(&pacer.shared);
        assert_eq!(st.arena.wires.len(), 1);
        assert_eq!(st.arena.adverts.len(), 6);
        assert_eq!(st.arena.bytes.len(), (4 + 2) + (2 + 2) + (9 + 2));
    }

    #[test]
    fn removing_sends_a_slot_already_due_first() {
        let (wire, rx) = wire();
        static MARKS: Marks = Marks::new();
        let mut pacer = Pacer::new(Duration::from_millis(500), STALE, &MARKS);
        // Far ahead first, so the thread sleeps; then due at once, removed before it wakes
        // (or after: either way exactly one advert for the slot due).
        pacer
            .add(entry(
                1,
                &wire,
                1000,
                Instant::now() + Duration::from_secs(60),
            ))
            .unwrap();
        {
            let mut st = lock(&pacer.shared);
            st.slots[0].next = Instant::now();
        }
        assert_eq!(pacer.remove(key(1)), Some(1));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_ok());
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn a_runtime_thread_stuck_in_a_call_stops_the_adverts_and_the_heartbeat() {
        static MARKS: Marks = Marks::new();
        let (wire, rx) = wire();
        let beats = Arc::new(AtomicU64::new(0));
        let b = beats.clone();
        let mut pacer = Pacer::new(
            Duration::from_millis(20),
            Duration::from_millis(150),
            &MARKS,
        );
        pacer.set_beats(vec![Box::new(move |_| {
            b.fetch_add(1, Ordering::Relaxed);
        })]);
        pacer.add(entry(2, &wire, 10, Instant::now())).unwrap();
        // This thread plays the runtime's. Parking and waking as an idle loop does: adverts
        // throughout.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            MARKS.unparked();
            MARKS.parked();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(rx.try_iter().count() >= 20);
        // Parked for long: waiting is not being stuck.
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_iter().count() >= 20);
        // Running without parking (serving a flood) is not being stuck either.
        MARKS.unparked();
        let spin = Instant::now() + Duration::from_millis(400);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        assert!(
            rx.try_iter().count() >= 20,
            "a busy thread stopped the adverts"
        );
        // Out of its wait and asleep in a call (this sleep): at most the stale time's worth,
        // then nothing.
        std::thread::sleep(Duration::from_millis(300));
        rx.try_iter().count();
        let beaten = beats.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rx.try_iter().count(), 0, "adverts from a stalled pacer");
        assert_eq!(beats.load(Ordering::Relaxed), beaten);
        // Parked again: it goes on.
        MARKS.parked();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_ok());
        let sent = pacer.stop();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].1 >= 20);
        assert!(!pacer.is_active());
    }
}

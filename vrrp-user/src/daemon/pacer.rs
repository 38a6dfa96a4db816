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
//! [`runtime_unparked`]); a thread that has not parked for [`STALE`] is stuck (blocked in a
//! call, or spinning), and the pacer stops sending and stops the heartbeat until it parks
//! again: the data plane stops answering within the heartbeat limit, and peers take over
//! after Master_Down_Interval. (Busy with a flood of requests, the thread still parks between
//! them.)

use std::{
    io,
    net::IpAddr,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::engine::InstanceKey;

/// How long the runtime's thread may go without parking before the pacer stops.
pub(super) const STALE: Duration = Duration::from_secs(3);

/// Since when the runtime's thread has been running (CLOCK_MONOTONIC ns), [`PARKED`] while it
/// waits for input, 0 before the hooks ever ran (nothing known: never stuck).
pub(super) static RUNTIME_BUSY_SINCE: AtomicU64 = AtomicU64::new(0);

const PARKED: u64 = u64::MAX;

/// The runtime's `on_thread_park` hook.
pub fn runtime_parked() {
    RUNTIME_BUSY_SINCE.store(PARKED, Ordering::Relaxed);
}

/// The runtime's `on_thread_unpark` hook.
pub fn runtime_unparked() {
    RUNTIME_BUSY_SINCE.store(crate::dataplane::monotonic_ns().max(1), Ordering::Relaxed);
}

/// Whether the thread marking `busy_since` has run without parking for longer than `stale`.
fn stuck(busy_since: &AtomicU64, stale: Duration) -> bool {
    match busy_since.load(Ordering::Relaxed) {
        0 | PARKED => false,
        since => crate::dataplane::monotonic_ns().saturating_sub(since) > stale.as_nanos() as u64,
    }
}

/// Sends one advert (destination, VRRP message).
pub(super) type Wire = Arc<dyn Fn(IpAddr, &[u8]) -> io::Result<()> + Send + Sync>;

/// Writes one data plane's heartbeat for a CLOCK_MONOTONIC time (ns).
pub(super) type Beat = Box<dyn Fn(u64) + Send>;

/// One master's adverts, as the engine handed them over.
pub(super) struct Entry {
    pub(super) key: InstanceKey,
    pub(super) wire: Wire,
    pub(super) adverts: Vec<(IpAddr, Vec<u8>)>,
    pub(super) every: Duration,
    pub(super) next: Instant,
}

struct Slot {
    entry: Entry,
    sent: u64,
    /// A send failed since the last success (logged once).
    failing: bool,
}

struct State {
    slots: Vec<Slot>,
    beats: Vec<Beat>,
    beat_every: Duration,
    last_beat: Option<Instant>,
    /// Since when the runtime's thread has run without parking.
    busy_since: &'static AtomicU64,
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
    /// heartbeat limit, as the loop does) and stops while the thread marking `busy_since`
    /// (the runtime's: [`RUNTIME_BUSY_SINCE`]) has run without parking for `stale`.
    pub(super) fn new(
        beat_every: Duration,
        stale: Duration,
        busy_since: &'static AtomicU64,
    ) -> Self {
        let state = State {
            slots: Vec::new(),
            beats: Vec::new(),
            beat_every: beat_every.max(Duration::from_millis(1)),
            last_beat: None,
            busy_since,
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
        self.keys.push(entry.key);
        let mut st = lock(&self.shared);
        st.slots.retain(|s| s.entry.key != entry.key);
        st.slots.push(Slot {
            entry,
            sent: 0,
            failing: false,
        });
        drop(st);
        self.shared.1.notify_one();
        Ok(())
    }

    /// Stops sending `key`'s adverts, after sending any slot due by now that the thread has
    /// not sent yet (so that none is skipped); how many it sent. None if it was not paced.
    pub(super) fn remove(&mut self, key: InstanceKey) -> Option<u64> {
        let at = self.keys.iter().position(|k| *k == key)?;
        self.keys.swap_remove(at);
        let mut st = lock(&self.shared);
        let i = st.slots.iter().position(|s| s.entry.key == key)?;
        let mut slot = st.slots.swap_remove(i);
        if slot.entry.next <= Instant::now() && !st.stalled {
            send(&mut slot);
        }
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
            .find(|s| s.entry.key == key)
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
        let sent = st.slots.drain(..).map(|s| (s.entry.key, s.sent)).collect();
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

fn send(slot: &mut Slot) {
    let mut ok = true;
    for (dst, bytes) in &slot.entry.adverts {
        if let Err(err) = (slot.entry.wire)(*dst, bytes) {
            ok = false;
            if !slot.failing {
                let key = slot.entry.key;
                warn!(vrid = key.vrid, %dst, error = %err, "cannot send advert");
            }
        }
    }
    slot.failing = !ok;
    slot.sent += 1;
    let now = Instant::now();
    slot.entry.next += slot.entry.every;
    // Late by more than an interval (the host was frozen): one advert now, then on time.
    if slot.entry.next <= now {
        slot.entry.next = now + slot.entry.every;
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
        if stuck(st.busy_since, st.stale) {
            if !st.stalled {
                st.stalled = true;
                warn!(
                    stale_ms = st.stale.as_millis() as u64,
                    "the event loop's thread has not waited for input in that long: the pacer stops sending adverts and the heartbeat until it does"
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
        for slot in st.slots.iter_mut().filter(|s| s.entry.next <= now) {
            send(slot);
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
            .map(|s| s.entry.next)
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
    fn wire() -> (Wire, mpsc::Receiver<(Instant, Vec<u8>)>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let wire: Wire = Arc::new(move |_, bytes: &[u8]| {
            let _ = tx.lock().unwrap().send((Instant::now(), bytes.to_vec()));
            Ok(())
        });
        (wire, rx)
    }

    fn entry(vrid: u8, wire: &Wire, every_ms: u64, next: Instant) -> Entry {
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
        let beats = Arc::new(std::sync::atomic::AtomicU64::new(0));
        static BUSY: AtomicU64 = AtomicU64::new(0);
        let mut pacer = Pacer::new(Duration::from_millis(40), STALE, &BUSY);
        let b = beats.clone();
        pacer.set_beats(vec![Box::new(move |_| {
            b.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })]);
        assert!(!pacer.is_active());
        let start = Instant::now();
        let first = start + Duration::from_millis(30);
        pacer.add(entry(7, &wire, 20, first)).unwrap();
        assert!(pacer.is_active());
        let times: Vec<Instant> = (0..10)
            .map(|_| rx.recv_timeout(Duration::from_secs(2)).expect("sent").0)
            .collect();
        // None before its first slot; ten in about nine intervals (on a grid, no drift).
        assert!(times[0] >= first, "{:?}", times[0] - start);
        let span = times[9] - times[0];
        assert!(
            span >= Duration::from_millis(180) && span < Duration::from_millis(260),
            "{span:?}"
        );
        assert!(beats.load(std::sync::atomic::Ordering::Relaxed) >= 10);
        let sent = pacer.remove(key(7)).expect("paced");
        assert!(sent >= 10, "{sent}");
        assert!(!pacer.is_active());
        // Nothing after its removal.
        while rx.try_recv().is_ok() {}
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(pacer.remove(key(7)), None);
    }

    #[test]
    fn removing_sends_a_slot_already_due_first() {
        let (wire, rx) = wire();
        static BUSY: AtomicU64 = AtomicU64::new(0);
        let mut pacer = Pacer::new(Duration::from_millis(500), STALE, &BUSY);
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
            st.slots[0].entry.next = Instant::now();
        }
        assert_eq!(pacer.remove(key(1)), Some(1));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_ok());
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn a_runtime_thread_that_does_not_park_stops_the_adverts_and_the_heartbeat() {
        static BUSY: AtomicU64 = AtomicU64::new(0);
        let (wire, rx) = wire();
        let beats = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let b = beats.clone();
        let mut pacer = Pacer::new(Duration::from_millis(20), Duration::from_millis(150), &BUSY);
        pacer.set_beats(vec![Box::new(move |_| {
            b.fetch_add(1, Ordering::Relaxed);
        })]);
        pacer.add(entry(2, &wire, 10, Instant::now())).unwrap();
        // Parking and waking as an idle loop does: adverts throughout.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            BUSY.store(crate::dataplane::monotonic_ns(), Ordering::Relaxed);
            BUSY.store(PARKED, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(rx.try_iter().count() >= 20);
        // Parked for long: still not stuck.
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_iter().count() >= 20);
        // Woken and never parked again: at most the stale time's worth, then nothing.
        BUSY.store(crate::dataplane::monotonic_ns(), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        rx.try_iter().count();
        let beaten = beats.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rx.try_iter().count(), 0, "adverts from a stalled pacer");
        assert_eq!(beats.load(Ordering::Relaxed), beaten);
        // Parked again: it goes on.
        BUSY.store(PARKED, Ordering::Relaxed);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_ok());
        let sent = pacer.stop();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].1 >= 20);
        assert!(!pacer.is_active());
    }
}

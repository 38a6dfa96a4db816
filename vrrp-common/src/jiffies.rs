//! The kernel's jiffies, which the request gate reads (`bpf_jiffies64`, inlined by the verifier:
//! cheaper than any clock helper), and how the daemon turns its own clock into them.
//!
//! The kernel advances jiffies by one every `TICK_NSEC` nanoseconds of `CLOCK_MONOTONIC`
//! (exactly: the tick code counts whole periods of that clock), so a jiffies value seen at a
//! known time and the tick length give jiffies at any later time. Neither HZ nor the phase of
//! the tick is published, so the daemon measures them: it samples (jiffies, CLOCK_MONOTONIC)
//! pairs with a tiny program until two changes of jiffies in a row each leave exactly the same
//! one of the HZ values the kernel can be built with fitting the time since a first change.
//!
//! With the right tick length every estimate here errs low (never more jiffies than the kernel
//! has), so a deadline made from it never keeps the gate open longer than the heartbeat limit
//! allows. A wrong one (a change seen late by an unlucky amount at measurement) runs 2.4% or
//! more off and shows at the daemon's next check of the clock, a second later.

/// The CONFIG_HZ values Linux can be built with, across architectures.
pub const HZ_CHOICES: [u64; 15] = [
    24, 32, 48, 64, 100, 128, 200, 250, 256, 300, 500, 512, 1000, 1024, 1200,
];

/// Nanoseconds per jiffy at `hz`, rounded as the kernel's `TICK_NSEC`.
pub const fn tick_ns(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// How CLOCK_MONOTONIC maps to jiffies. Host byte order; kept in the heartbeat entry so that
/// the next daemon of a hitless restart can go on writing deadlines before it has measured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JiffyClock {
    /// Nanoseconds per jiffy (the kernel's TICK_NSEC); 0 while not measured.
    pub tick_ns: u64,
    /// A jiffies value ...
    pub jiffies: u64,
    /// ... that the kernel's jiffies had reached by this CLOCK_MONOTONIC time (ns).
    pub mono_ns: u64,
}

/// What a fresh sample says about a [`JiffyClock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The sample agrees (within the jiffy the clock may lag and the one that may pass between
    /// the sample's two reads).
    Agrees,
    /// The kernel is one jiffy further on than the clock says: the sample is a better anchor.
    Behind,
    /// The clock and the kernel disagree by more: measure again.
    Off,
}

impl JiffyClock {
    /// At most the kernel's jiffies at `mono_ns` (0 while not measured).
    pub const fn at(&self, mono_ns: u64) -> u64 {
        if self.tick_ns == 0 {
            return 0;
        }
        if mono_ns >= self.mono_ns {
            self.jiffies + (mono_ns - self.mono_ns) / self.tick_ns
        } else {
            self.jiffies
                .saturating_sub((self.mono_ns - mono_ns).div_ceil(self.tick_ns))
        }
    }

    /// The gate's deadline for a heartbeat at `mono_ns`: requests are answered while the
    /// kernel's jiffies are at most this, that is for `limit_ns` rounded down to whole jiffies
    /// after the jiffy the heartbeat fell in (what a comparison of two readings of the
    /// tick-driven coarse clock gives). 0 (never open) while not measured.
    pub const fn deadline(&self, mono_ns: u64, limit_ns: u64) -> u64 {
        if self.tick_ns == 0 {
            return 0;
        }
        self.at(mono_ns) + limit_ns / self.tick_ns
    }

    /// Compares the clock with a sample: `jiffies` read, then CLOCK_MONOTONIC `mono_ns`. The
    /// kernel's jiffies at `mono_ns` are `jiffies` or one more, and a right clock says those or
    /// one less.
    pub const fn check(&self, jiffies: u64, mono_ns: u64) -> Check {
        let predicted = self.at(mono_ns);
        if predicted == jiffies + 1 || predicted == jiffies {
            Check::Agrees
        } else if predicted + 1 == jiffies {
            Check::Behind
        } else {
            Check::Off
        }
    }

    /// The clock to go on with after the sample (`jiffies` read, then `mono_ns`) said `check`:
    /// the same one, the sample as its better anchor, or None: measure again.
    pub const fn after(self, check: Check, jiffies: u64, mono_ns: u64) -> Option<Self> {
        match check {
            Check::Agrees => Some(self),
            Check::Behind => Some(Self {
                jiffies,
                mono_ns,
                ..self
            }),
            Check::Off => None,
        }
    }
}

/// How long after measuring the daemon first checks the clock against a fresh sample: a tick
/// length measured wrong (the nearest other HZ is 2.4% off) shows by then.
pub const CHECK_FIRST_NS: u64 = 1_000_000_000;
/// The longest time between two checks. A tick length measured right stays right (the kernel
/// counts whole ticks of the same monotonic clock), so the later checks are a guard; each
/// wakes the event loop of an idle paced master (a millisecond or two of CPU on cold caches,
/// its biggest cost after its adverts).
pub const CHECK_MAX_NS: u64 = 64_000_000_000;

/// The time to the check after one that said `check`, the last having come `every_ns` after
/// the one before: twice as long after a clock that held, up to [`CHECK_MAX_NS`]; back to
/// [`CHECK_FIRST_NS`] after one measured again.
pub const fn next_check_in(every_ns: u64, check: Check) -> u64 {
    match check {
        Check::Off => CHECK_FIRST_NS,
        Check::Agrees | Check::Behind => {
            let twice = every_ns.saturating_mul(2);
            if twice < CHECK_MAX_NS {
                twice
            } else {
                CHECK_MAX_NS
            }
        }
    }
}

/// How late the kernel may move jiffies on at a tick (interrupt latency), allowed for on
/// both changes a measurement spans.
pub const TICK_JITTER_NS: u64 = 50_000;

/// Measures a [`JiffyClock`] from samples taken in a row, each (jiffies read, then
/// CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    last: Option<(u64, u64)>,
    /// The change measured from: the sample before it and the first sample after it.
    first: Option<((u64, u64), (u64, u64))>,
    /// The one tick length that fitted at the last change, to be confirmed by the next.
    fit: Option<u64>,
}

impl Calibration {
    pub const fn new() -> Self {
        Self {
            last: None,
            first: None,
            fit: None,
        }
    }

    /// Adds the next sample; the clock once two changes in a row each pin the tick length to
    /// the same one of [`HZ_CHOICES`] (three changes with samples close together, more where
    /// they are not: the window narrows with every tick since the change measured from). A
    /// window no HZ fits (a change seen later than the allowance, say the VM was descheduled)
    /// starts the measurement again from the latest change; a late change that makes one wrong
    /// HZ fit does not make it fit at the next change too, but for a narrow band of delays
    /// (and the daemon checks the clock again a second later).
    pub fn push(&mut self, jiffies: u64, mono_ns: u64) -> Option<JiffyClock> {
        let sample = (jiffies, mono_ns);
        let last = self.last.replace(sample)?;
        if jiffies <= last.0 || mono_ns <= last.1 {
            return None;
        }
        let Some((before_a, a)) = self.first else {
            self.first = Some((last, sample));
            return None;
        };
        // Jiffies reached a.0 at some time in (before_a.1, a.1], and `jiffies` at some time in
        // (last.1, mono_ns], each perhaps a little late: whole ticks apart.
        let ticks = jiffies - a.0;
        let shortest = (last.1.saturating_sub(a.1 + TICK_JITTER_NS)) / ticks;
        let longest = (mono_ns + TICK_JITTER_NS - before_a.1).div_ceil(ticks);
        let mut fits = HZ_CHOICES
            .iter()
            .map(|hz| tick_ns(*hz))
            .filter(|t| (shortest..=longest).contains(t));
        match (fits.next(), fits.next()) {
            (Some(tick_ns), None) if self.fit == Some(tick_ns) => Some(JiffyClock {
                tick_ns,
                jiffies,
                mono_ns,
            }),
            (Some(tick_ns), None) => {
                self.fit = Some(tick_ns);
                None
            }
            (None, _) => {
                self.first = Some((last, sample));
                self.fit = None;
                None
            }
            (Some(_), Some(_)) => {
                self.fit = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's jiffies at `mono` for a tick starting at `phase`.
    fn kernel(hz: u64, phase: u64, mono: u64) -> u64 {
        1_000 + (mono - phase) / tick_ns(hz)
    }

    /// Samples every `gap` ns from `start` until the calibration answers.
    fn measure(hz: u64, phase: u64, start: u64, gap: u64) -> (JiffyClock, u64) {
        let mut cal = Calibration::new();
        let mut mono = start;
        loop {
            if let Some(clock) = cal.push(kernel(hz, phase, mono), mono) {
                return (clock, mono - start);
            }
            mono += gap;
            assert!(mono - start < 1_000_000_000, "no answer at HZ {hz}");
        }
    }

    #[test]
    fn every_hz_is_told_apart_within_a_few_ticks() {
        for hz in HZ_CHOICES {
            for (phase, gap) in [(0, 2_000), (1_234_567, 3_000), (999, 20_000)] {
                let start = 50_000_000;
                let (clock, took) = measure(hz, phase, start, gap);
                assert_eq!(clock.tick_ns, tick_ns(hz), "HZ {hz}");
                // Two changes, or more where the allowance for a late tick leaves two HZ
                // values close together (250 and 256, 1000 and 1024) both in the window.
                assert!(took <= 8 * tick_ns(hz), "HZ {hz} took {took} ns");
                // It never runs ahead of the kernel, and is at most a jiffy behind, at any
                // later time.
                for later in (0..5_000_000_000u64).step_by(7_777_777) {
                    let mono = start + took + later;
                    let (ours, theirs) = (clock.at(mono), kernel(hz, phase, mono));
                    assert!(ours <= theirs && theirs <= ours + 1, "HZ {hz} at {mono}");
                    assert_ne!(clock.check(theirs, mono), Check::Off);
                }
            }
        }
    }

    #[test]
    fn samples_far_apart_wait_for_more_ticks() {
        let (hz, tick) = (250, tick_ns(250));
        let mut cal = Calibration::new();
        // Samples 3 ms apart: two changes leave 250 and 256 both in the window.
        let mut answer = None;
        let mut m = tick / 2;
        let mut changes = 0;
        while answer.is_none() {
            answer = cal.push(kernel(hz, 0, m), m);
            changes = kernel(hz, 0, m) - kernel(hz, 0, tick / 2);
            m += 3_000_000;
            assert!(m < 2_000_000_000, "no answer");
        }
        assert_eq!(answer.map(|c| c.tick_ns), Some(tick));
        assert!(changes > 2, "settled after {changes} changes");
    }

    #[test]
    fn a_change_seen_late_beyond_the_allowance_restarts_the_measurement() {
        // The first change is seen 100 us late (the sampler was descheduled): measured from
        // it, 256 Hz fits at the next change, and nothing at the one after; from there on the
        // ticks are on time and 250 Hz is confirmed.
        let tick = tick_ns(250);
        let mut cal = Calibration::new();
        let mut answer = None;
        let mut m = tick / 2;
        let mut changes_seen = 0;
        let mut last = 0;
        while answer.is_none() && m < 1_000_000_000 {
            let j = 1_000 + m / tick;
            let late = j == 1_001 && m % tick < 100_000;
            let seen = if late { j - 1 } else { j };
            if seen != last {
                changes_seen += 1;
                last = seen;
            }
            answer = cal.push(seen, m);
            m += 2_000;
        }
        assert_eq!(answer.map(|c| c.tick_ns), Some(tick));
        // The first sample, the late change, 256 Hz fitting, nothing fitting (measured again
        // from there), then a fit confirmed at the next change.
        assert_eq!(changes_seen, 6, "answered after {changes_seen} values");
    }

    #[test]
    fn a_late_tick_within_the_allowance_is_still_measured_right() {
        for hz in [250, 1000] {
            let tick = tick_ns(hz);
            let mut cal = Calibration::new();
            let mut answer = None;
            let mut m = 0;
            while answer.is_none() && m < 1_000_000_000 {
                // Every other change comes 40 us late.
                let j = m / tick;
                let late = if j % 2 == 1 && m % tick < 40_000 {
                    1
                } else {
                    0
                };
                answer = cal.push(1_000 + j - late, m);
                m += 2_000;
            }
            assert_eq!(answer.map(|c| c.tick_ns), Some(tick), "HZ {hz}");
        }
    }

    #[test]
    fn deadlines_round_the_limit_down_to_whole_jiffies() {
        let clock = JiffyClock {
            tick_ns: 4_000_000,
            jiffies: 100,
            mono_ns: 1_000_000_000,
        };
        assert_eq!(clock.at(1_000_000_000 + 3_999_999), 100);
        assert_eq!(clock.at(1_000_000_000 + 4_000_000), 101);
        assert_eq!(
            clock.at(1_000_000_000 - 1),
            99,
            "before the anchor: errs low"
        );
        assert_eq!(clock.deadline(1_000_000_000, 250_000_000), 100 + 62);
        assert_eq!(
            clock.deadline(1_000_000_000, 3_000_000),
            100,
            "under a jiffy"
        );
        assert_eq!(JiffyClock::default().deadline(1, u64::MAX / 2), 0);
    }

    #[test]
    fn checks_double_from_a_second_to_every_64_s_and_start_over_after_a_measurement() {
        let mut every = CHECK_FIRST_NS;
        let mut at = every;
        let mut times = vec![at];
        for _ in 0..8 {
            every = next_check_in(every, Check::Agrees);
            at += every;
            times.push(at);
        }
        let secs: Vec<u64> = times.iter().map(|t| t / 1_000_000_000).collect();
        assert_eq!(secs, [1, 3, 7, 15, 31, 63, 127, 191, 255]);
        assert_eq!(next_check_in(CHECK_MAX_NS, Check::Behind), CHECK_MAX_NS);
        assert_eq!(next_check_in(CHECK_MAX_NS, Check::Off), CHECK_FIRST_NS);
        assert_eq!(next_check_in(u64::MAX, Check::Agrees), CHECK_MAX_NS);
    }

    #[test]
    fn a_clock_measured_right_holds_over_a_week_of_checks_at_the_longest_interval() {
        for hz in HZ_CHOICES {
            let phase = 777_777;
            let start = 10_000_000;
            let (mut clock, took) = measure(hz, phase, start, 5_000);
            let mut mono = start + took;
            let mut every = CHECK_FIRST_NS;
            let mut checks = 0;
            while mono < start + 7 * 24 * 3600 * 1_000_000_000 {
                mono += every;
                // The sample's two reads straddle a little time (a tick may fall between).
                let jiffies = kernel(hz, phase, mono - 3_000);
                let check = clock.check(jiffies, mono);
                assert_ne!(check, Check::Off, "HZ {hz} after {mono} ns");
                clock = clock.after(check, jiffies, mono).expect("not off");
                every = next_check_in(every, check);
                checks += 1;
                // Never ahead of the kernel, at most a jiffy behind.
                let theirs = kernel(hz, phase, mono);
                assert!(clock.at(mono) <= theirs && theirs - clock.at(mono) <= 1);
            }
            assert!(checks > 9_000, "HZ {hz}: {checks} checks");
        }
    }

    #[test]
    fn a_sample_one_jiffy_on_is_a_better_anchor_and_further_a_fault() {
        let clock = JiffyClock {
            tick_ns: 4_000_000,
            jiffies: 100,
            mono_ns: 0,
        };
        assert_eq!(clock.check(125, 100_000_000), Check::Agrees);
        assert_eq!(
            clock.check(124, 100_000_000),
            Check::Agrees,
            "a tick between reads"
        );
        assert_eq!(clock.check(126, 100_000_000), Check::Behind);
        assert_eq!(
            clock.check(127, 100_000_000),
            Check::Off,
            "the clock runs slow"
        );
        assert_eq!(
            clock.check(123, 100_000_000),
            Check::Off,
            "the clock runs fast"
        );
        assert_eq!(clock.after(Check::Agrees, 125, 100_000_000), Some(clock));
        let anchored = clock
            .after(Check::Behind, 126, 100_000_000)
            .expect("anchor");
        assert_eq!((anchored.jiffies, anchored.mono_ns), (126, 100_000_000));
        assert_eq!(anchored.tick_ns, clock.tick_ns);
        assert_eq!(clock.after(Check::Off, 127, 100_000_000), None);
    }
}

//! When a new master announces its VIPs (gratuitous ARP for IPv4, unsolicited neighbour
//! advertisements for IPv6), with keepalived's knobs: a burst at once, a second burst after a
//! delay, periodic refreshes, and pacing between messages. Demotion stops it at once.

use std::{collections::BTreeMap, net::IpAddr};

use super::Time;

/// The announcement policy of one instance. Durations in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnouncePolicy {
    /// Delay of the second burst after becoming master (keepalived `garp_master_delay`,
    /// default 5 s); 0 for none.
    pub delay_us: u64,
    /// Announcements per VIP in each burst (`garp_master_repeat`, default 5).
    pub repeat: u32,
    /// Period of refresh bursts while master (`garp_master_refresh`); 0 for none.
    pub refresh_us: u64,
    /// Announcements per VIP in each refresh burst (`garp_master_refresh_repeat`, default 1).
    pub refresh_repeat: u32,
    /// Gap between two announcements (`garp_interval` / `gna_interval`); 0 sends a burst at once.
    pub pacing_us: u64,
    /// Announcements per VIP when a master hears a lower-priority advert
    /// (`garp_lower_prio_repeat`, keepalived's default `garp_master_repeat`); 0 for none.
    pub lower_prio_repeat: u32,
    /// Delay of the second such burst (`garp_lower_prio_delay`, keepalived's default
    /// `garp_master_delay`); 0 for none.
    pub lower_prio_delay_us: u64,
}

impl Default for AnnouncePolicy {
    fn default() -> Self {
        Self {
            delay_us: 5_000_000,
            repeat: 5,
            refresh_us: 0,
            refresh_repeat: 1,
            pacing_us: 0,
            lower_prio_repeat: 5,
            lower_prio_delay_us: 5_000_000,
        }
    }
}

/// The pending announcements of one instance.
#[derive(Clone, Debug, Default)]
pub(crate) struct Announcer {
    queue: BTreeMap<(Time, u64), IpAddr>,
    seq: u64,
    next_refresh: Option<Time>,
}

impl Announcer {
    pub fn start(&mut self, now: Time, vips: &[IpAddr], policy: &AnnouncePolicy) {
        self.stop();
        self.bursts(
            now,
            vips,
            (policy.repeat, policy.delay_us),
            policy.pacing_us,
        );
        self.next_refresh = (policy.refresh_us > 0).then(|| now.plus(policy.refresh_us));
    }

    pub fn stop(&mut self) {
        self.queue.clear();
        self.next_refresh = None;
    }

    /// A master heard a lower-priority advert: a burst now and another after the delay (as
    /// keepalived does at every such advert).
    pub fn lower_priority_heard(&mut self, now: Time, vips: &[IpAddr], policy: &AnnouncePolicy) {
        let second = (policy.lower_prio_repeat, policy.lower_prio_delay_us);
        self.bursts(now, vips, second, policy.pacing_us);
    }

    /// A burst of `repeat` announcements per VIP now, and another `delay_us` later (none when
    /// 0).
    fn bursts(
        &mut self,
        now: Time,
        vips: &[IpAddr],
        (repeat, delay_us): (u32, u64),
        pacing_us: u64,
    ) {
        self.burst(now, vips, repeat, pacing_us);
        if delay_us > 0 {
            self.burst(now.plus(delay_us), vips, repeat, pacing_us);
        }
    }

    fn burst(&mut self, at: Time, vips: &[IpAddr], repeat: u32, pacing_us: u64) {
        let mut t = at;
        for _ in 0..repeat {
            for vip in vips {
                self.queue.insert((t, self.seq), *vip);
                self.seq += 1;
                t = t.plus(pacing_us);
            }
        }
    }

    pub fn next_due(&self) -> Option<Time> {
        let queued = self.queue.keys().next().map(|(t, _)| *t);
        match (queued, self.next_refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The announcements due at `now`, in order.
    pub fn poll(&mut self, now: Time, vips: &[IpAddr], policy: &AnnouncePolicy) -> Vec<IpAddr> {
        if let Some(refresh) = self.next_refresh
            && refresh <= now
        {
            self.burst(now, vips, policy.refresh_repeat, policy.pacing_us);
            self.next_refresh = Some(refresh.plus(policy.refresh_us));
        }
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn vips(n: u8) -> Vec<IpAddr> {
        (1..=n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
            .collect()
    }

    /// Every announcement with its time, polling at every due time up to `until`.
    fn run(policy: AnnouncePolicy, vips: &[IpAddr], until: u64) -> Vec<(u64, IpAddr)> {
        let mut a = Announcer::default();
        a.start(Time(0), vips, &policy);
        let mut out = Vec::new();
        while let Some(t) = a.next_due() {
            if t.0 > until {
                break;
            }
            for vip in a.poll(t, vips, &policy) {
                out.push((t.0, vip));
            }
        }
        out
    }

    #[test]
    fn keepalived_defaults_send_two_bursts_of_five() {
        let v = vips(2);
        let sent = run(AnnouncePolicy::default(), &v, 60_000_000);
        assert_eq!(sent.len(), 20);
        assert!(sent[..10].iter().all(|(t, _)| *t == 0));
        assert!(sent[10..].iter().all(|(t, _)| *t == 5_000_000));
        // VIPs alternate within a burst.
        assert_eq!(sent[0].1, v[0]);
        assert_eq!(sent[1].1, v[1]);
    }

    #[test]
    fn pacing_spaces_every_message() {
        let v = vips(3);
        let policy = AnnouncePolicy {
            delay_us: 0,
            repeat: 2,
            pacing_us: 1_000,
            ..Default::default()
        };
        let times: Vec<u64> = run(policy, &v, 1_000_000).iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![0, 1_000, 2_000, 3_000, 4_000, 5_000]);
    }

    #[test]
    fn refresh_repeats_while_master() {
        let v = vips(1);
        let policy = AnnouncePolicy {
            delay_us: 0,
            repeat: 1,
            refresh_us: 10_000_000,
            refresh_repeat: 2,
            pacing_us: 0,
            ..AnnouncePolicy::default()
        };
        let times: Vec<u64> = run(policy, &v, 35_000_000)
            .iter()
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            times,
            vec![
                0, 10_000_000, 10_000_000, 20_000_000, 20_000_000, 30_000_000, 30_000_000
            ]
        );
    }

    #[test]
    fn stop_drops_everything_pending() {
        let v = vips(4);
        let policy = AnnouncePolicy {
            refresh_us: 1_000_000,
            ..Default::default()
        };
        let mut a = Announcer::default();
        a.start(Time(0), &v, &policy);
        assert_eq!(a.poll(Time(0), &v, &policy).len(), 20);
        a.stop();
        assert_eq!(a.next_due(), None);
        assert!(a.poll(Time(100_000_000), &v, &policy).is_empty());
    }
}

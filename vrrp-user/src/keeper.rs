//! Keeping a master's VIPs on the interface against everything else on the host (an
//! `ip addr flush`, NetworkManager, systemd-networkd, a deleted macvlan). Pure: it takes `now`
//! and what netlink said, and says what to do.
//!
//! - A master wants its VIPs. One found deleted (an address event) is marked absent at once
//!   (the data plane stops answering for it) and added again; the re-add is counted.
//! - A VIP that cannot be added stays absent and is retried every [`RETRY_US`]. After
//!   [`MAX_FAILURES`] failures in a row its instance is held out of the election (Fault, through
//!   its `vips` track) so that the peer takes over; the hold-down doubles with each episode
//!   (10 s, 20 s, ... 5 min), so a VIP that can never be added does not pull the VIP back and
//!   forth.
//! - A server an instance fences is made writable only while all of its VIPs are present.

use std::{collections::HashMap, net::IpAddr};

use crate::engine::{InstanceKey, Time};

/// Between two attempts to add a VIP that could not be added.
pub const RETRY_US: u64 = 300_000;
/// Failed attempts in a row before the instance steps out of the election.
pub const MAX_FAILURES: u32 = 3;
/// The first hold-down; it doubles per episode up to [`MAX_HOLD_US`].
pub const FIRST_HOLD_US: u64 = 10_000_000;
pub const MAX_HOLD_US: u64 = 300_000_000;

/// The engine track that keeps an instance whose VIPs cannot be added out of the election.
pub fn track_name(key: InstanceKey) -> crate::engine::TrackId {
    crate::engine::TrackId::VipsHeld(key)
}

#[derive(Clone, Debug)]
struct VipState {
    key: InstanceKey,
    wanted: bool,
    present: bool,
    failures: u32,
    retry_at: Option<Time>,
    /// Counts wants and unwants: an attempt's result counts only for the want it was made
    /// for (the attempts run off the event loop, and a demotion may come before a result).
    generation: u64,
}

/// Per instance: what was done and the hold-down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// VIPs found deleted by someone else and added again.
    pub readded: u64,
    /// Attempts to add a VIP that failed.
    pub add_failures: u64,
    /// Times the instance stepped out of the election because a VIP could not be added.
    pub held_out: u64,
}

/// What an attempt's failure leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    /// Tried again at the given time.
    Retry(Time),
    /// Too many failures: hold the instance out of the election until the given time.
    HoldOut(Time),
}

/// The VIPs this node wants on its interfaces and whether they are there.
#[derive(Debug, Default)]
pub struct VipKeeper {
    vips: HashMap<IpAddr, VipState>,
    counts: HashMap<InstanceKey, Counts>,
    /// Instances held out, and until when.
    holds: crate::hold::HoldDowns,
    /// Each instance's next hold-down (it doubles per episode).
    next_hold_us: HashMap<InstanceKey, u64>,
}

impl VipKeeper {
    /// A master of `key` wants `addr` (the shell adds it next and reports with
    /// [`VipKeeper::added`] or [`VipKeeper::failed`], naming the generation returned).
    pub fn want(&mut self, key: InstanceKey, addr: IpAddr) -> u64 {
        let v = self.vips.entry(addr).or_insert(VipState {
            key,
            wanted: true,
            present: false,
            failures: 0,
            retry_at: None,
            generation: 0,
        });
        v.key = key;
        v.wanted = true;
        v.generation += 1;
        v.generation
    }

    /// The generation of the want of `addr`, if it is wanted: what a re-add reports with.
    pub fn generation(&self, addr: IpAddr) -> Option<u64> {
        self.vips
            .get(&addr)
            .filter(|v| v.wanted)
            .map(|v| v.generation)
    }

    /// `addr` is no longer wanted (demoted, or removed from the configuration).
    pub fn unwant(&mut self, addr: IpAddr) {
        if let Some(v) = self.vips.get_mut(&addr) {
            v.wanted = false;
            v.generation += 1;
            v.present = false;
            v.failures = 0;
            v.retry_at = None;
        }
    }

    /// Forgets every VIP not in `keep` (a reload).
    pub fn retain(&mut self, keep: impl Fn(&IpAddr) -> bool) {
        self.vips.retain(|a, _| keep(a));
    }

    /// Adding `addr` for the want `generation` worked. False: the result is stale (the VIP
    /// was let go, or wanted again, since), and changes nothing.
    pub fn added(&mut self, addr: IpAddr, generation: u64) -> bool {
        let Some(v) = self
            .vips
            .get_mut(&addr)
            .filter(|v| v.wanted && v.generation == generation)
        else {
            return false;
        };
        v.present = true;
        v.failures = 0;
        v.retry_at = None;
        true
    }

    /// Adding `addr` for the want `generation` failed at `now` (None: the result is stale,
    /// or the VIP no longer wanted).
    pub fn failed(&mut self, now: Time, addr: IpAddr, generation: u64) -> Option<Failed> {
        let v = self
            .vips
            .get_mut(&addr)
            .filter(|v| v.wanted && v.generation == generation)?;
        v.present = false;
        v.failures += 1;
        self.counts.entry(v.key).or_default().add_failures += 1;
        if v.failures < MAX_FAILURES {
            let at = now.plus(RETRY_US);
            v.retry_at = Some(at);
            return Some(Failed::Retry(at));
        }
        v.retry_at = None;
        v.failures = 0;
        let key = v.key;
        let hold = self.next_hold_us.entry(key).or_insert(FIRST_HOLD_US);
        let until = now.plus(*hold);
        *hold = (*hold * 2).min(MAX_HOLD_US);
        self.holds.hold(key, until);
        self.counts.entry(key).or_default().held_out += 1;
        Some(Failed::HoldOut(until))
    }

    /// An address event: `addr` left its interface. True when it is a VIP this node wants
    /// there: the shell marks it absent and adds it again (counted as a re-add).
    pub fn deleted(&mut self, addr: IpAddr) -> bool {
        let Some(v) = self.vips.get_mut(&addr) else {
            return false;
        };
        if !v.wanted {
            return false;
        }
        let was_present = v.present;
        v.present = false;
        if was_present {
            self.counts.entry(v.key).or_default().readded += 1;
        }
        // A VIP waiting for its retry is not tried before it.
        v.retry_at.is_none()
    }

    /// The VIPs whose retry is due at `now`.
    pub fn due(&mut self, now: Time) -> Vec<IpAddr> {
        self.vips
            .iter_mut()
            .filter(|(_, v)| v.wanted && v.retry_at.is_some_and(|t| t <= now))
            .map(|(a, v)| {
                v.retry_at = None;
                *a
            })
            .collect()
    }

    /// The instances whose hold-down is over at `now` (they run again).
    pub fn expired(&mut self, now: Time) -> Vec<InstanceKey> {
        self.holds.expired(now)
    }

    /// The next retry or end of a hold-down.
    pub fn next_deadline(&self) -> Option<Time> {
        self.vips
            .values()
            .filter(|v| v.wanted)
            .filter_map(|v| v.retry_at)
            .chain(self.holds.next_end())
            .min()
    }

    /// Whether every VIP `key` wants is on its interface.
    pub fn all_present(&self, key: InstanceKey) -> bool {
        self.vips
            .values()
            .filter(|v| v.key == key && v.wanted)
            .all(|v| v.present)
    }

    /// Whether `addr` is wanted and not on its interface.
    pub fn is_absent(&self, addr: IpAddr) -> bool {
        self.vips.get(&addr).is_some_and(|v| v.wanted && !v.present)
    }

    /// What was done for `key`.
    pub fn counts(&self, key: InstanceKey) -> Counts {
        self.counts.get(&key).copied().unwrap_or_default()
    }

    /// The VIPs of `key` wanted and absent now.
    pub fn absent(&self, key: InstanceKey) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .vips
            .iter()
            .filter(|(_, v)| v.key == key && v.wanted && !v.present)
            .map(|(a, _)| *a)
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Family;

    const KEY: InstanceKey = InstanceKey {
        iface: 2,
        family: Family::V4,
        vrid: 51,
    };
    fn vip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn a_deleted_vip_of_a_master_is_added_again_and_counted() {
        let mut k = VipKeeper::default();
        let g = k.want(KEY, vip(100));
        assert!(!k.all_present(KEY), "not added yet");
        k.added(vip(100), g);
        assert!(k.all_present(KEY));
        assert!(k.deleted(vip(100)));
        assert!(k.is_absent(vip(100)));
        assert!(!k.all_present(KEY));
        k.added(vip(100), g);
        assert_eq!(k.counts(KEY).readded, 1);
        // Not ours, or no longer wanted: nothing to do.
        assert!(!k.deleted(vip(7)));
        k.unwant(vip(100));
        assert!(!k.deleted(vip(100)));
        assert!(k.all_present(KEY), "nothing wanted");
        assert_eq!(k.counts(KEY).readded, 1);
    }

    #[test]
    fn failures_are_retried_then_hold_the_instance_out_with_a_doubling_hold_down() {
        let mut k = VipKeeper::default();
        let t = Time(1_000_000);
        let g = k.want(KEY, vip(100));
        assert_eq!(
            k.failed(t, vip(100), g),
            Some(Failed::Retry(t.plus(RETRY_US)))
        );
        assert!(k.due(t).is_empty());
        assert_eq!(k.next_deadline(), Some(t.plus(RETRY_US)));
        let t1 = t.plus(RETRY_US);
        assert_eq!(k.due(t1), vec![vip(100)]);
        assert!(matches!(k.failed(t1, vip(100), g), Some(Failed::Retry(_))));
        let t2 = t1.plus(RETRY_US);
        assert_eq!(k.due(t2), vec![vip(100)]);
        assert_eq!(
            k.failed(t2, vip(100), g),
            Some(Failed::HoldOut(t2.plus(FIRST_HOLD_US)))
        );
        assert_eq!(k.counts(KEY).add_failures, 3);
        assert_eq!(k.counts(KEY).held_out, 1);
        assert!(k.expired(t2.plus(FIRST_HOLD_US - 1)).is_empty());
        assert_eq!(k.expired(t2.plus(FIRST_HOLD_US)), vec![KEY]);
        // The next episode holds twice as long.
        let t3 = t2.plus(FIRST_HOLD_US);
        for _ in 0..MAX_FAILURES - 1 {
            assert!(matches!(k.failed(t3, vip(100), g), Some(Failed::Retry(_))));
        }
        assert_eq!(
            k.failed(t3, vip(100), g),
            Some(Failed::HoldOut(t3.plus(2 * FIRST_HOLD_US)))
        );
    }

    #[test]
    fn a_success_resets_the_failures_and_an_unwanted_vip_is_not_retried() {
        let mut k = VipKeeper::default();
        let t = Time(0);
        let g = k.want(KEY, vip(100));
        k.failed(t, vip(100), g);
        k.failed(t, vip(100), g);
        k.added(vip(100), g);
        assert!(matches!(k.failed(t, vip(100), g), Some(Failed::Retry(_))));
        k.unwant(vip(100));
        assert!(k.due(Time(u64::MAX)).is_empty());
        assert_eq!(k.failed(t, vip(100), g), None);
        assert_eq!(k.next_deadline(), None);
    }

    #[test]
    fn a_deletion_while_a_retry_waits_does_not_add_before_it() {
        let mut k = VipKeeper::default();
        let g = k.want(KEY, vip(100));
        k.failed(Time(0), vip(100), g);
        assert!(!k.deleted(vip(100)));
        assert_eq!(k.counts(KEY).readded, 0, "it was not there to delete");
    }

    #[test]
    fn a_result_for_an_earlier_want_changes_nothing() {
        let mut k = VipKeeper::default();
        let first = k.want(KEY, vip(100));
        // Demoted and promoted again before the first add's result came back.
        k.unwant(vip(100));
        let second = k.want(KEY, vip(100));
        assert_ne!(first, second);
        assert!(
            !k.added(vip(100), first),
            "stale: the removal queued after it"
        );
        assert!(!k.all_present(KEY));
        assert_eq!(k.failed(Time(0), vip(100), first), None);
        assert_eq!(k.counts(KEY).add_failures, 0);
        assert_eq!(k.generation(vip(100)), Some(second));
        assert!(k.added(vip(100), second));
        assert!(k.all_present(KEY));
        // Let go: no generation to re-add with, and a late result is stale.
        k.unwant(vip(100));
        assert_eq!(k.generation(vip(100)), None);
        assert!(!k.added(vip(100), second));
    }
}

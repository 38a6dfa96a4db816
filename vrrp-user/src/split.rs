//! Split brain seen on the wire: another host announces (gratuitous ARP / NA) a VIP of an
//! instance this node is master of. Pure: it takes `now` and what the engine and the data
//! plane know, and says what to do.
//!
//! - A claim is judged after a grace of one and a half advert intervals: a higher-priority
//!   peer's first announcement comes with its first advert, in either order, and that advert
//!   demotes this node (a legitimate preemption, not a split brain).
//! - Still master then: the claimant is looked up among the hosts whose adverts were heard
//!   (by the MAC of their adverts). Higher priority wins, equal priorities the higher address
//!   (as VRRP breaks ties). The loser steps out of the election (the instance's
//!   `split_brain` track goes down: Fault, its server fenced, its VIPs removed) for a
//!   hold-down; the winner announces its VIPs again, so that clients come back.
//! - A claimant whose adverts were never heard (adverts lost both ways since it started) is
//!   unknown: this node announces again, a few times per episode, so that the other side, if
//!   it has heard this node's adverts, can judge and step down.

use std::{collections::HashMap, net::IpAddr};

use crate::engine::{InstanceKey, Time};

/// The engine track that keeps a loser out of the election.
pub fn track_name(key: InstanceKey) -> crate::engine::TrackId {
    crate::engine::TrackId::SplitBrain(key)
}

/// Whose claim stands: (priority, address), compared as VRRP compares masters.
pub fn wins(ours: (u8, IpAddr), theirs: (u8, IpAddr)) -> bool {
    let wide = |a: IpAddr| match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    (ours.0, wide(ours.1)) > (theirs.0, wide(theirs.1))
}

/// What to do about a judged claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This node is no longer master: the claimant preempted it.
    Preempted,
    /// This node wins against a known claimant: announce again.
    Win { theirs: (u8, IpAddr) },
    /// This node loses: step out for the hold-down.
    Lose { theirs: (u8, IpAddr) },
    /// The claimant's adverts were never heard: announce again (`announce` false once the
    /// episode's announcements are used up).
    Unknown { announce: bool },
}

#[derive(Clone, Copy, Debug)]
struct Claim {
    key: InstanceKey,
    mac: [u8; 6],
    due: Time,
}

/// Claims waiting for their grace, losers held out, and announcement budgets.
#[derive(Debug, Default)]
pub struct SplitBrain {
    pending: Vec<Claim>,
    holds: crate::hold::HoldDowns,
    /// Per instance: the last unknown-claimant announcement and how many in this episode.
    unknown: HashMap<InstanceKey, (Time, u32)>,
    /// Per instance: the last time a win was announced (at most once a second).
    won: HashMap<InstanceKey, Time>,
}

/// Unknown claimants get this many announcements per episode (an episode ends after 10 s
/// without one).
const UNKNOWN_ANNOUNCEMENTS: u32 = 3;

impl SplitBrain {
    /// A claim seen at `now`, judged after `grace_us`. One pending claim per instance and MAC.
    pub fn observe(&mut self, now: Time, key: InstanceKey, mac: [u8; 6], grace_us: u64) {
        if self.holds.is_held(key) || self.pending.iter().any(|c| c.key == key && c.mac == mac) {
            return;
        }
        self.pending.push(Claim {
            key,
            mac,
            due: now.plus(grace_us),
        });
    }

    /// The next time [`SplitBrain::due`] or [`SplitBrain::expired`] has work.
    pub fn next_deadline(&self) -> Option<Time> {
        self.pending
            .iter()
            .map(|c| c.due)
            .chain(self.holds.next_end())
            .min()
    }

    /// The claims whose grace is over: (instance, claimant MAC).
    pub fn due(&mut self, now: Time) -> Vec<(InstanceKey, [u8; 6])> {
        let (due, wait): (Vec<Claim>, Vec<Claim>) = self.pending.iter().partition(|c| c.due <= now);
        self.pending = wait;
        due.into_iter().map(|c| (c.key, c.mac)).collect()
    }

    /// Judges a due claim: `master` whether this node is still master of the instance,
    /// `ours` its priority and primary address, `theirs` the claimant as its adverts said.
    pub fn judge(
        &mut self,
        now: Time,
        key: InstanceKey,
        master: bool,
        ours: (u8, IpAddr),
        theirs: Option<(u8, IpAddr)>,
    ) -> Verdict {
        if !master {
            return Verdict::Preempted;
        }
        match theirs {
            Some(t) if wins(ours, t) => {
                let last = self.won.insert(key, now);
                if last.is_some_and(|l| now.since(l) < 1_000_000) {
                    return Verdict::Unknown { announce: false };
                }
                Verdict::Win { theirs: t }
            }
            Some(t) => Verdict::Lose { theirs: t },
            None => {
                let entry = self.unknown.entry(key).or_insert((Time(0), 0));
                if now.since(entry.0) > 10_000_000 {
                    entry.1 = 0;
                }
                entry.0 = now;
                entry.1 += 1;
                Verdict::Unknown {
                    announce: entry.1 <= UNKNOWN_ANNOUNCEMENTS,
                }
            }
        }
    }

    /// Holds a loser out until `until`.
    pub fn hold(&mut self, key: InstanceKey, until: Time) {
        self.holds.hold(key, until);
        self.pending.retain(|c| c.key != key);
    }

    /// The holds that ended: these instances may run again.
    pub fn expired(&mut self, now: Time) -> Vec<InstanceKey> {
        self.holds.expired(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Family;

    fn key() -> InstanceKey {
        InstanceKey {
            iface: 2,
            family: Family::V4,
            vrid: 51,
        }
    }

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn higher_priority_wins_and_equal_priorities_go_to_the_higher_address() {
        assert!(wins((200, addr(1)), (100, addr(2))));
        assert!(!wins((100, addr(2)), (200, addr(1))));
        assert!(wins((100, addr(2)), (100, addr(1))));
        assert!(!wins((100, addr(1)), (100, addr(2))));
    }

    #[test]
    fn a_claim_waits_for_its_grace_and_a_preemption_is_not_a_split_brain() {
        let mut s = SplitBrain::default();
        let t = Time(1_000_000);
        s.observe(t, key(), [2, 0, 0, 0, 0, 2], 150_000);
        s.observe(t.plus(10), key(), [2, 0, 0, 0, 0, 2], 150_000);
        assert_eq!(s.next_deadline(), Some(t.plus(150_000)));
        assert!(s.due(t.plus(100_000)).is_empty(), "still in its grace");
        let due = s.due(t.plus(150_000));
        assert_eq!(due.len(), 1, "one claim per instance and MAC");
        // The claimant's advert came meanwhile and demoted this node.
        assert_eq!(
            s.judge(
                t.plus(150_000),
                key(),
                false,
                (100, addr(1)),
                Some((200, addr(2)))
            ),
            Verdict::Preempted
        );
    }

    #[test]
    fn the_loser_is_held_out_and_the_winner_announces_at_most_once_a_second() {
        let mut s = SplitBrain::default();
        let t = Time(5_000_000);
        assert_eq!(
            s.judge(t, key(), true, (100, addr(1)), Some((200, addr(2)))),
            Verdict::Lose {
                theirs: (200, addr(2))
            }
        );
        s.hold(key(), t.plus(3_000_000));
        s.observe(t, key(), [2, 0, 0, 0, 0, 2], 0);
        assert!(s.due(t).is_empty(), "no claims judged while held out");
        assert!(s.expired(t.plus(2_999_999)).is_empty());
        assert_eq!(s.expired(t.plus(3_000_000)), vec![key()]);
        let win = s.judge(t, key(), true, (200, addr(1)), Some((100, addr(2))));
        assert!(matches!(win, Verdict::Win { .. }));
        assert_eq!(
            s.judge(
                t.plus(500_000),
                key(),
                true,
                (200, addr(1)),
                Some((100, addr(2)))
            ),
            Verdict::Unknown { announce: false }
        );
    }

    #[test]
    fn an_unknown_claimant_gets_a_few_announcements_per_episode() {
        let mut s = SplitBrain::default();
        let t = Time(9_000_000);
        let announce =
            |s: &mut SplitBrain, at: Time| match s.judge(at, key(), true, (100, addr(1)), None) {
                Verdict::Unknown { announce } => announce,
                other => panic!("{other:?}"),
            };
        let given: Vec<bool> = (0..5)
            .map(|i| announce(&mut s, t.plus(i * 1_000_000)))
            .collect();
        assert_eq!(given, [true, true, true, false, false]);
        assert!(
            announce(&mut s, t.plus(20_000_000)),
            "a new episode after 10 s of quiet"
        );
    }
}

//! Instances held out of the election until a time, each through an engine track of its own
//! that the shell sets down and up: a lost split brain (crate::split), VIPs that cannot be
//! added (crate::keeper).

use std::collections::HashMap;

use crate::engine::{InstanceKey, Time};

/// The instances held out, and until when.
#[derive(Debug, Default)]
pub struct HoldDowns(HashMap<InstanceKey, Time>);

impl HoldDowns {
    /// Holds `key` out until `until` (a later call replaces the time).
    pub fn hold(&mut self, key: InstanceKey, until: Time) {
        self.0.insert(key, until);
    }

    pub fn is_held(&self, key: InstanceKey) -> bool {
        self.0.contains_key(&key)
    }

    /// The holds that ended at `now`, forgotten: these instances run again.
    pub fn expired(&mut self, now: Time) -> Vec<InstanceKey> {
        let over: Vec<InstanceKey> = self
            .0
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &over {
            self.0.remove(k);
        }
        over
    }

    /// The end of the next hold.
    pub fn next_end(&self) -> Option<Time> {
        self.0.values().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Family;

    #[test]
    fn holds_end_at_their_time_and_are_forgotten() {
        let key = InstanceKey {
            iface: 1,
            family: Family::V4,
            vrid: 51,
        };
        // Each instance has its own hold track: the same VRID on two interfaces is two.
        let other = InstanceKey { iface: 2, ..key };
        let (a, b) = (
            crate::split::track_name(key),
            crate::split::track_name(other),
        );
        assert_ne!(a, b);
        assert_ne!(a, crate::keeper::track_name(key));
        assert_eq!(a.to_string(), "split_brain:v4:51@1");
        let mut h = HoldDowns::default();
        h.hold(key, Time(10));
        assert!(h.is_held(key));
        assert_eq!(h.next_end(), Some(Time(10)));
        assert!(h.expired(Time(9)).is_empty());
        assert_eq!(h.expired(Time(10)), vec![key]);
        assert!(!h.is_held(key));
        assert_eq!(h.next_end(), None);
    }
}

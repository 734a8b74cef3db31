//! Which shards want which topics: exact channel names and prefixes, each
//! mapped to a [`ShardMask`].
//!
//! Every shard keeps one as its replica of its peers' interest (so a publish
//! is forwarded only to shards that want it), and the cluster link keeps one
//! for the whole instance (so Redis subscriptions follow the first and last
//! interested shard, and a publish from another instance reaches only the
//! shards that want it).

use std::collections::HashMap;
use std::sync::Arc;

use crate::channels::Topic;
use crate::ids::{shard_bit, ShardId, ShardMask};

#[derive(Default)]
pub struct InterestMap {
    exact: HashMap<Arc<str>, ShardMask>,
    prefix: HashMap<Arc<str>, ShardMask>,
}

impl InterestMap {
    /// Records that `shard` gained (`on`) or lost interest in `topic`.
    /// Returns true when the topic went from no shard to some shard or back
    /// (the moment a subscription elsewhere starts or ends).
    pub fn set(&mut self, shard: ShardId, topic: &Topic, on: bool) -> bool {
        let (map, key) = match topic {
            Topic::Exact(k) => (&mut self.exact, k),
            Topic::Prefix(k) => (&mut self.prefix, k),
        };
        let bit = shard_bit(shard);
        let before = map.get(key).copied().unwrap_or(0);
        let after = if on { before | bit } else { before & !bit };
        if after == 0 {
            map.remove(key);
        } else if after != before {
            map.insert(key.clone(), after);
        }
        (before == 0) != (after == 0)
    }

    /// The shards that want a publish on `channel`.
    pub fn shards_for(&self, channel: &str) -> ShardMask {
        let mut mask = self.exact.get(channel).copied().unwrap_or(0);
        for (p, m) in &self.prefix {
            if channel.starts_with(&**p) {
                mask |= m;
            }
        }
        mask
    }

    /// Whether some shard wants `channel` by its exact name.
    pub fn has_exact(&self, channel: &str) -> bool {
        self.exact.contains_key(channel)
    }

    /// The exact channel names some shard wants.
    pub fn exact(&self) -> impl Iterator<Item = &Arc<str>> {
        self.exact.keys()
    }

    /// The prefixes some shard wants (without their `*`).
    pub fn prefixes(&self) -> impl Iterator<Item = &Arc<str>> {
        self.prefix.keys()
    }

    pub fn has_prefixes(&self) -> bool {
        !self.prefix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_interest_and_masks() {
        let mut m = InterestMap::default();
        let ex = Topic::Exact("chat:a".into());
        let pre = Topic::Prefix("chat:".into());
        assert!(m.set(0, &ex, true));
        assert!(!m.set(3, &ex, true));
        assert!(!m.set(3, &ex, true));
        assert!(m.set(5, &pre, true));
        assert_eq!(m.shards_for("chat:a"), 0b101001);
        assert_eq!(m.shards_for("chat:b"), 0b100000);
        assert_eq!(m.shards_for("news"), 0);
        assert!(!m.set(0, &ex, false));
        assert!(m.set(3, &ex, false));
        assert!(!m.set(3, &ex, false));
        assert_eq!(m.exact().count(), 0);
        assert!(m.has_prefixes());
        assert_eq!(m.prefixes().map(|p| &**p).collect::<Vec<_>>(), ["chat:"]);
    }
}

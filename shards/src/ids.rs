//! Identifiers that say where a thing lives.
//!
//! A [`SocketKey`] names a socket on this instance: the shard that owns it for
//! its whole life and a random 64-bit number, unique on that shard. Its wire form (the Socket.IO
//! socket id clients see) also carries the instance id, so any shard of any
//! instance can route a direct message without a lookup.

use std::fmt;

/// Index of a shard (one pinned executor) inside this instance.
pub type ShardId = usize;

/// A set of shards, one bit per shard: who wants a topic.
pub type ShardMask = u64;

/// Most shards one instance runs: one per bit of a [`ShardMask`]. The
/// `--shards` flag is clamped to it, and ids naming a shard at or past it
/// are refused as malformed.
pub const MAX_SHARDS: usize = ShardMask::BITS as usize;

/// The [`ShardMask`] holding only `shard` (which must be below [`MAX_SHARDS`]).
pub fn shard_bit(shard: ShardId) -> ShardMask {
    debug_assert!(shard < MAX_SHARDS);
    1 << (shard % MAX_SHARDS)
}

/// The home shard of a channel: where its history is kept. A stable hash
/// (FNV-1a) of the name, so every shard computes the same home without
/// asking, in every run.
pub fn channel_home(channel: &str, nr_shards: usize) -> ShardId {
    if nr_shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in channel.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % nr_shards as u64) as ShardId
}

/// A socket owned by shard `shard` on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub shard: ShardId,
    /// Random, unique on the shard (see `Shard::next_key`).
    pub seq: u64,
}

impl SocketKey {
    /// The public socket id: `<instance>-<shard hex>-<seq, 16 hex>`.
    pub fn wire(&self, instance: &str) -> String {
        format!("{instance}-{:x}-{:016x}", self.shard, self.seq)
    }

    /// Parses a public socket id; returns the instance part and the key.
    /// Anything malformed gives `None` (a direct to it is `not_found`).
    pub fn parse(wire: &str) -> Option<(&str, SocketKey)> {
        let mut parts = wire.rsplitn(3, '-');
        let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
        let shard = usize::from_str_radix(parts.next()?, 16).ok()?;
        let instance = parts.next()?;
        if instance.is_empty() || shard >= MAX_SHARDS {
            return None;
        }
        Some((instance, SocketKey { shard, seq }))
    }
}

impl fmt::Display for SocketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard, self.seq)
    }
}

/// The shard that owns an Engine.IO session id. Session ids start with the
/// owner shard as two hex digits, so a polling request or a websocket upgrade
/// that the kernel hands to another shard can be routed to the owner.
pub fn session_owner(sid: &str) -> Option<ShardId> {
    let head = sid.get(..2)?;
    usize::from_str_radix(head, 16)
        .ok()
        .filter(|&s| s < MAX_SHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let k = SocketKey {
            shard: 3,
            seq: 0x1234,
        };
        let w = k.wire("inst-a1");
        assert_eq!(w, "inst-a1-3-0000000000001234");
        assert_eq!(SocketKey::parse(&w), Some(("inst-a1", k)));
        let last = SocketKey {
            shard: MAX_SHARDS - 1,
            seq: 1,
        };
        assert_eq!(SocketKey::parse(&last.wire("i")), Some(("i", last)));
        let past = format!("i-{:x}-1", MAX_SHARDS);
        assert_eq!(SocketKey::parse(&past), None);
    }

    #[test]
    fn garbage_is_none() {
        for s in ["", "-", "a-b", "x-1-zz", "-1-2", "chat:room1", "a-99999-1"] {
            assert_eq!(SocketKey::parse(s), None, "{s}");
        }
    }

    #[test]
    fn session_owner_reads_prefix() {
        assert_eq!(session_owner("0aXYZ"), Some(10));
        assert_eq!(session_owner("z"), None);
        assert_eq!(session_owner("3fXYZ"), Some(MAX_SHARDS - 1));
        assert_eq!(session_owner("40XYZ"), None);
        assert_eq!(session_owner("é1"), None);
    }
}

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
    ///
    /// Instance ids may themselves contain `-` (pod names such as
    /// `gateway-7d9f8-abc12`), so the id is read from the right: the last
    /// field is exactly 16 lowercase hex digits, the one before it the shard
    /// in lowercase hex without leading zeros, and everything left of that
    /// is the instance. Only the canonical spelling [`wire`](Self::wire)
    /// writes is accepted, so one socket has exactly one id.
    pub fn parse(wire: &str) -> Option<(&str, SocketKey)> {
        let mut parts = wire.rsplitn(3, '-');
        let seq = parts.next()?;
        let shard = parts.next()?;
        let instance = parts.next()?;
        let lower_hex = |t: &str| t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if seq.len() != 16
            || !lower_hex(seq)
            || shard.is_empty()
            || shard.len() > 2
            || !lower_hex(shard)
            || (shard.len() > 1 && shard.starts_with('0'))
            || instance.is_empty()
        {
            return None;
        }
        let seq = u64::from_str_radix(seq, 16).ok()?;
        let shard = usize::from_str_radix(shard, 16).ok()?;
        if shard >= MAX_SHARDS {
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
        let past = format!("i-{:x}-0000000000000001", MAX_SHARDS);
        assert_eq!(SocketKey::parse(&past), None);
    }

    #[test]
    fn pod_and_host_names_round_trip() {
        let k = SocketKey {
            shard: 0x2a,
            seq: u64::MAX,
        };
        for instance in [
            "gateway-7d9f8-abc12.ns",
            "gateway-7d9f8-abc12",
            "node-1.example.com",
            "a_b",
            "ends-with-dash-",
            "3-0000000000000001",
            "-",
        ] {
            let w = k.wire(instance);
            assert_eq!(SocketKey::parse(&w), Some((instance, k)), "{w}");
        }
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        for s in [
            "i-3-1",
            "i-3-+000000000000001",
            "i-3-000000000000000A",
            "i-03-0000000000000001",
            "i-A-0000000000000001",
            "i--0000000000000001",
            "i-3-00000000000000001",
            "i-100-0000000000000001",
        ] {
            assert_eq!(SocketKey::parse(s), None, "{s}");
        }
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

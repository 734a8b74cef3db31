//! What Redis keeps so that a socket can recover on another instance than
//! the one it was connected to (one that was killed, say), and how it is
//! read back.
//!
//! Keys, under `<prefix>:` (the braces are hash tags: everything about one
//! channel, or one socket, sits in one slot of a Redis Cluster):
//! - `h:{<channel>}`: a stream of the channel's publications (the cluster
//!   envelope as published), `MAXLEN ~ --history-size`, expiring a quarter
//!   more than a recovery window after its last entry or renewal. Written
//!   by the same script that publishes, so a publish stays one command and
//!   one round trip; begun with a marker entry (`ENSURE`) when a connected
//!   recoverable socket joins a channel that has none.
//! - `rs:{<socket id>}`: a recoverable socket's state (JSON: secret, user,
//!   channels with when it joined each, subscriptions), rewritten when they
//!   change, deleted when the socket is gone for good, expiring a window
//!   after its last write.
//! - `d:{<socket id>}`: direct messages to a socket that has a state, kept by
//!   the script that sends them.
//!
//! Recovery reads the streams of the socket's channels and its direct
//! stream from a little before its offset's time (or from when it
//! connected), drops what precedes the offset in the stream that holds it,
//! and merges the rest in stream order. Events sent shortly before the
//! offset's event but not yet received may come again, with the same id.
//! Whole or nothing: the offset's own entry must be in one of those streams
//! (a stream loses only its oldest entries, so what follows it there is
//! complete), or one of them must reach back before it (kept all along: the
//! offset named a frame that never went through Redis); every other
//! channel's stream must reach back to where the socket needs it
//! ([`complete`]: a stream lost and begun again by a later publish begins
//! too late), and the direct stream must not be trimmed past the start;
//! otherwise the recovery is refused (`offset_gone`).

use std::sync::Arc;

use serde_json::Value;

use shards::Publication;

use super::{CmdConn, Link};
use crate::cluster::msg::{Missed, Reply};
use crate::cluster::wire::Envelope;

/// Keeps a publication in its channel's stream and publishes it.
const PUBLISH: &str = r"
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('PUBLISH', ARGV[1], ARGV[2])";

/// The same on a Redis Cluster: SPUBLISH, to the topic that shares the
/// stream's slot.
const SPUBLISH: &str = r"
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('SPUBLISH', ARGV[1], ARGV[2])";

/// Keeps a direct message for a socket that has a recoverable state, and
/// publishes it to the target instance's inbox: {receivers, kept}.
const DIRECT: &str = r"
local kept = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  kept = 1
end
return {redis.call('PUBLISH', ARGV[1], ARGV[2]), kept}";

/// On a Redis Cluster the inbox is in another slot than the socket's keys:
/// the script only keeps ({0, kept}); the link then SPUBLISHes.
const DIRECT_KEEP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {0, 1}
end
return {0, 0}";

/// Makes sure a channel's stream exists for a connected socket that needs
/// it from `ARGV[1]` (ms) on: if it does not, it starts with a marker entry
/// (field `m`, read by nobody) at that time. A stream that exists keeps
/// its entries; either way it gets the stream TTL.
const ENSURE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XADD', KEYS[1], ARGV[1] .. '-0', 'm', '')
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])";

/// The publish, direct and ensure scripts (for a cluster, or one server).
pub(super) fn scripts(cluster: bool, recovery: bool) -> Vec<String> {
    match (recovery, cluster) {
        (false, _) => Vec::new(),
        (true, true) => vec![
            SPUBLISH.to_string(),
            DIRECT_KEEP.to_string(),
            ENSURE.to_string(),
        ],
        (true, false) => vec![PUBLISH.to_string(), DIRECT.to_string(), ENSURE.to_string()],
    }
}

/// The SHA1s of the loaded scripts.
#[derive(Debug, Clone)]
pub(super) struct Scripts {
    pub publish: String,
    pub direct: String,
    pub ensure: String,
}

/// How long before its offset's event a recovering socket is given events
/// of its other channels again: what may have been in flight to it.
const SLACK_MS: u64 = 2000;

/// How far before a subscription moved (or the cluster went away) its
/// stream is read again (from the last entry this instance received, when
/// the stream still holds it): longer than a switch-over takes to be seen.
pub(super) const REFILL_SLACK_MS: u64 = 2000;

/// Loads the scripts (on a cluster the router has loaded them on every
/// primary already; this learns their SHA1s).
pub(super) async fn load_scripts(conn: &mut CmdConn, cluster: bool) -> redis::RedisResult<Scripts> {
    let mut shas = Vec::new();
    for s in scripts(cluster, true) {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(s)
            .query_async(conn)
            .await?;
        shas.push(sha);
    }
    let mut shas = shas.into_iter();
    let mut next = || shas.next().unwrap_or_default();
    Ok(Scripts {
        publish: next(),
        direct: next(),
        ensure: next(),
    })
}

/// The publisher's clock in an event id (`<ms, 12 hex><counter>-…`).
fn id_ms(id: &str) -> Option<u64> {
    u64::from_str_radix(id.get(..12)?, 16).ok()
}

/// A stream entry id's (ms, seq), for ordering.
fn entry_pos(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

type Entries = Vec<(String, Vec<Vec<u8>>)>;

impl Link {
    pub(super) fn history_key(&self, channel: &str) -> String {
        format!("{}:h:{{{channel}}}", self.cfg.prefix)
    }
    pub(super) fn state_key(&self, socket_id: &str) -> String {
        format!("{}:rs:{{{socket_id}}}", self.cfg.prefix)
    }
    pub(super) fn direct_key(&self, socket_id: &str) -> String {
        format!("{}:d:{{{socket_id}}}", self.cfg.prefix)
    }

    /// Counts a socket of `instance` recovered here (or gone again), and
    /// listens on that instance's inbox while any is here.
    pub(super) async fn adopt(&mut self, instance: String, seq: u64, shard: usize, on: bool) {
        let inbox = self.inbox(&instance);
        let key = (instance.clone(), seq);
        let change = if on {
            let new = self.adopted.insert(key, shard).is_none();
            let n = self.adopted_from.entry(instance.clone()).or_default();
            *n += new as usize;
            new && *n == 1
        } else {
            let had = self.adopted.remove(&key).is_some();
            let n = self.adopted_from.entry(instance.clone()).or_default();
            *n = n.saturating_sub(had as usize);
            let last = had && *n == 0;
            if *n == 0 {
                self.adopted_from.remove(&instance);
            }
            last
        };
        if !change {
            return;
        }
        if let Err(e) = self.subscribe(&[inbox], on).await {
            self.down(&e.to_string());
        }
    }

    /// A direct message to another instance's socket, through the script
    /// that also keeps it for the socket if it is recoverable. `None` when
    /// the answer comes from the target instance.
    pub(super) async fn send_direct(
        &mut self,
        inbox: String,
        socket_id: String,
        env: Vec<u8>,
    ) -> redis::RedisResult<Option<bool>> {
        let (scripts, store) = (self.scripts.clone(), self.cfg.recovery);
        let publish = self.publish_cmd();
        let cluster = self.cfg.cluster;
        let conn = &mut self.cmd()?;
        let (receivers, kept): (i64, i64) = match (&scripts, store) {
            (Some(Scripts { direct, .. }), Some(r)) => {
                redis::cmd("EVALSHA")
                    .arg(direct)
                    .arg(2)
                    .arg(self.state_key(&socket_id))
                    .arg(self.direct_key(&socket_id))
                    .arg(&inbox)
                    .arg(&env)
                    .arg(r.history_len)
                    .arg(r.stream_ttl_ms())
                    .query_async(conn)
                    .await?
            }
            _ => (0, 0),
        };
        // On a cluster the script only kept it (the inbox is in another
        // slot); without recovery there is no script.
        let receivers = if cluster || scripts.is_none() || store.is_none() {
            redis::cmd(publish)
                .arg(inbox)
                .arg(env)
                .query_async(conn)
                .await?
        } else {
            receivers
        };
        // Nobody listens (its instance is gone) but it is kept for the socket.
        Ok((receivers == 0).then_some(kept == 1))
    }

    /// After subscriptions moved to a new primary (a slot migrated) or the
    /// cluster came back: what their channels' streams took since `from`,
    /// delivered before anything that arrives on the new subscriptions, so
    /// a publish that landed while this instance was not subscribed there
    /// is not lost (the ones already delivered are dropped by their origin
    /// and sequence number).
    pub(super) async fn refill(&mut self, moved: &[String], from: u64) -> redis::RedisResult<()> {
        if self.cfg.recovery.is_none() {
            return Ok(());
        }
        let head = format!("{}:ch:{{", self.cfg.prefix);
        let channels: Vec<String> = moved
            .iter()
            .filter_map(|t| t.strip_prefix(&head)?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        if channels.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for c in &channels {
            pipe.cmd("XRANGE")
                .arg(self.history_key(c))
                .arg(format!("{from}-0"))
                .arg("+");
        }
        let conn = &mut self.cmd()?;
        let streams: Vec<Entries> = pipe.query_async(conn).await?;
        for (channel, entries) in channels.iter().zip(streams) {
            let mut envs: Vec<(String, u64, Arc<Publication>)> = entries
                .iter()
                .filter_map(|(_, f)| match Envelope::decode(f.get(1)?) {
                    Some(Envelope::Publish { origin, seq, p }) => Some((origin, seq, p)),
                    _ => None,
                })
                .collect();
            // Everything up to the last one received here came already.
            if let Some(last) = self.last_seen.get(channel.as_str()) {
                if let Some(i) = envs
                    .iter()
                    .position(|(o, s, _)| (o, s) == (&last.0, &last.1))
                {
                    envs.drain(..=i);
                }
            }
            for (origin, seq, p) in envs {
                self.on_publish(origin, seq, p);
            }
        }
        Ok(())
    }

    /// A channel's events kept in its stream (presence left out), oldest
    /// first, none older than `max_age_ms`.
    pub(super) async fn history(
        &mut self,
        channel: &str,
        max_age_ms: u64,
    ) -> redis::RedisResult<Reply> {
        let from = shards::now_ms().saturating_sub(max_age_ms);
        let key = self.history_key(channel);
        let conn = &mut self.cmd()?;
        let range: Entries = redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("{from}-0"))
            .arg("+")
            .query_async(conn)
            .await?;
        let events = range
            .iter()
            .filter_map(|(_, fields)| match Envelope::decode(fields.get(1)?) {
                Some(Envelope::Publish { p, .. }) if p.presence.is_none() => Some(p),
                _ => None,
            })
            .collect();
        Ok(Reply::History(events))
    }

    /// The stored state of a socket, if `secret` and `sub` match; its
    /// instance is told to let it go.
    pub(super) async fn recover_state(
        &mut self,
        socket_id: &str,
        secret: &str,
        sub: &str,
    ) -> redis::RedisResult<Reply> {
        let key = self.state_key(socket_id);
        let conn = &mut self.cmd()?;
        let json: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        let Some(json) = json else {
            return Ok(Reply::Refused("unknown_pid"));
        };
        let v: Value = serde_json::from_str(&json).unwrap_or_default();
        if v["secret"].as_str() != Some(secret) {
            return Ok(Reply::Refused("unknown_pid"));
        }
        if v["sub"].as_str() != Some(sub) {
            return Ok(Reply::Refused("other_user"));
        }
        if let Some((instance, k)) = shards::SocketKey::parse(socket_id) {
            let env = Envelope::Forget {
                shard: k.shard,
                seq: k.seq,
            };
            let _: i64 = redis::cmd(self.publish_cmd())
                .arg(self.inbox(instance))
                .arg(env.encode())
                .query_async(conn)
                .await?;
        }
        Ok(Reply::State(json))
    }

    /// What a socket missed, from the streams of its channels and its
    /// direct stream; refused when none holds its offset's entry nor reaches
    /// back before it, or when a channel's stream does not reach back to
    /// where the socket needs it (see [`complete`]).
    pub(super) async fn recover_entries(
        &mut self,
        socket_id: &str,
        channels: &[(Arc<str>, u64)],
        offset: Option<&str>,
        since_ms: u64,
    ) -> redis::RedisResult<Reply> {
        let from = match offset.and_then(id_ms) {
            Some(ms) => ms.saturating_sub(SLACK_MS),
            None => since_ms,
        };
        let history_len = self.cfg.recovery.map_or(0, |r| r.history_len);
        let mut keys: Vec<String> = channels.iter().map(|(c, _)| self.history_key(c)).collect();
        keys.push(self.direct_key(socket_id));
        // From when each stream must be whole: the channels' from where the
        // socket needs them; the direct stream (`None`) is not checked so.
        let needed: Vec<Option<u64>> = channels
            .iter()
            .map(|(_, joined)| Some(from.max(joined.saturating_add(JOIN_SLACK_MS))))
            .chain([None])
            .collect();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("XRANGE").arg(k).arg(format!("{from}-0")).arg("+");
            pipe.cmd("XRANGE")
                .arg(k)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            pipe.cmd("XLEN").arg(k);
        }
        let conn = &mut self.cmd()?;
        let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
        let mut all: Vec<((u64, u64), Missed)> = Vec::new();
        // Without an offset there is no entry to find: everything since the
        // socket connected is read.
        let mut anchored = offset.is_none();
        for (chunk, needed) in replies.chunks(3).zip(needed) {
            let [range, first, len] = chunk else { continue };
            let range: Entries = redis::from_redis_value(range)?;
            let first: Entries = redis::from_redis_value(first)?;
            let len: usize = redis::from_redis_value(len)?;
            let mut missed: Vec<((u64, u64), Missed, Option<String>)> = Vec::new();
            for (id, fields) in range {
                let Some(env) = fields.get(1).and_then(|b| Envelope::decode(b)) else {
                    continue;
                };
                let m = match env {
                    Envelope::Publish { p, .. } => Missed::Publication(p),
                    Envelope::DirectReq {
                        text, attachments, ..
                    } => Missed::Direct { text, attachments },
                    _ => continue,
                };
                let off = match &m {
                    Missed::Publication(p) => p.offset().map(str::to_string),
                    Missed::Direct { text, .. } => shards::frame_offset(text).map(str::to_string),
                };
                missed.push((entry_pos(&id), m, off));
            }
            // The stream that holds the offset starts right after it: it
            // only ever loses its oldest entries, so what follows the
            // offset's entry there is all there is.
            let at = offset.and_then(|o| {
                missed
                    .iter()
                    .position(|(_, _, off)| off.as_deref() == Some(o))
            });
            let oldest = first.first().map(|(id, _)| entry_pos(id).0);
            if let Some(i) = at {
                missed.drain(..=i);
                anchored = true;
            } else {
                let whole = match needed {
                    // A channel's stream that begins after the socket needs
                    // it was trimmed past that, or lost (deleted, Redis
                    // restarted or failed over) and begun again, or is gone.
                    Some(needed) => complete(oldest, needed),
                    // The direct stream exists only once a direct was kept:
                    // what can be told is whether it was trimmed.
                    None => len < history_len || oldest.is_none_or(|ms| ms <= from),
                };
                if !whole {
                    return Ok(Reply::Refused("offset_gone"));
                }
                // A stream that reaches back before the offset was kept all
                // along, so an offset that never went through Redis (a
                // large channel's count, a direct between two sockets of
                // one instance) still has a complete replay.
                anchored |= oldest.is_some_and(|ms| ms <= from);
            }
            all.extend(missed.into_iter().map(|(pos, m, _)| (pos, m)));
        }
        if !anchored {
            // No stream holds the offset's entry nor reaches back before it:
            // trimmed, or lost with its stream (deleted, or Redis restarted
            // or failed over). Nothing proves the rest complete.
            return Ok(Reply::Refused("offset_gone"));
        }
        all.sort_by_key(|(pos, _)| *pos);
        Ok(Reply::Missed(all.into_iter().map(|(_, m)| m).collect()))
    }
}

/// How late after a join the stream may begin: the marker entry is written
/// when the join reaches Redis, and a publish of another instance may have
/// begun the stream just before it (stamped by Redis's clock, not the
/// gateway's). A stream lost and begun again within this much of the join
/// goes unnoticed.
const JOIN_SLACK_MS: u64 = 100;

/// Whether a channel's stream whose oldest entry is at `oldest` (ms) holds
/// everything since `needed`: a stream only ever loses its oldest entries
/// (trimming, expiry) or all of them (lost with Redis, or deleted), and a
/// stream that exists for a recoverable socket began, at the latest, with a
/// marker at its join (`ENSURE`) while the socket was connected. So a
/// stream that is missing, or begins after `needed`, was lost or trimmed
/// past where the socket must start.
fn complete(oldest: Option<u64>, needed: u64) -> bool {
    oldest.is_some_and(|ms| ms <= needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_complete_only_if_it_reaches_back_far_enough() {
        assert!(complete(Some(1_000), 1_000));
        assert!(complete(Some(900), 1_000));
        assert!(
            !complete(Some(1_001), 1_000),
            "begun after: lost or trimmed"
        );
        assert!(!complete(None, 1_000), "gone");
    }

    #[test]
    fn ids_and_positions() {
        assert_eq!(id_ms("019ad0a1b2c300000001-0-inst"), Some(0x019ad0a1b2c3));
        assert_eq!(id_ms("xyz"), None);
        assert_eq!(entry_pos("1764000000000-3"), (1764000000000, 3));
        assert!(entry_pos("5-1") < entry_pos("5-2"));
        assert!(entry_pos("5-9") < entry_pos("6-0"));
    }
}

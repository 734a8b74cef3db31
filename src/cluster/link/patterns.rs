//! Prefix subscriptions on a Redis Cluster, where sharded pub/sub has no
//! patterns.
//!
//! Each instance lists its prefixes in the hash `<prefix>:px` (field: the
//! instance, value: a JSON array) and announces a change with a classic
//! PUBLISH on `<prefix>:pxn`, which every instance listens to; each reads the
//! registry again then, and on every topology tick (so a lost announcement
//! costs at most a second). A publish whose channel starts with a prefix
//! of another live instance is, besides its SPUBLISH, PUBLISHed (classic,
//! which the cluster carries to every node) on `<prefix>:px`, which the
//! instances with prefixes listen to; a receiver that also has the channel
//! exactly drops the second copy by its (origin, seq). Only publishes that
//! match someone's prefix are broadcast: the rest stays sharded.
//!
//! A new prefix subscription is acknowledged to its socket only once every
//! other live instance has read the registry since (each answers the
//! announcement on `<prefix>:pxa` after reading it), or after a second: a
//! publish that follows the ack anywhere in the cluster matches it.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{bounded, Conn, Link, Sink};
use crate::cluster::msg::Reply;

/// How long a prefix subscription waits for the other instances.
const PX_WAIT: Duration = Duration::from_secs(1);

/// The registry's announcements and their acknowledgements.
#[derive(Default)]
pub struct PxState {
    /// This instance's announcements so far.
    version: u64,
    /// Announcements of others, to acknowledge once the registry is read.
    due: Vec<(String, u64)>,
    /// Subscriptions waiting for acknowledgements of `version` from
    /// `waiting`.
    waits: Vec<PxWait>,
}

struct PxWait {
    version: u64,
    waiting: HashSet<String>,
    deadline: Instant,
    replies: Vec<(usize, u64)>,
}

impl Link {
    pub(super) fn px_topic(&self) -> String {
        self.key("px")
    }
    pub(super) fn pxn_topic(&self) -> String {
        self.key("pxn")
    }
    pub(super) fn pxa_topic(&self) -> String {
        self.key("pxa")
    }

    /// An announcement or an acknowledgement; false for anything else.
    pub(super) fn px_message(&mut self, msg: &redis::Msg) -> bool {
        let name = msg.get_channel_name();
        let (pxn, pxa) = (name == self.pxn_topic(), name == self.pxa_topic());
        if !pxn && !pxa {
            return false;
        }
        let text = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
        let mut f = text.split(' ');
        let (from, version) = (
            f.next().unwrap_or_default(),
            f.next().and_then(|v| v.parse().ok()),
        );
        let Some(version) = version else { return true };
        if pxn && from != self.cfg.instance {
            // Read the registry now, then acknowledge.
            self.px.due.push((from.to_string(), version));
            self.next_topology = Instant::now();
        }
        if pxa && from == self.cfg.instance {
            let by = f.next().unwrap_or_default();
            for w in self.px.waits.iter_mut().filter(|w| w.version <= version) {
                w.waiting.remove(by);
            }
            self.px_expire();
        }
        true
    }

    /// Holds the answer to a prefix subscription until the announcement of
    /// `version` is acknowledged.
    pub(super) fn px_wait(&mut self, version: u64, shard: usize, qid: u64) {
        if let Some(w) = self.px.waits.iter_mut().find(|w| w.version == version) {
            w.replies.push((shard, qid));
        }
        self.px_expire();
    }

    /// Answers the subscriptions whose announcement everybody acknowledged
    /// or that waited long enough.
    pub(super) fn px_expire(&mut self) {
        let now = Instant::now();
        let (done, keep): (Vec<PxWait>, Vec<PxWait>) = std::mem::take(&mut self.px.waits)
            .into_iter()
            .partition(|w| w.waiting.is_empty() || w.deadline <= now);
        self.px.waits = keep;
        if let Some(d) = self.px.waits.iter().map(|w| w.deadline).min() {
            self.next_topology = self.next_topology.min(d);
        }
        for w in done {
            for (shard, qid) in w.replies {
                self.reply(shard, qid, Reply::Done);
            }
        }
    }

    /// Acknowledges the announcements read since (the registry was read).
    pub(super) async fn px_acknowledge(&mut self) -> redis::RedisResult<()> {
        if self.px.due.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        for (from, v) in std::mem::take(&mut self.px.due) {
            p.publish(
                self.pxa_topic(),
                format!("{from} {v} {}", self.cfg.instance),
            )
            .ignore();
        }
        let conn = &mut self.cmd()?;
        bounded(p.query_async::<()>(conn)).await
    }

    /// Whether a publish on `channel` must also go to the prefix listeners.
    pub(super) fn matches_remote_prefix(&self, channel: &str) -> bool {
        self.remote_prefixes
            .iter()
            .any(|p| channel.starts_with(p.as_str()))
    }

    /// Writes this instance's prefixes to the registry (or removes them),
    /// listens on the prefix topic while it has any, and announces it;
    /// returns the announcement's version.
    pub(super) async fn sync_prefixes(&mut self) -> redis::RedisResult<u64> {
        self.px.version += 1;
        let version = self.px.version;
        let mut others: HashSet<String> = self.live_instances().await?.into_iter().collect();
        others.remove(&self.cfg.instance);
        self.px.waits.push(PxWait {
            version,
            waiting: others,
            deadline: Instant::now() + PX_WAIT,
            replies: Vec::new(),
        });
        let mine: Vec<String> = self.interest.prefixes().map(|p| p.to_string()).collect();
        let me = self.cfg.instance.clone();
        let (key, pxn) = (self.px_topic(), self.pxn_topic());
        let json = serde_json::to_string(&mine).unwrap_or_default();
        let conn = &mut self.cmd()?;
        let mut p = redis::pipe();
        match mine.is_empty() {
            true => p.hdel(&key, &me).ignore(),
            false => p.hset(&key, &me, json).ignore(),
        };
        p.publish(pxn, format!("{me} {version}")).ignore();
        bounded(p.query_async::<()>(conn)).await?;
        let px = self.px_topic();
        let want = !mine.is_empty();
        if let Some(Conn {
            cmd: super::CmdConn::Cluster(router),
            sink: Sink::Cluster(subs),
        }) = self.conn.as_mut()
        {
            let router = router.clone();
            bounded(subs.classic(&router, &px, want)).await?;
        }
        Ok(version)
    }

    /// Reads the registry: the prefixes of the other live instances.
    pub(super) async fn read_prefixes(&mut self) -> redis::RedisResult<()> {
        let live = self.live_instances().await?;
        let key = self.px_topic();
        let conn = &mut self.cmd()?;
        let all: std::collections::HashMap<String, String> =
            bounded(redis::cmd("HGETALL").arg(key).query_async(conn)).await?;
        let mut prefixes: Vec<String> = all
            .into_iter()
            .filter(|(inst, _)| *inst != self.cfg.instance && live.contains(inst))
            .flat_map(|(_, json)| serde_json::from_str::<Vec<String>>(&json).unwrap_or_default())
            .collect();
        prefixes.sort();
        prefixes.dedup();
        self.remote_prefixes = prefixes;
        Ok(())
    }
}

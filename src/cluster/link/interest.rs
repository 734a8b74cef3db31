//! Interest: which shards want which topic (the link's `interest`, an
//! `InterestMap`, a bit per shard), and the subscriptions that follow it:
//! `SUBSCRIBE` when the first shard wants an exact channel, `PSUBSCRIBE`
//! for a prefix, the reverse when the last lets go; on a Redis Cluster,
//! `SSUBSCRIBE` on the topic's primary (`sharded.rs`) and the prefix
//! registry of `patterns.rs` instead of patterns.

use shards::Topic;

use super::{bounded, CmdConn, Conn, Link, Sink};

impl Link {
    /// Subscribes or unsubscribes; on a cluster, a new prefix returns the
    /// registry version whose announcement the other instances must
    /// acknowledge before the subscription counts as in place.
    pub(super) async fn interest(&mut self, shard: usize, topic: Topic, on: bool) -> Option<u64> {
        if !self.interest.set(shard, &topic, on) {
            return None;
        }
        if self.cfg.cluster && matches!(topic, Topic::Prefix(_)) {
            return match self.sync_prefixes().await {
                Ok(v) => on.then_some(v),
                Err(e) => {
                    self.down(&e.to_string());
                    None
                }
            };
        }
        let r = match &topic {
            Topic::Exact(c) => {
                if !on {
                    self.last_seen.remove(c);
                }
                let name = self.topic(c);
                self.subscribe(&[name], on).await
            }
            Topic::Prefix(c) => {
                let pattern = format!("{}*", esc_glob(&self.topic(c)));
                match self.conn.as_mut() {
                    Some(Conn {
                        sink: Sink::One(sink),
                        ..
                    }) => match on {
                        true => bounded(sink.psubscribe(pattern)).await,
                        false => bounded(sink.punsubscribe(pattern)).await,
                    },
                    _ => Ok(()),
                }
            }
        };
        if let Err(e) = r {
            self.down(&e.to_string());
        }
        None
    }

    /// Subscribes (or unsubscribes) exact topics, on whichever kind of
    /// connection this is.
    pub(super) async fn subscribe(&mut self, names: &[String], on: bool) -> redis::RedisResult<()> {
        match self.conn.as_mut() {
            None => Ok(()),
            Some(Conn {
                sink: Sink::One(sink),
                ..
            }) => match on {
                true => bounded(sink.subscribe(names)).await,
                false => bounded(sink.unsubscribe(names)).await,
            },
            Some(Conn {
                cmd: CmdConn::Cluster(router),
                sink: Sink::Cluster(subs),
            }) => {
                let router = router.clone();
                match on {
                    true => bounded(subs.subscribe(&router, names)).await,
                    false => bounded(subs.unsubscribe(names)).await,
                }
            }
            Some(_) => Ok(()),
        }
    }
}

pub(super) fn esc_glob(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

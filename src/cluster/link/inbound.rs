//! What arrives from Redis on the pub/sub connection: publications for
//! this instance's shards (by interest, each once), direct messages and
//! their answers on this instance's inbox, and — for sockets recovered
//! here from another instance — that instance's inbox; a `Forget` when
//! another instance recovered one of this instance's sockets.

use std::sync::atomic::Ordering;

use std::sync::Arc;

use shards::{shard_bit, Publication};

use super::Link;
use crate::cluster::msg::{FromCluster, Reply};
use crate::cluster::wire::Envelope;

impl Link {
    pub(super) fn on_message(&mut self, msg: redis::Msg) {
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        if self.cfg.cluster && self.px_message(&msg) {
            return;
        }
        let Some(env) = Envelope::decode(msg.get_payload_bytes()) else {
            return;
        };
        let own_inbox = msg.get_channel_name() == self.inbox(&self.cfg.instance);
        let env = match env {
            Envelope::Control {
                origin,
                req,
                shard,
                seq,
                body,
            } => {
                // Routed like a direct message: to the adopting shard for a
                // socket recovered here, else to the named shard.
                let port = if own_inbox {
                    if seq != 0 && self.gone.contains(&seq) {
                        return;
                    }
                    self.ports.get(shard)
                } else {
                    let inbox = msg.get_channel_name();
                    let instance = inbox.rsplit(':').next().unwrap_or_default().to_string();
                    match self.adopted.get(&(instance, seq)) {
                        Some(&s) => self.ports.get(s),
                        None => return,
                    }
                };
                let port = port.or(self.ports.first());
                if let Some(port) = port {
                    let c = FromCluster::Control {
                        seq,
                        body,
                        origin,
                        req,
                    };
                    port.send(c, &self.stats.publishes_dropped);
                }
                return;
            }
            Envelope::DirectReq { seq, .. } if own_inbox && self.gone.contains(&seq) => {
                // Recovered by another instance, which answers for it.
                return;
            }
            Envelope::DirectReq {
                origin,
                req,
                seq,
                text,
                attachments,
                ..
            } if !own_inbox => {
                // Another instance's inbox, subscribed for a socket recovered here.
                let inbox = msg.get_channel_name();
                let instance = self.inbox_owner(inbox).to_string();
                if let Some(&shard) = self.adopted.get(&(instance, seq)) {
                    let direct = FromCluster::Direct {
                        seq,
                        text,
                        attachments,
                        origin,
                        req,
                    };
                    if let Some(port) = self.ports.get(shard) {
                        port.send(direct, &self.stats.publishes_dropped);
                    }
                }
                return;
            }
            Envelope::DirectRes { .. } | Envelope::Forget { .. } if !own_inbox => return,
            Envelope::Forget { shard, seq } => {
                self.gone.insert(seq);
                self.gone_order.push_back(seq);
                if self.gone_order.len() > 65_536 {
                    if let Some(old) = self.gone_order.pop_front() {
                        self.gone.remove(&old);
                    }
                }
                if let Some(port) = self.ports.get(shard) {
                    port.send(FromCluster::Forget { seq }, &self.stats.publishes_dropped);
                }
                return;
            }
            env => env,
        };
        match env {
            Envelope::Publish { origin, seq, p } => self.on_publish(origin, seq, p),
            Envelope::DirectReq {
                origin,
                req,
                shard,
                seq,
                text,
                attachments,
            } => match self.ports.get(shard) {
                Some(port) => port.send(
                    FromCluster::Direct {
                        seq,
                        text,
                        attachments,
                        origin,
                        req,
                    },
                    &self.stats.publishes_dropped,
                ),
                None => {
                    let inbox = self.inbox(&origin);
                    let publish = self.publish_cmd();
                    if let Some(conn) = self.conn.as_mut() {
                        let mut c = conn.cmd.clone();
                        let env = Envelope::DirectRes { req, ok: false }.encode();
                        tokio::spawn(async move {
                            let _: redis::RedisResult<i64> = redis::cmd(publish)
                                .arg(inbox)
                                .arg(env)
                                .query_async(&mut c)
                                .await;
                        });
                    }
                }
            },
            Envelope::DirectRes { req, ok } => {
                if let Some((shard, qid, _)) = self.pending_direct.remove(&req) {
                    self.reply(shard, qid, Reply::Delivered(ok));
                }
            }
            Envelope::Forget { .. } | Envelope::Control { .. } => {}
        }
    }

    /// A publication from another instance, to the shards that want it.
    pub(super) fn on_publish(&mut self, origin: String, seq: u64, p: Arc<Publication>) {
        if origin == self.cfg.instance {
            return;
        }
        if self.cfg.cluster && self.interest.has_exact(&p.channel) {
            // Kept while the channel is wanted (dropped with the interest).
            self.last_seen
                .insert(p.channel.clone(), (origin.clone(), seq));
        }
        if !self.first_sighting(origin, seq) {
            return;
        }
        let mask = self.interest.shards_for(&p.channel);
        for (i, port) in self.ports.iter().enumerate() {
            if mask & shard_bit(i) != 0 {
                self.stats.deliveries_in.fetch_add(1, Ordering::Relaxed);
                port.send(
                    FromCluster::Deliver(p.clone()),
                    &self.stats.publishes_dropped,
                );
            }
        }
    }

    /// Drops the second copy of a publish that matched both an exact and a
    /// pattern subscription of this instance, or that a Redis Cluster
    /// instance read back from a stream after a subscription moved
    /// (`Link::refill`).
    fn first_sighting(&mut self, origin: String, seq: u64) -> bool {
        // Redis sends one copy per matching subscription of this instance:
        // only a single exact topic and no pattern can never match twice.
        if !self.interest.has_prefixes() && !self.cfg.cluster {
            return true;
        }
        let id = (origin, seq);
        if !self.seen.insert(id.clone()) {
            return false;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > 8192 {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

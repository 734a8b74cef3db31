//! What the shards send, taken a batch at a time (up to 1,024 messages
//! drained from the queue): publishes, presence writes (joins, leaves,
//! user counts, connection counts), checkpoints, direct answers go into
//! one pipeline, flushed once; interest changes, adoptions and questions
//! flush what is queued before them; answers that depend on the batch's
//! writes go out after the last flush.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::member::member_json;
use super::{bounded, Link};
use crate::cluster::msg::{FromCluster, Query, Reply, ToCluster};
use crate::cluster::wire::Envelope;

impl Link {
    pub(super) async fn handle(&mut self, batch: Vec<ToCluster>) {
        let mut pipe = redis::pipe();
        let mut queued = 0usize;
        // Member hashes written in this batch (they get their TTL at the
        // end), and whether the connection counts changed.
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut counts_changed = false;
        // Shards waiting for this batch's publishes to be in Redis.
        let mut flushed: Vec<(usize, u64)> = Vec::new();
        // Counts answered, sent once this batch's writes are in Redis.
        let mut counted: Vec<(usize, u64, Reply)> = Vec::new();
        for m in batch {
            match m {
                ToCluster::Publish(p) => {
                    if self.conn.is_none() {
                        if self.cfg.cluster && self.held.len() < self.cfg.outage_buffer {
                            // Sent once the cluster is back (a failover).
                            self.held.push_back((None, p));
                        } else {
                            self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    self.queue_publish(&mut pipe, p, None);
                    queued += 1;
                }
                ToCluster::Join { channel, member } => {
                    let json = member_json(&member);
                    let me = self.cfg.instance.clone();
                    let set = self.members.entry(channel.to_string()).or_default();
                    set.insert(member.socket_id.to_string(), json.clone());
                    let n = set.len();
                    let mkey = self.inst_key(&me, &format!("m:{channel}"));
                    pipe.hset(&mkey, &*member.socket_id, json).ignore();
                    pipe.sadd(self.inst_key(&me, "keys"), &mkey).ignore();
                    pipe.hset(self.inst_key(&me, "ch"), &*channel, n).ignore();
                    touched.insert(channel.to_string());
                    queued += 1;
                }
                ToCluster::Leave { channel, socket_id } => {
                    let me = self.cfg.instance.clone();
                    let mkey = self.inst_key(&me, &format!("m:{channel}"));
                    let n = match self.members.get_mut(&*channel) {
                        Some(set) => {
                            set.remove(&*socket_id);
                            set.len()
                        }
                        None => 0,
                    };
                    pipe.hdel(&mkey, &*socket_id).ignore();
                    if n == 0 {
                        self.members.remove(&*channel);
                        pipe.hdel(self.inst_key(&me, "ch"), &*channel).ignore();
                        pipe.srem(self.inst_key(&me, "keys"), &mkey).ignore();
                    } else {
                        pipe.hset(self.inst_key(&me, "ch"), &*channel, n).ignore();
                    }
                    touched.insert(channel.to_string());
                    queued += 1;
                }
                ToCluster::UserCount { user, n } => {
                    let me = self.cfg.instance.clone();
                    let key = self.inst_key(&me, "users");
                    if n == 0 {
                        self.users.remove(&*user);
                        pipe.hdel(&key, &*user).ignore();
                    } else {
                        self.users.insert(user.to_string(), n);
                        pipe.hset(&key, &*user, n).ignore();
                        pipe.pexpire(&key, self.presence_ttl() as i64).ignore();
                    }
                    queued += 1;
                }
                ToCluster::Connections { shard, n } => {
                    if let Some(c) = self.connections.get_mut(shard) {
                        counts_changed |= *c != n;
                        *c = n;
                    }
                }
                ToCluster::Withdraw { done } => {
                    self.flush(&mut pipe, &mut queued).await;
                    self.withdrawn = true;
                    let me = self.cfg.instance.clone();
                    let ok = self.conn.is_some()
                        && bounded(self.forget_instance(&me, None)).await.is_ok();
                    let _ = done.send(ok);
                }
                ToCluster::Ensure { channel, at } => {
                    if let (Some(s), Some(r)) = (&self.scripts, self.cfg.recovery) {
                        pipe.cmd("EVALSHA")
                            .arg(&s.ensure)
                            .arg(1)
                            .arg(self.history_key(&channel))
                            .arg(at)
                            .arg(r.stream_ttl_ms())
                            .ignore();
                        queued += 1;
                    }
                }
                ToCluster::Checkpoint { socket_id, state } => {
                    let key = self.state_key(&socket_id);
                    match (state, self.cfg.recovery) {
                        (Some(json), Some(r)) => {
                            pipe.cmd("SET")
                                .arg(key)
                                .arg(json)
                                .arg("PX")
                                .arg(r.ttl_ms)
                                .ignore();
                        }
                        _ => {
                            pipe.del(key).ignore();
                        }
                    }
                    queued += 1;
                }
                ToCluster::Touch { socket_ids } => {
                    if let Some(r) = self.cfg.recovery {
                        // Touched every quarter of the window: it outlives
                        // the last touch by a whole window.
                        let ttl = r.stream_ttl_ms();
                        for id in &socket_ids {
                            pipe.pexpire(self.state_key(id), ttl as i64).ignore();
                            queued += 1;
                        }
                        // And the streams of its channels (every shard
                        // touches; once per eighth of the window is
                        // enough): a socket's offset names an entry there,
                        // which must outlive a quiet channel while the
                        // socket may still recover (recovery.rs).
                        let due = Duration::from_millis(r.ttl_ms / 8);
                        if self.streams_touched.is_none_or(|t| t.elapsed() >= due) {
                            self.streams_touched = Some(Instant::now());
                            let keys: Vec<String> =
                                self.interest.exact().map(|c| self.history_key(c)).collect();
                            for k in keys {
                                pipe.pexpire(k, ttl as i64).ignore();
                                queued += 1;
                            }
                        }
                    }
                }
                ToCluster::Relay { to, origin, qid } => {
                    if let Some(p) = self.ports.get(to) {
                        p.send(
                            FromCluster::Relay { origin, qid },
                            &self.stats.publishes_dropped,
                        );
                    }
                }
                ToCluster::Adopt {
                    instance,
                    seq,
                    shard,
                    on,
                } => {
                    self.flush(&mut pipe, &mut queued).await;
                    self.adopt(instance, seq, shard, on).await;
                }
                ToCluster::DirectResult { origin, req, ok } => {
                    pipe.cmd(self.publish_cmd())
                        .arg(self.inbox(&origin))
                        .arg(Envelope::DirectRes { req, ok }.encode())
                        .ignore();
                    queued += 1;
                }
                ToCluster::Interest {
                    shard,
                    topic,
                    on,
                    reply,
                } => {
                    self.flush(&mut pipe, &mut queued).await;
                    let wait = self.interest(shard, topic, on).await;
                    match (reply, wait) {
                        (Some(qid), Some(version)) => self.px_wait(version, shard, qid),
                        (Some(qid), None) => self.reply(shard, qid, Reply::Done),
                        _ => {}
                    }
                }
                ToCluster::Query {
                    shard,
                    qid,
                    q: Query::Flushed,
                } => flushed.push((shard, qid)),
                ToCluster::Query {
                    shard,
                    qid,
                    q: q @ (Query::Count(_) | Query::UserCount(_)),
                } => {
                    // This instance's part of a count is read from memory, so
                    // what is queued need not reach Redis first (a join storm
                    // asks one count per join: a flush each would be a round
                    // trip each). The answer waits for the batch's flush all
                    // the same: once a join is acknowledged with its count,
                    // every instance sees it.
                    if let Some(resp) = self.query(shard, qid, q).await {
                        counted.push((shard, qid, resp));
                    }
                }
                ToCluster::Query { shard, qid, q } => {
                    self.flush(&mut pipe, &mut queued).await;
                    let resp = self.query(shard, qid, q).await;
                    if let Some(resp) = resp {
                        self.reply(shard, qid, resp);
                    }
                }
            }
        }
        if !touched.is_empty() && !self.withdrawn {
            // A key created by HSET/SADD has no TTL until it gets one here.
            let me = self.cfg.instance.clone();
            let (ttl, member_ttl) = (self.presence_ttl() as i64, self.member_ttl() as i64);
            for channel in touched.iter().filter(|c| self.members.contains_key(*c)) {
                pipe.pexpire(self.inst_key(&me, &format!("m:{channel}")), member_ttl)
                    .ignore();
            }
            for k in ["ch", "keys"] {
                pipe.pexpire(self.inst_key(&me, k), ttl).ignore();
            }
        }
        if counts_changed && !self.withdrawn {
            // Peers see a new count now rather than at the next heartbeat.
            self.info_cmds(&mut pipe);
            queued += 1;
        }
        self.flush(&mut pipe, &mut queued).await;
        let resp = || match self.conn {
            Some(_) => Reply::Done,
            None => Reply::Unavailable,
        };
        for (shard, qid) in flushed {
            self.reply(shard, qid, resp());
        }
        for (shard, qid, r) in counted {
            self.reply(shard, qid, r);
        }
    }
}

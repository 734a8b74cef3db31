//! Questions about the whole cluster (counts, members, channels, instances,
//! direct messages to another instance), answered from Redis.

use std::collections::HashMap;
use std::time::Duration;

use crate::cluster::msg::Reply;
use tokio::time::Instant;

use super::{bounded, Link};
use crate::cluster::link::member::parse_member;
use crate::cluster::msg::Query;
use crate::cluster::wire::Envelope;

impl Link {
    pub(super) async fn live_instances(&mut self) -> redis::RedisResult<Vec<String>> {
        let since = shards::now_ms().saturating_sub(self.cfg.expiry.as_millis() as u64);
        let key = self.key("instances");
        let conn = &mut self.cmd()?;
        redis::cmd("ZRANGEBYSCORE")
            .arg(key)
            .arg(since)
            .arg("+inf")
            .query_async(conn)
            .await
    }

    /// The sum of field `field` of hash `i:<instance>:<hash>` over the live
    /// instances other than this one (whose part the caller has in memory).
    async fn sum_of_others(
        &mut self,
        live: &[String],
        hash: &str,
        field: &str,
    ) -> redis::RedisResult<usize> {
        let me = self.cfg.instance.clone();
        let others: Vec<&String> = live.iter().filter(|i| **i != *me).collect();
        if others.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for i in others {
            pipe.hget(self.inst_key(i, hash), field);
        }
        let conn = &mut self.cmd()?;
        let counts: Vec<Option<usize>> = pipe.query_async(conn).await?;
        Ok(counts.into_iter().flatten().sum())
    }

    /// Answers a question; `None` when the answer comes later (a direct
    /// message waits for the target instance).
    pub(super) async fn query(&mut self, shard: usize, qid: u64, q: Query) -> Option<Reply> {
        if self.conn.is_none() {
            return Some(match q {
                Query::Direct { .. } | Query::Control { .. } => Reply::Delivered(false),
                _ => Reply::Unavailable,
            });
        }
        let r = bounded(self.query_redis(shard, qid, q)).await;
        match r {
            Ok(resp) => resp,
            Err(e) => {
                self.down(&e.to_string());
                Some(Reply::Unavailable)
            }
        }
    }

    pub(super) async fn query_redis(
        &mut self,
        shard: usize,
        qid: u64,
        q: Query,
    ) -> redis::RedisResult<Option<Reply>> {
        if let Query::Direct {
            instance,
            shard: to_shard,
            seq,
            text,
            attachments,
        } = q
        {
            let req = self.next_req;
            self.next_req += 1;
            let env = Envelope::DirectReq {
                origin: self.cfg.instance.clone(),
                req,
                shard: to_shard,
                seq,
                text,
                attachments,
            };
            let inbox = self.inbox(&instance);
            let socket_id = shards::SocketKey {
                shard: to_shard,
                seq,
            }
            .wire(&instance);
            if let Some(kept) = self.send_direct(inbox, socket_id, env.encode()).await? {
                return Ok(Some(Reply::Delivered(kept)));
            }
            self.pending_direct
                .insert(req, (shard, qid, Instant::now() + Duration::from_secs(3)));
            return Ok(None);
        }
        if let Query::Control {
            instance,
            shard: to_shard,
            seq,
            body,
        } = q
        {
            let req = self.next_req;
            self.next_req += 1;
            let env = Envelope::Control {
                origin: self.cfg.instance.clone(),
                req,
                shard: to_shard,
                seq,
                body,
            };
            let conn = &mut self.cmd()?;
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg(self.inbox(&instance))
                .arg(env.encode())
                .query_async(conn)
                .await?;
            if receivers == 0 {
                return Ok(Some(Reply::Delivered(false)));
            }
            self.pending_direct
                .insert(req, (shard, qid, Instant::now() + Duration::from_secs(3)));
            return Ok(None);
        }
        match q {
            Query::RecoverState {
                socket_id,
                secret,
                sub,
            } => return Ok(Some(self.recover_state(&socket_id, &secret, &sub).await?)),
            Query::History {
                channel,
                max_age_ms,
            } => return Ok(Some(self.history(&channel, max_age_ms).await?)),
            Query::RecoverEntries {
                socket_id,
                channels,
                offset,
                since_ms,
            } => {
                let r = self
                    .recover_entries(&socket_id, &channels, offset.as_deref(), since_ms)
                    .await?;
                return Ok(Some(r));
            }
            _ => {}
        }
        let live = self.live_instances().await?;
        let mut pipe = redis::pipe();
        let resp = match q {
            Query::Count(channel) => {
                let own = self.members.get(&*channel).map_or(0, |m| m.len());
                Reply::Count(own + self.sum_of_others(&live, "ch", &channel).await?)
            }
            Query::UserCount(user) => {
                let own = self.users.get(&*user).copied().unwrap_or(0);
                Reply::Count(own + self.sum_of_others(&live, "users", &user).await?)
            }
            Query::Members(channel) => {
                for i in &live {
                    pipe.hvals(self.inst_key(i, &format!("m:{channel}")));
                }
                let conn = &mut self.cmd()?;
                let lists: Vec<Vec<String>> = pipe.query_async(conn).await?;
                Reply::Members(
                    lists
                        .iter()
                        .flatten()
                        .filter_map(|j| parse_member(j))
                        .collect(),
                )
            }
            Query::Channels => {
                for i in &live {
                    pipe.hgetall(self.inst_key(i, "ch"));
                }
                let conn = &mut self.cmd()?;
                let maps: Vec<HashMap<String, usize>> = pipe.query_async(conn).await?;
                let mut sum: HashMap<String, usize> = HashMap::new();
                for (k, n) in maps.into_iter().flatten() {
                    *sum.entry(k).or_default() += n;
                }
                Reply::Channels(
                    sum.into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| (k.into(), n))
                        .collect(),
                )
            }
            Query::Instances => {
                for i in &live {
                    pipe.hget(self.inst_key(i, "info"), "shards");
                }
                let conn = &mut self.cmd()?;
                let infos: Vec<Option<String>> = pipe.query_async(conn).await?;
                let mut out: Vec<(String, Vec<usize>)> = live
                    .into_iter()
                    .zip(infos)
                    .filter(|(i, _)| *i != self.cfg.instance)
                    .map(|(i, s)| {
                        (
                            i,
                            s.and_then(|s| serde_json::from_str(&s).ok())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                out.push((self.cfg.instance.clone(), self.connections.clone()));
                out.sort();
                Reply::Instances(out)
            }
            Query::Flushed => Reply::Done,
            Query::Direct { .. }
            | Query::Control { .. }
            | Query::RecoverState { .. }
            | Query::RecoverEntries { .. }
            | Query::History { .. } => unreachable!("handled above"),
        };
        Ok(Some(resp))
    }
}

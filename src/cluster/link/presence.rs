//! Presence of this instance in Redis: per-instance keys (members, channel
//! counts, info) with TTLs, heartbeats, the rewrite after Redis lost data or
//! peers forgot us, and the collection of silent instances.

use std::ops::Bound;

use crate::cluster::msg::Reply;
use tokio::time::Instant;

use super::{bounded, Link};

impl Link {
    /// How long this instance's `info`, `ch` and `keys` outlive its last
    /// heartbeat: longer than the four expiries after which live peers
    /// collect it, so a peer always still finds its `keys` list.
    pub(super) fn presence_ttl(&self) -> u64 {
        8 * self.cfg.expiry.as_millis() as u64
    }

    /// How long a member hash outlives its last write or refresh: at least
    /// `presence_ttl`, and long enough that the rolling refresh costs only a
    /// few commands per heartbeat however many channels there are.
    pub(super) fn member_ttl(&self) -> u64 {
        self.presence_ttl().max(MEMBER_TTL_FLOOR_MS)
    }

    /// Clears this instance's keys and writes its presence and heartbeat
    /// again (after a start, after Redis lost its data, or after peers
    /// forgot a stalled instance), in one MULTI so no peer sees half of it.
    pub(super) async fn rewrite_presence(&mut self) -> redis::RedisResult<()> {
        let me = self.cfg.instance.clone();
        let keys_key = self.inst_key(&me, "keys");
        let old: Vec<String> = {
            let conn = &mut self.cmd()?;
            redis::cmd("SMEMBERS")
                .arg(&keys_key)
                .query_async(conn)
                .await?
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(self.inst_key(&me, "ch")).ignore();
        pipe.del(self.inst_key(&me, "users")).ignore();
        for (user, n) in &self.users {
            pipe.hset(self.inst_key(&me, "users"), user, *n).ignore();
        }
        for k in old {
            pipe.del(k).ignore();
        }
        pipe.del(&keys_key).ignore();
        let member_ttl = self.member_ttl() as i64;
        for (channel, members) in &self.members {
            let mkey = self.inst_key(&me, &format!("m:{channel}"));
            for (sid, json) in members {
                pipe.hset(&mkey, sid, json).ignore();
            }
            pipe.pexpire(&mkey, member_ttl).ignore();
            pipe.sadd(&keys_key, &mkey).ignore();
            pipe.hset(self.inst_key(&me, "ch"), channel, members.len())
                .ignore();
        }
        self.heartbeat_cmds(&mut pipe, true);
        self.sweep_after = None;
        let conn = &mut self.cmd()?;
        pipe.query_async::<redis::Value>(conn).await?;
        if self.cfg.cluster {
            // `instances` lives in another slot than this instance's keys:
            // listed once they are all written.
            let _: i64 = redis::cmd("ZADD")
                .arg(self.key("instances"))
                .arg(shards::now_ms())
                .arg(&me)
                .query_async(conn)
                .await?;
        }
        self.last_beat = Instant::now();
        Ok(())
    }

    /// The heartbeat: the score in `instances` (`ZADD XX CH`, which answers
    /// 0 when this instance is not there: the caller then rewrites it all —
    /// or a plain ZADD as the last step of a rewrite), connection counts,
    /// and the TTLs of `info`, `ch` and `keys`.
    pub(super) fn heartbeat_cmds(&self, pipe: &mut redis::Pipeline, create: bool) {
        let me = &self.cfg.instance;
        let now = shards::now_ms();
        let ttl = self.presence_ttl() as i64;
        self.info_cmds(pipe);
        for k in ["ch", "keys", "users"] {
            pipe.pexpire(self.inst_key(me, k), ttl).ignore();
        }
        if self.cfg.cluster {
            // The heartbeat also in this instance's slot, where a collecting
            // peer re-checks it (see `forget_instance`).
            pipe.cmd("SET")
                .arg(self.inst_key(me, "beat"))
                .arg(now)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        if create && self.cfg.cluster {
            // Listed by the caller, after the transaction.
        } else if create {
            pipe.zadd(self.key("instances"), me, now).ignore();
        } else {
            pipe.cmd("ZADD")
                .arg(self.key("instances"))
                .arg("XX")
                .arg("CH")
                .arg(now)
                .arg(me);
        }
    }

    /// Writes this instance's connection counts (with the hash's TTL).
    pub(super) fn info_cmds(&self, pipe: &mut redis::Pipeline) {
        let total: usize = self.connections.iter().sum();
        let shards = serde_json::to_string(&self.connections).unwrap_or_default();
        let info = self.inst_key(&self.cfg.instance, "info");
        pipe.hset_multiple(
            &info,
            &[("connections", total.to_string()), ("shards", shards)],
        )
        .ignore();
        pipe.pexpire(&info, self.presence_ttl() as i64).ignore();
    }

    /// Refreshes the TTL of the next few member hashes, in channel order, so
    /// that every one is refreshed at least every quarter of `member_ttl`.
    pub(super) fn sweep_cmds(&mut self, pipe: &mut redis::Pipeline) {
        let n = self.members.len() as u64;
        if n == 0 {
            return;
        }
        let ttl = self.member_ttl();
        let per_beat = (n * self.cfg.heartbeat.as_millis() as u64)
            .div_ceil(ttl / 4)
            .max(1);
        let me = self.cfg.instance.clone();
        let start = match &self.sweep_after {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let mut last = None;
        for (i, channel) in self
            .members
            .range::<String, _>((start, Bound::Unbounded))
            .map(|(c, _)| c)
            .enumerate()
        {
            if i as u64 >= per_beat {
                break;
            }
            pipe.pexpire(self.inst_key(&me, &format!("m:{channel}")), ttl as i64)
                .ignore();
            last = Some(channel.clone());
        }
        // At the end of the channels the next heartbeat starts again.
        self.sweep_after = last;
    }

    pub(super) async fn heartbeat(&mut self) {
        self.next_heartbeat = Instant::now() + self.cfg.heartbeat;
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending_direct
            .iter()
            .filter(|(_, v)| v.2 <= now)
            .map(|(k, _)| *k)
            .collect();
        for req in expired {
            if let Some((shard, qid, _)) = self.pending_direct.remove(&req) {
                self.reply(shard, qid, Reply::Delivered(false));
            }
        }
        if self.conn.is_none() || self.withdrawn {
            return;
        }
        // Silent for two expiries (frozen, or Redis too slow): peers may have
        // forgotten us meanwhile, by their clocks, and some of our keys may
        // be near their TTL. Write everything again rather than guess.
        if now.duration_since(self.last_beat) > 2 * self.cfg.expiry {
            tracing::info!(
                "no heartbeat for {:?}; rewriting this instance's presence",
                now.duration_since(self.last_beat)
            );
            if let Err(e) = bounded(self.rewrite_presence()).await {
                return self.down(&e.to_string());
            }
        }
        let mut pipe = redis::pipe();
        self.heartbeat_cmds(&mut pipe, false);
        self.sweep_cmds(&mut pipe);
        // Forget instances silent for four expiries (their keys too).
        let cutoff = shards::now_ms().saturating_sub(4 * self.cfg.expiry.as_millis() as u64);
        let result: redis::RedisResult<(i64, Vec<String>)> = bounded(async {
            let conn = &mut self.cmd()?;
            let (updated,): (i64,) = pipe.query_async(conn).await?;
            let mut dead = redis::cmd("ZRANGEBYSCORE");
            dead.arg(self.key("instances")).arg("-inf").arg(cutoff);
            Ok((updated, dead.query_async(conn).await?))
        })
        .await;
        match result {
            Ok((updated, dead)) => {
                self.last_beat = Instant::now();
                let me = self.cfg.instance.clone();
                for inst in dead.into_iter().filter(|i| *i != me) {
                    let _ = bounded(self.forget_instance(&inst, Some(cutoff))).await;
                }
                if updated == 0 {
                    // We were not in the set: peers forgot us (we were frozen
                    // or partitioned) or Redis lost its data. Write it all again.
                    tracing::info!("this instance was missing from Redis; rewriting its presence");
                    if let Err(e) = bounded(self.rewrite_presence()).await {
                        self.down(&e.to_string());
                    }
                }
            }
            Err(e) => self.down(&e.to_string()),
        }
    }

    /// Deletes an instance's presence: its member hashes (listed in its
    /// `keys`), `keys`, `ch`, `info` and its entry in `instances`, in one
    /// script so it cannot interleave with that instance's own rewrite. With
    /// a `cutoff`, only if its heartbeat is still older than that (it may
    /// have resumed since it was found dead) and it is still listed (else
    /// someone collected it already, and what is there now is a rewrite in
    /// progress). Returns whether it deleted.
    pub(super) async fn forget_instance(
        &mut self,
        inst: &str,
        cutoff: Option<u64>,
    ) -> redis::RedisResult<bool> {
        if self.cfg.cluster {
            return self.forget_instance_sharded(inst, cutoff).await;
        }
        // Plain EVAL: the crate's `script` feature is off, and this is rare.
        let mut eval = redis::cmd("EVAL");
        eval.arg(FORGET_LUA)
            .arg(1)
            .arg(self.key("instances"))
            .arg(inst)
            .arg(cutoff.map_or_else(|| "-".to_string(), |c| c.to_string()))
            .arg(self.inst_key(inst, ""));
        let conn = &mut self.cmd()?;
        let n: i64 = eval.query_async(conn).await?;
        Ok(n == 1)
    }
}

impl Link {
    /// `forget_instance` on a Redis Cluster, where `instances` and the
    /// instance's keys are in different slots: first its entry in
    /// `instances` (only if still stale and listed), then its keys (only if
    /// its heartbeat in its own slot is still older than the cutoff). An
    /// instance that resumes in between either finds itself unlisted (its
    /// `ZADD XX` answers 0) and rewrites everything, or has written a fresh
    /// `beat` first and keeps its keys.
    async fn forget_instance_sharded(
        &mut self,
        inst: &str,
        cutoff: Option<u64>,
    ) -> redis::RedisResult<bool> {
        let cutoff = cutoff.map_or_else(|| "-".to_string(), |c| c.to_string());
        let conn = &mut self.cmd()?;
        let listed: i64 = redis::cmd("EVAL")
            .arg(UNLIST_LUA)
            .arg(1)
            .arg(self.key("instances"))
            .arg(inst)
            .arg(&cutoff)
            .query_async(conn)
            .await?;
        if listed == 0 && cutoff != "-" {
            return Ok(false);
        }
        let _: i64 = redis::cmd("HDEL")
            .arg(self.px_topic())
            .arg(inst)
            .query_async(conn)
            .await?;
        let n: i64 = redis::cmd("EVAL")
            .arg(FORGET_KEYS_LUA)
            .arg(1)
            .arg(self.inst_key(inst, "keys"))
            .arg(&cutoff)
            .arg(self.inst_key(inst, ""))
            .query_async(conn)
            .await?;
        Ok(n == 1)
    }
}

/// Cluster: removes an instance from `instances` if its score is still at
/// most ARGV[2] (or "-": unconditionally). KEYS[1]: `instances`; ARGV[1]:
/// the instance.
const UNLIST_LUA: &str = r#"
if ARGV[2] ~= '-' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
end
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

/// Cluster: deletes an instance's keys (all in its slot) if its `beat` is
/// still at most ARGV[1] (or "-"). KEYS[1]: its `keys` set; ARGV[2]: its key
/// prefix (`<prefix>:i:{<instance>}:`).
const FORGET_KEYS_LUA: &str = r#"
if ARGV[1] ~= '-' then
  local b = redis.call('GET', ARGV[2] .. 'beat')
  if b and tonumber(b) > tonumber(ARGV[1]) then return 0 end
end
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', k) end
redis.call('DEL', KEYS[1], ARGV[2] .. 'ch', ARGV[2] .. 'info', ARGV[2] .. 'beat', ARGV[2] .. 'users')
return 1
"#;

/// The shortest TTL of a member hash (see `Link::member_ttl`).
pub(super) const MEMBER_TTL_FLOOR_MS: u64 = 10 * 60 * 1000;

/// Deletes an instance's presence (see `Link::forget_instance`).
/// KEYS[1]: the `instances` sorted set. ARGV[1]: the instance; ARGV[2]: the
/// cutoff in ms, or "-" for unconditionally; ARGV[3]: the instance's key
/// prefix (`<prefix>:i:<instance>:`). Redis runs a script atomically.
pub(super) const FORGET_LUA: &str = r#"
if ARGV[2] ~= '-' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
end
local keys = ARGV[3] .. 'keys'
for _, k in ipairs(redis.call('SMEMBERS', keys)) do redis.call('DEL', k) end
redis.call('DEL', keys, ARGV[3] .. 'ch', ARGV[3] .. 'info', ARGV[3] .. 'users')
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#;

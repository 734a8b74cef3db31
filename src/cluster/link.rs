//! The Redis shard: one dedicated thread owns every Redis connection.
//!
//! It runs a current-thread tokio runtime, because the redis crate's async
//! API needs one and async is what lets a single thread hold the pub/sub
//! connection, pipeline publishes and run queries at once; the blocking API
//! would need a thread per connection and a poll loop for subscription
//! changes. Shards reach it through a bounded tokio mpsc (its `try_send`
//! never blocks a shard and wakes this runtime); it answers each shard
//! through a bounded crossbeam channel plus a socketpair byte that wakes the
//! shard's glommio executor (a crossbeam receiver alone cannot).
//!
//! Interest: it counts, per topic, which shards want it, and SUBSCRIBEs (or
//! PSUBSCRIBEs, for prefixes) on the first and UNSUBSCRIBEs on the last.
//! Publishes drained from the queue go out as one pipeline per batch.
//! When Redis is away it keeps its state in memory, counts what could not
//! cross, reconnects with backoff, then re-subscribes and rewrites its
//! presence.
//!
//! Presence, under `<prefix>:`:
//! - `instances`: sorted set, instance → its last heartbeat (ms). Views read
//!   only instances whose heartbeat is younger than the expiry, so a dead or
//!   frozen instance drops out of every view after one expiry whatever is
//!   left of its keys.
//! - `i:<id>:info` (connection counts), `i:<id>:ch` (channel → member
//!   count), `i:<id>:m:<channel>` (socket → member JSON), and `i:<id>:keys`
//!   (the set of that instance's member hashes).
//!
//! Collection: each heartbeat, a live instance deletes the keys of every
//! instance silent for four expiries, in one Lua script that first re-checks
//! the silent one's score (it may have resumed since it was listed) — so a
//! collection never interleaves with, or undoes, that instance's own
//! rewrite. An instance finds out it was collected (or that Redis lost its
//! data) because its heartbeat is `ZADD XX CH` and answers 0; it also
//! rewrites after any gap of two expiries between its own heartbeats (it was
//! frozen), before its peers could collect it by their clocks. A rewrite is
//! one MULTI (delete all, write all, ZADD), so nobody sees half of it.
//!
//! TTLs bound what nobody collects (the last instance of a cluster stopped,
//! or a key written by an instance already collected): `info`, `ch` and
//! `keys` live 8 expiries past their last refresh (PEXPIRE'd every heartbeat
//! — three commands — and whenever a join/leave creates them); longer than
//! the four expiries after which peers collect, so a collecting peer always
//! still finds `keys`. Refreshing every member hash every heartbeat would
//! cost one command per channel per heartbeat, so a member hash instead lives
//! `max(8 expiries, 10 min)` past its last write, and a rolling refresh in
//! channel order renews a few of them per heartbeat so each is renewed every
//! quarter of that. A live instance's keys therefore never expire under it
//! (a gap long enough for that triggers the rewrite above), and a dead
//! instance's keys are gone after four expiries when a peer is alive, after
//! at most `max(8 expiries, 10 min)` when none is.
//!
//! A graceful stop calls [`super::Cluster::withdraw`]: the same script,
//! unconditionally, for this instance, and no heartbeats after it.
//!
//! Files: this one holds the thread, the connection and its loop, and the
//! interest bookkeeping; `link/inbound.rs` what arrives from Redis;
//! `link/presence.rs` the per-instance keys and heartbeats;
//! `link/queries.rs` the cluster-wide views; `link/recovery.rs` what is kept
//! for recovery on another instance and how it is read back;
//! `link/member.rs` a member's stored JSON. The `impl Link` files
//! are children of this one (they use its private fields); this file calls
//! their methods but imports nothing from them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use shards::{InterestMap, Topic};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::cluster::msg::{FromCluster, Query, Reply, ToCluster};
use crate::cluster::port::ShardPort;
use crate::cluster::wire::Envelope;

mod inbound;
mod member;
mod presence;
mod queries;
mod recovery;

use member::member_json;

/// Options of the cluster link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub url: String,
    pub prefix: String,
    pub instance: String,
    pub heartbeat: Duration,
    pub expiry: Duration,
    /// With connection state recovery: what is kept in Redis for sockets
    /// to recover on another instance.
    pub recovery: Option<RecoveryStore>,
}

/// Bounds of the recovery data kept in Redis.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryStore {
    /// Entries each channel's stream keeps (approximately: `MAXLEN ~`).
    pub history_len: usize,
    /// How long a stream or a socket's state outlives its last write.
    pub ttl_ms: u64,
}

/// Counters and state shared with the shards (metrics, `/readyz`).
#[derive(Default)]
pub struct ClusterStats {
    pub up: AtomicBool,
    pub last_error: Mutex<String>,
    pub reconnects: AtomicU64,
    pub publishes_sent: AtomicU64,
    pub publishes_dropped: AtomicU64,
    pub messages_received: AtomicU64,
    pub deliveries_in: AtomicU64,
    pub commands: AtomicU64,
}

struct Conn {
    cmd: MultiplexedConnection,
    sink: PubSubSink,
}

struct Link {
    cfg: LinkConfig,
    client: Option<redis::Client>,
    ports: Vec<ShardPort>,
    stats: Arc<ClusterStats>,
    conn: Option<Conn>,
    stream: Option<PubSubStream>,
    next_attempt: Instant,
    backoff: Duration,
    next_heartbeat: Instant,
    /// When Redis last took a heartbeat (or a rewrite) of this instance.
    last_beat: Instant,
    /// Taken out of the presence for a graceful stop: no more heartbeats.
    withdrawn: bool,
    /// The last channel whose member hash the rolling TTL refresh reached.
    sweep_after: Option<String>,
    /// Shards (bit per shard) that want each exact channel / prefix.
    interest: InterestMap,
    /// This instance's presence, rewritten after Redis comes back (ordered,
    /// so the rolling TTL refresh can resume where it stopped).
    members: BTreeMap<String, HashMap<String, String>>,
    connections: Vec<usize>,
    seq: u64,
    seen: HashSet<(String, u64)>,
    seen_order: VecDeque<(String, u64)>,
    next_req: u64,
    /// Direct messages waiting for the target instance's answer.
    pending_direct: HashMap<u64, (usize, u64, Instant)>,
    /// SHA1s of the publish and direct scripts, loaded at connect (with
    /// recovery only).
    scripts: Option<(String, String)>,
    /// Sockets of other instances recovered here: (instance, seq) → shard.
    adopted: HashMap<(String, u64), usize>,
    /// Adopted sockets per other instance (its inbox is subscribed while > 0).
    adopted_from: HashMap<String, usize>,
    /// This instance's sockets recovered elsewhere: their direct messages
    /// are answered there, not here.
    gone: HashSet<u64>,
    gone_order: VecDeque<u64>,
}

fn esc_glob(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// Starts the link thread; returns the sender shards use.
pub fn spawn(
    cfg: LinkConfig,
    ports: Vec<ShardPort>,
    stats: Arc<ClusterStats>,
) -> std::io::Result<mpsc::Sender<ToCluster>> {
    let (tx, rx) = mpsc::channel(65_536);
    let client = match redis::Client::open(cfg.url.as_str()) {
        Ok(c) => Some(c),
        Err(e) => return Err(std::io::Error::other(format!("--redis-url: {e}"))),
    };
    let shards = ports.len();
    let link = Link {
        client,
        ports,
        stats,
        conn: None,
        stream: None,
        next_attempt: Instant::now(),
        backoff: Duration::from_millis(100),
        next_heartbeat: Instant::now(),
        last_beat: Instant::now(),
        sweep_after: None,
        withdrawn: false,
        interest: InterestMap::default(),
        members: BTreeMap::new(),
        connections: vec![0; shards],
        seq: 0,
        seen: HashSet::new(),
        seen_order: VecDeque::new(),
        next_req: 1,
        pending_direct: HashMap::new(),
        scripts: None,
        adopted: HashMap::new(),
        adopted_from: HashMap::new(),
        gone: HashSet::new(),
        gone_order: VecDeque::new(),
        cfg,
    };
    std::thread::Builder::new()
        .name("redis-shard".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => rt.block_on(link.run(rx)),
                Err(e) => tracing::error!("redis shard: no runtime: {e}"),
            }
        })?;
    Ok(tx)
}

impl Link {
    /// A handle on the command connection (a cheap clone of a multiplexed
    /// connection), so queries can borrow `self` for key names meanwhile.
    fn cmd(&self) -> redis::RedisResult<MultiplexedConnection> {
        Ok(self.conn.as_ref().ok_or_else(not_connected)?.cmd.clone())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.cfg.prefix)
    }
    fn topic(&self, channel: &str) -> String {
        format!("{}:ch:{channel}", self.cfg.prefix)
    }
    fn inbox(&self, instance: &str) -> String {
        format!("{}:inbox:{instance}", self.cfg.prefix)
    }
    fn inst_key(&self, instance: &str, rest: &str) -> String {
        format!("{}:i:{instance}:{rest}", self.cfg.prefix)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<ToCluster>) {
        loop {
            if self.conn.is_none() && Instant::now() >= self.next_attempt {
                self.connect().await;
            }
            let retry_at = self.next_attempt;
            let down = self.conn.is_none();
            tokio::select! {
                m = rx.recv() => {
                    let Some(first) = m else { return };
                    let mut batch = vec![first];
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch).await;
                }
                msg = next_msg(&mut self.stream) => match msg {
                    Some(m) => self.on_message(m),
                    None => self.down("pub/sub connection closed"),
                },
                _ = sleep_until(self.next_heartbeat) => self.heartbeat().await,
                _ = sleep_until(retry_at), if down => {}
            }
        }
    }

    fn down(&mut self, why: &str) {
        if self.conn.is_some() || self.stats.up.load(Ordering::Relaxed) {
            tracing::warn!("redis unreachable: {why}");
        }
        self.conn = None;
        self.stream = None;
        self.stats.up.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.stats.last_error.lock() {
            *e = why.to_string();
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        // Answer everyone still waiting for a remote instance.
        for (_, (shard, qid, _)) in self.pending_direct.drain() {
            if let Some(p) = self.ports.get(shard) {
                p.send(
                    FromCluster::Reply {
                        qid,
                        resp: Reply::Delivered(false),
                    },
                    &self.stats.publishes_dropped,
                );
            }
        }
    }

    async fn connect(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let attempt = async {
            let cmd = client.get_multiplexed_async_connection().await?;
            let pubsub = client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((cmd, pubsub))
        };
        let (cmd, pubsub) = match timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return self.down(&e.to_string()),
            Err(_) => return self.down("connect timed out"),
        };
        let (mut sink, stream) = pubsub.split();
        let mut topics: Vec<String> = self.interest.exact().map(|c| self.topic(c)).collect();
        topics.push(self.inbox(&self.cfg.instance));
        topics.extend(self.adopted_from.keys().map(|i| self.inbox(i)));
        let patterns: Vec<String> = self
            .interest
            .prefixes()
            .map(|p| format!("{}*", esc_glob(&self.topic(p))))
            .collect();
        let subscribed = async {
            sink.subscribe(&topics).await?;
            if !patterns.is_empty() {
                sink.psubscribe(&patterns).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        if let Err(e) = bounded(subscribed).await {
            return self.down(&e.to_string());
        }
        let mut cmd = cmd;
        if self.cfg.recovery.is_some() {
            match bounded(recovery::load_scripts(&mut cmd)).await {
                Ok(s) => self.scripts = Some(s),
                Err(e) => return self.down(&e.to_string()),
            }
        }
        self.conn = Some(Conn { cmd, sink });
        self.stream = Some(stream);
        if self.withdrawn {
            // Stopping: stay out of the cluster's presence.
        } else if let Err(e) = bounded(self.rewrite_presence()).await {
            return self.down(&e.to_string());
        }
        self.stats.up.store(true, Ordering::Relaxed);
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.backoff = Duration::from_millis(100);
        tracing::info!(
            "redis connected; {} topics, {} patterns",
            topics.len(),
            patterns.len()
        );
    }

    fn reply(&self, shard: usize, qid: u64, resp: Reply) {
        if let Some(p) = self.ports.get(shard) {
            p.send(
                FromCluster::Reply { qid, resp },
                &self.stats.publishes_dropped,
            );
        }
    }

    async fn handle(&mut self, batch: Vec<ToCluster>) {
        let mut pipe = redis::pipe();
        let mut queued = 0usize;
        // Member hashes written in this batch (they get their TTL at the
        // end), and whether the connection counts changed.
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut counts_changed = false;
        // Shards waiting for this batch's publishes to be in Redis.
        let mut flushed: Vec<(usize, u64)> = Vec::new();
        for m in batch {
            match m {
                ToCluster::Publish(p) => {
                    if self.conn.is_none() {
                        self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.seq += 1;
                    let topic = self.topic(&p.channel);
                    let channel = p.channel.clone();
                    let env = Envelope::Publish {
                        origin: self.cfg.instance.clone(),
                        seq: self.seq,
                        p,
                    };
                    match (&self.scripts, self.cfg.recovery) {
                        // One command: kept in the channel's stream and published.
                        (Some((publish, _)), Some(r)) => {
                            pipe.cmd("EVALSHA")
                                .arg(publish)
                                .arg(1)
                                .arg(self.history_key(&channel))
                                .arg(topic)
                                .arg(env.encode())
                                .arg(r.history_len)
                                .arg(r.ttl_ms)
                                .ignore();
                        }
                        _ => {
                            pipe.publish(topic, env.encode()).ignore();
                        }
                    }
                    self.stats.publishes_sent.fetch_add(1, Ordering::Relaxed);
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
                    pipe.publish(
                        self.inbox(&origin),
                        Envelope::DirectRes { req, ok }.encode(),
                    )
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
                    self.interest(shard, topic, on).await;
                    if let Some(qid) = reply {
                        self.reply(shard, qid, Reply::Done);
                    }
                }
                ToCluster::Query {
                    shard,
                    qid,
                    q: Query::Flushed,
                } => flushed.push((shard, qid)),
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
    }

    async fn flush(&mut self, pipe: &mut redis::Pipeline, queued: &mut usize) {
        if *queued == 0 {
            return;
        }
        *queued = 0;
        let p = std::mem::take(pipe);
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.stats
            .commands
            .fetch_add(p.cmd_iter().count() as u64, Ordering::Relaxed);
        if let Err(e) = bounded(p.query_async::<()>(&mut conn.cmd)).await {
            self.down(&e.to_string());
        }
    }

    async fn interest(&mut self, shard: usize, topic: Topic, on: bool) {
        if !self.interest.set(shard, &topic, on) {
            return;
        }
        let name = match &topic {
            Topic::Exact(c) | Topic::Prefix(c) => self.topic(c),
        };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let r = match (&topic, on) {
            (Topic::Exact(_), true) => bounded(conn.sink.subscribe(&name)).await,
            (Topic::Exact(_), false) => bounded(conn.sink.unsubscribe(&name)).await,
            (Topic::Prefix(_), true) => {
                bounded(conn.sink.psubscribe(format!("{}*", esc_glob(&name)))).await
            }
            (Topic::Prefix(_), false) => {
                bounded(conn.sink.punsubscribe(format!("{}*", esc_glob(&name)))).await
            }
        };
        if let Err(e) = r {
            self.down(&e.to_string());
        }
    }
}

/// How long one Redis round trip may take before Redis counts as away (a
/// frozen or partitioned server answers nothing and closes nothing).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match timeout(COMMAND_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "redis did not answer in time",
        ))),
    }
}

async fn next_msg(stream: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "not connected"))
}

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
//! On a Redis Cluster (`redis+cluster://`, `--redis-cluster`) the same link
//! runs its commands on `link/nodes.rs::Router` (each to its key's primary),
//! subscribes by interest with `SSUBSCRIBE` on each topic's primary
//! (`link/sharded.rs`), stands in for patterns with a prefix registry
//! (`link/patterns.rs`), reads the slot map again every second and after
//! redirections, and after an outage (a failover) sends what it held and
//! reads the channels of interest back from their streams. Names carry hash
//! tags there (see `Link::topic`).
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
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use shards::{InterestMap, Topic};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::cluster::msg::{FromCluster, Query, Reply, ToCluster};
use crate::cluster::port::ShardPort;
use crate::cluster::wire::Envelope;

mod inbound;
mod member;
pub mod nodes;
mod patterns;
mod presence;
mod queries;
mod recovery;
mod sharded;

use nodes::Router;
use sharded::{Push, ShardSubs};

use member::member_json;
use recovery::REFILL_SLACK_MS;

/// Options of the cluster link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub url: String,
    /// `url` names a Redis Cluster (`redis+cluster://`, or `--redis-cluster`):
    /// sharded pub/sub, commands routed by slot.
    pub cluster: bool,
    pub prefix: String,
    pub instance: String,
    pub heartbeat: Duration,
    pub expiry: Duration,
    /// On a Redis Cluster: how many publishes are held while the cluster is
    /// away (a failover), to be sent when it is back (0: dropped at once).
    pub outage_buffer: usize,
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
    cmd: CmdConn,
    sink: Sink,
}

/// The command connection: one server's, or the cluster's router. Both run
/// the same commands, pipelines and scripts.
#[derive(Clone)]
enum CmdConn {
    One(MultiplexedConnection),
    Cluster(Router),
}

impl ConnectionLike for CmdConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            CmdConn::One(c) => c.req_packed_command(cmd),
            CmdConn::Cluster(r) => r.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            CmdConn::One(c) => c.req_packed_commands(cmd, offset, count),
            CmdConn::Cluster(r) => r.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            CmdConn::One(c) => c.get_db(),
            CmdConn::Cluster(r) => r.get_db(),
        }
    }
}

/// Where subscriptions go: one server's pub/sub connection, or a sharded
/// subscription connection per primary of a cluster.
enum Sink {
    One(PubSubSink),
    Cluster(ShardSubs),
}

struct Link {
    cfg: LinkConfig,
    client: Option<redis::Client>,
    /// Cluster mode: the seed nodes (the last known primaries are tried too).
    seeds: Vec<redis::ConnectionInfo>,
    known: Vec<String>,
    /// Pushes of the cluster's subscription connections, by connection id.
    push_tx: tokio::sync::mpsc::UnboundedSender<(u64, redis::PushInfo)>,
    push_rx: tokio::sync::mpsc::UnboundedReceiver<(u64, redis::PushInfo)>,
    next_sub_id: u64,
    /// When the cluster's slot map is read next (and subscriptions moved).
    next_topology: Instant,
    /// Shard channels a node dropped by itself (their slot moved).
    lost: HashSet<String>,
    /// Cluster mode: the prefixes other live instances subscribe to (see
    /// `link/patterns.rs`).
    remote_prefixes: Vec<String>,
    px: patterns::PxState,
    /// Cluster mode: the last publication received per channel of interest
    /// (origin, seq), where a refill after a slot move starts.
    last_seen: HashMap<Arc<str>, (String, u64)>,
    /// Cluster mode: publishes made while the cluster was away (at most
    /// `outage_buffer`), and since when it was away.
    held: VecDeque<(Option<u64>, Arc<shards::Publication>)>,
    down_since: Option<u64>,
    /// Cluster mode: the publishes in the pipeline being built (command
    /// index, sequence number), so the ones that fail can be held.
    in_pipe: Vec<(usize, u64, Arc<shards::Publication>)>,
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
    /// When the streams of the channels of interest were last kept from
    /// expiring (with the first [`ToCluster::Touch`] after an eighth of
    /// the window).
    streams_touched: Option<Instant>,
    /// This instance's presence, rewritten after Redis comes back (ordered,
    /// so the rolling TTL refresh can resume where it stopped).
    members: BTreeMap<String, HashMap<String, String>>,
    /// Users of this instance's sockets and how many each (kept only with
    /// `--max-connections-per-user`), written to `i:<id>:users`.
    users: HashMap<String, usize>,
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
    let (client, seeds) = if cfg.cluster {
        let seeds = nodes::parse_seeds(&cfg.url)
            .map_err(|e| std::io::Error::other(format!("--redis-url: {e}")))?;
        (None, seeds)
    } else {
        match redis::Client::open(cfg.url.as_str()) {
            Ok(c) => (Some(c), Vec::new()),
            Err(e) => return Err(std::io::Error::other(format!("--redis-url: {e}"))),
        }
    };
    if cfg.cluster && cfg.prefix.contains(['{', '}']) {
        return Err(std::io::Error::other(
            "--redis-prefix: no braces with a Redis Cluster (they would change the hash slots)",
        ));
    }
    let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
    let shards = ports.len();
    let link = Link {
        client,
        seeds,
        known: Vec::new(),
        push_tx,
        push_rx,
        next_sub_id: 1,
        next_topology: Instant::now(),
        lost: HashSet::new(),
        remote_prefixes: Vec::new(),
        px: Default::default(),
        last_seen: HashMap::new(),
        held: VecDeque::new(),
        down_since: None,
        in_pipe: Vec::new(),
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
        streams_touched: None,
        members: BTreeMap::new(),
        users: HashMap::new(),
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
    fn cmd(&self) -> redis::RedisResult<CmdConn> {
        Ok(self.conn.as_ref().ok_or_else(not_connected)?.cmd.clone())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.cfg.prefix)
    }
    // On a Redis Cluster, names carry a hash tag: a channel's topic shares
    // its slot with the channel's history stream (`h:{<channel>}`), so one
    // script keeps and publishes; all of an instance's presence keys share
    // one slot, so its rewrite stays one MULTI.
    fn topic(&self, channel: &str) -> String {
        match self.cfg.cluster {
            true => format!("{}:ch:{{{channel}}}", self.cfg.prefix),
            false => format!("{}:ch:{channel}", self.cfg.prefix),
        }
    }
    fn inbox(&self, instance: &str) -> String {
        match self.cfg.cluster {
            true => format!("{}:inbox:{{{instance}}}", self.cfg.prefix),
            false => format!("{}:inbox:{instance}", self.cfg.prefix),
        }
    }
    /// The instance whose inbox `topic` is.
    fn inbox_owner<'a>(&self, topic: &'a str) -> &'a str {
        let rest = topic.rsplit(":inbox:").next().unwrap_or_default();
        match self.cfg.cluster {
            true => rest.trim_start_matches('{').trim_end_matches('}'),
            false => rest,
        }
    }
    fn inst_key(&self, instance: &str, rest: &str) -> String {
        match self.cfg.cluster {
            true => format!("{}:i:{{{instance}}}:{rest}", self.cfg.prefix),
            false => format!("{}:i:{instance}:{rest}", self.cfg.prefix),
        }
    }
    /// PUBLISH, or SPUBLISH (to the topic's slot) on a cluster.
    fn publish_cmd(&self) -> &'static str {
        match self.cfg.cluster {
            true => "SPUBLISH",
            false => "PUBLISH",
        }
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
                    if matches!(&self.conn, Some(Conn { cmd: CmdConn::Cluster(r), .. }) if r.stale()) {
                        // A command was redirected: the map changed.
                        self.next_topology = self.next_topology.min(Instant::now());
                    }
                }
                msg = next_msg(&mut self.stream) => match msg {
                    Some(m) => self.on_message(m),
                    None => self.down("pub/sub connection closed"),
                },
                Some((id, info)) = self.push_rx.recv() => self.on_push(id, info),
                _ = sleep_until(self.next_topology), if self.cfg.cluster && !down => {
                    self.topology().await;
                }
                _ = sleep_until(self.next_heartbeat) => self.heartbeat().await,
                _ = sleep_until(retry_at), if down => {}
            }
        }
    }

    fn down(&mut self, why: &str) {
        if self.conn.is_some() || self.stats.up.load(Ordering::Relaxed) {
            tracing::warn!("redis unreachable: {why}");
        }
        if self.conn.is_some() && self.down_since.is_none() {
            self.down_since = Some(shards::now_ms());
        }
        self.conn = None;
        self.stream = None;
        self.stats.up.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.stats.last_error.lock() {
            *e = why.to_string();
        }
        self.next_attempt = Instant::now() + self.backoff;
        // On a cluster the usual outage is a failover, over within seconds.
        let cap = match self.cfg.cluster {
            true => Duration::from_millis(500),
            false => Duration::from_secs(2),
        };
        self.backoff = (self.backoff * 2).min(cap);
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
        let mut topics: Vec<String> = self.interest.exact().map(|c| self.topic(c)).collect();
        topics.push(self.inbox(&self.cfg.instance));
        topics.extend(self.adopted_from.keys().map(|i| self.inbox(i)));
        let patterns: Vec<String> = self
            .interest
            .prefixes()
            .map(|p| format!("{}*", esc_glob(&self.topic(p))))
            .collect();
        let (cmd, sink) = match self.cfg.cluster {
            true => match self.connect_cluster(&topics).await {
                Some(x) => x,
                None => return,
            },
            false => match self.connect_one(&topics, &patterns).await {
                Some(x) => x,
                None => return,
            },
        };
        let mut cmd = cmd;
        if self.cfg.recovery.is_some() {
            match bounded(recovery::load_scripts(&mut cmd, self.cfg.cluster)).await {
                Ok(s) => self.scripts = Some(s),
                Err(e) => return self.down(&e.to_string()),
            }
        }
        self.conn = Some(Conn { cmd, sink });
        if self.cfg.cluster {
            let r = async {
                if self.interest.has_prefixes() {
                    self.sync_prefixes().await?;
                }
                self.read_prefixes().await
            };
            if let Err(e) = r.await {
                return self.down(&e.to_string());
            }
        }
        if self.withdrawn {
            // Stopping: stay out of the cluster's presence.
        } else if let Err(e) = bounded(self.rewrite_presence()).await {
            return self.down(&e.to_string());
        }
        if self.cfg.cluster {
            if let Err(e) = self.catch_up().await {
                return self.down(&e.to_string());
            }
            if self.conn.is_none() {
                return;
            }
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

    /// One Redis server: a multiplexed command connection and a pub/sub
    /// connection with every topic and pattern subscribed.
    async fn connect_one(
        &mut self,
        topics: &[String],
        patterns: &[String],
    ) -> Option<(CmdConn, Sink)> {
        let client = self.client.clone()?;
        let attempt = async {
            let cmd = client.get_multiplexed_async_connection().await?;
            let pubsub = client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((cmd, pubsub))
        };
        let (cmd, pubsub) = self.attempted(timeout(Duration::from_secs(2), attempt).await)?;
        let (mut sink, stream) = pubsub.split();
        let subscribed = async {
            sink.subscribe(topics).await?;
            if !patterns.is_empty() {
                sink.psubscribe(patterns).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        if let Err(e) = bounded(subscribed).await {
            self.down(&e.to_string());
            return None;
        }
        self.stream = Some(stream);
        Some((CmdConn::One(cmd), Sink::One(sink)))
    }

    /// The outcome of a timed connection attempt; on failure Redis is down.
    fn attempted<T>(
        &mut self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match r {
            Ok(Ok(x)) => Some(x),
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("connect timed out");
                None
            }
        }
    }

    /// A Redis Cluster: the slot map, a command connection per primary and
    /// every topic SSUBSCRIBEd on its slot's primary.
    async fn connect_cluster(&mut self, topics: &[String]) -> Option<(CmdConn, Sink)> {
        let mut seeds = self.seeds.clone();
        for addr in &self.known {
            if let Some((h, p)) = nodes::split_addr(addr) {
                seeds.push(nodes::at(&self.seeds[0], h, p));
            }
        }
        let scripts = recovery::scripts(true, self.cfg.recovery.is_some());
        let mut subs = ShardSubs::new(self.push_tx.clone(), self.next_sub_id);
        let (pxn, pxa) = (self.pxn_topic(), self.pxa_topic());
        let attempt = async {
            let router = Router::connect(&seeds, scripts).await?;
            subs.subscribe(&router, topics).await?;
            subs.classic(&router, &pxn, true).await?;
            subs.classic(&router, &pxa, true).await?;
            Ok::<_, redis::RedisError>(router)
        };
        let r = timeout(Duration::from_secs(4), attempt).await;
        self.next_sub_id = subs.next_id();
        let router = self.attempted(r)?;
        self.known = router.primaries();
        self.lost.clear();
        self.next_topology = Instant::now() + self.cfg.heartbeat;
        tracing::info!("redis cluster: {} primaries", self.known.len());
        Some((CmdConn::Cluster(router), Sink::Cluster(subs)))
    }

    /// A push from one of the cluster's subscription connections.
    fn on_push(&mut self, id: u64, info: redis::PushInfo) {
        let Some(Conn {
            sink: Sink::Cluster(subs),
            ..
        }) = self.conn.as_mut()
        else {
            return;
        };
        match subs.on_push(id, info) {
            Push::Message(m) => self.on_message(m),
            Push::Lost(name) => {
                self.lost.insert(name);
                self.next_topology = Instant::now();
            }
            Push::Down(addr) => self.down(&format!("redis cluster node {addr} closed")),
            Push::Nothing => {}
        }
    }

    /// Reads the cluster's slot map again and moves the subscriptions whose
    /// slot moved (or that a node dropped); on schedule, and soon after a
    /// redirection or a dropped subscription.
    async fn topology(&mut self) {
        self.next_topology = Instant::now() + self.cfg.heartbeat.min(Duration::from_secs(1));
        let Some(Conn {
            cmd: CmdConn::Cluster(router),
            ..
        }) = self.conn.as_ref()
        else {
            return;
        };
        let router = router.clone();
        let lost = std::mem::take(&mut self.lost);
        let Some(Conn {
            sink: Sink::Cluster(subs),
            ..
        }) = self.conn.as_mut()
        else {
            return;
        };
        // Subscriptions first: while one is away, its channel's publishes
        // reach nobody here.
        let r = bounded(async {
            let changed = router.refresh().await?;
            if changed || !lost.is_empty() {
                subs.rehome(&router, &lost).await
            } else {
                Ok(Vec::new())
            }
        })
        .await;
        match r {
            Ok(moved) => {
                self.known = router.primaries();
                if !moved.is_empty() {
                    tracing::info!(
                        "redis cluster: {} subscriptions moved to a new primary",
                        moved.len()
                    );
                    let from = shards::now_ms().saturating_sub(REFILL_SLACK_MS);
                    if let Err(e) = bounded(self.refill(&moved, from)).await {
                        return self.down(&e.to_string());
                    }
                }
            }
            Err(e) => return self.down(&e.to_string()),
        }
        if let Err(e) = self.read_prefixes().await {
            return self.down(&e.to_string());
        }
        if let Err(e) = self.px_acknowledge().await {
            return self.down(&e.to_string());
        }
        self.px_expire();
    }

    /// Subscribes (or unsubscribes) exact topics, on whichever kind of
    /// connection this is.
    async fn subscribe(&mut self, names: &[String], on: bool) -> redis::RedisResult<()> {
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
                        let ttl = r.ttl_ms + r.ttl_ms / 4;
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

    /// A publish into `pipe`: with recovery, the script that keeps it in
    /// its channel's stream and publishes it, in one command.
    fn queue_publish(
        &mut self,
        pipe: &mut redis::Pipeline,
        p: Arc<shards::Publication>,
        seq: Option<u64>,
    ) {
        let seq = seq.unwrap_or_else(|| {
            self.seq += 1;
            self.seq
        });
        if self.cfg.cluster {
            self.in_pipe.push((pipe.cmd_iter().count(), seq, p.clone()));
        }
        let topic = self.topic(&p.channel);
        let channel = p.channel.clone();
        let env = Envelope::Publish {
            origin: self.cfg.instance.clone(),
            seq,
            p,
        };
        match (&self.scripts, self.cfg.recovery) {
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
                pipe.cmd(self.publish_cmd())
                    .arg(topic)
                    .arg(env.encode())
                    .ignore();
            }
        }
        if self.cfg.cluster && self.matches_remote_prefix(&channel) {
            // Another instance listens by prefix (link/patterns.rs).
            pipe.publish(self.px_topic(), env.encode()).ignore();
        }
        self.stats.publishes_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Back after an outage of the cluster (a failover): first what the
    /// other instances published meanwhile on the channels of interest
    /// (from their streams, after the last publication received), then
    /// this instance's publishes held meanwhile.
    async fn catch_up(&mut self) -> redis::RedisResult<()> {
        if let Some(since) = self.down_since {
            let topics: Vec<String> = self.interest.exact().map(|c| self.topic(c)).collect();
            bounded(self.refill(&topics, since.saturating_sub(REFILL_SLACK_MS))).await?;
        }
        self.down_since = None;
        if self.held.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let held = std::mem::take(&mut self.held);
        let n = held.len();
        for (seq, p) in held {
            self.queue_publish(&mut pipe, p, seq);
        }
        let mut queued = n;
        self.flush(&mut pipe, &mut queued).await;
        tracing::info!("redis cluster: {n} publishes held during the outage sent");
        Ok(())
    }

    async fn flush(&mut self, pipe: &mut redis::Pipeline, queued: &mut usize) {
        if *queued == 0 {
            return;
        }
        *queued = 0;
        let p = std::mem::take(pipe);
        let publishes = std::mem::take(&mut self.in_pipe);
        if self.conn.is_none() {
            // Went away since they were queued (cluster mode: held).
            for (_, seq, p) in publishes.into_iter().rev() {
                if self.held.len() < self.cfg.outage_buffer {
                    self.held.push_front((Some(seq), p));
                } else {
                    self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.stats
            .commands
            .fetch_add(p.cmd_iter().count() as u64, Ordering::Relaxed);
        let router = match &conn.cmd {
            CmdConn::Cluster(r) => r.clone(),
            CmdConn::One(_) => {
                if let Err(e) = bounded(p.query_async::<()>(&mut conn.cmd)).await {
                    self.down(&e.to_string());
                }
                return;
            }
        };
        // On a cluster each command has its own answer: the publishes that
        // did not reach their primary (it died) are held and sent again,
        // with the same sequence number, once the cluster is back.
        let results = match timeout(COMMAND_TIMEOUT, router.exec_each(&p)).await {
            Ok(r) => r,
            Err(_) => return self.down("redis did not answer in time"),
        };
        let mut first_err = None;
        let mut failed = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                first_err.get_or_insert(e);
                if let Some((_, seq, pubn)) = publishes.iter().find(|(k, _, _)| *k == i) {
                    failed.push((Some(*seq), pubn.clone()));
                }
            }
        }
        if let Some(e) = first_err {
            for x in failed.into_iter().rev() {
                if self.held.len() < self.cfg.outage_buffer {
                    self.held.push_front(x);
                } else {
                    self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.down(&e.to_string());
        }
    }

    /// Subscribes or unsubscribes; on a cluster, a new prefix returns the
    /// registry version whose announcement the other instances must
    /// acknowledge before the subscription counts as in place.
    async fn interest(&mut self, shard: usize, topic: Topic, on: bool) -> Option<u64> {
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

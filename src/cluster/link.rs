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
//! Files: this one holds the link's state, the thread that runs it, and
//! the two doors every other file uses (`Link::cmd`, the command
//! connection; `Link::reply`, an answer to a shard). Under `link/`:
//! `connection.rs` the loop, connecting and going down; `topology.rs` the
//! connection to a Redis Cluster and the slot moves; `interest.rs` which
//! shards want which topic and the subscriptions that follow; `batch.rs`
//! what the shards send, a batch at a time; `publish.rs` publishes, the
//! pipeline's flush and the outage buffer; `names.rs` the shared key and
//! topic names; `inbound.rs` what arrives from Redis; `presence.rs` the
//! per-instance keys and heartbeats; `queries.rs` the cluster-wide views;
//! `recovery.rs` what is kept for recovery on another instance and how it
//! is read back; `member.rs` a member's stored JSON; `nodes.rs`,
//! `sharded.rs` and `patterns.rs` the Redis Cluster pieces above. The
//! `impl Link` files are children of this one (they use its private
//! fields); this file calls their methods but imports nothing from them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use shards::InterestMap;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::cluster::msg::{FromCluster, Reply, ToCluster};
use crate::cluster::port::ShardPort;

mod batch;
mod connection;
mod inbound;
mod interest;
mod member;
mod names;
pub mod nodes;
mod patterns;
mod presence;
mod publish;
mod queries;
mod recovery;
mod sharded;
mod topology;

use nodes::Router;
use sharded::ShardSubs;

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
    /// How long a socket's state outlives its last write (the recovery
    /// window).
    pub ttl_ms: u64,
}

impl RecoveryStore {
    /// How long a stream outlives its last write or renewal: as long as a
    /// renewed state (a quarter more than the window), so that a quiet
    /// channel's stream is never gone while a state that needs it is kept.
    pub fn stream_ttl_ms(&self) -> u64 {
        self.ttl_ms + self.ttl_ms / 4
    }
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
    /// SHA1s of the recovery scripts, loaded at connect (with recovery
    /// only).
    scripts: Option<recovery::Scripts>,
    /// Sockets of other instances recovered here: (instance, seq) → shard.
    adopted: HashMap<(String, u64), usize>,
    /// Adopted sockets per other instance (its inbox is subscribed while > 0).
    adopted_from: HashMap<String, usize>,
    /// This instance's sockets recovered elsewhere: their direct messages
    /// are answered there, not here.
    gone: HashSet<u64>,
    gone_order: VecDeque<u64>,
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

    fn reply(&self, shard: usize, qid: u64, resp: Reply) {
        if let Some(p) = self.ports.get(shard) {
            p.send(
                FromCluster::Reply { qid, resp },
                &self.stats.publishes_dropped,
            );
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

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "not connected"))
}

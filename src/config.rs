//! The validated configuration every part of the server reads. Built once
//! from the CLI (`cli.rs`); immutable and shared (`Arc`) across shards.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Verifier;

/// Which Socket.IO application the server runs on top of the protocol layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The gateway: JWT auth, channels, presence.
    Gateway,
    /// The handlers the official socket.io-protocol / engine.io-protocol
    /// test suites expect: no auth, echo.
    ProtocolSuite,
}

pub struct Config {
    pub mode: Mode,
    pub listen: SocketAddr,
    /// Listen even where another process listens (`--share-port`).
    pub share_port: bool,
    /// Socket.IO path, always with a leading and trailing slash.
    pub path: String,
    pub shards: usize,
    pub cpus: Option<Vec<usize>>,
    pub pin: bool,
    pub verifier: Option<Verifier>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// A session whose client has not connected a Socket.IO namespace
    /// within this is closed (socket.io's `connectTimeout`).
    pub connect_timeout: Duration,
    pub max_payload: usize,
    /// Bytes of the shard's websocket read buffer (see `transport::ws`).
    pub ws_read_buffer: usize,
    /// permessage-deflate accepted when offered (see `transport::deflate`).
    pub ws_compression: bool,
    /// Frames shorter than this go uncompressed.
    pub ws_compression_threshold: usize,
    /// Per-socket event rate (0 = unlimited).
    pub max_events_per_sec: u32,
    /// Above this many members a channel's presence is a `count` (0 = never).
    pub presence_max_members: usize,
    /// Time between two `count`s of a large channel.
    pub presence_interval: Duration,
    /// Joins and leaves per socket per second (0 = unlimited).
    pub max_joins_per_sec: u32,
    pub max_channels_per_socket: usize,
    /// Flush-and-close time allowed after the drain period.
    pub shutdown_timeout: Duration,
    /// Sockets are closed in batches over this period on SIGTERM (zero: at once).
    pub drain_period: Duration,
    /// Time between two drain batches.
    pub drain_interval: Duration,
    /// Time allowed for a whole HTTP request head.
    pub head_timeout: Duration,
    /// Set once on SIGTERM/SIGINT; every shard drains and stops.
    pub shutdown: std::sync::atomic::AtomicBool,
    pub send_queue: usize,
    /// Payload bytes queued per socket before it is disconnected as a slow
    /// consumer (one larger packet still fits an empty queue).
    pub send_queue_bytes: usize,
    /// Attachments one BINARY_EVENT/BINARY_ACK may announce.
    pub max_attachments: usize,
    /// Connected sessions (a Socket.IO CONNECT done) allowed on this instance.
    pub max_connections: usize,
    /// Sessions not yet connected allowed on this instance, apart from
    /// `max_connections`.
    pub max_pending_sessions: usize,
    /// Connected sockets per user on this instance (0: unlimited).
    pub max_connections_per_user: usize,
    /// Connected sockets per user on this instance, when limited. A mutex
    /// held for one map update: shards never wait on anything longer.
    pub user_connections: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Resident memory above which handshakes are refused (0: no limit).
    pub max_memory: u64,
    /// The process's resident memory, sampled (see `run`).
    pub resident: std::sync::atomic::AtomicU64,
    /// How long a dropped socket stays recoverable (zero: recovery off).
    pub recovery_window: Duration,
    /// How long a recoverable socket stays listed (no `leave`).
    pub presence_grace: Duration,
    /// Each shard's recovery log budget.
    pub recovery_log_bytes: usize,
    /// Events kept per channel's history (0: no history).
    pub history_size: usize,
    /// Each shard's history budget (the channels whose home it is).
    pub history_bytes: usize,
    pub cors_origins: Vec<String>,
    /// Static key accepted as `Authorization: Bearer <key>` by the REST API
    /// and the admin page (`--api-key`), besides an admin JWT.
    pub api_key: Option<String>,
    pub instance_id: Arc<str>,
    /// Cluster through Redis (`--redis-url`); `None` runs alone.
    pub redis: Option<crate::cluster::LinkConfig>,
    /// Engine.IO sessions open on this instance, across shards.
    pub open_sessions: AtomicUsize,
    /// Of those, the ones whose client has not connected a Socket.IO
    /// namespace yet (bounded by `max_pending_sessions`).
    pub pending_sessions: AtomicUsize,
    /// Of those, the ones that have (bounded by `max_connections`).
    pub connected_sessions: AtomicUsize,
}

/// Takes one of `max` slots counted by `n`; false when all are taken.
/// Exact across shards (one compare-and-swap).
pub fn take_slot(n: &AtomicUsize, max: usize) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    n.fetch_update(Relaxed, Relaxed, |v| (v < max).then_some(v + 1))
        .is_ok()
}

impl Config {
    /// Takes one of the user's `--max-connections-per-user` slots on this
    /// instance: `Some(sockets of the user here now)`, `None` when all are
    /// taken. Always `Some(0)` without a limit.
    pub fn take_user_slot(&self, user: &str) -> Option<usize> {
        if self.max_connections_per_user == 0 {
            return Some(0);
        }
        let Ok(mut m) = self.user_connections.lock() else {
            return Some(0);
        };
        let n = m.entry(user.to_string()).or_default();
        if *n >= self.max_connections_per_user {
            return None;
        }
        *n += 1;
        Some(*n)
    }

    /// Gives back a slot [`Config::take_user_slot`] took; the user's
    /// sockets here now (0 also without a limit).
    pub fn release_user_slot(&self, user: &str) -> usize {
        if self.max_connections_per_user == 0 {
            return 0;
        }
        let Ok(mut m) = self.user_connections.lock() else {
            return 0;
        };
        let Some(n) = m.get_mut(user) else {
            return 0;
        };
        *n = n.saturating_sub(1);
        let left = *n;
        if left == 0 {
            m.remove(user);
        }
        left
    }

    /// Over `--max-memory`: new handshakes are refused.
    pub fn over_memory(&self) -> bool {
        self.max_memory > 0
            && self.resident.load(std::sync::atomic::Ordering::Relaxed) > self.max_memory
    }

    /// A shutdown was requested: the instance is draining.
    pub fn draining(&self) -> bool {
        self.shutdown.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connection state recovery is on (`--recovery-window` > 0).
    pub fn recovery(&self) -> bool {
        !self.recovery_window.is_zero()
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`
    /// under `--cors-origin` (see [`crate::http::allowed_origin`]).
    pub fn cors_allow(&self, origin: Option<&str>) -> Option<String> {
        crate::http::allowed_origin(&self.cors_origins, origin)
    }
}

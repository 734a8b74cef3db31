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
    /// The gateway of the contract: JWT auth, channels, presence.
    Gateway,
    /// The handlers the official socket.io-protocol / engine.io-protocol
    /// test suites expect: no auth, echo.
    ProtocolSuite,
}

pub struct Config {
    pub mode: Mode,
    pub listen: SocketAddr,
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
    /// tungstenite's read buffer per websocket.
    pub ws_read_buffer: usize,
    /// Deliveries written straight to idle websockets (see `transport::ws`).
    pub ws_direct_writes: bool,
    /// Per-socket event rate (0 = unlimited).
    pub max_events_per_sec: u32,
    pub max_channels_per_socket: usize,
    pub shutdown_timeout: Duration,
    /// Time allowed for a whole HTTP request head.
    pub head_timeout: Duration,
    /// Set once on SIGTERM/SIGINT; every shard drains and stops.
    pub shutdown: std::sync::atomic::AtomicBool,
    pub send_queue: usize,
    pub max_connections: usize,
    pub cors_origins: Vec<String>,
    /// Static key accepted as `Authorization: Bearer <key>` by the REST API
    /// and the admin page (`--api-key`), besides an admin JWT.
    pub api_key: Option<String>,
    pub instance_id: Arc<str>,
    /// Cluster through Redis (`--redis-url`); `None` runs alone.
    pub redis: Option<crate::cluster::LinkConfig>,
    /// Engine.IO sessions open on this instance, across shards (for
    /// `--max-connections`, checked before any upgrade).
    pub open_sessions: AtomicUsize,
}

impl Config {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`
    /// under `--cors-origin` (see [`crate::http::allowed_origin`]).
    pub fn cors_allow(&self, origin: Option<&str>) -> Option<String> {
        crate::http::allowed_origin(&self.cors_origins, origin)
    }
}

//! Command line: `serve`, `token`, `protocol-suite`. Clap lives only here;
//! every flag has an environment variable and documents its default.
//!
//! Long because it holds every flag's clap definition and doc (about 400
//! lines), then their translation into `Config`; keeping clap in one file
//! keeps it out of everything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::{AuthConfig, Verifier};
use crate::config::{Config, Mode};

#[derive(Parser, Debug)]
#[command(
    name = "socket-gateway",
    version,
    about = "Thread-per-core Socket.IO realtime gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Mint a token signed with the configured HS secret.
    Token(TokenArgs),
    /// Run the Socket.IO layer with the official protocol test suites'
    /// handlers (no auth, echo) instead of the gateway.
    ProtocolSuite(SuiteArgs),
    /// Configuration files: `--print-default` prints a complete one.
    Config(ConfigArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Print a configuration file with every key at its default value.
    #[arg(long)]
    pub print_default: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
}

impl From<Alg> for jsonwebtoken::Algorithm {
    fn from(a: Alg) -> Self {
        match a {
            Alg::HS256 => jsonwebtoken::Algorithm::HS256,
            Alg::HS384 => jsonwebtoken::Algorithm::HS384,
            Alg::HS512 => jsonwebtoken::Algorithm::HS512,
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct JwtArgs {
    /// Shared secret for HS256/384/512. Give it twice to accept two secrets
    /// while rotating (`token` signs with the first). Without any JWT option,
    /// a secret is generated for this run and ready tokens are printed.
    #[arg(long, env = "SOCKET_GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Vec<String>,
    /// Algorithm every token must use (fixed; others are refused).
    #[arg(
        long,
        env = "SOCKET_GATEWAY_JWT_ALGORITHM",
        value_enum,
        default_value = "HS256",
        ignore_case = true
    )]
    pub jwt_algorithm: Alg,
    /// PEM public key file for RS256/ES256.
    #[arg(long, env = "SOCKET_GATEWAY_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "SOCKET_GATEWAY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "SOCKET_GATEWAY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock leeway in seconds for `exp`/`nbf`.
    #[arg(long, env = "SOCKET_GATEWAY_JWT_LEEWAY", default_value_t = 5)]
    pub jwt_leeway: u64,
    /// URL of a JSON Web Key Set (an identity provider's rotating keys):
    /// tokens whose header names a `kid` of the set are checked with that key
    /// (RS256, ES256 or EdDSA), besides the static secret or key, if any.
    #[arg(long, env = "SOCKET_GATEWAY_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Seconds between background refreshes of the key set (sooner when its
    /// response's Cache-Control max-age says so).
    #[arg(long, env = "SOCKET_GATEWAY_JWKS_REFRESH", default_value_t = 300)]
    pub jwks_refresh: u64,
    /// Seconds: at most one fetch of the key set this often for tokens with
    /// an unknown `kid` (they are refused meanwhile).
    #[arg(long, env = "SOCKET_GATEWAY_JWKS_MIN_INTERVAL", default_value_t = 10)]
    pub jwks_min_interval: u64,
}

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Address to listen on (every shard binds it with SO_REUSEPORT).
    #[arg(long, env = "SOCKET_GATEWAY_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Listen even when another process already listens on the port: with
    /// SO_REUSEPORT the kernel then spreads new connections over both (a
    /// restart on one host that overlaps the old process on purpose; a
    /// polling session's requests may then land on either process, so only
    /// websocket clients are served whole). Without it, such a start is
    /// refused.
    #[arg(long, env = "SOCKET_GATEWAY_SHARE_PORT")]
    pub share_port: bool,
    /// Number of shards (pinned executors); default: one per available CPU.
    #[arg(long, env = "SOCKET_GATEWAY_SHARDS")]
    pub shards: Option<usize>,
    /// CPUs to pin shards to, e.g. `0,2,4` (default: 0..shards).
    #[arg(long, env = "SOCKET_GATEWAY_CPUS", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Do not pin shards to CPUs.
    #[arg(long, env = "SOCKET_GATEWAY_NO_PIN")]
    pub no_pin: bool,
    /// Server PING interval in milliseconds.
    #[arg(long, env = "SOCKET_GATEWAY_PING_INTERVAL", default_value_t = 25_000)]
    pub ping_interval: u64,
    /// Milliseconds to wait for the client's PONG before closing.
    #[arg(long, env = "SOCKET_GATEWAY_PING_TIMEOUT", default_value_t = 20_000)]
    pub ping_timeout: u64,
    /// Largest Engine.IO packet / polling body accepted, in bytes.
    #[arg(long, env = "SOCKET_GATEWAY_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,
    /// Bytes read from a websocket at once, into one buffer per shard shared
    /// by all its websockets (a socket keeps bytes of its own only while a
    /// frame is not yet whole). A larger inbound message takes several
    /// reads, never fails for it.
    #[arg(long, env = "SOCKET_GATEWAY_WS_READ_BUFFER", default_value_t = 16384)]
    pub ws_read_buffer: usize,
    /// Accept permessage-deflate (RFC 7692) when a websocket client offers
    /// it: frames at or above `--ws-compression-threshold` go compressed,
    /// once per publish for all its recipients, and compressed client frames
    /// are inflated within `--max-payload`.
    #[arg(long, env = "SOCKET_GATEWAY_WS_COMPRESSION", default_value_t = false, action = clap::ArgAction::Set)]
    pub ws_compression: bool,
    /// Frames shorter than this many bytes go uncompressed.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_WS_COMPRESSION_THRESHOLD",
        default_value_t = 256
    )]
    pub ws_compression_threshold: usize,
    /// Events a socket may send per second (token bucket, bursts up to twice
    /// this); beyond it events are answered `rate_limited`, and a socket that
    /// keeps flooding is disconnected. 0 = unlimited.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_MAX_EVENTS_PER_SEC",
        default_value_t = 1000
    )]
    pub max_events_per_sec: u32,
    /// Members above which a channel sends no per-member join/leave: its
    /// members get a presence `count` instead (0 = never).
    #[arg(
        long,
        env = "SOCKET_GATEWAY_PRESENCE_MAX_MEMBERS",
        default_value_t = 1000
    )]
    pub presence_max_members: usize,
    /// Milliseconds between two presence `count`s of a large channel.
    #[arg(long, env = "SOCKET_GATEWAY_PRESENCE_INTERVAL", default_value_t = 1000)]
    pub presence_interval: u64,
    /// Joins and leaves per socket per second (bursts of twice that), counted
    /// apart from --max-events-per-sec: each one is presence for every other
    /// member. Beyond it: `rate_limited`. 0 = unlimited.
    #[arg(long, env = "SOCKET_GATEWAY_MAX_JOINS_PER_SEC", default_value_t = 50)]
    pub max_joins_per_sec: u32,
    /// Channels a socket may be a member of, and subscriptions it may hold (each).
    #[arg(
        long,
        env = "SOCKET_GATEWAY_MAX_CHANNELS_PER_SOCKET",
        default_value_t = 1000
    )]
    pub max_channels_per_socket: usize,
    /// Milliseconds a client has to send a complete HTTP request head (the
    /// handshake, each polling request); slower ones are disconnected.
    #[arg(long, env = "SOCKET_GATEWAY_HEAD_TIMEOUT", default_value_t = 30_000)]
    pub head_timeout: u64,
    /// Milliseconds a graceful shutdown (SIGTERM/SIGINT) may take to flush
    /// sockets before the process exits anyway.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_SHUTDOWN_TIMEOUT",
        default_value_t = 10_000
    )]
    pub shutdown_timeout: u64,
    /// Milliseconds over which SIGTERM/SIGINT closes this instance's sockets
    /// in batches (one batch every --drain-interval), so that they reconnect
    /// to other instances gradually; /readyz answers 503 from the signal on.
    /// 0 closes them all at once.
    #[arg(long, env = "SOCKET_GATEWAY_DRAIN_PERIOD", default_value_t = 0)]
    pub drain_period: u64,
    /// Milliseconds between two drain batches (see --drain-period).
    #[arg(long, env = "SOCKET_GATEWAY_DRAIN_INTERVAL", default_value_t = 500)]
    pub drain_interval: u64,
    /// Packets queued per socket before it is disconnected as a slow consumer.
    #[arg(long, env = "SOCKET_GATEWAY_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,
    /// Payload bytes queued per socket before it is disconnected as a slow
    /// consumer. A frame shared by many sockets counts in full for each (it
    /// stays in memory while any of them holds it); one packet larger than
    /// this is still delivered to a socket with nothing queued.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_SEND_QUEUE_BYTES",
        default_value_t = 1_048_576
    )]
    pub send_queue_bytes: usize,
    /// Milliseconds a socket that lost its connection (without a Socket.IO
    /// DISCONNECT) stays recoverable: its memberships and subscriptions are
    /// kept, `direct` to it is accepted, and a reconnect with its `pid` gets
    /// everything it missed. 0 turns connection state recovery off.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_RECOVERY_WINDOW",
        default_value_t = 120_000
    )]
    pub recovery_window: u64,
    /// Milliseconds a recoverable socket stays listed as a member (no
    /// `leave`); at most the recovery window.
    #[arg(long, env = "SOCKET_GATEWAY_PRESENCE_GRACE", default_value_t = 15_000)]
    pub presence_grace: u64,
    /// Bytes of delivered frames each shard keeps for recovering sockets
    /// (older ones are dropped first; a socket whose offset was dropped
    /// reconnects as a new socket).
    #[arg(
        long,
        env = "SOCKET_GATEWAY_RECOVERY_LOG_BYTES",
        default_value_t = 64 << 20
    )]
    pub recovery_log_bytes: usize,
    /// Events each channel's history keeps (also bounded by the recovery
    /// window's age, when it is not 0, and by --history-bytes). 0 keeps no
    /// history.
    #[arg(long, env = "SOCKET_GATEWAY_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,
    /// Bytes of channel history each shard keeps, over all the channels
    /// whose home it is (events, their frames and bookkeeping); beyond it
    /// the shard's oldest events are dropped first, whatever their channel.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_HISTORY_BYTES",
        default_value_t = 32 << 20
    )]
    pub history_bytes: usize,
    /// Binary attachments one BINARY_EVENT/BINARY_ACK may announce; more
    /// closes the session. Their bytes, with the header packet's, must stay
    /// within --max-payload. 10 is socket.io-client's own decoder limit: a
    /// packet with more would be relayed to members that cannot decode it.
    #[arg(long, env = "SOCKET_GATEWAY_MAX_ATTACHMENTS", default_value_t = 10)]
    pub max_attachments: usize,
    /// Connected sockets (sessions whose Socket.IO CONNECT succeeded) allowed
    /// on this instance; beyond it new handshakes get 503 and a CONNECT gets
    /// CONNECT_ERROR "Server at max connections".
    #[arg(
        long,
        env = "SOCKET_GATEWAY_MAX_CONNECTIONS",
        default_value_t = 1_000_000
    )]
    pub max_connections: usize,
    /// Engine.IO sessions not yet connected (no Socket.IO CONNECT yet)
    /// allowed on this instance, counted apart from --max-connections; beyond
    /// it new handshakes get 503.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_MAX_PENDING_SESSIONS",
        default_value_t = 10_000
    )]
    pub max_pending_sessions: usize,
    /// Connected sockets one user (`sub`) may hold on this instance; beyond
    /// it a CONNECT is refused (`too_many_connections`). 0 = unlimited.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_MAX_CONNECTIONS_PER_USER",
        default_value_t = 0
    )]
    pub max_connections_per_user: usize,
    /// Resident memory (bytes) above which new handshakes get HTTP 503,
    /// while connected sockets keep working. 0 = no limit.
    #[arg(long, env = "SOCKET_GATEWAY_MAX_MEMORY", default_value_t = 0)]
    pub max_memory: u64,
    /// Allowed CORS origins (comma separated, `*` for any). Default: none.
    #[arg(long, env = "SOCKET_GATEWAY_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "SOCKET_GATEWAY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// This instance's id in socket ids and the cluster: 1 to 128 ASCII
    /// letters, digits, `-`, `_` or `.` (a pod or host name). Default: the
    /// host name, a dot and 6 random hex digits (unique per process).
    #[arg(long, env = "SOCKET_GATEWAY_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Redis URL to form a cluster with other instances (`redis://[:password@]host:port[/db]`,
    /// `rediss://` for TLS; a Redis Cluster: `redis+cluster://host:port[,host:port...]`).
    /// Without it the gateway runs alone.
    #[arg(long, env = "SOCKET_GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// `--redis-url` names a node (or nodes, comma-separated) of a Redis Cluster: sharded
    /// pub/sub, commands routed by hash slot (implied by `redis+cluster://`).
    #[arg(long, env = "SOCKET_GATEWAY_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// On a Redis Cluster: publishes held while the cluster is away (a failover) and sent when it
    /// is back; beyond that (or with 0) they are dropped and counted.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_REDIS_OUTAGE_BUFFER",
        default_value_t = 10_000
    )]
    pub redis_outage_buffer: usize,
    /// Prefix of every Redis key and pub/sub topic, so clusters can share one Redis.
    #[arg(long, env = "SOCKET_GATEWAY_REDIS_PREFIX", default_value = "sgw")]
    pub redis_prefix: String,
    /// Milliseconds between this instance's heartbeats in Redis.
    #[arg(
        long,
        env = "SOCKET_GATEWAY_HEARTBEAT_INTERVAL",
        default_value_t = 2_000
    )]
    pub heartbeat_interval: u64,
    /// Milliseconds after its last heartbeat when an instance leaves every view.
    #[arg(long, env = "SOCKET_GATEWAY_INSTANCE_EXPIRY", default_value_t = 10_000)]
    pub instance_expiry: u64,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file setting any of these flags (keys: the flags without `--`);
    /// flags and environment variables override it. `socket-gateway config
    /// --print-default` prints a complete one.
    #[arg(long, env = "SOCKET_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Socket.IO path.
    #[arg(long, env = "SOCKET_GATEWAY_PATH", default_value = "/socket.io/")]
    pub path: String,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Static key for the REST API and the admin page (`Authorization:
    /// Bearer <key>`), accepted besides an admin JWT. Default: none.
    #[arg(long, env = "SOCKET_GATEWAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Milliseconds a client has to connect a Socket.IO namespace after the
    /// Engine.IO handshake before the session is closed (it counts against
    /// --max-pending-sessions until then).
    #[arg(long, env = "SOCKET_GATEWAY_CONNECT_TIMEOUT", default_value_t = 10_000)]
    pub connect_timeout: u64,
}

/// The official suites' server options as defaults: pingInterval 300,
/// pingTimeout 200, maxPayload 1000000, CORS `*`, connectTimeout 1000.
#[derive(Args, Debug)]
#[command(
    mut_arg("ping_interval", |a| a.default_value("300")),
    mut_arg("ping_timeout", |a| a.default_value("200")),
    mut_arg("max_payload", |a| a.default_value("1000000")),
    mut_arg("cors_origin", |a| a.default_value("*"))
)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Socket.IO path (the plain Engine.IO echo server is on `/engine.io/`).
    #[arg(long, default_value = "/socket.io/")]
    pub path: String,
    /// Milliseconds a client has to connect a Socket.IO namespace after the
    /// Engine.IO handshake before the session is closed.
    #[arg(long, default_value_t = 1_000)]
    pub connect_timeout: u64,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Add `"role":"admin"` (REST API and admin page).
    #[arg(long)]
    pub admin: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// `info` claim, as JSON.
    #[arg(long)]
    pub info: Option<String>,
    /// `channels` claim: allowed channel patterns, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// Tokens printed at start when no JWT option was given.
pub struct DevTokens {
    pub user: String,
    pub admin: String,
}

fn normalize_path(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        format!("/{t}/")
    }
}

/// Longest `--instance-id`: a host name (at most 64 bytes on Linux) or a
/// pod name with room to spare, short enough that socket ids stay small.
pub const MAX_INSTANCE_ID: usize = 128;

/// Whether `id` can name an instance: what orchestrators generate for pods
/// and hosts. `:` (Redis key separator), `{`/`}` (Redis hash tags) and
/// whitespace are excluded; `-` is fine because socket ids are parsed from
/// the right (see `shards::SocketKey::parse`).
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INSTANCE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The default instance id: the host name (characters an id cannot hold
/// become `_`), a dot and 6 random hex digits. The suffix keeps two
/// processes on one host, or a process restarted in place, apart: a
/// restarted instance with its old id would take the previous life's
/// sockets for its own.
fn default_instance_id() -> String {
    use rand::Rng;
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host: String = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf[..end]
            .iter()
            .map(|&b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => b as char,
                _ => '_',
            })
            .take(MAX_INSTANCE_ID - 7)
            .collect()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "gateway".into()
    } else {
        host
    };
    let n: u32 = rand::thread_rng().gen_range(0..1 << 24);
    format!("{host}.{n:06x}")
}

fn base_config(rt: &RuntimeArgs, mode: Mode, path: &str) -> Result<Config, String> {
    let shards = rt
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, shards::MAX_SHARDS);
    if rt.ping_interval == 0 || rt.ping_timeout == 0 {
        return Err("--ping-interval and --ping-timeout must be positive".into());
    }
    let instance_id = rt.instance_id.clone().unwrap_or_else(default_instance_id);
    if !valid_instance_id(&instance_id) {
        return Err(format!(
            "--instance-id {instance_id:?}: must be 1 to {MAX_INSTANCE_ID} ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(Config {
        mode,
        listen: rt.listen,
        share_port: rt.share_port,
        path: normalize_path(path),
        shards,
        cpus: rt.cpus.clone(),
        pin: !rt.no_pin,
        verifier: None,
        ping_interval: Duration::from_millis(rt.ping_interval),
        ping_timeout: Duration::from_millis(rt.ping_timeout),
        connect_timeout: Duration::from_secs(10),
        max_payload: rt.max_payload.max(64),
        ws_read_buffer: rt.ws_read_buffer.clamp(256, 1 << 20),
        ws_compression: rt.ws_compression,
        ws_compression_threshold: rt.ws_compression_threshold,
        max_events_per_sec: rt.max_events_per_sec,
        max_joins_per_sec: rt.max_joins_per_sec,
        presence_max_members: rt.presence_max_members,
        presence_interval: Duration::from_millis(rt.presence_interval.max(10)),
        max_channels_per_socket: rt.max_channels_per_socket.max(1),
        shutdown_timeout: Duration::from_millis(rt.shutdown_timeout),
        drain_period: Duration::from_millis(rt.drain_period),
        drain_interval: Duration::from_millis(rt.drain_interval.max(1)),
        head_timeout: Duration::from_millis(rt.head_timeout.max(1)),
        shutdown: std::sync::atomic::AtomicBool::new(false),
        send_queue: rt.send_queue.max(1),
        send_queue_bytes: rt.send_queue_bytes.max(1),
        max_attachments: rt.max_attachments.min(proto::socketio::MAX_ATTACHMENTS),
        max_connections: rt.max_connections,
        max_pending_sessions: rt.max_pending_sessions,
        max_connections_per_user: rt.max_connections_per_user,
        user_connections: Default::default(),
        max_memory: rt.max_memory,
        resident: std::sync::atomic::AtomicU64::new(0),
        recovery_window: Duration::from_millis(rt.recovery_window),
        presence_grace: Duration::from_millis(rt.presence_grace.min(rt.recovery_window)),
        recovery_log_bytes: rt.recovery_log_bytes.max(1 << 16),
        history_size: rt.history_size,
        history_bytes: rt.history_bytes.max(1 << 16),
        cors_origins: rt.cors_origin.clone(),
        api_key: None,
        instance_id: instance_id.into(),
        redis: None,
        open_sessions: AtomicUsize::new(0),
        pending_sessions: AtomicUsize::new(0),
        connected_sessions: AtomicUsize::new(0),
    })
}

fn jwt_configured(j: &JwtArgs) -> bool {
    !j.jwt_secret.is_empty() || j.jwt_public_key.is_some() || j.jwks_url.is_some()
}

fn auth_config(j: &JwtArgs, generated: Option<&str>) -> Result<AuthConfig, String> {
    let public_key_pem = match &j.jwt_public_key {
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| format!("--jwt-public-key {}: {e}", p.display()))?)
        }
        None => None,
    };
    if j.jwt_secret.len() > 2 {
        return Err(
            "--jwt-secret may be given at most twice (the current and the next or previous secret)"
                .into(),
        );
    }
    let jwks = match &j.jwks_url {
        Some(url) => Some(
            crate::jwks::Jwks::start(crate::jwks::JwksConfig {
                url: url.clone(),
                refresh: Duration::from_secs(j.jwks_refresh.max(1)),
                min_interval: Duration::from_secs(j.jwks_min_interval),
                timeout: Duration::from_secs(5),
            })
            .map_err(|e| format!("--jwks-url: {e}"))?,
        ),
        None => None,
    };
    Ok(AuthConfig {
        algorithm: j.jwt_algorithm.into(),
        secret: j
            .jwt_secret
            .first()
            .map(String::as_str)
            .or(generated)
            .map(|s| s.as_bytes().to_vec()),
        extra_secrets: j
            .jwt_secret
            .iter()
            .skip(1)
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        jwks,
        public_key_pem,
        issuer: j.jwt_issuer.clone(),
        audience: j.jwt_audience.clone(),
        leeway_secs: j.jwt_leeway,
    })
}

/// Builds the gateway's configuration; with no JWT option, also a generated
/// secret's ready tokens.
pub fn serve_config(a: &ServeArgs) -> Result<(Config, Option<DevTokens>), String> {
    let mut cfg = base_config(&a.runtime, Mode::Gateway, &a.path)?;
    cfg.connect_timeout = Duration::from_millis(a.connect_timeout.max(1));
    if let Some(url) = &a.cluster.redis_url {
        let c = &a.cluster;
        if c.heartbeat_interval == 0 || c.instance_expiry <= c.heartbeat_interval {
            return Err(
                "--instance-expiry must be longer than --heartbeat-interval (and both positive)"
                    .into(),
            );
        }
        cfg.redis = Some(crate::cluster::LinkConfig {
            url: url.clone(),
            cluster: c.redis_cluster
                || url.starts_with("redis+cluster://")
                || url.starts_with("rediss+cluster://"),
            outage_buffer: c.redis_outage_buffer,
            prefix: c.redis_prefix.clone(),
            instance: cfg.instance_id.to_string(),
            heartbeat: Duration::from_millis(c.heartbeat_interval),
            expiry: Duration::from_millis(c.instance_expiry),
            recovery: cfg.recovery().then(|| crate::cluster::link::RecoveryStore {
                history_len: cfg.history_size.max(1),
                ttl_ms: cfg.recovery_window.as_millis() as u64,
            }),
        });
    }
    cfg.api_key = a.api_key.clone().filter(|k| !k.is_empty());
    let generated = (!jwt_configured(&a.jwt)).then(crate::auth::generate_secret);
    let mut jwt = a.jwt.clone();
    if generated.is_some() {
        jwt.jwt_algorithm = Alg::HS256;
    }
    let auth = auth_config(&jwt, generated.as_deref())?;
    cfg.verifier = Some(Verifier::new(&auth)?);
    let dev = match generated {
        Some(secret) => {
            let alg = jsonwebtoken::Algorithm::HS256;
            let ttl = 24 * 3600;
            Some(DevTokens {
                user: crate::auth::mint(alg, secret.as_bytes(), "user1", false, ttl, None, None)?,
                admin: crate::auth::mint(alg, secret.as_bytes(), "admin", true, ttl, None, None)?,
            })
        }
        None => None,
    };
    Ok((cfg, dev))
}

pub fn suite_config(a: &SuiteArgs) -> Result<Config, String> {
    let mut cfg = base_config(&a.runtime, Mode::ProtocolSuite, &a.path)?;
    cfg.connect_timeout = Duration::from_millis(a.connect_timeout.max(1));
    Ok(cfg)
}

/// `socket-gateway token`: prints a token signed with `--jwt-secret`.
pub fn mint_token(a: &TokenArgs) -> Result<String, String> {
    let secret = a
        .jwt
        .jwt_secret
        .first()
        .ok_or("token needs --jwt-secret (or SOCKET_GATEWAY_JWT_SECRET)")?;
    let info = match &a.info {
        Some(s) => Some(serde_json::from_str(s).map_err(|e| format!("--info is not JSON: {e}"))?),
        None => None,
    };
    let alg: jsonwebtoken::Algorithm = a.jwt.jwt_algorithm.into();
    if !matches!(a.jwt.jwt_algorithm, Alg::HS256 | Alg::HS384 | Alg::HS512) {
        return Err("token can only mint HS256/HS384/HS512 tokens".into());
    }
    crate::auth::mint(
        alg,
        secret.as_bytes(),
        &a.sub,
        a.admin,
        a.ttl,
        info,
        a.channels.clone(),
    )
}

/// The log filter of whichever command runs.
pub fn log_level(c: &Command) -> &str {
    match c {
        Command::Serve(a) => &a.runtime.log_level,
        Command::ProtocolSuite(a) => &a.runtime.log_level,
        Command::Token(_) | Command::Config(_) => "warn",
    }
}

pub type Shared = Arc<Config>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_take_pod_and_host_names() {
        for ok in ["gateway-7d9f8-abc12.ns", "node1.example.com", "a_b", "x"] {
            assert!(valid_instance_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_INSTANCE_ID + 1);
        for bad in ["", "a:b", "a{b}", "a b", "é", long.as_str()] {
            assert!(!valid_instance_id(bad), "{bad}");
        }
        let d = default_instance_id();
        assert!(valid_instance_id(&d), "{d}");
        assert_ne!(
            d,
            default_instance_id(),
            "the default differs per process start"
        );
    }
}

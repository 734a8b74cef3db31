//! The I/O edge of one shard: bind the shared port (SO_REUSEPORT), accept,
//! read HTTP request heads and route them: Engine.IO handshakes, polling
//! requests and websocket upgrades to sessions; health routes; 404 for the
//! rest. A request for a session another shard owns is handed to that shard
//! (fd and bytes read so far) through the mailbox, so a session lives on one
//! shard for its whole life.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shards::rt::{TcpListener, TcpStream};
use shards::{session_owner, CloseReason, Shard};

use crate::config::Config;
use crate::http::{self, HeadError, Method, Request};
use crate::metrics::Metrics;
use crate::session::{Handshake, Session};
use crate::transport::{polling, ws};

/// What one shard's edge holds: its sessions and counters.
pub struct ShardCtx {
    pub shard: Rc<Shard>,
    pub cfg: Arc<Config>,
    pub sessions: RefCell<HashMap<Rc<str>, Rc<Session>>>,
    pub metrics: Metrics,
    /// The link to other instances (with `--redis-url`).
    pub cluster: Option<Rc<crate::cluster::ClusterLink>>,
    /// Websocket tasks still running (a graceful stop waits for them).
    pub live_websockets: std::cell::Cell<usize>,
    /// Scratch for a websocket task's batch of packets (borrowed only
    /// between two awaits), so sockets keep no batch storage of their own.
    pub ws_batch: RefCell<Vec<proto::engineio::Outgoing>>,
}

/// Binds `addr` with SO_REUSEPORT (so every shard can bind it) and a deep
/// backlog for connection bursts.
pub fn bind_reuseport(addr: SocketAddr, listen: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    if listen {
        s.listen(4096)?;
    }
    Ok(s)
}

/// One shard's life: bind, install the adopt handler, run the sweeper and
/// the accept loop.
pub async fn run_shard(
    shard: Rc<Shard>,
    cfg: Arc<Config>,
    addr: SocketAddr,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) {
    let listener = match bind_reuseport(addr, true) {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            unsafe { TcpListener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(s)) }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let ctx = Rc::new(ShardCtx {
        shard: shard.clone(),
        cfg,
        sessions: RefCell::default(),
        metrics: Metrics::new(shard.id(), shard.instance()),
        cluster: cluster.map(|c| c.attach(&shard)),
        live_websockets: std::cell::Cell::new(0),
        ws_batch: RefCell::new(Vec::new()),
    });
    let adopt_ctx = ctx.clone();
    shard.on_adopt(move |fd: OwnedFd, buffered| {
        let stream = unsafe { TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        shards::rt::spawn_local(serve_connection(adopt_ctx.clone(), stream, buffered)).detach();
    });
    shards::rt::spawn_local(sweeper(ctx.clone())).detach();
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shutdown_requested(&ctx.cfg).await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            drop(listener);
            return drain(ctx).await;
        };
        match accepted {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                shards::rt::spawn_local(serve_connection(ctx.clone(), stream, Vec::new())).detach();
            }
            Err(e) => {
                // Out of file descriptors or a transient error: back off
                // instead of spinning; established sockets keep being served.
                tracing::warn!("accept failed: {e}");
                shards::rt::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Up to this many sessions on a shard, the sweeper wakes exactly when the
/// next deadline is due instead of once per period.
const PRECISE_SWEEP_MAX: usize = 1024;

/// Resolves once a shutdown was requested (checked every 50 ms: a timer per
/// shard, not per socket).
async fn shutdown_requested(cfg: &Config) {
    while !cfg.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
        shards::rt::sleep(Duration::from_millis(50)).await;
    }
}

/// Graceful stop of one shard: every session flushes what is queued and
/// closes its transport (clients see a transport close and reconnect,
/// elsewhere), then the shard returns once every websocket task has ended.
/// The process-wide `--shutdown-timeout` bounds the wait.
async fn drain(ctx: Rc<ShardCtx>) {
    let sessions: Vec<Rc<Session>> = ctx.sessions.borrow().values().cloned().collect();
    tracing::info!(
        shard = ctx.shard.id(),
        sessions = sessions.len(),
        "draining"
    );
    for s in sessions {
        s.terminate(CloseReason::ServerShutdown);
    }
    while ctx.live_websockets.get() > 0 || !ctx.sessions.borrow().is_empty() {
        shards::rt::sleep(Duration::from_millis(20)).await;
    }
    // Let the last close frames and presence leaves go out.
    shards::rt::sleep(Duration::from_millis(50)).await;
}

/// Sends PINGs, enforces PONG and token deadlines for every session of this
/// shard, from one timer instead of one per session.
async fn sweeper(ctx: Rc<ShardCtx>) {
    let cfg = &ctx.cfg;
    let period = (cfg.ping_interval.min(cfg.ping_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut wait = period;
    loop {
        shards::rt::sleep(wait).await;
        let now = Instant::now();
        let now_secs = shards::now_ms() / 1000;
        ctx.metrics
            .mailbox_pending(ctx.shard.mailbox().pending_requests());
        let sessions: Vec<Rc<Session>> = ctx.sessions.borrow().values().cloned().collect();
        // A few sessions: wake at the earliest deadline, so PINGs and
        // timeouts are on time (the protocol suites count in 100 ms); many:
        // one sweep per period.
        let precise = sessions.len() <= PRECISE_SWEEP_MAX;
        let mut next = now + period;
        for s in sessions {
            s.tick(now, now_secs);
            if precise && !s.is_ended() {
                next = next.min(s.next_due());
            }
        }
        wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
    }
}

/// Serves one client connection: requests until it closes, is upgraded to
/// a websocket or handed to another shard.
pub async fn serve_connection(ctx: Rc<ShardCtx>, mut stream: TcpStream, mut buf: Vec<u8>) {
    let limit = ctx.cfg.head_timeout;
    let _ = stream.set_read_timeout(Some(limit));
    loop {
        // The whole head must arrive in time, not just each read: a client
        // trickling one byte at a time would otherwise hold the socket.
        // (408 is only the marker; nothing is sent.)
        let timed_out = async {
            shards::rt::sleep(limit).await;
            Err(408)
        };
        let head = futures_lite::future::or(read_head(&mut stream, &mut buf), timed_out).await;
        let req = match head {
            Ok(Some(r)) => r,
            Ok(None) => return,
            // Too slow: close without answering (like nginx's header
            // timeout); a slowloris client gets nothing to read.
            Err(408) => return,
            Err(status) => {
                let _ = stream
                    .write_all(&http::response(
                        status,
                        "text/plain",
                        http::status_text(status).as_bytes(),
                        None,
                        false,
                        &[],
                    ))
                    .await;
                return;
            }
        };
        match route(&ctx, stream, buf, req).await {
            Some((s, b)) => {
                stream = s;
                buf = b;
            }
            None => return,
        }
    }
}

/// Reads until `buf` holds a complete request head. `Ok(None)`: the client
/// went away (or idled out) between requests; `Err(status)`: answer it.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Request>, u16> {
    loop {
        match http::parse_head(buf) {
            Ok(Some(r)) => return Ok(Some(r)),
            Ok(None) => {}
            Err(HeadError::Malformed | HeadError::Framing) => return Err(400),
            Err(HeadError::TooLarge) => return Err(431),
        }
        match read_more(stream, buf, 2048).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Reads up to `chunk` more bytes onto the end of `buf`. Reading straight
/// into the vector (not through a stack array) keeps every connection's
/// future small: a future is as big as the largest state it can be in.
pub async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: usize,
) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let r = stream.read(&mut buf[start..]).await;
    buf.truncate(start + r.as_ref().map_or(0, |n| *n));
    r
}

/// Writes a response; `None` when the connection must end.
pub async fn reply(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    consumed: usize,
    keep_alive: bool,
    bytes: Vec<u8>,
) -> Option<(TcpStream, Vec<u8>)> {
    stream.write_all(&bytes).await.ok()?;
    if !keep_alive {
        let _ = stream.close().await;
        return None;
    }
    buf.drain(..consumed.min(buf.len()));
    Some((stream, buf))
}

/// The JSON body of an Engine.IO error answer.
fn eio_error(code: u8, message: &str) -> Vec<u8> {
    format!("{{\"code\":{code},\"message\":\"{message}\"}}").into_bytes()
}

async fn route(
    ctx: &Rc<ShardCtx>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    let cfg = &ctx.cfg;
    let cors = cfg.cors_allow(req.origin.as_deref());
    let ka = req.keep_alive;
    let json = |status: u16, body: Vec<u8>| {
        http::response(status, "application/json", &body, cors.as_deref(), ka, &[])
    };
    let path = req.path.as_str();
    if path == cfg.path || path == cfg.path.trim_end_matches('/') {
        return engine_io(ctx, stream, buf, req, false).await;
    }
    if cfg.mode == crate::config::Mode::ProtocolSuite
        && (path == "/engine.io/" || path == "/engine.io")
    {
        // The engine.io-protocol suite's plain Engine.IO echo server.
        return engine_io(ctx, stream, buf, req, true).await;
    }
    if path.starts_with("/api/")
        || path == "/socket"
        || path.starts_with("/socket/")
        || path == "/metrics"
    {
        // Boxed: the REST futures are large and rare; they must not size
        // every connection's future.
        return Box::pin(crate::rest::serve(ctx, stream, buf, req)).await;
    }
    let resp = match (path, &req.method) {
        ("/healthz", Method::Get) => json(200, b"{\"status\":\"ok\"}".to_vec()),
        ("/readyz", Method::Get) => match &ctx.cluster {
            Some(c) if !c.is_up() => {
                let why = c
                    .stats
                    .last_error
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_default();
                let reason = crate::frame::json_str(&format!("redis unreachable: {why}"));
                json(
                    503,
                    format!("{{\"status\":\"unavailable\",\"reason\":{reason}}}").into_bytes(),
                )
            }
            _ => json(200, b"{\"status\":\"ready\"}".to_vec()),
        },
        ("/healthz" | "/readyz", _) => http::response(
            405,
            "application/json",
            b"{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET\"}}",
            cors.as_deref(),
            ka,
            &[("Allow", "GET")],
        ),
        _ => json(
            404,
            b"{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}".to_vec(),
        ),
    };
    let consumed = req.head_len + req.content_length.unwrap_or(0);
    reply(
        stream,
        buf,
        consumed,
        ka && req.content_length.unwrap_or(0) == 0,
        resp,
    )
    .await
}

/// `raw`: a plain Engine.IO session without the Socket.IO layer.
async fn engine_io(
    ctx: &Rc<ShardCtx>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
    raw: bool,
) -> Option<(TcpStream, Vec<u8>)> {
    let cfg = &ctx.cfg;
    let cors = cfg.cors_allow(req.origin.as_deref());
    let ka = req.keep_alive;
    let err = |status: u16, code: u8, msg: &str| {
        http::response(
            status,
            "application/json",
            &eio_error(code, msg),
            cors.as_deref(),
            false,
            &[],
        )
    };
    if req.method == Method::Options {
        let allow = [
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            (
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type",
            ),
        ];
        let resp = http::response(204, "", b"", cors.as_deref(), ka, &allow);
        return reply(stream, buf, req.head_len, ka, resp).await;
    }
    if req.query_param("EIO").as_deref() != Some("4") {
        return reply(
            stream,
            buf,
            0,
            false,
            err(400, 5, "Unsupported protocol version"),
        )
        .await;
    }
    let websocket = match req.query_param("transport").as_deref() {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return reply(stream, buf, 0, false, err(400, 0, "Transport unknown")).await,
    };
    if websocket && (!req.upgrade_websocket || req.ws_key.is_none() || req.method != Method::Get) {
        return reply(stream, buf, 0, false, err(400, 3, "Bad request")).await;
    }
    let Some(sid) = req.query_param("sid").map(|s| s.into_owned()) else {
        return handshake(ctx, stream, buf, req, websocket, raw).await;
    };
    let shard = &ctx.shard;
    if let Some(owner) = session_owner(&sid).filter(|&o| o != shard.id() && o < shard.nr_shards()) {
        // The kernel gave this connection to the wrong shard: move it.
        let fd = unsafe { libc::dup(stream.as_raw_fd()) };
        if fd >= 0 {
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            drop(stream);
            shard.hand_off(owner, fd, buf).await;
        }
        return None;
    }
    let session = ctx.sessions.borrow().get(sid.as_str()).cloned();
    let Some(session) = session.filter(|s| s.check_deadlines(Instant::now())) else {
        if !websocket && req.method == Method::Get && polling::closed_by_client(&sid) {
            return polling::noop(ctx, stream, buf, req).await;
        }
        return reply(stream, buf, 0, false, err(400, 1, "Session ID unknown")).await;
    };
    if websocket && (session.websocket.get() || session.upgrading.get()) {
        // Already carried by a websocket (or one is probing): like the
        // reference server, accept this one and close it at once.
        ws::accept_and_close(stream, &req).await;
        return None;
    }
    if websocket {
        ws::upgrade(session, stream, buf, req, true).await;
        return None;
    }
    match req.method {
        Method::Get => polling::get(session, stream, buf, req).await,
        Method::Post => polling::post(session, stream, buf, req).await,
        _ => reply(stream, buf, 0, false, err(400, 2, "Bad handshake method")).await,
    }
}

fn new_sid(shard: &Shard) -> Rc<str> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let mut s = format!("{:02x}", shard.id());
    s.extend((0..20).map(|_| ALPHABET[rng.gen_range(0..64)] as char));
    s.into()
}

async fn handshake(
    ctx: &Rc<ShardCtx>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
    websocket: bool,
    raw: bool,
) -> Option<(TcpStream, Vec<u8>)> {
    let cfg = &ctx.cfg;
    let cors = cfg.cors_allow(req.origin.as_deref());
    if !websocket && req.method != Method::Get {
        let body = eio_error(2, "Bad handshake method");
        return reply(
            stream,
            buf,
            0,
            false,
            http::response(400, "application/json", &body, cors.as_deref(), false, &[]),
        )
        .await;
    }
    let hs = Handshake {
        bearer: req.authorization.clone(),
        query_token: req.query_param("token").map(|t| t.into_owned()),
    };
    let session = match Session::new(ctx.clone(), new_sid(&ctx.shard), hs, websocket, raw) {
        Ok(s) => s,
        Err(full) => {
            let body = eio_error(3, full.message());
            let resp = http::response(503, "application/json", &body, cors.as_deref(), false, &[]);
            return reply(stream, buf, 0, false, resp).await;
        }
    };
    ctx.sessions
        .borrow_mut()
        .insert(session.sid.clone(), session.clone());
    let open = session.open_packet();
    if websocket {
        session.send_text(open);
        ws::upgrade(session, stream, buf, req, false).await;
        return None;
    }
    let ka = req.keep_alive;
    let resp = http::response(
        200,
        "text/plain; charset=UTF-8",
        open.as_bytes(),
        cors.as_deref(),
        ka,
        &[],
    );
    reply(stream, buf, req.head_len, ka, resp).await
}

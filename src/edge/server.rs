//! The I/O edge of one shard: build its services and its Engine.IO table
//! (with the application chosen by `--mode`), bind the shared port
//! (SO_REUSEPORT), accept, read HTTP request heads and route them: the
//! Engine.IO path to `engine::handshake`, the REST API, `/metrics` and the
//! admin page to `rest`, health routes here, 404 for the rest.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use shards::rt::{TcpListener, TcpStream};
use shards::Shard;

use crate::app::echo::Echo;
use crate::app::gateway::Gateway;
use crate::config::{Config, Mode};
use crate::ctx::ShardCtx;
use crate::engine::session::{Engine, EngineHandler, HandlerFactory};
use crate::engine::{handshake, sweep};
use crate::http::{self, read_more, reply, HeadError, Method, Request};
use crate::metrics::Metrics;
use crate::sio::SioSession;

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
    let ws_read = RefCell::new(vec![0; cfg.ws_read_buffer].into_boxed_slice());
    let ctx = Rc::new(ShardCtx {
        ws_read,
        presence_counts: RefCell::default(),
        shard: shard.clone(),
        cfg,
        metrics: Metrics::new(shard.id(), shard.instance()),
        cluster: cluster.map(|c| c.attach(&shard)),
        live_websockets: Cell::new(0),
        ws_batch: RefCell::new(Vec::new()),
        ws_deflated: RefCell::default(),
        ws_sink: Default::default(),
        ws_rests: RefCell::default(),
        deflater: RefCell::default(),
    });
    let engine = Engine::new(ctx.clone(), handler_factory(&ctx));
    let adopt_engine = engine.clone();
    shard.on_adopt(move |fd: OwnedFd, buffered| {
        let stream = unsafe { TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        shards::rt::spawn_local(serve_connection(adopt_engine.clone(), stream, buffered)).detach();
    });
    shards::rt::spawn_local(sweep::sweeper(engine.clone())).detach();
    // The drain runs beside the accept loop: during it `/readyz` must still
    // answer (503) and polling sessions still need their requests served;
    // new handshakes are refused in `Session::open`.
    let drained = Rc::new(Cell::new(false));
    {
        let (engine, drained) = (engine.clone(), drained.clone());
        shards::rt::spawn_local(async move {
            shutdown_requested(&engine.ctx.cfg).await;
            sweep::drain(engine).await;
            drained.set(true);
        })
        .detach();
    }
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            while !drained.get() {
                shards::rt::sleep(Duration::from_millis(20)).await;
            }
            None
        })
        .await;
        let Some(accepted) = accepted else {
            drop(listener);
            return;
        };
        match accepted {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                shards::rt::spawn_local(serve_connection(engine.clone(), stream, Vec::new()))
                    .detach();
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

/// The Socket.IO application every session of this instance runs, chosen
/// once from `--mode`.
fn handler_factory(ctx: &Rc<ShardCtx>) -> HandlerFactory {
    match ctx.cfg.mode {
        Mode::Gateway => {
            let app = Gateway::new(ctx);
            Box::new(move || Box::new(SioSession::new(app.clone())) as Box<dyn EngineHandler>)
        }
        Mode::ProtocolSuite => {
            let app = Rc::new(Echo);
            Box::new(move || Box::new(SioSession::new(app.clone())) as Box<dyn EngineHandler>)
        }
    }
}

/// Resolves once a shutdown was requested (checked every 50 ms: a timer per
/// shard, not per socket).
async fn shutdown_requested(cfg: &Config) {
    while !cfg.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
        shards::rt::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves one client connection: requests until it closes, is upgraded to
/// a websocket or handed to another shard. An `async` block rather than an
/// `async fn` (which keeps its arguments twice): every connection waiting
/// for its request holds this future.
#[allow(clippy::manual_async_fn)]
pub fn serve_connection(
    engine: Rc<Engine>,
    mut stream: TcpStream,
    mut buf: Vec<u8>,
) -> impl std::future::Future<Output = ()> {
    async move {
        let limit = engine.ctx.cfg.head_timeout;
        let _ = stream.set_read_timeout(Some(limit));
        loop {
            // The whole head must arrive in time, not just each read: a client
            // trickling one byte at a time would otherwise hold the socket.
            let timed_out = async {
                shards::rt::sleep(limit).await;
                Err(NoHead::TimedOut)
            };
            let head = async {
                read_head(&mut stream, &mut buf)
                    .await
                    .map_err(NoHead::Refused)
            };
            let req = match futures_lite::future::or(head, timed_out).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                // Too slow: close without answering (like nginx's header
                // timeout); a slowloris client gets nothing to read.
                Err(NoHead::TimedOut) => return,
                Err(NoHead::Refused(e)) => {
                    let status = e.status();
                    let answer = http::response(
                        status,
                        "text/plain",
                        http::status_text(status).as_bytes(),
                        None,
                        false,
                        &[],
                    );
                    let _ = Box::pin(stream.write_all(&answer)).await;
                    return;
                }
            };
            // Boxed: what a connection holds while it waits for its request
            // stays small. Under a connect storm thousands wait at once, and a
            // large wait is memory the process keeps after the storm.
            match Box::pin(route(&engine, stream, buf, req)).await {
                Some((s, b)) => {
                    stream = s;
                    buf = b;
                }
                None => return,
            }
        }
    }
}

/// Why a connection gave no request to route.
enum NoHead {
    /// The whole head did not arrive within `--head-timeout`.
    TimedOut,
    /// A head this server refuses (answered with its status, then closed).
    Refused(HeadError),
}

/// Reads until `buf` holds a complete request head. `Ok(None)`: the client
/// went away (or idled out) between requests.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, HeadError> {
    loop {
        if let Some(r) = http::parse_head(buf)? {
            return Ok(Some(r));
        }
        match read_more(stream, buf, 2048).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn route(
    engine: &Rc<Engine>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    let ctx = &engine.ctx;
    let cfg = &ctx.cfg;
    let cors = cfg.cors_allow(req.origin.as_deref());
    let ka = req.keep_alive;
    let json = |status: u16, body: Vec<u8>| {
        http::response(status, "application/json", &body, cors.as_deref(), ka, &[])
    };
    let path = req.path.as_str();
    if path == cfg.path || path == cfg.path.trim_end_matches('/') {
        return handshake::serve(engine, stream, buf, req, false).await;
    }
    if cfg.mode == Mode::ProtocolSuite && (path == "/engine.io/" || path == "/engine.io") {
        // The engine.io-protocol suite's plain Engine.IO echo server.
        return handshake::serve(engine, stream, buf, req, true).await;
    }
    if path.starts_with("/api/")
        || path == "/socket"
        || path.starts_with("/socket/")
        || path == "/metrics"
    {
        // Boxed: the REST futures are large and rare; they must not size
        // every connection's future.
        return Box::pin(crate::edge::rest::serve(ctx, stream, buf, req)).await;
    }
    let jwks = cfg.verifier.as_ref().and_then(|v| v.jwks());
    let resp = match (path, &req.method) {
        ("/healthz", Method::Get) => json(200, b"{\"status\":\"ok\"}".to_vec()),
        ("/readyz", Method::Get) => match &ctx.cluster {
            // First: the load balancer must stop sending at once.
            _ if cfg.draining() => json(
                503,
                b"{\"status\":\"draining\",\"reason\":\"shutting down\"}".to_vec(),
            ),
            // No key set ever loaded: no token naming a kid can be checked.
            _ if jwks.is_some_and(|j| !j.loaded.load(std::sync::atomic::Ordering::Relaxed)) => {
                let why = jwks.and_then(|j| j.error()).unwrap_or_default();
                let reason = crate::frame::json_str(&format!("jwks not loaded: {why}"));
                json(
                    503,
                    format!("{{\"status\":\"unavailable\",\"reason\":{reason}}}").into_bytes(),
                )
            }
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
            // A failed refresh keeps the previous keys: still ready, but said.
            _ => match jwks.and_then(|j| j.error()) {
                Some(why) => {
                    let w = crate::frame::json_str(&format!("jwks refresh failed: {why}"));
                    json(
                        200,
                        format!("{{\"status\":\"ready\",\"warnings\":[{w}]}}").into_bytes(),
                    )
                }
                None => json(200, b"{\"status\":\"ready\"}".to_vec()),
            },
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

//! The Engine.IO endpoint: a request on the Engine.IO path opens a session
//! (the handshake) or finds its session and goes to its transport. A
//! request for a session another shard owns is handed to that shard (fd and
//! bytes read so far) through the mailbox, so a session lives on one shard
//! for its whole life.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Instant;

use shards::rt::TcpStream;
use shards::{session_owner, Shard};

use crate::engine::session::{Engine, Handshake, Session};
use crate::engine::transport::{polling, ws};
use crate::http::{self, reply, Method, Request};

/// The JSON body of an Engine.IO error answer.
fn eio_error(code: u8, message: &str) -> Vec<u8> {
    format!("{{\"code\":{code},\"message\":\"{message}\"}}").into_bytes()
}

/// `raw`: a plain Engine.IO session without the Socket.IO layer.
pub async fn serve(
    engine: &Rc<Engine>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
    raw: bool,
) -> Option<(TcpStream, Vec<u8>)> {
    let ctx = &engine.ctx;
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
        return handshake(engine, stream, buf, req, websocket, raw).await;
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
    let session = engine.get(sid.as_str());
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
    engine: &Rc<Engine>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
    websocket: bool,
    raw: bool,
) -> Option<(TcpStream, Vec<u8>)> {
    let ctx = &engine.ctx;
    let cors = ctx.cfg.cors_allow(req.origin.as_deref());
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
    let bearer = req.authorization.clone();
    let query_token = req.query_param("token").map(|t| t.into_owned());
    let hs = (bearer.is_some() || query_token.is_some()).then(|| {
        Box::new(Handshake {
            bearer,
            query_token,
        })
    });
    let session = match Session::open(engine, new_sid(&ctx.shard), hs, websocket, raw) {
        Ok(s) => s,
        Err(full) => {
            let body = eio_error(3, full.message());
            let resp = http::response(503, "application/json", &body, cors.as_deref(), false, &[]);
            return reply(stream, buf, 0, false, resp).await;
        }
    };
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

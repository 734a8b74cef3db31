//! The HTTP long-polling transport: a GET waits for the session's outbox and
//! returns everything queued as one payload; a POST carries packets in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::engineio::{self, PayloadRecord};
use shards::rt::TcpStream;
use shards::CloseReason;

use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::http::reply;
use crate::http::{self, Request};

/// Records accepted in one POST body.
const MAX_RECORDS: usize = 4096;

fn text_response(s: &Session, req: &Request, status: u16, body: &[u8]) -> Vec<u8> {
    let cors = s.ctx.cfg.cors_allow(req.origin.as_deref());
    http::response(
        status,
        "text/plain; charset=UTF-8",
        body,
        cors.as_deref(),
        req.keep_alive,
        &[],
    )
}

fn bad(s: &Session, req: &Request, status: u16, code: u8, msg: &str) -> Vec<u8> {
    let cors = s.ctx.cfg.cors_allow(req.origin.as_deref());
    let body = format!("{{\"code\":{code},\"message\":\"{msg}\"}}");
    http::response(
        status,
        "application/json",
        body.as_bytes(),
        cors.as_deref(),
        false,
        &[],
    )
}

/// How long a poll that raced the client's CLOSE (sent before it, arrived
/// after it, e.g. through a hand-off between shards) still gets the NOOP.
const CLOSED_LINGER: Duration = Duration::from_secs(1);

thread_local! {
    /// Polling sessions of this shard the client closed with no GET
    /// waiting: sid → when.
    static CLOSED: RefCell<HashMap<Rc<str>, Instant>> = RefCell::default();
}

fn record_client_close(sid: &Rc<str>) {
    let now = Instant::now();
    CLOSED.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|_, at| now.duration_since(*at) < CLOSED_LINGER);
        if c.len() < 10_000 {
            c.insert(sid.clone(), now);
        }
    });
}

/// Whether `sid` was closed by its client within `CLOSED_LINGER` with no
/// GET waiting; true once.
pub fn closed_by_client(sid: &str) -> bool {
    CLOSED.with(|c| {
        c.borrow_mut()
            .remove(sid)
            .is_some_and(|at| at.elapsed() < CLOSED_LINGER)
    })
}

/// Answers a poll with a NOOP (a GET that raced the client's CLOSE).
pub async fn noop(
    ctx: &ShardCtx,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    let cors = ctx.cfg.cors_allow(req.origin.as_deref());
    let resp = http::response(
        200,
        "text/plain; charset=UTF-8",
        b"6",
        cors.as_deref(),
        req.keep_alive,
        &[],
    );
    reply(stream, buf, req.head_len, req.keep_alive, resp).await
}

pub async fn get(
    s: Rc<Session>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    if s.websocket.get() {
        return reply(stream, buf, 0, false, bad(&s, &req, 400, 3, "Bad request")).await;
    }
    if s.polling_busy.replace(true) {
        // Two GETs at once break the protocol: end the session.
        s.terminate(CloseReason::TransportError);
        return reply(stream, buf, 0, false, bad(&s, &req, 400, 3, "Bad request")).await;
    }
    // An upgrade in progress (or done) releases the GET with a NOOP and
    // leaves the queue to the websocket; checked before the outbox so a GET
    // never takes the outbox's waker from the websocket task.
    let upgrading = || s.websocket.get() || s.upgrading.get();
    std::future::poll_fn(|cx| {
        if upgrading() {
            return Poll::Ready(());
        }
        s.outbox.poll_ready(cx)
    })
    .await;
    s.polling_busy.set(false);
    let mut body = Vec::new();
    if upgrading() || s.outbox.closed() == Some(CloseReason::ClientClosed) {
        // The client's CLOSE (or upgrade) ends this poll with a NOOP.
        body.push(b'6');
    } else {
        let mut packets = Vec::new();
        s.outbox.drain_into(&mut packets, usize::MAX);
        packets.iter().for_each(|p| s.ctx.metrics.packet_out(p));
        if packets.is_empty() {
            // Closed by the server with nothing queued.
            body.push(b'1');
        } else {
            engineio::encode_payload(packets.iter(), &mut body);
        }
    }
    if s.outbox.closed().is_some() && !upgrading() {
        s.terminate(CloseReason::ClientClosed);
    }
    let resp = text_response(&s, &req, 200, &body);
    reply(stream, buf, req.head_len, req.keep_alive, resp).await
}

pub async fn post(
    s: Rc<Session>,
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    let max = s.ctx.cfg.max_payload;
    let Some(len) = req.content_length else {
        return reply(stream, buf, 0, false, bad(&s, &req, 400, 3, "Bad request")).await;
    };
    if len > max {
        s.terminate(CloseReason::TransportError);
        return reply(
            stream,
            buf,
            0,
            false,
            bad(&s, &req, 413, 3, "Payload too large"),
        )
        .await;
    }
    let end = req.head_len + len;
    while buf.len() < end {
        let want = (end - buf.len()).min(64 * 1024);
        match crate::http::read_more(&mut stream, &mut buf, want).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    s.ctx.metrics.bytes_in(len);
    let records = match engineio::decode_payload(&buf[req.head_len..end], MAX_RECORDS) {
        Ok(r) => r,
        Err(_) => {
            s.terminate(CloseReason::TransportError);
            return reply(stream, buf, 0, false, bad(&s, &req, 400, 3, "Bad request")).await;
        }
    };
    let get_waiting = s.polling_busy.get();
    for r in records {
        let result = match r {
            PayloadRecord::Text(t, data) => s.on_packet(t, data).await,
            PayloadRecord::Binary(b) => s.on_binary(Bytes::from(b)).await,
        };
        if let Err(v) = result {
            tracing::debug!(sid = %s.sid, "closing: {}", v.0);
            s.terminate(CloseReason::TransportError);
            return reply(stream, buf, 0, false, bad(&s, &req, 400, 3, "Bad request")).await;
        }
    }
    if !get_waiting && s.is_ended() && s.outbox.closed() == Some(CloseReason::ClientClosed) {
        record_client_close(&s.sid);
    }
    let resp = text_response(&s, &req, 200, b"ok");
    reply(stream, buf, end, req.keep_alive, resp).await
}

//! The websocket transport: one task per connection that both reads client
//! frames and drains the session's outbox, so an idle socket costs one task,
//! one small read buffer and no write buffer.
//!
//! tungstenite reads, and writes the control frames; data frames are written
//! by [`frames`]: a queued batch goes out in one gathered `sendmsg` (headers
//! and shared payloads, no copy), not one `send` per message. While the
//! writer is idle and `--ws-direct-writes` is on, the task lends the
//! session's outbox a `WsSink`, so a delivery is written by the publisher's
//! loop at once (one `sendmsg`, no task switch); the first one the kernel
//! does not take whole sends everything after it back through the queue.
//! Off by default: under load the queue coalesces several deliveries to a
//! socket into one write, which direct writes never do (BENCHMARKS.md).
//!
//! With permessage-deflate (`--ws-compression`, when the client offers it)
//! the stream under tungstenite passes client frames through
//! [`deflate::Inflater`], which hands compressed messages on inflated, and
//! the writer compresses each frame of at least `--ws-compression-threshold`
//! bytes through the shard's [`deflate::Deflater`], which compresses a
//! publication's shared frame once for all its recipients on the shard.
//!
//! Until its session's first CONNECT, a websocket may send at most
//! [`PRE_CONNECT_BYTES`] (a CONNECT with its token, and a retry or two):
//! beyond it the read fails and the session closes, so a session that has not
//! authenticated never makes tungstenite buffer a `--max-payload` message.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use async_tungstenite::WebSocketStream;
use futures_util::{SinkExt, StreamExt};
use proto::engineio::Outgoing;
use shards::rt::TcpStream;
use shards::{CloseReason, Direct, DirectSink};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::Message;

use crate::config::Config;
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::engine::transport::deflate::{self, Inflater};
use crate::engine::transport::frames;
use crate::http::Request;
use futures_lite::AsyncWriteExt;

/// Packets moved from the outbox per batch.
const BATCH: usize = 256;

/// Bytes a websocket may send before its session's first CONNECT succeeds:
/// twice the HTTP request head limit, so any token that fits in a handshake
/// header fits in a CONNECT, with room to retry.
pub const PRE_CONNECT_BYTES: usize = 2 * crate::http::MAX_HEAD;

/// The TCP stream under tungstenite, counting what is read while the
/// session is pending.
pub struct WsStream {
    tcp: TcpStream,
    session: Rc<Session>,
    /// Bytes still allowed before a CONNECT; `None` once connected.
    pre_connect: Option<usize>,
    /// With permessage-deflate: turns compressed client frames into plain
    /// ones before tungstenite reads them.
    inflater: Option<Box<Inflater>>,
}

impl futures_lite::AsyncRead for WsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        loop {
            if let Some(inf) = this.inflater.as_mut().filter(|i| i.has_output()) {
                return Poll::Ready(Ok(inf.take(buf)));
            }
            let r = std::pin::Pin::new(&mut this.tcp).poll_read(cx, buf);
            if let (Some(left), Poll::Ready(Ok(n))) = (this.pre_connect, &r) {
                if !this.session.is_pending() {
                    this.pre_connect = None;
                } else if *n > left {
                    return Poll::Ready(Err(std::io::Error::other(
                        "too many bytes before the Socket.IO CONNECT",
                    )));
                } else {
                    this.pre_connect = Some(left - n);
                }
            }
            match (this.inflater.as_mut(), r) {
                (Some(inf), Poll::Ready(Ok(n))) if n > 0 => {
                    // Before its CONNECT a session may not make tungstenite
                    // hold more inflated than it could send plain.
                    inf.set_max(match this.pre_connect {
                        Some(_) => PRE_CONNECT_BYTES,
                        None => usize::MAX,
                    });
                    inf.feed(&buf[..n])?
                }
                (_, r) => return r,
            }
        }
    }
}

impl futures_lite::AsyncWrite for WsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_close(cx)
    }
}

impl AsRawFd for WsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

fn ws_config(cfg: &Config) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    // tungstenite's default is a 128 KiB read buffer per connection, held
    // for the socket's whole life; ours is small (`--ws-read-buffer`).
    c.read_buffer_size = cfg.ws_read_buffer;
    // tungstenite writes only control frames (pong, close) and the probe.
    c.write_buffer_size = 16 * 1024;
    c.max_write_buffer_size = 4 * 1024 * 1024;
    c.max_message_size = Some(cfg.max_payload);
    c.max_frame_size = Some(cfg.max_payload);
    c
}

/// Answers the upgrade and runs the connection. `probe`: the session is
/// polling and this websocket must pass the probe/upgrade dance first.
pub async fn upgrade(
    session: Rc<Session>,
    mut stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
    probe: bool,
) {
    let key = req.ws_key.as_deref().unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let deflate = req
        .ws_extensions
        .as_deref()
        .filter(|_| session.ctx.cfg.ws_compression)
        .and_then(deflate::negotiate);
    let extension = match &deflate {
        Some(answer) => format!("Sec-WebSocket-Extensions: {answer}\r\n"),
        None => String::new(),
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extension}\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        if !probe {
            session.terminate(CloseReason::TransportError);
        }
        return;
    }
    let _ = stream.set_read_timeout(None);
    // A client that accepts nothing for a whole ping timeout is gone.
    let _ = stream.set_write_timeout(Some(session.ctx.cfg.ping_timeout));
    let rest = buf.get(req.head_len..).unwrap_or_default().to_vec();
    let cfg = ws_config(&session.ctx.cfg);
    let stream = WsStream {
        tcp: stream,
        pre_connect: session.is_pending().then_some(PRE_CONNECT_BYTES),
        session: session.clone(),
        inflater: None,
    };
    let mut stream = stream;
    let mut rest = rest;
    if deflate.is_some() {
        // Bytes the client sent after its request go through the inflater
        // like the rest.
        let mut inf = Box::new(Inflater::new(session.ctx.cfg.max_payload));
        if session.is_pending() {
            inf.set_max(PRE_CONNECT_BYTES);
        }
        if inf.feed(&rest).is_err() {
            return;
        }
        rest.clear();
        while inf.has_output() {
            let mut chunk = [0u8; 1024];
            let n = inf.take(&mut chunk);
            rest.extend_from_slice(&chunk[..n]);
        }
        stream.inflater = Some(inf);
    }
    let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(cfg)).await;
    // The websocket gets its own small task: the connection future that
    // parsed the request (several KiB) is freed instead of living as long
    // as the socket.
    shards::rt::spawn_local(run(session, ws, probe, deflate.is_some())).detach();
}

/// Completes the websocket handshake and closes at once (a second
/// websocket for a session that already has one).
pub async fn accept_and_close(mut stream: TcpStream, req: &Request) {
    let key = req.ws_key.as_deref().unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut msg = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    // A close frame without a status code.
    msg.extend_from_slice(&[0x88, 0x00]);
    let _ = stream.write_all(&msg).await;
    let _ = stream.close().await;
}

enum Ev {
    In(Option<Result<Message, tungstenite::Error>>),
    Out,
}

/// Writes deliveries straight to the socket while its task is idle. Lent to
/// the outbox only while tungstenite holds nothing unwritten and the task is
/// not writing, and taken back before the task writes or its stream closes,
/// so its bytes never interleave with others and its fd is the open socket.
struct WsSink {
    fd: RawFd,
    ctx: Rc<ShardCtx>,
    /// permessage-deflate was negotiated.
    deflate: bool,
    /// The unwritten tail of a frame the kernel took only part of.
    rest: RefCell<Option<Vec<u8>>>,
}

impl DirectSink for WsSink {
    fn try_write(&self, packet: &Outgoing) -> Direct {
        let z = self.deflate.then(|| compress(&self.ctx, packet)).flatten();
        let flags = [z.is_some()];
        let one = std::slice::from_ref(z.as_ref().unwrap_or(packet));
        match frames::send_frames(self.fd, one, &flags) {
            // Would block, or an error the task meets on its own next write.
            Ok((0, _)) | Err(_) => Direct::Blocked,
            Ok((n, whole)) => {
                self.ctx.metrics.packet_out(packet);
                if whole {
                    return Direct::Sent;
                }
                let mut rest = Vec::new();
                frames::frames_from(one, &flags, n, &mut rest);
                *self.rest.borrow_mut() = Some(rest);
                Direct::Partial
            }
        }
    }
}

/// The waker the websocket's read side gets: it notes that the read side
/// asked to be polled, then wakes the socket's task. The task polls
/// tungstenite only then (or after it returned a message), not after every
/// batch it writes: a socket that only receives costs no read attempt per
/// write.
struct ReadWake {
    ready: AtomicBool,
    task: Waker,
}

impl ReadWake {
    fn new(task: &Waker) -> Arc<Self> {
        Arc::new(ReadWake {
            ready: AtomicBool::new(true),
            task: task.clone(),
        })
    }

    fn poll(
        self: &Arc<Self>,
        ws: &mut WebSocketStream<WsStream>,
    ) -> Poll<Option<Result<Message, tungstenite::Error>>> {
        if !self.ready.swap(false, Ordering::Relaxed) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.clone());
        let r = ws.poll_next_unpin(&mut Context::from_waker(&waker));
        if r.is_ready() {
            // More may be buffered already, with no wake to come.
            self.ready.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Relaxed);
        self.task.wake_by_ref();
    }
}

/// Clears the session's `ws_fd` when the task that owns the stream ends,
/// and the upgrade flag when a probe ends without the UPGRADE (polling goes
/// on).
struct FdGuard(Rc<Session>);

impl Drop for FdGuard {
    fn drop(&mut self) {
        // Before the stream (and its fd) goes.
        self.0.outbox.take_direct();
        self.0.ws_fd.set(None);
        let live = &self.0.ctx.live_websockets;
        live.set(live.get().saturating_sub(1));
        if !self.0.websocket.get() && self.0.upgrading.replace(false) {
            self.0.outbox.wake();
        }
    }
}

/// `packet`'s payload compressed for a socket with permessage-deflate, or
/// `None` when it goes as it is (below `--ws-compression-threshold`).
fn compress(ctx: &ShardCtx, packet: &Outgoing) -> Option<Outgoing> {
    let threshold = ctx.cfg.ws_compression_threshold;
    let mut d = ctx.deflater.borrow_mut();
    let before = (d.compressed, d.reused);
    let z = d.compress(packet, threshold);
    ctx.metrics
        .deflate(d.compressed - before.0, d.reused - before.1);
    z
}

async fn run(
    session: Rc<Session>,
    mut ws: WebSocketStream<WsStream>,
    mut probing: bool,
    deflate: bool,
) {
    let _guard = FdGuard(session.clone());
    let fd = ws.get_ref().as_raw_fd();
    // Only when direct writes are on: it costs each socket an allocation.
    let sink = session.ctx.cfg.ws_direct_writes.then(|| {
        Rc::new(WsSink {
            fd,
            ctx: session.ctx.clone(),
            deflate,
            rest: RefCell::new(None),
        })
    });
    session
        .ctx
        .live_websockets
        .set(session.ctx.live_websockets.get() + 1);
    if !probing {
        session.ws_fd.set(Some(fd));
    }
    // After writing a batch, the client's own frames get the next turn: a
    // socket that receives without pause must still have its events read
    // (its publishes and directs), not only its outbox drained.
    let mut inbound_first = false;
    let mut reader: Option<Arc<ReadWake>> = None;
    loop {
        // Here tungstenite holds nothing unwritten: lend the sink if the
        // outbox is idle too.
        if let Some(sink) = sink.as_ref().filter(|_| !probing) {
            if !session.outbox.has_direct() {
                session.outbox.lend_direct(sink.clone());
            }
        }
        let ev = std::future::poll_fn(|cx| {
            if probing && session.is_ended() {
                return Poll::Ready(Ev::In(None));
            }
            let reader = reader.get_or_insert_with(|| ReadWake::new(cx.waker()));
            if inbound_first {
                if let Poll::Ready(m) = reader.poll(&mut ws) {
                    return Poll::Ready(Ev::In(m));
                }
                if !probing && session.outbox.poll_ready(cx).is_ready() {
                    return Poll::Ready(Ev::Out);
                }
                return Poll::Pending;
            }
            if !probing && session.outbox.poll_ready(cx).is_ready() {
                return Poll::Ready(Ev::Out);
            }
            reader.poll(&mut ws).map(Ev::In)
        })
        .await;
        inbound_first = matches!(ev, Ev::Out);
        match ev {
            Ev::Out => {
                session.outbox.take_direct();
                let rest = sink.as_ref().and_then(|s| s.rest.take());
                // The shard's scratch batch, not one per socket: an idle
                // socket keeps no batch storage. Never held across an await.
                let (written, tail) = {
                    let mut batch = session.ctx.ws_batch.borrow_mut();
                    batch.clear();
                    session.outbox.drain_into(&mut batch, BATCH);
                    batch.iter().for_each(|p| session.ctx.metrics.packet_out(p));
                    let mut zs = session.ctx.ws_deflated.borrow_mut();
                    let (zbatch, flags) = &mut *zs;
                    if deflate {
                        // Each packet compressed, or as it is when short.
                        for p in batch.iter() {
                            let z = compress(&session.ctx, p);
                            flags.push(z.is_some());
                            zbatch.push(z.unwrap_or_else(|| p.clone()));
                        }
                    }
                    let out: &[Outgoing] = if deflate { zbatch } else { &batch };
                    // One gathered write of the whole batch, no copy; the
                    // tail of a direct write goes first.
                    let written = match rest {
                        Some(_) => Ok((0, false)),
                        None => frames::send_frames(fd, out, flags),
                    };
                    let tail = match written {
                        Ok((n, false)) => {
                            let mut tail = rest.unwrap_or_default();
                            frames::frames_from(out, flags, n, &mut tail);
                            Some(tail)
                        }
                        _ => None,
                    };
                    zbatch.clear();
                    flags.clear();
                    batch.clear();
                    if batch.capacity() > 4 * BATCH {
                        *batch = Vec::new();
                    }
                    (written, tail)
                };
                if written.is_err() {
                    session.terminate(CloseReason::TransportError);
                    return;
                }
                if let Some(tail) = tail {
                    // The socket is full: the rest (copied) through glommio,
                    // which waits for room under the write timeout.
                    if ws.get_mut().write_all(&tail).await.is_err() {
                        session.terminate(CloseReason::TransportError);
                        return;
                    }
                }
                session.outbox.note_write();
                if let Some(reason) = session
                    .outbox
                    .closed()
                    .filter(|_| session.outbox.is_empty())
                {
                    session.terminate(CloseReason::ClientClosed);
                    // 1001 on a deploy: the client reconnects, elsewhere.
                    let frame = (reason == CloseReason::ServerShutdown).then(|| {
                        tungstenite::protocol::CloseFrame {
                            code: tungstenite::protocol::frame::coding::CloseCode::Away,
                            reason: "server shutting down".into(),
                        }
                    });
                    close_gracefully(&mut ws, frame).await;
                    return;
                }
            }
            Ev::In(Some(Ok(msg))) if probing => match msg {
                Message::Text(t) if t.as_str() == "2probe" => {
                    if ws.send(Message::Text("3probe".into())).await.is_err() {
                        return;
                    }
                    // Releases a pending polling GET with a NOOP (written as
                    // its answer, never queued for the websocket) so the
                    // client can finish the upgrade.
                    session.upgrading.set(true);
                    session.outbox.wake();
                }
                Message::Text(t) if t.as_str() == "5" && session.upgrading.get() => {
                    session.upgrading.set(false);
                    session.websocket.set(true);
                    session.outbox.wake();
                    session.ws_fd.set(Some(ws.get_ref().as_raw_fd()));
                    probing = false;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                _ => {
                    let _ = ws.close(None).await;
                    return;
                }
            },
            Ev::In(Some(Ok(Message::Ping(_)))) => {
                // tungstenite queued the pong; write it before lending again.
                session.outbox.take_direct();
                if ws.flush().await.is_err() {
                    session.terminate(CloseReason::TransportError);
                    return;
                }
            }
            Ev::In(Some(Ok(msg))) => {
                session.ctx.metrics.bytes_in(msg.len());
                let r = match msg {
                    // Boxed per inbound message so the handlers' futures
                    // are not part of every idle socket's task.
                    Message::Text(t) => Box::pin(session.on_text(t.as_str())).await,
                    Message::Binary(b) => Box::pin(session.on_binary(b)).await,
                    Message::Close(_) => {
                        session.terminate(CloseReason::ClientClosed);
                        return;
                    }
                    _ => Ok(()),
                };
                if let Err(v) = r {
                    session.outbox.take_direct();
                    tracing::debug!(sid = %session.sid, "closing: {}", v.0);
                    session.terminate(CloseReason::TransportError);
                    close_gracefully(&mut ws, None).await;
                    return;
                }
            }
            Ev::In(Some(Err(tungstenite::Error::Capacity(e)))) => {
                session.outbox.take_direct();
                // Bigger than --max-payload: say so, then close cleanly (1009).
                tracing::debug!(sid = %session.sid, "websocket message too large: {e}");
                let max = session.ctx.cfg.max_payload;
                let err = format!(
                    "42[\"error\",{{\"code\":\"too_large\",\"message\":\"a message may be at most {max} bytes\"}}]"
                );
                let _ = ws.feed(Message::Text(err.into())).await;
                let frame = tungstenite::protocol::CloseFrame {
                    code: tungstenite::protocol::frame::coding::CloseCode::Size,
                    reason: "too large".into(),
                };
                if !probing {
                    session.terminate(CloseReason::TooLarge);
                }
                close_gracefully(&mut ws, Some(frame)).await;
                return;
            }
            Ev::In(Some(Err(e))) => {
                session.outbox.take_direct();
                tracing::debug!(sid = %session.sid, "websocket error: {e}");
                if !probing {
                    session.terminate(CloseReason::TransportError);
                }
                // RFC 6455: say why, when the connection can still carry it.
                use tungstenite::protocol::frame::coding::CloseCode;
                let code = match e {
                    tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
                    tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid),
                    _ => None,
                };
                if let Some(code) = code {
                    let frame = tungstenite::protocol::CloseFrame {
                        code,
                        reason: "".into(),
                    };
                    close_gracefully(&mut ws, Some(frame)).await;
                }
                return;
            }
            Ev::In(None) => {
                if !probing {
                    session.terminate(CloseReason::ClientClosed);
                }
                return;
            }
        }
    }
}

/// Sends a close frame, then reads (and drops) what the client still sends
/// until its own close frame or for at most a second. Closing a socket with
/// unread bytes makes the kernel send a reset, and a reset makes the client
/// drop whatever it had not read yet — such as the `error` events and the
/// DISCONNECT that explain why it is being closed.
async fn close_gracefully(
    ws: &mut WebSocketStream<WsStream>,
    frame: Option<tungstenite::protocol::CloseFrame>,
) {
    if ws.close(frame).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let limit = async { shards::rt::sleep(std::time::Duration::from_secs(1)).await };
    futures_lite::future::or(drain, limit).await;
}

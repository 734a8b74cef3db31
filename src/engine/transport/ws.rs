//! The websocket transport: one small task per connection that both reads
//! client frames and drains the session's outbox. An idle socket costs that
//! task (its stream, and its reader's empty state) and nothing else: no
//! read buffer and no write buffer.
//!
//! Reads go into the shard's buffer (`ShardCtx::ws_read`, shared by all its
//! sockets and borrowed only within one poll); [`wsread::FrameReader`]
//! turns the bytes into messages and keeps bytes of its own only while a
//! frame is not yet whole. Data frames are written by [`frames`]: a queued
//! batch goes out in one gathered `sendmsg` (headers and shared payloads,
//! no copy), not one `send` per message; control frames (pong, close) and
//! the probe's answer are written whole, through glommio. While the writer
//! is idle, the task lends the session's outbox a `WsSink`, so a delivery
//! can be written by the publisher's loop at once (one `sendmsg`, no task
//! switch); the first one the kernel does not take whole sends everything
//! after it back through the queue. The shard decides per fan-out whether
//! lent sinks are used (`shards::outbox::fan_out`): at once while it is
//! quiet, queued (and coalesced into one write per socket) while it is busy.
//!
//! With permessage-deflate (`--ws-compression`, when the client offers it)
//! the bytes read pass through [`deflate::Inflater`], which hands compressed
//! messages on inflated, and the writer compresses each frame of at least
//! `--ws-compression-threshold` bytes through the shard's
//! [`deflate::Deflater`], which compresses a publication's shared frame
//! once for all its recipients on the shard.
//!
//! Until its session's first CONNECT, a websocket may send at most
//! [`PRE_CONNECT_BYTES`] (a CONNECT with its token, and a retry or two):
//! beyond it the read fails and the session closes, so a session that has not
//! authenticated never makes the reader hold a `--max-payload` message.
//!
//! Over 600 lines because the connection's task (`run`, its one loop of
//! about 180 lines) is kept whole, next to the sink it lends the outbox
//! (`WsSink`) and the batch writer; reading frames is `wsread.rs`, writing
//! them `frames.rs`, compression `deflate.rs`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWriteExt};
use proto::engineio::Outgoing;
use shards::rt::TcpStream;
use shards::{CloseReason, Direct, DirectSink};

use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::engine::transport::deflate::{self, Inflater};
use crate::engine::transport::frames;
use crate::engine::transport::wsread::{FrameError, FrameReader, Inbound};
use crate::http::Request;

/// Packets moved from the outbox per batch.
const BATCH: usize = 256;

/// Reads of the socket one poll may make before it lets other tasks run
/// (a long message arriving in many reads).
const READS_PER_POLL: usize = 64;

/// Bytes a websocket may send before its session's first CONNECT succeeds:
/// twice the HTTP request head limit, so any token that fits in a handshake
/// header fits in a CONNECT, with room to retry.
pub const PRE_CONNECT_BYTES: usize = 2 * crate::http::MAX_HEAD;

/// Close status codes (RFC 6455 §7.4.1).
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// Opcodes of the frames this module writes itself.
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PONG: u8 = 0xa;

/// One websocket connection's reading side, and the stream the task writes
/// to.
struct Conn {
    tcp: TcpStream,
    reader: FrameReader,
    /// With permessage-deflate: turns compressed client frames into plain
    /// ones before the reader sees them.
    inflater: Option<Box<Inflater>>,
    /// Bytes still allowed before a CONNECT; `None` once connected.
    pre_connect: Option<usize>,
}

/// Why a websocket can no longer be read.
enum ReadError {
    Frame(FrameError),
    Io(io::Error),
    /// More than [`PRE_CONNECT_BYTES`] before a CONNECT.
    PreConnect,
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Frame(e) => e.fmt(f),
            ReadError::Io(e) => e.fmt(f),
            ReadError::PreConnect => f.write_str("too many bytes before the Socket.IO CONNECT"),
        }
    }
}

type Read = Result<Option<Inbound>, ReadError>;

impl Conn {
    /// The client's next message; `Ok(None)` when it closed the connection.
    fn poll_next(&mut self, cx: &mut Context<'_>, s: &Session) -> Poll<Read> {
        let max = s.ctx.cfg.max_payload;
        if self.reader.has_buffered() {
            if let Some(m) = self.reader.next(&[], max)? {
                return Poll::Ready(Ok(Some(m)));
            }
        }
        for _ in 0..READS_PER_POLL {
            let mut buf = s.ctx.ws_read.borrow_mut();
            let n = match Pin::new(&mut self.tcp).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::Io(e))),
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(n)) => n,
            };
            if let Some(left) = self.pre_connect {
                if !s.is_pending() {
                    self.pre_connect = None;
                } else if n > left {
                    return Poll::Ready(Err(ReadError::PreConnect));
                } else {
                    self.pre_connect = Some(left - n);
                }
            }
            let got = match self.inflater.as_mut() {
                Some(inf) => {
                    // Before its CONNECT a session may not make the reader
                    // hold more inflated than it could send plain.
                    inf.set_max(match self.pre_connect {
                        Some(_) => PRE_CONNECT_BYTES,
                        None => usize::MAX,
                    });
                    inf.feed(&buf[..n]).map_err(ReadError::Io)?;
                    let reader = &mut self.reader;
                    inf.with_output(|plain| reader.next(plain, max))?
                }
                None => self.reader.next(&buf[..n], max)?,
            };
            if let Some(m) = got {
                return Poll::Ready(Ok(Some(m)));
            }
        }
        // A long message: other sockets get a turn before the rest is read.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    async fn next(&mut self, s: &Session) -> Read {
        std::future::poll_fn(|cx| self.poll_next(cx, s)).await
    }

    /// Writes one frame whole (waiting for room, under the write timeout).
    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut head = [0u8; 10];
        let hl = frames::frame_header(opcode, payload.len(), &mut head);
        let mut bytes = Vec::with_capacity(hl + payload.len());
        bytes.extend_from_slice(&head[..hl]);
        bytes.extend_from_slice(payload);
        self.tcp.write_all(&bytes).await
    }
}

/// A close frame's payload: the status code and the reason.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
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
    let mut conn = Conn {
        tcp: stream,
        reader: FrameReader::default(),
        inflater: None,
        pre_connect: session.is_pending().then_some(PRE_CONNECT_BYTES),
    };
    // Bytes the client sent after its request, in the same read.
    let rest = buf.get(req.head_len..).unwrap_or_default();
    if deflate.is_some() {
        let mut inf = Box::new(Inflater::new(session.ctx.cfg.max_payload));
        if session.is_pending() {
            inf.set_max(PRE_CONNECT_BYTES);
        }
        if inf.feed(rest).is_err() {
            return;
        }
        inf.with_output(|plain| conn.reader.preload(plain));
        conn.inflater = Some(inf);
    } else {
        conn.reader.preload(rest);
    }
    drop(buf);
    // The websocket gets its own small task: the connection future that
    // parsed the request (several KiB) is freed instead of living as long
    // as the socket.
    shards::rt::spawn_local(run(session, conn, probe, deflate.is_some())).detach();
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
    In(Read),
    Out,
}

/// Writes deliveries straight to an idle websocket, one sink for all the
/// shard's websockets: a socket lends it with a token (its fd, and whether
/// it negotiated permessage-deflate), so it costs the socket nothing. Lent
/// to a socket's outbox only while the socket's task has nothing half
/// written and is not writing, and taken back before the task writes or its
/// stream closes, so its bytes never interleave with others and the fd is
/// the open socket.
struct WsSink {
    ctx: std::rc::Weak<ShardCtx>,
}

/// The token a socket lends the sink with.
fn sink_token(fd: RawFd, deflate: bool) -> u64 {
    (fd as u32 as u64) | ((deflate as u64) << 32)
}

impl DirectSink for WsSink {
    fn try_write(&self, token: u64, packet: &Outgoing) -> Direct {
        let Some(ctx) = self.ctx.upgrade() else {
            return Direct::Blocked;
        };
        let (fd, deflate) = (token as u32 as RawFd, token >> 32 & 1 == 1);
        let z = deflate.then(|| compress(&ctx, packet)).flatten();
        let flags = [z.is_some()];
        let one = std::slice::from_ref(z.as_ref().unwrap_or(packet));
        match frames::send_frames(fd, one, &flags) {
            // Would block, or an error the task meets on its own next write.
            Ok((0, _)) | Err(_) => Direct::Blocked,
            Ok((n, whole)) => {
                ctx.metrics.packet_out(packet);
                if whole {
                    return Direct::Sent;
                }
                let mut rest = Vec::new();
                frames::frames_from(one, &flags, n, &mut rest);
                ctx.ws_rests.borrow_mut().insert(fd, rest);
                Direct::Partial
            }
        }
    }
}

/// The shard's sink, made on first use.
fn shard_sink(ctx: &Rc<ShardCtx>) -> Rc<dyn DirectSink> {
    ctx.ws_sink
        .get_or_init(|| {
            Rc::new(WsSink {
                ctx: Rc::downgrade(ctx),
            })
        })
        .clone()
}

/// Clears the session's `ws_fd` when the task that owns the stream ends,
/// and the upgrade flag when a probe ends without the UPGRADE (polling goes
/// on).
struct FdGuard(Rc<Session>, RawFd);

impl Drop for FdGuard {
    fn drop(&mut self) {
        // Before the stream (and its fd) goes: a later socket may get the
        // same fd.
        self.0.outbox.take_direct();
        self.0.ctx.ws_rests.borrow_mut().remove(&self.1);
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

/// The connection's task. A function returning an `async` block rather than
/// an `async fn`, whose arguments would be kept twice in its state: this
/// future is what every idle websocket holds.
#[allow(clippy::manual_async_fn)] // see above: the async fn is 1.8x larger
fn run(
    session: Rc<Session>,
    mut conn: Conn,
    mut probing: bool,
    deflate: bool,
) -> impl std::future::Future<Output = ()> {
    async move {
        let fd = conn.tcp.as_raw_fd();
        let _guard = FdGuard(session.clone(), fd);
        let sink = shard_sink(&session.ctx);
        let token = sink_token(fd, deflate);
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
        loop {
            // Here nothing of ours is half written: lend the sink if the outbox
            // is idle too.
            if !probing && !session.outbox.has_direct() {
                session.outbox.lend_direct(sink.clone(), token);
            }
            let ev = std::future::poll_fn(|cx| {
                if probing && session.is_ended() {
                    return Poll::Ready(Ev::In(Ok(None)));
                }
                if inbound_first {
                    if let Poll::Ready(m) = conn.poll_next(cx, &session) {
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
                conn.poll_next(cx, &session).map(Ev::In)
            })
            .await;
            inbound_first = matches!(ev, Ev::Out);
            let msg = match ev {
                Ev::Out => {
                    let rest = take_back(&session, fd);
                    let ok = match write_batch(&session, fd, deflate, rest) {
                        Ok(None) => true,
                        // The socket is full: the rest (copied) through glommio,
                        // which waits for room under the write timeout.
                        Ok(Some(tail)) => conn.tcp.write_all(&tail).await.is_ok(),
                        Err(()) => false,
                    };
                    if !ok {
                        session.terminate(CloseReason::TransportError);
                        return;
                    }
                    session.outbox.note_write();
                    if let Some(reason) = session
                        .outbox
                        .closed()
                        .filter(|_| session.outbox.is_empty())
                    {
                        session.terminate(CloseReason::ClientClosed);
                        // 1001 on a deploy: the client reconnects, elsewhere.
                        let close = (reason == CloseReason::ServerShutdown)
                            .then(|| close_payload(GOING_AWAY, "server shutting down"));
                        Box::pin(close_gracefully(
                            &mut conn,
                            &session,
                            close.unwrap_or_default(),
                        ))
                        .await;
                        return;
                    }
                    continue;
                }
                Ev::In(m) => m,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => {
                    if !probing {
                        session.terminate(CloseReason::ClientClosed);
                    }
                    return;
                }
                Err(e) => {
                    let rest = take_back(&session, fd);
                    tracing::debug!(sid = %session.sid, "websocket read: {e}");
                    Box::pin(refuse(&session, &mut conn, e, probing, rest)).await;
                    return;
                }
            };
            if probing {
                let ok = match msg {
                    Inbound::Text(t) if t == "2probe" => {
                        if Box::pin(conn.write_frame(OP_TEXT, b"3probe"))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        // Releases a pending polling GET with a NOOP (written as
                        // its answer, never queued for the websocket) so the
                        // client can finish the upgrade.
                        session.upgrading.set(true);
                        session.outbox.wake();
                        true
                    }
                    Inbound::Text(t) if t == "5" && session.upgrading.get() => {
                        session.upgrading.set(false);
                        session.websocket.set(true);
                        session.outbox.wake();
                        session.ws_fd.set(Some(fd));
                        probing = false;
                        true
                    }
                    Inbound::Ping(p) => Box::pin(conn.write_frame(OP_PONG, &p)).await.is_ok(),
                    Inbound::Pong => true,
                    _ => false,
                };
                if !ok {
                    Box::pin(close_gracefully(&mut conn, &session, Vec::new())).await;
                    return;
                }
                continue;
            }
            let r = match msg {
                Inbound::Ping(p) => {
                    let rest = take_back(&session, fd);
                    if Box::pin(write_with_rest(&mut conn, rest, OP_PONG, &p))
                        .await
                        .is_err()
                    {
                        session.terminate(CloseReason::TransportError);
                        return;
                    }
                    Ok(())
                }
                Inbound::Pong => Ok(()),
                Inbound::Close(code) => {
                    session.terminate(CloseReason::ClientClosed);
                    // The closing handshake's answer, echoing the client's code.
                    let rest = take_back(&session, fd);
                    let payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                    let _ = Box::pin(write_with_rest(&mut conn, rest, OP_CLOSE, &payload)).await;
                    return;
                }
                // Boxed per inbound message so the handlers' futures are not
                // part of every idle socket's task.
                Inbound::Text(t) => {
                    session.ctx.metrics.bytes_in(t.len());
                    Box::pin(session.on_text(&t)).await
                }
                Inbound::Binary(b) => {
                    session.ctx.metrics.bytes_in(b.len());
                    Box::pin(session.on_binary(b)).await
                }
            };
            if let Err(v) = r {
                take_back(&session, fd);
                tracing::debug!(sid = %session.sid, "closing: {}", v.0);
                session.terminate(CloseReason::TransportError);
                Box::pin(close_gracefully(&mut conn, &session, Vec::new())).await;
                return;
            }
        }
    }
}

/// Takes the direct-write sink back from the outbox (before the task
/// writes anything itself), with the tail a direct write left unwritten.
fn take_back(session: &Session, fd: RawFd) -> Option<Vec<u8>> {
    session.outbox.take_direct();
    session.ctx.ws_rests.borrow_mut().remove(&fd)
}

/// Writes one frame after `rest` (the tail of a direct write), whole.
async fn write_with_rest(
    conn: &mut Conn,
    rest: Option<Vec<u8>>,
    opcode: u8,
    payload: &[u8],
) -> io::Result<()> {
    if let Some(rest) = rest {
        conn.tcp.write_all(&rest).await?;
    }
    conn.write_frame(opcode, payload).await
}

/// Writes what the outbox holds, after `rest` (the tail of a direct
/// write), as far as the socket takes it now: what is left to write (the
/// socket is full), or `Err` when the connection failed.
fn write_batch(
    session: &Session,
    fd: RawFd,
    deflate: bool,
    rest: Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, ()> {
    // The shard's scratch batch, not one per socket: an idle socket keeps
    // no batch storage. Never held across an await.
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
        // One gathered write of the whole batch, no copy; the tail of a
        // direct write goes first.
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
    written.map(|_| tail).map_err(drop)
}

/// A client whose bytes cannot be read: says why when the connection can
/// still carry it (RFC 6455 status codes; `too_large` also as an `error`
/// event), and closes.
async fn refuse(
    session: &Rc<Session>,
    conn: &mut Conn,
    e: ReadError,
    probing: bool,
    rest: Option<Vec<u8>>,
) {
    let code = match &e {
        ReadError::Frame(FrameError::TooLarge) => Some(TOO_BIG),
        ReadError::Frame(FrameError::Protocol(_)) => Some(PROTOCOL_ERROR),
        ReadError::Frame(FrameError::Utf8) => Some(INVALID_DATA),
        ReadError::Io(_) | ReadError::PreConnect => None,
    };
    if !probing {
        session.terminate(match code {
            Some(TOO_BIG) => CloseReason::TooLarge,
            _ => CloseReason::TransportError,
        });
    }
    let Some(code) = code else { return };
    if let Some(rest) = rest {
        if conn.tcp.write_all(&rest).await.is_err() {
            return;
        }
    }
    let reason = if code == TOO_BIG {
        let max = session.ctx.cfg.max_payload;
        let err = format!(
            "42[\"error\",{{\"code\":\"too_large\",\"message\":\"a message may be at most {max} bytes\"}}]"
        );
        if conn.write_frame(OP_TEXT, err.as_bytes()).await.is_err() {
            return;
        }
        "too large"
    } else {
        ""
    };
    close_gracefully(conn, session, close_payload(code, reason)).await;
}

/// Sends a close frame (`payload`: its status code and reason, or nothing),
/// then reads (and drops) what the client still sends until
/// its own close frame or for at most a second. Closing a socket with
/// unread bytes makes the kernel send a reset, and a reset makes the client
/// drop whatever it had not read yet — such as the `error` events and the
/// DISCONNECT that explain why it is being closed.
async fn close_gracefully(conn: &mut Conn, session: &Session, payload: Vec<u8>) {
    if conn.write_frame(OP_CLOSE, &payload).await.is_err() {
        return;
    }
    let drain = async {
        while let Ok(Some(m)) = conn.next(session).await {
            if matches!(m, Inbound::Close(_)) {
                break;
            }
        }
    };
    let limit = async { shards::rt::sleep(std::time::Duration::from_secs(1)).await };
    futures_lite::future::or(drain, limit).await;
}

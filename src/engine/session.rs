//! One Engine.IO session, the per-shard table of them, and the contract
//! with the layer above ([`EngineHandler`]).
//!
//! A session lives on the shard that created it, for its whole life; its
//! transports (`transport/`) feed it decoded packets and drain its outbox.
//! It owns the Engine.IO state: ping/pong deadlines, the polling→websocket
//! upgrade, the outbox, and the pending/connected accounting. Every message
//! packet and binary message goes up to its [`EngineHandler`] (the
//! Socket.IO layer, `sio/`), which this layer never names. Never blocks:
//! every await is on this shard.
//!
//! A session is *pending* from its handshake until the layer above reports
//! its first connection ([`Session::mark_connected`]), then *connected*
//! until it ends; the instance bounds the two apart
//! (`--max-pending-sessions`, `--max-connections`), so sessions that never
//! authenticate cannot keep out clients that do. A pending session lives at
//! most `--connect-timeout`.
//!
//! A *raw* session (the engine.io-protocol suite's `/engine.io/` path) has
//! no layer above: its message packets are echoed, and it counts as
//! connected from its handshake.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use proto::engineio::{self, Outgoing, PacketType as Eio};
use shards::{CloseReason, Outbox};

use crate::config::take_slot;
use crate::ctx::ShardCtx;
use crate::engine::instant::{InstantCell, OptionInstantCell};

/// A future on this shard (not `Send`), boxed so the handler is a trait
/// object.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What the layer above a session does with it: the Socket.IO layer
/// implements it, one value per session (its namespaces and any binary
/// packet in flight). The engine calls up only through this trait.
pub trait EngineHandler {
    /// A message packet's text (a Socket.IO packet).
    fn on_message<'a>(
        &'a self,
        s: &'a Rc<Session>,
        text: &'a str,
    ) -> LocalFuture<'a, Result<(), ProtocolViolation>>;
    /// A binary message (an attachment of a packet in flight).
    fn on_binary<'a>(
        &'a self,
        s: &'a Rc<Session>,
        data: Bytes,
    ) -> LocalFuture<'a, Result<(), ProtocolViolation>>;
    /// A binary packet is waiting for attachments: a text packet now breaks
    /// the protocol.
    fn awaiting_binary(&self) -> bool;
    /// The sweeper's periodic look, on a live session (e.g. expired tokens).
    fn on_tick(&self, s: &Rc<Session>, now_secs: u64);
    /// The session is about to end on the server's initiative: say goodbye
    /// on every connection (queued before the transport closes).
    fn on_goodbye(&self, s: &Session);
    /// The session has ended: release whatever it holds.
    fn on_close(&self, s: &Rc<Session>);
}

/// Makes the handler of each new session (chosen once at startup).
pub type HandlerFactory = Box<dyn Fn() -> Box<dyn EngineHandler>>;

/// One shard's Engine.IO sessions, by id, and how to make their handlers.
pub struct Engine {
    pub ctx: Rc<ShardCtx>,
    pub sessions: RefCell<HashMap<Rc<str>, Rc<Session>>>,
    new_handler: HandlerFactory,
}

impl Engine {
    pub fn new(ctx: Rc<ShardCtx>, new_handler: HandlerFactory) -> Rc<Self> {
        Rc::new(Engine {
            ctx,
            sessions: RefCell::default(),
            new_handler,
        })
    }

    pub fn get(&self, sid: &str) -> Option<Rc<Session>> {
        self.sessions.borrow().get(sid).cloned()
    }

    /// Every session of this shard, copied out (so none is borrowed across
    /// an await or a terminate).
    pub fn all(&self) -> Vec<Rc<Session>> {
        self.sessions.borrow().values().cloned().collect()
    }
}

/// What the handshake request carried, for authentication at CONNECT.
#[derive(Debug, Default, Clone)]
pub struct Handshake {
    pub bearer: Option<String>,
    pub query_token: Option<String>,
}

pub struct Session {
    pub sid: Rc<str>,
    pub ctx: Rc<ShardCtx>,
    engine: Rc<Engine>,
    pub outbox: Rc<Outbox>,
    /// `None` when the handshake carried no token (boxed: most don't).
    pub handshake: Option<Box<Handshake>>,
    /// Packets flow over a websocket (from the start or after the upgrade).
    pub websocket: Cell<bool>,
    /// A websocket probe succeeded; waiting for the client's UPGRADE.
    pub upgrading: Cell<bool>,
    /// A polling GET is waiting on this session.
    pub polling_busy: Cell<bool>,
    /// When the next PING is due (a PONG schedules the next one).
    pub next_ping: InstantCell,
    /// Set when a PING is sent: the scheduled ping time + ping timeout.
    pub pong_deadline: OptionInstantCell,
    /// Until the layer above connects: when the session is closed for want
    /// of a connection (`--connect-timeout`). `Some` exactly while the
    /// session is pending (counted in the instance's pending sessions, not
    /// its connections); a raw Engine.IO session is never pending.
    connect_deadline: OptionInstantCell,
    /// A plain Engine.IO session (the engine.io-protocol suite's
    /// `/engine.io/` path): no Socket.IO layer, message packets echoed.
    pub raw: bool,
    /// The websocket's fd while its task owns the stream, so a session cut
    /// for a slow consumer can abort a write stuck on a full TCP buffer.
    pub ws_fd: Cell<Option<std::os::fd::RawFd>>,
    handler: Box<dyn EngineHandler>,
    ended: Cell<bool>,
}

/// A packet the client sent that breaks the protocol: the session closes.
#[derive(Debug)]
pub struct ProtocolViolation(pub &'static str);

/// Why a handshake is refused (HTTP 503): the instance is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Connections,
    PendingSessions,
    /// The instance is shutting down: new sessions go to other instances.
    Draining,
    /// The process is above `--max-memory`.
    Memory,
}

impl Full {
    pub fn message(self) -> &'static str {
        match self {
            Full::Connections => "Server at max connections",
            Full::PendingSessions => "Server at max pending sessions",
            Full::Draining => "Server is shutting down",
            Full::Memory => "Server over its memory limit",
        }
    }
}

impl Session {
    /// Opens a session and enters it in its shard's table, pending until
    /// its first connection (a plain Engine.IO session counts as connected
    /// at once). Refused when the instance is at its connections, or its
    /// pending sessions: a session that could not connect anyway is not
    /// worth a pending slot.
    pub fn open(
        engine: &Rc<Engine>,
        sid: Rc<str>,
        handshake: Option<Box<Handshake>>,
        websocket: bool,
        raw: bool,
    ) -> Result<Rc<Self>, Full> {
        let ctx = engine.ctx.clone();
        let cfg = &ctx.cfg;
        if cfg.draining() {
            return Err(Full::Draining);
        }
        if cfg.over_memory() {
            return Err(Full::Memory);
        }
        if raw {
            if !take_slot(&cfg.connected_sessions, cfg.max_connections) {
                return Err(Full::Connections);
            }
        } else {
            if cfg.connected_sessions.load(Ordering::Relaxed) >= cfg.max_connections {
                return Err(Full::Connections);
            }
            if !take_slot(&cfg.pending_sessions, cfg.max_pending_sessions) {
                return Err(Full::PendingSessions);
            }
        }
        cfg.open_sessions.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let session = Rc::new(Session {
            sid,
            outbox: Rc::new(Outbox::new(cfg.send_queue, cfg.send_queue_bytes)),
            handshake,
            websocket: Cell::new(websocket),
            upgrading: Cell::new(false),
            polling_busy: Cell::new(false),
            next_ping: InstantCell::new(now + cfg.ping_interval),
            pong_deadline: OptionInstantCell::new(None),
            connect_deadline: OptionInstantCell::new((!raw).then(|| now + cfg.connect_timeout)),
            raw,
            ws_fd: Cell::new(None),
            handler: (engine.new_handler)(),
            ended: Cell::new(false),
            engine: engine.clone(),
            ctx,
        });
        engine
            .sessions
            .borrow_mut()
            .insert(session.sid.clone(), session.clone());
        Ok(session)
    }

    /// The OPEN packet's JSON.
    pub fn open_packet(&self) -> String {
        let cfg = &self.ctx.cfg;
        let upgrades = if self.websocket.get() {
            "[]"
        } else {
            "[\"websocket\"]"
        };
        engineio::encode_text(
            Eio::Open,
            &format!(
                "{{\"sid\":\"{}\",\"upgrades\":{upgrades},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
                self.sid,
                cfg.ping_interval.as_millis(),
                cfg.ping_timeout.as_millis(),
                cfg.max_payload
            ),
        )
    }

    pub fn send_text(&self, s: String) -> bool {
        self.outbox.push(Outgoing::Text(Bytes::from(s)))
    }

    /// No connection has succeeded on this session yet.
    pub fn is_pending(&self) -> bool {
        self.connect_deadline.get().is_some()
    }

    pub fn is_ended(&self) -> bool {
        self.ended.get()
    }

    /// For a pending session's first connection: takes a connection slot
    /// (false when the instance is at `--max-connections`). The caller then
    /// either reports the connection ([`Self::mark_connected`]) or gives the
    /// slot back ([`Self::release_connection_slot`]).
    pub fn take_connection_slot(&self) -> bool {
        let cfg = &self.ctx.cfg;
        take_slot(&cfg.connected_sessions, cfg.max_connections)
    }

    pub fn release_connection_slot(&self) {
        self.ctx
            .cfg
            .connected_sessions
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection succeeded: a pending session (whose slot was taken)
    /// becomes connected, and no connect deadline applies any more.
    pub fn mark_connected(&self) {
        if self.connect_deadline.take().is_some() {
            self.ctx
                .cfg
                .pending_sessions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A text packet from either transport.
    pub async fn on_text(self: &Rc<Self>, text: &str) -> Result<(), ProtocolViolation> {
        match engineio::decode_text(text).map_err(|_| ProtocolViolation("bad engine.io packet"))? {
            engineio::Packet::Text(t, data) => self.on_packet(t, data).await,
            engineio::Packet::Binary(_) => Err(ProtocolViolation("unexpected engine.io packet")),
        }
    }

    /// One decoded Engine.IO packet from either transport.
    pub async fn on_packet(self: &Rc<Self>, t: Eio, data: &str) -> Result<(), ProtocolViolation> {
        if self.handler.awaiting_binary() {
            return Err(ProtocolViolation(
                "text packet while binary attachments are pending",
            ));
        }
        match t {
            Eio::Pong => {
                if self.pong_deadline.take().is_some() {
                    self.next_ping
                        .set(Instant::now() + self.ctx.cfg.ping_interval);
                }
                Ok(())
            }
            Eio::Message if self.raw => {
                let mut s = String::with_capacity(1 + data.len());
                s.push('4');
                s.push_str(data);
                self.send_text(s);
                Ok(())
            }
            Eio::Message => self.handler.on_message(self, data).await,
            Eio::Close => {
                self.terminate(CloseReason::ClientClosed);
                Ok(())
            }
            Eio::Noop | Eio::Ping | Eio::Upgrade => Ok(()),
            Eio::Open => Err(ProtocolViolation("OPEN from a client")),
        }
    }

    /// A binary message from either transport: echoed on a raw session,
    /// otherwise the layer above's.
    pub async fn on_binary(self: &Rc<Self>, data: Bytes) -> Result<(), ProtocolViolation> {
        if self.raw {
            self.outbox.push(Outgoing::Binary(data));
            return Ok(());
        }
        self.handler.on_binary(self, data).await
    }

    /// Ends the session: the transport closes after flushing what is queued
    /// (unless the reason dropped the queue), and the layer above releases
    /// what the session holds.
    pub fn terminate(self: &Rc<Self>, reason: CloseReason) {
        if self.ended.replace(true) {
            return;
        }
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), "session closed");
        self.ctx.metrics.session_closed(reason);
        self.engine.sessions.borrow_mut().remove(&self.sid);
        let cfg = &self.ctx.cfg;
        cfg.open_sessions.fetch_sub(1, Ordering::Relaxed);
        if self.is_pending() {
            cfg.pending_sessions.fetch_sub(1, Ordering::Relaxed);
        } else {
            cfg.connected_sessions.fetch_sub(1, Ordering::Relaxed);
        }
        self.outbox.close(reason);
        if reason == CloseReason::SlowConsumer {
            if let Some(fd) = self.ws_fd.take() {
                // Safe: set only while the websocket task owns the open fd.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
        self.handler.on_close(self);
    }

    /// Says goodbye through the layer above (a Socket.IO DISCONNECT per
    /// namespace), then ends the session once the transport has flushed.
    pub fn disconnect_all(self: &Rc<Self>, reason: CloseReason) {
        self.handler.on_goodbye(self);
        self.terminate(reason);
    }

    /// PING when due, close when a PONG or the first connection is overdue.
    /// Deadlines count from when the PING was scheduled, not from when a
    /// sweep noticed it, so a request arriving after the deadline finds the
    /// session closed. Returns false when the session is (now) ended.
    pub fn check_deadlines(self: &Rc<Self>, now: Instant) -> bool {
        if self.is_ended() {
            return false;
        }
        let cfg = &self.ctx.cfg;
        if self.pong_deadline.get().is_none() && now >= self.next_ping.get() {
            let due = self.next_ping.get();
            self.next_ping.set(due + cfg.ping_interval);
            self.pong_deadline.set(Some(due + cfg.ping_timeout));
            self.outbox.push(Outgoing::Text(Bytes::from_static(b"2")));
        }
        if self.pong_deadline.get().is_some_and(|d| now >= d) {
            self.terminate(CloseReason::PingTimeout);
            return false;
        }
        if self.connect_deadline.get().is_some_and(|d| now >= d) {
            tracing::debug!(sid = %self.sid, "no socket.io CONNECT in time");
            self.terminate(CloseReason::TransportError);
            return false;
        }
        true
    }

    /// The earliest instant [`Self::check_deadlines`] has something to do.
    pub fn next_due(&self) -> Instant {
        let ping = self.pong_deadline.get().unwrap_or(self.next_ping.get());
        self.connect_deadline.get().map_or(ping, |c| c.min(ping))
    }

    /// Periodic check from the shard's sweeper: PING when due, close when a
    /// PONG or CONNECT is overdue; then the layer above's own check.
    pub fn tick(self: &Rc<Self>, now: Instant, now_secs: u64) {
        if let Some(reason @ CloseReason::SlowConsumer) = self.outbox.closed() {
            // The outbox overflowed during a delivery; the transport may be
            // stuck writing, so leave the channels from here.
            self.terminate(reason);
            return;
        }
        if !self.check_deadlines(now) {
            return;
        }
        self.handler.on_tick(self, now_secs);
    }
}

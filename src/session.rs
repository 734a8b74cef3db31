//! One Engine.IO session and the Socket.IO sockets multiplexed on it.
//!
//! A session lives on the shard that created it, for its whole life; its
//! transports (`transport/`) feed it decoded packets and drain its outbox.
//! It owns the Engine.IO state (ping deadlines, the polling→websocket
//! upgrade, binary attachments in flight) and dispatches Socket.IO packets to
//! the application: the gateway (`gateway.rs`) or the protocol suites' echo
//! handlers (`echo.rs`). Never blocks: every await is on this shard.
//!
//! A session is *pending* from its handshake until its first Socket.IO
//! CONNECT succeeds, then *connected* until it ends; the instance bounds the
//! two apart (`--max-pending-sessions`, `--max-connections`), so sessions that
//! never authenticate cannot keep out clients that do. A pending session
//! lives at most `--connect-timeout`, and may send only CONNECT (and the
//! Engine.IO ping/pong/upgrade/noop/close): any other Socket.IO packet, for
//! any namespace this session has not connected, closes it, before any of its
//! attachments is read. A binary packet's attachments are bounded in count
//! (`--max-attachments`) and, with their header, in bytes (`--max-payload`),
//! checked as each arrives.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use proto::engineio::{self, Outgoing, PacketType as Eio};
use proto::socketio::{self, AttachmentLimits, BinaryAssembly, PacketType as Sio};
use shards::{CloseReason, Outbox};

use crate::config::{take_slot, Mode};
use crate::gateway::{self, GwSocket};
use crate::server::ShardCtx;

/// What the handshake request carried, for authentication at CONNECT.
#[derive(Debug, Default, Clone)]
pub struct Handshake {
    pub bearer: Option<String>,
    pub query_token: Option<String>,
}

/// A Socket.IO socket connected on one namespace of a session.
pub enum NsSocket {
    Gateway(Rc<GwSocket>),
    Echo(String),
}

pub struct Session {
    pub sid: Rc<str>,
    pub ctx: Rc<ShardCtx>,
    pub outbox: Rc<Outbox>,
    pub handshake: Handshake,
    /// Packets flow over a websocket (from the start or after the upgrade).
    pub websocket: Cell<bool>,
    /// A websocket probe succeeded; waiting for the client's UPGRADE.
    pub upgrading: Cell<bool>,
    /// A polling GET is waiting on this session.
    pub polling_busy: Cell<bool>,
    /// When the next PING is due (a PONG schedules the next one).
    pub next_ping: Cell<Instant>,
    /// Set when a PING is sent: the scheduled ping time + ping timeout.
    pub pong_deadline: Cell<Option<Instant>>,
    /// Until a Socket.IO namespace connects: when the session is closed
    /// for want of a CONNECT (`--connect-timeout`).
    connect_deadline: Cell<Option<Instant>>,
    /// A plain Engine.IO session (the engine.io-protocol suite's
    /// `/engine.io/` path): no Socket.IO layer, message packets echoed.
    pub raw: bool,
    /// The websocket's fd while its task owns the stream, so a session cut
    /// for a slow consumer can abort a write stuck on a full TCP buffer.
    pub ws_fd: Cell<Option<std::os::fd::RawFd>>,
    binary: RefCell<Option<BinaryAssembly>>,
    sockets: RefCell<Vec<(String, NsSocket)>>,
    /// No Socket.IO CONNECT has succeeded yet: counted in the instance's
    /// pending sessions, not its connections.
    pending: Cell<bool>,
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
}

impl Full {
    pub fn message(self) -> &'static str {
        match self {
            Full::Connections => "Server at max connections",
            Full::PendingSessions => "Server at max pending sessions",
        }
    }
}

impl Session {
    /// Opens a session, pending until its first CONNECT (a plain Engine.IO
    /// session, which has no CONNECT, counts as connected at once). Refused
    /// when the instance is at its connections, or its pending sessions: a
    /// session that could not connect anyway is not worth a pending slot.
    pub fn new(
        ctx: Rc<ShardCtx>,
        sid: Rc<str>,
        handshake: Handshake,
        websocket: bool,
        raw: bool,
    ) -> Result<Rc<Self>, Full> {
        let cfg = &ctx.cfg;
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
        Ok(Rc::new(Session {
            sid,
            outbox: Rc::new(Outbox::new(cfg.send_queue, cfg.send_queue_bytes)),
            handshake,
            websocket: Cell::new(websocket),
            upgrading: Cell::new(false),
            polling_busy: Cell::new(false),
            next_ping: Cell::new(now + cfg.ping_interval),
            pong_deadline: Cell::new(None),
            connect_deadline: Cell::new((!raw).then(|| now + cfg.connect_timeout)),
            raw,
            ws_fd: Cell::new(None),
            binary: RefCell::new(None),
            sockets: RefCell::new(Vec::new()),
            pending: Cell::new(!raw),
            ended: Cell::new(false),
            ctx,
        }))
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

    /// No Socket.IO CONNECT has succeeded on this session yet.
    pub fn is_pending(&self) -> bool {
        self.pending.get()
    }

    pub fn is_ended(&self) -> bool {
        self.ended.get()
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
        if self.binary.borrow().is_some() {
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
            Eio::Message => self.on_message(data).await,
            Eio::Close => {
                self.terminate(CloseReason::ClientClosed);
                Ok(())
            }
            Eio::Noop | Eio::Ping | Eio::Upgrade => Ok(()),
            Eio::Open => Err(ProtocolViolation("OPEN from a client")),
        }
    }

    /// A binary message from either transport: an attachment of the pending
    /// binary event, or a protocol violation.
    pub async fn on_binary(self: &Rc<Self>, data: Bytes) -> Result<(), ProtocolViolation> {
        if self.raw {
            self.outbox.push(Outgoing::Binary(data));
            return Ok(());
        }
        let complete = {
            let mut pending = self.binary.borrow_mut();
            let Some(asm) = pending.as_mut() else {
                return Err(ProtocolViolation("unexpected binary message"));
            };
            match asm.push(data) {
                Ok(true) => pending.take(),
                Ok(false) => None,
                Err(_) => {
                    // Freed now, not when the transport lets the session go.
                    pending.take();
                    return Err(ProtocolViolation("binary attachments beyond --max-payload"));
                }
            }
        };
        if let Some(asm) = complete {
            let (kind, id) = (asm.kind(), asm.id());
            let nsp = asm.nsp().to_string();
            let data = asm.data().map(str::to_string);
            let attachments = asm.into_attachments();
            self.dispatch(kind, &nsp, id, data.as_deref(), attachments)
                .await;
        }
        Ok(())
    }

    async fn on_message(self: &Rc<Self>, text: &str) -> Result<(), ProtocolViolation> {
        let p = socketio::decode(text).map_err(|_| ProtocolViolation("bad socket.io packet"))?;
        validate(&p)?;
        match p.kind {
            Sio::Connect => {}
            Sio::ConnectError => return Err(ProtocolViolation("CONNECT_ERROR from a client")),
            // Checked on the header, before any attachment is read.
            _ if !self.is_connected(p.nsp) => {
                return Err(ProtocolViolation("packet for a namespace not connected"))
            }
            _ => {}
        }
        if p.kind.is_binary() && p.attachments > 0 {
            let cfg = &self.ctx.cfg;
            let limits = AttachmentLimits {
                max_attachments: cfg.max_attachments,
                max_bytes: cfg.max_payload,
            };
            // The header's Engine.IO packet: its type byte and this text.
            let asm = BinaryAssembly::new(&p, 1 + text.len(), limits)
                .map_err(|_| ProtocolViolation("too many binary attachments"))?;
            *self.binary.borrow_mut() = Some(asm);
            return Ok(());
        }
        self.dispatch(p.kind, p.nsp, p.id, p.data, Vec::new()).await;
        Ok(())
    }

    fn is_connected(&self, nsp: &str) -> bool {
        self.sockets.borrow().iter().any(|(n, _)| n == nsp)
    }

    fn socket(&self, nsp: &str) -> Option<NsSocketRef> {
        self.sockets
            .borrow()
            .iter()
            .find(|(n, _)| n == nsp)
            .map(|(_, s)| match s {
                NsSocket::Gateway(g) => NsSocketRef::Gateway(g.clone()),
                NsSocket::Echo(_) => NsSocketRef::Echo,
            })
    }

    async fn dispatch(
        self: &Rc<Self>,
        kind: Sio,
        nsp: &str,
        id: Option<u64>,
        data: Option<&str>,
        att: Vec<Bytes>,
    ) {
        match kind {
            Sio::Connect => self.on_connect(nsp, data).await,
            Sio::Disconnect => self.disconnect_nsp(nsp).await,
            Sio::Event | Sio::BinaryEvent => match self.socket(nsp) {
                Some(NsSocketRef::Gateway(g)) => gateway::on_event(self, &g, id, data, att).await,
                Some(NsSocketRef::Echo) => crate::echo::on_event(self, nsp, id, data, att),
                None => {}
            },
            Sio::Ack | Sio::BinaryAck | Sio::ConnectError => {}
        }
    }

    async fn on_connect(self: &Rc<Self>, nsp: &str, data: Option<&str>) {
        if self.is_connected(nsp) {
            return;
        }
        let auth: Option<serde_json::Value> = data.and_then(|d| serde_json::from_str(d).ok());
        let cfg = &self.ctx.cfg;
        let mode = cfg.mode;
        // The first CONNECT moves the session from the pending sessions to
        // the connections, if there is room; otherwise it is refused and the
        // session stays pending (until its connect timeout).
        let promote = self.pending.get();
        if promote && !take_slot(&cfg.connected_sessions, cfg.max_connections) {
            self.send_sio(
                Sio::ConnectError,
                nsp,
                None,
                Some("{\"message\":\"Server at max connections\"}"),
            );
            return;
        }
        let unpromote = || {
            if promote {
                cfg.connected_sessions.fetch_sub(1, Ordering::Relaxed);
            }
        };
        let socket = match mode {
            Mode::Gateway if nsp == "/" => match gateway::connect(self, auth.as_ref()) {
                Ok(g) => NsSocket::Gateway(g),
                Err(reason) => {
                    unpromote();
                    self.ctx.metrics.auth_refused(reason);
                    let body = format!(
                        "{{\"message\":\"unauthorized\",\"data\":{{\"reason\":\"{}\"}}}}",
                        reason.as_str()
                    );
                    self.send_sio(Sio::ConnectError, nsp, None, Some(&body));
                    return;
                }
            },
            Mode::ProtocolSuite if nsp == "/" || nsp == "/custom" => {
                NsSocket::Echo(crate::echo::socket_id(self))
            }
            _ => {
                unpromote();
                self.send_sio(
                    Sio::ConnectError,
                    nsp,
                    None,
                    Some("{\"message\":\"Invalid namespace\"}"),
                );
                return;
            }
        };
        if promote {
            self.pending.set(false);
            cfg.pending_sessions.fetch_sub(1, Ordering::Relaxed);
        }
        let sid = match &socket {
            NsSocket::Gateway(g) => g.member.socket_id.to_string(),
            NsSocket::Echo(id) => id.clone(),
        };
        self.sockets.borrow_mut().push((nsp.to_string(), socket));
        self.connect_deadline.set(None);
        // Taken before the ack is queued: a websocket may write it at once.
        let writes = self.outbox.writes();
        self.send_sio(
            Sio::Connect,
            nsp,
            None,
            Some(&format!("{{\"sid\":\"{sid}\"}}")),
        );
        if mode == Mode::ProtocolSuite {
            // The official suite's client reads the CONNECT ack, then waits
            // for the next message: a websocket writes the ack on its own.
            let this = self.clone();
            let nsp = nsp.to_string();
            shards::rt::spawn_local(async move {
                if this.websocket.get() {
                    for _ in 0..200 {
                        if this.outbox.writes() > writes || this.is_ended() {
                            break;
                        }
                        shards::rt::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                crate::echo::on_connect(&this, &nsp, auth.as_ref());
            })
            .detach();
        }
    }

    /// Queues a Socket.IO packet.
    pub fn send_sio(&self, kind: Sio, nsp: &str, id: Option<u64>, data: Option<&str>) -> bool {
        let mut s = String::with_capacity(8 + data.map_or(0, str::len));
        socketio::encode(kind, nsp, 0, id, data, &mut s);
        self.send_text(s)
    }

    async fn disconnect_nsp(self: &Rc<Self>, nsp: &str) {
        let removed = {
            let mut socks = self.sockets.borrow_mut();
            socks
                .iter()
                .position(|(n, _)| n == nsp)
                .map(|i| socks.remove(i).1)
        };
        if let Some(NsSocket::Gateway(g)) = removed {
            gateway::disconnect(self, &g).await;
        }
    }

    /// Ends the session: the transport closes after flushing what is queued
    /// (unless the reason dropped the queue), and every socket leaves its
    /// channels (presence `leave` to the remaining members).
    pub fn terminate(self: &Rc<Self>, reason: CloseReason) {
        if self.ended.replace(true) {
            return;
        }
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), "session closed");
        self.ctx.metrics.session_closed(reason);
        self.ctx.sessions.borrow_mut().remove(&self.sid);
        let cfg = &self.ctx.cfg;
        cfg.open_sessions.fetch_sub(1, Ordering::Relaxed);
        if self.pending.get() {
            cfg.pending_sessions.fetch_sub(1, Ordering::Relaxed);
        } else {
            cfg.connected_sessions.fetch_sub(1, Ordering::Relaxed);
        }
        self.binary.borrow_mut().take();
        self.outbox.close(reason);
        if reason == CloseReason::SlowConsumer {
            if let Some(fd) = self.ws_fd.take() {
                // Safe: set only while the websocket task owns the open fd.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
        let sockets = std::mem::take(&mut *self.sockets.borrow_mut());
        if sockets.is_empty() {
            return;
        }
        let this = self.clone();
        shards::rt::spawn_local(async move {
            for (_, s) in sockets {
                if let NsSocket::Gateway(g) = s {
                    gateway::disconnect(&this, &g).await;
                }
            }
        })
        .detach();
    }

    /// Disconnects every Socket.IO socket (a DISCONNECT packet each), then
    /// ends the session once the transport has flushed them.
    pub fn disconnect_all(self: &Rc<Self>, reason: CloseReason) {
        let nsps: Vec<String> = self
            .sockets
            .borrow()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        for nsp in nsps {
            self.send_sio(Sio::Disconnect, &nsp, None, None);
        }
        self.terminate(reason);
    }

    /// PING when due, close when a PONG or the Socket.IO CONNECT is
    /// overdue. Deadlines count from when the PING was scheduled, not from
    /// when a sweep noticed it, so a request arriving after the deadline
    /// finds the session closed. Returns false when the session is (now)
    /// ended.
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
    /// PONG or CONNECT is overdue or the token has expired.
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
        let expired = self.sockets.borrow().iter().any(|(_, s)| match s {
            NsSocket::Gateway(g) => g.expired(now_secs),
            NsSocket::Echo(_) => false,
        });
        if expired {
            self.disconnect_all(CloseReason::TokenExpired);
        }
    }
}

/// Socket.IO's payload rules (socket.io-parser `isPayloadValid`), checked
/// cheaply on the outer shape: a packet breaking them closes the session.
fn validate(p: &socketio::Packet<'_>) -> Result<(), ProtocolViolation> {
    let data = p.data.map(str::trim);
    let ok = match p.kind {
        Sio::Connect => match data {
            None => true,
            Some(d) => d.starts_with('{') && d.ends_with('}'),
        },
        Sio::Disconnect => data.is_none(),
        Sio::Event | Sio::BinaryEvent => data.is_some_and(|d| {
            d.ends_with(']')
                && d.strip_prefix('[')
                    .is_some_and(|r| r.trim_start().starts_with('"'))
        }),
        Sio::Ack | Sio::BinaryAck => data.is_some_and(|d| d.starts_with('[') && d.ends_with(']')),
        Sio::ConnectError => true,
    };
    if ok {
        Ok(())
    } else {
        Err(ProtocolViolation("invalid socket.io payload"))
    }
}

enum NsSocketRef {
    Gateway(Rc<GwSocket>),
    Echo,
}

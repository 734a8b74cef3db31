//! The Socket.IO layer: the namespaces connected on one Engine.IO session.
//!
//! [`SioSession`] is the session's [`EngineHandler`]: it decodes each
//! message packet, checks it (socket.io-parser's payload rules; before the
//! first CONNECT only CONNECT is allowed, and any packet for a namespace
//! this session has not connected closes it, before any of its attachments
//! is read), assembles binary packets (their attachments bounded in count by
//! `--max-attachments` and, with their header, in bytes by `--max-payload`,
//! checked as each arrives), and hands connections, events and disconnects
//! to an [`App`]. Which app runs (the gateway or the protocol suites' echo
//! handlers) is chosen once, at startup, by whoever builds the shard.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use proto::socketio::{self, AttachmentLimits, BinaryAssembly, PacketType as Sio};
use serde_json::Value;

use crate::engine::session::{EngineHandler, LocalFuture, ProtocolViolation, Session};

/// A CONNECT refused by the app: the CONNECT_ERROR packet's data (JSON).
#[derive(Debug)]
pub struct Refused(pub String);

impl Refused {
    /// The namespace is not one the app serves.
    pub fn invalid_namespace() -> Self {
        Refused("{\"message\":\"Invalid namespace\"}".into())
    }
}

/// An application on the Socket.IO layer: what a connection on a namespace
/// is, and what it does with events.
#[allow(async_fn_in_trait)] // one shard, no Send futures wanted
pub trait App: 'static {
    /// One connected socket's state.
    type Socket: Clone;
    /// A CONNECT on `nsp` with its auth payload: the socket, or a refusal.
    async fn connect(
        &self,
        s: &Rc<Session>,
        nsp: &str,
        auth: Option<&Value>,
    ) -> Result<Self::Socket, Refused>;
    /// The socket's id, as the CONNECT ack tells the client.
    fn socket_id(&self, socket: &Self::Socket) -> String;
    /// The socket's private recovery id, sent in the CONNECT ack as `pid`
    /// (socket.io-client sends it back, with its last offset, to recover).
    fn pid(&self, _socket: &Self::Socket) -> Option<String> {
        None
    }
    /// After the CONNECT ack is queued (`writes`: the outbox's write count
    /// before it was).
    fn on_connected(
        self: &Rc<Self>,
        _s: &Rc<Session>,
        _nsp: &str,
        _socket: &Self::Socket,
        _writes: u64,
        _auth: Option<Value>,
    ) {
    }
    /// An EVENT or BINARY_EVENT on the socket's namespace.
    async fn on_event(
        &self,
        s: &Rc<Session>,
        nsp: &str,
        socket: &Self::Socket,
        ack: Option<u64>,
        data: Option<&str>,
        att: Vec<Bytes>,
    );
    /// The socket is gone: a DISCONNECT from the client (`reason` `None`),
    /// or its session ended for `reason`.
    async fn on_disconnect(
        &self,
        s: &Rc<Session>,
        socket: &Self::Socket,
        reason: Option<shards::CloseReason>,
    );
    /// Whether the socket's credentials have expired (the session is then
    /// disconnected).
    fn expired(&self, _socket: &Self::Socket, _now_secs: u64) -> bool {
        false
    }
}

/// The Socket.IO state of one session: its namespaces and any binary
/// packet whose attachments are still arriving.
pub struct SioSession<A: App> {
    app: Rc<A>,
    /// Boxed: large, and rarely there.
    binary: RefCell<Option<Box<BinaryAssembly>>>,
    sockets: RefCell<Sockets<A::Socket>>,
}

/// The connected namespaces with their sockets, in the order they
/// connected: the first inline, as most sessions only ever have `/`.
struct Sockets<S> {
    first: Option<(Nsp, S)>,
    rest: Box<[(Nsp, S)]>,
}

impl<S> Default for Sockets<S> {
    fn default() -> Self {
        Sockets {
            first: None,
            rest: Box::default(),
        }
    }
}

impl<S> Sockets<S> {
    fn iter(&self) -> impl Iterator<Item = &(Nsp, S)> {
        self.first.iter().chain(self.rest.iter())
    }

    fn get(&self, nsp: &str) -> Option<&S> {
        self.iter().find(|(n, _)| n.as_str() == nsp).map(|(_, s)| s)
    }

    fn push(&mut self, nsp: &str, socket: S) {
        let entry = (Nsp::new(nsp), socket);
        if self.first.is_none() {
            self.first = Some(entry);
        } else {
            let mut rest = std::mem::take(&mut self.rest).into_vec();
            rest.push(entry);
            self.rest = rest.into_boxed_slice();
        }
    }

    fn remove(&mut self, nsp: &str) -> Option<S> {
        if self.first.as_ref().is_some_and(|(n, _)| n.as_str() == nsp) {
            let (_, socket) = self.first.take()?;
            if !self.rest.is_empty() {
                let mut rest = std::mem::take(&mut self.rest).into_vec();
                self.first = Some(rest.remove(0));
                self.rest = rest.into_boxed_slice();
            }
            return Some(socket);
        }
        let i = self.rest.iter().position(|(n, _)| n.as_str() == nsp)?;
        let mut rest = std::mem::take(&mut self.rest).into_vec();
        let (_, socket) = rest.remove(i);
        self.rest = rest.into_boxed_slice();
        Some(socket)
    }

    fn into_sockets(self) -> impl Iterator<Item = S> {
        self.first
            .into_iter()
            .chain(self.rest.into_vec())
            .map(|(_, s)| s)
    }
}

/// A namespace's name; `/` needs no allocation.
enum Nsp {
    Root,
    Other(Box<str>),
}

impl Nsp {
    fn new(nsp: &str) -> Self {
        if nsp == "/" {
            Nsp::Root
        } else {
            Nsp::Other(nsp.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Nsp::Root => "/",
            Nsp::Other(n) => n,
        }
    }
}

impl<A: App> SioSession<A> {
    pub fn new(app: Rc<A>) -> Self {
        SioSession {
            app,
            binary: RefCell::new(None),
            sockets: RefCell::default(),
        }
    }

    async fn message(&self, s: &Rc<Session>, text: &str) -> Result<(), ProtocolViolation> {
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
            let cfg = &s.ctx.cfg;
            let limits = AttachmentLimits {
                max_attachments: cfg.max_attachments,
                max_bytes: cfg.max_payload,
            };
            // The header's Engine.IO packet: its type byte and this text.
            let asm = BinaryAssembly::new(&p, 1 + text.len(), limits)
                .map_err(|_| ProtocolViolation("too many binary attachments"))?;
            *self.binary.borrow_mut() = Some(Box::new(asm));
            return Ok(());
        }
        self.dispatch(s, p.kind, p.nsp, p.id, p.data, Vec::new())
            .await;
        Ok(())
    }

    async fn binary(&self, s: &Rc<Session>, data: Bytes) -> Result<(), ProtocolViolation> {
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
            self.dispatch(s, kind, &nsp, id, data.as_deref(), attachments)
                .await;
        }
        Ok(())
    }

    fn is_connected(&self, nsp: &str) -> bool {
        self.sockets.borrow().get(nsp).is_some()
    }

    fn socket(&self, nsp: &str) -> Option<A::Socket> {
        self.sockets.borrow().get(nsp).cloned()
    }

    async fn dispatch(
        &self,
        s: &Rc<Session>,
        kind: Sio,
        nsp: &str,
        id: Option<u64>,
        data: Option<&str>,
        att: Vec<Bytes>,
    ) {
        match kind {
            Sio::Connect => self.connect(s, nsp, data).await,
            Sio::Disconnect => self.disconnect(s, nsp).await,
            Sio::Event | Sio::BinaryEvent => {
                if let Some(sock) = self.socket(nsp) {
                    self.app.on_event(s, nsp, &sock, id, data, att).await;
                }
            }
            Sio::Ack | Sio::BinaryAck | Sio::ConnectError => {}
        }
    }

    async fn connect(&self, s: &Rc<Session>, nsp: &str, data: Option<&str>) {
        if self.is_connected(nsp) {
            return;
        }
        let auth: Option<Value> = data.and_then(|d| serde_json::from_str(d).ok());
        // The first CONNECT moves the session from the pending sessions to
        // the connections, if there is room; otherwise it is refused and the
        // session stays pending (until its connect timeout).
        let promote = s.is_pending();
        if promote && !s.take_connection_slot() {
            send(
                s,
                Sio::ConnectError,
                nsp,
                None,
                Some("{\"message\":\"Server at max connections\"}"),
            );
            return;
        }
        let socket = match self.app.connect(s, nsp, auth.as_ref()).await {
            Ok(socket) => socket,
            Err(Refused(body)) => {
                if promote {
                    s.release_connection_slot();
                }
                send(s, Sio::ConnectError, nsp, None, Some(&body));
                return;
            }
        };
        s.mark_connected();
        if s.is_ended() {
            // The transport went away while the app was connecting.
            self.app.on_disconnect(s, &socket, s.outbox.closed()).await;
            return;
        }
        let sid = self.app.socket_id(&socket);
        let ack = match self.app.pid(&socket) {
            Some(pid) => format!("{{\"sid\":\"{sid}\",\"pid\":\"{pid}\"}}"),
            None => format!("{{\"sid\":\"{sid}\"}}"),
        };
        self.sockets.borrow_mut().push(nsp, socket.clone());
        // Taken before the ack is queued: a websocket may write it at once.
        let writes = s.outbox.writes();
        send(s, Sio::Connect, nsp, None, Some(&ack));
        self.app.on_connected(s, nsp, &socket, writes, auth);
    }

    async fn disconnect(&self, s: &Rc<Session>, nsp: &str) {
        let removed = self.sockets.borrow_mut().remove(nsp);
        if let Some(sock) = removed {
            self.app.on_disconnect(s, &sock, None).await;
        }
    }
}

impl<A: App> EngineHandler for SioSession<A> {
    fn on_message<'a>(
        &'a self,
        s: &'a Rc<Session>,
        text: &'a str,
    ) -> LocalFuture<'a, Result<(), ProtocolViolation>> {
        Box::pin(self.message(s, text))
    }

    fn on_binary<'a>(
        &'a self,
        s: &'a Rc<Session>,
        data: Bytes,
    ) -> LocalFuture<'a, Result<(), ProtocolViolation>> {
        Box::pin(self.binary(s, data))
    }

    fn awaiting_binary(&self) -> bool {
        self.binary.borrow().is_some()
    }

    fn on_tick(&self, s: &Rc<Session>, now_secs: u64) {
        let expired = self
            .sockets
            .borrow()
            .iter()
            .any(|(_, sock)| self.app.expired(sock, now_secs));
        if expired {
            s.disconnect_all(shards::CloseReason::TokenExpired);
        }
    }

    fn on_goodbye(&self, s: &Session) {
        let nsps: Vec<String> = self
            .sockets
            .borrow()
            .iter()
            .map(|(n, _)| n.as_str().to_string())
            .collect();
        for nsp in nsps {
            send(s, Sio::Disconnect, &nsp, None, None);
        }
    }

    fn on_close(&self, s: &Rc<Session>) {
        self.binary.borrow_mut().take();
        let sockets = std::mem::take(&mut *self.sockets.borrow_mut());
        if sockets.first.is_none() {
            return;
        }
        let (this, app) = (s.clone(), self.app.clone());
        let reason = s.outbox.closed();
        shards::rt::spawn_local(async move {
            for sock in sockets.into_sockets() {
                app.on_disconnect(&this, &sock, reason).await;
            }
        })
        .detach();
    }
}

/// Queues a Socket.IO packet on the session.
pub fn send(s: &Session, kind: Sio, nsp: &str, id: Option<u64>, data: Option<&str>) -> bool {
    let mut text = String::with_capacity(8 + data.map_or(0, str::len));
    socketio::encode(kind, nsp, 0, id, data, &mut text);
    s.send_text(text)
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

#[cfg(test)]
mod tests {
    use super::Sockets;

    fn names(s: &Sockets<u32>) -> Vec<(&str, u32)> {
        s.iter().map(|(n, v)| (n.as_str(), *v)).collect()
    }

    #[test]
    fn namespaces_keep_their_order() {
        let mut s = Sockets::default();
        s.push("/", 1);
        s.push("/a", 2);
        s.push("/b", 3);
        assert_eq!(names(&s), [("/", 1), ("/a", 2), ("/b", 3)]);
        assert_eq!(s.get("/a"), Some(&2));
        assert_eq!(s.remove("/"), Some(1));
        assert_eq!(names(&s), [("/a", 2), ("/b", 3)]);
        assert_eq!(s.remove("/b"), Some(3));
        assert_eq!(s.remove("/b"), None);
        s.push("/", 4);
        assert_eq!(names(&s), [("/a", 2), ("/", 4)]);
        assert_eq!(s.into_sockets().collect::<Vec<_>>(), [2, 4]);
    }
}

//! The handlers the official socket.io-protocol test suite expects ([`Echo`],
//! an [`App`] on the same Socket.IO layer as the gateway; the
//! `protocol-suite` subcommand runs it instead of the gateway): no
//! auth; on connection emit `auth` with the handshake's auth payload;
//! `message` → `message-back` with the same arguments; `message-with-ack` →
//! ack with the same arguments. Namespaces `/` and `/custom`.

use std::rc::Rc;

use bytes::Bytes;
use proto::engineio::Outgoing;
use proto::socketio::{self, PacketType as Sio};
use serde_json::Value;

use crate::engine::session::Session;
use crate::sio::{self, App, Refused};

/// The protocol suites' echo server as the Socket.IO layer's application.
pub struct Echo;

impl App for Echo {
    type Socket = Rc<str>;

    async fn connect(
        &self,
        _s: &Rc<Session>,
        nsp: &str,
        _auth: Option<&Value>,
    ) -> Result<Rc<str>, Refused> {
        if nsp == "/" || nsp == "/custom" {
            Ok(random_id().into())
        } else {
            Err(Refused::invalid_namespace())
        }
    }

    fn socket_id(&self, id: &Rc<str>) -> String {
        id.to_string()
    }

    fn on_connected(
        self: &Rc<Self>,
        s: &Rc<Session>,
        nsp: &str,
        _socket: &Rc<str>,
        writes: u64,
        auth: Option<Value>,
    ) {
        // The official suite's client reads the CONNECT ack, then waits for
        // the next message: a websocket writes the ack on its own.
        let this = s.clone();
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
            on_connect(&this, &nsp, auth.as_ref());
        })
        .detach();
    }

    async fn on_event(
        &self,
        s: &Rc<Session>,
        nsp: &str,
        _id: &Rc<str>,
        ack: Option<u64>,
        data: Option<&str>,
        att: Vec<Bytes>,
    ) {
        on_event(s, nsp, ack, data, att)
    }

    async fn on_disconnect(
        &self,
        _s: &Rc<Session>,
        _id: &Rc<str>,
        _reason: Option<shards::CloseReason>,
    ) {
    }
}

/// A random socket id (20 url-safe characters).
fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..64)] as char)
        .collect()
}

fn on_connect(s: &Rc<Session>, nsp: &str, auth: Option<&Value>) {
    let auth = auth
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    sio::send(
        s,
        Sio::Event,
        nsp,
        None,
        Some(&format!("[\"auth\",{auth}]")),
    );
}

fn on_event(s: &Rc<Session>, nsp: &str, ack: Option<u64>, data: Option<&str>, att: Vec<Bytes>) {
    let Some(Ok(Value::Array(mut args))) = data.map(serde_json::from_str::<Value>) else {
        return;
    };
    if args.is_empty() {
        return;
    }
    let name = args.remove(0);
    let (kind, id, payload) = match name.as_str() {
        Some("message") => {
            args.insert(0, Value::String("message-back".into()));
            (
                if att.is_empty() {
                    Sio::Event
                } else {
                    Sio::BinaryEvent
                },
                None,
                args,
            )
        }
        Some("message-with-ack") => match ack {
            Some(id) => (
                if att.is_empty() {
                    Sio::Ack
                } else {
                    Sio::BinaryAck
                },
                Some(id),
                args,
            ),
            None => return,
        },
        _ => return,
    };
    let json = Value::Array(payload).to_string();
    let mut text = String::with_capacity(json.len() + 16);
    socketio::encode(kind, nsp, att.len(), id, Some(&json), &mut text);
    s.outbox.push_all(Outgoing::Text(Bytes::from(text)), &att);
}

//! The handlers the official socket.io-protocol test suite expects, wired on
//! the same Socket.IO layer as the gateway (`protocol-suite` subcommand): no
//! auth; on connection emit `auth` with the handshake's auth payload;
//! `message` → `message-back` with the same arguments; `message-with-ack` →
//! ack with the same arguments. Namespaces `/` and `/custom`.

use std::rc::Rc;

use bytes::Bytes;
use proto::engineio::Outgoing;
use proto::socketio::{self, PacketType as Sio};
use serde_json::Value;

use crate::session::Session;

/// A random socket id (20 url-safe characters).
pub fn socket_id(_s: &Session) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..64)] as char)
        .collect()
}

pub fn on_connect(s: &Rc<Session>, nsp: &str, auth: Option<&Value>) {
    let auth = auth
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    s.send_sio(Sio::Event, nsp, None, Some(&format!("[\"auth\",{auth}]")));
}

pub fn on_event(s: &Rc<Session>, nsp: &str, ack: Option<u64>, data: Option<&str>, att: Vec<Bytes>) {
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

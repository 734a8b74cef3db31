//! The Socket.IO packets of the message scenarios: the events senders and subscribers
//! write, the payload that carries a message's sequence number, sender and send time, and
//! [`classify`], which tells what a received packet is without parsing all of its JSON.

use std::fmt::Write as _;

use super::options::Membership;
use crate::client::{self, find, find_str, find_u64};

/// What a received Socket.IO packet is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// An `event` delivery with our payload: (seq, publisher, ch, sent_ns).
    Delivery {
        seq: u64,
        publisher: u64,
        ch: u64,
        sent_ns: u64,
    },
    /// `event` without our payload.
    ForeignEvent,
    /// `presence`; `count`: a large channel's member count (not a join or leave).
    Presence {
        count: bool,
    },
    ErrorEvent,
    Ack {
        id: u64,
        ok: bool,
        code: Option<&'a str>,
    },
    Other,
}

pub fn classify(t: &[u8]) -> Incoming<'_> {
    if let Some(rest) = t.strip_prefix(b"42") {
        if rest.starts_with(b"[\"event\"") {
            let Some(d) = find(rest, b"\"data\":") else {
                return Incoming::ForeignEvent;
            };
            let data = &rest[d..];
            match (
                find_u64(data, b"\"seq\":"),
                find_u64(data, b"\"publisher\":"),
                find_u64(data, b"\"sent_ns\":"),
            ) {
                (Some(seq), Some(publisher), Some(sent_ns)) => Incoming::Delivery {
                    seq,
                    publisher,
                    ch: find_u64(data, b"\"ch\":").unwrap_or(0),
                    sent_ns,
                },
                _ => Incoming::ForeignEvent,
            }
        } else if rest.starts_with(b"[\"presence\"") {
            Incoming::Presence {
                count: find(rest, b"\"type\":\"count\"").is_some(),
            }
        } else if rest.starts_with(b"[\"error\"") {
            Incoming::ErrorEvent
        } else {
            Incoming::Other
        }
    } else if let Some(rest) = t.strip_prefix(b"43") {
        let Some((id, i)) = client::parse_u64_at(rest, 0) else {
            return Incoming::Other;
        };
        let body = &rest[i..];
        let ok = find(body, b"\"ok\":true").is_some();
        let code = if ok {
            None
        } else {
            find_str(body, b"\"code\":")
        };
        Incoming::Ack { id, ok, code }
    } else {
        Incoming::Other
    }
}
/// The name of channel `c` of run `run_id`: runs that share a server never see each other's
/// messages.
pub fn channel_name(run_id: &str, c: u64) -> String {
    format!("lt-{run_id}-{c}")
}

/// `join` (members, with presence events) or `subscribe` to `channel`, acked as `ack`.
pub fn membership_event(how: Membership, ack: u64, channel: &str) -> String {
    match how {
        Membership::Join => join_event(ack, channel),
        Membership::Subscribe => format!("42{ack}[\"subscribe\",{{\"topic\":\"{channel}\"}}]"),
    }
}

pub fn join_event(ack: u64, channel: &str) -> String {
    format!("42{ack}[\"join\",{{\"channel\":\"{channel}\"}}]")
}

pub fn leave_event(ack: u64, channel: &str) -> String {
    format!("42{ack}[\"leave\",{{\"channel\":\"{channel}\"}}]")
}

/// Appends a `publish` of message `seq` from publisher `p` to channel `c` of run `run_id`,
/// stamped `stamp`, acked as `ack`.
#[allow(clippy::too_many_arguments)]
pub fn publish_event(
    buf: &mut String,
    ack: u64,
    run_id: &str,
    c: u64,
    seq: u64,
    p: u64,
    stamp: u64,
    chat: bool,
) {
    let _ = write!(
        buf,
        "42{ack}[\"publish\",{{\"channel\":\"lt-{run_id}-{c}\",\"event\":\"lt\",\"data\":"
    );
    fanout_data(buf, seq, p, c, stamp);
    if chat {
        // The accounting fields stay first; a chat message follows them.
        buf.pop();
        chat_message(buf, seq, p);
        buf.push('}');
    }
    buf.push_str("}]");
}

/// A chat application's message (`--chat`): the sender's profile, a line of text, mentions
/// and reactions, about 400 bytes of JSON, varied by `seq` so no two are the same.
fn chat_message(buf: &mut String, seq: u64, p: u64) {
    const LINES: [&str; 6] = [
        "Has anyone looked at the deployment checklist for tomorrow's release? I added two items.",
        "Lunch at the usual place at 12:30? I can book a table for six if everyone is in.",
        "The dashboard numbers look right now, thanks for fixing the timezone bug so quickly!",
        "Reminder: the design review moved to Thursday afternoon, same room as last week.",
        "I pushed the new onboarding copy to the shared folder, comments welcome before Friday.",
        "Could someone with admin rights reset the staging database? It is stuck on migrations.",
    ];
    let line = LINES[(seq % LINES.len() as u64) as usize];
    let _ = write!(
        buf,
        ",\"message\":{{\"id\":\"msg-{p}-{seq}\",\"author\":{{\"id\":\"user-{p}\",\"name\":\"Publisher {p}\",\"avatar\":\"https://cdn.example.com/avatars/user-{p}.png\",\"status\":\"online\"}},\"text\":\"{line}\",\"mentions\":[\"user-{m}\"],\"reactions\":{{\"thumbs_up\":{r},\"heart\":1}},\"thread\":null,\"edited\":false}}",
        m = seq % 17,
        r = seq % 5
    );
}

/// Appends a `direct` of message `seq` from sender `id` to socket `to`, stamped `stamp`,
/// acked as `ack`.
pub fn direct_event(buf: &mut String, ack: u64, to: &str, seq: u64, id: u64, stamp: u64) {
    let _ = write!(
        buf,
        "42{ack}[\"direct\",{{\"to\":\"{to}\",\"event\":\"lt\",\"data\":"
    );
    fanout_data(buf, seq, id, 0, stamp);
    buf.push_str("}]");
}

/// The `data` of every message: what a receiver needs to account for it and time it.
fn fanout_data(buf: &mut String, seq: u64, p: u64, c: u64, t: u64) {
    let _ = write!(
        buf,
        "{{\"seq\":{seq},\"publisher\":{p},\"ch\":{c},\"sent_ns\":{t}}}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_packets() {
        let d = br#"42["event",{"id":"1","channel":"lt-a-2","event":"lt","data":{"seq":7,"publisher":1,"ch":2,"sent_ns":55},"from":{"socketId":"s","userId":"u"},"ts":1}]"#;
        assert_eq!(
            classify(d),
            Incoming::Delivery {
                seq: 7,
                publisher: 1,
                ch: 2,
                sent_ns: 55
            }
        );
        assert_eq!(
            classify(br#"42["event",{"channel":"x","data":{"text":"hi"}}]"#),
            Incoming::ForeignEvent
        );
        assert_eq!(
            classify(br#"42["presence",{"channel":"x","type":"join"}]"#),
            Incoming::Presence { count: false }
        );
        assert_eq!(
            classify(br#"42["presence",{"channel":"x","type":"count","count":3,"ts":1}]"#),
            Incoming::Presence { count: true }
        );
        assert_eq!(
            classify(br#"4312[{"ok":true,"id":"abc"}]"#),
            Incoming::Ack {
                id: 12,
                ok: true,
                code: None
            }
        );
        assert_eq!(
            classify(br#"433[{"ok":false,"error":{"code":"rate_limited","message":"m"}}]"#),
            Incoming::Ack {
                id: 3,
                ok: false,
                code: Some("rate_limited")
            }
        );
        assert_eq!(classify(b"40{}"), Incoming::Other);
    }

    #[test]
    fn fanout_data_is_json() {
        let mut s = String::new();
        fanout_data(&mut s, 1, 2, 3, 4);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["publisher"], 2);
        assert_eq!(v["ch"], 3);
        assert_eq!(v["sent_ns"], 4);
    }

    #[test]
    fn events_are_what_the_gateway_reads() {
        assert_eq!(
            membership_event(Membership::Join, 3, "lt-r-1"),
            r#"423["join",{"channel":"lt-r-1"}]"#
        );
        assert_eq!(
            membership_event(Membership::Subscribe, 4, "lt-r-1"),
            r#"424["subscribe",{"topic":"lt-r-1"}]"#
        );
        assert_eq!(
            leave_event(5, "lt-r-2"),
            r#"425["leave",{"channel":"lt-r-2"}]"#
        );
        let mut b = String::new();
        publish_event(&mut b, 6, "r", 2, 7, 1, 99, false);
        assert_eq!(
            b,
            r#"426["publish",{"channel":"lt-r-2","event":"lt","data":{"seq":7,"publisher":1,"ch":2,"sent_ns":99}}]"#
        );
        b.clear();
        // A chat message keeps the accounting fields readable, in valid JSON.
        publish_event(&mut b, 6, "r", 2, 7, 1, 99, true);
        let v: serde_json::Value = serde_json::from_str(&b[3..]).unwrap();
        assert_eq!(v[1]["data"]["seq"], 7);
        assert!(v[1]["data"]["message"]["text"].is_string());
        let text = format!("42[\"event\",{{\"data\":{}}}]", v[1]["data"]);
        assert!(matches!(
            classify(text.as_bytes()),
            Incoming::Delivery {
                seq: 7,
                publisher: 1,
                ch: 2,
                sent_ns: 99
            }
        ));
        b.clear();
        direct_event(&mut b, 8, "sid", 9, 3, 100);
        assert_eq!(
            b,
            r#"428["direct",{"to":"sid","event":"lt","data":{"seq":9,"publisher":3,"ch":0,"sent_ns":100}}]"#
        );
    }
}

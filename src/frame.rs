//! Encodes what the server sends: RealtimeEvent and presence frames, member
//! lists. A frame is built once per publish as a complete Engine.IO text
//! packet and then shared by every recipient. An event's `data` is copied
//! into it as the publisher's JSON text, byte for byte.

use std::fmt::Write;
use std::ops::Range;

use bytes::Bytes;
use serde_json::value::RawValue;
use shards::{Member, MemberView, PresenceKind, PresenceTag};

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&json_str(s));
}

/// A RealtimeEvent about to be encoded.
pub struct Event<'a> {
    pub id: &'a str,
    /// `None` for a direct message.
    pub channel: Option<&'a str>,
    /// The target socket of a direct message.
    pub to: Option<&'a str>,
    pub event: &'a str,
    /// The JSON text as the publisher sent it.
    pub data: &'a RawValue,
    /// `None` for a REST broadcast.
    pub from: Option<&'a Member>,
    pub ts: u64,
    /// Binary attachments relayed with `data` (its placeholders refer to them).
    pub attachments: usize,
    /// The frame carries its id as the recovery offset (its last argument).
    pub offset: bool,
}

/// `42["event",{...}]` (or `45<n>-[...]` with attachments), and where `data`
/// sits in it; with `offset`, `42["event",{...},"<id>"]`. A subscription
/// delivery inserts its `subscriptionId` before the object's `}`
/// ([`shards::object_end`]).
pub fn realtime_event(e: &Event<'_>) -> (Bytes, Range<usize>) {
    let data = e.data.get();
    let mut out = String::with_capacity(160 + e.event.len() + e.id.len() + data.len());
    if e.attachments > 0 {
        let _ = write!(out, "45{}-", e.attachments);
    } else {
        out.push_str("42");
    }
    out.push_str("[\"event\",{\"id\":");
    push_json_str(&mut out, e.id);
    out.push_str(",\"channel\":");
    match e.channel {
        Some(c) => push_json_str(&mut out, c),
        None => out.push_str("null"),
    }
    if let Some(to) = e.to {
        out.push_str(",\"to\":");
        push_json_str(&mut out, to);
    }
    out.push_str(",\"event\":");
    push_json_str(&mut out, e.event);
    out.push_str(",\"data\":");
    let span = out.len()..out.len() + data.len();
    out.push_str(data);
    out.push_str(",\"from\":");
    match e.from {
        Some(m) => {
            out.push_str("{\"socketId\":");
            push_json_str(&mut out, &m.socket_id);
            out.push_str(",\"userId\":");
            push_json_str(&mut out, &m.user_id);
            out.push('}');
        }
        None => out.push_str("null"),
    }
    // `ts` last, right before the closing `}]`: `event_ts` reads it there.
    let _ = write!(out, ",\"ts\":{}}}", e.ts);
    push_offset(&mut out, e.offset.then_some(e.id));
    (Bytes::from(out), span)
}

/// The frame's tail: `,"<offset>"]`, or `]`.
fn push_offset(out: &mut String, offset: Option<&str>) {
    if let Some(o) = offset {
        out.push_str(",\"");
        out.push_str(o);
        out.push('"');
    }
    out.push(']');
}

/// The `ts` of a frame built by [`realtime_event`], read back from its end
/// where that function writes it: the whole frame (`...,"ts":N}]`) or the
/// part a subscription delivery shares (the same without its `}]`, the
/// `subscriptionId` tail kept apart). `None` for any other packet
/// (presence, acks, pings). Reads the head and the last few bytes only.
pub fn event_ts(frame: &[u8]) -> Option<u64> {
    const HEAD: &[u8] = b"[\"event\",{";
    const KEY: &[u8] = b",\"ts\":";
    let rest = frame.strip_prefix(b"4")?;
    let rest = match rest.first()? {
        b'2' => &rest[1..],
        b'5' => {
            let dash = rest.iter().take(8).position(|&c| c == b'-')?;
            &rest[dash + 1..]
        }
        _ => return None,
    };
    if !rest.starts_with(HEAD) {
        return None;
    }
    let body = if rest.ends_with(b"]") {
        &rest[..shards::object_end(rest)]
    } else {
        rest
    };
    let body = body.strip_suffix(b"}").unwrap_or(body);
    let digits = body
        .iter()
        .rev()
        .take(21)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let (head, ts) = body.split_at(body.len() - digits);
    if digits == 0 || !head.ends_with(KEY) {
        return None;
    }
    std::str::from_utf8(ts).ok()?.parse().ok()
}

fn member_json(out: &mut String, socket_id: &str, user_id: &str, info: Option<&str>) {
    out.push_str("{\"socketId\":");
    push_json_str(out, socket_id);
    out.push_str(",\"userId\":");
    push_json_str(out, user_id);
    out.push_str(",\"info\":");
    out.push_str(info.unwrap_or("null"));
}

/// `42["presence",{"channel","type","member","ts"}]`, with `offset` as
/// its last argument when given.
pub fn presence(channel: &str, kind: &str, m: &Member, ts: u64, offset: Option<&str>) -> Bytes {
    let mut out = String::with_capacity(160);
    out.push_str("42[\"presence\",{\"channel\":");
    push_json_str(&mut out, channel);
    let _ = write!(out, ",\"type\":\"{kind}\",\"member\":");
    member_json(&mut out, &m.socket_id, &m.user_id, m.info.as_deref());
    let _ = write!(out, "}},\"ts\":{ts}}}");
    push_offset(&mut out, offset);
    Bytes::from(out)
}

/// `42["presence",{"channel","type":"count","count","ts"}]`, with `offset`
/// as its last argument when given.
pub fn presence_count(channel: &str, count: usize, ts: u64, offset: Option<&str>) -> Bytes {
    let mut out = String::with_capacity(96 + channel.len());
    out.push_str("42[\"presence\",{\"channel\":");
    push_json_str(&mut out, channel);
    let _ = write!(out, ",\"type\":\"count\",\"count\":{count},\"ts\":{ts}}}");
    push_offset(&mut out, offset);
    Bytes::from(out)
}

/// The coalescing tag of a presence frame as [`presence`] and
/// [`presence_count`] write it (`head` is its text, or the head of its
/// parts); `None` for any other frame. For frames read back (a recovered
/// socket's replay), which carry no tag of their own.
pub fn presence_tag(head: &[u8]) -> Option<PresenceTag> {
    use serde::Deserialize;
    use std::borrow::Cow;
    #[derive(Deserialize)]
    struct P<'a> {
        #[serde(borrow)]
        channel: Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        member: Option<M<'a>>,
    }
    #[derive(Deserialize)]
    struct M<'a> {
        #[serde(rename = "socketId", borrow)]
        socket_id: Cow<'a, str>,
    }
    let rest = head.strip_prefix(b"42[\"presence\",")?;
    let p = P::deserialize(&mut serde_json::Deserializer::from_slice(rest)).ok()?;
    let (kind, member) = match (&*p.kind, &p.member) {
        ("join", Some(m)) => (PresenceKind::Join, Some(&*m.socket_id)),
        ("leave", Some(m)) => (PresenceKind::Leave, Some(&*m.socket_id)),
        ("count", None) => (PresenceKind::Count, None),
        _ => return None,
    };
    Some(PresenceTag::new(&p.channel, member, kind))
}

/// A JSON list of MEMBER objects.
pub fn members(list: &[MemberView]) -> String {
    let mut out = String::with_capacity(2 + list.len() * 96);
    out.push('[');
    for (i, m) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        member_json(&mut out, &m.socket_id, &m.user_id, m.info.as_deref());
        let _ = write!(out, ",\"joinedAt\":{}}}", m.joined_at);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use shards::{Outbox, SocketKey};
    use std::rc::Rc;

    fn member() -> Member {
        Member::new(
            SocketKey { shard: 0, seq: 1 },
            "i-0-1".into(),
            "user\"1".into(),
            Some("{\"a\":1}".into()),
            false,
            Rc::new(Outbox::new(1, usize::MAX)),
        )
    }

    #[test]
    fn presence_tags_read_back_what_was_written() {
        let m = member();
        for offset in [None, Some("7-1")] {
            for (kind, k) in [("join", PresenceKind::Join), ("leave", PresenceKind::Leave)] {
                let f = presence("ch\"1", kind, &m, 5, offset);
                let want = PresenceTag::new("ch\"1", Some("i-0-1"), k);
                assert_eq!(presence_tag(&f), Some(want));
            }
            let f = presence_count("ch\"1", 9, 5, offset);
            let want = PresenceTag::new("ch\"1", None, PresenceKind::Count);
            assert_eq!(presence_tag(&f), Some(want));
        }
        assert_eq!(presence_tag(b"42[\"event\",{}]"), None);
        assert_eq!(presence_tag(b"42[\"presence\",{\"channel\":1}]"), None);
    }

    #[test]
    fn realtime_event_is_valid_json() {
        let m = member();
        let data = RawValue::from_string(r#"{"text": "hi"}"#.into()).unwrap();
        let e = Event {
            id: "1",
            channel: Some("chat:room1"),
            to: None,
            event: "message",
            data: &data,
            from: Some(&m),
            ts: 5,
            attachments: 0,
            offset: false,
        };
        let (b, _) = realtime_event(&e);
        let s = std::str::from_utf8(&b).unwrap();
        assert!(s.starts_with("42") && s.ends_with("}]"));
        let v: Value = serde_json::from_str(&s[2..]).unwrap();
        assert_eq!(v[0], "event");
        assert_eq!(v[1]["from"]["userId"], "user\"1");
        assert_eq!(v[1]["data"]["text"], "hi");
        assert_eq!(v[1]["ts"], 5);
    }

    #[test]
    fn event_ts_reads_back_what_realtime_event_wrote() {
        let m = member();
        let data = RawValue::from_string(r#"{"ts":1,"n":7}"#.into()).unwrap();
        let cases = [(None, 0, 1764000000000), (Some("i-1"), 3, 0)];
        for ((to, attachments, ts), offset) in
            cases.into_iter().flat_map(|c| [(c, false), (c, true)])
        {
            let e = Event {
                id: "0a-1-i",
                channel: to.is_none().then_some("c"),
                to,
                event: "e",
                data: &data,
                from: Some(&m),
                ts,
                attachments,
                offset,
            };
            let (b, _) = realtime_event(&e);
            assert_eq!(event_ts(&b), Some(ts));
            let end = shards::object_end(&b);
            assert_eq!(shards::frame_offset(&b), offset.then_some("0a-1-i"));
            // A subscription's shared head: the frame up to its object's `}`.
            assert_eq!(event_ts(&b[..end - 1]), Some(ts));
            // A frame without its offset, for a socket that does not recover.
            assert_eq!(event_ts(&b[..end]), Some(ts));
        }
        let p = presence("c", "join", &m, 5, Some("x"));
        assert_eq!(shards::frame_offset(&p), Some("x"));
        assert_eq!(event_ts(&p), None);
        for other in [
            &b"2"[..],
            br#"43[{"ok":true}]"#,
            br#"42["event",{"a":5}]"#,
            b"42",
        ] {
            assert_eq!(event_ts(other), None);
        }
    }

    #[test]
    fn realtime_event_copies_data_verbatim() {
        let m = member();
        let text = r#"{"order":{"z":1,"a":[[1.50,-0,1E400],{}]},"n":12345678901234567890123,"s":"\u00e9\/\n","t": true }"#;
        let data: &RawValue = serde_json::from_str(text).unwrap();
        for (to, attachments, head) in [(None, 0, "42"), (Some("i-1"), 2, "452-")] {
            let e = Event {
                id: "1",
                channel: to.is_none().then_some("c"),
                to,
                event: "m",
                data,
                from: Some(&m),
                ts: 5,
                attachments,
                offset: false,
            };
            let (b, span) = realtime_event(&e);
            let s = std::str::from_utf8(&b).unwrap();
            assert!(s.starts_with(head) && s.ends_with("}]"), "{s}");
            assert_eq!(&s[span.clone()], text);
            assert_eq!(&s[span.start - 8..span.start], ",\"data\":");
            assert_eq!(&s[span.end..span.end + 8], ",\"from\":");
        }
        let (b, span) = realtime_event(&Event {
            id: "2",
            channel: Some("c"),
            to: None,
            event: "m",
            data: RawValue::NULL,
            from: None,
            ts: 1,
            attachments: 0,
            offset: false,
        });
        assert_eq!(&b[span], b"null");
    }

    #[test]
    fn presence_is_valid_json() {
        let b = presence("c", "join", &member(), 7, None);
        let v: Value = serde_json::from_str(&std::str::from_utf8(&b).unwrap()[2..]).unwrap();
        assert_eq!(v[1]["member"]["info"]["a"], 1);
        assert_eq!(v[1]["type"], "join");
    }
}

//! The shape of one publish, shared by the socket event (`gateway.rs`) and
//! the REST broadcast (`edge/rest`): the arguments checked, the
//! RealtimeEvent encoded once (`frame.rs`) into a [`Publication`] the shard
//! fans out. Its `data` is never parsed here: it goes into the frame as the
//! JSON text the client sent (`args.rs`).

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;
use shards::{now_ms, Member, PresenceTag, Publication};

use crate::args::{self, EventArgs, Fields};
use crate::frame;
use crate::rules::{self, ErrorCode, Fail};

pub fn bad_event() -> Fail {
    Fail::new(
        ErrorCode::BadRequest,
        "an event is a JSON array [name, argument]",
    )
}

/// `[name, arg]`, with `arg` left as the client's JSON text.
pub fn parse_args(data: Option<&str>) -> Result<(Cow<'_, str>, Option<&RawValue>), Fail> {
    let e = EventArgs::parse(data.ok_or_else(bad_event)?).ok_or_else(bad_event)?;
    Ok((e.name, e.arg))
}

pub fn bad(msg: &str) -> Fail {
    Fail::new(ErrorCode::BadRequest, msg)
}

/// A server-side broadcast (REST): a RealtimeEvent with `from: null` to the
/// channel's members and subscriptions on every shard. Returns its id.
pub async fn broadcast(
    shard: &shards::Shard,
    channel: &str,
    event: &str,
    data: &RawValue,
) -> Result<String, Fail> {
    rules::validate_channel(channel)?;
    rules::validate_event_name(event)?;
    let id = shard.next_event_id();
    let ev = frame::Event {
        id: &id,
        channel: Some(channel),
        to: None,
        event,
        data,
        from: None,
        ts: now_ms(),
        attachments: 0,
        offset: shard.recovery_enabled(),
    };
    let (text, data) = frame::realtime_event(&ev);
    let p = Publication {
        channel: channel.into(),
        event: event.into(),
        obj_end: shards::object_end(&text),
        text,
        attachments: Vec::new(),
        data,
        skip_user: None,
        presence: None,
    };
    shard.publish(p).await;
    Ok(id)
}

/// A presence frame (`frame::presence`, `frame::presence_count`) as the
/// publication to a channel's members (never to its subscriptions).
pub fn presence_publication(channel: &str, text: Bytes, tag: PresenceTag) -> Publication {
    Publication {
        channel: channel.into(),
        event: "presence".into(),
        obj_end: shards::object_end(&text),
        text,
        attachments: Vec::new(),
        data: 0..0,
        skip_user: None,
        presence: Some(tag),
    }
}

/// A `publish` argument checked (`grant` decides the channel claim) and
/// encoded into its one shared frame (with its id as the recovery offset
/// when `offset`); also the event's id (`next_id`, taken once the argument
/// passed).
pub fn publication(
    arg: Option<&RawValue>,
    from: &Member,
    ts: u64,
    offset: bool,
    att: Vec<Bytes>,
    grant: impl FnOnce(&str) -> Result<(), Fail>,
    next_id: impl FnOnce() -> String,
) -> Result<(Publication, String), Fail> {
    let f = fields(arg)?;
    let channel = text_field(f.channel, "channel")?;
    rules::validate_channel(&channel)?;
    let event = text_field(f.event, "event")?;
    rules::validate_event_name(&event)?;
    let echo = args::flag(f.echo, true).ok_or_else(|| bad("\"echo\" must be a boolean"))?;
    grant(&channel)?;
    let id = next_id();
    let ev = frame::Event {
        id: &id,
        channel: Some(&channel),
        to: None,
        event: &event,
        data: f.data.unwrap_or(RawValue::NULL),
        from: Some(from),
        ts,
        attachments: att.len(),
        offset,
    };
    let (text, data) = frame::realtime_event(&ev);
    let p = Publication {
        channel: (*channel).into(),
        event: (*event).into(),
        obj_end: shards::object_end(&text),
        text,
        attachments: att,
        data,
        skip_user: (!echo).then(|| from.user_id.clone()),
        presence: None,
    };
    Ok((p, id))
}

/// The gateway's whole work for one `publish` before its fan-out: the
/// client's event text (`["publish",{...}]`) parsed and checked, its frame
/// encoded. What `benches/fanout.rs` times as the publish cost.
#[doc(hidden)]
pub fn publish_event_text(
    text: &str,
    from: &Member,
    id: &str,
    ts: u64,
) -> Result<Publication, Fail> {
    let (_name, arg) = parse_args(Some(text))?;
    let (p, _) = publication(
        arg,
        from,
        ts,
        false,
        Vec::new(),
        |_| Ok(()),
        || id.to_string(),
    )?;
    Ok(p)
}

/// The argument of `publish` or `direct`, which must be an object.
pub fn fields(arg: Option<&RawValue>) -> Result<Fields<'_>, Fail> {
    arg.and_then(Fields::parse)
        .ok_or_else(|| bad("the argument must be an object"))
}

pub fn text_field<'a>(field: Option<&'a RawValue>, key: &str) -> Result<Cow<'a, str>, Fail> {
    args::string(field).ok_or_else(|| bad(&format!("\"{key}\" must be a string")))
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use serde_json::Value;
    use shards::{Outbox, SocketKey, SubFilter};

    use super::*;
    use crate::rules::Filter;

    fn member() -> Member {
        Member::new(
            SocketKey { shard: 0, seq: 1 },
            "i-0-1".into(),
            "u".into(),
            None,
            false,
            Rc::new(Outbox::new(1, 1 << 20)),
        )
    }

    #[test]
    fn publish_keeps_data_and_filters_read_it() {
        let data =
            r#"{"order":{"z":[1.50,-0],"a":12345678901234567890123},"n":2,"s":"\u00e9\/\n"}"#;
        let text = format!(r#"["publish",{{"data":{data},"channel":"c","event":"e"}}]"#);
        let p = publish_event_text(&text, &member(), "id1", 7).unwrap();
        assert_eq!(p.data(), data.as_bytes());
        let frame = std::str::from_utf8(&p.text).unwrap();
        assert!(
            frame.contains(&format!(",\"data\":{data},\"from\":")),
            "{frame}"
        );
        let filter = |f: Value| -> Rc<dyn SubFilter> { Rc::new(Filter::parse(&f).unwrap()) };
        let d = shards::Data::new(p.data());
        for (f, ok) in [
            (
                serde_json::json!({"where": {"n": 2, "order.z.0": 1.5}}),
                true,
            ),
            (
                serde_json::json!({"where": {"order.a": 1.2345678901234568e22}}),
                true,
            ),
            (serde_json::json!({"where": {"s": "é/\n"}}), true),
            (serde_json::json!({"where": {"n": 3}}), false),
            (serde_json::json!({"event": "e"}), true),
        ] {
            assert_eq!(filter(f.clone()).matches("e", &d), ok, "{f}");
        }
        // No data: relayed and filtered as null.
        let p = publish_event_text(
            r#"["publish",{"channel":"c","event":"e"}]"#,
            &member(),
            "i",
            1,
        )
        .unwrap();
        assert_eq!(p.data(), b"null");
        assert!(p.text.windows(11).any(|w| w == b"\"data\":null"));
    }

    #[test]
    fn publish_argument_errors() {
        let code = |t: &str| {
            publish_event_text(t, &member(), "i", 1)
                .err()
                .map(|f| f.code)
        };
        use ErrorCode::{BadRequest, InvalidChannel};
        for (t, c) in [
            (r#"["publish"]"#, BadRequest),
            (r#"["publish",null]"#, BadRequest),
            (r#"["publish","c"]"#, BadRequest),
            (r#"["publish",{"channel":42,"event":"e"}]"#, BadRequest),
            (r#"["publish",{"channel":"","event":"e"}]"#, InvalidChannel),
            (
                r#"["publish",{"channel":"\u0007","event":"e"}]"#,
                InvalidChannel,
            ),
            (r#"["publish",{"channel":"c"}]"#, BadRequest),
            (
                r#"["publish",{"channel":"c","event":"connect"}]"#,
                BadRequest,
            ),
            (
                r#"["publish",{"channel":"c","event":"e","echo":1}]"#,
                BadRequest,
            ),
            (
                r#"["publish",{"channel":"c","event":"e","data":}]"#,
                BadRequest,
            ),
            (r#"{"publish":1}"#, BadRequest),
        ] {
            assert_eq!(code(t), Some(c), "{t}");
        }
    }
}

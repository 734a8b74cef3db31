//! Fuzzes the JSON argument shapes of the client events (contract §3) through the gateway's pure
//! validation functions in `socket_gateway::rules`: the channel argument of join/leave/members,
//! subscription topics and filters, event names, and the `channels` claim checks. Input: any
//! bytes; as JSON they are the event's argument, as UTF-8 they are a name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shards::{Member, Outbox, SocketKey, Topic};
use socket_gateway::auth::ChannelGrant;
use socket_gateway::rules::{
    channel_arg, parse_topic, validate_channel, validate_event_name, validate_topic, ErrorCode,
    Filter,
    MAX_CHANNEL_BYTES, MAX_EVENT_BYTES, MAX_FILTER_BYTES, MAX_FILTER_CONDITIONS, MAX_FILTER_EVENTS,
};

fn check_name(s: &str) {
    let ch = validate_channel(s);
    assert_eq!(
        ch.is_ok(),
        !s.is_empty() && s.len() <= MAX_CHANNEL_BYTES && !s.chars().any(char::is_control),
        "validate_channel({s:?})"
    );
    if let Err(f) = &ch {
        assert_eq!(f.code, ErrorCode::InvalidChannel);
    }
    assert_eq!(validate_topic(s).is_ok(), ch.is_ok());
    if let Ok(t) = parse_topic(s) {
        match &t {
            Topic::Exact(n) => {
                assert_eq!(&**n, s);
                assert!(t.matches(s));
            }
            Topic::Prefix(p) => {
                assert_eq!(format!("{p}*"), s);
                assert!(t.matches(&**p));
            }
        }
    }
    if let Ok(()) = validate_event_name(s) {
        assert!(!s.is_empty() && s.len() <= MAX_EVENT_BYTES);
    }
    // the channels claim: a grant made of this pattern
    let grant = ChannelGrant::from_patterns(&[s]);
    let _ = grant.allows_channel(s);
    let _ = grant.allows_topic(s);
    if let Some(prefix) = s.strip_suffix('*') {
        // a grant `p*` allows the topic `p*` and every channel starting with p
        assert!(grant.allows_topic(s), "grant {s:?} allows its own topic");
        assert!(grant.allows_channel(&format!("{prefix}x")));
    } else {
        assert!(grant.allows_channel(s));
    }
}

fn check_arg(v: &Value) {
    // join / leave / members
    match channel_arg(Some(v)) {
        Ok(name) => assert!(validate_channel(&name).is_ok()),
        Err(f) => assert!(matches!(
            f.code,
            ErrorCode::BadRequest | ErrorCode::InvalidChannel
        )),
    }
    // subscribe {"topic","filter"}; a filter is also fuzzed as the whole argument
    if let Ok(f) = Filter::parse(v) {
        // The bounds every accepted filter keeps.
        assert!(f.conditions.len() <= MAX_FILTER_CONDITIONS);
        assert!(f.events.as_ref().map_or(0, Vec::len) <= MAX_FILTER_EVENTS);
        assert!(serde_json::to_string(v).unwrap().len() <= MAX_FILTER_BYTES);
        let _ = f.needs_data();
        let _ = f.matches("e", || v);
        let _ = f.matches("e", || &Value::Null);
        if let Some(events) = &f.events {
            for e in events {
                let _ = f.matches(e, || v);
            }
        }
    }
    if let Value::Object(map) = v {
        if let Some(Value::String(t)) = map.get("topic") {
            let _ = parse_topic(t);
        }
        if let Some(filter) = map.get("filter") {
            if let Ok(f) = Filter::parse(filter) {
                let data = map.get("data").unwrap_or(&Value::Null);
                let _ = f.matches("e", || data);
            }
        }
        for key in ["channel", "event", "to", "subscriptionId"] {
            if let Some(Value::String(s)) = map.get(key) {
                check_name(s);
            }
        }
    }
    if let Value::Array(items) = v {
        for i in items.iter().take(8) {
            let _ = channel_arg(Some(i));
            let _ = Filter::parse(i);
        }
    }
}

/// A publish read from any text: refused, or a frame that is valid JSON whose `data` is a
/// verbatim slice of the text (or `null` when it had none).
fn check_publish(text: &str) {
    use std::rc::Rc;
    let member = Member::new(
        SocketKey { shard: 0, seq: 1 },
        "i-0-1".into(),
        "u".into(),
        None,
        false,
        Rc::new(Outbox::new(1, usize::MAX)),
    );
    if let Ok(p) = socket_gateway::app::publish::publish_event_text(text, &member, "id", 1) {
        let frame = std::str::from_utf8(&p.text).expect("a frame is UTF-8");
        // Syntax only: `data` may hold numbers beyond a double (relayed as sent).
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&frame[2..]).is_ok(),
            "a frame is valid JSON"
        );
        assert!(frame[2..].starts_with("[\"event\","));
        let data = std::str::from_utf8(p.data()).unwrap();
        assert!(data == "null" || text.contains(data), "data is a slice of the text");
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_name(s);
        check_publish(s);
    }
    let _ = channel_arg(None);
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check_arg(&v);
    }
});

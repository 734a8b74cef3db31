//! Validation rules of the client-facing API (docs/protocol.md), as pure functions.
//!
//! This module owns: the error codes and their wire form (`{"code","message"}`), the channel,
//! topic and event-name rules, the parsing of the channel argument of `join`/`leave`/`members`,
//! subscription topics (exact name or prefix pattern ending in `*`) and subscription filters
//! (`{"event": E | [E...], "where": {"dot.path": VALUE}}`). Nothing here panics on client input.

use serde_json::{Map, Value};
use shards::Topic;

/// Longest channel name (and subscription topic), in bytes.
pub const MAX_CHANNEL_BYTES: usize = 200;
/// Longest event name, in bytes.
pub const MAX_EVENT_BYTES: usize = 100;
/// Socket.IO's reserved event names, refused in publish, direct and broadcast.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The error codes a client can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidChannel,
    Forbidden,
    NotFound,
    UnknownSubscription,
    TooLarge,
    RateLimited,
    Unauthorized,
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownSubscription => "unknown_subscription",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A failed request: the `{"code","message"}` of an ack or `error` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    pub code: ErrorCode,
    pub message: String,
}

impl Fail {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Fail {
            code,
            message: msg.into(),
        }
    }

    /// `{"code": C, "message": M}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

fn bad_request(msg: impl Into<String>) -> Fail {
    Fail::new(ErrorCode::BadRequest, msg)
}

/// A `limit` argument (a socket event's number, or a REST query's text
/// parsed): a positive integer, else `bad_request`.
pub fn limit_arg(n: Option<u64>) -> Result<usize, Fail> {
    match n {
        Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(bad_request("\"limit\" must be a positive integer")),
    }
}

/// A channel name is 1..=200 bytes of UTF-8 with no Unicode control character (`Cc`).
pub fn validate_channel(name: &str) -> Result<(), Fail> {
    if name.is_empty() {
        return Err(Fail::new(
            ErrorCode::InvalidChannel,
            "channel name is empty",
        ));
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return Err(Fail::new(
            ErrorCode::InvalidChannel,
            format!("channel name is longer than {MAX_CHANNEL_BYTES} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Fail::new(
            ErrorCode::InvalidChannel,
            "channel name contains a control character",
        ));
    }
    Ok(())
}

/// A subscription topic is a channel name or a prefix pattern ending in `*`. The whole topic,
/// star included, follows the channel-name rules; `*` alone is allowed and matches every channel.
pub fn validate_topic(topic: &str) -> Result<(), Fail> {
    validate_channel(topic)
}

/// An event name is 1..=100 bytes and not one of Socket.IO's reserved names.
pub fn validate_event_name(name: &str) -> Result<(), Fail> {
    if name.is_empty() {
        return Err(bad_request("event name is empty"));
    }
    if name.len() > MAX_EVENT_BYTES {
        return Err(bad_request(format!(
            "event name is longer than {MAX_EVENT_BYTES} bytes"
        )));
    }
    if RESERVED_EVENTS.contains(&name) {
        return Err(bad_request(format!("event name \"{name}\" is reserved")));
    }
    Ok(())
}

/// The channel argument of `join`, `leave` and `members`: a string C or `{"channel": C}`.
/// A missing argument or field, or a wrong JSON type, is `bad_request`; a string breaking the
/// name rules is `invalid_channel`.
pub fn channel_arg(arg: Option<&Value>) -> Result<String, Fail> {
    let name = match arg {
        Some(Value::String(s)) => s,
        Some(Value::Object(map)) => match map.get("channel") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return Err(bad_request("missing field \"channel\"")),
            Some(_) => return Err(bad_request("\"channel\" must be a string")),
        },
        None | Some(Value::Null) => return Err(bad_request("missing channel argument")),
        Some(_) => {
            return Err(bad_request(
                "argument must be a channel name or {\"channel\": name}",
            ))
        }
    };
    validate_channel(name)?;
    Ok(name.clone())
}

/// Validates and splits a subscription topic; a trailing `*` makes it a
/// prefix pattern (`*` alone matches every channel).
pub fn parse_topic(topic: &str) -> Result<Topic, Fail> {
    validate_topic(topic)?;
    Ok(match topic.strip_suffix('*') {
        Some(prefix) => Topic::Prefix(prefix.into()),
        None => Topic::Exact(topic.into()),
    })
}

/// A topic as the client wrote it (`chat:room1` or `chat:*`): the inverse of
/// [`parse_topic`].
pub fn topic_text(topic: &Topic) -> String {
    match topic {
        Topic::Exact(c) => c.to_string(),
        Topic::Prefix(p) => format!("{p}*"),
    }
}

/// A subscription filter. `events: None` matches every event name; every condition must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub events: Option<Vec<String>>,
    /// (path segments, expected value).
    pub conditions: Vec<(Vec<String>, Value)>,
}

impl Filter {
    /// The filter as JSON again (what [`Filter::parse`] reads back).
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(e) = &self.events {
            out.insert("event".into(), Value::from(e.clone()));
        }
        if !self.conditions.is_empty() {
            let w: serde_json::Map<String, Value> = self
                .conditions
                .iter()
                .map(|(path, v)| (path.join("."), v.clone()))
                .collect();
            out.insert("where".into(), Value::Object(w));
        }
        Value::Object(out)
    }

    /// Parses `{"event": E | [E...], "where": {"dot.path": VALUE, ...}}`. Both keys are
    /// optional; anything else (another key, a non-object filter — `null` included —, an empty
    /// event list, an empty path segment) is `bad_request`.
    pub fn parse(v: &Value) -> Result<Filter, Fail> {
        let map = v
            .as_object()
            .ok_or_else(|| bad_request("filter must be an object"))?;
        // Every subscription's filter is held for the socket's life and run
        // on every publish it could match: its size is bounded up front.
        if encoded_len_exceeds(v, MAX_FILTER_BYTES) {
            return Err(bad_request(format!(
                "a filter is at most {MAX_FILTER_BYTES} bytes of JSON"
            )));
        }
        if let Some(key) = map.keys().find(|k| *k != "event" && *k != "where") {
            return Err(bad_request(format!("unknown filter key \"{key}\"")));
        }
        let events = match map.get("event") {
            None => None,
            Some(Value::String(e)) => Some(vec![filter_event(e)?]),
            Some(Value::Array(list)) if list.len() > MAX_FILTER_EVENTS => {
                return Err(bad_request(format!(
                    "a filter names at most {MAX_FILTER_EVENTS} events"
                )))
            }
            Some(Value::Array(list)) if !list.is_empty() => Some(
                list.iter()
                    .map(|e| match e {
                        Value::String(e) => filter_event(e),
                        _ => Err(bad_request("filter \"event\" list must hold strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(bad_request(
                    "filter \"event\" must be a string or a non-empty list of strings",
                ))
            }
        };
        let conditions = match map.get("where") {
            None => Vec::new(),
            Some(Value::Object(conds)) if conds.len() > MAX_FILTER_CONDITIONS => {
                return Err(bad_request(format!(
                    "a filter has at most {MAX_FILTER_CONDITIONS} conditions"
                )))
            }
            Some(Value::Object(conds)) => parse_conditions(conds)?,
            Some(_) => return Err(bad_request("filter \"where\" must be an object")),
        };
        Ok(Filter { events, conditions })
    }

    /// True when matching needs the event's data (the filter has `where` conditions).
    pub fn needs_data(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// True when the event name is accepted and every condition holds in
    /// the event's data. `data` gives it parsed, and is called only when a
    /// condition is to be checked: the publisher's text is parsed for the
    /// filters that read it, never for the others.
    pub fn matches<'v>(&self, event: &str, data: impl FnOnce() -> &'v Value) -> bool {
        if let Some(events) = &self.events {
            if !events.iter().any(|e| e == event) {
                return false;
            }
        }
        if self.conditions.is_empty() {
            return true;
        }
        let data = data();
        self.conditions.iter().all(|(path, expected)| {
            lookup(data, path).is_some_and(|found| json_eq(found, expected))
        })
    }
}

/// Most conditions in one filter's `where`.
pub const MAX_FILTER_CONDITIONS: usize = 32;
/// Most event names in one filter's `event` list.
pub const MAX_FILTER_EVENTS: usize = 32;
/// Largest filter, as compact JSON.
pub const MAX_FILTER_BYTES: usize = 4096;

/// Whether `v` serialises to more than `max` bytes of compact JSON; stops
/// writing as soon as it does, so a huge filter costs no more than `max`.
fn encoded_len_exceeds(v: &Value, max: usize) -> bool {
    struct Counter {
        n: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.max {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter { n: 0, max };
    serde_json::to_writer(&mut c, v).is_err()
}

fn filter_event(e: &str) -> Result<String, Fail> {
    if e.is_empty() || e.len() > MAX_EVENT_BYTES {
        return Err(bad_request(format!(
            "filter event names are 1 to {MAX_EVENT_BYTES} bytes"
        )));
    }
    Ok(e.to_owned())
}

fn parse_conditions(conds: &Map<String, Value>) -> Result<Vec<(Vec<String>, Value)>, Fail> {
    conds
        .iter()
        .map(|(path, value)| {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(bad_request(format!("bad filter path \"{path}\"")));
            }
            Ok((segments, value.clone()))
        })
        .collect()
}

/// Walks `path` into `data`: object keys, and decimal indices into arrays.
fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(data, |cur, seg| match cur {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ErrorCode::{BadRequest, InvalidChannel};

    fn code<T: std::fmt::Debug>(r: Result<T, Fail>) -> ErrorCode {
        r.unwrap_err().code
    }

    /// JSON values separated by `|`.
    fn values(list: &str) -> Vec<Value> {
        list.split('|')
            .map(|v| serde_json::from_str(v).unwrap())
            .collect()
    }

    #[test]
    fn error_codes_and_fail_json() {
        use ErrorCode::*;
        let all = [
            BadRequest,
            InvalidChannel,
            Forbidden,
            NotFound,
            UnknownSubscription,
            TooLarge,
            RateLimited,
            Unauthorized,
            Internal,
        ];
        let names = "bad_request invalid_channel forbidden not_found unknown_subscription \
                     too_large rate_limited unauthorized internal";
        assert!(all.iter().map(|c| c.as_str()).eq(names.split_whitespace()));
        let f = Fail::new(NotFound, "nope");
        assert_eq!(f.to_json(), json!({"code": "not_found", "message": "nope"}));
        assert_eq!(f.to_string(), "not_found: nope");
    }

    #[test]
    fn channel_names() {
        for ok in ["chat:room1", "é", "a b", &"a".repeat(200), &"é".repeat(100)] {
            assert!(validate_channel(ok).is_ok(), "{ok:?}");
        }
        let (long, long_utf8) = ("a".repeat(201), format!("{}a", "é".repeat(100)));
        for bad in [
            "", &long, &long_utf8, "\u{7}", "a\nb", "x\u{0}", "\u{7f}", "a\u{85}",
        ] {
            assert_eq!(code(validate_channel(bad)), InvalidChannel, "{bad:?}");
        }
    }

    #[test]
    fn topics() {
        assert_eq!(parse_topic("chat:a"), Ok(Topic::Exact("chat:a".into())));
        assert_eq!(parse_topic("chat:*"), Ok(Topic::Prefix("chat:".into())));
        assert_eq!(parse_topic("*"), Ok(Topic::Prefix("".into())));
        assert_eq!(code(parse_topic("")), InvalidChannel);
        assert_eq!(code(parse_topic("a\u{7}*")), InvalidChannel);
        assert_eq!(code(validate_topic(&"a".repeat(201))), InvalidChannel);
        assert!(validate_topic(&format!("{}*", "a".repeat(199))).is_ok());
        let p = parse_topic("chat:*").unwrap();
        assert!(p.matches("chat:") && p.matches("chat:room1"));
        assert!(!p.matches("chat") && !p.matches("news:1"));
        assert!(parse_topic("*").unwrap().matches("anything"));
        let e = parse_topic("chat:a").unwrap();
        assert!(e.matches("chat:a") && !e.matches("chat:ab"));
    }

    #[test]
    fn filter_bounds() {
        let conds = |n: usize| {
            let m: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            json!({ "where": m })
        };
        assert!(Filter::parse(&conds(MAX_FILTER_CONDITIONS)).is_ok());
        assert_eq!(
            code(Filter::parse(&conds(MAX_FILTER_CONDITIONS + 1))),
            BadRequest
        );
        let events =
            |n: usize| json!({ "event": (0..n).map(|i| format!("e{i}")).collect::<Vec<_>>() });
        assert!(Filter::parse(&events(MAX_FILTER_EVENTS)).is_ok());
        assert_eq!(
            code(Filter::parse(&events(MAX_FILTER_EVENTS + 1))),
            BadRequest
        );
        // Few conditions, but a big value: bounded by the encoded size.
        let big = |n: usize| json!({ "where": { "a": "x".repeat(n) } });
        let fixed = r#"{"where":{"a":""}}"#.len();
        assert!(Filter::parse(&big(MAX_FILTER_BYTES - fixed)).is_ok());
        assert_eq!(
            code(Filter::parse(&big(MAX_FILTER_BYTES - fixed + 1))),
            BadRequest
        );
        assert_eq!(code(Filter::parse(&big(1 << 20))), BadRequest);
    }

    #[test]
    fn event_names() {
        assert!(validate_event_name("message").is_ok());
        assert!(validate_event_name("Connect").is_ok());
        assert!(validate_event_name(&"e".repeat(100)).is_ok());
        assert_eq!(code(validate_event_name("")), BadRequest);
        assert_eq!(code(validate_event_name(&"e".repeat(101))), BadRequest);
        for r in RESERVED_EVENTS {
            assert_eq!(code(validate_event_name(r)), BadRequest, "{r}");
        }
    }

    #[test]
    fn channel_arguments() {
        assert_eq!(channel_arg(Some(&json!("a"))), Ok("a".to_string()));
        let obj = json!({"channel": "b", "x": 1});
        assert_eq!(channel_arg(Some(&obj)), Ok("b".into()));
        assert_eq!(code(channel_arg(None)), BadRequest);
        let bad = r#"42|null|true|["a"]|{}|{"channel":42}|{"channel":null}|{"chan":"a"}"#;
        for v in values(bad) {
            assert_eq!(code(channel_arg(Some(&v))), BadRequest, "{v}");
        }
        let long = json!("a".repeat(201));
        for v in [json!(""), long, json!("\u{7}"), json!({"channel": ""})] {
            assert_eq!(code(channel_arg(Some(&v))), InvalidChannel, "{v}");
        }
    }

    #[test]
    fn filter_parsing() {
        let f = Filter::parse(&json!({})).unwrap();
        assert_eq!((f.events, f.conditions.len()), (None, 0));
        assert!(!Filter::parse(&json!({"where": {}})).unwrap().needs_data());
        let f = Filter::parse(&json!({"event": "m"})).unwrap();
        assert_eq!(f.events, Some(vec!["m".to_string()]));
        let f = Filter::parse(&json!({"event": ["a", "b"], "where": {"x.y": 1}})).unwrap();
        assert_eq!(f.events, Some(vec!["a".into(), "b".into()]));
        assert_eq!(f.conditions, vec![(vec!["x".into(), "y".into()], json!(1))]);
        assert!(f.needs_data());
        let bad = r#"null|"m"|[]|{"other":1}|{"event":1}|{"event":[]}|{"event":[1]}|{"event":""}
            |{"where":[]}|{"where":"x"}|{"where":{"a..b":1}}|{"where":{"":1}}|{"where":{"a.":1}}"#;
        for v in values(bad) {
            assert_eq!(code(Filter::parse(&v)), BadRequest, "{v}");
        }
    }

    #[test]
    fn filter_matching() {
        let data = json!({"user": {"id": 7, "tags": ["a", {"k": true}]}, "n": 1.0, "s": "x"});
        let m = |f: &str, ev: &str| {
            let f = serde_json::from_str(f).unwrap();
            Filter::parse(&f).unwrap().matches(ev, || &data)
        };
        assert!(m("{}", "any"));
        assert!(m(r#"{"event":"m"}"#, "m") && !m(r#"{"event":"m"}"#, "n"));
        assert!(m(r#"{"event":["a","m"]}"#, "m"));
        assert!(m(r#"{"where":{"user.id":7}}"#, "e"));
        assert!(m(r#"{"where":{"user.id":7.0}}"#, "e"));
        assert!(m(r#"{"where":{"n":1}}"#, "e"));
        assert!(!m(r#"{"where":{"user.id":"7"}}"#, "e"));
        assert!(m(
            r#"{"where":{"user.tags.0":"a","user.tags.1.k":true}}"#,
            "e"
        ));
        assert!(!m(r#"{"where":{"user.tags.2":"a"}}"#, "e"));
        assert!(!m(r#"{"where":{"user.tags.x":"a"}}"#, "e"));
        assert!(!m(r#"{"where":{"s.len":1}}"#, "e"));
        assert!(!m(r#"{"where":{"missing":null}}"#, "e"));
        assert!(m(
            r#"{"where":{"user":{"tags":["a",{"k":true}],"id":7}}}"#,
            "e"
        ));
        assert!(!m(r#"{"where":{"user":{"tags":["a",{"k":true}]}}}"#, "e"));
        assert!(m(r#"{"event":"e","where":{"s":"x","user.id":7}}"#, "e"));
        assert!(!m(r#"{"event":"e","where":{"s":"x","user.id":8}}"#, "e"));
        assert!(!m(r#"{"event":"f","where":{"s":"x"}}"#, "e"));
        // Non-object data never satisfies a condition.
        let f = Filter::parse(&json!({"where": {"a": 1}})).unwrap();
        let (null, list) = (json!(null), json!([1]));
        assert!(!f.matches("e", || &null) && !f.matches("e", || &list));
        // The data is read only when a condition needs it.
        let unread = || -> &Value { panic!("data read") };
        assert!(Filter::parse(&json!({"event": "e"}))
            .unwrap()
            .matches("e", unread));
        let g = Filter::parse(&json!({"event": "e", "where": {"a": 1}})).unwrap();
        assert!(!g.matches("x", unread));
        assert!(!json_eq(&json!(-1), &json!(u64::MAX)));
        assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
    }
}

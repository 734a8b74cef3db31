//! Channel history as the gateway offers it: the `history` socket event and
//! `GET /api/socket/channels/:channel/history` ask the channel's home shard
//! (`shards::History`, through the mailbox) and answer the same object,
//! `{"ok":true,"channel":C,"events":[RealtimeEvent...],"offset":TOP}`.
//!
//! Also the shard's side of it: turning history on with its bounds
//! (`--history-size`, the recovery window, `--history-bytes`) and a timer
//! that drops what grew too old on an idle shard and samples its bytes.
//!
//! The events are the RealtimeEvent objects as their recipients got them,
//! `data` byte for byte; an event published with binary attachments is
//! kept without them, each one shown by its Socket.IO placeholder
//! `{"_placeholder":true,"num":N}`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shards::{HistoryBounds, HistoryQuery};

use crate::ctx::ShardCtx;
use crate::frame::json_str;
use crate::rules::{self, ErrorCode, Fail};

/// How often an idle shard drops history past its age and samples its bytes.
const TICK: Duration = Duration::from_secs(1);

/// What the answer adds around its events, at most (its channel and
/// offset aside).
const ENVELOPE: usize = 64;

/// A history question, its arguments checked.
#[derive(Debug, PartialEq)]
pub struct Ask {
    pub channel: Arc<str>,
    pub limit: Option<usize>,
    pub since: Option<String>,
}

/// Turns history on for this shard and starts its timer.
pub fn start(ctx: &Rc<ShardCtx>) {
    let cfg = &ctx.cfg;
    if cfg.history_size == 0 {
        return;
    }
    ctx.shard.enable_history(HistoryBounds {
        size: cfg.history_size,
        max_age: cfg.recovery_window,
        max_bytes: cfg.history_bytes,
    });
    let weak = Rc::downgrade(ctx);
    shards::rt::spawn_local(async move {
        loop {
            shards::rt::sleep(TICK).await;
            let Some(ctx) = weak.upgrade() else { return };
            ctx.shard.trim_history();
            let (bytes, events) = ctx.shard.history_size();
            ctx.metrics.history_state(bytes, events);
        }
    })
    .detach();
}

/// The `history` event's argument: a channel name, or
/// `{"channel":C,"limit"?:N,"since"?:OFFSET}` (`null` is the same as
/// leaving a field out).
pub fn event_arg(arg: Option<&Value>) -> Result<Ask, Fail> {
    let channel: Arc<str> = rules::channel_arg(arg)?.into();
    let Some(Value::Object(map)) = arg else {
        return Ok(Ask {
            channel,
            limit: None,
            since: None,
        });
    };
    let limit = match map.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(rules::limit_arg(v.as_u64())?),
    };
    let since = match map.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(crate::app::publish::bad(
                "\"since\" must be a string (an event id)",
            ))
        }
    };
    Ok(Ask {
        channel,
        limit,
        since,
    })
}

/// The REST route's channel segment (percent-decoded by the caller) and
/// its `limit` and `since` query parameters (an empty `limit` is none).
pub fn rest_arg(channel: &str, limit: Option<&str>, since: Option<&str>) -> Result<Ask, Fail> {
    rules::validate_channel(channel)?;
    let limit = match limit {
        None | Some("") => None,
        Some(l) => Some(rules::limit_arg(l.parse().ok())?),
    };
    Ok(Ask {
        channel: channel.into(),
        limit,
        since: since.map(str::to_string),
    })
}

/// With a cluster (and recovery on, which keeps each channel's stream in
/// Redis), the channel's history as Redis keeps it: every instance's
/// publishes. `None` without one, or when Redis does not answer (then this
/// instance's own history is used).
async fn cluster_history(
    ctx: &ShardCtx,
    channel: &Arc<str>,
    q: &HistoryQuery,
) -> Option<shards::HistoryPage> {
    let c = ctx.cluster.as_ref()?;
    if !ctx.cfg.recovery() || ctx.cfg.history_size == 0 {
        return None;
    }
    let ask = crate::cluster::Query::History {
        channel: channel.clone(),
        max_age_ms: ctx.cfg.recovery_window.as_millis() as u64,
    };
    let crate::cluster::Reply::History(events) = c.ask(ask).await? else {
        return None;
    };
    let objects: Vec<bytes::Bytes> = events
        .iter()
        .map(|p| p.text.slice(p.object_range()))
        .collect();
    // In stream order: a publish is acknowledged only once its stream has
    // it (`ClusterLink::flushed`), so this is the order of the acks.
    let kept: Vec<(&[u8], &bytes::Bytes)> = objects
        .iter()
        .filter_map(|o| Some((shards::object_id(o)?, o)))
        .collect();
    let from = kept.len().saturating_sub(ctx.cfg.history_size);
    Some(shards::select(&kept[from..], q))
}

/// Asks the channel's home shard and encodes the answer. `limit` is capped
/// at `--history-size`; the events stop before the answer would pass
/// `--max-payload` (the oldest of those asked for go first, so asking
/// again `since` the last one gives the rest).
pub async fn answer(ctx: &ShardCtx, ask: Ask) -> Result<String, Fail> {
    let cfg = &ctx.cfg;
    let channel = json_str(&ask.channel);
    let budget = cfg.max_payload.saturating_sub(ENVELOPE + channel.len());
    let query = HistoryQuery {
        limit: ask.limit.map(|l| l.min(cfg.history_size)),
        since: ask.since,
        max_bytes: budget,
    };
    let page =
        match cluster_history(ctx, &ask.channel, &query).await {
            Some(page) => page,
            None => ctx.shard.history(ask.channel, query).await.ok_or_else(|| {
                Fail::new(ErrorCode::Internal, "the channel's shard did not answer")
            })?,
        };
    let top = json_str(&String::from_utf8_lossy(&page.top));
    let size: usize = page.events.iter().map(|e| e.len() + 1).sum();
    let mut out = String::with_capacity(ENVELOPE + channel.len() + top.len() + size);
    out.push_str("{\"ok\":true,\"channel\":");
    out.push_str(&channel);
    out.push_str(",\"events\":[");
    let mut first = true;
    for e in &page.events {
        // Objects are the gateway's own UTF-8 frames; anything else is skipped.
        let Ok(e) = std::str::from_utf8(e) else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(e);
    }
    out.push_str("],\"offset\":");
    out.push_str(&top);
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(arg: Value) -> Option<ErrorCode> {
        event_arg(Some(&arg)).err().map(|f| f.code)
    }

    #[test]
    fn event_arguments() {
        let a = event_arg(Some(&json!({"channel": "c", "limit": 5, "since": "x"}))).unwrap();
        assert_eq!(
            a,
            Ask {
                channel: "c".into(),
                limit: Some(5),
                since: Some("x".into())
            }
        );
        let a = event_arg(Some(&json!("c"))).unwrap();
        assert_eq!((a.limit, a.since), (None, None));
        let a = event_arg(Some(&json!({"channel": "c", "limit": null, "since": null}))).unwrap();
        assert_eq!((a.limit, a.since), (None, None));
        use ErrorCode::{BadRequest, InvalidChannel};
        for (arg, want) in [
            (json!({"channel": "c", "limit": 0}), BadRequest),
            (json!({"channel": "c", "limit": -1}), BadRequest),
            (json!({"channel": "c", "limit": 2.5}), BadRequest),
            (json!({"channel": "c", "limit": "5"}), BadRequest),
            (json!({"channel": "c", "since": 5}), BadRequest),
            (json!({"channel": 5}), BadRequest),
            (json!({"limit": 5}), BadRequest),
            (json!(null), BadRequest),
            (json!([1]), BadRequest),
            (json!({"channel": ""}), InvalidChannel),
        ] {
            assert_eq!(code(arg.clone()), Some(want), "{arg}");
        }
    }

    #[test]
    fn rest_arguments() {
        let a = rest_arg("c", Some("3"), Some("")).unwrap();
        assert_eq!((a.limit, a.since.as_deref()), (Some(3), Some("")));
        assert_eq!(rest_arg("c", Some(""), None).unwrap().limit, None);
        for l in ["0", "-1", "x", "1.5"] {
            let e = rest_arg("c", Some(l), None).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{l}");
        }
        let e = rest_arg(&"x".repeat(201), None, None).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidChannel);
    }
}

//! The handlers of the REST routes (docs/protocol.md) and `/metrics`. Each one
//! answers from the shard that accepted the request; views of other shards
//! and instances come from `crate::views`, `/metrics` from this instance only.

use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use percent_encoding::percent_decode_str;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::app::{history, members, moderation, views};
use crate::args::{self, Fields};
use crate::ctx::ShardCtx;
use crate::edge::rest::error::ApiError;
use crate::frame::json_str;
use crate::http::{Reply, Request};
use crate::metrics::{self, InstanceView};
use crate::rules::{ErrorCode, Fail};

/// `GET /api/socket/channels[?prefix=P][&limit=N]`: channels sorted by name;
/// `total` counts every match, `channels` holds the first `limit` of them.
pub async fn channels(ctx: &Rc<ShardCtx>, req: &Request) -> Result<Reply, ApiError> {
    let prefix = req.query_param("prefix").unwrap_or_default();
    let limit = match req.query_param("limit") {
        None => usize::MAX,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("\"limit\" must be a non-negative integer"))?,
    };
    let mut all = views::channels(ctx).await;
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let matching = all.iter().filter(|(c, _)| c.starts_with(&*prefix));
    let mut out = String::with_capacity(64 + all.len().min(limit) * 40);
    out.push_str("{\"channels\":[");
    let mut total = 0usize;
    for (name, n) in matching {
        if total < limit {
            if total > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"name\":{},\"members\":{n}}}", json_str(name));
        }
        total += 1;
    }
    let _ = write!(out, "],\"total\":{total}}}");
    Ok(Reply::json(200, out))
}

/// `GET /api/socket/channels/:channel/members[?limit=N][&after=SOCKET_ID]`:
/// a page of the members, as the `members` socket event gives it; the
/// segment is percent-decoded (`chat%3Aroom1` is `chat:room1`).
pub async fn members(ctx: &Rc<ShardCtx>, raw: &str, req: &Request) -> Result<Reply, ApiError> {
    let name = decode_channel(raw)?;
    let limit = req.query_param("limit");
    let after = req.query_param("after");
    let ask = members::rest_arg(&name, limit.as_deref(), after.as_deref())?;
    let fields = members::fields(ctx, &ask).await;
    Ok(Reply::json(200, format!("{{{fields}}}")))
}

/// `GET /api/socket/channels/:channel/history[?limit=N][&since=ID]`: the
/// object the `history` socket event acks, for any channel.
pub async fn history(ctx: &Rc<ShardCtx>, raw: &str, req: &Request) -> Result<Reply, ApiError> {
    let name = decode_channel(raw)?;
    let limit = req.query_param("limit");
    let since = req.query_param("since");
    let ask = history::rest_arg(&name, limit.as_deref(), since.as_deref())?;
    Ok(Reply::json(200, history::answer(ctx, ask).await?))
}

/// A channel segment of a path, percent-decoded (`chat%3Aroom1` is
/// `chat:room1`).
fn decode_channel(raw: &str) -> Result<std::borrow::Cow<'_, str>, Fail> {
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Fail::new(ErrorCode::InvalidChannel, "channel name is not UTF-8"))
}

/// `GET /api/socket/connections`.
pub async fn connections(ctx: &Rc<ShardCtx>) -> Result<Reply, ApiError> {
    let instances = views::connections(ctx).await;
    let total: usize = instances.iter().flat_map(|(_, shards)| shards).sum();
    let list: Vec<Value> = instances
        .iter()
        .map(|(id, shards)| {
            serde_json::json!({
                "id": id,
                "connections": shards.iter().sum::<usize>(),
                "shards": shards,
            })
        })
        .collect();
    let body = serde_json::json!({"connections": total, "instances": list});
    Ok(Reply::json(200, body.to_string()))
}

/// `POST /api/socket/broadcast` with `{"channel","event","data"}` → 202.
pub async fn broadcast(ctx: &Rc<ShardCtx>, req: &Request, body: &[u8]) -> Result<Reply, ApiError> {
    if !is_json(req.content_type.as_deref()) {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    // `data` is relayed as the text of this body, never re-encoded.
    let raw: &RawValue = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let obj = Fields::parse(raw)
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let field = |v: Option<&RawValue>, k: &str| {
        args::string(v)
            .map(|s| s.into_owned())
            .ok_or_else(|| ApiError::bad_request(format!("\"{k}\" must be a string")))
    };
    let channel = field(obj.channel, "channel")?;
    let event = field(obj.event, "event")?;
    let data = obj.data.unwrap_or(RawValue::NULL);
    let id = crate::app::publish::broadcast(&ctx.shard, &channel, &event, data).await?;
    if let Some(c) = ctx.cluster.as_ref().filter(|_| ctx.cfg.recovery()) {
        // Accepted once its channel's stream holds it (see `flushed`).
        c.flushed().await;
    }
    Ok(Reply::json(
        202,
        format!("{{\"ok\":true,\"id\":{}}}", json_str(&id)),
    ))
}

/// Longest moderation `reason`, in characters.
const MAX_REASON: usize = 256;

/// A moderation request's `reason` and `reconnect`: from the query string,
/// or (for a POST) the JSON body's fields, which win.
fn moderation_options(
    req: &Request,
    body: &[u8],
    default_reason: &str,
) -> Result<(String, bool), ApiError> {
    let mut reason = req.query_param("reason").map(|r| r.into_owned());
    let mut reconnect = match req.query_param("reconnect").as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::bad_request("\"reconnect\" must be true or false")),
    };
    if !body.is_empty() {
        if !is_json(req.content_type.as_deref()) {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        match obj.get("reason") {
            None | Some(Value::Null) => {}
            Some(Value::String(r)) => reason = Some(r.clone()),
            Some(_) => return Err(ApiError::bad_request("\"reason\" must be a string")),
        }
        match obj.get("reconnect") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => reconnect = *b,
            Some(_) => return Err(ApiError::bad_request("\"reconnect\" must be a boolean")),
        }
    }
    let reason = reason.unwrap_or_else(|| default_reason.to_string());
    if reason.chars().count() > MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "\"reason\" is longer than {MAX_REASON} characters"
        )));
    }
    Ok((reason, reconnect))
}

fn decode_segment(raw: &str, what: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request(format!("the {what} is not UTF-8")))
}

/// `DELETE /api/socket/connections/:socketId[?reason=R][&reconnect=true]`:
/// disconnects the socket, on whichever instance holds it.
pub async fn disconnect_socket(
    ctx: &Rc<ShardCtx>,
    raw: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    let id = decode_segment(raw, "socket id")?;
    let (reason, reconnect) = moderation_options(req, &[], "disconnected by an administrator")?;
    if !moderation::disconnect_socket(ctx, &id, reason, reconnect).await {
        return Err(ApiError::new(
            404,
            "not_found",
            "no such socket is connected",
        ));
    }
    Ok(Reply::json(
        200,
        format!("{{\"ok\":true,\"socketId\":{}}}", json_str(&id)),
    ))
}

/// `POST /api/socket/users/:userId/disconnect` (body, optional:
/// `{"reason","reconnect"}`): every socket of the user, on every instance.
pub async fn disconnect_user(
    ctx: &Rc<ShardCtx>,
    raw: &str,
    req: &Request,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let user = decode_segment(raw, "user id")?;
    let (reason, reconnect) = moderation_options(req, body, "disconnected by an administrator")?;
    let (here, there) = moderation::disconnect_user(ctx, &user, reason, reconnect).await;
    Ok(Reply::json(
        200,
        format!(
            "{{\"ok\":true,\"userId\":{},\"disconnected\":{here},\"otherInstances\":{there}}}",
            json_str(&user)
        ),
    ))
}

/// `DELETE /api/socket/channels/:channel/members/:socketId[?reason=R]`:
/// takes the socket out of the channel as its own `leave` would.
pub async fn remove_member(
    ctx: &Rc<ShardCtx>,
    raw_channel: &str,
    raw_id: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    let channel = decode_channel(raw_channel)?;
    crate::rules::validate_channel(&channel)?;
    let id = decode_segment(raw_id, "socket id")?;
    let (reason, _) = moderation_options(req, &[], "removed by an administrator")?;
    if !moderation::remove_member(ctx, &id, &channel, reason).await {
        return Err(ApiError::new(
            404,
            "not_found",
            "no such socket is a member of the channel",
        ));
    }
    Ok(Reply::json(
        200,
        format!(
            "{{\"ok\":true,\"channel\":{},\"socketId\":{}}}",
            json_str(&channel),
            json_str(&id)
        ),
    ))
}

/// `application/json`, or any `+json` type, with parameters.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// `GET /metrics`: the Prometheus text format, for this instance only
/// (each instance is scraped on its own).
pub async fn metrics(ctx: &Rc<ShardCtx>) -> Reply {
    let shard = &ctx.shard;
    ctx.metrics
        .mailbox_pending(shard.mailbox().pending_requests());
    let per_shard = shard.connections_per_shard().await;
    let local = shard.channel_counts().await;
    let (channels, memberships) = (local.len(), local.iter().map(|(_, n)| n).sum());
    let body = metrics::encode(&InstanceView {
        instance: shard.instance(),
        connections_per_shard: &per_shard,
        sessions: ctx.cfg.open_sessions.load(Ordering::Relaxed),
        pending_sessions: ctx.cfg.pending_sessions.load(Ordering::Relaxed),
        channels,
        memberships,
    });
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body,
        headers: &[("Cache-Control", "no-store")],
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}

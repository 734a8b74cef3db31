//! The operator's HTTP surface on the gateway's port: the REST API
//! (docs/protocol.md), `/metrics` (Prometheus text) and the admin page at `/socket`.
//!
//! [`serve`] is the one entry from the server's router. For every request it
//! (1) matches the route — an unknown one is 404 before anything else; (2)
//! answers a CORS preflight; (3) reads the body (bounded by
//! `--max-payload`; a larger one is read and discarded so the connection
//! stays usable); (4) checks credentials — an admin JWT or `--api-key` —
//! before any of the route's own errors (405, 415, 413, 400); (5) runs the
//! handler (`api.rs`). Every failure is an [`ApiError`], written as
//! `{"error":{"code","message"}}` in one place.
//!
//! Requests are answered by the shard that accepted them. Views of every
//! shard and every instance go through `crate::views` (the mailbox, and the
//! Redis shard when clustered): awaited, so the shard keeps serving its
//! sockets meanwhile.

mod api;
pub mod error;

use std::rc::Rc;

use futures_lite::AsyncReadExt;
use shards::rt::TcpStream;

use crate::ctx::ShardCtx;
use crate::http::{self, Method, Request};
use crate::http::{reply, Reply};
use error::ApiError;

/// Bodies beyond the limit up to this size are read and discarded after a
/// 413 (keeping the connection); beyond it the connection is closed.
const DISCARD_MAX: usize = 8 << 20;

/// The OpenAPI 3 description of the API, served at `/api/socket/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A route of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Channels,
    /// The channel segment as it appears in the path (still encoded).
    Members(String),
    /// The channel segment, still encoded.
    History(String),
    Connections,
    Broadcast,
    /// `DELETE /api/socket/connections/:socketId` (still encoded).
    Connection(String),
    /// `POST /api/socket/users/:userId/disconnect` (still encoded).
    UserDisconnect(String),
    /// `DELETE /api/socket/channels/:channel/members/:socketId` (both still encoded).
    Member(String, String),
    OpenApi,
    Metrics,
    /// `/socket`, `/socket/` and the page's assets.
    Admin(&'static crate::edge::admin::Asset),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        Some(match path {
            "/api/socket/channels" => Route::Channels,
            "/api/socket/connections" => Route::Connections,
            "/api/socket/broadcast" => Route::Broadcast,
            "/api/socket/openapi.json" => Route::OpenApi,
            "/metrics" => Route::Metrics,
            _ => {
                if let Some(id) = path.strip_prefix("/api/socket/connections/") {
                    return (!id.is_empty() && !id.contains('/'))
                        .then(|| Route::Connection(id.to_string()));
                }
                if let Some(rest) = path.strip_prefix("/api/socket/users/") {
                    let user = rest.strip_suffix("/disconnect")?;
                    return (!user.is_empty() && !user.contains('/'))
                        .then(|| Route::UserDisconnect(user.to_string()));
                }
                if let Some(rest) = path.strip_prefix("/api/socket/channels/") {
                    if let Some((ch, id)) = rest.rsplit_once("/members/") {
                        if !ch.is_empty() && !id.is_empty() && !id.contains('/') {
                            return Some(Route::Member(ch.to_string(), id.to_string()));
                        }
                    }
                    if let Some(ch) = rest.strip_suffix("/history") {
                        return Some(Route::History(ch.to_string()));
                    }
                    let ch = rest.strip_suffix("/members")?;
                    return Some(Route::Members(ch.to_string()));
                }
                return crate::edge::admin::asset(path).map(Route::Admin);
            }
        })
    }

    /// The one method the route answers (besides OPTIONS).
    fn method(&self) -> Method {
        match self {
            Route::Broadcast | Route::UserDisconnect(_) => Method::Post,
            Route::Connection(_) | Route::Member(..) => Method::Delete,
            _ => Method::Get,
        }
    }

    fn allow(&self) -> &'static str {
        match self.method() {
            Method::Post => "POST, OPTIONS",
            Method::Delete => "DELETE, OPTIONS",
            _ => "GET, OPTIONS",
        }
    }

    /// Whether the route needs an admin token or the API key.
    fn guarded(&self) -> bool {
        !matches!(self, Route::Metrics | Route::Admin(_))
    }

    /// The route's template, for the `rest_requests_total` label.
    fn name(&self) -> &'static str {
        match self {
            Route::Channels => "/api/socket/channels",
            Route::Members(_) => "/api/socket/channels/:channel/members",
            Route::History(_) => "/api/socket/channels/:channel/history",
            Route::Connections => "/api/socket/connections",
            Route::Broadcast => "/api/socket/broadcast",
            Route::Connection(_) => "/api/socket/connections/:socketId",
            Route::UserDisconnect(_) => "/api/socket/users/:userId/disconnect",
            Route::Member(..) => "/api/socket/channels/:channel/members/:socketId",
            Route::OpenApi => "/api/socket/openapi.json",
            Route::Metrics => "/metrics",
            Route::Admin(_) => "/socket",
        }
    }
}

/// What reading the body gave.
enum Body {
    /// The whole body (at most the limit).
    Complete(Vec<u8>),
    /// Over the limit: read and discarded.
    TooLarge,
    /// Too large to discard: answer and close.
    Unusable,
    /// The client went away.
    Gone,
}

/// Reads this request's body; afterwards `buf` holds only the bytes that
/// follow it (a pipelined next request).
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &Request, limit: usize) -> Body {
    let len = req.content_length.unwrap_or(0);
    let end = req.head_len + len;
    let mut chunk = [0u8; 8192];
    if len <= limit {
        while buf.len() < end {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Body::Gone,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[req.head_len..end].to_vec();
        buf.drain(..end);
        return Body::Complete(body);
    }
    if len > DISCARD_MAX {
        return Body::Unusable;
    }
    let mut missing = end.saturating_sub(buf.len());
    buf.drain(..end.min(buf.len()));
    while missing > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Body::Gone,
            Ok(n) if n > missing => {
                buf.extend_from_slice(&chunk[missing..n]);
                missing = 0;
            }
            Ok(n) => missing -= n,
        }
    }
    Body::TooLarge
}

/// Serves one request routed here by the server: `/api/…`, `/socket…` and
/// `/metrics`.
pub async fn serve(
    ctx: &Rc<ShardCtx>,
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    let cors = ctx.cfg.cors_allow(req.origin.as_deref());
    let route = Route::parse(&req.path);
    let body = read_body(&mut stream, &mut buf, &req, ctx.cfg.max_payload).await;
    if matches!(body, Body::Gone) {
        return None;
    }
    let keep_alive = req.keep_alive && !matches!(body, Body::Unusable);
    let answer = match &route {
        None => Err(ApiError::new(404, "not_found", "no such route")),
        Some(_) if req.method == Method::Options => {
            let r = route.as_ref().expect("matched");
            let headers = [
                ("Access-Control-Allow-Methods", r.allow()),
                (
                    "Access-Control-Allow-Headers",
                    "Authorization, Content-Type",
                ),
                ("Access-Control-Max-Age", "600"),
                ("Allow", r.allow()),
            ];
            let resp = http::response(204, "", b"", cors.as_deref(), keep_alive, &headers);
            return reply(stream, buf, 0, keep_alive, resp).await;
        }
        Some(r) => handle(ctx, r, &req, body).await,
    };
    let (status, resp) = match answer {
        Ok(a) => {
            let resp = http::response(
                a.status,
                a.content_type,
                &a.body,
                cors.as_deref(),
                keep_alive,
                a.headers,
            );
            (a.status, resp)
        }
        Err(e) => {
            let allow = route.as_ref().map_or("", Route::allow);
            let mut headers = Vec::new();
            if e.status == 405 {
                headers.push(("Allow", allow));
            }
            if e.status == 401 {
                headers.push(("WWW-Authenticate", "Bearer"));
            }
            let resp = http::response(
                e.status,
                "application/json",
                &e.body(),
                cors.as_deref(),
                keep_alive,
                &headers,
            );
            (e.status, resp)
        }
    };
    if let Some(r) = route.as_ref().filter(|r| r.guarded()) {
        ctx.metrics.rest_request(r.name(), status);
    }
    reply(stream, buf, 0, keep_alive, resp).await
}

/// Credentials, then the route's own checks, then the handler.
async fn handle(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    req: &Request,
    body: Body,
) -> Result<Reply, ApiError> {
    if route.guarded() {
        authorize(ctx, req)?;
    }
    if req.method != route.method() {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            format!("{} answers {}", route.name(), route.allow()),
        ));
    }
    let body = match body {
        Body::Complete(b) => b,
        Body::TooLarge => {
            return Err(ApiError::new(
                413,
                "too_large",
                format!("the body is over {} bytes", ctx.cfg.max_payload),
            ))
        }
        Body::Unusable | Body::Gone => {
            return Err(ApiError::new(413, "too_large", "the body is too large"))
        }
    };
    match route {
        Route::Channels => api::channels(ctx, req).await,
        Route::Members(raw) => api::members(ctx, raw, req).await,
        Route::History(raw) => api::history(ctx, raw, req).await,
        Route::Connections => api::connections(ctx).await,
        Route::Broadcast => api::broadcast(ctx, req, &body).await,
        Route::Connection(id) => api::disconnect_socket(ctx, id, req).await,
        Route::UserDisconnect(user) => api::disconnect_user(ctx, user, req, &body).await,
        Route::Member(ch, id) => api::remove_member(ctx, ch, id, req).await,
        Route::OpenApi => Ok(Reply::json(200, OPENAPI)),
        Route::Metrics => Ok(api::metrics(ctx).await),
        Route::Admin(asset) => Ok(crate::edge::admin::reply(asset)),
    }
}

/// An admin JWT (`"role":"admin"`) or the `--api-key`, as a Bearer token.
fn authorize(ctx: &ShardCtx, req: &Request) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(401, "unauthorized", m);
    let token = req
        .bearer()
        .ok_or_else(|| unauthorized("send Authorization: Bearer <admin token or API key>"))?;
    if let Some(key) = &ctx.cfg.api_key {
        if constant_time_eq(key.as_bytes(), token.as_bytes()) {
            return Ok(());
        }
    }
    let Some(verifier) = ctx.cfg.verifier.as_ref() else {
        return Err(unauthorized("not the API key"));
    };
    match verifier.verify(token) {
        Ok(c) if c.admin => Ok(()),
        Ok(_) => Err(unauthorized("the token lacks \"role\":\"admin\"")),
        Err(r) => Err(unauthorized(&format!("token refused: {}", r.as_str()))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/api/socket/channels"), Some(Route::Channels));
        assert_eq!(
            Route::parse("/api/socket/channels/chat%3Aroom1/members"),
            Some(Route::Members("chat%3Aroom1".into()))
        );
        assert_eq!(
            Route::parse("/api/socket/channels/a/b/members"),
            Some(Route::Members("a/b".into()))
        );
        assert_eq!(
            Route::parse("/api/socket/channels/chat%3Aroom1/history"),
            Some(Route::History("chat%3Aroom1".into()))
        );
        assert_eq!(Route::parse("/api/socket/channels/x"), None);
        assert_eq!(Route::parse("/api/socket/nope"), None);
        assert!(matches!(Route::parse("/socket"), Some(Route::Admin(_))));
        assert_eq!(Route::parse("/socket/nope.js"), None);
        assert_eq!(Route::Broadcast.allow(), "POST, OPTIONS");
        assert_eq!(
            Route::parse("/api/socket/connections/gw-1.ns-0-00000000000000ff"),
            Some(Route::Connection("gw-1.ns-0-00000000000000ff".into()))
        );
        assert_eq!(Route::parse("/api/socket/connections/a/b"), None);
        assert_eq!(
            Route::parse("/api/socket/users/u%2F1/disconnect"),
            Some(Route::UserDisconnect("u%2F1".into()))
        );
        assert_eq!(Route::parse("/api/socket/users/u1"), None);
        assert_eq!(
            Route::parse("/api/socket/channels/chat%3A1/members/i-0-00000000000000ff"),
            Some(Route::Member(
                "chat%3A1".into(),
                "i-0-00000000000000ff".into()
            ))
        );
        assert_eq!(Route::Connection("x".into()).allow(), "DELETE, OPTIONS");
    }

    #[test]
    fn openapi_is_json() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

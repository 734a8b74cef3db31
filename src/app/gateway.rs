//! The gateway application on the Socket.IO layer ([`Gateway`], an
//! [`App`]): authenticates a CONNECT on namespace `/`, then turns each
//! client event (join, leave, publish, direct, subscribe, unsubscribe,
//! members, history, refresh) into shard operations and answers with an ack
//! or an `error` event.
//!
//! A publish is checked and encoded exactly once (`publish.rs`), then handed
//! to the shard, which shares those bytes with every recipient.
//!
//! Over 600 lines because every client event is answered here, one short
//! function each, after the CONNECT path (`connect` and the per-user
//! connection slots).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use proto::socketio::PacketType as Sio;
use serde_json::value::RawValue;
use serde_json::Value;
use shards::{now_ms, DirectSent, Member, SocketKey, SubFilter};

use crate::app::publish::{bad, bad_event, fields, parse_args, publication, text_field};
use crate::app::socket::{disconnect, joined, left, new_socket, GwSocket};
use crate::auth::{pick_token, Refusal};
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::frame;
use crate::rules::{self, ErrorCode, Fail, Filter};
use crate::sio::{self, App, Refused};

/// The gateway as the Socket.IO layer's application (one per shard).
pub struct Gateway {
    held: Rc<crate::app::recovery::Held>,
}

impl Gateway {
    pub fn new(ctx: &Rc<crate::ctx::ShardCtx>) -> Rc<Self> {
        let gw = Rc::new(Gateway {
            held: Rc::default(),
        });
        crate::app::recovery::start(ctx, &gw.held);
        crate::app::counts::start(ctx);
        crate::app::history::start(ctx);
        crate::app::moderation::start(ctx);
        gw
    }
}

impl App for Gateway {
    type Socket = Rc<GwSocket>;

    async fn connect(
        &self,
        s: &Rc<Session>,
        nsp: &str,
        auth: Option<&Value>,
    ) -> Result<Rc<GwSocket>, Refused> {
        if nsp != "/" {
            return Err(Refused::invalid_namespace());
        }
        connect(self, s, auth).await.map_err(|reason| {
            s.ctx.metrics.auth_refused(reason);
            Refused(format!(
                "{{\"message\":\"unauthorized\",\"data\":{{\"reason\":\"{}\"}}}}",
                reason.as_str()
            ))
        })
    }

    fn socket_id(&self, g: &Rc<GwSocket>) -> String {
        g.member.socket_id.to_string()
    }

    fn pid(&self, g: &Rc<GwSocket>) -> Option<String> {
        (g.secret() != 0).then(|| crate::app::recovery::pid(g))
    }

    fn on_connected(
        self: &Rc<Self>,
        s: &Rc<Session>,
        _nsp: &str,
        g: &Rc<GwSocket>,
        _writes: u64,
        _auth: Option<Value>,
    ) {
        crate::app::recovery::resume(s, g);
        crate::app::moderation::registry().connected(s, g);
    }

    async fn on_event(
        &self,
        s: &Rc<Session>,
        _nsp: &str,
        g: &Rc<GwSocket>,
        ack: Option<u64>,
        data: Option<&str>,
        att: Vec<Bytes>,
    ) {
        on_event(s, g, ack, data, att).await
    }

    async fn on_disconnect(
        &self,
        s: &Rc<Session>,
        g: &Rc<GwSocket>,
        reason: Option<shards::CloseReason>,
    ) {
        crate::app::moderation::registry().gone(s, g);
        release_user_slot(&s.ctx, &g.member.user_id);
        if !crate::app::recovery::hold(&self.held, s, g, reason) {
            disconnect(&s.ctx, g).await;
            crate::app::recovery::forget(&s.ctx, g).await;
        }
    }

    fn expired(&self, g: &Rc<GwSocket>, now_secs: u64) -> bool {
        g.expired(now_secs)
    }
}

/// Takes one of the user's `--max-connections-per-user` slots: on this
/// instance, then (with Redis) in the cluster, where the sockets of the user
/// on every live instance count. Two instances taking a user's last slot at
/// the same moment may both get it; without Redis the limit is this
/// instance's.
async fn take_user_slot(ctx: &Rc<ShardCtx>, user: &str) -> Result<(), Refusal> {
    let n = ctx
        .cfg
        .take_user_slot(user)
        .ok_or(Refusal::TooManyConnections)?;
    let Some(c) = ctx.cluster.as_ref().filter(|_| n > 0) else {
        return Ok(());
    };
    let user: Arc<str> = user.into();
    c.user_count(&user, n);
    if let Some(total) = crate::app::views::user_count(c, &user).await {
        if total > ctx.cfg.max_connections_per_user {
            release_user_slot(ctx, &user);
            return Err(Refusal::TooManyConnections);
        }
    }
    Ok(())
}

/// Gives back a slot [`take_user_slot`] took, in the cluster's count too.
fn release_user_slot(ctx: &ShardCtx, user: &Arc<str>) {
    let left = ctx.cfg.release_user_slot(user);
    if ctx.cfg.max_connections_per_user > 0 {
        if let Some(c) = &ctx.cluster {
            c.user_count(user, left);
        }
    }
}

/// Checks the CONNECT's token (auth payload, then the handshake's Bearer
/// header, then its `token` query); then recovers the socket its `pid`
/// names, or registers a new one on this shard.
async fn connect(
    gw: &Gateway,
    s: &Rc<Session>,
    auth: Option<&Value>,
) -> Result<Rc<GwSocket>, Refusal> {
    let verifier = s.ctx.cfg.verifier.as_ref().ok_or(Refusal::MissingToken)?;
    let hs = s.handshake.as_deref();
    let bearer = hs.and_then(|h| h.bearer.as_deref());
    let token = pick_token(auth, bearer, hs.and_then(|h| h.query_token.as_deref()))
        .ok_or(Refusal::MissingToken)?;
    let claims = verifier.verify(token)?;
    // Counted from here until `on_disconnect` (held for recovery or not):
    // nothing below refuses the CONNECT.
    take_user_slot(&s.ctx, &claims.sub).await?;
    let recover =
        s.ctx.cfg.recovery() && auth.and_then(|a| a.get("recover")) != Some(&Value::Bool(false));
    let claims = if recover {
        match crate::app::recovery::recover(&gw.held, s, auth, claims).await {
            Ok(g) => return Ok(g),
            Err(claims) => claims,
        }
    } else {
        claims
    };
    let shard = &s.ctx.shard;
    let key = shard.next_key();
    let member = Rc::new(Member::new(
        key,
        key.wire(shard.instance()).into(),
        claims.sub.as_str().into(),
        claims.info.as_ref().map(|i| i.to_string().into()),
        recover,
        s.outbox.clone(),
    ));
    shard.register(member.clone());
    let secret = if recover {
        rand::random::<u128>().max(1)
    } else {
        0
    };
    let g = new_socket(
        member,
        claims,
        secret,
        shard.log_pos(),
        verifier.leeway_secs(),
    );
    crate::app::recovery::checkpoint(&s.ctx, &g);
    Ok(g)
}

/// One client event: parse `[name, arg]`, run it, answer.
pub async fn on_event(
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    ack: Option<u64>,
    data: Option<&str>,
    att: Vec<Bytes>,
) {
    s.ctx.metrics.event_in();
    let limit = s.ctx.cfg.max_events_per_sec;
    let result = if limit > 0 && !g.admit(limit) {
        let refused = {
            let mut more = g.more_mut();
            more.refused += 1;
            more.refused
        };
        if refused > limit {
            // A second's worth of refused events in a row: not a burst.
            tracing::info!(socket = %g.member.socket_id, "disconnected: rate_limited");
            s.disconnect_all(shards::CloseReason::RateLimited);
            return;
        }
        Err(Fail::new(
            ErrorCode::RateLimited,
            format!("more than {limit} events per second"),
        ))
    } else {
        if let Some(mut more) = g.more_mut_if_any() {
            more.refused = 0;
        }
        match parse_args(data) {
            Ok((name, arg)) => match &*name {
                "publish" => publish(s, g, arg, att).await.map(Some),
                "direct" => direct(s, g, ack, arg, att).await,
                _ => match arg.map(|a| serde_json::from_str(a.get())).transpose() {
                    Ok(arg) => run(s, g, &name, arg).await.map(Some),
                    Err(_) => Err(bad_event()),
                },
            },
            Err(f) => Err(f),
        }
    };
    match result {
        Ok(Some(ok)) => answer(s, ack, Ok(ok)),
        // A direct message for another shard: answered when that shard has.
        Ok(None) => {}
        Err(f) => answer(s, ack, Err(f)),
    }
}

/// Acks an event (when the client asked for an ack), or reports a failure
/// as an `error` event (when it did not).
fn answer(s: &Session, ack: Option<u64>, result: Result<String, Fail>) {
    let body = match result {
        Ok(_) if ack.is_none() => return,
        Ok(ok) => ok,
        Err(f) => {
            let err = f.to_json();
            if ack.is_none() {
                let text = format!("[\"error\",{err}]");
                sio::send(s, Sio::Event, "/", None, Some(&text));
                return;
            }
            format!("{{\"ok\":false,\"error\":{err}}}")
        }
    };
    sio::send(s, Sio::Ack, "/", ack, Some(&format!("[{body}]")));
}

fn str_field<'a>(arg: &'a Value, key: &str) -> Result<&'a str, Fail> {
    arg.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("\"{key}\" must be a string")))
}

/// Runs one event other than `publish` and `direct` (which read their
/// argument's text themselves); `Ok` is the success ack's JSON.
async fn run(
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    name: &str,
    arg: Option<Value>,
) -> Result<String, Fail> {
    match name {
        "join" | "leave" if !joins_admitted(s, g) => {
            let n = s.ctx.cfg.max_joins_per_sec;
            Err(Fail::new(
                ErrorCode::RateLimited,
                format!("more than {n} joins and leaves per second (--max-joins-per-sec)"),
            ))
        }
        "join" => join(s, g, arg.as_ref()).await,
        "leave" => leave(s, g, arg.as_ref()).await,
        "subscribe" => subscribe(s, g, object(arg)?).await,
        "unsubscribe" => unsubscribe(s, g, object(arg)?).await,
        "members" => members(s, g, arg.as_ref()).await,
        "history" => history(s, g, arg.as_ref()).await,
        "refresh" => refresh(s, g, object(arg)?).await,
        _ => Err(bad(&format!(
            "unknown event \"{}\"",
            name.chars().take(100).collect::<String>()
        ))),
    }
}

fn joins_admitted(s: &Session, g: &GwSocket) -> bool {
    let n = s.ctx.cfg.max_joins_per_sec;
    n == 0 || g.admit_join(n)
}

fn object(arg: Option<Value>) -> Result<Value, Fail> {
    match arg {
        Some(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad("the argument must be an object")),
    }
}

fn check_grant(g: &GwSocket, channel: &str) -> Result<(), Fail> {
    match &*g.grant() {
        Some(grant) if !grant.allows_channel(channel) => Err(Fail::new(
            ErrorCode::Forbidden,
            format!("token does not allow channel {channel:?}"),
        )),
        _ => Ok(()),
    }
}

async fn join(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Option<&Value>) -> Result<String, Fail> {
    let name = rules::channel_arg(arg)?;
    check_grant(g, &name)?;
    let max = s.ctx.cfg.max_channels_per_socket;
    if g.channels.borrow().len() >= max && !g.channels.borrow().iter().any(|c| **c == *name) {
        let msg = format!("a socket may be in at most {max} channels (--max-channels-per-socket)");
        return Err(Fail::new(ErrorCode::Forbidden, msg));
    }
    let shard = &s.ctx.shard;
    let ch: Arc<str> = name.into();
    let mut counted = None;
    if shard.join(&ch, &g.member).await {
        g.channels.borrow_mut().push(ch.clone());
        crate::app::recovery::checkpoint(&s.ctx, g);
        counted = joined(&s.ctx, g, &ch).await;
    }
    // Counted once: presence of a large channel needed it too.
    let n = match counted {
        Some(n) => n,
        None => crate::app::views::member_count(&s.ctx, &ch).await,
    };
    Ok(format!(
        "{{\"ok\":true,\"channel\":{},\"members\":{n}}}",
        frame::json_str(&ch)
    ))
}

async fn leave(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Option<&Value>) -> Result<String, Fail> {
    let name = rules::channel_arg(arg)?;
    let shard = &s.ctx.shard;
    if shard.leave(&name, g.member.key).await {
        g.channels.borrow_mut().retain(|c| **c != *name);
        crate::app::recovery::checkpoint(&s.ctx, g);
        left(&s.ctx, g, &name.as_str().into()).await;
    }
    Ok(format!(
        "{{\"ok\":true,\"channel\":{}}}",
        frame::json_str(&name)
    ))
}

async fn publish(
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    arg: Option<&RawValue>,
    att: Vec<Bytes>,
) -> Result<String, Fail> {
    let shard = &s.ctx.shard;
    let (p, id) = publication(
        arg,
        &g.member,
        now_ms(),
        shard.recovery_enabled(),
        att,
        |channel| check_grant(g, channel),
        || shard.next_event_id(),
    )?;
    shard.publish(p).await;
    if let Some(c) = s.ctx.cluster.as_ref().filter(|_| s.ctx.cfg.recovery()) {
        c.flushed().await;
    }
    Ok(format!("{{\"ok\":true,\"id\":\"{id}\"}}"))
}

fn not_found_fail() -> Fail {
    Fail::new(ErrorCode::NotFound, "no such socket is connected")
}

async fn direct(
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    ack: Option<u64>,
    arg: Option<&RawValue>,
    att: Vec<Bytes>,
) -> Result<Option<String>, Fail> {
    let f = fields(arg)?;
    let to = text_field(f.to, "to")?;
    let event = text_field(f.event, "event")?;
    rules::validate_event_name(&event)?;
    let not_found = not_found_fail;
    let shard = &s.ctx.shard;
    let Some((instance, key)) = SocketKey::parse(&to) else {
        return Err(not_found());
    };
    let local = instance == &**shard.instance();
    if !local && s.ctx.cluster.is_none() {
        return Err(not_found());
    }
    let id = shard.next_event_id();
    let ev = frame::Event {
        id: &id,
        channel: None,
        to: Some(&to),
        event: &event,
        data: f.data.unwrap_or(RawValue::NULL),
        from: Some(&g.member),
        ts: now_ms(),
        attachments: att.len(),
        offset: shard.recovery_enabled(),
    };
    let (text, _) = frame::realtime_event(&ev);
    let cluster_direct = |text: Bytes, attachments: Vec<Bytes>| {
        let q = crate::cluster::Query::Direct {
            instance: instance.to_string(),
            shard: key.shard,
            seq: key.seq,
            text,
            attachments,
        };
        let c = s.ctx.cluster.clone();
        async move {
            match c {
                Some(c) => matches!(c.ask(q).await, Some(crate::cluster::Reply::Delivered(true))),
                None => false,
            }
        }
    };
    if !local {
        let delivered = cluster_direct(text, att).await;
        return match delivered {
            true => Ok(Some(format!("{{\"ok\":true,\"id\":\"{id}\"}}"))),
            false => Err(not_found()),
        };
    }
    // A socket of this instance may have been recovered by another one: a
    // direct it did not find here is tried through the cluster (the
    // socket's new instance listens to this one's inbox for it).
    let retry = s.ctx.cluster.as_ref().map(|_| (text.clone(), att.clone()));
    let delivered = match shard.direct_send(key, text, att).await {
        DirectSent::Done(true) => true,
        DirectSent::Done(false) => match retry {
            Some((text, att)) => cluster_direct(text, att).await,
            None => false,
        },
        DirectSent::Waiting(qid) => {
            // Queued for the other shard in order; the socket's next
            // events go on while this one's answer comes back.
            let (s, shard) = (s.clone(), shard.clone());
            let again = retry.map(|(text, att)| cluster_direct(text, att));
            shards::rt::spawn_local(async move {
                let ok = match (shard.direct_answer(qid).await, again) {
                    (true, _) => true,
                    (false, Some(again)) => again.await,
                    (false, None) => false,
                };
                let r = match ok {
                    true => Ok(format!("{{\"ok\":true,\"id\":\"{id}\"}}")),
                    false => Err(not_found_fail()),
                };
                answer(&s, ack, r);
            })
            .detach();
            return Ok(None);
        }
    };
    if !delivered {
        return Err(not_found());
    }
    Ok(Some(format!("{{\"ok\":true,\"id\":\"{id}\"}}")))
}

async fn subscribe(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Value) -> Result<String, Fail> {
    let topic_str = str_field(&arg, "topic")?;
    let topic = rules::parse_topic(topic_str)?;
    if let Some(grant) = &*g.grant() {
        if !grant.allows_topic(topic_str) {
            return Err(Fail::new(
                ErrorCode::Forbidden,
                format!("token does not allow topic {topic_str:?}"),
            ));
        }
    }
    let filter = match arg.get("filter") {
        None | Some(Value::Null) => None,
        Some(f) => Some(Filter::parse(f)?),
    };
    let max = s.ctx.cfg.max_channels_per_socket;
    if g.more().map_or(0, |m| m.subs.len()) >= max {
        let msg =
            format!("a socket may hold at most {max} subscriptions (--max-channels-per-socket)");
        return Err(Fail::new(ErrorCode::Forbidden, msg));
    }
    let id: Arc<str> = {
        let mut more = g.more_mut();
        let n = more.next_sub;
        more.next_sub = n + 1;
        let id: Arc<str> = format!("{}.{n}", g.member.socket_id).into();
        more.subs
            .insert(id.clone(), (topic.clone(), filter.clone()));
        id
    };
    s.ctx.metrics.subscribed();
    crate::app::recovery::checkpoint(&s.ctx, g);
    if let shards::Topic::Exact(c) = &topic {
        crate::app::socket::ensure_stream(&s.ctx, g, c, g.born_ms.get());
    }
    let filter = filter.map(|f| Rc::new(f) as Rc<dyn SubFilter>);
    s.ctx
        .shard
        .subscribe(id.clone(), g.member.clone(), topic, filter)
        .await;
    Ok(format!(
        "{{\"ok\":true,\"subscriptionId\":{}}}",
        frame::json_str(&id)
    ))
}

async fn unsubscribe(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Value) -> Result<String, Fail> {
    let id = str_field(&arg, "subscriptionId")?;
    let topic = g.more_mut_if_any().and_then(|mut m| m.subs.remove(id));
    let Some((topic, _)) = topic else {
        return Err(Fail::new(
            ErrorCode::UnknownSubscription,
            "this socket holds no such subscription",
        ));
    };
    s.ctx.shard.unsubscribe(g.member.key, id, &topic).await;
    s.ctx.metrics.unsubscribed();
    crate::app::recovery::checkpoint(&s.ctx, g);
    Ok("{\"ok\":true}".into())
}

async fn members(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Option<&Value>) -> Result<String, Fail> {
    let ask = crate::app::members::event_arg(arg)?;
    // Member `info` may be personal data: listed only where the token may join.
    check_grant(g, &ask.channel)?;
    let fields = crate::app::members::fields(&s.ctx, &ask).await;
    Ok(format!("{{\"ok\":true,{fields}}}"))
}

/// A channel's recent events: allowed where the token allows a join.
async fn history(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Option<&Value>) -> Result<String, Fail> {
    let ask = crate::app::history::event_arg(arg)?;
    check_grant(g, &ask.channel)?;
    crate::app::history::answer(&s.ctx, ask).await
}

async fn refresh(s: &Rc<Session>, g: &Rc<GwSocket>, arg: Value) -> Result<String, Fail> {
    let token = str_field(&arg, "token")?;
    let verifier = s
        .ctx
        .cfg
        .verifier
        .as_ref()
        .ok_or_else(|| Fail::new(ErrorCode::Internal, "no verifier"))?;
    let claims = verifier.verify(token).map_err(|r| {
        Fail::new(
            ErrorCode::Unauthorized,
            format!("token refused: {}", r.as_str()),
        )
    })?;
    if *claims.sub != *g.member.user_id {
        return Err(Fail::new(
            ErrorCode::Forbidden,
            "a refreshed token must keep the same sub",
        ));
    }
    let exp = claims.exp;
    g.set_claims(claims);
    narrow(s, g).await;
    Ok(format!("{{\"ok\":true,\"exp\":{exp}}}"))
}

/// After a refresh: leaves every channel and drops every subscription the
/// new token's `channels` claim no longer allows, so a narrowed token stops
/// receiving there at once (the remaining members get presence `leave`).
async fn narrow(s: &Rc<Session>, g: &Rc<GwSocket>) {
    let (channels, subs) = {
        let grant = g.grant();
        let Some(grant) = &*grant else {
            return;
        };
        let channels: Vec<Arc<str>> = g
            .channels
            .borrow()
            .iter()
            .filter(|c| !grant.allows_channel(c))
            .cloned()
            .collect();
        let subs: Vec<Arc<str>> = g.more().map_or_else(Vec::new, |m| {
            m.subs
                .iter()
                .filter(|(_, (topic, _))| !grant.allows_topic(&rules::topic_text(topic)))
                .map(|(id, _)| id.clone())
                .collect()
        });
        (channels, subs)
    };
    let shard = &s.ctx.shard;
    for ch in channels {
        g.channels.borrow_mut().retain(|c| *c != ch);
        if shard.leave(&ch, g.member.key).await {
            left(&s.ctx, g, &ch).await;
        }
    }
    for id in subs {
        let topic = g.more_mut_if_any().and_then(|mut m| m.subs.remove(&id));
        if let Some((topic, _)) = topic {
            shard.unsubscribe(g.member.key, &id, &topic).await;
            s.ctx.metrics.unsubscribed();
        }
    }
    crate::app::recovery::checkpoint(&s.ctx, g);
}

//! Connection state recovery for the gateway's sockets: what happens between
//! a connection dropping and the same socket coming back.
//!
//! - **Hold** ([`hold`]): a socket whose transport dropped without a
//!   Socket.IO DISCONNECT is detached, not removed. It stays a member of its
//!   channels (so its shard keeps receiving and logging what they carry) and
//!   keeps its subscriptions; `direct` to it is accepted and logged. The
//!   shard's sweeper ([`start`]) ends its presence after `--presence-grace`
//!   (a `leave`, and it leaves member lists) and removes it after
//!   `--recovery-window`.
//! - **Recover** ([`recover`]): a CONNECT whose auth holds its `pid` (socket
//!   id + a 128-bit secret), with a valid token of the same `sub`, gets the
//!   same socket back. When it is held on this shard, at once; when on
//!   another shard, that shard hands it over (claim → the socket joins its
//!   channels here → fence → release with what it must be given again).
//!   Either way nothing is given to it before its CONNECT ack, and the
//!   replay goes before anything newer ([`resume`] runs right after the ack,
//!   without yielding).
//! - **Across instances** (with `--redis-url`): a recoverable socket's state
//!   is checkpointed to Redis whenever it changes ([`checkpoint`]); a `pid`
//!   naming another instance is recovered from that state and from the
//!   channels' history streams in Redis (`cluster/link/recovery.rs`), and the
//!   other instance is told to let the socket go. The socket keeps its id;
//!   direct messages to it still go to the inbox its id names, which this
//!   instance then listens to.
//! - Whole or nothing: an unknown `pid`, another user's token, or an offset
//!   the shard's recovery log no longer holds make a new socket.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shards::{AppMsg, Member, Replay, ShardId, SocketKey, SubFilter, Topic};

use crate::app::gateway::{disconnect, joined, left, new_socket, Gateway, GwSocket};
use crate::auth::Claims;
use crate::cluster::{Missed, Query, Reply};
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::rules::Filter;

/// One shard's held sockets, by key `seq`.
pub type Held = RefCell<HashMap<u64, HeldSocket>>;

pub struct HeldSocket {
    g: Rc<GwSocket>,
    grace_end: Instant,
    window_end: Instant,
    /// Being handed over to another shard until then.
    claimed_until: Option<Instant>,
}

/// What a recovered socket is given once its CONNECT is answered.
pub struct Pending {
    /// Frames handed over by the shard it was held on.
    replay: Replay,
    local: Local,
    /// Its presence grace had ended: `join` again.
    rejoin: bool,
}

/// Frames a socket was given from elsewhere when it came to this shard,
/// and this shard's log position then.
pub struct Carry {
    frames: Replay,
    from: u64,
}

enum Local {
    /// Held here: this shard's log after the offset (or since its start).
    After { offset: Option<String> },
    /// Handed over: this shard's log from where it joined its channels
    /// here, except what the other shard already gave.
    Since { from: u64, skip: HashSet<String> },
}

/// The shard-to-shard messages of a hand-over.
enum Req {
    Claim {
        seq: u64,
        secret: u128,
        sub: String,
        offset: Option<String>,
    },
    Release {
        seq: u64,
        offset: Option<String>,
    },
    SetMoved {
        seq: u64,
        to: ShardId,
    },
    ClearMoved {
        seq: u64,
    },
}

enum Resp {
    Claimed(Claimed),
    Refused(&'static str),
    /// It lives on that shard now.
    Elsewhere(ShardId),
    Released(Replay, HashSet<String>),
    Done,
}

struct Claimed {
    channels: Vec<Arc<str>>,
    subs: Vec<(Arc<str>, Topic, Option<Filter>)>,
    next_sub: u64,
    hidden: bool,
}

/// How long a claimed socket waits for its release before it is held again.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
const SWEEP: Duration = Duration::from_millis(100);

/// `pid`: the socket id, a dot, and the secret in hex.
pub fn pid(g: &GwSocket) -> String {
    format!("{}.{:032x}", g.member.socket_id, g.secret)
}

fn parse_pid(pid: &str) -> Option<(&str, SocketKey, u128)> {
    let (id, secret) = pid.rsplit_once('.')?;
    if secret.len() != 32 {
        return None;
    }
    let secret = u128::from_str_radix(secret, 16).ok().filter(|&s| s != 0)?;
    let (instance, key) = SocketKey::parse(id)?;
    Some((instance, key, secret))
}

/// The recovery offset a frame for a recovering socket carries.
fn offset_of(p: &proto::engineio::Outgoing) -> Option<String> {
    use proto::engineio::Outgoing;
    match p {
        Outgoing::Text(b) => shards::frame_offset(b).map(str::to_string),
        Outgoing::TextParts(_, _, tail) => tail
            .strip_prefix(b",\"")
            .and_then(|t| t.strip_suffix(b"\"]"))
            .and_then(|t| std::str::from_utf8(t).ok())
            .map(str::to_string),
        Outgoing::Binary(_) => None,
    }
}

/// Whether a socket that ended for `reason` is kept for recovery.
fn recoverable(reason: Option<shards::CloseReason>) -> bool {
    use shards::CloseReason::*;
    matches!(
        reason,
        Some(ClientClosed | TransportError | PingTimeout | ServerShutdown)
    )
}

/// Keeps a socket whose session ended for `reason` (detached) when it
/// recovers; `false` when it is to be removed now.
pub fn hold(
    gw: &Gateway,
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    reason: Option<shards::CloseReason>,
) -> bool {
    let cfg = &s.ctx.cfg;
    let mut held = gw.held.borrow_mut();
    // Held sockets are bounded like connected ones.
    if g.secret == 0 || !recoverable(reason) || held.len() >= cfg.max_connections {
        return false;
    }
    g.member.detach();
    g.pending.borrow_mut().take();
    let now = Instant::now();
    held.insert(
        g.member.key.seq,
        HeldSocket {
            g: g.clone(),
            grace_end: now + cfg.presence_grace,
            window_end: now + cfg.recovery_window,
            claimed_until: None,
        },
    );
    true
}

/// A CONNECT with a `pid`: the socket it names, recovered; otherwise the
/// claims back, for a new socket.
pub async fn recover(
    gw: &Gateway,
    s: &Rc<Session>,
    auth: Option<&Value>,
    claims: Claims,
) -> Result<Rc<GwSocket>, Claims> {
    let Some(pid) = auth.and_then(|a| a.get("pid")).and_then(Value::as_str) else {
        return Err(claims);
    };
    let offset = auth
        .and_then(|a| a.get("offset"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let metrics = &s.ctx.metrics;
    let shard = &s.ctx.shard;
    let Some((instance, key, secret)) = parse_pid(pid) else {
        metrics.recovery("unknown_pid");
        return Err(claims);
    };
    let counted = |r: Result<Rc<GwSocket>, Box<(&'static str, Claims)>>| {
        r.inspect(|_| metrics.recovery("recovered"))
            .map_err(|refused| {
                let (why, claims) = *refused;
                metrics.recovery(why);
                claims
            })
    };
    if instance != &**shard.instance() {
        return counted(from_cluster(s, pid, key, secret, offset, claims).await);
    }
    if gw.held.borrow().contains_key(&key.seq) {
        return counted(recover_here(gw, s, key.seq, secret, offset, claims));
    }
    let mut owner = match shard.moved_to(key.seq) {
        Some(w) if key.shard == shard.id() => w,
        _ => key.shard,
    };
    for _ in 0..2 {
        if owner == shard.id() {
            break;
        }
        let req = Req::Claim {
            seq: key.seq,
            secret,
            sub: claims.sub.clone(),
            offset: offset.clone(),
        };
        match ask(shard, owner, req).await {
            Some(Resp::Claimed(c)) => {
                return match take_over(s, key, secret, owner, offset, claims, c).await {
                    Ok(g) => {
                        metrics.recovery("recovered");
                        Ok(g)
                    }
                    Err(claims) => {
                        metrics.recovery("handover_failed");
                        Err(claims)
                    }
                };
            }
            Some(Resp::Elsewhere(w)) => owner = w,
            Some(Resp::Refused(why)) => {
                metrics.recovery(why);
                return Err(claims);
            }
            _ => break,
        }
    }
    metrics.recovery("unknown_pid");
    Err(claims)
}

/// Checks a claim on a socket held here; `Err` says why it is refused.
fn check(
    shard: &shards::Shard,
    h: &HeldSocket,
    secret: u128,
    sub: &str,
    offset: Option<&str>,
) -> Result<(), &'static str> {
    if h.claimed_until.is_some_and(|t| t > Instant::now()) {
        return Err("busy");
    }
    // Constant-time enough: a u128 comparison does not branch per byte.
    if h.g.secret != secret {
        return Err("unknown_pid");
    }
    if h.g.claims.borrow().sub != sub {
        return Err("other_user");
    }
    if !covers(shard, &h.g, offset) {
        return Err("offset_gone");
    }
    Ok(())
}

/// Whether this shard can give `g` everything after `offset` (without one,
/// since it came here).
fn covers(shard: &shards::Shard, g: &GwSocket, offset: Option<&str>) -> bool {
    let carry = g.carry.borrow();
    let carried = |c: &Carry, o: &str| {
        c.frames
            .iter()
            .any(|(f, _)| offset_of(f).as_deref() == Some(o))
    };
    match (offset, carry.as_deref()) {
        (Some(o), Some(c)) if carried(c, o) => shard.log_holds_since(c.from),
        (Some(o), _) => shard.log_has(o),
        (None, Some(c)) => shard.log_holds_since(c.from),
        (None, None) => shard.log_holds_since(g.since.get()),
    }
}

/// Everything `g` must be given again after `offset`, from this shard's
/// log and what it was last given from elsewhere.
fn local_replay(
    shard: &shards::Shard,
    g: &GwSocket,
    offset: Option<&str>,
) -> Result<Replay, shards::Miss> {
    let carry = g.carry.borrow();
    let m = &g.member;
    let Some(c) = carry.as_deref() else {
        return shard.replay(m, offset, g.since.get());
    };
    let at = offset.and_then(|o| {
        c.frames
            .iter()
            .position(|(f, _)| offset_of(f).as_deref() == Some(o))
    });
    if offset.is_some() && at.is_none() {
        // Given after the hand-over: this shard's log has it.
        return shard.replay(m, offset, g.since.get());
    }
    let start = at.map_or(0, |i| i + 1);
    let mut out: Replay = c.frames[start..].to_vec();
    let given: HashSet<String> = c.frames.iter().filter_map(|(f, _)| offset_of(f)).collect();
    let mut mine = Vec::new();
    shard.replay_into(m, None, c.from, &mut mine)?;
    out.extend(
        mine.into_iter()
            .filter(|(f, _)| offset_of(f).is_none_or(|o| !given.contains(&o))),
    );
    Ok(out)
}

fn recover_here(
    gw: &Gateway,
    s: &Rc<Session>,
    seq: u64,
    secret: u128,
    offset: Option<String>,
    claims: Claims,
) -> Result<Rc<GwSocket>, Box<(&'static str, Claims)>> {
    let shard = &s.ctx.shard;
    let mut held = gw.held.borrow_mut();
    let Some(h) = held.get(&seq) else {
        return Err(Box::new(("unknown_pid", claims)));
    };
    if let Err(why) = check(shard, h, secret, &claims.sub, offset.as_deref()) {
        return Err(Box::new((why, claims)));
    }
    let Some(h) = held.remove(&seq) else {
        return Err(Box::new(("unknown_pid", claims)));
    };
    let g = h.g;
    *g.claims.borrow_mut() = claims;
    *g.pending.borrow_mut() = Some(Box::new(Pending {
        replay: Vec::new(),
        local: Local::After { offset },
        rejoin: g.member.is_hidden(),
    }));
    Ok(g)
}

/// Makes the socket held on shard `owner` live here: its channels and
/// subscriptions joined on this shard (so every later publish reaches it
/// here), then released there with what it must be given again.
async fn take_over(
    s: &Rc<Session>,
    key: SocketKey,
    secret: u128,
    owner: ShardId,
    offset: Option<String>,
    claims: Claims,
    c: Claimed,
) -> Result<Rc<GwSocket>, Claims> {
    let ctx = &s.ctx;
    let shard = &ctx.shard;
    let Some(verifier) = ctx.cfg.verifier.as_ref() else {
        return Err(claims);
    };
    let id = key.wire(shard.instance()).into();
    let (g, from) = arriving(s, key, id, claims, secret, verifier.leeway_secs());
    g.next_sub.set(c.next_sub);
    for ch in c.channels {
        if shard.join(&ch, &g.member).await {
            g.channels.borrow_mut().push(ch);
        }
    }
    for (id, topic, filter) in c.subs {
        g.subs
            .borrow_mut()
            .insert(id.clone(), (topic.clone(), filter.clone()));
        let filter = filter.map(|f| Rc::new(f) as Rc<dyn SubFilter>);
        shard.subscribe(id, g.member.clone(), topic, filter).await;
    }
    // Every peer's earlier deliveries to the owner are handled there before
    // the release; later ones reach this shard too.
    shard.fence(owner).await;
    let released = ask(
        shard,
        owner,
        Req::Release {
            seq: key.seq,
            offset,
        },
    )
    .await;
    let Some(Resp::Released(replay, skip)) = released else {
        let claims = g.claims.borrow().clone();
        drop_silently(ctx, &g).await;
        return Err(claims);
    };
    if key.shard == shard.id() {
        shard.clear_moved(key.seq);
    } else if key.shard != owner {
        let to = shard.id();
        ask(shard, key.shard, Req::SetMoved { seq: key.seq, to }).await;
    }
    *g.pending.borrow_mut() = Some(Box::new(Pending {
        replay,
        local: Local::Since { from, skip },
        rejoin: c.hidden,
    }));
    Ok(g)
}

/// A socket coming to this shard from elsewhere, registered under `key`
/// with its old id and detached (nothing reaches it before its replay);
/// also this shard's log position now.
fn arriving(
    s: &Rc<Session>,
    key: SocketKey,
    socket_id: Arc<str>,
    claims: Claims,
    secret: u128,
    leeway: u64,
) -> (Rc<GwSocket>, u64) {
    let shard = &s.ctx.shard;
    let member = Rc::new(Member::new(
        key,
        socket_id,
        claims.sub.as_str().into(),
        claims.info.as_ref().map(|i| i.to_string().into()),
        true,
        s.outbox.clone(),
    ));
    member.detach();
    shard.register(member.clone());
    let from = shard.log_pos();
    (new_socket(member, claims, secret, from, leeway), from)
}

/// A socket another instance held (perhaps killed since), recovered from
/// what Redis keeps: its state, then what its channels carried since.
async fn from_cluster(
    s: &Rc<Session>,
    pid: &str,
    key: SocketKey,
    secret: u128,
    offset: Option<String>,
    claims: Claims,
) -> Result<Rc<GwSocket>, Box<(&'static str, Claims)>> {
    let ctx = &s.ctx;
    let shard = &ctx.shard;
    let (Some(c), Some(verifier)) = (&ctx.cluster, ctx.cfg.verifier.as_ref()) else {
        return Err(Box::new(("unknown_pid", claims)));
    };
    let socket_id = pid.rsplit_once('.').map_or(pid, |(id, _)| id).to_string();
    let instance = SocketKey::parse(&socket_id)
        .map(|(i, _)| i.to_string())
        .unwrap_or_default();
    let q = Query::RecoverState {
        socket_id: socket_id.clone(),
        secret: format!("{secret:032x}"),
        sub: claims.sub.clone(),
    };
    let state = match c.ask(q).await {
        Some(Reply::State(json)) => json,
        Some(Reply::Refused(why)) => return Err(Box::new((why, claims))),
        _ => return Err(Box::new(("unknown_pid", claims))),
    };
    let v: Value = serde_json::from_str(&state).unwrap_or_default();
    let local = SocketKey {
        shard: shard.id(),
        seq: key.seq,
    };
    let id = socket_id.as_str().into();
    let (g, from) = arriving(s, local, id, claims, secret, verifier.leeway_secs());
    g.next_sub.set(v["next_sub"].as_u64().unwrap_or(1));
    let since_ms = v["since_ms"].as_u64().unwrap_or(0);
    g.born_ms.set(since_ms);
    let mut streams: Vec<Arc<str>> = Vec::new();
    for ch in v["channels"].as_array().into_iter().flatten() {
        let Some(ch) = ch.as_str() else { continue };
        let ch: Arc<str> = ch.into();
        if shard.join(&ch, &g.member).await {
            g.channels.borrow_mut().push(ch.clone());
            streams.push(ch);
        }
    }
    for sub in v["subs"].as_array().into_iter().flatten() {
        let (Some(id), Some(topic)) = (sub[0].as_str(), sub[1].as_str()) else {
            continue;
        };
        let Ok(topic) = crate::rules::parse_topic(topic) else {
            continue;
        };
        let filter = Filter::parse(&sub[2]).ok();
        if let Topic::Exact(c) = &topic {
            if !streams.contains(c) {
                streams.push(c.clone());
            }
        }
        let id: Arc<str> = id.into();
        g.subs
            .borrow_mut()
            .insert(id.clone(), (topic.clone(), filter.clone()));
        let filter = filter.map(|f| Rc::new(f) as Rc<dyn SubFilter>);
        shard.subscribe(id, g.member.clone(), topic, filter).await;
    }
    // Joined here first: every later publish reaches this shard, so the
    // streams read now leave no gap.
    let q = Query::RecoverEntries {
        socket_id: socket_id.clone(),
        channels: streams,
        offset,
        since_ms,
    };
    let missed = match c.ask(q).await {
        Some(Reply::Missed(m)) => m,
        other => {
            let why = match other {
                Some(Reply::Refused(why)) => why,
                _ => "unavailable",
            };
            drop_silently(ctx, &g).await;
            let claims = g.claims.borrow().clone();
            return Err(Box::new((why, claims)));
        }
    };
    let mut replay = Vec::new();
    for m in missed {
        match m {
            Missed::Publication(p) => shard.frames_for(&g.member, &p, &mut replay),
            Missed::Direct { text, attachments } => {
                replay.push((shards::direct_frame(text, true), attachments));
            }
        }
    }
    let skip = replay.iter().filter_map(|(f, _)| offset_of(f)).collect();
    c.adopt(&instance, key.seq, true);
    for ch in g.channels.borrow().iter() {
        let view = shards::MemberView {
            socket_id: g.member.socket_id.clone(),
            user_id: g.member.user_id.clone(),
            info: g.member.info.clone(),
            joined_at: shards::now_ms(),
        };
        c.join(ch, view);
    }
    checkpoint(ctx, &g);
    *g.pending.borrow_mut() = Some(Box::new(Pending {
        replay,
        local: Local::Since { from, skip },
        rejoin: false,
    }));
    Ok(g)
}

/// Stores a recoverable socket's state in Redis (with a cluster), so that
/// another instance can recover it: its secret, user, channels and
/// subscriptions.
pub fn checkpoint(ctx: &ShardCtx, g: &GwSocket) {
    let Some(c) = &ctx.cluster else { return };
    if g.secret == 0 || !ctx.cfg.recovery() {
        return;
    }
    let subs: Vec<Value> = g
        .subs
        .borrow()
        .iter()
        .map(|(id, (t, f))| {
            let f = f.as_ref().map_or(Value::Null, Filter::to_json);
            serde_json::json!([&**id, crate::rules::topic_text(t), f])
        })
        .collect();
    let channels: Vec<String> = g.channels.borrow().iter().map(|c| c.to_string()).collect();
    let state = serde_json::json!({
        "secret": format!("{:032x}", g.secret),
        "sub": g.claims.borrow().sub,
        "since_ms": g.born_ms.get(),
        "next_sub": g.next_sub.get(),
        "channels": channels,
        "subs": subs,
    });
    c.checkpoint(&g.member.socket_id, Some(state.to_string()));
}

/// Removes a socket without presence (it is being handed over, or its
/// hand-over failed before it was ever shown here).
async fn drop_silently(ctx: &ShardCtx, g: &GwSocket) {
    let shard = &ctx.shard;
    let channels = std::mem::take(&mut *g.channels.borrow_mut());
    for ch in channels {
        shard.leave(&ch, g.member.key).await;
    }
    let subs = std::mem::take(&mut *g.subs.borrow_mut());
    for (id, (topic, _)) in subs {
        shard.unsubscribe(g.member.key, &id, &topic).await;
    }
    shard.unregister(g.member.key);
}

/// Right after a recovered socket's CONNECT ack is queued: gives it what it
/// missed, in order, then attaches it to its new session. Runs without
/// yielding, so nothing newer can come in between.
pub fn resume(s: &Rc<Session>, g: &Rc<GwSocket>) {
    let Some(p) = g.pending.borrow_mut().take() else {
        return;
    };
    let ctx = &s.ctx;
    let shard = &ctx.shard;
    let m = &g.member;
    let p = *p;
    let mut out = p.replay;
    match p.local {
        Local::After { offset } => {
            if let Ok(r) = local_replay(shard, g, offset.as_deref()) {
                out.extend(r);
            }
        }
        Local::Since { from, skip } => {
            // What came from elsewhere stays with it: a later recovery whose
            // offset is one of those frames starts there.
            *g.carry.borrow_mut() = Some(Box::new(Carry {
                frames: out.clone(),
                from,
            }));
            let mut mine = Vec::new();
            let _ = shard.replay_into(m, None, from, &mut mine);
            out.extend(
                mine.into_iter()
                    .filter(|(f, _)| offset_of(f).is_none_or(|o| !skip.contains(&o))),
            );
        }
    }
    let n = out.len();
    for (frame, attachments) in out {
        s.outbox.push_all(frame, &attachments);
    }
    ctx.metrics.replayed(n);
    m.attach(s.outbox.clone());
    if p.rejoin {
        let channels = g.channels.borrow().clone();
        shard.set_hidden(m, &channels, false);
        let (ctx, g) = (ctx.clone(), g.clone());
        shards::rt::spawn_local(async move {
            for ch in channels {
                joined(&ctx, &g, &ch).await;
            }
        })
        .detach();
    }
}

/// After a socket is removed for good: a socket living away from the shard
/// its id names tells that shard to stop forwarding to it.
pub async fn forget(ctx: &ShardCtx, g: &GwSocket) {
    let shard = &ctx.shard;
    let key = g.member.key;
    if let Some(c) = &ctx.cluster {
        if g.secret != 0 {
            c.checkpoint(&g.member.socket_id, None);
        }
        match SocketKey::parse(&g.member.socket_id) {
            Some((instance, _)) if instance != &**shard.instance() => {
                c.adopt(instance, key.seq, false);
                return;
            }
            _ => {}
        }
    }
    if key.shard != shard.id() {
        ask(shard, key.shard, Req::ClearMoved { seq: key.seq }).await;
    }
}

async fn ask(shard: &shards::Shard, to: ShardId, req: Req) -> Option<Resp> {
    let a = shard.ask_app(to, Box::new(req)).await?;
    a.downcast::<Resp>().ok().map(|b| *b)
}

/// Starts the shard's side of recovery: the sweeper of held sockets and the
/// answers to other shards' hand-over messages.
pub fn start(ctx: &Rc<ShardCtx>, gw: &Rc<Gateway>) {
    let shard = &ctx.shard;
    if !ctx.cfg.recovery() {
        return;
    }
    shard.enable_recovery(shards::LogBounds {
        max_age_ms: ctx.cfg.recovery_window.as_millis() as u64,
        max_bytes: ctx.cfg.recovery_log_bytes,
    });
    let (c, w) = (ctx.clone(), Rc::downgrade(gw));
    shard.on_app_request(move |from, msg| {
        let (c, w) = (c.clone(), w.clone());
        Box::pin(async move {
            let resp = match (w.upgrade(), msg.downcast::<Req>()) {
                (Some(gw), Ok(req)) => answer(&c, &gw, from, *req).await,
                _ => Resp::Refused("unknown_pid"),
            };
            Box::new(resp) as AppMsg
        })
    });
    if let Some(link) = &ctx.cluster {
        // Another instance recovered one of this shard's held sockets: it is
        // live there, so it goes from here without presence.
        let (c, w) = (ctx.clone(), Rc::downgrade(gw));
        link.on_forget(move |seq| {
            let Some(gw) = w.upgrade() else { return };
            let Some(h) = gw.held.borrow_mut().remove(&seq) else {
                return;
            };
            let c = c.clone();
            shards::rt::spawn_local(async move {
                let channels = h.g.channels.borrow().clone();
                drop_silently(&c, &h.g).await;
                if let Some(l) = &c.cluster {
                    for ch in &channels {
                        l.leave(ch, &h.g.member.socket_id);
                    }
                }
            })
            .detach();
        });
    }
    let (c, w) = (ctx.clone(), Rc::downgrade(gw));
    shards::rt::spawn_local(async move {
        loop {
            shards::rt::sleep(SWEEP).await;
            let Some(gw) = w.upgrade() else { return };
            sweep(&c, &gw).await;
        }
    })
    .detach();
}

/// Ends the presence of held sockets past their grace and removes those
/// past their window.
async fn sweep(ctx: &Rc<ShardCtx>, gw: &Gateway) {
    let now = Instant::now();
    let shard = &ctx.shard;
    shard.trim_log();
    let (graced, expired) = {
        let mut held = gw.held.borrow_mut();
        let mut graced = Vec::new();
        for h in held.values_mut() {
            if h.claimed_until.is_some_and(|t| t <= now) {
                h.claimed_until = None;
            }
            if h.claimed_until.is_none() && !h.g.member.is_hidden() && now >= h.grace_end {
                graced.push(h.g.clone());
            }
        }
        let gone: Vec<u64> = held
            .iter()
            .filter(|(_, h)| h.claimed_until.is_none() && now >= h.window_end)
            .map(|(k, _)| *k)
            .collect();
        let expired: Vec<Rc<GwSocket>> = gone
            .iter()
            .filter_map(|k| held.remove(k).map(|h| h.g))
            .collect();
        ctx.metrics.recovery_state(held.len(), shard.log_size().0);
        (graced, expired)
    };
    for g in graced {
        let channels = g.channels.borrow().clone();
        shard.set_hidden(&g.member, &channels, true);
        for ch in &channels {
            left(ctx, &g, ch).await;
        }
    }
    for g in expired {
        disconnect(ctx, &g).await;
    }
}

async fn answer(ctx: &Rc<ShardCtx>, gw: &Gateway, from: ShardId, req: Req) -> Resp {
    let shard = &ctx.shard;
    match req {
        Req::Claim {
            seq,
            secret,
            sub,
            offset,
        } => {
            let mut held = gw.held.borrow_mut();
            let Some(h) = held.get_mut(&seq) else {
                return match shard.moved_to(seq) {
                    Some(w) if w != shard.id() => Resp::Elsewhere(w),
                    _ => Resp::Refused("unknown_pid"),
                };
            };
            if let Err(why) = check(shard, h, secret, &sub, offset.as_deref()) {
                return Resp::Refused(why);
            }
            h.claimed_until = Some(Instant::now() + CLAIM_TIMEOUT);
            let g = &h.g;
            let subs = g
                .subs
                .borrow()
                .iter()
                .map(|(id, (t, f))| (id.clone(), t.clone(), f.clone()))
                .collect();
            let channels = g.channels.borrow().clone();
            let c = Claimed {
                channels,
                subs,
                next_sub: g.next_sub.get(),
                hidden: g.member.is_hidden(),
            };
            Resp::Claimed(c)
        }
        Req::Release { seq, offset } => {
            let Some(h) = gw.held.borrow_mut().remove(&seq) else {
                return Resp::Refused("unknown_pid");
            };
            let g = h.g;
            let replay = local_replay(shard, &g, offset.as_deref());
            match replay {
                Ok(replay) => {
                    drop_silently(ctx, &g).await;
                    shard.set_moved(seq, from);
                    let skip = replay.iter().filter_map(|(f, _)| offset_of(f)).collect();
                    Resp::Released(replay, skip)
                }
                Err(_) => {
                    disconnect(ctx, &g).await;
                    Resp::Refused("offset_gone")
                }
            }
        }
        Req::SetMoved { seq, to } => {
            shard.set_moved(seq, to);
            Resp::Done
        }
        Req::ClearMoved { seq } => {
            shard.clear_moved(seq);
            Resp::Done
        }
    }
}

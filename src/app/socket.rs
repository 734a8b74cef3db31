//! One gateway socket: its state ([`GwSocket`]: claims, channels,
//! subscriptions, rate bucket, recovery secret), how it joins and leaves
//! presence, and how it is removed for good. Used by the socket events
//! (`gateway.rs`) and by recovery (`recovery/`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use shards::{now_ms, Member, Publication, SubFilter, Topic};

use crate::app::recovery::pending::{Carry, Pending};
use crate::auth::Claims;
use crate::ctx::ShardCtx;
use crate::frame;
use crate::rules::Filter;

/// A socket's subscriptions by id: topic and filter.
pub(crate) type Subs = HashMap<Arc<str>, (Topic, Option<Filter>)>;

/// One authenticated socket on namespace `/`.
pub struct GwSocket {
    pub member: Rc<Member>,
    pub(crate) claims: RefCell<Claims>,
    pub(crate) channels: RefCell<Vec<Arc<str>>>,
    pub(crate) subs: RefCell<Subs>,
    pub(crate) next_sub: Cell<u64>,
    /// The secret half of its recovery id (`pid`); 0 when it does not recover.
    pub(crate) secret: u128,
    /// The shard's recovery log position when it connected: a recovery
    /// without an offset replays from here.
    pub(crate) since: Cell<u64>,
    /// When it connected (ms): a recovery on another instance without an
    /// offset starts there.
    pub(crate) born_ms: Cell<u64>,
    /// What its last recovery gave it from elsewhere (another shard's log,
    /// or Redis): a later recovery whose offset is among those frames
    /// starts there, as this shard's log does not hold them.
    pub(crate) carry: RefCell<Option<Box<Carry>>>,
    /// What a recovery still has to give it once its CONNECT is answered.
    pub(crate) pending: RefCell<Option<Box<Pending>>>,
    pub(crate) leeway: u64,
    /// Token bucket for `--max-events-per-sec`: tokens left, last refill.
    pub(crate) bucket: Cell<(f64, std::time::Instant)>,
    /// Events refused in a row; a socket that keeps flooding is cut.
    pub(crate) refused: Cell<u32>,
}

impl GwSocket {
    /// Takes one event from the bucket (`per_sec` refill, burst twice that).
    pub(crate) fn admit(&self, per_sec: u32) -> bool {
        let now = std::time::Instant::now();
        let (tokens, last) = self.bucket.get();
        let cap = 2.0 * per_sec as f64;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * per_sec as f64).min(cap);
        let ok = tokens >= 1.0;
        self.bucket
            .set((if ok { tokens - 1.0 } else { tokens }, now));
        ok
    }

    pub fn expired(&self, now_secs: u64) -> bool {
        self.claims.borrow().exp.saturating_add(self.leeway) < now_secs
    }
}

impl SubFilter for Filter {
    fn matches(&self, event: &str, data: &shards::Data<'_>) -> bool {
        Filter::matches(self, event, || data.value())
    }
}

pub(crate) fn new_socket(
    member: Rc<Member>,
    claims: Claims,
    secret: u128,
    since: u64,
    leeway: u64,
) -> Rc<GwSocket> {
    Rc::new(GwSocket {
        member,
        claims: RefCell::new(claims),
        channels: RefCell::default(),
        subs: RefCell::default(),
        next_sub: Cell::new(1),
        secret,
        since: Cell::new(since),
        born_ms: Cell::new(now_ms()),
        carry: RefCell::new(None),
        pending: RefCell::new(None),
        bucket: Cell::new((f64::MAX, std::time::Instant::now())),
        refused: Cell::new(0),
        leeway,
    })
}

/// Leaves every channel (presence `leave` to the remaining members, unless
/// it was already sent), drops every subscription and forgets the socket
/// on this shard (recovery's `forget` does the rest).
pub async fn disconnect(ctx: &Rc<ShardCtx>, g: &Rc<GwSocket>) {
    let shard = &ctx.shard;
    shard.unregister(g.member.key);
    let hidden = g.member.is_hidden();
    let channels = std::mem::take(&mut *g.channels.borrow_mut());
    for ch in channels {
        if shard.leave(&ch, g.member.key).await && !hidden {
            left(ctx, g, &ch).await;
        }
    }
    let subs = std::mem::take(&mut *g.subs.borrow_mut());
    for (id, (topic, _)) in subs {
        shard.unsubscribe(g.member.key, &id, &topic).await;
        ctx.metrics.unsubscribed();
    }
}

/// After `g` joined `channel` (or came back to it): in the cluster's
/// presence, `join` to every member, itself included.
pub(crate) async fn joined(ctx: &ShardCtx, g: &GwSocket, channel: &Arc<str>) {
    if let Some(c) = &ctx.cluster {
        let m = &g.member;
        let view = shards::MemberView {
            socket_id: m.socket_id.clone(),
            user_id: m.user_id.clone(),
            info: m.info.clone(),
            joined_at: now_ms(),
        };
        c.join(channel, view);
    }
    presence(ctx, g, channel, "join").await;
}

/// After `g` left `channel` (or its presence grace ended): out of the
/// cluster's presence, `leave` to the remaining members.
pub(crate) async fn left(ctx: &ShardCtx, g: &GwSocket, channel: &Arc<str>) {
    if let Some(c) = &ctx.cluster {
        c.leave(channel, &g.member.socket_id);
    }
    presence(ctx, g, channel, "leave").await;
}

async fn presence(ctx: &ShardCtx, g: &GwSocket, channel: &str, kind: &str) {
    let shard = &ctx.shard;
    let id = shard.recovery_enabled().then(|| shard.next_event_id());
    let text = frame::presence(channel, kind, &g.member, now_ms(), id.as_deref());
    let p = Publication {
        channel: channel.into(),
        event: "presence".into(),
        obj_end: shards::object_end(&text),
        text,
        attachments: Vec::new(),
        data: 0..0,
        skip_user: None,
        members_only: true,
    };
    shard.publish(p).await;
}

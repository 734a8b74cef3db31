//! One gateway socket: its state ([`GwSocket`]: claims, channels,
//! subscriptions, rate bucket, recovery secret), how it joins and leaves
//! presence, and how it is removed for good. Used by the socket events
//! (`gateway.rs`) and by recovery (`recovery/`).

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::{now_ms, Member, PresenceKind, PresenceTag, SubFilter, Topic};

use crate::app::publish::presence_publication;
use crate::app::recovery::pending::{Carry, Pending};
use crate::auth::{ChannelGrant, Claims};
use crate::ctx::ShardCtx;
use crate::frame;
use crate::rules::Filter;

/// A socket's subscriptions by id: topic and filter.
pub(crate) type Subs = HashMap<Arc<str>, (Topic, Option<Filter>)>;

/// One authenticated socket on namespace `/`.
///
/// Every connected socket has one, most of them idle, so it keeps only what
/// an idle socket needs; the rest ([`More`]) is allocated the first time it
/// is used.
pub struct GwSocket {
    pub member: Rc<Member>,
    claims: RefCell<Grant>,
    pub(crate) channels: RefCell<Vec<Arc<str>>>,
    /// The secret half of its recovery id (`pid`), as two halves so the
    /// struct is not 16-aligned; 0 when it does not recover.
    secret: [u64; 2],
    /// The shard's recovery log position when it connected: a recovery
    /// without an offset replays from here.
    pub(crate) since: Cell<u64>,
    /// When it connected (ms): a recovery on another instance without an
    /// offset starts there.
    pub(crate) born_ms: Cell<u64>,
    more: RefCell<Option<Box<More>>>,
}

/// What a socket keeps of its token's claims: `sub` and `info` are its
/// member's `user_id` and `info` (the same on a refresh or a recovery, which
/// keep the `sub`), so they are not stored twice.
struct Grant {
    /// Seconds since the epoch.
    exp: u64,
    /// `None` (claim absent or `null`) allows all channels.
    channels: Option<Box<ChannelGrant>>,
    admin: bool,
    /// `--jwt-leeway` (seconds, saturated: beyond 136 years it changes
    /// nothing), in what would otherwise be padding.
    leeway: u32,
}

/// What a socket only needs once it does something: subscribe, recover,
/// change presence, send events under a rate limit.
pub(crate) struct More {
    pub(crate) subs: Subs,
    pub(crate) next_sub: u64,
    /// What its last recovery gave it from elsewhere (another shard's log,
    /// or Redis): a later recovery whose offset is among those frames
    /// starts there, as this shard's log does not hold them.
    pub(crate) carry: Option<Carry>,
    /// What a recovery still has to give it once its CONNECT is answered.
    pub(crate) pending: Option<Pending>,
    /// What the other members last saw of it, per channel whose presence
    /// changed lately (see [`gate`]).
    presence_gate: Gates,
    /// Token bucket for `--max-events-per-sec`: tokens left, last refill.
    bucket: (f64, Instant),
    /// Token bucket for `--max-joins-per-sec` (joins and leaves).
    join_bucket: (f64, Instant),
    /// Events refused in a row; a socket that keeps flooding is cut.
    pub(crate) refused: u32,
}

impl Default for More {
    fn default() -> Self {
        // Full buckets: f64::MAX is capped at the burst on the first take,
        // whenever that is, so when they start does not matter.
        let now = Instant::now();
        More {
            subs: Subs::default(),
            next_sub: 1,
            carry: None,
            pending: None,
            presence_gate: Gates::default(),
            bucket: (f64::MAX, now),
            join_bucket: (f64::MAX, now),
            refused: 0,
        }
    }
}

impl GwSocket {
    /// Takes one event from the bucket (`per_sec` refill, burst twice that).
    pub(crate) fn admit(&self, per_sec: u32) -> bool {
        take(&mut self.more_mut().bucket, per_sec)
    }

    /// Takes one join or leave from its own bucket (`--max-joins-per-sec`).
    pub(crate) fn admit_join(&self, per_sec: u32) -> bool {
        take(&mut self.more_mut().join_bucket, per_sec)
    }

    pub fn expired(&self, now_secs: u64) -> bool {
        let c = self.claims.borrow();
        c.exp.saturating_add(u64::from(c.leeway)) < now_secs
    }

    /// Its rarely used state, if it has any yet.
    pub(crate) fn more(&self) -> Option<Ref<'_, More>> {
        Ref::filter_map(self.more.borrow(), |m| m.as_deref()).ok()
    }

    /// Its rarely used state, allocated on first use.
    pub(crate) fn more_mut(&self) -> RefMut<'_, More> {
        RefMut::map(self.more.borrow_mut(), |m| {
            &mut **m.get_or_insert_with(Box::default)
        })
    }

    /// Its rarely used state to change, if it has any yet.
    pub(crate) fn more_mut_if_any(&self) -> Option<RefMut<'_, More>> {
        RefMut::filter_map(self.more.borrow_mut(), |m| m.as_deref_mut()).ok()
    }

    /// Its subscriptions, taken out (allocates nothing when it has none).
    pub(crate) fn take_subs(&self) -> Subs {
        self.more
            .borrow_mut()
            .as_mut()
            .map(|m| std::mem::take(&mut m.subs))
            .unwrap_or_default()
    }

    /// What a recovery still has to give it, taken out.
    pub(crate) fn take_pending(&self) -> Option<Pending> {
        self.more
            .borrow_mut()
            .as_mut()
            .and_then(|m| m.pending.take())
    }

    /// The id number its next subscription gets.
    pub(crate) fn next_sub(&self) -> u64 {
        self.more().map_or(1, |m| m.next_sub)
    }

    pub(crate) fn secret(&self) -> u128 {
        (u128::from(self.secret[0]) << 64) | u128::from(self.secret[1])
    }

    /// Its `channels` claim: `None` allows all channels.
    pub(crate) fn grant(&self) -> Ref<'_, Option<Box<ChannelGrant>>> {
        Ref::map(self.claims.borrow(), |c| &c.channels)
    }

    /// Takes the claims of a token with its `sub` (a refresh, a recovery).
    pub(crate) fn set_claims(&self, claims: Claims) {
        let mut c = self.claims.borrow_mut();
        c.exp = claims.exp;
        c.channels = claims.channels.map(Box::new);
        c.admin = claims.admin;
    }

    /// Its claims whole again (for a new socket when its recovery fails).
    pub(crate) fn claims(&self) -> Claims {
        let c = self.claims.borrow();
        let m = &self.member;
        Claims {
            sub: m.user_id.to_string(),
            exp: c.exp,
            // The member's text is this value serialized: it parses back.
            info: m.info.as_deref().and_then(|i| serde_json::from_str(i).ok()),
            channels: c.channels.as_deref().cloned(),
            admin: c.admin,
        }
    }
}

/// A token bucket: `per_sec` refill, a burst of twice that.
fn take(bucket: &mut (f64, Instant), per_sec: u32) -> bool {
    let now = Instant::now();
    let (tokens, last) = *bucket;
    let cap = 2.0 * per_sec as f64;
    let tokens = (tokens + now.duration_since(last).as_secs_f64() * per_sec as f64).min(cap);
    let ok = tokens >= 1.0;
    *bucket = (if ok { tokens - 1.0 } else { tokens }, now);
    ok
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
        claims: RefCell::new(Grant {
            exp: claims.exp,
            channels: claims.channels.map(Box::new),
            admin: claims.admin,
            leeway: u32::try_from(leeway).unwrap_or(u32::MAX),
        }),
        channels: RefCell::default(),
        secret: [(secret >> 64) as u64, secret as u64],
        since: Cell::new(since),
        born_ms: Cell::new(now_ms()),
        more: RefCell::new(None),
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
    for (id, (topic, _)) in g.take_subs() {
        shard.unsubscribe(g.member.key, &id, &topic).await;
        ctx.metrics.unsubscribed();
    }
}

/// After `g` joined `channel` (or came back to it): in the cluster's
/// presence, `join` to every member, itself included (at most once a
/// second: see [`gate`]). Returns the channel's member count when it had
/// to ask for it (for a large channel's presence).
pub(crate) async fn joined(
    ctx: &Rc<ShardCtx>,
    g: &Rc<GwSocket>,
    channel: &Arc<str>,
) -> Option<usize> {
    if let Some(c) = &ctx.cluster {
        let m = &g.member;
        let joined_at = ctx.shard.joined_at(channel, m.key).unwrap_or_else(now_ms);
        let view = shards::MemberView {
            socket_id: m.socket_id.clone(),
            user_id: m.user_id.clone(),
            info: m.info.clone(),
            joined_at,
        };
        c.join(channel, view);
        ensure_stream(ctx, g, channel, joined_at);
    }
    let (count, large) = crate::app::counts::after_change(ctx, channel, true).await;
    if !large && gate(ctx, g, channel, true) {
        presence(ctx, g, channel, "join").await;
    }
    count
}

/// A connected recoverable socket (with a cluster) needs `channel`'s
/// stream from `at` (ms) on: its join, or for a subscription since it
/// connected. Only while it is connected: it has everything up to now, so a
/// stream begun again here (by its marker) hides no loss it suffered.
pub fn ensure_stream(ctx: &ShardCtx, g: &GwSocket, channel: &Arc<str>, at: u64) {
    let Some(c) = &ctx.cluster else { return };
    if g.secret() == 0 || !ctx.cfg.recovery() || g.member.is_detached() {
        return;
    }
    c.ensure(channel, at);
}

/// After `g` left `channel` (or its presence grace ended): out of the
/// cluster's presence, `leave` to the remaining members (at most once a
/// second: see [`gate`]).
pub(crate) async fn left(ctx: &Rc<ShardCtx>, g: &Rc<GwSocket>, channel: &Arc<str>) {
    if let Some(c) = &ctx.cluster {
        c.leave(channel, &g.member.socket_id);
    }
    let (_, large) = crate::app::counts::after_change(ctx, channel, false).await;
    if !large && gate(ctx, g, channel, false) {
        presence(ctx, g, channel, "leave").await;
    }
}

/// A socket's presence gates, by channel.
pub(crate) type Gates = HashMap<Arc<str>, Gate>;

/// What the other members of a channel last saw of a socket.
pub(crate) struct Gate {
    /// Shown as a member (its last presence was a `join`).
    shown: bool,
    /// When its last `join` and `leave` went out.
    last: [Option<Instant>; 2],
    /// A flush is due: it sends the final state if it differs.
    pending: bool,
}

/// How often one socket's presence of one kind reaches a channel.
const PRESENCE_PERIOD: Duration = Duration::from_secs(1);

/// Whether a presence change (`join` when `is_join`) goes out now. A socket
/// that toggles faster than once a second per kind would make every member
/// receive every toggle: the change is then held back, and a flush a
/// second after the last of its kind sends the final state if the members
/// saw another one (a join and a leave in between cancel out).
fn gate(ctx: &Rc<ShardCtx>, g: &Rc<GwSocket>, channel: &Arc<str>, is_join: bool) -> bool {
    let now = Instant::now();
    let mut more = g.more_mut();
    let map = &mut more.presence_gate;
    map.retain(|_, e| {
        e.pending
            || e.last
                .iter()
                .flatten()
                .any(|t| now - *t < 2 * PRESENCE_PERIOD)
    });
    let e = map.entry(channel.clone()).or_insert(Gate {
        shown: !is_join,
        last: [None, None],
        pending: false,
    });
    if e.shown == is_join || e.pending {
        // Nothing the members see changes now, or the flush will tell them.
        return false;
    }
    let k = usize::from(!is_join);
    match e.last[k] {
        Some(t) if now - t < PRESENCE_PERIOD => {
            e.pending = true;
            let due = t + PRESENCE_PERIOD;
            let (ctx, g, ch) = (ctx.clone(), g.clone(), channel.clone());
            shards::rt::spawn_local(async move {
                shards::rt::sleep(due.saturating_duration_since(Instant::now())).await;
                flush(&ctx, &g, &ch).await;
            })
            .detach();
            false
        }
        _ => {
            e.shown = is_join;
            e.last[k] = Some(now);
            true
        }
    }
}

/// A held-back presence change: the members get the socket's state now,
/// if it differs from what they last saw.
async fn flush(ctx: &Rc<ShardCtx>, g: &Rc<GwSocket>, channel: &Arc<str>) {
    let member = !g.member.is_hidden() && g.channels.borrow().iter().any(|c| c == channel);
    let send = {
        let mut more = g.more_mut();
        let Some(e) = more.presence_gate.get_mut(channel) else {
            return;
        };
        e.pending = false;
        let send = e.shown != member;
        if send {
            e.shown = member;
            e.last[usize::from(!member)] = Some(Instant::now());
        }
        send
    };
    if send {
        presence(ctx, g, channel, if member { "join" } else { "leave" }).await;
    }
}

async fn presence(ctx: &ShardCtx, g: &GwSocket, channel: &str, kind: &str) {
    let shard = &ctx.shard;
    let id = shard.recovery_enabled().then(|| shard.next_event_id());
    let text = frame::presence(channel, kind, &g.member, now_ms(), id.as_deref());
    let kind = if kind == "join" {
        PresenceKind::Join
    } else {
        PresenceKind::Leave
    };
    let tag = PresenceTag::new(channel, Some(&g.member.socket_id), kind);
    shard
        .publish(presence_publication(channel, text, tag))
        .await;
}

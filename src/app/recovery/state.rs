//! The sockets a shard holds for recovery, and the checks and replays every
//! way of recovering shares: whether the shard can still give a socket
//! everything after its offset, what that is, and how a socket arriving
//! from elsewhere is registered (detached until its replay) or dropped
//! without presence.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use shards::{Member, Replay, SocketKey};

use super::pending::Carry;
use crate::app::socket::{new_socket, GwSocket};
use crate::auth::Claims;
use crate::ctx::ShardCtx;
use crate::engine::session::Session;

/// One shard's held sockets, by key `seq`.
pub type Held = RefCell<HashMap<u64, HeldSocket>>;

pub struct HeldSocket {
    pub(super) g: Rc<GwSocket>,
    pub(super) grace_end: Instant,
    pub(super) window_end: Instant,
    /// Being handed over to another shard until then.
    pub(super) claimed_until: Option<Instant>,
}

pub(super) fn parse_pid(pid: &str) -> Option<(&str, SocketKey, u128)> {
    let (id, secret) = pid.rsplit_once('.')?;
    if secret.len() != 32 {
        return None;
    }
    let secret = u128::from_str_radix(secret, 16).ok().filter(|&s| s != 0)?;
    let (instance, key) = SocketKey::parse(id)?;
    Some((instance, key, secret))
}

/// The recovery offset a frame for a recovering socket carries.
pub(super) fn offset_of(p: &proto::engineio::Outgoing) -> Option<String> {
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

/// Checks a claim on a socket held here; `Err` says why it is refused.
pub(super) fn check(
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
    if h.g.secret() != secret {
        return Err("unknown_pid");
    }
    if *h.g.member.user_id != *sub {
        return Err("other_user");
    }
    if !covers(shard, &h.g, offset) {
        return Err("offset_gone");
    }
    Ok(())
}

/// Whether this shard can give `g` everything after `offset` (without one,
/// since it came here).
pub(super) fn covers(shard: &shards::Shard, g: &GwSocket, offset: Option<&str>) -> bool {
    let more = g.more();
    let carry = more.as_ref().and_then(|m| m.carry.as_ref());
    let carried = |c: &Carry, o: &str| {
        c.frames
            .iter()
            .any(|(f, _)| offset_of(f).as_deref() == Some(o))
    };
    match (offset, carry) {
        (Some(o), Some(c)) if carried(c, o) => shard.log_holds_since(c.from),
        (Some(o), _) => shard.log_has(o),
        (None, Some(c)) => shard.log_holds_since(c.from),
        (None, None) => shard.log_holds_since(g.since.get()),
    }
}

/// Everything `g` must be given again after `offset`, from this shard's
/// log and what it was last given from elsewhere.
pub(super) fn local_replay(
    shard: &shards::Shard,
    g: &GwSocket,
    offset: Option<&str>,
) -> Result<Replay, shards::Miss> {
    let more = g.more();
    let m = &g.member;
    let Some(c) = more.as_ref().and_then(|m| m.carry.as_ref()) else {
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

/// Removes a socket without presence (it is being handed over, or its
/// hand-over failed before it was ever shown here).
pub(super) async fn drop_silently(ctx: &ShardCtx, g: &GwSocket) {
    let shard = &ctx.shard;
    let channels = std::mem::take(&mut *g.channels.borrow_mut());
    for ch in channels {
        shard.leave(&ch, g.member.key).await;
    }
    for (id, (topic, _)) in g.take_subs() {
        shard.unsubscribe(g.member.key, &id, &topic).await;
    }
    shard.unregister(g.member.key);
}

/// A socket coming to this shard from elsewhere, registered under `key`
/// with its old id and detached (nothing reaches it before its replay);
/// also this shard's log position now.
pub(super) fn arriving(
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

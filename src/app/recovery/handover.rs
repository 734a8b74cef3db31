//! Hand-over between the shards of one instance: a socket held on one shard
//! whose client reconnected to another is claimed (its channels and
//! subscriptions), joined on the new shard, fenced, and released (what it
//! must be given again); the shard its id names forwards `direct` to it
//! afterwards. Also what is done when a socket is gone for good.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::{Replay, ShardId, SocketKey, SubFilter, Topic};

use super::pending::{Local, Pending};
use super::state::{arriving, check, drop_silently, local_replay, offset_of, Held};
use crate::app::socket::{disconnect, GwSocket};
use crate::auth::Claims;
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::rules::Filter;

/// The shard-to-shard messages of a hand-over.
pub(super) enum Req {
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

pub(super) enum Resp {
    Claimed(Claimed),
    Refused(&'static str),
    /// It lives on that shard now.
    Elsewhere(ShardId),
    Released(Replay, HashSet<String>),
    Done,
}

pub(super) struct Claimed {
    channels: Vec<Arc<str>>,
    subs: Vec<(Arc<str>, Topic, Option<Filter>)>,
    next_sub: u64,
    hidden: bool,
}

/// How long a claimed socket waits for its release before it is held again.
pub(super) const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes the socket held on shard `owner` live here: its channels and
/// subscriptions joined on this shard (so every later publish reaches it
/// here), then released there with what it must be given again.
pub(super) async fn take_over(
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
    g.more_mut().next_sub = c.next_sub;
    for ch in c.channels {
        if shard.join(&ch, &g.member).await {
            g.channels.borrow_mut().push(ch);
        }
    }
    for (id, topic, filter) in c.subs {
        g.more_mut()
            .subs
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
        let claims = g.claims();
        drop_silently(ctx, &g).await;
        return Err(claims);
    };
    if key.shard == shard.id() {
        shard.clear_moved(key.seq);
    } else if key.shard != owner {
        let to = shard.id();
        ask(shard, key.shard, Req::SetMoved { seq: key.seq, to }).await;
    }
    g.more_mut().pending = Some(Pending {
        replay,
        local: Local::Since { from, skip },
        rejoin: c.hidden,
    });
    Ok(g)
}

/// After a socket is removed for good: a socket living away from the shard
/// its id names tells that shard to stop forwarding to it.
pub async fn forget(ctx: &ShardCtx, g: &GwSocket) {
    let shard = &ctx.shard;
    let key = g.member.key;
    if let Some(c) = &ctx.cluster {
        if g.secret() != 0 {
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

pub(super) async fn ask(shard: &shards::Shard, to: ShardId, req: Req) -> Option<Resp> {
    let a = shard.ask_app(to, Box::new(req)).await?;
    a.downcast::<Resp>().ok().map(|b| *b)
}

pub(super) async fn answer(ctx: &Rc<ShardCtx>, held: &Held, from: ShardId, req: Req) -> Resp {
    let shard = &ctx.shard;
    match req {
        Req::Claim {
            seq,
            secret,
            sub,
            offset,
        } => {
            let mut held = held.borrow_mut();
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
            let subs = g.more().map_or_else(Vec::new, |m| {
                m.subs
                    .iter()
                    .map(|(id, (t, f))| (id.clone(), t.clone(), f.clone()))
                    .collect()
            });
            let channels = g.channels.borrow().clone();
            let c = Claimed {
                channels,
                subs,
                next_sub: g.next_sub(),
                hidden: g.member.is_hidden(),
            };
            Resp::Claimed(c)
        }
        Req::Release { seq, offset } => {
            let Some(h) = held.borrow_mut().remove(&seq) else {
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
                    forget(ctx, &g).await;
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

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
//! - Whole or nothing: an unknown `pid`, another user's token, an offset
//!   the shard's recovery log (or, across instances, Redis) no longer holds,
//!   or a prefix subscription to recover on another instance make a new
//!   socket.
//!
//! Files: this one holds the steps (hold, recover, resume, the sweeper);
//! `state.rs` the held sockets and the checks and replays every path
//! shares; `pending.rs` what a socket carries between its CONNECT and its
//! replay; `handover.rs` the hand-over between shards and the end of a
//! socket; `remote.rs` recovery on another instance through Redis.

mod handover;
pub mod pending;
mod remote;
mod state;

use std::rc::Rc;
use std::time::{Duration, Instant};

use proto::engineio::Outgoing;
use serde_json::Value;
use shards::{AppMsg, PresenceKind, PresenceTag};

pub use handover::forget;
pub use remote::checkpoint;
pub use state::Held;

use crate::app::socket::{disconnect, joined, left, GwSocket};
use crate::auth::Claims;
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use handover::{answer, ask, take_over, Req, Resp};
use pending::{Carry, Local, Pending};
use remote::from_cluster;
use state::{check, drop_silently, local_replay, offset_of, parse_pid, HeldSocket};

const SWEEP: Duration = Duration::from_millis(100);
/// Socket states renewed per message to the cluster link.
const TOUCH_BATCH: usize = 1024;

/// `pid`: the socket id, a dot, and the secret in hex.
pub fn pid(g: &GwSocket) -> String {
    format!("{}.{:032x}", g.member.socket_id, g.secret())
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
    held: &Held,
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    reason: Option<shards::CloseReason>,
) -> bool {
    let cfg = &s.ctx.cfg;
    let mut held = held.borrow_mut();
    // Held sockets are bounded like connected ones.
    if g.secret() == 0 || !recoverable(reason) || held.len() >= cfg.max_connections {
        return false;
    }
    g.member.detach();
    g.take_pending();
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
    held: &Held,
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
    if held.borrow().contains_key(&key.seq) {
        return counted(recover_here(held, s, key.seq, secret, offset, claims));
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

fn recover_here(
    held: &Held,
    s: &Rc<Session>,
    seq: u64,
    secret: u128,
    offset: Option<String>,
    claims: Claims,
) -> Result<Rc<GwSocket>, Box<(&'static str, Claims)>> {
    let shard = &s.ctx.shard;
    let mut held = held.borrow_mut();
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
    g.set_claims(claims);
    let rejoin = g.member.is_hidden();
    g.more_mut().pending = Some(Pending {
        replay: Vec::new(),
        local: Local::After { offset },
        rejoin,
    });
    Ok(g)
}

/// Right after a recovered socket's CONNECT ack is queued: gives it what it
/// missed, in order, then attaches it to its new session. Runs without
/// yielding, so nothing newer can come in between.
pub fn resume(s: &Rc<Session>, g: &Rc<GwSocket>) {
    let Some(p) = g.take_pending() else {
        return;
    };
    let ctx = &s.ctx;
    let shard = &ctx.shard;
    let m = &g.member;
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
            g.more_mut().carry = Some(Carry {
                frames: out.clone(),
                from,
            });
            let mut mine = Vec::new();
            let _ = shard.replay_into(m, None, from, &mut mine);
            out.extend(
                mine.into_iter()
                    .filter(|(f, _)| offset_of(f).is_none_or(|o| !skip.contains(&o))),
            );
        }
    }
    let out = tagged_latest_counts(out);
    let n = out.len();
    for (frame, attachments, tag) in out {
        match tag {
            Some(tag) => s.outbox.push_presence(frame, tag),
            None => s.outbox.push_all(frame, &attachments),
        };
    }
    ctx.metrics.replayed(n);
    m.attach(s.outbox.clone());
    if p.rejoin {
        let channels = g.channels.borrow().clone();
        shard.set_hidden(m, &channels, false);
        let (ctx, g) = (ctx.clone(), g.clone());
        shards::rt::spawn_local(async move {
            for ch in channels {
                let _ = joined(&ctx, &g, &ch).await;
            }
        })
        .detach();
    }
}

/// Starts the shard's side of recovery: the sweeper of held sockets and the
/// answers to other shards' hand-over messages.
pub fn start(ctx: &Rc<ShardCtx>, held: &Rc<Held>) {
    let shard = &ctx.shard;
    if !ctx.cfg.recovery() {
        return;
    }
    shard.enable_recovery(shards::LogBounds {
        max_age_ms: ctx.cfg.recovery_window.as_millis() as u64,
        max_bytes: ctx.cfg.recovery_log_bytes,
    });
    let (c, w) = (ctx.clone(), Rc::downgrade(held));
    shard.on_app_request(move |from, msg| {
        let req = msg.downcast::<Req>()?;
        let (c, w) = (c.clone(), w.clone());
        Ok(Box::pin(async move {
            let resp = match w.upgrade() {
                Some(held) => answer(&c, &held, from, *req).await,
                None => Resp::Refused("unknown_pid"),
            };
            Box::new(resp) as AppMsg
        }))
    });
    if let Some(link) = &ctx.cluster {
        // Another instance recovered one of this shard's held sockets: it is
        // live there, so it goes from here without presence.
        let (c, w) = (ctx.clone(), Rc::downgrade(held));
        link.on_forget(move |seq| {
            let Some(held) = w.upgrade() else { return };
            let Some(h) = held.borrow_mut().remove(&seq) else {
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
    if ctx.cluster.is_some() {
        // A state in Redis is written when it changes and expires a window
        // after its last write: while the socket is here, connected or
        // held, it is renewed every quarter of the window, so a socket
        // idle for longer than the window still recovers on another
        // instance when this one dies.
        let c = ctx.clone();
        let every = (ctx.cfg.recovery_window / 4).max(Duration::from_millis(100));
        shards::rt::spawn_local(async move {
            loop {
                shards::rt::sleep(every).await;
                let Some(link) = &c.cluster else { return };
                let ids = c.shard.recoverable_ids();
                for chunk in ids.chunks(TOUCH_BATCH) {
                    link.touch(chunk.to_vec());
                }
            }
        })
        .detach();
    }
    let (c, w) = (ctx.clone(), Rc::downgrade(held));
    shards::rt::spawn_local(async move {
        loop {
            shards::rt::sleep(SWEEP).await;
            let Some(held) = w.upgrade() else { return };
            sweep(&c, &held).await;
        }
    })
    .detach();
}

/// Ends the presence of held sockets past their grace and removes those
/// past their window.
async fn sweep(ctx: &Rc<ShardCtx>, held: &Held) {
    let now = Instant::now();
    let shard = &ctx.shard;
    shard.trim_log();
    let (graced, expired) = {
        let mut held = held.borrow_mut();
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
        forget(ctx, &g).await;
    }
}

/// The text a frame starts with (for reading its presence tag).
fn head(f: &Outgoing) -> &[u8] {
    match f {
        Outgoing::Text(b) | Outgoing::Binary(b) | Outgoing::TextParts(b, _, _) => b,
    }
}

/// A replayed frame with its presence tag (read back from the frame: what
/// was logged carries none).
type Tagged = (Outgoing, Vec<bytes::Bytes>, Option<PresenceTag>);

/// Tags a replay's frames and keeps, of a large channel's presence counts,
/// only the latest: a socket back after a minute needs the count now, not
/// the sixty before it.
fn tagged_latest_counts(out: Vec<(Outgoing, Vec<bytes::Bytes>)>) -> Vec<Tagged> {
    let mut seen = std::collections::HashSet::new();
    let mut tagged: Vec<Tagged> = out
        .into_iter()
        .rev()
        .filter_map(|(f, a)| {
            let tag = crate::frame::presence_tag(head(&f));
            let stale = tag.is_some_and(|t| t.kind == PresenceKind::Count && !seen.insert(t.key));
            (!stale).then_some((f, a, tag))
        })
        .collect();
    tagged.reverse();
    tagged
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_replay_keeps_each_channel_s_latest_count_in_place() {
        let count = |ch: &str, n| {
            (
                Outgoing::Text(crate::frame::presence_count(ch, n, 1, None)),
                vec![],
            )
        };
        let event = |s: &'static str| (Outgoing::Text(Bytes::from_static(s.as_bytes())), vec![]);
        let out = vec![
            count("a", 1001),
            event("42[\"event\",1]"),
            count("b", 5000),
            count("a", 1002),
            event("42[\"event\",2]"),
            count("a", 1003),
        ];
        let kept: Vec<Outgoing> = tagged_latest_counts(out.clone())
            .into_iter()
            .map(|(f, _, _)| f)
            .collect();
        assert_eq!(
            kept,
            vec![
                out[1].0.clone(),
                out[2].0.clone(),
                out[4].0.clone(),
                out[5].0.clone()
            ]
        );
    }
}

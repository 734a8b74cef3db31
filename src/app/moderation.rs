//! Moderation: an administrator disconnects a socket or every socket of a
//! user, or removes a socket from a channel (the REST routes in
//! `edge/rest`). Owns each shard's registry of its connected sockets (by key
//! `seq`, with their sessions) and the path of an action to the socket,
//! wherever it is: this shard, another shard (an application request), or
//! another instance (a cluster control message to that instance's inbox,
//! which reaches a socket recovered elsewhere too).
//!
//! The client is told why before anything is cut: an `error` event
//! `{code:"disconnected", message, reconnect}` (or `{code:"removed",
//! channel, message}`). Without reconnect the socket gets a Socket.IO
//! DISCONNECT, after which socket.io-client does not reconnect by itself;
//! with reconnect only the transport closes, and the client comes back as a
//! new socket (a kicked socket is never recoverable).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use proto::socketio::PacketType as Sio;
use serde::{Deserialize, Serialize};
use shards::{CloseReason, SocketKey};

use crate::app::socket::{left, GwSocket};
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::frame::json_str;

/// A connected socket and the session it is attached to.
type Entry = (Weak<Session>, Weak<GwSocket>);

/// One shard's connected sockets, by key `seq`.
#[derive(Default)]
pub struct Registry(RefCell<HashMap<u64, Entry>>);

thread_local! {
    /// This shard's registry (one shard per thread), for the REST routes,
    /// which reach the application through functions, not through the
    /// Socket.IO layer.
    static REGISTRY: Rc<Registry> = Rc::default();
}

/// This shard's registry.
pub fn registry() -> Rc<Registry> {
    REGISTRY.with(Rc::clone)
}

impl Registry {
    /// A socket's CONNECT succeeded (also a recovered one, on its new session).
    pub fn connected(&self, s: &Rc<Session>, g: &Rc<GwSocket>) {
        self.0
            .borrow_mut()
            .insert(g.member.key.seq, (Rc::downgrade(s), Rc::downgrade(g)));
    }

    /// Its session ended (it may be held for recovery: it comes back
    /// through [`Registry::connected`]).
    pub fn gone(&self, s: &Rc<Session>, g: &GwSocket) {
        let mut map = self.0.borrow_mut();
        if let Some((ws, _)) = map.get(&g.member.key.seq) {
            if ws.as_ptr() == Rc::as_ptr(s) {
                map.remove(&g.member.key.seq);
            }
        }
    }

    fn live(&self, seq: u64) -> Option<(Rc<Session>, Rc<GwSocket>)> {
        let map = self.0.borrow();
        let (s, g) = map.get(&seq)?;
        let (s, g) = (s.upgrade()?, g.upgrade()?);
        (!s.is_ended()).then_some((s, g))
    }
}

/// One action, as it crosses shards and instances.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Action {
    /// What it acts on.
    pub target: Target,
    /// Shown to the client.
    pub reason: String,
    /// Disconnects only: whether the client may reconnect by itself.
    #[serde(default)]
    pub reconnect: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Socket `seq` (of the instance the action is sent to).
    Socket { seq: u64 },
    /// Every socket of a user.
    User { user: String },
    /// Socket `seq`'s membership of a channel.
    Member { seq: u64, channel: String },
}

/// The sockets of this shard `a` acts on.
fn targets(reg: &Registry, a: &Action) -> Vec<(Rc<Session>, Rc<GwSocket>)> {
    match &a.target {
        Target::Socket { seq } | Target::Member { seq, .. } => reg.live(*seq).into_iter().collect(),
        Target::User { user } => {
            let seqs: Vec<u64> = reg.0.borrow().keys().copied().collect();
            seqs.into_iter()
                .filter_map(|seq| reg.live(seq))
                .filter(|(_, g)| &*g.member.user_id == user.as_str())
                .collect()
        }
    }
}

/// Applies `a` to this shard's sockets; the number it acted on.
async fn act(ctx: &Rc<ShardCtx>, reg: &Registry, a: &Action) -> usize {
    let mut n = 0;
    for (s, g) in targets(reg, a) {
        match &a.target {
            Target::Member { channel, .. } => {
                n += remove(ctx, &s, &g, channel, &a.reason).await as usize;
            }
            _ => {
                kick(&s, a);
                n += 1;
            }
        }
    }
    n
}

fn kick(s: &Rc<Session>, a: &Action) {
    let ev = format!(
        "[\"error\",{{\"code\":\"disconnected\",\"message\":{},\"reconnect\":{}}}]",
        json_str(&a.reason),
        a.reconnect
    );
    crate::sio::send(s, Sio::Event, "/", None, Some(&ev));
    if a.reconnect {
        s.terminate(CloseReason::Kicked);
    } else {
        s.disconnect_all(CloseReason::Kicked);
    }
}

/// Takes a socket out of a channel as its own `leave` would (presence,
/// recovery state, the cluster's member list), and tells it.
async fn remove(
    ctx: &Rc<ShardCtx>,
    s: &Rc<Session>,
    g: &Rc<GwSocket>,
    channel: &str,
    reason: &str,
) -> bool {
    if !ctx.shard.leave(channel, g.member.key).await {
        return false;
    }
    g.channels.borrow_mut().retain(|c| &**c != channel);
    crate::app::recovery::checkpoint(ctx, g);
    left(ctx, g, &channel.into()).await;
    let ev = format!(
        "[\"error\",{{\"code\":\"removed\",\"channel\":{},\"message\":{}}}]",
        json_str(channel),
        json_str(reason)
    );
    crate::sio::send(s, Sio::Event, "/", None, Some(&ev));
    true
}

/// A shard-to-shard request: run the action there.
struct Req(Action);

/// Runs `a` on every shard of this instance; the number of sockets it acted on.
async fn on_instance(ctx: &Rc<ShardCtx>, a: &Action) -> usize {
    let shard = &ctx.shard;
    let mut n = act(ctx, &registry(), a).await;
    for peer in (0..shard.nr_shards()).filter(|&p| p != shard.id()) {
        if let Some(r) = shard.ask_app(peer, Box::new(Req(a.clone()))).await {
            n += r.downcast::<usize>().map_or(0, |b| *b);
        }
    }
    n
}

/// Installs this shard's side: answers peers' requests and other
/// instances' control messages.
pub fn start(ctx: &Rc<ShardCtx>) {
    let reg = registry();
    let (c, w) = (Rc::downgrade(ctx), Rc::downgrade(&reg));
    ctx.shard.on_app_request(move |_, msg| {
        let req = msg.downcast::<Req>()?;
        let (c, w) = (c.clone(), w.clone());
        Ok(Box::pin(async move {
            let n = match (c.upgrade(), w.upgrade()) {
                (Some(c), Some(reg)) => act(&c, &reg, &req.0).await,
                _ => 0,
            };
            Box::new(n) as shards::AppMsg
        }))
    });
    if let Some(link) = &ctx.cluster {
        let c = Rc::downgrade(ctx);
        link.on_control(move |_seq, body: Bytes| {
            let c = c.clone();
            Box::pin(async move {
                let Ok(a) = serde_json::from_slice::<Action>(&body) else {
                    return false;
                };
                match c.upgrade() {
                    Some(c) => on_instance(&c, &a).await > 0,
                    None => false,
                }
            })
        });
    }
}

/// Disconnects the socket `socket_id` names, wherever it is; whether it was found.
pub async fn disconnect_socket(
    ctx: &Rc<ShardCtx>,
    socket_id: &str,
    reason: String,
    reconnect: bool,
) -> bool {
    let Some((instance, key)) = SocketKey::parse(socket_id) else {
        return false;
    };
    let a = Action {
        target: Target::Socket { seq: key.seq },
        reason,
        reconnect,
    };
    to_socket(ctx, instance, key, &a).await
}

/// Removes the socket `socket_id` names from `channel`; whether it was a member.
pub async fn remove_member(
    ctx: &Rc<ShardCtx>,
    socket_id: &str,
    channel: &str,
    reason: String,
) -> bool {
    let Some((instance, key)) = SocketKey::parse(socket_id) else {
        return false;
    };
    let a = Action {
        target: Target::Member {
            seq: key.seq,
            channel: channel.to_string(),
        },
        reason,
        reconnect: false,
    };
    to_socket(ctx, instance, key, &a).await
}

/// A socket's action: on this instance first when the id names it, then
/// through its instance's inbox (which also reaches a socket recovered by
/// another instance since).
async fn to_socket(ctx: &Rc<ShardCtx>, instance: &str, key: SocketKey, a: &Action) -> bool {
    if instance == &**ctx.shard.instance() && on_instance(ctx, a).await > 0 {
        return true;
    }
    let Some(link) = &ctx.cluster else {
        return false;
    };
    let q = crate::cluster::Query::Control {
        instance: instance.to_string(),
        shard: key.shard,
        seq: key.seq,
        body: serde_json::to_vec(a).unwrap_or_default().into(),
    };
    matches!(
        link.ask(q).await,
        Some(crate::cluster::Reply::Delivered(true))
    )
}

/// Disconnects every socket of `user` on every instance; the sockets cut
/// here and the number of other instances where the user had some.
pub async fn disconnect_user(
    ctx: &Rc<ShardCtx>,
    user: &str,
    reason: String,
    reconnect: bool,
) -> (usize, usize) {
    let a = Action {
        target: Target::User {
            user: user.to_string(),
        },
        reason,
        reconnect,
    };
    let here = on_instance(ctx, &a).await;
    let Some(link) = &ctx.cluster else {
        return (here, 0);
    };
    let others: Vec<String> = match link.ask(crate::cluster::Query::Instances).await {
        Some(crate::cluster::Reply::Instances(list)) => list
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id != &**ctx.shard.instance())
            .collect(),
        _ => Vec::new(),
    };
    let body: Bytes = serde_json::to_vec(&a).unwrap_or_default().into();
    let asks = others.into_iter().map(|instance| {
        let q = crate::cluster::Query::Control {
            instance,
            shard: 0,
            seq: 0,
            body: body.clone(),
        };
        link.ask(q)
    });
    let answers = futures_util::future::join_all(asks).await;
    let there = answers
        .iter()
        .filter(|r| matches!(r, Some(crate::cluster::Reply::Delivered(true))))
        .count();
    (here, there)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_as_json() {
        for target in [
            Target::Socket { seq: u64::MAX },
            Target::User {
                user: "u\"1".into(),
            },
            Target::Member {
                seq: 7,
                channel: "chat:1".into(),
            },
        ] {
            let a = Action {
                target,
                reason: "spam".into(),
                reconnect: true,
            };
            let b: Action = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
            assert_eq!(a, b);
        }
        assert!(serde_json::from_slice::<Action>(b"{\"target\":{\"kind\":\"x\"}}").is_err());
    }
}

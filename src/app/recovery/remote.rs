//! Recovery on another instance: a recoverable socket's state is kept in
//! Redis whenever it changes ([`checkpoint`]), and a pid naming another
//! instance is recovered from that state and the channels' streams
//! (`cluster/link/recovery.rs`), with its old id. A socket with a prefix
//! subscription is not recovered here (`prefix_subscription`): what the
//! prefix matched meanwhile lies in streams of channels it does not name.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;
use shards::{SocketKey, SubFilter, Topic};

use super::pending::{Local, Pending};
use super::state::{arriving, drop_silently, offset_of};
use crate::app::socket::GwSocket;
use crate::auth::Claims;
use crate::cluster::{Missed, Query, Reply};
use crate::ctx::ShardCtx;
use crate::engine::session::Session;
use crate::rules::Filter;

/// A socket another instance held (perhaps killed since), recovered from
/// what Redis keeps: its state, then what its channels carried since.
pub(super) async fn from_cluster(
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
    if has_prefix_subscription(&v) {
        // What a prefix matched while the socket was away is in the streams
        // of channels nobody can name here: it cannot be replayed whole.
        return Err(Box::new(("prefix_subscription", claims)));
    }
    let local = SocketKey {
        shard: shard.id(),
        seq: key.seq,
    };
    let id = socket_id.as_str().into();
    let (g, from) = arriving(s, local, id, claims, secret, verifier.leeway_secs());
    g.more_mut().next_sub = v["next_sub"].as_u64().unwrap_or(1);
    let since_ms = v["since_ms"].as_u64().unwrap_or(0);
    g.born_ms.set(since_ms);
    // Each stream with when the socket joined its channel (a state written
    // before joins were kept says nothing: since it connected).
    let mut streams: Vec<(Arc<str>, u64)> = Vec::new();
    let joined = v["joined"].as_array();
    for (i, ch) in v["channels"].as_array().into_iter().flatten().enumerate() {
        let Some(ch) = ch.as_str() else { continue };
        let ch: Arc<str> = ch.into();
        let at = joined.and_then(|j| j.get(i)?.as_u64()).unwrap_or(since_ms);
        if shard.join(&ch, &g.member).await {
            g.channels.borrow_mut().push(ch.clone());
            streams.push((ch, at));
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
            // A subscription's time is not kept: since the socket connected
            // (a stream begun after that, before the subscription, makes
            // the recovery refused rather than partial).
            if !streams.iter().any(|(s, _)| s == c) {
                streams.push((c.clone(), since_ms));
            }
        }
        let id: Arc<str> = id.into();
        g.more_mut()
            .subs
            .insert(id.clone(), (topic.clone(), filter.clone()));
        let filter = filter.map(|f| Rc::new(f) as Rc<dyn SubFilter>);
        shard.subscribe(id, g.member.clone(), topic, filter).await;
    }
    // Joined here first: every later publish reaches this shard, so the
    // streams read now leave no gap.
    let q = Query::RecoverEntries {
        socket_id: socket_id.clone(),
        channels: streams.clone(),
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
            let claims = g.claims();
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
        let joined_at = shard
            .joined_at(ch, g.member.key)
            .unwrap_or_else(shards::now_ms);
        let view = shards::MemberView {
            socket_id: g.member.socket_id.clone(),
            user_id: g.member.user_id.clone(),
            info: g.member.info.clone(),
            joined_at,
        };
        c.join(ch, view);
    }
    // Whole up to now (what it missed is about to be replayed): its streams
    // are needed from its joins here on (a subscription's: since it
    // connected).
    for (ch, _) in &streams {
        c.ensure(ch, shard.joined_at(ch, g.member.key).unwrap_or(since_ms));
    }
    checkpoint(ctx, &g);
    g.more_mut().pending = Some(Pending {
        replay,
        local: Local::Since { from, skip },
        rejoin: false,
    });
    Ok(g)
}

/// Whether a stored state holds a prefix subscription (a topic that does
/// not read as one exact channel).
fn has_prefix_subscription(state: &Value) -> bool {
    state["subs"].as_array().into_iter().flatten().any(|sub| {
        sub[1]
            .as_str()
            .is_some_and(|t| !matches!(crate::rules::parse_topic(t), Ok(Topic::Exact(_))))
    })
}

/// Stores a recoverable socket's state in Redis (with a cluster), so that
/// another instance can recover it: its secret, user, channels (with when
/// it joined each) and subscriptions.
pub fn checkpoint(ctx: &ShardCtx, g: &GwSocket) {
    let Some(c) = &ctx.cluster else { return };
    if g.secret() == 0 || !ctx.cfg.recovery() {
        return;
    }
    let subs: Vec<Value> = g.more().map_or_else(Vec::new, |m| {
        m.subs
            .iter()
            .map(|(id, (t, f))| {
                let f = f.as_ref().map_or(Value::Null, Filter::to_json);
                serde_json::json!([&**id, crate::rules::topic_text(t), f])
            })
            .collect()
    });
    let since = g.born_ms.get();
    let (channels, joined): (Vec<String>, Vec<u64>) = g
        .channels
        .borrow()
        .iter()
        .map(|c| {
            let at = ctx.shard.joined_at(c, g.member.key).unwrap_or(since);
            (c.to_string(), at)
        })
        .unzip();
    let state = serde_json::json!({
        "secret": format!("{:032x}", g.secret()),
        "sub": &*g.member.user_id,
        "since_ms": since,
        "next_sub": g.next_sub(),
        "channels": channels,
        "joined": joined,
        "subs": subs,
    });
    c.checkpoint(&g.member.socket_id, Some(state.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_with_a_prefix_subscription_is_told_apart() {
        let exact = serde_json::json!({"subs": [["s1", "chat:room1", null]]});
        let prefix =
            serde_json::json!({"subs": [["s1", "chat:room1", null], ["s2", "chat:*", null]]});
        assert!(!has_prefix_subscription(&exact));
        assert!(!has_prefix_subscription(
            &serde_json::json!({"channels": ["a"]})
        ));
        assert!(has_prefix_subscription(&prefix));
    }
}

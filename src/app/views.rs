//! The gateway's views of channels, members and connections: cluster-wide
//! through the Redis shard when there is one and it answers, otherwise this
//! instance's own (gathered from every shard through the mailbox). Socket
//! events and the REST API both ask here, so they always agree.

use std::rc::Rc;
use std::sync::Arc;

use shards::MemberView;

use crate::cluster::{Query, Reply};
use crate::ctx::ShardCtx;

pub async fn member_count(ctx: &Rc<ShardCtx>, channel: &Arc<str>) -> usize {
    if let Some(c) = &ctx.cluster {
        if let Some(Reply::Count(n)) = c.ask(Query::Count(channel.clone())).await {
            return n;
        }
    }
    ctx.shard.member_count(channel).await
}

/// The sockets of `user` on every live instance; `None` when Redis did not
/// answer.
pub async fn user_count(c: &crate::cluster::ClusterLink, user: &Arc<str>) -> Option<usize> {
    match c.ask(Query::UserCount(user.clone())).await {
        Some(Reply::Count(n)) => Some(n),
        _ => None,
    }
}

pub async fn members(ctx: &Rc<ShardCtx>, channel: &Arc<str>) -> Vec<MemberView> {
    if let Some(c) = &ctx.cluster {
        if let Some(Reply::Members(v)) = c.ask(Query::Members(channel.clone())).await {
            return v;
        }
    }
    ctx.shard.members(channel).await
}

/// Active channels with member counts.
pub async fn channels(ctx: &Rc<ShardCtx>) -> Vec<(Arc<str>, usize)> {
    if let Some(c) = &ctx.cluster {
        if let Some(Reply::Channels(v)) = c.ask(Query::Channels).await {
            return v;
        }
    }
    ctx.shard.channel_counts().await
}

/// Connected sockets per shard, for each live instance (id, per-shard counts).
pub async fn connections(ctx: &Rc<ShardCtx>) -> Vec<(String, Vec<usize>)> {
    let local = ctx.shard.connections_per_shard().await;
    if let Some(c) = &ctx.cluster {
        if let Some(Reply::Instances(mut v)) = c.ask(Query::Instances).await {
            // This instance's own figures are fresher than its heartbeat.
            for (id, shards) in v.iter_mut() {
                if **id == **ctx.shard.instance() {
                    *shards = local.clone();
                }
            }
            return v;
        }
    }
    vec![(ctx.shard.instance().to_string(), local)]
}

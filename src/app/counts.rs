//! Presence of large channels: above `--presence-max-members` members, a
//! join or leave sends no per-member `join`/`leave` to every member (that is
//! O(members²) in a join storm); the channel is marked instead, on its home
//! shard, and that shard's timer sends the members
//! `{"channel","type":"count","count","ts"}` at most once per
//! `--presence-interval` while the count changes.
//!
//! With several instances, each instance's home shard sends the count (the
//! cluster's) to that instance's members only, so a member gets at most one
//! count per interval whichever instances the changes were made on. A change
//! made here is also told to the other instances, as a count through Redis
//! that they do not deliver but take as "this channel changed": their home
//! shard counts it at its next tick (so a remote change reaches members
//! within two intervals). Only a change made here is told on, so the counts
//! never echo between instances.

use std::rc::Rc;
use std::sync::Arc;

use shards::{now_ms, AppMsg, PresenceKind, PresenceTag};

use crate::app::publish::presence_publication;
use crate::app::views;
use crate::ctx::ShardCtx;
use crate::frame;

/// A channel to count, sent to its home shard; `here`: changed on this
/// instance (so the other instances are told too).
struct Mark(Arc<str>, bool);

/// After a join or leave: the channel's member count now (`None` when
/// counts are off), and whether it is large (its count after a join, or
/// before a leave, is above the threshold). If so, its count is due and no
/// per-member presence goes out.
pub async fn after_change(
    ctx: &Rc<ShardCtx>,
    channel: &Arc<str>,
    is_join: bool,
) -> (Option<usize>, bool) {
    let max = ctx.cfg.presence_max_members;
    if max == 0 {
        return (None, false);
    }
    let before = |n: usize| if is_join { n } else { n + 1 };
    let mut n = views::member_count(ctx, channel).await;
    if ctx.cluster.is_some() && before(n) <= max {
        // The cluster's answer counts the joins its Redis shard had taken
        // in when it asked; in a join storm that lags far behind the
        // members this instance already holds, and every one of them would
        // receive a per-member frame decided on the lagging number.
        n = n.max(ctx.shard.member_count(channel).await);
    }
    let before = before(n);
    if before <= max {
        return (Some(n), false);
    }
    mark(ctx, channel, true);
    (Some(n), true)
}

/// Marks `channel` on its home shard: its count goes out at the next tick.
fn mark(ctx: &Rc<ShardCtx>, channel: &Arc<str>, here: bool) {
    let shard = &ctx.shard;
    let home = shards::channel_home(channel, shard.nr_shards());
    if home == shard.id() {
        note(ctx, channel.clone(), here);
        return;
    }
    let (s, ch) = (shard.clone(), channel.clone());
    shards::rt::spawn_local(async move {
        s.ask_app(home, Box::new(Mark(ch, here))).await;
    })
    .detach();
}

fn note(ctx: &ShardCtx, channel: Arc<str>, here: bool) {
    *ctx.presence_counts.borrow_mut().entry(channel).or_default() |= here;
}

/// Starts the shard's timer and its side of [`mark`].
pub fn start(ctx: &Rc<ShardCtx>) {
    if ctx.cfg.presence_max_members == 0 {
        return;
    }
    let weak = Rc::downgrade(ctx);
    ctx.shard.on_app_request(move |_, msg| {
        let m = msg.downcast::<Mark>()?;
        if let Some(ctx) = weak.upgrade() {
            note(&ctx, m.0, m.1);
        }
        Ok(Box::pin(async { Box::new(()) as AppMsg }))
    });
    let weak = Rc::downgrade(ctx);
    ctx.shard.on_remote_count(move |channel| {
        if let Some(ctx) = weak.upgrade() {
            mark(&ctx, channel, false);
        }
    });
    let weak = Rc::downgrade(ctx);
    let every = ctx.cfg.presence_interval;
    shards::rt::spawn_local(async move {
        loop {
            shards::rt::sleep(every).await;
            let Some(ctx) = weak.upgrade() else { return };
            let due: Vec<(Arc<str>, bool)> = ctx.presence_counts.borrow_mut().drain().collect();
            for (ch, here) in due {
                let n = views::member_count(&ctx, &ch).await;
                send(&ctx, &ch, n, here).await;
            }
        }
    })
    .detach();
}

/// The channel's count to this instance's members (`frame::presence_count`,
/// with its offset when recovery is on), and, when it changed `here`, to the
/// other instances as the news that it changed.
async fn send(ctx: &ShardCtx, channel: &Arc<str>, n: usize, here: bool) {
    let shard = &ctx.shard;
    let id = shard.recovery_enabled().then(|| shard.next_event_id());
    let text = frame::presence_count(channel, n, now_ms(), id.as_deref());
    let tag = PresenceTag::new(channel, None, PresenceKind::Count);
    let p = presence_publication(channel, text, tag);
    if here {
        shard.publish(p).await;
    } else {
        shard.publish_here(p).await;
    }
}

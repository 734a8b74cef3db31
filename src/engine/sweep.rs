//! One shard's sessions over time: the sweeper (PINGs, PONG and connect
//! deadlines, the layer above's periodic check, from one timer per shard
//! instead of one per session) and the graceful drain at shutdown.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::CloseReason;

use crate::engine::session::Engine;

/// Up to this many sessions on a shard, the sweeper wakes exactly when the
/// next deadline is due instead of once per period.
const PRECISE_SWEEP_MAX: usize = 1024;

/// How many drain batches `period` makes with one every `interval`: at
/// least one, and one at once when the period is zero.
pub fn drain_batches(period: Duration, interval: Duration) -> usize {
    if period.is_zero() {
        return 1;
    }
    let interval = interval.max(Duration::from_millis(1)).min(period);
    (period.as_millis() / interval.as_millis()).max(1) as usize
}

/// Graceful stop of one shard: its sessions are closed in batches over
/// `--drain-period` (batch `k` of `n`, one every `--drain-interval`, closes
/// 1/(n-k) of those still open, so the last batch ends the period and a
/// shard with few sessions is done early). Each session flushes what is
/// queued and closes its transport with a reason that keeps it recoverable
/// (clients see a transport close and reconnect, elsewhere: `/readyz`
/// already sends the load balancer away), then the shard returns once every
/// websocket task has ended. The process-wide deadline (drain period plus
/// `--shutdown-timeout`) bounds the wait.
pub async fn drain(engine: Rc<Engine>) {
    let ctx = &engine.ctx;
    let cfg = &ctx.cfg;
    let batches = drain_batches(cfg.drain_period, cfg.drain_interval);
    let start = Instant::now();
    tracing::info!(
        shard = ctx.shard.id(),
        sessions = engine.all().len(),
        batches,
        "draining"
    );
    for k in 0..batches {
        if !cfg.drain_period.is_zero() {
            let due = start + cfg.drain_period * (k as u32 + 1) / batches as u32;
            shards::rt::sleep(due.saturating_duration_since(Instant::now())).await;
        }
        let open: Vec<_> = engine.all().into_iter().filter(|s| !s.is_ended()).collect();
        if open.is_empty() {
            break;
        }
        let n = open.len().div_ceil(batches - k);
        tracing::debug!(
            shard = ctx.shard.id(),
            batch = k,
            closing = n,
            "drain batch"
        );
        for s in open.into_iter().take(n) {
            s.terminate(CloseReason::ServerShutdown);
        }
    }
    while ctx.live_websockets.get() > 0 || !engine.sessions.borrow().is_empty() {
        shards::rt::sleep(Duration::from_millis(20)).await;
    }
    // Let the last close frames and presence leaves go out.
    shards::rt::sleep(Duration::from_millis(50)).await;
}

/// Sends PINGs, enforces PONG and token deadlines for every session of this
/// shard, from one timer instead of one per session.
pub async fn sweeper(engine: Rc<Engine>) {
    let ctx = &engine.ctx;
    let cfg = &ctx.cfg;
    let period = (cfg.ping_interval.min(cfg.ping_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut wait = period;
    loop {
        shards::rt::sleep(wait).await;
        let now = Instant::now();
        let now_secs = shards::now_ms() / 1000;
        ctx.metrics
            .mailbox_pending(ctx.shard.mailbox().pending_requests());
        let sessions = engine.all();
        // A few sessions: wake at the earliest deadline, so PINGs and
        // timeouts are on time (the protocol suites count in 100 ms); many:
        // one sweep per period.
        let precise = sessions.len() <= PRECISE_SWEEP_MAX;
        let mut next = now + period;
        for s in sessions {
            s.tick(now, now_secs);
            if precise && !s.is_ended() {
                next = next.min(s.next_due());
            }
        }
        wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
    }
}

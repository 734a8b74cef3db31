//! Per-shard counters, kept in plain `Cell`s (a shard is single-threaded):
//! no atomics or locks on the hot path. Read by the metrics endpoint.

use std::cell::Cell;

use shards::CloseReason;

use crate::auth::Refusal;

#[derive(Default)]
pub struct Metrics {
    pub events_in: Cell<u64>,
    pub deliveries: Cell<u64>,
    pub auth_refusals: Cell<u64>,
    pub slow_consumers: Cell<u64>,
    pub sessions_closed: Cell<u64>,
}

impl Metrics {
    pub fn event_in(&self) {
        self.events_in.set(self.events_in.get() + 1);
    }

    pub fn delivered(&self, n: usize) {
        self.deliveries.set(self.deliveries.get() + n as u64);
    }

    pub fn auth_refused(&self, reason: Refusal) {
        tracing::debug!(reason = reason.as_str(), "connect refused");
        self.auth_refusals.set(self.auth_refusals.get() + 1);
    }

    pub fn session_closed(&self, reason: CloseReason) {
        if reason == CloseReason::SlowConsumer {
            tracing::info!("socket disconnected as a slow consumer");
            self.slow_consumers.set(self.slow_consumers.get() + 1);
        } else if reason == CloseReason::TokenExpired {
            tracing::info!("socket disconnected: token_expired");
        }
        self.sessions_closed.set(self.sessions_closed.get() + 1);
    }
}

//! The link on a Redis Cluster: connecting (the slot map through
//! `nodes.rs::Router`, every topic `SSUBSCRIBE`d through `sharded.rs`),
//! the pushes of the subscription connections, and reading the slot map
//! again to move the subscriptions whose slot moved, refilling what they
//! missed meanwhile from the channels' streams.

use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::nodes::{self, Router};
use super::recovery::{self, REFILL_SLACK_MS};
use super::sharded::{Push, ShardSubs};
use super::{bounded, CmdConn, Conn, Link, Sink};

impl Link {
    /// A Redis Cluster: the slot map, a command connection per primary and
    /// every topic SSUBSCRIBEd on its slot's primary.
    pub(super) async fn connect_cluster(&mut self, topics: &[String]) -> Option<(CmdConn, Sink)> {
        let mut seeds = self.seeds.clone();
        for addr in &self.known {
            if let Some((h, p)) = nodes::split_addr(addr) {
                seeds.push(nodes::at(&self.seeds[0], h, p));
            }
        }
        let scripts = recovery::scripts(true, self.cfg.recovery.is_some());
        let mut subs = ShardSubs::new(self.push_tx.clone(), self.next_sub_id);
        let (pxn, pxa) = (self.pxn_topic(), self.pxa_topic());
        let attempt = async {
            let router = Router::connect(&seeds, scripts).await?;
            subs.subscribe(&router, topics).await?;
            subs.classic(&router, &pxn, true).await?;
            subs.classic(&router, &pxa, true).await?;
            Ok::<_, redis::RedisError>(router)
        };
        let r = timeout(Duration::from_secs(4), attempt).await;
        self.next_sub_id = subs.next_id();
        let router = self.attempted(r)?;
        self.known = router.primaries();
        self.lost.clear();
        self.next_topology = Instant::now() + self.cfg.heartbeat;
        tracing::info!("redis cluster: {} primaries", self.known.len());
        Some((CmdConn::Cluster(router), Sink::Cluster(subs)))
    }

    /// A push from one of the cluster's subscription connections.
    pub(super) fn on_push(&mut self, id: u64, info: redis::PushInfo) {
        let Some(Conn {
            sink: Sink::Cluster(subs),
            ..
        }) = self.conn.as_mut()
        else {
            return;
        };
        match subs.on_push(id, info) {
            Push::Message(m) => self.on_message(m),
            Push::Lost(name) => {
                self.lost.insert(name);
                self.next_topology = Instant::now();
            }
            Push::Down(addr) => self.down(&format!("redis cluster node {addr} closed")),
            Push::Nothing => {}
        }
    }

    /// Reads the cluster's slot map again and moves the subscriptions whose
    /// slot moved (or that a node dropped); on schedule, and soon after a
    /// redirection or a dropped subscription.
    pub(super) async fn topology(&mut self) {
        self.next_topology = Instant::now() + self.cfg.heartbeat.min(Duration::from_secs(1));
        let Some(Conn {
            cmd: CmdConn::Cluster(router),
            ..
        }) = self.conn.as_ref()
        else {
            return;
        };
        let router = router.clone();
        let lost = std::mem::take(&mut self.lost);
        let Some(Conn {
            sink: Sink::Cluster(subs),
            ..
        }) = self.conn.as_mut()
        else {
            return;
        };
        // Subscriptions first: while one is away, its channel's publishes
        // reach nobody here.
        let r = bounded(async {
            let changed = router.refresh().await?;
            if changed || !lost.is_empty() {
                subs.rehome(&router, &lost).await
            } else {
                Ok(Vec::new())
            }
        })
        .await;
        match r {
            Ok(moved) => {
                self.known = router.primaries();
                if !moved.is_empty() {
                    tracing::info!(
                        "redis cluster: {} subscriptions moved to a new primary",
                        moved.len()
                    );
                    let from = shards::now_ms().saturating_sub(REFILL_SLACK_MS);
                    if let Err(e) = bounded(self.refill(&moved, from)).await {
                        return self.down(&e.to_string());
                    }
                }
            }
            Err(e) => return self.down(&e.to_string()),
        }
        if let Err(e) = self.read_prefixes().await {
            return self.down(&e.to_string());
        }
        if let Err(e) = self.px_acknowledge().await {
            return self.down(&e.to_string());
        }
        self.px_expire();
    }
}

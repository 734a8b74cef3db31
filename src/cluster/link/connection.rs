//! The link's loop and its connection to Redis: what the loop waits on
//! (shards' messages, pub/sub, timers), connecting to one server (and,
//! through `topology.rs`, to a cluster), loading the scripts and rewriting
//! the presence once connected, and what happens when Redis goes away
//! (backoff, waiting questions answered).

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use super::interest::esc_glob;
use super::{bounded, recovery, CmdConn, Conn, Link, Sink};
use crate::cluster::msg::{FromCluster, Reply, ToCluster};

impl Link {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<ToCluster>) {
        loop {
            if self.conn.is_none() && Instant::now() >= self.next_attempt {
                self.connect().await;
            }
            let retry_at = self.next_attempt;
            let down = self.conn.is_none();
            tokio::select! {
                m = rx.recv() => {
                    let Some(first) = m else { return };
                    let mut batch = vec![first];
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch).await;
                    if matches!(&self.conn, Some(Conn { cmd: CmdConn::Cluster(r), .. }) if r.stale()) {
                        // A command was redirected: the map changed.
                        self.next_topology = self.next_topology.min(Instant::now());
                    }
                }
                msg = next_msg(&mut self.stream) => match msg {
                    Some(m) => self.on_message(m),
                    None => self.down("pub/sub connection closed"),
                },
                Some((id, info)) = self.push_rx.recv() => self.on_push(id, info),
                _ = sleep_until(self.next_topology), if self.cfg.cluster && !down => {
                    self.topology().await;
                }
                _ = sleep_until(self.next_heartbeat) => self.heartbeat().await,
                _ = sleep_until(retry_at), if down => {}
            }
        }
    }

    pub(super) fn down(&mut self, why: &str) {
        if self.conn.is_some() || self.stats.up.load(Ordering::Relaxed) {
            tracing::warn!("redis unreachable: {why}");
        }
        if self.conn.is_some() && self.down_since.is_none() {
            self.down_since = Some(shards::now_ms());
        }
        self.conn = None;
        self.stream = None;
        self.stats.up.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.stats.last_error.lock() {
            *e = why.to_string();
        }
        self.next_attempt = Instant::now() + self.backoff;
        // On a cluster the usual outage is a failover, over within seconds.
        let cap = match self.cfg.cluster {
            true => Duration::from_millis(500),
            false => Duration::from_secs(2),
        };
        self.backoff = (self.backoff * 2).min(cap);
        // Answer everyone still waiting for a remote instance.
        for (_, (shard, qid, _)) in self.pending_direct.drain() {
            if let Some(p) = self.ports.get(shard) {
                p.send(
                    FromCluster::Reply {
                        qid,
                        resp: Reply::Delivered(false),
                    },
                    &self.stats.publishes_dropped,
                );
            }
        }
    }

    async fn connect(&mut self) {
        let mut topics: Vec<String> = self.interest.exact().map(|c| self.topic(c)).collect();
        topics.push(self.inbox(&self.cfg.instance));
        topics.extend(self.adopted_from.keys().map(|i| self.inbox(i)));
        let patterns: Vec<String> = self
            .interest
            .prefixes()
            .map(|p| format!("{}*", esc_glob(&self.topic(p))))
            .collect();
        let (cmd, sink) = match self.cfg.cluster {
            true => match self.connect_cluster(&topics).await {
                Some(x) => x,
                None => return,
            },
            false => match self.connect_one(&topics, &patterns).await {
                Some(x) => x,
                None => return,
            },
        };
        let mut cmd = cmd;
        if self.cfg.recovery.is_some() {
            match bounded(recovery::load_scripts(&mut cmd, self.cfg.cluster)).await {
                Ok(s) => self.scripts = Some(s),
                Err(e) => return self.down(&e.to_string()),
            }
        }
        self.conn = Some(Conn { cmd, sink });
        if self.cfg.cluster {
            let r = async {
                if self.interest.has_prefixes() {
                    self.sync_prefixes().await?;
                }
                self.read_prefixes().await
            };
            if let Err(e) = r.await {
                return self.down(&e.to_string());
            }
        }
        if self.withdrawn {
            // Stopping: stay out of the cluster's presence.
        } else if let Err(e) = bounded(self.rewrite_presence()).await {
            return self.down(&e.to_string());
        }
        if self.cfg.cluster {
            if let Err(e) = self.catch_up().await {
                return self.down(&e.to_string());
            }
            if self.conn.is_none() {
                return;
            }
        }
        self.stats.up.store(true, Ordering::Relaxed);
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.backoff = Duration::from_millis(100);
        tracing::info!(
            "redis connected; {} topics, {} patterns",
            topics.len(),
            patterns.len()
        );
    }

    /// One Redis server: a multiplexed command connection and a pub/sub
    /// connection with every topic and pattern subscribed.
    async fn connect_one(
        &mut self,
        topics: &[String],
        patterns: &[String],
    ) -> Option<(CmdConn, Sink)> {
        let client = self.client.clone()?;
        let attempt = async {
            let cmd = client.get_multiplexed_async_connection().await?;
            let pubsub = client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((cmd, pubsub))
        };
        let (cmd, pubsub) = self.attempted(timeout(Duration::from_secs(2), attempt).await)?;
        let (mut sink, stream) = pubsub.split();
        let subscribed = async {
            sink.subscribe(topics).await?;
            if !patterns.is_empty() {
                sink.psubscribe(patterns).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        if let Err(e) = bounded(subscribed).await {
            self.down(&e.to_string());
            return None;
        }
        self.stream = Some(stream);
        Some((CmdConn::One(cmd), Sink::One(sink)))
    }

    /// The outcome of a timed connection attempt; on failure Redis is down.
    pub(super) fn attempted<T>(
        &mut self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match r {
            Ok(Ok(x)) => Some(x),
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("connect timed out");
                None
            }
        }
    }
}

async fn next_msg(stream: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

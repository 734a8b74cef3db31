//! Publishes: one into the batch's pipeline (with recovery, the script
//! of `recovery.rs` that keeps it in its channel's stream and publishes
//! it, in one command; on a Redis Cluster also the broadcast copy for
//! other instances' prefixes), the pipeline's flush, and on a Redis
//! Cluster the outage buffer: publishes made or failed while the cluster
//! is away are held (at most `outage_buffer`) and sent, with their
//! sequence numbers, once it is back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::timeout;

use super::recovery::REFILL_SLACK_MS;
use super::{bounded, CmdConn, Link, COMMAND_TIMEOUT};
use crate::cluster::wire::Envelope;

impl Link {
    /// A publish into `pipe`: with recovery, the script that keeps it in
    /// its channel's stream and publishes it, in one command.
    pub(super) fn queue_publish(
        &mut self,
        pipe: &mut redis::Pipeline,
        p: Arc<shards::Publication>,
        seq: Option<u64>,
    ) {
        let seq = seq.unwrap_or_else(|| {
            self.seq += 1;
            self.seq
        });
        if self.cfg.cluster {
            self.in_pipe.push((pipe.cmd_iter().count(), seq, p.clone()));
        }
        let topic = self.topic(&p.channel);
        let channel = p.channel.clone();
        let env = Envelope::Publish {
            origin: self.cfg.instance.clone(),
            seq,
            p,
        };
        match (&self.scripts, self.cfg.recovery) {
            (Some(super::recovery::Scripts { publish, .. }), Some(r)) => {
                pipe.cmd("EVALSHA")
                    .arg(publish)
                    .arg(1)
                    .arg(self.history_key(&channel))
                    .arg(topic)
                    .arg(env.encode())
                    .arg(r.history_len)
                    .arg(r.stream_ttl_ms())
                    .ignore();
            }
            _ => {
                pipe.cmd(self.publish_cmd())
                    .arg(topic)
                    .arg(env.encode())
                    .ignore();
            }
        }
        if self.cfg.cluster && self.matches_remote_prefix(&channel) {
            // Another instance listens by prefix (link/patterns.rs).
            pipe.publish(self.px_topic(), env.encode()).ignore();
        }
        self.stats.publishes_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Back after an outage of the cluster (a failover): first what the
    /// other instances published meanwhile on the channels of interest
    /// (from their streams, after the last publication received), then
    /// this instance's publishes held meanwhile.
    pub(super) async fn catch_up(&mut self) -> redis::RedisResult<()> {
        if let Some(since) = self.down_since {
            let topics: Vec<String> = self.interest.exact().map(|c| self.topic(c)).collect();
            bounded(self.refill(&topics, since.saturating_sub(REFILL_SLACK_MS))).await?;
        }
        self.down_since = None;
        if self.held.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let held = std::mem::take(&mut self.held);
        let n = held.len();
        for (seq, p) in held {
            self.queue_publish(&mut pipe, p, seq);
        }
        let mut queued = n;
        self.flush(&mut pipe, &mut queued).await;
        tracing::info!("redis cluster: {n} publishes held during the outage sent");
        Ok(())
    }

    pub(super) async fn flush(&mut self, pipe: &mut redis::Pipeline, queued: &mut usize) {
        if *queued == 0 {
            return;
        }
        *queued = 0;
        let p = std::mem::take(pipe);
        let publishes = std::mem::take(&mut self.in_pipe);
        if self.conn.is_none() {
            // Went away since they were queued (cluster mode: held).
            for (_, seq, p) in publishes.into_iter().rev() {
                if self.held.len() < self.cfg.outage_buffer {
                    self.held.push_front((Some(seq), p));
                } else {
                    self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.stats
            .commands
            .fetch_add(p.cmd_iter().count() as u64, Ordering::Relaxed);
        let router = match &conn.cmd {
            CmdConn::Cluster(r) => r.clone(),
            CmdConn::One(_) => {
                if let Err(e) = bounded(p.query_async::<()>(&mut conn.cmd)).await {
                    self.down(&e.to_string());
                }
                return;
            }
        };
        // On a cluster each command has its own answer: the publishes that
        // did not reach their primary (it died) are held and sent again,
        // with the same sequence number, once the cluster is back.
        let results = match timeout(COMMAND_TIMEOUT, router.exec_each(&p)).await {
            Ok(r) => r,
            Err(_) => return self.down("redis did not answer in time"),
        };
        let mut first_err = None;
        let mut failed = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                first_err.get_or_insert(e);
                if let Some((_, seq, pubn)) = publishes.iter().find(|(k, _, _)| *k == i) {
                    failed.push((Some(*seq), pubn.clone()));
                }
            }
        }
        if let Some(e) = first_err {
            for x in failed.into_iter().rev() {
                if self.held.len() < self.cfg.outage_buffer {
                    self.held.push_front(x);
                } else {
                    self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.down(&e.to_string());
        }
    }
}

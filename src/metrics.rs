//! Prometheus metrics (the `prometheus` crate), exported at `/metrics`.
//!
//! One registry per process ([`families`]). Each shard holds its own
//! children of every family (label `shard`), so the hot path increments
//! atomics that only this shard writes: no lock, no cache line shared with
//! another core. The scrape, served by whichever shard accepted it, reads
//! them all, after setting the gauges that are views of the whole instance
//! (connections per shard, channels, memberships) from a mailbox gather.
//!
//! Deliveries and their latency are measured where a RealtimeEvent frame is
//! handed to a client transport ([`Metrics::packet_out`]): the latency is
//! `now - ts` of the frame (epoch milliseconds, so millisecond resolution),
//! i.e. from the publish to the write of the recipient's batch. The `ts` is
//! read from the frame's last bytes, where `frame` writes it
//! ([`crate::frame::event_ts`]): no search through the frame.
//!
//! Never blocks the shard: `with_label_values` (a lock) runs only on rare
//! paths (a refusal, a close, a REST request) or at shard start.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use proto::engineio::Outgoing;
use shards::{now_ms, CloseReason};

use crate::auth::Refusal;
use crate::frame;

/// Every metric family, registered once per process.
pub struct Families {
    registry: Registry,
    connections: IntGaugeVec,
    sessions: IntGaugeVec,
    pending_sessions: IntGaugeVec,
    shards: IntGaugeVec,
    channels: IntGaugeVec,
    memberships: IntGaugeVec,
    subscriptions: IntGaugeVec,
    mailbox_pending: IntGaugeVec,
    events_in: IntCounterVec,
    deliveries: IntCounterVec,
    packets_out: IntCounterVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    deflated: IntCounterVec,
    deflate_reused: IntCounterVec,
    slow_consumers: IntCounterVec,
    disconnects: IntCounterVec,
    auth_refusals: IntCounterVec,
    rest_requests: IntCounterVec,
    delivery_latency: HistogramVec,
    recoveries: IntCounterVec,
    replayed: IntCounterVec,
    recoverable: IntGaugeVec,
    recovery_log_bytes: IntGaugeVec,
    history_bytes: IntGaugeVec,
    history_events: IntGaugeVec,
}

const PREFIX: &str = "socket_gateway_";

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g =
        IntGaugeVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels)
        .expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// The process-wide families.
pub fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let r = Registry::new();
        let is = &["instance", "shard"];
        let latency = HistogramVec::new(
            HistogramOpts::new(
                format!("{PREFIX}delivery_latency_seconds"),
                "Time from a publish (the event's ts, millisecond resolution) to the write of the recipient's transport batch",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            is,
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone())).expect("unique metric");
        Families {
            connections: gauge(&r, "connections", "Connected Socket.IO sockets", is),
            sessions: gauge(&r, "engineio_sessions", "Open Engine.IO sessions", &["instance"]),
            pending_sessions: gauge(&r, "pending_sessions", "Open Engine.IO sessions without a Socket.IO CONNECT yet (bounded by --max-pending-sessions)", &["instance"]),
            shards: gauge(&r, "shards", "Shards (pinned executors) of this instance", &["instance"]),
            channels: gauge(&r, "channels", "Channels with at least one member on this instance", &["instance"]),
            memberships: gauge(&r, "memberships", "Channel memberships (socket, channel) on this instance", &["instance"]),
            subscriptions: gauge(&r, "subscriptions", "Topic subscriptions held by sockets", is),
            mailbox_pending: gauge(&r, "mailbox_pending_requests", "Questions this shard sent to peers through the mailbox and not yet answered (sampled)", is),
            events_in: counter(&r, "events_in_total", "Client events received (join, publish, ...)", is),
            deliveries: counter(&r, "deliveries_total", "RealtimeEvent frames written to client transports", is),
            packets_out: counter(&r, "packets_out_total", "Engine.IO packets written to client transports", is),
            bytes_in: counter(&r, "bytes_in_total", "Engine.IO payload bytes received from clients", is),
            bytes_out: counter(&r, "bytes_out_total", "Engine.IO payload bytes written to clients", is),
            deflated: counter(&r, "ws_deflate_compressed_total", "Frames (or a frame's shared head) compressed for websockets with permessage-deflate", is),
            deflate_reused: counter(&r, "ws_deflate_reused_total", "Compressed frames written again to other recipients without compressing them again", is),
            slow_consumers: counter(&r, "slow_consumer_disconnects_total", "Sockets cut because their send queue overflowed", is),
            disconnects: counter(&r, "disconnects_total", "Closed Engine.IO sessions by reason", &["instance", "shard", "reason"]),
            auth_refusals: counter(&r, "auth_refusals_total", "Refused Socket.IO connects by reason", &["instance", "shard", "reason"]),
            rest_requests: counter(&r, "rest_requests_total", "REST API requests by route and status", &["instance", "shard", "route", "status"]),
            delivery_latency: latency,
            recoveries: counter(&r, "recoveries_total", "Connection state recoveries attempted, by result (recovered, or why not)", &["instance", "shard", "result"]),
            replayed: counter(&r, "recovery_replayed_total", "Frames given again to recovered sockets", is),
            recoverable: gauge(&r, "recoverable_sockets", "Sockets whose connection dropped, held for recovery", is),
            recovery_log_bytes: gauge(&r, "recovery_log_bytes", "Bytes of delivered frames each shard keeps for recovering sockets", is),
            history_bytes: gauge(&r, "history_bytes", "Bytes of channel history each shard keeps (bounded by --history-bytes; sampled every second)", is),
            history_events: gauge(&r, "history_events", "Events kept in the channel histories of each shard (sampled every second)", is),
            registry: r,
        }
    })
}

/// One shard's handles into the families. Lives in the shard's `ShardCtx`.
pub struct Metrics {
    instance: Arc<str>,
    shard: String,
    events_in: IntCounter,
    deliveries: IntCounter,
    packets_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    deflated: IntCounter,
    deflate_reused: IntCounter,
    slow_consumers: IntCounter,
    subscriptions: IntGauge,
    latency: Histogram,
    replayed: IntCounter,
    recoverable: IntGauge,
    recovery_log_bytes: IntGauge,
    history_bytes: IntGauge,
    history_events: IntGauge,
}

impl Metrics {
    pub fn new(shard: usize, instance: &Arc<str>) -> Self {
        let f = families();
        let s = shard.to_string();
        let l = [&**instance, s.as_str()];
        Metrics {
            events_in: f.events_in.with_label_values(&l),
            deliveries: f.deliveries.with_label_values(&l),
            packets_out: f.packets_out.with_label_values(&l),
            bytes_in: f.bytes_in.with_label_values(&l),
            bytes_out: f.bytes_out.with_label_values(&l),
            deflated: f.deflated.with_label_values(&l),
            deflate_reused: f.deflate_reused.with_label_values(&l),
            slow_consumers: f.slow_consumers.with_label_values(&l),
            subscriptions: f.subscriptions.with_label_values(&l),
            latency: f.delivery_latency.with_label_values(&l),
            replayed: f.replayed.with_label_values(&l),
            recoverable: f.recoverable.with_label_values(&l),
            recovery_log_bytes: f.recovery_log_bytes.with_label_values(&l),
            history_bytes: f.history_bytes.with_label_values(&l),
            history_events: f.history_events.with_label_values(&l),
            instance: instance.clone(),
            shard: s,
        }
    }

    pub fn event_in(&self) {
        self.events_in.inc();
    }

    /// Compressions done and compressed frames reused (permessage-deflate).
    pub fn deflate(&self, compressed: u64, reused: u64) {
        self.deflated.inc_by(compressed);
        self.deflate_reused.inc_by(reused);
    }

    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// One packet handed to a client transport: counts it, and when it is a
    /// RealtimeEvent, the delivery and its latency.
    pub fn packet_out(&self, p: &Outgoing) {
        self.packets_out.inc();
        self.bytes_out.inc_by(p.len() as u64);
        let bytes = match p {
            // A subscription's frame: `ts` ends the shared part.
            Outgoing::Text(b) | Outgoing::TextParts(b, _, _) => b,
            Outgoing::Binary(_) => return,
        };
        if let Some(ts) = frame::event_ts(bytes) {
            self.deliveries.inc();
            let ms = now_ms().saturating_sub(ts);
            self.latency.observe(ms as f64 / 1000.0);
        }
    }

    pub fn subscribed(&self) {
        self.subscriptions.inc();
    }

    pub fn unsubscribed(&self) {
        self.subscriptions.dec();
    }

    /// One recovery attempt's result: `recovered`, or why it was not.
    pub fn recovery(&self, result: &str) {
        families()
            .recoveries
            .with_label_values(&[&self.instance, &self.shard, result])
            .inc();
    }

    pub fn replayed(&self, n: usize) {
        self.replayed.inc_by(n as u64);
    }

    /// Sockets held for recovery on this shard, and its log's bytes.
    pub fn recovery_state(&self, held: usize, log_bytes: usize) {
        self.recoverable.set(held as i64);
        self.recovery_log_bytes.set(log_bytes as i64);
    }

    /// This shard's channel history: bytes held and events kept.
    pub fn history_state(&self, bytes: usize, events: usize) {
        self.history_bytes.set(bytes as i64);
        self.history_events.set(events as i64);
    }

    pub fn auth_refused(&self, reason: Refusal) {
        tracing::debug!(reason = reason.as_str(), "connect refused");
        families()
            .auth_refusals
            .with_label_values(&[&self.instance, &self.shard, reason.as_str()])
            .inc();
    }

    pub fn session_closed(&self, reason: CloseReason) {
        if reason == CloseReason::SlowConsumer {
            tracing::info!("socket disconnected as a slow consumer");
            self.slow_consumers.inc();
        } else if reason == CloseReason::TokenExpired {
            tracing::info!("socket disconnected: token_expired");
        }
        families()
            .disconnects
            .with_label_values(&[&self.instance, &self.shard, reason.as_str()])
            .inc();
    }

    /// Samples this shard's outstanding cross-shard requests
    /// (`Mailbox::pending_requests`). Called by the shard itself (a scrape it
    /// serves, its periodic sweeper), never on the hot path.
    pub fn mailbox_pending(&self, n: usize) {
        families()
            .mailbox_pending
            .with_label_values(&[&self.instance, &self.shard])
            .set(n as i64);
    }

    /// One answered REST request (`route` is the route's template).
    pub fn rest_request(&self, route: &str, status: u16) {
        families()
            .rest_requests
            .with_label_values(&[&self.instance, &self.shard, route, &status.to_string()])
            .inc();
    }
}

/// What a scrape sets before encoding: views of this whole instance.
pub struct InstanceView<'a> {
    pub instance: &'a str,
    pub connections_per_shard: &'a [usize],
    pub sessions: usize,
    pub pending_sessions: usize,
    pub channels: usize,
    pub memberships: usize,
}

/// The Prometheus text exposition of every family.
pub fn encode(view: &InstanceView<'_>) -> Vec<u8> {
    let f = families();
    let i = view.instance;
    for (shard, n) in view.connections_per_shard.iter().enumerate() {
        f.connections
            .with_label_values(&[i, &shard.to_string()])
            .set(*n as i64);
    }
    f.shards
        .with_label_values(&[i])
        .set(view.connections_per_shard.len() as i64);
    f.sessions.with_label_values(&[i]).set(view.sessions as i64);
    f.pending_sessions
        .with_label_values(&[i])
        .set(view.pending_sessions as i64);
    f.channels.with_label_values(&[i]).set(view.channels as i64);
    f.memberships
        .with_label_values(&[i])
        .set(view.memberships as i64);
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&f.registry.gather(), &mut out) {
        tracing::warn!("encoding metrics: {e}");
    }
    out
}

/// The Redis shard's counters, read at scrape time from its atomics (the
/// link thread writes them; no prometheus types on that thread).
struct ClusterCollector {
    stats: Arc<crate::cluster::ClusterStats>,
    instance: String,
    descs: Vec<prometheus::core::Desc>,
}

const CLUSTER_METRICS: &[(&str, &str, bool)] = &[
    (
        "cluster_redis_up",
        "1 while the Redis shard is connected to Redis",
        false,
    ),
    (
        "cluster_redis_connects_total",
        "Successful (re)connections to Redis",
        true,
    ),
    (
        "cluster_publishes_sent_total",
        "Publishes sent to Redis (one per instance-level publish)",
        true,
    ),
    (
        "cluster_publishes_dropped_total",
        "Publishes or deliveries that could not cross (Redis away, queue full)",
        true,
    ),
    (
        "cluster_messages_received_total",
        "Messages this instance received from Redis pub/sub",
        true,
    ),
    (
        "cluster_deliveries_in_total",
        "Publications from other instances handed to a shard",
        true,
    ),
    (
        "cluster_redis_commands_total",
        "Redis commands sent in pipelines",
        true,
    ),
];

impl prometheus::core::Collector for ClusterCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let values = [
            s.up.load(Relaxed) as u64,
            s.reconnects.load(Relaxed),
            s.publishes_sent.load(Relaxed),
            s.publishes_dropped.load(Relaxed),
            s.messages_received.load(Relaxed),
            s.deliveries_in.load(Relaxed),
            s.commands.load(Relaxed),
        ];
        families_of(CLUSTER_METRICS, &values, &self.instance)
    }
}

/// Exports the key set's health (`--jwks-url`; once per process).
pub fn register_jwks(jwks: Arc<crate::jwks::Jwks>, instance: &str) {
    if let Err(e) = families().registry.register(Box::new(JwksCollector {
        jwks,
        instance: instance.into(),
        descs: descs_of(&JWKS_METRICS),
    })) {
        tracing::warn!("jwks metrics: {e}");
    }
}

struct JwksCollector {
    jwks: Arc<crate::jwks::Jwks>,
    instance: String,
    descs: Vec<prometheus::core::Desc>,
}

const JWKS_METRICS: [(&str, &str, bool); 5] = [
    (
        "jwks_up",
        "1 when the last fetch of the JWKS succeeded",
        false,
    ),
    ("jwks_keys", "Keys held from the JWKS", false),
    ("jwks_fetches_total", "Fetches of the JWKS", true),
    (
        "jwks_fetch_failures_total",
        "Failed fetches of the JWKS",
        true,
    ),
    (
        "jwks_unknown_kid_total",
        "Tokens naming a kid the JWKS did not hold",
        true,
    ),
];

impl prometheus::core::Collector for JwksCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let j = &self.jwks;
        let values = [
            j.up.load(Relaxed) as u64,
            j.len() as u64,
            j.fetches.load(Relaxed),
            j.failures.load(Relaxed),
            j.unknown_kids.load(Relaxed),
        ];
        families_of(&JWKS_METRICS, &values, &self.instance)
    }
}

/// The descriptions of [`families_of`]'s families.
fn descs_of(specs: &[(&str, &str, bool)]) -> Vec<prometheus::core::Desc> {
    specs
        .iter()
        .filter_map(|(name, help, _)| {
            prometheus::core::Desc::new(
                format!("{PREFIX}{name}"),
                (*help).into(),
                vec!["instance".into()],
                Default::default(),
            )
            .ok()
        })
        .collect()
}

/// One single-series family per `(name, help, is_counter)`, labelled with
/// the instance.
fn families_of(
    specs: &[(&str, &str, bool)],
    values: &[u64],
    instance: &str,
) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
    specs
        .iter()
        .zip(values)
        .map(|((name, help, is_counter), &v)| {
            let mut label = LabelPair::default();
            label.set_name("instance".into());
            label.set_value(instance.to_string());
            let mut m = Metric::default();
            m.set_label(vec![label]);
            let mut f = MetricFamily::default();
            f.set_name(format!("{PREFIX}{name}"));
            f.set_help((*help).into());
            if *is_counter {
                let mut c = Counter::default();
                c.set_value(v as f64);
                m.set_counter(c);
                f.set_field_type(MetricType::COUNTER);
            } else {
                let mut g = Gauge::default();
                g.set_value(v as f64);
                m.set_gauge(g);
                f.set_field_type(MetricType::GAUGE);
            }
            f.set_metric(vec![m]);
            f
        })
        .collect()
}

/// Exports the cluster link's counters (once per process).
pub fn register_cluster(stats: Arc<crate::cluster::ClusterStats>, instance: &str) {
    let c = ClusterCollector {
        stats,
        instance: instance.into(),
        descs: descs_of(CLUSTER_METRICS),
    };
    if let Err(e) = families().registry.register(Box::new(c)) {
        tracing::warn!("cluster metrics: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_has_the_families() {
        let inst: Arc<str> = "t1".into();
        let m = Metrics::new(0, &inst);
        m.event_in();
        m.packet_out(&Outgoing::Text(bytes::Bytes::from_static(
            br#"42["event",{"id":"a","ts":1}]"#,
        )));
        m.auth_refused(Refusal::Expired);
        let text = String::from_utf8(encode(&InstanceView {
            instance: "t1",
            connections_per_shard: &[3, 4],
            sessions: 7,
            pending_sessions: 2,
            channels: 2,
            memberships: 5,
        }))
        .unwrap();
        for needle in [
            r#"socket_gateway_connections{instance="t1",shard="1"} 4"#,
            r#"socket_gateway_events_in_total{instance="t1",shard="0"} 1"#,
            r#"socket_gateway_deliveries_total{instance="t1",shard="0"} 1"#,
            r#"socket_gateway_auth_refusals_total{instance="t1",reason="expired",shard="0"} 1"#,
            "socket_gateway_delivery_latency_seconds_bucket",
            r#"socket_gateway_pending_sessions{instance="t1"} 2"#,
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}

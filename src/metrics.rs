//! Prometheus metrics (the `prometheus` crate), exported at `/metrics`.
//!
//! One registry per process ([`families`]). Each shard holds its own
//! children of every family (label `shard`), so the hot path increments
//! atomics that only this shard writes: no lock, no cache line shared with
//! another core. The scrape, served by whichever shard accepted it, reads
//! them all, after setting the gauges that are views of the whole instance
//! (connections per shard, channels, memberships) from a mailbox gather.
//!
//! What is counted once per delivery (packets, bytes, deliveries and the
//! latency histogram) is paid once per recipient of every fan-out, so it
//! lives in [`DeliveryStats`]: plain loads and stores of atomics that one
//! shard alone writes, with no locked read-modify-write (a prometheus
//! counter's `inc` is one), read at scrape time by a collector. Nothing
//! lags: a scrape sees every delivery written before it.
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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
    bytes_in: IntCounterVec,
    deflated: IntCounterVec,
    deflate_reused: IntCounterVec,
    slow_consumers: IntCounterVec,
    disconnects: IntCounterVec,
    auth_refusals: IntCounterVec,
    rest_requests: IntCounterVec,
    deliveries: DeliveryCollector,
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
        let deliveries = DeliveryCollector::new();
        r.register(Box::new(deliveries.clone()))
            .expect("unique metric");
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
            bytes_in: counter(&r, "bytes_in_total", "Engine.IO payload bytes received from clients", is),
            deflated: counter(&r, "ws_deflate_compressed_total", "Frames (or a frame's shared head) compressed for websockets with permessage-deflate", is),
            deflate_reused: counter(&r, "ws_deflate_reused_total", "Compressed frames written again to other recipients without compressing them again", is),
            slow_consumers: counter(&r, "slow_consumer_disconnects_total", "Sockets cut because their send queue overflowed", is),
            disconnects: counter(&r, "disconnects_total", "Closed Engine.IO sessions by reason", &["instance", "shard", "reason"]),
            auth_refusals: counter(&r, "auth_refusals_total", "Refused Socket.IO connects by reason", &["instance", "shard", "reason"]),
            rest_requests: counter(&r, "rest_requests_total", "REST API requests by route and status", &["instance", "shard", "route", "status"]),
            deliveries,
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
    /// The last RealtimeEvent frame seen and its `ts` ([`Self::event_ts`]).
    /// Being a `RefCell`, it also keeps `Metrics` from being `Sync`, which
    /// [`DeliveryStats`] relies on: its one writer is the shard holding this.
    last_event: std::cell::RefCell<LastEvent>,
    events_in: IntCounter,
    out: Arc<DeliveryStats>,
    bytes_in: IntCounter,
    deflated: IntCounter,
    deflate_reused: IntCounter,
    slow_consumers: IntCounter,
    subscriptions: IntGauge,
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
            out: f.deliveries.register(instance, &s),
            bytes_in: f.bytes_in.with_label_values(&l),
            deflated: f.deflated.with_label_values(&l),
            deflate_reused: f.deflate_reused.with_label_values(&l),
            slow_consumers: f.slow_consumers.with_label_values(&l),
            subscriptions: f.subscriptions.with_label_values(&l),
            replayed: f.replayed.with_label_values(&l),
            recoverable: f.recoverable.with_label_values(&l),
            recovery_log_bytes: f.recovery_log_bytes.with_label_values(&l),
            history_bytes: f.history_bytes.with_label_values(&l),
            history_events: f.history_events.with_label_values(&l),
            instance: instance.clone(),
            shard: s,
            last_event: Default::default(),
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
        let o = &*self.out;
        DeliveryStats::add(&o.packets, 1);
        DeliveryStats::add(&o.bytes, p.len() as u64);
        let bytes = match p {
            // A subscription's frame: `ts` ends the shared part.
            Outgoing::Text(b) | Outgoing::TextParts(b, _, _) => b,
            Outgoing::Binary(_) => return,
        };
        if let Some(ts) = self.event_ts(bytes) {
            o.observe(now_ms().saturating_sub(ts));
        }
    }

    /// A fan-out hands the same frame to every recipient, so its `ts` is
    /// read once: a frame at the same address, of the same length and with
    /// the same head (which holds the event's id, unique per publication)
    /// is the one seen last, even if that one was freed and its memory
    /// reused.
    fn event_ts(&self, frame: &[u8]) -> Option<u64> {
        let mut last = self.last_event.borrow_mut();
        let head = &frame[..frame.len().min(EVENT_HEAD)];
        if last.ptr == frame.as_ptr() as usize
            && last.len == frame.len()
            && last.head[..head.len()] == *head
        {
            return last.ts;
        }
        let ts = frame::event_ts(frame);
        last.ptr = frame.as_ptr() as usize;
        last.len = frame.len();
        last.head[..head.len()].copy_from_slice(head);
        last.ts = ts;
        ts
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

/// Bytes of a frame's start compared to know it again: `42["event",{"id":"`
/// and the event's id.
const EVENT_HEAD: usize = 64;

/// What [`Metrics::event_ts`] knows of the last frame it read.
struct LastEvent {
    ptr: usize,
    len: usize,
    head: [u8; EVENT_HEAD],
    ts: Option<u64>,
}

impl Default for LastEvent {
    fn default() -> Self {
        LastEvent {
            ptr: 0,
            len: 0,
            head: [0; EVENT_HEAD],
            ts: None,
        }
    }
}

/// Upper bounds of the delivery latency histogram's buckets, milliseconds.
const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// One shard's per-delivery counters and latency histogram. Only the shard
/// that holds the [`Metrics`] writes them (`Metrics` is not `Sync`), so an
/// increment is a load and a store, never a locked read-modify-write; a
/// scrape on another thread reads them as they are.
#[derive(Default)]
struct DeliveryStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Deliveries (RealtimeEvent frames), also the histogram's count.
    deliveries: AtomicU64,
    /// Observations per bucket (not cumulative; the collector sums them).
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    sum_ms: AtomicU64,
}

impl DeliveryStats {
    /// Adds `n` to a counter whose one writer is the calling shard.
    fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    fn observe(&self, ms: u64) {
        Self::add(&self.deliveries, 1);
        Self::add(&self.sum_ms, ms);
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|&b| ms <= b) {
            Self::add(&self.buckets[i], 1);
        }
    }
}

type ShardStats = (Arc<str>, String, Arc<DeliveryStats>);

/// The delivery families: every shard's [`DeliveryStats`], by its labels.
/// A clone is the registry's, sharing the list.
#[derive(Clone)]
struct DeliveryCollector {
    /// (instance, shard, its stats).
    shards: Arc<Mutex<Vec<ShardStats>>>,
    descs: Vec<prometheus::core::Desc>,
}

const DELIVERY_METRICS: [(&str, &str); 4] = [
    ("deliveries_total", "RealtimeEvent frames written to client transports"),
    ("packets_out_total", "Engine.IO packets written to client transports"),
    ("bytes_out_total", "Engine.IO payload bytes written to clients"),
    (
        "delivery_latency_seconds",
        "Time from a publish (the event's ts, millisecond resolution) to the write of the recipient's transport batch",
    ),
];

impl DeliveryCollector {
    fn new() -> Self {
        DeliveryCollector {
            shards: Default::default(),
            descs: descs_of(
                DELIVERY_METRICS.iter().map(|(name, help)| (*name, *help)),
                &["instance", "shard"],
            ),
        }
    }

    /// A shard's stats (at shard start; a second registration of the same
    /// labels, as tests make, takes the first one's place).
    fn register(&self, instance: &Arc<str>, shard: &str) -> Arc<DeliveryStats> {
        let stats = Arc::new(DeliveryStats::default());
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.retain(|(i, s, _)| !(**i == **instance && s == shard));
        shards.push((instance.clone(), shard.to_string(), stats.clone()));
        stats
    }
}

impl prometheus::core::Collector for DeliveryCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Bucket, Counter, Histogram, Metric, MetricFamily, MetricType};
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let mut families: Vec<MetricFamily> = DELIVERY_METRICS
            .iter()
            .enumerate()
            .map(|(k, (name, help))| {
                let mut f = MetricFamily::default();
                f.set_name(format!("{PREFIX}{name}"));
                f.set_help((*help).into());
                f.set_field_type(if k == 3 {
                    MetricType::HISTOGRAM
                } else {
                    MetricType::COUNTER
                });
                f
            })
            .collect();
        for (instance, shard, st) in shards.iter() {
            let labels = || label_pairs(&[("instance", instance), ("shard", shard)]);
            let counters = [&st.deliveries, &st.packets, &st.bytes];
            for (f, c) in families.iter_mut().zip(counters) {
                let mut v = Counter::default();
                v.set_value(c.load(Relaxed) as f64);
                let mut m = Metric::default();
                m.set_label(labels());
                m.set_counter(v);
                f.mut_metric().push(m);
            }
            // Read the buckets before the count: a delivery observed in
            // between then raises the count, never a bucket above it.
            let mut cumulative = 0;
            let buckets: Vec<Bucket> = LATENCY_BUCKETS_MS
                .iter()
                .zip(&st.buckets)
                .map(|(&bound, n)| {
                    cumulative += n.load(Relaxed);
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound as f64 / 1000.0);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut h = Histogram::default();
            h.set_sample_count(st.deliveries.load(Relaxed).max(cumulative));
            h.set_sample_sum(st.sum_ms.load(Relaxed) as f64 / 1000.0);
            h.set_bucket(buckets);
            let mut m = Metric::default();
            m.set_label(labels());
            m.set_histogram(h);
            families[3].mut_metric().push(m);
        }
        families
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
        descs: descs_of(JWKS_METRICS.iter().map(|(n, h, _)| (*n, *h)), &["instance"]),
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

/// The descriptions of families named and explained by `specs`, with
/// these label names.
fn descs_of<'a>(
    specs: impl IntoIterator<Item = (&'a str, &'a str)>,
    labels: &[&str],
) -> Vec<prometheus::core::Desc> {
    specs
        .into_iter()
        .filter_map(|(name, help)| {
            prometheus::core::Desc::new(
                format!("{PREFIX}{name}"),
                help.into(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .ok()
        })
        .collect()
}

/// The label pairs of one series.
fn label_pairs(pairs: &[(&str, &str)]) -> Vec<prometheus::proto::LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = prometheus::proto::LabelPair::default();
            l.set_name(name.to_string());
            l.set_value(value.to_string());
            l
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
    use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
    specs
        .iter()
        .zip(values)
        .map(|((name, help, is_counter), &v)| {
            let mut m = Metric::default();
            m.set_label(label_pairs(&[("instance", instance)]));
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
        descs: descs_of(
            CLUSTER_METRICS.iter().map(|(n, h, _)| (*n, *h)),
            &["instance"],
        ),
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

    #[test]
    fn deliveries_are_counted_by_their_one_writer_and_read_by_a_scrape() {
        let inst: Arc<str> = "t2".into();
        let old = Metrics::new(3, &inst);
        old.packet_out(&Outgoing::Text(bytes::Bytes::from_static(b"3")));
        // The same labels again (a restarted shard, a second test): the
        // new stats replace the old, so the scrape names each series once.
        let m = Metrics::new(3, &inst);
        let now = now_ms();
        for ts in [now, now - 3, now - 7_000] {
            let frame = bytes::Bytes::from(format!(r#"42["event",{{"id":"a","ts":{ts}}}]"#));
            m.packet_out(&Outgoing::Text(frame.clone()));
            if ts == now {
                // A second recipient of the same frame (its `ts` cached).
                m.packet_out(&Outgoing::Text(frame));
            }
        }
        m.packet_out(&Outgoing::Binary(bytes::Bytes::from_static(b"xy")));
        let text = String::from_utf8(encode(&InstanceView {
            instance: "t2",
            connections_per_shard: &[],
            sessions: 0,
            pending_sessions: 0,
            channels: 0,
            memberships: 0,
        }))
        .unwrap();
        let series = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(name) && l.contains(r#"instance="t2""#))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(series("socket_gateway_deliveries_total"), [4.0]);
        assert_eq!(series("socket_gateway_packets_out_total"), [5.0]);
        assert_eq!(
            series("socket_gateway_delivery_latency_seconds_count"),
            [4.0]
        );
        let sum = series("socket_gateway_delivery_latency_seconds_sum")[0];
        assert!((7.003..=7.01).contains(&sum), "{sum}");
        // Cumulative buckets: ≤1 ms holds the first two (a slow test may
        // see 1-2 ms), ≤5 ms the first three, 7 s only +Inf.
        let buckets = series("socket_gateway_delivery_latency_seconds_bucket");
        assert_eq!(buckets.len(), LATENCY_BUCKETS_MS.len() + 1, "{text}");
        assert!(buckets[0] >= 1.0 && buckets[2] == 3.0, "{buckets:?}");
        assert_eq!(buckets[LATENCY_BUCKETS_MS.len() - 1], 3.0);
        assert_eq!(buckets[LATENCY_BUCKETS_MS.len()], 4.0);
        assert!(text.contains(r#"socket_gateway_bytes_out_total{instance="t2",shard="3"}"#));
    }
}

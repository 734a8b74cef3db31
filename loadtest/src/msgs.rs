//! The message scenarios: `fanout` (with optional churn) and `direct`.
//!
//! One thread, edge-triggered epoll, the minimal client of [`crate::client`]. Subscribers parse
//! every RealtimeEvent they get, record end-to-end latency (publish intended/actual send time →
//! receipt, CLOCK_MONOTONIC, so valid across processes on one machine) and account sequence
//! numbers per (publisher, channel) stream.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{self, find, find_str, find_u64, Conn, Ev, State};
use crate::report::Latency;
use crate::seqs::Stream;
use crate::target::Target;
use crate::token::{connect_packet, Minter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Scenario {
    Fanout,
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Membership {
    /// `join` (members, with presence events)
    Join,
    /// `subscribe` (no presence)
    Subscribe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum CoCorrection {
    /// Rate mode stamps each message with the time it was scheduled to be sent (wrk2 style):
    /// a sender or server stall counts for every message it delays.
    Intended,
    /// Stamp the actual send time and use hdrhistogram's `record_correct` with the expected
    /// interval between two messages of one stream at the requested rate.
    Record,
    /// Actual send time, no correction.
    None,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub urls: Vec<String>,
    pub jwt_secret: String,
    pub subscribers: u64,
    pub channels: u64,
    pub publishers: u64,
    pub pairs: u64,
    /// Total messages sent per second by all senders; None = `--max`.
    pub rate: Option<f64>,
    /// Outstanding acks per sender in `--max` mode.
    pub window: u64,
    /// `--max`: messages per sender whose deliveries (to this process's receivers) may be
    /// outstanding; 0 = acks only.
    pub delivery_window: u64,
    pub duration: f64,
    pub warmup: f64,
    /// Longest wait for in-flight deliveries after the senders stop.
    pub drain: f64,
    pub membership: Membership,
    pub churn_rate: f64,
    pub source_addrs: Vec<IpAddr>,
    pub co: CoCorrection,
    /// (index, count) when this process is one of several.
    pub child: Option<(u64, u64)>,
    pub run_id: String,
    pub read_buffer: usize,
    pub max_inflight: u64,
    pub setup_timeout: f64,
    pub quiet: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub urls: Vec<String>,
    pub processes: u64,
    pub subscribers: u64,
    pub channels: u64,
    pub publishers: u64,
    pub pairs: u64,
    pub membership: String,
    /// Requested total send rate; None = max.
    pub rate: Option<f64>,
    pub window: u64,
    /// `--max`: deliveries allowed in flight (this process), if limited.
    pub delivery_limit: Option<u64>,
    pub co_correction: String,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    // connections
    pub conn_attempted: u64,
    pub conn_ok: u64,
    pub conn_failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Established connections lost during the run.
    pub dropped: u64,
    pub drop_reasons: BTreeMap<String, u64>,
    pub setup_secs: f64,
    // sending
    pub sent: u64,
    pub sent_in_window: u64,
    pub sends_per_sec: f64,
    pub acks_ok: u64,
    pub ack_errors: BTreeMap<String, u64>,
    /// Rate mode: sends skipped because a sender's socket had over 16 MiB queued.
    pub sends_skipped: u64,
    // receiving
    pub deliveries: u64,
    pub deliveries_in_window: u64,
    pub deliveries_per_sec: f64,
    pub latency: Latency,
    /// hdrhistogram V2 serialization (base64) of end-to-end latency in microseconds.
    pub latency_hist_v2: String,
    pub lost: u64,
    /// Lost within what was received (skipped sequence numbers), without publisher counts.
    pub gap_lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Deliveries for a channel or from a sender this socket should not get.
    pub misrouted: u64,
    pub presence_events: u64,
    pub other_events: u64,
    // churn
    pub churn_rate: f64,
    pub churn_started: u64,
    pub churn_completed: u64,
    pub churn_failed: u64,
    pub churn_skipped: u64,
    // for merging: fanout publish counts [publisher][channel], distinct receipts, subscribers
    pub published: Vec<Vec<u64>>,
    pub distinct: Vec<Vec<u64>>,
    pub subs_per_channel: Vec<u64>,
    /// Direct: lost computed in the process (pairs do not span processes).
    pub direct_lost: u64,
    pub client_peak_rss_kib: Vec<u64>,
    pub client_cpu_secs: Vec<f64>,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")
}

pub fn hist_to_b64(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serialize");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn hist_from_b64(s: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    if s.is_empty() {
        return Ok(new_hist());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram: {e:?}"))
}

fn add_matrix(a: &mut Vec<Vec<u64>>, b: &[Vec<u64>]) {
    if a.len() < b.len() {
        a.resize(b.len(), vec![]);
    }
    for (ra, rb) in a.iter_mut().zip(b) {
        if ra.len() < rb.len() {
            ra.resize(rb.len(), 0);
        }
        for (x, y) in ra.iter_mut().zip(rb) {
            *x += y;
        }
    }
}

fn add_map(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

impl Report {
    /// Fills the derived figures (lost, rates, percentiles) from the raw counts.
    pub fn finish(&mut self, hist: &Histogram<u64>) {
        self.latency = Latency::from_histogram(hist);
        self.latency_hist_v2 = hist_to_b64(hist);
        self.deliveries_per_sec = self.deliveries_in_window as f64 / self.duration_secs.max(1e-9);
        self.sends_per_sec = self.sent_in_window as f64 / self.duration_secs.max(1e-9);
        self.lost = if self.scenario == "direct" {
            self.direct_lost
        } else if self.publishers == 0 {
            self.gap_lost
        } else {
            let mut expected = 0u64;
            for row in &self.published {
                for (c, n) in row.iter().enumerate() {
                    expected += n * self.subs_per_channel.get(c).copied().unwrap_or(0);
                }
            }
            let got: u64 = self.distinct.iter().flatten().sum();
            expected.saturating_sub(got)
        };
    }

    /// Merges the reports of several processes of one run.
    pub fn merge(parts: &[Report]) -> Result<Report, String> {
        let mut r = parts.first().cloned().ok_or("no reports to merge")?;
        let mut hist = hist_from_b64(&r.latency_hist_v2)?;
        r.processes = parts.len() as u64;
        for p in &parts[1..] {
            r.conn_attempted += p.conn_attempted;
            r.conn_ok += p.conn_ok;
            r.conn_failed += p.conn_failed;
            add_map(&mut r.failures, &p.failures);
            r.dropped += p.dropped;
            add_map(&mut r.drop_reasons, &p.drop_reasons);
            r.setup_secs = r.setup_secs.max(p.setup_secs);
            r.sent += p.sent;
            r.sent_in_window += p.sent_in_window;
            r.acks_ok += p.acks_ok;
            add_map(&mut r.ack_errors, &p.ack_errors);
            r.sends_skipped += p.sends_skipped;
            r.deliveries += p.deliveries;
            r.deliveries_in_window += p.deliveries_in_window;
            hist.add(hist_from_b64(&p.latency_hist_v2)?)
                .map_err(|e| format!("{e:?}"))?;
            r.gap_lost += p.gap_lost;
            r.duplicated += p.duplicated;
            r.out_of_order += p.out_of_order;
            r.misrouted += p.misrouted;
            r.presence_events += p.presence_events;
            r.other_events += p.other_events;
            r.churn_started += p.churn_started;
            r.churn_completed += p.churn_completed;
            r.churn_failed += p.churn_failed;
            r.churn_skipped += p.churn_skipped;
            add_matrix(&mut r.published, &p.published);
            add_matrix(&mut r.distinct, &p.distinct);
            let mut spc = vec![r.subs_per_channel.clone()];
            add_matrix(&mut spc, std::slice::from_ref(&p.subs_per_channel));
            r.subs_per_channel = spc.pop().unwrap_or_default();
            r.direct_lost += p.direct_lost;
            r.client_peak_rss_kib.extend(&p.client_peak_rss_kib);
            r.client_cpu_secs.extend(&p.client_cpu_secs);
        }
        r.finish(&hist);
        Ok(r)
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let rate = match self.rate {
            Some(r) => format!("{r:.0} msg/s requested"),
            None => format!(
                "max (window {} acks per sender{})",
                self.window,
                self.delivery_limit
                    .map(|d| format!(", {d} deliveries in flight"))
                    .unwrap_or_default()
            ),
        };
        let _ = writeln!(
            w,
            "scenario            {}  ({})",
            self.scenario,
            self.urls.join(", ")
        );
        if self.scenario == "direct" {
            let _ = writeln!(
                w,
                "shape               {} pairs, {}, {} process(es)",
                self.pairs, rate, self.processes
            );
        } else {
            let _ = writeln!(
                w,
                "shape               {} subscribers ({}) over {} channels, {} publishers, {}, {} process(es)",
                self.subscribers, self.membership, self.channels, self.publishers, rate, self.processes
            );
        }
        let _ = writeln!(
            w,
            "connections         attempted {}  ok {}  failed {}  dropped during run {}  (setup {:.2} s)",
            self.conn_attempted, self.conn_ok, self.conn_failed, self.dropped, self.setup_secs
        );
        for (k, v) in &self.failures {
            let _ = writeln!(w, "  failure           {k}: {v}");
        }
        for (k, v) in &self.drop_reasons {
            let _ = writeln!(w, "  dropped           {k}: {v}");
        }
        let _ = writeln!(
            w,
            "window              warmup {:.1} s, measured {:.1} s",
            self.warmup_secs, self.duration_secs
        );
        let _ = writeln!(
            w,
            "sent                {} total, {:.0}/s in window; acks ok {}{}",
            self.sent,
            self.sends_per_sec,
            self.acks_ok,
            if self.sends_skipped > 0 {
                format!("; skipped (backpressure) {}", self.sends_skipped)
            } else {
                String::new()
            }
        );
        for (k, v) in &self.ack_errors {
            let _ = writeln!(w, "  ack error         {k}: {v}");
        }
        let _ = writeln!(
            w,
            "deliveries          {} total, {:.0}/s in window",
            self.deliveries, self.deliveries_per_sec
        );
        let l = &self.latency;
        let _ = writeln!(
            w,
            "latency ms          p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n {}, CO: {})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count, self.co_correction
        );
        let _ = writeln!(
            w,
            "integrity           lost {}  duplicated {}  out of order {}  misrouted {}",
            self.lost, self.duplicated, self.out_of_order, self.misrouted
        );
        if self.presence_events + self.other_events > 0 {
            let _ = writeln!(
                w,
                "other events        presence {}  other {}",
                self.presence_events, self.other_events
            );
        }
        if self.churn_rate > 0.0 {
            let _ = writeln!(
                w,
                "churn               {:.0}/s requested: started {} completed {} failed {} skipped {}",
                self.churn_rate, self.churn_started, self.churn_completed, self.churn_failed, self.churn_skipped
            );
        }
        if !self.client_cpu_secs.is_empty() {
            let _ = writeln!(
                w,
                "client              CPU {:.2} s, peak RSS {} KiB (per process: {:?} s, {:?} KiB)",
                self.client_cpu_secs.iter().sum::<f64>(),
                self.client_peak_rss_kib.iter().sum::<u64>(),
                self.client_cpu_secs
                    .iter()
                    .map(|x| (x * 100.0).round() / 100.0)
                    .collect::<Vec<_>>(),
                self.client_peak_rss_kib
            );
        }
        s
    }
}

pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Arms `timerfd` (CLOCK_MONOTONIC) to fire once at `at_ns`.
pub fn arm_timerfd(timerfd: i32, at_ns: u64) {
    let ts = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (at_ns / 1_000_000_000) as i64,
            // Zero would disarm it.
            tv_nsec: (at_ns % 1_000_000_000).max(1) as i64,
        },
    };
    unsafe { libc::timerfd_settime(timerfd, libc::TFD_TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
}

/// What a received Socket.IO packet is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// An `event` delivery with our payload: (seq, publisher, ch, sent_ns).
    Delivery {
        seq: u64,
        publisher: u64,
        ch: u64,
        sent_ns: u64,
    },
    /// `event` without our payload.
    ForeignEvent,
    Presence,
    ErrorEvent,
    Ack {
        id: u64,
        ok: bool,
        code: Option<&'a str>,
    },
    Other,
}

pub fn classify(t: &[u8]) -> Incoming<'_> {
    if let Some(rest) = t.strip_prefix(b"42") {
        if rest.starts_with(b"[\"event\"") {
            let Some(d) = find(rest, b"\"data\":") else {
                return Incoming::ForeignEvent;
            };
            let data = &rest[d..];
            match (
                find_u64(data, b"\"seq\":"),
                find_u64(data, b"\"publisher\":"),
                find_u64(data, b"\"sent_ns\":"),
            ) {
                (Some(seq), Some(publisher), Some(sent_ns)) => Incoming::Delivery {
                    seq,
                    publisher,
                    ch: find_u64(data, b"\"ch\":").unwrap_or(0),
                    sent_ns,
                },
                _ => Incoming::ForeignEvent,
            }
        } else if rest.starts_with(b"[\"presence\"") {
            Incoming::Presence
        } else if rest.starts_with(b"[\"error\"") {
            Incoming::ErrorEvent
        } else {
            Incoming::Other
        }
    } else if let Some(rest) = t.strip_prefix(b"43") {
        let Some((id, i)) = client::parse_u64_at(rest, 0) else {
            return Incoming::Other;
        };
        let body = &rest[i..];
        let ok = find(body, b"\"ok\":true").is_some();
        let code = if ok {
            None
        } else {
            find_str(body, b"\"code\":")
        };
        Incoming::Ack { id, ok, code }
    } else {
        Incoming::Other
    }
}

enum Role {
    Subscriber {
        channel: u64,
    },
    /// Fanout publisher `p` (global index).
    Publisher {
        p: u64,
    },
    /// Direct peer with sender id `id` (pair k: ids 2k and 2k+1); `to` is the partner's sid.
    Peer {
        id: u64,
        partner: usize,
        to: String,
    },
    /// Connect → join → leave → disconnect; stage 1: join sent, 2: leave sent.
    Churner {
        stage: u8,
        channel: u64,
    },
}

struct Sender {
    /// Rate mode: next scheduled send, ns (monotonic).
    next_due: u64,
    outstanding: u64,
    /// Per target (channel for fanout, one for direct): count sent = next sequence number.
    seqs: Vec<u64>,
    k: u64,
}

struct Slot {
    conn: Conn,
    url: usize,
    role: Role,
    up: bool,
    ready: bool,
    next_ack: u64,
    streams: Vec<Stream>,
    sender: Option<Sender>,
    /// Got a delivery stamped at or after the measured window's end.
    past_window: bool,
}

enum Spec {
    Sub { channel: u64, url: usize },
    Pub { p: u64 },
    Pair { k: u64 },
}

const MAX_QUEUED: usize = 16 << 20;
const GO_TOKEN: u64 = u64::MAX;
const TIMER_TOKEN: u64 = u64::MAX - 1;

struct Run<'a> {
    o: &'a Options,
    epfd: i32,
    timerfd: i32,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    requests: Vec<Vec<u8>>,
    addrs: Vec<SocketAddr>,
    minter: Minter,
    r: Report,
    hist: Histogram<u64>,
    /// Monotonic ns bounds of the measured window (send time for latency, receipt for rate).
    win: (u64, u64),
    sending: bool,
    interval_ns: u64,
    expected_interval_us: u64,
    buf: String,
    token_n: u64,
    /// Opened, not yet ready (connected + joined), not failed.
    pending_setup: u64,
    last_delivery: Instant,
    churn_inflight: u64,
    churn_n: u64,
    /// Folded stream/sender figures of closed or finished slots.
    published: Vec<Vec<u64>>,
    distinct: Vec<Vec<u64>>,
    direct_sent: Vec<u64>,
    direct_distinct: Vec<u64>,
    setup_done: bool,
    /// Slots with more to read that gave way to others.
    again: Vec<usize>,
    /// `--max`: deliveries expected by this process's receivers for what its senders sent,
    /// and received; senders wait while more than `delivery_limit` are in flight.
    expected_local: u64,
    received_local: u64,
    delivery_limit: u64,
    local_subs: Vec<u64>,
    /// Start time given by the parent process, so that all measure the same window.
    go_at: Option<u64>,
}

/// The channel index of the message just queued by a publisher (its `k` was incremented).
fn snd_k_before(slot: &Slot) -> u64 {
    match (&slot.role, &slot.sender) {
        (Role::Publisher { p }, Some(s)) => p + s.k - 1,
        _ => 0,
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.epfd);
            libc::close(self.timerfd);
        }
    }
}

fn fanout_data(buf: &mut String, seq: u64, p: u64, c: u64, t: u64) {
    let _ = write!(
        buf,
        "{{\"seq\":{seq},\"publisher\":{p},\"ch\":{c},\"sent_ns\":{t}}}"
    );
}

impl<'a> Run<'a> {
    fn channel_name(&self, c: u64) -> String {
        format!("lt-{}-{}", self.o.run_id, c)
    }

    fn fail(&mut self, why: &str) {
        self.r.conn_failed += 1;
        *self.r.failures.entry(why.to_string()).or_default() += 1;
    }

    fn open(&mut self, url: usize, role: Role, nstreams: usize, sender: bool) -> Option<usize> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.r.conn_attempted += 1;
        self.token_n += 1;
        let src = if self.o.source_addrs.is_empty() {
            None
        } else {
            Some(self.o.source_addrs[self.token_n as usize % self.o.source_addrs.len()])
        };
        match client::tcp_connect(self.epfd, idx as u64, self.addrs[url], src) {
            Ok(stream) => {
                let child = self.o.child.map(|c| c.0).unwrap_or(0);
                let token = self.minter.mint(child * 1_000_000_000 + self.token_n);
                let conn = Conn::new(stream, connect_packet(&token), self.o.read_buffer);
                let nseq = match &role {
                    Role::Publisher { .. } => self.o.channels as usize,
                    _ => 1,
                };
                self.slots[idx] = Some(Slot {
                    conn,
                    url,
                    role,
                    up: false,
                    ready: false,
                    next_ack: 1,
                    streams: vec![Stream::default(); nstreams],
                    past_window: false,
                    sender: sender.then(|| Sender {
                        next_due: 0,
                        outstanding: 0,
                        seqs: vec![0; nseq],
                        k: 0,
                    }),
                });
                Some(idx)
            }
            Err(why) => {
                self.free.push(idx);
                self.fail(why);
                None
            }
        }
    }

    fn open_spec(&mut self, spec: &Spec) {
        let nurls = self.addrs.len();
        let p = self.o.publishers.max(1) as usize;
        match *spec {
            Spec::Sub { channel, url } => {
                if self
                    .open(url, Role::Subscriber { channel }, p, false)
                    .is_some()
                {
                    self.pending_setup += 1;
                }
            }
            Spec::Pub { p } => {
                if self.open(0, Role::Publisher { p }, 0, true).is_some() {
                    self.pending_setup += 1;
                }
            }
            Spec::Pair { k } => {
                let a = self.open(
                    0,
                    Role::Peer {
                        id: 2 * k,
                        partner: usize::MAX,
                        to: String::new(),
                    },
                    1,
                    true,
                );
                let b = self.open(
                    (k as usize) % nurls,
                    Role::Peer {
                        id: 2 * k + 1,
                        partner: a.unwrap_or(usize::MAX),
                        to: String::new(),
                    },
                    1,
                    true,
                );
                if let (Some(a), Some(b)) = (a, b) {
                    if let Some(Slot {
                        role: Role::Peer { partner, .. },
                        ..
                    }) = self.slots[a].as_mut()
                    {
                        *partner = b;
                    }
                    self.pending_setup += 2;
                } else {
                    // A pair with one side missing is useless: close the other one.
                    for i in [a, b].into_iter().flatten() {
                        self.slots[i] = None;
                        self.free.push(i);
                        self.fail("partner failed to connect");
                        self.r.conn_attempted -= 0;
                    }
                }
            }
        }
    }

    /// Folds a slot's figures into the run totals (when it closes, or at the end).
    fn fold(&mut self, slot: &Slot) {
        for s in &slot.streams {
            self.r.duplicated += s.duplicates;
            self.r.out_of_order += s.out_of_order;
            self.r.gap_lost += s.gap_lost();
        }
        match &slot.role {
            Role::Subscriber { channel } if slot.ready && self.o.publishers > 0 => {
                for (p, s) in slot.streams.iter().enumerate() {
                    self.distinct[p][*channel as usize] += s.distinct;
                }
            }
            Role::Publisher { p } => {
                if let Some(snd) = &slot.sender {
                    for (c, n) in snd.seqs.iter().enumerate() {
                        self.published[*p as usize][c] += n;
                    }
                }
            }
            Role::Peer { id, .. } => {
                let id = *id as usize;
                if id < self.direct_sent.len() {
                    self.direct_sent[id] += slot.sender.as_ref().map(|s| s.seqs[0]).unwrap_or(0);
                    self.direct_distinct[id] += slot.streams[0].distinct;
                }
            }
            _ => {}
        }
    }

    fn close_slot(&mut self, idx: usize, slot: Slot, why: &str) {
        match slot.role {
            Role::Churner { .. } => {
                self.churn_inflight -= 1;
                self.r.churn_failed += 1;
                *self.r.failures.entry(format!("churn: {why}")).or_default() += 1;
            }
            _ if slot.ready && self.setup_done => {
                if let Role::Subscriber { channel } = slot.role {
                    // Its share of what is sent from now on will never arrive: stop expecting
                    // it, and forget what it owed, so the delivery window cannot stall.
                    if let Some(n) = self.local_subs.get_mut(channel as usize) {
                        *n = n.saturating_sub(1);
                    }
                    self.expected_local = self.received_local;
                }
                self.r.dropped += 1;
                *self.r.drop_reasons.entry(why.to_string()).or_default() += 1;
            }
            _ => {
                if slot.ready || slot.up {
                    self.pending_setup -= u64::from(!slot.ready);
                } else {
                    self.pending_setup -= 1;
                }
                if slot.ready {
                    self.r.dropped += 1;
                    *self.r.drop_reasons.entry(why.to_string()).or_default() += 1;
                } else {
                    self.fail(why);
                }
            }
        }
        self.fold(&slot);
        drop(slot);
        self.free.push(idx);
    }

    fn make_ready(&mut self, slot: &mut Slot) {
        if !slot.ready {
            slot.ready = true;
            self.pending_setup -= 1;
        }
    }

    /// Queues one message from a sender slot; false when skipped.
    fn send_one(&mut self, slot: &mut Slot, stamp: u64) -> bool {
        if slot.conn.pending_write() > MAX_QUEUED {
            self.r.sends_skipped += 1;
            return false;
        }
        let ack = slot.next_ack;
        slot.next_ack += 1;
        let snd = slot.sender.as_mut().expect("sender");
        self.buf.clear();
        match &slot.role {
            Role::Publisher { p } => {
                let c = (p + snd.k) % self.o.channels;
                let seq = snd.seqs[c as usize];
                snd.seqs[c as usize] += 1;
                let _ = write!(
                    self.buf,
                    "42{ack}[\"publish\",{{\"channel\":\"lt-{}-{c}\",\"event\":\"lt\",\"data\":",
                    self.o.run_id
                );
                fanout_data(&mut self.buf, seq, *p, c, stamp);
                self.buf.push_str("}]");
            }
            Role::Peer { id, to, .. } => {
                let seq = snd.seqs[0];
                snd.seqs[0] += 1;
                let _ = write!(
                    self.buf,
                    "42{ack}[\"direct\",{{\"to\":\"{to}\",\"event\":\"lt\",\"data\":"
                );
                fanout_data(&mut self.buf, seq, *id, 0, stamp);
                self.buf.push_str("}]");
            }
            _ => unreachable!(),
        }
        snd.k += 1;
        snd.outstanding += 1;
        slot.conn.queue_text(self.buf.as_bytes());
        self.r.sent += 1;
        self.expected_local += match &slot.role {
            Role::Publisher { .. } => {
                let c = ((snd_k_before(slot)) % self.o.channels) as usize;
                self.local_subs.get(c).copied().unwrap_or(0)
            }
            _ => 1,
        };
        if stamp >= self.win.0 && stamp < self.win.1 {
            self.r.sent_in_window += 1;
        }
        true
    }

    fn refill(&mut self, slot: &mut Slot) {
        if !self.sending || self.o.rate.is_some() || !slot.ready {
            return;
        }
        while slot
            .sender
            .as_ref()
            .is_some_and(|s| s.outstanding < self.o.window)
            && self.expected_local.saturating_sub(self.received_local) < self.delivery_limit
        {
            if !self.send_one(slot, mono_ns()) {
                break;
            }
        }
    }

    fn on_connected(&mut self, slot: &mut Slot) {
        self.buf.clear();
        match &mut slot.role {
            Role::Subscriber { channel } => {
                let name = self.channel_name(*channel);
                let ev = match self.o.membership {
                    Membership::Join => {
                        format!("42{}[\"join\",{{\"channel\":\"{name}\"}}]", slot.next_ack)
                    }
                    Membership::Subscribe => format!(
                        "42{}[\"subscribe\",{{\"topic\":\"{name}\"}}]",
                        slot.next_ack
                    ),
                };
                slot.next_ack += 1;
                slot.conn.queue_text(ev.as_bytes());
            }
            Role::Publisher { .. } | Role::Peer { .. } => {
                self.make_ready(slot);
            }
            Role::Churner { stage, channel } => {
                let ev = format!(
                    "42{}[\"join\",{{\"channel\":\"lt-{}-{}\"}}]",
                    slot.next_ack, self.o.run_id, channel
                );
                slot.next_ack += 1;
                *stage = 1;
                slot.conn.queue_text(ev.as_bytes());
            }
        }
    }

    /// Handles one message; Some(reason) to close the slot (not an error for churners done).
    fn on_message(&mut self, slot: &mut Slot, s: usize, e: usize) -> Option<&'static str> {
        let text = &slot.conn.buf()[s..e];
        match classify(text) {
            Incoming::Delivery {
                seq,
                publisher,
                ch,
                sent_ns,
            } => {
                let stream = match &slot.role {
                    Role::Subscriber { channel } => {
                        if self.o.publishers == 0 {
                            Some(0)
                        } else if publisher < self.o.publishers && ch == *channel {
                            Some(publisher as usize)
                        } else {
                            None
                        }
                    }
                    Role::Peer { id, .. } => (publisher == id ^ 1).then_some(0),
                    _ => {
                        self.r.other_events += 1;
                        return None;
                    }
                };
                let now = mono_ns();
                self.r.deliveries += 1;
                self.last_delivery = Instant::now();
                if now >= self.win.0 && now < self.win.1 {
                    self.r.deliveries_in_window += 1;
                }
                match stream {
                    Some(i) => {
                        let st = &mut slot.streams[i];
                        if self.o.publishers == 0 && st.next == 0 && st.distinct == 0 {
                            // An outside sender's stream starts where this socket came in.
                            st.next = seq;
                        }
                        st.record(seq);
                        self.received_local += 1;
                    }
                    None => self.r.misrouted += 1,
                }
                slot.past_window |= sent_ns >= self.win.1;
                if sent_ns >= self.win.0 && sent_ns < self.win.1 {
                    let us = (now.saturating_sub(sent_ns) / 1000).max(1);
                    if self.o.co == CoCorrection::Record && self.o.rate.is_some() {
                        let _ = self.hist.record_correct(us, self.expected_interval_us);
                    } else {
                        let _ = self.hist.record(us);
                    }
                }
                None
            }
            Incoming::ForeignEvent | Incoming::Other | Incoming::ErrorEvent => {
                self.r.other_events += 1;
                None
            }
            Incoming::Presence => {
                self.r.presence_events += 1;
                None
            }
            Incoming::Ack { ok, code, .. } => {
                let code = code.map(|c| c.to_string());
                match &mut slot.role {
                    Role::Subscriber { .. } => {
                        if ok {
                            self.make_ready(slot);
                            None
                        } else {
                            Some(match self.o.membership {
                                Membership::Join => "join refused",
                                Membership::Subscribe => "subscribe refused",
                            })
                        }
                    }
                    Role::Publisher { .. } | Role::Peer { .. } => {
                        if let Some(snd) = slot.sender.as_mut() {
                            snd.outstanding = snd.outstanding.saturating_sub(1);
                        }
                        if ok {
                            self.r.acks_ok += 1;
                        } else {
                            *self
                                .r
                                .ack_errors
                                .entry(code.unwrap_or_else(|| "?".into()))
                                .or_default() += 1;
                        }
                        None
                    }
                    Role::Churner { stage, channel } => {
                        if !ok {
                            return Some("churn: refused");
                        }
                        if *stage == 1 {
                            let ev = format!(
                                "42{}[\"leave\",{{\"channel\":\"lt-{}-{}\"}}]",
                                slot.next_ack, self.o.run_id, channel
                            );
                            slot.next_ack += 1;
                            *stage = 2;
                            slot.conn.queue_text(ev.as_bytes());
                            None
                        } else {
                            Some("churn: done")
                        }
                    }
                }
            }
        }
    }

    fn on_event(&mut self, idx: usize, events: u32) {
        let Some(mut slot) = self.slots[idx].take() else {
            return;
        };
        slot.conn.ready(events);
        let mut close: Option<&'static str> = None;
        if events & libc::EPOLLOUT as u32 != 0
            && !matches!(
                slot.conn.state,
                State::TcpConnecting | State::SendingUpgrade
            )
            && slot.conn.flush().is_err()
        {
            close = Some("write error");
        }
        let mut budget = 256;
        while close.is_none() {
            if budget == 0 {
                // Fairness: come back to this one after the others (edge-triggered, so it
                // will not be reported again until it has been drained).
                self.again.push(idx);
                break;
            }
            budget -= 1;
            match slot.conn.poll(&self.requests[slot.url]) {
                Ev::Idle => break,
                Ev::Closed(why) => close = Some(why),
                Ev::Connected => {
                    slot.up = true;
                    self.r.conn_ok += 1;
                    self.on_connected(&mut slot);
                }
                Ev::Message(s, e) => close = self.on_message(&mut slot, s, e),
            }
        }
        if close.is_none() {
            self.refill(&mut slot);
            if slot.conn.flush().is_err() {
                close = Some("write error");
            }
        }
        match close {
            None => self.slots[idx] = Some(slot),
            Some("churn: done") => {
                self.churn_inflight -= 1;
                self.r.churn_completed += 1;
                self.free.push(idx);
            }
            Some(why) => self.close_slot(idx, slot, why),
        }
    }

    fn arm_timer(&self, at_ns: u64) {
        arm_timerfd(self.timerfd, at_ns);
    }

    /// One epoll round; returns true when the GO line arrived on stdin.
    fn poll(&mut self, events: &mut [libc::epoll_event], timeout_ms: i32) -> bool {
        let again = std::mem::take(&mut self.again);
        let timeout_ms = if again.is_empty() { timeout_ms } else { 0 };
        for idx in again {
            self.on_event(idx, 0);
        }
        let k = unsafe {
            libc::epoll_wait(
                self.epfd,
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        let mut go = false;
        for ev in events.iter().take(k.max(0) as usize) {
            let (tok, e) = (ev.u64, ev.events);
            if tok == TIMER_TOKEN {
                let mut b = [0u8; 8];
                unsafe { libc::read(self.timerfd, b.as_mut_ptr() as *mut libc::c_void, 8) };
            } else if tok == GO_TOKEN {
                let mut line = String::new();
                let n = io::stdin().lock().read_line(&mut line).unwrap_or(0);
                if n == 0 {
                    go = true;
                } else if let Some(rest) = line.trim().strip_prefix("GO") {
                    // `GO <t0>`: the common start (CLOCK_MONOTONIC ns) of every process.
                    self.go_at = rest.trim().parse().ok();
                    go = true;
                }
            } else {
                self.on_event(tok as usize, e);
            }
        }
        go
    }

    fn ready_count(&self) -> u64 {
        self.slots.iter().flatten().filter(|s| s.ready).count() as u64
    }
}

/// Runs one process's share of the scenario.
pub fn run(o: &Options) -> Result<Report, String> {
    if o.urls.is_empty() {
        return Err("no --url".into());
    }
    let targets: Vec<Target> = o
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = targets
        .iter()
        .map(|t| t.resolve())
        .collect::<Result<_, _>>()?;
    let (ci, cn) = o.child.unwrap_or((0, 1));
    if o.scenario == Scenario::Fanout && o.channels == 0 {
        return Err("--channels must be at least 1".into());
    }
    if let Some(r) = o.rate {
        if r <= 0.0 {
            return Err("--rate must be positive".into());
        }
    }
    let mut specs = Vec::new();
    match o.scenario {
        Scenario::Fanout => {
            for s in (0..o.subscribers).filter(|s| s % cn == ci) {
                specs.push(Spec::Sub {
                    channel: s % o.channels,
                    url: s as usize % addrs.len(),
                });
            }
            if ci == 0 {
                for p in 0..o.publishers {
                    specs.push(Spec::Pub { p });
                }
            }
        }
        Scenario::Direct => {
            for k in (0..o.pairs).filter(|k| k % cn == ci) {
                specs.push(Spec::Pair { k });
            }
        }
    }
    let nconns = specs.len() as u64
        + if o.scenario == Scenario::Direct {
            specs.len() as u64
        } else {
            0
        };
    let limit = crate::connect::raise_nofile();
    if nconns + 64 + if o.churn_rate > 0.0 { 2000 } else { 0 } > limit {
        return Err(format!(
            "{nconns} connections (plus churn) need more open files than this process may have ({limit}); use --processes"
        ));
    }
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let timerfd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if epfd < 0 || timerfd < 0 {
        return Err(format!("epoll/timerfd: {}", io::Error::last_os_error()));
    }
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: TIMER_TOKEN,
    };
    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, timerfd, &mut ev) };
    let nsenders = match o.scenario {
        Scenario::Fanout => o.publishers,
        Scenario::Direct => 2 * o.pairs,
    };
    let interval_ns = o
        .rate
        .map(|r| (nsenders as f64 * 1e9 / r) as u64)
        .unwrap_or(0)
        .max(1);
    let expected_interval_us = match (o.scenario, o.rate) {
        (Scenario::Fanout, Some(r)) => (o.channels as f64 * 1e6 / r) as u64,
        (Scenario::Direct, Some(r)) => (2.0 * o.pairs as f64 * 1e6 / r) as u64,
        _ => 0,
    }
    .max(1);
    let p = o.publishers.max(1) as usize;
    let mut run = Run {
        o,
        epfd,
        timerfd,
        slots: Vec::with_capacity(nconns as usize),
        free: Vec::new(),
        requests: targets.iter().map(|t| t.upgrade_request()).collect(),
        addrs,
        minter: Minter::new(&o.jwt_secret, 24 * 3600),
        r: Report {
            scenario: match o.scenario {
                Scenario::Fanout => "fanout".into(),
                Scenario::Direct => "direct".into(),
            },
            urls: o.urls.clone(),
            processes: 1,
            subscribers: o.subscribers,
            channels: o.channels,
            publishers: o.publishers,
            pairs: o.pairs,
            membership: format!("{:?}", o.membership).to_lowercase(),
            rate: o.rate,
            window: o.window,
            co_correction: format!("{:?}", o.co).to_lowercase(),
            warmup_secs: o.warmup,
            duration_secs: o.duration,
            churn_rate: o.churn_rate,
            ..Default::default()
        },
        hist: new_hist(),
        win: (u64::MAX, u64::MAX),
        sending: false,
        interval_ns,
        expected_interval_us,
        buf: String::with_capacity(512),
        token_n: 0,
        pending_setup: 0,
        last_delivery: Instant::now(),
        churn_inflight: 0,
        churn_n: 0,
        published: vec![vec![0; o.channels as usize]; p],
        distinct: vec![vec![0; o.channels as usize]; p],
        direct_sent: vec![0; 2 * o.pairs as usize],
        direct_distinct: vec![0; 2 * o.pairs as usize],
        setup_done: false,
        again: Vec::new(),
        expected_local: 0,
        received_local: 0,
        delivery_limit: u64::MAX,
        local_subs: Vec::new(),
        go_at: None,
    };

    // Setup: connect everyone, join/subscribe.
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 4096];
    let t_setup = Instant::now();
    let setup_deadline = t_setup + Duration::from_secs_f64(o.setup_timeout);
    let mut next_spec = 0;
    let mut last_progress = Instant::now();
    while next_spec < specs.len() || run.pending_setup > 0 {
        while next_spec < specs.len() && run.pending_setup < o.max_inflight {
            run.open_spec(&specs[next_spec]);
            next_spec += 1;
        }
        run.poll(&mut events, 20);
        if Instant::now() > setup_deadline {
            // Fail whatever is still not ready.
            for i in 0..run.slots.len() {
                if run.slots[i].as_ref().is_some_and(|s| !s.ready) {
                    let s = run.slots[i].take().unwrap();
                    run.close_slot(i, s, "setup timeout");
                }
            }
            break;
        }
        if !o.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[setup {:5.1}s] opened {}/{} ready {} failed {}",
                t_setup.elapsed().as_secs_f64(),
                next_spec,
                specs.len(),
                run.ready_count(),
                run.r.conn_failed
            );
        }
    }
    // Pairs: each side learns the other's sid; a side whose partner is gone does not send.
    for i in 0..run.slots.len() {
        let partner = match run.slots[i].as_ref().map(|s| &s.role) {
            Some(Role::Peer { partner, .. }) => *partner,
            _ => continue,
        };
        if partner != usize::MAX {
            let sid = run.slots[partner].as_ref().and_then(|s| s.conn.sid.clone());
            let a_sid = run.slots[i].as_ref().and_then(|s| s.conn.sid.clone());
            for (me, other_sid) in [(i, sid), (partner, a_sid)] {
                if let Some(Slot {
                    role:
                        Role::Peer {
                            to, partner: pp, ..
                        },
                    ready,
                    ..
                }) = run.slots[me].as_mut()
                {
                    match other_sid {
                        Some(s) => *to = s,
                        None => *ready = false,
                    }
                    if me == partner {
                        *pp = i;
                    }
                }
            }
        }
    }
    run.r.setup_secs = t_setup.elapsed().as_secs_f64();
    run.setup_done = true;
    for slot in run.slots.iter().flatten() {
        if let (Role::Subscriber { channel }, true) = (&slot.role, slot.ready) {
            if run.r.subs_per_channel.len() < o.channels as usize {
                run.r.subs_per_channel.resize(o.channels as usize, 0);
            }
            run.r.subs_per_channel[*channel as usize] += 1;
        }
    }
    run.local_subs = run.r.subs_per_channel.clone();
    if o.rate.is_none() {
        let senders = run
            .slots
            .iter()
            .flatten()
            .filter(|s| s.sender.is_some() && s.ready)
            .count() as u64;
        let per_msg = match o.scenario {
            Scenario::Fanout => {
                let subs: u64 = run.local_subs.iter().sum();
                subs.div_ceil(o.channels.max(1)).max(1)
            }
            Scenario::Direct => 1,
        };
        run.delivery_limit = match o.delivery_window {
            0 => u64::MAX,
            d => d * per_msg * senders.max(1),
        };
        run.r.delivery_limit = (run.delivery_limit != u64::MAX).then_some(run.delivery_limit);
    }
    if !o.quiet {
        eprintln!(
            "setup done in {:.2} s: {} ready, {} failed",
            run.r.setup_secs,
            run.ready_count(),
            run.r.conn_failed
        );
    }
    // Barrier with the other processes.
    if o.child.is_some() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: GO_TOKEN,
        };
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, 0, &mut ev) };
        println!("READY");
        let _ = io::stdout().flush();
        while !run.poll(&mut events, 100) {}
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, 0, std::ptr::null_mut()) };
    }

    // Run.
    let t0 = match run.go_at {
        Some(t) => {
            while mono_ns() < t {
                std::thread::sleep(Duration::from_micros(200));
            }
            t
        }
        None => mono_ns(),
    };
    let warm = (o.warmup * 1e9) as u64;
    let dur = (o.duration * 1e9) as u64;
    run.win = (t0 + warm, t0 + warm + dur);
    let stop_ns = t0 + warm + dur;
    run.sending = true;
    let senders: Vec<usize> = (0..run.slots.len())
        .filter(|&i| {
            run.slots[i]
                .as_ref()
                .is_some_and(|s| s.sender.is_some() && s.ready)
        })
        .collect();
    let rate_gap = o.rate.map(|r| (1e9 / r) as u64).unwrap_or(0);
    for (j, &i) in senders.iter().enumerate() {
        let mut slot = run.slots[i].take().unwrap();
        if let Some(s) = slot.sender.as_mut() {
            s.next_due = t0 + j as u64 * rate_gap;
        }
        run.refill(&mut slot);
        let _ = slot.conn.flush();
        run.slots[i] = Some(slot);
    }
    let churn_gap = if o.churn_rate > 0.0 && ci == 0 {
        (1e9 / o.churn_rate) as u64
    } else {
        0
    };
    let mut next_churn = t0;
    let mut drain_start: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut last_deliveries = 0;
    loop {
        let now = mono_ns();
        if run.sending && now >= stop_ns {
            run.sending = false;
            drain_start = Some(Instant::now());
            run.last_delivery = Instant::now();
        }
        let mut next_wake = stop_ns;
        if run.sending {
            if o.rate.is_some() {
                for &i in &senders {
                    let Some(mut slot) = run.slots[i].take() else {
                        continue;
                    };
                    let mut due = slot.sender.as_ref().unwrap().next_due;
                    let mut sent = false;
                    while due <= now {
                        let stamp = if o.co == CoCorrection::Intended {
                            due
                        } else {
                            now
                        };
                        run.send_one(&mut slot, stamp);
                        sent = true;
                        due += run.interval_ns;
                    }
                    slot.sender.as_mut().unwrap().next_due = due;
                    next_wake = next_wake.min(due);
                    if sent && slot.conn.flush().is_err() {
                        run.close_slot(i, slot, "write error");
                        continue;
                    }
                    run.slots[i] = Some(slot);
                }
            }
            if o.rate.is_none() && run.delivery_limit != u64::MAX {
                // Senders held back by the delivery window resume as deliveries arrive.
                for &i in &senders {
                    let Some(mut slot) = run.slots[i].take() else {
                        continue;
                    };
                    run.refill(&mut slot);
                    if slot.conn.pending_write() > 0 && slot.conn.flush().is_err() {
                        run.close_slot(i, slot, "write error");
                        continue;
                    }
                    run.slots[i] = Some(slot);
                }
            }
            if churn_gap > 0 {
                while next_churn <= now {
                    next_churn += churn_gap;
                    run.r.churn_started += 1;
                    if run.churn_inflight >= 2000 {
                        run.r.churn_skipped += 1;
                        continue;
                    }
                    let channel = run.churn_n % o.channels.max(1);
                    run.churn_n += 1;
                    if run
                        .open(0, Role::Churner { stage: 0, channel }, 0, false)
                        .is_some()
                    {
                        run.churn_inflight += 1;
                    } else {
                        run.r.churn_failed += 1;
                    }
                }
                next_wake = next_wake.min(next_churn);
            }
        } else {
            let ds = drain_start.unwrap();
            let quiet = run.last_delivery.elapsed() > Duration::from_millis(1000);
            // With no publishers of ours: `--max` (a flooding sender) stops at once; `--rate`
            // (a paced one) waits until every subscriber got a frame stamped after the window,
            // so the window's last publishes are complete in the histogram.
            let tail_done = || {
                run.slots.iter().flatten().all(|s| {
                    s.past_window || !s.ready || !matches!(s.role, Role::Subscriber { .. })
                })
            };
            if o.publishers == 0
                && o.scenario == Scenario::Fanout
                && (o.rate.is_none() || tail_done())
                || quiet
                || ds.elapsed() > Duration::from_secs_f64(o.drain)
            {
                break;
            }
            next_wake = now + 100_000_000;
        }
        run.arm_timer(next_wake.max(now + 1000));
        run.poll(&mut events, 1000);
        if !o.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            let dt = last_progress.elapsed().as_secs_f64();
            last_progress = Instant::now();
            eprintln!(
                "[{:6.1}s]{} sent {} deliveries {} ({:.0}/s) dropped {}{}",
                (mono_ns() - t0) as f64 / 1e9,
                if o.child.is_some() {
                    format!(" p{ci}")
                } else {
                    String::new()
                },
                run.r.sent,
                run.r.deliveries,
                (run.r.deliveries - last_deliveries) as f64 / dt,
                run.r.dropped,
                if churn_gap > 0 {
                    format!(
                        " churn ok {} failed {}",
                        run.r.churn_completed, run.r.churn_failed
                    )
                } else {
                    String::new()
                }
            );
            last_deliveries = run.r.deliveries;
        }
    }
    // Fold everything still open.
    for i in 0..run.slots.len() {
        if let Some(slot) = run.slots[i].take() {
            if matches!(slot.role, Role::Churner { .. }) {
                run.churn_inflight -= 1;
                continue;
            }
            run.fold(&slot);
        }
    }
    run.r.published = std::mem::take(&mut run.published);
    run.r.distinct = std::mem::take(&mut run.distinct);
    if o.scenario == Scenario::Direct {
        run.r.direct_lost = (0..run.direct_sent.len())
            .map(|id| run.direct_sent[id ^ 1].saturating_sub(run.direct_distinct[id]))
            .sum();
    }
    let (hwm, cpu) = crate::procfs::self_usage();
    run.r.client_peak_rss_kib = hwm.into_iter().collect();
    run.r.client_cpu_secs = cpu.into_iter().collect();
    let hist = std::mem::replace(&mut run.hist, new_hist());
    run.r.finish(&hist);
    Ok(std::mem::take(&mut run.r))
}

/// A short tag unique enough to keep runs' channels apart on one server.
pub fn new_run_id() -> String {
    format!("{:x}{:x}", std::process::id(), mono_ns() % 0xffffff)
}

/// Re-runs this command as `n` child processes (`--child i/n`, a shared `--run-id`, a JSON
/// file each), starts them together once all are set up, and merges their reports.
pub fn run_processes(n: u64, _has_json: bool) -> Result<Report, String> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The original arguments minus --processes and --json.
    let mut args = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--processes" || a == "--json" {
            it.next();
            continue;
        }
        if a.starts_with("--processes=") || a.starts_with("--json=") {
            continue;
        }
        args.push(a);
    }
    let run_id = new_run_id();
    let dir = std::env::temp_dir();
    let mut children = Vec::new();
    let mut files = Vec::new();
    for i in 0..n {
        let file = dir.join(format!("loadtest-{run_id}-{i}.json"));
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .args(["--child", &format!("{i}/{n}"), "--run-id", &run_id])
            .arg("--json")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if i > 0 && !args.iter().any(|a| a == "--quiet") {
            cmd.arg("--quiet");
        }
        children.push(
            cmd.spawn()
                .map_err(|e| format!("spawning {}: {e}", exe.display()))?,
        );
        files.push(file);
    }
    // Wait for every READY, then say GO to all.
    let mut readers = Vec::new();
    for c in children.iter_mut() {
        let out = c.stdout.take().expect("piped");
        readers.push(io::BufReader::new(out));
    }
    for (i, r) in readers.iter_mut().enumerate() {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                for c in children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("process {i} ended before it was ready"));
            }
            if line.trim() == "READY" {
                break;
            }
        }
    }
    let t0 = mono_ns() + 100_000_000;
    for c in children.iter_mut() {
        let stdin = c.stdin.as_mut().expect("piped");
        let _ = stdin.write_all(format!("GO {t0}\n").as_bytes());
        let _ = stdin.flush();
    }
    let mut parts = Vec::new();
    for (i, mut c) in children.into_iter().enumerate() {
        let st = c.wait().map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&files[i])
            .map_err(|e| format!("process {i} ({st}) wrote no report: {e}"))?;
        let _ = std::fs::remove_file(&files[i]);
        parts.push(serde_json::from_str::<Report>(&text).map_err(|e| e.to_string())?);
    }
    Report::merge(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_packets() {
        let d = br#"42["event",{"id":"1","channel":"lt-a-2","event":"lt","data":{"seq":7,"publisher":1,"ch":2,"sent_ns":55},"from":{"socketId":"s","userId":"u"},"ts":1}]"#;
        assert_eq!(
            classify(d),
            Incoming::Delivery {
                seq: 7,
                publisher: 1,
                ch: 2,
                sent_ns: 55
            }
        );
        assert_eq!(
            classify(br#"42["event",{"channel":"x","data":{"text":"hi"}}]"#),
            Incoming::ForeignEvent
        );
        assert_eq!(
            classify(br#"42["presence",{"channel":"x","type":"join"}]"#),
            Incoming::Presence
        );
        assert_eq!(
            classify(br#"4312[{"ok":true,"id":"abc"}]"#),
            Incoming::Ack {
                id: 12,
                ok: true,
                code: None
            }
        );
        assert_eq!(
            classify(br#"433[{"ok":false,"error":{"code":"rate_limited","message":"m"}}]"#),
            Incoming::Ack {
                id: 3,
                ok: false,
                code: Some("rate_limited")
            }
        );
        assert_eq!(classify(b"40{}"), Incoming::Other);
    }

    #[test]
    fn fanout_data_is_json() {
        let mut s = String::new();
        fanout_data(&mut s, 1, 2, 3, 4);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["publisher"], 2);
        assert_eq!(v["ch"], 3);
        assert_eq!(v["sent_ns"], 4);
    }

    fn part(
        lat_us: &[u64],
        published: Vec<Vec<u64>>,
        distinct: Vec<Vec<u64>>,
        subs: Vec<u64>,
    ) -> Report {
        let mut h = new_hist();
        for &v in lat_us {
            h.record(v).unwrap();
        }
        let mut r = Report {
            scenario: "fanout".into(),
            publishers: 1,
            duration_secs: 2.0,
            deliveries_in_window: lat_us.len() as u64,
            deliveries: lat_us.len() as u64,
            published,
            distinct,
            subs_per_channel: subs,
            ..Default::default()
        };
        r.finish(&h);
        r
    }

    #[test]
    fn loss_from_publish_counts_and_merge() {
        // 1 publisher, 2 channels: 10 and 5 published; process A has 2 subscribers in
        // channel 0 and 1 in channel 1, B has 1 in channel 1 (the publisher lives in A).
        let a = part(
            &[1000, 2000],
            vec![vec![10, 5]],
            vec![vec![20, 4]],
            vec![2, 1],
        );
        assert_eq!(a.lost, 1); // 10*2 + 5*1 − 24
        let b = part(
            &[3000, 4000],
            vec![vec![0, 0]],
            vec![vec![0, 3]],
            vec![0, 1],
        );
        let m = Report::merge(&[a, b]).unwrap();
        assert_eq!(m.processes, 2);
        assert_eq!(m.subs_per_channel, vec![2, 2]);
        assert_eq!(m.lost, 3); // 10*2 + 5*2 − 27
        assert_eq!(m.latency.count, 4);
        assert!((m.latency.max_ms - 4.0).abs() < 0.01);
        assert!((m.latency.p50_ms - 2.0).abs() < 0.01);
        assert!((m.deliveries_per_sec - 2.0).abs() < 1e-9);
    }

    #[test]
    fn histogram_v2_roundtrip() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v * 7).unwrap();
        }
        let back = hist_from_b64(&hist_to_b64(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn record_correct_fills_in_omitted_samples() {
        // The coordinated-omission correction adds the samples a stalled stream would have
        // produced: one 100 ms value at a 10 ms expected interval becomes 10 values.
        let mut h = new_hist();
        h.record_correct(100_000, 10_000).unwrap();
        assert_eq!(h.len(), 10);
        assert_eq!(Latency::from_histogram(&h).p50_ms.round(), 50.0);
    }
}

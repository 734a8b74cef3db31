//! What a message run measured ([`Report`], whose field names are the JSON keys the scripts
//! and BENCHMARKS.md read), how the derived figures follow from the raw counts
//! ([`Report::finish`]), how the reports of several processes add up ([`Report::merge`]), and
//! the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::options::{Options, Scenario};
use crate::histogram::{self, Latency};

/// One process's figures, or the merged figures of a run's processes.
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
    /// Bytes on the wire (websocket frames, headers included) of the deliveries in window.
    #[serde(default)]
    pub wire_bytes_in_window: u64,
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
    /// Of those, large channels' member counts.
    pub presence_counts: u64,
    /// Sockets that got at least one member count.
    pub members_with_count: u64,
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
    /// An empty report of one process, headed with what `o` asks for.
    pub fn new(o: &Options) -> Report {
        Report {
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
        }
    }

    /// Fills the derived figures (lost, rates, percentiles) from the raw counts.
    pub fn finish(&mut self, hist: &Histogram<u64>) {
        self.latency = Latency::from_histogram(hist);
        self.latency_hist_v2 = histogram::to_b64(hist);
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
        let mut hist = histogram::from_b64(&r.latency_hist_v2)?;
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
            r.wire_bytes_in_window += p.wire_bytes_in_window;
            hist.add(histogram::from_b64(&p.latency_hist_v2)?)
                .map_err(|e| format!("{e:?}"))?;
            r.gap_lost += p.gap_lost;
            r.duplicated += p.duplicated;
            r.out_of_order += p.out_of_order;
            r.misrouted += p.misrouted;
            r.presence_events += p.presence_events;
            r.presence_counts += p.presence_counts;
            r.members_with_count += p.members_with_count;
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
        if self.deliveries_in_window > 0 {
            let _ = writeln!(
                w,
                "wire bytes          {:.1} per delivery in window (frame headers included)",
                self.wire_bytes_in_window as f64 / self.deliveries_in_window as f64
            );
        }
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
                "other events        presence {} (counts {}, sockets with a count {})  other {}",
                self.presence_events,
                self.presence_counts,
                self.members_with_count,
                self.other_events
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::new_message_hist;

    fn part(
        lat_us: &[u64],
        published: Vec<Vec<u64>>,
        distinct: Vec<Vec<u64>>,
        subs: Vec<u64>,
    ) -> Report {
        let mut h = new_message_hist();
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
}

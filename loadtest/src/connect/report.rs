//! What the `connect` scenario measured: connection counts and failure reasons, connect
//! latency and rate, the server's memory at each stage, and the client's own cost — and
//! their rendering as a table (stdout) and as JSON (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::histogram::Latency;
use crate::procfs::MemSample;

/// Server memory figures; per-connection values in bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServerMemory {
    pub pid: u32,
    pub before: MemSample,
    /// After all connections are up and the settle delay has passed.
    pub connected: Option<MemSample>,
    /// At the end of the hold, connections still open.
    pub end_of_hold: Option<MemSample>,
    /// After the client closed everything and the settle delay passed again.
    pub after_close: Option<MemSample>,
    pub rss_per_connection_bytes: Option<f64>,
    pub pss_per_connection_bytes: Option<f64>,
    /// CPU seconds the server used from the first connect to the last `40`.
    pub connect_phase_cpu_secs: Option<f64>,
}

impl ServerMemory {
    /// Fills the per-connection figures from `before`/`connected` and `n` open connections.
    pub fn compute(&mut self, n: u64) {
        let Some(c) = self.connected else { return };
        if n == 0 {
            return;
        }
        self.rss_per_connection_bytes = Some(per_conn(self.before.rss_kib, c.rss_kib, n));
        self.pss_per_connection_bytes = match (self.before.pss_kib, c.pss_kib) {
            (Some(b), Some(a)) => Some(per_conn(b, a, n)),
            _ => None,
        };
    }
}

/// (after − before) KiB spread over `n` connections, in bytes (may be negative).
pub fn per_conn(before_kib: u64, after_kib: u64, n: u64) -> f64 {
    (after_kib as f64 - before_kib as f64) * 1024.0 / n as f64
}

/// The `connect` report; its field names are the JSON keys the scripts read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub requested_connections: u64,
    pub requested_rate: f64,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failure reason → count.
    pub failures: BTreeMap<String, u64>,
    /// First connect start → last `40` received, seconds.
    pub connect_duration_secs: f64,
    /// succeeded / connect_duration_secs.
    pub achieved_rate: f64,
    pub latency: Latency,
    pub hold_secs: f64,
    /// Connections up at the end of the hold.
    pub open_at_end: u64,
    /// Established connections the server closed (or that broke) during settle + hold.
    pub dropped: u64,
    pub pings_answered: u64,
    pub server: Option<ServerMemory>,
    pub client_peak_rss_kib: Option<u64>,
    pub client_cpu_secs: Option<f64>,
}

impl Report {
    pub fn fail(&mut self, reason: &str) {
        self.failed += 1;
        *self.failures.entry(reason.to_string()).or_default() += 1;
    }

    pub fn finish_connect_phase(&mut self, hist: &Histogram<u64>, duration_secs: f64) {
        self.latency = Latency::from_histogram(hist);
        self.connect_duration_secs = duration_secs;
        self.achieved_rate = if duration_secs > 0.0 {
            self.succeeded as f64 / duration_secs
        } else {
            0.0
        };
    }

    /// Every attempt ends as exactly one success or one failure.
    pub fn is_consistent(&self) -> bool {
        self.attempted == self.succeeded + self.failed
            && self.failed == self.failures.values().sum::<u64>()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scenario            {}  ({})", self.scenario, self.url);
        let _ = writeln!(
            s,
            "connections         attempted {}  succeeded {}  failed {}",
            self.attempted, self.succeeded, self.failed
        );
        for (k, v) in &self.failures {
            let _ = writeln!(s, "  failure           {k}: {v}");
        }
        let _ = writeln!(
            s,
            "connect rate        {:.0}/s achieved ({:.0}/s requested) over {:.2} s",
            self.achieved_rate, self.requested_rate, self.connect_duration_secs
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "connect latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
        );
        let _ = writeln!(
            s,
            "hold                {:.1} s: open at end {}, dropped {}, pings answered {}",
            self.hold_secs, self.open_at_end, self.dropped, self.pings_answered
        );
        if let Some(m) = &self.server {
            let kib = |x: Option<MemSample>| {
                x.map(|x| {
                    format!(
                        "RSS {} KiB{}",
                        x.rss_kib,
                        x.pss_kib
                            .map(|p| format!(", PSS {p} KiB"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(s, "server pid {}", m.pid);
            let _ = writeln!(s, "  before            {}", kib(Some(m.before)));
            let _ = writeln!(s, "  connected+settle  {}", kib(m.connected));
            let _ = writeln!(s, "  end of hold       {}", kib(m.end_of_hold));
            let _ = writeln!(s, "  after close       {}", kib(m.after_close));
            if let Some(r) = m.rss_per_connection_bytes {
                let _ = write!(
                    s,
                    "  per connection    RSS {:.0} B ({:.2} KiB)",
                    r,
                    r / 1024.0
                );
                if let Some(p) = m.pss_per_connection_bytes {
                    let _ = write!(s, ", PSS {:.0} B ({:.2} KiB)", p, p / 1024.0);
                }
                let _ = writeln!(s);
            }
            if let Some(c) = m.connect_phase_cpu_secs {
                let _ = writeln!(s, "  CPU during connect {c:.2} s");
            }
        }
        if let (Some(r), Some(c)) = (self.client_peak_rss_kib, self.client_cpu_secs) {
            let _ = writeln!(s, "client              peak RSS {r} KiB, CPU {c:.2} s");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::new_connect_hist;

    #[test]
    fn accounting_and_rate() {
        let mut r = Report {
            attempted: 10,
            succeeded: 7,
            ..Default::default()
        };
        r.fail("timeout");
        r.fail("timeout");
        r.fail("auth_refused");
        assert!(r.is_consistent());
        assert_eq!(r.failures["timeout"], 2);
        let mut h = new_connect_hist();
        h.record(1000).unwrap();
        r.finish_connect_phase(&h, 3.5);
        assert!((r.achieved_rate - 2.0).abs() < 1e-9);
        r.attempted += 1;
        assert!(!r.is_consistent());
        let t = r.table();
        assert!(t.contains("attempted 11  succeeded 7  failed 3"));
        assert!(t.contains("timeout: 2"));
    }

    #[test]
    fn memory_per_connection() {
        assert_eq!(per_conn(1000, 1000 + 60_000, 10_000), 6144.0);
        assert_eq!(per_conn(2000, 1000, 1024), -1000.0);
        let mut m = ServerMemory {
            before: MemSample {
                rss_kib: 100,
                pss_kib: Some(90),
                cpu_secs: None,
            },
            connected: Some(MemSample {
                rss_kib: 1100,
                pss_kib: Some(590),
                cpu_secs: None,
            }),
            ..Default::default()
        };
        m.compute(1024);
        assert_eq!(m.rss_per_connection_bytes, Some(1000.0));
        assert_eq!(m.pss_per_connection_bytes, Some(500.0));
    }

    #[test]
    fn json_has_the_figures() {
        let r = Report {
            scenario: "connect".into(),
            succeeded: 3,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["succeeded"], 3);
        assert!(v["latency"]["p999_ms"].is_number());
    }
}

//! Latency histograms: the bounds each scenario records with, the percentile summary the
//! reports print and write as JSON, and the portable encoding that lets the processes of one
//! run send their histograms to the parent to be added up.
//!
//! Every histogram records microseconds with 3 significant digits.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Connect latency (TCP connect start → Socket.IO `40` received): up to 2 minutes.
pub fn new_connect_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// End-to-end message latency (send time stamped in the message → receipt): up to an hour,
/// so that a stalled run still records what it saw instead of failing to.
pub fn new_message_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")
}

/// The percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// hdrhistogram's V2 serialization, base64: what a report carries in `latency_hist_v2`.
pub fn to_b64(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serialize");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// The inverse of [`to_b64`]; an empty string is an empty message histogram.
pub fn from_b64(s: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    if s.is_empty() {
        return Ok(new_message_hist());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_histogram() {
        let mut h = new_connect_hist();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap(); // 1 ms .. 1000 ms
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1000);
        let near = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(near(l.p50_ms, 500.0), "{}", l.p50_ms);
        assert!(near(l.p90_ms, 900.0), "{}", l.p90_ms);
        assert!(near(l.p99_ms, 990.0), "{}", l.p99_ms);
        assert!(near(l.p999_ms, 999.0), "{}", l.p999_ms);
        assert!(near(l.max_ms, 1000.0), "{}", l.max_ms);
        assert!(near(l.mean_ms, 500.5), "{}", l.mean_ms);
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(
            Latency::from_histogram(&new_connect_hist()),
            Latency::default()
        );
    }

    #[test]
    fn histogram_v2_roundtrip() {
        let mut h = new_message_hist();
        for v in 1..=10_000u64 {
            h.record(v * 7).unwrap();
        }
        let back = from_b64(&to_b64(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn record_correct_fills_in_omitted_samples() {
        // The coordinated-omission correction adds the samples a stalled stream would have
        // produced: one 100 ms value at a 10 ms expected interval becomes 10 values.
        let mut h = new_message_hist();
        h.record_correct(100_000, 10_000).unwrap();
        assert_eq!(h.len(), 10);
        assert_eq!(Latency::from_histogram(&h).p50_ms.round(), 50.0);
    }
}

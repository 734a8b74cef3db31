//! What a message run is asked to do: the scenario, how subscribers take a channel's events,
//! how latency is corrected for coordinated omission, and every option of one process's run
//! (the CLI's `fanout`/`churn`/`direct` arguments after parsing).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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
    /// Offer permessage-deflate and inflate compressed frames.
    pub deflate: bool,
    /// Publish a realistic chat message in each event's `data`.
    pub chat: bool,
    pub max_inflight: u64,
    pub setup_timeout: f64,
    pub quiet: bool,
}

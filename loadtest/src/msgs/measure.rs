//! The measured part of one message-run process: the common start ([`start`]: the window's
//! bounds, the senders' staggered schedules), the loop that sends, churns and serves events
//! until the window ends and the deliveries in flight have drained ([`send_and_drain`]), and
//! the figures gathered from every slot at the end ([`collect`]).
//!
//! Timestamps are CLOCK_MONOTONIC ns ([`mono_ns`]), the clock the messages are stamped with.
//! The loop sleeps in epoll with the timer armed for the next thing due: a sender's next
//! send (rate mode), the next churn connection, or the end of the window.

use std::time::{Duration, Instant};

use super::machine::Run;
use super::options::{CoCorrection, Scenario};
use super::report::Report;
use super::slot::Role;
use crate::histogram::new_message_hist;
use crate::sys::mono_ns;

/// Churn connections allowed in flight at once; a churn start beyond it is skipped.
pub(super) const MAX_CHURN_INFLIGHT: u64 = 2000;

/// The measured window of this process and what is scheduled in it.
pub(super) struct Window {
    /// Start of the warmup (the parent's `GO` time when one of several processes).
    t0: u64,
    /// End of the measured window: senders stop.
    stop_ns: u64,
    /// Slots that send (ready at the start).
    senders: Vec<usize>,
    /// Between two churn connections, ns; 0 = no churn (or not the first process).
    churn_gap: u64,
    next_churn: u64,
}

/// Waits for the common start if one was given, sets the window (warmup, then measured),
/// gives the senders staggered first send times and fills their windows (`--max`).
pub(super) fn start(run: &mut Run) -> Window {
    let o = run.o;
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
    let first_process = o.child.map(|c| c.0).unwrap_or(0) == 0;
    let churn_gap = if o.churn_rate > 0.0 && first_process {
        (1e9 / o.churn_rate) as u64
    } else {
        0
    };
    Window {
        t0,
        stop_ns,
        senders,
        churn_gap,
        next_churn: t0,
    }
}

/// Sends (and churns) until the window ends, then serves events until the deliveries in
/// flight have arrived: nothing for a second, or `--drain` seconds, or — without publishers
/// of this run — at once (`--max`) or once every subscriber got a frame stamped after the
/// window (`--rate`).
pub(super) fn send_and_drain(run: &mut Run, w: &mut Window, events: &mut [libc::epoll_event]) {
    let mut drain_start: Option<Instant> = None;
    let mut progress = Progress {
        last: Instant::now(),
        last_deliveries: 0,
    };
    loop {
        let now = mono_ns();
        if run.sending && now >= w.stop_ns {
            run.sending = false;
            drain_start = Some(Instant::now());
            run.last_delivery = Instant::now();
        }
        let mut next_wake = w.stop_ns;
        if run.sending {
            if run.o.rate.is_some() {
                next_wake = next_wake.min(send_due(run, &w.senders, now));
            }
            if run.o.rate.is_none() && run.delivery_limit != u64::MAX {
                resume_held(run, &w.senders);
            }
            if w.churn_gap > 0 {
                start_churners(run, w, now);
                next_wake = next_wake.min(w.next_churn);
            }
        } else {
            if drained(run, drain_start.unwrap()) {
                break;
            }
            next_wake = now + 100_000_000;
        }
        run.arm_timer(next_wake.max(now + 1000));
        run.poll(events, 1000);
        progress.tick(run, w);
    }
}

/// Rate mode: sends every message that is due, each stamped with its scheduled time
/// (`--co intended`) or now; returns the earliest next due time.
fn send_due(run: &mut Run, senders: &[usize], now: u64) -> u64 {
    let mut next_wake = u64::MAX;
    for &i in senders {
        let Some(mut slot) = run.slots[i].take() else {
            continue;
        };
        let mut due = slot.sender.as_ref().unwrap().next_due;
        let mut sent = false;
        while due <= now {
            let stamp = if run.o.co == CoCorrection::Intended {
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
    next_wake
}

/// `--max` with a delivery window: senders held back by it resume as deliveries arrive.
fn resume_held(run: &mut Run, senders: &[usize]) {
    for &i in senders {
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

/// Opens the churn connections that are due, over the channels in turn.
fn start_churners(run: &mut Run, w: &mut Window, now: u64) {
    while w.next_churn <= now {
        w.next_churn += w.churn_gap;
        run.r.churn_started += 1;
        if run.churn_inflight >= MAX_CHURN_INFLIGHT {
            run.r.churn_skipped += 1;
            continue;
        }
        let channel = run.churn_n % run.o.channels.max(1);
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
}

/// After the window: true when waiting longer would add nothing.
fn drained(run: &Run, drain_start: Instant) -> bool {
    let o = run.o;
    let quiet = run.last_delivery.elapsed() > Duration::from_millis(1000);
    // With no publishers of ours: `--max` (a flooding sender) stops at once; `--rate`
    // (a paced one) waits until every subscriber got a frame stamped after the window,
    // so the window's last publishes are complete in the histogram.
    let tail_done = || {
        run.slots
            .iter()
            .flatten()
            .all(|s| s.past_window || !s.ready || !matches!(s.role, Role::Subscriber { .. }))
    };
    o.publishers == 0 && o.scenario == Scenario::Fanout && (o.rate.is_none() || tail_done())
        || quiet
        || drain_start.elapsed() > Duration::from_secs_f64(o.drain)
}

/// The progress line on stderr, once a second unless `--quiet`.
struct Progress {
    last: Instant,
    last_deliveries: u64,
}

impl Progress {
    fn tick(&mut self, run: &Run, w: &Window) {
        let o = run.o;
        if o.quiet || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        let dt = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        eprintln!(
            "[{:6.1}s]{} sent {} deliveries {} ({:.0}/s) dropped {}{}",
            (mono_ns() - w.t0) as f64 / 1e9,
            match o.child {
                Some((ci, _)) => format!(" p{ci}"),
                None => String::new(),
            },
            run.r.sent,
            run.r.deliveries,
            (run.r.deliveries - self.last_deliveries) as f64 / dt,
            run.r.dropped,
            if w.churn_gap > 0 {
                format!(
                    " churn ok {} failed {}",
                    run.r.churn_completed, run.r.churn_failed
                )
            } else {
                String::new()
            }
        );
        self.last_deliveries = run.r.deliveries;
    }
}

/// Folds every slot still open into the figures, adds the client's own cost and the derived
/// figures, and hands the report over.
pub(super) fn collect(run: &mut Run) -> Report {
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
    if run.o.scenario == Scenario::Direct {
        run.r.direct_lost = (0..run.direct_sent.len())
            .map(|id| run.direct_sent[id ^ 1].saturating_sub(run.direct_distinct[id]))
            .sum();
    }
    let (hwm, cpu) = crate::procfs::self_usage();
    run.r.client_peak_rss_kib = hwm.into_iter().collect();
    run.r.client_cpu_secs = cpu.into_iter().collect();
    let hist = std::mem::replace(&mut run.hist, new_message_hist());
    run.r.finish(&hist);
    std::mem::take(&mut run.r)
}

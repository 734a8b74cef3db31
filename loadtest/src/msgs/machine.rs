//! The event machine of one message-run process: the [`Run`] that owns every connection
//! slot, the epoll instance and the timer, and what it does on each event — a connection
//! that comes up joins or subscribes, a delivery is timed and accounted to its stream, an
//! ack frees a sender's window, a churner walks join → leave → disconnect — plus the sending
//! of one message ([`Run::send_one`], [`Run::refill`]) and one epoll round ([`Run::poll`]).
//!
//! The order in which these are used over a run (setup, barrier, the measured window, the
//! drain) is in [`super::setup`] and [`super::measure`]; this file keeps no timeline.
//!
//! Slots are taken out of `slots` while they are worked on, so a handler holds `&mut Run`
//! and `&mut Slot` at once; `None` in `slots` is a free index (listed in `free`).

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::options::{CoCorrection, Membership, Options, Scenario};
use super::packets::{self, channel_name, classify, Incoming};
use super::report::Report;
use super::slot::{Role, Slot};
use crate::client::{self, Conn, Ev, State};
use crate::histogram::new_message_hist;
use crate::sys::{mono_ns, Timer};
use crate::target::Target;
use crate::token::{connect_packet, Minter};

/// A send is skipped (and counted) while the sender's socket has more than this queued.
const MAX_QUEUED: usize = 16 << 20;
/// Epoll token of stdin, where a child process reads its `GO` line.
pub(super) const GO_TOKEN: u64 = u64::MAX;
const TIMER_TOKEN: u64 = u64::MAX - 1;

/// One process's run: its connections and everything it has counted so far.
pub(super) struct Run<'a> {
    pub(super) o: &'a Options,
    pub(super) epfd: i32,
    pub(super) timer: Timer,
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) free: Vec<usize>,
    pub(super) requests: Vec<Vec<u8>>,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) minter: Minter,
    pub(super) r: Report,
    pub(super) hist: Histogram<u64>,
    /// Monotonic ns bounds of the measured window (send time for latency, receipt for rate).
    pub(super) win: (u64, u64),
    pub(super) sending: bool,
    pub(super) interval_ns: u64,
    pub(super) expected_interval_us: u64,
    pub(super) buf: String,
    pub(super) token_n: u64,
    /// Opened, not yet ready (connected + joined), not failed.
    pub(super) pending_setup: u64,
    pub(super) last_delivery: Instant,
    pub(super) churn_inflight: u64,
    pub(super) churn_n: u64,
    /// Folded stream/sender figures of closed or finished slots.
    pub(super) published: Vec<Vec<u64>>,
    pub(super) distinct: Vec<Vec<u64>>,
    pub(super) direct_sent: Vec<u64>,
    pub(super) direct_distinct: Vec<u64>,
    pub(super) setup_done: bool,
    /// Slots with more to read that gave way to others.
    pub(super) again: Vec<usize>,
    /// `--max`: deliveries expected by this process's receivers for what its senders sent,
    /// and received; senders wait while more than `delivery_limit` are in flight.
    pub(super) expected_local: u64,
    pub(super) received_local: u64,
    pub(super) delivery_limit: u64,
    pub(super) local_subs: Vec<u64>,
    /// Start time given by the parent process, so that all measure the same window.
    pub(super) go_at: Option<u64>,
}

impl<'a> Run<'a> {
    /// A run with no connections yet: the epoll instance and its timer, the figures headed
    /// with `o`, one upgrade request per target.
    pub(super) fn new(
        o: &'a Options,
        targets: &[Target],
        addrs: Vec<SocketAddr>,
        nconns: u64,
    ) -> Result<Run<'a>, String> {
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(format!("epoll/timerfd: {}", io::Error::last_os_error()));
        }
        let timer = match Timer::new() {
            Ok(t) => t,
            Err(e) => {
                unsafe { libc::close(epfd) };
                return Err(format!("epoll/timerfd: {e}"));
            }
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: TIMER_TOKEN,
        };
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, timer.fd(), &mut ev) };
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
        Ok(Run {
            o,
            epfd,
            timer,
            slots: Vec::with_capacity(nconns as usize),
            free: Vec::new(),
            requests: targets
                .iter()
                .map(|t| t.upgrade_request_with(o.deflate))
                .collect(),
            addrs,
            minter: Minter::new(&o.jwt_secret, 24 * 3600),
            r: Report::new(o),
            hist: new_message_hist(),
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
        })
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        unsafe { libc::close(self.epfd) };
    }
}

impl Run<'_> {
    pub(super) fn fail(&mut self, why: &str) {
        self.r.conn_failed += 1;
        *self.r.failures.entry(why.to_string()).or_default() += 1;
    }

    pub(super) fn open(
        &mut self,
        url: usize,
        role: Role,
        nstreams: usize,
        sender: bool,
    ) -> Option<usize> {
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
                self.slots[idx] = Some(Slot::new(
                    conn,
                    url,
                    role,
                    nstreams,
                    sender,
                    self.o.channels,
                ));
                Some(idx)
            }
            Err(why) => {
                self.free.push(idx);
                self.fail(why);
                None
            }
        }
    }

    /// Folds a slot's figures into the run totals (when it closes, or at the end).
    pub(super) fn fold(&mut self, slot: &Slot) {
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

    pub(super) fn close_slot(&mut self, idx: usize, slot: Slot, why: &str) {
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
    pub(super) fn send_one(&mut self, slot: &mut Slot, stamp: u64) -> bool {
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
                packets::publish_event(
                    &mut self.buf,
                    ack,
                    &self.o.run_id,
                    c,
                    seq,
                    *p,
                    stamp,
                    self.o.chat,
                );
            }
            Role::Peer { id, to, .. } => {
                let seq = snd.seqs[0];
                snd.seqs[0] += 1;
                packets::direct_event(&mut self.buf, ack, to, seq, *id, stamp);
            }
            _ => unreachable!(),
        }
        snd.k += 1;
        snd.outstanding += 1;
        slot.conn.queue_text(self.buf.as_bytes());
        self.r.sent += 1;
        self.expected_local += match &slot.role {
            Role::Publisher { .. } => {
                let c = (slot.k_before() % self.o.channels) as usize;
                self.local_subs.get(c).copied().unwrap_or(0)
            }
            _ => 1,
        };
        if stamp >= self.win.0 && stamp < self.win.1 {
            self.r.sent_in_window += 1;
        }
        true
    }

    pub(super) fn refill(&mut self, slot: &mut Slot) {
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
                let name = channel_name(&self.o.run_id, *channel);
                let ev = packets::membership_event(self.o.membership, slot.next_ack, &name);
                slot.next_ack += 1;
                slot.conn.queue_text(ev.as_bytes());
            }
            Role::Publisher { .. } | Role::Peer { .. } => {
                self.make_ready(slot);
            }
            Role::Churner { stage, channel } => {
                let ev =
                    packets::join_event(slot.next_ack, &channel_name(&self.o.run_id, *channel));
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
                    self.r.wire_bytes_in_window += slot.conn.last_wire as u64;
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
            Incoming::Presence { count } => {
                self.r.presence_events += 1;
                if count {
                    self.r.presence_counts += 1;
                    if !slot.got_count {
                        slot.got_count = true;
                        self.r.members_with_count += 1;
                    }
                }
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
                            let name = channel_name(&self.o.run_id, *channel);
                            let ev = packets::leave_event(slot.next_ack, &name);
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

    pub(super) fn arm_timer(&self, at_ns: u64) {
        self.timer.arm(at_ns);
    }

    /// One epoll round; returns true when the GO line arrived on stdin.
    pub(super) fn poll(&mut self, events: &mut [libc::epoll_event], timeout_ms: i32) -> bool {
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
                self.timer.clear();
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

    pub(super) fn ready_count(&self) -> u64 {
        self.slots.iter().flatten().filter(|s| s.ready).count() as u64
    }
}

//! The `connect` scenario: open N authenticated Socket.IO connections at a paced rate, hold
//! them (answering pings), and measure the server.
//!
//! One thread, non-blocking sockets, edge-triggered epoll. Per connection the client keeps a
//! small state record and, once upgraded, a tungstenite `WebSocket` with a 4 KiB read buffer.
//!
//! This file owns the schedule ([`run`]: start connections at the rate, expire the slow ones,
//! settle, sample the server, hold, close, sample again) and the `Engine` that dispatches
//! epoll events to connections. One connection's handshake lives in [`handshake`]; the
//! figures and their rendering in [`report`].

pub mod handshake;
pub mod report;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::histogram::new_connect_hist;
use crate::procfs;
use crate::sys::raise_nofile;
use crate::target::Target;
use crate::token::Minter;
use handshake::{Conn, Outcome};
use report::{Report, ServerMemory};

#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub connections: u64,
    /// New connections per second.
    pub rate: f64,
    /// Seconds to hold the connections after the settle delay.
    pub hold: f64,
    /// Seconds between "all connected" and the memory sample.
    pub settle: f64,
    pub jwt_secret: String,
    pub source_addrs: Vec<IpAddr>,
    pub server_pid: Option<u32>,
    /// Seconds a connection may take from TCP connect to `40`.
    pub timeout: f64,
    /// Connections allowed between TCP connect and `40` at once.
    pub max_inflight: u64,
    pub quiet: bool,
}

/// The connections of a run and what they add up to; [`Engine::poll`] serves one round of
/// epoll events.
struct Engine {
    epfd: i32,
    conns: Vec<Option<Conn>>,
    request: Vec<u8>,
    minter: Minter,
    hist: Histogram<u64>,
    report: Report,
    inflight: u64,
    open: u64,
    last_connected: Option<Instant>,
    pings: u64,
}

impl Drop for Engine {
    fn drop(&mut self) {
        unsafe { libc::close(self.epfd) };
    }
}

impl Engine {
    fn start(
        &mut self,
        n: u64,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(), &'static str> {
        let started = Instant::now();
        let stream = crate::client::tcp_connect(self.epfd, n, addr, source)?;
        self.conns[n as usize] = Some(Conn::new(stream, n, started));
        self.inflight += 1;
        Ok(())
    }

    fn event(&mut self, n: u64, events: u32) {
        let Some(conn) = self.conns[n as usize].as_mut() else {
            return;
        };
        let was_open = conn.is_up();
        let outcome = conn.drive(events, &self.request, &self.minter, &mut self.pings);
        match outcome {
            Outcome::Pending => {}
            Outcome::Connected => {
                let us = conn.started().elapsed().as_micros() as u64;
                let _ = self.hist.record(us.max(1));
                self.inflight -= 1;
                self.open += 1;
                self.report.succeeded += 1;
                self.last_connected = Some(Instant::now());
            }
            Outcome::Failed(reason) => {
                self.conns[n as usize] = None;
                self.inflight -= 1;
                self.report.fail(reason);
            }
            Outcome::Dropped => {
                debug_assert!(was_open);
                self.conns[n as usize] = None;
                self.open -= 1;
                self.report.dropped += 1;
            }
        }
    }

    /// Fails a connection that is still not connected at its deadline.
    fn expire(&mut self, n: u64) {
        if let Some(c) = &self.conns[n as usize] {
            if !c.is_up() {
                self.conns[n as usize] = None;
                self.inflight -= 1;
                self.report.fail("timeout");
            }
        }
    }

    /// One epoll_wait round, at most `timeout`.
    fn poll(&mut self, events: &mut [libc::epoll_event], timeout: Duration) {
        let ms = timeout.as_micros().div_ceil(1000).min(1000) as i32;
        let k =
            unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, ms) };
        if k < 0 {
            return; // EINTR
        }
        for ev in &events[..k as usize] {
            let (n, e) = (ev.u64, ev.events);
            self.event(n, e);
        }
    }

    /// Serves events until `until`.
    fn run_until(&mut self, events: &mut [libc::epoll_event], until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            self.poll(events, until - now);
        }
    }
}

pub fn run(opts: &Options) -> Result<Report, String> {
    let target = Target::parse(&opts.url)?;
    let addr = target.resolve()?;
    let limit = raise_nofile();
    if opts.connections + 16 > limit {
        return Err(format!(
            "{} connections need more open files than this process may have ({limit})",
            opts.connections
        ));
    }
    if opts.rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
    }
    let mut eng = Engine {
        epfd,
        conns: (0..opts.connections).map(|_| None).collect(),
        request: target.upgrade_request(),
        minter: Minter::new(&opts.jwt_secret, 3600),
        hist: new_connect_hist(),
        report: Report {
            scenario: "connect".into(),
            url: opts.url.clone(),
            requested_connections: opts.connections,
            requested_rate: opts.rate,
            hold_secs: opts.hold,
            ..Default::default()
        },
        inflight: 0,
        open: 0,
        last_connected: None,
        pings: 0,
    };
    let pid = opts.server_pid.map(|p| p.to_string());
    let mut server = match &pid {
        Some(p) => Some(ServerMemory {
            pid: opts.server_pid.unwrap(),
            before: procfs::sample(p)?,
            ..Default::default()
        }),
        None => None,
    };

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let timeout = Duration::from_secs_f64(opts.timeout);
    let mut deadlines: VecDeque<(Instant, u64)> = VecDeque::new();
    let t0 = Instant::now();
    let mut next: u64 = 0;
    let mut last_progress = Instant::now();
    while next < opts.connections || eng.inflight > 0 {
        let now = Instant::now();
        // Start every connection whose time has come.
        while next < opts.connections && eng.inflight < opts.max_inflight {
            let due = t0 + Duration::from_secs_f64(next as f64 / opts.rate);
            if due > now {
                break;
            }
            let src = if opts.source_addrs.is_empty() {
                None
            } else {
                Some(opts.source_addrs[(next as usize) % opts.source_addrs.len()])
            };
            eng.report.attempted += 1;
            match eng.start(next, addr, src) {
                Ok(()) => deadlines.push_back((Instant::now() + timeout, next)),
                Err(reason) => eng.report.fail(reason),
            }
            next += 1;
        }
        while let Some(&(d, n)) = deadlines.front() {
            if d > now {
                break;
            }
            deadlines.pop_front();
            eng.expire(n);
        }
        let wait = if next < opts.connections && eng.inflight < opts.max_inflight {
            (t0 + Duration::from_secs_f64(next as f64 / opts.rate)).saturating_duration_since(now)
        } else {
            Duration::from_millis(50)
        };
        eng.poll(&mut events, wait.min(Duration::from_millis(50)));
        if !opts.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{:6.1}s] started {} connected {} failed {} in flight {}",
                t0.elapsed().as_secs_f64(),
                next,
                eng.report.succeeded,
                eng.report.failed,
                eng.inflight
            );
        }
    }
    let connect_secs = eng
        .last_connected
        .map(|t| (t - t0).as_secs_f64())
        .unwrap_or(0.0);
    let hist = std::mem::replace(&mut eng.hist, new_connect_hist());
    eng.report.finish_connect_phase(&hist, connect_secs);
    if let (Some(s), Some(p)) = (server.as_mut(), &pid) {
        let now = procfs::sample(p)?;
        s.connect_phase_cpu_secs = match (s.before.cpu_secs, now.cpu_secs) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
    }
    if !opts.quiet {
        eprintln!(
            "connect phase done: {} connected, {} failed in {:.2} s; settling {:.1} s",
            eng.report.succeeded, eng.report.failed, connect_secs, opts.settle
        );
    }

    // Settle, then sample the server with everything open.
    eng.run_until(
        &mut events,
        Instant::now() + Duration::from_secs_f64(opts.settle),
    );
    let open_at_sample = eng.open;
    if let (Some(s), Some(p)) = (server.as_mut(), &pid) {
        s.connected = Some(procfs::sample(p)?);
        s.compute(open_at_sample);
    }
    if !opts.quiet {
        eprintln!("holding {} connections for {:.1} s", eng.open, opts.hold);
    }
    eng.run_until(
        &mut events,
        Instant::now() + Duration::from_secs_f64(opts.hold),
    );
    eng.report.open_at_end = eng.open;
    eng.report.pings_answered = eng.pings;
    if let (Some(s), Some(p)) = (server.as_mut(), &pid) {
        s.end_of_hold = Some(procfs::sample(p)?);
    }
    let (hwm, cpu) = crate::procfs::self_usage();
    eng.report.client_peak_rss_kib = hwm;
    eng.report.client_cpu_secs = cpu;

    // Close everything, let the server notice, sample again.
    for c in eng.conns.iter_mut() {
        *c = None;
    }
    if let (Some(s), Some(p)) = (server.as_mut(), &pid) {
        std::thread::sleep(Duration::from_secs_f64(opts.settle));
        s.after_close = Some(procfs::sample(p)?);
    }
    eng.report.server = server;
    debug_assert!(eng.report.is_consistent());
    Ok(std::mem::take(&mut eng.report))
}

//! The `connect` scenario: open N authenticated Socket.IO connections at a paced rate, hold
//! them (answering pings), and measure the server.
//!
//! One thread, non-blocking sockets, edge-triggered epoll. Per connection the client keeps a
//! small state record and, once upgraded, a tungstenite `WebSocket` with a 4 KiB read buffer.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::procfs;
use crate::report::{new_histogram, Report, ServerMemory};
use crate::target::Target;
use crate::token::{connect_packet, Minter};

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

enum Phase {
    TcpConnecting,
    SendingUpgrade {
        off: usize,
    },
    ReadingUpgrade {
        buf: Vec<u8>,
    },
    /// Waiting for the Engine.IO OPEN packet `0{...}`.
    WaitOpen(Box<WebSocket<TcpStream>>),
    /// Sent `40{token}`, waiting for `40{"sid"}`.
    WaitConnect(Box<WebSocket<TcpStream>>),
    Connected(Box<WebSocket<TcpStream>>),
}

struct Conn {
    /// The stream until it moves into the websocket.
    stream: Option<TcpStream>,
    phase: Phase,
    started: Instant,
    n: u64,
}

enum Outcome {
    Pending,
    Connected,
    Failed(&'static str),
    /// A connection that was established went away.
    Dropped,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn ws_would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if would_block(io))
}

/// Finds the end of the HTTP response head; returns (status, head length).
pub fn parse_response_head(buf: &[u8]) -> Option<Result<(u16, usize), ()>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let line_end = buf.iter().position(|&b| b == b'\r').unwrap_or(0);
    let line = std::str::from_utf8(&buf[..line_end]).ok();
    let status = line
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok());
    Some(status.map(|s| (s, end)).ok_or(()))
}

/// What a text frame means in a given phase.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    Open,
    Connected,
    ConnectError,
    Ping,
    Close,
    Other,
}

pub fn classify(text: &str) -> Packet {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Packet::Open,
        Some(b'1') => Packet::Close,
        Some(b'2') if b.len() == 1 => Packet::Ping,
        Some(b'4') => match b.get(1) {
            // Socket.IO CONNECT to "/" — reply carries the sid; a namespace would be `40/ns,`.
            Some(b'0') if b.get(2) != Some(&b'/') => Packet::Connected,
            Some(b'4') => Packet::ConnectError,
            _ => Packet::Other,
        },
        _ => Packet::Other,
    }
}

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
        self.conns[n as usize] = Some(Conn {
            stream: Some(stream),
            phase: Phase::TcpConnecting,
            started,
            n,
        });
        self.inflight += 1;
        Ok(())
    }

    fn event(&mut self, n: u64, events: u32) {
        let Some(conn) = self.conns[n as usize].as_mut() else {
            return;
        };
        let was_open = matches!(conn.phase, Phase::Connected(_));
        let outcome = drive(conn, events, &self.request, &self.minter, &mut self.pings);
        match outcome {
            Outcome::Pending => {}
            Outcome::Connected => {
                let us = conn.started.elapsed().as_micros() as u64;
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
            if !matches!(c.phase, Phase::Connected(_)) {
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

fn drive(
    conn: &mut Conn,
    events: u32,
    request: &[u8],
    minter: &Minter,
    pings: &mut u64,
) -> Outcome {
    let err_ev = events & (libc::EPOLLERR as u32) != 0;
    loop {
        match &mut conn.phase {
            Phase::TcpConnecting => {
                let s = conn.stream.as_ref().expect("stream");
                match s.take_error() {
                    Ok(None) if !err_ev && events & (libc::EPOLLOUT as u32) != 0 => {
                        conn.phase = Phase::SendingUpgrade { off: 0 };
                    }
                    Ok(None) if !err_ev => return Outcome::Pending,
                    Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        return Outcome::Failed("tcp connect: refused")
                    }
                    _ => return Outcome::Failed("tcp connect"),
                }
            }
            Phase::SendingUpgrade { off } => {
                let s = conn.stream.as_mut().expect("stream");
                match s.write(&request[*off..]) {
                    Ok(k) => {
                        *off += k;
                        if *off == request.len() {
                            conn.phase = Phase::ReadingUpgrade {
                                buf: Vec::with_capacity(512),
                            };
                        }
                    }
                    Err(e) if would_block(&e) => return Outcome::Pending,
                    Err(_) => return Outcome::Failed("upgrade: write"),
                }
            }
            Phase::ReadingUpgrade { buf } => {
                let s = conn.stream.as_mut().expect("stream");
                let mut chunk = [0u8; 2048];
                match s.read(&mut chunk) {
                    Ok(0) => return Outcome::Failed("upgrade: closed"),
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    Err(e) if would_block(&e) => return Outcome::Pending,
                    Err(_) => return Outcome::Failed("upgrade: read"),
                }
                match parse_response_head(buf) {
                    None if buf.len() > 16 * 1024 => return Outcome::Failed("upgrade: huge head"),
                    None => {}
                    Some(Err(())) => return Outcome::Failed("upgrade: bad response"),
                    Some(Ok((101, end))) => {
                        let rest = buf[end..].to_vec();
                        let stream = conn.stream.take().expect("stream");
                        let ws = WebSocket::from_partially_read(
                            stream,
                            rest,
                            Role::Client,
                            Some(ws_config()),
                        );
                        conn.phase = Phase::WaitOpen(Box::new(ws));
                    }
                    Some(Ok((503, _))) => return Outcome::Failed("upgrade: HTTP 503"),
                    Some(Ok((s, _))) if (400..500).contains(&s) => {
                        return Outcome::Failed("upgrade: HTTP 4xx")
                    }
                    Some(Ok(_)) => return Outcome::Failed("upgrade: HTTP other"),
                }
            }
            Phase::WaitOpen(_) | Phase::WaitConnect(_) | Phase::Connected(_) => {
                return drive_ws(conn, events, minter, pings);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    Connect,
    Up,
}

fn drive_ws(conn: &mut Conn, events: u32, minter: &Minter, pings: &mut u64) -> Outcome {
    let mut stage = match conn.phase {
        Phase::WaitOpen(_) => Stage::Open,
        Phase::WaitConnect(_) => Stage::Connect,
        Phase::Connected(_) => Stage::Up,
        _ => unreachable!(),
    };
    let mut just_connected = false;
    let lost = |stage: Stage, just: bool, reason: &'static str| {
        if just {
            Outcome::Failed("dropped right after connect")
        } else if stage == Stage::Up {
            Outcome::Dropped
        } else {
            Outcome::Failed(reason)
        }
    };
    let (Phase::WaitOpen(ws) | Phase::WaitConnect(ws) | Phase::Connected(ws)) = &mut conn.phase
    else {
        unreachable!()
    };
    let send = |ws: &mut WebSocket<TcpStream>, s: String| match ws.send(Message::text(s)) {
        Ok(()) => Ok(()),
        Err(e) if ws_would_block(&e) => Ok(()),
        Err(_) => Err(()),
    };
    if events & (libc::EPOLLOUT as u32) != 0 {
        match ws.flush() {
            Ok(()) => {}
            Err(e) if ws_would_block(&e) => {}
            Err(_) => return lost(stage, false, "ws: write"),
        }
    }
    let result = loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(e) if ws_would_block(&e) => {
                break if just_connected {
                    Outcome::Connected
                } else {
                    Outcome::Pending
                };
            }
            Err(_) => break lost(stage, just_connected, "ws: closed before connect"),
        };
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Close(_) => break lost(stage, just_connected, "ws: close frame"),
            _ => continue,
        };
        match (stage, classify(text)) {
            (_, Packet::Ping) => {
                if send(ws, "3".into()).is_err() {
                    break lost(stage, just_connected, "ws: write");
                }
                *pings += 1;
            }
            (_, Packet::Close) => break lost(stage, just_connected, "eio: close packet"),
            (Stage::Open, Packet::Open) => {
                let token = minter.mint(conn.n);
                if send(ws, connect_packet(&token)).is_err() {
                    break lost(stage, false, "ws: write");
                }
                stage = Stage::Connect;
            }
            (Stage::Open, _) => break lost(stage, false, "eio: unexpected before open"),
            (Stage::Connect, Packet::Connected) => {
                stage = Stage::Up;
                just_connected = true;
            }
            (Stage::Connect, Packet::ConnectError) => break Outcome::Failed("auth refused (44)"),
            _ => {}
        }
    };
    // Move the websocket into the phase matching the stage reached.
    if !matches!(result, Outcome::Failed(_) | Outcome::Dropped) {
        let ws = match std::mem::replace(&mut conn.phase, Phase::TcpConnecting) {
            Phase::WaitOpen(ws) | Phase::WaitConnect(ws) | Phase::Connected(ws) => ws,
            _ => unreachable!(),
        };
        conn.phase = match stage {
            Stage::Open => Phase::WaitOpen(ws),
            Stage::Connect => Phase::WaitConnect(ws),
            Stage::Up => Phase::Connected(ws),
        };
    }
    result
}

/// Raises the soft open-files limit to the hard one; returns the resulting soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return r.rlim_max;
            }
        }
        r.rlim_cur
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
        hist: new_histogram(),
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
    let hist = std::mem::replace(&mut eng.hist, new_histogram());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head() {
        assert_eq!(parse_response_head(b"HTTP/1.1 101 Switching"), None);
        let r = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        assert_eq!(parse_response_head(r), Some(Ok((101, r.len() - 4))));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 503 Busy\r\n\r\n"),
            Some(Ok((503, 21)))
        );
        assert_eq!(parse_response_head(b"garbage\r\n\r\n"), Some(Err(())));
    }

    #[test]
    fn packets() {
        assert_eq!(
            classify(r#"0{"sid":"x","pingInterval":25000}"#),
            Packet::Open
        );
        assert_eq!(classify(r#"40{"sid":"abc"}"#), Packet::Connected);
        assert_eq!(classify(r#"40/admin,{"sid":"abc"}"#), Packet::Other);
        assert_eq!(
            classify(r#"44{"message":"unauthorized"}"#),
            Packet::ConnectError
        );
        assert_eq!(classify("2"), Packet::Ping);
        assert_eq!(classify("2probe"), Packet::Other);
        assert_eq!(classify("1"), Packet::Close);
        assert_eq!(classify(r#"42["event",{}]"#), Packet::Other);
    }
}

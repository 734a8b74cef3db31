//! `loadtest sink-server`: a trivial local sender, not a gateway. It accepts websocket
//! Engine.IO/Socket.IO connections, answers OPEN and CONNECT, acks `join`/`subscribe`, and from
//! then on sends that connection RealtimeEvent frames (publisher 0, channel 0, the same JSON a
//! gateway delivers). One thread, epoll. Two modes:
//!
//! * **Flood** (`--publish-rate 0`, the default) measures the harness's own ingest rate: each
//!   subscribed connection gets pre-encoded batches of frames as fast as its socket accepts
//!   them (one `write` per batch; only the `seq` and `sent_ns` digits are patched per batch;
//!   `seq` counts from 0 per connection, `sent_ns` is when the batch was built).
//! * **Paced** (`--publish-rate R`) measures the floor latency of fanning one message out to N
//!   sockets on this machine, what an ideal server achieves: at scheduled times `t0 + k/R`
//!   (a timerfd; the schedule does not drift with the work done) it builds ONE frame with
//!   `seq` = k (the publish number, the same for every connection) and `sent_ns` = the
//!   *scheduled* time (so a late sink counts against the latency, as with `--co intended`),
//!   and writes that frame to every subscribed connection in slot order, one non-blocking
//!   `write` per connection in a tight loop. A write that would block or is partial leaves the
//!   rest in that connection's buffer, finished on EPOLLOUT; frames are never dropped. It
//!   prints a line a second on stderr: publishes, frames written, how many could not be
//!   written at once (deferred), how late the loop started and how long it took.
//!
//! * **Relay** (`--relay`) is paced mode driven by a client instead of a timer: each `publish`
//!   a connection sends becomes the one frame (its `seq`, and its `sent_ns`: the publisher's
//!   scheduled time), written to every subscribed connection, and then acknowledged, in the
//!   order a gateway does it. It is the floor of a fan-out that starts with a client's publish:
//!   the publish's trip in (the client writes, this process wakes and reads) is in it, which
//!   the timer of paced mode does not pay. Client side: `fanout --publishers 1 --channels 1
//!   --rate R ...`, as against a gateway.
//!
//! Client side: `loadtest fanout --publishers 0 --channels 1 --rate R ...` (give the sink's
//! rate: with `--publishers 0` and `--rate`, the client keeps reading after the window until
//! every subscriber has got a frame stamped after it, so the publishes at the end of the window
//! are complete in the latency histogram; with `--max`, used for flood, it stops at once).
//! With `--publishers 0` a subscriber's stream starts at the first `seq` it receives, so lost /
//! duplicated / out of order count gaps, repeats and reordering after that point.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use crate::client::{find, parse_frame_header};
use crate::sys::{mono_ns, raise_nofile, Timer};

const LISTEN: u64 = u64::MAX;
const TIMER: u64 = u64::MAX - 1;
const W: usize = 20;

struct Batch {
    buf: Vec<u8>,
    seq_at: Vec<usize>,
    ns_at: Vec<usize>,
}

fn server_text(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

fn make_batch(n: usize) -> Batch {
    let pad = " ".repeat(W);
    let mut buf = Vec::new();
    let mut seq_at = Vec::new();
    let mut ns_at = Vec::new();
    for _ in 0..n {
        let pre = "42[\"event\",{\"id\":\"0000000000000-sink\",\"channel\":\"sink\",\"event\":\"lt\",\"data\":{\"seq\":";
        let mid = ",\"publisher\":0,\"ch\":0,\"sent_ns\":";
        let post = "},\"from\":{\"socketId\":\"sink-publisher-socket\",\"userId\":\"load-0\"},\"ts\":1764000000000}]";
        let payload = format!("{pre}{pad}{mid}{pad}{post}");
        let start = buf.len();
        server_text(&mut buf, payload.as_bytes());
        let body = buf.len() - payload.len();
        let _ = start;
        seq_at.push(body + pre.len());
        ns_at.push(body + pre.len() + W + mid.len());
    }
    Batch { buf, seq_at, ns_at }
}

/// The ack of a `publish` (or any other event) with ack id `id`.
fn publish_ack(id: &str) -> String {
    format!("43{id}[{{\"ok\":true,\"id\":\"0\"}}]")
}

/// The unsigned number after the first `key` in `json`.
fn json_u64(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(json, key)? + key.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn put_num(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut() {
        *b = b' ';
    }
    let mut i = dst.len();
    loop {
        i -= 1;
        dst[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
}

struct Peer {
    stream: TcpStream,
    upgraded: bool,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    off: usize,
    /// Joined or subscribed: gets frames.
    streaming: bool,
    /// Flood mode (else paced: frames come from [`Paced::publish_due`]).
    flood: bool,
    seq: u64,
    batch: Option<Batch>,
    sid: String,
    /// Relay mode: publishes read and not yet relayed: (seq, sent_ns, ack id).
    relays: Vec<(u64, u64, String)>,
}

impl Peer {
    fn flush(&mut self) -> io::Result<()> {
        while self.off < self.out.len() {
            match self.stream.write(&self.out[self.off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => self.off += k,
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.off = 0;
        Ok(())
    }

    /// Writes until the socket would block; refills batches while streaming.
    fn pump(&mut self, batch_n: usize) -> io::Result<()> {
        loop {
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
            if !self.streaming || !self.flood {
                return Ok(());
            }
            let b = self.batch.get_or_insert_with(|| make_batch(batch_n));
            let now = mono_ns();
            for i in 0..b.seq_at.len() {
                let s = b.seq_at[i];
                put_num(&mut b.buf[s..s + W], self.seq);
                self.seq += 1;
                let t = b.ns_at[i];
                put_num(&mut b.buf[t..t + W], now);
            }
            self.out.extend_from_slice(&b.buf);
        }
    }

    /// Paced mode: hands one frame to the socket without blocking. Ok(true) when the kernel
    /// took all of it at once; Ok(false) when (the rest of) it waits in `out` for EPOLLOUT,
    /// because the write would block, was partial, or an earlier frame is still waiting.
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.off < self.out.len() {
            self.out.extend_from_slice(frame);
            return Ok(false);
        }
        match self.stream.write(frame) {
            Ok(k) if k == frame.len() => Ok(true),
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                self.out.clear();
                self.off = 0;
                self.out.extend_from_slice(&frame[k..]);
                // Write on until EAGAIN, so that EPOLLOUT is due when there is room again.
                match self.flush() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(false),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.out.clear();
                self.off = 0;
                self.out.extend_from_slice(frame);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads what the client sent and answers it.
    fn on_readable(&mut self, batch_n: usize, relay: bool) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(k) => self.rbuf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !self.upgraded {
            let Some(end) = find(&self.rbuf, b"\r\n\r\n") else {
                return Ok(true);
            };
            let head = String::from_utf8_lossy(&self.rbuf[..end]).to_string();
            self.rbuf.drain(..end + 4);
            let key = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            self.out.extend_from_slice(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .as_bytes(),
            );
            let open = format!(
                "0{{\"sid\":\"{}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}",
                self.sid
            );
            server_text(&mut self.out, open.as_bytes());
            self.upgraded = true;
        }
        // Client frames (masked).
        while let Some((_fin, op, h, len, mask)) = parse_frame_header(&self.rbuf) {
            if self.rbuf.len() < h + len {
                break;
            }
            let mut p = self.rbuf[h..h + len].to_vec();
            if let Some(m) = mask {
                for (i, b) in p.iter_mut().enumerate() {
                    *b ^= m[i & 3];
                }
            }
            self.rbuf.drain(..h + len);
            match op {
                8 => return Ok(false),
                1 => {
                    if p.starts_with(b"40") {
                        let s = format!("40{{\"sid\":\"{}\"}}", self.sid);
                        server_text(&mut self.out, s.as_bytes());
                    } else if p.starts_with(b"42") {
                        let digits = p[2..].iter().take_while(|b| b.is_ascii_digit()).count();
                        let id = std::str::from_utf8(&p[2..2 + digits]).unwrap_or("");
                        let rest = &p[2 + digits..];
                        if rest.starts_with(b"[\"join\"") || rest.starts_with(b"[\"subscribe\"") {
                            let s = if rest.starts_with(b"[\"join\"") {
                                format!(
                                    "43{id}[{{\"ok\":true,\"channel\":\"sink\",\"members\":1}}]"
                                )
                            } else {
                                format!("43{id}[{{\"ok\":true,\"subscriptionId\":\"s1\"}}]")
                            };
                            server_text(&mut self.out, s.as_bytes());
                            self.streaming = true;
                        } else if relay && rest.starts_with(b"[\"publish\"") {
                            let seq = json_u64(rest, b"\"seq\":").unwrap_or(0);
                            let ns = json_u64(rest, b"\"sent_ns\":").unwrap_or_else(mono_ns);
                            self.relays.push((seq, ns, id.to_string()));
                        } else if !id.is_empty() {
                            server_text(&mut self.out, publish_ack(id).as_bytes());
                        }
                    }
                }
                _ => {}
            }
        }
        self.pump(batch_n)?;
        Ok(true)
    }
}

/// Paced mode: the publish schedule, the one frame, and what the fan-out loop did.
struct Paced {
    timer: Timer,
    gap_ns: u64,
    next_due: u64,
    /// Publishes done = the next publish's `seq`.
    seq: u64,
    frame: Batch,
    frames: u64,
    deferred: u64,
    /// Since the last stats line.
    rounds: u64,
    lag_max: u64,
    loop_sum: u64,
    loop_max: u64,
    last_subs: u64,
}

impl Paced {
    fn new(rate: f64) -> Result<Paced, String> {
        let timer = Timer::new().map_err(|e| format!("timerfd: {e}"))?;
        let gap_ns = ((1e9 / rate) as u64).max(1);
        Ok(Paced {
            timer,
            gap_ns,
            next_due: mono_ns() + gap_ns,
            seq: 0,
            frame: make_batch(1),
            frames: 0,
            deferred: 0,
            rounds: 0,
            lag_max: 0,
            loop_sum: 0,
            loop_max: 0,
            last_subs: 0,
        })
    }

    fn arm(&self) {
        self.timer.arm(self.next_due);
    }

    /// Does every publish that is due: one frame, written to each subscribed connection in
    /// turn. Connections whose write fails are closed.
    fn publish_due(&mut self, peers: &mut [Option<Peer>], free: &mut Vec<usize>) {
        while self.next_due <= mono_ns() {
            let due = self.next_due;
            self.next_due += self.gap_ns;
            self.publish(self.seq, due, peers, free);
        }
        self.arm();
    }

    /// One publish: the frame as message `seq`, stamped `sent_ns` (its scheduled time; the
    /// publisher's in relay mode), written to every subscribed connection.
    fn publish(
        &mut self,
        seq: u64,
        sent_ns: u64,
        peers: &mut [Option<Peer>],
        free: &mut Vec<usize>,
    ) {
        let (s, t) = (self.frame.seq_at[0], self.frame.ns_at[0]);
        put_num(&mut self.frame.buf[s..s + W], seq);
        put_num(&mut self.frame.buf[t..t + W], sent_ns);
        self.seq += 1;
        self.fan_out(mono_ns(), sent_ns, peers, free);
    }

    /// Writes the current frame to every subscribed connection, and accounts for it.
    fn fan_out(&mut self, start: u64, due: u64, peers: &mut [Option<Peer>], free: &mut Vec<usize>) {
        let mut subs = 0;
        for (idx, slot) in peers.iter_mut().enumerate() {
            let Some(p) = slot.as_mut() else { continue };
            if !p.streaming {
                continue;
            }
            subs += 1;
            match p.send_frame(&self.frame.buf) {
                Ok(true) => {}
                Ok(false) => self.deferred += 1,
                Err(_) => {
                    *slot = None;
                    free.push(idx);
                }
            }
        }
        let took = mono_ns() - start;
        self.frames += subs;
        self.last_subs = subs;
        self.rounds += 1;
        self.lag_max = self.lag_max.max(start.saturating_sub(due));
        self.loop_sum += took;
        self.loop_max = self.loop_max.max(took);
    }

    /// A line on stderr with the totals and the last interval's loop times.
    fn report(&mut self, peers: &[Option<Peer>]) {
        if self.rounds > 0 && self.last_subs > 0 {
            self.print(peers);
        }
        self.rounds = 0;
        self.lag_max = 0;
        self.loop_sum = 0;
        self.loop_max = 0;
    }

    fn print(&self, peers: &[Option<Peer>]) {
        let pending = peers
            .iter()
            .flatten()
            .filter(|p| p.off < p.out.len())
            .count();
        let mean = self.loop_sum / self.rounds;
        eprintln!(
            "[sink] publishes {} to {} subscribers; frames {} deferred {} (would block/partial/queued), pending now {}; last interval: start late max {} us, fan-out loop mean {} us ({} ns/socket) max {} us",
            self.seq,
            self.last_subs,
            self.frames,
            self.deferred,
            pending,
            self.lag_max / 1000,
            mean / 1000,
            mean / self.last_subs,
            self.loop_max / 1000
        );
    }
}

/// Runs the sink until killed. `publish_rate` 0: flood mode with batches of `batch` frames;
/// > 0: paced mode, that many publishes per second; `relay`: each client publish is one.
pub fn serve(listen: &str, batch: usize, publish_rate: f64, relay: bool) -> Result<(), String> {
    if !publish_rate.is_finite() || publish_rate < 0.0 {
        return Err("--publish-rate must be 0 (flood) or a positive number".into());
    }
    raise_nofile();
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: LISTEN,
    };
    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), &mut ev) };
    let mut paced = if relay {
        // The timer is made but never armed: publishes come from clients.
        Some(Paced::new(1.0)?)
    } else if publish_rate > 0.0 {
        let p = Paced::new(publish_rate)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: TIMER,
        };
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, p.timer.fd(), &mut ev) };
        p.arm();
        Some(p)
    } else {
        None
    };
    println!(
        "loadtest sink-server listening on {} (a trivial sender, not a gateway; {})",
        listener.local_addr().map_err(|e| e.to_string())?,
        match &paced {
            Some(p) if relay => format!(
                "relay: each client publish is one frame of {} bytes",
                p.frame.buf.len()
            ),
            Some(p) => format!(
                "paced: {publish_rate} publishes/s, one frame of {} bytes each",
                p.frame.buf.len()
            ),
            None => format!("flood: batches of {batch} frames"),
        }
    );
    let _ = io::stdout().flush();
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut n = 0u64;
    let mut last_report = std::time::Instant::now();
    loop {
        let k = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, 1000) };
        // Publishes first: they are what is measured.
        if let Some(p) = paced.as_mut() {
            if !relay && p.next_due <= mono_ns() {
                p.publish_due(&mut peers, &mut free);
            }
            if last_report.elapsed() >= std::time::Duration::from_secs(1) {
                last_report = std::time::Instant::now();
                p.report(&peers);
            }
        }
        for ev in events.iter().take(k.max(0) as usize) {
            let (tok, e) = (ev.u64, ev.events);
            if tok == TIMER {
                // Usually stale: publish_due above re-armed the timer, which clears it. But
                // the re-armed timer may have fired since, and reading it would swallow that
                // expiry with nothing left armed: the loop then slept until epoll_wait's
                // 1 s timeout and published a second's frames late (the floor's p99 read
                // about 1 s in some runs). Re-arming after the read keeps the next publish
                // armed whatever happened (a time already past fires at once).
                if let Some(p) = &paced {
                    p.timer.clear();
                    p.arm();
                }
                continue;
            }
            if tok == LISTEN {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(true);
                    let _ = s.set_nodelay(true);
                    let idx = free.pop().unwrap_or_else(|| {
                        peers.push(None);
                        peers.len() - 1
                    });
                    let mut pe = libc::epoll_event {
                        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
                        u64: idx as u64,
                    };
                    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut pe) };
                    n += 1;
                    peers[idx] = Some(Peer {
                        stream: s,
                        upgraded: false,
                        rbuf: Vec::new(),
                        out: Vec::new(),
                        off: 0,
                        streaming: false,
                        flood: paced.is_none(),
                        seq: 0,
                        batch: None,
                        sid: format!("sink{n}"),
                        relays: Vec::new(),
                    });
                }
                continue;
            }
            let idx = tok as usize;
            let Some(p) = peers[idx].as_mut() else {
                continue;
            };
            let mut alive = true;
            if e & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                alive = matches!(p.on_readable(batch, relay), Ok(true));
            }
            let relays = std::mem::take(&mut p.relays);
            if alive && !relays.is_empty() {
                let r = paced.as_mut().expect("relay mode is paced");
                let mut acks = Vec::new();
                for (seq, ns, id) in relays {
                    r.publish(seq, ns, &mut peers, &mut free);
                    if !id.is_empty() {
                        server_text(&mut acks, publish_ack(&id).as_bytes());
                    }
                }
                // The fan-out may have dropped the publisher (a failed write).
                let Some(p) = peers[idx].as_mut() else {
                    continue;
                };
                p.out.extend_from_slice(&acks);
                alive = p.pump(batch).is_ok();
            }
            let Some(p) = peers[idx].as_mut() else {
                continue;
            };
            if alive && e & libc::EPOLLOUT as u32 != 0 {
                alive = p.pump(batch).is_ok();
            }
            if !alive {
                peers[idx] = None;
                free.push(idx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgs::packets::{classify, Incoming};

    #[test]
    fn batch_frames_parse_as_deliveries() {
        let mut b = make_batch(3);
        for (i, &s) in b.seq_at.clone().iter().enumerate() {
            put_num(&mut b.buf[s..s + W], 40 + i as u64);
        }
        for &t in &b.ns_at.clone() {
            put_num(&mut b.buf[t..t + W], 123456789);
        }
        let mut rest = &b.buf[..];
        let mut seqs = vec![];
        while !rest.is_empty() {
            let (_, op, h, len, mask) = parse_frame_header(rest).unwrap();
            assert_eq!((op, mask), (1, None));
            let payload = &rest[h..h + len];
            let v: serde_json::Value = serde_json::from_slice(&payload[2..]).unwrap();
            assert_eq!(v[1]["data"]["sent_ns"], 123456789);
            match classify(payload) {
                Incoming::Delivery { seq, sent_ns, .. } => {
                    assert_eq!(sent_ns, 123456789);
                    seqs.push(seq);
                }
                other => panic!("{other:?}"),
            }
            rest = &rest[h + len..];
        }
        assert_eq!(seqs, vec![40, 41, 42]);
    }

    #[test]
    fn paced_frame_waits_behind_pending_bytes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut p = Peer {
            stream: s,
            upgraded: true,
            rbuf: Vec::new(),
            out: Vec::new(),
            off: 0,
            streaming: true,
            flood: false,
            seq: 0,
            batch: None,
            sid: "t".into(),
            relays: Vec::new(),
        };
        // Nothing pending: the kernel takes the frame at once.
        assert!(p.send_frame(b"one").unwrap());
        // Something pending (as after a partial write): the frame goes behind it, in order.
        p.out.extend_from_slice(b"xxrest");
        p.off = 2;
        assert!(!p.send_frame(b"two").unwrap());
        assert_eq!(&p.out[p.off..], b"resttwo");
        p.flush().unwrap();
        assert!(p.out.is_empty());
        let mut got = [0u8; 10];
        let mut c = client;
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"oneresttwo");
    }
}

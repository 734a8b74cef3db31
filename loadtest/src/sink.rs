//! `loadtest sink-server`: a trivial local sender used to measure the harness's own ingest
//! rate. It is not a gateway: it accepts websocket Engine.IO/Socket.IO connections, answers
//! OPEN and CONNECT, acks `join`/`subscribe`, and from then on writes pre-encoded batches of
//! RealtimeEvent frames to that connection as fast as the socket accepts them (one `write`
//! per batch; only the `seq` and `sent_ns` digits are patched per batch). One thread, epoll.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use crate::client::{find, parse_frame_header};
use crate::msgs::mono_ns;

const LISTEN: u64 = u64::MAX;
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
    streaming: bool,
    seq: u64,
    batch: Option<Batch>,
    sid: String,
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
            if !self.streaming {
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

    /// Reads what the client sent and answers it.
    fn on_readable(&mut self, batch_n: usize) -> io::Result<bool> {
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
                        } else if !id.is_empty() {
                            let s = format!("43{id}[{{\"ok\":true,\"id\":\"0\"}}]");
                            server_text(&mut self.out, s.as_bytes());
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

pub fn serve(listen: &str, batch: usize) -> Result<(), String> {
    crate::connect::raise_nofile();
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: LISTEN,
    };
    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), &mut ev) };
    println!(
        "loadtest sink-server listening on {} (a trivial sender, not a gateway)",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let _ = io::stdout().flush();
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut n = 0u64;
    loop {
        let k = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, 1000) };
        for ev in events.iter().take(k.max(0) as usize) {
            let (tok, e) = (ev.u64, ev.events);
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
                        seq: 0,
                        batch: None,
                        sid: format!("sink{n}"),
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
                alive = matches!(p.on_readable(batch), Ok(true));
            }
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
    use crate::msgs::{classify, Incoming};

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
}

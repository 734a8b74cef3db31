//! A minimal non-blocking Socket.IO (v5 over Engine.IO v4, websocket only) client connection
//! for the message scenarios, driven by the caller's edge-triggered epoll loop.
//!
//! It parses websocket frames in place in one growable read buffer (no allocation per
//! message) and answers Engine.IO pings and websocket pings by itself. Frames it sends are
//! masked with the all-zero key (valid framing, no XOR cost; unpredictable keys only matter
//! for browsers behind proxies). Fragmented messages are not supported (neither the gateway
//! nor Node's `ws` fragment what they send).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    TcpConnecting,
    SendingUpgrade,
    ReadingUpgrade,
    WaitOpen,
    WaitConnect,
    Up,
    Closed,
}

/// What one step of [`Conn::poll`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Ev {
    /// Nothing more to do until the next readiness event.
    Idle,
    /// Socket.IO CONNECT acknowledged; `sid` is set.
    Connected,
    /// A Socket.IO packet other than CONNECT (`42...`, `43...`, ...): the range of its text in
    /// the read buffer, valid until the next call to `poll`.
    Message(usize, usize),
    /// The connection is finished; the reason.
    Closed(&'static str),
}

pub struct Conn {
    stream: TcpStream,
    pub state: State,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    read_blocked: bool,
    wbuf: Vec<u8>,
    woff: usize,
    /// The Socket.IO CONNECT packet to send after OPEN (dropped once sent).
    connect_packet: Option<String>,
    pub sid: Option<String>,
    upgrade_off: usize,
    /// permessage-deflate, when the server accepted it: the inflater.
    inflate: Option<Box<flate2::Decompress>>,
    /// The last message, inflated; `from_z`: the last message's range is in it.
    zbuf: Vec<u8>,
    from_z: bool,
    /// Bytes the last message took on the wire (frame header included).
    pub last_wire: usize,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Opens a non-blocking TCP connection (optionally from `source`) and registers it with
/// `epfd` under `token` (edge-triggered, in and out).
pub fn tcp_connect(
    epfd: i32,
    token: u64,
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, &'static str> {
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|e| {
            if e.raw_os_error() == Some(libc::EMFILE) {
                "socket: too many open files"
            } else {
                "socket"
            }
        })?;
    sock.set_nonblocking(true).map_err(|_| "socket")?;
    let _ = sock.set_nodelay(true);
    if let Some(src) = source {
        let one: libc::c_int = 1;
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|_| "bind source")?;
    }
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            return Err("tcp connect: no free source port")
        }
        Err(_) => return Err("tcp connect"),
    }
    let stream: TcpStream = sock.into();
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) } != 0 {
        return Err("epoll_ctl");
    }
    Ok(stream)
}

/// Appends a masked (zero key) text frame carrying `payload` to `out`.
pub fn encode_client_text(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// (fin, opcode, header length, payload length, mask key).
pub type FrameHeader = (bool, u8, usize, usize, Option<[u8; 4]>);

/// A websocket frame header parsed from `buf`. `None` when `buf` does not hold the whole
/// header yet.
pub fn parse_frame_header(buf: &[u8]) -> Option<FrameHeader> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let op = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut h) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        if buf.len() < h + 4 {
            return None;
        }
        let m = [buf[h], buf[h + 1], buf[h + 2], buf[h + 3]];
        h += 4;
        Some(m)
    } else {
        None
    };
    Some((fin, op, h, len, mask))
}

const MAX_FRAME: usize = 16 << 20;

impl Conn {
    pub fn new(stream: TcpStream, connect_packet: String, read_buffer: usize) -> Conn {
        Conn {
            stream,
            state: State::TcpConnecting,
            rbuf: vec![0; read_buffer.max(512)],
            rstart: 0,
            rend: 0,
            read_blocked: false,
            wbuf: Vec::new(),
            woff: 0,
            connect_packet: Some(connect_packet),
            sid: None,
            upgrade_off: 0,
            inflate: None,
            zbuf: Vec::new(),
            from_z: false,
            last_wire: 0,
        }
    }

    /// The buffer the last [`Ev::Message`] range is in.
    pub fn buf(&self) -> &[u8] {
        if self.from_z {
            &self.zbuf
        } else {
            &self.rbuf
        }
    }

    /// Queues a Socket.IO/Engine.IO text packet; [`Conn::flush`] sends it.
    pub fn queue_text(&mut self, payload: &[u8]) {
        encode_client_text(&mut self.wbuf, payload);
    }

    /// Bytes queued and not yet accepted by the kernel.
    pub fn pending_write(&self) -> usize {
        self.wbuf.len() - self.woff
    }

    /// Writes what is queued until the kernel stops accepting. Err on a broken connection.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.woff < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.woff..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => self.woff += k,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.woff = 0;
        if self.wbuf.capacity() > 64 * 1024 {
            self.wbuf.shrink_to(4096);
        }
        Ok(())
    }

    /// Call on every epoll readiness event before polling.
    pub fn ready(&mut self, events: u32) {
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
        {
            self.read_blocked = false;
        }
    }

    fn close(&mut self, why: &'static str) -> Ev {
        self.state = State::Closed;
        Ev::Closed(why)
    }

    /// Advances the connection: handshake steps, then one message at a time.
    /// Call until it returns `Idle` or `Closed` (edge-triggered epoll).
    pub fn poll(&mut self, request: &[u8]) -> Ev {
        loop {
            match self.state {
                State::Closed => return Ev::Closed("closed"),
                State::TcpConnecting => match self.stream.take_error() {
                    Ok(None) => {
                        // Connected when writable: peer_addr succeeds once established.
                        if self.stream.peer_addr().is_ok() {
                            self.state = State::SendingUpgrade;
                        } else {
                            return Ev::Idle;
                        }
                    }
                    Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        return self.close("tcp connect: refused")
                    }
                    _ => return self.close("tcp connect"),
                },
                State::SendingUpgrade => match self.stream.write(&request[self.upgrade_off..]) {
                    Ok(k) => {
                        self.upgrade_off += k;
                        if self.upgrade_off == request.len() {
                            self.state = State::ReadingUpgrade;
                        }
                    }
                    Err(e) if would_block(&e) => return Ev::Idle,
                    Err(_) => return self.close("upgrade: write"),
                },
                State::ReadingUpgrade => {
                    let data = &self.rbuf[..self.rend];
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let ok =
                            data.starts_with(b"HTTP/1.1 101") || data.starts_with(b"HTTP/1.0 101");
                        if !ok {
                            return self.close(if data.starts_with(b"HTTP/1.1 503") {
                                "upgrade: HTTP 503"
                            } else {
                                "upgrade: refused"
                            });
                        }
                        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                        if head.contains("permessage-deflate") {
                            self.inflate = Some(Box::new(flate2::Decompress::new(false)));
                        }
                        self.rstart = end + 4;
                        self.state = State::WaitOpen;
                        continue;
                    }
                    match self.fill() {
                        Ok(true) => {}
                        Ok(false) => return Ev::Idle,
                        Err(why) => return self.close(why),
                    }
                }
                State::WaitOpen | State::WaitConnect | State::Up => match self.next_frame() {
                    Some(Ok((s, e))) => {
                        if let Some(ev) = self.on_text(s, e) {
                            return ev;
                        }
                    }
                    Some(Err(why)) => return self.close(why),
                    None => match self.fill() {
                        Ok(true) => {}
                        Ok(false) => return Ev::Idle,
                        Err(why) => return self.close(why),
                    },
                },
            }
        }
    }

    /// Reads more into the buffer. Ok(true): got bytes; Ok(false): would block.
    fn fill(&mut self) -> Result<bool, &'static str> {
        if self.read_blocked {
            return Ok(false);
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            } else {
                if self.rbuf.len() >= MAX_FRAME + 16 {
                    return Err("frame too large");
                }
                let n = self.rbuf.len() * 2;
                self.rbuf.resize(n, 0);
            }
        }
        match self.stream.read(&mut self.rbuf[self.rend..]) {
            Ok(0) => Err("closed by server"),
            Ok(k) => {
                self.rend += k;
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                self.read_blocked = true;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Err("read error"),
        }
    }

    /// The next complete text frame's payload range; control frames handled here.
    fn next_frame(&mut self) -> Option<Result<(usize, usize), &'static str>> {
        loop {
            let avail = &self.rbuf[self.rstart..self.rend];
            let compressed = avail.first().is_some_and(|b| b & 0x40 != 0);
            let (fin, op, h, len, mask) = parse_frame_header(avail)?;
            if len > MAX_FRAME {
                return Some(Err("frame too large"));
            }
            if avail.len() < h + len {
                // Make room for the whole frame if the buffer is too small.
                if h + len > self.rbuf.len() - self.rstart && self.rstart > 0 {
                    self.rbuf.copy_within(self.rstart..self.rend, 0);
                    self.rend -= self.rstart;
                    self.rstart = 0;
                }
                if h + len > self.rbuf.len() {
                    self.rbuf.resize((h + len).next_power_of_two(), 0);
                }
                return None;
            }
            let s = self.rstart + h;
            let e = s + len;
            self.rstart = e;
            if let Some(m) = mask {
                for (i, b) in self.rbuf[s..e].iter_mut().enumerate() {
                    *b ^= m[i & 3];
                }
            }
            if !fin || op == 0 {
                return Some(Err("fragmented frame (unsupported)"));
            }
            self.last_wire = h + len;
            self.from_z = false;
            match op {
                1 if compressed => {
                    let Some(z) = self.inflate.as_mut() else {
                        return Some(Err("compressed frame without permessage-deflate"));
                    };
                    self.zbuf.clear();
                    // The message, then the four bytes the sender took off its end.
                    for input in [&self.rbuf[s..e], &[0, 0, 0xff, 0xff][..]] {
                        let mut at = 0;
                        loop {
                            self.zbuf.reserve(input.len() * 4 + 256);
                            let before = z.total_in();
                            let r = z.decompress_vec(
                                &input[at..],
                                &mut self.zbuf,
                                flate2::FlushDecompress::Sync,
                            );
                            if r.is_err() {
                                return Some(Err("bad compressed frame"));
                            }
                            at += (z.total_in() - before) as usize;
                            if at == input.len() && self.zbuf.len() < self.zbuf.capacity() {
                                break;
                            }
                            if self.zbuf.len() > MAX_FRAME {
                                return Some(Err("frame too large"));
                            }
                        }
                    }
                    // A message ends on a block boundary, so the next one inflates without
                    // a reset (which costs more than the inflating); with the server's
                    // context kept, the window must not be reset anyway.
                    self.from_z = true;
                    return Some(Ok((0, self.zbuf.len())));
                }
                1 => return Some(Ok((s, e))),
                2 | 0xA => continue,
                8 => return Some(Err("close frame")),
                9 => {
                    // Pong with the same payload.
                    let payload = self.rbuf[s..e].to_vec();
                    self.wbuf.push(0x8A);
                    self.wbuf.push(0x80 | payload.len() as u8);
                    self.wbuf.extend_from_slice(&[0, 0, 0, 0]);
                    self.wbuf.extend_from_slice(&payload);
                    let _ = self.flush();
                    continue;
                }
                _ => return Some(Err("bad opcode")),
            }
        }
    }

    /// Engine.IO / Socket.IO handling of one text message. `None`: consumed here.
    fn on_text(&mut self, s: usize, e: usize) -> Option<Ev> {
        let t = if self.from_z {
            &self.zbuf[s..e]
        } else {
            &self.rbuf[s..e]
        };
        match t.first() {
            Some(b'0') if self.state == State::WaitOpen => {
                let p = self.connect_packet.take().unwrap_or_default();
                self.queue_text(p.as_bytes());
                if self.flush().is_err() {
                    return Some(self.close("write"));
                }
                self.state = State::WaitConnect;
                None
            }
            Some(b'2') if t.len() == 1 => {
                self.queue_text(b"3");
                if self.flush().is_err() {
                    return Some(self.close("write"));
                }
                None
            }
            Some(b'1') => Some(self.close("engine.io close")),
            Some(b'4') => match t.get(1) {
                Some(b'0') if self.state == State::WaitConnect && t.get(2) != Some(&b'/') => {
                    self.sid = find_str(t, b"\"sid\":").map(|x| x.to_string());
                    self.state = State::Up;
                    Some(Ev::Connected)
                }
                Some(b'4') => Some(self.close("connect_error (44)")),
                Some(b'1') => Some(self.close("socket.io disconnect")),
                _ if self.state == State::Up => Some(Ev::Message(s, e)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The unsigned integer following `key` in `hay` (whitespace allowed before it).
pub fn find_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let i = find(hay, key)? + key.len();
    parse_u64_at(hay, i).map(|(v, _)| v)
}

/// Parses an unsigned integer at `i` after optional spaces; (value, index after it).
pub fn parse_u64_at(hay: &[u8], mut i: usize) -> Option<(u64, usize)> {
    while i < hay.len() && hay[i] == b' ' {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i < hay.len() && hay[i].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add((hay[i] - b'0') as u64);
        i += 1;
    }
    (i > start).then_some((v, i))
}

/// The JSON string (without escapes) following `key`.
pub fn find_str<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let i = find(hay, key)? + key.len();
    let rest = hay.get(i..)?;
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(k) => {
                i += k;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_header() {
        let mut out = Vec::new();
        encode_client_text(&mut out, b"hello");
        assert_eq!(
            parse_frame_header(&out),
            Some((true, 1, 6, 5, Some([0; 4])))
        );
        out.clear();
        encode_client_text(&mut out, &[b'x'; 300]);
        assert_eq!(
            parse_frame_header(&out),
            Some((true, 1, 8, 300, Some([0; 4])))
        );
        out.clear();
        encode_client_text(&mut out, &vec![b'x'; 70_000]);
        assert_eq!(
            parse_frame_header(&out),
            Some((true, 1, 14, 70_000, Some([0; 4])))
        );
        assert_eq!(parse_frame_header(&[0x81]), None);
        assert_eq!(parse_frame_header(&[0x81, 126, 1]), None);
        assert_eq!(
            parse_frame_header(&[0x81, 3, b'a']),
            Some((true, 1, 2, 3, None))
        );
    }

    #[test]
    fn scanning() {
        let t = br#"42["event",{"id":"x","channel":"c","data":{"seq":  42,"publisher":3,"sent_ns":99},"from":null}]"#;
        assert_eq!(find_u64(t, b"\"seq\":"), Some(42));
        assert_eq!(find_u64(t, b"\"publisher\":"), Some(3));
        assert_eq!(find_u64(t, b"\"sent_ns\":"), Some(99));
        assert_eq!(find_u64(t, b"\"nope\":"), None);
        assert_eq!(find_str(t, b"\"channel\":"), Some("c"));
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
    }
}

//! Client websocket frames (RFC 6455 §5) turned into messages, with no
//! buffer per socket while it is idle.
//!
//! The transport reads a socket into a buffer its shard shares among all
//! its sockets and hands the bytes to the socket's [`FrameReader`]. The
//! reader returns the first message they complete, copied out (a message
//! must outlive the shared buffer: its handler may await). Only what the
//! socket must keep between reads is kept, in one allocation made for the
//! purpose: the bytes of a frame not yet whole, the frames after the one
//! returned, and a fragmented message's parts so far. Once those are
//! consumed the allocation goes, so an idle socket holds one empty pointer.
//!
//! Every rule a server must enforce on what a client sends is checked here:
//! masked frames only, no reserved bits (the deflate extension's bit is
//! taken off before, by [`super::deflate::Inflater`]), known opcodes,
//! whole control frames of at most 125 bytes, continuations only inside a
//! fragmented message, UTF-8 text and close reasons, and no message over
//! the bound (checked on the frame header, before its payload is held).

use bytes::Bytes;

/// A whole message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Text(String),
    Binary(Bytes),
    /// Its payload, to be sent back in the pong.
    Ping(Vec<u8>),
    Pong,
    /// The close frame's status code, if it had one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read as websocket messages: the
/// connection closes, with the status code each maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A message longer than the bound (status 1009).
    TooLarge,
    /// A frame that breaks RFC 6455 (status 1002).
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (status 1007).
    Utf8,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge => f.write_str("message too large"),
            FrameError::Protocol(why) => write!(f, "protocol error: {why}"),
            FrameError::Utf8 => f.write_str("invalid UTF-8"),
        }
    }
}

/// One socket's reading state: empty while nothing is in flight.
#[derive(Default)]
pub struct FrameReader {
    partial: Option<Box<Partial>>,
}

/// What a socket keeps between reads while a message is in flight.
#[derive(Default)]
struct Partial {
    /// Bytes read and not yet parsed, from `at` on.
    buf: Vec<u8>,
    at: usize,
    /// A fragmented message so far: its opcode and its payload.
    msg: Option<(u8, Vec<u8>)>,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, then payload bytes.
    head_len: usize,
    len: u64,
}

/// The header at the start of `b`, `None` while it is not whole.
fn header(b: &[u8]) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *b else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    if second & 0x80 == 0 {
        return Err(FrameError::Protocol("unmasked client frame"));
    }
    let (ext, len) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(n as u64)),
    };
    let head_len = 2 + ext + 4;
    if b.len() < head_len {
        return Ok(None);
    }
    let len = match len {
        Some(n) => n,
        None if ext == 2 => u16::from_be_bytes([b[2], b[3]]) as u64,
        None => {
            let n = u64::from_be_bytes(b[2..10].try_into().unwrap_or([0xff; 8]));
            if n >> 63 != 0 {
                return Err(FrameError::Protocol("frame length's top bit set"));
            }
            n
        }
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&b[head_len - 4..head_len]);
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0f,
        mask,
        head_len,
        len,
    }))
}

fn unmask_into(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.reserve(payload.len());
    // Four bytes at a time; the mask repeats every four.
    let mut chunks = payload.chunks_exact(4);
    let m = u32::from_ne_bytes(mask);
    for c in &mut chunks {
        let w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        out.extend_from_slice(&w.to_ne_bytes());
    }
    for (i, b) in chunks.remainder().iter().enumerate() {
        out.push(b ^ mask[i]);
    }
}

/// A close frame's status code is one an endpoint may send (RFC 6455
/// §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What one parse step found.
enum Step {
    /// A message or control frame, and the bytes it took.
    Event(Inbound, usize),
    /// A frame that continues a message and the bytes it took.
    Consumed(usize),
    /// The next frame is not whole yet.
    Need,
}

impl FrameReader {
    /// Whether bytes already read wait to be parsed: the caller asks with an
    /// empty read before reading the socket again.
    pub fn has_buffered(&self) -> bool {
        self.partial.as_ref().is_some_and(|p| p.at < p.buf.len())
    }

    /// Bytes that arrived before the reader existed (after the upgrade
    /// request, in the same read): parsed on the next call.
    pub fn preload(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let p = self.partial.get_or_insert_with(Box::default);
            p.buf.extend_from_slice(bytes);
        }
    }

    /// Whether the reader holds nothing (no allocation).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Adds `fresh` (bytes just read; may be empty) to what is buffered and
    /// returns the first message they complete. Bytes beyond it stay for
    /// the next call. A message longer than `max` is an error as soon as a
    /// header announces it.
    pub fn next(&mut self, fresh: &[u8], max: usize) -> Result<Option<Inbound>, FrameError> {
        let Some(mut p) = self.partial.take() else {
            // Nothing kept: parse the read in place, copy only what is left.
            let mut msg = None;
            let (ev, used) = parse(fresh, &mut msg, max)?;
            let rest = &fresh[used..];
            if !rest.is_empty() || msg.is_some() {
                self.partial = Some(Box::new(Partial {
                    buf: rest.to_vec(),
                    at: 0,
                    msg,
                }));
            }
            return Ok(ev);
        };
        if !fresh.is_empty() {
            p.buf.drain(..p.at);
            p.at = 0;
            p.buf.extend_from_slice(fresh);
        }
        let (ev, used) = parse(&p.buf[p.at..], &mut p.msg, max)?;
        p.at += used;
        if p.at == p.buf.len() {
            p.buf = Vec::new();
            p.at = 0;
        }
        // Kept only while it holds something.
        if !p.buf.is_empty() || p.msg.is_some() {
            self.partial = Some(p);
        }
        Ok(ev)
    }
}

/// Parses frames from `b` until one completes a message (or is a control
/// frame), or the next is not whole: the message, and the bytes used.
fn parse(
    mut b: &[u8],
    msg: &mut Option<(u8, Vec<u8>)>,
    max: usize,
) -> Result<(Option<Inbound>, usize), FrameError> {
    let mut used = 0;
    loop {
        match step(b, msg, max)? {
            Step::Event(ev, n) => return Ok((Some(ev), used + n)),
            Step::Consumed(n) => {
                used += n;
                b = &b[n..];
            }
            Step::Need => return Ok((None, used)),
        }
    }
}

fn step(b: &[u8], msg: &mut Option<(u8, Vec<u8>)>, max: usize) -> Result<Step, FrameError> {
    let Some(h) = header(b)? else {
        return Ok(Step::Need);
    };
    let control = h.opcode & 0x08 != 0;
    if control {
        if !h.fin {
            return Err(FrameError::Protocol("fragmented control frame"));
        }
        if h.len > 125 {
            return Err(FrameError::Protocol("control frame over 125 bytes"));
        }
    } else {
        let so_far = msg.as_ref().map_or(0, |(_, m)| m.len() as u64);
        if so_far + h.len > max as u64 {
            return Err(FrameError::TooLarge);
        }
    }
    match (h.opcode, msg.is_some()) {
        (0x0, false) => return Err(FrameError::Protocol("continuation outside a message")),
        (0x1 | 0x2, true) => {
            return Err(FrameError::Protocol("new message inside a fragmented one"))
        }
        (0x0..=0x2 | 0x8..=0xa, _) => {}
        _ => return Err(FrameError::Protocol("unknown opcode")),
    }
    let total = h.head_len + h.len as usize;
    if b.len() < total {
        return Ok(Step::Need);
    }
    let payload = &b[h.head_len..total];
    let ev = match h.opcode {
        0x8 => {
            let mut p = Vec::new();
            unmask_into(payload, h.mask, &mut p);
            let code = match p.len() {
                0 => None,
                1 => return Err(FrameError::Protocol("close frame of one byte")),
                _ => {
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    if !valid_close_code(code) {
                        return Err(FrameError::Protocol("invalid close code"));
                    }
                    if std::str::from_utf8(&p[2..]).is_err() {
                        return Err(FrameError::Utf8);
                    }
                    Some(code)
                }
            };
            Inbound::Close(code)
        }
        0x9 => {
            let mut p = Vec::new();
            unmask_into(payload, h.mask, &mut p);
            Inbound::Ping(p)
        }
        0xa => Inbound::Pong,
        op => {
            let (op, mut data) = match (op, msg.take()) {
                (0x0, Some((op, data))) => (op, data),
                (op, _) => (op, Vec::new()),
            };
            unmask_into(payload, h.mask, &mut data);
            if !h.fin {
                *msg = Some((op, data));
                return Ok(Step::Consumed(total));
            }
            if op == 0x1 {
                Inbound::Text(String::from_utf8(data).map_err(|_| FrameError::Utf8)?)
            } else {
                Inbound::Binary(Bytes::from(data))
            }
        }
    };
    Ok(Step::Event(ev, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![first];
        super::super::deflate::push_len(&mut f, payload.len() as u64);
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    /// Feeds `bytes` in pieces of `step` and collects every message.
    fn read_all(bytes: &[u8], step: usize, max: usize) -> Result<Vec<Inbound>, FrameError> {
        let mut r = FrameReader::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            let mut fresh = piece;
            while let Some(ev) = r.next(fresh, max)? {
                out.push(ev);
                fresh = &[];
            }
        }
        assert!(!r.has_buffered(), "bytes left unparsed");
        Ok(out)
    }

    #[test]
    fn messages_come_out_whole_across_any_split() {
        let long = "x".repeat(70_000);
        let mut bytes = frame(0x81, b"42[\"a\"]");
        bytes.extend(frame(0x82, &[1, 2, 3]));
        bytes.extend(frame(0x01, b"hel"));
        bytes.extend(frame(0x89, b"pi"));
        bytes.extend(frame(0x00, b"l"));
        bytes.extend(frame(0x80, "o é".as_bytes()));
        bytes.extend(frame(0x81, long.as_bytes()));
        bytes.extend(frame(0x8a, b""));
        bytes.extend(frame(0x88, &[0x03, 0xe8, b'o', b'k']));
        let want = vec![
            Inbound::Text("42[\"a\"]".into()),
            Inbound::Binary(Bytes::from_static(&[1, 2, 3])),
            Inbound::Ping(b"pi".to_vec()),
            Inbound::Text("hello é".into()),
            Inbound::Text(long.clone()),
            Inbound::Pong,
            Inbound::Close(Some(1000)),
        ];
        for step in [1, 2, 3, 7, 13, 100, 4096, bytes.len()] {
            assert_eq!(
                read_all(&bytes, step, 100_000).unwrap(),
                want,
                "step {step}"
            );
        }
    }

    #[test]
    fn an_idle_reader_holds_nothing() {
        let mut r = FrameReader::default();
        let f = frame(0x81, b"4x");
        assert!(r.next(&f[..3], 100).unwrap().is_none());
        assert!(!r.is_idle());
        assert_eq!(
            r.next(&f[3..], 100).unwrap(),
            Some(Inbound::Text("4x".into()))
        );
        assert!(r.is_idle());
    }

    #[test]
    fn bad_frames_are_refused() {
        let max = 1000;
        let one = |b: Vec<u8>| read_all(&b, b.len(), max).unwrap_err();
        let mut unmasked = frame(0x81, b"x");
        unmasked[1] &= 0x7f;
        assert_eq!(one(unmasked), FrameError::Protocol("unmasked client frame"));
        assert!(matches!(one(frame(0xc1, b"x")), FrameError::Protocol(_)));
        assert!(matches!(one(frame(0x83, b"x")), FrameError::Protocol(_)));
        assert!(matches!(one(frame(0x09, b"x")), FrameError::Protocol(_)));
        assert!(matches!(
            one(frame(0x89, &[0; 126])),
            FrameError::Protocol(_)
        ));
        assert!(matches!(one(frame(0x80, b"x")), FrameError::Protocol(_)));
        let mut two = frame(0x01, b"a");
        two.extend(frame(0x81, b"b"));
        assert!(matches!(one(two), FrameError::Protocol(_)));
        assert_eq!(one(frame(0x81, &[0xff, 0xfe])), FrameError::Utf8);
        assert!(matches!(one(frame(0x88, &[0x03])), FrameError::Protocol(_)));
        assert!(matches!(
            one(frame(0x88, &[0x03, 0xed])),
            FrameError::Protocol(_)
        ));
        assert_eq!(one(frame(0x88, &[0x03, 0xe8, 0xff])), FrameError::Utf8);
    }

    #[test]
    fn too_large_is_known_from_the_header() {
        let f = frame(0x82, &vec![0; 5000]);
        let mut r = FrameReader::default();
        // Only the header has arrived.
        assert_eq!(r.next(&f[..8], 4096).unwrap_err(), FrameError::TooLarge);
        // Fragments add up.
        let mut parts = frame(0x02, &[0; 3000]);
        parts.extend(frame(0x80, &[0; 3000]));
        assert_eq!(
            read_all(&parts, 512, 4096).unwrap_err(),
            FrameError::TooLarge
        );
    }
}

//! Server websocket frames written without copying the packets: each frame's
//! header and the packet's shared payload (and a subscription's own tail)
//! are gathered into one `sendmsg`, whether the frames are one delivery
//! written at once or a socket's queued batch. A frame whose payload was
//! compressed (permessage-deflate) is flagged with RSV1.

use std::io;
use std::os::fd::RawFd;

use proto::engineio::Outgoing;

/// Packets per `sendmsg` for a batch (four iovecs each, far below IOV_MAX).
const CHUNK: usize = 64;

/// An unmasked server frame header (RFC 6455 §5.2) into `head`; its length.
pub fn frame_header(opcode: u8, len: usize, head: &mut [u8; 10]) -> usize {
    head[0] = 0x80 | opcode;
    if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= 0xffff {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Whether packet `i` of a batch is compressed (`flags` empty: none is).
fn rsv1(flags: &[bool], i: usize) -> u8 {
    if flags.get(i).copied().unwrap_or(false) {
        0x40
    } else {
        0
    }
}

/// The frame's opcode and its payload in (at most) three parts.
fn parts(p: &Outgoing) -> (u8, [&[u8]; 3]) {
    match p {
        Outgoing::Text(b) => (0x1, [b, &[], &[]]),
        Outgoing::TextParts(a, b, c) => (0x1, [a, b, c]),
        Outgoing::Binary(b) => (0x2, [b, &[], &[]]),
    }
}

/// Writes as much of `packets`' frames as the socket takes now, never
/// waiting: one `sendmsg` per `CHUNK` packets, stopping at the first short
/// write. Returns the bytes written (0 when the socket's buffer is full) and
/// whether that was all of them. `flags[i]`: packet `i` is compressed.
pub fn send_frames(fd: RawFd, packets: &[Outgoing], flags: &[bool]) -> io::Result<(usize, bool)> {
    if let [one] = packets {
        let (n, len) = send_chunk::<1, 4>(fd, std::slice::from_ref(one), flags)?;
        return Ok((n, n == len));
    }
    let mut written = 0;
    for (i, chunk) in packets.chunks(CHUNK).enumerate() {
        let f = flags.get(i * CHUNK..).unwrap_or(&[]);
        let (n, len) = send_chunk::<CHUNK, { 4 * CHUNK }>(fd, chunk, f)?;
        written += n;
        if n < len {
            return Ok((written, false));
        }
    }
    Ok((written, true))
}

/// One gathered `sendmsg` of up to `N` packets (`M` = 4 × `N` iovecs):
/// the bytes written and the chunk's length on the wire.
fn send_chunk<const N: usize, const M: usize>(
    fd: RawFd,
    packets: &[Outgoing],
    flags: &[bool],
) -> io::Result<(usize, usize)> {
    debug_assert!(packets.len() <= N && M >= 4 * N);
    let mut heads = [[0u8; 10]; N];
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; M];
    let mut k = 0;
    let mut len = 0;
    for (i, (p, head)) in packets.iter().zip(heads.iter_mut()).enumerate() {
        let (opcode, ps) = parts(p);
        let opcode = opcode | rsv1(flags, i);
        let plen = ps.iter().map(|x| x.len()).sum();
        let hl = frame_header(opcode, plen, head);
        len += hl + plen;
        iov[k] = libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: hl,
        };
        k += 1;
        for part in ps {
            if !part.is_empty() {
                iov[k] = libc::iovec {
                    // sendmsg only reads through it.
                    iov_base: part.as_ptr() as *mut _,
                    iov_len: part.len(),
                };
                k += 1;
            }
        }
    }
    // SAFETY: a zeroed msghdr is a valid empty one; `iov` and everything it
    // points to outlive the call, which only reads them.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = k as _;
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n >= 0 {
        return Ok((n as usize, len));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok((0, len)),
        _ => Err(e),
    }
}

/// The frames' bytes from offset `skip` on (what a short write left), copied.
pub fn frames_from(packets: &[Outgoing], flags: &[bool], mut skip: usize, out: &mut Vec<u8>) {
    for (i, p) in packets.iter().enumerate() {
        let (opcode, [a, b, c]) = parts(p);
        let opcode = opcode | rsv1(flags, i);
        let mut head = [0u8; 10];
        let hl = frame_header(opcode, a.len() + b.len() + c.len(), &mut head);
        for part in [&head[..hl], a, b, c] {
            if skip >= part.len() {
                skip -= part.len();
            } else {
                out.extend_from_slice(&part[skip..]);
                skip = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn header_len(len: usize) -> usize {
        match len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        }
    }

    /// Bytes on the wire for `packets` as frames.
    fn frames_len(packets: &[Outgoing]) -> usize {
        packets.iter().map(|p| header_len(p.len()) + p.len()).sum()
    }

    fn packets() -> Vec<Outgoing> {
        vec![
            Outgoing::Text(Bytes::from_static(b"42[\"a\"]")),
            Outgoing::TextParts(
                Bytes::from_static(b"42[\"event\",{\"x\":1"),
                Bytes::from_static(b",\"subscriptionId\":\"s\"}"),
                Bytes::from_static(b",\"o1\"]"),
            ),
            Outgoing::Binary(Bytes::from(vec![7u8; 300])),
            Outgoing::Text(Bytes::from(vec![b'x'; 70_000])),
        ]
    }

    /// Decodes unmasked frames back into (opcode, payload).
    fn decode(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let op = b[0] & 0x0f;
            let (len, hl) = match b[1] {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            out.push((op, b[hl..hl + len].to_vec()));
            b = &b[hl + len..];
        }
        out
    }

    fn expected(ps: &[Outgoing]) -> Vec<(u8, Vec<u8>)> {
        ps.iter()
            .map(|p| {
                let (op, ps) = parts(p);
                (op, ps.concat())
            })
            .collect()
    }

    #[test]
    fn headers_by_length() {
        let mut h = [0u8; 10];
        assert_eq!(frame_header(1, 125, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 125]);
        assert_eq!(frame_header(2, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(frame_header(1, 65_536, &mut h), 10);
        assert_eq!(&h[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            frames_len(&packets()),
            2 + 7 + 2 + 17 + 22 + 6 + 4 + 300 + 10 + 70_000
        );
    }

    #[test]
    fn short_write_rest_completes_the_frames() {
        let ps = packets();
        let total = frames_len(&ps);
        for skip in [0, 1, 2, 9, 10, 30, 55, 400, total - 1, total] {
            let mut all = Vec::new();
            frames_from(&ps, &[], 0, &mut all);
            let mut rest = Vec::new();
            frames_from(&ps, &[], skip, &mut rest);
            assert_eq!(&all[skip..], &rest[..], "skip {skip}");
        }
    }

    #[test]
    fn gathered_send_over_a_socket_pair() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ps = packets();
        // More than one chunk.
        for i in 0..150 {
            ps.push(Outgoing::Text(Bytes::from(format!("42[\"n\",{i}]"))));
        }
        let total = frames_len(&ps);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            b.read_exact(&mut got).unwrap();
            got
        });
        // Whatever the socket does not take at once is finished from the
        // copied rest, as the websocket task does.
        let (n, _) = send_frames(a.as_raw_fd(), &ps, &[]).unwrap();
        let mut rest = Vec::new();
        frames_from(&ps, &[], n, &mut rest);
        let mut w = &a;
        std::io::Write::write_all(&mut w, &rest).unwrap();
        let got = reader.join().unwrap();
        assert_eq!(decode(&got), expected(&ps));
    }
}

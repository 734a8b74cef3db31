//! One `connect` connection from TCP connect to Socket.IO connected, and held after that:
//! the handshake state machine (`Phase`) that `Conn::drive` advances on each epoll
//! event, and the parsing it needs (the HTTP upgrade response head, the Engine.IO /
//! Socket.IO packet types that matter while connecting).
//!
//! Until the upgrade the connection is a raw non-blocking `TcpStream`; from the `101` on it
//! is a tungstenite `WebSocket` with a 4 KiB read buffer, answering Engine.IO pings.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::token::{connect_packet, Minter};

pub(super) enum Phase {
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

pub(super) struct Conn {
    /// The stream until it moves into the websocket.
    stream: Option<TcpStream>,
    phase: Phase,
    started: Instant,
    n: u64,
}

pub(super) enum Outcome {
    Pending,
    Connected,
    Failed(&'static str),
    /// A connection that was established went away.
    Dropped,
}

impl Conn {
    /// A connection whose TCP connect (started at `started`) is in progress.
    pub(super) fn new(stream: TcpStream, n: u64, started: Instant) -> Conn {
        Conn {
            stream: Some(stream),
            phase: Phase::TcpConnecting,
            started,
            n,
        }
    }

    /// Connected: Socket.IO `40` received.
    pub(super) fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Connected(_))
    }

    /// When its TCP connect started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// Advances the handshake (or the held connection) as far as `events` allow.
    pub(super) fn drive(
        &mut self,
        events: u32,
        request: &[u8],
        minter: &Minter,
        pings: &mut u64,
    ) -> Outcome {
        drive(self, events, request, minter, pings)
    }
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

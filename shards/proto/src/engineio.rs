//! Engine.IO v4 framing.
//!
//! Owns the packet type table, the websocket text/binary frame codec and the HTTP
//! long-polling payload codec (records separated by `'\x1e'`, binary records sent
//! as `'b'` + standard base64). Everything above the Engine.IO `MESSAGE` body
//! (namespaces, events, acks) belongs to [`crate::socketio`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use crate::DecodeError;

/// The record separator of HTTP long-polling payloads (ASCII "record separator").
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Engine.IO v4 packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    /// The ASCII digit that encodes this type on the wire.
    pub fn as_char(self) -> char {
        (b'0' + self as u8) as char
    }

    /// Parses the raw type byte (`b'0'..=b'6'`).
    pub fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

/// One Engine.IO packet borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Type + the rest of the text after the type char (may be "").
    Text(PacketType, &'a str),
    /// A binary message (websocket binary frame, or a decoded polling "b" record).
    Binary(&'a [u8]),
}

/// Decode a websocket TEXT frame (`"4hello"`, `"2probe"`, `"3"`, ...).
pub fn decode_text(frame: &str) -> Result<Packet<'_>, DecodeError> {
    let (t, rest) = split_type(frame)?;
    Ok(Packet::Text(t, rest))
}

/// A websocket BINARY frame is always a binary message in v4 (no type byte).
pub fn decode_binary(frame: &[u8]) -> Packet<'_> {
    Packet::Binary(frame)
}

/// Encode a text packet: type char followed by data.
pub fn encode_text(t: PacketType, data: &str) -> String {
    let mut s = String::with_capacity(1 + data.len());
    s.push(t.as_char());
    s.push_str(data);
    s
}

/// One record of an HTTP long-polling payload (v4: records separated by `'\x1e'`;
/// a binary record is `'b'` + base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadRecord<'a> {
    Text(PacketType, &'a str),
    Binary(Vec<u8>),
}

/// Decode a polling POST body. `max_records` bounds the number of records
/// ([`DecodeError::TooManyPackets`] beyond it).
///
/// Every record must be non-empty: an empty body, an empty record between two
/// separators or a trailing separator yields [`DecodeError::Empty`].
pub fn decode_payload(
    body: &[u8],
    max_records: usize,
) -> Result<Vec<PayloadRecord<'_>>, DecodeError> {
    // Bound the work before decoding anything: count the records first.
    let count = body
        .iter()
        .filter(|&&b| b == RECORD_SEPARATOR)
        .count()
        .saturating_add(1);
    if count > max_records {
        return Err(DecodeError::TooManyPackets);
    }
    let mut out = Vec::with_capacity(count);
    for record in body.split(|&b| b == RECORD_SEPARATOR) {
        out.push(decode_record(record)?);
    }
    Ok(out)
}

fn decode_record(record: &[u8]) -> Result<PayloadRecord<'_>, DecodeError> {
    match record.split_first() {
        None => Err(DecodeError::Empty),
        Some((b'b', b64)) => STANDARD
            .decode(b64)
            .map(PayloadRecord::Binary)
            .map_err(|_| DecodeError::BadBase64),
        Some(_) => {
            let text = std::str::from_utf8(record).map_err(|_| DecodeError::BadUtf8)?;
            let (t, rest) = split_type(text)?;
            Ok(PayloadRecord::Text(t, rest))
        }
    }
}

/// Splits the leading type digit off a text packet.
fn split_type(text: &str) -> Result<(PacketType, &str), DecodeError> {
    let first = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    let t = PacketType::from_byte(first)?;
    // `first` is an ASCII digit, so index 1 is a char boundary.
    Ok((t, text.get(1..).unwrap_or("")))
}

/// An outgoing packet as the server queues it: the full engine.io text packet
/// (type char included) or binary bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(Bytes),
    Binary(Bytes),
    /// A text packet whose payload is the three parts joined: a frame's
    /// head shared by many recipients, one recipient's own insert (a
    /// subscription's `subscriptionId`), and the frame's shared tail (the
    /// closing `]`, or the recovery offset and `]`). Kept apart so that none
    /// is copied: a writer gathers them.
    TextParts(Bytes, Bytes, Bytes),
}

impl Outgoing {
    /// The packet's payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(b) | Outgoing::Binary(b) => b.len(),
            Outgoing::TextParts(a, b, c) => a.len() + b.len() + c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encode queued packets into one polling response body (records joined by
/// `'\x1e'`, binary as `'b'` + base64), appended to `out`.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Outgoing>, out: &mut Vec<u8>) {
    for (i, p) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        match p {
            Outgoing::Text(t) => out.extend_from_slice(t),
            Outgoing::TextParts(a, b, c) => {
                out.extend_from_slice(a);
                out.extend_from_slice(b);
                out.extend_from_slice(c);
            }
            Outgoing::Binary(b) => {
                out.push(b'b');
                let start = out.len();
                out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
                let written = STANDARD.encode_slice(b, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
            }
        }
    }
}

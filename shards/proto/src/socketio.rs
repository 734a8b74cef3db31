//! Socket.IO v5 packets.
//!
//! Owns the Socket.IO packet grammar carried inside an Engine.IO `MESSAGE` body:
//! `<type>[<attachments>-][<namespace>,][<ackId>][JSON]`, plus [`BinaryAssembly`],
//! which collects the binary attachments following a `BINARY_EVENT`/`BINARY_ACK`.
//! The JSON payload is returned raw and is not validated here.

use bytes::Bytes;

use crate::DecodeError;

/// The decoder's own bound on the attachment count of a binary packet; larger
/// counts are rejected with [`DecodeError::BadAttachments`]. A server applies
/// its (much smaller) configured bound through [`AttachmentLimits`].
pub const MAX_ATTACHMENTS: usize = 10_000;

/// The default namespace.
pub const DEFAULT_NSP: &str = "/";

/// Socket.IO v5 packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketType {
    /// The ASCII digit that encodes this type on the wire.
    pub fn as_char(self) -> char {
        (b'0' + self as u8) as char
    }

    /// Parses the raw type byte (`b'0'..=b'6'`).
    pub fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// True for `BINARY_EVENT` and `BINARY_ACK`, which carry an attachment count.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A decoded Socket.IO packet, borrowed from the engine.io message text (the text
/// AFTER the engine.io '4').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: PacketType,
    /// `"/"` when absent.
    pub nsp: &'a str,
    /// Only for `BinaryEvent`/`BinaryAck`, else 0.
    pub attachments: usize,
    /// Ack id.
    pub id: Option<u64>,
    /// The raw JSON text that follows (not validated here), `None` when empty.
    pub data: Option<&'a str>,
}

/// Decode a Socket.IO packet from the body of an Engine.IO `MESSAGE`.
pub fn decode(text: &str) -> Result<Packet<'_>, DecodeError> {
    let bytes = text.as_bytes();
    let kind = PacketType::from_byte(*bytes.first().ok_or(DecodeError::Empty)?)?;
    // All delimiters below are ASCII, so every index used for slicing is a char boundary.
    let mut i = 1;

    let mut attachments: usize = 0;
    if kind.is_binary() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            attachments = attachments
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(bytes[i] - b'0')))
                .filter(|&n| n <= MAX_ATTACHMENTS)
                .ok_or(DecodeError::BadAttachments)?;
            i += 1;
        }
        if i == start || bytes.get(i) != Some(&b'-') {
            return Err(DecodeError::BadAttachments);
        }
        i += 1;
    }

    let mut nsp = DEFAULT_NSP;
    if bytes.get(i) == Some(&b'/') {
        match bytes[i..].iter().position(|&b| b == b',') {
            Some(len) => {
                nsp = &text[i..i + len];
                i += len + 1;
            }
            None => {
                // Unterminated namespace: it must be the whole rest of the packet,
                // so anything that looks like a payload means the ',' is missing.
                let rest = &text[i..];
                if rest.bytes().any(|b| matches!(b, b'[' | b'{' | b'"')) {
                    return Err(DecodeError::BadNamespace);
                }
                nsp = rest;
                i = bytes.len();
            }
        }
    }

    let mut id = None;
    let start = i;
    let mut n: u64 = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(bytes[i] - b'0')))
            .ok_or(DecodeError::BadAckId)?;
        i += 1;
    }
    if i > start {
        id = Some(n);
    }

    let data = text.get(i..).filter(|d| !d.is_empty());
    Ok(Packet {
        kind,
        nsp,
        attachments,
        id,
        data,
    })
}

/// Encode a Socket.IO packet as a full Engine.IO MESSAGE text packet (`"4"` +
/// socket.io encoding), appended to `out`.
///
/// The namespace is omitted when it is `"/"` (except in the one case where that
/// would be ambiguous: no ack id and a payload starting with '/'); any other
/// namespace is written followed by ','. `attachments` is written as `"N-"` for the
/// binary types and ignored otherwise. `nsp` must start with '/' and contain no ','.
pub fn encode(
    kind: PacketType,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: Option<&str>,
    out: &mut String,
) {
    let data = data.unwrap_or("");
    out.reserve(4 + nsp.len() + 21 + data.len());
    out.push('4');
    out.push(kind.as_char());
    let mut buf = itoa::Buffer::new();
    if kind.is_binary() {
        out.push_str(buf.format(attachments));
        out.push('-');
    }
    let needs_nsp = nsp != DEFAULT_NSP || (id.is_none() && data.starts_with('/'));
    if needs_nsp {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        out.push_str(buf.format(id));
    }
    out.push_str(data);
}

/// What one binary packet may carry: checked when its header arrives (the
/// count) and as each attachment arrives (the bytes), so an assembly never
/// holds more than `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// Attachments a header may announce.
    pub max_attachments: usize,
    /// The header packet's length plus every attachment's, at most.
    pub max_bytes: usize,
}

/// Reassembles a BINARY_EVENT/BINARY_ACK and its attachments: holds the header
/// packet (owned) and collects binary messages until complete, within its
/// [`AttachmentLimits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryAssembly {
    kind: PacketType,
    nsp: String,
    id: Option<u64>,
    data: Option<String>,
    expected: usize,
    attachments: Vec<Bytes>,
    /// Bytes counted so far (the header's, then each attachment's).
    held: usize,
    max_bytes: usize,
}

impl BinaryAssembly {
    /// Copies the header's nsp/data into owned Strings. `header_len` is the
    /// length of the packet the header came in, counted against the limits'
    /// bytes. A header announcing more attachments than the limits allow
    /// ([`DecodeError::TooManyAttachments`]), or longer than their bytes
    /// ([`DecodeError::AttachmentsTooLarge`]), is refused.
    pub fn new(
        header: &Packet<'_>,
        header_len: usize,
        limits: AttachmentLimits,
    ) -> Result<Self, DecodeError> {
        if header.attachments > limits.max_attachments {
            return Err(DecodeError::TooManyAttachments);
        }
        if header_len > limits.max_bytes {
            return Err(DecodeError::AttachmentsTooLarge);
        }
        Ok(Self {
            kind: header.kind,
            nsp: header.nsp.to_owned(),
            id: header.id,
            data: header.data.map(str::to_owned),
            expected: header.attachments,
            attachments: Vec::with_capacity(header.attachments.min(16)),
            held: header_len,
            max_bytes: limits.max_bytes,
        })
    }

    /// Adds one attachment; `Ok(true)` when all attachments have been
    /// received. One that would take the total past the limits' bytes is
    /// refused ([`DecodeError::AttachmentsTooLarge`]) and not kept; so is one
    /// beyond the announced count ([`DecodeError::BadAttachments`]).
    pub fn push(&mut self, attachment: Bytes) -> Result<bool, DecodeError> {
        if self.is_complete() {
            return Err(DecodeError::BadAttachments);
        }
        let held = self
            .held
            .checked_add(attachment.len())
            .filter(|&n| n <= self.max_bytes)
            .ok_or(DecodeError::AttachmentsTooLarge)?;
        self.held = held;
        self.attachments.push(attachment);
        Ok(self.is_complete())
    }

    /// Bytes counted against the limits so far: the header's and the
    /// attachments received.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// True once the announced number of attachments has been received.
    pub fn is_complete(&self) -> bool {
        self.attachments.len() >= self.expected
    }

    /// The announced number of attachments.
    pub fn expected(&self) -> usize {
        self.expected
    }

    pub fn kind(&self) -> PacketType {
        self.kind
    }

    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    pub fn id(&self) -> Option<u64> {
        self.id
    }

    pub fn data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// The received attachments, in arrival order (index = placeholder `num`).
    pub fn into_attachments(self) -> Vec<Bytes> {
        self.attachments
    }
}

//! The single error type shared by every decoder of the crate.

/// Why an Engine.IO / Socket.IO packet or polling payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet (or one polling record) is empty.
    #[error("empty packet")]
    Empty,
    /// The packet type character is not a known type; holds the raw byte.
    #[error("unknown packet type byte 0x{0:02x}")]
    UnknownType(u8),
    /// The Socket.IO namespace is malformed (e.g. not terminated by ',' before the payload).
    #[error("malformed socket.io namespace")]
    BadNamespace,
    /// The Socket.IO ack id does not fit in a u64.
    #[error("invalid socket.io ack id")]
    BadAckId,
    /// The Socket.IO attachment count is missing, malformed, too large or lacks its '-'.
    #[error("invalid socket.io attachment count")]
    BadAttachments,
    /// A binary packet announces more attachments than allowed.
    #[error("too many socket.io attachments")]
    TooManyAttachments,
    /// A binary packet's attachments (with its header) exceed the allowed bytes.
    #[error("socket.io attachments too large")]
    AttachmentsTooLarge,
    /// A polling `b...` record is not valid base64.
    #[error("invalid base64 in polling binary record")]
    BadBase64,
    /// A polling text record is not valid UTF-8.
    #[error("polling text record is not valid utf-8")]
    BadUtf8,
    /// The polling payload holds more records than allowed.
    #[error("too many packets in polling payload")]
    TooManyPackets,
}

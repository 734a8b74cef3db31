//! `proto`: a pure Engine.IO v4 / Socket.IO v5 codec.
//!
//! This crate owns the wire formats only: bytes/text in, borrowed packets out, and
//! the reverse. It performs no I/O, has no async code and keeps no connection state
//! except the small [`socketio::BinaryAssembly`] helper used to collect the binary
//! attachments of a `BINARY_EVENT`/`BINARY_ACK`.
//!
//! * [`engineio`] — Engine.IO v4 packets (websocket frames) and HTTP long-polling payloads.
//! * [`socketio`] — Socket.IO v5 packets carried inside Engine.IO `MESSAGE` packets.
//!
//! Every decoder is total: any input yields `Ok` or a [`DecodeError`], never a panic
//! (the decoders are fuzzed, see `fuzz/` at the repository root).

pub mod engineio;
mod error;
pub mod socketio;

pub use error::DecodeError;

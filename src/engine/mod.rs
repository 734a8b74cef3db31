//! Engine.IO: sessions, the handshake, ping/pong, the polling→websocket
//! upgrade and the two transports. Knows nothing of Socket.IO: a session
//! hands its message packets up through [`session::EngineHandler`].
//!
//! - `session`: one session, the shard's table of them, the handler trait.
//! - `handshake`: the Engine.IO endpoint: opens sessions, finds a request's
//!   session (or hands the connection to the shard that owns it), and gives
//!   the request to its transport.
//! - `sweep`: the shard's sweeper (ping and connect deadlines) and drain.
//! - `instant`: the sessions' deadlines, compact.
//! - `transport/`: websocket and long-polling.

pub mod handshake;
pub mod instant;
pub mod session;
pub mod sweep;
pub mod transport;

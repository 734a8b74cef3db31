//! Engine.IO transports: bytes on a connection ⇄ packets of a session.
//! `ws` carries a session over one websocket; `polling` serves its HTTP
//! long-polling requests. Neither owns session state.

pub mod polling;
pub mod ws;

//! Engine.IO transports: bytes on a connection ⇄ packets of a session.
//! `ws` carries a session over one websocket; `polling` serves its HTTP
//! long-polling requests; `frames` writes websocket frames without a copy;
//! `deflate` is permessage-deflate; `wsread` turns client frames into
//! messages.
//! None owns session state.

pub mod deflate;
pub mod frames;
pub mod polling;
pub mod ws;
pub mod wsread;

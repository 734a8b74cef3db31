//! The applications on the Socket.IO layer, and what they share with the
//! REST API: `gateway` (the socket events), `publish` (one publish checked
//! and encoded, from a socket or from REST), `views` (channel, member and
//! connection listings, across shards and instances), `members` (a
//! channel's members a page at a time, from a socket or from REST), `history` (a
//! channel's recent events, from a socket or from REST), `socket` (one
//! socket's state, presence and removal), `recovery` (sockets
//! held and recovered across a reconnect), `echo` (the protocol suites'
//! handlers).

pub mod counts;
pub mod echo;
pub mod gateway;
pub mod history;
pub mod members;
pub mod moderation;
pub mod publish;
pub mod recovery;
pub mod socket;
pub mod views;

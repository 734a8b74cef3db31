//! Load-test harness for the socket-gateway (Socket.IO v5 / Engine.IO v4 over websocket).
//!
//! The client is a single thread driving non-blocking sockets through epoll, so that it
//! stays small next to the server it measures: one thread, about 5 KB per connection.

pub mod client;
pub mod connect;
pub mod msgs;
pub mod procfs;
pub mod report;
pub mod seqs;
pub mod sink;
pub mod target;
pub mod token;

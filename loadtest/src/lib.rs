//! Load-test harness for the socket-gateway (Socket.IO v5 / Engine.IO v4 over websocket).
//!
//! The client is a single thread driving non-blocking sockets through epoll, so that it
//! stays small next to the server it measures: one thread, about 5 KB per connection.
//!
//! Scenarios: [`connect`] (open and hold N connections, measure the server's memory),
//! [`msgs`] (`fanout`, `churn`, `direct`: delivery latency and integrity), and [`sink`] (a
//! trivial local sender to measure the harness itself). Below them: [`client`] (one
//! minimal Socket.IO connection), [`token`], [`target`], [`seqs`] (sequence accounting),
//! [`histogram`], [`procfs`] and [`sys`] (clock, timer, open-files limit).

pub mod client;
pub mod connect;
pub mod histogram;
pub mod msgs;
pub mod procfs;
pub mod seqs;
pub mod sink;
pub mod sys;
pub mod target;
pub mod token;

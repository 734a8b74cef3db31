//! socket-gateway: a thread-per-core Socket.IO gateway.
//!
//! # Layout
//! - `cli` → `config`: flags (each with an env var) into one validated `Config`.
//! - `server`: per-shard accept loop and HTTP routing; hands a request for a
//!   session another shard owns to that shard.
//! - `transport/`: Engine.IO over websocket (`ws`) and long-polling (`polling`).
//! - `session`: one Engine.IO session and its Socket.IO namespaces.
//! - `gateway`: the contract's events on namespace `/`; `echo`: the official
//!   protocol suites' handlers on the same layer.
//! - `auth`: JWT → claims or a refusal reason; `rules`: names, filters, error codes;
//!   `args`: a client event's fields read as slices of its text (`data` verbatim).
//! - `frame`: RealtimeEvent/presence encoding, once per publish.
//! - `rest/`: the REST API, `/metrics` and the admin page (`admin/`, built
//!   in); `metrics`: the Prometheus families, one set of children per shard.
//! - The per-core state and the cross-shard mailbox live in the `shards`
//!   crate; the byte codec in `proto`.

pub mod app;
pub mod args;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod ctx;
pub mod edge;
pub mod engine;
pub mod frame;
pub mod http;
pub mod metrics;
pub mod rules;
pub mod run;
pub mod sio;

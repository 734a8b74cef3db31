//! socket-gateway: a thread-per-core Socket.IO gateway.
//!
//! # Layers
//! Top to bottom; a module imports only from its own layer's files below it
//! or from lower layers. Where a lower layer calls a higher one it does so
//! through a trait the lower layer defines.
//!
//! - `run` (startup: threads, shards, the cluster), `cli` (+ `config_file`) → `config` (flags,
//!   each with an env var, into one validated `Config`).
//! - `edge/`: the shard's listener and router (`server`: builds the shard's
//!   services and chooses the application from `--mode`), the REST API and
//!   `/metrics` (`rest/`), the built-in admin page (`admin/`).
//! - `app/`: the applications on Socket.IO. `gateway` (the socket events:
//!   join, leave, publish, direct, subscribe, members, refresh), `publish`
//!   (one publish checked and encoded once, from a socket or from REST),
//!   `views` (counts and listings across shards and instances), `echo` (the
//!   official protocol suites' handlers).
//! - `sio`: Socket.IO on one session: namespaces, packet rules, binary
//!   assembly; calls the application through the [`sio::App`] trait.
//! - `engine/`: Engine.IO: sessions (`session`), the handshake and routing
//!   of a request to its session (`handshake`), the sweeper and drain
//!   (`sweep`), websocket and long-polling (`transport/`). Calls the
//!   Socket.IO layer only through [`engine::session::EngineHandler`].
//! - `ctx`: one shard's services (shard, config, metrics, cluster link).
//!   `http`: request heads, responses and the socket read/write helpers.
//!   `metrics`: the Prometheus families. `cluster/`: several instances as
//!   one, through Redis (depends on the `shards` runtime only).
//! - Vocabulary every layer may use: `auth` (JWT → claims or a refusal),
//!   `rules` (names, filters, error codes), `args` (a client event's fields
//!   as slices of its text, `data` verbatim), `frame` (RealtimeEvent and
//!   presence encoding, once per publish).
//! - Below the crate: the per-core state and cross-shard mailbox (crate
//!   `shards`) and the byte codec (crate `proto`).

pub mod app;
pub mod args;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod ctx;
pub mod edge;
pub mod engine;
pub mod frame;
pub mod http;
pub mod jwks;
pub mod metrics;
pub mod rules;
pub mod run;
pub mod sio;

//! The edge of one shard: the listener and router (`server`), the REST API
//! and `/metrics` (`rest/`), and the built-in admin page (`admin/`). The
//! top layer: it builds each shard's services and chooses the application.

pub mod admin;
pub mod port;
pub mod rest;
pub mod server;

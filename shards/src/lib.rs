//! The thread-per-core runtime of socket-gateway.
//!
//! # Who owns what
//! - [`runtime`] starts one glommio executor per shard (pinned by default) and
//!   wires them into a full mesh of bounded mailboxes.
//! - [`shard::Shard`] is one core's state: its sockets, their channel
//!   membership and subscriptions ([`channels`]), and a replica of which peer
//!   shards want which topics. `!Send`: only its own executor touches it.
//! - [`outbox::Outbox`] is a socket's bounded send queue; overflow disconnects
//!   the socket as a slow consumer instead of stalling the shard.
//! - [`mailbox`] is the only door between shards.
//! - [`ids`] says where things live: a socket id carries its owner shard.
//!
//! # The publish path in ten lines
//! 1. A socket task on shard A encodes the RealtimeEvent once into `Bytes`.
//! 2. `Shard::publish` looks up which shards want the channel (interest
//!    replica: exact names and prefixes, a bit per shard).
//! 3. If A itself does, `Channels::deliver` pushes a refcount of the frame
//!    into each local recipient's outbox: no copy, no lock.
//! 4. For each other interested shard, the same `Arc<Publication>` goes
//!    through the bounded mailbox; the peer runs step 3 for its sockets.
//! 5. A websocket whose writer is idle has lent its outbox a direct sink, so
//!    step 3 writes the frame to it at once (one `send`, no task switch);
//!    otherwise the socket's transport drains its outbox in batches: one
//!    write per batch.

pub mod channels;
pub mod ids;
pub mod mailbox;
pub mod outbox;
pub mod runtime;
pub mod shard;

pub use channels::{Data, Member, MemberView, Publication, SubFilter, Topic};
pub use ids::{session_owner, ShardId, SocketKey};
pub use mailbox::{Request, Response};
pub use outbox::{CloseReason, Direct, DirectSink, Outbox};
pub use runtime::{start, RuntimeConfig, ShardHandle};
pub use shard::{now_ms, DirectSent, Shard, Uplink};

/// The runtime pieces the I/O edge uses, so glommio stays behind this crate.
pub mod rt {
    pub use glommio::net::{TcpListener, TcpStream, UnixStream};
    pub use glommio::timer::{sleep, Timer};
    pub use glommio::{spawn_local, Task};
}

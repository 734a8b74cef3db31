//! The thread-per-core runtime of socket-gateway.
//!
//! # Who owns what
//! - [`runtime`] starts one glommio executor per shard (pinned by default) and
//!   wires them into a full mesh of bounded mailboxes.
//! - [`shard::Shard`] is one core's state: its sockets, their channel
//!   membership and subscriptions ([`channels`]), and a replica of which peer
//!   shards want which topics. `!Send`: only its own executor touches it.
//! - [`publication::Publication`] is one publish encoded once, shared by
//!   every shard and recipient it reaches, and the frame each recipient
//!   gets of it.
//! - [`outbox::Outbox`] is a socket's bounded send queue; overflow disconnects
//!   the socket as a slow consumer instead of stalling the shard.
//! - [`mailbox`] is the only door between shards; [`replies`] holds the
//!   questions a shard asked and awaits answers to.
//! - [`ids`] says where things live: a socket id carries its owner shard, a
//!   channel's name its home shard.
//! - [`history::History`]: the recent events of the channels whose home is
//!   the shard, kept whether or not they have members.
//! - [`interest::InterestMap`]: which shards want which topics, one bit per
//!   shard (each shard's replica of its peers, and the cluster link's).
//!
//! # The publish path, as this crate sees it
//! 1. The application on shard A encodes the RealtimeEvent once into `Bytes`
//!    (a [`Publication`]: the frame, where its `data` lies, the channel).
//! 2. [`Shard::publish`] looks up which shards want the channel (the interest
//!    replica: exact names and prefixes, a bit per shard).
//! 3. With an [`Uplink`] installed (the gateway's Redis link), the same
//!    `Arc<Publication>` is handed to it for the other instances first.
//! 4. For each other interested shard, the `Arc<Publication>` goes through
//!    the bounded mailbox — before A's own fan-out, so the shards fan out
//!    at the same time instead of one after the other.
//!    The channel's home shard ([`channel_home`]) also records it in the
//!    channel's [`history`]: A itself when it is the home, else the home
//!    with the delivery it gets anyway, or through a record-only message
//!    when it has no recipient. One push, on one shard, per publication.
//! 5. If A itself is interested, `Channels::deliver` pushes a refcount of
//!    the frame into each local recipient's [`Outbox`] (a subscription adds
//!    its own `subscriptionId` tail): no copy, no lock, no allocation. A
//!    peer shard does the same when the mailbox hands it the publication.
//! 6. The socket's transport drains its outbox in batches: one gathered
//!    write per batch. (With the gateway's `--ws-direct-writes`, an idle
//!    websocket lends its outbox a [`DirectSink`] and step 5 writes to it at
//!    once; off by default, because coalescing moves more at saturation.)
//!
//! The gateway's `docs/architecture.md` follows the same publish from the
//! sending socket to every receiving socket, across instances too.

pub mod channels;
pub mod history;
pub mod ids;
pub mod interest;
pub mod mailbox;
pub mod outbox;
pub mod publication;
pub mod recovery;
pub mod replies;
pub mod runtime;
pub mod shard;

pub use channels::{Member, MemberView, SubFilter, Topic};
pub use history::{object_id, select, HistoryBounds, HistoryPage, HistoryQuery};
pub use ids::{channel_home, session_owner, shard_bit, ShardId, ShardMask, SocketKey, MAX_SHARDS};
pub use interest::InterestMap;
pub use mailbox::{AppMsg, PeerGone, Request, Response};
pub use outbox::{CloseReason, Direct, DirectSink, Outbox, PresenceKind, PresenceTag};
pub use publication::{direct_frame, frame_offset, object_end, Data, Publication};
pub use recovery::{LogBounds, Miss};
pub use replies::Replies;
pub use runtime::{start, RuntimeConfig, ShardHandle};
pub use shard::{now_ms, AppAnswer, DirectSent, Replay, Shard, Uplink};

/// The runtime pieces the I/O edge uses, so glommio stays behind this crate.
pub mod rt {
    pub use glommio::net::{TcpListener, TcpStream, UnixStream};
    pub use glommio::timer::{sleep, Timer};
    pub use glommio::{spawn_local, Task};
}

//! What a shard and the Redis shard (`link`) say to each other: requests
//! out ([`ToCluster`], with the cluster-wide [`Query`]s), deliveries and
//! answers back ([`FromCluster`], with the cluster's own [`Reply`]).

use std::sync::Arc;

use bytes::Bytes;
use shards::{MemberView, Publication, ShardId, Topic};

/// Shard → Redis shard.
pub enum ToCluster {
    Publish(Arc<Publication>),
    /// A shard gained/lost interest; `reply` (a query id) is answered once
    /// the subscription is in place.
    Interest {
        shard: ShardId,
        topic: Topic,
        on: bool,
        reply: Option<u64>,
    },
    Join {
        channel: Arc<str>,
        member: MemberView,
    },
    Leave {
        channel: Arc<str>,
        socket_id: Arc<str>,
    },
    /// This instance now holds `n` sockets of `user` (with
    /// `--max-connections-per-user`).
    UserCount {
        user: Arc<str>,
        n: usize,
    },
    Connections {
        shard: ShardId,
        n: usize,
    },
    Query {
        shard: ShardId,
        qid: u64,
        q: Query,
    },
    DirectResult {
        origin: String,
        req: u64,
        ok: bool,
    },
    /// Remove this instance from the cluster's presence now (a graceful
    /// stop); `done` is signalled once Redis has it (or could not).
    Withdraw {
        done: std::sync::mpsc::Sender<bool>,
    },
    /// A recoverable socket that is connected now needs `channel`'s stream
    /// from `at` (ms) on: the stream gets a marker entry at `at` if it does
    /// not exist (see `cluster/link/recovery.rs`).
    Ensure {
        channel: Arc<str>,
        at: u64,
    },
    /// A recoverable socket's state for another instance to recover it
    /// from (`None`: it is gone for good).
    Checkpoint {
        socket_id: Arc<str>,
        state: Option<String>,
    },
    /// Keep these sockets' states (they are still here, connected or held)
    /// from expiring: a state is written only when it changes. With them,
    /// the streams of the instance's channels of interest (where their
    /// offsets' entries are).
    Touch {
        socket_ids: Vec<Arc<str>>,
    },
    /// Pass a fence to shard `to` through its port: it answers shard
    /// `origin`'s query `qid` once it has handled everything sent before.
    Relay {
        to: ShardId,
        origin: ShardId,
        qid: u64,
    },
    /// Socket `seq` of instance `instance` (recovered here) now lives on
    /// shard `shard` (`on`), or is gone (`!on`): direct messages to it
    /// arrive on that instance's inbox.
    Adopt {
        instance: String,
        seq: u64,
        shard: ShardId,
        on: bool,
    },
}

/// Questions about the whole cluster.
pub enum Query {
    Count(Arc<str>),
    /// The sockets of a user in the whole cluster (answered `Reply::Count`).
    UserCount(Arc<str>),
    Members(Arc<str>),
    Channels,
    Instances,
    Direct {
        instance: String,
        shard: ShardId,
        seq: u64,
        text: Bytes,
        attachments: Vec<Bytes>,
    },
    /// An administrative action (the application's bytes) for socket `seq`
    /// of `instance` (`seq` 0: for the instance as a whole); answered
    /// `Delivered(true)` when it found what it acts on.
    Control {
        instance: String,
        shard: ShardId,
        seq: u64,
        body: Bytes,
    },
    /// The checkpoint of a socket another instance held, if the secret and
    /// the user match; its instance is told to let it go.
    RecoverState {
        socket_id: String,
        secret: String,
        sub: String,
    },
    /// Answered `Done` once everything this shard sent before is in Redis
    /// (with the rest of its batch: it does not cut the pipeline short).
    Flushed,
    /// A channel's history stream: its events (not presence), oldest first,
    /// none older than `max_age_ms`.
    History {
        channel: Arc<str>,
        max_age_ms: u64,
    },
    /// What the socket missed: the history streams of `channels` and its
    /// own direct stream, after `offset` (or from `since_ms`).
    RecoverEntries {
        socket_id: String,
        /// Each stream with the time (ms) from which the socket needs it:
        /// when it joined the channel (or subscribed to it).
        channels: Vec<(Arc<str>, u64)>,
        offset: Option<String>,
        since_ms: u64,
    },
}

/// One frame a recovering socket missed, read back from Redis.
#[derive(Debug)]
pub enum Missed {
    Publication(Arc<Publication>),
    Direct {
        text: Bytes,
        attachments: Vec<Bytes>,
    },
}

/// Redis shard → one shard.
pub enum FromCluster {
    Deliver(Arc<Publication>),
    Direct {
        seq: u64,
        text: Bytes,
        attachments: Vec<Bytes>,
        origin: String,
        req: u64,
    },
    Reply {
        qid: u64,
        resp: Reply,
    },
    /// Answer shard `origin`'s query `qid` (a fence, see [`ToCluster::Relay`]).
    Relay {
        origin: ShardId,
        qid: u64,
    },
    /// Another instance recovered this shard's socket `seq`: let it go
    /// without presence.
    Forget {
        seq: u64,
    },
    /// Another instance's [`Query::Control`]; answered with a `DirectResult`.
    Control {
        seq: u64,
        body: Bytes,
        origin: String,
        req: u64,
    },
}

/// The Redis shard's answer to a [`Query`] or to a subscribing
/// [`ToCluster::Interest`].
#[derive(Debug)]
pub enum Reply {
    /// The subscription is in place.
    Done,
    /// The cluster link could not answer (Redis unreachable): fall back to
    /// this instance's own view.
    Unavailable,
    Count(usize),
    Members(Vec<MemberView>),
    Channels(Vec<(Arc<str>, usize)>),
    /// Connected sockets per shard of each live instance.
    Instances(Vec<(String, Vec<usize>)>),
    /// Whether a direct message reached its socket on another instance.
    Delivered(bool),
    /// A recoverable socket's stored state (JSON).
    State(String),
    /// What a recovering socket missed, in order.
    Missed(Vec<Missed>),
    /// Recovery is not possible, and why.
    Refused(&'static str),
    /// A channel's kept events, oldest first.
    History(Vec<Arc<Publication>>),
}

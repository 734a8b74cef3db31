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
}

/// Questions about the whole cluster.
pub enum Query {
    Count(Arc<str>),
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
}

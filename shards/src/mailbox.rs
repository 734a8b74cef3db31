//! The only door between shards.
//!
//! Every cross-shard interaction is a [`ShardMsg`] sent through glommio's
//! bounded channel mesh (eventfd-woken: a shard parked in io_uring wakes when
//! a peer sends). Messages carry only `Send`, immutable data: a publication is
//! an `Arc` of bytes encoded once, shared by every shard it goes to.
//!
//! A request that needs an answer carries a query id; the answer comes back as
//! a [`ShardMsg::Response`] through the same mesh and completes the waiting
//! future on the asking shard. The receive loop never awaits a send itself
//! (answers go out from spawned tasks), so two full mailboxes cannot deadlock.

use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use glommio::channels::channel_mesh::Senders;

use crate::channels::{MemberView, Topic};
use crate::history::{HistoryPage, HistoryQuery};
use crate::ids::ShardId;
use crate::publication::Publication;
use crate::replies::Replies;

/// A message from one shard to another.
pub enum ShardMsg {
    /// Deliver to this shard's members and subscriptions of the channel;
    /// with `record` (when it was published), this shard is the channel's
    /// home and records it in the channel's history too.
    Deliver {
        p: Arc<Publication>,
        record: Option<Instant>,
    },
    /// Only record in the channel's history, as published at `at`: this
    /// shard is its home and has no recipient of it.
    Record {
        p: Arc<Publication>,
        at: Instant,
    },
    /// Shard `from` gained (`on`) or lost interest in a topic.
    Interest {
        from: ShardId,
        topic: Topic,
        on: bool,
    },
    /// A question for the receiving shard; answer with `Response{qid}`.
    Request {
        from: ShardId,
        qid: u64,
        req: Request,
    },
    Response {
        qid: u64,
        resp: Response,
    },
    /// Take over a client connection (a polling request or websocket upgrade
    /// for a session this shard owns): the fd and the bytes already read.
    Adopt {
        fd: OwnedFd,
        buffered: Vec<u8>,
    },
    /// Send `to` a [`Request::Ping`] on behalf of `origin`, answered to
    /// `origin` as `qid`: once answered, `to` has handled everything this
    /// shard sent it before (each link is FIFO).
    Relay {
        origin: ShardId,
        to: ShardId,
        qid: u64,
    },
}

/// A question or answer of the application above the runtime, opaque here.
pub type AppMsg = Box<dyn Any + Send>;

pub enum Request {
    /// Shard `from` gained interest in a topic; answered once recorded, so a
    /// join is acknowledged only after every peer will forward to it.
    Interest(Topic),
    Count(Arc<str>),
    Members(Arc<str>),
    Direct {
        seq: u64,
        text: Bytes,
        attachments: Vec<Bytes>,
    },
    Channels,
    Connections,
    /// Answered `Done` once handled; see [`ShardMsg::Relay`].
    Ping,
    /// For the application's handler ([`crate::Shard::on_app_request`]).
    App(AppMsg),
    /// A channel's history, asked of its home shard.
    History {
        channel: Arc<str>,
        query: HistoryQuery,
    },
}

/// A shard's answer to a peer's [`Request`].
pub enum Response {
    Done,
    Count(usize),
    Members(Vec<MemberView>),
    Delivered(bool),
    Channels(Vec<(Arc<str>, usize)>),
    Connections(usize),
    App(AppMsg),
    History(HistoryPage),
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Done => write!(f, "Done"),
            Response::Count(n) => write!(f, "Count({n})"),
            Response::Members(v) => write!(f, "Members({})", v.len()),
            Response::Delivered(b) => write!(f, "Delivered({b})"),
            Response::Channels(v) => write!(f, "Channels({})", v.len()),
            Response::Connections(n) => write!(f, "Connections({n})"),
            Response::App(_) => write!(f, "App(..)"),
            Response::History(p) => write!(f, "History({})", p.events.len()),
        }
    }
}

/// This shard's side of the mesh: senders to every peer and the table of
/// questions waiting for answers.
pub struct Mailbox {
    senders: Senders<ShardMsg>,
    replies: Replies<Response>,
}

impl Mailbox {
    pub(crate) fn new(senders: Senders<ShardMsg>) -> Self {
        Mailbox {
            senders,
            replies: Replies::default(),
        }
    }

    /// Sends, waiting while the peer's mailbox is full (backpressure on the
    /// sending task only; the shard keeps running). Fails only when the peer
    /// shard has stopped (shutdown), and then the message is dropped.
    pub async fn send_to(&self, to: ShardId, msg: ShardMsg) -> Result<(), PeerGone> {
        self.senders
            .send_to(to, msg)
            .await
            .map_err(|_| PeerGone(to))
    }

    /// Questions sent to peers and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.replies.pending()
    }

    /// Asks shard `to` and waits for the answer.
    pub async fn ask(&self, me: ShardId, to: ShardId, req: Request) -> Option<Response> {
        let qid = self.replies.expect();
        let msg = ShardMsg::Request { from: me, qid, req };
        if self.senders.send_to(to, msg).await.is_err() {
            self.replies.cancel(qid);
            return None;
        }
        self.replies.wait(qid).await
    }

    /// The questions this shard sent its peers, awaiting answers.
    pub(crate) fn replies(&self) -> &Replies<Response> {
        &self.replies
    }
}

/// A message could not be delivered: the peer shard has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerGone(pub ShardId);

impl std::fmt::Display for PeerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} has stopped", self.0)
    }
}

impl std::error::Error for PeerGone {}

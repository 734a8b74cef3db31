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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use glommio::channels::channel_mesh::Senders;

use crate::channels::{MemberView, Publication, Topic};
use crate::ids::ShardId;

/// A message from one shard to another.
pub enum ShardMsg {
    /// Deliver to this shard's members and subscriptions of the channel.
    Deliver(Arc<Publication>),
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
}

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
}

#[derive(Debug)]
pub enum Response {
    Done,
    /// The cluster link could not answer (Redis unreachable): fall back to
    /// this instance's own view.
    Unavailable,
    /// Connected sockets per shard of each live instance.
    Instances(Vec<(String, Vec<usize>)>),
    Count(usize),
    Members(Vec<MemberView>),
    Delivered(bool),
    Channels(Vec<(Arc<str>, usize)>),
    Connections(usize),
}

struct Pending {
    resp: Option<Response>,
    waker: Option<Waker>,
}

/// This shard's side of the mesh: senders to every peer and the table of
/// questions waiting for answers.
pub struct Mailbox {
    senders: Senders<ShardMsg>,
    pending: RefCell<HashMap<u64, Pending>>,
    next_qid: Cell<u64>,
}

impl Mailbox {
    pub(crate) fn new(senders: Senders<ShardMsg>) -> Self {
        Mailbox {
            senders,
            pending: RefCell::default(),
            next_qid: Cell::new(1),
        }
    }

    /// Sends, waiting while the peer's mailbox is full (backpressure on the
    /// sending task only; the shard keeps running). Returns the message if
    /// the peer is gone.
    pub async fn send_to(&self, to: ShardId, msg: ShardMsg) -> Result<(), ()> {
        self.senders.send_to(to, msg).await.map_err(drop)
    }

    /// Questions sent to peers and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Asks shard `to` and waits for the answer.
    pub async fn ask(&self, me: ShardId, to: ShardId, req: Request) -> Option<Response> {
        let qid = self.expect_reply();
        let msg = ShardMsg::Request { from: me, qid, req };
        if self.senders.send_to(to, msg).await.is_err() {
            self.cancel_reply(qid);
            return None;
        }
        self.wait_reply(qid).await
    }

    /// Reserves a query id whose answer will arrive through [`Self::complete`]
    /// (from a peer shard, or from the cluster link).
    pub fn expect_reply(&self) -> u64 {
        let qid = self.next_qid.get();
        self.next_qid.set(qid + 1);
        let p = Pending {
            resp: None,
            waker: None,
        };
        self.pending.borrow_mut().insert(qid, p);
        qid
    }

    /// Forgets a reserved query id whose question could not be sent.
    pub fn cancel_reply(&self, qid: u64) {
        self.pending.borrow_mut().remove(&qid);
    }

    /// Waits for the answer to `qid`.
    pub async fn wait_reply(&self, qid: u64) -> Option<Response> {
        std::future::poll_fn(|cx| {
            let mut pending = self.pending.borrow_mut();
            let Some(p) = pending.get_mut(&qid) else {
                return Poll::Ready(None);
            };
            if let Some(resp) = p.resp.take() {
                pending.remove(&qid);
                return Poll::Ready(Some(resp));
            }
            p.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Delivers the answer to `qid` and wakes its waiter.
    pub fn complete(&self, qid: u64, resp: Response) {
        if let Some(p) = self.pending.borrow_mut().get_mut(&qid) {
            p.resp = Some(resp);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }
}

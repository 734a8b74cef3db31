//! A table of questions awaiting answers on one shard.
//!
//! The asker reserves a query id, sends its question (to a peer shard
//! through the mailbox, or to the cluster link), and awaits the answer; the
//! shard's receive loop hands the answer in with [`Replies::complete`]. `T`
//! is whatever the answering side says: [`crate::Response`] between shards,
//! the cluster's own reply type for questions to the cluster.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::task::{Poll, Waker};

struct Pending<T> {
    resp: Option<T>,
    waker: Option<Waker>,
}

pub struct Replies<T> {
    pending: RefCell<HashMap<u64, Pending<T>>>,
    next_qid: Cell<u64>,
}

impl<T> Default for Replies<T> {
    fn default() -> Self {
        Replies {
            pending: RefCell::default(),
            next_qid: Cell::new(1),
        }
    }
}

impl<T> Replies<T> {
    /// Questions asked and not yet answered (nor cancelled).
    pub fn pending(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Reserves a query id whose answer will arrive through [`Self::complete`].
    pub fn expect(&self) -> u64 {
        let qid = self.next_qid.get();
        self.next_qid.set(qid + 1);
        let p = Pending {
            resp: None,
            waker: None,
        };
        self.pending.borrow_mut().insert(qid, p);
        qid
    }

    /// Forgets a reserved query id (its question could not be sent, or its
    /// asker gave up); a late answer to it is dropped.
    pub fn cancel(&self, qid: u64) {
        self.pending.borrow_mut().remove(&qid);
    }

    /// Waits for the answer to `qid`; `None` if it is not (or no longer) awaited.
    pub async fn wait(&self, qid: u64) -> Option<T> {
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
    pub fn complete(&self, qid: u64, resp: T) {
        if let Some(p) = self.pending.borrow_mut().get_mut(&qid) {
            p.resp = Some(resp);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }
}

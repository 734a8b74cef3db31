//! A socket's bounded send queue.
//!
//! Every delivery to a socket goes through its [`Outbox`]: deliveries push
//! shared, already-encoded packets (no copy), and the socket's transport
//! drains them in batches. The bound is what keeps one slow client from
//! growing memory: a push past it marks the outbox closed with
//! [`CloseReason::SlowConsumer`] and drops everything queued, and the
//! transport closes the connection. A push never blocks and never awaits.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use proto::engineio::Outgoing;

/// Why a socket is being closed; shown in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    SlowConsumer,
    PingTimeout,
    TokenExpired,
    ClientClosed,
    TransportError,
    ServerShutdown,
    TransportUpgraded,
    RateLimited,
    TooLarge,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ClientClosed => "client_closed",
            CloseReason::TransportError => "transport_error",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::TransportUpgraded => "transport_upgraded",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::TooLarge => "too_large",
        }
    }
}

/// Bounded queue of encoded Engine.IO packets for one session.
pub struct Outbox {
    queue: RefCell<VecDeque<Outgoing>>,
    bound: usize,
    closed: Cell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
}

impl Outbox {
    pub fn new(bound: usize) -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            bound: bound.max(1),
            closed: Cell::new(None),
            waker: RefCell::new(None),
        }
    }

    /// Queues one packet. Returns false when the socket is (now) closed.
    pub fn push(&self, packet: Outgoing) -> bool {
        if self.closed.get().is_some() {
            return false;
        }
        let mut q = self.queue.borrow_mut();
        if q.len() >= self.bound {
            q.clear();
            q.shrink_to_fit();
            drop(q);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        let was_empty = q.is_empty();
        q.push_back(packet);
        drop(q);
        if was_empty {
            self.wake();
        }
        true
    }

    /// Queues packets that must stay together (a binary event and its
    /// attachments): all of them, or none and the socket closes.
    pub fn push_all(&self, first: Outgoing, rest: &[bytes::Bytes]) -> bool {
        if self.closed.get().is_some() {
            return false;
        }
        if self.queue.borrow().len() + 1 + rest.len() > self.bound {
            self.queue.borrow_mut().clear();
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        let mut q = self.queue.borrow_mut();
        let was_empty = q.is_empty();
        q.push_back(first);
        q.extend(rest.iter().cloned().map(Outgoing::Binary));
        drop(q);
        if was_empty {
            self.wake();
        }
        true
    }

    /// Marks the outbox closed (first reason wins) and wakes the transport.
    pub fn close(&self, reason: CloseReason) {
        if self.closed.get().is_none() {
            self.closed.set(Some(reason));
        }
        self.wake();
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.closed.get()
    }

    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Moves up to `max` queued packets into `out`. Frees the queue's
    /// storage when it drains after a burst, so idle sockets stay small.
    pub fn drain_into(&self, out: &mut Vec<Outgoing>, max: usize) {
        let mut q = self.queue.borrow_mut();
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        if q.is_empty() && q.capacity() > 64 {
            *q = VecDeque::new();
        }
    }

    /// Ready when there is something to send or the outbox is closed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.queue.borrow().is_empty() || self.closed.get().is_some() {
            return Poll::Ready(());
        }
        let mut w = self.waker.borrow_mut();
        match &*w {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits until [`Self::poll_ready`] is ready.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Wakes the transport without queueing anything (e.g. a state change
    /// such as the end of a polling upgrade).
    pub fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(s: &'static str) -> Outgoing {
        Outgoing::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let o = Outbox::new(2);
        assert!(o.push(text("a")));
        assert!(o.push(text("b")));
        assert!(!o.push(text("c")));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
        assert!(o.is_empty());
        assert!(!o.push(text("d")));
    }

    #[test]
    fn attachments_go_together_or_not_at_all() {
        let o = Outbox::new(3);
        assert!(o.push(text("a")));
        assert!(!o.push_all(
            text("b"),
            &[Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        ));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn drain_keeps_order() {
        let o = Outbox::new(10);
        for s in ["1", "2", "3"] {
            o.push(text(s));
        }
        let mut v = Vec::new();
        o.drain_into(&mut v, 2);
        assert_eq!(v, vec![text("1"), text("2")]);
        o.drain_into(&mut v, 10);
        assert_eq!(v.len(), 3);
    }
}

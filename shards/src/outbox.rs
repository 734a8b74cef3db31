//! A socket's bounded send queue.
//!
//! Every delivery to a socket goes through its [`Outbox`]: deliveries push
//! shared, already-encoded packets (no copy), and the socket's transport
//! drains them in batches. The bound is what keeps one slow client from
//! growing memory: a push past it marks the outbox closed with
//! [`CloseReason::SlowConsumer`] and drops everything queued, and the
//! transport closes the connection. A push never blocks and never awaits.
//!
//! The bound is in packets and in bytes (the payload lengths queued). A
//! packet shared by many sockets (one fan-out frame) counts in full in every
//! outbox that holds it: it stays in memory as long as any of them does. One
//! packet (or one binary packet with its attachments) larger than the byte
//! bound is still taken by an empty queue, so whatever a client may send
//! (`--max-payload`) can be delivered; so a queue holds at most
//! max(byte bound, its largest packet).
//!
//! While a socket's writer is idle (nothing queued, nothing buffered, no
//! write in flight) its transport may lend the outbox a [`DirectSink`]: a
//! push then writes the packet to the socket at once, in the publisher's
//! loop, instead of queueing it and waking the socket's task. A fan-out to
//! many sockets costs one `send` per recipient and no task switch. The first
//! push the kernel does not take whole takes the sink back, and from then on
//! packets queue until the transport has flushed and lends it again.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
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
    /// Disconnected by an administrator (REST moderation): never recoverable.
    Kicked,
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
            CloseReason::Kicked => "kicked",
        }
    }
}

/// What a [`DirectSink`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// Written whole.
    Sent,
    /// Partly written: the sink keeps the rest, which its transport must
    /// write before anything else.
    Partial,
    /// Nothing written (the socket's buffer is full, or an error the
    /// transport will meet on its own next write): queue the packet.
    Blocked,
}

/// A transport's way to write a packet at once, without its task.
pub trait DirectSink {
    fn try_write(&self, packet: &Outgoing) -> Direct;
}

/// Bounded queue of encoded Engine.IO packets for one session.
pub struct Outbox {
    queue: RefCell<VecDeque<Outgoing>>,
    bound: usize,
    byte_bound: usize,
    /// Payload bytes queued.
    bytes: Cell<usize>,
    closed: Cell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
    /// Lent by the transport while its writer is idle.
    direct: RefCell<Option<Rc<dyn DirectSink>>>,
    /// A direct write left bytes for the transport to finish.
    kicked: Cell<bool>,
    /// Writes that reached the socket (direct ones and flushed batches).
    writes: Cell<u64>,
}

impl Outbox {
    /// At most `bound` packets and `byte_bound` payload bytes queued (see
    /// the module docs for the one packet beyond the byte bound).
    pub fn new(bound: usize, byte_bound: usize) -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            bound: bound.max(1),
            byte_bound,
            bytes: Cell::new(0),
            closed: Cell::new(None),
            waker: RefCell::new(None),
            direct: RefCell::new(None),
            kicked: Cell::new(false),
            writes: Cell::new(0),
        }
    }

    /// Queues one packet, or writes it at once when the transport lent a
    /// [`DirectSink`]. Returns false when the socket is (now) closed.
    pub fn push(&self, packet: Outgoing) -> bool {
        if self.closed.get().is_some() {
            return false;
        }
        // A lent sink implies an empty queue: nothing can overtake.
        let direct = self.direct.borrow().as_ref().map(|s| s.try_write(&packet));
        match direct {
            Some(Direct::Sent) => {
                self.writes.set(self.writes.get() + 1);
                return true;
            }
            Some(Direct::Partial) => {
                self.kicked.set(true);
                self.take_direct();
                self.wake();
                return true;
            }
            Some(Direct::Blocked) => {
                self.take_direct();
            }
            None => {}
        }
        let len = packet.len();
        let mut q = self.queue.borrow_mut();
        if q.len() >= self.bound || !self.fits(q.is_empty(), len) {
            q.clear();
            q.shrink_to_fit();
            drop(q);
            self.bytes.set(0);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        self.bytes.set(self.bytes.get() + len);
        let was_empty = q.is_empty();
        if q.capacity() == 0 {
            // Room for one, not the default four: most sockets hold one
            // packet at a time (a handshake, a delivery), and an idle one
            // keeps what it grew to.
            q.reserve_exact(1);
        }
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
        if !rest.is_empty() {
            // Attachments go through the queue, after what the sink wrote.
            self.take_direct();
        } else if self.direct.borrow().is_some() {
            return self.push(first);
        }
        let len = first.len() + rest.iter().map(bytes::Bytes::len).sum::<usize>();
        let mut q = self.queue.borrow_mut();
        if q.len() + 1 + rest.len() > self.bound || !self.fits(q.is_empty(), len) {
            q.clear();
            drop(q);
            self.bytes.set(0);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        self.bytes.set(self.bytes.get() + len);
        let was_empty = q.is_empty();
        q.push_back(first);
        q.extend(rest.iter().cloned().map(Outgoing::Binary));
        drop(q);
        if was_empty {
            self.wake();
        }
        true
    }

    /// Whether `len` more bytes stay within the byte bound; anything fits an
    /// empty queue.
    fn fits(&self, empty: bool, len: usize) -> bool {
        empty || self.bytes.get().saturating_add(len) <= self.byte_bound
    }

    /// Payload bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Marks the outbox closed (first reason wins) and wakes the transport.
    pub fn close(&self, reason: CloseReason) {
        if self.closed.get().is_none() {
            self.closed.set(Some(reason));
        }
        self.take_direct();
        self.wake();
    }

    /// Lends a sink for direct writes. Only while the transport's writer is
    /// idle: nothing queued, nothing buffered, no write in flight, not
    /// closed; otherwise the sink is not taken.
    pub fn lend_direct(&self, sink: Rc<dyn DirectSink>) -> bool {
        if self.closed.get().is_some() || !self.queue.borrow().is_empty() || self.kicked.get() {
            return false;
        }
        *self.direct.borrow_mut() = Some(sink);
        true
    }

    /// Takes the sink back (before the transport writes on its own, or
    /// closes its socket). Returns whether one was lent.
    pub fn take_direct(&self) -> bool {
        self.direct.borrow_mut().take().is_some()
    }

    pub fn has_direct(&self) -> bool {
        self.direct.borrow().is_some()
    }

    /// Counts a batch the transport flushed.
    pub fn note_write(&self) {
        self.writes.set(self.writes.get() + 1);
    }

    /// Writes that reached the socket so far (direct writes and flushed
    /// batches).
    pub fn writes(&self) -> u64 {
        self.writes.get()
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
        self.kicked.set(false);
        let mut q = self.queue.borrow_mut();
        let n = q.len().min(max);
        if n == q.len() {
            self.bytes.set(0);
            out.extend(q.drain(..));
        } else {
            let mut taken = 0;
            out.extend(q.drain(..n).inspect(|p| taken += p.len()));
            self.bytes.set(self.bytes.get() - taken);
        }
        if q.is_empty() && q.capacity() > 64 {
            *q = VecDeque::new();
        }
    }

    /// Ready when there is something to send or the outbox is closed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.queue.borrow().is_empty() || self.closed.get().is_some() || self.kicked.get() {
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
        let o = Outbox::new(2, usize::MAX);
        assert!(o.push(text("a")));
        assert!(o.push(text("b")));
        assert!(!o.push(text("c")));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
        assert!(o.is_empty());
        assert!(!o.push(text("d")));
    }

    #[test]
    fn attachments_go_together_or_not_at_all() {
        let o = Outbox::new(3, usize::MAX);
        assert!(o.push(text("a")));
        assert!(!o.push_all(
            text("b"),
            &[Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        ));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
    }

    /// A sink that takes packets as long as its budget lasts.
    struct Fake {
        budget: Cell<usize>,
        partial_at: Cell<Option<usize>>,
        got: RefCell<Vec<Outgoing>>,
    }

    impl DirectSink for Fake {
        fn try_write(&self, p: &Outgoing) -> Direct {
            if self.partial_at.get() == Some(self.got.borrow().len()) {
                self.got.borrow_mut().push(p.clone());
                return Direct::Partial;
            }
            if self.budget.get() == 0 {
                return Direct::Blocked;
            }
            self.budget.set(self.budget.get() - 1);
            self.got.borrow_mut().push(p.clone());
            Direct::Sent
        }
    }

    fn fake(budget: usize) -> Rc<Fake> {
        Rc::new(Fake {
            budget: Cell::new(budget),
            partial_at: Cell::new(None),
            got: RefCell::new(Vec::new()),
        })
    }

    #[test]
    fn a_lent_sink_writes_until_blocked_then_the_queue_keeps_order() {
        let o = Outbox::new(10, usize::MAX);
        let f = fake(2);
        assert!(o.lend_direct(f.clone()));
        for s in ["1", "2", "3", "4"] {
            assert!(o.push(text(s)));
        }
        // Two written at once; the third blocked and took the sink back, so
        // the fourth queued behind it instead of overtaking.
        assert_eq!(*f.got.borrow(), vec![text("1"), text("2")]);
        assert!(!o.has_direct());
        let mut v = Vec::new();
        o.drain_into(&mut v, 10);
        assert_eq!(v, vec![text("3"), text("4")]);
        assert_eq!(o.writes(), 2);
        // Lent again only while idle.
        o.push(text("5"));
        assert!(!o.lend_direct(f.clone()));
        o.drain_into(&mut v, 10);
        assert!(o.lend_direct(f.clone()));
    }

    #[test]
    fn a_partial_write_wakes_the_transport_and_queues_the_rest() {
        let o = Outbox::new(10, usize::MAX);
        let f = fake(10);
        f.partial_at.set(Some(1));
        o.lend_direct(f.clone());
        o.push(text("1"));
        o.push(text("2")); // partly written: the sink keeps its tail
        o.push(text("3"));
        assert!(!o.has_direct());
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        assert!(o.poll_ready(&mut cx).is_ready());
        let mut v = Vec::new();
        o.drain_into(&mut v, 10);
        assert_eq!(v, vec![text("3")]);
        assert!(o.poll_ready(&mut cx).is_pending());
    }

    #[test]
    fn close_and_attachments_take_the_sink_back() {
        let o = Outbox::new(10, usize::MAX);
        let f = fake(10);
        o.lend_direct(f.clone());
        assert!(o.push_all(text("a"), &[]));
        assert!(o.push_all(text("b"), &[Bytes::from_static(b"att")]));
        assert!(!o.has_direct());
        assert_eq!(*f.got.borrow(), vec![text("a")]);
        assert_eq!(o.len(), 2);
        let o = Outbox::new(10, usize::MAX);
        o.lend_direct(f.clone());
        o.close(CloseReason::ClientClosed);
        assert!(!o.has_direct());
        assert!(!o.push(text("c")));
        assert!(!o.lend_direct(f.clone()));
    }

    fn futures_task_noop() -> Waker {
        Waker::noop().clone()
    }

    fn bin(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn bytes_are_counted_on_push_and_drain() {
        let o = Outbox::new(100, 10);
        assert!(o.push(text("abc")));
        assert!(o.push_all(text("de"), &[bin(2), bin(1)]));
        assert_eq!(o.queued_bytes(), 8);
        let mut v = Vec::new();
        o.drain_into(&mut v, 2);
        assert_eq!(o.queued_bytes(), 3);
        o.drain_into(&mut v, 10);
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(v.len(), 4);
        // back to a full budget after a drain
        assert!(o.push(Outgoing::Binary(bin(10))));
        assert_eq!(o.queued_bytes(), 10);
    }

    #[test]
    fn a_push_past_the_byte_bound_closes_as_slow_consumer() {
        let o = Outbox::new(100, 10);
        assert!(o.push(Outgoing::Binary(bin(6))));
        assert!(o.push(Outgoing::Binary(bin(4))));
        assert_eq!(o.queued_bytes(), 10);
        assert!(!o.push(text("x")));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn attachments_count_with_their_packet() {
        let o = Outbox::new(100, 10);
        assert!(o.push(text("abc")));
        assert!(!o.push_all(text("de"), &[bin(3), bin(3)]));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn one_oversized_packet_fits_an_empty_queue_only() {
        let o = Outbox::new(100, 10);
        assert!(o.push(Outgoing::Binary(bin(50))));
        assert_eq!(o.queued_bytes(), 50);
        assert!(!o.push(text("x")));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
        // a binary packet and its attachments are one delivery
        let o = Outbox::new(100, 10);
        assert!(o.push_all(text("hdr"), &[bin(20), bin(20)]));
        assert_eq!(o.queued_bytes(), 43);
        let mut v = Vec::new();
        o.drain_into(&mut v, 100);
        assert_eq!(o.queued_bytes(), 0);
        assert!(o.push(Outgoing::Binary(bin(50))));
        assert_eq!(o.closed(), None);
    }

    #[test]
    fn direct_writes_are_not_queued_bytes() {
        let o = Outbox::new(100, 10);
        let f = fake(1);
        assert!(o.lend_direct(f.clone()));
        assert!(o.push(Outgoing::Binary(bin(50))));
        assert_eq!(o.queued_bytes(), 0);
        // blocked: queued, and counted, from here
        assert!(o.push(Outgoing::Binary(bin(8))));
        assert_eq!(o.queued_bytes(), 8);
        assert!(!o.push(Outgoing::Binary(bin(8))));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn drain_keeps_order() {
        let o = Outbox::new(10, usize::MAX);
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

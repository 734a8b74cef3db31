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
//!
//! Whether a lent sink is used is chosen per fan-out, by how busy the shard
//! is ([`fan_out`]): a fan-out that starts after the shard was quiet for
//! [`QUIET`] (no fan-out ended and no socket flushed a queued batch)
//! writes at once (the lowest latency: no task switch per
//! recipient), one that follows another closely queues, so that deliveries
//! which pile up for a socket while the shard works go out in one gathered
//! write (the most throughput). A socket that queues this way gives its sink
//! back and gets it again once its task has flushed.
//!
//! Long because a third of it is unit tests (`mod tests`, the last 320 or
//! so lines): the queue's bounds and the lent sink have many edge cases.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use proto::engineio::Outgoing;

/// How long a shard must have been without a fan-out or a flushed batch for
/// the next fan-out to write at once: at light load (one fan-out every few milliseconds or
/// less often) every delivery is written by the fan-out itself; once
/// fan-outs follow each other within it, deliveries queue and coalesce.
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(1);

thread_local! {
    /// This shard's pace: whether lent sinks are used now, and when its last
    /// fan-out ended.
    static PACE: (Cell<bool>, Cell<Option<std::time::Instant>>) =
        const { (Cell::new(true), Cell::new(None)) };
}

/// Recipients on one shard above which a fan-out always queues: writing to
/// thousands of sockets one by one holds the shard for milliseconds, in
/// which the next publications wait, while queueing lets them be taken in
/// and coalesced (and the task switch it costs per recipient is a small
/// part of such a fan-out's latency: BENCHMARKS.md, "The lean connection").
pub const DIRECT_MAX_RECIPIENTS: usize = 1024;

/// Runs one fan-out (`f`) to about `recipients` sockets, choosing first
/// whether its deliveries are written at once (the shard was quiet for
/// [`QUIET`], and at most [`DIRECT_MAX_RECIPIENTS`]) or queued. Pushes
/// outside a fan-out (acks, direct messages) follow the last choice.
pub fn fan_out<R>(recipients: usize, f: impl FnOnce() -> R) -> R {
    PACE.with(|(direct, last)| {
        let now = std::time::Instant::now();
        let quiet = last.get().is_none_or(|t| now.duration_since(t) >= QUIET);
        direct.set(quiet && recipients <= DIRECT_MAX_RECIPIENTS);
        let r = f();
        last.set(Some(std::time::Instant::now()));
        r
    })
}

fn write_at_once() -> bool {
    PACE.with(|(direct, _)| direct.get())
}

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

/// A transport's way to write a packet at once, without its task. One sink
/// may serve many sockets: each lends it with its own `token` (which socket,
/// and how to write to it), so a socket pays nothing for the sink itself.
pub trait DirectSink {
    fn try_write(&self, token: u64, packet: &Outgoing) -> Direct;
}

/// What a presence frame says about whom, so that presence waiting in a
/// backed-up queue can be coalesced: frames with the same `key` (one member
/// in one channel, or one channel's count) replace or cancel each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceTag {
    pub key: u64,
    pub kind: PresenceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    Join,
    Leave,
    Count,
}

impl PresenceTag {
    /// The tag of a `join`/`leave` of socket `socket_id` in `channel`, or
    /// (`socket_id` None) of `channel`'s `count`.
    pub fn new(channel: &str, socket_id: Option<&str>, kind: PresenceKind) -> Self {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same key on every shard.
        let mut h = std::hash::DefaultHasher::new();
        channel.hash(&mut h);
        socket_id.hash(&mut h);
        PresenceTag {
            key: h.finish(),
            kind,
        }
    }
}

/// A queue holding this many packets is backing up: presence pushed from
/// here on is coalesced with presence still waiting. Below it every join and
/// leave goes out as it happened (a reader that keeps up sees them all).
const COALESCE_FROM: usize = 32;

/// One queued packet.
struct Slot {
    packet: Outgoing,
    kind: SlotKind,
}

enum SlotKind {
    Plain,
    Presence(PresenceTag),
    /// Presence coalesced away after it was queued; skipped by the drain.
    Dead,
}

/// What the queue holds besides plain packets (kept in a `Cell`: no
/// allocation for a presence frame).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Presence frames queued, and their bytes.
    live: u32,
    bytes: usize,
    /// Coalesced-away slots still in the queue.
    dead: u32,
    /// Slots ever pushed (wrapping): the queue's front is slot number
    /// `pushed - queue.len()`.
    pushed: u32,
}

/// Key → slot number of the newest presence frame queued under it. Built
/// when the queue first backs up (from what it holds then) and kept while
/// it stays non-empty; a queue that keeps up never has one.
type Index = std::collections::HashMap<u64, u32>;

/// Bounded queue of encoded Engine.IO packets for one session.
///
/// Presence frames ([`Outbox::push_presence`]) do not count against the
/// bounds: what they can hold is bounded by coalescing instead (in a queue
/// that is backing up, at most one frame per member per channel, and one
/// count per channel), so presence alone never cuts a socket as a slow
/// consumer; everything else does as before.
pub struct Outbox {
    queue: RefCell<VecDeque<Slot>>,
    /// In packets; u32 (no queue gets near it) packs it with the flags.
    bound: u32,
    byte_bound: usize,
    /// Payload bytes queued (presence included).
    bytes: Cell<usize>,
    tally: Cell<Tally>,
    /// Taken out while in use (a `Cell`, not a `RefCell`: one word less
    /// on every socket).
    index: Cell<Option<Box<Index>>>,
    closed: Cell<Option<CloseReason>>,
    waker: Cell<Option<Waker>>,
    /// Lent by the transport while its writer is idle.
    /// (A `Cell`: taken out while it writes.)
    direct: Cell<Option<(Rc<dyn DirectSink>, u64)>>,
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
            bound: bound.clamp(1, u32::MAX as usize) as u32,
            byte_bound,
            bytes: Cell::new(0),
            tally: Cell::new(Tally::default()),
            index: Cell::new(None),
            closed: Cell::new(None),
            waker: Cell::new(None),
            direct: Cell::new(None),
            kicked: Cell::new(false),
            writes: Cell::new(0),
        }
    }

    /// Offers `packet` to the lent sink, if any. `Some(true)`: done with it;
    /// `None`: queue it.
    fn try_direct(&self, packet: &Outgoing) -> Option<bool> {
        if !write_at_once() {
            // The shard is busy: queue, so that this socket's deliveries
            // coalesce; the transport lends the sink again once it flushed.
            self.take_direct();
            return None;
        }
        // A lent sink implies an empty queue: nothing can overtake.
        let sink = self.direct.take();
        let direct = sink.as_ref().map(|(s, token)| s.try_write(*token, packet));
        self.direct.set(sink);
        match direct {
            Some(Direct::Sent) => {
                self.writes.set(self.writes.get() + 1);
                Some(true)
            }
            Some(Direct::Partial) => {
                self.kicked.set(true);
                self.take_direct();
                self.wake();
                Some(true)
            }
            Some(Direct::Blocked) => {
                self.take_direct();
                None
            }
            None => None,
        }
    }

    /// Queues one packet, or writes it at once when the transport lent a
    /// [`DirectSink`]. Returns false when the socket is (now) closed.
    pub fn push(&self, packet: Outgoing) -> bool {
        if self.closed.get().is_some() {
            return false;
        }
        if let Some(done) = self.try_direct(&packet) {
            return done;
        }
        self.enqueue(packet, &[])
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
        } else if self.has_direct() {
            return self.push(first);
        }
        self.enqueue(first, rest)
    }

    /// Queues a presence frame. In a queue that is backing up, a frame still
    /// waiting with the same key is coalesced with it: a `join` and a
    /// `leave` of one member cancel (the client never saw either), anything
    /// else keeps the newer one, at the end of the queue. Never closes the
    /// socket for want of room.
    pub fn push_presence(&self, packet: Outgoing, tag: PresenceTag) -> bool {
        if self.closed.get().is_some() {
            return false;
        }
        if let Some(done) = self.try_direct(&packet) {
            return done;
        }
        let mut q = self.queue.borrow_mut();
        let mut t = self.tally.get();
        let mut index = self.index.take();
        if q.len() - t.dead as usize >= COALESCE_FROM {
            let map = index.get_or_insert_with(|| Box::new(index_of(&q, t.pushed)));
            if let Some((kind, len)) = take_waiting(&mut q, map, &mut t, tag.key) {
                self.bytes.set(self.bytes.get() - len);
                let opposite = matches!(
                    (kind, tag.kind),
                    (PresenceKind::Join, PresenceKind::Leave)
                        | (PresenceKind::Leave, PresenceKind::Join)
                );
                if opposite {
                    self.tally.set(t);
                    self.index.set(index);
                    return true;
                }
            }
        }
        if let Some(map) = index.as_mut() {
            map.insert(tag.key, t.pushed);
        }
        let len = packet.len();
        let was_empty = q.len() == t.dead as usize;
        t.pushed = t.pushed.wrapping_add(1);
        t.live += 1;
        t.bytes += len;
        self.tally.set(t);
        self.bytes.set(self.bytes.get() + len);
        q.push_back(Slot {
            packet,
            kind: SlotKind::Presence(tag),
        });
        self.index.set(index);
        drop(q);
        if was_empty {
            self.wake();
        }
        true
    }

    /// Queues `first` and `rest` within the bounds, or closes the socket as
    /// a slow consumer.
    fn enqueue(&self, first: Outgoing, rest: &[bytes::Bytes]) -> bool {
        let len = first.len() + rest.iter().map(bytes::Bytes::len).sum::<usize>();
        let mut q = self.queue.borrow_mut();
        let mut t = self.tally.get();
        let dead = t.dead as usize;
        let plain = q.len() - t.live as usize - dead;
        let plain_bytes = self.bytes.get() - t.bytes;
        // Anything fits when no other packet of its kind waits.
        let fits = plain == 0 || plain_bytes.saturating_add(len) <= self.byte_bound;
        if plain + 1 + rest.len() > self.bound as usize || !fits {
            q.clear();
            q.shrink_to_fit();
            drop(q);
            self.index.take();
            self.tally.set(Tally {
                pushed: t.pushed,
                ..Tally::default()
            });
            self.bytes.set(0);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        self.bytes.set(self.bytes.get() + len);
        let was_empty = q.len() == dead;
        if q.capacity() == 0 && rest.is_empty() {
            // Room for one, not the default four: most sockets hold one
            // packet at a time (a handshake, a delivery).
            q.reserve_exact(1);
        }
        q.push_back(Slot {
            packet: first,
            kind: SlotKind::Plain,
        });
        q.extend(rest.iter().cloned().map(|b| Slot {
            packet: Outgoing::Binary(b),
            kind: SlotKind::Plain,
        }));
        t.pushed = t.pushed.wrapping_add(1 + rest.len() as u32);
        self.tally.set(t);
        drop(q);
        if was_empty {
            self.wake();
        }
        true
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
    /// closed; otherwise the sink is not taken. `token` is what the sink
    /// needs to know which socket it writes to.
    pub fn lend_direct(&self, sink: Rc<dyn DirectSink>, token: u64) -> bool {
        if self.closed.get().is_some() || !self.queue.borrow().is_empty() || self.kicked.get() {
            return false;
        }
        self.direct.set(Some((sink, token)));
        true
    }

    /// Takes the sink back (before the transport writes on its own, or
    /// closes its socket). Returns whether one was lent.
    pub fn take_direct(&self) -> bool {
        self.direct.take().is_some()
    }

    pub fn has_direct(&self) -> bool {
        let sink = self.direct.take();
        let has = sink.is_some();
        self.direct.set(sink);
        has
    }

    /// Counts a batch the transport flushed. The shard is busy while its
    /// sockets' tasks flush what a fan-out queued: a fan-out that starts
    /// within [`QUIET`] of such a write queues too.
    pub fn note_write(&self) {
        self.writes.set(self.writes.get() + 1);
        PACE.with(|(_, last)| last.set(Some(std::time::Instant::now())));
    }

    /// Writes that reached the socket so far (direct writes and flushed
    /// batches).
    pub fn writes(&self) -> u64 {
        self.writes.get()
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.closed.get()
    }

    /// Packets queued (coalesced-away presence not counted).
    pub fn len(&self) -> usize {
        self.queue.borrow().len() - self.tally.get().dead as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Presence frames queued.
    pub fn queued_presence(&self) -> usize {
        self.tally.get().live as usize
    }

    /// Moves up to `max` queued packets into `out`. Frees the queue's
    /// storage whenever it drains, so an idle socket holds none (a slot is
    /// 120 bytes; the next push allocates again, one malloc per batch).
    pub fn drain_into(&self, out: &mut Vec<Outgoing>, max: usize) {
        self.kicked.set(false);
        let mut q = self.queue.borrow_mut();
        let mut t = self.tally.get();
        if t.live == 0 && t.dead == 0 {
            let n = q.len().min(max);
            if n == q.len() {
                self.bytes.set(0);
                out.extend(q.drain(..).map(|s| s.packet));
            } else {
                let mut taken = 0;
                out.extend(q.drain(..n).map(|s| {
                    taken += s.packet.len();
                    s.packet
                }));
                self.bytes.set(self.bytes.get() - taken);
            }
        } else {
            let mut index = self.index.take();
            let mut n = 0;
            while n < max {
                let front = t.pushed.wrapping_sub(q.len() as u32);
                let Some(s) = q.pop_front() else { break };
                match s.kind {
                    SlotKind::Dead => {
                        t.dead -= 1;
                        continue;
                    }
                    SlotKind::Presence(tag) => {
                        t.live -= 1;
                        t.bytes -= s.packet.len();
                        if let Some(map) = index.as_mut() {
                            if map.get(&tag.key) == Some(&front) {
                                map.remove(&tag.key);
                            }
                        }
                    }
                    SlotKind::Plain => {}
                }
                self.bytes.set(self.bytes.get() - s.packet.len());
                out.push(s.packet);
                n += 1;
            }
            // Coalesced-away frames left at the front go too.
            while matches!(q.front().map(|s| &s.kind), Some(SlotKind::Dead)) {
                q.pop_front();
                t.dead -= 1;
            }
            if !q.is_empty() {
                self.index.set(index);
            }
            self.tally.set(t);
        }
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
    }

    /// Ready when there is something to send or the outbox is closed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_empty() || self.closed.get().is_some() || self.kicked.get() {
            return Poll::Ready(());
        }
        let w = match self.waker.take() {
            Some(old) if old.will_wake(cx.waker()) => old,
            _ => cx.waker().clone(),
        };
        self.waker.set(Some(w));
        Poll::Pending
    }

    /// Waits until [`Self::poll_ready`] is ready.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Wakes the transport without queueing anything (e.g. a state change
    /// such as the end of a polling upgrade).
    pub fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The index of what `q` holds, whose front is slot number `front + len`
/// back from `pushed`: each key's newest presence frame.
fn index_of(q: &VecDeque<Slot>, pushed: u32) -> Index {
    let front = pushed.wrapping_sub(q.len() as u32);
    let mut map = Index::new();
    for (i, slot) in q.iter().enumerate() {
        if let SlotKind::Presence(tag) = slot.kind {
            map.insert(tag.key, front.wrapping_add(i as u32));
        }
    }
    map
}

/// Removes the presence frame still queued under `key`, if any, leaving a
/// dead slot in its place (positions of the others stay put); returns its
/// kind and length.
fn take_waiting(
    q: &mut VecDeque<Slot>,
    map: &mut Index,
    t: &mut Tally,
    key: u64,
) -> Option<(PresenceKind, usize)> {
    let at = map.remove(&key)?;
    let front = t.pushed.wrapping_sub(q.len() as u32);
    let slot = q.get_mut(at.wrapping_sub(front) as usize)?;
    let SlotKind::Presence(tag) = slot.kind else {
        return None;
    };
    if tag.key != key {
        return None;
    }
    let packet = std::mem::replace(&mut slot.packet, Outgoing::Text(bytes::Bytes::new()));
    slot.kind = SlotKind::Dead;
    t.live -= 1;
    t.bytes -= packet.len();
    t.dead += 1;
    Some((tag.kind, packet.len()))
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
        fn try_write(&self, _token: u64, p: &Outgoing) -> Direct {
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
        assert!(o.lend_direct(f.clone(), 0));
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
        assert!(!o.lend_direct(f.clone(), 0));
        o.drain_into(&mut v, 10);
        assert!(o.lend_direct(f.clone(), 0));
    }

    #[test]
    fn a_partial_write_wakes_the_transport_and_queues_the_rest() {
        let o = Outbox::new(10, usize::MAX);
        let f = fake(10);
        f.partial_at.set(Some(1));
        o.lend_direct(f.clone(), 0);
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
        o.lend_direct(f.clone(), 0);
        assert!(o.push_all(text("a"), &[]));
        assert!(o.push_all(text("b"), &[Bytes::from_static(b"att")]));
        assert!(!o.has_direct());
        assert_eq!(*f.got.borrow(), vec![text("a")]);
        assert_eq!(o.len(), 2);
        let o = Outbox::new(10, usize::MAX);
        o.lend_direct(f.clone(), 0);
        o.close(CloseReason::ClientClosed);
        assert!(!o.has_direct());
        assert!(!o.push(text("c")));
        assert!(!o.lend_direct(f.clone(), 0));
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
        assert!(o.lend_direct(f.clone(), 0));
        assert!(o.push(Outgoing::Binary(bin(50))));
        assert_eq!(o.queued_bytes(), 0);
        // blocked: queued, and counted, from here
        assert!(o.push(Outgoing::Binary(bin(8))));
        assert_eq!(o.queued_bytes(), 8);
        assert!(!o.push(Outgoing::Binary(bin(8))));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
    }

    fn join(m: usize) -> (Outgoing, PresenceTag) {
        let t = PresenceTag::new("c", Some(&format!("s{m}")), PresenceKind::Join);
        (Outgoing::Text(Bytes::from(format!("join {m}"))), t)
    }

    fn leave(m: usize) -> (Outgoing, PresenceTag) {
        let t = PresenceTag::new("c", Some(&format!("s{m}")), PresenceKind::Leave);
        (Outgoing::Text(Bytes::from(format!("leave {m}"))), t)
    }

    fn count(n: usize) -> (Outgoing, PresenceTag) {
        let t = PresenceTag::new("c", None, PresenceKind::Count);
        (Outgoing::Text(Bytes::from(format!("count {n}"))), t)
    }

    fn all(o: &Outbox) -> Vec<String> {
        let mut v = Vec::new();
        o.drain_into(&mut v, usize::MAX);
        v.iter()
            .map(|p| match p {
                Outgoing::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn presence_is_outside_the_bounds_and_never_cuts() {
        let o = Outbox::new(4, 10);
        for m in 0..100 {
            let (p, t) = join(m);
            assert!(o.push_presence(p, t));
        }
        assert_eq!(o.closed(), None);
        assert_eq!(o.len(), 100);
        // the bounds still hold for everything else
        for _ in 0..4 {
            assert!(o.push(Outgoing::Binary(bin(2))));
        }
        assert!(!o.push(Outgoing::Binary(bin(2))));
        assert_eq!(o.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(o.queued_presence(), 0);
    }

    #[test]
    fn a_backed_up_queue_cancels_a_join_and_a_leave_of_one_member() {
        let o = Outbox::new(1024, usize::MAX);
        let n = COALESCE_FROM + 10;
        for m in 0..n {
            let (p, t) = join(m);
            o.push_presence(p, t);
        }
        for (p, t) in [leave(3), join(1000), leave(1000), leave(7)] {
            o.push_presence(p, t);
        }
        let got = all(&o);
        assert_eq!(got.len(), n - 2);
        assert!(!got.iter().any(|s| s.ends_with(" 3") || s.ends_with(" 7")));
        assert!(!got.iter().any(|s| s.ends_with(" 1000")));
        assert_eq!(o.len(), 0);
        assert_eq!(o.queued_bytes(), 0);
        assert!(o.index.take().is_none());
    }

    #[test]
    fn counts_keep_the_last_behind_the_events_between() {
        let o = Outbox::new(1024, usize::MAX);
        for _ in 0..COALESCE_FROM {
            o.push(text("e"));
        }
        let (p, t) = count(5);
        o.push_presence(p, t);
        o.push(text("after 5"));
        let (p, t) = count(7);
        o.push_presence(p, t);
        let got = all(&o);
        assert_eq!(got.len(), COALESCE_FROM + 2);
        assert_eq!(&got[COALESCE_FROM..], ["after 5", "count 7"]);
    }

    #[test]
    fn a_queue_that_keeps_up_gets_every_change() {
        let o = Outbox::new(1024, usize::MAX);
        for (p, t) in [join(1), leave(1), join(1), count(2), count(3)] {
            o.push_presence(p, t);
        }
        assert_eq!(
            all(&o),
            ["join 1", "leave 1", "join 1", "count 2", "count 3"]
        );
    }

    #[test]
    fn partial_drains_keep_the_coalescing_positions_right() {
        let o = Outbox::new(1024, usize::MAX);
        for m in 0..COALESCE_FROM + 10 {
            let (p, t) = join(m);
            o.push_presence(p, t);
        }
        let mut v = Vec::new();
        o.drain_into(&mut v, 5);
        assert_eq!(v.len(), 5);
        // member 2 was sent: its leave is news; member 20 still waits
        for (p, t) in [leave(2), leave(20)] {
            o.push_presence(p, t);
        }
        let got = all(&o);
        assert!(got.contains(&"leave 2".to_string()));
        assert!(!got.contains(&"join 20".to_string()) && !got.contains(&"leave 20".to_string()));
        // 5 sent; the leave of 2 added; the join of 20 and its leave cancelled
        assert_eq!(got.len(), COALESCE_FROM + 10 - 5 + 1 - 1);
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

//! `Shard`: everything one core owns — its sockets, their channel membership
//! and subscriptions, and its replica of which peers want which topics.
//!
//! A `Shard` is `!Send` by construction (Rc/RefCell): only its own executor
//! touches it. Other shards reach it through [`crate::mailbox`].
//!
//! The publish path: [`Shard::publish`] delivers to local recipients, then
//! sends the same `Arc<Publication>` to each peer whose interest replica says
//! it has members or matching subscriptions; the peer's receive loop calls
//! [`Channels::deliver`]. Order per publisher per channel holds because a
//! publisher lives on one shard and each peer link is FIFO.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::engineio::Outgoing;

use crate::channels::{
    direct_frame, Channels, InterestChange, Member, MemberView, Publication, SubFilter, Topic,
};
use crate::history::{History, HistoryBounds, HistoryPage, HistoryQuery};
use crate::ids::{channel_home, ShardId, SocketKey};
use crate::interest::InterestMap;
use crate::mailbox::{AppMsg, Mailbox, Request, Response, ShardMsg};
use crate::outbox::PresenceKind;
use crate::recovery::{Entry, Log, LogBounds, Miss};

type AdoptFn = Box<dyn Fn(OwnedFd, Vec<u8>)>;
/// An application handler: the answer's future, or the message back when
/// it is not one of its own.
pub type AppAnswer = Result<Pin<Box<dyn Future<Output = AppMsg>>>, AppMsg>;
type AppFn = Box<dyn Fn(ShardId, AppMsg) -> AppAnswer>;

/// Frames (and their attachments) a recovering socket is given again.
pub type Replay = Vec<(Outgoing, Vec<Bytes>)>;

/// Where a shard sends what must leave this instance (the cluster link).
/// Kept as a trait so this crate knows nothing of Redis.
pub trait Uplink {
    /// A publication made on this instance, after its local delivery.
    fn publish(&self, p: &Arc<Publication>);
    /// This shard gained (`on`) or lost interest in a topic. For a gain the
    /// future completes once other instances will forward the topic here.
    fn interest(&self, topic: Topic, on: bool) -> Pin<Box<dyn Future<Output = ()>>>;
    /// Passes a fence to shard `to` after everything the uplink sent it so
    /// far; `to` then answers shard `origin`'s query `qid` through the
    /// mailbox ([`Shard::answer_fence`]). `false` when it cannot.
    fn fence(&self, _to: ShardId, _origin: ShardId, _qid: u64) -> bool {
        false
    }
}

/// One core's state.
/// What [`Shard::direct_send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectSent {
    /// Delivered (true) or no such socket (false), known at once.
    Done(bool),
    /// Queued for another shard; the answer is awaited with this id.
    Waiting(u64),
}

pub struct Shard {
    id: ShardId,
    nr_shards: usize,
    instance: Arc<str>,
    channels: RefCell<Channels>,
    interest: RefCell<InterestMap>,
    sockets: RefCell<HashMap<u64, Rc<Member>>>,
    /// Sockets of this shard's id space recovered on another shard: `direct`
    /// to them is forwarded there.
    moved: RefCell<HashMap<u64, ShardId>>,
    mailbox: Rc<Mailbox>,
    last_id: Cell<(u64, u64)>,
    adopt: RefCell<Option<AdoptFn>>,
    app: RefCell<Vec<Rc<AppFn>>>,
    uplink: RefCell<Option<Rc<dyn Uplink>>>,
    /// What the application does with a channel's presence count that
    /// another instance sent, instead of delivering it.
    remote_count: RefCell<Option<RemoteCountFn>>,
    /// With connection state recovery on: what this shard delivered.
    log: OnceCell<RefCell<Log>>,
    /// With history on: the recent events of the channels whose home is
    /// this shard.
    history: OnceCell<RefCell<History>>,
    /// Topics this shard gained and is still announcing to its peers (and
    /// the uplink): closed once every one has it. A join or subscription
    /// that finds the interest already there waits for it too, or its
    /// acknowledgement would come before the peers route to this shard.
    announcing: RefCell<HashMap<Topic, Rc<glommio::sync::Semaphore>>>,
}

type RemoteCountFn = Box<dyn Fn(&Arc<str>)>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shard {
    pub(crate) fn new(id: ShardId, nr_shards: usize, instance: Arc<str>, mailbox: Mailbox) -> Self {
        Shard {
            id,
            nr_shards,
            instance,
            channels: RefCell::default(),
            interest: RefCell::default(),
            sockets: RefCell::default(),
            moved: RefCell::default(),
            mailbox: Rc::new(mailbox),
            last_id: Cell::new((0, 0)),
            adopt: RefCell::new(None),
            app: RefCell::default(),
            uplink: RefCell::new(None),
            remote_count: RefCell::new(None),
            log: OnceCell::new(),
            history: OnceCell::new(),
            announcing: RefCell::default(),
        }
    }

    /// Turns channel history on for this shard (before it serves; every
    /// shard of the instance alike, since publishing shards decide where
    /// to record from their own setting). A size of 0 leaves it off.
    pub fn enable_history(&self, bounds: HistoryBounds) {
        if bounds.size > 0 {
            let _ = self.history.set(RefCell::new(History::new(bounds)));
        }
    }

    /// The shard that keeps `channel`'s history.
    pub fn home_of(&self, channel: &str) -> ShardId {
        channel_home(channel, self.nr_shards)
    }

    /// Where `p` is recorded: its channel's home, when history is on and
    /// it is an event (presence is not kept).
    fn history_home(&self, p: &Publication) -> Option<ShardId> {
        (self.history.get().is_some() && p.presence.is_none()).then(|| self.home_of(&p.channel))
    }

    /// Records `p`, published at `at`, in this shard's history (this shard
    /// is its home).
    fn record(&self, p: &Publication, at: Instant) {
        if let Some(h) = self.history.get() {
            h.borrow_mut()
                .record(&p.channel, &p.text, p.object_range(), at);
        }
    }

    /// This shard's history: bytes held, events kept.
    pub fn history_size(&self) -> (usize, usize) {
        self.history.get().map_or((0, 0), |h| {
            let h = h.borrow();
            (h.bytes(), h.len())
        })
    }

    /// Drops history older than its age bound (a timer calls it, so an
    /// idle shard's history empties too).
    pub fn trim_history(&self) {
        if let Some(h) = self.history.get() {
            h.borrow_mut().trim(Instant::now());
        }
    }

    /// `channel`'s history as `query` asks for it, from its home shard;
    /// `None` when that shard cannot answer (it stopped). Without history,
    /// an empty page. Every publication acknowledged before the question
    /// is in the answer: the home first handles what every other shard
    /// sent it so far ([`Shard::fence`]), records included.
    pub async fn history(&self, channel: Arc<str>, query: HistoryQuery) -> Option<HistoryPage> {
        let home = self.home_of(&channel);
        if self.nr_shards > 1 && self.history.get().is_some() {
            self.fence(home).await;
        }
        if home == self.id {
            return Some(self.local_history(&channel, &query));
        }
        match self
            .mailbox
            .ask(self.id, home, Request::History { channel, query })
            .await
        {
            Some(Response::History(page)) => Some(page),
            _ => None,
        }
    }

    fn local_history(&self, channel: &str, query: &HistoryQuery) -> HistoryPage {
        self.history.get().map_or_else(HistoryPage::default, |h| {
            h.borrow_mut().query(channel, query, Instant::now())
        })
    }

    /// Turns connection state recovery on for this shard (before it serves):
    /// everything it delivers is logged within `bounds`.
    pub fn enable_recovery(&self, bounds: LogBounds) {
        let mut log = Log::new(bounds);
        log.trim(now_ms());
        let _ = self.log.set(RefCell::new(log));
    }

    pub fn recovery_enabled(&self) -> bool {
        self.log.get().is_some()
    }

    /// The recovery log's position now (0 without recovery): a socket or a
    /// membership made now is given nothing logged before it.
    pub fn log_pos(&self) -> u64 {
        self.log.get().map_or(0, |l| l.borrow().next_pos())
    }

    /// The recovery log's bytes and entries.
    pub fn log_size(&self) -> (usize, usize) {
        self.log
            .get()
            .map_or((0, 0), |l| (l.borrow().bytes(), l.borrow().len()))
    }

    /// Drops log entries older than the window (a timer calls it, so an idle
    /// shard's log empties too).
    pub fn trim_log(&self) {
        if let Some(l) = self.log.get() {
            l.borrow_mut().trim(now_ms());
        }
    }

    fn log_publication(&self, p: &Arc<Publication>) {
        if let Some(l) = self.log.get() {
            l.borrow_mut().push(Entry::Publication(p.clone()));
        }
    }

    /// Delivers `p` on this shard and logs it.
    fn deliver_logged(&self, p: &Arc<Publication>) -> usize {
        self.log_publication(p);
        self.channels.borrow().deliver(p)
    }

    /// What socket `m` of this shard must be given again: every logged
    /// entry after the one carrying `offset` (without one, since `since`)
    /// that it would have received.
    pub fn replay(&self, m: &Member, offset: Option<&str>, since: u64) -> Result<Replay, Miss> {
        let mut out = Vec::new();
        self.replay_into(m, offset, since, &mut out)?;
        Ok(out)
    }

    /// [`Shard::replay`], appending to `out`.
    pub fn replay_into(
        &self,
        m: &Member,
        offset: Option<&str>,
        since: u64,
        out: &mut Replay,
    ) -> Result<(), Miss> {
        let Some(log) = self.log.get() else {
            return Err(Miss::OffsetGone);
        };
        let log = log.borrow();
        let channels = self.channels.borrow();
        for (pos, e) in log.after(offset, since)? {
            match e {
                Entry::Publication(p) => channels.replay_publication(m, p, pos, out),
                Entry::Direct {
                    seq,
                    text,
                    attachments,
                } if *seq == m.key.seq => {
                    out.push((direct_frame(text.clone(), m.recover), attachments.clone()));
                }
                Entry::Direct { .. } => {}
            }
        }
        Ok(())
    }

    /// What member `m` of this shard would have been given of `p` now (a
    /// publication read back from elsewhere, e.g. another instance's store).
    pub fn frames_for(&self, m: &Member, p: &Publication, out: &mut Replay) {
        self.channels
            .borrow()
            .replay_publication(m, p, u64::MAX, out);
    }

    /// Whether the log holds the entry carrying `offset`.
    pub fn log_has(&self, offset: &str) -> bool {
        self.log
            .get()
            .is_some_and(|l| l.borrow().after(Some(offset), 0).is_ok())
    }

    /// Whether the log still holds everything from position `since` on.
    pub fn log_holds_since(&self, since: u64) -> bool {
        self.log
            .get()
            .is_some_and(|l| l.borrow().after(None, since).is_ok())
    }

    /// A socket's member-list visibility changed (presence grace): updates
    /// the counts of its channels.
    pub fn set_hidden(&self, m: &Member, channels: &[Arc<str>], hidden: bool) {
        if m.is_hidden() == hidden {
            return;
        }
        m.set_hidden(hidden);
        let mut c = self.channels.borrow_mut();
        for ch in channels {
            c.note_hidden(ch, hidden);
        }
    }

    /// Socket `seq` (of this shard's id space) now lives on shard `to`.
    pub fn set_moved(&self, seq: u64, to: ShardId) {
        self.moved.borrow_mut().insert(seq, to);
    }

    /// Socket `seq` no longer lives anywhere else.
    pub fn clear_moved(&self, seq: u64) {
        self.moved.borrow_mut().remove(&seq);
    }

    /// Where socket `seq` of this shard's id space moved to, if it did.
    pub fn moved_to(&self, seq: u64) -> Option<ShardId> {
        self.moved.borrow().get(&seq).copied()
    }

    /// Answers a fence the uplink passed on ([`Uplink::fence`]).
    pub fn answer_fence(&self, origin: ShardId, qid: u64) {
        let msg = ShardMsg::Response {
            qid,
            resp: Response::Done,
        };
        if origin == self.id {
            self.mailbox.replies().complete(qid, Response::Done);
            return;
        }
        let mailbox = self.mailbox.clone();
        glommio::spawn_local(async move {
            let _ = mailbox.send_to(origin, msg).await;
        })
        .detach();
    }

    /// Adds a handler of [`Request::App`] questions; each question goes to
    /// the first handler that takes it.
    pub fn on_app_request(&self, f: impl Fn(ShardId, AppMsg) -> AppAnswer + 'static) {
        self.app.borrow_mut().push(Rc::new(Box::new(f)));
    }

    /// Asks shard `to`'s application; `None` if it is gone.
    pub async fn ask_app(&self, to: ShardId, req: AppMsg) -> Option<AppMsg> {
        match self.mailbox.ask(self.id, to, Request::App(req)).await {
            Some(Response::App(a)) => Some(a),
            _ => None,
        }
    }

    /// Waits until shard `to` has handled everything every other peer sent
    /// it so far (each peer relays a ping to it; links are FIFO). When `to`
    /// is this shard, each peer is pinged instead: its answer comes after
    /// everything it sent here before.
    pub async fn fence(&self, to: ShardId) {
        let mut waits = Vec::new();
        let uplink = self.uplink.borrow().clone();
        if let Some(u) = uplink {
            let qid = self.mailbox.replies().expect();
            if u.fence(to, self.id, qid) {
                waits.push(qid);
            } else {
                self.mailbox.replies().cancel(qid);
            }
        }
        for peer in self.peers().filter(|&p| p != to) {
            let qid = self.mailbox.replies().expect();
            let msg = if to == self.id {
                ShardMsg::Request {
                    from: self.id,
                    qid,
                    req: Request::Ping,
                }
            } else {
                ShardMsg::Relay {
                    origin: self.id,
                    to,
                    qid,
                }
            };
            if self.mailbox.send_to(peer, msg).await.is_err() {
                self.mailbox.replies().cancel(qid);
            } else {
                waits.push(qid);
            }
        }
        for qid in waits {
            self.mailbox.replies().wait(qid).await;
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn nr_shards(&self) -> usize {
        self.nr_shards
    }

    pub fn instance(&self) -> &Arc<str> {
        &self.instance
    }

    /// A fresh key for a socket this shard will own. Its `seq` is 64 random
    /// bits from a CSPRNG, not a counter: the socket id is all another client
    /// needs to send it direct messages, so ids must not be enumerable.
    pub fn next_key(&self) -> SocketKey {
        let sockets = self.sockets.borrow();
        loop {
            let seq: u64 = rand::random();
            // 0 is never issued, so a zero seq on the wire is always unknown.
            if seq != 0 && !sockets.contains_key(&seq) {
                return SocketKey {
                    shard: self.id,
                    seq,
                };
            }
        }
    }

    /// A cluster-unique id that sorts after every earlier id from this shard:
    /// `<ms, 12 hex><counter, 8 hex>-<shard>-<instance>`, with the clock held
    /// monotonic per shard.
    pub fn next_event_id(&self) -> String {
        let (last_ts, counter) = self.last_id.get();
        let ts = now_ms().max(last_ts);
        let counter = if ts == last_ts { counter + 1 } else { 0 };
        self.last_id.set((ts, counter));
        format!("{ts:012x}{counter:08x}-{:x}-{}", self.id, self.instance)
    }

    /// Registers a connected socket (it can now receive direct messages).
    pub fn register(&self, m: Rc<Member>) {
        self.sockets.borrow_mut().insert(m.key.seq, m);
    }

    /// Removes a socket everywhere: its subscriptions and memberships are
    /// dropped by the caller first (it knows them), this forgets the socket.
    pub fn unregister(&self, key: SocketKey) {
        self.sockets.borrow_mut().remove(&key.seq);
    }

    pub fn local_connections(&self) -> usize {
        self.sockets.borrow().len()
    }

    /// The ids of this shard's recoverable sockets, connected or held.
    pub fn recoverable_ids(&self) -> Vec<Arc<str>> {
        self.sockets
            .borrow()
            .values()
            .filter(|m| m.recover)
            .map(|m| m.socket_id.clone())
            .collect()
    }

    /// Connects this shard to the cluster link.
    pub fn set_uplink(&self, u: Rc<dyn Uplink>) {
        *self.uplink.borrow_mut() = Some(u);
    }

    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Delivers a publication that arrived from another instance to this
    /// shard's recipients (never forwarded again); a presence count goes to
    /// [`Self::on_remote_count`]'s handler instead, when one is installed.
    pub fn deliver_from_cluster(&self, p: &Arc<Publication>) -> usize {
        if p.presence.is_some_and(|t| t.kind == PresenceKind::Count) {
            if let Some(f) = self.remote_count.borrow().as_ref() {
                f(&p.channel);
                return 0;
            }
        }
        self.deliver_logged(p)
    }

    /// Installs what this shard does with a presence count from another
    /// instance: each instance sends its own members one count per
    /// interval, so a count from elsewhere only says the channel changed.
    pub fn on_remote_count(&self, f: impl Fn(&Arc<str>) + 'static) {
        *self.remote_count.borrow_mut() = Some(Box::new(f));
    }

    /// Delivers a direct message that arrived from another instance.
    pub fn direct_from_cluster(&self, seq: u64, text: Bytes, attachments: &[Bytes]) -> bool {
        self.direct_local(seq, text, attachments)
    }

    /// Installs what a shard does with a connection handed over by a peer.
    pub fn on_adopt(&self, f: impl Fn(OwnedFd, Vec<u8>) + 'static) {
        *self.adopt.borrow_mut() = Some(Box::new(f));
    }

    /// Hands a client connection to the shard that owns its session.
    pub async fn hand_off(&self, to: ShardId, fd: OwnedFd, buffered: Vec<u8>) -> bool {
        self.mailbox
            .send_to(to, ShardMsg::Adopt { fd, buffered })
            .await
            .is_ok()
    }

    /// Joins `m` to `channel`; `false` when it already was a member.
    pub async fn join(&self, channel: &Arc<str>, m: &Rc<Member>) -> bool {
        let pos = self.log_pos();
        let change = self.channels.borrow_mut().join(channel, m, now_ms(), pos);
        match change {
            None => false,
            Some(c) => {
                self.announce_or_wait(c, &Topic::Exact(channel.clone()))
                    .await;
                true
            }
        }
    }

    /// Removes `key` from `channel`; `false` when it was not a member.
    pub async fn leave(&self, channel: &str, key: SocketKey) -> bool {
        let change = self.channels.borrow_mut().leave(channel, key);
        match change {
            None => false,
            Some(c) => {
                self.announce(c).await;
                true
            }
        }
    }

    pub async fn subscribe(
        &self,
        id: Arc<str>,
        m: Rc<Member>,
        topic: Topic,
        filter: Option<Rc<dyn SubFilter>>,
    ) {
        let pos = self.log_pos();
        let c = self
            .channels
            .borrow_mut()
            .subscribe(id, m, topic.clone(), filter, pos);
        self.announce_or_wait(c, &topic).await;
    }

    pub async fn unsubscribe(&self, key: SocketKey, id: &str, topic: &Topic) -> bool {
        let c = self.channels.borrow_mut().unsubscribe(key, id, topic);
        match c {
            None => false,
            Some(c) => {
                self.announce(c).await;
                true
            }
        }
    }

    /// [`Self::announce`]s a change; without one, waits for an announce of
    /// `topic` still under way.
    async fn announce_or_wait(&self, change: InterestChange, topic: &Topic) {
        if matches!(change, InterestChange::None) {
            let pending = self.announcing.borrow().get(topic).cloned();
            if let Some(done) = pending {
                // Closed (an error) once the announce is complete.
                let _ = done.acquire(1).await;
            }
            return;
        }
        self.announce(change).await;
    }

    async fn announce(&self, change: InterestChange) {
        let (topic, on) = match change {
            InterestChange::None => return,
            InterestChange::Gained(t) => (t, true),
            InterestChange::Lost(t) => (t, false),
        };
        let done = on.then(|| {
            let done = Rc::new(glommio::sync::Semaphore::new(0));
            self.announcing
                .borrow_mut()
                .insert(topic.clone(), done.clone());
            done
        });
        self.announce_to_all(&topic, on).await;
        if let Some(done) = done {
            let mut announcing = self.announcing.borrow_mut();
            if announcing.get(&topic).is_some_and(|d| Rc::ptr_eq(d, &done)) {
                announcing.remove(&topic);
            }
            done.close();
        }
    }

    async fn announce_to_all(&self, topic: &Topic, on: bool) {
        let topic = topic.clone();
        self.interest.borrow_mut().set(self.id, &topic, on);
        let uplink = self.uplink.borrow().clone();
        if let Some(u) = uplink {
            u.interest(topic.clone(), on).await;
        }
        for peer in self.peers() {
            if on {
                // Wait for the peer to record it: once a join is acked, every
                // later publish anywhere on this instance reaches the member.
                self.mailbox
                    .ask(self.id, peer, Request::Interest(topic.clone()))
                    .await;
            } else {
                let msg = ShardMsg::Interest {
                    from: self.id,
                    topic: topic.clone(),
                    on,
                };
                let _ = self.mailbox.send_to(peer, msg).await;
            }
        }
    }

    fn peers(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.nr_shards).filter(move |&s| s != self.id)
    }

    /// Forwards to every interested peer, then delivers on this shard.
    /// The channel's home shard records it in the channel's history: with
    /// the delivery it gets anyway, or, when it has no recipient, through a
    /// record-only message. Returns the number of deliveries on this shard.
    pub async fn publish(&self, p: Publication) -> usize {
        let uplink = self.uplink.borrow().clone();
        self.publish_via(p, uplink).await
    }

    /// [`Self::publish`] to this instance only.
    pub async fn publish_here(&self, p: Publication) -> usize {
        self.publish_via(p, None).await
    }

    async fn publish_via(&self, p: Publication, uplink: Option<Rc<dyn Uplink>>) -> usize {
        let mask = self.interest.borrow().shards_for(&p.channel);
        let local = mask & (1 << self.id) != 0;
        let remote = mask & !(1 << self.id);
        let home = self.history_home(&p);
        // Its place in the channel's history: a publish acknowledged before
        // another started is older, whichever reaches the home first.
        let at = Instant::now();
        let record_only = home.filter(|&h| h != self.id && remote & (1 << h) == 0);
        if remote == 0 && record_only.is_none() && uplink.is_none() && self.log.get().is_none() {
            if home == Some(self.id) {
                self.record(&p, at);
            }
            return if local {
                self.channels.borrow().deliver(&p)
            } else {
                0
            };
        }
        let p = Arc::new(p);
        if let Some(u) = uplink {
            u.publish(&p);
        }
        // Peers first: a local fan-out writes straight to the sockets and
        // holds this shard for its whole length, so forwarding after it
        // would run the shards' fan-outs one after the other.
        for peer in self.peers().filter(|s| remote & (1 << s) != 0) {
            let msg = ShardMsg::Deliver {
                p: p.clone(),
                record: (home == Some(peer)).then_some(at),
            };
            let _ = self.mailbox.send_to(peer, msg).await;
        }
        if let Some(h) = record_only {
            let _ = self
                .mailbox
                .send_to(h, ShardMsg::Record { p: p.clone(), at })
                .await;
        }
        if home == Some(self.id) {
            self.record(&p, at);
        }
        if local {
            self.deliver_logged(&p)
        } else {
            0
        }
    }

    /// Delivers an encoded packet (plus attachments) to one socket of this
    /// instance; `false` when no such socket is connected.
    pub async fn direct(&self, to: SocketKey, text: Bytes, attachments: Vec<Bytes>) -> bool {
        match self.direct_send(to, text, attachments).await {
            DirectSent::Done(delivered) => delivered,
            DirectSent::Waiting(qid) => self.direct_answer(qid).await,
        }
    }

    /// Like [`Self::direct`], but returns as soon as a message for another
    /// shard is queued, in order with this shard's other messages to it; its
    /// answer comes from [`Self::direct_answer`]. A socket's next events are
    /// then not held back by this one's round trip.
    pub async fn direct_send(
        &self,
        to: SocketKey,
        text: Bytes,
        attachments: Vec<Bytes>,
    ) -> DirectSent {
        if to.shard == self.id {
            match self.moved_to(to.seq) {
                None => return DirectSent::Done(self.direct_local(to.seq, text, &attachments)),
                Some(there) if there == self.id => {
                    return DirectSent::Done(self.direct_local(to.seq, text, &attachments))
                }
                Some(there) => return self.direct_to_shard(there, to.seq, text, attachments).await,
            }
        }
        if to.shard >= self.nr_shards {
            return DirectSent::Done(false);
        }
        self.direct_to_shard(to.shard, to.seq, text, attachments)
            .await
    }

    async fn direct_to_shard(
        &self,
        shard: ShardId,
        seq: u64,
        text: Bytes,
        attachments: Vec<Bytes>,
    ) -> DirectSent {
        let qid = self.mailbox.replies().expect();
        let req = Request::Direct {
            seq,
            text,
            attachments,
        };
        let msg = ShardMsg::Request {
            from: self.id,
            qid,
            req,
        };
        if self.mailbox.send_to(shard, msg).await.is_err() {
            self.mailbox.replies().cancel(qid);
            return DirectSent::Done(false);
        }
        DirectSent::Waiting(qid)
    }

    /// Whether the direct message queued as `qid` reached its socket.
    pub async fn direct_answer(&self, qid: u64) -> bool {
        matches!(
            self.mailbox.replies().wait(qid).await,
            Some(Response::Delivered(true))
        )
    }

    /// A direct message to socket `seq` living on this shard. A detached
    /// socket accepts it (the recovery log keeps it for its return).
    fn direct_local(&self, seq: u64, text: Bytes, attachments: &[Bytes]) -> bool {
        let Some(m) = self.sockets.borrow().get(&seq).cloned() else {
            return false;
        };
        let logged = match self.log.get() {
            Some(l) if m.recover => {
                let e = Entry::Direct {
                    seq,
                    text: text.clone(),
                    attachments: attachments.to_vec(),
                };
                l.borrow_mut().push(e);
                true
            }
            _ => false,
        };
        if m.is_detached() {
            return logged;
        }
        m.push(direct_frame(text, m.recover), attachments) || logged
    }

    /// Members of `channel` on every shard of this instance.
    pub async fn members(&self, channel: &Arc<str>) -> Vec<MemberView> {
        let mut all = self.channels.borrow().members(channel);
        for peer in self.peers() {
            if let Some(Response::Members(v)) = self
                .mailbox
                .ask(self.id, peer, Request::Members(channel.clone()))
                .await
            {
                all.extend(v);
            }
        }
        all
    }

    /// Member count of `channel` on every shard of this instance.
    pub async fn member_count(&self, channel: &Arc<str>) -> usize {
        let mut n = self.channels.borrow().member_count(channel);
        for peer in self.peers() {
            if let Some(Response::Count(c)) = self
                .mailbox
                .ask(self.id, peer, Request::Count(channel.clone()))
                .await
            {
                n += c;
            }
        }
        n
    }

    /// Active channels with member counts, summed over this instance's shards.
    pub async fn channel_counts(&self) -> Vec<(Arc<str>, usize)> {
        let mut sum: HashMap<Arc<str>, usize> = HashMap::new();
        let mut add = |v: Vec<(Arc<str>, usize)>| {
            for (k, n) in v {
                *sum.entry(k).or_default() += n;
            }
        };
        add(self.channels.borrow().channel_counts());
        for peer in self.peers() {
            if let Some(Response::Channels(v)) =
                self.mailbox.ask(self.id, peer, Request::Channels).await
            {
                add(v);
            }
        }
        sum.into_iter().collect()
    }

    /// Connected sockets per shard of this instance, indexed by shard id.
    pub async fn connections_per_shard(&self) -> Vec<usize> {
        let mut v = vec![0; self.nr_shards];
        v[self.id] = self.local_connections();
        for peer in self.peers() {
            if let Some(Response::Connections(n)) =
                self.mailbox.ask(self.id, peer, Request::Connections).await
            {
                v[peer] = n;
            }
        }
        v
    }

    /// Handles one message from a peer. Never awaits a send: answers go out
    /// from a spawned task.
    pub(crate) fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver { p, record } => {
                if let Some(at) = record {
                    self.record(&p, at);
                }
                self.deliver_logged(&p);
            }
            ShardMsg::Record { p, at } => self.record(&p, at),
            ShardMsg::Relay { origin, to, qid } => {
                let mailbox = self.mailbox.clone();
                let msg = ShardMsg::Request {
                    from: origin,
                    qid,
                    req: Request::Ping,
                };
                glommio::spawn_local(async move {
                    let _ = mailbox.send_to(to, msg).await;
                })
                .detach();
            }
            ShardMsg::Interest { from, topic, on } => {
                self.interest.borrow_mut().set(from, &topic, on);
            }
            ShardMsg::Response { qid, resp } => self.mailbox.replies().complete(qid, resp),
            ShardMsg::Request {
                from,
                qid,
                req: Request::App(a),
            } => {
                let handlers = self.app.borrow().clone();
                let mut msg = a;
                let mut taken = None;
                for f in handlers {
                    match f(from, msg) {
                        Ok(fut) => {
                            taken = Some(fut);
                            break;
                        }
                        Err(back) => msg = back,
                    }
                }
                let Some(fut) = taken else {
                    return;
                };
                let mailbox = self.mailbox.clone();
                glommio::spawn_local(async move {
                    let resp = Response::App(fut.await);
                    let _ = mailbox
                        .send_to(from, ShardMsg::Response { qid, resp })
                        .await;
                })
                .detach();
            }
            ShardMsg::Request {
                from,
                qid,
                req:
                    Request::Direct {
                        seq,
                        text,
                        attachments,
                    },
            } if self.moved_to(seq).is_some_and(|s| s != self.id) => {
                // Recovered on another shard: pass it on, answer with its answer.
                let there = self.moved_to(seq).unwrap_or(self.id);
                let me = self.clone();
                glommio::spawn_local(async move {
                    let sent = me.direct_to_shard(there, seq, text, attachments).await;
                    let ok = match sent {
                        DirectSent::Done(ok) => ok,
                        DirectSent::Waiting(q) => me.direct_answer(q).await,
                    };
                    let resp = Response::Delivered(ok);
                    let _ = me
                        .mailbox
                        .send_to(from, ShardMsg::Response { qid, resp })
                        .await;
                })
                .detach();
            }
            ShardMsg::Request { from, qid, req } => {
                let resp = self.answer(from, req);
                let mailbox = self.mailbox.clone();
                glommio::spawn_local(async move {
                    let _ = mailbox
                        .send_to(from, ShardMsg::Response { qid, resp })
                        .await;
                })
                .detach();
            }
            ShardMsg::Adopt { fd, buffered } => {
                if let Some(f) = &*self.adopt.borrow() {
                    f(fd, buffered);
                }
            }
        }
    }

    fn answer(&self, from: ShardId, req: Request) -> Response {
        match req {
            Request::Interest(topic) => {
                self.interest.borrow_mut().set(from, &topic, true);
                Response::Done
            }
            Request::Count(c) => Response::Count(self.channels.borrow().member_count(&c)),
            Request::Members(c) => Response::Members(self.channels.borrow().members(&c)),
            Request::Direct {
                seq,
                text,
                attachments,
            } => Response::Delivered(self.direct_local(seq, text, &attachments)),
            Request::Channels => Response::Channels(self.channels.borrow().channel_counts()),
            Request::Connections => Response::Connections(self.local_connections()),
            Request::Ping => Response::Done,
            Request::History { channel, query } => {
                Response::History(self.local_history(&channel, &query))
            }
            // Handled in `handle` (it needs a task).
            Request::App(_) => Response::Done,
        }
    }
}

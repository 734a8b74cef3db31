//! `Shard`: everything one core owns — its sockets, their channel membership
//! and subscriptions, and its replica of which peers want which topics.
//!
//! A `Shard` is `!Send` by construction (Rc/RefCell): only its own executor
//! touches it. Other shards reach it through [`crate::mailbox`].
//!
//! The publish path: [`Shard::publish`] hands the `Arc<Publication>` to
//! the uplink, sends it to each peer whose interest replica says it has
//! members or matching subscriptions, then delivers to local recipients;
//! the peer's receive loop calls [`Channels::deliver`]. Order per publisher
//! per channel holds because a publisher lives on one shard and each peer
//! link is FIFO.
//!
//! Files: this one holds the state, the public types, a socket's
//! registration and ids, and the wiring (uplink, mailbox, connections
//! handed over). Under `shard/`, each an `impl Shard` on one concept (they
//! use its private fields; this file imports nothing from them):
//! `membership.rs` joins, subscriptions and the interest announcements;
//! `publish.rs` a publish and its fan-out; `direct.rs` direct messages;
//! `questions.rs` questions to the other shards and fences; `dispatch.rs`
//! what a peer's mailbox message does here; `channel_history.rs` channel
//! history on its home shard; `recovery_log.rs` the recovery log and
//! replays.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::engineio::Outgoing;

use crate::channels::{Channels, Member, Topic};
use crate::history::History;
use crate::ids::{ShardId, SocketKey};
use crate::interest::InterestMap;
use crate::mailbox::{AppMsg, Mailbox, ShardMsg};
use crate::publication::Publication;
use crate::recovery::Log;

mod channel_history;
mod direct;
mod dispatch;
mod membership;
mod publish;
mod questions;
mod recovery_log;

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
    /// A publication made on this instance, handed over before its
    /// delivery on this instance.
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

/// What [`Shard::direct_send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectSent {
    /// Delivered (true) or no such socket (false), known at once.
    Done(bool),
    /// Queued for another shard; the answer is awaited with this id.
    Waiting(u64),
}

/// One core's state.
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

    fn peers(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.nr_shards).filter(move |&s| s != self.id)
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
}

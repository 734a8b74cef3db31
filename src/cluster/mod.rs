//! Several instances as one cluster, through Redis.
//!
//! - `link`: the Redis shard, a dedicated thread owning every Redis
//!   connection (subscriptions by interest, pipelined publishes, presence
//!   under per-instance keys with heartbeats, reconnection).
//! - `wire`: the envelope that crosses Redis.
//! - `msg`: what a shard and the link say to each other.
//! - `port`: the channel from the link to one shard, and its wake-up.
//! - this module: each shard's side — [`ClusterLink`] (the shard's
//!   [`Uplink`]: publishes and interest go out) and the task that takes in
//!   what the link sends back (deliveries, direct messages, answers).
//!
//! Every question a shard asks the cluster has a local fallback: when Redis
//! is away the answer is this instance's own view.

pub mod link;
pub mod msg;
pub mod port;
pub mod wire;

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::AsyncReadExt;
use shards::{MemberView, Publication, Replies, Shard, ShardId, Topic, Uplink};
use tokio::sync::mpsc;

pub use link::{ClusterStats, LinkConfig};
pub use msg::{FromCluster, Missed, Query, Reply, ToCluster};
use port::ShardEnd;

/// What `run::start` builds before the shards exist.
pub struct Cluster {
    pub tx: mpsc::Sender<ToCluster>,
    pub stats: Arc<ClusterStats>,
    ends: Mutex<Vec<Option<ShardEnd>>>,
}

/// How long a shard waits for the Redis shard before using its local view.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a recovering socket's questions may wait: they have no local
/// view to fall back on (a refusal makes a new socket, which loses what was
/// missed), and in a reconnect storm they queue behind each other at the
/// Redis shard, which answers one question at a time.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);

impl Cluster {
    pub fn start(cfg: LinkConfig, shards: usize) -> std::io::Result<Cluster> {
        let mut ports = Vec::with_capacity(shards);
        let mut ends = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (port, end) = port::pair()?;
            ports.push(port);
            ends.push(Some(end));
        }
        let stats = Arc::new(ClusterStats::default());
        let tx = link::spawn(cfg, ports, stats.clone())?;
        Ok(Cluster {
            tx,
            stats,
            ends: Mutex::new(ends),
        })
    }

    /// Takes this instance out of the cluster's presence at once (its
    /// heartbeat entry, member lists, channel counts and connection counts),
    /// for a graceful stop: peers stop counting it immediately instead of
    /// after the expiry. Blocks the caller (not a shard) for at most
    /// `within`; true when Redis confirmed. Later heartbeats would write the
    /// presence again, so call it last.
    pub fn withdraw(&self, within: Duration) -> bool {
        let (done, rx) = std::sync::mpsc::channel();
        if self.tx.try_send(ToCluster::Withdraw { done }).is_err() {
            return false;
        }
        rx.recv_timeout(within).unwrap_or(false)
    }

    /// Connects shard `shard` to the cluster: installs its uplink and starts
    /// the task that receives from the Redis shard.
    pub fn attach(&self, shard: &Rc<Shard>) -> Rc<ClusterLink> {
        let link = Rc::new(ClusterLink {
            shard: Rc::downgrade(shard),
            id: shard.id(),
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            reported: Cell::new(usize::MAX),
            replies: Rc::default(),
            on_forget: Default::default(),
            on_control: Default::default(),
        });
        shard.set_uplink(link.clone());
        let end = self
            .ends
            .lock()
            .ok()
            .and_then(|mut e| e.get_mut(shard.id()).and_then(Option::take));
        if let Some(end) = end {
            shards::rt::spawn_local(receive(shard.clone(), link.clone(), end)).detach();
        }
        let (weak, reporter) = (Rc::downgrade(shard), link.clone());
        shards::rt::spawn_local(async move {
            // Sockets that never talk to the cluster (no join, no question)
            // are still counted within this period; every join, leave and
            // question reports a changed count first (`sync_connections`).
            while weak.strong_count() > 0 {
                reporter.sync_connections();
                shards::rt::sleep(Duration::from_millis(250)).await;
            }
        })
        .detach();
        link
    }
}

type ForgetFn = Box<dyn Fn(u64)>;
/// Runs another instance's control action; resolves to whether it found
/// what it acts on.
pub type ControlFuture = Pin<Box<dyn Future<Output = bool>>>;
type ControlFn = Box<dyn Fn(u64, bytes::Bytes) -> ControlFuture>;

/// One shard's connection to the Redis shard.
pub struct ClusterLink {
    shard: Weak<Shard>,
    id: ShardId,
    tx: mpsc::Sender<ToCluster>,
    pub stats: Arc<ClusterStats>,
    /// The connection count last sent to the Redis shard.
    reported: Cell<usize>,
    /// Questions sent to the Redis shard, awaiting its [`Reply`].
    replies: Rc<Replies<Reply>>,
    /// What the application does when another instance recovered one of
    /// this shard's sockets (by `seq`).
    on_forget: std::cell::RefCell<Option<ForgetFn>>,
    on_control: std::cell::RefCell<Option<ControlFn>>,
}

impl Uplink for ClusterLink {
    fn publish(&self, p: &Arc<Publication>) {
        if self.tx.try_send(ToCluster::Publish(p.clone())).is_err() {
            self.stats.publishes_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fence(&self, to: ShardId, origin: ShardId, qid: u64) -> bool {
        self.tx
            .try_send(ToCluster::Relay { to, origin, qid })
            .is_ok()
    }

    fn interest(&self, topic: Topic, on: bool) -> Pin<Box<dyn Future<Output = ()>>> {
        if !on {
            let _ = self.tx.try_send(ToCluster::Interest {
                shard: self.id,
                topic,
                on,
                reply: None,
            });
            return Box::pin(async {});
        }
        self.sync_connections();
        let qid = self.replies.expect();
        let msg = ToCluster::Interest {
            shard: self.id,
            topic,
            on,
            reply: Some(qid),
        };
        if self.tx.try_send(msg).is_err() {
            self.replies.cancel(qid);
            return Box::pin(async {});
        }
        let replies = self.replies.clone();
        Box::pin(async move {
            wait(&replies, qid).await;
        })
    }
}

async fn wait(replies: &Replies<Reply>, qid: u64) -> Option<Reply> {
    wait_within(replies, qid, ASK_TIMEOUT).await
}

async fn wait_within(replies: &Replies<Reply>, qid: u64, within: Duration) -> Option<Reply> {
    let timed_out = async {
        shards::rt::sleep(within).await;
        None
    };
    let r = futures_lite::future::or(replies.wait(qid), timed_out).await;
    if r.is_none() {
        replies.cancel(qid);
    }
    r
}

impl ClusterLink {
    pub fn is_up(&self) -> bool {
        self.stats.up.load(Ordering::Relaxed)
    }

    /// Records a member in the cluster's presence (ordered before any later
    /// question from this shard).
    pub fn join(&self, channel: &Arc<str>, member: MemberView) {
        self.sync_connections();
        let _ = self.tx.try_send(ToCluster::Join {
            channel: channel.clone(),
            member,
        });
    }

    /// Records how many sockets of `user` this instance holds (ordered
    /// before any later question from this shard).
    pub fn user_count(&self, user: &Arc<str>, n: usize) {
        let _ = self.tx.try_send(ToCluster::UserCount {
            user: user.clone(),
            n,
        });
    }

    pub fn leave(&self, channel: &Arc<str>, socket_id: &Arc<str>) {
        self.sync_connections();
        let _ = self.tx.try_send(ToCluster::Leave {
            channel: channel.clone(),
            socket_id: socket_id.clone(),
        });
    }

    /// A connected recoverable socket needs `channel`'s stream from `at`
    /// (ms) on (see [`ToCluster::Ensure`]).
    pub fn ensure(&self, channel: &Arc<str>, at: u64) {
        let _ = self.tx.try_send(ToCluster::Ensure {
            channel: channel.clone(),
            at,
        });
    }

    /// Stores (or, with `None`, deletes) a recoverable socket's state for
    /// other instances.
    pub fn checkpoint(&self, socket_id: &Arc<str>, state: Option<String>) {
        let _ = self.tx.try_send(ToCluster::Checkpoint {
            socket_id: socket_id.clone(),
            state,
        });
    }

    /// Renews the TTL of these sockets' states in Redis (see
    /// [`ToCluster::Touch`]).
    pub fn touch(&self, socket_ids: Vec<Arc<str>>) {
        let _ = self.tx.try_send(ToCluster::Touch { socket_ids });
    }

    /// A socket of `instance` recovered on this shard (`on`), or gone again.
    pub fn adopt(&self, instance: &str, seq: u64, on: bool) {
        let _ = self.tx.try_send(ToCluster::Adopt {
            instance: instance.to_string(),
            seq,
            shard: self.id,
            on,
        });
    }

    /// Installs what happens when another instance recovered one of this
    /// shard's sockets.
    pub fn on_forget(&self, f: impl Fn(u64) + 'static) {
        *self.on_forget.borrow_mut() = Some(Box::new(f));
    }

    /// Installs what runs another instance's [`Query::Control`] here; its
    /// answer (whether it found what it acts on) goes back to the asker.
    pub fn on_control(&self, f: impl Fn(u64, bytes::Bytes) -> ControlFuture + 'static) {
        *self.on_control.borrow_mut() = Some(Box::new(f));
    }

    /// Sends this shard's connection count to the Redis shard if it changed
    /// since the last report. Called before every join, leave and question,
    /// so the count the cluster holds is never older than what a socket of
    /// this shard did there (a socket that joined is counted as connected).
    pub fn sync_connections(&self) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let n = shard.local_connections();
        if n != self.reported.get()
            && self
                .tx
                .try_send(ToCluster::Connections { shard: self.id, n })
                .is_ok()
        {
            self.reported.set(n);
        }
    }

    /// Resolves once Redis has every publish this shard sent it so far (or
    /// when Redis is away): with recovery, a publish is acknowledged only
    /// when its channel's stream holds it, so histories and recoveries on
    /// any instance see acknowledged publishes in the order of their acks.
    pub async fn flushed(&self) {
        let _ = self.ask(Query::Flushed).await;
    }

    /// Asks the cluster; `None` when Redis is away or too slow.
    pub async fn ask(&self, q: Query) -> Option<Reply> {
        let within = match q {
            Query::RecoverState { .. } | Query::RecoverEntries { .. } => RECOVER_TIMEOUT,
            _ => ASK_TIMEOUT,
        };
        self.sync_connections();
        let qid = self.replies.expect();
        if self
            .tx
            .try_send(ToCluster::Query {
                shard: self.id,
                qid,
                q,
            })
            .is_err()
        {
            self.replies.cancel(qid);
            return None;
        }
        match wait_within(&self.replies, qid, within).await {
            Some(Reply::Unavailable) | None => None,
            r => r,
        }
    }
}

/// Takes in what the Redis shard sends this shard, woken by a byte on the
/// socketpair whenever the shard was idle.
async fn receive(shard: Rc<Shard>, link: Rc<ClusterLink>, end: ShardEnd) {
    let fd = end.wake.into_raw_fd();
    let mut wake = unsafe { shards::rt::UnixStream::from_raw_fd(fd) };
    let mut buf = [0u8; 64];
    loop {
        end.armed.store(true, Ordering::Release);
        if end.rx.is_empty() && wake.read(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        end.armed.store(false, Ordering::Release);
        while let Ok(m) = end.rx.try_recv() {
            match m {
                FromCluster::Deliver(p) => {
                    shard.deliver_from_cluster(&p);
                }
                FromCluster::Direct {
                    seq,
                    text,
                    attachments,
                    origin,
                    req,
                } => {
                    let ok = shard.direct_from_cluster(seq, text, &attachments);
                    let _ = link
                        .tx
                        .try_send(ToCluster::DirectResult { origin, req, ok });
                }
                FromCluster::Reply { qid, resp } => link.replies.complete(qid, resp),
                FromCluster::Relay { origin, qid } => shard.answer_fence(origin, qid),
                FromCluster::Forget { seq } => {
                    if let Some(f) = &*link.on_forget.borrow() {
                        f(seq);
                    }
                }
                FromCluster::Control {
                    seq,
                    body,
                    origin,
                    req,
                } => {
                    let run = link.on_control.borrow().as_ref().map(|f| f(seq, body));
                    let tx = link.tx.clone();
                    shards::rt::spawn_local(async move {
                        let ok = match run {
                            Some(run) => run.await,
                            None => false,
                        };
                        let _ = tx.try_send(ToCluster::DirectResult { origin, req, ok });
                    })
                    .detach();
                }
            }
        }
    }
}

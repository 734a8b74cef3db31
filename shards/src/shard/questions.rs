//! Questions to the other shards of this instance: members, counts,
//! channels and connections summed over the shards, the application's own
//! questions, and fences (every peer's earlier messages handled first).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{AppAnswer, Shard};
use crate::channels::MemberView;
use crate::ids::ShardId;
use crate::mailbox::{AppMsg, Request, Response, ShardMsg};

impl Shard {
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

    /// Answers a fence the uplink passed on ([`Uplink::fence`](super::Uplink::fence)).
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
}

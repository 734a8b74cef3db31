//! Joins, leaves, subscriptions and member visibility, and the interest
//! announcements they cause: a shard that gains (or loses) its first (or
//! last) local member or subscription of a topic tells its peers and the
//! uplink, and a join or subscription is acknowledged only once they know.

use std::rc::Rc;
use std::sync::Arc;

use super::{now_ms, Shard};
use crate::channels::{InterestChange, Member, SubFilter, Topic};
use crate::ids::SocketKey;
use crate::mailbox::{Request, ShardMsg};

impl Shard {
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

    /// When (ms) `key` joined `channel`, if it is a member.
    pub fn joined_at(&self, channel: &str, key: SocketKey) -> Option<u64> {
        self.channels.borrow().joined_at(channel, key)
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
}

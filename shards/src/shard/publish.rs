//! Publishing: the uplink first, then the interested peers, the history
//! record on the channel's home, and last the local fan-out; and a
//! publication that arrived from another instance (delivered here only,
//! or, for a presence count, handed to the application).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::{Shard, Uplink};
use crate::mailbox::ShardMsg;
use crate::outbox::PresenceKind;
use crate::publication::Publication;

impl Shard {
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
}

//! Direct messages to one socket of this instance: on this shard straight
//! into its outbox (and the recovery log), on another shard through the
//! mailbox with an answer awaited, and forwarded when the socket was
//! recovered on another shard than the one its id names.

use bytes::Bytes;

use super::{DirectSent, Shard};
use crate::ids::{ShardId, SocketKey};
use crate::mailbox::{Request, Response, ShardMsg};
use crate::publication::direct_frame;
use crate::recovery::Entry;

impl Shard {
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

    pub(super) async fn direct_to_shard(
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
    pub(super) fn direct_local(&self, seq: u64, text: Bytes, attachments: &[Bytes]) -> bool {
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

    /// Delivers a direct message that arrived from another instance.
    pub fn direct_from_cluster(&self, seq: u64, text: Bytes, attachments: &[Bytes]) -> bool {
        self.direct_local(seq, text, attachments)
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
}

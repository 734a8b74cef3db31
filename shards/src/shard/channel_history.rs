//! Channel history, the shard's side of `crate::history`: turning it on,
//! which shard is a channel's home, recording a publication there, and
//! asking the home for a page (after a fence, so every acknowledged
//! publish is in it).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use super::Shard;
use crate::history::{History, HistoryBounds, HistoryPage, HistoryQuery};
use crate::ids::{channel_home, ShardId};
use crate::mailbox::{Request, Response};
use crate::publication::Publication;

impl Shard {
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
    pub(super) fn history_home(&self, p: &Publication) -> Option<ShardId> {
        (self.history.get().is_some() && p.presence.is_none()).then(|| self.home_of(&p.channel))
    }

    /// Records `p`, published at `at`, in this shard's history (this shard
    /// is its home).
    pub(super) fn record(&self, p: &Publication, at: Instant) {
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

    pub(super) fn local_history(&self, channel: &str, query: &HistoryQuery) -> HistoryPage {
        self.history.get().map_or_else(HistoryPage::default, |h| {
            h.borrow_mut().query(channel, query, Instant::now())
        })
    }
}

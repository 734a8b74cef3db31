//! The recovery log, the shard's side of `crate::recovery`: turning it on,
//! logging what the shard delivers, and what a returning socket is given
//! again (replayed from the log, or built for a publication read back from
//! elsewhere).

use std::cell::RefCell;
use std::sync::Arc;

use super::{now_ms, Replay, Shard};
use crate::channels::Member;
use crate::publication::{direct_frame, Publication};
use crate::recovery::{Entry, Log, LogBounds, Miss};

impl Shard {
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
    pub(super) fn deliver_logged(&self, p: &Arc<Publication>) -> usize {
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
}

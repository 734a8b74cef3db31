//! One shard's recovery log: every publication and `direct` message this
//! shard delivered, in the order it delivered them, kept for the recovery
//! window and within a byte budget.
//!
//! A socket whose transport dropped is not given anything while it is away
//! (it is detached), and what it received just before may not have reached
//! it. When it comes back with the offset of the last frame it got, the log
//! is read after that offset and every entry is given to it again as
//! [`crate::channels::Channels::deliver`] would have: the log is shared by all the
//! shard's sockets (one entry per publication, not per recipient), and
//! membership decides at replay time. An offset no longer in the log means
//! the replay cannot be whole, and the recovery fails.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::publication::{frame_offset, Publication};

/// What the log holds.
pub enum Entry {
    Publication(Arc<Publication>),
    /// A direct message to this shard's socket `seq`.
    Direct {
        seq: u64,
        text: Bytes,
        attachments: Vec<Bytes>,
    },
}

impl Entry {
    /// The recovery offset its frame carries.
    pub fn offset(&self) -> Option<&str> {
        match self {
            Entry::Publication(p) => p.offset(),
            Entry::Direct { text, .. } => frame_offset(text),
        }
    }

    fn bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                // Shared with every shard it went to; counted in full here,
                // as this shard keeps it alive.
                Entry::Publication(p) => {
                    p.text.len() + p.attachments.iter().map(Bytes::len).sum::<usize>()
                }
                Entry::Direct {
                    text, attachments, ..
                } => text.len() + attachments.iter().map(Bytes::len).sum::<usize>(),
            }
    }
}

/// The log's bounds.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    /// Entries older than this are dropped (the recovery window).
    pub max_age_ms: u64,
    /// The log's bytes (frames and attachments) are kept below this.
    pub max_bytes: usize,
}

/// The log. Positions count every entry ever pushed; `first` is the
/// position of the oldest kept.
pub struct Log {
    entries: VecDeque<(u64, Entry)>,
    first: u64,
    bytes: usize,
    bounds: LogBounds,
    /// The time of the last [`Log::trim`] (ms), stamped on new entries: a
    /// push reads no clock, and an entry's age is off by at most one trim
    /// period against a window of minutes.
    now_ms: u64,
}

/// Why a replay cannot be whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The offset is not (or no longer) in the log.
    OffsetGone,
    /// Entries after the socket's start were dropped.
    Trimmed,
}

impl Log {
    pub fn new(bounds: LogBounds) -> Self {
        Log {
            entries: VecDeque::new(),
            first: 0,
            bytes: 0,
            bounds,
            now_ms: 0,
        }
    }

    /// The position the next entry will get.
    pub fn next_pos(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry, then drops the oldest while over the byte budget.
    pub fn push(&mut self, e: Entry) {
        self.bytes += e.bytes();
        self.entries.push_back((self.now_ms, e));
        if self.bytes > self.bounds.max_bytes {
            self.drop_front(0);
        }
    }

    /// Drops what is older than the window or over the budget; `now_ms`
    /// also stamps the entries pushed until the next trim.
    pub fn trim(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.drop_front(self.now_ms.saturating_sub(self.bounds.max_age_ms));
    }

    fn drop_front(&mut self, oldest: u64) {
        while let Some((at, e)) = self.entries.front() {
            if *at >= oldest && self.bytes <= self.bounds.max_bytes {
                break;
            }
            self.bytes -= e.bytes();
            self.entries.pop_front();
            self.first += 1;
        }
        if self.entries.is_empty() && self.entries.capacity() > 64 {
            self.entries.shrink_to(64);
        }
    }

    /// The entries a socket must be given again: after the one carrying
    /// `offset`, or, without an offset, from position `since` (the socket's
    /// start) on. Whole or a [`Miss`].
    pub fn after(
        &self,
        offset: Option<&str>,
        since: u64,
    ) -> Result<impl Iterator<Item = (u64, &Entry)>, Miss> {
        let from = match offset {
            Some(off) => {
                // Newest first: a recovering socket's offset is recent.
                let i = self
                    .entries
                    .iter()
                    .rposition(|(_, e)| e.offset() == Some(off))
                    .ok_or(Miss::OffsetGone)?;
                self.first + i as u64 + 1
            }
            None if since < self.first => return Err(Miss::Trimmed),
            None => since,
        };
        let skip = (from - self.first) as usize;
        Ok(self
            .entries
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(i, (_, e))| (self.first + i as u64, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(seq: u64, off: &str) -> Entry {
        Entry::Direct {
            seq,
            text: Bytes::from(format!("42[\"event\",{{}},\"{off}\"]")),
            attachments: vec![],
        }
    }

    fn seqs(it: impl Iterator<Item = (u64, &'static Entry)>) -> Vec<u64> {
        it.map(|(p, _)| p).collect()
    }

    #[test]
    fn after_an_offset_or_a_start() {
        let mut log = Log::new(LogBounds {
            max_age_ms: 1000,
            max_bytes: 1 << 20,
        });
        for (i, off) in ["a", "b", "c"].iter().enumerate() {
            log.trim(10 + i as u64);
            log.push(direct(1, off));
        }
        let log: &'static Log = Box::leak(Box::new(log));
        assert_eq!(seqs(log.after(Some("a"), 0).unwrap()), vec![1, 2]);
        assert_eq!(seqs(log.after(Some("c"), 0).unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(log.after(None, 1).unwrap()), vec![1, 2]);
        assert_eq!(log.after(Some("zz"), 0).err(), Some(Miss::OffsetGone));
    }

    #[test]
    fn age_and_budget_trim_from_the_front() {
        let mut log = Log::new(LogBounds {
            max_age_ms: 100,
            max_bytes: 3 * 90,
        });
        log.trim(0);
        log.push(direct(1, "a"));
        log.trim(50);
        log.push(direct(1, "b"));
        log.trim(150);
        log.push(direct(1, "c"));
        assert_eq!(log.next_pos(), 3);
        assert_eq!(log.len(), 2, "a is older than 100 ms");
        assert_eq!(log.after(None, 0).err(), Some(Miss::Trimmed));
        for _ in 0..10 {
            log.push(direct(1, "x"));
        }
        assert!(log.bytes() <= 3 * 90);
        assert_eq!(log.after(Some("b"), 0).err(), Some(Miss::OffsetGone));
    }
}

//! Per-stream sequence accounting: lost, duplicated and out-of-order messages.
//!
//! A stream is what one receiver gets from one (publisher, channel): sequence numbers 0, 1, 2…
//! in publish order. The receiver keeps the highest seen + 1 and the set of numbers skipped
//! over (gaps). A number below the highest that is in the gap set arrived late (out of order);
//! one that is not was already seen (duplicate). Lost = published − distinct received.

/// Gaps larger than this are counted as lost without remembering each missing number.
pub const MAX_TRACKED_GAP: u64 = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Highest sequence number seen + 1 (0: none yet).
    pub next: u64,
    /// Distinct sequence numbers received.
    pub distinct: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Numbers skipped over, not (yet) received. Sorted.
    missing: Vec<u64>,
    /// Numbers skipped over in gaps too large to track.
    untracked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Skipped over some numbers.
    Gap,
    Late,
    Duplicate,
}

impl Stream {
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            self.distinct += 1;
            Arrival::InOrder
        } else if seq > self.next {
            let gap = seq - self.next;
            if gap <= MAX_TRACKED_GAP && self.missing.len() < 1 << 16 {
                self.missing.extend(self.next..seq);
            } else {
                self.untracked += gap;
            }
            self.next = seq + 1;
            self.distinct += 1;
            Arrival::Gap
        } else if let Ok(i) = self.missing.binary_search(&seq) {
            self.missing.remove(i);
            self.distinct += 1;
            self.out_of_order += 1;
            Arrival::Late
        } else {
            // Either seen before, or lost in an untracked gap and now late: count as duplicate.
            self.duplicates += 1;
            Arrival::Duplicate
        }
    }

    /// Numbers below the highest seen that never arrived.
    pub fn gap_lost(&self) -> u64 {
        self.missing.len() as u64 + self.untracked
    }

    /// Lost out of `published` messages (including any after the last one received).
    pub fn lost(&self, published: u64) -> u64 {
        published.saturating_sub(self.distinct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut s = Stream::default();
        for i in 0..100 {
            assert_eq!(s.record(i), Arrival::InOrder);
        }
        assert_eq!((s.distinct, s.duplicates, s.out_of_order), (100, 0, 0));
        assert_eq!(s.lost(100), 0);
        assert_eq!(s.lost(103), 3);
        assert_eq!(s.gap_lost(), 0);
    }

    #[test]
    fn loss_dup_reorder() {
        let mut s = Stream::default();
        // 0 1 3 2 2 5 7 6 9 ; published 0..=10 → lost 4 and 8 and 10.
        let arr = [0, 1, 3, 2, 2, 5, 7, 6, 9];
        let got: Vec<Arrival> = arr.iter().map(|&x| s.record(x)).collect();
        use Arrival::*;
        assert_eq!(
            got,
            vec![InOrder, InOrder, Gap, Late, Duplicate, Gap, Gap, Late, Gap]
        );
        assert_eq!(s.distinct, 8);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.out_of_order, 2);
        assert_eq!(s.gap_lost(), 2); // 4 and 8
        assert_eq!(s.lost(11), 3); // and 10
    }

    #[test]
    fn duplicate_of_in_order_and_first_missing() {
        let mut s = Stream::default();
        s.record(1); // 0 missing
        s.record(1);
        assert_eq!(s.duplicates, 1);
        s.record(0);
        assert_eq!(s.out_of_order, 1);
        s.record(0);
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.lost(2), 0);
    }

    #[test]
    fn huge_gap_is_untracked() {
        let mut s = Stream::default();
        s.record(0);
        s.record(MAX_TRACKED_GAP + 10);
        assert_eq!(s.gap_lost(), MAX_TRACKED_GAP + 9);
        assert_eq!(s.lost(MAX_TRACKED_GAP + 11), MAX_TRACKED_GAP + 9);
    }
}

//! Channel history: the most recent `event` publications of every channel
//! whose home is this shard, kept whether or not the channel has members.
//!
//! A channel's home is one shard of the instance ([`crate::channel_home`]),
//! so its history is recorded, and asked for, in one place: the publishing
//! shard records a publication itself when it is the home, and otherwise
//! makes sure the home gets it (with the delivery it sends there anyway, or
//! as a record-only message). Recording is one push onto the channel's
//! queue: the RealtimeEvent object is kept as a slice of the frame already
//! encoded for the recipients, never copied.
//!
//! A channel's events are kept in the order they were published, by the
//! monotonic clock read when the publishing shard took them: a publish
//! acknowledged before another one started is older, even when the second
//! reached the home first (it was published on the home, the first one is
//! still in the mailbox). Such an event goes in a few places from the end;
//! every other one is pushed at the end.
//!
//! Three bounds, all enforced on every push: events per channel
//! (`--history-size`), age (the recovery window; none when it is 0), and
//! the shard's bytes (`--history-bytes`), which drops the shard's oldest
//! events first, whatever their channel. The binary attachments of an event
//! are not kept: its object names them by their placeholders.
//!
//! Eviction in age order across channels uses one queue with a record per
//! push, in push order (`Order`): the record at its front says which
//! channel loses its oldest event. A channel's events that left another way
//! (its size bound) leave their records behind, stale; a channel knows how
//! many (its records minus its events), and those are consumed first, when
//! they reach the front or when the queue is compacted, once stale records
//! outnumber kept events: every push stays amortised O(1) and the queue at
//! most about twice as long as what is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What one shard's history may hold.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Events kept per channel; 0 keeps none.
    pub size: usize,
    /// Events published longer ago than this are dropped; zero: no age
    /// bound.
    pub max_age: Duration,
    /// The shard's history (events, their frames and bookkeeping) is kept
    /// below this many bytes.
    pub max_bytes: usize,
}

/// A question to a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// At most this many events: the newest of those asked for.
    pub limit: Option<usize>,
    /// Only the events kept after the one with this id. An id no longer
    /// kept (or never seen) selects the events whose id sorts after it:
    /// ids begin with their publish time.
    pub since: Option<String>,
    /// The answer's events stop before their objects would pass this many
    /// bytes (the first always goes in).
    pub max_bytes: usize,
}

/// An answer: the events' RealtimeEvent objects, oldest first, and the id
/// of the newest event the channel keeps (empty when it keeps none).
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub events: Vec<Bytes>,
    pub top: Bytes,
}

/// One kept event.
struct Kept {
    /// When it was published (the publishing shard's monotonic clock).
    at: Instant,
    /// The RealtimeEvent object: a slice of the shared frame.
    object: Bytes,
    /// The id is `object[ID_START..id_end]`.
    id_end: usize,
    /// What it counts against the budget.
    cost: usize,
}

/// Where the id starts in a RealtimeEvent object: after `{"id":"`.
const ID_START: usize = 7;

impl Kept {
    fn id(&self) -> &[u8] {
        &self.object[ID_START..self.id_end]
    }
}

/// One channel's kept events, oldest first.
struct Channel {
    /// The map's key, shared by the channel's [`Order`] records.
    name: Arc<str>,
    events: VecDeque<Kept>,
    /// Its records in the order queue: one per event kept, plus one per
    /// event its size bound dropped (stale) not consumed yet.
    records: usize,
}

impl Channel {
    fn stale(&self) -> usize {
        self.records - self.events.len()
    }
}

/// A push, in the shard's push order.
struct Order {
    at: Instant,
    channel: Arc<str>,
}

/// Bookkeeping counted against the budget besides the frames: a kept event,
/// a record in the order queue, a channel (plus its name).
const KEPT_COST: usize = std::mem::size_of::<Kept>();
const ORDER_COST: usize = std::mem::size_of::<Order>();
const CHANNEL_COST: usize = 128;

/// Stale order records tolerated beyond the kept events before compaction.
const STALE_SLACK: usize = 1024;

/// One shard's histories.
pub struct History {
    channels: HashMap<Arc<str>, Channel>,
    order: VecDeque<Order>,
    /// Records of `order` whose event is no longer kept.
    stale: usize,
    /// Events kept, over every channel.
    kept: usize,
    /// Frames and bookkeeping of kept events and channels (the order
    /// queue's records are added by [`History::bytes`]).
    bytes: usize,
    bounds: HistoryBounds,
}

impl History {
    pub fn new(bounds: HistoryBounds) -> Self {
        History {
            channels: HashMap::new(),
            order: VecDeque::new(),
            stale: 0,
            kept: 0,
            bytes: 0,
            bounds,
        }
    }

    /// Bytes held: frames, events, order records and channels.
    pub fn bytes(&self) -> usize {
        self.bytes + self.order.len() * ORDER_COST
    }

    /// Events kept, over every channel.
    pub fn len(&self) -> usize {
        self.kept
    }

    pub fn is_empty(&self) -> bool {
        self.kept == 0
    }

    /// Channels with at least one kept event.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Records the event published at `at` whose object is `frame[object]`
    /// in `channel`'s history. Anything that is not a RealtimeEvent object
    /// is ignored.
    pub fn record(
        &mut self,
        channel: &str,
        frame: &Bytes,
        object: std::ops::Range<usize>,
        at: Instant,
    ) {
        if self.bounds.size == 0 {
            return;
        }
        let Some(id_end) = frame.get(object.clone()).and_then(id_end) else {
            return;
        };
        let ch = match self.channels.get_mut(channel) {
            Some(ch) => ch,
            None => {
                let name: Arc<str> = channel.into();
                self.bytes += CHANNEL_COST + name.len();
                let ch = Channel {
                    name: name.clone(),
                    events: VecDeque::new(),
                    records: 0,
                };
                self.channels.entry(name).or_insert(ch)
            }
        };
        let kept = Kept {
            at,
            object: frame.slice(object),
            id_end,
            cost: frame.len() + KEPT_COST,
        };
        self.bytes += kept.cost;
        self.kept += 1;
        // Published before events already kept: it reached this shard late.
        let later = ch.events.iter().rev().take_while(|k| k.at > at).count();
        ch.events.insert(ch.events.len() - later, kept);
        ch.records += 1;
        self.order.push_back(Order {
            at,
            channel: ch.name.clone(),
        });
        while ch.events.len() > self.bounds.size {
            if let Some(gone) = ch.events.pop_front() {
                self.bytes -= gone.cost;
                self.kept -= 1;
                self.stale += 1;
            }
        }
        self.trim(at);
        self.compact();
    }

    /// Drops what is older than the age bound or over the budget, oldest
    /// first across channels.
    pub fn trim(&mut self, now: Instant) {
        let max_age = self.bounds.max_age;
        let expired =
            |at: Instant| !max_age.is_zero() && now.saturating_duration_since(at) > max_age;
        while let Some(o) = self.order.front() {
            if !expired(o.at) && self.bytes() <= self.bounds.max_bytes {
                break;
            }
            if let Some(ch) = self.channels.get_mut(&*o.channel) {
                if ch.stale() > 0 {
                    self.stale -= 1;
                } else if let Some(gone) = ch.events.pop_front() {
                    self.bytes -= gone.cost;
                    self.kept -= 1;
                }
                ch.records -= 1;
                if ch.records == 0 {
                    self.bytes -= CHANNEL_COST + ch.name.len();
                    self.channels.remove(&*o.channel);
                }
            }
            self.order.pop_front();
        }
        if self.order.is_empty() && self.order.capacity() > 64 {
            self.order.shrink_to(64);
        }
    }

    /// Drops the stale records of the order queue once they outnumber the
    /// kept events: each channel's oldest ones.
    fn compact(&mut self) {
        if self.stale <= self.kept + STALE_SLACK {
            return;
        }
        let mut drop: HashMap<Arc<str>, usize> = self
            .channels
            .values()
            .filter(|c| c.stale() > 0)
            .map(|c| (c.name.clone(), c.stale()))
            .collect();
        self.order.retain(|o| match drop.get_mut(&*o.channel) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
        for (name, _) in drop {
            if let Some(ch) = self.channels.get_mut(&name) {
                ch.records = ch.events.len();
            }
        }
        self.stale = 0;
        if self.order.capacity() > 2 * self.order.len() + 64 {
            self.order.shrink_to(self.order.len() + 64);
        }
    }

    /// `channel`'s events as `q` asks for them (after the age bound is
    /// applied), oldest first.
    pub fn query(&mut self, channel: &str, q: &HistoryQuery, now: Instant) -> HistoryPage {
        self.trim(now);
        let Some(ch) = self.channels.get(channel) else {
            return HistoryPage::default();
        };
        let kept: Vec<(&[u8], &Bytes)> = ch.events.iter().map(|k| (k.id(), &k.object)).collect();
        select(&kept, q)
    }
}

/// The page `q` asks for of a channel's kept events, `(id, object)` oldest
/// first: wherever they are kept (this store, or another's read back).
pub fn select(kept: &[(&[u8], &Bytes)], q: &HistoryQuery) -> HistoryPage {
    let top = kept
        .last()
        .map(|(id, _)| Bytes::copy_from_slice(id))
        .unwrap_or_default();
    let asked: Vec<(&[u8], &Bytes)> = match q.since.as_deref().map(str::as_bytes) {
        None => kept.to_vec(),
        Some(since) => match kept.iter().rposition(|(id, _)| *id == since) {
            Some(i) => kept[i + 1..].to_vec(),
            // Ids begin with their publish time.
            None => kept.iter().filter(|(id, _)| *id > since).copied().collect(),
        },
    };
    let limit = q.limit.unwrap_or(usize::MAX);
    let newest = &asked[asked.len().saturating_sub(limit)..];
    let mut out = Vec::with_capacity(newest.len());
    let mut used = 0;
    for (_, object) in newest {
        let n = object.len() + 1;
        if !out.is_empty() && used + n > q.max_bytes {
            break;
        }
        used += n;
        out.push((*object).clone());
    }
    HistoryPage { events: out, top }
}

/// A RealtimeEvent object's id, if it starts with one.
pub fn object_id(object: &[u8]) -> Option<&[u8]> {
    Some(&object[ID_START..id_end(object)?])
}

/// Where the id of a RealtimeEvent object (`{"id":"<id>",...`) ends. Ids
/// never hold a quote or a backslash.
fn id_end(object: &[u8]) -> Option<usize> {
    let rest = object.strip_prefix(b"{\"id\":\"")?;
    let len = rest.iter().position(|&c| c == b'"')?;
    Some(ID_START + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time `ms` after a fixed start.
    fn t(ms: u64) -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn frame(id: &str, pad: usize) -> (Bytes, std::ops::Range<usize>) {
        let obj = format!(
            "{{\"id\":\"{id}\",\"channel\":\"c\",\"data\":\"{}\"}}",
            "x".repeat(pad)
        );
        let text = format!("42[\"event\",{obj},\"{id}\"]");
        let start = text.find('{').unwrap();
        (Bytes::from(text), start..start + obj.len())
    }

    fn rec(h: &mut History, ch: &str, id: &str, at: u64) {
        let (f, r) = frame(id, 0);
        h.record(ch, &f, r, t(at));
    }

    fn ids(p: &HistoryPage) -> Vec<String> {
        p.events
            .iter()
            .map(|o| {
                let s = std::str::from_utf8(o).unwrap();
                let v: serde_json::Value = serde_json::from_str(s).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn all() -> HistoryQuery {
        HistoryQuery {
            max_bytes: usize::MAX,
            ..Default::default()
        }
    }

    fn bounds(size: usize, max_age_ms: u64, max_bytes: usize) -> HistoryBounds {
        HistoryBounds {
            size,
            max_age: Duration::from_millis(max_age_ms),
            max_bytes,
        }
    }

    /// Query at time `ms`.
    fn at(h: &mut History, ch: &str, q: &HistoryQuery, ms: u64) -> HistoryPage {
        h.query(ch, q, t(ms))
    }

    #[test]
    fn size_bound_per_channel_and_top() {
        let mut h = History::new(bounds(3, 0, 1 << 20));
        for i in 0..5 {
            rec(&mut h, "a", &format!("a{i}"), i);
        }
        rec(&mut h, "b", "b0", 9);
        let p = at(&mut h, "a", &all(), 10);
        assert_eq!(ids(&p), ["a2", "a3", "a4"]);
        assert_eq!(&p.top[..], b"a4");
        assert_eq!(ids(&at(&mut h, "b", &all(), 10)), ["b0"]);
        assert_eq!(h.len(), 4);
        let none = at(&mut h, "nothing", &all(), 10);
        assert!(none.events.is_empty() && none.top.is_empty());
    }

    #[test]
    fn objects_are_slices_of_the_frame() {
        let mut h = History::new(bounds(3, 0, 1 << 20));
        let (f, r) = frame("x1", 4);
        h.record("a", &f, r.clone(), t(1));
        let p = at(&mut h, "a", &all(), 1);
        assert_eq!(&p.events[0][..], &f[r.clone()]);
        assert_eq!(p.events[0].as_ptr(), f[r].as_ptr(), "no copy");
        // Not a RealtimeEvent object: ignored.
        let presence = Bytes::from_static(b"42[\"presence\",{\"channel\":\"a\"}]");
        let start = presence.iter().position(|&c| c == b'{').unwrap();
        h.record("a", &presence, start..presence.len() - 1, t(2));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn since_and_limit() {
        let mut h = History::new(bounds(10, 0, 1 << 20));
        for i in 0..6 {
            rec(&mut h, "a", &format!("0{i}"), i);
        }
        let q = |limit: Option<usize>, since: Option<&str>| HistoryQuery {
            limit,
            since: since.map(str::to_string),
            max_bytes: usize::MAX,
        };
        assert_eq!(ids(&at(&mut h, "a", &q(Some(2), None), 9)), ["04", "05"]);
        assert_eq!(ids(&at(&mut h, "a", &q(None, Some("03")), 9)), ["04", "05"]);
        assert_eq!(ids(&at(&mut h, "a", &q(Some(1), Some("01")), 9)), ["05"]);
        assert!(ids(&at(&mut h, "a", &q(None, Some("05")), 9)).is_empty());
        // An id no longer kept: the events whose id sorts after it.
        assert_eq!(
            ids(&at(&mut h, "a", &q(None, Some("035")), 9)),
            ["04", "05"]
        );
        assert_eq!(ids(&at(&mut h, "a", &q(None, Some("")), 9)).len(), 6);
        assert!(ids(&at(&mut h, "a", &q(None, Some("zz")), 9)).is_empty());
        assert_eq!(&at(&mut h, "a", &q(Some(1), Some("05")), 9).top[..], b"05");
    }

    #[test]
    fn answer_stops_at_max_bytes_with_the_oldest_asked() {
        let mut h = History::new(bounds(10, 0, 1 << 20));
        for i in 0..4 {
            let (f, r) = frame(&format!("0{i}"), 100);
            h.record("a", &f, r, t(i));
        }
        let q = HistoryQuery {
            limit: None,
            since: Some("00".into()),
            max_bytes: 300,
        };
        let p = at(&mut h, "a", &q, 9);
        assert_eq!(ids(&p), ["01", "02"]);
        assert_eq!(&p.top[..], b"03");
        let one = HistoryQuery {
            max_bytes: 1,
            ..all()
        };
        assert_eq!(
            ids(&at(&mut h, "a", &one, 9)),
            ["00"],
            "the first always fits"
        );
    }

    #[test]
    fn age_bound_and_an_idle_channel() {
        let mut h = History::new(bounds(10, 100, 1 << 20));
        rec(&mut h, "a", "a0", 0);
        rec(&mut h, "b", "b0", 50);
        rec(&mut h, "a", "a1", 120);
        assert_eq!(ids(&at(&mut h, "a", &all(), 120)), ["a1"]);
        assert_eq!(ids(&at(&mut h, "b", &all(), 149)), ["b0"]);
        assert!(at(&mut h, "b", &all(), 151).events.is_empty());
        h.trim(t(1000));
        assert!(h.is_empty());
        assert_eq!(h.channels(), 0);
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn budget_drops_the_shards_oldest_first() {
        let (f, _) = frame("00", 200);
        let per = f.len() + KEPT_COST + ORDER_COST;
        let budget = 2 * (CHANNEL_COST + 1) + 5 * per;
        let mut h = History::new(bounds(100, 0, budget));
        rec_pad(&mut h, "a", "a0", 0);
        rec_pad(&mut h, "b", "b0", 1);
        for i in 1..10 {
            rec_pad(&mut h, "a", &format!("a{i}"), 1 + i);
        }
        assert!(h.bytes() <= budget, "{} > {budget}", h.bytes());
        assert!(
            at(&mut h, "b", &all(), 20).events.is_empty(),
            "b0 was the oldest"
        );
        let a = ids(&at(&mut h, "a", &all(), 20));
        assert_eq!(a.last().map(String::as_str), Some("a9"));
        assert!(a.len() >= 4, "{a:?}");
    }

    fn rec_pad(h: &mut History, ch: &str, id: &str, at: u64) {
        let (f, r) = frame(id, 200);
        h.record(ch, &f, r, t(at));
    }

    #[test]
    fn stale_records_are_compacted() {
        let mut h = History::new(bounds(2, 0, usize::MAX));
        rec(&mut h, "quiet", "q0", 0);
        for i in 0..10_000u64 {
            rec(&mut h, "hot", &format!("h{i:05}"), i);
        }
        assert_eq!(h.len(), 3);
        assert!(h.order.len() <= 3 + STALE_SLACK + 1, "{}", h.order.len());
        assert_eq!(ids(&at(&mut h, "quiet", &all(), 0)), ["q0"]);
        assert_eq!(ids(&at(&mut h, "hot", &all(), 0)), ["h09998", "h09999"]);
    }

    #[test]
    fn publish_order_even_when_an_event_arrives_late() {
        let mut h = History::new(bounds(3, 0, 1 << 20));
        rec(&mut h, "a", "a1", 1);
        rec(&mut h, "a", "a3", 3);
        rec(&mut h, "a", "b2", 2);
        let p = at(&mut h, "a", &all(), 9);
        assert_eq!(ids(&p), ["a1", "b2", "a3"]);
        assert_eq!(&p.top[..], b"a3");
        let since = HistoryQuery {
            since: Some("b2".into()),
            ..all()
        };
        assert_eq!(ids(&at(&mut h, "a", &since, 9)), ["a3"]);
        // The size bound drops the earliest published, not the earliest received.
        rec(&mut h, "a", "b0", 0);
        assert_eq!(ids(&at(&mut h, "a", &all(), 9)), ["a1", "b2", "a3"]);
        rec(&mut h, "a", "a4", 4);
        assert_eq!(ids(&at(&mut h, "a", &all(), 9)), ["b2", "a3", "a4"]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn zero_size_keeps_nothing() {
        let mut h = History::new(bounds(0, 0, 1 << 20));
        rec(&mut h, "a", "a0", 0);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
    }
}

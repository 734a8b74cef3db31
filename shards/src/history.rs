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
//! Three bounds, all enforced on every push: events per channel
//! (`--history-size`), age (the recovery window; none when it is 0), and
//! the shard's bytes (`--history-bytes`), which drops the shard's oldest
//! events first, whatever their channel. The binary attachments of an event
//! are not kept: its object names them by their placeholders.
//!
//! Eviction in age order across channels uses one queue of every recorded
//! event in record order (`Order`). An event that leaves its channel
//! another way (its channel's size bound) stays in that queue as a stale
//! record until it reaches the front or the queue is compacted, which
//! happens once stale records outnumber kept events: every push stays
//! amortised O(1) and the queue at most twice as long as what is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

/// What one shard's history may hold.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Events kept per channel; 0 keeps none.
    pub size: usize,
    /// Events older than this (ms) are dropped; 0: no age bound.
    pub max_age_ms: u64,
    /// The shard's history (events, their frames and bookkeeping) is kept
    /// below this many bytes.
    pub max_bytes: usize,
}

/// A question to a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// At most this many events: the newest of those asked for.
    pub limit: Option<usize>,
    /// Only events recorded after the one with this id. An id no longer
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
    /// Its place in the shard's record order.
    seq: u64,
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
}

/// An event in the shard's record order.
struct Order {
    seq: u64,
    at_ms: u64,
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
    next_seq: u64,
    last_ms: u64,
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
            next_seq: 0,
            last_ms: 0,
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

    /// Records the event whose object is `frame[object]` in `channel`'s
    /// history. Anything that is not a RealtimeEvent object is ignored.
    pub fn record(
        &mut self,
        channel: &str,
        frame: &Bytes,
        object: std::ops::Range<usize>,
        now_ms: u64,
    ) {
        if self.bounds.size == 0 {
            return;
        }
        let Some(obj) = frame.get(object.clone()) else {
            return;
        };
        let Some(id_end) = id_end(obj) else {
            return;
        };
        let now_ms = now_ms.max(self.last_ms);
        self.last_ms = now_ms;
        let seq = self.next_seq;
        self.next_seq += 1;
        if !self.channels.contains_key(channel) {
            let name: Arc<str> = channel.into();
            self.bytes += CHANNEL_COST + name.len();
            let ch = Channel {
                name: name.clone(),
                events: VecDeque::new(),
            };
            self.channels.insert(name, ch);
        }
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let cost = frame.len() + KEPT_COST;
        ch.events.push_back(Kept {
            seq,
            object: frame.slice(object),
            id_end,
            cost,
        });
        self.order.push_back(Order {
            seq,
            at_ms: now_ms,
            channel: ch.name.clone(),
        });
        self.bytes += cost;
        self.kept += 1;
        while ch.events.len() > self.bounds.size {
            if let Some(gone) = ch.events.pop_front() {
                self.bytes -= gone.cost;
                self.kept -= 1;
                self.stale += 1;
            }
        }
        self.trim(now_ms);
        self.compact();
    }

    /// Drops what is older than the age bound or over the budget, oldest
    /// first across channels.
    pub fn trim(&mut self, now_ms: u64) {
        let oldest = match self.bounds.max_age_ms {
            0 => 0,
            age => now_ms.saturating_sub(age),
        };
        while let Some(o) = self.order.front() {
            let live = is_live(&self.channels, o);
            if live && o.at_ms >= oldest && self.bytes() <= self.bounds.max_bytes {
                break;
            }
            if live {
                // The oldest record kept is its channel's oldest event:
                // a channel's events leave from its front only.
                if let Some(ch) = self.channels.get_mut(&*o.channel) {
                    if let Some(gone) = ch.events.pop_front() {
                        self.bytes -= gone.cost;
                        self.kept -= 1;
                    }
                    if ch.events.is_empty() {
                        self.bytes -= CHANNEL_COST + ch.name.len();
                        self.channels.remove(&*o.channel);
                    }
                }
            } else {
                self.stale -= 1;
            }
            self.order.pop_front();
        }
        if self.order.is_empty() && self.order.capacity() > 64 {
            self.order.shrink_to(64);
        }
    }

    /// Drops the stale records of the order queue once they outnumber the
    /// kept events.
    fn compact(&mut self) {
        if self.stale <= self.kept + STALE_SLACK {
            return;
        }
        let channels = &self.channels;
        self.order.retain(|o| is_live(channels, o));
        self.stale = 0;
        if self.order.capacity() > 2 * self.order.len() + 64 {
            self.order.shrink_to(self.order.len() + 64);
        }
    }

    /// `channel`'s events as `q` asks for them (after the age bound is
    /// applied), oldest first.
    pub fn query(&mut self, channel: &str, q: &HistoryQuery, now_ms: u64) -> HistoryPage {
        self.trim(now_ms.max(self.last_ms));
        let Some(ch) = self.channels.get(channel) else {
            return HistoryPage::default();
        };
        let events = &ch.events;
        let top = events
            .back()
            .map(|k| k.object.slice(ID_START..k.id_end))
            .unwrap_or_default();
        let asked: Vec<&Kept> = match q.since.as_deref().map(str::as_bytes) {
            None => events.iter().collect(),
            Some(since) => match events.iter().rposition(|k| k.id() == since) {
                Some(i) => events.range(i + 1..).collect(),
                None => events.iter().filter(|k| k.id() > since).collect(),
            },
        };
        let limit = q.limit.unwrap_or(usize::MAX);
        let newest = &asked[asked.len().saturating_sub(limit)..];
        let mut out = Vec::with_capacity(newest.len());
        let mut used = 0;
        for k in newest {
            let n = k.object.len() + 1;
            if !out.is_empty() && used + n > q.max_bytes {
                break;
            }
            used += n;
            out.push(k.object.clone());
        }
        HistoryPage { events: out, top }
    }
}

/// Whether an order record's event is still kept: its channel's events
/// leave from the front, so it is kept unless it is older than the front.
fn is_live(channels: &HashMap<Arc<str>, Channel>, o: &Order) -> bool {
    channels
        .get(&*o.channel)
        .and_then(|c| c.events.front())
        .is_some_and(|k| k.seq <= o.seq)
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
        h.record(ch, &f, r, at);
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
            max_age_ms,
            max_bytes,
        }
    }

    #[test]
    fn size_bound_per_channel_and_top() {
        let mut h = History::new(bounds(3, 0, 1 << 20));
        for i in 0..5 {
            rec(&mut h, "a", &format!("a{i}"), i);
        }
        rec(&mut h, "b", "b0", 9);
        let p = h.query("a", &all(), 10);
        assert_eq!(ids(&p), ["a2", "a3", "a4"]);
        assert_eq!(&p.top[..], b"a4");
        assert_eq!(ids(&h.query("b", &all(), 10)), ["b0"]);
        assert_eq!(h.len(), 4);
        let none = h.query("nothing", &all(), 10);
        assert!(none.events.is_empty() && none.top.is_empty());
    }

    #[test]
    fn objects_are_slices_of_the_frame() {
        let mut h = History::new(bounds(3, 0, 1 << 20));
        let (f, r) = frame("x1", 4);
        h.record("a", &f, r.clone(), 1);
        let p = h.query("a", &all(), 1);
        assert_eq!(&p.events[0][..], &f[r.clone()]);
        assert_eq!(p.events[0].as_ptr(), f[r].as_ptr(), "no copy");
        // Not a RealtimeEvent object: ignored.
        let presence = Bytes::from_static(b"42[\"presence\",{\"channel\":\"a\"}]");
        let start = presence.iter().position(|&c| c == b'{').unwrap();
        h.record("a", &presence, start..presence.len() - 1, 2);
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
        assert_eq!(ids(&h.query("a", &q(Some(2), None), 9)), ["04", "05"]);
        assert_eq!(ids(&h.query("a", &q(None, Some("03")), 9)), ["04", "05"]);
        assert_eq!(ids(&h.query("a", &q(Some(1), Some("01")), 9)), ["05"]);
        assert!(ids(&h.query("a", &q(None, Some("05")), 9)).is_empty());
        // An id no longer kept: the events whose id sorts after it.
        assert_eq!(ids(&h.query("a", &q(None, Some("035")), 9)), ["04", "05"]);
        assert_eq!(ids(&h.query("a", &q(None, Some("")), 9)).len(), 6);
        assert!(ids(&h.query("a", &q(None, Some("zz")), 9)).is_empty());
        assert_eq!(&h.query("a", &q(Some(1), Some("05")), 9).top[..], b"05");
    }

    #[test]
    fn answer_stops_at_max_bytes_with_the_oldest_asked() {
        let mut h = History::new(bounds(10, 0, 1 << 20));
        for i in 0..4 {
            let (f, r) = frame(&format!("0{i}"), 100);
            h.record("a", &f, r, i);
        }
        let q = HistoryQuery {
            limit: None,
            since: Some("00".into()),
            max_bytes: 300,
        };
        let p = h.query("a", &q, 9);
        assert_eq!(ids(&p), ["01", "02"]);
        assert_eq!(&p.top[..], b"03");
        let one = HistoryQuery {
            max_bytes: 1,
            ..all()
        };
        assert_eq!(ids(&h.query("a", &one, 9)), ["00"], "the first always fits");
    }

    #[test]
    fn age_bound_and_an_idle_channel() {
        let mut h = History::new(bounds(10, 100, 1 << 20));
        rec(&mut h, "a", "a0", 0);
        rec(&mut h, "b", "b0", 50);
        rec(&mut h, "a", "a1", 120);
        assert_eq!(ids(&h.query("a", &all(), 120)), ["a1"]);
        assert_eq!(ids(&h.query("b", &all(), 149)), ["b0"]);
        assert!(h.query("b", &all(), 151).events.is_empty());
        h.trim(1000);
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
            h.query("b", &all(), 20).events.is_empty(),
            "b0 was the oldest"
        );
        let a = ids(&h.query("a", &all(), 20));
        assert_eq!(a.last().map(String::as_str), Some("a9"));
        assert!(a.len() >= 4, "{a:?}");
    }

    fn rec_pad(h: &mut History, ch: &str, id: &str, at: u64) {
        let (f, r) = frame(id, 200);
        h.record(ch, &f, r, at);
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
        assert_eq!(ids(&h.query("quiet", &all(), 0)), ["q0"]);
        assert_eq!(ids(&h.query("hot", &all(), 0)), ["h09998", "h09999"]);
    }

    #[test]
    fn zero_size_keeps_nothing() {
        let mut h = History::new(bounds(0, 0, 1 << 20));
        rec(&mut h, "a", "a0", 0);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
    }
}

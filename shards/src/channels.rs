//! One shard's channel index: which of *this shard's* sockets are members of
//! which channel, and which hold subscriptions (exact or prefix, with an
//! optional filter). Never touches another shard's sockets; the shard asks
//! peers through the mailbox instead.
//!
//! Delivery here is the innermost hot loop: for each recipient it clones a
//! refcounted, already-encoded frame into the recipient's outbox. The only
//! per-recipient work beyond that is the `echo:false` user check and, for a
//! subscription, its filter and the `subscriptionId` suffix of its frame.
//! A publication's `data` stays the publisher's JSON text inside that frame;
//! filters that read it share one parse per publication on this shard.
//! (The publication and its frame are in `publication.rs`.)
//!
//! Over 600 lines with its unit tests (`mod tests`, the last 170 or so).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proto::engineio::Outgoing;

use crate::ids::SocketKey;
use crate::outbox::Outbox;
use crate::publication::{Data, Publication, CLOSE};

/// A socket as the channel index sees it.
pub struct Member {
    pub key: SocketKey,
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    /// The token's `info` claim as raw JSON; `None` shows as `null`.
    pub info: Option<Arc<str>>,
    /// Its frames carry the recovery offset as their last argument.
    pub recover: bool,
    /// Where its deliveries go: the outbox of the session it is attached to.
    outbox: RefCell<Rc<Outbox>>,
    /// Its transport is gone and it waits to be recovered: deliveries skip
    /// it (the shard's recovery log keeps them), `direct` is still accepted.
    detached: Cell<bool>,
    /// Left out of member lists and counts (its presence grace ended).
    hidden: Cell<bool>,
}

impl Member {
    pub fn new(
        key: SocketKey,
        socket_id: Arc<str>,
        user_id: Arc<str>,
        info: Option<Arc<str>>,
        recover: bool,
        outbox: Rc<Outbox>,
    ) -> Self {
        Member {
            key,
            socket_id,
            user_id,
            info,
            recover,
            outbox: RefCell::new(outbox),
            detached: Cell::new(false),
            hidden: Cell::new(false),
        }
    }

    /// The outbox its deliveries go to.
    pub fn outbox(&self) -> Rc<Outbox> {
        self.outbox.borrow().clone()
    }

    /// Queues a packet for it; `false` when it is detached or its queue
    /// refused it (closed, or over its bound).
    pub fn push(&self, p: Outgoing, attachments: &[Bytes]) -> bool {
        !self.detached.get() && self.outbox.borrow().push_all(p, attachments)
    }

    /// Queues its frame of `p` (a presence frame as such, see
    /// [`Outbox::push_presence`]); `false` as [`Member::push`].
    pub fn deliver(&self, p: &Publication) -> bool {
        if self.detached.get() {
            return false;
        }
        let frame = p.frame_for(self.recover);
        match p.presence {
            Some(tag) => self.outbox.borrow().push_presence(frame, tag),
            None => self.outbox.borrow().push_all(frame, &p.attachments),
        }
    }

    /// Its transport is gone: deliveries skip it until [`Member::attach`].
    pub fn detach(&self) {
        self.detached.set(true);
    }

    pub fn is_detached(&self) -> bool {
        self.detached.get()
    }

    /// Attaches it to a (new) session's outbox and resumes deliveries.
    pub fn attach(&self, outbox: Rc<Outbox>) {
        *self.outbox.borrow_mut() = outbox;
        self.detached.set(false);
        self.hidden.set(false);
    }

    pub fn set_hidden(&self, hidden: bool) {
        self.hidden.set(hidden);
    }

    pub fn is_hidden(&self) -> bool {
        self.hidden.get()
    }
}

/// A member as reported to a `members` query (Send: crosses shards).
#[derive(Debug, Clone)]
pub struct MemberView {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub info: Option<Arc<str>>,
    pub joined_at: u64,
}

/// Decides whether a publication matches a subscription's filter.
pub trait SubFilter {
    fn matches(&self, event: &str, data: &Data<'_>) -> bool;
}

/// What a subscription listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Exact(Arc<str>),
    Prefix(Arc<str>),
}

impl Topic {
    pub fn matches(&self, channel: &str) -> bool {
        match self {
            Topic::Exact(c) => &**c == channel,
            Topic::Prefix(p) => channel.starts_with(&**p),
        }
    }
}

/// One subscription held by a local socket.
pub struct Subscription {
    pub id: Arc<str>,
    pub member: Rc<Member>,
    pub topic: Topic,
    pub filter: Option<Rc<dyn SubFilter>>,
    /// `,"subscriptionId":"<id>"}`, inserted in place of the object's `}`.
    suffix: Bytes,
    /// The shard's recovery log position when it was made.
    log_pos: u64,
}

/// One membership: the member, when it joined (ms) and the shard's
/// recovery log position then (a replay never gives it older frames).
struct Joined {
    m: Rc<Member>,
    at: u64,
    log_pos: u64,
}

#[derive(Default)]
struct ChannelMembers {
    list: Vec<Joined>,
    pos: HashMap<u64, usize>,
    /// How many in `list` are hidden (detached past their presence grace).
    hidden: usize,
}

impl ChannelMembers {
    fn shown(&self) -> usize {
        self.list.len().saturating_sub(self.hidden)
    }
}

/// The channel and subscription index of one shard.
#[derive(Default)]
pub struct Channels {
    channels: HashMap<Arc<str>, ChannelMembers>,
    exact_subs: HashMap<Arc<str>, Vec<Subscription>>,
    prefix_subs: Vec<Subscription>,
}

/// Whether a change made the shard gain or lose interest in a topic key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterestChange {
    None,
    Gained(Topic),
    Lost(Topic),
}

impl Channels {
    /// Adds a member; `None` when it already was one (no second presence).
    pub fn join(
        &mut self,
        channel: &Arc<str>,
        m: &Rc<Member>,
        now_ms: u64,
        log_pos: u64,
    ) -> Option<InterestChange> {
        let had_interest = self.interest_in(channel);
        let ch = self.channels.entry(channel.clone()).or_default();
        if ch.pos.contains_key(&m.key.seq) {
            return None;
        }
        ch.pos.insert(m.key.seq, ch.list.len());
        ch.list.push(Joined {
            m: m.clone(),
            at: now_ms,
            log_pos,
        });
        Some(if had_interest {
            InterestChange::None
        } else {
            InterestChange::Gained(Topic::Exact(channel.clone()))
        })
    }

    /// Removes a member; `None` when it was not one.
    pub fn leave(&mut self, channel: &str, key: SocketKey) -> Option<InterestChange> {
        let ch = self.channels.get_mut(channel)?;
        let i = ch.pos.remove(&key.seq)?;
        let gone = ch.list.swap_remove(i);
        if gone.m.is_hidden() {
            ch.hidden = ch.hidden.saturating_sub(1);
        }
        if let Some(moved) = ch.list.get(i) {
            ch.pos.insert(moved.m.key.seq, i);
        }
        if ch.list.is_empty() {
            let (name, _) = self.channels.remove_entry(channel)?;
            if !self.interest_in(&name) {
                return Some(InterestChange::Lost(Topic::Exact(name)));
            }
        }
        Some(InterestChange::None)
    }

    /// When (ms) `key` joined `channel`, if it is a member.
    pub fn joined_at(&self, channel: &str, key: SocketKey) -> Option<u64> {
        let ch = self.channels.get(channel)?;
        ch.list.get(*ch.pos.get(&key.seq)?).map(|j| j.at)
    }

    /// Members shown in lists and counts (hidden ones left out).
    pub fn member_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, ChannelMembers::shown)
    }

    pub fn members(&self, channel: &str) -> Vec<MemberView> {
        self.channels.get(channel).map_or_else(Vec::new, |c| {
            c.list
                .iter()
                .filter(|j| !j.m.is_hidden())
                .map(|j| MemberView {
                    socket_id: j.m.socket_id.clone(),
                    user_id: j.m.user_id.clone(),
                    info: j.m.info.clone(),
                    joined_at: j.at,
                })
                .collect()
        })
    }

    /// Every channel with local members shown, and how many.
    pub fn channel_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.channels
            .iter()
            .map(|(k, v)| (k.clone(), v.shown()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Hides or shows a member in `channel`'s lists and counts (after
    /// [`Member::set_hidden`] changed).
    pub fn note_hidden(&mut self, channel: &str, hidden: bool) {
        if let Some(c) = self.channels.get_mut(channel) {
            c.hidden = if hidden {
                c.hidden + 1
            } else {
                c.hidden.saturating_sub(1)
            };
        }
    }

    pub fn subscribe(
        &mut self,
        id: Arc<str>,
        member: Rc<Member>,
        topic: Topic,
        filter: Option<Rc<dyn SubFilter>>,
        log_pos: u64,
    ) -> InterestChange {
        let mut suffix = BytesMut::with_capacity(id.len() + 22);
        suffix.extend_from_slice(b",\"subscriptionId\":");
        suffix.extend_from_slice(serde_json::to_string(&*id).unwrap_or_default().as_bytes());
        suffix.extend_from_slice(b"}");
        let sub = Subscription {
            id,
            member,
            topic: topic.clone(),
            filter,
            suffix: suffix.freeze(),
            log_pos,
        };
        match &topic {
            Topic::Exact(c) => {
                let had = self.interest_in(c);
                self.exact_subs.entry(c.clone()).or_default().push(sub);
                if had {
                    InterestChange::None
                } else {
                    InterestChange::Gained(topic)
                }
            }
            Topic::Prefix(p) => {
                let had = self.prefix_subs.iter().any(|s| s.topic == topic);
                let _ = p;
                self.prefix_subs.push(sub);
                if had {
                    InterestChange::None
                } else {
                    InterestChange::Gained(topic)
                }
            }
        }
    }

    /// Removes subscription `id` of socket `key`; `None` if it holds no such one.
    pub fn unsubscribe(
        &mut self,
        key: SocketKey,
        id: &str,
        topic: &Topic,
    ) -> Option<InterestChange> {
        let is_it = |s: &Subscription| s.member.key == key && &*s.id == id;
        match topic {
            Topic::Exact(c) => {
                let list = self.exact_subs.get_mut(&**c)?;
                let i = list.iter().position(is_it)?;
                list.swap_remove(i);
                if list.is_empty() {
                    self.exact_subs.remove(&**c);
                    if !self.interest_in(c) {
                        return Some(InterestChange::Lost(topic.clone()));
                    }
                }
            }
            Topic::Prefix(_) => {
                let i = self.prefix_subs.iter().position(is_it)?;
                self.prefix_subs.swap_remove(i);
                if !self.prefix_subs.iter().any(|s| &s.topic == topic) {
                    return Some(InterestChange::Lost(topic.clone()));
                }
            }
        }
        Some(InterestChange::None)
    }

    fn interest_in(&self, channel: &str) -> bool {
        self.channels.contains_key(channel) || self.exact_subs.contains_key(channel)
    }

    /// Delivers a publication to this shard's recipients, written at once or
    /// queued as the shard's pace says ([`crate::outbox::fan_out`]); returns
    /// how many deliveries were made.
    pub fn deliver(&self, p: &Publication) -> usize {
        let members = self.channels.get(&*p.channel).map_or(0, |c| c.list.len());
        let subs = self.exact_subs.get(&*p.channel).map_or(0, |s| s.len());
        crate::outbox::fan_out(members + subs, || self.deliver_now(p))
    }

    fn deliver_now(&self, p: &Publication) -> usize {
        let mut n = 0;
        let skip = |m: &Member| p.skip_user.as_deref().is_some_and(|u| *u == *m.user_id);
        if let Some(ch) = self.channels.get(&*p.channel) {
            for j in &ch.list {
                if !skip(&j.m) && j.m.deliver(p) {
                    n += 1;
                }
            }
        }
        if p.presence.is_some() {
            return n;
        }
        let parts = SubParts::new(p);
        let data = Data::new(p.data());
        for s in self.subscriptions_for(&p.channel) {
            if skip(&s.member) || !s.filter.as_ref().is_none_or(|f| f.matches(&p.event, &data)) {
                continue;
            }
            if s.member.push(parts.frame(s), &p.attachments) {
                n += 1;
            }
        }
        n
    }

    fn subscriptions_for<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = &'a Subscription> {
        let exact = self.exact_subs.get(channel).into_iter().flatten();
        let prefixed = self
            .prefix_subs
            .iter()
            .filter(move |s| s.topic.matches(channel));
        exact.chain(prefixed)
    }

    /// What member `m` would have been given of a publication logged at
    /// `pos`, had it been attached: its frames (membership and
    /// subscriptions, as [`Channels::deliver`] decides them), pushed to `out`.
    pub fn replay_publication(
        &self,
        m: &Member,
        p: &Publication,
        pos: u64,
        out: &mut Vec<(Outgoing, Vec<Bytes>)>,
    ) {
        if p.skip_user.as_deref().is_some_and(|u| *u == *m.user_id) {
            return;
        }
        let member_since = self
            .channels
            .get(&*p.channel)
            .and_then(|c| c.pos.get(&m.key.seq).map(|&i| c.list[i].log_pos));
        if member_since.is_some_and(|since| since <= pos) && !own_leave(m, p) {
            out.push((p.frame_for(m.recover), p.attachments.clone()));
        }
        if p.presence.is_some() {
            return;
        }
        let parts = SubParts::new(p);
        let data = Data::new(p.data());
        for s in self.subscriptions_for(&p.channel) {
            if s.member.key == m.key
                && s.log_pos <= pos
                && s.filter.as_ref().is_none_or(|f| f.matches(&p.event, &data))
            {
                out.push((parts.frame(s), p.attachments.clone()));
            }
        }
    }
}

/// Whether `p` is the presence `leave` of `m` itself (sent when its presence
/// grace ended while it was away): a member is never sent its own leave.
fn own_leave(m: &Member, p: &Publication) -> bool {
    if p.presence.is_none() {
        return false;
    }
    let needle = format!(
        "\"type\":\"leave\",\"member\":{{\"socketId\":\"{}\"",
        m.socket_id
    );
    p.object()
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The shared parts of one publication's subscription frames: every
/// subscription's frame is the head, its own `subscriptionId` insert, and a
/// tail, gathered by the writer: no copy per delivery.
struct SubParts {
    head: Bytes,
    tail_offset: Bytes,
}

impl SubParts {
    fn new(p: &Publication) -> Self {
        let end = p.obj_end.min(p.text.len());
        SubParts {
            head: p.text.slice(..end.saturating_sub(1)),
            tail_offset: p.text.slice(end..),
        }
    }

    fn frame(&self, s: &Subscription) -> Outgoing {
        let tail = if s.member.recover {
            self.tail_offset.clone()
        } else {
            Bytes::from_static(CLOSE)
        };
        Outgoing::TextParts(self.head.clone(), s.suffix.clone(), tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publication::object_end;

    fn member(seq: u64, user: &str) -> Rc<Member> {
        Rc::new(Member::new(
            SocketKey { shard: 0, seq },
            format!("i-0-{seq:x}").into(),
            user.into(),
            None,
            false,
            Rc::new(Outbox::new(100, usize::MAX)),
        ))
    }

    fn publication(channel: &str, skip: Option<&str>) -> Publication {
        Publication {
            channel: channel.into(),
            event: "m".into(),
            text: Bytes::from_static(b"42[\"event\",{\"x\":1}]"),
            attachments: vec![],
            data: 0..0,
            skip_user: skip.map(Into::into),
            presence: None,
            obj_end: 18,
        }
    }

    #[test]
    fn join_twice_and_leave() {
        let mut c = Channels::default();
        let a = member(1, "u");
        let ch: Arc<str> = "c".into();
        assert_eq!(
            c.join(&ch, &a, 1, 0),
            Some(InterestChange::Gained(Topic::Exact(ch.clone())))
        );
        assert_eq!(c.join(&ch, &a, 2, 0), None);
        let b = member(2, "v");
        assert_eq!(c.join(&ch, &b, 3, 0), Some(InterestChange::None));
        assert_eq!(c.member_count("c"), 2);
        // The first join's time is kept, a second join changes nothing.
        assert_eq!(c.joined_at("c", a.key), Some(1));
        assert_eq!(c.joined_at("c", b.key), Some(3));
        assert_eq!(c.leave("c", a.key), Some(InterestChange::None));
        assert_eq!(c.leave("c", a.key), None);
        assert_eq!(c.joined_at("c", a.key), None);
        assert_eq!(
            c.joined_at("c", b.key),
            Some(3),
            "moved by the swap, same time"
        );
        assert_eq!(c.members("c")[0].socket_id, b.socket_id);
        assert_eq!(
            c.leave("c", b.key),
            Some(InterestChange::Lost(Topic::Exact(ch)))
        );
    }

    #[test]
    fn deliver_skips_user_and_patches_subscriptions() {
        let mut c = Channels::default();
        let a = member(1, "u");
        let b = member(2, "v");
        let ch: Arc<str> = "chat:1".into();
        c.join(&ch, &a, 0, 0);
        c.join(&ch, &b, 0, 0);
        c.subscribe(
            "s1".into(),
            b.clone(),
            Topic::Prefix("chat:".into()),
            None,
            0,
        );
        assert_eq!(c.deliver(&publication("chat:1", Some("u"))), 2);
        assert!(a.outbox().is_empty());
        let mut got = Vec::new();
        b.outbox().drain_into(&mut got, 10);
        assert_eq!(
            got[0],
            Outgoing::Text(Bytes::from_static(b"42[\"event\",{\"x\":1}]"))
        );
        let mut joined = Vec::new();
        proto::engineio::encode_payload([&got[1]], &mut joined);
        assert_eq!(
            joined,
            b"42[\"event\",{\"x\":1,\"subscriptionId\":\"s1\"}]".to_vec()
        );
    }

    /// Records what its filter saw of `data`.
    struct Seen(std::cell::RefCell<Vec<(Vec<u8>, *const serde_json::Value)>>);

    impl SubFilter for Seen {
        fn matches(&self, _event: &str, data: &Data<'_>) -> bool {
            let v = data.value();
            self.0
                .borrow_mut()
                .push((data.raw().to_vec(), v as *const _));
            v["k"] == 1
        }
    }

    #[test]
    fn filters_read_raw_data_and_share_one_parse() {
        let mut c = Channels::default();
        let (a, b) = (member(1, "u"), member(2, "v"));
        let seen = Rc::new(Seen(Default::default()));
        for (id, m) in [("s1", &a), ("s2", &b)] {
            let f: Rc<dyn SubFilter> = seen.clone();
            c.subscribe(id.into(), m.clone(), Topic::Exact("c".into()), Some(f), 0);
        }
        let text = br#"42["event",{"data":{"z":1.50,"k":1,"big":12345678901234567890123},"ts":1}]"#;
        let start = text.windows(7).position(|w| w == b"\"data\":").unwrap() + 7;
        let end = text.windows(5).position(|w| w == b",\"ts\"").unwrap();
        let mut p = publication("c", None);
        p.text = Bytes::from_static(text);
        p.obj_end = object_end(text);
        p.data = start..end;
        assert_eq!(c.deliver(&p), 2);
        let seen = seen.0.borrow();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].0,
            br#"{"z":1.50,"k":1,"big":12345678901234567890123}"#.to_vec()
        );
        assert_eq!(seen[0].1, seen[1].1, "one parse per delivery run");
        let mut got = Vec::new();
        a.outbox().drain_into(&mut got, 10);
        let mut joined = Vec::new();
        proto::engineio::encode_payload([&got[0]], &mut joined);
        assert!(joined.starts_with(&text[..text.len() - 2]));
        assert_eq!(publication("c", None).data(), b"null");
    }

    #[test]
    fn replay_follows_membership_and_subscriptions() {
        let mut c = Channels::default();
        let (a, b) = (member(1, "u"), member(2, "v"));
        let ch: Arc<str> = "chat:1".into();
        c.join(&ch, &a, 0, 5);
        c.subscribe(
            "s1".into(),
            a.clone(),
            Topic::Prefix("chat:".into()),
            None,
            7,
        );
        c.join(&ch, &b, 0, 0);
        let p = publication("chat:1", None);
        let mut out = Vec::new();
        c.replay_publication(&a, &p, 4, &mut out);
        assert!(out.is_empty(), "logged before it joined");
        // Joined when the log's next position was 5: the entry logged at 5
        // came after the join.
        c.replay_publication(&a, &p, 5, &mut out);
        assert_eq!(out.len(), 1, "a member, the subscription came later");
        out.clear();
        c.replay_publication(&a, &p, 7, &mut out);
        assert_eq!(
            out.len(),
            2,
            "the subscription made at 7 gets the entry logged at 7"
        );
        out.clear();
        c.replay_publication(&a, &publication("chat:1", Some("u")), 8, &mut out);
        assert!(out.is_empty(), "echo:false");
    }

    #[test]
    fn hidden_members_are_left_out_of_lists() {
        let mut c = Channels::default();
        let (a, b) = (member(1, "u"), member(2, "v"));
        let ch: Arc<str> = "c".into();
        c.join(&ch, &a, 0, 0);
        c.join(&ch, &b, 0, 0);
        a.set_hidden(true);
        c.note_hidden("c", true);
        assert_eq!(c.member_count("c"), 1);
        assert_eq!(c.members("c").len(), 1);
        assert_eq!(c.channel_counts(), vec![(ch.clone(), 1)]);
        c.leave("c", a.key);
        assert_eq!(c.member_count("c"), 1);
    }
}

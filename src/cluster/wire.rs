//! The format of what crosses Redis between instances: one binary envelope
//! per PUBLISH, length-prefixed fields, no per-recipient data. A publication
//! crosses as the same encoded frame the publishing instance delivers
//! locally, so a receiving instance never re-encodes it; its `data` crosses
//! as where the publisher's text sits in that frame, for the receiver's
//! filters.

use std::sync::Arc;

use bytes::Bytes;
use shards::{PresenceKind, PresenceTag, Publication};

const MAGIC: u8 = b'S';
/// 2: a publication's `data` is a span of its frame (1 carried it re-encoded).
/// 3: a presence publication carries its coalescing tag. Version 2 is still
/// read (during a rolling upgrade, and from history streams it wrote).
const VERSION: u8 = 3;
const KIND_PUBLISH: u8 = 1;
const KIND_DIRECT_REQ: u8 = 2;
const KIND_DIRECT_RES: u8 = 3;
const KIND_FORGET: u8 = 4;
const KIND_CONTROL: u8 = 5;

/// One message between instances.
pub enum Envelope {
    /// A publication on a channel; `seq` is unique per origin instance, so a
    /// receiver that gets it twice (exact and pattern subscription) drops one.
    Publish {
        origin: String,
        seq: u64,
        p: Arc<Publication>,
    },
    /// A direct message for socket `(shard, seq)` of the receiving instance;
    /// answered with `DirectRes { req }` on the origin's inbox.
    DirectReq {
        origin: String,
        req: u64,
        shard: usize,
        seq: u64,
        text: Bytes,
        attachments: Vec<Bytes>,
    },
    DirectRes {
        req: u64,
        ok: bool,
    },
    /// Socket `(shard, seq)` of the receiving instance was recovered by
    /// another instance: let it go without presence, answer nothing for it.
    Forget {
        shard: usize,
        seq: u64,
    },
    /// An administrative action for socket `(shard, seq)` of the receiving
    /// instance (`seq` 0: the instance as a whole); `body` is the
    /// application's. Routed and answered like `DirectReq`.
    Control {
        origin: String,
        req: u64,
        shard: usize,
        seq: u64,
        body: Bytes,
    },
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(128));
        w.0.extend_from_slice(&[MAGIC, VERSION]);
        match self {
            Envelope::Publish { origin, seq, p } => {
                w.0.push(KIND_PUBLISH);
                w.bytes(origin.as_bytes());
                w.u64(*seq);
                w.bytes(p.channel.as_bytes());
                w.bytes(p.event.as_bytes());
                let kind = match p.presence.map(|t| t.kind) {
                    None => 0,
                    Some(PresenceKind::Join) => 1,
                    Some(PresenceKind::Leave) => 2,
                    Some(PresenceKind::Count) => 3,
                };
                w.0.push(kind | (p.skip_user.is_some() as u8) << 2);
                if let Some(t) = p.presence {
                    w.u64(t.key);
                }
                w.bytes(p.skip_user.as_deref().unwrap_or("").as_bytes());
                w.bytes(&p.text);
                w.u64(p.data.start as u64);
                w.u64(p.data.end as u64);
                w.u64(p.attachments.len() as u64);
                for a in &p.attachments {
                    w.bytes(a);
                }
            }
            Envelope::DirectReq {
                origin,
                req,
                shard,
                seq,
                text,
                attachments,
            } => {
                w.0.push(KIND_DIRECT_REQ);
                w.bytes(origin.as_bytes());
                w.u64(*req);
                w.u64(*shard as u64);
                w.u64(*seq);
                w.bytes(text);
                w.u64(attachments.len() as u64);
                for a in attachments {
                    w.bytes(a);
                }
            }
            Envelope::DirectRes { req, ok } => {
                w.0.push(KIND_DIRECT_RES);
                w.u64(*req);
                w.0.push(*ok as u8);
            }
            Envelope::Forget { shard, seq } => {
                w.0.push(KIND_FORGET);
                w.u64(*shard as u64);
                w.u64(*seq);
            }
            Envelope::Control {
                origin,
                req,
                shard,
                seq,
                body,
            } => {
                w.0.push(KIND_CONTROL);
                w.bytes(origin.as_bytes());
                w.u64(*req);
                w.u64(*shard as u64);
                w.u64(*seq);
                w.bytes(body);
            }
        }
        w.0
    }

    /// Decodes an envelope; anything malformed (another cluster's traffic
    /// under the same prefix, a truncated message) is `None` and ignored.
    pub fn decode(b: &[u8]) -> Option<Envelope> {
        let mut r = Reader(b);
        if r.u8()? != MAGIC {
            return None;
        }
        let version = r.u8()?;
        if version != VERSION && version != 2 {
            return None;
        }
        match r.u8()? {
            KIND_PUBLISH => {
                let origin = r.str()?.to_string();
                let seq = r.u64()?;
                let channel = r.str()?;
                let event = r.str()?;
                let flags = r.u8()?;
                let kind = match flags & 3 {
                    _ if version == 2 => None,
                    0 => None,
                    1 => Some(PresenceKind::Join),
                    2 => Some(PresenceKind::Leave),
                    _ => Some(PresenceKind::Count),
                };
                let mut presence = match kind {
                    Some(kind) => Some(PresenceTag {
                        key: r.u64()?,
                        kind,
                    }),
                    None => None,
                };
                let skip = r.str()?;
                let text = Bytes::copy_from_slice(r.bytes()?);
                // Version 2 (an instance not yet upgraded, or an entry it left
                // in a history stream) flags presence without its tag.
                let skip_flag = if version == 2 { 2 } else { 4 };
                if version == 2 && flags & 1 != 0 {
                    presence = Some(crate::frame::presence_tag(&text)?);
                }
                let (start, end) = (r.u64()?, r.u64()?);
                if start > end || end > text.len() as u64 {
                    return None;
                }
                let data = start as usize..end as usize;
                let attachments = Self::attachments(&mut r)?;
                let p = Publication {
                    channel: channel.into(),
                    event: event.into(),
                    obj_end: shards::object_end(&text),
                    text,
                    attachments,
                    data,
                    skip_user: (flags & skip_flag != 0).then(|| skip.into()),
                    presence,
                };
                Some(Envelope::Publish {
                    origin,
                    seq,
                    p: Arc::new(p),
                })
            }
            KIND_DIRECT_REQ => Some(Envelope::DirectReq {
                origin: r.str()?.to_string(),
                req: r.u64()?,
                shard: r.u64()? as usize,
                seq: r.u64()?,
                text: Bytes::copy_from_slice(r.bytes()?),
                attachments: Self::attachments(&mut r)?,
            }),
            KIND_DIRECT_RES => Some(Envelope::DirectRes {
                req: r.u64()?,
                ok: r.u8()? != 0,
            }),
            KIND_FORGET => Some(Envelope::Forget {
                shard: r.u64()? as usize,
                seq: r.u64()?,
            }),
            KIND_CONTROL => Some(Envelope::Control {
                origin: r.str()?.to_string(),
                req: r.u64()?,
                shard: r.u64()? as usize,
                seq: r.u64()?,
                body: Bytes::copy_from_slice(r.bytes()?),
            }),
            _ => None,
        }
    }

    fn attachments(r: &mut Reader<'_>) -> Option<Vec<Bytes>> {
        let n = r.u64()?;
        if n > 10_000 {
            return None;
        }
        (0..n)
            .map(|_| r.bytes().map(Bytes::copy_from_slice))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trip() {
        let p = Publication {
            channel: "chat:1".into(),
            event: "m".into(),
            text: Bytes::from_static(b"451-[\"event\",{\"data\":{\"b\":1.50,\"a\":[1, 2]}}]"),
            attachments: vec![Bytes::from_static(&[1, 2, 3])],
            data: 21..42,
            skip_user: Some("u1".into()),
            presence: None,
            obj_end: 40,
        };
        let e = Envelope::Publish {
            origin: "i1".into(),
            seq: 7,
            p: Arc::new(p),
        };
        let Some(Envelope::Publish { origin, seq, p }) = Envelope::decode(&e.encode()) else {
            panic!("decode failed")
        };
        assert_eq!((origin.as_str(), seq), ("i1", 7));
        assert_eq!(&*p.channel, "chat:1");
        assert_eq!(p.data(), br#"{"b":1.50,"a":[1, 2]}"#);
        assert_eq!(p.skip_user.as_deref(), Some("u1"));
        assert_eq!(p.attachments[0].as_ref(), &[1, 2, 3]);
        assert_eq!(p.presence, None);
    }

    #[test]
    fn version_2_envelopes_still_decode() {
        let text = crate::frame::presence_count("c", 5, 1, None);
        let mut b = vec![MAGIC, 2, KIND_PUBLISH];
        let mut w = Writer(Vec::new());
        w.bytes(b"i");
        w.u64(9);
        w.bytes(b"c");
        w.bytes(b"presence");
        w.0.push(1 | 2);
        w.bytes(b"u1");
        w.bytes(&text);
        w.u64(0);
        w.u64(0);
        w.u64(0);
        b.extend_from_slice(&w.0);
        let Some(Envelope::Publish { p, seq, .. }) = Envelope::decode(&b) else {
            panic!("decode failed")
        };
        assert_eq!(seq, 9);
        assert_eq!(
            p.presence,
            Some(PresenceTag::new("c", None, PresenceKind::Count))
        );
        assert_eq!(p.skip_user.as_deref(), Some("u1"));
    }

    #[test]
    fn presence_crosses_with_its_tag() {
        for kind in [PresenceKind::Join, PresenceKind::Leave, PresenceKind::Count] {
            let tag = PresenceTag::new("c", Some("s1"), kind);
            let p = Publication {
                channel: "c".into(),
                event: "presence".into(),
                text: Bytes::from_static(b"42[\"presence\",{}]"),
                attachments: vec![],
                data: 0..0,
                skip_user: None,
                presence: Some(tag),
                obj_end: 15,
            };
            let e = Envelope::Publish {
                origin: "i".into(),
                seq: 1,
                p: Arc::new(p),
            };
            let Some(Envelope::Publish { p, .. }) = Envelope::decode(&e.encode()) else {
                panic!("decode failed")
            };
            assert_eq!(p.presence, Some(tag));
            assert_eq!(p.skip_user, None);
        }
    }

    #[test]
    fn direct_round_trip_and_garbage() {
        let e = Envelope::DirectReq {
            origin: "o".into(),
            req: 3,
            shard: 1,
            seq: 9,
            text: Bytes::from_static(b"42[]"),
            attachments: vec![],
        };
        assert!(matches!(
            Envelope::decode(&e.encode()),
            Some(Envelope::DirectReq {
                req: 3,
                shard: 1,
                seq: 9,
                ..
            })
        ));
        let r = Envelope::DirectRes { req: 5, ok: true }.encode();
        assert!(matches!(
            Envelope::decode(&r),
            Some(Envelope::DirectRes { req: 5, ok: true })
        ));
        for bad in [&b""[..], b"S", b"S\x01\x01\xff\xff\xff\xff", b"hello"] {
            assert!(Envelope::decode(bad).is_none());
        }
        let full = e.encode();
        for n in 0..full.len() {
            assert!(Envelope::decode(&full[..n]).is_none());
        }
    }

    #[test]
    fn publish_data_span_must_lie_in_the_frame() {
        let p = Publication {
            channel: "c".into(),
            event: "m".into(),
            text: Bytes::from_static(b"42[\"event\",{\"data\":1}]"),
            attachments: vec![],
            data: 0..0,
            skip_user: None,
            presence: None,
            obj_end: 22,
        };
        let enc = |data: std::ops::Range<usize>| {
            let p = Publication { data, ..clone(&p) };
            Envelope::Publish {
                origin: "o".into(),
                seq: 1,
                p: Arc::new(p),
            }
            .encode()
        };
        assert!(Envelope::decode(&enc(20..21)).is_some());
        assert!(Envelope::decode(&enc(std::ops::Range { start: 21, end: 20 })).is_none());
        assert!(Envelope::decode(&enc(20..99)).is_none());
        let mut v1 = enc(0..0);
        v1[1] = 1;
        assert!(
            Envelope::decode(&v1).is_none(),
            "the old format is not read"
        );
    }

    fn clone(p: &Publication) -> Publication {
        Publication {
            channel: p.channel.clone(),
            event: p.event.clone(),
            text: p.text.clone(),
            attachments: p.attachments.clone(),
            data: p.data.clone(),
            skip_user: p.skip_user.clone(),
            presence: p.presence,
            obj_end: p.obj_end,
        }
    }
}

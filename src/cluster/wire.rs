//! The format of what crosses Redis between instances: one binary envelope
//! per PUBLISH, length-prefixed fields, no per-recipient data. A publication
//! crosses as the same encoded frame the publishing instance delivers
//! locally, so a receiving instance never re-encodes it; its `data` crosses
//! as where the publisher's text sits in that frame, for the receiver's
//! filters.

use std::sync::Arc;

use bytes::Bytes;
use shards::Publication;

const MAGIC: u8 = b'S';
/// 2: a publication's `data` is a span of its frame (1 carried it re-encoded).
const VERSION: u8 = 2;
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
                w.0.push(p.members_only as u8 | (p.skip_user.is_some() as u8) << 1);
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
        if r.u8()? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        match r.u8()? {
            KIND_PUBLISH => {
                let origin = r.str()?.to_string();
                let seq = r.u64()?;
                let channel = r.str()?;
                let event = r.str()?;
                let flags = r.u8()?;
                let skip = r.str()?;
                let text = Bytes::copy_from_slice(r.bytes()?);
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
                    skip_user: (flags & 2 != 0).then(|| skip.into()),
                    members_only: flags & 1 != 0,
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
            members_only: false,
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
            members_only: false,
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
            members_only: p.members_only,
            obj_end: p.obj_end,
        }
    }
}

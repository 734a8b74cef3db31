//! A publication: one publish encoded once (the Engine.IO frame, where its
//! event object and its `data` lie, the channel), shared by every shard and
//! every recipient it reaches; the frame one recipient gets of it (with or
//! without its recovery offset); and its `data` as subscription filters
//! read it (one lazy parse per delivery run).

use std::cell::OnceCell;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use proto::engineio::Outgoing;

use crate::outbox::PresenceTag;

/// A publication's `data` as filters see it: the publisher's JSON text,
/// parsed on the first [`Data::value`] only, so a delivery without a filter
/// that reads it costs no parse, and every filter of one delivery run
/// shares one.
pub struct Data<'a> {
    raw: &'a [u8],
    parsed: OnceCell<serde_json::Value>,
}

impl<'a> Data<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Data {
            raw,
            parsed: OnceCell::new(),
        }
    }

    /// The JSON text exactly as the publisher sent it.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The text parsed. A number too large for a double (`1e400`, relayed
    /// as sent) reads as the largest finite one of its sign; data nested
    /// deeper than 128 levels reads as `null`.
    pub fn value(&self) -> &serde_json::Value {
        self.parsed.get_or_init(|| {
            serde_json::from_slice(self.raw)
                .or_else(|_| serde_json::from_slice(&clamp_numbers(self.raw)))
                .unwrap_or_default()
        })
    }
}

/// `raw` with every number literal that overflows a double replaced by
/// ±`f64::MAX`, so that the rest of the text still parses.
fn clamp_numbers(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'"' {
            let start = i;
            i += 1;
            while i < raw.len() && raw[i] != b'"' {
                i += if raw[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(raw.len());
            out.extend_from_slice(&raw[start..i]);
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < raw.len() && matches!(raw[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let num = &raw[start..i];
            let huge = std::str::from_utf8(num)
                .ok()
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(f64::is_infinite);
            if huge {
                let max = if b == b'-' {
                    "-1.7976931348623157e308"
                } else {
                    "1.7976931348623157e308"
                };
                out.extend_from_slice(max.as_bytes());
            } else {
                out.extend_from_slice(num);
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// Where the event object of an encoded `event`/`presence` frame ends:
/// `frame[..end]` ends with the object's `}`; `frame[end..]` is `]`, or
/// `,"<offset>"]` when the frame carries a recovery offset. Offsets never
/// hold a quote or a backslash, so the tail is found from the end.
pub fn object_end(frame: &[u8]) -> usize {
    let n = frame.len();
    if frame.ends_with(b"\"]") && n >= 2 {
        if let Some(q) = frame[..n - 2].iter().rposition(|&c| c == b'"') {
            if q >= 2 && frame[q - 1] == b',' && frame[q - 2] == b'}' {
                return q - 1;
            }
        }
    }
    n.saturating_sub(1)
}

/// The recovery offset a frame carries, if any (see [`object_end`]).
pub fn frame_offset(frame: &[u8]) -> Option<&str> {
    let end = object_end(frame);
    let tail = frame.get(end + 2..frame.len().checked_sub(2)?)?;
    std::str::from_utf8(tail).ok().filter(|t| !t.is_empty())
}

pub(crate) static CLOSE: &[u8] = b"]";

/// A frame (`head` up to its object's end, `tail` after it) as one
/// recipient gets it: with the offset when it recovers, without otherwise.
fn frame_for(text: &Bytes, end: usize, recover: bool) -> Outgoing {
    if recover || end + 1 == text.len() {
        Outgoing::Text(text.clone())
    } else {
        Outgoing::TextParts(text.slice(..end), Bytes::new(), Bytes::from_static(CLOSE))
    }
}

/// A direct message's frame as its recipient gets it.
pub fn direct_frame(text: Bytes, recover: bool) -> Outgoing {
    let end = object_end(&text);
    frame_for(&text, end, recover)
}

/// An encoded event on its way to a channel's recipients (Send + Sync; one
/// per publish, shared by every shard it is sent to).
pub struct Publication {
    pub channel: Arc<str>,
    pub event: Arc<str>,
    /// The Engine.IO text packet, ending with the RealtimeEvent's `}]`.
    pub text: Bytes,
    pub attachments: Vec<Bytes>,
    /// Where `data`'s JSON text, verbatim as the publisher sent it, sits in
    /// `text` (read by subscription filters); empty when it has none.
    pub data: Range<usize>,
    /// `echo:false`: skip every socket of this user.
    pub skip_user: Option<Arc<str>>,
    /// A presence frame's tag: it goes to members only, never to
    /// subscriptions, and may be coalesced in a backed-up queue.
    pub presence: Option<PresenceTag>,
    /// Where the event object ends in `text` ([`object_end`]).
    pub obj_end: usize,
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("channel", &self.channel)
            .field("event", &self.event)
            .field("bytes", &self.text.len())
            .field("attachments", &self.attachments.len())
            .finish()
    }
}

impl Publication {
    /// The recovery offset its frame carries, if any.
    pub fn offset(&self) -> Option<&str> {
        frame_offset(&self.text)
    }

    /// The event object's JSON text (the RealtimeEvent or presence object).
    pub fn object(&self) -> &[u8] {
        &self.text[self.object_range()]
    }

    /// Where [`Publication::object`] lies in `text`.
    pub fn object_range(&self) -> Range<usize> {
        let end = self.obj_end.min(self.text.len());
        let start = self.text[..end]
            .iter()
            .position(|&c| c == b'{')
            .unwrap_or(end);
        start..end
    }

    /// The frame for one member.
    pub(crate) fn frame_for(&self, recover: bool) -> Outgoing {
        frame_for(&self.text, self.obj_end, recover)
    }

    /// `data`'s JSON text (`null` when the publication has none).
    pub fn data(&self) -> &[u8] {
        match self.text.get(self.data.clone()) {
            Some(d) if !d.is_empty() => d,
            _ => b"null",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sit_after_the_object() {
        let with = br#"42["event",{"id":"a","x":"}\","},"00ab-0-i"]"#;
        assert_eq!(object_end(with), with.len() - 12);
        assert_eq!(frame_offset(with), Some("00ab-0-i"));
        let without = br#"42["event",{"id":"a","x":"\",\"]"}]"#;
        assert_eq!(object_end(without), without.len() - 1);
        assert_eq!(frame_offset(without), None);
        assert_eq!(frame_offset(b""), None);
        assert_eq!(frame_offset(b"\"]"), None);
        let text = Bytes::from_static(with);
        let mut joined = Vec::new();
        proto::engineio::encode_payload([&direct_frame(text.clone(), false)], &mut joined);
        assert_eq!(joined, br#"42["event",{"id":"a","x":"}\","}]"#.to_vec());
        assert_eq!(direct_frame(text.clone(), true), Outgoing::Text(text));
    }

    #[test]
    fn data_with_numbers_beyond_a_double_still_reads() {
        let raw = br#"{"a":[1e400,-1E+999,"1e400\"",1.50],"b":12345678901234567890123}"#;
        let d = Data::new(raw);
        let v = d.value();
        assert_eq!(v["a"][0].as_f64(), Some(f64::MAX));
        assert_eq!(v["a"][1].as_f64(), Some(-f64::MAX));
        assert_eq!(v["a"][2], "1e400\"");
        assert_eq!(v["a"][3].as_f64(), Some(1.5));
        assert_eq!(v["b"].as_f64(), Some(1.2345678901234568e22));
        assert_eq!(d.raw(), raw);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Data::new(deep.as_bytes()).value().is_null());
    }
}

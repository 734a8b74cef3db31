//! Reads a client event's text (`["name", {...}]`) and a REST broadcast body
//! without rebuilding any of it: the argument's fields come out as slices of
//! the text, so `data` reaches the frame exactly as the publisher wrote it
//! (key order, number spelling, string escapes), and the text is scanned
//! once.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON string, borrowed from the text unless it holds escapes.
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `[name, argument, ...]`: what a client event carries (elements after the
/// argument are ignored, as before).
pub struct EventArgs<'a> {
    pub name: Cow<'a, str>,
    /// `None` when the event has no argument.
    pub arg: Option<&'a RawValue>,
}

impl<'a> EventArgs<'a> {
    /// `None` unless the text is a JSON array whose first element is a string.
    pub fn parse(text: &'a str) -> Option<EventArgs<'a>> {
        serde_json::from_str(text).ok()
    }
}

impl<'de> Deserialize<'de> for EventArgs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EventArgs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("[name, argument]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventArgs<'de>, A::Error> {
                let Str(name) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let arg = seq.next_element::<&RawValue>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventArgs { name, arg })
            }
        }
        d.deserialize_seq(V)
    }
}

/// The fields of an event argument (or REST body) that carry a message,
/// each as its JSON text; the last of duplicate keys wins, other keys are
/// skipped.
#[derive(Default)]
pub struct Fields<'a> {
    pub channel: Option<&'a RawValue>,
    pub event: Option<&'a RawValue>,
    pub to: Option<&'a RawValue>,
    pub echo: Option<&'a RawValue>,
    pub data: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// `None` unless `raw` is a JSON object.
    pub fn parse(raw: &'a RawValue) -> Option<Fields<'a>> {
        serde_json::from_str(raw.get()).ok()
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut f = Fields::default();
                while let Some(Str(key)) = map.next_key()? {
                    let slot = match &*key {
                        "channel" => &mut f.channel,
                        "event" => &mut f.event,
                        "to" => &mut f.to,
                        "echo" => &mut f.echo,
                        "data" => &mut f.data,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
    }
}

/// A field's string value; `None` when it is absent or not a JSON string.
pub fn string(field: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let raw = field?;
    serde_json::from_str::<Str>(raw.get()).ok().map(|s| s.0)
}

/// An `echo`-like flag: absent or `null` gives `default`; `None` when it is
/// not a boolean.
pub fn flag(field: Option<&RawValue>, default: bool) -> Option<bool> {
    match field.map(RawValue::get) {
        None | Some("null") => Some(default),
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_args() {
        let e = EventArgs::parse(r#" ["publish" , {"a":1} , 3, [4]] "#).unwrap();
        assert_eq!(e.name, "publish");
        assert_eq!(e.arg.unwrap().get(), r#"{"a":1}"#);
        let e = EventArgs::parse(r#"["p\u0075b"]"#).unwrap();
        assert_eq!((&*e.name, e.arg.is_none()), ("pub", true));
        for bad in [
            "",
            "{}",
            "[]",
            "[1]",
            "[null]",
            "\"x\"",
            "[\"a\",",
            "[\"a\"] x",
        ] {
            assert!(EventArgs::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn fields_keep_the_text() {
        let text = r#"{"data" : {"b":1.50,"a":12345678901234567890123,"s":"\u00e9\/"},
            "ch\u0061nnel":"c","echo":false,"other":{"x":[1]},"event":"e","event":"f"}"#;
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let f = Fields::parse(raw).unwrap();
        assert_eq!(
            f.data.unwrap().get(),
            r#"{"b":1.50,"a":12345678901234567890123,"s":"\u00e9\/"}"#
        );
        assert_eq!(string(f.channel).as_deref(), Some("c"));
        assert_eq!(string(f.event).as_deref(), Some("f"));
        assert_eq!(flag(f.echo, true), Some(false));
        assert!(f.to.is_none() && string(f.to).is_none());
        for bad in ["[]", "null", "1", "\"s\""] {
            let raw: &RawValue = serde_json::from_str(bad).unwrap();
            assert!(Fields::parse(raw).is_none(), "{bad}");
        }
        let raw: &RawValue = serde_json::from_str(r#"{"channel":42,"echo":1}"#).unwrap();
        let f = Fields::parse(raw).unwrap();
        assert!(string(f.channel).is_none());
        assert_eq!(flag(f.echo, true), None);
        assert_eq!(flag(None, true), Some(true));
    }
}

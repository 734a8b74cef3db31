//! A channel's members a page at a time, as the `members` socket event and
//! `GET /api/socket/channels/:channel/members` give them: ordered by socket
//! id (byte order), only those after `after`, at most `limit` (at most
//! [`MAX_PAGE`], the default too), with `next` (the page's last socket id)
//! while more remain.
//!
//! The whole list is gathered first (`views::members`: every shard, or the
//! cluster through Redis) and paged here, so paging is as cluster-wide as
//! the list and needs nothing new from the shards or Redis.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;
use shards::MemberView;

use crate::app::views;
use crate::ctx::ShardCtx;
use crate::frame::{self, json_str};
use crate::rules::{self, Fail};

/// The largest page, and the page without `limit`: one answer stays a
/// bounded frame however large the channel.
pub const MAX_PAGE: usize = 1000;

/// Longer than any socket id this gateway hands out: an instance id of at
/// most 128 bytes, `-`, two hex digits, `-`, 16 hex digits.
const MAX_AFTER: usize = 160;

/// A members question, its arguments checked.
#[derive(Debug, PartialEq)]
pub struct Ask {
    pub channel: Arc<str>,
    /// At most [`MAX_PAGE`].
    pub limit: usize,
    pub after: Option<String>,
}

/// The `members` event's argument: a channel name, or
/// `{"channel":C,"limit"?:N,"after"?:SOCKET_ID}` (`null` is the same as
/// absent).
pub fn event_arg(arg: Option<&Value>) -> Result<Ask, Fail> {
    let channel: Arc<str> = rules::channel_arg(arg)?.into();
    let Some(Value::Object(map)) = arg else {
        return Ok(Ask {
            channel,
            limit: MAX_PAGE,
            after: None,
        });
    };
    let limit = match map.get("limit") {
        None | Some(Value::Null) => MAX_PAGE,
        Some(v) => rules::limit_arg(v.as_u64())?.min(MAX_PAGE),
    };
    let after = match map.get("after") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(after_arg(s)?.to_string()),
        Some(_) => {
            return Err(crate::app::publish::bad(
                "\"after\" must be a string (a socket id)",
            ))
        }
    };
    Ok(Ask {
        channel,
        limit,
        after,
    })
}

/// The REST route's arguments: the decoded channel and the `limit` and
/// `after` query parameters (empty is the same as absent).
pub fn rest_arg(channel: &str, limit: Option<&str>, after: Option<&str>) -> Result<Ask, Fail> {
    rules::validate_channel(channel)?;
    let limit = match limit {
        None | Some("") => MAX_PAGE,
        Some(l) => rules::limit_arg(l.parse().ok())?.min(MAX_PAGE),
    };
    let after = match after {
        None | Some("") => None,
        Some(a) => Some(after_arg(a)?.to_string()),
    };
    Ok(Ask {
        channel: channel.into(),
        limit,
        after,
    })
}

fn after_arg(s: &str) -> Result<&str, Fail> {
    if s.len() > MAX_AFTER {
        return Err(crate::app::publish::bad(
            "\"after\" is longer than any socket id",
        ));
    }
    Ok(s)
}

/// The answer's fields without its braces:
/// `"channel":C,"members":[MEMBER...]` and `,"next":SOCKET_ID` while more
/// remain. The socket event puts `"ok":true` in front.
pub async fn fields(ctx: &Rc<ShardCtx>, ask: &Ask) -> String {
    let mut list = views::members(ctx, &ask.channel).await;
    let next = page(&mut list, ask.after.as_deref(), ask.limit);
    let mut out = format!(
        "\"channel\":{},\"members\":{}",
        json_str(&ask.channel),
        frame::members(&list)
    );
    if let Some(next) = next {
        out.push_str(",\"next\":");
        out.push_str(&json_str(&next));
    }
    out
}

/// Cuts `list` down to its page, sorted by socket id; the page's last
/// socket id when more follow it.
fn page(list: &mut Vec<MemberView>, after: Option<&str>, limit: usize) -> Option<Arc<str>> {
    if let Some(after) = after {
        list.retain(|m| *m.socket_id > *after);
    }
    let more = list.len() > limit;
    if more {
        // Only the page needs sorting, not the whole channel.
        list.select_nth_unstable_by(limit, |a, b| a.socket_id.cmp(&b.socket_id));
        list.truncate(limit);
    }
    list.sort_unstable_by(|a, b| a.socket_id.cmp(&b.socket_id));
    more.then(|| list.last().map(|m| m.socket_id.clone()))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ErrorCode;
    use serde_json::json;

    fn view(sid: &str) -> MemberView {
        MemberView {
            socket_id: sid.into(),
            user_id: "u".into(),
            info: None,
            joined_at: 0,
        }
    }

    fn sids(list: &[MemberView]) -> Vec<&str> {
        list.iter().map(|m| &*m.socket_id).collect()
    }

    #[test]
    fn pages_walk_the_list_in_socket_id_order() {
        let all: Vec<String> = (0..30).map(|i| format!("s{:02}", (i * 7) % 30)).collect();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut list: Vec<MemberView> = all.iter().map(|s| view(s)).collect();
            let next = page(&mut list, after.as_deref(), 7);
            assert!(list.len() <= 7);
            seen.extend(sids(&list).into_iter().map(str::to_string));
            match next {
                Some(n) => {
                    assert_eq!(Some(&*n), sids(&list).last().copied());
                    after = Some(n.to_string());
                }
                None => break,
            }
        }
        let mut want = all.clone();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn no_next_when_the_page_holds_the_rest() {
        let mut list = vec![view("b"), view("a")];
        assert_eq!(page(&mut list, None, 2), None);
        assert_eq!(sids(&list), ["a", "b"]);
        let mut list = vec![view("b"), view("a"), view("c")];
        assert_eq!(page(&mut list, Some("a"), 1).as_deref(), Some("b"));
        assert_eq!(sids(&list), ["b"]);
        let mut list = vec![view("a")];
        assert_eq!(page(&mut list, Some("z"), 5), None);
        assert!(list.is_empty());
    }

    #[test]
    fn event_arguments() {
        let a = event_arg(Some(&json!({"channel": "c", "limit": 5, "after": "x"}))).unwrap();
        assert_eq!(
            a,
            Ask {
                channel: "c".into(),
                limit: 5,
                after: Some("x".into())
            }
        );
        let a = event_arg(Some(&json!("c"))).unwrap();
        assert_eq!((a.limit, a.after), (MAX_PAGE, None));
        let a = event_arg(Some(&json!({"channel": "c", "limit": 5000, "after": null}))).unwrap();
        assert_eq!((a.limit, a.after), (MAX_PAGE, None));
        use ErrorCode::{BadRequest, InvalidChannel};
        for (arg, want) in [
            (json!({"channel": "c", "limit": 0}), BadRequest),
            (json!({"channel": "c", "limit": -1}), BadRequest),
            (json!({"channel": "c", "limit": 2.5}), BadRequest),
            (json!({"channel": "c", "limit": "5"}), BadRequest),
            (json!({"channel": "c", "after": 5}), BadRequest),
            (
                json!({"channel": "c", "after": "x".repeat(161)}),
                BadRequest,
            ),
            (json!({"limit": 5}), BadRequest),
            (json!(null), BadRequest),
            (json!({"channel": ""}), InvalidChannel),
        ] {
            let got = event_arg(Some(&arg)).err().map(|f| f.code);
            assert_eq!(got, Some(want), "{arg}");
        }
    }

    #[test]
    fn rest_arguments() {
        let a = rest_arg("c", Some("3"), Some("x")).unwrap();
        assert_eq!((a.limit, a.after.as_deref()), (3, Some("x")));
        let a = rest_arg("c", Some(""), Some("")).unwrap();
        assert_eq!((a.limit, a.after), (MAX_PAGE, None));
        assert_eq!(rest_arg("c", Some("99999"), None).unwrap().limit, MAX_PAGE);
        for l in ["0", "-1", "x", "1.5"] {
            let e = rest_arg("c", Some(l), None).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{l}");
        }
        let e = rest_arg("c", None, Some(&"x".repeat(161))).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = rest_arg(&"x".repeat(201), None, None).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidChannel);
    }
}

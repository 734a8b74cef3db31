//! Fuzzes the HTTP request-head parser (`socket_gateway::http::parse_head`) and the query-string
//! decoder (`query_param`) on arbitrary bytes: request lines, paths, query strings, headers.
//!
//! Beyond "no panic", the framing invariant: a head `parse_head` accepts has, read again by
//! httparse on its own, no `Transfer-Encoding`, at most one `Content-Length` made of digits (the
//! length `parse_head` reports), no bare LF line end, and no body on GET, HEAD or OPTIONS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socket_gateway::http::{parse_head, query_param, HeadError, Method, MAX_HEAD};

fn check_framing(data: &[u8], r: &socket_gateway::http::Request) {
    let head = &data[..r.head_len];
    assert!(
        head.iter()
            .enumerate()
            .all(|(i, &b)| b != b'\n' || (i > 0 && head[i - 1] == b'\r')),
        "bare LF accepted"
    );
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    assert!(matches!(req.parse(head), Ok(httparse::Status::Complete(n)) if n == r.head_len));
    let mut lengths = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let first = lengths.next();
    assert!(lengths.next().is_none(), "several Content-Length accepted");
    assert!(
        !req.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
        "Transfer-Encoding accepted"
    );
    match first {
        None => assert_eq!(r.content_length, None),
        Some(h) => {
            let v = std::str::from_utf8(h.value).unwrap().trim_matches([' ', '\t']);
            assert!(!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()), "{v:?}");
            assert_eq!(r.content_length, Some(v.parse().unwrap()));
        }
    }
    let bodiless = matches!(r.method, Method::Get | Method::Options) || req.method == Some("HEAD");
    if bodiless {
        assert_eq!(r.content_length.unwrap_or(0), 0, "a body on {:?}", req.method);
    }
    if req.method == Some("HEAD") {
        assert!(!r.keep_alive);
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Ok(Some(r)) => {
            assert!(r.head_len <= data.len());
            assert!(!r.path.contains('?'));
            check_framing(data, &r);
            for name in ["EIO", "transport", "sid", "token", "prefix", "limit", ""] {
                let _ = r.query_param(name);
            }
            let _ = r.bearer();
        }
        Ok(None) => assert!(data.len() <= MAX_HEAD),
        Err(HeadError::TooLarge) | Err(HeadError::Malformed) | Err(HeadError::Framing) => {}
    }
    // the bytes as a query string, a name taken from the first '=' pair
    let q = String::from_utf8_lossy(data);
    let name = q.split(['=', '&']).next().unwrap_or("");
    if let Some(v) = query_param(&q, name) {
        assert!(v.len() <= q.len());
    }
    let _ = query_param(&q, "token");
});

//! Fuzzes the HTTP request-head parser (`socket_gateway::http::parse_head`) and the query-string
//! decoder (`query_param`) on arbitrary bytes: request lines, paths, query strings, headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socket_gateway::http::{parse_head, query_param, HeadError, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Ok(Some(r)) => {
            assert!(r.head_len <= data.len());
            assert!(!r.path.contains('?'));
            for name in ["EIO", "transport", "sid", "token", "prefix", "limit", ""] {
                let _ = r.query_param(name);
            }
            let _ = r.bearer();
        }
        Ok(None) => assert!(data.len() <= MAX_HEAD),
        Err(HeadError::TooLarge) | Err(HeadError::Malformed) => {}
    }
    // the bytes as a query string, a name taken from the first '=' pair
    let q = String::from_utf8_lossy(data);
    let name = q.split(['=', '&']).next().unwrap_or("");
    if let Some(v) = query_param(&q, name) {
        assert!(v.len() <= q.len());
    }
    let _ = query_param(&q, "token");
});

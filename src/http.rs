//! HTTP/1.1 at the edge: request heads parsed with `httparse`, responses
//! written as plain bytes, and the two socket helpers every HTTP handler
//! shares (`read_more`, `reply`). Owns no state; the router
//! (`edge/server.rs`) decides what a request means.
//!
//! Framing is strict, checked here so every route gets it: a request's body
//! is exactly its one `Content-Length` (plain digits), or nothing. A head
//! with `Transfer-Encoding`, several or malformed `Content-Length` headers,
//! a body on GET/HEAD/OPTIONS, or a line ended by a bare LF is refused
//! ([`HeadError::Framing`], 400 and close): where two parsers (a proxy in
//! front, and us) could disagree on where a request ends, one request's bytes
//! could become the start of another's, run with the other's credentials.

use std::borrow::Cow;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use percent_encoding::percent_decode_str;
use shards::rt::TcpStream;

/// Largest request head accepted (431 beyond it).
pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Options,
    Delete,
    Other(String),
}

/// The parts of a request head the server uses.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The body's length; never above 0 on GET, HEAD or OPTIONS.
    pub content_length: Option<usize>,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Extensions` offers, several headers joined by commas.
    pub ws_extensions: Option<String>,
    pub upgrade_websocket: bool,
    pub keep_alive: bool,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x: answer 400 and close.
    Malformed,
    /// Head bigger than [`MAX_HEAD`]: answer 431 and close.
    TooLarge,
    /// Framing another parser could read differently (see the module doc):
    /// answer 400 and close.
    Framing,
}

impl HeadError {
    /// The status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed | HeadError::Framing => 400,
            HeadError::TooLarge => 431,
        }
    }
}

/// Parses a request head from the start of `buf`; `Ok(None)` means more
/// bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    // httparse takes a bare LF as a line end; a proxy that does not would
    // see different headers (a hidden `Content-Length`).
    let head = &buf[..head_len];
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err(HeadError::Framing);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        "DELETE" => Method::Delete,
        m => Method::Other(m.to_string()),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut r = Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        content_length: None,
        content_type: None,
        authorization: None,
        origin: None,
        ws_key: None,
        ws_extensions: None,
        upgrade_websocket: false,
        keep_alive: req.version == Some(1),
        head_len,
    };
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            // Several (even equal, or a list) or anything but digits:
            // where a proxy might pick another one, or read `+36` as 36.
            "content-length" if r.content_length.is_some() => return Err(HeadError::Framing),
            "content-length" => {
                r.content_length = Some(content_length(h.value).ok_or(HeadError::Framing)?)
            }
            // No body is ever chunked here; a proxy that ignores the header
            // would frame by `Content-Length` (or nothing) instead.
            "transfer-encoding" => return Err(HeadError::Framing),
            _ => {}
        }
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        match name.as_str() {
            "content-type" => r.content_type = Some(value),
            "authorization" => r.authorization = Some(value),
            "origin" => r.origin = Some(value),
            "sec-websocket-key" => r.ws_key = Some(value),
            "sec-websocket-extensions" => {
                r.ws_extensions = Some(match r.ws_extensions.take() {
                    Some(before) => format!("{before}, {value}"),
                    None => value,
                })
            }
            "upgrade" => r.upgrade_websocket = value.eq_ignore_ascii_case("websocket"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    r.keep_alive = false;
                } else if v.contains("keep-alive") {
                    r.keep_alive = true;
                }
            }
            _ => {}
        }
    }
    // These routes read no body: bytes after the head would be taken as the
    // next request.
    let head_method = req.method == Some("HEAD");
    let bodiless = matches!(r.method, Method::Get | Method::Options) || head_method;
    if bodiless && r.content_length.unwrap_or(0) > 0 {
        return Err(HeadError::Framing);
    }
    // Every answer to a HEAD carries a body (nothing here serves HEAD);
    // closing after it keeps a client that reads no body from taking it for
    // the next response, whatever its `Connection` header asked.
    if head_method {
        r.keep_alive = false;
    }
    Ok(Some(r))
}

/// A `Content-Length` value: ASCII digits only (around them, optional
/// spaces or tabs), within `usize`.
fn content_length(value: &[u8]) -> Option<usize> {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'))?;
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t'))?;
    value[start..=end].iter().try_fold(0usize, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

impl Request {
    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        query_param(&self.query, name)
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.authorization.as_deref()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != name {
            return None;
        }
        let v = v.replace('+', " ");
        Some(Cow::Owned(
            percent_decode_str(&v).decode_utf8_lossy().into_owned(),
        ))
    })
}

pub fn status_text(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The `Access-Control-Allow-Origin` value for a request's `Origin` given
/// the allowed `origins`: `*` when they include `*` (then [`response`] sends
/// no credentials header), else the origin itself when it is listed. `null`
/// (sandboxed frames, `file:` pages, some redirects: any page can claim it)
/// is never allowed, listed or not.
pub fn allowed_origin(origins: &[String], origin: Option<&str>) -> Option<String> {
    let origin = origin.filter(|o| *o != "null")?;
    if origins.iter().any(|o| o == "*") {
        Some("*".to_string())
    } else if origins.iter().any(|o| o == origin) {
        Some(origin.to_string())
    } else {
        None
    }
}

/// A complete response. `cors` is the `Access-Control-Allow-Origin` value
/// from [`crate::config::Config::cors_allow`], if any: `*` is sent without
/// credentials (a browser refuses credentials with `*`, and any page may read
/// the answer); an origin is echoed with `Access-Control-Allow-Credentials`.
/// Either way the answer depends on the request's `Origin`, hence `Vary`.
pub fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    cors: Option<&str>,
    keep_alive: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(192 + body.len());
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", status_text(status));
    if !content_type.is_empty() {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n", body.len());
    match cors {
        Some("*") => out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\nVary: Origin\r\n"),
        Some(origin) => {
            let _ = write!(
                out,
                "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
            );
        }
        None => {}
    }
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    out.extend_from_slice(body);
    out
}

/// A successful answer from a REST or admin route.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: &'static [(&'static str, &'static str)],
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type: "application/json",
            body: body.into(),
            headers: &[],
        }
    }
}

/// Reads up to `chunk` more bytes onto the end of `buf`. Reading straight
/// into the vector (not through a stack array) keeps every connection's
/// future small: a future is as big as the largest state it can be in.
pub async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: usize,
) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let r = stream.read(&mut buf[start..]).await;
    buf.truncate(start + r.as_ref().map_or(0, |n| *n));
    r
}

/// Writes a response; `None` when the connection must end.
pub async fn reply(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    consumed: usize,
    keep_alive: bool,
    bytes: Vec<u8>,
) -> Option<(TcpStream, Vec<u8>)> {
    stream.write_all(&bytes).await.ok()?;
    if !keep_alive {
        let _ = stream.close().await;
        return None;
    }
    buf.drain(..consumed.min(buf.len()));
    Some((stream, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_polling_request() {
        let raw = b"GET /socket.io/?EIO=4&transport=polling&t=N8hyd6w HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc.def\r\n\r\n";
        let r = parse_head(raw).unwrap().unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/socket.io/");
        assert_eq!(r.query_param("transport").as_deref(), Some("polling"));
        assert_eq!(r.query_param("sid"), None);
        assert_eq!(r.bearer(), Some("abc.def"));
        assert_eq!(r.head_len, raw.len());
    }

    #[test]
    fn partial_and_garbage() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost")
                .unwrap()
                .map(|r| r.path),
            None
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_head(&big).unwrap_err(), HeadError::TooLarge);
    }

    fn framing(raw: &str) -> Result<Option<Request>, HeadError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn strict_framing_refuses() {
        let post = "POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\n";
        for (why, raw) in [
            (
                "chunked",
                format!("{post}Transfer-Encoding: chunked\r\n\r\n"),
            ),
            (
                "any TE",
                format!("{post}Transfer-Encoding: identity\r\n\r\n"),
            ),
            (
                "TE beside CL",
                format!("{post}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ),
            (
                "TE on GET",
                "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            ),
            (
                "two CL",
                format!("{post}Content-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            ),
            (
                "two equal CL",
                format!("{post}Content-Length: 3\r\ncontent-length: 3\r\n\r\n"),
            ),
            ("CL list", format!("{post}Content-Length: 3, 3\r\n\r\n")),
            ("plus", format!("{post}Content-Length: +36\r\n\r\n")),
            ("minus", format!("{post}Content-Length: -1\r\n\r\n")),
            ("inner space", format!("{post}Content-Length:  3 4\r\n\r\n")),
            ("empty", format!("{post}Content-Length: \r\n\r\n")),
            ("hex", format!("{post}Content-Length: 0x10\r\n\r\n")),
            (
                "unicode digit",
                format!("{post}Content-Length: \u{0663}\r\n\r\n"),
            ),
            (
                "overflow",
                format!("{post}Content-Length: 99999999999999999999999\r\n\r\n"),
            ),
            (
                "GET body",
                "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
                    .into(),
            ),
            (
                "OPTIONS body",
                "OPTIONS /api/socket/broadcast HTTP/1.1\r\nContent-Length: 1\r\n\r\n".into(),
            ),
            (
                "HEAD body",
                "HEAD /healthz HTTP/1.1\r\nContent-Length: 1\r\n\r\n".into(),
            ),
            (
                "bare LF line",
                format!("{post}X: a\nContent-Length: 3\r\n\r\n"),
            ),
            ("bare LF head", "GET / HTTP/1.1\nHost: x\n\n".into()),
        ] {
            assert_eq!(framing(&raw).unwrap_err(), HeadError::Framing, "{why}");
        }
        // httparse itself refuses these (400 too).
        for (why, raw) in [
            (
                "space before colon",
                format!("{post}Content-Length : 3\r\n\r\n"),
            ),
            ("space in name", format!("{post}Content Length: 3\r\n\r\n")),
            (
                "obs-fold",
                format!("{post}X: a\r\n  Content-Length: 3\r\n\r\n"),
            ),
            ("CR alone", format!("{post}X: a\rContent-Length: 3\r\n\r\n")),
        ] {
            assert_eq!(framing(&raw).unwrap_err(), HeadError::Malformed, "{why}");
        }
    }

    #[test]
    fn strict_framing_accepts() {
        let r = framing("POST /p HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.content_length, Some(12));
        let r = framing("POST /p HTTP/1.1\r\nContent-Length:\t007 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.content_length, Some(7));
        // An empty body may be announced on any method.
        for m in ["GET", "OPTIONS", "HEAD"] {
            let raw = format!("{m} / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(framing(&raw).unwrap().unwrap().content_length, Some(0));
        }
        // Other methods are framed like POST (their routes read the body or
        // close the connection).
        let head = "PUT /api/socket/broadcast HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
        let r = framing(&format!("{head}{{}}")).unwrap().unwrap();
        assert_eq!(r.content_length, Some(2));
        assert_eq!(r.head_len, head.len());
        assert_eq!(r.method, Method::Other("PUT".into()));
        // Nothing here serves HEAD: its answer (with a body) ends the connection.
        for raw in [
            "HEAD / HTTP/1.1\r\n\r\n",
            "HEAD / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        ] {
            assert!(!framing(raw).unwrap().unwrap().keep_alive, "{raw}");
        }
        assert!(
            framing("GET / HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn cors() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let any = list(&["*"]);
        assert_eq!(
            allowed_origin(&any, Some("https://a.example")).as_deref(),
            Some("*")
        );
        assert_eq!(allowed_origin(&any, Some("null")), None);
        assert_eq!(allowed_origin(&any, None), None);
        let some = list(&["https://a.example", "null"]);
        assert_eq!(
            allowed_origin(&some, Some("https://a.example")).as_deref(),
            Some("https://a.example")
        );
        assert_eq!(allowed_origin(&some, Some("https://b.example")), None);
        assert_eq!(allowed_origin(&some, Some("null")), None);
        assert_eq!(allowed_origin(&[], Some("https://a.example")), None);

        let text = |cors| String::from_utf8(response(204, "", b"", cors, true, &[])).unwrap();
        let star = text(Some("*"));
        assert!(
            star.contains("Access-Control-Allow-Origin: *\r\n"),
            "{star}"
        );
        assert!(!star.contains("Credentials"), "{star}");
        let echo = text(Some("https://a.example"));
        assert!(echo.contains("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(echo.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert!(echo.contains("Vary: Origin\r\n"));
        assert!(!text(None).contains("Access-Control"));
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("token=a%2Eb&x=1", "token").as_deref(),
            Some("a.b")
        );
        assert_eq!(query_param("x", "x").as_deref(), Some(""));
    }
}

//! HTTP/1.1 at the edge: request heads parsed with `httparse`, responses
//! written as plain bytes. Owns no state; `server.rs` decides what a request
//! means.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Largest request head accepted (431 beyond it).
pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Options,
    Other(String),
}

/// The parts of a request head the server uses.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    pub ws_key: Option<String>,
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
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        m => Method::Other(m.to_string()),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut r = Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        content_length: None,
        chunked: false,
        content_type: None,
        authorization: None,
        origin: None,
        ws_key: None,
        upgrade_websocket: false,
        keep_alive: req.version == Some(1),
        head_len,
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        match h.name.to_ascii_lowercase().as_str() {
            "content-length" => {
                r.content_length = Some(value.parse().map_err(|_| HeadError::Malformed)?)
            }
            "transfer-encoding" => r.chunked = value.to_ascii_lowercase().contains("chunked"),
            "content-type" => r.content_type = Some(value),
            "authorization" => r.authorization = Some(value),
            "origin" => r.origin = Some(value),
            "sec-websocket-key" => r.ws_key = Some(value),
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
    Ok(Some(r))
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

/// A complete response. `cors` is the allowed origin, if any.
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
    if let Some(origin) = cors {
        let _ = write!(
            out,
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        );
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

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("token=a%2Eb&x=1", "token").as_deref(),
            Some("a.b")
        );
        assert_eq!(query_param("x", "x").as_deref(), Some(""));
    }
}

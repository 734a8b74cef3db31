//! Parsing of the `--url` argument.

use std::net::{SocketAddr, ToSocketAddrs};

/// Where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as written, for the `Host` header.
    pub host_header: String,
    pub host: String,
    pub port: u16,
    /// Socket.IO path, always starting and ending with `/` (default `/socket.io/`).
    pub path: String,
}

impl Target {
    /// Parses `http://host:port[/path/]`, `ws://...`, or a bare `host:port`.
    /// A path of `/` or none means `/socket.io/`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
            (r, 80)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (r, 80)
        } else if url.starts_with("https://") || url.starts_with("wss://") {
            return Err(format!("TLS is not supported: {url}"));
        } else if url.contains("://") {
            return Err(format!("unsupported scheme in {url}"));
        } else {
            (url, 80)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("no host in {url}"));
        }
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            // [v6]:port
            let end = stripped
                .find(']')
                .ok_or_else(|| format!("bad IPv6 host in {url}"))?;
            let host = &stripped[..end];
            let after = &stripped[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("bad authority in {url}")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in {url}"));
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        let mut path = if path.is_empty() || path == "/" {
            "/socket.io/".to_string()
        } else {
            path.to_string()
        };
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(Target {
            host_header: authority.to_string(),
            host,
            port,
            path,
        })
    }

    /// Resolves to the first address.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("no address for {}", self.host))
    }

    /// The HTTP upgrade request for an Engine.IO v4 websocket-only session.
    pub fn upgrade_request(&self) -> Vec<u8> {
        self.upgrade_request_with(false)
    }

    /// The same, offering permessage-deflate when `deflate`.
    pub fn upgrade_request_with(&self, deflate: bool) -> Vec<u8> {
        let ext = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
        } else {
            ""
        };
        format!(
            "GET {}?EIO=4&transport=websocket HTTP/1.1\r\n\
             Host: {}\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             {ext}Sec-WebSocket-Version: 13\r\n\r\n",
            self.path, self.host_header
        )
        .into_bytes()
    }
}

/// Parses `--source-addrs 127.0.0.1,127.0.0.2`.
pub fn parse_source_addrs(s: &str) -> Result<Vec<std::net::IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().map_err(|_| format!("bad source address {x:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_with_port() {
        let t = Target::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 3000);
        assert_eq!(t.path, "/socket.io/");
        assert_eq!(t.host_header, "127.0.0.1:3000");
    }

    #[test]
    fn default_port_and_custom_path() {
        let t = Target::parse("ws://example.com/rt").unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.path, "/rt/");
        let t = Target::parse("localhost:8080/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 8080, "/socket.io/")
        );
    }

    #[test]
    fn ipv6_and_query_dropped() {
        let t = Target::parse("http://[::1]:3000/socket.io/?x=1").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 3000);
        assert_eq!(t.path, "/socket.io/");
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("ftp://x:1").is_err());
        assert!(Target::parse("http://:3000").is_err());
        assert!(Target::parse("http://h:notaport").is_err());
        assert!(Target::parse("http://h:70000").is_err());
    }

    #[test]
    fn upgrade_request_shape() {
        let t = Target::parse("http://127.0.0.1:3000").unwrap();
        let r = String::from_utf8(t.upgrade_request()).unwrap();
        assert!(r.starts_with("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"));
        assert!(r.contains("\r\nHost: 127.0.0.1:3000\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn source_addrs() {
        let v = parse_source_addrs("127.0.0.1, 127.0.0.2").unwrap();
        assert_eq!(v.len(), 2);
        assert!(parse_source_addrs("127.0.0.1,nope").is_err());
    }
}

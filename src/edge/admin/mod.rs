//! The admin page at `GET /socket`: one HTML page, its stylesheet and its
//! script, built into the binary (`include_str!`): no CDN, no build step, no
//! separate web server. The page talks to the REST API and `/metrics` with
//! the operator's admin token or API key, kept in `sessionStorage`.

use crate::http::Reply;

/// A file of the page.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

static INDEX: Asset = Asset {
    path: "/socket",
    content_type: "text/html; charset=utf-8",
    body: include_str!("index.html"),
};

static ASSETS: [Asset; 2] = [
    Asset {
        path: "/socket/admin.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("admin.css"),
    },
    Asset {
        path: "/socket/admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("admin.js"),
    },
];

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    if path == "/socket" || path == "/socket/" || path == "/socket/index.html" {
        return Some(&INDEX);
    }
    ASSETS.iter().find(|a| a.path == path)
}

/// Everything is same-origin: the policy forbids inline script and any
/// other origin.
const HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-cache"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

pub fn reply(a: &Asset) -> Reply {
    Reply {
        status: 200,
        content_type: a.content_type,
        body: a.body.as_bytes().to_vec(),
        headers: HEADERS,
    }
}

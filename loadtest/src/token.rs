//! HS256 tokens for the load connections.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
}

/// Mints `{sub: "load-<n>", exp: now + ttl}` tokens with one shared secret.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    ttl: u64,
}

impl Minter {
    pub fn new(secret: &str, ttl_secs: u64) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::default(), // HS256
            ttl: ttl_secs,
        }
    }

    pub fn mint_at(&self, n: u64, now_unix: u64) -> String {
        let claims = Claims {
            sub: format!("load-{n}"),
            exp: now_unix + self.ttl,
        };
        encode(&self.header, &claims, &self.key).expect("HS256 encoding cannot fail")
    }

    pub fn mint(&self, n: u64) -> String {
        self.mint_at(n, now_unix())
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The Socket.IO CONNECT packet carrying the token: `40{"token":"<jwt>"}`.
pub fn connect_packet(token: &str) -> String {
    // A JWT is base64url and dots: nothing to escape.
    format!("40{{\"token\":\"{token}\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    #[test]
    fn token_verifies_with_the_secret() {
        let m = Minter::new("s3cret", 3600);
        let now = now_unix();
        let t = m.mint_at(7, now);
        let mut v = Validation::new(Algorithm::HS256);
        v.set_required_spec_claims(&["exp", "sub"]);
        let d = decode::<Claims>(&t, &DecodingKey::from_secret(b"s3cret"), &v).unwrap();
        assert_eq!(
            d.claims,
            Claims {
                sub: "load-7".into(),
                exp: now + 3600
            }
        );
        assert_eq!(d.header.alg, Algorithm::HS256);
        assert!(decode::<Claims>(&t, &DecodingKey::from_secret(b"other"), &v).is_err());
    }

    #[test]
    fn connect_packet_is_json_after_40() {
        let m = Minter::new("k", 60);
        let t = m.mint(1);
        let p = connect_packet(&t);
        assert!(p.starts_with("40{"));
        let v: serde_json::Value = serde_json::from_str(&p[2..]).unwrap();
        assert_eq!(v["token"], t);
    }
}

//! JWT authentication (docs/protocol.md, "Authentication").
//!
//! This module owns: finding the token of a connection ([`pick_token`]), verifying it against
//! the configured algorithm and key ([`Verifier`]) into the [`Claims`] the gateway uses, the
//! refusal reasons sent in CONNECT_ERROR ([`Refusal`]), the `channels` claim ([`ChannelGrant`]),
//! and minting HS* tokens for the `token` command and dev runs ([`mint`], [`generate_secret`]).
//!
//! Checks run in this order: token shape and JSON (`malformed`), header algorithm
//! (`wrong_algorithm`), signature (`bad_signature`, by `jsonwebtoken`), then the claims.
//! Nothing here panics on a token, whatever its bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};

/// Largest accepted `info` claim, JSON-encoded.
pub const MAX_INFO_BYTES: usize = 4096;
/// Longer tokens are refused as `malformed` before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why a token was refused: the `reason` of the CONNECT_ERROR's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingToken,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAlgorithm,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    /// The token names a `kid` the key set (`--jwks-url`) does not hold, or
    /// has none while only a key set is configured.
    UnknownKey,
    /// The user already has `--max-connections-per-user` sockets here.
    TooManyConnections,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongAlgorithm => "wrong_algorithm",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::MissingClaim => "missing_claim",
            Refusal::UnknownKey => "unknown_key",
            Refusal::TooManyConnections => "too_many_connections",
        }
    }
}

/// Verified claims the gateway uses.
#[derive(Debug, Clone)]
pub struct Claims {
    pub sub: String,
    /// Seconds since the epoch.
    pub exp: u64,
    /// At most [`MAX_INFO_BYTES`] encoded; `null` in the token is `None`.
    pub info: Option<Value>,
    /// `None` (claim absent or `null`) allows all channels.
    pub channels: Option<ChannelGrant>,
    /// Claim `role` is `"admin"`.
    pub admin: bool,
}

/// The `channels` claim: exact names, and prefixes (patterns ending in `*`, stored without it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelGrant {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl ChannelGrant {
    /// Builds a grant from the claim's patterns; `"*"` grants everything.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut grant = ChannelGrant::default();
        for p in patterns {
            match p.as_ref().strip_suffix('*') {
                Some(prefix) => grant.prefixes.push(prefix.to_owned()),
                None => grant.exact.push(p.as_ref().to_owned()),
            }
        }
        grant
    }

    pub fn allows_channel(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// topic is a channel name or a prefix pattern ending in '*': a pattern "p*" is allowed only
    /// if every name it can match is allowed (it lies inside an allowed prefix).
    pub fn allows_topic(&self, topic: &str) -> bool {
        match topic.strip_suffix('*') {
            Some(q) => self.prefixes.iter().any(|p| q.starts_with(p.as_str())),
            None => self.allows_channel(topic),
        }
    }
}

/// How tokens are checked.
#[derive(Clone)]
pub struct AuthConfig {
    /// HS256/HS384/HS512/RS256/ES256 only.
    pub algorithm: Algorithm,
    /// For HS*.
    pub secret: Option<Vec<u8>>,
    /// More HS* secrets accepted besides `secret` (key rotation: the next,
    /// or the previous, secret).
    pub extra_secrets: Vec<Vec<u8>>,
    /// Keys by `kid` from a JWKS (`--jwks-url`), for tokens that name one.
    pub jwks: Option<std::sync::Arc<crate::jwks::Jwks>>,
    /// For RS256/ES256.
    pub public_key_pem: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf` (5 by default).
    pub leeway_secs: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "secrets",
                &(self.secret.is_some() as usize + self.extra_secrets.len()),
            )
            .field("public_key_pem", &self.public_key_pem.is_some())
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

/// Checks tokens against one configuration; cheap to clone (one per shard).
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    /// The static keys of `algorithm`, tried in order (several secrets
    /// while one is rotated); empty when only a key set is configured.
    keys: Vec<DecodingKey>,
    jwks: Option<std::sync::Arc<crate::jwks::Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

fn is_hmac(algorithm: Algorithm) -> bool {
    use Algorithm::*;
    matches!(algorithm, HS256 | HS384 | HS512)
}

impl Verifier {
    pub fn new(cfg: &AuthConfig) -> Result<Self, String> {
        let alg = cfg.algorithm;
        let pem = || {
            let missing = || format!("JWT algorithm {alg:?} needs a public key file (PEM)");
            cfg.public_key_pem.as_deref().ok_or_else(missing)
        };
        let bad_pem = |e| format!("bad {alg:?} public key PEM: {e}");
        let only_jwks = cfg.jwks.is_some() && cfg.secret.is_none() && cfg.public_key_pem.is_none();
        let keys = match alg {
            _ if only_jwks => Vec::new(),
            _ if is_hmac(alg) => {
                let all = cfg.secret.iter().chain(&cfg.extra_secrets);
                if cfg.secret.is_none() || all.clone().any(|s| s.is_empty()) {
                    return Err(format!("JWT algorithm {alg:?} needs a non-empty secret"));
                }
                all.map(|s| DecodingKey::from_secret(s)).collect()
            }
            Algorithm::RS256 => vec![DecodingKey::from_rsa_pem(pem()?).map_err(bad_pem)?],
            Algorithm::ES256 => vec![DecodingKey::from_ec_pem(pem()?).map_err(bad_pem)?],
            _ => {
                return Err(format!(
                    "unsupported JWT algorithm {alg:?} (use HS256, HS384, HS512, RS256 or ES256)"
                ))
            }
        };
        Ok(Verifier {
            algorithm: cfg.algorithm,
            keys,
            jwks: cfg.jwks.clone(),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_secs: cfg.leeway_secs,
        })
    }

    /// Verifies a token at the current time.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        self.verify_at(token, now_secs())
    }

    /// Verifies a token as if the time were `now_secs` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now_secs: u64) -> Result<Claims, Refusal> {
        if token.is_empty() {
            return Err(Refusal::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed);
        }
        let mut parts = token.split('.');
        let (header, payload, signature) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(h), Some(p), Some(s), None) => (h, p, s),
                _ => return Err(Refusal::Malformed),
            };
        let header = decode_part(header)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Refusal::Malformed)?;
        let claims = match decode_part(payload)? {
            Value::Object(map) => map,
            _ => return Err(Refusal::Malformed),
        };
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(Refusal::Malformed),
        };
        // A token naming a key of the set is checked with that key and its
        // algorithm; any other token with the static keys.
        let static_alg = alg.parse::<Algorithm>().ok() == Some(self.algorithm);
        let jwks_key = match (&self.jwks, kid) {
            (Some(jwks), Some(kid)) => match jwks.key(kid) {
                Some(k) => Some(k),
                // Not in the set, and not a token for the static keys either.
                None if self.keys.is_empty() || !static_alg => {
                    jwks.unknown_kid();
                    return Err(Refusal::UnknownKey);
                }
                None => {
                    jwks.unknown_kid();
                    None
                }
            },
            (Some(_), None) if self.keys.is_empty() => return Err(Refusal::UnknownKey),
            _ => None,
        };
        let algorithm = jwks_key.as_ref().map_or(self.algorithm, |(a, _)| *a);
        if alg.parse::<Algorithm>().ok() != Some(algorithm) {
            return Err(Refusal::WrongAlgorithm);
        }
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(Refusal::Malformed);
        }
        let message = &token[..token.len() - signature.len() - 1];
        let verified = |key: &DecodingKey| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, algorithm)
                .unwrap_or(false)
        };
        let ok = match &jwks_key {
            Some((_, key)) => verified(key),
            None => self.keys.iter().any(verified),
        };
        if !ok {
            return Err(Refusal::BadSignature);
        }
        self.check_claims(&claims, now_secs)
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// The key set, when `--jwks-url` is configured.
    pub fn jwks(&self) -> Option<&std::sync::Arc<crate::jwks::Jwks>> {
        self.jwks.as_ref()
    }

    fn check_claims(&self, c: &Map<String, Value>, now: u64) -> Result<Claims, Refusal> {
        let sub = match c.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(Refusal::MissingClaim),
        };
        let exp = c
            .get("exp")
            .and_then(seconds)
            .ok_or(Refusal::MissingClaim)?;
        if now > exp.saturating_add(self.leeway_secs) {
            return Err(Refusal::Expired);
        }
        match c.get("nbf") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let nbf = seconds(v).ok_or(Refusal::Malformed)?;
                if nbf > now.saturating_add(self.leeway_secs) {
                    return Err(Refusal::NotYetValid);
                }
            }
        }
        if let Some(iss) = &self.issuer {
            if c.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(Refusal::WrongIssuer);
            }
        }
        if let Some(aud) = &self.audience {
            let ok = match c.get("aud") {
                Some(Value::String(s)) => s == aud,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
                _ => false,
            };
            if !ok {
                return Err(Refusal::WrongAudience);
            }
        }
        let info = match c.get("info") {
            None | Some(Value::Null) => None,
            Some(v) => {
                if encoded_len(v) > MAX_INFO_BYTES {
                    return Err(Refusal::Malformed);
                }
                Some(v.clone())
            }
        };
        let channels = match c.get("channels") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => {
                let names = list
                    .iter()
                    .map(|v| v.as_str().ok_or(Refusal::Malformed))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(ChannelGrant::from_patterns(&names))
            }
            Some(_) => return Err(Refusal::Malformed),
        };
        let admin = c.get("role").and_then(Value::as_str) == Some("admin");
        Ok(Claims {
            sub,
            exp,
            info,
            channels,
            admin,
        })
    }
}

/// base64url (no padding) then JSON.
fn decode_part(part: &str) -> Result<Value, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refusal::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)
}

/// A NumericDate: a non-negative number of seconds (fractions dropped, negatives become 0).
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))
}

fn encoded_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mint an HS* token (used by `socket-gateway token` and the generated dev tokens).
pub fn mint(
    algorithm: Algorithm,
    secret: &[u8],
    sub: &str,
    admin: bool,
    ttl_secs: u64,
    info: Option<Value>,
    channels: Option<Vec<String>>,
) -> Result<String, String> {
    if !is_hmac(algorithm) {
        return Err(format!(
            "can only mint HS256/HS384/HS512 tokens, not {algorithm:?}"
        ));
    }
    if secret.is_empty() {
        return Err("cannot mint a token with an empty secret".into());
    }
    if sub.is_empty() {
        return Err("the token's subject must not be empty".into());
    }
    let now = now_secs();
    let mut claims =
        serde_json::json!({"sub": sub, "iat": now, "exp": now.saturating_add(ttl_secs)});
    if admin {
        claims["role"] = "admin".into();
    }
    if let Some(info) = info {
        if encoded_len(&info) > MAX_INFO_BYTES {
            return Err(format!(
                "info is larger than {MAX_INFO_BYTES} bytes encoded"
            ));
        }
        claims["info"] = info;
    }
    if let Some(channels) = channels {
        claims["channels"] = channels.into();
    }
    let key = EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|e| format!("cannot mint token: {e}"))
}
/// 32 random bytes, hex encoded, for a run without configured secret.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extract the token: order is auth payload {"token":...} (an &serde_json::Value or None), then
/// `Authorization: Bearer X` header value, then `token` query value. Empty values are skipped.
/// `bearer_header` is the whole header value (`Bearer X`, scheme case-insensitive); a value
/// without any space is taken as the bare token.
pub fn pick_token<'a>(
    auth_payload: Option<&'a Value>,
    bearer_header: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    let from_payload = auth_payload
        .and_then(|p| p.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let from_header = bearer_header.and_then(|h| {
        let h = h.trim();
        let token = match h.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => return None,
            None if h.eq_ignore_ascii_case("bearer") => return None,
            None => h,
        };
        Some(token).filter(|t| !t.is_empty())
    });
    from_payload
        .or(from_header)
        .or(query_token.filter(|t| !t.is_empty()))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;

//! JWT authentication (contract §2 and §8).
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
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256/HS384/HS512/RS256/ES256 only.
    pub algorithm: Algorithm,
    /// For HS*.
    pub secret: Option<Vec<u8>>,
    /// For RS256/ES256.
    pub public_key_pem: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf` (5 by default).
    pub leeway_secs: u64,
}

/// Checks tokens against one configuration; cheap to clone (one per shard).
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
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
        let key = match alg {
            _ if is_hmac(alg) => match cfg.secret.as_deref() {
                Some(s) if !s.is_empty() => DecodingKey::from_secret(s),
                _ => return Err(format!("JWT algorithm {alg:?} needs a non-empty secret")),
            },
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem()?).map_err(bad_pem)?,
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem()?).map_err(bad_pem)?,
            _ => {
                return Err(format!(
                    "unsupported JWT algorithm {alg:?} (use HS256, HS384, HS512, RS256 or ES256)"
                ))
            }
        };
        Ok(Verifier {
            algorithm: cfg.algorithm,
            key,
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
        if alg.parse::<Algorithm>().ok() != Some(self.algorithm) {
            return Err(Refusal::WrongAlgorithm);
        }
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(Refusal::Malformed);
        }
        let message = &token[..token.len() - signature.len() - 1];
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &self.key, self.algorithm)
        {
            Ok(true) => {}
            _ => return Err(Refusal::BadSignature),
        }
        self.check_claims(&claims, now_secs)
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
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
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm::*;
    use serde_json::json;

    const NOW: u64 = 1000;
    const SECRET: &[u8] = b"test-secret";
    const RSA_PUB: &[u8] = include_bytes!("../tests/keys/rsa_public.pem");
    const EC_PUB: &[u8] = include_bytes!("../tests/keys/ec_public.pem");
    const GOOD: &str = r#"{"sub":"u1","exp":1060}"#;

    /// `verifier expected extra-claims`: the extra claims are merged into GOOD (null removes
    /// one), signed with HS256 and checked at time 1000. Verifiers: `hs` (leeway 5), `strict`
    /// (leeway 0), `scoped` (issuer "gw", audience "api").
    const CLAIM_CASES: &str = r#"
        hs      ok             {}
        hs      ok             {"exp": 995}
        hs      expired        {"exp": 994}
        hs      expired        {"exp": -1}
        hs      ok             {"exp": 1000.5}
        hs      ok             {"nbf": 1005}
        hs      not_yet_valid  {"nbf": 1006}
        hs      malformed      {"nbf": "soon"}
        strict  ok             {"exp": 1000, "nbf": 1000}
        strict  expired        {"exp": 999}
        strict  not_yet_valid  {"nbf": 1001}
        hs      missing_claim  {"sub": null}
        hs      missing_claim  {"sub": ""}
        hs      missing_claim  {"sub": 5}
        hs      missing_claim  {"exp": null}
        hs      missing_claim  {"exp": "1060"}
        hs      missing_claim  {"exp": [1]}
        hs      ok             {"iss": "x", "aud": "y"}
        scoped  ok             {"iss": "gw", "aud": "api"}
        scoped  ok             {"iss": "gw", "aud": ["x", "api"]}
        scoped  wrong_issuer   {"aud": "api"}
        scoped  wrong_issuer   {"iss": "x", "aud": "api"}
        scoped  wrong_audience {"iss": "gw"}
        scoped  wrong_audience {"iss": "gw", "aud": "x"}
        scoped  wrong_audience {"iss": "gw", "aud": ["x"]}
        scoped  wrong_audience {"iss": "gw", "aud": 5}
        hs      malformed      {"channels": "chat:*"}
        hs      malformed      {"channels": ["a", 1]}
        hs      malformed      {"channels": {"a": 1}}"#;

    /// `header | claims | signature`, base64url-encoded into tokens refused as malformed.
    const MALFORMED: &str = r#"
        not json        | {"sub":"u1","exp":1060} | x
        {"typ":"JWT"}   | {"sub":"u1","exp":1060} | x
        {"alg":5}       | {"sub":"u1","exp":1060} | x
        {"alg":"HS256"} | not json                | x
        {"alg":"HS256"} | [1]                     | x
        {"alg":"HS256"} | {"sub":"u1","exp":1060} | a+b/
        {"alg":"HS256"} | {"sub":"u1","exp":1060} | YQ=="#;

    fn rows(table: &str) -> impl Iterator<Item = &str> {
        table.lines().map(str::trim).filter(|l| !l.is_empty())
    }

    fn verifier(algorithm: Algorithm, edit: impl FnOnce(&mut AuthConfig)) -> Verifier {
        let public_key_pem = Some(if algorithm == ES256 { EC_PUB } else { RSA_PUB }.to_vec());
        let (secret, issuer, audience) = (Some(SECRET.to_vec()), None, None);
        let mut c = AuthConfig {
            algorithm,
            secret,
            public_key_pem,
            issuer,
            audience,
            leeway_secs: 5,
        };
        edit(&mut c);
        Verifier::new(&c).unwrap()
    }

    fn sign(alg: Algorithm, claims: &str) -> String {
        let key = match alg {
            RS256 => EncodingKey::from_rsa_pem(include_bytes!("../tests/keys/rsa_private.pem")),
            ES256 => EncodingKey::from_ec_pem(include_bytes!("../tests/keys/ec_private.pem")),
            _ => Ok(EncodingKey::from_secret(SECRET)),
        };
        let key = key.unwrap();
        let claims: Value = serde_json::from_str(claims).unwrap();
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    }

    fn check(v: &Verifier, extra: Value) -> Result<Claims, Refusal> {
        let mut claims: Value = serde_json::from_str(GOOD).unwrap();
        for (k, val) in extra.as_object().unwrap() {
            claims[k] = val.clone();
            if val.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            }
        }
        v.verify_at(&sign(HS256, &claims.to_string()), NOW)
    }

    fn reason(r: Result<Claims, Refusal>) -> &'static str {
        r.map_or_else(Refusal::as_str, |_| "ok")
    }

    fn raw(header: &str, payload: &str, sig: &str) -> String {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{sig}", enc(header), enc(payload))
    }

    #[test]
    fn claim_checks() {
        let (hs, strict) = (
            verifier(HS256, |_| ()),
            verifier(HS256, |c| c.leeway_secs = 0),
        );
        let scoped = verifier(HS256, |c| {
            (c.issuer, c.audience) = (Some("gw".into()), Some("api".into()));
        });
        for line in rows(CLAIM_CASES) {
            let (kind, rest) = line.split_once(' ').unwrap();
            let (expected, extra) = rest.trim_start().split_once(' ').unwrap();
            let v = [("hs", &hs), ("strict", &strict), ("scoped", &scoped)];
            let v = v.iter().find(|(k, _)| *k == kind).unwrap().1;
            assert_eq!(
                reason(check(v, serde_json::from_str(extra).unwrap())),
                expected,
                "{line}"
            );
        }
        assert_eq!(check(&hs, json!({"exp": 1000.9})).unwrap().exp, 1000);
        assert_eq!(hs.leeway_secs(), 5);
    }

    #[test]
    fn refusal_names_and_token_shapes() {
        let names = "missing_token malformed bad_signature expired not_yet_valid \
                     wrong_algorithm wrong_issuer wrong_audience missing_claim";
        use Refusal::*;
        let all = [
            MissingToken,
            Malformed,
            BadSignature,
            Expired,
            NotYetValid,
            WrongAlgorithm,
        ];
        let all = all
            .into_iter()
            .chain([WrongIssuer, WrongAudience, MissingClaim]);
        assert!(all.map(Refusal::as_str).eq(names.split_whitespace()));
        let v = verifier(HS256, |_| ());
        assert_eq!(reason(v.verify_at("", NOW)), "missing_token");
        let too_long = "x".repeat(MAX_TOKEN_BYTES + 1);
        let padded = raw(r#"{"alg":"HS256"}"#, GOOD, "x").replace('.', "=.");
        let literal = [
            "abc", "a.b", "a.b.c.d", "!!.e30.x", "é.e30.x", &too_long, &padded,
        ];
        let encoded = rows(MALFORMED).map(|l| l.split(" | ").collect::<Vec<_>>());
        let encoded = encoded.map(|r| raw(r[0], r[1], r[2]));
        for t in literal.into_iter().map(str::to_owned).chain(encoded) {
            assert_eq!(reason(v.verify_at(&t, NOW)), "malformed", "{t}");
        }
        let big = "x".repeat(MAX_INFO_BYTES - 1); // 4097 bytes once quoted
        assert_eq!(reason(check(&v, json!({ "info": big }))), "malformed");
        let fits = json!("x".repeat(MAX_INFO_BYTES - 2));
        assert_eq!(check(&v, json!({ "info": fits })).unwrap().info, Some(fits));
    }

    #[test]
    fn every_algorithm_and_signature_checks() {
        let other = URL_SAFE_NO_PAD.encode(r#"{"sub":"u2","exp":1060}"#);
        for alg in [HS256, HS384, HS512, RS256, ES256] {
            let (v, token) = (verifier(alg, |_| ()), sign(alg, GOOD));
            let c = v.verify_at(&token, NOW).unwrap();
            assert_eq!(
                (c.sub.as_str(), c.exp, c.admin),
                ("u1", 1060, false),
                "{alg:?}"
            );
            assert!(c.info.is_none() && c.channels.is_none());
            let parts: Vec<&str> = token.split('.').collect();
            let forged = format!("{}.{other}.{}", parts[0], parts[2]);
            assert_eq!(
                reason(v.verify_at(&forged, NOW)),
                "bad_signature",
                "{alg:?}"
            );
            let unsigned = format!("{}.{}.", parts[0], parts[1]);
            assert_eq!(reason(v.verify_at(&unsigned, NOW)), "bad_signature");
        }
        let other_secret = verifier(HS256, |c| c.secret = Some(b"other".to_vec()));
        assert_eq!(
            reason(other_secret.verify_at(&sign(HS256, GOOD), NOW)),
            "bad_signature"
        );
    }

    #[test]
    fn wrong_algorithm() {
        let refuse = |alg, token: &str| reason(verifier(alg, |_| ()).verify_at(token, NOW));
        assert_eq!(refuse(HS256, &sign(HS384, GOOD)), "wrong_algorithm");
        assert_eq!(refuse(ES256, &sign(RS256, GOOD)), "wrong_algorithm");
        for alg in [HS256, RS256, ES256] {
            assert_eq!(
                refuse(alg, &raw(r#"{"alg":"none"}"#, GOOD, "")),
                "wrong_algorithm"
            );
        }
        // HS/RS confusion: an HS256 token keyed with the RSA public key's bytes.
        let key = EncodingKey::from_secret(RSA_PUB);
        let claims: Value = serde_json::from_str(GOOD).unwrap();
        let confused = jsonwebtoken::encode(&Header::new(HS256), &claims, &key).unwrap();
        assert_eq!(refuse(RS256, &confused), "wrong_algorithm");
    }

    #[test]
    fn optional_claims_and_real_clock() {
        let v = verifier(HS256, |_| ());
        let c = check(
            &v,
            json!({"role": "admin", "info": {"n": 1}, "channels": ["a"]}),
        )
        .unwrap();
        assert!(c.admin && c.info == Some(json!({"n": 1})));
        assert!(c.channels.unwrap().allows_channel("a"));
        assert!(!check(&v, json!({"role": "user"})).unwrap().admin);
        let c = check(&v, json!({"channels": null, "info": null})).unwrap();
        assert!(c.channels.is_none() && c.info.is_none());
        let none = check(&v, json!({"channels": []}))
            .unwrap()
            .channels
            .unwrap();
        assert!(!none.allows_channel("a") && !none.allows_topic("*"));
        let token = mint(HS256, SECRET, "u1", false, 60, None, None).unwrap();
        assert!(v.verify(&token).is_ok());
        assert_eq!(reason(v.verify(&sign(HS256, GOOD))), "expired");
    }

    #[test]
    fn channel_grants() {
        let g = ChannelGrant::from_patterns(&["chat:*", "a", "news:sport"]);
        for name in ["chat:x", "chat:", "a", "news:sport"] {
            assert!(g.allows_channel(name) && g.allows_topic(name), "{name}");
        }
        for name in ["chat", "ab", "b", "news:"] {
            assert!(!g.allows_channel(name) && !g.allows_topic(name), "{name}");
        }
        for topic in ["chat:room*", "chat:*"] {
            assert!(g.allows_topic(topic), "{topic}");
        }
        for topic in ["chat*", "*", "a*", "news:*", "news:sport*"] {
            assert!(!g.allows_topic(topic), "{topic}");
        }
        let all = ChannelGrant::from_patterns(&["*"]);
        assert!(all.allows_topic("*") && all.allows_channel("x") && all.allows_topic("x*"));
    }

    #[test]
    fn config_errors() {
        type Bytes = Option<&'static [u8]>;
        let cases: [(Algorithm, Bytes, Bytes); 8] = [
            (HS256, None, None),
            (HS512, Some(b""), None),
            (RS256, None, None),
            (RS256, None, Some(b"garbage")),
            (RS256, None, Some(EC_PUB)),
            (ES256, None, Some(RSA_PUB)),
            (PS256, Some(SECRET), Some(RSA_PUB)),
            (EdDSA, Some(SECRET), Some(EC_PUB)),
        ];
        for (algorithm, secret, pem) in cases {
            let (secret, public_key_pem) = (secret.map(<[u8]>::to_vec), pem.map(<[u8]>::to_vec));
            let (issuer, audience, leeway_secs) = (None, None, 5);
            let c = AuthConfig {
                algorithm,
                secret,
                public_key_pem,
                issuer,
                audience,
                leeway_secs,
            };
            assert!(!Verifier::new(&c).err().unwrap().is_empty(), "{c:?}");
        }
    }

    #[test]
    fn minting() {
        let (info, channels) = (Some(json!({"name": "Ann"})), Some(vec!["c:*".into()]));
        let token = mint(HS384, SECRET, "ann", true, 60, info, channels).unwrap();
        let c = verifier(HS384, |_| ()).verify(&token).unwrap();
        assert!(c.sub == "ann" && c.admin && c.info == Some(json!({"name": "Ann"})));
        assert!(c.channels.unwrap().allows_topic("c:x*"));
        assert!(mint(RS256, SECRET, "a", false, 60, None, None).is_err());
        assert!(mint(HS256, b"", "a", false, 60, None, None).is_err());
        assert!(mint(HS256, SECRET, "", false, 60, None, None).is_err());
        let huge = Some(json!("x".repeat(MAX_INFO_BYTES)));
        assert!(mint(HS256, SECRET, "a", false, 60, huge, None).is_err());
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.len() == 64 && a != b && a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn token_sources_in_order() {
        let payload = json!({"token": "P"});
        let (p, h, q) = (Some(&payload), Some("Bearer H"), Some("Q"));
        assert_eq!(pick_token(p, h, q), Some("P"));
        assert_eq!(pick_token(None, h, q), Some("H"));
        assert_eq!(pick_token(None, None, q), Some("Q"));
        assert_eq!(pick_token(None, None, None), None);
        for p in &[
            json!({"token": ""}),
            json!({"token": 5}),
            json!("P"),
            json!(null),
        ] {
            assert_eq!(pick_token(Some(p), h, q), Some("H"), "{p}");
        }
        assert_eq!(pick_token(None, Some("bearer  H2 "), q), Some("H2"));
        assert_eq!(pick_token(None, Some("H3"), q), Some("H3"));
        for h in ["Basic abc", "Bearer ", "bearer", "", "  "] {
            assert_eq!(pick_token(None, Some(h), q), Some("Q"), "{h:?}");
        }
        assert_eq!(pick_token(None, Some("Basic abc"), Some("")), None);
    }
}

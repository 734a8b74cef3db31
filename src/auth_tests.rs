//! Unit tests of `auth`: every refusal reason, every algorithm, grants.
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
        extra_secrets: Vec::new(),
        jwks: None,
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
                 wrong_algorithm wrong_issuer wrong_audience missing_claim unknown_key";
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
        .chain([WrongIssuer, WrongAudience, MissingClaim, UnknownKey]);
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
            extra_secrets: Vec::new(),
            jwks: None,
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

#[test]
fn two_secrets_while_rotating() {
    let v = verifier(HS256, |c| {
        c.extra_secrets = vec![b"the-next-secret".to_vec()]
    });
    for secret in [SECRET, b"the-next-secret".as_slice()] {
        let t = mint(HS256, secret, "ann", false, 60, None, None).unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "ann");
    }
    let other = mint(HS256, b"another", "ann", false, 60, None, None).unwrap();
    assert_eq!(reason(v.verify(&other)), "bad_signature");
    let empty = AuthConfig {
        extra_secrets: vec![Vec::new()],
        ..verifier_config(HS256)
    };
    assert!(
        Verifier::new(&empty).is_err(),
        "an empty second secret is refused"
    );
}

fn verifier_config(algorithm: Algorithm) -> AuthConfig {
    AuthConfig {
        algorithm,
        secret: Some(SECRET.to_vec()),
        extra_secrets: Vec::new(),
        jwks: None,
        public_key_pem: None,
        issuer: None,
        audience: None,
        leeway_secs: 5,
    }
}

//! Fuzzes JWT parsing and verification (`socket_gateway::auth::Verifier`) on arbitrary strings,
//! with an HS256 verifier and an RS256 verifier (the tests' public key), and `pick_token`.
//! Invariants: nothing panics; a token that verifies has a non-empty `sub`, an unexpired `exp`
//! and an `info` of at most 4 KiB (the seeds hold one valid HS256 token, so mutations of it reach
//! the claim checks).
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use socket_gateway::auth::{pick_token, AuthConfig, Verifier};

fn verifiers() -> &'static [Verifier; 2] {
    static V: OnceLock<[Verifier; 2]> = OnceLock::new();
    V.get_or_init(|| {
        let hs = AuthConfig {
            algorithm: Algorithm::HS256,
            secret: Some(b"fuzz-secret".to_vec()),
            public_key_pem: None,
            issuer: Some("iss".into()),
            audience: Some("aud".into()),
            leeway_secs: 5,
        };
        let rs = AuthConfig {
            algorithm: Algorithm::RS256,
            secret: None,
            public_key_pem: Some(include_bytes!("../../tests/keys/rsa_public.pem").to_vec()),
            issuer: None,
            audience: None,
            leeway_secs: 5,
        };
        [Verifier::new(&hs).unwrap(), Verifier::new(&rs).unwrap()]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for v in verifiers() {
        if let Ok(c) = v.verify(s) {
            assert!(!c.sub.is_empty(), "verified without sub: {s:?}");
            assert!(c.exp + v.leeway_secs() >= std::time::UNIX_EPOCH.elapsed().unwrap().as_secs());
            if let Some(info) = &c.info {
                assert!(serde_json::to_vec(info).unwrap().len() <= socket_gateway::auth::MAX_INFO_BYTES);
            }
        }
        let now = data.len() as u64 * 1_000_003;
        let _ = v.verify_at(s, now);
        let _ = v.verify_at(s, u64::MAX);
    }
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid -= 1;
    }
    let (a, b) = s.split_at(mid);
    let payload = serde_json::json!({ "token": a });
    let _ = pick_token(Some(&payload), Some(b), Some(s));
    let _ = pick_token(None, Some(s), None);
});

//! Keys from a JSON Web Key Set (`--jwks-url`): what identity providers
//! (Auth0, Keycloak, Cognito, Firebase…) publish and rotate.
//!
//! This module owns the key cache and the thread that fills it. Shards only
//! read the cache (a read lock held for one `Arc` clone) and, on a token
//! whose `kid` is unknown, post a refresh request without waiting: no shard
//! ever waits on the network. The thread fetches the set with an HTTP GET
//! (`ureq`), keeps the previous keys when a fetch fails, refreshes in the
//! background before the set expires (`--jwks-refresh`, or the response's
//! `Cache-Control: max-age` when shorter), and fetches at most once per
//! `--jwks-min-interval` however many unknown `kid`s arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS document read, in bytes.
const MAX_BODY: u64 = 1 << 20;
/// Retry delays after a failed fetch: from the first, doubling to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub url: String,
    /// Refetch this long after a success (sooner when `max-age` says so).
    pub refresh: Duration,
    /// At most one fetch per this long for unknown `kid`s.
    pub min_interval: Duration,
    /// Bound of one fetch (connect, send, read).
    pub timeout: Duration,
}

type Keys = HashMap<String, (Algorithm, DecodingKey)>;

/// The cache and its health, shared by the shards and the fetching thread.
pub struct Jwks {
    keys: RwLock<Arc<Keys>>,
    refresh: SyncSender<()>,
    /// A key set was loaded at least once.
    pub loaded: AtomicBool,
    /// The last fetch succeeded.
    pub up: AtomicBool,
    pub fetches: AtomicU64,
    pub failures: AtomicU64,
    /// Tokens whose `kid` was not in the set.
    pub unknown_kids: AtomicU64,
    pub last_error: Mutex<String>,
}

impl Jwks {
    /// Starts the fetching thread and waits (this thread, not a shard) up to
    /// one `timeout` for the first key set.
    pub fn start(cfg: JwksConfig) -> std::io::Result<Arc<Jwks>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let jwks = Arc::new(Jwks {
            keys: RwLock::new(Arc::default()),
            refresh: tx,
            loaded: AtomicBool::new(false),
            up: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            unknown_kids: AtomicU64::new(0),
            last_error: Mutex::new("not fetched yet".into()),
        });
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let j = jwks.clone();
        std::thread::Builder::new()
            .name("jwks".into())
            .spawn(move || run(&j, &cfg, &rx, first_tx))?;
        let _ = first_rx.recv_timeout(Duration::from_secs(10));
        Ok(jwks)
    }

    /// The key and algorithm of `kid`, if the set has it.
    pub fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.keys.read().map(|k| k.clone()).ok()?;
        keys.get(kid).cloned()
    }

    /// A token named a `kid` the set lacks: ask for a refresh (never waits;
    /// requests coalesce, and the thread rate-limits them).
    pub fn unknown_kid(&self) {
        self.unknown_kids.fetch_add(1, Ordering::Relaxed);
        match self.refresh.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |k| k.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last fetch's error, when it failed.
    pub fn error(&self) -> Option<String> {
        if self.up.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        )
    }

    fn store(&self, keys: Keys) {
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
        self.loaded.store(true, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
    }

    fn failed(&self, e: String) {
        tracing::warn!("jwks: {e}");
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = e;
        }
    }
}

/// The fetching thread.
fn run(jwks: &Jwks, cfg: &JwksConfig, rx: &Receiver<()>, first: std::sync::mpsc::Sender<()>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(cfg.timeout)
        .user_agent(concat!("socket-gateway/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut next = Instant::now();
    let mut backoff = BACKOFF.0;
    let mut last: Option<Instant> = None;
    let mut first = Some(first);
    loop {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                // An unknown kid: fetch now, but not more often than allowed.
                if let Some(t) = last {
                    std::thread::sleep(cfg.min_interval.saturating_sub(t.elapsed()));
                }
                while rx.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        last = Some(Instant::now());
        jwks.fetches.fetch_add(1, Ordering::Relaxed);
        match fetch(&agent, &cfg.url) {
            Ok((keys, max_age)) => {
                tracing::debug!(keys = keys.len(), "jwks: key set loaded");
                jwks.store(keys);
                backoff = BACKOFF.0;
                let every = max_age.map_or(cfg.refresh, |m| m.min(cfg.refresh));
                next = Instant::now() + every.max(cfg.min_interval);
            }
            Err(e) => {
                jwks.failed(e);
                next = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
    }
}

/// One GET of the set: its usable keys and the response's `max-age`.
fn fetch(agent: &ureq::Agent, url: &str) -> Result<(Keys, Option<Duration>), String> {
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let max_age = resp.header("cache-control").and_then(max_age);
    let mut body = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(resp.into_reader(), MAX_BODY + 1),
        &mut body,
    )
    .map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() as u64 > MAX_BODY {
        return Err(format!("GET {url}: the key set is over {MAX_BODY} bytes"));
    }
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not a JWK set: {e}"))?;
    let keys = usable(&set);
    if keys.is_empty() {
        return Err(format!(
            "GET {url}: no usable key (RS256, ES256 or EdDSA, with a kid)"
        ));
    }
    Ok((keys, max_age))
}

/// The keys of a set this gateway verifies with: a `kid`, and RS256, ES256
/// (P-256) or EdDSA (Ed25519), from `alg` or else from the key's type.
fn usable(set: &JwkSet) -> Keys {
    let mut keys = Keys::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let Some(alg) = algorithm(jwk) else { continue };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (alg, key));
        }
    }
    keys
}

fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDSA => Some(by_type),
        Some(_) => None,
    }
}

/// `max-age` of a `Cache-Control` header.
fn max_age(v: &str) -> Option<Duration> {
    v.split(',').find_map(|d| {
        let (k, n) = d.trim().split_once('=')?;
        k.eq_ignore_ascii_case("max-age")
            .then(|| n.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("Max-Age=5"), Some(Duration::from_secs(5)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=x"), None);
    }

    #[test]
    fn usable_keys() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
        ]}))
        .unwrap();
        let keys = usable(&set);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["ed"].0, Algorithm::EdDSA);
    }
}

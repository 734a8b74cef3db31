//! Hot paths with no network: the gateway's own cost of one publish (the
//! client's event text parsed and checked, its frame encoded), a publish
//! fanned out to 10,000 local members and to 10,000 subscriptions (time and
//! heap allocations per delivery), a publish crossing the cross-shard
//! mailbox, what the metrics cost per delivery written, and JWT verification.
//!
//! Allocations are counted by a wrapping global allocator, so the figure is
//! exact, not sampled: the fan-out must stay at zero allocations per
//! delivery (each recipient gets a refcount of the one encoded frame; a
//! subscription also a refcount of its own `subscriptionId` tail).

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use proto::engineio::Outgoing;
use shards::channels::Channels;
use shards::{Member, Outbox, Publication, RuntimeConfig, SocketKey, Topic};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MEMBERS: usize = 10_000;

/// `n` sockets on one channel: joined as members, or (`subscribe`) each
/// with a subscription of its own id, whose frame is the shared one plus
/// the socket's own `subscriptionId` tail.
fn sockets(n: usize, subscribe: bool) -> (Channels, Vec<Rc<Member>>, Arc<str>) {
    let mut c = Channels::default();
    let ch: Arc<str> = "chat:room1".into();
    let ms: Vec<Rc<Member>> = (0..n as u64)
        .map(|seq| {
            let key = SocketKey { shard: 0, seq };
            Rc::new(Member::new(
                key,
                key.wire("bench").into(),
                format!("user{seq}").into(),
                None,
                false,
                Rc::new(Outbox::new(1024, usize::MAX)),
            ))
        })
        .collect();
    for (i, m) in ms.iter().enumerate() {
        if subscribe {
            let id: Arc<str> = format!("sub-{i}").into();
            c.subscribe(id, m.clone(), Topic::Exact(ch.clone()), None, 0);
        } else {
            c.join(&ch, m, 0, 0);
        }
    }
    (c, ms, ch)
}

const FRAME: &[u8] = br#"42["event",{"id":"01a2126ceabc00000000-1-bench","channel":"chat:room1","event":"message","data":{"text":"Hello everyone!"},"from":{"socketId":"bench-0-1","userId":"user123"},"ts":1764000000000}]"#;

fn publication(channel: &Arc<str>) -> Publication {
    Publication {
        channel: channel.clone(),
        event: "message".into(),
        text: Bytes::from_static(FRAME),
        attachments: Vec::new(),
        data: 0..0,
        skip_user: None,
        presence: None,
        obj_end: FRAME.len() - 1,
    }
}

/// A chat message as a client sends it.
const SMALL_PUBLISH: &str =
    r#"["publish",{"channel":"chat:room1","event":"message","data":{"text":"Hello everyone!"}}]"#;

/// A ~1 KiB structured payload: nested objects and arrays, numbers, escapes.
fn large_publish() -> String {
    let items: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"sku":"item-{i}","qty":{i},"price":1{i}.50,"tags":["a","b\u00e9"],"note":"line\nbreak"}}"#
            )
        })
        .collect();
    format!(
        r#"["publish",{{"channel":"orders:eu","event":"order","data":{{"order":{{"id":12345678901234567890123,"items":[{}]}},"n":2}}}}]"#,
        items.join(",")
    )
}

/// The gateway-side cost of one publish, before any delivery.
fn publish_cost(c: &mut Criterion) {
    let from = Member::new(
        SocketKey { shard: 0, seq: 1 },
        "bench-0-1".into(),
        "user123".into(),
        None,
        false,
        Rc::new(Outbox::new(1, usize::MAX)),
    );
    let large = large_publish();
    let mut g = c.benchmark_group("publish_cost");
    for (name, text) in [("small", SMALL_PUBLISH), ("1k", large.as_str())] {
        socket_gateway::app::publish::publish_event_text(text, &from, "01a2126ceabc-1", 1)
            .expect("a valid publish");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                socket_gateway::app::publish::publish_event_text(
                    black_box(text),
                    &from,
                    "01a2126ceabc-1",
                    1_764_000_000_000,
                )
            })
        });
    }
    g.finish();
}

/// What a delivery written to a socket costs in metrics (counters, and the
/// delivery latency read from the frame's `ts` into the histogram): paid once
/// per recipient, so it is part of the fan-out's per-delivery time.
fn delivery_metrics(c: &mut Criterion) {
    let m = socket_gateway::metrics::Metrics::new(0, &Arc::from("bench"));
    let frame = Outgoing::Text(Bytes::from_static(
        br#"42["event",{"id":"01a2126ceabc-1","channel":"chat:room1","event":"message","data":{"text":"Hello everyone!","sender":"user123"},"from":{"socketId":"k3j4h5g6f7d8s9a0","userId":"user123"},"ts":1764000000000},"01a2126ceabc-1"]"#,
    ));
    // Every recipient of a fan-out gets the same frame.
    c.bench_function("delivery_metrics/packet_out", |b| {
        b.iter(|| m.packet_out(black_box(&frame)))
    });
    // Each delivery another publication's frame (two alternated): the
    // frame's `ts` read every time.
    let other = match &frame {
        Outgoing::Text(t) => Outgoing::Text(Bytes::copy_from_slice(t)),
        _ => unreachable!(),
    };
    let frames = [frame, other];
    let mut i = 0;
    c.bench_function("delivery_metrics/packet_out_new_frame", |b| {
        b.iter(|| {
            i ^= 1;
            m.packet_out(black_box(&frames[i]))
        })
    });
}

fn drain(ms: &[Rc<Member>], scratch: &mut Vec<Outgoing>) {
    for m in ms {
        m.outbox().drain_into(scratch, usize::MAX);
        scratch.clear();
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    for (name, subscribe) in [
        ("publish_to_10k_local_members", false),
        ("publish_to_10k_local_subscriptions", true),
    ] {
        let (channels, ms, ch) = sockets(MEMBERS, subscribe);
        let p = publication(&ch);
        let mut scratch = Vec::with_capacity(16);
        // Warm the outboxes' storage once, then count allocations of one
        // publish.
        channels.deliver(&p);
        drain(&ms, &mut scratch);
        channels.deliver(&p);
        drain(&ms, &mut scratch);
        let before = ALLOCS.load(Ordering::Relaxed);
        let n = channels.deliver(&p);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        drain(&ms, &mut scratch);
        assert_eq!(n, MEMBERS);
        println!(
            "fanout/{name}: {allocs} allocations for {n} deliveries ({:.4} per delivery)",
            allocs as f64 / n as f64
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                || drain(&ms, &mut scratch),
                |_| channels.deliver(&p),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// One publish from shard 0 to 1,000 members on shard 1, through the
/// mailbox, timed end to end on real executors.
fn mailbox(c: &mut Criterion) {
    let mut g = c.benchmark_group("mailbox");
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("10k_publishes_cross_shard", |b| {
        b.iter_custom(|iters| {
            let total = Arc::new(AtomicU64::new(0));
            for _ in 0..iters {
                total.fetch_add(cross_shard_run(10_000).as_nanos() as u64, Ordering::Relaxed);
            }
            Duration::from_nanos(total.load(Ordering::Relaxed))
        })
    });
    g.throughput(Throughput::Elements(2 * BOTH_MEMBERS * BOTH_PUBLISHES));
    g.bench_function("both_shards_deliver", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| both_shards_run()).sum())
    });
    g.finish();
}

/// Two unpinned shards, for the mailbox benches.
fn two_shards() -> RuntimeConfig {
    RuntimeConfig {
        shards: 2,
        cpus: None,
        pin: false,
        io_memory: 1 << 20,
        mailbox_capacity: 1024,
        instance: "b".into(),
    }
}

/// A member of `shard` whose outbox holds `capacity` packets.
fn shard_member(shard: &shards::Shard, capacity: usize) -> Rc<Member> {
    let key = shard.next_key();
    Rc::new(Member::new(
        key,
        key.wire("b").into(),
        "u".into(),
        None,
        false,
        Rc::new(Outbox::new(capacity, usize::MAX)),
    ))
}

const BOTH_MEMBERS: u64 = 200;
const BOTH_PUBLISHES: u64 = 1_000;

/// Shard 0 publishes to a channel with [`BOTH_MEMBERS`] members on each of
/// two shards, so both deliver the same publications at the same time (the
/// frames on the heap, as the gateway's are); timed from the first publish
/// to the last delivery on either shard.
fn both_shards_run() -> Duration {
    use std::sync::atomic::AtomicUsize;
    let joined = Arc::new(AtomicUsize::new(0));
    let (start, end) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let base = Instant::now();
    let (j, s, e) = (joined.clone(), start.clone(), end.clone());
    let handles = shards::start(two_shards(), move |shard| {
        let (joined, start, end) = (j.clone(), s.clone(), e.clone());
        async move {
            let ch: Arc<str> = "chat:room1".into();
            let mut ms = Vec::new();
            for _ in 0..BOTH_MEMBERS {
                let m = shard_member(&shard, BOTH_PUBLISHES as usize + 1);
                shard.join(&ch, &m).await;
                ms.push(m);
            }
            joined.fetch_add(1, Ordering::SeqCst);
            while joined.load(Ordering::SeqCst) < 2 {
                shards::rt::sleep(Duration::from_micros(100)).await;
            }
            if shard.id() == 0 {
                start.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                for _ in 0..BOTH_PUBLISHES {
                    let mut p = publication(&ch);
                    p.text = Bytes::copy_from_slice(FRAME);
                    shard.publish(p).await;
                }
            }
            while ms.last().unwrap().outbox().len() < BOTH_PUBLISHES as usize {
                shards::rt::sleep(Duration::from_micros(50)).await;
            }
            end.fetch_max(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
        }
    })
    .expect("shards start");
    for h in handles {
        h.join().expect("shard");
    }
    Duration::from_nanos(end.load(Ordering::SeqCst) - start.load(Ordering::SeqCst))
}

fn cross_shard_run(publishes: usize) -> Duration {
    use std::sync::atomic::AtomicBool;
    let ready = Arc::new(AtomicBool::new(false));
    let elapsed = Arc::new(AtomicU64::new(0));
    let (r, e) = (ready.clone(), elapsed.clone());
    let handles = shards::start(two_shards(), move |shard| {
        let (ready, elapsed) = (r.clone(), e.clone());
        async move {
            let ch: Arc<str> = "c".into();
            if shard.id() == 1 {
                let m = shard_member(&shard, publishes + 1);
                shard.join(&ch, &m).await;
                ready.store(true, Ordering::SeqCst);
                while m.outbox().len() < publishes {
                    shards::rt::sleep(Duration::from_micros(200)).await;
                }
            } else {
                while !ready.load(Ordering::SeqCst) {
                    shards::rt::sleep(Duration::from_millis(1)).await;
                }
                let start = Instant::now();
                for _ in 0..publishes {
                    shard.publish(publication(&ch)).await;
                }
                elapsed.store(start.elapsed().as_nanos() as u64, Ordering::SeqCst);
            }
        }
    })
    .expect("shards start");
    for h in handles {
        h.join().expect("shard");
    }
    Duration::from_nanos(elapsed.load(Ordering::SeqCst))
}

fn jwt(c: &mut Criterion) {
    use socket_gateway::auth::{mint, AuthConfig, Verifier};
    let alg = jsonwebtoken::Algorithm::HS256;
    let cfg = AuthConfig {
        algorithm: alg,
        secret: Some(b"bench-secret".to_vec()),
        extra_secrets: Vec::new(),
        jwks: None,
        public_key_pem: None,
        issuer: None,
        audience: None,
        leeway_secs: 5,
    };
    let v = Verifier::new(&cfg).expect("verifier");
    let token = mint(
        alg,
        b"bench-secret",
        "user123",
        false,
        3600,
        Some(serde_json::json!({"name": "A"})),
        None,
    )
    .expect("token");
    c.bench_function("jwt/verify_hs256", |b| {
        b.iter(|| v.verify(&token).expect("valid"))
    });
}

criterion_group!(
    benches,
    publish_cost,
    fanout,
    mailbox,
    delivery_metrics,
    jwt
);
criterion_main!(benches);

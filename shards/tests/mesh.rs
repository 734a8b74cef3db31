//! In-process multi-shard tests: real executors, real mailboxes, no network.
//! A publish on one shard reaches members and subscriptions on the other;
//! counts and member lists gather across shards; direct messages route by key.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::engineio::Outgoing;
use shards::{Member, Outbox, Publication, RuntimeConfig, Shard, ShardHandle, SocketKey, Topic};

fn member(shard: &Shard, user: &str) -> Rc<Member> {
    let key = shard.next_key();
    Rc::new(Member::new(
        key,
        key.wire(shard.instance()).into(),
        user.into(),
        None,
        false,
        Rc::new(Outbox::new(1000, usize::MAX)),
    ))
}

fn publication(channel: &str, text: &'static str) -> Publication {
    Publication {
        channel: channel.into(),
        event: "m".into(),
        text: Bytes::from_static(text.as_bytes()),
        attachments: vec![],
        data: 0..0,
        skip_user: None,
        presence: None,
        obj_end: text.len() - 1,
    }
}

fn texts(m: &Member) -> Vec<String> {
    let mut out = Vec::new();
    m.outbox().drain_into(&mut out, 1000);
    out.into_iter()
        .map(|o| match o {
            Outgoing::Text(b) | Outgoing::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Outgoing::TextParts(a, b, c) => {
                String::from_utf8_lossy(&[a, b, c].concat()).into_owned()
            }
        })
        .collect()
}

fn config(shards: usize) -> RuntimeConfig {
    RuntimeConfig {
        shards,
        cpus: None,
        pin: false,
        io_memory: 1 << 20,
        mailbox_capacity: 64,
        instance: "t1".into(),
    }
}

/// How long the test waits for the shards: far more than the run needs. A shard that panics
/// never sends its reports and leaves the other one waiting for it, so without a bound the
/// test would hang instead of failing.
const WAIT: Duration = Duration::from_secs(30);

/// The `n` reports the shards send, in arrival order; panics, saying how many came, when
/// they do not all arrive within `wait`.
fn reports(rx: &mpsc::Receiver<String>, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => got.push(r),
            Err(e) => panic!(
                "got {} of {n} shard reports ({e}) within {wait:?}; a shard panicked \
                 (see its message above) or is stuck. Reports so far: {got:?}",
                got.len()
            ),
        }
    }
    got
}

/// Joins the shards, failing the test if one is still running after `wait` or panicked.
fn join_all(handles: Vec<ShardHandle>, wait: Duration) {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        let _ = done_tx.send(results);
    });
    let results = done_rx
        .recv_timeout(wait)
        .unwrap_or_else(|e| panic!("shards still running {wait:?} after their reports ({e})"));
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("shard {i} failed: {e}"));
    }
}

/// Shard 1 holds a member and a prefix subscription; shard 0 publishes 100
/// events, asks for counts and members, and sends direct messages.
#[test]
fn publish_crosses_shards_in_order() {
    let (tx, rx) = mpsc::channel::<String>();
    let joined = Arc::new(AtomicBool::new(false));
    // Socket keys are random: shard 1 tells shard 0 which one to send the direct message to.
    let bob_seq = Arc::new(AtomicU64::new(0));
    let handles = shards::start(config(2), move |shard: Rc<Shard>| {
        let tx = tx.clone();
        let joined = joined.clone();
        let bob_seq = bob_seq.clone();
        async move {
            let ch: Arc<str> = "chat:1".into();
            if shard.id() == 1 {
                let m = member(&shard, "bob");
                shard.register(m.clone());
                assert!(shard.join(&ch, &m).await);
                assert!(!shard.join(&ch, &m).await, "a second join is not new");
                let s = member(&shard, "carol");
                shard
                    .subscribe(
                        "sub1".into(),
                        s.clone(),
                        Topic::Prefix("chat:".into()),
                        None,
                    )
                    .await;
                bob_seq.store(m.key.seq, Ordering::SeqCst);
                // join/subscribe return once shard 0 has recorded the interest.
                joined.store(true, Ordering::SeqCst);
                for _ in 0..200 {
                    if m.outbox().len() >= 101 {
                        break;
                    }
                    shards::rt::sleep(Duration::from_millis(10)).await;
                }
                let got = texts(&m);
                let mut expect: Vec<String> = (0..100).map(|i| format!("{i}}}]")).collect();
                expect.push("dm".into());
                tx.send(format!("member-in-order:{}", got == expect))
                    .unwrap();
                let sub = texts(&s);
                tx.send(format!("sub:{}", sub.len())).unwrap();
                tx.send(format!(
                    "subfirst:{}",
                    sub.first().cloned().unwrap_or_default()
                ))
                .unwrap();
            } else {
                while !joined.load(Ordering::SeqCst) {
                    shards::rt::sleep(Duration::from_millis(5)).await;
                }
                for i in 0..100 {
                    let text: &'static str = Box::leak(format!("{i}}}]").into_boxed_str());
                    shard.publish(publication("chat:1", text)).await;
                }
                shard.publish(publication("other", "x}]")).await;
                let n = shard.member_count(&ch).await;
                tx.send(format!("count:{n}")).unwrap();
                let members = shard.members(&ch).await;
                tx.send(format!("members:{}", members[0].user_id)).unwrap();
                let target = SocketKey {
                    shard: 1,
                    seq: bob_seq.load(Ordering::SeqCst),
                };
                let ok = shard
                    .direct(target, Bytes::from_static(b"dm"), vec![])
                    .await;
                let missing = SocketKey { shard: 1, seq: 999 };
                let missing = shard
                    .direct(missing, Bytes::from_static(b"x"), vec![])
                    .await;
                tx.send(format!("direct:{ok}:{missing}")).unwrap();
            }
        }
    })
    .unwrap();
    let mut got = reports(&rx, 6, WAIT);
    join_all(handles, WAIT);
    got.sort();
    assert_eq!(
        got,
        vec![
            "count:1".to_string(),
            "direct:true:false".into(),
            "member-in-order:true".into(),
            "members:bob".into(),
            "sub:100".into(),
            "subfirst:0,\"subscriptionId\":\"sub1\"}]".into(),
        ]
    );
}

/// A RealtimeEvent frame whose object carries `id`.
fn event(channel: &str, id: &str) -> Publication {
    let text = format!("42[\"event\",{{\"id\":\"{id}\",\"channel\":\"{channel}\"}},\"{id}\"]");
    let text = Bytes::from(text);
    Publication {
        channel: channel.into(),
        event: "m".into(),
        obj_end: shards::object_end(&text),
        text,
        attachments: vec![],
        data: 0..0,
        skip_user: None,
        presence: None,
    }
}

/// A channel name whose home is `home` of 2 shards.
fn homed(prefix: &str, home: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|c| shards::channel_home(c, 2) == home)
        .unwrap()
}

/// Shard 0 publishes to three channels: one whose home is itself (with a
/// member on shard 1), one whose home is shard 1 with a member there (the
/// delivery records it) and one whose home is shard 1 without any member
/// (a record-only message). Both shards then read every history alike.
#[test]
fn history_lives_on_the_home_shard() {
    let (tx, rx) = mpsc::channel::<String>();
    let joined = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicU64::new(0));
    let names = [homed("h0:", 0), homed("h1m:", 1), homed("h1:", 1)];
    let handles = shards::start(config(2), move |shard: Rc<Shard>| {
        let (tx, joined, published, finished) = (
            tx.clone(),
            joined.clone(),
            published.clone(),
            finished.clone(),
        );
        let names = names.clone();
        async move {
            shard.enable_history(shards::HistoryBounds {
                size: 2,
                max_age: Duration::ZERO,
                max_bytes: 1 << 20,
            });
            if shard.id() == 1 {
                let m = member(&shard, "bob");
                shard.register(m.clone());
                for c in &names[..2] {
                    shard.join(&c.as_str().into(), &m).await;
                }
                joined.store(true, Ordering::SeqCst);
                while !published.load(Ordering::SeqCst) {
                    shards::rt::sleep(Duration::from_millis(5)).await;
                }
            } else {
                while !joined.load(Ordering::SeqCst) {
                    shards::rt::sleep(Duration::from_millis(5)).await;
                }
                for c in &names {
                    for i in 0..3 {
                        shard.publish(event(c, &format!("{c}-{i}"))).await;
                    }
                }
                published.store(true, Ordering::SeqCst);
            }
            for c in &names {
                let q = shards::HistoryQuery {
                    max_bytes: usize::MAX,
                    ..Default::default()
                };
                let page = shard.history(c.as_str().into(), q).await.unwrap();
                let events: Vec<String> = page
                    .events
                    .iter()
                    .map(|e| String::from_utf8_lossy(e).into_owned())
                    .collect();
                let top = String::from_utf8_lossy(&page.top).into_owned();
                tx.send(format!("{}:{c}:{}:{top}", shard.id(), events.len()))
                    .unwrap();
                assert!(events[1].starts_with(&format!("{{\"id\":\"{top}\"")));
            }
            // Keep answering the other shard's questions until it is done too.
            finished.fetch_add(1, Ordering::SeqCst);
            while finished.load(Ordering::SeqCst) < 2 {
                shards::rt::sleep(Duration::from_millis(5)).await;
            }
        }
    })
    .unwrap();
    let mut got = reports(&rx, 6, WAIT);
    join_all(handles, WAIT);
    got.sort();
    let [a, b, c] = [homed("h0:", 0), homed("h1m:", 1), homed("h1:", 1)];
    let mut want: Vec<String> = [0, 1]
        .iter()
        .flat_map(|s| {
            [&a, &b, &c]
                .into_iter()
                .map(move |ch| format!("{s}:{ch}:2:{ch}-2"))
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
}

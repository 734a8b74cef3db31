//! In-process multi-shard tests: real executors, real mailboxes, no network.
//! A publish on one shard reaches members and subscriptions on the other;
//! counts and member lists gather across shards; direct messages route by key.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use proto::engineio::Outgoing;
use shards::{Member, Outbox, Publication, RuntimeConfig, Shard, SocketKey, Topic};

fn member(shard: &Shard, user: &str) -> Rc<Member> {
    let key = shard.next_key();
    Rc::new(Member {
        key,
        socket_id: key.wire(shard.instance()).into(),
        user_id: user.into(),
        info: None,
        outbox: Rc::new(Outbox::new(1000)),
    })
}

fn publication(channel: &str, text: &'static str) -> Publication {
    Publication {
        channel: channel.into(),
        event: "m".into(),
        text: Bytes::from_static(text.as_bytes()),
        attachments: vec![],
        data: 0..0,
        skip_user: None,
        members_only: false,
    }
}

fn texts(m: &Member) -> Vec<String> {
    let mut out = Vec::new();
    m.outbox.drain_into(&mut out, 1000);
    out.into_iter()
        .map(|o| match o {
            Outgoing::Text(b) | Outgoing::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Outgoing::TextParts(a, b) => String::from_utf8_lossy(&[a, b].concat()).into_owned(),
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

/// Shard 1 holds a member and a prefix subscription; shard 0 publishes 100
/// events, asks for counts and members, and sends direct messages.
#[test]
fn publish_crosses_shards_in_order() {
    let (tx, rx) = mpsc::channel::<String>();
    let joined = Arc::new(AtomicBool::new(false));
    let handles = shards::start(config(2), move |shard: Rc<Shard>| {
        let tx = tx.clone();
        let joined = joined.clone();
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
                // join/subscribe return once shard 0 has recorded the interest.
                joined.store(true, Ordering::SeqCst);
                for _ in 0..200 {
                    if m.outbox.len() >= 101 {
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
                let target = SocketKey { shard: 1, seq: 1 };
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
    for h in handles {
        h.join().unwrap();
    }
    let mut got: Vec<String> = rx.try_iter().collect();
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

//! Criterion benchmarks of the `proto` codec: a typical Socket.IO EVENT packet
//! and an HTTP long-polling payload, both directions.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use proto::engineio::{self, Outgoing};
use proto::socketio::{self, PacketType};

const EVENT: &str = r#"2/chat,42["message",{"room":"general","user":"alice","text":"hello there, how is everyone doing today?","ts":1700000000000}]"#;

fn socketio_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("socketio_event");
    g.throughput(Throughput::Bytes(EVENT.len() as u64));
    g.bench_function("decode", |b| b.iter(|| socketio::decode(black_box(EVENT))));
    let p = socketio::decode(EVENT).expect("valid event");
    let mut out = String::with_capacity(256);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            socketio::encode(p.kind, black_box(p.nsp), 0, p.id, p.data, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("encode_binary_header", |b| {
        b.iter(|| {
            out.clear();
            socketio::encode(
                PacketType::BinaryEvent,
                "/",
                1,
                Some(7),
                Some(r#"[{"_placeholder":true,"num":0}]"#),
                &mut out,
            );
            black_box(out.len())
        })
    });
    g.finish();
}

fn polling_payload(c: &mut Criterion) {
    let mut queued = Vec::new();
    for i in 0..16 {
        let mut s = String::new();
        socketio::encode(
            PacketType::Event,
            "/chat",
            0,
            Some(i),
            Some(r#"["message",{"text":"hello there"}]"#),
            &mut s,
        );
        queued.push(Outgoing::Text(Bytes::from(s)));
    }
    queued.push(Outgoing::Binary(Bytes::from(vec![0xabu8; 512])));
    let mut body = Vec::new();
    engineio::encode_payload(&queued, &mut body);

    let mut g = c.benchmark_group("polling_payload");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| engineio::decode_payload(black_box(&body), 64))
    });
    let mut out = Vec::with_capacity(body.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            engineio::encode_payload(black_box(&queued), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// permessage-deflate of one chat frame (~600 bytes, as the load test's `--chat` publishes):
/// `once` compresses it (a publication's first compressed recipient on a shard), `shared` is
/// every other recipient of the same frame (the shard's cache), `subscription` a subscription's
/// frame, whose own id is added uncompressed to the shared compressed head.
fn websocket_deflate(c: &mut Criterion) {
    use socket_gateway::engine::transport::deflate::Deflater;
    let text = r#"42["event",{"id":"1764659000000-0","channel":"chat:room-42","event":"message","data":{"seq":7,"publisher":1,"ch":2,"sent_ns":1234567890,"message":{"id":"msg-1-7","author":{"id":"user-1","name":"Publisher 1","avatar":"https://cdn.example.com/avatars/user-1.png","status":"online"},"text":"Could someone with admin rights reset the staging database? It is stuck on migrations.","mentions":["user-7"],"reactions":{"thumbs_up":2,"heart":1},"thread":null,"edited":false}},"from":{"socketId":"a1b2c3-0-9f8e7d6c5b4a3f2e","userId":"user-1"},"ts":1764659000000},"1764659000000-0"]"#;
    let mut g = c.benchmark_group("websocket_deflate");
    g.throughput(Throughput::Bytes(text.len() as u64));
    let mut d = Deflater::default();
    g.bench_function("once", |b| {
        b.iter(|| {
            // A new frame each time: nothing to reuse.
            let p = Outgoing::Text(Bytes::copy_from_slice(text.as_bytes()));
            black_box(d.compress(&p, 256))
        })
    });
    let shared = Outgoing::Text(Bytes::from_static(text.as_bytes()));
    g.bench_function("shared", |b| {
        b.iter(|| black_box(d.compress(black_box(&shared), 256)))
    });
    let head = Bytes::from_static(&text.as_bytes()[..text.len() - 20]);
    let sub = Outgoing::TextParts(
        head,
        Bytes::from_static(br#","subscriptionId":"s-1"}"#),
        Bytes::from_static(br#","1764659000000-0"]"#),
    );
    g.bench_function("subscription", |b| {
        b.iter(|| black_box(d.compress(black_box(&sub), 256)))
    });
    g.finish();
}

criterion_group!(benches, socketio_event, polling_payload, websocket_deflate);
criterion_main!(benches);

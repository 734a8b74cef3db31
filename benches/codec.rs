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

criterion_group!(benches, socketio_event, polling_payload);
criterion_main!(benches);

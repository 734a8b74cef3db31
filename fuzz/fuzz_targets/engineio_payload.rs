//! Fuzzes the HTTP long-polling payload decoder and checks decode(encode(decode(x))).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proto::engineio::{decode_payload, encode_payload, encode_text, Outgoing, PayloadRecord};

const MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = decode_payload(data, MAX) else {
        return;
    };
    assert!(!records.is_empty() && records.len() <= MAX);
    let queued: Vec<Outgoing> = records
        .iter()
        .map(|r| match r {
            PayloadRecord::Text(t, s) => Outgoing::Text(Bytes::from(encode_text(*t, s))),
            PayloadRecord::Binary(b) => Outgoing::Binary(Bytes::from(b.clone())),
        })
        .collect();
    let mut body = Vec::new();
    encode_payload(&queued, &mut body);
    let again = decode_payload(&body, MAX).expect("re-encoded payload must decode");
    assert_eq!(again, records);
});

//! Engine.IO v4 codec tests. Quoted examples come from the Engine.IO protocol
//! document (socketio/engine.io-protocol, revision 4).

use bytes::Bytes;
use proto::engineio::{
    decode_binary, decode_payload, decode_text, encode_payload, encode_text, Outgoing, Packet,
    PacketType, PayloadRecord,
};
use proto::DecodeError;

const ALL: [PacketType; 7] = [
    PacketType::Open,
    PacketType::Close,
    PacketType::Ping,
    PacketType::Pong,
    PacketType::Message,
    PacketType::Upgrade,
    PacketType::Noop,
];

#[test]
fn packet_type_chars_follow_the_table() {
    let chars: String = ALL.iter().map(|t| t.as_char()).collect();
    assert_eq!(chars, "0123456");
}

#[test]
fn doc_open_packet_0_sid_json() {
    // `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,...}`
    let frame = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
    let Packet::Text(t, json) = decode_text(frame).unwrap() else {
        panic!()
    };
    assert_eq!(t, PacketType::Open);
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["sid"], "lv_VI97HAXpY6yYWAAAC");
    assert_eq!(v["pingInterval"], 25000);
}

#[test]
fn doc_heartbeat_2_and_3() {
    assert_eq!(decode_text("2"), Ok(Packet::Text(PacketType::Ping, "")));
    assert_eq!(decode_text("3"), Ok(Packet::Text(PacketType::Pong, "")));
    assert_eq!(encode_text(PacketType::Pong, ""), "3");
}

#[test]
fn doc_upgrade_2probe_3probe_5() {
    assert_eq!(
        decode_text("2probe"),
        Ok(Packet::Text(PacketType::Ping, "probe"))
    );
    assert_eq!(encode_text(PacketType::Pong, "probe"), "3probe");
    assert_eq!(decode_text("5"), Ok(Packet::Text(PacketType::Upgrade, "")));
    assert_eq!(decode_text("6"), Ok(Packet::Text(PacketType::Noop, "")));
}

#[test]
fn doc_message_4hello_and_close_1() {
    assert_eq!(
        decode_text("4hello"),
        Ok(Packet::Text(PacketType::Message, "hello"))
    );
    assert_eq!(decode_text("1"), Ok(Packet::Text(PacketType::Close, "")));
    assert_eq!(encode_text(PacketType::Message, "hello"), "4hello");
}

#[test]
fn doc_websocket_binary_frame_has_no_type_byte() {
    // "binary payloads are sent as is" over websocket in v4: [1, 2, 3, 4]
    let frame = [1u8, 2, 3, 4];
    assert_eq!(decode_binary(&frame), Packet::Binary(&frame[..]));
    assert_eq!(decode_binary(b""), Packet::Binary(&[][..]));
}

#[test]
fn text_message_keeps_multibyte_utf8() {
    assert_eq!(
        decode_text("4€"),
        Ok(Packet::Text(PacketType::Message, "€"))
    );
    assert_eq!(
        decode_text("4\u{1F600}x"),
        Ok(Packet::Text(PacketType::Message, "\u{1F600}x"))
    );
}

#[test]
fn text_rejects_empty_and_unknown_types() {
    assert_eq!(decode_text(""), Err(DecodeError::Empty));
    assert_eq!(decode_text("7"), Err(DecodeError::UnknownType(b'7')));
    assert_eq!(decode_text("x4"), Err(DecodeError::UnknownType(b'x')));
    assert_eq!(decode_text("b4"), Err(DecodeError::UnknownType(b'b')));
    // first byte of a multibyte char is reported raw
    assert_eq!(decode_text("€"), Err(DecodeError::UnknownType(0xe2)));
}

#[test]
fn text_round_trip_every_type() {
    for t in ALL {
        for data in ["", "probe", "€uro", "{\"a\":1}"] {
            let s = encode_text(t, data);
            assert_eq!(decode_text(&s), Ok(Packet::Text(t, data)));
        }
    }
}

#[test]
fn doc_payload_4hello_4euro_binary() {
    // `4hello\x1e4€\x1ebAQIDBA==`
    let body = "4hello\x1e4€\x1ebAQIDBA==".as_bytes();
    let records = decode_payload(body, 16).unwrap();
    assert_eq!(
        records,
        vec![
            PayloadRecord::Text(PacketType::Message, "hello"),
            PayloadRecord::Text(PacketType::Message, "€"),
            PayloadRecord::Binary(vec![1, 2, 3, 4]),
        ]
    );
}

#[test]
fn doc_payload_encode_matches_example() {
    let queued = [
        Outgoing::Text(Bytes::from_static(b"4hello")),
        Outgoing::Text(Bytes::from("4€")),
        Outgoing::Binary(Bytes::from_static(&[1, 2, 3, 4])),
    ];
    let mut out = Vec::new();
    encode_payload(&queued, &mut out);
    assert_eq!(out, "4hello\x1e4€\x1ebAQIDBA==".as_bytes());
}

#[test]
fn payload_single_records() {
    assert_eq!(
        decode_payload(b"2", 1),
        Ok(vec![PayloadRecord::Text(PacketType::Ping, "")])
    );
    assert_eq!(
        decode_payload(b"6", 1),
        Ok(vec![PayloadRecord::Text(PacketType::Noop, "")])
    );
    assert_eq!(
        decode_payload(b"b", 1),
        Ok(vec![PayloadRecord::Binary(vec![])])
    );
}

#[test]
fn payload_encode_appends_and_handles_empty_iter() {
    let mut out = b"prefix".to_vec();
    encode_payload(std::iter::empty(), &mut out);
    assert_eq!(out, b"prefix");
    encode_payload([&Outgoing::Binary(Bytes::new())], &mut out);
    assert_eq!(out, b"prefixb");
}

#[test]
fn payload_round_trip() {
    let queued = vec![
        Outgoing::Text(Bytes::from_static(b"40")),
        Outgoing::Binary(Bytes::from_static(&[0, 255, 0x1e, b'b'])),
        Outgoing::Text(Bytes::from(r#"42["chat","héllo"]"#)),
        Outgoing::Binary(Bytes::from(vec![7u8; 1000])),
        Outgoing::Text(Bytes::from_static(b"3")),
    ];
    let mut body = Vec::new();
    encode_payload(&queued, &mut body);
    let records = decode_payload(&body, 5).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0], PayloadRecord::Text(PacketType::Message, "0"));
    assert_eq!(records[1], PayloadRecord::Binary(vec![0, 255, 0x1e, b'b']));
    assert_eq!(
        records[2],
        PayloadRecord::Text(PacketType::Message, r#"2["chat","héllo"]"#)
    );
    assert_eq!(records[3], PayloadRecord::Binary(vec![7u8; 1000]));
    assert_eq!(records[4], PayloadRecord::Text(PacketType::Pong, ""));
}

#[test]
fn payload_record_limit() {
    let body = b"2\x1e2\x1e2";
    assert_eq!(decode_payload(body, 3).unwrap().len(), 3);
    assert_eq!(decode_payload(body, 2), Err(DecodeError::TooManyPackets));
    assert_eq!(decode_payload(b"2", 0), Err(DecodeError::TooManyPackets));
    // the limit is checked before any record is decoded
    assert_eq!(
        decode_payload(b"\xff\x1e\xff", 1),
        Err(DecodeError::TooManyPackets)
    );
    let many = vec![0x1eu8; 1_000_000];
    assert_eq!(decode_payload(&many, 100), Err(DecodeError::TooManyPackets));
}

#[test]
fn payload_rejects_empty_records_and_trailing_separators() {
    assert_eq!(decode_payload(b"", 8), Err(DecodeError::Empty));
    assert_eq!(decode_payload(b"4hello\x1e", 8), Err(DecodeError::Empty));
    assert_eq!(decode_payload(b"\x1e4hello", 8), Err(DecodeError::Empty));
    assert_eq!(decode_payload(b"4a\x1e\x1e4b", 8), Err(DecodeError::Empty));
    assert_eq!(decode_payload(b"\x1e", 8), Err(DecodeError::Empty));
}

#[test]
fn payload_rejects_bad_base64() {
    assert_eq!(decode_payload(b"bAQIDBA=", 8), Err(DecodeError::BadBase64));
    assert_eq!(decode_payload(b"b!!!!", 8), Err(DecodeError::BadBase64));
    assert_eq!(decode_payload(b"4ok\x1ebA", 8), Err(DecodeError::BadBase64));
    assert_eq!(decode_payload(b"b\xff\xfe", 8), Err(DecodeError::BadBase64));
    // URL-safe alphabet is not the standard one
    assert_eq!(decode_payload(b"b-_-_", 8), Err(DecodeError::BadBase64));
}

#[test]
fn payload_rejects_invalid_utf8_and_unknown_types() {
    assert_eq!(decode_payload(b"4\xff", 8), Err(DecodeError::BadUtf8));
    assert_eq!(decode_payload(b"4\xe2\x82", 8), Err(DecodeError::BadUtf8));
    assert_eq!(
        decode_payload(b"4ok\x1e4\xc0\x80", 8),
        Err(DecodeError::BadUtf8)
    );
    assert_eq!(decode_payload(b"\xff", 8), Err(DecodeError::BadUtf8));
    assert_eq!(decode_payload(b"9", 8), Err(DecodeError::UnknownType(b'9')));
    assert_eq!(
        decode_payload(b"4ok\x1ex", 8),
        Err(DecodeError::UnknownType(b'x'))
    );
}

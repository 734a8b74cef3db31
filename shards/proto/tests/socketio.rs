//! Socket.IO v5 codec tests. Quoted examples come from the Socket.IO protocol
//! document (socketio/socket.io-protocol, revision 5), "Packet encoding" section.

use bytes::Bytes;
use proto::socketio::{decode, encode, AttachmentLimits, BinaryAssembly, Packet, PacketType};
use proto::DecodeError;

fn pkt<'a>(
    kind: PacketType,
    nsp: &'a str,
    attachments: usize,
    id: Option<u64>,
    data: Option<&'a str>,
) -> Packet<'a> {
    Packet {
        kind,
        nsp,
        attachments,
        id,
        data,
    }
}

fn enc(p: &Packet<'_>) -> String {
    let mut s = String::new();
    encode(p.kind, p.nsp, p.attachments, p.id, p.data, &mut s);
    s
}

/// Every documented example: (socket.io text, decoded packet). Encoding the packet
/// must give back "4" + the text exactly.
fn doc_examples() -> Vec<(&'static str, Packet<'static>)> {
    use PacketType::*;
    vec![
        ("0", pkt(Connect, "/", 0, None, None)),
        ("0/admin,", pkt(Connect, "/admin", 0, None, None)),
        (
            r#"0{"token":"123"}"#,
            pkt(Connect, "/", 0, None, Some(r#"{"token":"123"}"#)),
        ),
        (
            r#"0/admin,{"token":"123"}"#,
            pkt(Connect, "/admin", 0, None, Some(r#"{"token":"123"}"#)),
        ),
        (
            r#"0{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
            pkt(
                Connect,
                "/",
                0,
                None,
                Some(r#"{"sid":"oSO0OpakMV_3jnilAAAA"}"#),
            ),
        ),
        (
            r#"4{"message":"Not authorized"}"#,
            pkt(
                ConnectError,
                "/",
                0,
                None,
                Some(r#"{"message":"Not authorized"}"#),
            ),
        ),
        (
            r#"2["hello",1]"#,
            pkt(Event, "/", 0, None, Some(r#"["hello",1]"#)),
        ),
        (
            r#"2/admin,["project:delete",123]"#,
            pkt(Event, "/admin", 0, None, Some(r#"["project:delete",123]"#)),
        ),
        (
            r#"2/admin,456["project:delete",123]"#,
            pkt(
                Event,
                "/admin",
                0,
                Some(456),
                Some(r#"["project:delete",123]"#),
            ),
        ),
        (
            "3/admin,456[]",
            pkt(Ack, "/admin", 0, Some(456), Some("[]")),
        ),
        (
            r#"51-["hello",{"_placeholder":true,"num":0}]"#,
            pkt(
                BinaryEvent,
                "/",
                1,
                None,
                Some(r#"["hello",{"_placeholder":true,"num":0}]"#),
            ),
        ),
        (
            r#"61-/admin,456[{"_placeholder":true,"num":0}]"#,
            pkt(
                BinaryAck,
                "/admin",
                1,
                Some(456),
                Some(r#"[{"_placeholder":true,"num":0}]"#),
            ),
        ),
        ("1/admin,", pkt(Disconnect, "/admin", 0, None, None)),
        ("1", pkt(Disconnect, "/", 0, None, None)),
    ]
}

#[test]
fn doc_examples_decode() {
    for (text, expected) in doc_examples() {
        assert_eq!(decode(text), Ok(expected), "decoding {text:?}");
    }
}

#[test]
fn doc_examples_encode_byte_exact() {
    for (text, p) in doc_examples() {
        assert_eq!(enc(&p), format!("4{text}"), "encoding {p:?}");
    }
}

#[test]
fn doc_encode_event_with_ack_default_nsp() {
    // encode(Event, "/", 0, Some(12), Some(["hello",1])) gives `4212["hello",1]`
    let mut s = String::from("prefix:");
    encode(
        PacketType::Event,
        "/",
        0,
        Some(12),
        Some(r#"["hello",1]"#),
        &mut s,
    );
    assert_eq!(s, r#"prefix:4212["hello",1]"#);
    assert_eq!(decode(&s["prefix:4".len()..]).unwrap().id, Some(12));
}

#[test]
fn doc_placeholder_data_is_raw_json() {
    let p = decode(r#"51-["hello",{"_placeholder":true,"num":0}]"#).unwrap();
    let v: serde_json::Value = serde_json::from_str(p.data.unwrap()).unwrap();
    assert_eq!(v[1]["_placeholder"], true);
    assert_eq!(v[1]["num"], 0);
}

#[test]
fn namespace_without_trailing_comma() {
    assert_eq!(
        decode("2/admin"),
        Ok(pkt(PacketType::Event, "/admin", 0, None, None))
    );
    assert_eq!(
        decode("2/admin,"),
        Ok(pkt(PacketType::Event, "/admin", 0, None, None))
    );
    assert_eq!(
        decode("0/"),
        Ok(pkt(PacketType::Connect, "/", 0, None, None))
    );
    assert_eq!(
        decode("2/,"),
        Ok(pkt(PacketType::Event, "/", 0, None, None))
    );
    assert_eq!(
        decode("51-/a"),
        Ok(pkt(PacketType::BinaryEvent, "/a", 1, None, None))
    );
}

#[test]
fn namespace_missing_comma_before_payload_is_rejected() {
    assert_eq!(decode(r#"2/admin["x"]"#), Err(DecodeError::BadNamespace));
    assert_eq!(
        decode(r#"0/admin{"token":"1"}"#),
        Err(DecodeError::BadNamespace)
    );
    assert_eq!(decode(r#"61-/admin456[1]"#), Err(DecodeError::BadNamespace));
}

#[test]
fn non_ascii_namespace_and_payload() {
    let p = decode(r#"2/café,7["é€"]"#).unwrap();
    assert_eq!(
        p,
        pkt(PacketType::Event, "/café", 0, Some(7), Some(r#"["é€"]"#))
    );
    assert_eq!(decode(&enc(&p)[1..]), Ok(p));
}

#[test]
fn ack_id_only_and_limits() {
    assert_eq!(
        decode("3123"),
        Ok(pkt(PacketType::Ack, "/", 0, Some(123), None))
    );
    assert_eq!(
        decode("30[]"),
        Ok(pkt(PacketType::Ack, "/", 0, Some(0), Some("[]")))
    );
    let max = format!("2{}[]", u64::MAX);
    assert_eq!(decode(&max).unwrap().id, Some(u64::MAX));
    assert_eq!(
        decode("218446744073709551616[]"),
        Err(DecodeError::BadAckId)
    );
    assert_eq!(
        decode(&format!("2/a,{}[]", "9".repeat(100))),
        Err(DecodeError::BadAckId)
    );
    assert_eq!(
        decode(&format!("2{}", "1".repeat(10_000))),
        Err(DecodeError::BadAckId)
    );
}

#[test]
fn attachments_adversarial() {
    assert_eq!(decode("5"), Err(DecodeError::BadAttachments));
    assert_eq!(decode("51"), Err(DecodeError::BadAttachments));
    assert_eq!(decode("5x-"), Err(DecodeError::BadAttachments));
    assert_eq!(decode("5-[]"), Err(DecodeError::BadAttachments));
    assert_eq!(decode("6"), Err(DecodeError::BadAttachments));
    assert_eq!(decode("61[]"), Err(DecodeError::BadAttachments));
    assert_eq!(decode("510001-[]"), Err(DecodeError::BadAttachments));
    assert_eq!(
        decode("599999999999999999999999-[]"),
        Err(DecodeError::BadAttachments)
    );
    assert_eq!(decode("510000-[]").unwrap().attachments, 10_000);
    assert_eq!(
        decode("51-"),
        Ok(pkt(PacketType::BinaryEvent, "/", 1, None, None))
    );
    assert_eq!(decode("50-[]").unwrap().attachments, 0);
}

#[test]
fn non_binary_types_never_read_attachments() {
    // "21-" is EVENT with ack id 1 and data "-"
    assert_eq!(
        decode("21-"),
        Ok(pkt(PacketType::Event, "/", 0, Some(1), Some("-")))
    );
    let mut s = String::new();
    encode(PacketType::Event, "/", 3, None, Some("[]"), &mut s);
    assert_eq!(s, "42[]");
}

#[test]
fn rejects_empty_and_unknown_types() {
    assert_eq!(decode(""), Err(DecodeError::Empty));
    assert_eq!(decode("7"), Err(DecodeError::UnknownType(b'7')));
    assert_eq!(decode("/admin,"), Err(DecodeError::UnknownType(b'/')));
    assert_eq!(decode("é"), Err(DecodeError::UnknownType(0xc3)));
}

#[test]
fn round_trip_tricky_packets() {
    // Each decoded packet must survive encode -> decode unchanged.
    for text in [
        "2/,/x",   // explicit default namespace before data starting with '/'
        "51-/,/x", // same, binary
        "2007",    // leading zeros in the ack id
        "2/a,b",   // data not starting with JSON
        "1/admin", // unterminated namespace
        "3/x,0",   // ack id zero
        "6100-/n,1{}",
    ] {
        let p = decode(text).unwrap();
        let e = enc(&p);
        assert_eq!(decode(&e[1..]), Ok(p), "{text:?} -> {e:?}");
    }
}

#[test]
fn encode_writes_default_nsp_only_when_ambiguous() {
    let mut s = String::new();
    encode(PacketType::Event, "/", 0, None, Some("/x"), &mut s);
    assert_eq!(s, "42/,/x");
    s.clear();
    encode(PacketType::Event, "/", 0, Some(1), Some("/x"), &mut s);
    assert_eq!(s, "421/x");
    s.clear();
    encode(PacketType::BinaryAck, "/", 2, Some(9), None, &mut s);
    assert_eq!(s, "462-9");
}

#[test]
fn binary_assembly_collects_attachments() {
    let text =
        r#"52-/admin,7["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let header = decode(text).unwrap();
    let mut asm = BinaryAssembly::new(&header, text.len(), LIMITS).unwrap();
    assert_eq!(asm.kind(), PacketType::BinaryEvent);
    assert_eq!(asm.nsp(), "/admin");
    assert_eq!(asm.id(), Some(7));
    assert_eq!(asm.data(), header.data);
    assert_eq!(asm.expected(), 2);
    assert!(!asm.is_complete());
    assert_eq!(asm.push(Bytes::from_static(b"first")), Ok(false));
    assert_eq!(asm.push(Bytes::from_static(b"second")), Ok(true));
    assert_eq!(asm.held_bytes(), text.len() + 11);
    // an attachment beyond the announced count is refused
    assert_eq!(
        asm.push(Bytes::from_static(b"third")),
        Err(DecodeError::BadAttachments)
    );
    assert_eq!(
        asm.into_attachments(),
        vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")]
    );
}

const LIMITS: AttachmentLimits = AttachmentLimits {
    max_attachments: 16,
    max_bytes: 1000,
};

#[test]
fn binary_assembly_zero_and_huge_counts() {
    let zero = decode("60-[]").unwrap();
    let asm = BinaryAssembly::new(&zero, 5, LIMITS).unwrap();
    assert!(asm.is_complete());
    assert!(asm.into_attachments().is_empty());
    // A hand-built header with an absurd count is refused, not pre-allocated.
    let huge = pkt(PacketType::BinaryEvent, "/", usize::MAX, None, None);
    assert_eq!(
        BinaryAssembly::new(&huge, 4, LIMITS),
        Err(DecodeError::TooManyAttachments)
    );
    let unlimited = AttachmentLimits {
        max_attachments: usize::MAX,
        max_bytes: usize::MAX,
    };
    let mut asm = BinaryAssembly::new(&huge, usize::MAX, unlimited).unwrap();
    assert_eq!(asm.push(Bytes::new()), Ok(false));
    assert_eq!(
        asm.push(Bytes::from_static(b"x")),
        Err(DecodeError::AttachmentsTooLarge)
    );
    assert_eq!(asm.data(), None);
}

#[test]
fn binary_assembly_bounds_count_and_bytes() {
    let h = |n| pkt(PacketType::BinaryEvent, "/", n, None, Some(r#"["e"]"#));
    assert!(BinaryAssembly::new(&h(16), 10, LIMITS).is_ok());
    assert_eq!(
        BinaryAssembly::new(&h(17), 10, LIMITS),
        Err(DecodeError::TooManyAttachments)
    );
    // the header alone counts
    assert_eq!(
        BinaryAssembly::new(&h(1), 1001, LIMITS),
        Err(DecodeError::AttachmentsTooLarge)
    );
    let mut asm = BinaryAssembly::new(&h(3), 100, LIMITS).unwrap();
    assert_eq!(asm.push(Bytes::from(vec![0; 450])), Ok(false));
    assert_eq!(asm.push(Bytes::from(vec![0; 450])), Ok(false));
    assert_eq!(asm.held_bytes(), 1000);
    // refused as it arrives, and not kept
    assert_eq!(
        asm.push(Bytes::from(vec![0; 1])),
        Err(DecodeError::AttachmentsTooLarge)
    );
    assert_eq!(asm.held_bytes(), 1000);
    assert_eq!(asm.into_attachments().len(), 2);
    // exactly at the bound is fine
    let mut asm = BinaryAssembly::new(&h(1), 100, LIMITS).unwrap();
    assert_eq!(asm.push(Bytes::from(vec![0; 900])), Ok(true));
}

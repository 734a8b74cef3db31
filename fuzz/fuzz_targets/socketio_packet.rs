//! Fuzzes the Socket.IO packet decoder, checks decode(encode(decode(x))) == decode(x)
//! and exercises BinaryAssembly.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proto::engineio::{decode_text, Packet as EioPacket, PacketType as EioType};
use proto::socketio::{decode, encode, AttachmentLimits, BinaryAssembly};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = decode(text) else { return };
    assert!(p.nsp.starts_with('/'));
    assert!(p.kind.is_binary() || p.attachments == 0);
    assert!(p.data.is_none_or(|d| !d.is_empty()));

    let mut out = String::new();
    encode(p.kind, p.nsp, p.attachments, p.id, p.data, &mut out);
    let Ok(EioPacket::Text(EioType::Message, body)) = decode_text(&out) else {
        panic!("encode must produce an engine.io message: {out:?}");
    };
    assert_eq!(
        decode(body),
        Ok(p.clone()),
        "round trip of {text:?} via {out:?}"
    );

    let limits = AttachmentLimits {
        max_attachments: usize::MAX,
        max_bytes: usize::MAX,
    };
    let Ok(mut asm) = BinaryAssembly::new(&p, text.len(), limits) else {
        panic!("unlimited assembly refused {text:?}");
    };
    let mut done = p.attachments == 0;
    for _ in 0..p.attachments.min(4) {
        done = asm.push(Bytes::from_static(b"x")) == Ok(true);
    }
    assert_eq!(done, p.attachments <= 4);
    assert_eq!(
        (asm.kind(), asm.nsp(), asm.id(), asm.data()),
        (p.kind, p.nsp, p.id, p.data)
    );
    assert_eq!(asm.into_attachments().len(), p.attachments.min(4));
});

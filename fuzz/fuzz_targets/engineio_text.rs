//! Fuzzes the Engine.IO websocket frame decoders and checks the text round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::engineio::{decode_binary, decode_text, encode_text, Packet};

fuzz_target!(|data: &[u8]| {
    assert_eq!(decode_binary(data), Packet::Binary(data));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_text(text) {
        Ok(Packet::Text(t, rest)) => {
            let encoded = encode_text(t, rest);
            // A text packet is exactly its type char + data: the round trip is byte-exact.
            assert_eq!(encoded, text);
            assert_eq!(decode_text(&encoded), Ok(Packet::Text(t, rest)));
        }
        Ok(Packet::Binary(_)) => panic!("decode_text returned a binary packet"),
        Err(_) => {}
    }
});

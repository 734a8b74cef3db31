//! Fuzzes a binary packet's assembly under the server's limits: a Socket.IO
//! header, then attachments cut from the rest of the input, through
//! BinaryAssembly with small limits. Never panics, never holds more than the
//! byte bound, refuses exactly what the limits refuse.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proto::socketio::{decode, AttachmentLimits, BinaryAssembly};

fuzz_target!(|data: &[u8]| {
    // [max_attachments, max_bytes (2 bytes)] header '\n' attachment sizes...
    let [n, b0, b1, rest @ ..] = data else { return };
    let limits = AttachmentLimits {
        max_attachments: usize::from(*n % 24),
        max_bytes: usize::from(u16::from_le_bytes([*b0, *b1])),
    };
    let split = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
    let Ok(text) = std::str::from_utf8(&rest[..split]) else { return };
    let Ok(p) = decode(text) else { return };
    let header_len = 1 + text.len();
    let mut asm = match BinaryAssembly::new(&p, header_len, limits) {
        Ok(a) => a,
        Err(_) => {
            assert!(p.attachments > limits.max_attachments || header_len > limits.max_bytes);
            return;
        }
    };
    assert!(p.attachments <= limits.max_attachments && header_len <= limits.max_bytes);
    let body = rest.get(split + 1..).unwrap_or_default();
    let mut held = header_len;
    let mut count = 0;
    // Each byte of the body is the size of the next attachment (0..=255 * 16).
    for &size in body {
        let len = usize::from(size) * 16;
        let complete_before = asm.is_complete();
        match asm.push(Bytes::from(vec![0u8; len])) {
            Ok(done) => {
                assert!(!complete_before);
                held += len;
                count += 1;
                assert_eq!(done, count == p.attachments);
            }
            Err(_) => {
                assert!(complete_before || held + len > limits.max_bytes);
                break;
            }
        }
        assert_eq!(asm.held_bytes(), held);
        assert!(asm.held_bytes() <= limits.max_bytes);
    }
    let total: usize = asm.into_attachments().iter().map(Bytes::len).sum();
    assert_eq!(total + header_len, held);
    assert!(held <= limits.max_bytes);
});

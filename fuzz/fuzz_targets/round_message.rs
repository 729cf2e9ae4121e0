//! A round-protocol request (open, close, checkpoint fetch) or a fetch answer from an untrusted
//! peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_round::msg::{Message, decode_checkpoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        // What decodes re-encodes to the same bytes.
        assert_eq!(m.encode(), data);
    }
    let _ = decode_checkpoint(data, &[0; 32]);
});

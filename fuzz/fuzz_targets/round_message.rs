//! A round-protocol request (open, close, fetch, receipt, status, evidence, governance) or a
//! fetch or status answer from an untrusted peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_round::msg::{Message, Status, decode_checkpoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        // What decodes re-encodes to the same bytes.
        assert_eq!(m.encode(), data);
    }
    let _ = decode_checkpoint(data, &[0; 32]);
    if let Ok(s) = Status::decode(data) {
        assert_eq!(s.encode(), data);
    }
});

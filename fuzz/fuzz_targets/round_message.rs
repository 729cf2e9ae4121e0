//! A round-protocol request (open, close, fetch, receipt, status, evidence, governance,
//! challenge, history, work, pool) or a fetch, status, challenge, history, work or pool answer from
//! an untrusted peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_core::challenge::Challenge;
use vain_round::msg::{
    Answer, Message, Status, Work, decode_checkpoint, decode_history, decode_pool, encode_history, encode_pool,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        // What decodes re-encodes to the same bytes.
        assert_eq!(m.encode(), data);
    }
    let _ = decode_checkpoint(data, &[0; 32]);
    if let Ok(s) = Status::decode(data) {
        assert_eq!(s.encode(), data);
    }
    let c = Challenge { rows: 3, inner: 5, cols: 2, seed: 0, issued: 0, deadline: 0 };
    if let Ok(a) = Answer::decode(data, &c) {
        assert_eq!(a.encode(), data);
    }
    if let Ok(h) = decode_history(data) {
        assert_eq!(encode_history(&h), data);
    }
    if let Ok(p) = decode_pool(data) {
        assert_eq!(encode_pool(&p), data);
    }
    match Work::decode(data) {
        Ok(Some(w)) => assert_eq!(w.encode(), data),
        Ok(None) => assert_eq!(Work::none(), data),
        Err(_) => {}
    }
});

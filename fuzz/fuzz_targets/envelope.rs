//! A frame (preamble + DeltaEnvelope header + payload) from an untrusted peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_schema::{Limits, delta::Envelope, frame};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_payload_bytes: 1 << 20, max_decoded_bytes: 1 << 20, ..Limits::default() };
    // As a whole frame, and as bare header bytes.
    if let Ok((header, payload)) = frame::split(data, &limits) {
        if let Ok(env) = Envelope::parse(header, &limits) {
            let _ = env.check_payload(payload);
            let _ = env.verify_signature();
            for t in env.tensors() {
                assert!(t.offset + t.length <= env.decoded_len());
            }
        }
    }
    if let Ok(env) = Envelope::parse(data, &limits) {
        let _ = env.verify_signature();
        assert!(env.tensors().len() <= limits.max_tensors);
    }
});

//! A SignedRotationCertificate, alone and as the first link of a chain.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_schema::{Limits, node::{RotationCertificate, verify_chain}};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(s) = RotationCertificate::open(data, &limits) {
        assert!(s.cert.not_before_ms < s.cert.not_after_ms);
        let _ = verify_chain(&s.cert.old_key, &[s.cert.clone()], s.cert.not_before_ms, &limits);
    }
});

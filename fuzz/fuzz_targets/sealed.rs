//! A sealed (HPKE) message addressed to this node.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_identity::hpke::{KeyPair, open};

fuzz_target!(|data: &[u8]| {
    let keys = KeyPair::from_secret(&[7; 32]);
    let _ = open(&keys, data, b"");
});

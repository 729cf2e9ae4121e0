//! Journal bytes as read back from disk after a crash or tampering: scanning never panics or
//! over-allocates, the valid prefix re-encodes to the same bytes, and replay never panics. The
//! input is tried raw, and re-framed with valid checksums (the first byte of each piece is its
//! length) so the fuzzer reaches the entry decoders behind the BLAKE3 check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_core::journal::{self, MAGIC};

fn check(bytes: &[u8]) {
    let scan = journal::scan(bytes);
    assert!(scan.valid_len <= bytes.len());
    let again: Vec<u8> = MAGIC.iter().copied().chain(scan.entries.iter().flat_map(journal::encode)).collect();
    if scan.valid_len >= MAGIC.len() {
        assert_eq!(again, bytes[..scan.valid_len], "entries re-encode to the bytes they came from");
    }
    let _ = journal::replay(vain_core::ledger::Config::default(), 0, &scan.entries);
}

fuzz_target!(|data: &[u8]| {
    let mut raw = MAGIC.to_vec();
    raw.extend_from_slice(data);
    check(&raw);
    let mut framed = MAGIC.to_vec();
    let mut rest = data;
    while let [n, tail @ ..] = rest {
        let take = usize::from(*n).min(tail.len());
        let (payload, next) = tail.split_at(take);
        framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        framed.extend_from_slice(&blake3::hash(payload).as_bytes()[..16]);
        framed.extend_from_slice(payload);
        rest = next;
    }
    check(&framed);
});

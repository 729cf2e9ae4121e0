//! Journal bytes as read back from disk after a crash or tampering: scanning never panics or
//! over-allocates, the valid prefix re-encodes to the same bytes, and replay never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_core::journal::{self, MAGIC};

fuzz_target!(|data: &[u8]| {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(data);
    let scan = journal::scan(&bytes);
    assert!(scan.valid_len <= bytes.len());
    let again: Vec<u8> = MAGIC.iter().copied().chain(scan.entries.iter().flat_map(journal::encode)).collect();
    assert_eq!(again, bytes[..scan.valid_len], "entries re-encode to the bytes they came from");
    let _ = journal::replay(vain_core::ledger::Config::default(), 0, &scan.entries);
});

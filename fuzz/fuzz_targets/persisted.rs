//! Persisted state files (identity metadata, peer store) read back from disk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_schema::persist::{self, IdentityMetadata, PeerStore};

fuzz_target!(|data: &[u8]| {
    let _ = persist::decode::<IdentityMetadata>(data);
    let _ = persist::decode::<PeerStore>(data);
});

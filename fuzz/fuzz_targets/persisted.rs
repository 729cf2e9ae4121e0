//! Persisted state files (identity metadata, peer store) read back from disk. The first byte picks
//! the file kind; the rest is used twice: as a whole file, and as an archive body wrapped in a
//! valid header and checksum, so that rkyv's validation is reached and not just the checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_schema::persist::{self, IdentityMetadata, PeerStore};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    let _ = persist::decode::<IdentityMetadata>(body);
    let _ = persist::decode::<PeerStore>(body);
    let mut file = Vec::with_capacity(64 + body.len());
    file.extend_from_slice(b"vAInRKYV");
    file.extend_from_slice(&u32::from(kind % 2 + 1).to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(blake3::hash(body).as_bytes());
    file.resize(64, 0);
    file.extend_from_slice(body);
    if kind % 2 == 0 {
        let _ = persist::decode::<IdentityMetadata>(&file);
    } else {
        let _ = persist::decode::<PeerStore>(&file);
    }
});

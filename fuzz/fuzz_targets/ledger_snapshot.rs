//! A ledger snapshot read back from disk (damaged or tampered with). The input is tried as a
//! whole file, and as an archive body wrapped in a valid header and checksum, so that rkyv's
//! validation is reached and not just the checksum. A snapshot that decodes becomes a ledger
//! that must answer for its digest and take a tick without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_core::ledger::{Ledger, Snapshot};

fn check(bytes: &[u8]) {
    if let Ok(s) = Snapshot::decode(bytes) {
        let at = s.at();
        let mut l = Ledger::from_snapshot(s);
        let _ = l.digest();
        l.tick(at.saturating_add(vain_core::HOUR));
        while l.poll().is_some() {}
        let _ = l.digest();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut file = Vec::with_capacity(64 + data.len());
    file.extend_from_slice(b"vAInRKYV");
    file.extend_from_slice(&3u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(blake3::hash(data).as_bytes());
    file.resize(64, 0);
    file.extend_from_slice(data);
    check(&file);
});

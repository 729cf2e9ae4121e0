//! A SignedAnnouncement or SignedHeartbeat from an untrusted peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_schema::{Limits, node::{Announcement, Heartbeat}};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(a) = Announcement::open(data, &limits, 1_790_000_000_000) {
        assert!(a.addresses.len() <= limits.max_addresses);
        assert!(a.rotation_chain.len() <= limits.max_chain_len);
    }
    let _ = Heartbeat::open(data, &limits);
});

//! The embedded chain's journal and the signed transactions in it: arbitrary bytes give
//! records or nothing, and each record applies or is refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vain_chain::devnet::{Devnet, parse_journal};

fuzz_target!(|data: &[u8]| {
    let mut bytes = b"vAInEVM1".to_vec();
    bytes.extend_from_slice(data);
    if let Some((records, good)) = parse_journal(&bytes) {
        assert!(good <= bytes.len());
        let mut chain = Devnet::in_memory(&[], Default::default());
        for (_, ts, raw) in records.into_iter().take(16) {
            let _ = chain.replay_record(raw, ts);
        }
    }
    let _ = parse_journal(data);
});

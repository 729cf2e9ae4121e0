//! What the control plane reads from untrusted peers: beacon datagrams, peer-exchange lists,
//! DHT records under any key, and request-response length prefixes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_net::{beacon, codec, records};

const NOW: u64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok((a, body)) = beacon::decode(data, NOW, 48 * 3_600_000) {
        assert!(body.len() + beacon::MAGIC.len() == data.len());
        assert!(a.timestamp_ms <= NOW + 300_000);
    }
    if let Some(items) = codec::decode_list(data, 32) {
        assert!(items.len() <= 32);
        assert_eq!(items.iter().map(|i| i.len() + 4).sum::<usize>(), data.len());
        for i in items {
            let _ = records::check_announcement(i, NOW, u64::MAX);
        }
    }
    // The first byte picks how much of the rest is the key.
    if let Some((&k, rest)) = data.split_first() {
        let (key, value) = rest.split_at((k as usize).min(rest.len()));
        if let Ok(a) = records::check(key, value, NOW, 16 << 10, 48 * 3_600_000) {
            assert_eq!(records::Key::parse(key), Some(records::Key::Node(a.node_id)));
        }
        let _ = records::Key::parse_text(&String::from_utf8_lossy(rest));
    }
});

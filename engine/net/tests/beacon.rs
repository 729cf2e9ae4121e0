//! The beacon on loopback: a flood of malformed, unsigned and badly signed beacons from one
//! address is counted and rate-limited, and a valid beacon from another address still leads the
//! node to the announced peer, which it dials and verifies by heartbeat.

use ed25519_dalek::Signer;
use std::time::{Duration, Instant};
use vain_net::Config;
use vain_net::node::{self, Identity, Transport};
use vain_schema::node::{Announcement, Resources};

fn seed(i: u8) -> [u8; 32] {
    [i; 32]
}

fn signed(seed: [u8; 32], addresses: Vec<String>, timestamp_ms: u64) -> Vec<u8> {
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pk = key.verifying_key().to_bytes();
    let a = Announcement {
        node_id: pk,
        signing_key: pk,
        rotation_chain: Vec::new(),
        addresses,
        roles: 1,
        resources: Resources::default(),
        x25519_key: [0; 32],
        timestamp_ms,
        ingest: Vec::new(),
        region: String::new(),
    };
    let body = a.encode();
    let sig = key.sign(Announcement::signing_input(&body).as_bytes()).to_bytes();
    Announcement::wrap(&body, &sig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_beacons_are_counted_and_a_valid_one_still_finds_its_peer() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("port").port();
    let base = |beacon: bool| {
        let mut c = Config { listen: vec!["/ip4/127.0.0.1/tcp/0".into()], ..Default::default() };
        c.mdns.enabled = false;
        c.beacon.enabled = beacon;
        c.beacon.port = port;
        c.beacon.broadcast = "127.255.255.255".into();
        c.beacon.per_source_rate = 5.0;
        c.liveness.heartbeat_interval = 0.3;
        c.liveness.stale_after = 5.0;
        c
    };
    let a = node::spawn(base(true), Identity::from_seed(seed(1)), Transport::Tcp).await.expect("a");
    let b = node::spawn(base(false), Identity::from_seed(seed(2)), Transport::Tcp).await.expect("b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_addrs = b.status().await.expect("status").listen;
    assert!(!b_addrs.is_empty());

    // The flood, from 127.0.0.2: no magic; magic and junk; a beacon signed by the wrong key;
    // one from the future; one that announces someone else's PeerId.
    let flood = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let to = ("127.0.0.1", port);
    let mut wrong_sig = signed(seed(3), vec![], vain_schema::clock::unix_ms());
    let n = wrong_sig.len();
    wrong_sig[n - 5] ^= 1;
    let kinds: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        [b"vAInBCN\x01".as_slice(), &[9u8; 200]].concat(),
        [b"vAInBCN\x01".as_slice(), &wrong_sig].concat(),
        [b"vAInBCN\x01".as_slice(), &signed(seed(4), vec![], vain_schema::clock::unix_ms() + 3_600_000)].concat(),
    ];
    for i in 0..4000 {
        let _ = flood.send_to(&kinds[i % kinds.len()], to);
    }
    // The honest beacon, from 127.0.0.3.
    let honest = std::net::UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    let beacon = [b"vAInBCN\x01".as_slice(), &signed(seed(2), b_addrs, vain_schema::clock::unix_ms())].concat();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _ = honest.send_to(&beacon, to);
        let s = a.status().await.expect("status");
        if s.live >= 1 {
            let r = &s.rejected;
            // Most of the flood is dropped unread by the rate limit (the kernel drops some too).
            assert!(r.get("beacon rate").copied().unwrap_or(0) > 100, "{r:?}");
            assert!(!r.contains_key("request rate"), "{r:?}");
            let counted: u64 = ["beacon malformed", "beacon bad announcement", "beacon from the future"]
                .iter()
                .map(|k| r.get(*k).copied().unwrap_or(0))
                .sum();
            assert!(counted >= 4, "{r:?}");
            assert!(r.contains_key("beacon malformed") && r.contains_key("beacon bad announcement"), "{r:?}");
            break;
        }
        assert!(Instant::now() < deadline, "a never found b: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peers = a.peers().await.expect("peers");
    assert!(peers.iter().any(|p| p.peer_id == b.peer_id.to_string() && p.state == node::State::Live));
}

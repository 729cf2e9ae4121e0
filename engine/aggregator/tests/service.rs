//! The aggregator service on real sockets: an honest client completes its rounds through two
//! glommio shards while, on the same aggregator, another client sends a frame that lies about
//! its size, a garbled header, a frame whose header lies about the payload, a bad signature,
//! someone else's update and a replay, and a third party floods the port with garbage
//! datagrams. Each bad update gets its typed rejection; the aggregate equals the honest
//! updates' weighted mean.

use ed25519_dalek::{Signer, SigningKey};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use vain_aggregator::{Event, Service};
use vain_ingest::{Config, Ingest, Reject, TensorLayout};
use vain_kernels::aggregate::{Config as RoundConfig, Rule};
use vain_kernels::cpu::CpuBackend;
use vain_schema::delta::{DType, Encoding, HeaderSpec, PayloadBuilder};
use vain_schema::{Limits, frame};
use vain_transport::client::{self, Client};
use vain_transport::quic;
use vain_transport::tls::{self, Policy};

const AGG: [u8; 32] = [60; 32];
const HONEST: [u8; 32] = [61; 32];
const ATTACKER: [u8; 32] = [62; 32];
const N: usize = 4096;

fn key(s: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(s)
}

fn base(round: u64) -> [u8; 32] {
    [round as u8; 32]
}

fn values(seed: u8, round: u64) -> Vec<f32> {
    (0..N).map(|i| ((i as f32) * 0.01 + f32::from(seed) + round as f32).sin()).collect()
}

/// A dense f32 update for `round`, naming `sender`, signed by `signer`.
fn update(signer: &SigningKey, sender: [u8; 32], round: u64, nonce: u8, x: &[f32], weight: u64) -> Vec<u8> {
    let mut pb = PayloadBuilder::new();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    pb.push("w", vec![N as u64], DType::F32, &bytes);
    let (payload, tensors) = pb.finish();
    let spec = HeaderSpec {
        round,
        base_model: base(round),
        nonce: [nonce; 16],
        num_examples: weight,
        ..HeaderSpec::for_payload("m", sender, Encoding::DenseF32, &payload, tensors)
    };
    let u = spec.unsigned();
    let sig = signer.sign(u.signing_input().as_bytes()).to_bytes();
    frame::encode(&u.finish(&sig), &payload).expect("frame")
}

fn config(round: u64) -> Config {
    Config {
        limits: Limits::default(),
        model_id: "m".into(),
        round,
        base_model: base(round),
        layout: vec![TensorLayout { name: "w".into(), shape: vec![N as u64], dtype: DType::F32 }],
        aggregation: RoundConfig { max_updates: 8, ..RoundConfig::new(N, Rule::FedAvg) },
        replay_window: 4,
    }
}

/// Stands in for a device backend's page lock: records what is locked.
#[derive(Debug, Default)]
struct Locks(std::sync::Mutex<BTreeSet<(usize, usize)>>);

impl vain_transport::buf::Pinner for Locks {
    fn pin(&self, region: &[u8]) -> bool {
        self.0.lock().expect("lock").insert((region.as_ptr() as usize, region.len()))
    }

    fn unpin(&self, region: &[u8]) {
        assert!(self.0.lock().expect("lock").remove(&(region.as_ptr() as usize, region.len())), "not locked");
    }
}

#[test]
fn bad_updates_and_garbage_are_rejected_by_type_while_an_honest_client_completes_its_rounds() {
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "service: bad updates and garbage", e);
        return;
    }
    let deny = Arc::new(RwLock::new(BTreeSet::new()));
    let tls = tls::server_config(&AGG, Policy::AnyExcept(deny)).expect("tls");
    let mut cfg = quic::Config::new("127.0.0.1:0".parse().expect("addr"), tls);
    let locks = Arc::new(Locks::default());
    cfg.page_lock = Some(locks.clone());
    let service = Service::start(cfg, 2, 16).expect("service");
    let addr = service.local_addr();
    let agg_public = key(&AGG).verifying_key().to_bytes();

    let flooding = Arc::new(AtomicBool::new(true));
    let f = flooding.clone();
    let flood = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut n = 0u64;
        while f.load(Ordering::Relaxed) {
            let mut d = [0u8; 1200];
            for (i, b) in d.iter_mut().enumerate() {
                *b = (n as u8).wrapping_mul(31).wrapping_add(i as u8);
            }
            d[0] = if n.is_multiple_of(2) { 0xc3 } else { 0x41 };
            let _ = s.send_to(&d, addr);
            n += 1;
            if n.is_multiple_of(64) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        n
    });

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let mut honest = rt.block_on(async { Client::new(client::Config::new(addr, agg_public, HONEST)) }).expect("client");
    let mut attacker =
        rt.block_on(async { Client::new(client::Config::new(addr, agg_public, ATTACKER)) }).expect("client");
    let (h, a) = (key(&HONEST), key(&ATTACKER));
    let (h_pub, a_pub) = (h.verifying_key().to_bytes(), a.verifying_key().to_bytes());

    let mut backend = CpuBackend::new(1);
    let mut rejects: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut refused_by_transport = 0;
    for round in 1..=3u64 {
        let mut ingest = Ingest::new(&mut backend, config(round), |_| Ok(())).expect("round");
        service.stage.open(ingest.checker());
        let hx = values(1, round);
        let ax = values(2, round);
        let good = update(&h, h_pub, round, 1, &hx, 30);
        let own = update(&a, a_pub, round, 2, &ax, 10);
        // Over the limit in the preamble: the shard's decoder stops the stream.
        let mut oversized = own.clone();
        oversized[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        // Garbled header bytes.
        let mut garbled = own.clone();
        for b in &mut garbled[24..60] {
            *b ^= 0x5a;
        }
        // The preamble agrees with the stream, the signed header claims one byte more.
        let mut short = own.clone();
        short.truncate(short.len() - 1);
        let plen = u64::from_le_bytes(short[16..24].try_into().expect("8 bytes")) - 1;
        short[16..24].copy_from_slice(&plen.to_le_bytes());
        // The attacker's key named, another key signed.
        let forged = update(&key(&[63; 32]), a_pub, round, 3, &ax, 10);
        // The honest client's update, resent over the attacker's connection.
        let relayed = good.clone();
        rt.block_on(async {
            for bad in [&oversized, &garbled, &short, &forged, &relayed] {
                // The stream is stopped for a malformed frame; QUIC may have acknowledged all
                // of a small frame before the stop reaches the client, so the client sees
                // either the refusal or a delivery, never another error.
                match attacker.send(bad).await {
                    Ok(_) => {}
                    Err(client::Error::Refused(code)) => {
                        assert_eq!(code, 1, "a malformed frame is refused with code 1");
                        assert!(std::ptr::eq(bad, &oversized), "only the oversized frame is refused in the transport");
                        refused_by_transport += 1;
                    }
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            honest.send(&good).await.expect("honest send");
            attacker.send(&own).await.expect("attacker's own good update");
            // The same update again: a replay.
            attacker.send(&own).await.expect("replayed frame is delivered, then rejected");
        });
        let mut accepted = Vec::new();
        service
            .stage
            .collect(&mut ingest, 2, Instant::now() + Duration::from_secs(20), |ev| match ev {
                Event::Accepted { accepted: a, .. } => accepted.push(a.sender),
                Event::Rejected(r) => *rejects.entry(r.reject.reason()).or_default() += 1,
            })
            .expect("collect");
        // The replay may still be in the channel after the second acceptance.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rejects.get("replay").copied().unwrap_or(0) < round && Instant::now() < deadline {
            service
                .stage
                .collect(&mut ingest, 3, Instant::now() + Duration::from_millis(50), |ev| {
                    if let Event::Rejected(r) = ev {
                        assert!(matches!(r.reject, Reject::Replay(_)), "{}", r.reject);
                        *rejects.entry(r.reject.reason()).or_default() += 1;
                    }
                })
                .expect("collect");
        }
        assert_eq!(accepted.len(), 2, "round {round}: {rejects:?}");
        assert!(accepted.contains(&h_pub) && accepted.contains(&a_pub));
        let (outcome, _) = ingest.finish(&key(&AGG)).expect("finish");
        for i in 0..N {
            let want = (30.0 * f64::from(hx[i]) + 10.0 * f64::from(ax[i])) / 40.0;
            assert!((f64::from(outcome.aggregate[i]) - want).abs() < 1e-5, "round {round}, coordinate {i}");
        }
    }
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.join().expect("flood");
    rt.block_on(async {
        honest.close().await;
        attacker.close().await;
    });
    let stats = service.stop().expect("stop");
    let total = quic::Stats::total(&stats);
    // The payloads arrived in page-locked pool buffers, all unlocked once the service is gone.
    assert!(total.pool_pinned > 0 && total.pool_pinned == total.pool_allocated, "{total:?}");
    assert!(locks.0.lock().expect("lock").is_empty());
    assert!(refused_by_transport <= 3, "{total:?}");
    assert_eq!(total.bad_frames, 3, "the oversized frames: {total:?}");
    assert_eq!(rejects.get("header"), Some(&3), "{rejects:?}");
    assert_eq!(rejects.get("payload digest"), Some(&3), "{rejects:?}");
    assert_eq!(rejects.get("signature"), Some(&3), "{rejects:?}");
    assert_eq!(rejects.get("relayed"), Some(&3), "{rejects:?}");
    assert_eq!(rejects.get("replay"), Some(&3), "{rejects:?}");
    assert!(sent > 100, "the flood sent {sent} datagrams");
}

/// The aggregator restarts between two sends: it closes its connections on the way down, and the
/// client's next send reconnects (with backoff) to the new instance on the same port.
#[test]
fn a_client_reconnects_to_a_restarted_aggregator() {
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "service: client reconnects", e);
        return;
    }
    let cfg = || {
        let deny = Arc::new(RwLock::new(BTreeSet::new()));
        quic::Config::new(
            "127.0.0.1:0".parse().expect("addr"),
            tls::server_config(&AGG, Policy::AnyExcept(deny)).expect("tls"),
        )
    };
    let first = Service::start(cfg(), 1, 4).expect("service");
    let addr = first.local_addr();
    let agg_public = key(&AGG).verifying_key().to_bytes();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let mut client = rt.block_on(async { Client::new(client::Config::new(addr, agg_public, HONEST)) }).expect("client");
    let h = key(&HONEST);
    let mut backend = CpuBackend::new(1);
    let mut service = Some(first);
    for round in 1..=2u64 {
        // The second instance binds the port only after the first has stopped.
        let svc = match service.take() {
            Some(s) => s,
            None => Service::start(quic::Config { listen: addr, ..cfg() }, 1, 4).expect("restart"),
        };
        let mut ingest = Ingest::new(&mut backend, config(round), |_| Ok(())).expect("round");
        svc.stage.open(ingest.checker());
        let frame = update(&h, h.verifying_key().to_bytes(), round, 1, &values(1, round), 1);
        rt.block_on(client.send(&frame)).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let got = svc.stage.collect(&mut ingest, 1, Instant::now() + Duration::from_secs(10), |_| {}).expect("collect");
        assert_eq!(got, 1, "round {round}");
        let stats = svc.stop().expect("stop");
        assert_eq!(stats[0].connections, 1, "round {round}: one connection per aggregator instance");
    }
    rt.block_on(client.close());
}

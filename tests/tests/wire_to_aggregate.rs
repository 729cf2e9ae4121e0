//! The whole aggregator path on real sockets: clients encode, sign and frame updates
//! (`vain_ingest::update::Encoder`), send them over QUIC with identity-bound TLS to the glommio
//! shard, whose frames go through the ingest pipeline (verification, replay, backend) to the
//! round's aggregate — which equals the float64 reference of what the clients encoded.

use ed25519_dalek::SigningKey;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::Duration;
use vain_ingest::update::{Encoder, Round, Tensor};
use vain_ingest::{Config, Ingest, TensorLayout};
use vain_kernels::aggregate::{Config as RoundConfig, Rule};
use vain_kernels::cpu::CpuBackend;
use vain_kernels::encode::Codec;
use vain_schema::Limits;
use vain_schema::delta::DType;
use vain_transport::quic;
use vain_transport::tls::{self, Policy};

const AGG: [u8; 32] = [40; 32];

#[test]
fn updates_sent_over_quic_aggregate_to_the_reference() {
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "wire_to_aggregate", e);
        return;
    }
    let addr = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("port");
    let deny = Arc::new(RwLock::new(BTreeSet::new()));
    let cfg = quic::Config::new(addr, tls::server_config(&AGG, Policy::AnyExcept(deny)).expect("tls"));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let st = stop.clone();
    let shard = std::thread::spawn(move || {
        quic::run_shard(&cfg, st, move |peer, frame| {
            let _ = tx.send((peer, frame));
        })
    });
    std::thread::sleep(Duration::from_millis(150));

    // Four clients, each with its own key and a 1 000-parameter update in int8 blocks.
    let n = 1000usize;
    let round =
        |k: u64| Round { model_id: "m".into(), round: 3, base_model: [5; 32], num_examples: 10 * k, timestamp_ms: 0 };
    let mut frames = Vec::new();
    let mut want = vec![0f64; n];
    let mut total = 0f64;
    for c in 1..=4u8 {
        let key = SigningKey::from_bytes(&[c; 32]);
        let values: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.01 * f32::from(c)).sin()).collect();
        let built = Encoder::new(Codec::Int8 { block: 50 }, None)
            .build(&key, &round(u64::from(c)), [c; 16], &[Tensor { name: "w", shape: &[n as u64], values: &values }])
            .expect("build");
        // The reference sees what int8 encoding delivers.
        let e = vain_kernels::encode::encode(Codec::Int8 { block: 50 }, &values, None).expect("encode");
        let mut dec = vec![0f32; n];
        vain_kernels::decode::decode_into(e.encoding, n, &e.bytes, &mut dec).expect("decode");
        let w = 10.0 * f64::from(c);
        total += w;
        want.iter_mut().zip(&dec).for_each(|(a, d)| *a += w * f64::from(*d));
        frames.push((c, built.frame));
    }

    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        for (c, frame) in &frames {
            let client = tls::client_config(
                &[*c; 32],
                Policy::Only(BTreeSet::from([SigningKey::from_bytes(&AGG).verifying_key().to_bytes()])),
            )
            .expect("tls");
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client).expect("quic");
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
            ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let conn = ep.connect(addr, "aggregator").expect("connect").await.expect("handshake");
            let mut s = conn.open_uni().await.expect("open");
            s.write_all(frame).await.expect("write");
            s.finish().expect("finish");
            let _ = s.stopped().await;
            conn.close(0u32.into(), b"");
            ep.wait_idle().await;
        }
    });

    let mut backend = CpuBackend::new(1);
    let layout = vec![TensorLayout { name: "w".into(), shape: vec![n as u64], dtype: DType::F32 }];
    let icfg = Config {
        limits: Limits::default(),
        model_id: "m".into(),
        round: 3,
        base_model: [5; 32],
        layout,
        aggregation: RoundConfig { max_updates: 8, ..RoundConfig::new(0, Rule::FedAvg) },
        replay_window: 2,
    };
    let mut ingest = Ingest::new(&mut backend, icfg, |_| Ok(())).expect("round");
    for _ in 0..frames.len() {
        let (peer, frame) = rx.recv_timeout(Duration::from_secs(20)).expect("frame");
        let acc = ingest.ingest(&frame.header, frame.payload.as_slice()).unwrap_or_else(|r| panic!("{}", r.reject));
        assert_eq!(acc.sender, peer, "the TLS identity is the envelope's signer");
    }
    stop.store(true, Ordering::Relaxed);
    shard.join().expect("thread").expect("shard");
    let (outcome, result) = ingest.finish(&SigningKey::from_bytes(&AGG)).expect("finish");
    let err: f64 =
        outcome.aggregate.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w / total).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|w| (w / total).powi(2)).sum::<f64>().sqrt();
    assert!(err / norm < 1e-5, "relative error {}", err / norm);
    assert_eq!(result.verify(), Ok(()));
    assert_eq!(result.body.contributors.len(), 4);
}

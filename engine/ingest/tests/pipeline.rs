//! The ingest pipeline on whole frames: honest updates in every encoding (and zstd) aggregate
//! to the f64 reference; each kind of bad update gets its typed rejection, counted once per
//! reason, while honest clients on the same round complete; the round result is signed.

use ed25519_dalek::{Signer, SigningKey};
use vain_core::signed::Signed;
use vain_ingest::{Config, Ingest, Reject, RoundResult, TensorLayout};
use vain_kernels::aggregate::{Config as RoundConfig, Rule};
use vain_kernels::cpu::CpuBackend;
use vain_kernels::encode::{Codec, encode, zstd_compress};
use vain_schema::delta::{Compression, DType, Encoding, HeaderSpec, PayloadBuilder, TensorSpec};
use vain_schema::{Limits, frame};

const ROUND: u64 = 7;
const BASE: [u8; 32] = [9; 32];

fn layout() -> Vec<TensorLayout> {
    vec![
        TensorLayout { name: "embed.weight".into(), shape: vec![40, 25], dtype: DType::F32 },
        TensorLayout { name: "head.bias".into(), shape: vec![300], dtype: DType::F32 },
    ]
}

fn values(client: u8, n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * 0.013 + f32::from(client)).sin() * 0.5 + 0.01 * f32::from(client)).collect()
}

struct Built {
    frame: Vec<u8>,
    dense: Vec<f64>,
}

/// A signed frame from `key` with `codec`, optionally zstd'd; `tweak` edits the header spec.
fn update(key: &SigningKey, client: u8, codec: Codec, zstd: bool, tweak: impl FnOnce(&mut HeaderSpec)) -> Built {
    let mut pb = PayloadBuilder::new();
    let mut dense = Vec::new();
    let encoding = vain_ingest::update::wire_encoding(codec);
    for t in layout() {
        let n = t.shape.iter().product::<u64>() as usize;
        let x = values(client, n);
        let e = encode(codec, &x, None).expect("encode");
        let mut d = vec![0f32; n];
        vain_kernels::decode::decode_into(e.encoding, n, &e.bytes, &mut d).expect("decode");
        dense.extend(d.iter().map(|v| f64::from(*v)));
        pb.push(t.name.clone(), t.shape.clone(), DType::F32, &e.bytes);
    }
    let (payload, tensors): (Vec<u8>, Vec<TensorSpec>) = pb.finish();
    let mut spec = HeaderSpec {
        round: ROUND,
        base_model: BASE,
        nonce: [client; 16],
        num_examples: 10 + u64::from(client),
        ..HeaderSpec::for_payload("demo", key.verifying_key().to_bytes(), encoding, &payload, tensors)
    };
    let wire_payload = if zstd {
        let z = zstd_compress(&payload, 3).expect("zstd");
        spec.compression = Compression::Zstd;
        spec.payload_len = z.len() as u64;
        spec.payload_digest = vain_schema::digest(&z);
        z
    } else {
        payload
    };
    tweak(&mut spec);
    let u = spec.unsigned();
    let sig = key.sign(u.signing_input().as_bytes()).to_bytes();
    Built { frame: frame::encode(&u.finish(&sig), &wire_payload).expect("frame"), dense }
}

fn config(rule: Rule, max: usize) -> Config {
    Config {
        limits: Limits::default(),
        model_id: "demo".into(),
        round: ROUND,
        base_model: BASE,
        layout: layout(),
        aggregation: RoundConfig { max_updates: max, ..RoundConfig::new(0, rule) },
        replay_window: 4,
    }
}

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i + 1; 32])
}

#[test]
fn honest_updates_in_every_encoding_aggregate_to_the_reference() {
    let codecs = [
        (Codec::F32, false),
        (Codec::F16, true),
        (Codec::Bf16, false),
        (Codec::Int8 { block: 64 }, true),
        (Codec::TopK { fraction: 0.2, half: false }, false),
        (Codec::TopK { fraction: 0.2, half: true }, true),
        (Codec::SignScale, false),
    ];
    let mut backend = CpuBackend::new(2);
    let mut ing = Ingest::new(&mut backend, config(Rule::FedAvg, 16), |_| Ok(())).expect("round");
    let mut want = vec![0f64; 1300];
    let mut total = 0f64;
    for (c, (codec, zstd)) in codecs.iter().enumerate() {
        let b = update(&key(c as u8), c as u8, *codec, *zstd, |_| {});
        let acc = ing.ingest_frame(&b.frame).unwrap_or_else(|r| panic!("{codec} rejected: {}", r.reject));
        let w = f64::from(acc.weight);
        total += w;
        want.iter_mut().zip(&b.dense).for_each(|(a, d)| *a += w * d);
    }
    assert_eq!(ing.accepted(), 7);
    let signer = SigningKey::from_bytes(&[77; 32]);
    let (outcome, result): (_, Signed<RoundResult>) = ing.finish(&signer).expect("finish");
    let err: f64 =
        outcome.aggregate.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w / total).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|w| (w / total).powi(2)).sum::<f64>().sqrt();
    assert!(err / norm < 1e-5, "relative error {}", err / norm);
    assert_eq!(result.verify(), Ok(()));
    assert_eq!(result.body.contributors.len(), 7);
    let bytes: Vec<u8> = outcome.aggregate.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(result.body.aggregate, *blake3::hash(&bytes).as_bytes());
}

#[test]
fn every_bad_update_gets_its_typed_rejection_and_honest_clients_still_complete() {
    let banned = key(50);
    let banned_id = banned.verifying_key().to_bytes();
    let mut backend = CpuBackend::new(1);
    let mut ing = Ingest::new(&mut backend, config(Rule::Median, 16), move |k| {
        if *k == banned_id { Err(vain_ingest::Denied::Banned) } else { Ok(()) }
    })
    .expect("round");

    let honest = |i: u8| update(&key(i), i, Codec::F32, false, |_| {});
    ing.ingest_frame(&honest(0).frame).expect("honest 0");

    // A frame whose preamble lies about its header size.
    let mut lying = honest(1).frame;
    lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let r = ing.ingest_frame(&lying).expect_err("lying size");
    assert!(matches!(r.reject, Reject::Frame(_)), "{}", r.reject);

    // A garbled header.
    let mut garbled = honest(2).frame;
    for b in &mut garbled[24..60] {
        *b ^= 0x5a;
    }
    let r = ing.ingest_frame(&garbled).expect_err("garbled");
    assert!(matches!(r.reject, Reject::Header(_) | Reject::Frame(_)), "{}", r.reject);

    // A bad signature: a different key signs a header naming client 3.
    let forged = update(&key(3), 3, Codec::F32, false, |s| s.sender = key(4).verifying_key().to_bytes());
    let r = ing.ingest_frame(&forged.frame).expect_err("forged");
    assert!(matches!(r.reject, Reject::Signature(_)), "{}", r.reject);

    // A corrupted payload.
    let mut corrupt = honest(5).frame;
    let n = corrupt.len();
    corrupt[n - 3] ^= 1;
    let r = ing.ingest_frame(&corrupt).expect_err("corrupt");
    assert!(matches!(r.reject, Reject::Payload(_)), "{}", r.reject);

    // A replay of an accepted update.
    let r = ing.ingest_frame(&honest(0).frame).expect_err("replay");
    assert!(matches!(r.reject, Reject::Replay(_)), "{}", r.reject);

    // Wrong round, wrong base model, a banned sender, an unknown tensor, a zstd bomb.
    let r = ing.ingest_frame(&update(&key(6), 6, Codec::F32, false, |s| s.round = ROUND + 1).frame).expect_err("round");
    assert!(matches!(r.reject, Reject::WrongRound { what: "round", .. }), "{}", r.reject);
    let r =
        ing.ingest_frame(&update(&key(6), 6, Codec::F32, false, |s| s.base_model = [1; 32]).frame).expect_err("base");
    assert!(matches!(r.reject, Reject::WrongRound { what: "base model", .. }), "{}", r.reject);
    let r = ing.ingest_frame(&update(&banned, 7, Codec::F32, false, |_| {}).frame).expect_err("banned");
    assert!(matches!(r.reject, Reject::NotAllowed(vain_ingest::Denied::Banned)), "{}", r.reject);
    let r = ing
        .ingest_frame(&update(&key(8), 8, Codec::F32, false, |s| s.tensors[1].name = "other.bias".into()).frame)
        .expect_err("layout");
    assert!(matches!(r.reject, Reject::Layout { .. }), "{}", r.reject);
    let r = ing
        .ingest_frame(&update(&key(9), 9, Codec::F32, true, |s| s.decoded_len += 4096).frame)
        .expect_err("zstd length lie");
    assert!(matches!(r.reject, Reject::Decompress(_)), "{}", r.reject);

    // Non-finite values.
    let mut nan = PayloadBuilder::new();
    let mut x: Vec<u8> = values(10, 1000).iter().flat_map(|v| v.to_le_bytes()).collect();
    x[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    nan.push("embed.weight", vec![40, 25], DType::F32, &x);
    let (payload, tensors) = nan.finish();
    let spec = HeaderSpec {
        round: ROUND,
        base_model: BASE,
        nonce: [10; 16],
        ..HeaderSpec::for_payload("demo", key(10).verifying_key().to_bytes(), Encoding::DenseF32, &payload, tensors)
    };
    let u = spec.unsigned();
    let sig = key(10).sign(u.signing_input().as_bytes()).to_bytes();
    let r = ing.ingest_frame(&frame::encode(&u.finish(&sig), &payload).expect("frame")).expect_err("nan");
    assert!(matches!(r.reject, Reject::Values(_)), "{}", r.reject);
    // The same sender's next, good update is still taken: a rejection blocks nothing else.
    let r = ing.ingest_frame(&update(&key(10), 10, Codec::F32, false, |s| s.nonce = [99; 16]).frame);
    assert!(r.is_ok(), "a good update from the same sender is still taken");

    // Honest clients complete the round despite all of it.
    for i in 11..14 {
        ing.ingest_frame(&honest(i).frame).expect("honest");
    }
    let counts = ing.rejected().clone();
    for reason in [
        "frame",
        "header",
        "signature",
        "payload digest",
        "replay",
        "wrong round",
        "not allowed",
        "layout",
        "decompression",
        "values",
    ] {
        assert!(counts.get(reason).copied().unwrap_or(0) >= 1, "no {reason} rejection counted: {counts:?}");
    }
    assert_eq!(ing.accepted(), 5);
    let (outcome, result) = ing.finish(&SigningKey::from_bytes(&[1; 32])).expect("finish");
    assert_eq!(outcome.report.updates.len(), 5);
    assert_eq!(result.verify(), Ok(()));
}

#[test]
fn rejections_are_logged_once_per_peer_and_reason() {
    let mut backend = CpuBackend::new(1);
    let mut ing = Ingest::new(&mut backend, config(Rule::FedAvg, 8), |_| Ok(())).expect("round");
    let first = ing.ingest_frame(&update(&key(1), 1, Codec::F32, false, |s| s.round = 1).frame).expect_err("round");
    let second = ing
        .ingest_frame(
            &update(&key(1), 1, Codec::F32, false, |s| {
                s.round = 2;
                s.nonce = [3; 16];
            })
            .frame,
        )
        .expect_err("round");
    assert!(first.first_for_peer && !second.first_for_peer);
    assert_eq!(ing.rejected().get("wrong round"), Some(&2));
    let other = ing.ingest_frame(&update(&key(2), 2, Codec::F32, false, |s| s.round = 1).frame).expect_err("round");
    assert!(other.first_for_peer, "another peer is logged on its own");
}

#[test]
fn client_encoder_frames_are_accepted_and_carry_topk_residuals() {
    use vain_ingest::update::{Encoder, Round, Tensor};
    let k = key(30);
    let mut enc = Encoder::new(Codec::TopK { fraction: 0.1, half: false }, Some(3));
    let w = values(30, 1000);
    let b = values(31, 300);
    let mut delivered = vec![0f64; 1300];
    for r in 0..5u64 {
        let round =
            Round { model_id: "demo".into(), round: ROUND + r, base_model: BASE, num_examples: 5, timestamp_ms: 0 };
        let tensors = [
            Tensor { name: "embed.weight", shape: &[40, 25], values: &w },
            Tensor { name: "head.bias", shape: &[300], values: &b },
        ];
        let built = enc.build(&k, &round, [r as u8; 16], &tensors).expect("build");
        assert!(built.ratio > 3.0, "top-k 10 % + zstd compresses: {}", built.ratio);
        let mut backend = CpuBackend::new(1);
        let cfg = Config { round: ROUND + r, ..config(Rule::FedAvg, 2) };
        let mut ing = Ingest::new(&mut backend, cfg, |_| Ok(())).expect("round");
        ing.ingest_frame(&built.frame).unwrap_or_else(|e| panic!("round {r}: {}", e.reject));
        let (out, _) = ing.finish(&SigningKey::from_bytes(&[2; 32])).expect("finish");
        delivered.iter_mut().zip(&out.aggregate).for_each(|(d, a)| *d += f64::from(*a));
    }
    // Error feedback: after 5 rounds of 10 %, the large coordinates were all delivered, and
    // what was sent plus what is still owed is 5× the update.
    let sent_norm: f64 = delivered.iter().map(|v| v * v).sum::<f64>().sqrt();
    let want_norm: f64 = w.iter().chain(&b).map(|v| (5.0 * f64::from(*v)).powi(2)).sum::<f64>().sqrt();
    assert!(sent_norm > 0.5 * want_norm && sent_norm < 1.01 * want_norm, "{sent_norm} vs {want_norm}");
    let bad = Encoder::new(Codec::F32, None).build(
        &k,
        &Round { model_id: "demo".into(), round: 1, base_model: BASE, num_examples: 1, timestamp_ms: 0 },
        [0; 16],
        &[Tensor { name: "embed.weight", shape: &[3], values: &w[..4] }],
    );
    assert!(matches!(bad, Err(vain_ingest::update::Error::Shape { .. })));
}

#[test]
fn a_noised_round_signs_the_noise_commitment_never_the_secret() {
    use vain_kernels::aggregate::Noise;
    use vain_kernels::philox::Secret;
    let secret = Secret::from_bytes([0x5a; 32]);
    let mut cfg = config(Rule::FedAvg, 4);
    cfg.aggregation.clip = Some(1.0);
    cfg.aggregation.noise = Some(Noise { multiplier: 0.7, secret: secret.clone() });
    let mut backend = CpuBackend::new(1);
    let mut ing = Ingest::new(&mut backend, cfg, |_| Ok(())).expect("round");
    for c in 0..3 {
        ing.ingest_frame(&update(&key(c), c, Codec::F32, false, |_| {}).frame).expect("honest");
    }
    let (outcome, result) = ing.finish(&SigningKey::from_bytes(&[4; 32])).expect("finish");
    let std = outcome.report.noise_std.expect("noise");
    assert_eq!(result.body.noise, Some((std, secret.commitment())));
    assert_eq!(result.verify(), Ok(()));
    let text = format!("{result:?}{:?}", outcome.report);
    assert!(!text.contains("5a5a5a") && !text.contains("90, 90, 90"), "the secret shows in {text}");
    // A result that drops or changes the commitment no longer verifies.
    let mut forged = result.clone();
    forged.body.noise = None;
    assert!(forged.verify().is_err());
}

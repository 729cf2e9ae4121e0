#![allow(missing_docs)] // criterion_group! generates undocumented items
//! The receive path of one update, stage by stage: frame decode, header parse, payload digest,
//! signature, and the reference accumulate. Throughput is in bytes of payload.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use std::hint::black_box;
use vain_kernels::decode::{Encoding as KEnc, accumulate};
use vain_schema::delta::{DType, Encoding, Envelope, HeaderSpec, PayloadBuilder};
use vain_schema::{Limits, frame};
use vain_transport::frame::Decoder;

fn update(params: usize, tensors: usize) -> (Vec<u8>, Vec<u8>) {
    let sk = SigningKey::from_bytes(&[1; 32]);
    let per = params / tensors;
    let mut pb = PayloadBuilder::new();
    for t in 0..tensors {
        let v: Vec<u8> = (0..per).flat_map(|i| ((i as f32 * 1e-3).sin() + t as f32).to_le_bytes()).collect();
        pb.push(format!("layer{t}.weight"), vec![per as u64], DType::F32, &v);
    }
    let (payload, tensors) = pb.finish();
    let spec = HeaderSpec {
        round: 1,
        nonce: [1; 16],
        num_examples: 10,
        ..HeaderSpec::for_payload("bench", sk.verifying_key().to_bytes(), Encoding::DenseF32, &payload, tensors)
    };
    let u = spec.unsigned();
    let sig = sk.sign(u.signing_input().as_bytes()).to_bytes();
    (u.finish(&sig), payload)
}

fn receive_path(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("cpu_receive");
    for params in [1usize << 18, 1 << 22] {
        let (header, payload) = update(params, 64);
        let stream = frame::encode(&header, &payload).expect("frame");
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_with_input(BenchmarkId::new("frame_decode_64k_chunks", params), &stream, |b, s| {
            b.iter(|| {
                let mut d = Decoder::new(limits.clone());
                for c in s.chunks(64 << 10) {
                    d.push(c).expect("push");
                }
                black_box(d.finish().expect("frame"))
            })
        });
        g.bench_with_input(BenchmarkId::new("payload_blake3", params), &payload, |b, p| {
            b.iter(|| black_box(vain_schema::digest(p)))
        });
        g.bench_with_input(BenchmarkId::new("open_parse_digest_verify", params), &(&header, &payload), |b, (h, p)| {
            b.iter(|| black_box(Envelope::open(h, p, &limits).expect("open").round()))
        });
        let mut acc = vec![0.0f32; params];
        g.bench_with_input(BenchmarkId::new("reference_accumulate_f32", params), &payload, |b, p| {
            b.iter(|| accumulate(KEnc::DenseF32, params, p, 0.5, &mut acc).expect("acc"))
        });
    }
    g.finish();

    let (header, _) = update(1 << 12, 1024);
    let mut g = c.benchmark_group("cpu_header");
    g.bench_function("parse_1024_tensors", |b| {
        b.iter(|| black_box(Envelope::parse(&header, &limits).expect("parse").round()))
    });
    let env = Envelope::parse(&header, &limits).expect("parse");
    g.bench_function("verify_signature", |b| b.iter(|| env.verify_signature().expect("sig")));
    g.finish();
}

criterion_group!(benches, receive_path);
criterion_main!(benches);

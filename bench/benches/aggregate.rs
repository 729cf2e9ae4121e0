#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Per-operation benches of the CPU backend: fused decode + accumulate for every encoding, each
//! rule's whole round (ingest of every update + round close), and the Gram product alone. Grid: N ∈ {8, 32, 128} updates, D = 1M parameters; set
//! VAIN_BENCH_FULL=1 to add D = 16M (needs N × 64 MiB of memory and minutes per point).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vain_kernels::aggregate::{Config, Round, Rule};
use vain_kernels::backend::{Backend, Segment, Update};
use vain_kernels::cpu::CpuBackend;
use vain_kernels::encode::{Codec, encode};

fn dims() -> Vec<usize> {
    if std::env::var_os("VAIN_BENCH_FULL").is_some() { vec![1 << 20, 16 << 20] } else { vec![1 << 20] }
}

fn data(d: usize, salt: u64) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ salt;
    (0..d)
        .map(|j| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((j % 97) as f32 * 0.01 - 0.4) + 0.3 * ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        })
        .collect()
}

fn decode_accumulate(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_accumulate");
    g.sample_size(10);
    let mut b = CpuBackend::default();
    for d in dims() {
        let x = data(d, 1);
        for codec in [
            Codec::F32,
            Codec::F16,
            Codec::Bf16,
            Codec::Int8 { block: 256 },
            Codec::TopK { fraction: 0.01, half: false },
            Codec::TopK { fraction: 0.01, half: true },
            Codec::SignScale,
        ] {
            let e = encode(codec, &x, None).expect("encode");
            b.prepare(d, 0).expect("prepare");
            g.throughput(Throughput::Bytes(e.bytes.len() as u64));
            let seg = [Segment { offset: 0, numel: d, encoding: e.encoding, bytes: &e.bytes }];
            g.bench_with_input(BenchmarkId::new(codec.to_string(), d), &d, |bn, _| {
                bn.iter(|| b.ingest(&Update { segments: &seg }, 1.0, None).expect("ingest"))
            });
        }
    }
    g.finish();
}

fn rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_close");
    g.sample_size(10);
    let mut b = CpuBackend::default();
    for d in dims() {
        for n in [8usize, 32, 128] {
            let updates: Vec<Vec<u8>> =
                (0..n).map(|i| data(d, i as u64).iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
            let f = (n - 3) / 4;
            for rule in [
                Rule::FedAvg,
                Rule::Median,
                Rule::TrimmedMean { beta: 0.1 },
                Rule::MultiKrum { f, m: n - f },
                Rule::Bulyan { f },
                Rule::CenteredClip { tau: 10.0, iters: 3 },
            ] {
                g.throughput(Throughput::Bytes((n * d * 4) as u64));
                g.bench_with_input(BenchmarkId::new(rule.to_string(), format!("n{n}/d{d}")), &n, |bn, _| {
                    bn.iter(|| {
                        let cfg = Config { max_updates: n, memory_limit: u64::MAX, ..Config::new(d, rule) };
                        let mut r = Round::new(&mut b, cfg).expect("round");
                        for u in &updates {
                            let seg = [Segment { offset: 0, numel: d, encoding: Codec::F32.encoding(), bytes: u }];
                            r.ingest(&Update { segments: &seg }, 1.0).expect("ingest");
                        }
                        r.finish().expect("finish")
                    })
                });
            }
        }
    }
    g.finish();
}

/// The Gram product alone, on rows already stored: Multi-Krum's and Bulyan's dominant cost.
fn gram(c: &mut Criterion) {
    let mut g = c.benchmark_group("gram");
    g.sample_size(10);
    let mut b = CpuBackend::default();
    for d in dims() {
        for n in [8usize, 32, 128] {
            b.prepare(d, n).expect("prepare");
            for i in 0..n {
                let bytes: Vec<u8> = data(d, i as u64).iter().flat_map(|v| v.to_le_bytes()).collect();
                let seg = [Segment { offset: 0, numel: d, encoding: Codec::F32.encoding(), bytes: &bytes }];
                b.store_row(i, &Update { segments: &seg }).expect("store");
            }
            g.throughput(Throughput::Bytes((n * d * 4) as u64));
            g.bench_with_input(BenchmarkId::new("gram", format!("n{n}/d{d}")), &n, |bn, &n| {
                bn.iter(|| b.gram(n).expect("gram"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decode_accumulate, rules, gram);
criterion_main!(benches);

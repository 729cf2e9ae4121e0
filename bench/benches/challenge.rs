#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Resource challenges: the prover's answer per thread count and the verifier's Freivalds
//! check. Throughput is in multiply-adds (elements), the unit of `challenge::CORE_RATE`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vain_core::challenge::{self, Challenge, SIDE};

fn challenge(c: &mut Criterion) {
    let ch = Challenge { rows: SIDE, inner: 1024, cols: SIDE, seed: 7, issued: 0, deadline: 0 };
    let mut g = c.benchmark_group("challenge");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ch.work()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        g.bench_with_input(BenchmarkId::new("solve", threads), &threads, |b, t| {
            b.iter(|| black_box(challenge::solve(&ch, *t)))
        });
    }
    let answer = challenge::solve(&ch, cores);
    g.bench_function("verify", |b| b.iter(|| assert!(challenge::verify(&ch, black_box(&answer), 9))));
    g.finish();
}

criterion_group!(benches, challenge);
criterion_main!(benches);

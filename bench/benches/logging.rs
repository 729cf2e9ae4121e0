#![allow(missing_docs)] // criterion_group! generates undocumented items
//! What logging costs on the aggregator's per-update path. A shard's handler — the `connection`
//! span, the round's checks (frame, header, BLAKE3, signature, layout) and the hand-off to the
//! stage — runs one update at a time with no subscriber, with the subscriber `vain node`
//! installs at its default level (`info`, human format) and at `debug` (where the span is
//! created for every update). Output goes to a sink, so what is measured is the subscriber's
//! work, not the terminal's. The update is small (16 Ki parameters) so that a per-update cost,
//! if any, weighs as much as it ever does.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use vain_ingest::update::{Encoder, Round, Tensor};
use vain_ingest::{Checker, Config, TensorLayout};
use vain_kernels::aggregate::{Config as RoundConfig, Rule};
use vain_kernels::encode::Codec;
use vain_schema::Limits;
use vain_schema::delta::DType;
use vain_transport::frame::Decoder;

const PARAMS: usize = 1 << 14;

fn subscriber(filter: &str) -> tracing::Dispatch {
    // The node's subscriber (engine/node/src/main.rs), writing to a sink instead of stderr.
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::sink)
            .with_ansi(false)
            .finish(),
    )
}

fn per_update(c: &mut Criterion) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let base = *blake3::hash(b"base").as_bytes();
    let values: Vec<f32> = (0..PARAMS).map(|i| (i as f32 * 1e-3).sin() * 0.01).collect();
    let meta = Round { model_id: "bench".into(), round: 1, base_model: base, num_examples: 100, timestamp_ms: 1 };
    let shape = [PARAMS as u64];
    let built = Encoder::new(Codec::F32, None)
        .build(&key, &meta, [1; 16], &[Tensor { name: "w", shape: &shape, values: &values }])
        .expect("update");
    let cfg = Config {
        limits: Limits::default(),
        model_id: "bench".into(),
        round: 1,
        base_model: base,
        layout: vec![TensorLayout { name: "w".into(), shape: vec![PARAMS as u64], dtype: DType::F32 }],
        aggregation: RoundConfig::new(PARAMS, Rule::FedAvg),
        replay_window: 4,
    };
    let allow = || Arc::new(|_: &vain_schema::PublicKey| Ok(()));
    let (stage, mut handlers) = vain_aggregator::channels(1, 4, None);
    stage.open(Checker::new(&cfg, allow()));
    let mut handler = handlers.remove(0);
    let peer = key.verifying_key().to_bytes();
    let frame = || {
        let mut d = Decoder::new(Limits::default());
        d.push(&built.frame).expect("push");
        d.finish().expect("frame")
    };
    // Every update must pass: a refused one would be measured on another path.
    let f = frame();
    Checker::new(&cfg, allow()).check_from(Some(peer), &f.header, f.payload).expect("the update passes the checks");
    handler.handle(peer, frame());
    assert_eq!(stage.drain(), 1);

    let mut g = c.benchmark_group("logging_per_update");
    g.throughput(Throughput::Elements(1));
    for (name, dispatch) in
        [("none", None), ("info (default)", Some(subscriber("info"))), ("debug", Some(subscriber("debug")))]
    {
        let mut run = |b: &mut criterion::Bencher| {
            b.iter_batched(
                frame,
                |f| {
                    handler.handle(peer, f);
                    stage.drain()
                },
                BatchSize::SmallInput,
            )
        };
        g.bench_function(BenchmarkId::new("shard_handle", name), |b| match &dispatch {
            Some(d) => tracing::dispatcher::with_default(d, || run(b)),
            None => run(b),
        });
    }
    g.finish();
}

criterion_group!(benches, per_update);
criterion_main!(benches);

//! The aggregation throughput harness behind `vain bench aggregate`: synthetic client updates in
//! a chosen encoding, every rule timed on one backend, and the machine's memory-copy bandwidth
//! measured in the same run so the figures can be read as a fraction of what memory allows.

use std::time::{Duration, Instant};
use vain_kernels::aggregate::{Config, Round, Rule};
use vain_kernels::backend::{Backend, Segment, Update};
use vain_kernels::encode::{Codec, encode};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parameters per update.
    pub params: usize,
    /// Updates per round.
    pub updates: usize,
    /// Client encoding.
    pub codec: Codec,
    /// Rules to time.
    pub rules: Vec<Rule>,
    /// Timed repetitions per rule, after one untimed warm-up (the median is reported).
    pub reps: usize,
    /// Tensors each update is split into.
    pub tensors: usize,
    /// Updates handed to the backend per `ingest_batch` call (streaming rules).
    pub batch: usize,
    /// Threads for the copy-bandwidth measurement (match the backend's).
    pub copy_threads: usize,
}

/// One rule's figures.
#[derive(Debug, Clone)]
pub struct Row {
    /// The rule.
    pub rule: Rule,
    /// Median wall time of ingest + finish over the repetitions.
    pub time: Duration,
    /// Encoded update bytes per second.
    pub wire_gbps: f64,
    /// f32-equivalent bytes (updates × params × 4) per second.
    pub f32_gbps: f64,
    /// `wire_gbps` ÷ the measured copy bandwidth.
    pub of_copy: f64,
    /// This rule's time ÷ FedAvg's (when FedAvg ran).
    pub vs_fedavg: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Results {
    /// Memory copy bandwidth (bytes copied per second, GB/s) measured on a buffer of the same
    /// size as one round's updates.
    pub copy_gbps: f64,
    /// Encoded bytes of one round (all updates).
    pub round_bytes: u64,
    /// Compression ratio of the encoding on the synthetic data.
    pub ratio: f64,
    /// One row per rule.
    pub rows: Vec<Row>,
    /// The Gram product alone on one round's rows, stored (median of the repetitions), and the
    /// time to read those rows once from memory (same threads, best of 5).
    pub gram: Option<(Duration, Duration)>,
}

/// Synthetic updates of one round: `bytes[update][tensor]`, the tensor sizes, and the
/// encoding's compression ratio on them.
pub struct Synthetic {
    /// Encoded bytes per update and tensor.
    pub bytes: Vec<Vec<Vec<u8>>>,
    /// Elements per tensor.
    pub sizes: Vec<usize>,
    /// f32 bytes ÷ encoded bytes.
    pub ratio: f64,
}

/// Synthetic updates: a shared direction plus per-client noise (never zeros), encoded.
pub fn make_updates(opts: &Options) -> Result<Synthetic, vain_kernels::encode::Error> {
    let t = opts.tensors.clamp(1, opts.params.max(1));
    let sizes: Vec<usize> = (0..t).map(|i| opts.params / t + usize::from(i < opts.params % t)).collect();
    let mut seed = 0x243f_6a88_85a3_08d3u64;
    let mut ratio = 0.0;
    let mut all = Vec::with_capacity(opts.updates);
    for _ in 0..opts.updates {
        let mut tensors = Vec::with_capacity(t);
        for &n in &sizes {
            let x: Vec<f32> = (0..n)
                .map(|j| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let noise = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    ((j % 97) as f32 * 0.01 - 0.4) + 0.3 * noise
                })
                .collect();
            let e = encode(opts.codec, &x, None)?;
            ratio = e.ratio;
            tensors.push(e.bytes);
        }
        all.push(tensors);
    }
    Ok(Synthetic { bytes: all, sizes, ratio })
}

/// Bytes copied per second by `copy_from_slice` on `bytes`-sized buffers split over `threads`
/// threads (best of 5), in GB/s.
pub fn copy_bandwidth(bytes: usize, threads: usize) -> f64 {
    let n = (bytes / 4).max(1 << 20);
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0f32; n];
    let step = n.div_ceil(threads.max(1));
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(step).zip(src.chunks(step)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        best = best.min(t.elapsed());
        std::hint::black_box(&mut dst);
    }
    (n * 4) as f64 / best.as_secs_f64() / 1e9
}

/// Time to read `bytes` of f32 once, split over `threads` threads (best of 5): the floor for any
/// pass over that much data.
pub fn read_time(bytes: usize, threads: usize) -> Duration {
    let n = (bytes / 4).max(1 << 20);
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let step = n.div_ceil(threads.max(1)).next_multiple_of(16);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for c in src.chunks(step) {
                s.spawn(move || {
                    // 16 independent lanes, so the sum vectorises and runs at the load rate.
                    let mut acc = [0f32; 16];
                    for v in c.chunks_exact(16) {
                        acc.iter_mut().zip(v).for_each(|(a, x)| *a += x);
                    }
                    std::hint::black_box(acc)
                });
            }
        });
        best = best.min(t.elapsed());
    }
    best
}

/// The Gram product of `opts.updates` stored rows (median of `opts.reps`) and the time to read
/// them once.
fn gram_alone(
    backend: &mut dyn Backend,
    opts: &Options,
    views: &[Update<'_>],
) -> Result<(Duration, Duration), crate::Error> {
    let n = views.len();
    let err = |source| crate::Error::Rule { rule: "gram".into(), clients: n, source };
    backend.prepare(opts.params, n).map_err(|e| err(e.into()))?;
    for (i, u) in views.iter().enumerate() {
        backend.store_row(i, u).map_err(|e| err(e.into()))?;
    }
    let mut times = Vec::new();
    for rep in 0..=opts.reps.max(1) {
        let t = Instant::now();
        std::hint::black_box(backend.gram(n).map_err(|e| err(e.into()))?);
        if rep > 0 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    Ok((times[times.len() / 2], read_time(n * opts.params * 4, opts.copy_threads)))
}

/// Runs every rule of `opts` on `backend`.
pub fn run(backend: &mut dyn Backend, opts: &Options) -> Result<Results, crate::Error> {
    let Synthetic { bytes: updates, sizes, ratio } = make_updates(opts)?;
    let round_bytes: u64 = updates.iter().flatten().map(|t| t.len() as u64).sum();
    let copy_gbps = copy_bandwidth(round_bytes as usize, opts.copy_threads);
    let enc = opts.codec.encoding();
    let mut rows: Vec<Row> = Vec::new();
    let mut gram = None;
    for &rule in &opts.rules {
        let mut times = Vec::with_capacity(opts.reps);
        // One untimed round first: page faults of fresh buffers and cold caches are not the
        // rule's cost.
        for rep in 0..=opts.reps.max(1) {
            let cfg = Config { max_updates: opts.updates, memory_limit: u64::MAX, ..Config::new(opts.params, rule) };
            let segs: Vec<Vec<Segment<'_>>> = updates
                .iter()
                .map(|u| {
                    let mut off = 0;
                    u.iter()
                        .zip(&sizes)
                        .map(|(b, &n)| {
                            let s = Segment { offset: off, numel: n, encoding: enc, bytes: b };
                            off += n;
                            s
                        })
                        .collect()
                })
                .collect();
            let views: Vec<Update<'_>> = segs.iter().map(|s| Update { segments: s }).collect();
            if gram.is_none() && matches!(rule, Rule::MultiKrum { .. } | Rule::Bulyan { .. }) {
                gram = Some(gram_alone(backend, opts, &views)?);
            }
            let ones = vec![1.0f32; opts.batch.max(1)];
            let start = Instant::now();
            let mut round = Round::new(backend, cfg).map_err(|source| crate::Error::Rule {
                rule: rule.to_string(),
                clients: opts.updates,
                source,
            })?;
            for chunk in views.chunks(opts.batch.max(1)) {
                for r in round.ingest_batch(chunk, &ones[..chunk.len()]) {
                    r.map_err(|source| crate::Error::Rule { rule: rule.to_string(), clients: opts.updates, source })?;
                }
            }
            let out = round.finish().map_err(|source| crate::Error::Rule {
                rule: rule.to_string(),
                clients: opts.updates,
                source,
            })?;
            if rep > 0 {
                times.push(start.elapsed());
            }
            std::hint::black_box(out);
        }
        times.sort();
        let time = times[times.len() / 2];
        let secs = time.as_secs_f64();
        let wire_gbps = round_bytes as f64 / secs / 1e9;
        rows.push(Row {
            rule,
            time,
            wire_gbps,
            f32_gbps: (opts.updates * opts.params * 4) as f64 / secs / 1e9,
            of_copy: wire_gbps / copy_gbps,
            vs_fedavg: None,
        });
    }
    if let Some(base) = rows.iter().find(|r| r.rule == Rule::FedAvg).map(|r| r.time.as_secs_f64()) {
        for r in &mut rows {
            r.vs_fedavg = Some(r.time.as_secs_f64() / base);
        }
    }
    Ok(Results { copy_gbps, round_bytes, ratio, rows, gram })
}

/// The results as a fixed-width table.
pub fn table(opts: &Options, backend: &str, res: &Results) -> String {
    let mut s = format!(
        "aggregate bench: backend {backend}, {} updates × {} params, encoding {} (ratio {:.2}), {} MB per round\n\
         memory copy bandwidth (same run): {:.2} GB/s\n\n",
        opts.updates,
        opts.params,
        opts.codec,
        res.ratio,
        res.round_bytes / 1_000_000,
        res.copy_gbps
    );
    s += &format!(
        "{:<22} {:>10} {:>11} {:>11} {:>9} {:>10}\n",
        "rule", "time ms", "wire GB/s", "f32 GB/s", "of copy", "× fedavg"
    );
    for r in &res.rows {
        s += &format!(
            "{:<22} {:>10.2} {:>11.2} {:>11.2} {:>8.0}% {:>10}\n",
            r.rule.to_string(),
            r.time.as_secs_f64() * 1e3,
            r.wire_gbps,
            r.f32_gbps,
            r.of_copy * 100.0,
            r.vs_fedavg.map_or("-".to_string(), |v| format!("{v:.2}"))
        );
    }
    if let Some((g, read)) = res.gram {
        s += &format!(
            "\nGram product of the {} rows alone: {:.2} ms; reading them once: {:.2} ms ({:.2}× the read)\n",
            opts.updates,
            g.as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e3,
            g.as_secs_f64() / read.as_secs_f64().max(1e-12)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use vain_kernels::cpu::CpuBackend;

    #[test]
    fn runs_every_rule_and_relates_them() {
        let opts = Options {
            params: 3000,
            updates: 12,
            codec: Codec::Int8 { block: 64 },
            rules: vec![Rule::FedAvg, Rule::Median, Rule::MultiKrum { f: 2, m: 6 }],
            reps: 2,
            tensors: 3,
            batch: 5,
            copy_threads: 1,
        };
        let res = run(&mut CpuBackend::new(1), &opts).expect("run");
        assert_eq!(res.rows.len(), 3);
        assert_eq!(res.round_bytes, 12 * (3000 + 4 * 3 * 16) as u64);
        assert!(res.copy_gbps > 0.0 && res.ratio > 3.5);
        assert_eq!(res.rows[0].vs_fedavg, Some(1.0));
        assert!(res.rows.iter().all(|r| r.wire_gbps > 0.0 && r.time > Duration::ZERO));
        let t = table(&opts, "cpu", &res);
        assert!(t.contains("multi-krum:2,6") && t.contains("memory copy bandwidth"));
        let (g, read) = res.gram.expect("Multi-Krum ran, so the Gram product was timed");
        assert!(g > Duration::ZERO && read > Duration::ZERO);
        assert!(t.contains("Gram product of the 12 rows alone"));
    }
}

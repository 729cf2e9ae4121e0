//! Whole untrusted frames through the aggregator's ingest pipeline: every input is accepted or
//! rejected with a counted reason, never a panic, and the counters add up.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_ingest::{Config, Ingest, TensorLayout};
use vain_kernels::aggregate::{Config as RoundConfig, Rule};
use vain_kernels::cpu::CpuBackend;
use vain_schema::Limits;
use vain_schema::delta::DType;

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        limits: Limits { max_payload_bytes: 1 << 20, max_decoded_bytes: 1 << 20, ..Limits::default() },
        model_id: "demo".into(),
        round: 7,
        base_model: [9; 32],
        layout: vec![TensorLayout { name: "w".into(), shape: vec![64], dtype: DType::F32 }],
        aggregation: RoundConfig { max_updates: 4, ..RoundConfig::new(0, Rule::Median) },
        replay_window: 4,
    };
    let mut backend = CpuBackend::new(1);
    let mut ing = Ingest::new(&mut backend, cfg, |_| Ok(())).expect("round");
    let mut rejected = 0u64;
    for chunk in data.split(|b| *b == 0xA5).take(4) {
        if ing.ingest_frame(chunk).is_err() {
            rejected += 1;
        }
    }
    assert_eq!(ing.rejected().values().sum::<u64>(), rejected);
});

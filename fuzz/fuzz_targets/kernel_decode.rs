//! A tensor's encoded payload bytes, decoded and accumulated by the reference kernels.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_kernels::decode::{Encoding, accumulate};

fuzz_target!(|data: &[u8]| {
    let [e, n, bs, rest @ ..] = data else { return };
    let enc = match e % 7 {
        0 => Encoding::DenseF32,
        1 => Encoding::DenseF16,
        2 => Encoding::DenseBf16,
        3 => Encoding::Int8Block { block_size: u32::from(*bs) },
        4 => Encoding::TopKF32,
        5 => Encoding::TopKF16,
        _ => Encoding::SignScale,
    };
    let n = usize::from(*n);
    let mut acc = vec![1.0f32; n];
    if accumulate(enc, n, rest, 0.5, &mut acc).is_err() {
        assert!(acc.iter().all(|&x| x == 1.0));
    }
});

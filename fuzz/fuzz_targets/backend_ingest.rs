//! Untrusted update bytes through the CPU backend's fast paths (batched ingest and row store),
//! checked against the scalar reference decoder: the backend accepts exactly what the reference
//! accepts (plus int8 blocks whose values overflow, which it rejects), adds the same values, and
//! leaves the accumulator untouched when it rejects.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_kernels::backend::{Backend, Segment, Update};
use vain_kernels::cpu::CpuBackend;
use vain_kernels::decode::{Encoding, decode_into};

fn encoding(e: u8, bs: u8) -> Encoding {
    match e % 7 {
        0 => Encoding::DenseF32,
        1 => Encoding::DenseF16,
        2 => Encoding::DenseBf16,
        3 => Encoding::Int8Block { block_size: u32::from(bs) },
        4 => Encoding::TopKF32,
        5 => Encoding::TopKF16,
        _ => Encoding::SignScale,
    }
}

fuzz_target!(|data: &[u8]| {
    // Two segments: [enc, bs, numel, len] headers, then their bytes.
    let [e0, b0, n0, l0, e1, b1, n1, gap, rest @ ..] = data else { return };
    let (n0, n1, gap) = (usize::from(*n0), usize::from(*n1), usize::from(*gap % 4));
    let split = usize::from(*l0).min(rest.len());
    let (bytes0, bytes1) = rest.split_at(split);
    let segs = [
        Segment { offset: 0, numel: n0, encoding: encoding(*e0, *b0), bytes: bytes0 },
        Segment { offset: n0 + gap, numel: n1, encoding: encoding(*e1, *b1), bytes: bytes1 },
    ];
    let dim = n0 + gap + n1;
    let update = Update { segments: &segs };

    // Reference: decode each segment; any error means the update is invalid.
    let mut want = vec![0f32; dim];
    let mut ok = true;
    for s in &segs {
        let mut v = vec![0f32; s.numel];
        if decode_into(s.encoding, s.numel, s.bytes, &mut v).is_err() || v.iter().any(|x| !x.is_finite()) {
            ok = false;
            break;
        }
        want[s.offset..s.offset + s.numel].copy_from_slice(&v);
    }

    let mut b = CpuBackend::new(1);
    b.prepare(dim, 1).expect("prepare");
    let results = b.ingest_batch(&[update], &[1.0], None);
    let stored = b.store_row(0, &update);
    assert_eq!(results[0].is_ok(), ok, "ingest verdict differs from the reference");
    assert_eq!(stored.is_ok(), ok, "store verdict differs from the reference");
    b.out_from_acc(1.0).expect("out");
    let mut got = vec![0f32; dim];
    b.read_out(&mut got).expect("read");
    if ok {
        assert_eq!(got, want, "accumulated values differ");
    } else {
        assert!(got.iter().all(|x| *x == 0.0), "a rejected update changed the accumulator");
    }
});

//! Every encoding decodes to the values it was built from (f64 reference), and hostile inputs are
//! typed errors that leave the accumulator untouched.

use half::{bf16, f16};
use proptest::prelude::*;
use vain_kernels::decode::{Encoding, Error, accumulate, decode_into};

fn le32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(prop_oneof![-100.0f32..-0.001, 0.001f32..100.0], n)
}

proptest! {
    #[test]
    fn dense_encodings_round_trip(v in (1usize..300).prop_flat_map(values)) {
        let n = v.len();
        let mut out = vec![f32::NAN; n];
        decode_into(Encoding::DenseF32, n, &le32(&v), &mut out).expect("f32");
        prop_assert_eq!(&out, &v);
        let h: Vec<u8> = v.iter().flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes()).collect();
        decode_into(Encoding::DenseF16, n, &h, &mut out).expect("f16");
        for (a, b) in out.iter().zip(&v) {
            prop_assert!(((a - b) / b).abs() <= 1e-3, "{a} vs {b}");
        }
        let bf: Vec<u8> = v.iter().flat_map(|x| bf16::from_f32(*x).to_bits().to_le_bytes()).collect();
        decode_into(Encoding::DenseBf16, n, &bf, &mut out).expect("bf16");
        for (a, b) in out.iter().zip(&v) {
            prop_assert!(((a - b) / b).abs() <= 8e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn int8_block_matches_f64_reference(q in prop::collection::vec(any::<i8>(), 1..500), bs in 1u32..70, seed in 0.01f32..4.0) {
        let n = q.len();
        let blocks = n.div_ceil(bs as usize);
        let scales: Vec<f32> = (0..blocks).map(|i| seed * (1.0 + i as f32 * 0.37)).collect();
        let mut bytes = le32(&scales);
        bytes.extend(q.iter().map(|&x| x as u8));
        let mut acc: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let before = acc.clone();
        accumulate(Encoding::Int8Block { block_size: bs }, n, &bytes, 0.25, &mut acc).expect("int8");
        for i in 0..n {
            let want = f64::from(before[i]) + 0.25 * f64::from(q[i]) * f64::from(scales[i / bs as usize]);
            prop_assert!((f64::from(acc[i]) - want).abs() <= 1e-4 * want.abs().max(1.0), "{i}: {} vs {want}", acc[i]);
        }
    }

    #[test]
    fn topk_scatters_into_place(n in 1usize..400, picks in prop::collection::btree_set(0u32..400, 0..50), v in values(50)) {
        let idx: Vec<u32> = picks.into_iter().filter(|&i| (i as usize) < n).collect();
        let vals = &v[..idx.len()];
        let mut bytes: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
        bytes.extend(le32(vals));
        let mut out = vec![f32::NAN; n];
        decode_into(Encoding::TopKF32, n, &bytes, &mut out).expect("topk");
        let mut want = vec![0.0f32; n];
        for (i, x) in idx.iter().zip(vals) {
            want[*i as usize] = *x;
        }
        prop_assert_eq!(out, want);
    }

    #[test]
    fn sign_scale_matches_bits(bits in prop::collection::vec(any::<bool>(), 1..300), s in 0.001f32..10.0) {
        let n = bits.len();
        let mut bytes = s.to_le_bytes().to_vec();
        let mut packed = vec![0u8; n.div_ceil(8)];
        for (i, &b) in bits.iter().enumerate() {
            if b {
                packed[i / 8] |= 1 << (i % 8);
            }
        }
        bytes.extend(packed);
        let mut out = vec![0.0; n];
        decode_into(Encoding::SignScale, n, &bytes, &mut out).expect("sign");
        for (o, b) in out.iter().zip(&bits) {
            prop_assert_eq!(*o, if *b { -s } else { s });
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), n in 0usize..64, e in 0usize..7) {
        let enc = [Encoding::DenseF32, Encoding::DenseF16, Encoding::DenseBf16, Encoding::Int8Block { block_size: 3 },
                   Encoding::TopKF32, Encoding::TopKF16, Encoding::SignScale][e];
        let mut acc = vec![1.0f32; n];
        if accumulate(enc, n, &bytes, 1.0, &mut acc).is_err() {
            prop_assert!(acc.iter().all(|&x| x == 1.0), "accumulator changed by a rejected update");
        }
    }
}

#[test]
fn hostile_inputs_are_typed_errors() {
    let mut out = vec![0.0; 4];
    assert_eq!(decode_into(Encoding::DenseF32, 4, &[0; 15], &mut out), Err(Error::Length { len: 15, numel: 4 }));
    assert_eq!(
        decode_into(Encoding::DenseF32, 4, &le32(&[1.0, f32::NAN, 0.0, 0.0]), &mut out),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(
        decode_into(Encoding::DenseF32, 3, &le32(&[1.0; 3]), &mut out),
        Err(Error::OutputLength { got: 4, want: 3 })
    );
    let mut b: Vec<u8> = [2u32, 1].iter().flat_map(|i| i.to_le_bytes()).collect();
    b.extend(le32(&[1.0, 2.0]));
    assert_eq!(decode_into(Encoding::TopKF32, 4, &b, &mut out), Err(Error::Index { entry: 1, index: 1, numel: 4 }));
    let mut b: Vec<u8> = [9u32].iter().flat_map(|i| i.to_le_bytes()).collect();
    b.extend(le32(&[1.0]));
    assert_eq!(decode_into(Encoding::TopKF32, 4, &b, &mut out), Err(Error::Index { entry: 0, index: 9, numel: 4 }));
    let mut b = le32(&[f32::INFINITY]);
    b.extend([0u8; 4]);
    assert_eq!(decode_into(Encoding::Int8Block { block_size: 4 }, 4, &b, &mut out), Err(Error::NonFinite { index: 0 }));
    assert_eq!(decode_into(Encoding::Int8Block { block_size: 0 }, 4, &b, &mut out), Err(Error::BlockSize));
}

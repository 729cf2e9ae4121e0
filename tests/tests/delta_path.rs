//! A model update from a rotated node identity crosses every layer that exists: signed envelope,
//! stream frame, incremental decoder, verification, replay check and weighted accumulation.

use vain_identity::Identity;
use vain_identity::keyfile::KdfParams;
use vain_identity::rotation::Policy;
use vain_identity::store::NewKey;
use vain_kernels::decode::{Encoding as KEnc, accumulate};
use vain_schema::delta::{DType, Encoding, Envelope, HeaderSpec, PayloadBuilder};
use vain_schema::node::Announcement;
use vain_schema::{Error, Limits, frame, replay};
use vain_transport::frame::Decoder;

const T0: u64 = 1_790_000_000_000;

struct Update {
    frame: Vec<u8>,
    values: Vec<f32>,
    examples: u64,
}

fn make_update(id: &Identity, round: u64, nonce: u8, examples: u64, seed: f32) -> Update {
    let values: Vec<f32> = (0..1000).map(|i| seed * ((i as f32) * 0.01).sin() + 0.001 * i as f32).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut pb = PayloadBuilder::new();
    pb.push("layer.weight", vec![10, 100], DType::F32, &bytes);
    let (payload, tensors) = pb.finish();
    let spec = HeaderSpec {
        round,
        base_model: [1; 32],
        nonce: [nonce; 16],
        num_examples: examples,
        timestamp_ms: T0,
        ..HeaderSpec::for_payload("e2e-model", id.current_key(), Encoding::DenseF32, &payload, tensors)
    };
    let u = spec.unsigned();
    let sig = id.signer().sign(u.signing_input().as_bytes()).expect("sign");
    Update { frame: frame::encode(&u.finish(&sig), &payload).expect("frame"), values, examples }
}

/// What an aggregator does with one stream: decode, verify against the sender's announced key,
/// replay-check, accumulate.
fn ingest(
    stream: &[u8],
    chunk: usize,
    known_key: &[u8; 32],
    guard: &mut replay::Guard,
    acc: &mut [f32],
) -> Result<u64, String> {
    let mut d = Decoder::new(Limits::default());
    for c in stream.chunks(chunk) {
        d.push(c).map_err(|e| e.to_string())?;
    }
    let f = d.finish().map_err(|e| e.to_string())?;
    let env = Envelope::open(&f.header, f.payload.as_slice(), &Limits::default()).map_err(|e| e.to_string())?;
    if &env.sender() != known_key {
        return Err("sender is not the announced key".into());
    }
    guard.check(&env.sender(), env.round(), &env.nonce()).map_err(|e| e.to_string())?;
    let w = env.num_examples();
    for t in env.tensors() {
        let bytes = &f.payload.as_slice()[t.offset as usize..(t.offset + t.length) as usize];
        accumulate(KEnc::DenseF32, t.numel as usize, bytes, w as f32, acc).map_err(|e| e.to_string())?;
    }
    Ok(w)
}

#[test]
fn rotated_nodes_updates_are_verified_and_averaged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fast = KdfParams { m_cost_kib: 256, t_cost: 1, parallelism: 1 };
    let mut a = Identity::create(&tmp.path().join("a"), NewKey::Random, None, fast, T0).expect("a");
    a.rotate(NewKey::Random, None, fast, T0 + 1000, &Policy::default()).expect("rotate");
    let b = Identity::create(&tmp.path().join("b"), NewKey::Random, Some(b"pw"), fast, T0).expect("b");

    // The aggregator learns each node's current key from its verified announcement.
    let key_of = |id: &Identity| {
        let ann = id.announcement(vec![], 1, Default::default(), T0 + 2000).expect("announce");
        Announcement::open(&ann, &Limits::default(), T0 + 2000).expect("verify").signing_key
    };
    let (ka, kb) = (key_of(&a), key_of(&b));
    assert_eq!(ka, a.current_key());
    assert_ne!(ka, a.node_id());

    let ua = make_update(&a, 5, 1, 300, 1.0);
    let ub = make_update(&b, 5, 2, 100, -2.0);
    let mut guard = replay::Guard::new(4, 1000);
    let mut acc = vec![0.0f32; 1000];
    let wa = ingest(&ua.frame, 1500, &ka, &mut guard, &mut acc).expect("a ingests");
    let wb = ingest(&ub.frame, 7, &kb, &mut guard, &mut acc).expect("b ingests");
    let total = (wa + wb) as f64;
    for (i, (a, (va, vb))) in acc.iter().zip(ua.values.iter().zip(&ub.values)).enumerate() {
        let want = (ua.examples as f64 * f64::from(*va) + ub.examples as f64 * f64::from(*vb)) / total;
        let got = f64::from(*a) / total;
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "coordinate {i}: {got} vs {want}");
    }

    // Replay of the same stream, a stream attributed to the wrong key, and a corrupted payload.
    let err = ingest(&ua.frame, 4096, &ka, &mut guard, &mut acc).expect_err("replay");
    assert!(err.contains("replayed"), "{err}");
    assert_eq!(
        ingest(&ua.frame, 4096, &kb, &mut guard, &mut acc).expect_err("wrong key"),
        "sender is not the announced key"
    );
    let mut bad = make_update(&b, 6, 3, 100, 3.0).frame;
    let n = bad.len();
    bad[n - 1] ^= 0x80;
    let before = acc.clone();
    let err = ingest(&bad, 4096, &kb, &mut guard, &mut acc).expect_err("corrupt");
    assert!(err.contains(&Error::PayloadDigest.to_string()), "{err}");
    assert_eq!(acc, before, "a rejected update leaves the aggregate untouched");
}

//! Envelope round trips, typed rejections and mutation robustness.

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use vain_schema::delta::{DType, Encoding, Envelope, HeaderSpec, PayloadBuilder, TensorSpec, ValueType};
use vain_schema::{Error, Limits, frame};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn spec_for(sk: &SigningKey, payload: &[u8], tensors: Vec<TensorSpec>, encoding: Encoding) -> HeaderSpec {
    HeaderSpec {
        round: 42,
        base_model: [3; 32],
        nonce: [9; 16],
        num_examples: 1000,
        timestamp_ms: 1_790_000_000_000,
        ..HeaderSpec::for_payload("resnet50-cifar", sk.verifying_key().to_bytes(), encoding, payload, tensors)
    }
}

fn sign(sk: &SigningKey, spec: &HeaderSpec) -> Vec<u8> {
    let u = spec.unsigned();
    let sig = sk.sign(u.signing_input().as_bytes()).to_bytes();
    u.finish(&sig)
}

fn dense_example() -> (SigningKey, Vec<u8>, HeaderSpec) {
    let sk = key(1);
    let mut pb = PayloadBuilder::new();
    pb.push("conv1.weight", vec![4, 3], DType::F32, &[0x11; 48]);
    pb.push("conv1.bias", vec![3], DType::F32, &[0x22; 12]);
    let (payload, tensors) = pb.finish();
    let spec = spec_for(&sk, &payload, tensors, Encoding::DenseF32);
    (sk, payload, spec)
}

#[test]
fn signed_envelope_opens_and_reports_every_field() {
    let (sk, payload, spec) = dense_example();
    let bytes = sign(&sk, &spec);
    let env = Envelope::open(&bytes, &payload, &Limits::default()).expect("valid envelope");
    assert_eq!(env.model_id(), "resnet50-cifar");
    assert_eq!(env.round(), 42);
    assert_eq!(env.base_model(), [3; 32]);
    assert_eq!(env.sender(), sk.verifying_key().to_bytes());
    assert_eq!(env.nonce(), [9; 16]);
    assert_eq!(env.num_examples(), 1000);
    assert_eq!(env.encoding(), Encoding::DenseF32);
    assert_eq!(env.payload_len(), 60);
    let t: Vec<_> = env.tensors().map(|t| (t.name, t.offset, t.length, t.numel)).collect();
    assert_eq!(t, vec![("conv1.weight", 0, 48, 12), ("conv1.bias", 48, 12, 3)]);
}

#[test]
fn wrong_signer_tampered_header_and_payload_are_rejected() {
    let (sk, payload, spec) = dense_example();
    let u = spec.unsigned();
    let forged = key(2).sign(u.signing_input().as_bytes()).to_bytes();
    let bytes = u.finish(&forged);
    assert!(matches!(Envelope::open(&bytes, &payload, &Limits::default()), Err(Error::BadSignature { .. })));

    let bytes = sign(&sk, &spec);
    let mut bad_payload = payload.clone();
    bad_payload[5] ^= 1;
    assert!(matches!(Envelope::open(&bytes, &bad_payload, &Limits::default()), Err(Error::PayloadDigest)));
    assert!(matches!(
        Envelope::open(&bytes, &payload[..56], &Limits::default()),
        Err(Error::PayloadLength { declared: 60, actual: 56 })
    ));

    // A signature over one header does not carry to another.
    let mut other = spec.clone();
    other.round = 43;
    let other_bytes = spec_for(&sk, &payload, other.tensors.clone(), Encoding::DenseF32);
    let u = HeaderSpec { round: 43, ..other_bytes }.unsigned();
    let orig_sig = *Envelope::parse(&bytes, &Limits::default()).expect("parse").signature();
    let swapped = u.finish(&orig_sig);
    assert!(matches!(Envelope::open(&swapped, &payload, &Limits::default()), Err(Error::BadSignature { .. })));
}

fn field_error(spec: &HeaderSpec) -> String {
    let bytes = sign(&key(1), spec);
    match Envelope::parse(&bytes, &Limits::default()) {
        Err(Error::InvalidField { field, .. }) => field,
        Err(Error::UnknownEnum { field, .. }) => field,
        Err(Error::TooLarge { what, .. }) => what.to_string(),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn semantic_errors_name_the_field() {
    let (_, _, spec) = dense_example();
    let mut s = spec.clone();
    s.tensors[1].offset = 44;
    assert_eq!(field_error(&s), "tensors[1].offset", "misaligned");
    let mut s = spec.clone();
    s.tensors[1].offset = 40;
    assert_eq!(field_error(&s), "tensors[1].offset", "overlap");
    let mut s = spec.clone();
    s.tensors[0].shape = vec![4, 4];
    assert_eq!(field_error(&s), "tensors[0].length", "shape vs length");
    let mut s = spec.clone();
    s.tensors[1].offset = 56;
    assert_eq!(field_error(&s), "tensors[1].length", "runs past payload");
    let mut s = spec.clone();
    s.tensors[1].name = "conv1.weight".into();
    assert_eq!(field_error(&s), "tensors.name", "duplicate");
    let mut s = spec.clone();
    s.tensors[0].shape = vec![u64::MAX, 2];
    assert_eq!(field_error(&s), "tensors[0].shape", "overflow");
    let mut s = spec.clone();
    s.tensors[0].shape = vec![0, 2];
    assert_eq!(field_error(&s), "tensors[0].shape", "zero dim");
    let mut s = spec.clone();
    s.model_id = String::new();
    assert_eq!(field_error(&s), "model_id");
    let mut s = spec.clone();
    s.num_examples = 0;
    assert_eq!(field_error(&s), "num_examples");
    let mut s = spec.clone();
    s.decoded_len = 65;
    assert_eq!(field_error(&s), "decoded_len");
    let mut s = spec.clone();
    s.tensors.clear();
    assert_eq!(field_error(&s), "tensors");
    let mut s = spec.clone();
    s.encoding = Encoding::Int8Block { block_size: 0 };
    assert_eq!(field_error(&s), "encoding.block_size");
    let mut s = spec;
    s.payload_len = 5 << 30;
    s.decoded_len = 5 << 30;
    assert_eq!(field_error(&s), "payload");
}

#[test]
fn every_encoding_checks_its_length() {
    let n = 1000u64;
    let cases = [
        (Encoding::DenseF32, 4000),
        (Encoding::DenseF16, 2000),
        (Encoding::DenseBf16, 2000),
        (Encoding::Int8Block { block_size: 64 }, 16 * 4 + 1000),
        (Encoding::SignScale, 4 + 125),
        (Encoding::TopK { value_type: ValueType::F16 }, 10 * 6),
        (Encoding::TopK { value_type: ValueType::F32 }, 10 * 8),
    ];
    for (enc, len) in cases {
        assert!(enc.check_len(n, len).is_ok(), "{enc:?} accepts {len}");
        assert!(enc.check_len(n, len + 1).is_err(), "{enc:?} refuses {}", len + 1);
    }
    assert_eq!(Encoding::TopK { value_type: ValueType::F32 }.check_len(n, 80), Ok(10));
    assert!(Encoding::TopK { value_type: ValueType::F32 }.check_len(5, 48).is_err(), "k > n");
}

#[test]
fn unknown_enum_values_are_rejected() {
    let (sk, _, _) = dense_example();
    // Build the bad header directly with the generated builder.
    use vain_schema::wire;
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let name = b.create_string("x");
    let shape = b.create_vector(&[1u64]);
    let t = wire::TensorEntry::create(
        &mut b,
        &wire::TensorEntryArgs { name: Some(name), shape: Some(shape), dtype: wire::DType(9), offset: 0, length: 4 },
    );
    let tensors = b.create_vector(&[t]);
    let enc = wire::Encoding::create(
        &mut b,
        &wire::EncodingArgs { kind: wire::EncodingKind(77), block_size: 0, value_type: wire::ValueType::F32 },
    );
    let model = b.create_string("m");
    let z = wire::Digest::new(&[0; 32]);
    let pk = wire::PublicKey::new(&sk.verifying_key().to_bytes());
    let nonce = wire::Nonce::new(&[0; 16]);
    let h = wire::DeltaHeader::create(
        &mut b,
        &wire::DeltaHeaderArgs {
            format_version: 1,
            model_id: Some(model),
            round: 0,
            base_model: Some(&z),
            sender: Some(&pk),
            nonce: Some(&nonce),
            num_examples: 1,
            timestamp_ms: 0,
            encoding: Some(enc),
            compression: wire::Compression::None,
            payload_len: 4,
            decoded_len: 4,
            payload_digest: Some(&z),
            tensors: Some(tensors),
        },
    );
    b.finish_minimal(h);
    let u = vain_schema::delta::Unsigned::from_header_bytes(b.finished_data().to_vec());
    let bytes = u.finish(&[0; 64]);
    match Envelope::parse(&bytes, &Limits::default()) {
        Err(Error::UnknownEnum { field, value: 77 }) => assert_eq!(field, "encoding.kind"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn verifier_limits_bound_nesting_and_size() {
    let (sk, _, spec) = dense_example();
    let bytes = sign(&sk, &spec);
    let tight = Limits { max_header_bytes: bytes.len() - 1, ..Limits::default() };
    assert!(matches!(Envelope::parse(&bytes, &tight), Err(Error::TooLarge { .. })));
    let few_tables = Limits { max_tables: 2, ..Limits::default() };
    assert!(matches!(Envelope::parse(&bytes, &few_tables), Err(Error::Malformed { .. })));
    let few_tensors = Limits { max_tensors: 1, ..Limits::default() };
    assert!(matches!(Envelope::parse(&bytes, &few_tensors), Err(Error::TooLarge { what: "tensor table", .. })));
}

#[test]
fn frames_round_trip_and_reject_bad_preambles() {
    let (sk, payload, spec) = dense_example();
    let env = sign(&sk, &spec);
    let f = frame::encode(&env, &payload).expect("encode");
    let pre = frame::Preamble::parse(f[..24].try_into().expect("24"), &Limits::default()).expect("pre");
    assert_eq!(pre.payload_offset() % frame::PAYLOAD_ALIGN, 0);
    let (h, p) = frame::split(&f, &Limits::default()).expect("split");
    assert_eq!((h, p), (&env[..], &payload[..]));
    assert!(matches!(frame::split(&f[..f.len() - 1], &Limits::default()), Err(Error::Truncated { .. })));
    let mut g = f.clone();
    g.push(0);
    assert!(matches!(frame::split(&g, &Limits::default()), Err(Error::InvalidField { .. })));
    let mut g = f.clone();
    g[0] = b'X';
    assert!(
        matches!(frame::split(&g, &Limits::default()), Err(Error::InvalidField { field, .. }) if field == "frame.magic")
    );
    let mut g = f.clone();
    g[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(frame::split(&g, &Limits::default()), Err(Error::TooLarge { what: "frame payload", .. })));
    let mut g = f;
    g[4] = 2;
    assert!(matches!(frame::split(&g, &Limits::default()), Err(Error::UnsupportedVersion { found: 2, .. })));
}

fn arb_encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::DenseF32),
        Just(Encoding::DenseF16),
        Just(Encoding::DenseBf16),
        (1u32..512).prop_map(|block_size| Encoding::Int8Block { block_size }),
        Just(Encoding::TopK { value_type: ValueType::F32 }),
        Just(Encoding::TopK { value_type: ValueType::F16 }),
        Just(Encoding::SignScale),
    ]
}

fn encoded_len(enc: Encoding, n: u64, k: u64) -> u64 {
    match enc {
        Encoding::DenseF32 => 4 * n,
        Encoding::DenseF16 | Encoding::DenseBf16 => 2 * n,
        Encoding::Int8Block { block_size } => 4 * n.div_ceil(u64::from(block_size)) + n,
        Encoding::TopK { value_type } => k.min(n) * (4 + value_type.size()),
        Encoding::SignScale => 4 + n.div_ceil(8),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_envelope_round_trips(
        enc in arb_encoding(),
        shapes in prop::collection::vec(prop::collection::vec(1u64..20, 0..4), 1..6),
        round in any::<u64>(),
        nonce in any::<[u8; 16]>(),
        examples in 1u64..1_000_000,
        k in 0u64..50,
        fill in any::<u8>(),
    ) {
        let sk = key(5);
        let mut pb = PayloadBuilder::new();
        for (i, shape) in shapes.iter().enumerate() {
            let n: u64 = shape.iter().product();
            let bytes = vec![fill; encoded_len(enc, n, k) as usize];
            pb.push(format!("layer{i}.w"), shape.clone(), DType::F32, &bytes);
        }
        let (payload, tensors) = pb.finish();
        let mut spec = spec_for(&sk, &payload, tensors.clone(), enc);
        spec.round = round;
        spec.nonce = nonce;
        spec.num_examples = examples;
        let bytes = sign(&sk, &spec);
        let env = Envelope::open(&bytes, &payload, &Limits::default()).expect("round trip");
        prop_assert_eq!(env.round(), round);
        prop_assert_eq!(env.nonce(), nonce);
        prop_assert_eq!(env.encoding(), enc);
        prop_assert_eq!(env.num_examples(), examples);
        let got: Vec<_> = env.tensors().map(|t| (t.name.to_owned(), t.shape.iter().collect::<Vec<_>>(), t.offset, t.length)).collect();
        let want: Vec<_> = tensors.iter().map(|t| (t.name.clone(), t.shape.clone(), t.offset, t.length)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn random_mutations_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let (sk, payload, spec) = dense_example();
        let mut bytes = sign(&sk, &spec);
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        let _ = Envelope::open(&bytes, &payload, &Limits::default());
        let c = cut.index(bytes.len());
        let _ = Envelope::open(&bytes[..c], &payload, &Limits::default());
        let f = frame::encode(&bytes, &payload).expect("frame");
        let _ = frame::split(&f[..cut.index(f.len())], &Limits::default());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::parse(&bytes, &Limits::default());
        let _ = frame::split(&bytes, &Limits::default());
        let _ = vain_schema::node::Announcement::open(&bytes, &Limits::default(), 0);
        let _ = vain_schema::node::RotationCertificate::open(&bytes, &Limits::default());
        let _ = vain_schema::node::Heartbeat::open(&bytes, &Limits::default());
    }
}

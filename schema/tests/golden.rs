//! Golden bytes for docs/protocol.md: a frame with a signed DeltaEnvelope, and a signed
//! announcement with a one-certificate rotation chain. Other implementations can check their
//! decoders against these files. Regenerate (only when the format version changes) with
//! `VAIN_BLESS=1 cargo test -p vain-schema --test golden`.

use ed25519_dalek::{Signer, SigningKey};
use std::path::PathBuf;
use vain_schema::delta::{DType, Encoding, Envelope, HeaderSpec, PayloadBuilder};
use vain_schema::node::{Announcement, Resources, RotationCertificate, roles};
use vain_schema::{Limits, frame};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

fn check_or_bless(name: &str, bytes: &[u8]) -> Vec<u8> {
    let p = testdata(name);
    if std::env::var_os("VAIN_BLESS").is_some() {
        std::fs::write(&p, bytes).expect("bless");
    }
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run with VAIN_BLESS=1 once)", p.display()))
}

const T0: u64 = 1_790_000_000_000;

#[test]
fn golden_delta_frame_decodes_to_the_documented_fields() {
    let sk = SigningKey::from_bytes(&[1; 32]);
    let mut pb = PayloadBuilder::new();
    let w: Vec<u8> = [0.5f32, -1.25, 2.0, 0.0625, -0.75, 3.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    pb.push("fc.weight", vec![2, 3], DType::F32, &w);
    let b: Vec<u8> = [0.125f32, -0.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    pb.push("fc.bias", vec![2], DType::F32, &b);
    let (payload, tensors) = pb.finish();
    let spec = HeaderSpec {
        round: 7,
        base_model: [0xab; 32],
        nonce: *b"0123456789abcdef",
        num_examples: 128,
        timestamp_ms: T0,
        ..HeaderSpec::for_payload("golden-mlp", sk.verifying_key().to_bytes(), Encoding::DenseF32, &payload, tensors)
    };
    let u = spec.unsigned();
    let sig = sk.sign(u.signing_input().as_bytes()).to_bytes();
    let fresh = frame::encode(&u.finish(&sig), &payload).expect("frame");
    let golden = check_or_bless("delta_envelope_v1.frame", &fresh);

    let (header, payload) = frame::split(&golden, &Limits::default()).expect("split");
    let env = Envelope::open(header, payload, &Limits::default()).expect("golden envelope verifies");
    assert_eq!(env.model_id(), "golden-mlp");
    assert_eq!(env.round(), 7);
    assert_eq!(env.num_examples(), 128);
    assert_eq!(&env.nonce(), b"0123456789abcdef");
    assert_eq!(env.sender(), sk.verifying_key().to_bytes());
    assert_eq!(hex::encode(env.sender()), "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    let rows: Vec<_> = env.tensors().map(|t| (t.name, t.offset, t.length)).collect();
    assert_eq!(rows, vec![("fc.weight", 0, 24), ("fc.bias", 24, 8)]);
    let f: Vec<f32> = payload[..24].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(f, [0.5, -1.25, 2.0, 0.0625, -0.75, 3.5]);
    assert_eq!(&golden[..4], b"vAIn");
    assert_eq!((24 + header.len()).next_multiple_of(64), golden.len() - payload.len());
}

#[test]
fn golden_announcement_with_rotation_verifies() {
    let root = SigningKey::from_bytes(&[1; 32]);
    let next = SigningKey::from_bytes(&[2; 32]);
    let cert = RotationCertificate {
        sequence: 0,
        old_key: root.verifying_key().to_bytes(),
        new_key: next.verifying_key().to_bytes(),
        not_before_ms: T0,
        not_after_ms: T0 + 90 * 86_400_000,
    };
    let body = cert.encode();
    let sig = root.sign(RotationCertificate::signing_input(&body).as_bytes()).to_bytes();
    let a = Announcement {
        node_id: root.verifying_key().to_bytes(),
        signing_key: next.verifying_key().to_bytes(),
        rotation_chain: vec![RotationCertificate::wrap(&body, &sig)],
        addresses: vec!["/ip4/127.0.0.1/udp/4433/quic-v1".into()],
        roles: roles::CLIENT | roles::AGGREGATOR,
        resources: Resources {
            cpu_cores: 16,
            memory_bytes: 128 << 30,
            network_bandwidth: 100_000_000_000,
            gpus: vec![vain_schema::node::Gpu {
                model: "NVIDIA H100".into(),
                memory_bytes: 80 << 30,
                memory_bandwidth: 3_350_000_000_000,
            }],
        },
        x25519_key: [0x42; 32],
        timestamp_ms: T0 + 1000,
        ingest: Vec::new(),
        region: String::new(),
    };
    let body = a.encode();
    let sig = next.sign(Announcement::signing_input(&body).as_bytes()).to_bytes();
    let golden = check_or_bless("announcement_v1.bin", &Announcement::wrap(&body, &sig));
    let got = Announcement::open(&golden, &Limits::default(), T0 + 2000).expect("golden announcement verifies");
    assert_eq!(got, a);
    assert!(matches!(
        Announcement::open(&golden, &Limits::default(), T0 + 91 * 86_400_000),
        Err(vain_schema::Error::RotationExpired { .. })
    ));
}

//! Published test vectors: SLIP-0010 (Ed25519) and RFC 9180 (HPKE, X25519 / HKDF-SHA256 /
//! ChaCha20-Poly1305). The JSON files under tests/vectors/ are copied from the specifications.

use serde::Deserialize;
use vain_identity::slip10;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).expect("json")
}

#[derive(Deserialize)]
struct Slip10File {
    vectors: Vec<Slip10Vector>,
}

#[derive(Deserialize)]
struct Slip10Vector {
    seed: String,
    chains: Vec<Slip10Chain>,
}

#[derive(Deserialize)]
struct Slip10Chain {
    path: String,
    chain_code: String,
    private: String,
    public: String,
}

#[test]
fn slip10_ed25519_vectors() {
    let f: Slip10File = load("slip10_ed25519.json");
    let mut checked = 0;
    for v in &f.vectors {
        let seed = hex(&v.seed);
        for c in &v.chains {
            let k = slip10::derive(&seed, &c.path).unwrap_or_else(|e| panic!("{}: {e}", c.path));
            assert_eq!(hex::encode(k.chain_code), c.chain_code, "chain code at {}", c.path);
            assert_eq!(hex::encode(k.secret), c.private, "private key at {}", c.path);
            assert_eq!(hex::encode(k.public_key_slip10()), c.public, "public key at {}", c.path);
            checked += 1;
        }
    }
    assert!(f.vectors.len() >= 2 && checked >= 12, "expected both ed25519 vectors, checked {checked} rows");
}

#[derive(Deserialize)]
struct HpkeFile {
    cases: Vec<HpkeCase>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct HpkeCase {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    info: String,
    ikmE: String,
    ikmR: String,
    skEm: String,
    pkEm: String,
    skRm: String,
    pkRm: String,
    enc: String,
    psk: String,
    psk_id: String,
    base_nonce: String,
    encryptions: Vec<HpkeEncryption>,
}

#[derive(Deserialize)]
struct HpkeEncryption {
    aad: String,
    ct: String,
    nonce: String,
    pt: String,
}

/// X25519 secrets are equivalent up to clamping (RFC 7748 §5); the RFC prints them unclamped,
/// x25519-dalek returns them clamped.
fn clamped(sk_hex: &str) -> String {
    let mut sk = hex(sk_hex);
    sk[0] &= 248;
    sk[31] &= 127;
    sk[31] |= 64;
    hex::encode(sk)
}

#[test]
fn rfc9180_base_and_psk_mode_vectors() {
    use hpke::aead::ChaCha20Poly1305;
    use hpke::kdf::HkdfSha256;
    use hpke::kem::X25519HkdfSha256;
    use hpke::{Deserializable, OpModeR};

    let f: HpkeFile = load("hpke_x25519_sha256_chacha.json");
    assert!(f.cases.iter().any(|c| c.mode == 0), "no base-mode case");
    for c in &f.cases {
        assert_eq!((c.kem_id, c.kdf_id, c.aead_id), (0x20, 1, 3));
        // DeriveKeyPair reproduces both published key pairs.
        let (sk_e, pk_e) = vain_identity::hpke::derive_keypair(&hex(&c.ikmE));
        assert_eq!((hex::encode(sk_e), hex::encode(pk_e)), (clamped(&c.skEm), c.pkEm.clone()));
        assert_eq!(c.enc, c.pkEm, "enc is the ephemeral public key");
        let (sk_r, pk_r) = vain_identity::hpke::derive_keypair(&hex(&c.ikmR));
        assert_eq!((hex::encode(sk_r), hex::encode(pk_r)), (clamped(&c.skRm), c.pkRm.clone()));
        // The receiver opens every published ciphertext, in sequence, to its plaintext.
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&sk_r).expect("sk");
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&hex(&c.enc)).expect("enc");
        let (psk, psk_id) = (hex(&c.psk), hex(&c.psk_id));
        let mode = match c.mode {
            0 => OpModeR::Base,
            1 => OpModeR::Psk(hpke::PskBundle::new(&psk, &psk_id).expect("psk bundle")),
            m => panic!("mode {m} is not covered"),
        };
        let mut ctx =
            hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(&mode, &sk, &enc, &hex(&c.info))
                .expect("setup receiver");
        // The RFC lists sequence numbers 0, 1, 2, 4, 255, 256 (nonce = base_nonce XOR seq); a
        // receiver context only moves forward one message at a time, so it opens the leading run.
        let base = hex(&c.base_nonce);
        let mut opened = 0;
        for (i, e) in c.encryptions.iter().enumerate() {
            let n = hex(&e.nonce);
            let seq = base.iter().zip(&n).fold(0u128, |acc, (a, b)| (acc << 8) | u128::from(a ^ b));
            if seq != opened {
                break;
            }
            let pt = ctx.open(&hex(&e.ct), &hex(&e.aad)).unwrap_or_else(|err| panic!("encryption {i}: {err}"));
            assert_eq!(hex::encode(pt), e.pt, "encryption {i}");
            opened += 1;
        }
        assert!(opened >= 3, "opened {opened} consecutive encryptions");
        // And our sealed-message format round-trips to the vector's recipient key.
        let keys = vain_identity::hpke::KeyPair::from_secret(&sk_r);
        assert_eq!(keys.public(), pk_r);
        let sealed = vain_identity::hpke::seal(&pk_r, b"vector recipient", b"aad").expect("seal");
        assert_eq!(vain_identity::hpke::open(&keys, &sealed, b"aad").expect("open"), b"vector recipient");
    }
}

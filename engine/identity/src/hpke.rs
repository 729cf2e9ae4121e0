//! Sealing a payload to a node (RFC 9180 HPKE, base mode).
//!
//! Suite: DHKEM(X25519, HKDF-SHA256) (0x0020), HKDF-SHA256 (0x0001), ChaCha20-Poly1305 (0x0003).
//! The recipient's X25519 key is the one its signed announcement carries, which binds it to the
//! node's Ed25519 identity.
//!
//! Sealed message layout:
//!
//! ```text
//!  0  8  magic "vAInSEAL"
//!  8  2  version = 1, u16 LE
//! 10  2  kem id 0x0020, u16 LE
//! 12  2  kdf id 0x0001, u16 LE
//! 14  2  aead id 0x0003, u16 LE
//! 16 32  enc (the sender's ephemeral X25519 public key)
//! 48  n  ciphertext (plaintext length + 16-byte tag)
//! ```
//!
//! HPKE `info` is `"vain/hpke/v1"`; the AEAD's associated data is bytes 0..16 followed by the
//! caller's `aad`, so the header cannot be altered.

use crate::Error;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

/// HPKE info string.
pub const INFO: &[u8] = b"vain/hpke/v1";
const MAGIC: [u8; 8] = *b"vAInSEAL";
const HEADER: usize = 16;
const ENC: usize = 32;
/// Bytes a sealed message adds to the plaintext.
pub const OVERHEAD: usize = HEADER + ENC + 16;

fn header() -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&1u16.to_le_bytes());
    h[10..12].copy_from_slice(&0x20u16.to_le_bytes());
    h[12..14].copy_from_slice(&1u16.to_le_bytes());
    h[14..16].copy_from_slice(&3u16.to_le_bytes());
    h
}

/// An X25519 key pair for receiving sealed messages.
pub struct KeyPair {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl KeyPair {
    /// From a 32-byte X25519 secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let s = x25519_dalek::StaticSecret::from(*secret);
        let public = x25519_dalek::PublicKey::from(&s).to_bytes();
        Self { secret: Zeroizing::new(s.to_bytes()), public }
    }

    /// A fresh pair from the OS CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self::from_secret(&crate::random32()?))
    }

    /// The public key to announce.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The secret, for writing to a key file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// Seals `plaintext` to the node whose X25519 key is `recipient`.
pub fn seal(recipient: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|e| Error::Sealed(format!("recipient key: {e}")))?;
    let h = header();
    let full_aad = [&h[..], aad].concat();
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk,
        INFO,
        plaintext,
        &full_aad,
    )
    .map_err(|e| Error::Sealed(e.to_string()))?;
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a message sealed to `keys`.
pub fn open(keys: &KeyPair, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < OVERHEAD {
        return Err(Error::Sealed(format!("{} bytes is shorter than the {OVERHEAD}-byte minimum", sealed.len())));
    }
    let h = header();
    if sealed[..8] != MAGIC {
        return Err(Error::Sealed("not a vAIn sealed message".into()));
    }
    if sealed[..HEADER] != h {
        return Err(Error::Sealed("unsupported version or cipher suite".into()));
    }
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&sealed[HEADER..HEADER + ENC])
        .map_err(|e| Error::Sealed(format!("enc: {e}")))?;
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(keys.secret.as_ref())
        .map_err(|e| Error::Sealed(format!("own key: {e}")))?;
    let full_aad = [&h[..], aad].concat();
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &enc,
        INFO,
        &sealed[HEADER + ENC..],
        &full_aad,
    )
    .map_err(|_| Error::Sealed("decryption failed: wrong recipient, wrong associated data, or tampered".into()))
}

/// Derives an X25519 key pair from input keying material as RFC 9180 `DeriveKeyPair` does.
pub fn derive_keypair(ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let (sk, pk) = X25519HkdfSha256::derive_keypair(ikm);
    let mut s = [0u8; 32];
    s.copy_from_slice(&sk.to_bytes());
    let mut p = [0u8; 32];
    p.copy_from_slice(&pk.to_bytes());
    (s, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_rejections() {
        let kp = KeyPair::from_secret(&[5; 32]);
        let other = KeyPair::from_secret(&[6; 32]);
        let msg = b"model delta for round 7";
        let sealed = seal(&kp.public(), msg, b"round 7").expect("seal");
        assert_eq!(sealed.len(), msg.len() + OVERHEAD);
        assert_eq!(open(&kp, &sealed, b"round 7").expect("open"), msg);
        assert!(matches!(open(&other, &sealed, b"round 7"), Err(Error::Sealed(_))));
        assert!(matches!(open(&kp, &sealed, b"round 8"), Err(Error::Sealed(_))));
        for i in [0, 9, 20, sealed.len() - 1] {
            let mut s = sealed.clone();
            s[i] ^= 1;
            assert!(open(&kp, &s, b"round 7").is_err(), "flip at {i}");
        }
        assert!(open(&kp, &sealed[..OVERHEAD - 1], b"").is_err());
    }
}

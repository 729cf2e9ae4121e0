//! Signed protocol messages: Ed25519 over `tag ‖ 0 ‖ BLAKE3(canonical body bytes)`, the same rule
//! as the wire format (docs/protocol.md), so signing cost does not grow with the body.

use crate::NodeId;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use thiserror::Error;

/// A message body with a canonical byte encoding and its own domain-separation tag.
pub trait Body {
    /// Domain-separation tag, e.g. `b"vain/vote/v1"`.
    const TAG: vain_schema::sign::Tag;
    /// Appends the canonical encoding (fixed field order, little-endian integers).
    fn encode(&self, out: &mut Vec<u8>);
}

/// A body, who signed it, and the signature.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    /// The signer's public key.
    pub signer: NodeId,
    /// The message.
    pub body: T,
    /// Ed25519 signature over [`signing_input`].
    pub signature: [u8; 64],
}

/// Why a signed message was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The signer field is not a valid Ed25519 public key.
    #[error("signer is not a valid Ed25519 key")]
    BadKey,
    /// The signature does not verify (strict verification).
    #[error("signature does not verify")]
    BadSignature,
}

/// What is signed: the one signing rule of every vAIn message (`vain_schema::sign`,
/// docs/protocol.md §2) applied to the body's canonical bytes.
pub fn signing_input<T: Body>(body: &T) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    body.encode(&mut bytes);
    vain_schema::sign::SigningInput::new(T::TAG, &bytes).as_bytes().to_vec()
}

impl<T: Body> Signed<T> {
    /// Signs `body` with `key`.
    pub fn sign(key: &SigningKey, body: T) -> Self {
        let signature = key.sign(&signing_input(&body)).to_bytes();
        Self { signer: key.verifying_key().to_bytes(), body, signature }
    }

    /// Verifies the signature strictly (no malleable or small-order keys).
    pub fn verify(&self) -> Result<(), Error> {
        let key = VerifyingKey::from_bytes(&self.signer).map_err(|_| Error::BadKey)?;
        key.verify_strict(&signing_input(&self.body), &Signature::from_bytes(&self.signature))
            .map_err(|_| Error::BadSignature)
    }

    /// BLAKE3 of the signed message (signer, body, signature): an evidence reference.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(T::TAG.as_str().as_bytes());
        h.update(&self.signer);
        let mut b = Vec::new();
        self.body.encode(&mut b);
        h.update(&b);
        h.update(&self.signature);
        *h.finalize().as_bytes()
    }
}

/// Little-endian helpers for [`Body::encode`] implementations.
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u64(out, v.len() as u64);
    out.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Ping(u64);
    impl Body for Ping {
        const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/test-ping/v1");
        fn encode(&self, out: &mut Vec<u8>) {
            put_u64(out, self.0);
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let s = Signed::sign(&key, Ping(5));
        assert_eq!(s.verify(), Ok(()));
        let mut t = s.clone();
        t.body = Ping(6);
        assert_eq!(t.verify(), Err(Error::BadSignature));
        let mut k = s.clone();
        k.signer = SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes();
        assert_eq!(k.verify(), Err(Error::BadSignature));
        assert_ne!(s.digest(), t.digest());
    }
}

//! The signing rule shared by every signed vAIn message.
//!
//! A signature is Ed25519 (RFC 8032, pure) over the *signing input*
//!
//! ```text
//! tag (ASCII, no terminator) || 0x00 || BLAKE3(body)
//! ```
//!
//! where `body` is the exact byte string carried in the message's `body`/`header` field and `tag`
//! names the message kind, so a signature made for one kind never verifies as another. Only the
//! 32-byte digest enters Ed25519's internal SHA-512, so signing cost does not grow with the body.

use crate::{Error, PublicKey, Signature};
use ed25519_dalek::VerifyingKey;

/// Domain-separation tag of a message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag(&'static str);

impl Tag {
    /// A tag named `name` (ASCII, at most 64 bytes; every tag is listed in docs/protocol.md §2).
    pub const fn new(name: &'static str) -> Tag {
        assert!(name.len() <= MAX_TAG, "signing tags are at most 64 bytes");
        Tag(name)
    }

    /// The tag's ASCII bytes.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// `DeltaEnvelope.header`.
pub const DELTA_ENVELOPE: Tag = Tag("vain/delta-envelope/v1");
/// `SignedRotationCertificate.body`.
pub const ROTATION_CERTIFICATE: Tag = Tag("vain/rotation-certificate/v1");
/// `SignedAnnouncement.body`.
pub const ANNOUNCEMENT: Tag = Tag("vain/announcement/v1");
/// `SignedHeartbeat.body`.
pub const HEARTBEAT: Tag = Tag("vain/heartbeat/v1");
/// Free-form messages signed with `vain identity sign`.
pub const MESSAGE: Tag = Tag("vain/message/v1");
/// A node's binding to the Ethereum account that registers it (`NodeRegistry.registrationMessage`).
pub const CHAIN_REGISTRATION: Tag = Tag("vain/chain-registration/v1");

/// Longest tag; signing inputs fit in a fixed buffer.
const MAX_TAG: usize = 64;

/// The bytes Ed25519 signs for `body` under `tag`.
#[derive(Clone, Copy)]
pub struct SigningInput {
    buf: [u8; MAX_TAG + 1 + 32],
    len: usize,
}

impl SigningInput {
    /// Builds the signing input of `body`.
    pub fn new(tag: Tag, body: &[u8]) -> Self {
        Self::from_digest(tag, &crate::digest(body))
    }

    /// Builds the signing input from an already computed BLAKE3 digest of the body.
    pub fn from_digest(tag: Tag, digest: &[u8; 32]) -> Self {
        let t = tag.0.as_bytes();
        let mut buf = [0u8; MAX_TAG + 1 + 32];
        // Tags are compile-time constants shorter than MAX_TAG.
        let tl = t.len().min(MAX_TAG);
        buf[..tl].copy_from_slice(&t[..tl]);
        buf[tl] = 0;
        buf[tl + 1..tl + 33].copy_from_slice(digest);
        Self { buf, len: tl + 33 }
    }

    /// The bytes to hand to an Ed25519 signer.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for SigningInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SigningInput").field(&self.as_bytes()).finish()
    }
}

/// Parses a public key, naming `field` when it is not a valid point.
pub fn verifying_key(key: &PublicKey, field: &str) -> Result<VerifyingKey, Error> {
    VerifyingKey::from_bytes(key).map_err(|_| Error::BadPublicKey { field: field.to_owned() })
}

/// Verifies `signature` by `key` over `body` under `tag`. Uses strict verification: small-order
/// keys and non-canonical signatures are refused.
pub fn verify(tag: Tag, body: &[u8], key: &PublicKey, signature: &Signature, what: &'static str) -> Result<(), Error> {
    let vk = verifying_key(key, "signing key")?;
    let input = SigningInput::new(tag, body);
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    vk.verify_strict(input.as_bytes(), &sig).map_err(|_| Error::BadSignature { what })
}

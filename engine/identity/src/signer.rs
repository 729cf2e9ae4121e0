//! Who signs: a key in memory (from a key file or a derivation) or a key inside an HSM.

use crate::Error;
use ed25519_dalek::SigningKey;
use vain_schema::{PublicKey, Signature};
use zeroize::Zeroizing;

/// Produces Ed25519 signatures for one public key.
pub trait Signer: Send {
    /// The key signatures verify under.
    fn public_key(&self) -> PublicKey;
    /// Signs `message` (pure Ed25519, RFC 8032).
    fn sign(&self, message: &[u8]) -> Result<Signature, Error>;
}

/// A signer whose secret key is in this process's memory.
pub struct FileSigner {
    key: SigningKey,
}

impl FileSigner {
    /// From a 32-byte Ed25519 seed (the RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(seed) }
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        let seed = Zeroizing::new(crate::random32()?);
        Ok(Self::from_seed(&seed))
    }

    /// The 32-byte seed, for writing to a key file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSigner").field("public_key", &hex_key(&self.public_key())).finish_non_exhaustive()
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> PublicKey {
        self.key.verifying_key().to_bytes()
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, Error> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes())
    }
}

/// Lower-case hex of a key, for messages.
pub fn hex_key(k: &[u8]) -> String {
    hex::encode(k)
}

/// Verifies a signature made by any [`Signer`] (strict RFC 8032 verification).
pub fn verify(key: &PublicKey, message: &[u8], signature: &Signature) -> Result<(), Error> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| Error::BadSignature { key: hex_key(key) })?;
    vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| Error::BadSignature { key: hex_key(key) })
}

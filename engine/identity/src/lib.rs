//! A vAIn node's identity.
//!
//! A node is known by its **root** Ed25519 key (the node id). It signs with its **current** key,
//! which is the root key itself until the first rotation and afterwards the last key of a chain of
//! [rotation certificates](rotation), each signed by the key it replaces. Peers verify the chain
//! from the node id to the current key, so the node id stays stable across rotations.
//!
//! * [`keyfile`]: secret keys on disk, mode 0600, optionally sealed with argon2id + XChaCha20-Poly1305.
//! * [`slip10`]: BIP-39 mnemonics and SLIP-10 Ed25519 hierarchical derivation.
//! * [`signer`]: the [`Signer`] abstraction, with a file-key and a [`pkcs11`] implementation.
//! * [`rotation`]: issuing certificates, the 90-day policy and its warnings.
//! * [`hpke`]: sealing a payload to a node's X25519 key (RFC 9180).
//! * [`store`]: the identity directory that ties these together.

mod error;
pub mod hpke;
pub mod keyfile;
pub mod pkcs11;
pub mod rotation;
pub mod signer;
pub mod slip10;
pub mod store;

pub use error::Error;
pub use signer::Signer;
pub use store::Identity;

/// 32 bytes from the operating system's CSPRNG.
pub fn random32() -> Result<[u8; 32], Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

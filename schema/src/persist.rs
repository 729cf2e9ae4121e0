//! State kept on disk, archived with rkyv 0.8 and read back only through validated access.
//!
//! File layout (little-endian):
//!
//! ```text
//!  0  8  magic "vAInRKYV"
//!  8  4  kind (1 = identity metadata, 2 = peer store)
//! 12  4  schema version of that kind (1)
//! 16  8  archive length n
//! 24 32  BLAKE3 of the archive
//! 56  8  zero
//! 64  n  rkyv archive (16-byte aligned when the file is read into an aligned buffer)
//! ```
//!
//! The checksum catches torn writes and bit rot; rkyv's bytecheck validation then guarantees that
//! no archived pointer leaves the buffer before anything is deserialised.

use crate::Error;
use rkyv::{Archive, Deserialize, Serialize, rancor};

const MAGIC: [u8; 8] = *b"vAInRKYV";
const HEADER: usize = 64;
/// Largest archive accepted from disk.
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 20;

/// A kind of persisted file.
pub trait Persisted: Sized {
    /// File kind number.
    const KIND: u32;
    /// Schema version of this kind.
    const VERSION: u32;
    /// Name used in errors.
    const NAME: &'static str;
}

pub use key_source::KeySource;

// rkyv derives helper types for enum variants that carry no docs; keep the lint off just here.
#[allow(missing_docs)]
mod key_source {
    use rkyv::{Archive, Deserialize, Serialize};

    /// Where a node's current secret key lives.
    #[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
    pub enum KeySource {
        /// A key file in the identity directory.
        File {
            /// Whether the file is passphrase-encrypted.
            encrypted: bool,
        },
        /// A PKCS#11 token.
        Pkcs11 {
            /// Token label.
            token_label: String,
            /// Key object label.
            key_label: String,
        },
    }
}

/// What a node knows about its own identity, besides the secret key.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct IdentityMetadata {
    /// The root key: the node's stable id.
    pub root_key: [u8; 32],
    /// The key that signs today.
    pub current_key: [u8; 32],
    /// When the identity was created, Unix ms.
    pub created_at_ms: u64,
    /// When the current key took over, Unix ms.
    pub current_since_ms: u64,
    /// `SignedRotationCertificate` bytes from root to current key.
    pub rotation_chain: Vec<Vec<u8>>,
    /// SLIP-10 path the current key was derived from, if any (e.g. `m/44'/9000'/0'/0'`).
    pub derivation_path: Option<String>,
    /// Where the current secret key lives.
    pub key_source: KeySource,
}

impl Persisted for IdentityMetadata {
    const KIND: u32 = 1;
    const VERSION: u32 = 1;
    const NAME: &'static str = "identity metadata";
}

/// A peer this node has seen and verified.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer's stable id (root key).
    pub node_id: [u8; 32],
    /// The peer's current key.
    pub signing_key: [u8; 32],
    /// Multiaddrs.
    pub addresses: Vec<String>,
    /// Role bits.
    pub roles: u8,
    /// First contact, Unix ms.
    pub first_seen_ms: u64,
    /// Last verified message, Unix ms.
    pub last_seen_ms: u64,
    /// Consecutive failed contacts.
    pub failures: u32,
    /// Latest `SignedAnnouncement` bytes, re-verified when loaded into use.
    pub announcement: Vec<u8>,
}

/// The peer store file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
pub struct PeerStore {
    /// Known peers.
    pub peers: Vec<PeerRecord>,
}

impl Persisted for PeerStore {
    const KIND: u32 = 2;
    const VERSION: u32 = 1;
    const NAME: &'static str = "peer store";
}

/// Serialises `value` into the file layout above.
pub fn encode<T>(value: &T) -> Result<Vec<u8>, Error>
where
    T: Persisted
        + for<'a> Serialize<
            rancor::Strategy<
                rkyv::ser::Serializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rkyv::ser::sharing::Share,
                >,
                rancor::Error,
            >,
        >,
{
    let archive =
        rkyv::to_bytes::<rancor::Error>(value).map_err(|e| Error::Corrupt { what: T::NAME, reason: e.to_string() })?;
    let mut out = Vec::with_capacity(HEADER + archive.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&T::KIND.to_le_bytes());
    out.extend_from_slice(&T::VERSION.to_le_bytes());
    out.extend_from_slice(&(archive.len() as u64).to_le_bytes());
    out.extend_from_slice(&crate::digest(&archive));
    out.resize(HEADER, 0);
    out.extend_from_slice(&archive);
    Ok(out)
}

/// Checks and deserialises a file produced by [`encode`].
pub fn decode<T>(bytes: &[u8]) -> Result<T, Error>
where
    T: Persisted + Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
            rancor::Strategy<
                rkyv::validation::Validator<
                    rkyv::validation::archive::ArchiveValidator<'a>,
                    rkyv::validation::shared::SharedValidator,
                >,
                rancor::Error,
            >,
        > + Deserialize<T, rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    let corrupt = |reason: String| Error::Corrupt { what: T::NAME, reason };
    if bytes.len() < HEADER {
        return Err(Error::Truncated { what: T::NAME, need: HEADER as u64, have: bytes.len() as u64 });
    }
    if bytes[0..8] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let kind = u32_at(8);
    if kind != T::KIND {
        return Err(corrupt(format!("file kind {kind}, expected {}", T::KIND)));
    }
    let version = u32_at(12);
    if version != T::VERSION {
        return Err(corrupt(format!("schema version {version}, this build reads {}", T::VERSION)));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&bytes[16..24]);
    let len = u64::from_le_bytes(l);
    if len > MAX_ARCHIVE_BYTES {
        return Err(Error::TooLarge { what: T::NAME, len, max: MAX_ARCHIVE_BYTES });
    }
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(Error::Truncated { what: T::NAME, need: len, have: body.len() as u64 });
    }
    if crate::digest(body)[..] != bytes[24..56] {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IdentityMetadata {
        IdentityMetadata {
            root_key: [1; 32],
            current_key: [2; 32],
            created_at_ms: 1_700_000_000_000,
            current_since_ms: 1_700_000_100_000,
            rotation_chain: vec![vec![9; 100]],
            derivation_path: Some("m/44'/9000'/0'/0'".into()),
            key_source: KeySource::Pkcs11 { token_label: "t".into(), key_label: "k".into() },
        }
    }

    #[test]
    fn identity_metadata_round_trips() {
        let m = sample();
        let bytes = encode(&m).expect("encode");
        assert_eq!(decode::<IdentityMetadata>(&bytes).expect("decode"), m);
    }

    #[test]
    fn truncated_or_flipped_files_are_refused() {
        let bytes = encode(&sample()).expect("encode");
        for cut in [0, 10, HEADER, bytes.len() - 1] {
            assert!(decode::<IdentityMetadata>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            if (56..64).contains(&i) {
                continue; // reserved padding is not covered
            }
            assert!(decode::<IdentityMetadata>(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn wrong_kind_is_refused() {
        let bytes = encode(&PeerStore::default()).expect("encode");
        assert!(matches!(decode::<IdentityMetadata>(&bytes), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn corrupt_archive_with_valid_checksum_is_refused_by_validation() {
        let mut bytes = encode(&sample()).expect("encode");
        // Point every relative pointer and length somewhere wild, then fix the checksum.
        for b in &mut bytes[HEADER..] {
            *b = 0xff;
        }
        let d = crate::digest(&bytes[HEADER..]);
        bytes[24..56].copy_from_slice(&d);
        assert!(matches!(decode::<IdentityMetadata>(&bytes), Err(Error::Corrupt { .. })));
    }
}

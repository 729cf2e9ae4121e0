//! Secret keys on disk.
//!
//! ```text
//! offset size field
//!      0    8 magic "vAInKEY\0"
//!      8    1 version = 1
//!      9    1 kind: 1 = Ed25519 seed, 2 = X25519 secret
//!     10    1 protection: 0 = plain, 1 = argon2id + XChaCha20-Poly1305
//!     11    1 reserved = 0
//! plain:
//!     12   32 secret                                         (file is 44 bytes)
//! encrypted:
//!     12    4 argon2 m_cost (KiB), u32 LE
//!     16    4 argon2 t_cost, u32 LE
//!     20    4 argon2 parallelism, u32 LE
//!     24   16 salt
//!     40   24 XChaCha20-Poly1305 nonce
//!     64   48 ciphertext of the secret + 16-byte tag; AAD = bytes 0..64   (file is 112 bytes)
//! ```
//!
//! Files are created with mode 0600 through [`vain_storage::replace`] (a temporary file synced,
//! renamed, the directory synced), and are refused on load when group or others may read them. KDF parameters read from a file are bounded so a
//! planted file cannot make the node allocate gigabytes.

use crate::Error;
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;
use vain_storage::Storage;
use zeroize::Zeroizing;

const MAGIC: [u8; 8] = *b"vAInKEY\0";
const PLAIN_LEN: usize = 44;
const SEALED_LEN: usize = 112;
/// Largest argon2 memory cost accepted from a file (1 GiB).
pub const MAX_M_COST_KIB: u32 = 1 << 20;
/// Largest argon2 iteration count accepted from a file.
pub const MAX_T_COST: u32 = 64;
/// Largest argon2 parallelism accepted from a file.
pub const MAX_PARALLELISM: u32 = 16;

/// What the 32 secret bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An Ed25519 seed (RFC 8032 secret key).
    Ed25519,
    /// An X25519 static secret (RFC 7748).
    X25519,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Ed25519 => 1,
            Kind::X25519 => 2,
        }
    }
}

/// argon2id cost parameters for encrypting a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option).
    fn default() -> Self {
        Self { m_cost_kib: 64 * 1024, t_cost: 3, parallelism: 1 }
    }
}

fn derive_key(pass: &[u8], salt: &[u8], p: KdfParams, path: &Path) -> Result<Zeroizing<[u8; 32]>, Error> {
    let bad = |reason: String| Error::BadKeyFile { path: path.to_owned(), reason };
    if p.m_cost_kib > MAX_M_COST_KIB || p.t_cost > MAX_T_COST || p.parallelism > MAX_PARALLELISM {
        return Err(bad(format!("argon2 parameters {p:?} exceed the accepted bounds")));
    }
    let params = Params::new(p.m_cost_kib, p.t_cost, p.parallelism, Some(32)).map_err(|e| bad(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, salt, out.as_mut())
        .map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

/// Writes `secret` to `path` (mode 0600), encrypted under `passphrase` when one is given; durable
/// when this returns. Fails with [`Error::Exists`] if the file exists and `overwrite` is false.
pub fn write(
    storage: &dyn Storage,
    path: &Path,
    kind: Kind,
    secret: &[u8; 32],
    passphrase: Option<&[u8]>,
    kdf: KdfParams,
    overwrite: bool,
) -> Result<(), Error> {
    if !overwrite && storage.exists(path) {
        return Err(Error::Exists { path: path.to_owned() });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(SEALED_LEN));
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[1, kind.byte(), u8::from(passphrase.is_some()), 0]);
    match passphrase {
        None => buf.extend_from_slice(secret),
        Some(pass) => {
            let rnd = crate::random32()?;
            let salt = &rnd[..16];
            let nonce_rnd = crate::random32()?;
            let nonce = &nonce_rnd[..24];
            buf.extend_from_slice(&kdf.m_cost_kib.to_le_bytes());
            buf.extend_from_slice(&kdf.t_cost.to_le_bytes());
            buf.extend_from_slice(&kdf.parallelism.to_le_bytes());
            buf.extend_from_slice(salt);
            buf.extend_from_slice(nonce);
            let key = derive_key(pass, salt, kdf, path)?;
            let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref())
                .map_err(|_| Error::BadKeyFile { path: path.to_owned(), reason: "bad key length".into() })?;
            let nonce = XNonce::try_from(nonce)
                .map_err(|_| Error::BadKeyFile { path: path.to_owned(), reason: "bad nonce".into() })?;
            let ct = cipher
                .encrypt(&nonce, Payload { msg: secret, aad: &buf[..64] })
                .map_err(|_| Error::BadKeyFile { path: path.to_owned(), reason: "encryption failed".into() })?;
            buf.extend_from_slice(&ct);
        }
    }
    vain_storage::replace(storage, path, &buf, 0o600).map_err(Error::io(path))
}

/// Whether the key file at `path` is passphrase-protected (permissions are checked first).
pub fn is_encrypted(storage: &dyn Storage, path: &Path) -> Result<bool, Error> {
    let bytes = read_checked(storage, path)?;
    Ok(bytes.get(10) == Some(&1))
}

fn read_checked(storage: &dyn Storage, path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    let meta = storage.metadata(path).map_err(Error::io(path))?;
    let mode = meta.mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions { path: path.to_owned(), mode });
    }
    if meta.len > SEALED_LEN as u64 {
        return Err(Error::BadKeyFile { path: path.to_owned(), reason: format!("{} bytes is too long", meta.len) });
    }
    let bytes = Zeroizing::new(storage.read(path).map_err(Error::io(path))?);
    // Checked again: the file may have grown between the two calls.
    if bytes.len() > SEALED_LEN {
        return Err(Error::BadKeyFile { path: path.to_owned(), reason: format!("{} bytes is too long", bytes.len()) });
    }
    Ok(bytes)
}

/// Reads a key file of the expected `kind`, decrypting it with `passphrase` if it is encrypted.
pub fn read(
    storage: &dyn Storage,
    path: &Path,
    kind: Kind,
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let b = read_checked(storage, path)?;
    let bad = |reason: &str| Error::BadKeyFile { path: path.to_owned(), reason: reason.into() };
    if b.len() < 12 || b[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    if b[8] != 1 {
        return Err(bad("unknown version"));
    }
    if b[9] != kind.byte() {
        return Err(bad(match kind {
            Kind::Ed25519 => "not an Ed25519 key",
            Kind::X25519 => "not an X25519 key",
        }));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    match b[10] {
        0 if b.len() == PLAIN_LEN => out.copy_from_slice(&b[12..44]),
        1 if b.len() == SEALED_LEN => {
            let pass = passphrase.ok_or_else(|| Error::PassphraseRequired { path: path.to_owned() })?;
            let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let kdf = KdfParams { m_cost_kib: u32_at(12), t_cost: u32_at(16), parallelism: u32_at(20) };
            let key = derive_key(pass, &b[24..40], kdf, path)?;
            let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|_| bad("bad key length"))?;
            let nonce = XNonce::try_from(&b[40..64]).map_err(|_| bad("bad nonce"))?;
            let pt = Zeroizing::new(
                cipher
                    .decrypt(&nonce, Payload { msg: &b[64..], aad: &b[..64] })
                    .map_err(|_| Error::WrongPassphrase { path: path.to_owned() })?,
            );
            if pt.len() != 32 {
                return Err(bad("decrypted secret has the wrong length"));
            }
            out.copy_from_slice(&pt);
        }
        0 | 1 => return Err(bad("wrong length")),
        _ => return Err(bad("unknown protection")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use vain_storage::Disk;

    const FAST: KdfParams = KdfParams { m_cost_kib: 256, t_cost: 1, parallelism: 1 };

    #[test]
    fn plain_and_encrypted_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("k");
        write(&Disk, &p, Kind::Ed25519, &[7; 32], None, FAST, false).expect("write");
        assert_eq!(std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(*read(&Disk, &p, Kind::Ed25519, None).expect("read"), [7; 32]);
        assert!(matches!(write(&Disk, &p, Kind::Ed25519, &[7; 32], None, FAST, false), Err(Error::Exists { .. })));

        write(&Disk, &p, Kind::Ed25519, &[9; 32], Some(b"correct horse"), FAST, true).expect("write enc");
        assert!(is_encrypted(&Disk, &p).expect("enc"));
        assert_eq!(*read(&Disk, &p, Kind::Ed25519, Some(b"correct horse")).expect("read"), [9; 32]);
        assert!(matches!(read(&Disk, &p, Kind::Ed25519, Some(b"wrong")), Err(Error::WrongPassphrase { .. })));
        assert!(matches!(read(&Disk, &p, Kind::Ed25519, None), Err(Error::PassphraseRequired { .. })));
        assert!(matches!(read(&Disk, &p, Kind::X25519, Some(b"correct horse")), Err(Error::BadKeyFile { .. })));
    }

    #[test]
    fn group_or_world_readable_files_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("k");
        write(&Disk, &p, Kind::Ed25519, &[7; 32], None, FAST, false).expect("write");
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            match read(&Disk, &p, Kind::Ed25519, None) {
                Err(Error::InsecurePermissions { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
    }

    #[test]
    fn tampered_or_hostile_files_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("k");
        write(&Disk, &p, Kind::Ed25519, &[9; 32], Some(b"pw"), FAST, false).expect("write");
        let orig = std::fs::read(&p).expect("read");
        // Flip any byte of the header, parameters, salt, nonce or ciphertext: never the old secret.
        for i in 0..orig.len() {
            let mut b = orig.clone();
            b[i] ^= 0x01;
            std::fs::write(&p, &b).expect("write");
            assert!(read(&Disk, &p, Kind::Ed25519, Some(b"pw")).is_err(), "flip at {i} accepted");
        }
        // Parameters that would allocate 4 TiB are refused before argon2 runs.
        let mut b = orig.clone();
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&p, &b).expect("write");
        assert!(matches!(read(&Disk, &p, Kind::Ed25519, Some(b"pw")), Err(Error::BadKeyFile { .. })));
        std::fs::write(&p, vec![0u8; 4096]).expect("write");
        assert!(matches!(read(&Disk, &p, Kind::Ed25519, None), Err(Error::BadKeyFile { .. })));
    }
}

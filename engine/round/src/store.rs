//! Content-addressed checkpoints: a global model's little-endian f32 bytes, named by their
//! BLAKE3 digest, written atomically (temporary file, fsync, rename, fsync of the directory) so
//! a crash leaves either the whole checkpoint or none.

use crate::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use vain_schema::Digest;

/// Largest checkpoint read back (16 M parameters), checked before reading.
pub const MAX_CHECKPOINT: u64 = 64 << 20;

/// A directory of checkpoints.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The bytes of a flat parameter vector.
pub fn bytes_of(flat: &[f32]) -> Vec<u8> {
    flat.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Store {
    /// Opens (creating) `dir`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        Ok(Store { dir: dir.to_path_buf() })
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(format!("{}.f32", hex::encode(d)))
    }

    /// Stores `flat`; returns its digest.
    pub fn put(&self, flat: &[f32]) -> Result<Digest, Error> {
        let bytes = bytes_of(flat);
        let d = *blake3::hash(&bytes).as_bytes();
        let path = self.path(&d);
        if path.exists() {
            return Ok(d);
        }
        let io = |e| Error::Io { path: path.clone(), source: e };
        let tmp = self.dir.join(format!(".{}.tmp", hex::encode(d)));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(d)
    }

    /// The bytes of checkpoint `d`, when held and intact (a file whose bytes do not hash to
    /// its name is treated as absent).
    pub fn get(&self, d: &Digest) -> Option<Vec<u8>> {
        let path = self.path(d);
        let len = std::fs::metadata(&path).ok()?.len();
        if len > MAX_CHECKPOINT {
            return None;
        }
        let b = std::fs::read(&path).ok()?;
        (blake3::hash(&b).as_bytes() == d).then_some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_digest_and_refuses_corrupt_files() {
        let dir = std::env::temp_dir().join(format!("vain-store-{}", std::process::id()));
        let s = Store::open(&dir).expect("open");
        let d = s.put(&[1.0, 2.0]).expect("put");
        assert_eq!(s.get(&d), Some(bytes_of(&[1.0, 2.0])));
        std::fs::write(s.path(&d), [0u8; 8]).expect("corrupt");
        assert_eq!(s.get(&d), None);
        assert_eq!(s.get(&[0; 32]), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}

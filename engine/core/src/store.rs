//! The journal on disk: the one module of this crate that touches files, kept apart so the
//! ledger itself stays free of I/O.
//!
//! [`Store::open`] reads the journal, cuts a torn or corrupt tail off (truncating the file to
//! its valid prefix, so the next append starts on a frame boundary) and returns the entries to
//! replay. [`Store::append`] writes frames and `fsync`s before returning: once it returns, the
//! entries survive a crash. Entries are committed in order, so a crash keeps a prefix.

use crate::journal::{self, Entry, MAGIC, Tail};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the journal cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or syncing the file failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a vAIn journal; it is left untouched.
    #[error("journal {path} is not a vAIn journal")]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
}

/// An open journal.
pub struct Store {
    path: PathBuf,
    file: File,
}

/// What [`Store::open`] recovered.
pub struct Recovered {
    /// The committed entries, in order.
    pub entries: Vec<Entry>,
    /// The tail that was cut off, if any (a crash mid-write, or corruption).
    pub dropped: Option<Tail>,
}

impl Store {
    /// Opens (or creates) the journal at `path`, recovering its committed entries.
    pub fn open(path: &Path) -> Result<(Self, Recovered), Error> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let scan = journal::scan(&bytes);
        if scan.tail == Some(Tail::Magic) {
            return Err(Error::NotAJournal { path: path.to_path_buf() });
        }
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
        } else if scan.valid_len < bytes.len() {
            file.set_len(scan.valid_len as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((Self { path: path.to_path_buf(), file }, Recovered { entries: scan.entries, dropped: scan.tail }))
    }

    /// Appends `entries` and syncs them to disk; when this returns `Ok` they are committed.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), Error> {
        let io = |source| Error::Io { path: self.path.clone(), source };
        let mut buf = Vec::new();
        for e in entries {
            buf.extend_from_slice(&journal::encode(e));
        }
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        Ok(())
    }
}

//! The journal on disk: the one module of this crate that touches files (through
//! [`crate::storage`]), kept apart so the ledger itself stays free of I/O.
//!
//! [`Store::open`] reads the journal and returns the entries to replay. A torn tail (a crash
//! mid-write) or a torn 8-byte header (a crash while the file was created) is cut off, so the
//! next append starts on a frame boundary. A damaged frame *followed by valid ones* is not a
//! crash but corruption: opening refuses with [`Error::Corrupt`] and leaves the file as it is,
//! rather than silently dropping committed entries. [`Store::append`] writes frames and syncs
//! before returning: once it returns, the entries survive a crash. Entries are committed in
//! order, so a crash keeps a prefix.

use crate::journal::{self, Entry, MAGIC, Tail};
use crate::storage::{Disk, File, Storage};
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
    /// The file is a journal of an older format, whose entries this version cannot replay; it
    /// is left untouched.
    #[error("journal {path} was written in format {found} by an older vAIn; move it aside to start afresh")]
    OlderFormat {
        /// The file.
        path: PathBuf,
        /// Its format version (the magic's last byte).
        found: char,
    },
    /// The file is not a vAIn journal; it is left untouched.
    #[error("journal {path} is not a vAIn journal")]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// A frame in the middle is damaged and valid frames follow it: committed entries would be
    /// lost by truncating, so the file is left untouched for inspection.
    #[error("journal {path}: {tail}; {later} valid frame(s) follow it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The damaged frame.
        tail: Tail,
        /// Valid frames found after it.
        later: usize,
    },
}

/// An open journal.
pub struct Store {
    path: PathBuf,
    file: Box<dyn File>,
}

/// What [`Store::open`] recovered.
pub struct Recovered {
    /// The committed entries, in order.
    pub entries: Vec<Entry>,
    /// The tail that was cut off, if any (a crash mid-write).
    pub dropped: Option<Tail>,
}

impl Store {
    /// Opens (or creates) the journal at `path` on disk, recovering its committed entries.
    pub fn open(path: &Path) -> Result<(Self, Recovered), Error> {
        Self::open_in(&Disk, path)
    }

    /// [`Store::open`] on `storage`.
    pub fn open_in(storage: &dyn Storage, path: &Path) -> Result<(Self, Recovered), Error> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut file = storage.open(path).map_err(io)?;
        let bytes = file.read_all().map_err(io)?;
        if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len() - 1] == MAGIC[..MAGIC.len() - 1] && bytes[7] != MAGIC[7] {
            return Err(Error::OlderFormat { path: path.to_path_buf(), found: char::from(bytes[7]) });
        }
        let scan = journal::scan(&bytes);
        if scan.tail == Some(Tail::Magic) {
            return Err(Error::NotAJournal { path: path.to_path_buf() });
        }
        if let Some(tail) = &scan.tail
            && scan.later > 0
        {
            return Err(Error::Corrupt { path: path.to_path_buf(), tail: tail.clone(), later: scan.later });
        }
        if scan.valid_len == 0 {
            // New, or a header torn by a crash while the file was created.
            file.truncate(0).map_err(io)?;
            file.append(MAGIC).map_err(io)?;
            file.sync().map_err(io)?;
        } else if scan.valid_len < bytes.len() {
            file.truncate(scan.valid_len as u64).map_err(io)?;
            file.sync().map_err(io)?;
        }
        Ok((Self { path: path.to_path_buf(), file }, Recovered { entries: scan.entries, dropped: scan.tail }))
    }

    /// Empties the journal (once a snapshot holds everything in it): a fresh header, synced. A
    /// crash in between leaves an empty or torn header, which [`Store::open`] takes as a new
    /// journal.
    pub fn restart(&mut self) -> Result<(), Error> {
        let io = |source| Error::Io { path: self.path.clone(), source };
        self.file.truncate(0).map_err(io)?;
        self.file.append(MAGIC).map_err(io)?;
        self.file.sync().map_err(io)?;
        Ok(())
    }

    /// Appends `entries` and syncs them; when this returns `Ok` they are committed.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), Error> {
        let io = |source| Error::Io { path: self.path.clone(), source };
        let mut buf = Vec::new();
        for e in entries {
            buf.extend_from_slice(&journal::encode(e));
        }
        self.file.append(&buf).map_err(io)?;
        self.file.sync().map_err(io)?;
        Ok(())
    }
}

//! Where the journal's bytes live: the disk, or a simulated disk that loses every write not yet
//! synced when it "crashes" — the way power loss does, and a SIGKILL (which keeps the page cache)
//! does not. The simulation is how the journal is tested at every step (TigerBeetle's and
//! FoundationDB's approach).

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file of a [`Storage`].
pub trait File: Send {
    /// The whole content.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Appends at the end (not durable until [`File::sync`]).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes (not durable until [`File::sync`]).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// A place files are opened in.
pub trait Storage {
    /// Opens `path` for reading and appending, creating it when missing; a new file's directory
    /// entry is made durable before this returns (the parent directory is synced).
    fn open(&self, path: &Path) -> io::Result<Box<dyn File>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

struct DiskFile(std::fs::File);

impl File for DiskFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut b = Vec::new();
        self.0.seek(SeekFrom::Start(0))?;
        self.0.read_to_end(&mut b)?;
        self.0.seek(SeekFrom::End(0))?;
        Ok(b)
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::End(0))?;
        self.0.write_all(bytes)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.seek(SeekFrom::End(0)).map(|_| ())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for Disk {
    fn open(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let existed = path.exists();
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        if !existed {
            // The new directory entry is not durable until the directory is synced.
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(Box::new(DiskFile(f)))
    }
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What readers see now.
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, SimFile>,
    /// Operations left before the next one fails with an I/O error (a crash point).
    fail_after: Option<usize>,
}

/// A simulated disk: writes are volatile until synced, and [`Sim::crash`] throws away whatever
/// was not. [`Sim::fail_after`] makes the n-th next operation (append, truncate, sync) fail, to
/// crash at every step.
#[derive(Debug, Clone, Default)]
pub struct Sim(Arc<Mutex<SimState>>);

impl Sim {
    /// An empty simulated disk.
    pub fn new() -> Sim {
        Sim::default()
    }

    /// Power loss: every file goes back to its durable content.
    pub fn crash(&self) {
        if let Ok(mut s) = self.0.lock() {
            for f in s.files.values_mut() {
                f.current = f.durable.clone();
            }
            s.fail_after = None;
        }
    }

    /// The next `n` operations succeed, the one after fails (and every later one, until
    /// [`Sim::crash`]).
    pub fn fail_after(&self, n: usize) {
        if let Ok(mut s) = self.0.lock() {
            s.fail_after = Some(n);
        }
    }

    /// A file's current bytes (tests corrupt them through [`Sim::set`]).
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        self.0.lock().ok()?.files.get(path).map(|f| f.current.clone())
    }

    /// Replaces a file's content, durably (a corruption at rest).
    pub fn set(&self, path: &Path, bytes: Vec<u8>) {
        if let Ok(mut s) = self.0.lock() {
            s.files.insert(path.to_path_buf(), SimFile { durable: bytes.clone(), current: bytes });
        }
    }
}

struct SimHandle {
    sim: Sim,
    path: PathBuf,
}

impl SimHandle {
    fn op<T>(&self, f: impl FnOnce(&mut SimFile) -> T) -> io::Result<T> {
        let mut s = self.sim.0.lock().map_err(|_| io::Error::other("simulated disk poisoned"))?;
        if let Some(n) = s.fail_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("simulated crash point"));
            }
            *n -= 1;
        }
        let file = s.files.entry(self.path.clone()).or_default();
        Ok(f(file))
    }
}

impl File for SimHandle {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let s = self.sim.0.lock().map_err(|_| io::Error::other("simulated disk poisoned"))?;
        Ok(s.files.get(&self.path).map(|f| f.current.clone()).unwrap_or_default())
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.op(|f| f.current.extend_from_slice(bytes))
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.op(|f| f.current.truncate(len as usize))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.op(|f| f.durable = f.current.clone())
    }
}

impl Storage for Sim {
    fn open(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let mut s = self.0.lock().map_err(|_| io::Error::other("simulated disk poisoned"))?;
        // Creating the file and syncing its directory entry happen together here: the entry is
        // durable (empty) from the start, as `Disk` makes it.
        s.files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(SimHandle { sim: self.clone(), path: path.to_path_buf() }))
    }
}

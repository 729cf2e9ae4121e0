//! Where a node's durable bytes live — the ledger's journal and snapshot, key files, identity
//! metadata: the disk, or a simulated disk that loses every write not yet synced when it
//! "crashes", the way power loss does and a SIGKILL (which keeps the page cache) does not. The
//! simulation is how the journal, the snapshots and the key files are tested at every step
//! (TigerBeetle's and FoundationDB's approach).
//!
//! The model is POSIX's: a file's bytes are durable once the file is synced, a name (created,
//! renamed or removed) once its directory is synced. [`replace`] is the one way a whole file is
//! rewritten: a temporary file, synced, renamed over the old one, the directory synced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file of a [`Storage`], for appending (the journal).
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

/// What [`Storage::metadata`] tells of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Length in bytes.
    pub len: u64,
    /// Permission bits (`0o777` and above).
    pub mode: u32,
}

/// A place files live in.
pub trait Storage: Send + Sync {
    /// Opens `path` for reading and appending, creating it (mode 0600) when missing; a new file's
    /// directory entry is made durable before this returns (the parent directory is synced).
    fn open(&self, path: &Path) -> io::Result<Box<dyn File>>;
    /// The whole content of `path` (`NotFound` when it does not exist).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Length and mode of `path` (`NotFound` when it does not exist).
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Creates `dir` and any missing parent with `mode`, durably (each new entry's parent synced).
    fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()>;
    /// Creates `path`, which must not exist, with `mode` and `bytes` (neither durable yet).
    fn write_new(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()>;
    /// Makes the content of `path` durable (not its name: see [`Storage::sync_dir`]).
    fn sync(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (not durable until the directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes `path` (not durable until the directory is synced).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable: every create, rename and removal in it so far.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Whether `path` exists (an error reading it counts as absent).
    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Replaces `path` with `bytes` (mode `mode`) so that a crash at any point leaves either the old
/// file or the new one, never a torn one, and the new one for good once this returns: a
/// temporary file beside it is written and synced, renamed over `path`, and the directory synced.
pub fn replace(storage: &dyn Storage, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover of an earlier crash; its absence is the usual case.
    match storage.remove(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    storage.write_new(&tmp, bytes, mode)?;
    storage.sync(&tmp)?;
    storage.rename(&tmp, path)?;
    storage.sync_dir(dir)
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
        let f =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        if !existed {
            self.sync_dir(parent(path))?;
        }
        Ok(Box::new(DiskFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let m = std::fs::metadata(path)?;
        Ok(Metadata { len: m.len(), mode: m.permissions().mode() & 0o7777 })
    }
    fn create_dir_all(&self, dir: &Path, mode: u32) -> io::Result<()> {
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
        // From the top: each new directory's entry lives in its parent.
        for d in missing.iter().rev() {
            self.sync_dir(parent(d))?;
        }
        Ok(())
    }
    fn write_new(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
        f.write_all(bytes)
    }
    fn sync(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What readers see now.
    current: Vec<u8>,
    mode: u32,
}

#[derive(Debug, Default)]
struct SimState {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The names readers see now.
    names: BTreeMap<PathBuf, u64>,
    /// The names that survive a crash (those of directories synced since they changed).
    durable_names: BTreeMap<PathBuf, u64>,
    /// Directories (durable when made: [`Storage::create_dir_all`] syncs their parents).
    dirs: BTreeSet<PathBuf>,
    /// Operations left before the next one fails with an I/O error (a crash point).
    fail_after: Option<usize>,
    /// Mutating operations so far.
    operations: usize,
}

impl SimState {
    /// Counts one mutating operation against [`Sim::fail_after`].
    fn step(&mut self) -> io::Result<()> {
        if let Some(n) = self.fail_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("simulated crash point"));
            }
            *n -= 1;
        }
        self.operations += 1;
        Ok(())
    }

    fn new_inode(&mut self, mode: u32) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode { mode, ..Inode::default() });
        id
    }

    fn inode(&self, path: &Path) -> io::Result<&Inode> {
        self.names.get(path).and_then(|i| self.inodes.get(i)).ok_or_else(|| not_found(path))
    }

    /// A file may be made only in a directory that exists (the root always does).
    fn check_dir(&self, path: &Path) -> io::Result<()> {
        let dir = parent(path);
        if dir == Path::new(".") || dir == Path::new("/") || self.dirs.contains(dir) {
            Ok(())
        } else {
            Err(not_found(dir))
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

fn poisoned() -> io::Error {
    io::Error::other("simulated disk poisoned")
}

/// A simulated disk: file contents are volatile until synced, names until their directory is
/// synced, and [`Sim::crash`] throws away whatever was not. [`Sim::fail_after`] makes the n-th
/// next mutating operation fail, to crash at every step.
#[derive(Debug, Clone, Default)]
pub struct Sim(Arc<Mutex<SimState>>);

impl Sim {
    /// An empty simulated disk.
    pub fn new() -> Sim {
        Sim::default()
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, SimState>> {
        self.0.lock().map_err(|_| poisoned())
    }

    /// Power loss: every name and every file's content goes back to its durable state.
    pub fn crash(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.names = s.durable_names.clone();
            let live: BTreeSet<u64> = s.names.values().copied().collect();
            s.inodes.retain(|i, _| live.contains(i));
            for f in s.inodes.values_mut() {
                f.current = f.durable.clone();
            }
            s.fail_after = None;
        }
    }

    /// The next `n` mutating operations (append, truncate, sync, write, rename, remove, directory
    /// sync) succeed, the one after fails, and every later one until [`Sim::crash`].
    pub fn fail_after(&self, n: usize) {
        if let Ok(mut s) = self.0.lock() {
            s.fail_after = Some(n);
        }
    }

    /// Mutating operations done since the disk was made (to size a crash-at-every-step loop).
    pub fn operations(&self) -> usize {
        self.0.lock().map_or(0, |s| s.operations)
    }

    /// A file's current bytes.
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.0.lock().ok()?;
        s.inode(path).ok().map(|f| f.current.clone())
    }

    /// Every file's path, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.0.lock().map(|s| s.names.keys().cloned().collect()).unwrap_or_default()
    }

    /// Replaces a file's content durably, creating it with mode 0600 (a corruption at rest).
    pub fn set(&self, path: &Path, bytes: Vec<u8>) {
        if let Ok(mut s) = self.0.lock() {
            let id = match s.names.get(path) {
                Some(&id) => id,
                None => {
                    let id = s.new_inode(0o600);
                    s.names.insert(path.to_path_buf(), id);
                    s.durable_names.insert(path.to_path_buf(), id);
                    id
                }
            };
            if let Some(f) = s.inodes.get_mut(&id) {
                f.durable = bytes.clone();
                f.current = bytes;
            }
        }
    }

    /// Changes a file's mode (a careless `chmod`).
    pub fn set_mode(&self, path: &Path, mode: u32) {
        if let Ok(mut s) = self.0.lock()
            && let Some(id) = s.names.get(path).copied()
            && let Some(f) = s.inodes.get_mut(&id)
        {
            f.mode = mode;
        }
    }
}

struct SimHandle {
    sim: Sim,
    inode: u64,
}

impl SimHandle {
    fn op<T>(&self, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut s = self.sim.lock()?;
        s.step()?;
        let file = s.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::other("simulated file is gone"))?;
        Ok(f(file))
    }
}

impl File for SimHandle {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let s = self.sim.lock()?;
        Ok(s.inodes.get(&self.inode).map(|f| f.current.clone()).unwrap_or_default())
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
        let mut s = self.lock()?;
        let inode = match s.names.get(path) {
            Some(&id) => id,
            None => {
                s.check_dir(path)?;
                // Creating the file and syncing its directory entry happen together here: the
                // entry is durable (empty) from the start, as `Disk` makes it.
                let id = s.new_inode(0o600);
                s.names.insert(path.to_path_buf(), id);
                s.durable_names.insert(path.to_path_buf(), id);
                id
            }
        };
        Ok(Box::new(SimHandle { sim: self.clone(), inode }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lock()?.inode(path)?.current.clone())
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let s = self.lock()?;
        if s.dirs.contains(path) {
            return Ok(Metadata { len: 0, mode: 0o700 });
        }
        let f = s.inode(path)?;
        Ok(Metadata { len: f.current.len() as u64, mode: f.mode })
    }
    fn create_dir_all(&self, dir: &Path, _mode: u32) -> io::Result<()> {
        let mut s = self.lock()?;
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty() && *d != Path::new("/")) {
            if s.names.contains_key(d) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", d.display())));
            }
            if !s.dirs.contains(d) {
                s.step()?;
                s.dirs.insert(d.to_path_buf());
            }
        }
        Ok(())
    }
    fn write_new(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        let mut s = self.lock()?;
        s.step()?;
        s.check_dir(path)?;
        if s.names.contains_key(path) || s.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        let id = s.new_inode(mode);
        if let Some(f) = s.inodes.get_mut(&id) {
            f.current = bytes.to_vec();
        }
        s.names.insert(path.to_path_buf(), id);
        Ok(())
    }
    fn sync(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.step()?;
        let id = *s.names.get(path).ok_or_else(|| not_found(path))?;
        if let Some(f) = s.inodes.get_mut(&id) {
            f.durable = f.current.clone();
        }
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.step()?;
        s.check_dir(to)?;
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.step()?;
        s.names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.step()?;
        let in_dir = |p: &Path| parent(p) == dir;
        let now: Vec<(PathBuf, u64)> =
            s.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, i)| (p.clone(), *i)).collect();
        s.durable_names.retain(|p, _| !in_dir(p));
        s.durable_names.extend(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(sim: &Sim) -> Vec<(PathBuf, Vec<u8>)> {
        sim.files().into_iter().filter_map(|p| sim.get(&p).map(|b| (p, b))).collect()
    }

    #[test]
    fn a_name_without_its_directory_synced_is_lost_at_a_crash() {
        let sim = Sim::new();
        let dir = Path::new("/d");
        sim.create_dir_all(dir, 0o700).expect("dir");
        sim.write_new(&dir.join("a"), b"one", 0o600).expect("write");
        sim.sync(&dir.join("a")).expect("sync");
        sim.crash();
        assert!(all(&sim).is_empty(), "content synced, name not: gone");
        sim.write_new(&dir.join("a"), b"one", 0o600).expect("write");
        sim.sync_dir(dir).expect("sync dir");
        sim.crash();
        assert_eq!(all(&sim), vec![(dir.join("a"), Vec::new())], "name synced, content not: empty");
    }

    #[test]
    fn replace_leaves_the_old_or_the_new_file_at_every_crash_point() {
        let path = Path::new("/d/f");
        let old = b"old content".to_vec();
        let new = b"the new content".to_vec();
        for crash_at in 0.. {
            let sim = Sim::new();
            sim.create_dir_all(parent(path), 0o700).expect("dir");
            replace(&sim, path, &old, 0o600).expect("first version");
            sim.fail_after(crash_at);
            let done = replace(&sim, path, &new, 0o600).is_ok();
            sim.crash();
            let got = sim.get(path).expect("the file is always there");
            assert!(got == old || got == new, "torn at step {crash_at}: {got:?}");
            if done {
                assert_eq!(got, new, "replace returned, so the new file is durable");
                assert_eq!(crash_at, 5, "remove, write, sync, rename, directory sync");
                break;
            }
            assert_eq!(got, old, "not durable before the directory sync (step {crash_at})");
            // Recovery from the leftover temporary file works.
            replace(&sim, path, &new, 0o600).expect("replace after the crash");
            assert_eq!(sim.get(path), Some(new.clone()));
            assert_eq!(sim.metadata(path).expect("meta").mode, 0o600);
        }
    }

    #[test]
    fn the_disk_does_what_the_simulation_models() {
        let d = tempfile::tempdir().expect("tmp");
        let dir = d.path().join("a/b");
        Disk.create_dir_all(&dir, 0o700).expect("dirs");
        assert_eq!(Disk.metadata(&dir).expect("meta").mode & 0o777, 0o700);
        let f = dir.join("f");
        replace(&Disk, &f, b"x", 0o600).expect("write");
        replace(&Disk, &f, b"yz", 0o640).expect("rewrite");
        assert_eq!(Disk.read(&f).expect("read"), b"yz");
        assert_eq!(Disk.metadata(&f).expect("meta"), Metadata { len: 2, mode: 0o640 });
        assert_eq!(Disk.write_new(&f, b"", 0o600).map_err(|e| e.kind()), Err(io::ErrorKind::AlreadyExists));
        Disk.remove(&f).expect("remove");
        assert!(!Disk.exists(&f));
        assert_eq!(Disk.read(&f).map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    }
}

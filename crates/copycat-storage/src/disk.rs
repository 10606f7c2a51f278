//! The [`Disk`] trait, through which every file operation of the storage
//! layer goes, and its two plain implementations: [`FsDisk`] (the real file
//! system) and [`MemDisk`] (memory, everything durable at once).
//!
//! The third implementation, [`crate::FaultDisk`], simulates a disk that
//! loses unsynced data on a crash.
//!
//! The trait is path based: there are no open file handles to keep in step
//! with renames and removals, which keeps the simulated implementations small
//! and deterministic. [`FsDisk`] caches open handles internally so that the
//! hot path (append, sync) does not reopen files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Synchronous, object-safe file operations.
///
/// Durability contract (what the stores rely on, and what
/// [`crate::FaultDisk`] enforces):
/// - Bytes written with [`Disk::write_at`] / [`Disk::append`] and length
///   changes with [`Disk::set_len`] are durable only after
///   [`Disk::sync_data`] on that file returns `Ok`.
/// - Creating, renaming and removing a file is durable only after
///   [`Disk::sync_dir`] on the parent directory returns `Ok`.
/// - [`Disk::rename`] is atomic: after a crash the target name refers to
///   either the old or the new file, never a mixture.
/// - Synced data is never changed by a crash.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents. Directories are assumed durable
    /// once created (the stores create them before writing anything that
    /// matters, and sync the parent once).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Creates an empty file at `path`, truncating it if it exists.
    fn create(&self, path: &Path) -> io::Result<()>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, extending the file (with zeros in any
    /// gap) if needed.
    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Writes `data` at the end of the file; returns the offset it was written
    /// at.
    fn append(&self, path: &Path, data: &[u8]) -> io::Result<u64> {
        let offset = self.file_len(path)?;
        self.write_at(path, offset, data)?;
        Ok(offset)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()>;

    /// The file's length in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;

    /// Makes the file's data and length durable (fdatasync).
    fn sync_data(&self, path: &Path) -> io::Result<()>;

    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// The names of the entries of `dir` (files and directories), sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Reads exactly `buf.len()` bytes at `offset`, failing with
    /// [`io::ErrorKind::UnexpectedEof`] if the file is too short.
    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let read = self.read_at(path, offset + done as u64, &mut buf[done..])?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short read at offset {}", offset + done as u64),
                ));
            }
            done += read;
        }
        Ok(())
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock means a test is already failing; the
    // data is still usable for reporting.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

/// The real file system, through `std::fs`.
///
/// `sync_data` is `fdatasync`; `sync_dir` opens the directory and calls
/// `fsync` on it. Open handles are cached per path (and dropped on rename and
/// remove) so appends and syncs do not reopen files.
///
/// Built with the `sync-tracking` feature (test builds only), it also
/// records in each directory how far every file was synced, after each
/// sync returns, for [`crate::power_loss::simulate`]. `list_dir` never lists
/// that record ([`crate::power_loss::JOURNAL_FILE`]), with or without the
/// feature.
#[derive(Debug, Default, Clone)]
pub struct FsDisk {
    handles: Arc<Mutex<BTreeMap<PathBuf, Arc<File>>>>,
}

impl FsDisk {
    /// A new handle on the real file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn handle(&self, path: &Path) -> io::Result<Arc<File>> {
        let mut handles = lock(&self.handles);
        if let Some(file) = handles.get(path) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
        handles.insert(path.to_path_buf(), Arc::clone(&file));
        Ok(file)
    }

    fn forget(&self, path: &Path) {
        lock(&self.handles).remove(path);
    }
}

impl Disk for FsDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        #[cfg(feature = "sync-tracking")]
        crate::power_loss::record::created(path, &file)?;
        lock(&self.handles).insert(path.to_path_buf(), Arc::new(file));
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.handle(path)?;
        let mut done = 0;
        // `FileExt::read_at` may return short reads before the end of file;
        // loop until the buffer is full or the file ends.
        while done < buf.len() {
            let read = file.read_at(&mut buf[done..], offset + done as u64)?;
            if read == 0 {
                break;
            }
            done += read;
        }
        Ok(done)
    }

    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        self.handle(path)?.write_all_at(data, offset)
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        self.handle(path)?.set_len(len)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.handle(path)?.metadata()?.len())
    }

    fn sync_data(&self, path: &Path) -> io::Result<()> {
        let file = self.handle(path)?;
        // What the record may claim is fixed before the sync starts: bytes
        // written while it runs are not covered.
        #[cfg(feature = "sync-tracking")]
        let (id, len) = crate::power_loss::record::before_sync(&file)?;
        file.sync_data()?;
        #[cfg(feature = "sync-tracking")]
        crate::power_loss::record::synced(path, id, len)?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(feature = "sync-tracking")]
        let entries = crate::power_loss::record::before_dir_sync(dir)?;
        File::open(dir)?.sync_all()?;
        #[cfg(feature = "sync-tracking")]
        crate::power_loss::record::dir_synced(dir, &entries)?;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.forget(from);
        self.forget(to);
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.forget(path);
        fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // The sync journal of a `sync-tracking` build is not the stores'.
            if name != crate::power_loss::JOURNAL_FILE {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// An in-memory disk on which everything is durable immediately.
///
/// Cheap to clone: clones share the same files.
#[derive(Debug, Default, Clone)]
pub struct MemDisk {
    inner: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Lists the children of `dir` among `files` and `dirs`.
pub(crate) fn list_children<'a>(
    dir: &Path,
    files: impl Iterator<Item = &'a PathBuf>,
    dirs: impl Iterator<Item = &'a PathBuf>,
) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for path in files.chain(dirs) {
        if path.parent() == Some(dir) {
            if let Some(name) = path.file_name() {
                names.insert(name.to_string_lossy().into_owned());
            }
        }
    }
    names.into_iter().collect()
}

pub(crate) fn write_into(buffer: &mut Vec<u8>, offset: u64, data: &[u8]) -> io::Result<()> {
    let offset = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let end = offset + data.len();
    if buffer.len() < end {
        buffer.resize(end, 0);
    }
    buffer[offset..end].copy_from_slice(data);
    Ok(())
}

pub(crate) fn read_from(buffer: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let Ok(offset) = usize::try_from(offset) else {
        return 0;
    };
    if offset >= buffer.len() {
        return 0;
    }
    let count = buf.len().min(buffer.len() - offset);
    buf[..count].copy_from_slice(&buffer[offset..offset + count]);
    count
}

fn check_parent(dirs: &BTreeSet<PathBuf>, path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !dirs.contains(parent) => {
            Err(not_found(parent))
        }
        _ => Ok(()),
    }
}

pub(crate) fn add_dirs(dirs: &mut BTreeSet<PathBuf>, dir: &Path) {
    for ancestor in dir.ancestors() {
        if !ancestor.as_os_str().is_empty() {
            dirs.insert(ancestor.to_path_buf());
        }
    }
}

impl Disk for MemDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        add_dirs(&mut lock(&self.inner).dirs, dir);
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        check_parent(&state.dirs, path)?;
        state.files.insert(path.to_path_buf(), Vec::new());
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = lock(&self.inner);
        Ok(state.files.contains_key(path) || state.dirs.contains(path))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let state = lock(&self.inner);
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(read_from(file, offset, buf))
    }

    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.inner);
        let file = state.files.get_mut(path).ok_or_else(|| not_found(path))?;
        write_into(file, offset, data)
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = lock(&self.inner);
        let file = state.files.get_mut(path).ok_or_else(|| not_found(path))?;
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        file.resize(len, 0);
        Ok(())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = lock(&self.inner);
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(file.len() as u64)
    }

    fn sync_data(&self, path: &Path) -> io::Result<()> {
        let state = lock(&self.inner);
        if state.files.contains_key(path) {
            Ok(())
        } else {
            Err(not_found(path))
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let state = lock(&self.inner);
        if state.dirs.contains(dir) {
            Ok(())
        } else {
            Err(not_found(dir))
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        check_parent(&state.dirs, to)?;
        let data = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.inner);
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(list_children(dir, state.files.keys(), state.dirs.iter()))
    }
}

//! The snapshot store: checksummed snapshot files installed atomically.
//!
//! File `<index, 20 digits>-<term, 20 digits>.snap`:
//!
//! ```text
//! magic "CCATSNAP" (8) | version u32 | meta_len u32 | meta (postcard SnapshotMeta)
//! | header_crc u32 (over everything before it)
//! | data (data_len bytes)
//! | data_len u64 | data_crc u32 (crc32c of data) | end magic "SEND" (4)
//! ```
//!
//! A snapshot is streamed into `<index>-<term>.<n>.snap.tmp` (`n` numbers the
//! store's writers, so a snapshot taken locally and the same one received
//! from the leader never share a temp file), which is then synced, renamed to
//! its final name and the directory synced. Temp files left by a crash are
//! removed on open. The latest snapshot is verified in full on open.
//!
//! Installing is steps that may run on different threads: sealing
//! ([`SnapshotWriter::seal`]: trailer and fdatasync of the temp file, the
//! slow part, touching nothing but that file), optionally publishing it
//! ([`SealedSnapshot::publish`]: rename to its final name and directory
//! sync, which may wait behind other writeback), and installing it in the
//! store ([`SnapshotStore::install_sealed`]: the rename and directory sync
//! unless published, then retention). [`SnapshotStore::install`] does all.
//! A published snapshot not yet installed is on disk as any installed one
//! is: a crash then leaves it the latest, which is as safe as a crash right
//! after an install (its state is the state machine's at a committed
//! index, and the log still holds every entry after it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use copycat_raft::{LogIndex, SnapshotMeta, Term};

use crate::disk::Disk;
use crate::error::{io_error, Result, StorageError};
use crate::log::Durability;
use crate::removal::StoreRemovals;

/// Magic bytes at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CCATSNAP";
/// Magic bytes at the end of a snapshot file.
pub const SNAPSHOT_END_MAGIC: [u8; 4] = *b"SEND";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Largest encoded [`SnapshotMeta`] accepted.
pub const SNAPSHOT_META_MAX_BYTES: u32 = 1 << 20;

const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";
const TRAILER_BYTES: u64 = 16;
const VERIFY_CHUNK_BYTES: u64 = 1 << 20;

/// An installed snapshot file.
#[derive(Clone, Debug)]
struct Installed {
    meta: SnapshotMeta,
    path: PathBuf,
    data_start: u64,
    data_len: u64,
}

/// Stores snapshots: the latest and up to `retained_old` older ones.
#[derive(Debug)]
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    durability: Durability,
    retained_old: usize,
    /// Oldest first; the last is the latest.
    installed: Vec<Installed>,
    /// Old snapshots are left for [`SnapshotStore::take_removals`] instead
    /// of being removed in place.
    defer_removals: bool,
    removals: Vec<PathBuf>,
    /// Numbers the temp files of writers, so that two writers of the same
    /// snapshot (a local one and one received from the leader, at the same
    /// index and term) never share a file.
    temp_serial: AtomicU64,
}

/// A snapshot being written. Created by [`SnapshotStore::begin`], filled with
/// [`SnapshotWriter::write`], made current by [`SnapshotStore::install`] (or
/// [`SnapshotWriter::seal`], then [`SnapshotStore::install_sealed`]). It
/// touches only its temp file, so it may be filled and sealed on another
/// thread than the store's.
#[derive(Debug)]
pub struct SnapshotWriter {
    meta: SnapshotMeta,
    temp_path: PathBuf,
    data_start: u64,
    data_len: u64,
    crc: u32,
    durability: Durability,
    disk: Arc<dyn Disk>,
}

/// An installed snapshot's data, to read on any thread (a restore decodes
/// a large image off the thread that owns the store). Made by
/// [`SnapshotStore::latest_file`]. Reading fails once the store removed
/// the file (a newer snapshot replaced it beyond the retention).
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    meta: SnapshotMeta,
    path: PathBuf,
    data_start: u64,
    data_len: u64,
    disk: Arc<dyn Disk>,
}

impl SnapshotFile {
    /// The snapshot's metadata.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Bytes of data it holds.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Reads its whole data.
    pub fn read_data(&self) -> Result<Vec<u8>> {
        let mut data = vec![0u8; self.data_len as usize];
        self.disk
            .read_exact_at(&self.path, self.data_start, &mut data)
            .map_err(io_error("read", &self.path))?;
        Ok(data)
    }
}

/// A snapshot whose temp file is complete and durable (data, trailer,
/// fdatasync) but not yet installed: a crash now leaves the previous
/// snapshot current. Made by [`SnapshotWriter::seal`]; installed by
/// [`SnapshotStore::install_sealed`] or dropped by
/// [`SnapshotStore::abort_sealed`].
#[derive(Debug)]
pub struct SealedSnapshot {
    meta: SnapshotMeta,
    /// The temp file, or the file at its final name once published.
    path: PathBuf,
    data_start: u64,
    data_len: u64,
    durability: Durability,
    published: bool,
    disk: Arc<dyn Disk>,
}

impl SealedSnapshot {
    /// Renames the file to its final name and syncs the directory, on any
    /// thread: what [`SnapshotStore::install_sealed`] would do first, done
    /// ahead so that the store's thread does not wait for it. On error the
    /// file is removed.
    pub fn publish(&mut self) -> Result<()> {
        if self.published {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match rename_into_place(&*self.disk, &self.path, &dir, &self.meta, self.durability) {
            Ok(path) => {
                self.path = path;
                self.published = true;
                Ok(())
            }
            Err((error, left)) => {
                let _ = self.disk.remove(&left);
                Err(error)
            }
        }
    }

    /// Whether [`publish`](Self::publish) has run.
    pub fn is_published(&self) -> bool {
        self.published
    }

    /// The metadata of the sealed snapshot.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Bytes of data it holds.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Reads the first `len` bytes of its data back (at most all of it),
    /// to check the start of an image before installing it.
    pub fn read_prefix(&self, len: u64) -> Result<Vec<u8>> {
        let mut data = vec![0u8; len.min(self.data_len) as usize];
        self.disk
            .read_exact_at(&self.path, self.data_start, &mut data)
            .map_err(io_error("read", &self.path))?;
        Ok(data)
    }

    /// Reads its whole data back (to check an image before installing it).
    pub fn read_data(&self) -> Result<Vec<u8>> {
        let mut data = vec![0u8; self.data_len as usize];
        self.disk
            .read_exact_at(&self.path, self.data_start, &mut data)
            .map_err(io_error("read", &self.path))?;
        Ok(data)
    }
}

/// Rename the sealed file `from` to the name of `meta` in `dir`, then (under
/// [`Durability::Fsync`]) sync the directory. Returns the new path; on
/// error, also the path the file is left at.
fn rename_into_place(
    disk: &dyn Disk,
    from: &Path,
    dir: &Path,
    meta: &SnapshotMeta,
    durability: Durability,
) -> std::result::Result<PathBuf, (StorageError, PathBuf)> {
    let path = dir.join(file_name(meta));
    disk.rename(from, &path)
        .map_err(|error| (io_error("rename", from)(error), from.to_path_buf()))?;
    if durability == Durability::Fsync {
        disk.sync_dir(dir)
            .map_err(|error| (io_error("sync directory", dir)(error), path.clone()))?;
    }
    Ok(path)
}

fn file_name(meta: &SnapshotMeta) -> String {
    format!("{:020}-{:020}{SUFFIX}", meta.index.get(), meta.term.get())
}

fn parse_name(name: &str) -> Option<(LogIndex, Term)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 20 || term.len() != 20 {
        return None;
    }
    if !index
        .bytes()
        .chain(term.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((LogIndex(index.parse().ok()?), Term(term.parse().ok()?)))
}

impl SnapshotWriter {
    /// The metadata of the snapshot being written.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Bytes of data written so far (the offset the next chunk goes at).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Appends a chunk of snapshot data.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.disk
            .write_at(&self.temp_path, self.data_start + self.data_len, chunk)
            .map_err(io_error("write", &self.temp_path))?;
        self.crc = crc32c::crc32c_append(self.crc, chunk);
        self.data_len += chunk.len() as u64;
        Ok(())
    }

    /// Writes a chunk that a leader sent for `offset`; the offset must be
    /// where the previous chunk ended.
    pub fn write_at(&mut self, offset: u64, chunk: &[u8]) -> Result<()> {
        if offset != self.data_len {
            return Err(StorageError::Snapshot(format!(
                "chunk at offset {offset}, expected {}",
                self.data_len
            )));
        }
        self.write(chunk)
    }

    /// Abandons the snapshot and removes its temp file (for a writer that
    /// failed, e.g. with a full disk: the partial file would keep taking
    /// space until the next open).
    pub fn discard(self) -> Result<()> {
        self.disk
            .remove(&self.temp_path)
            .map_err(io_error("remove", &self.temp_path))
    }

    /// Finishes the temp file: writes the trailer and, under
    /// [`Durability::Fsync`], fdatasyncs it. The snapshot is not current
    /// until [`SnapshotStore::install_sealed`] renames it into place. On
    /// error the temp file is removed.
    pub fn seal(self) -> Result<SealedSnapshot> {
        let mut trailer = Vec::with_capacity(TRAILER_BYTES as usize);
        trailer.extend_from_slice(&self.data_len.to_le_bytes());
        trailer.extend_from_slice(&self.crc.to_le_bytes());
        trailer.extend_from_slice(&SNAPSHOT_END_MAGIC);
        let temp = &self.temp_path;
        let mut sealed = self
            .disk
            .write_at(temp, self.data_start + self.data_len, &trailer)
            .map_err(io_error("write", temp));
        if sealed.is_ok() && self.durability == Durability::Fsync {
            sealed = self.disk.sync_data(temp).map_err(io_error("sync", temp));
        }
        if let Err(error) = sealed {
            let _ = self.disk.remove(temp);
            return Err(error);
        }
        Ok(SealedSnapshot {
            meta: self.meta,
            path: self.temp_path,
            data_start: self.data_start,
            data_len: self.data_len,
            durability: self.durability,
            published: false,
            disk: self.disk,
        })
    }
}

fn older_than_latest() -> StorageError {
    StorageError::Snapshot("snapshot older than the latest installed".into())
}

/// Reads and verifies the header of a snapshot file.
fn read_header(disk: &dyn Disk, path: &Path) -> Result<(SnapshotMeta, u64, u64)> {
    let file_len = disk.file_len(path).map_err(io_error("stat", path))?;
    let needed = 16 + 4 + TRAILER_BYTES;
    if file_len < needed {
        return Err(StorageError::TruncatedHeader {
            path: path.to_path_buf(),
            found: file_len,
            needed,
        });
    }
    let mut fixed = [0u8; 16];
    disk.read_exact_at(path, 0, &mut fixed)
        .map_err(io_error("read", path))?;
    if fixed[0..8] != SNAPSHOT_MAGIC {
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
            expected: "snapshot",
            found: fixed[0..8].to_vec(),
        });
    }
    let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let meta_len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes"));
    if meta_len > SNAPSHOT_META_MAX_BYTES || 16 + u64::from(meta_len) + 4 + TRAILER_BYTES > file_len
    {
        return Err(corrupt(12, format!("implausible meta length {meta_len}")));
    }
    let mut header = vec![0u8; 16 + meta_len as usize + 4];
    disk.read_exact_at(path, 0, &mut header)
        .map_err(io_error("read", path))?;
    let crc_at = header.len() - 4;
    let crc = u32::from_le_bytes(header[crc_at..].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&header[..crc_at]) {
        return Err(corrupt(crc_at as u64, "header checksum mismatch".into()));
    }
    let meta: SnapshotMeta = postcard::from_bytes(&header[16..crc_at])
        .map_err(|error| corrupt(16, format!("undecodable snapshot meta: {error}")))?;
    let data_start = header.len() as u64;
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    let trailer_at = file_len - TRAILER_BYTES;
    disk.read_exact_at(path, trailer_at, &mut trailer)
        .map_err(io_error("read", path))?;
    if trailer[12..16] != SNAPSHOT_END_MAGIC {
        return Err(corrupt(
            trailer_at,
            "missing end magic (incomplete snapshot)".into(),
        ));
    }
    let data_len = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
    if data_start + data_len != trailer_at {
        return Err(corrupt(
            trailer_at,
            format!("data length {data_len} does not match the file size"),
        ));
    }
    Ok((meta, data_start, data_len))
}

/// Verifies the data checksum of a snapshot file, reading it in chunks.
fn verify_data(disk: &dyn Disk, path: &Path, data_start: u64, data_len: u64) -> Result<()> {
    let mut crc = 0u32;
    let mut buffer = vec![0u8; VERIFY_CHUNK_BYTES.min(data_len) as usize];
    let mut offset = 0u64;
    while offset < data_len {
        let len = VERIFY_CHUNK_BYTES.min(data_len - offset) as usize;
        disk.read_exact_at(path, data_start + offset, &mut buffer[..len])
            .map_err(io_error("read", path))?;
        crc = crc32c::crc32c_append(crc, &buffer[..len]);
        offset += len as u64;
    }
    let trailer_at = data_start + data_len;
    let mut stored = [0u8; 4];
    disk.read_exact_at(path, trailer_at + 8, &mut stored)
        .map_err(io_error("read", path))?;
    if u32::from_le_bytes(stored) != crc {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: data_start,
            reason: "snapshot data checksum mismatch".into(),
        });
    }
    Ok(())
}

impl SnapshotStore {
    /// Opens the store in `dir`: removes temp files left by interrupted
    /// writes, rejects unknown files, and verifies the latest snapshot in
    /// full. Returns the store and the temp files removed.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        durability: Durability,
        retained_old: usize,
    ) -> Result<(Self, Vec<PathBuf>)> {
        disk.create_dir_all(dir)
            .map_err(io_error("create directory", dir))?;
        let mut removed = Vec::new();
        let mut found = Vec::new();
        for name in disk
            .list_dir(dir)
            .map_err(io_error("list directory", dir))?
        {
            let path = dir.join(&name);
            if name.ends_with(TEMP_SUFFIX) {
                disk.remove(&path).map_err(io_error("remove", &path))?;
                removed.push(path);
            } else if let Some((index, term)) = parse_name(&name) {
                found.push((index, term, path));
            } else {
                return Err(StorageError::UnexpectedFile { path });
            }
        }
        if !removed.is_empty() && durability == Durability::Fsync {
            disk.sync_dir(dir)
                .map_err(io_error("sync directory", dir))?;
        }
        found.sort();
        let mut installed = Vec::new();
        let count = found.len();
        for (position, (index, term, path)) in found.into_iter().enumerate() {
            let (meta, data_start, data_len) = read_header(disk.as_ref(), &path)?;
            if meta.index != index || meta.term != term {
                return Err(StorageError::Corrupt {
                    path,
                    offset: 16,
                    reason: format!(
                        "meta {:?}/{:?} does not match the file name",
                        meta.index, meta.term
                    ),
                });
            }
            if position + 1 == count {
                verify_data(disk.as_ref(), &path, data_start, data_len)?;
            }
            installed.push(Installed {
                meta,
                path,
                data_start,
                data_len,
            });
        }
        Ok((
            Self {
                disk,
                dir: dir.to_path_buf(),
                durability,
                retained_old,
                installed,
                defer_removals: false,
                removals: Vec::new(),
                temp_serial: AtomicU64::new(0),
            },
            removed,
        ))
    }

    /// The metadata of the latest installed snapshot.
    pub fn latest(&self) -> Option<&SnapshotMeta> {
        self.installed.last().map(|installed| &installed.meta)
    }

    /// Metadata of every installed snapshot, oldest first.
    pub fn all(&self) -> Vec<SnapshotMeta> {
        self.installed
            .iter()
            .map(|installed| installed.meta.clone())
            .collect()
    }

    /// Size of the latest snapshot's data in bytes.
    pub fn latest_data_len(&self) -> Option<u64> {
        self.installed.last().map(|installed| installed.data_len)
    }

    /// Starts writing a snapshot described by `meta`.
    pub fn begin(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let serial = self.temp_serial.fetch_add(1, Ordering::Relaxed);
        let temp_path = self.dir.join(format!(
            "{:020}-{:020}.{serial}{TEMP_SUFFIX}",
            meta.index.get(),
            meta.term.get()
        ));
        let encoded = postcard::to_allocvec(&meta).expect("encoding SnapshotMeta cannot fail");
        let mut header = Vec::with_capacity(16 + encoded.len() + 4);
        header.extend_from_slice(&SNAPSHOT_MAGIC);
        header.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        header.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        header.extend_from_slice(&encoded);
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        self.disk
            .create(&temp_path)
            .map_err(io_error("create", &temp_path))?;
        if let Err(error) = self.disk.write_at(&temp_path, 0, &header) {
            let _ = self.disk.remove(&temp_path);
            return Err(io_error("write", &temp_path)(error));
        }
        Ok(SnapshotWriter {
            meta,
            temp_path,
            data_start: header.len() as u64,
            data_len: 0,
            crc: 0,
            durability: self.durability,
            disk: Arc::clone(&self.disk),
        })
    }

    /// Finishes `writer` and makes it the latest snapshot, durably: trailer,
    /// fdatasync, rename, directory sync ([`SnapshotWriter::seal`], then
    /// [`install_sealed`](Self::install_sealed)). Then removes snapshots
    /// beyond the retention. Returns the installed metadata.
    pub fn install(&mut self, writer: SnapshotWriter) -> Result<SnapshotMeta> {
        if self.is_older_than_latest(&writer.meta) {
            self.abort(writer)?;
            return Err(older_than_latest());
        }
        self.install_sealed(writer.seal()?)
    }

    /// Makes a sealed snapshot the latest, durably: rename, directory sync.
    /// Then removes snapshots beyond the retention. Returns the installed
    /// metadata. A snapshot older than the latest is removed and refused.
    pub fn install_sealed(&mut self, sealed: SealedSnapshot) -> Result<SnapshotMeta> {
        if self.is_older_than_latest(&sealed.meta) {
            self.abort_sealed(sealed)?;
            return Err(older_than_latest());
        }
        let path = if sealed.published {
            sealed.path.clone()
        } else {
            rename_into_place(
                &*self.disk,
                &sealed.path,
                &self.dir,
                &sealed.meta,
                self.durability,
            )
            .map_err(|(error, _)| error)?
        };
        self.installed.retain(|installed| installed.path != path);
        self.installed.push(Installed {
            meta: sealed.meta.clone(),
            path,
            data_start: sealed.data_start,
            data_len: sealed.data_len,
        });
        while self.installed.len() > self.retained_old + 1 {
            let old = self.installed.remove(0);
            if self.defer_removals {
                self.removals.push(old.path);
                continue;
            }
            self.disk
                .remove(&old.path)
                .map_err(io_error("remove", &old.path))?;
            self.sync_dir()?;
        }
        Ok(sealed.meta)
    }

    /// Leave snapshots beyond the retention to
    /// [`take_removals`](Self::take_removals) instead of removing them in
    /// place (see `Storage::defer_removals`). Left behind by a crash, they
    /// are installed older snapshots again, removed by the next install.
    pub fn defer_removals(&mut self, defer: bool) {
        self.defer_removals = defer;
    }

    /// The old snapshots to remove elsewhere, if any.
    pub(crate) fn take_removals(&mut self) -> Option<StoreRemovals> {
        if self.removals.is_empty() {
            return None;
        }
        Some(StoreRemovals {
            dir: self.dir.clone(),
            sync_first: None,
            files: std::mem::take(&mut self.removals),
            done: None,
        })
    }

    fn is_older_than_latest(&self, meta: &SnapshotMeta) -> bool {
        self.latest()
            .is_some_and(|latest| meta.index < latest.index)
    }

    /// Abandons a snapshot being written and removes its temp file.
    pub fn abort(&self, writer: SnapshotWriter) -> Result<()> {
        self.disk
            .remove(&writer.temp_path)
            .map_err(io_error("remove", &writer.temp_path))
    }

    /// Abandons a sealed snapshot and removes its temp file (or, once
    /// published, its file, unless an installed snapshot of the same index
    /// and term has that name: the same snapshot, received meanwhile).
    pub fn abort_sealed(&self, sealed: SealedSnapshot) -> Result<()> {
        if sealed.published && self.installed.iter().any(|i| i.path == sealed.path) {
            return Ok(());
        }
        sealed
            .disk
            .remove(&sealed.path)
            .map_err(io_error("remove", &sealed.path))
    }

    fn sync_dir(&self) -> Result<()> {
        if self.durability == Durability::Fsync {
            self.disk
                .sync_dir(&self.dir)
                .map_err(io_error("sync directory", &self.dir))?;
        }
        Ok(())
    }

    /// Reads up to `len_max` bytes of the latest snapshot's data at `offset`.
    /// Returns the bytes and whether they reach the end of the data.
    pub fn read_chunk(&self, offset: u64, len_max: u64) -> Result<(Vec<u8>, bool)> {
        let latest = self
            .installed
            .last()
            .ok_or_else(|| StorageError::Snapshot("no snapshot installed".into()))?;
        if offset > latest.data_len {
            return Err(StorageError::Snapshot(format!(
                "offset {offset} beyond the snapshot's {} bytes",
                latest.data_len
            )));
        }
        let len = len_max.min(latest.data_len - offset);
        let mut chunk = vec![0u8; len as usize];
        self.disk
            .read_exact_at(&latest.path, latest.data_start + offset, &mut chunk)
            .map_err(io_error("read", &latest.path))?;
        Ok((chunk, offset + len == latest.data_len))
    }

    /// The latest snapshot's file, to read on any thread; `None` if there
    /// is no snapshot.
    pub fn latest_file(&self) -> Option<SnapshotFile> {
        self.installed.last().map(|latest| SnapshotFile {
            meta: latest.meta.clone(),
            path: latest.path.clone(),
            data_start: latest.data_start,
            data_len: latest.data_len,
            disk: Arc::clone(&self.disk),
        })
    }

    /// Reads the whole data of the latest snapshot (for restoring a state
    /// machine); `None` if there is no snapshot.
    pub fn read_all(&self) -> Result<Option<Vec<u8>>> {
        match self.latest_data_len() {
            None => Ok(None),
            Some(len) => Ok(Some(self.read_chunk(0, len)?.0)),
        }
    }
}

//! [`FaultDisk`]: a deterministic in-memory disk that forgets what was not
//! synced.
//!
//! # Fault model
//!
//! The disk keeps two views of every file and directory: what the running
//! process sees (*live*) and what would survive a power loss (*durable*).
//!
//! - A write or `set_len` changes the live contents only. `sync_data` copies
//!   the live contents of that file to its durable contents.
//! - A create, rename or remove changes the live directory only.
//!   `sync_dir(dir)` copies the live entries of `dir` to its durable entries.
//!   A file whose name never became durable disappears on a crash even if its
//!   data was synced (that is why atomic installs sync the directory).
//! - Directories themselves are durable once created.
//! - [`FaultDisk::crash`] replaces every live view with its durable view:
//!   unsynced writes, truncations, creations, renames and removals are lost.
//! - [`FaultDisk::crash_torn`] is a crash in which each file whose live
//!   contents differ from its durable contents may keep some of the unsynced
//!   work: either its durable contents, or a prefix of its live contents that
//!   is at least as long as the part both agree on. This models a disk that
//!   persisted some of the pending writes, in order, before power went out.
//!
//! What a crash never does: change bytes that were synced and not since
//! overwritten or truncated by the caller, reorder a rename, or invent data
//! that was never written. Those are the guarantees a real disk gives and the
//! stores rely on. The explicit knobs below go further and are only for tests
//! that expect the damage to be *detected*:
//!
//! - [`FaultDisk::tear_last_write`]: the most recent write was cut in the
//!   middle and the cut prefix made durable, as if power failed mid-write.
//! - [`FaultDisk::flip_bit`]: media corruption of one bit, live and durable.
//!   When the bit lies in synced data, a correct store must report an error,
//!   never return the damaged data.
//! - [`FaultDisk::fail_next_write`] and [`FaultDisk::fail_next_sync`]: the
//!   next write (or `set_len`) or sync returns an I/O error and has no effect.
//!   After a failed sync the stores must assume nothing since the previous
//!   successful sync is durable.
//! - [`FaultDisk::set_capacity`]: a disk that holds only so many bytes. A
//!   write that does not fit writes the part that does (a partial record,
//!   as a real full disk leaves) and fails with `ENOSPC`; so does growing a
//!   file with `set_len`. [`FaultDisk::fail_next_sync_disk_full`] makes the
//!   next sync fail with `ENOSPC` (as on file systems that allocate at
//!   writeback) and make nothing durable.
//!
//! All randomness comes from a ChaCha generator seeded by the caller, and all
//! state lives in `BTreeMap`s, so a seed reproduces the same faults.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::{add_dirs, list_children, lock, read_from, write_into, Disk};

type InodeId = u64;

#[derive(Debug, Default, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
struct LastWrite {
    inode: InodeId,
    offset: u64,
    len: u64,
}

#[derive(Debug)]
struct FaultState {
    rng: ChaCha8Rng,
    next_inode: InodeId,
    inodes: BTreeMap<InodeId, Inode>,
    live_names: BTreeMap<PathBuf, InodeId>,
    durable_names: BTreeMap<PathBuf, InodeId>,
    dirs: BTreeSet<PathBuf>,
    fail_next_write: bool,
    fail_next_sync: bool,
    /// The next failing sync fails with `ENOSPC` rather than `EIO`.
    sync_failure_disk_full: bool,
    /// Bytes the live files may hold in total, if limited.
    capacity: Option<u64>,
    last_write: Option<LastWrite>,
    crashes: u64,
}

/// A deterministic in-memory disk that distinguishes written from synced
/// bytes and can crash. See the [module documentation](self) for the fault
/// model.
///
/// Clones share the same state, so a simulator can keep one handle and crash
/// the disk while stores built on another handle are running, then reopen
/// the stores on it.
#[derive(Debug, Clone)]
pub struct FaultDisk {
    inner: Arc<Mutex<FaultState>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

/// `ENOSPC`, as the operating system reports it.
fn disk_full() -> io::Error {
    io::Error::from(io::ErrorKind::StorageFull)
}

impl FaultState {
    fn inode(&self, path: &Path) -> io::Result<InodeId> {
        self.live_names
            .get(path)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn inode_mut(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let id = self.inode(path)?;
        Ok(self
            .inodes
            .get_mut(&id)
            .expect("live name points to a live inode"))
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !self.dirs.contains(parent) => {
                Err(not_found(parent))
            }
            _ => Ok(()),
        }
    }

    /// Bytes held by the files that have a live name.
    fn used_bytes(&self) -> u64 {
        let live: BTreeSet<InodeId> = self.live_names.values().copied().collect();
        live.iter()
            .map(|id| self.inodes[id].live.len() as u64)
            .sum()
    }

    /// How many bytes a file may still grow by, if the capacity is limited.
    fn room(&self) -> Option<u64> {
        self.capacity
            .map(|capacity| capacity.saturating_sub(self.used_bytes()))
    }

    /// Forgets inodes no name (live or durable) refers to.
    fn collect_garbage(&mut self) {
        let referenced: BTreeSet<InodeId> = self
            .live_names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes.retain(|id, _| referenced.contains(id));
    }

    fn crash(&mut self, torn: bool) {
        self.live_names = self.durable_names.clone();
        self.collect_garbage();
        for inode in self.inodes.values_mut() {
            if torn && inode.live != inode.durable {
                let common = inode
                    .live
                    .iter()
                    .zip(inode.durable.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                if self.rng.gen_bool(0.5) {
                    let keep = self.rng.gen_range(common..=inode.live.len());
                    inode.live.truncate(keep);
                    inode.durable = inode.live.clone();
                }
            }
            inode.live = inode.durable.clone();
        }
        self.last_write = None;
        self.fail_next_write = false;
        self.fail_next_sync = false;
        self.sync_failure_disk_full = false;
        self.crashes += 1;
    }
}

impl FaultDisk {
    /// An empty disk whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FaultState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                next_inode: 1,
                inodes: BTreeMap::new(),
                live_names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                fail_next_write: false,
                fail_next_sync: false,
                sync_failure_disk_full: false,
                capacity: None,
                last_write: None,
                crashes: 0,
            })),
        }
    }

    /// Power loss: every unsynced write and unsynced directory change is lost.
    pub fn crash(&self) {
        lock(&self.inner).crash(false);
    }

    /// Power loss in which each file may keep part of its unsynced tail (see
    /// the module documentation). Synced data is kept.
    pub fn crash_torn(&self) {
        lock(&self.inner).crash(true);
    }

    /// How many crashes have happened.
    pub fn crash_count(&self) -> u64 {
        lock(&self.inner).crashes
    }

    /// Cuts the most recent write at a random point inside it and makes the
    /// cut file durable, as if power failed while the disk was writing it.
    /// Follow it with [`FaultDisk::crash`].
    ///
    /// Returns how many bytes of that write were kept, or `None` if there is no write to tear (none since the last
    /// crash, the file is gone, or the write is no longer at the end of the
    /// file).
    pub fn tear_last_write(&self) -> Option<u64> {
        let mut state = lock(&self.inner);
        let last = state.last_write.take()?;
        if last.len == 0 {
            return None;
        }
        let kept = state.rng.gen_range(0..last.len);
        let inode = state.inodes.get_mut(&last.inode)?;
        if inode.live.len() as u64 != last.offset + last.len {
            return None;
        }
        let cut = usize::try_from(last.offset + kept).ok()?;
        // Only unsynced bytes may be torn: the cut must not reach below what
        // is already durable and agrees with the live contents.
        let common = inode
            .live
            .iter()
            .zip(inode.durable.iter())
            .take_while(|(a, b)| a == b)
            .count();
        if cut < common {
            return None;
        }
        inode.live.truncate(cut);
        inode.durable = inode.live.clone();
        Some(kept)
    }

    /// Flips one bit of the file at `path`, in both the live and the durable
    /// contents. `bit` is a bit offset into the file; `None` picks one at
    /// random. Returns the bit offset flipped.
    pub fn flip_bit(&self, path: &Path, bit: Option<u64>) -> io::Result<u64> {
        let mut state = lock(&self.inner);
        let id = state.inode(path)?;
        let len = state.inodes[&id].live.len() as u64;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty file"));
        }
        let bit = match bit {
            Some(bit) => bit,
            None => state.rng.gen_range(0..len * 8),
        };
        if bit >= len * 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bit beyond end of file",
            ));
        }
        let inode = state.inodes.get_mut(&id).expect("inode exists");
        let byte = (bit / 8) as usize;
        let mask = 1u8 << (bit % 8);
        inode.live[byte] ^= mask;
        if byte < inode.durable.len() {
            inode.durable[byte] ^= mask;
        }
        Ok(bit)
    }

    /// The next `write_at`, `append` or `set_len` fails with an I/O error and
    /// changes nothing.
    pub fn fail_next_write(&self) {
        lock(&self.inner).fail_next_write = true;
    }

    /// The next `sync_data` or `sync_dir` fails with an I/O error and makes
    /// nothing durable.
    pub fn fail_next_sync(&self) {
        lock(&self.inner).fail_next_sync = true;
    }

    /// Limits the bytes all live files may hold together (`None`: no
    /// limit). Lowering it below what they hold already only makes every
    /// write that grows a file fail; raising it is space returning.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        lock(&self.inner).capacity = capacity;
    }

    /// Bytes the live files hold together.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.inner).used_bytes()
    }

    /// The next `sync_data` or `sync_dir` fails with `ENOSPC` and makes
    /// nothing durable.
    pub fn fail_next_sync_disk_full(&self) {
        let mut state = lock(&self.inner);
        state.fail_next_sync = true;
        state.sync_failure_disk_full = true;
    }

    /// The durable contents of a file, or `None` if its name is not durable.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = lock(&self.inner);
        let id = state.durable_names.get(path)?;
        Some(state.inodes[id].durable.clone())
    }

    /// Whether every file and directory entry is durable (nothing a crash
    /// could lose).
    pub fn is_fully_synced(&self) -> bool {
        let state = lock(&self.inner);
        state.live_names == state.durable_names
            && state
                .inodes
                .values()
                .all(|inode| inode.live == inode.durable)
    }
}

impl Disk for FaultDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        add_dirs(&mut lock(&self.inner).dirs, dir);
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        state.check_parent(path)?;
        let id = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(id, Inode::default());
        state.live_names.insert(path.to_path_buf(), id);
        state.collect_garbage();
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = lock(&self.inner);
        Ok(state.live_names.contains_key(path) || state.dirs.contains(path))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let state = lock(&self.inner);
        let id = state.inode(path)?;
        Ok(read_from(&state.inodes[&id].live, offset, buf))
    }

    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.inner);
        let id = state.inode(path)?;
        if std::mem::take(&mut state.fail_next_write) {
            return Err(injected("write"));
        }
        let room = state.room();
        let inode = state.inodes.get_mut(&id).expect("inode exists");
        let len = inode.live.len() as u64;
        let end = offset + data.len() as u64;
        if let Some(room) = room.filter(|room| end > len && end - len > *room) {
            // Write what fits (a torn tail), then report the disk full.
            let fits = (len + room).saturating_sub(offset).min(data.len() as u64) as usize;
            if fits > 0 {
                write_into(&mut inode.live, offset, &data[..fits])?;
                state.last_write = Some(LastWrite {
                    inode: id,
                    offset,
                    len: fits as u64,
                });
            }
            return Err(disk_full());
        }
        write_into(&mut inode.live, offset, data)?;
        state.last_write = Some(LastWrite {
            inode: id,
            offset,
            len: data.len() as u64,
        });
        Ok(())
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = lock(&self.inner);
        state.inode(path)?;
        if std::mem::take(&mut state.fail_next_write) {
            return Err(injected("set_len"));
        }
        let room = state.room();
        let current = state.inode_mut(path)?.live.len() as u64;
        if room.is_some_and(|room| len > current && len - current > room) {
            return Err(disk_full());
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        state.inode_mut(path)?.live.resize(len, 0);
        Ok(())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = lock(&self.inner);
        let id = state.inode(path)?;
        Ok(state.inodes[&id].live.len() as u64)
    }

    fn sync_data(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        state.inode(path)?;
        if std::mem::take(&mut state.fail_next_sync) {
            if std::mem::take(&mut state.sync_failure_disk_full) {
                return Err(disk_full());
            }
            return Err(injected("sync_data"));
        }
        let inode = state.inode_mut(path)?;
        inode.durable = inode.live.clone();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        if std::mem::take(&mut state.fail_next_sync) {
            if std::mem::take(&mut state.sync_failure_disk_full) {
                return Err(disk_full());
            }
            return Err(injected("sync_dir"));
        }
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.durable_names.retain(|path, _| !in_dir(path));
        let live: Vec<(PathBuf, InodeId)> = state
            .live_names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        state.durable_names.extend(live);
        state.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        state.check_parent(to)?;
        let id = state
            .live_names
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        state.live_names.insert(to.to_path_buf(), id);
        state.collect_garbage();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.inner);
        state
            .live_names
            .remove(path)
            .ok_or_else(|| not_found(path))?;
        state.collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.inner);
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(list_children(
            dir,
            state.live_names.keys(),
            state.dirs.iter(),
        ))
    }
}

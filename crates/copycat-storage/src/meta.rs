//! The meta store: the server's identity (cluster id and server id), current
//! term, vote and latest configuration, in one small file replaced
//! atomically.
//!
//! File `meta`: `magic "CCATMETA" (8) | version u32 | payload_len u32 |
//! payload (postcard of [`Meta`]) | crc32c u32` (the CRC covers everything
//! before it), all integers little-endian. A save writes `meta.tmp`, syncs
//! it, renames it over `meta` and syncs the directory: after a crash `meta`
//! is either the old or the new version, never a mixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use copycat_raft::{Configuration, HardState};
use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::error::{io_error, Result, StorageError};
use crate::log::Durability;

/// Magic bytes at the start of the meta file.
pub const META_MAGIC: [u8; 8] = *b"CCATMETA";
/// The meta format version this build writes and reads.
pub const META_VERSION: u32 = 2;
/// Largest meta payload accepted (a configuration of many thousand members
/// fits easily).
pub const META_PAYLOAD_MAX_BYTES: u32 = 1 << 20;

pub(crate) const META_FILE: &str = "meta";
const META_TEMP_FILE: &str = "meta.tmp";
const META_FIXED_BYTES: u64 = 8 + 4 + 4 + 4;

/// Whose data a directory holds: written once when the directory is
/// bootstrapped (or joins a cluster) and never changed, so that a server
/// started on another server's data, or a server of another cluster, is
/// refused instead of corrupting both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's id, chosen when the cluster was bootstrapped.
    pub cluster: u64,
    /// This server's id in that cluster.
    pub server: u64,
}

/// What the meta file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Whose data this is.
    pub identity: Identity,
    /// Current term and vote.
    pub hard_state: HardState,
    /// The latest configuration this server knows of.
    pub config: Configuration,
}

/// Reads and atomically replaces the meta file.
#[derive(Debug)]
pub struct MetaStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    durability: Durability,
    current: Meta,
    exists: bool,
}

fn encode(meta: &Meta) -> Vec<u8> {
    let payload = postcard::to_allocvec(meta).expect("encoding Meta into a Vec cannot fail");
    let mut bytes = Vec::with_capacity(payload.len() + META_FIXED_BYTES as usize);
    bytes.extend_from_slice(&META_MAGIC);
    bytes.extend_from_slice(&META_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(path: &Path, disk: &dyn Disk) -> Result<Meta> {
    let file_len = disk.file_len(path).map_err(io_error("stat", path))?;
    if file_len < 16 {
        return Err(StorageError::TruncatedHeader {
            path: path.to_path_buf(),
            found: file_len,
            needed: 16,
        });
    }
    let mut header = [0u8; 16];
    disk.read_exact_at(path, 0, &mut header)
        .map_err(io_error("read", path))?;
    if header[0..8] != META_MAGIC {
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
            expected: "meta",
            found: header[0..8].to_vec(),
        });
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != META_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: META_VERSION,
        });
    }
    let payload_len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if payload_len > META_PAYLOAD_MAX_BYTES {
        return Err(corrupt(
            12,
            format!("payload length {payload_len} exceeds the maximum"),
        ));
    }
    let total = META_FIXED_BYTES + u64::from(payload_len);
    if file_len != total {
        return Err(corrupt(
            12,
            format!("file is {file_len} bytes, header says {total}"),
        ));
    }
    let mut bytes = vec![0u8; total as usize];
    disk.read_exact_at(path, 0, &mut bytes)
        .map_err(io_error("read", path))?;
    let body_end = bytes.len() - 4;
    let crc = u32::from_le_bytes(bytes[body_end..].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&bytes[..body_end]) {
        return Err(corrupt(body_end as u64, "checksum mismatch".into()));
    }
    postcard::from_bytes(&bytes[16..body_end])
        .map_err(|error| corrupt(16, format!("undecodable meta: {error}")))
}

impl MetaStore {
    /// Opens the meta store in `dir`: loads `meta` if present (defaults
    /// otherwise) and removes a leftover `meta.tmp` from an interrupted save.
    /// Returns the store and the temp files removed.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        durability: Durability,
    ) -> Result<(Self, Vec<PathBuf>)> {
        disk.create_dir_all(dir)
            .map_err(io_error("create directory", dir))?;
        let mut removed = Vec::new();
        let temp = dir.join(META_TEMP_FILE);
        if disk.exists(&temp).map_err(io_error("stat", &temp))? {
            // An interrupted save: the rename never happened, so `meta` (if
            // any) is the last completed save.
            disk.remove(&temp).map_err(io_error("remove", &temp))?;
            removed.push(temp);
        }
        let path = dir.join(META_FILE);
        let exists = disk.exists(&path).map_err(io_error("stat", &path))?;
        let current = if exists {
            decode(&path, disk.as_ref())?
        } else {
            Meta::default()
        };
        Ok((
            Self {
                disk,
                dir: dir.to_path_buf(),
                durability,
                current,
                exists,
            },
            removed,
        ))
    }

    /// The current meta (defaults if never saved).
    pub fn get(&self) -> &Meta {
        &self.current
    }

    /// Whether a meta file exists.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Durably replaces the meta. On error the caller must treat the node as
    /// failed: the file on disk is the old or the new version, unknown which.
    /// The exception is [`StorageError::DiskFull`](crate::StorageError::DiskFull)
    /// before the rename: the old version stays, the temp file is removed,
    /// [`get`](Self::get) still returns the old meta, and the save can be
    /// retried (so a vote is never reported saved when it is not).
    pub fn save(&mut self, meta: Meta) -> Result<()> {
        let temp = self.dir.join(META_TEMP_FILE);
        let path = self.dir.join(META_FILE);
        let bytes = encode(&meta);
        let written = self.write_temp(&temp, &bytes);
        if let Err(error) = written {
            if error.is_disk_full() {
                // Free what the temp file took; a leftover one is removed
                // by the next open anyway.
                let _ = self.disk.remove(&temp);
            }
            return Err(error);
        }
        self.disk
            .rename(&temp, &path)
            .map_err(io_error("rename", &temp))?;
        #[allow(unused_mut)]
        let mut sync_dir = self.durability == Durability::Fsync;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::MetaSkipsDirectorySync) {
            sync_dir = false;
        }
        if sync_dir {
            self.disk
                .sync_dir(&self.dir)
                .map_err(io_error("sync directory", &self.dir))?;
        }
        self.current = meta;
        self.exists = true;
        Ok(())
    }

    fn write_temp(&self, temp: &Path, bytes: &[u8]) -> Result<()> {
        self.disk.create(temp).map_err(io_error("create", temp))?;
        self.disk
            .write_at(temp, 0, bytes)
            .map_err(io_error("write", temp))?;
        if self.durability == Durability::Fsync {
            self.disk.sync_data(temp).map_err(io_error("sync", temp))?;
        }
        Ok(())
    }

    /// Saves a new term and vote, keeping the configuration.
    pub fn save_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        let meta = Meta {
            identity: self.current.identity,
            hard_state,
            config: self.current.config.clone(),
        };
        self.save(meta)
    }

    /// Saves a new configuration, keeping the term and vote.
    pub fn save_config(&mut self, config: Configuration) -> Result<()> {
        let meta = Meta {
            identity: self.current.identity,
            hard_state: self.current.hard_state,
            config,
        };
        self.save(meta)
    }
}

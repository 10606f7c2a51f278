//! The data directory lock: one process per data directory. Two servers
//! writing the same log would corrupt it, so a server holds an exclusive
//! lock on `LOCK` in its data directory for as long as it runs, and writes
//! its process id into the file so that a second one can say who holds it.
//! The operating system releases the lock when the process ends, however
//! it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::server::StartError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held data directory lock; released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Create `dir` if needed and lock it, or say who holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StartError> {
        let path = dir.join(LOCK_FILE);
        let io_error = |path: PathBuf, source: std::io::Error| StartError::DataDir {
            path,
            source: source.into(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir.to_path_buf(), e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(path.clone(), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StartError::Locked {
                    path: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "another process".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(error)) => return Err(io_error(path, error)),
        }
        let record = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .map_err(|e| io_error(path.clone(), e))?;
        Ok(Self { _file: file })
    }
}

//! The storage error type.

use std::io;
use std::path::PathBuf;

use copycat_raft::LogIndex;

/// Everything that can go wrong in the storage layer.
///
/// Expected conditions (a missing entry, a compacted index) and damaged files
/// are typed variants that name the file and, where it matters, the byte
/// offset. A failed write or sync poisons the store that saw it: see
/// [`StorageError::Poisoned`]. The exception is a full disk
/// ([`StorageError::DiskFull`]): the store undoes what it did not finish
/// and stays usable, so the caller can retry once space returns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk reported an error.
    #[error("I/O error during {operation} on {path}")]
    Io {
        /// What the store was doing.
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk is full, or the quota is used up (`ENOSPC`, `EDQUOT`). The
    /// store that saw it is not poisoned: it is back at its last durable
    /// state (the log has cut any partial record and forgotten every entry
    /// not yet synced; a meta or snapshot file was not replaced), so the
    /// operation can be retried from there once space returns.
    #[error("disk full during {operation} on {path}")]
    DiskFull {
        /// What the store was doing.
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or sync failed, so the store no longer knows what is on
    /// disk. After a failed fsync the kernel may have dropped the dirty pages,
    /// so retrying could report durable data that is not: the only safe
    /// answer is to stop and recover by reopening.
    #[error("storage is poisoned by an earlier I/O failure: {reason}")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
    /// A file header does not start with the expected magic bytes.
    #[error("{path}: bad magic {found:02x?}, not a {expected} file")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What kind of file was expected.
        expected: &'static str,
        /// The bytes found.
        found: Vec<u8>,
    },
    /// A file carries a format version this build does not understand.
    #[error("{path}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// A file is shorter than its fixed header.
    #[error("{path}: truncated header ({found} bytes, need {needed})")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        found: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// Data that was already durable fails its checksum or does not parse.
    /// This is never repaired silently: acknowledged data may be lost.
    #[error("{path}: corruption at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged record or field.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file in a directory the store owns has a name it does not recognise.
    #[error("unexpected file {path} in a storage directory")]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
    },
    /// The segments on disk do not form one contiguous log.
    #[error("log segments are not contiguous: {path} starts at {found:?}, expected {expected:?}")]
    SegmentGap {
        /// The segment that does not fit.
        path: PathBuf,
        /// Its first index.
        found: LogIndex,
        /// The index that should have come next.
        expected: LogIndex,
    },
    /// A record or entry is larger than the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The size.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// An index outside the log was requested.
    #[error("index {index:?} is outside the log [{first:?}, {last:?}]")]
    OutOfRange {
        /// The requested index.
        index: LogIndex,
        /// First index the log holds.
        first: LogIndex,
        /// Last index the log holds.
        last: LogIndex,
    },
    /// Appended entries do not continue the log.
    #[error("entry {found:?} does not continue the log (expected index {expected:?})")]
    NotContiguous {
        /// The index that should come next.
        expected: LogIndex,
        /// The index given.
        found: LogIndex,
    },
    /// The meta, snapshot and log disagree in a way no crash can cause.
    #[error("inconsistent storage in {path}: {reason}")]
    Inconsistent {
        /// The data directory.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// `bootstrap` found existing state.
    #[error("{path} already holds Copycat state")]
    AlreadyBootstrapped {
        /// The data directory.
        path: PathBuf,
    },
    /// A snapshot operation was used wrongly (e.g. reading past the end).
    #[error("snapshot error: {0}")]
    Snapshot(String),
    /// The group-commit writer thread failed or stopped.
    #[error("group commit failed: {0}")]
    GroupCommit(String),
}

impl StorageError {
    /// Whether this is [`StorageError::DiskFull`]: retrying may succeed once
    /// space returns.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn is_disk_full_io(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Shorthand for results in this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Wraps an [`io::Error`] with the operation and path.
pub(crate) fn io_error<'a>(
    operation: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| {
        if is_disk_full_io(&source) {
            StorageError::DiskFull {
                operation,
                path: path.to_path_buf(),
                source,
            }
        } else {
            StorageError::Io {
                operation,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

//! The segmented log: [`LogStore`].
//!
//! Entries live in segment files named `<first index, 20 digits>.log`. Each
//! starts with a 32-byte header (magic, format version, first index, CRC) and
//! holds records `[len u32][crc32c u32][payload]`, the payload being the
//! postcard encoding of a [`copycat_raft::Entry`]. `docs/storage-format.md`
//! describes the bytes and the crash analysis in full.
//!
//! Durability protocol, in short:
//! - Appends go to a write buffer; [`LogStore::sync`] writes it, then
//!   fdatasyncs every segment written since the last sync, then syncs the
//!   directory if a segment was created. One sync covers every append since
//!   the previous one (group commit).
//! - Rolling to a new segment first fdatasyncs the full one, so every segment
//!   but the last is completely durable: damage there is corruption, never a
//!   torn write.
//! - Removing segments (truncate, purge, reset) syncs the directory after
//!   each removal, in an order that keeps the surviving segments contiguous.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use copycat_raft::{Entry, LogIndex, Term};

use crate::disk::Disk;
use crate::error::{io_error, Result, StorageError};
use crate::log_writes::{WriteOp, WriteQueue};
use crate::removal::{remove_if_present, StoreRemovals};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CCATLOG\0";
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// Size of a record header (`len` and `crc32c`) in bytes.
pub const RECORD_HEADER_BYTES: u64 = 8;

const SEGMENT_SUFFIX: &str = ".log";
/// Length field of a sync marker: the high bit (never set for an entry,
/// whose length is bounded by `record_size_max_bytes`) and 8 payload bytes.
const MARKER_LEN: u32 = 0x8000_0008;
/// Bytes of a sync marker: header and the marker's own offset.
const MARKER_BYTES: u64 = RECORD_HEADER_BYTES + 8;
/// Length field of a sync marker that names the end of the durable bytes
/// as well (written when a sync that ran beside further appends ends:
/// the bytes between that end and the marker were not covered).
const MARKER_AT_LEN: u32 = 0x8000_0010;
/// Bytes of such a marker: header, its own offset, the durable end.
const MARKER_AT_BYTES: u64 = RECORD_HEADER_BYTES + 16;
/// Bytes read per call when recovery scans a segment.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// How hard the log tries to make data durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `sync` calls fdatasync (and syncs the directory when needed). The
    /// default, and the only mode in which "durable" means anything.
    #[default]
    Fsync,
    /// Never syncs. Data survives a process crash but not a power loss. For
    /// tests and benchmarks only; opening a store in this mode logs a warning.
    None,
}

/// Options of the log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A segment is rolled when appending would make it larger than this
    /// (a segment always takes at least one record). Default 64 MiB.
    pub segment_size_max_bytes: u64,
    /// Largest encoded entry accepted on append and on recovery. Default
    /// 16 MiB. Recovery never allocates more than this for one record.
    pub record_size_max_bytes: u32,
    /// Appends are written to the segment once this many bytes are buffered
    /// (and always on sync). Default 1 MiB.
    pub write_buffer_max_bytes: usize,
    /// Whether syncs reach the disk.
    pub durability: Durability,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_size_max_bytes: 64 << 20,
            record_size_max_bytes: 16 << 20,
            write_buffer_max_bytes: 1 << 20,
            durability: Durability::Fsync,
        }
    }
}

impl LogOptions {
    /// Rejects inconsistent settings.
    pub fn validate(&self) -> Result<()> {
        if self.segment_size_max_bytes < SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 1 {
            return Err(StorageError::InvalidOptions(format!(
                "segment_size_max_bytes {} is too small",
                self.segment_size_max_bytes
            )));
        }
        if self.record_size_max_bytes == 0 {
            return Err(StorageError::InvalidOptions(
                "record_size_max_bytes must be positive".into(),
            ));
        }
        if self.write_buffer_max_bytes == 0 {
            return Err(StorageError::InvalidOptions(
                "write_buffer_max_bytes must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Something recovery threw away, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discarded {
    /// The file.
    pub path: PathBuf,
    /// Offset at which the discarded bytes began (0 for a whole file).
    pub offset: u64,
    /// How many bytes were discarded.
    pub bytes: u64,
    /// Why.
    pub reason: String,
}

/// What opening the log found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRecovery {
    /// Unsynced tails and torn files that were truncated or removed.
    pub discarded: Vec<Discarded>,
    /// Number of segments found.
    pub segments: usize,
    /// Number of entries recovered.
    pub entries: u64,
}

/// A segment file.
#[derive(Debug)]
struct Segment {
    first_index: LogIndex,
    path: PathBuf,
    /// Bytes written to the file (the write buffer comes after).
    written_bytes: u64,
    /// Whether the file has writes not yet covered by a sync.
    dirty: bool,
    /// A sync marker was written after the last sync and is not durable.
    marker_unsynced: bool,
    /// `slots[i]` describes entry `first_index + i`. Kept per segment, so
    /// that recovery hands each segment's scan over without copying it and
    /// purging a segment drops its slots with it.
    slots: Vec<Slot>,
}

/// Where an entry lives, in the segment whose `slots` hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    term: Term,
    offset: u64,
    /// Record length including its header.
    len: u32,
}

/// A segmented, checksummed log of Raft entries.
///
/// Invariants (checked by [`LogStore::invariants`]):
/// - `segments` is never empty; `segments[0].first_index == first_index`.
/// - Segment `k` holds the entries `[segments[k].first_index,
///   segments[k + 1].first_index)`; every segment but the last holds at
///   least one entry and is fully synced (in [`Durability::Fsync`] mode).
/// - `segments[k].slots[i]` describes entry `segments[k].first_index + i`.
/// - `durable_index <= last_index()`.
pub struct LogStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    options: LogOptions,
    segments: Vec<Segment>,
    first_index: LogIndex,
    /// Encoded records appended after `segments.last().written_bytes`.
    buffer: Vec<u8>,
    /// A segment was created and the directory not yet synced.
    dir_dirty: bool,
    durable_index: LogIndex,
    poisoned: Option<String>,
    /// Writes to segment files so far (appends flushed, truncations, new
    /// segments): a sync that ran elsewhere covers the files only as they
    /// were when it began.
    writes: u64,
    /// Segment files created or removed so far.
    dir_changes: u64,
    /// Syncs begun with [`LogStore::begin_sync`] so far.
    sync_generation: u64,
    /// The latest sync begun with [`LogStore::begin_sync`] and not finished.
    in_flight: Option<InFlight>,
    /// Purged segments are left for [`LogStore::take_removals`] instead of
    /// being removed in place.
    defer_removals: bool,
    /// Purged segments not taken yet, oldest first, and the first segment
    /// that survived the latest purge.
    removals: Vec<PathBuf>,
    removal_first: Option<PathBuf>,
    /// Purged segments handed out whose removal is not known to be done:
    /// a reset removes them first, so that no crash leaves them before a
    /// gap. Numbered by the batch they were handed out in.
    unconfirmed: Vec<(u64, PathBuf)>,
    removal_batches: u64,
    /// Batches whose removal finished (reported by their removals).
    removals_done: Arc<std::sync::Mutex<Vec<u64>>>,
    /// With writes deferred ([`LogStore::defer_writes`]): the queue the
    /// syncs run, the next operation's number, and every queued operation
    /// not known to have run, in order (reads of its bytes come from here).
    queue: Option<Arc<WriteQueue>>,
    next_op: u64,
    unwritten: VecDeque<Unwritten>,
}

/// A queued operation not known to have run, as the store remembers it.
#[derive(Debug)]
struct Unwritten {
    seq: u64,
    path: PathBuf,
    /// Where its bytes go, and the bytes (none for a sync). Only the queue
    /// holds them: the thread that runs the write frees them (a large
    /// buffer's free can wait milliseconds for the kernel), and once they
    /// are gone the write has run.
    offset: u64,
    bytes: Option<Weak<Vec<u8>>>,
}

/// A sync of the log that runs away from the store (on another thread):
/// begun by [`LogStore::begin_sync`], carried out by [`LogSync::run`],
/// finished by [`LogStore::finish_sync`]. The store takes appends and
/// truncations meanwhile; the sync makes durable what was written when it
/// began, and no more is claimed.
#[derive(Debug)]
pub struct LogSync {
    disk: Arc<dyn Disk>,
    /// Segment files to sync (none when the log does not fsync).
    files: Vec<PathBuf>,
    /// The directory, when a segment was created or removed.
    dir: Option<PathBuf>,
    generation: u64,
    writes: u64,
    dir_changes: u64,
    through: LogIndex,
    /// With writes deferred: the queue, and the operations it runs first
    /// (those numbered below this), whether or not any are left to run.
    queue: Option<(Arc<WriteQueue>, u64)>,
    ops: bool,
}

impl LogSync {
    /// The last index this sync makes durable.
    pub fn through(&self) -> LogIndex {
        self.through
    }

    /// Whether it has nothing to ask of the disk (nothing was written, or
    /// the log does not fsync): it may as well be finished at once.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none() && !self.ops
    }

    /// Run the writes queued before it began (with writes deferred), then
    /// sync the files (this is the part that waits for the disk). A segment
    /// removed since the sync began needs no sync.
    pub fn run(self) -> LogSynced {
        let mut result = match &self.queue {
            Some((queue, upto)) => queue.run(self.disk.as_ref(), Some(*upto)),
            None => Ok(()),
        };
        for path in self.files.iter().filter(|_| result.is_ok()) {
            match self.disk.sync_data(path) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    result = Err(io_error("sync", path)(error));
                    break;
                }
                Ok(()) => {}
            }
        }
        if result.is_ok() {
            if let Some(dir) = &self.dir {
                result = self
                    .disk
                    .sync_dir(dir)
                    .map_err(io_error("sync directory", dir));
            }
        }
        LogSynced {
            generation: self.generation,
            writes: self.writes,
            dir_changes: self.dir_changes,
            through: self.through,
            files: self.files,
            result,
        }
    }
}

/// What a [`LogSync`] did, for [`LogStore::finish_sync`].
#[derive(Debug)]
pub struct LogSynced {
    /// Syncs are numbered from 1: 0 is a job that only wrote
    /// ([`LogStore::begin_writes`]).
    generation: u64,
    writes: u64,
    dir_changes: u64,
    through: LogIndex,
    /// The files it synced.
    files: Vec<PathBuf>,
    result: Result<()>,
}

impl LogSynced {
    /// Whether it only ran queued writes ([`LogStore::begin_writes`]) and
    /// makes nothing durable.
    pub fn is_writes_only(&self) -> bool {
        self.generation == 0
    }
}

/// The sync in flight, as the store tracks it.
#[derive(Debug)]
struct InFlight {
    generation: u64,
    /// The last index when it began, lowered by every truncation since.
    floor: LogIndex,
    /// The active segment when it began and its length then.
    segment: LogIndex,
    end: u64,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index)
            .field("last_index", &self.last_index())
            .field("durable_index", &self.durable_index)
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn segment_name(first_index: LogIndex) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first_index.get())
}

fn parse_segment_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(LogIndex)
}

/// Encodes a segment header.
pub(crate) fn encode_segment_header(first_index: LogIndex) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    // Bytes 12..16 are flags, reserved and zero.
    header[16..24].copy_from_slice(&first_index.get().to_le_bytes());
    // Bytes 24..28 are reserved and zero.
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes a segment header, checking magic, version and CRC.
fn decode_segment_header(path: &Path, header: &[u8]) -> Result<LogIndex> {
    if header.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(StorageError::TruncatedHeader {
            path: path.to_path_buf(),
            found: header.len() as u64,
            needed: SEGMENT_HEADER_BYTES,
        });
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
            expected: "log segment",
            found: header[0..8].to_vec(),
        });
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    let crc = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&header[0..28]) {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "segment header checksum mismatch".into(),
        });
    }
    Ok(LogIndex(u64::from_le_bytes(
        header[16..24].try_into().expect("8 bytes"),
    )))
}

/// The CRC of a record: over the little-endian length, then the payload.
fn record_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload)
}

/// Reads a file front to back through one buffer that the caller owns and
/// reuses across segments: each refill is one large read of up to
/// `SCAN_CHUNK_BYTES` (more only for a record larger than that, whose size
/// is checked before this is asked for it), and records are checked in place
/// in the buffer, without copying them out.
struct WindowReader<'a> {
    disk: &'a dyn Disk,
    path: &'a Path,
    file_len: u64,
    /// File offset of `window[0]`.
    window_start: u64,
    /// How many bytes of `window` hold file data.
    filled: usize,
    window: &'a mut Vec<u8>,
    /// Bytes to read per refill (`SCAN_CHUNK_BYTES`; small in tests).
    chunk: usize,
}

impl<'a> WindowReader<'a> {
    fn new(
        disk: &'a dyn Disk,
        path: &'a Path,
        file_len: u64,
        window: &'a mut Vec<u8>,
        chunk: usize,
    ) -> Self {
        Self {
            disk,
            path,
            file_len,
            window_start: 0,
            filled: 0,
            window,
            chunk,
        }
    }

    /// The bytes already in the window from `offset` on (empty if `offset`
    /// is outside it).
    fn buffered_from(&self, offset: u64) -> &[u8] {
        let window_end = self.window_start + self.filled as u64;
        if offset < self.window_start || offset >= window_end {
            return &[];
        }
        &self.window[(offset - self.window_start) as usize..self.filled]
    }

    /// The bytes `[offset, offset + len)`, or `None` if the file ends first.
    fn get(&mut self, offset: u64, len: usize) -> Result<Option<&[u8]>> {
        let end = offset + len as u64;
        if end > self.file_len {
            return Ok(None);
        }
        let window_end = self.window_start + self.filled as u64;
        if offset < self.window_start || end > window_end {
            // Keep the bytes already read from `offset` on (the start of a
            // record that straddles the end of the window), then read the
            // rest with one large read.
            let kept = if offset >= self.window_start && offset < window_end {
                let from = (offset - self.window_start) as usize;
                self.window.copy_within(from..self.filled, 0);
                self.filled - from
            } else {
                0
            };
            let want = (len.max(self.chunk) as u64).min(self.file_len - offset) as usize;
            if self.window.len() < want {
                self.window.resize(want, 0);
            }
            self.disk
                .read_exact_at(
                    self.path,
                    offset + kept as u64,
                    &mut self.window[kept..want],
                )
                .map_err(io_error("read", self.path))?;
            self.window_start = offset;
            self.filled = want;
        }
        let start = (offset - self.window_start) as usize;
        Ok(Some(&self.window[start..start + len]))
    }
}

/// Why a scan stopped before the end of a segment.
#[derive(Debug, PartialEq, Eq)]
struct ScanStop {
    offset: u64,
    reason: String,
    /// A valid sync marker follows the bad record: the damaged bytes were
    /// synced before the marker was written, so this is corruption of
    /// durable data, not a torn write.
    before_marker: bool,
}

/// What a valid record at some offset is.
enum Record {
    Entry(Slot),
    /// A sync marker of this many bytes: everything before the durable end
    /// it names was durable when it was written.
    Marker(u64),
}

/// The bytes of the sync marker written at `offset`.
fn marker_record(offset: u64) -> [u8; MARKER_BYTES as usize] {
    let len_bytes = MARKER_LEN.to_le_bytes();
    let payload = offset.to_le_bytes();
    let crc = record_crc(len_bytes, &payload);
    let mut record = [0u8; MARKER_BYTES as usize];
    record[0..4].copy_from_slice(&len_bytes);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record[8..16].copy_from_slice(&payload);
    record
}

/// The bytes of the sync marker written at `offset` after a sync that made
/// the file durable up to `durable` (`durable < offset`).
fn marker_at_record(offset: u64, durable: u64) -> [u8; MARKER_AT_BYTES as usize] {
    let len_bytes = MARKER_AT_LEN.to_le_bytes();
    let mut payload = [0u8; 16];
    payload[0..8].copy_from_slice(&offset.to_le_bytes());
    payload[8..16].copy_from_slice(&durable.to_le_bytes());
    let crc = record_crc(len_bytes, &payload);
    let mut record = [0u8; MARKER_AT_BYTES as usize];
    record[0..4].copy_from_slice(&len_bytes);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record[8..24].copy_from_slice(&payload);
    record
}

/// The durable end named by a valid sync marker of either kind at
/// `offset`, if one starts there. A marker names its own offset, so
/// garbage does not pass for one.
fn marker_durable_end(reader: &mut WindowReader<'_>, offset: u64) -> Result<Option<u64>> {
    let Some(header) = reader.get(offset, 4)? else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    if len == MARKER_LEN {
        if let Some(bytes) = reader.get(offset, MARKER_BYTES as usize)? {
            if bytes == marker_record(offset) {
                return Ok(Some(offset));
            }
        }
    } else if len == MARKER_AT_LEN {
        if let Some(bytes) = reader.get(offset, MARKER_AT_BYTES as usize)? {
            let durable = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
            if durable < offset && bytes == marker_at_record(offset, durable) {
                return Ok(Some(durable));
            }
        }
    }
    Ok(None)
}

/// Whether a valid sync marker after `damaged` (anywhere in
/// `(damaged, file_len)`) says that the byte at `damaged` was durable.
fn marker_after(reader: &mut WindowReader<'_>, damaged: u64, file_len: u64) -> Result<bool> {
    let mut position = damaged + 1;
    while position + MARKER_BYTES <= file_len {
        if let Some(durable) = marker_durable_end(reader, position)? {
            if durable > damaged {
                return Ok(true);
            }
        }
        position += 1;
    }
    Ok(false)
}

#[derive(Debug, PartialEq, Eq)]
struct ScanResult {
    slots: Vec<Slot>,
    end_offset: u64,
    stop: Option<ScanStop>,
}

/// Reads a postcard varint `u64` at `*position`, accepting exactly what
/// postcard accepts (at most 10 bytes, the 10th at most 1); `None` where
/// postcard would fail.
fn take_varint_u64(bytes: &[u8], position: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *bytes.get(*position)?;
        *position += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return (shift < 9 || byte <= 1).then_some(value);
        }
    }
    None
}

/// The leading term and index of an encoded entry. Decoding only these
/// keeps recovery close to the cost of reading the file; the full entry is
/// decoded when read. A hand-written varint reader does the common case;
/// postcard itself decides (and words the error) otherwise.
fn decode_term_index(payload: &[u8]) -> std::result::Result<(Term, LogIndex), String> {
    let mut position = 0;
    if let Some(term) = take_varint_u64(payload, &mut position) {
        if let Some(index) = take_varint_u64(payload, &mut position) {
            return Ok((Term(term), LogIndex(index)));
        }
    }
    match postcard::take_from_bytes::<(Term, LogIndex)>(payload) {
        Ok(((term, index), _)) => Ok((term, index)),
        Err(error) => Err(format!("undecodable entry: {error}")),
    }
}

/// Checks an entry record whose bytes are all at hand: the CRC over the
/// length and payload, and that it decodes to the expected index. Returns
/// the entry's term.
fn check_entry(
    len_bytes: [u8; 4],
    crc: u32,
    payload: &[u8],
    expected_index: LogIndex,
) -> std::result::Result<Term, String> {
    if record_crc(len_bytes, payload) != crc {
        return Err("record checksum mismatch".into());
    }
    let (term, index) = decode_term_index(payload)?;
    if index != expected_index {
        return Err(format!(
            "entry index {index:?} where {expected_index:?} was expected"
        ));
    }
    Ok(term)
}

/// The fast path of a scan: checks, in place, the entry records that lie
/// whole in `bytes` (the window from `offset` on), appending their slots.
/// Stops, without consuming it, at the first record that is not a valid
/// entry or not whole in `bytes` (a sync marker, damage, the window's end);
/// [`check_record`] then deals with that record. Returns where it stopped.
fn check_buffered_entries(
    bytes: &[u8],
    mut offset: u64,
    expected: &mut LogIndex,
    record_size_max: u32,
    slots: &mut Vec<Slot>,
) -> u64 {
    let mut rest = bytes;
    while let Some((header, after)) = rest.split_first_chunk::<{ RECORD_HEADER_BYTES as usize }>() {
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes(len_bytes);
        if len == 0 || len > record_size_max || len == MARKER_LEN || len == MARKER_AT_LEN {
            break;
        }
        let Some(payload) = after.get(..len as usize) else {
            break;
        };
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Ok(term) = check_entry(len_bytes, crc, payload, *expected) else {
            break;
        };
        let record_len = len + RECORD_HEADER_BYTES as u32;
        slots.push(Slot {
            term,
            offset,
            len: record_len,
        });
        offset += u64::from(record_len);
        *expected = expected.next();
        rest = &after[len as usize..];
    }
    offset
}

/// Checks one record at `offset`; returns its slot or why it is not valid.
fn check_record(
    reader: &mut WindowReader<'_>,
    offset: u64,
    expected_index: LogIndex,
    record_size_max: u32,
) -> Result<std::result::Result<Record, String>> {
    let Some(header) = reader.get(offset, RECORD_HEADER_BYTES as usize)? else {
        return Ok(Err("incomplete record header".into()));
    };
    let len_bytes: [u8; 4] = header[0..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == MARKER_LEN || len == MARKER_AT_LEN {
        let bytes = if len == MARKER_LEN {
            MARKER_BYTES
        } else {
            MARKER_AT_BYTES
        };
        if reader.get(offset, bytes as usize)?.is_none() {
            return Ok(Err("incomplete sync marker".into()));
        }
        return Ok(match marker_durable_end(reader, offset)? {
            Some(_) => Ok(Record::Marker(bytes)),
            None => Err("damaged sync marker".into()),
        });
    }
    if len == 0 {
        return Ok(Err("zero record length".into()));
    }
    if len > record_size_max {
        return Ok(Err(format!(
            "record length {len} exceeds the maximum {record_size_max}"
        )));
    }
    let Some(payload) = reader.get(offset + RECORD_HEADER_BYTES, len as usize)? else {
        return Ok(Err(format!(
            "record length {len} runs past the end of the file"
        )));
    };
    Ok(
        check_entry(len_bytes, crc, payload, expected_index).map(|term| {
            Record::Entry(Slot {
                term,
                offset,
                len: len + RECORD_HEADER_BYTES as u32,
            })
        }),
    )
}

/// Scans the segments whose header is valid and matches the file name, on
/// up to `available_parallelism` threads (the calling thread is one of
/// them): checksumming is most of the cost of recovery, and segments are
/// independent. Threads take the next unscanned segment as they finish one,
/// so a thread slowed down (by a core busy with something else, or by a
/// large segment) does not hold the others back. Each thread reads through
/// one buffer of its own. Segments with a bad header get `None` and are
/// handled (and reported) by the sequential pass.
fn scan_in_parallel(
    disk: &dyn Disk,
    segments: &[(LogIndex, PathBuf)],
    record_size_max: u32,
) -> Vec<Option<Result<ScanResult>>> {
    let scan_one = |(name_index, path): &(LogIndex, PathBuf),
                    window: &mut Vec<u8>|
     -> Option<Result<ScanResult>> {
        let file_len = disk.file_len(path).ok()?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let header = &mut header[..file_len.min(SEGMENT_HEADER_BYTES) as usize];
        disk.read_exact_at(path, 0, header).ok()?;
        match decode_segment_header(path, header) {
            Ok(first_index) if first_index == *name_index => Some(scan_segment(
                disk,
                path,
                file_len,
                first_index,
                record_size_max,
                window,
                SCAN_CHUNK_BYTES,
            )),
            _ => None,
        }
    };
    let next = AtomicUsize::new(0);
    let work = || {
        let mut window = Vec::new();
        let mut done = Vec::new();
        loop {
            let position = next.fetch_add(1, Ordering::Relaxed);
            let Some(segment) = segments.get(position) else {
                return done;
            };
            done.push((position, scan_one(segment, &mut window)));
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(segments.len())
        .max(1);
    let mut results: Vec<Option<Result<ScanResult>>> = segments.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut done = work();
        for helper in helpers {
            done.extend(helper.join().expect("scan thread panicked"));
        }
        for (position, result) in done {
            results[position] = result;
        }
    });
    results
}

fn scan_segment(
    disk: &dyn Disk,
    path: &Path,
    file_len: u64,
    first_index: LogIndex,
    record_size_max: u32,
    window: &mut Vec<u8>,
    chunk: usize,
) -> Result<ScanResult> {
    let mut reader = WindowReader::new(disk, path, file_len, window, chunk);
    let mut slots = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = first_index;
    while offset < file_len {
        offset = check_buffered_entries(
            reader.buffered_from(offset),
            offset,
            &mut expected,
            record_size_max,
            &mut slots,
        );
        if offset >= file_len {
            break;
        }
        // A sync marker, a record that straddles the end of the window
        // (this reads the next chunk), or a bad record.
        match check_record(&mut reader, offset, expected, record_size_max)? {
            Ok(Record::Entry(slot)) => {
                offset += u64::from(slot.len);
                slots.push(slot);
                expected = expected.next();
            }
            Ok(Record::Marker(bytes)) => offset += bytes,
            Err(reason) => {
                // A torn write damages only bytes that were never synced;
                // a sync marker further on proves the damaged bytes were
                // synced (markers are written after a sync completes), so
                // that is corruption of durable data. Valid-looking records
                // after the damage prove nothing: a disk may persist the
                // sectors of an unsynced write in any order.
                let before_marker = marker_after(&mut reader, offset, file_len)?;
                return Ok(ScanResult {
                    slots,
                    end_offset: offset,
                    stop: Some(ScanStop {
                        offset,
                        reason,
                        before_marker,
                    }),
                });
            }
        }
    }
    Ok(ScanResult {
        slots,
        end_offset: offset,
        stop: None,
    })
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering from a crash.
    ///
    /// Every segment but the last must be intact: damage there was synced
    /// data and is reported as [`StorageError::Corrupt`]. The last segment is
    /// scanned up to the first torn or invalid record and truncated there;
    /// the discarded bytes are listed in the returned [`LogRecovery`].
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: LogOptions,
    ) -> Result<(Self, LogRecovery)> {
        options.validate()?;
        if options.durability == Durability::None {
            tracing::warn!(
                dir = %dir.display(),
                "log opened with Durability::None: nothing is synced, a power loss loses data"
            );
        }
        disk.create_dir_all(dir)
            .map_err(io_error("create directory", dir))?;
        let mut recovery = LogRecovery::default();
        let mut found: Vec<(LogIndex, PathBuf)> = Vec::new();
        for name in disk
            .list_dir(dir)
            .map_err(io_error("list directory", dir))?
        {
            let path = dir.join(&name);
            match parse_segment_name(&name) {
                Some(first_index) => found.push((first_index, path)),
                None => return Err(StorageError::UnexpectedFile { path }),
            }
        }
        found.sort();
        recovery.segments = found.len();

        let mut store = Self {
            disk: Arc::clone(&disk),
            dir: dir.to_path_buf(),
            options,
            segments: Vec::new(),
            first_index: LogIndex(1),
            buffer: Vec::new(),
            dir_dirty: false,
            durable_index: LogIndex::ZERO,
            poisoned: None,
            writes: 0,
            dir_changes: 0,
            sync_generation: 0,
            in_flight: None,
            queue: None,
            next_op: 0,
            unwritten: VecDeque::new(),
            defer_removals: false,
            removals: Vec::new(),
            removal_first: None,
            unconfirmed: Vec::new(),
            removal_batches: 0,
            removals_done: Arc::default(),
        };

        let count = found.len();
        let mut scans =
            scan_in_parallel(disk.as_ref(), &found, store.options.record_size_max_bytes);
        for (position, (name_index, path)) in found.into_iter().enumerate() {
            let is_last = position + 1 == count;
            let file_len = disk.file_len(&path).map_err(io_error("stat", &path))?;
            let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_BYTES) as usize];
            disk.read_exact_at(&path, 0, &mut header)
                .map_err(io_error("read", &path))?;
            // A segment is created by writing its header; the header becomes
            // durable with the first sync that covers the segment. A last
            // segment with a short or all-zero header is therefore a creation
            // that never became durable, and holds nothing acknowledged.
            if is_last
                && (header.len() < SEGMENT_HEADER_BYTES as usize || header.iter().all(|b| *b == 0))
            {
                store.remove_file_durably(&path)?;
                recovery.discarded.push(Discarded {
                    path,
                    offset: 0,
                    bytes: file_len,
                    reason: "torn segment header (segment creation was not synced)".into(),
                });
                continue;
            }
            let first_index = decode_segment_header(&path, &header)?;
            if first_index != name_index {
                return Err(StorageError::Corrupt {
                    path,
                    offset: 16,
                    reason: format!(
                        "header first index {first_index:?} does not match the file name"
                    ),
                });
            }
            if store.segments.is_empty() {
                store.first_index = first_index;
            } else if first_index != store.next_index() {
                return Err(StorageError::SegmentGap {
                    path,
                    found: first_index,
                    expected: store.next_index(),
                });
            }
            let scan = match scans[position].take() {
                Some(scan) => scan?,
                None => scan_segment(
                    disk.as_ref(),
                    &path,
                    file_len,
                    first_index,
                    store.options.record_size_max_bytes,
                    &mut Vec::new(),
                    SCAN_CHUNK_BYTES,
                )?,
            };
            if let Some(stop) = &scan.stop {
                if !is_last || stop.before_marker {
                    return Err(StorageError::Corrupt {
                        path,
                        offset: stop.offset,
                        reason: if is_last {
                            format!("{} before a sync marker (synced data)", stop.reason)
                        } else {
                            format!("{} in a sealed segment", stop.reason)
                        },
                    });
                }
                let discarded = file_len - scan.end_offset;
                store
                    .disk
                    .set_len(&path, scan.end_offset)
                    .map_err(io_error("truncate", &path))?;
                if store.options.durability == Durability::Fsync {
                    store
                        .disk
                        .sync_data(&path)
                        .map_err(io_error("sync", &path))?;
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = stop.offset,
                    bytes = discarded,
                    reason = %stop.reason,
                    "discarded the unsynced tail of the log"
                );
                recovery.discarded.push(Discarded {
                    path: path.clone(),
                    offset: stop.offset,
                    bytes: discarded,
                    reason: stop.reason.clone(),
                });
            }
            store.segments.push(Segment {
                first_index,
                path,
                written_bytes: scan.end_offset,
                dirty: false,
                marker_unsynced: false,
                slots: scan.slots,
            });
        }
        // Every segment but the last must hold an entry (empty segments are
        // only created as the new last one).
        if store.segments.is_empty() {
            store.create_segment(store.first_index)?;
        }
        // After a process crash (not a power loss) the last segment may hold
        // written but unsynced records, and the directory unsynced entries.
        // Sync them now, so that what recovery returns is durable and
        // `durable_index` tells the truth.
        store.segments.last_mut().expect("a segment").dirty = true;
        store.dir_dirty = true;
        store.sync()?;
        store.durable_index = store.last_index();
        recovery.entries = store.next_index().get() - store.first_index.get();
        store.invariants();
        Ok((store, recovery))
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    /// First index the log holds (or, if it is empty, the index the next
    /// append must have).
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    /// Last index the log holds, or `first_index - 1` if it is empty.
    pub fn last_index(&self) -> LogIndex {
        match self.segments.last() {
            Some(active) => LogIndex(active.first_index.get() + active.slots.len() as u64 - 1),
            None => LogIndex(self.first_index.get() - 1),
        }
    }

    /// The index the next appended entry must have.
    pub fn next_index(&self) -> LogIndex {
        self.last_index().next()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.next_index() == self.first_index
    }

    /// Highest index known durable (reported by the last sync and not since
    /// truncated).
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// The term of the entry at `index`, if the log holds it. Answered from
    /// memory.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.slot(index).map(|slot| slot.term)
    }

    fn slot(&self, index: LogIndex) -> Option<&Slot> {
        if index < self.first_index {
            return None;
        }
        let segment = &self.segments[self.segment_of(index)];
        let position = index.get() - segment.first_index.get();
        segment.slots.get(usize::try_from(position).ok()?)
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs a mutating disk operation; a failure poisons the store, except
    /// a full disk, after which the log goes back to its durable state (see
    /// [`LogStore::roll_back_to_durable`]) and stays usable. If that fails
    /// too, the store is poisoned after all.
    fn guard<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            if self.poisoned.is_none() {
                if error.is_disk_full() {
                    match self.roll_back_to_durable() {
                        Ok(()) => {
                            tracing::debug!(%error, durable_index = ?self.durable_index, "log write failed for lack of space; back at the durable state");
                            return result;
                        }
                        Err(rollback) => {
                            tracing::error!(%error, %rollback, "log store poisoned: could not undo a write that failed for lack of space");
                            self.poisoned = Some(format!("{error}; undoing it failed: {rollback}"));
                            return result;
                        }
                    }
                }
                tracing::error!(%error, "log store poisoned");
                self.poisoned = Some(error.to_string());
            }
        }
        result
    }

    /// After a write, sync or segment creation failed because the disk is
    /// full: forget every entry after `durable_index` (they are not durable,
    /// and a failed fsync may have dropped their pages), drop the write
    /// buffer, remove segments that hold no durable entry, and cut the
    /// active segment's file back to the end of the last durable entry, so
    /// no partial record is left at its tail. Shrinking a file and removing
    /// files need no space. Afterwards `last_index() == durable_index()`
    /// and the caller may append the lost entries again.
    fn roll_back_to_durable(&mut self) -> Result<()> {
        if self.segments.is_empty() {
            return Err(StorageError::Inconsistent {
                path: self.dir.clone(),
                reason: "no segment left to roll back to".into(),
            });
        }
        self.buffer.clear();
        let lost = self.discard_queued();
        let keep_through = self.durable_index.max(LogIndex(self.first_index.get() - 1));
        let cut_at = keep_through.next();
        let keep = self.segment_of(cut_at);
        while self.segments.len() > keep + 1 {
            let segment = self.segments.pop().expect("more than keep + 1 segments");
            // With writes deferred, its creation may never have run.
            remove_if_present(self.disk.as_ref(), &segment.path)?;
            self.sync_dir()?;
        }
        self.drop_missing_active()?;
        let segment = self.segments.last().expect("kept segment");
        let position = (cut_at.get() - segment.first_index.get()) as usize;
        let path = segment.path.clone();
        // With writes deferred, a sync marker queued after the last durable
        // entry may never have been written: cut before it then, or the
        // file would keep a hole of zeros there, which recovery reads as a
        // torn tail, dropping whatever is appended after it.
        let unwritten = lost
            .iter()
            .filter(|op| op.path == path && op.bytes.is_some())
            .map(|op| op.offset)
            .min();
        let offset = match segment.slots.get(position) {
            Some(slot) => slot.offset,
            None => segment.written_bytes,
        }
        .min(unwritten.unwrap_or(u64::MAX));
        // Whatever a failed write left past the last complete record goes:
        // the file may be longer than `written_bytes` after a partial write.
        self.disk
            .set_len(&path, offset)
            .map_err(io_error("truncate", &path))?;
        let segment = self.segments.last_mut().expect("kept segment");
        segment.slots.truncate(position);
        segment.written_bytes = offset;
        segment.dirty = true;
        self.writes += 1;
        self.lower_in_flight_floor();
        self.invariants();
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    /// Appends entries, which must continue the log (`entries[0].index ==
    /// next_index()`, consecutive). They are buffered: call
    /// [`LogStore::sync`] to make them durable.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        for entry in entries {
            let expected = self.next_index();
            if entry.index != expected {
                return Err(StorageError::NotContiguous {
                    expected,
                    found: entry.index,
                });
            }
            let record_start = self.buffer.len();
            self.buffer
                .extend_from_slice(&[0u8; RECORD_HEADER_BYTES as usize]);
            let encoded = postcard::to_extend(entry, std::mem::take(&mut self.buffer));
            self.buffer = encoded.expect("encoding an Entry into a Vec cannot fail");
            let payload_len = self.buffer.len() - record_start - RECORD_HEADER_BYTES as usize;
            if payload_len > self.options.record_size_max_bytes as usize {
                self.buffer.truncate(record_start);
                return Err(StorageError::RecordTooLarge {
                    size: payload_len as u64,
                    max: u64::from(self.options.record_size_max_bytes),
                });
            }
            let record_len = (payload_len as u64) + RECORD_HEADER_BYTES;
            // Roll before this record if it would overflow a segment that
            // already holds an entry.
            let active_bytes = self.active().written_bytes + record_start as u64;
            let active_entries = self.next_index().get() - self.active().first_index.get();
            if active_entries > 0 && active_bytes + record_len > self.options.segment_size_max_bytes
            {
                let record = self.buffer.split_off(record_start);
                let rolled = self.roll(expected);
                self.guard(rolled)?;
                self.buffer = record;
            }
            let record_start = self.buffer.len() - record_len as usize;
            let len_bytes = (payload_len as u32).to_le_bytes();
            let crc = record_crc(
                len_bytes,
                &self.buffer[record_start + RECORD_HEADER_BYTES as usize..],
            );
            self.buffer[record_start..record_start + 4].copy_from_slice(&len_bytes);
            self.buffer[record_start + 4..record_start + 8].copy_from_slice(&crc.to_le_bytes());
            let offset = self.active().written_bytes + record_start as u64;
            let active = self
                .segments
                .last_mut()
                .expect("a log always has a segment");
            active.slots.push(Slot {
                term: entry.term,
                offset,
                len: record_len as u32,
            });
            if self.buffer.len() >= self.options.write_buffer_max_bytes {
                let flushed = self.flush_buffer();
                self.guard(flushed)?;
            }
        }
        Ok(())
    }

    /// Writes buffered appends to the segment file without syncing them:
    /// they survive a process crash but not a power loss.
    pub fn flush(&mut self) -> Result<()> {
        self.check_poisoned()?;
        let result = self.flush_buffer().and_then(|()| self.write_queued());
        self.guard(result)
    }

    /// Writes the buffer to the active segment (not synced).
    fn flush_buffer(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.queue.is_some() {
            let bytes = Arc::new(std::mem::take(&mut self.buffer));
            let segment = self.active();
            let (path, offset) = (segment.path.clone(), segment.written_bytes);
            let len = bytes.len() as u64;
            self.queue_op(WriteOp::Write {
                path,
                offset,
                bytes,
            });
            let segment = self.segments.last_mut().expect("a segment");
            segment.written_bytes += len;
            segment.dirty = true;
            self.writes += 1;
            return Ok(());
        }
        let segment = self
            .segments
            .last_mut()
            .expect("a log always has a segment");
        self.disk
            .write_at(&segment.path, segment.written_bytes, &self.buffer)
            .map_err(io_error("write", &segment.path))?;
        segment.written_bytes += self.buffer.len() as u64;
        segment.dirty = true;
        self.writes += 1;
        self.buffer.clear();
        Ok(())
    }

    /// Defer the log's writes, or stop deferring them (running what is
    /// queued first). Deferred, appends, rolls (the sealed segment's sync
    /// included) and sync markers are queued, not written: the next sync
    /// that is [run](LogSync::run), on whatever thread, runs them first, in
    /// order, and reads of their bytes are answered from memory meanwhile.
    /// A failed queued write is reported by the sync that ran it, and
    /// handled like a failed write in place. Truncations, removals, resets
    /// and syncs in place run the queue themselves first, and may so wait
    /// for a sync running elsewhere.
    pub fn defer_writes(&mut self, defer: bool) -> Result<()> {
        if defer {
            if self.queue.is_none() {
                let queue = WriteQueue::default();
                queue.discard(self.next_op);
                self.queue = Some(Arc::new(queue));
            }
            return Ok(());
        }
        let result = self.write_queued();
        self.guard(result)?;
        self.queue = None;
        Ok(())
    }

    /// A job that only runs the writes queued so far (none when nothing is
    /// queued, or writes are not deferred): the sync marker queued when a
    /// sync ends waits for the next sync otherwise. It makes nothing
    /// durable; [`finish_sync`](Self::finish_sync) takes its result.
    pub fn begin_writes(&mut self) -> Option<LogSync> {
        if self.poisoned.is_some() {
            return None;
        }
        let queue = self.queue.as_ref()?;
        if queue.ran() >= self.next_op {
            return None;
        }
        Some(LogSync {
            disk: Arc::clone(&self.disk),
            files: Vec::new(),
            dir: None,
            generation: 0,
            writes: self.writes,
            dir_changes: self.dir_changes,
            through: self.durable_index,
            queue: Some((Arc::clone(queue), self.next_op)),
            ops: true,
        })
    }

    /// Queue a write (writes are deferred).
    fn queue_op(&mut self, op: WriteOp) {
        let queue = self.queue.as_ref().expect("writes are deferred");
        let seq = self.next_op;
        self.next_op += 1;
        let (path, offset, bytes) = match &op {
            WriteOp::Create { path, .. } | WriteOp::Sync { path } => (path.clone(), 0, None),
            WriteOp::Write {
                path,
                offset,
                bytes,
            } => (path.clone(), *offset, Some(Arc::downgrade(bytes))),
        };
        self.unwritten.push_back(Unwritten {
            seq,
            path,
            offset,
            bytes,
        });
        queue.push(seq, op);
    }

    /// Forget the queued writes known to have run.
    fn prune_unwritten(&mut self) {
        if let Some(queue) = &self.queue {
            let ran = queue.ran();
            while self.unwritten.front().is_some_and(|op| op.seq < ran) {
                self.unwritten.pop_front();
            }
        }
    }

    /// Run every queued write here (a barrier before work done in place).
    fn write_queued(&mut self) -> Result<()> {
        if let Some(queue) = &self.queue {
            queue.run(self.disk.as_ref(), None)?;
            self.unwritten.clear();
        }
        Ok(())
    }

    /// Whether a queued write not known to have run touches `path`.
    fn queued_for(&self, path: &Path) -> bool {
        self.unwritten.iter().any(|op| op.path == path)
    }

    /// Seals the active segment (flushed and, in Fsync mode, synced) and
    /// starts a new one at `first_index`.
    fn roll(&mut self, first_index: LogIndex) -> Result<()> {
        self.flush_buffer()?;
        // A sealed segment is fully synced, marker included.
        let last = self.segments.len() - 1;
        if self.queue.is_some() {
            // Queued, it is synced before its successor is created.
            #[cfg(feature = "planted-bugs")]
            let skip = copycat_planted::active(copycat_planted::PlantedBug::DeferredRollSkipsSync);
            #[cfg(not(feature = "planted-bugs"))]
            let skip = false;
            if self.fsyncs() && !skip {
                let path = self.segments[last].path.clone();
                self.queue_op(WriteOp::Sync { path });
            }
            self.segments[last].dirty = false;
            self.segments[last].marker_unsynced = false;
        } else {
            self.segments[last].dirty |= self.segments[last].marker_unsynced;
            self.sync_segment(last)?;
        }
        self.create_segment(first_index)
    }

    /// Whether syncs reach the disk (the durability, or a planted bug).
    fn fsyncs(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::SyncSkipsFsync) {
            return false;
        }
        self.options.durability == Durability::Fsync
    }

    fn sync_segment(&mut self, position: usize) -> Result<()> {
        let fsync = self.fsyncs();
        let segment = &mut self.segments[position];
        if segment.dirty && fsync {
            self.disk
                .sync_data(&segment.path)
                .map_err(io_error("sync", &segment.path))?;
            segment.marker_unsynced = false;
        }
        segment.dirty = false;
        Ok(())
    }

    fn create_segment(&mut self, first_index: LogIndex) -> Result<()> {
        let path = self.dir.join(segment_name(first_index));
        // New segments start past every purged one (purges stop below the
        // latest snapshot; resets and rolls start above it).
        debug_assert!(
            !self.removals.contains(&path) && !self.unconfirmed.iter().any(|(_, p)| *p == path),
            "a new segment has the name of a purged one"
        );
        let header = encode_segment_header(first_index);
        if self.queue.is_some() {
            self.queue_op(WriteOp::Create {
                path: path.clone(),
                header: header.to_vec(),
            });
        } else {
            self.disk.create(&path).map_err(io_error("create", &path))?;
            if let Err(error) = self.disk.write_at(&path, 0, &header) {
                // Not a segment yet: leave no file with a torn header behind
                // (a later open would remove it, but until then it takes
                // space).
                let _ = self.disk.remove(&path);
                return Err(io_error("write", &path)(error));
            }
        }
        self.segments.push(Segment {
            first_index,
            path,
            written_bytes: SEGMENT_HEADER_BYTES,
            dirty: true,
            marker_unsynced: false,
            slots: Vec::new(),
        });
        self.dir_dirty = true;
        self.writes += 1;
        self.dir_changes += 1;
        Ok(())
    }

    fn remove_file_durably(&mut self, path: &Path) -> Result<()> {
        self.disk.remove(path).map_err(io_error("remove", path))?;
        self.sync_dir()
    }

    fn sync_dir(&mut self) -> Result<()> {
        if self.options.durability == Durability::Fsync {
            self.disk
                .sync_dir(&self.dir)
                .map_err(io_error("sync directory", &self.dir))?;
        }
        self.dir_dirty = false;
        Ok(())
    }

    /// Makes every appended entry durable and returns the last index, which
    /// is now durable. One call covers all appends since the previous one.
    ///
    /// On [`StorageError::DiskFull`] (here or from [`LogStore::append`],
    /// [`LogStore::flush`], [`LogStore::truncate_from`],
    /// [`LogStore::purge_to`]) the store is not poisoned: it is back at
    /// `durable_index()` (every later entry forgotten, any partial record
    /// cut from the file), and the caller appends the lost entries again
    /// once space returns.
    pub fn sync(&mut self) -> Result<LogIndex> {
        self.check_poisoned()?;
        let result = self.sync_inner();
        self.guard(result)
    }

    /// Begin a sync that runs elsewhere ([`LogSync::run`], on any thread)
    /// while the store goes on taking appends: the buffer is written to the
    /// file now, and [`finish_sync`](Self::finish_sync) later makes durable
    /// what the log held at this point (less anything truncated since). A
    /// sync begun while another is in flight supersedes it; an inline
    /// [`sync`](Self::sync) covers both.
    pub fn begin_sync(&mut self) -> Result<LogSync> {
        self.check_poisoned()?;
        let flushed = self.flush_buffer();
        self.guard(flushed)?;
        self.prune_unwritten();
        let fsync = self.fsyncs();
        let files = if fsync {
            self.segments
                .iter()
                .filter(|segment| segment.dirty)
                .map(|segment| segment.path.clone())
                .collect()
        } else {
            Vec::new()
        };
        let dir = (fsync && self.dir_dirty).then(|| self.dir.clone());
        self.sync_generation += 1;
        let active = self.active();
        self.in_flight = Some(InFlight {
            generation: self.sync_generation,
            floor: self.last_index(),
            segment: active.first_index,
            end: active.written_bytes,
        });
        Ok(LogSync {
            disk: Arc::clone(&self.disk),
            files,
            dir,
            generation: self.sync_generation,
            writes: self.writes,
            dir_changes: self.dir_changes,
            through: self.last_index(),
            queue: self
                .queue
                .as_ref()
                .map(|queue| (Arc::clone(queue), self.next_op)),
            ops: !self.unwritten.is_empty(),
        })
    }

    /// Finish a sync begun by [`begin_sync`](Self::begin_sync) and run:
    /// the entries it covered (those it began with and no truncation
    /// removed since) are durable. Returns the durable index. A sync that
    /// was superseded changes nothing, unless it failed: a failed sync is
    /// handled like one that failed inline (back to the durable state on a
    /// full disk, poisoned otherwise), whichever it was, since the pages it
    /// could not write may be gone.
    pub fn finish_sync(&mut self, synced: LogSynced) -> Result<LogIndex> {
        self.check_poisoned()?;
        self.prune_unwritten();
        let current = self
            .in_flight
            .as_ref()
            .is_some_and(|flight| flight.generation == synced.generation);
        if let Err(error) = synced.result {
            if current {
                self.in_flight = None;
            }
            return self.guard(Err(error));
        }
        if !current {
            return Ok(self.durable_index);
        }
        let flight = self.in_flight.take().expect("current");
        let fsync = self.options.durability == Durability::Fsync;
        if synced.writes == self.writes {
            // Nothing was written since it began: the files it synced are
            // clean, markers included (the others were clean already, but
            // a marker in one is not synced yet).
            for segment in &mut self.segments {
                if synced.files.contains(&segment.path) {
                    segment.dirty = false;
                    segment.marker_unsynced = false;
                }
            }
        }
        if synced.dir_changes == self.dir_changes {
            self.dir_dirty = false;
        }
        let through = synced.through.min(flight.floor).min(self.last_index());
        if through <= self.durable_index {
            return Ok(self.durable_index);
        }
        self.durable_index = through;
        let active = self.active();
        if fsync && through == synced.through && active.first_index == flight.segment {
            let result = self
                .flush_buffer()
                .and_then(|()| self.write_marker(flight.end));
            self.guard(result)?;
        }
        Ok(self.durable_index)
    }

    /// The disk it writes to.
    pub(crate) fn disk(&self) -> Arc<dyn Disk> {
        Arc::clone(&self.disk)
    }

    /// Leave purged segments to `Storage::take_removals`
    /// instead of removing them in place (see `Storage::defer_removals`).
    pub fn defer_removals(&mut self, defer: bool) {
        self.defer_removals = defer;
    }

    /// The purged segments to remove elsewhere, if any.
    pub(crate) fn take_removals(&mut self) -> Option<StoreRemovals> {
        if self.removals.is_empty() {
            return None;
        }
        self.prune_confirmed();
        self.removal_batches += 1;
        let batch = self.removal_batches;
        let files = std::mem::take(&mut self.removals);
        self.unconfirmed
            .extend(files.iter().map(|path| (batch, path.clone())));
        Some(StoreRemovals {
            dir: self.dir.clone(),
            sync_first: self.removal_first.take(),
            files,
            done: Some((batch, Arc::clone(&self.removals_done))),
        })
    }

    fn prune_confirmed(&mut self) {
        let done = std::mem::take(&mut *crate::disk::lock(&self.removals_done));
        if !done.is_empty() {
            self.unconfirmed.retain(|(batch, _)| !done.contains(batch));
        }
    }

    /// A truncation or roll-back lowered the last index: a sync in flight
    /// makes no more than what is left durable.
    fn lower_in_flight_floor(&mut self) {
        let last = self.last_index();
        if let Some(flight) = &mut self.in_flight {
            flight.floor = flight.floor.min(last);
        }
    }

    fn sync_inner(&mut self) -> Result<LogIndex> {
        self.flush_buffer()?;
        self.write_queued()?;
        let wrote = self.segments.last().is_some_and(|segment| segment.dirty);
        for position in 0..self.segments.len() {
            self.sync_segment(position)?;
        }
        if self.dir_dirty {
            self.sync_dir()?;
        }
        self.durable_index = self.last_index();
        if wrote && self.options.durability == Durability::Fsync {
            let end = self.active().written_bytes;
            self.write_marker(end)?;
        }
        Ok(self.durable_index)
    }

    /// Write a sync marker right after a sync: it tells recovery that every
    /// byte before it was durable, so damage there is corruption, not a torn
    /// write. The marker itself becomes durable with the next sync (or at a
    /// roll); if a crash loses it, recovery treats damage in the last batch
    /// as a torn write, which is the one case it cannot tell apart.
    /// `durable_end` is where the bytes the sync covered end in the active
    /// segment: its current end, unless more was written while the sync
    /// ran (then the marker names that end too).
    fn write_marker(&mut self, durable_end: u64) -> Result<()> {
        let segment = self
            .segments
            .last_mut()
            .expect("a log always has a segment");
        let offset = segment.written_bytes;
        debug_assert!(durable_end <= offset);
        let short;
        let long;
        let record: &[u8] = if durable_end == offset {
            short = marker_record(offset);
            &short
        } else {
            long = marker_at_record(offset, durable_end);
            &long
        };
        // A sync in flight does not cover the marker (nor a cut after a
        // failed write of it).
        self.writes += 1;
        if self.queue.is_some() {
            // Queued, it is a write like any other: a full disk then fails
            // the sync that runs it (writes after it assume it is there).
            let path = segment.path.clone();
            segment.written_bytes += record.len() as u64;
            segment.marker_unsynced = true;
            let bytes = Arc::new(record.to_vec());
            self.queue_op(WriteOp::Write {
                path,
                offset,
                bytes,
            });
            return Ok(());
        }
        if let Err(error) = self.disk.write_at(&segment.path, offset, record) {
            if !crate::error::is_disk_full_io(&error) {
                return Err(io_error("write", &segment.path)(error));
            }
            // The marker is a hint for recovery, not data: on a full disk
            // go without it (cutting any part of it that was written), so
            // that a sync whose fsync succeeded reports its entries durable.
            self.disk
                .set_len(&segment.path, offset)
                .map_err(io_error("truncate", &segment.path))?;
            return Ok(());
        }
        segment.written_bytes += record.len() as u64;
        segment.marker_unsynced = true;
        Ok(())
    }

    /// Position in `segments` of the segment holding `index`.
    fn segment_of(&self, index: LogIndex) -> usize {
        self.segments
            .partition_point(|segment| segment.first_index <= index)
            .saturating_sub(1)
    }

    fn check_range(&self, index: LogIndex) -> Result<()> {
        if index < self.first_index || index > self.last_index() {
            return Err(StorageError::OutOfRange {
                index,
                first: self.first_index,
                last: self.last_index(),
            });
        }
        Ok(())
    }

    /// The entry at `index`.
    pub fn entry(&self, index: LogIndex) -> Result<Entry> {
        let mut entries = self.entries(index, index.next(), None)?;
        Ok(entries.pop().expect("one entry was read"))
    }

    /// The entries in `[start, end)`. With `bytes_max`, stops before the
    /// entry that would make the total record size exceed it (but always
    /// returns at least one entry if the range is not empty).
    pub fn entries(
        &self,
        start: LogIndex,
        end: LogIndex,
        bytes_max: Option<u64>,
    ) -> Result<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.check_range(start)?;
        self.check_range(end.prev())?;
        let mut entries = Vec::new();
        let mut bytes_total = 0u64;
        let mut index = start;
        while index < end {
            // Read a run of records from one segment in one call.
            let position = self.segment_of(index);
            let segment = &self.segments[position];
            let segment_end = match self.segments.get(position + 1) {
                Some(next) => next.first_index.min(end),
                None => end,
            };
            let slot_of = |index: LogIndex| {
                &segment.slots[(index.get() - segment.first_index.get()) as usize]
            };
            let first_slot = *slot_of(index);
            let mut run_end = index;
            let mut run_bytes = 0u64;
            let mut limited = false;
            while run_end < segment_end {
                let slot = slot_of(run_end);
                // A sync marker between two records ends a contiguous run.
                if slot.offset != first_slot.offset + run_bytes {
                    break;
                }
                let len = u64::from(slot.len);
                if let Some(max) = bytes_max {
                    let first_of_read = entries.is_empty() && run_end == index;
                    if !first_of_read && bytes_total + run_bytes + len > max {
                        limited = true;
                        break;
                    }
                }
                run_bytes += len;
                run_end = run_end.next();
            }
            if run_end == index {
                break;
            }
            let data = self.read_bytes(position, first_slot.offset, run_bytes)?;
            let mut cursor = 0usize;
            let mut current = index;
            while current < run_end {
                let slot = slot_of(current);
                let record = &data[cursor..cursor + slot.len as usize];
                entries.push(decode_record(&segment.path, slot.offset, record, current)?);
                cursor += slot.len as usize;
                current = current.next();
            }
            bytes_total += run_bytes;
            index = run_end;
            if limited {
                break;
            }
        }
        Ok(entries)
    }

    /// Reads bytes of a segment, from the file and/or the write buffer.
    fn read_bytes(&self, position: usize, offset: u64, len: u64) -> Result<Vec<u8>> {
        let segment = &self.segments[position];
        let mut data = vec![0u8; len as usize];
        let is_active = position + 1 == self.segments.len();
        let written_end = segment.written_bytes;
        // Queued writes that have not run hold the segment's tail from the
        // first of them (they are contiguous and run in order: see
        // `log_writes.rs`); those whose bytes are gone have run.
        let queued: Vec<(u64, Arc<Vec<u8>>)> = self
            .unwritten
            .iter()
            .filter(|op| op.path == segment.path)
            .filter_map(|op| {
                op.bytes
                    .as_ref()
                    .and_then(Weak::upgrade)
                    .map(|b| (op.offset, b))
            })
            .collect();
        let on_disk_end = queued
            .iter()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or(written_end)
            .min(written_end);
        let from_file = if offset < on_disk_end {
            (on_disk_end - offset).min(len) as usize
        } else {
            0
        };
        if from_file > 0 {
            self.disk
                .read_exact_at(&segment.path, offset, &mut data[..from_file])
                .map_err(io_error("read", &segment.path))?;
        }
        let end = offset + len;
        for (at, bytes) in &queued {
            let at = *at;
            let from = at.max(offset);
            let to = (at + bytes.len() as u64).min(end);
            if from < to {
                data[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        let before_buffer = ((written_end.max(offset) - offset) as usize).min(data.len());
        if before_buffer < data.len() {
            assert!(is_active, "only the active segment has buffered bytes");
            let buffer_start = (offset + before_buffer as u64 - written_end) as usize;
            let rest = data.len() - before_buffer;
            data[before_buffer..].copy_from_slice(&self.buffer[buffer_start..buffer_start + rest]);
        }
        Ok(data)
    }

    /// Removes every entry at or after `index` (a conflicting suffix).
    /// Requires `first_index() <= index <= next_index()`.
    pub fn truncate_from(&mut self, index: LogIndex) -> Result<()> {
        self.check_poisoned()?;
        if index < self.first_index || index > self.next_index() {
            return Err(StorageError::OutOfRange {
                index,
                first: self.first_index,
                last: self.last_index(),
            });
        }
        if index == self.next_index() {
            return Ok(());
        }
        let result = self.truncate_inner(index);
        self.guard(result)
    }

    fn truncate_inner(&mut self, index: LogIndex) -> Result<()> {
        self.flush_buffer()?;
        self.write_queued()?;
        let keep = self.segment_of(index);
        // Remove later segments newest first, each durably, so a crash leaves
        // a contiguous log.
        while self.segments.len() > keep + 1 {
            let segment = self.segments.pop().expect("more than keep + 1 segments");
            self.remove_file_durably(&segment.path)?;
        }
        let offset = self.slot(index).expect("in range").offset;
        let segment = self.segments.last_mut().expect("kept segment");
        #[allow(unused_mut)]
        let mut cut_file = true;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::TruncateKeepsFileTail) {
            cut_file = false;
        }
        if cut_file {
            self.disk
                .set_len(&segment.path, offset)
                .map_err(io_error("truncate", &segment.path))?;
        }
        segment.written_bytes = offset;
        segment.dirty = true;
        self.writes += 1;
        let keep_slots = (index.get() - segment.first_index.get()) as usize;
        segment.slots.truncate(keep_slots);
        self.durable_index = self.durable_index.min(self.last_index());
        self.lower_in_flight_floor();
        Ok(())
    }

    /// Removes whole segments whose entries are all at or below `index`
    /// (typically the index of a snapshot). The active segment is never
    /// removed, so some entries at or below `index` may remain. The new first
    /// index is durable when this returns: it is the first index recorded in
    /// the header of the first remaining segment. When it removes anything,
    /// it first syncs like [`LogStore::sync`].
    pub fn purge_to(&mut self, index: LogIndex) -> Result<()> {
        self.check_poisoned()?;
        let result = self.purge_inner(index);
        self.guard(result)
    }

    fn purge_inner(&mut self, index: LogIndex) -> Result<()> {
        if self.segments.len() < 2 || self.segments[1].first_index.get() > index.get() + 1 {
            return Ok(());
        }
        // The first surviving segment's header records the new first index:
        // make it (and everything before the purge) durable before removing
        // anything, so a crash cannot leave a log that starts later than
        // its first durable segment says. Removed elsewhere, the files go
        // after a sync of that segment and the directory (`removal.rs`).
        if !self.defer_removals {
            self.sync_inner()?;
        } else if self.queue.is_some() {
            // A purged segment (or the first survivor, which the removal
            // syncs first) must be written before it goes.
            let last_purged = self
                .segments
                .partition_point(|segment| segment.first_index.get() <= index.get() + 1);
            let touched = self.segments[..last_purged]
                .iter()
                .any(|segment| self.queued_for(&segment.path));
            if touched {
                self.write_queued()?;
            }
        }
        while self.segments.len() > 1 && self.segments[1].first_index.get() <= index.get() + 1 {
            // Oldest first, each removal durable, so the survivors are
            // always contiguous.
            let segment = self.segments.remove(0);
            if self.defer_removals {
                self.removals.push(segment.path);
            } else {
                self.remove_file_durably(&segment.path)?;
            }
            self.first_index = self.segments[0].first_index;
        }
        if self.defer_removals {
            self.removal_first = Some(self.segments[0].path.clone());
        }
        Ok(())
    }

    /// Discards the whole log; the next append must have index `next_index`.
    /// Used when a snapshot is newer than the log or conflicts with it.
    /// Durable when this returns.
    pub fn reset(&mut self, next_index: LogIndex) -> Result<()> {
        self.check_poisoned()?;
        assert!(next_index.get() >= 1, "log indexes start at 1");
        let result = self.reset_inner(next_index);
        self.guard(result)
    }

    fn reset_inner(&mut self, next_index: LogIndex) -> Result<()> {
        self.buffer.clear();
        let _ = self.discard_queued();
        // Purged segments whose removal elsewhere may not be done go first
        // (oldest first, each durably): left behind by a crash, they would
        // sit before a gap.
        self.prune_confirmed();
        let leftovers: Vec<PathBuf> = std::mem::take(&mut self.unconfirmed)
            .into_iter()
            .map(|(_, path)| path)
            .chain(std::mem::take(&mut self.removals))
            .collect();
        self.removal_first = None;
        for path in leftovers {
            remove_if_present(self.disk.as_ref(), &path)?;
            self.sync_dir()?;
        }
        // Newest first, each removal durable: a crash leaves a prefix of the
        // old log, which `Storage::open` recognises as older than the
        // snapshot and resets again.
        while let Some(segment) = self.segments.pop() {
            // With writes deferred, its creation may never have run.
            remove_if_present(self.disk.as_ref(), &segment.path)?;
            self.sync_dir()?;
        }
        self.first_index = next_index;
        self.lower_in_flight_floor();
        self.create_segment(next_index)?;
        self.sync_inner()?;
        Ok(())
    }

    /// Forget the queued writes that have not run (writes deferred; waits
    /// for a sync running them elsewhere): the log is rolled back or reset.
    /// Returns the operations that never ran.
    fn discard_queued(&mut self) -> Vec<Unwritten> {
        let Some(queue) = &self.queue else {
            return Vec::new();
        };
        let ran = queue.discard(self.next_op);
        self.unwritten
            .drain(..)
            .filter(|op| op.seq >= ran)
            .collect()
    }

    /// After queued writes were discarded the active segment's file may
    /// never have been created (nor the segment before it synced, a queued
    /// roll being discarded with it). Such a segment holds nothing durable:
    /// it goes, and the one before it is active again, as if the roll had
    /// failed in place. The log's only segment is created here instead.
    fn drop_missing_active(&mut self) -> Result<()> {
        if self.queue.is_none() {
            return Ok(());
        }
        loop {
            let active = self.active();
            let path = active.path.clone();
            if self.disk.exists(&path).map_err(io_error("stat", &path))? {
                return Ok(());
            }
            if self.segments.len() > 1 {
                let dropped = self.segments.pop().expect("two segments");
                debug_assert!(dropped.slots.is_empty() || dropped.first_index > self.durable_index);
                let active = self.segments.last_mut().expect("a segment");
                // Its queued sync may have been discarded too.
                active.dirty = true;
                continue;
            }
            let header = encode_segment_header(active.first_index);
            self.disk.create(&path).map_err(io_error("create", &path))?;
            self.disk
                .write_at(&path, 0, &header)
                .map_err(io_error("write", &path))?;
            self.sync_dir()?;
            let active = self.segments.last_mut().expect("a segment");
            active.written_bytes = SEGMENT_HEADER_BYTES;
            active.slots.clear();
            active.dirty = true;
            return Ok(());
        }
    }

    /// Checks the invariants listed on [`LogStore`]; panics if one is broken.
    pub fn invariants(&self) {
        assert!(
            self.queue.is_some() || self.unwritten.is_empty(),
            "queued writes only when writes are deferred"
        );
        assert!(!self.segments.is_empty(), "a log always has a segment");
        assert_eq!(self.segments[0].first_index, self.first_index);
        for pair in self.segments.windows(2) {
            assert!(
                pair[0].first_index < pair[1].first_index,
                "segments hold entries"
            );
        }
        let last = self.active();
        assert!(last.first_index <= self.next_index());
        assert!(self.durable_index <= self.last_index() || self.durable_index == LogIndex::ZERO);
        for (position, segment) in self.segments.iter().enumerate() {
            if let Some(next) = self.segments.get(position + 1) {
                assert_eq!(
                    segment.slots.len() as u64,
                    next.first_index.get() - segment.first_index.get(),
                    "a segment's slots cover its entries"
                );
            }
            if let (Some(first), Some(last_slot)) = (segment.slots.first(), segment.slots.last()) {
                assert!(first.offset >= SEGMENT_HEADER_BYTES);
                assert!(u64::from(last_slot.len) > RECORD_HEADER_BYTES);
                assert!(
                    last_slot.offset + u64::from(last_slot.len)
                        <= segment.written_bytes + self.buffer.len() as u64
                );
            }
        }
    }
}

fn decode_record(path: &Path, offset: u64, record: &[u8], expected: LogIndex) -> Result<Entry> {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let len_bytes: [u8; 4] = record[0..4].try_into().expect("4 bytes");
    let crc = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
    let payload = &record[RECORD_HEADER_BYTES as usize..];
    if u32::from_le_bytes(len_bytes) as usize != payload.len() {
        return Err(corrupt("record length changed since it was indexed".into()));
    }
    if record_crc(len_bytes, payload) != crc {
        return Err(corrupt("record checksum mismatch".into()));
    }
    let entry: Entry = postcard::from_bytes(payload)
        .map_err(|error| corrupt(format!("undecodable entry: {error}")))?;
    if entry.index != expected {
        return Err(corrupt(format!(
            "entry index {:?} where {expected:?} was expected",
            entry.index
        )));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use copycat_raft::EntryPayload;
    use proptest::prelude::*;

    use super::*;
    use crate::disk::MemDisk;

    /// A one-segment log of `count` entries with payloads of varying size and
    /// a sync (hence a marker) after every `sync_every` entries.
    fn write_segment(disk: &Arc<dyn Disk>, count: u64, sync_every: u64) -> PathBuf {
        let dir = Path::new("/log");
        let (mut log, _) = LogStore::open(Arc::clone(disk), dir, LogOptions::default()).unwrap();
        for index in 1..=count {
            let payload = Bytes::from(vec![index as u8; (index as usize * 37) % 300 + 1]);
            log.append(&[Entry {
                term: Term(1 + index / 7),
                index: LogIndex(index),
                payload: EntryPayload::Command(payload),
            }])
            .unwrap();
            if index % sync_every == 0 {
                log.sync().unwrap();
            }
        }
        log.flush().unwrap();
        assert_eq!(log.segments.len(), 1);
        log.segments[0].path.clone()
    }

    fn scan(disk: &Arc<dyn Disk>, path: &Path, chunk: usize) -> ScanResult {
        let file_len = disk.file_len(path).unwrap();
        scan_segment(
            disk.as_ref(),
            path,
            file_len,
            LogIndex(1),
            LogOptions::default().record_size_max_bytes,
            &mut Vec::new(),
            chunk,
        )
        .unwrap()
    }

    proptest! {
        /// The hand-written varint reader accepts exactly what postcard
        /// accepts, with the same values.
        #[test]
        fn term_and_index_decode_like_postcard(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let ours = decode_term_index(&bytes);
            let theirs = postcard::take_from_bytes::<(Term, LogIndex)>(&bytes)
                .map(|(pair, _)| pair)
                .map_err(|error| format!("undecodable entry: {error}"));
            prop_assert_eq!(ours, theirs);
            let mut position = 0;
            let theirs = postcard::take_from_bytes::<u64>(&bytes).ok().map(|(value, _)| value);
            prop_assert_eq!(take_varint_u64(&bytes, &mut position), theirs);
        }

        /// Scanning through a small window (records straddle its end, and
        /// some are larger than it) finds exactly what scanning through a
        /// large one finds, on intact and on damaged segments.
        #[test]
        fn scan_does_not_depend_on_the_window_size(
            count in 1u64..40,
            sync_every in 1u64..10,
            damage in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
            chunk in 1usize..700,
        ) {
            let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
            let path = write_segment(&disk, count, sync_every);
            if let Some((at, xor)) = damage {
                let file_len = disk.file_len(&path).unwrap();
                let offset = SEGMENT_HEADER_BYTES + at.index((file_len - SEGMENT_HEADER_BYTES) as usize) as u64;
                let mut byte = [0u8];
                disk.read_exact_at(&path, offset, &mut byte).unwrap();
                disk.write_at(&path, offset, &[byte[0] ^ xor]).unwrap();
            }
            let reference = scan(&disk, &path, SCAN_CHUNK_BYTES);
            if damage.is_none() {
                prop_assert!(reference.stop.is_none());
                prop_assert_eq!(reference.slots.len() as u64, count);
            } else {
                prop_assert!(reference.stop.is_some());
            }
            prop_assert_eq!(scan(&disk, &path, chunk), reference);
        }
    }

    #[test]
    fn varint_edge_cases_decode_like_postcard() {
        let cases: [&[u8]; 8] = [
            &[0x00, 0x00],
            &[0x80, 0x00, 0x01],
            &[0xff; 10],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x05,
            ],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x05,
            ],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x07,
            ],
            &[0x07],
            &[],
        ];
        for bytes in cases {
            let theirs = postcard::take_from_bytes::<(Term, LogIndex)>(bytes)
                .map(|(pair, _)| pair)
                .map_err(|error| format!("undecodable entry: {error}"));
            assert_eq!(decode_term_index(bytes), theirs, "{bytes:?}");
        }
        let max = postcard::to_stdvec(&(Term(u64::MAX), LogIndex(u64::MAX))).unwrap();
        assert_eq!(
            decode_term_index(&max),
            Ok((Term(u64::MAX), LogIndex(u64::MAX)))
        );
    }
}

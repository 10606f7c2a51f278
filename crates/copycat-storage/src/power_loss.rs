//! Simulated power loss for data directories written by [`crate::FsDisk`],
//! for test harnesses that run real server processes.
//!
//! Killing a process (even with `SIGKILL`) keeps everything it wrote in the
//! operating system's page cache, so it cannot show what a power failure
//! would lose. Built with the cargo feature `sync-tracking` (forwarded by
//! `copycat-server` and `copycat-cli` under the same name; test builds
//! only), [`crate::FsDisk`] records in every directory it writes how far each
//! file has been made durable: after each `fdatasync` of a file returns, the
//! length the file had when the call started; after each directory `fsync`
//! returns, the entries the directory had when the call started. For a
//! stopped server, [`simulate`] then turns the directory into what a power
//! failure at that moment could have left: every file cut back to its synced
//! length or keeping part of its unsynced tail with some of it garbled, and
//! every file whose directory entry was never synced removed (or, if it was
//! renamed since its name was last synced, renamed back).
//!
//! [`simulate`] and [`synced_lengths`] need no feature: a harness built
//! without it can read directories written by a server built with it.
//!
//! # The record
//!
//! One append-only text file per directory, [`JOURNAL_FILE`], one record
//! per line (`docs/storage-format.md` has the grammar). A file is named by
//! its identity, the inode number and birth time, not by its path: a rename
//! keeps the identity, so a file renamed into place is not durable under its
//! new name until the directory is synced again. A record is appended only
//! after the sync it describes returned, and each record is one `write`
//! call, so after a `SIGKILL` the journal never claims more than was synced
//! (it may claim less, if the process died between the two). The journal is
//! never synced itself: it describes a power loss simulated after the
//! process stopped, not a real one. [`crate::FsDisk::list_dir`] never lists
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The name of the sync journal [`crate::FsDisk`] keeps in every directory
/// it writes when built with the `sync-tracking` feature. Reserved: the
/// stores never create a file of that name.
pub const JOURNAL_FILE: &str = ".copycat-synced";

/// Granularity of the damage to an unsynced tail: a page is kept, zeroed or
/// overwritten with random bytes as a whole (clipped to the tail).
const PAGE_BYTES: u64 = 4096;

/// What [`simulate`] did to one file that survived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDamage {
    /// The file (its name after any rename was undone).
    pub path: PathBuf,
    /// How far it had been synced; nothing before this offset was changed.
    pub synced_len: u64,
    /// Its length before the power loss.
    pub len_before: u64,
    /// Its length after.
    pub len_after: u64,
    /// Bytes between `synced_len` and `len_after` overwritten with zeros or
    /// random bytes.
    pub garbled_bytes: u64,
}

/// What [`simulate`] did to a data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Files with an unsynced tail, and what happened to it.
    pub files_cut: Vec<FileDamage>,
    /// Files removed because their directory entry was never synced.
    pub files_removed: Vec<PathBuf>,
    /// Renames undone because the directory was not synced after them:
    /// `(name before the power loss, name after)`.
    pub renames_undone: Vec<(PathBuf, PathBuf)>,
    /// Files renamed over a synced name without a directory sync since. The
    /// file they replaced is gone, so the rename is kept (a power loss may
    /// keep it too).
    pub renames_kept: Vec<PathBuf>,
    /// Files no sync record mentions (not written by a tracking
    /// [`crate::FsDisk`], such as a lock file); left as they are.
    pub untracked: Vec<PathBuf>,
    /// Bytes gone: cut tails and removed files.
    pub bytes_dropped: u64,
    /// Bytes of kept tails overwritten with zeros or random bytes.
    pub bytes_garbled: u64,
}

impl PowerLossReport {
    /// Whether the power loss changed nothing (everything was synced).
    pub fn is_clean(&self) -> bool {
        self.files_cut.is_empty() && self.files_removed.is_empty() && self.renames_undone.is_empty()
    }
}

/// A file's identity: inode number and birth time (nanoseconds since the
/// epoch; 0 where the file system does not keep one).
type FileId = (u64, u64);

fn file_id(metadata: &fs::Metadata) -> FileId {
    let birth = metadata
        .created()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos() as u64);
    (metadata.ino(), birth)
}

fn invalid(journal: &Path, line: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}:{}: {what}", journal.display(), line + 1),
    )
}

/// Percent-escapes every byte of `name` outside `[A-Za-z0-9._-]`, so a name
/// is one whitespace-free word.
#[cfg(any(feature = "sync-tracking", test))]
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn unescape(word: &str) -> Option<String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = word.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a directory's journal says.
#[derive(Debug, Default)]
struct Journal {
    /// Files created (or truncated to nothing) by the store.
    created: BTreeSet<FileId>,
    /// How far each file was synced.
    synced: BTreeMap<FileId, u64>,
    /// The entries the last directory sync covered (`None`: never synced).
    durable_entries: Option<BTreeMap<String, FileId>>,
}

impl Journal {
    fn read(path: &Path) -> io::Result<Self> {
        let text = fs::read(path)?;
        let text = String::from_utf8(text).map_err(|_| invalid(path, 0, "not UTF-8"))?;
        let mut journal = Journal::default();
        // A last line without its newline is a record whose write was cut
        // short; the sync it describes may not have been acted on.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        for (number, line) in complete.lines().enumerate() {
            let words: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> io::Result<u64> {
                words
                    .get(i)
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| invalid(path, number, "bad number"))
            };
            match words.first().copied() {
                Some("create") if words.len() == 3 => {
                    let id = (num(1)?, num(2)?);
                    journal.created.insert(id);
                    journal.synced.insert(id, 0);
                }
                Some("data") if words.len() == 4 => {
                    journal.synced.insert((num(1)?, num(2)?), num(3)?);
                }
                Some("dir") if words.len() >= 2 => {
                    let count = num(1)? as usize;
                    if words.len() != 2 + 3 * count {
                        return Err(invalid(path, number, "wrong entry count"));
                    }
                    let mut entries = BTreeMap::new();
                    for entry in 0..count {
                        let at = 2 + 3 * entry;
                        let name =
                            unescape(words[at]).ok_or_else(|| invalid(path, number, "bad name"))?;
                        entries.insert(name, (num(at + 1)?, num(at + 2)?));
                    }
                    journal.durable_entries = Some(entries);
                }
                _ => return Err(invalid(path, number, "unknown record")),
            }
        }
        Ok(journal)
    }

    fn tracks(&self, id: &FileId) -> bool {
        self.created.contains(id) || self.synced.contains_key(id)
    }
}

/// How far each file of `dir` (one directory, not its subdirectories) has
/// been synced, by name, according to its sync journal; files no record
/// mentions are left out. A file whose directory entry was never synced is
/// listed with the length its data was synced to (which a power loss would
/// not keep: see [`simulate`]).
///
/// Fails with [`io::ErrorKind::NotFound`] if `dir` has no journal.
pub fn synced_lengths(dir: &Path) -> io::Result<BTreeMap<String, u64>> {
    let journal = Journal::read(&dir.join(JOURNAL_FILE))?;
    let mut lengths = BTreeMap::new();
    for (name, metadata) in regular_files(dir)? {
        let id = file_id(&metadata);
        if journal.tracks(&id) {
            lengths.insert(name, journal.synced.get(&id).copied().unwrap_or(0));
        }
    }
    Ok(lengths)
}

/// The regular files of `dir` but the journal, by name.
fn regular_files(dir: &Path) -> io::Result<BTreeMap<String, fs::Metadata>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if metadata.is_file() && name != JOURNAL_FILE {
            files.insert(name, metadata);
        }
    }
    Ok(files)
}

/// Every directory under `root` (itself included) that has a journal, in
/// path order.
fn journaled_dirs(root: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if root.join(JOURNAL_FILE).is_file() {
        out.push(root.to_path_buf());
    }
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            subdirs.push(entry.path());
        }
    }
    subdirs.sort();
    for subdir in subdirs {
        journaled_dirs(&subdir, out)?;
    }
    Ok(())
}

/// Simulates a power failure of the machine a stopped server ran on, for
/// the data directory `dir` it wrote with a `sync-tracking` build: what was
/// never made durable is lost, and some of it is garbled, as a disk may
/// leave it. Synced data is never changed. The same directory contents and
/// `rng_seed` give the same damage.
///
/// In every directory under `dir` that has a sync journal ([`JOURNAL_FILE`]):
///
/// - A file whose directory entry the last directory sync did not cover is
///   removed, even if its data was synced (its name never became durable),
///   unless that sync saw it under another name that is free now: then the
///   rename is undone. A file renamed over a name that was synced is kept
///   under the new name (the file it replaced is gone).
/// - A surviving file longer than its synced length loses its unsynced
///   tail: either all of it, or a random part of its end while some of the
///   rest, page by page (4 KiB, aligned to the file), is overwritten with
///   zeros or random bytes.
/// - Files no record mentions (not written by the store) are left alone.
///
/// The server must be stopped (killed is fine): the journal describes what
/// the process had synced when it stopped. Fails with
/// [`io::ErrorKind::NotFound`] if no directory under `dir` has a journal
/// (the server was not built with `sync-tracking`), and with
/// [`io::ErrorKind::InvalidData`] if a journal cannot be read.
pub fn simulate(dir: &Path, rng_seed: u64) -> io::Result<PowerLossReport> {
    let mut dirs = Vec::new();
    journaled_dirs(dir, &mut dirs)?;
    if dirs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no sync journal ({JOURNAL_FILE}) under {}: was the server built with the \
                 `sync-tracking` feature?",
                dir.display()
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let mut report = PowerLossReport::default();
    for dir in dirs {
        simulate_dir(&dir, &mut rng, &mut report)?;
    }
    Ok(report)
}

fn simulate_dir(dir: &Path, rng: &mut ChaCha8Rng, report: &mut PowerLossReport) -> io::Result<()> {
    let journal = Journal::read(&dir.join(JOURNAL_FILE))?;
    let durable = journal.durable_entries.clone().unwrap_or_default();
    let files = regular_files(dir)?;
    let mut present: BTreeSet<String> = files.keys().cloned().collect();
    let mut survivors: Vec<(String, FileId, u64)> = Vec::new();
    for (name, metadata) in &files {
        let id = file_id(metadata);
        let path = dir.join(name);
        if !journal.tracks(&id) {
            report.untracked.push(path);
            continue;
        }
        if durable.get(name) == Some(&id) {
            survivors.push((name.clone(), id, metadata.len()));
            continue;
        }
        let earlier = durable
            .iter()
            .find(|(old, old_id)| **old_id == id && !present.contains(*old))
            .map(|(old, _)| old.clone());
        if let Some(old) = earlier {
            let old_path = dir.join(&old);
            fs::rename(&path, &old_path)?;
            present.remove(name);
            present.insert(old.clone());
            report.renames_undone.push((path, old_path));
            survivors.push((old, id, metadata.len()));
        } else if durable.contains_key(name) {
            report.renames_kept.push(path);
            survivors.push((name.clone(), id, metadata.len()));
        } else {
            fs::remove_file(&path)?;
            present.remove(name);
            report.bytes_dropped += metadata.len();
            report.files_removed.push(path);
        }
    }
    survivors.sort();
    for (name, id, len) in survivors {
        let synced = journal.synced.get(&id).copied().unwrap_or(0);
        if len > synced {
            let damage = damage_tail(&dir.join(&name), synced, len, rng)?;
            report.bytes_dropped += damage.len_before - damage.len_after;
            report.bytes_garbled += damage.garbled_bytes;
            report.files_cut.push(damage);
        }
    }
    Ok(())
}

/// Cuts or damages the bytes of `path` from `synced` to its end `len`.
fn damage_tail(path: &Path, synced: u64, len: u64, rng: &mut ChaCha8Rng) -> io::Result<FileDamage> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    // One time in three the whole tail is gone; otherwise a random part of
    // it stays, damaged.
    let keep_to = if rng.gen_ratio(1, 3) {
        synced
    } else {
        rng.gen_range(synced..=len)
    };
    file.set_len(keep_to)?;
    let mut garbled = 0;
    if keep_to > synced {
        let mut pages = Vec::new();
        let mut start = synced;
        while start < keep_to {
            let end = ((start / PAGE_BYTES + 1) * PAGE_BYTES).min(keep_to);
            pages.push((start, end));
            start = end;
        }
        // Each page: kept (half the time), zeroed or random; at least one
        // page is damaged, so a kept tail is never simply a shorter file.
        let mut fates: Vec<u8> = pages.iter().map(|_| rng.gen_range(0..4)).collect();
        if fates.iter().all(|fate| *fate < 2) {
            let page = rng.gen_range(0..fates.len());
            fates[page] = rng.gen_range(2..4);
        }
        for ((start, end), fate) in pages.into_iter().zip(fates) {
            let mut bytes = vec![0u8; (end - start) as usize];
            match fate {
                0 | 1 => continue,
                2 => {}
                _ => rng.fill(&mut bytes[..]),
            }
            file.write_all_at(&bytes, start)?;
            garbled += end - start;
        }
    }
    file.sync_all()?;
    Ok(FileDamage {
        path: path.to_path_buf(),
        synced_len: synced,
        len_before: len,
        len_after: keep_to,
        garbled_bytes: garbled,
    })
}

/// The recording side, compiled into [`crate::FsDisk`] with the
/// `sync-tracking` feature.
#[cfg(feature = "sync-tracking")]
pub(crate) mod record {
    use std::io::Write;

    use super::*;

    fn journal_of(dir: &Path) -> PathBuf {
        if dir.as_os_str().is_empty() {
            PathBuf::from(JOURNAL_FILE)
        } else {
            dir.join(JOURNAL_FILE)
        }
    }

    fn parent(path: &Path) -> &Path {
        path.parent().unwrap_or_else(|| Path::new(""))
    }

    /// Serializes appends, so that a failed one can be taken back.
    static APPENDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Appends `line` (which ends in a newline) with one `write`. A write
    /// cut short (a full disk) is taken back: a partial record followed by
    /// the next one would make the journal unreadable.
    fn append(dir: &Path, line: &str) -> io::Result<()> {
        let _serialized = APPENDS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal_of(dir))?;
        let len = file.metadata()?.len();
        let written = file.write_all(line.as_bytes());
        if written.is_err() {
            let _ = file.set_len(len);
        }
        written
    }

    /// `path` was just created or truncated to nothing, through `file`.
    pub(crate) fn created(path: &Path, file: &fs::File) -> io::Result<()> {
        let (ino, birth) = file_id(&file.metadata()?);
        append(parent(path), &format!("create {ino} {birth}\n"))
    }

    /// The identity and length of `file` right before a sync of it.
    pub(crate) fn before_sync(file: &fs::File) -> io::Result<(FileId, u64)> {
        let metadata = file.metadata()?;
        Ok((file_id(&metadata), metadata.len()))
    }

    /// A sync of `path` that started when the file was `len` bytes long
    /// returned.
    pub(crate) fn synced(path: &Path, (ino, birth): FileId, len: u64) -> io::Result<()> {
        append(parent(path), &format!("data {ino} {birth} {len}\n"))
    }

    /// The entries of `dir` right before a sync of it: regular files, by
    /// name.
    pub(crate) fn before_dir_sync(dir: &Path) -> io::Result<Vec<(String, FileId)>> {
        let listed = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Ok(regular_files(listed)?
            .into_iter()
            .map(|(name, metadata)| (name, file_id(&metadata)))
            .collect())
    }

    /// A sync of `dir` that started when it held `entries` returned.
    pub(crate) fn dir_synced(dir: &Path, entries: &[(String, FileId)]) -> io::Result<()> {
        let mut line = format!("dir {}", entries.len());
        for (name, (ino, birth)) in entries {
            line.push_str(&format!(" {} {ino} {birth}", escape(name)));
        }
        line.push('\n');
        append(dir, &line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_to_one_word_and_back() {
        for name in ["00000000000000000001.log", "a b", "100%", "x\ny", "é"] {
            let escaped = escape(name);
            assert!(!escaped.contains([' ', '\n']), "{escaped}");
            assert_eq!(unescape(&escaped).as_deref(), Some(name));
        }
        assert_eq!(unescape("%G1"), None);
        assert_eq!(unescape("%4"), None);
    }

    #[test]
    fn a_journal_ignores_a_cut_last_record_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        fs::write(&path, "create 5 0\ndata 5 0 100\ndir 1 a 5 0\ndata 5 0 20").unwrap();
        let journal = Journal::read(&path).unwrap();
        assert_eq!(journal.synced.get(&(5, 0)), Some(&100));
        assert_eq!(
            journal.durable_entries,
            Some(BTreeMap::from([("a".to_string(), (5, 0))]))
        );
        fs::write(&path, "dir 2 a 5 0\n").unwrap();
        assert_eq!(
            Journal::read(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::write(&path, "sync a\n").unwrap();
        assert_eq!(
            Journal::read(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_directory_without_journals_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"data").unwrap();
        let error = simulate(dir.path(), 0).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(dir.path().join("file")).unwrap(), b"data");
    }

    /// Journals written by hand (no feature needed): the rules of
    /// `simulate`, one file each.
    #[test]
    fn simulate_applies_each_rule() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let id = |name: &str| file_id(&fs::metadata(d.join(name)).unwrap());
        let data = |n: usize| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        // synced: data and entry synced, then an unsynced tail.
        fs::write(d.join("synced"), data(10_000)).unwrap();
        // fresh: created and written, its entry never synced.
        fs::write(d.join("fresh"), data(100)).unwrap();
        // moved: its entry was synced as "before", then renamed.
        fs::write(d.join("before"), data(50)).unwrap();
        // lock: never recorded.
        fs::write(d.join("lock"), b"pid").unwrap();
        let (s, f, b) = (id("synced"), id("fresh"), id("before"));
        fs::rename(d.join("before"), d.join("moved")).unwrap();
        let journal = format!(
            "create {} {}\ncreate {} {}\ncreate {} {}\ndata {} {} 3000\ndata {} {} 100\n\
             data {} {} 50\ndir 2 synced {} {} before {} {}\n",
            s.0, s.1, f.0, f.1, b.0, b.1, s.0, s.1, f.0, f.1, b.0, b.1, s.0, s.1, b.0, b.1
        );
        fs::write(d.join(JOURNAL_FILE), journal).unwrap();
        assert_eq!(
            synced_lengths(d).unwrap(),
            BTreeMap::from([
                ("fresh".to_string(), 100),
                ("moved".to_string(), 50),
                ("synced".to_string(), 3000)
            ])
        );
        let report = simulate(d, 7).unwrap();
        assert_eq!(report.files_removed, vec![d.join("fresh")]);
        assert_eq!(
            report.renames_undone,
            vec![(d.join("moved"), d.join("before"))]
        );
        assert_eq!(report.untracked, vec![d.join("lock")]);
        assert_eq!(report.files_cut.len(), 1);
        let cut = &report.files_cut[0];
        assert_eq!(
            (cut.path.clone(), cut.synced_len, cut.len_before),
            (d.join("synced"), 3000, 10_000)
        );
        assert!(!d.join("fresh").exists());
        assert_eq!(fs::read(d.join("before")).unwrap(), data(50));
        assert_eq!(fs::read(d.join("lock")).unwrap(), b"pid");
        let after = fs::read(d.join("synced")).unwrap();
        assert_eq!(after.len() as u64, cut.len_after);
        assert_eq!(after[..3000], data(10_000)[..3000], "synced bytes changed");
        assert_eq!(
            report.bytes_dropped,
            100 + (10_000 - cut.len_after),
            "{report:?}"
        );
    }

    /// Over many seeds, a tail is sometimes dropped whole and sometimes kept
    /// in part with damage; synced bytes never change.
    #[test]
    fn tails_are_cut_or_damaged_never_below_the_sync_point() {
        let mut cut_whole = 0;
        let mut damaged = 0;
        for seed in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let original: Vec<u8> = (0..20_000).map(|i| (i % 253) as u8 + 1).collect();
            fs::write(d.join("f"), &original).unwrap();
            let (ino, birth) = file_id(&fs::metadata(d.join("f")).unwrap());
            fs::write(
                d.join(JOURNAL_FILE),
                format!("create {ino} {birth}\ndata {ino} {birth} 5000\ndir 1 f {ino} {birth}\n"),
            )
            .unwrap();
            let report = simulate(d, seed).unwrap();
            let after = fs::read(d.join("f")).unwrap();
            assert_eq!(after[..5000], original[..5000]);
            let cut = &report.files_cut[0];
            if cut.len_after == 5000 {
                cut_whole += 1;
            } else {
                damaged += 1;
                assert!(cut.garbled_bytes > 0);
                let changed = after[5000..]
                    .iter()
                    .zip(&original[5000..])
                    .filter(|(a, b)| a != b)
                    .count() as u64;
                assert!(changed > 0 && changed <= cut.garbled_bytes);
            }
        }
        assert!(cut_whole > 0 && damaged > 0, "{cut_whole} {damaged}");
    }
}

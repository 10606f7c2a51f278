//! The in-memory view of the replicated log.
//!
//! The core keeps every entry since (a little before) the latest snapshot in
//! memory, like etcd's `MemoryStorage`: the storage layer is a durable mirror
//! that the core drives through `Ready`. Memory is bounded by taking
//! snapshots, which purge the prefix.

use crate::message::RejectHint;
use crate::types::{Configuration, Entry, EntryPayload, LogIndex, SnapshotMeta, Term};

/// The log plus the commit and apply cursors.
///
/// Invariant: `entries` are contiguous, their terms never decrease, and when
/// not empty `entries[0].index <= snapshot.index + 1 <= last_index + 1`.
/// Invariant: `snapshot.index <= applied <= commit <= last_index()`.
/// Invariant: `configs` is sorted by index, its first element is the
/// snapshot's configuration at the snapshot index (or an earlier retained
/// configuration), and it holds every configuration entry of `entries`.
#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
    /// Highest index known to be committed.
    pub commit: LogIndex,
    /// Highest index handed out for applying.
    pub applied: LogIndex,
    /// Highest index known to be durable on this server.
    pub persisted: LogIndex,
    /// Lowest index changed since the last `Ready` (to be written again).
    pub unstable_from: Option<LogIndex>,
    /// Configurations in effect from each index on.
    configs: Vec<(LogIndex, Configuration)>,
}

impl RaftLog {
    /// A log restored from durable state. The caller validated `entries`.
    pub fn restore(snapshot: SnapshotMeta, entries: Vec<Entry>) -> Self {
        let mut configs = vec![(snapshot.index, snapshot.config.clone())];
        for entry in &entries {
            if let EntryPayload::Config(config) = &entry.payload {
                if entry.index > snapshot.index {
                    configs.push((entry.index, config.clone()));
                }
            }
        }
        let persisted = entries
            .last()
            .map_or(snapshot.index, |e| e.index)
            .max(snapshot.index);
        Self {
            commit: snapshot.index,
            applied: snapshot.index,
            persisted,
            snapshot,
            entries,
            unstable_from: None,
            configs,
        }
    }

    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// Index of the first entry held in memory (which may be at or below the
    /// snapshot index), or `last_index + 1` when none is held.
    pub fn first_index(&self) -> LogIndex {
        self.entries
            .first()
            .map_or(self.last_index().next(), |e| e.index)
    }

    pub fn last_index(&self) -> LogIndex {
        match self.entries.last() {
            Some(entry) if entry.index > self.snapshot.index => entry.index,
            _ => self.snapshot.index,
        }
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index())
            .expect("last index always has a term")
    }

    /// The term of the entry at `index`, if it is known.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.entries.first()?.index;
        if index < first {
            return None;
        }
        self.entries.get((index.0 - first.0) as usize)
    }

    /// Whether a candidate's log is at least as up to date as ours (§5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries `[lo, hi]` limited by bytes and count (at least one entry is
    /// returned when the range is not empty). `None` if `lo` was purged.
    pub fn slice(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: usize,
        max_count: usize,
    ) -> Option<Vec<Entry>> {
        if lo > hi {
            return Some(Vec::new());
        }
        let first = self.entries.first()?.index;
        if lo < first || hi > self.last_index() {
            return None;
        }
        let start = (lo.0 - first.0) as usize;
        let end = (hi.0 - first.0) as usize + 1;
        let mut bytes = 0;
        let mut out = Vec::new();
        for entry in &self.entries[start..end] {
            bytes += entry.size_bytes();
            if !out.is_empty() && (bytes > max_bytes || out.len() >= max_count) {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    /// Leader append: entries continue the log in the current term.
    pub fn append(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "leader append must be contiguous"
            );
            assert!(
                entry.term >= self.last_term(),
                "terms never decrease in the log"
            );
            self.push(entry);
        }
    }

    fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "log must stay contiguous"
        );
        if let EntryPayload::Config(config) = &entry.payload {
            self.configs.push((entry.index, config.clone()));
        }
        self.unstable_from = Some(
            self.unstable_from
                .map_or(entry.index, |u| u.min(entry.index)),
        );
        self.entries.push(entry);
    }

    /// Remove every entry from `index` on. Committed entries are never
    /// removed (Log Matching + Leader Completeness make that impossible for
    /// a correct leader, so a request to do so is a bug).
    fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.commit,
            "truncating committed entry {index:?} (commit {:?})",
            self.commit
        );
        if let Some(first) = self.entries.first().map(|e| e.index) {
            if index >= first {
                self.entries.truncate((index.0 - first.0) as usize);
            }
        }
        self.configs.retain(|(i, _)| *i < index);
        self.persisted = self.persisted.min(index.prev());
        if let Some(unstable) = self.unstable_from {
            if unstable >= index {
                self.unstable_from = None;
            }
        }
    }

    /// Replace the entry at `entry.index` in place, keeping later entries
    /// (only for the `KeepConflictingSuffix` planted bug).
    #[cfg(feature = "planted-bugs")]
    fn overwrite(&mut self, entry: Entry) {
        let first = self.first_index();
        let position = (entry.index.0 - first.0) as usize;
        self.configs.retain(|(i, _)| *i != entry.index);
        if let EntryPayload::Config(config) = &entry.payload {
            let at = self.configs.partition_point(|(i, _)| *i < entry.index);
            self.configs.insert(at, (entry.index, config.clone()));
        }
        self.persisted = self.persisted.min(entry.index.prev());
        self.unstable_from = Some(
            self.unstable_from
                .map_or(entry.index, |u| u.min(entry.index)),
        );
        self.entries[position] = entry;
    }

    /// Follower append (§5.3): check that our log holds `prev_index` with
    /// `prev_term`, drop any conflicting suffix, add what is new. Returns the
    /// index of the last entry the message covered.
    pub fn try_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> Result<LogIndex, RejectHint> {
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        // Entries at or below the commit index are committed, so they match
        // the leader's by Leader Completeness: a `prev_index` below it needs
        // no check (and may have been purged by a snapshot).
        if prev_index >= self.commit && self.term(prev_index) != Some(prev_term) {
            return Err(self.reject_hint(prev_index, prev_term));
        }
        for entry in entries {
            if entry.index <= self.commit {
                continue;
            }
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                #[cfg(feature = "planted-bugs")]
                Some(_)
                    if copycat_planted::active(
                        copycat_planted::PlantedBug::KeepConflictingSuffix,
                    ) =>
                {
                    // Overwrite the conflicting entry alone and keep what
                    // follows it.
                    self.overwrite(entry);
                    continue;
                }
                // Everything from the first conflict on is the suffix of a
                // deposed leader's log; Log Matching needs it gone.
                Some(_) => self.truncate_from(entry.index),
                None => {}
            }
            self.push(entry);
        }
        Ok(last_new)
    }

    /// The conflict hint for a rejected append (fast backtracking): walk back
    /// from `prev_index` over entries whose term is above `prev_term`; those
    /// cannot match the leader's entry at `prev_index` or before it.
    fn reject_hint(&self, prev_index: LogIndex, prev_term: Term) -> RejectHint {
        let mut index = prev_index.min(self.last_index());
        while index > self.commit {
            match self.term(index) {
                Some(term) if term <= prev_term => return RejectHint { index, term },
                _ => index = index.prev(),
            }
        }
        // Everything at or below the commit index matches the leader.
        let term = self.term(index).expect("commit index always has a term");
        RejectHint { index, term }
    }

    /// Leader side of fast backtracking: the largest index `<= hint.index`
    /// whose term is `<= hint.term`. Our log and the follower's agree up to
    /// at most there.
    pub fn find_conflict_by_term(&self, hint: RejectHint) -> LogIndex {
        let mut index = hint.index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(term) if term > hint.term => index = index.prev(),
                _ => return index,
            }
        }
    }

    /// Move the commit index forward (never back).
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index:?} beyond last index {:?}",
            self.last_index()
        );
        self.commit = index;
        true
    }

    /// Committed entries not yet handed out for applying.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        if self.applied >= self.commit {
            return Vec::new();
        }
        let first = self.entries.first().map_or(LogIndex(u64::MAX), |e| e.index);
        assert!(
            self.applied.next() >= first,
            "committed entries must be held to be applied"
        );
        let start = (self.applied.0 + 1 - first.0) as usize;
        let end = (self.commit.0 + 1 - first.0) as usize;
        let out = self.entries[start..end].to_vec();
        self.applied = self.commit;
        out
    }

    /// Entries changed since the last call, to be written to storage.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let Some(from) = self.unstable_from.take() else {
            return Vec::new();
        };
        let first = self.first_index();
        let start = (from.max(first).0 - first.0) as usize;
        self.entries[start..].to_vec()
    }

    /// Record a snapshot the application took at `index` (already applied)
    /// and purge entries, keeping `trailing` entries before it. Returns the
    /// highest purged index.
    pub fn compact(&mut self, index: LogIndex, trailing: u64) -> LogIndex {
        let term = self.term(index).expect("snapshot index must be in the log");
        let config = self.config_at(index).clone();
        self.snapshot = SnapshotMeta {
            index,
            term,
            config,
        };
        let purge_to = LogIndex(index.0.saturating_sub(trailing));
        let first = self.first_index();
        if purge_to >= first {
            let count = (purge_to.0 - first.0 + 1) as usize;
            self.entries.drain(..count.min(self.entries.len()));
        }
        // Keep the configuration in effect at the snapshot as the base.
        let keep_from = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.configs.drain(..keep_from);
        self.configs[0] = (index, self.snapshot.config.clone());
        purge_to
    }

    /// Replace the log with an installed snapshot. Entries after it are kept
    /// if the log holds the snapshot's last entry (§7: "If existing log entry
    /// has same index and term as snapshot's last included entry, retain log
    /// entries following it").
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.index > self.commit,
            "installed snapshot must be newer than the commit index"
        );
        let keep = self.term(meta.index) == Some(meta.term);
        if keep {
            let first = self.first_index();
            let count = (meta.index.0 + 1 - first.0) as usize;
            self.entries.drain(..count.min(self.entries.len()));
            self.configs.retain(|(i, _)| *i > meta.index);
        } else {
            self.entries.clear();
            self.configs.clear();
            self.persisted = meta.index;
        }
        self.configs.insert(0, (meta.index, meta.config.clone()));
        self.commit = meta.index;
        self.applied = meta.index;
        self.persisted = self.persisted.max(meta.index);
        self.unstable_from = None;
        self.snapshot = meta;
    }

    /// The latest configuration and the index of its entry.
    pub fn latest_config(&self) -> (LogIndex, &Configuration) {
        let (index, config) = self
            .configs
            .last()
            .expect("there is always a configuration");
        (*index, config)
    }

    /// The configuration in effect at `index`.
    pub fn config_at(&self, index: LogIndex) -> &Configuration {
        let position = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        &self.configs[position].1
    }

    /// Whether `id` is a voter in the configuration in effect at `index` or
    /// in any later one.
    pub fn voter_since(&self, index: LogIndex, id: crate::types::NodeId) -> bool {
        let from = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.configs[from..]
            .iter()
            .any(|(_, config)| config.is_voter(id))
    }

    /// The configuration in effect at `index` and every later one.
    pub fn configs_since(&self, index: LogIndex) -> Vec<Configuration> {
        let from = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.configs[from..]
            .iter()
            .map(|(_, config)| config.clone())
            .collect()
    }

    /// Check the structural invariants; panics on violation.
    pub fn invariants(&self) {
        let mut previous: Option<&Entry> = None;
        for entry in &self.entries {
            if let Some(previous) = previous {
                assert_eq!(
                    entry.index,
                    previous.index.next(),
                    "log entries must be contiguous"
                );
                assert!(entry.term >= previous.term, "log terms must not decrease");
            }
            previous = Some(entry);
        }
        if let Some(first) = self.entries.first() {
            assert!(
                first.index <= self.snapshot.index.next(),
                "gap between snapshot and log"
            );
            assert!(self.last_index() >= self.snapshot.index);
            if let Some(entry) = self.entry(self.snapshot.index) {
                assert_eq!(
                    entry.term, self.snapshot.term,
                    "snapshot term disagrees with log"
                );
            }
        }
        assert!(
            self.snapshot.index <= self.applied,
            "applied below snapshot"
        );
        assert!(self.applied <= self.commit, "applied beyond commit");
        assert!(self.commit <= self.last_index(), "commit beyond last index");
        assert!(
            self.persisted <= self.last_index(),
            "persisted beyond last index"
        );
        assert!(!self.configs.is_empty());
        for pair in self.configs.windows(2) {
            assert!(pair[0].0 < pair[1].0, "configurations out of order");
        }
    }
}

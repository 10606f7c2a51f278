//! Snapshots: compaction, and chunked transfer to followers whose needed
//! entries were purged.
//!
//! Implements Raft §7 (log compaction, InstallSnapshot) with the snapshot
//! sent in chunks that the follower acknowledges one at a time, so a lost
//! chunk costs one retransmission, not the whole snapshot. The data never
//! passes through the core: the leader asks the application for chunks
//! (`Ready::snapshot_requests`) and the follower hands them to it
//! (`Ready::snapshot_chunks`).

use bytes::Bytes;

use super::{Core, LeaderState, RawNode};
use crate::errors::SnapshotError;
use crate::message::MessageBody;
use crate::progress::ReplicationState;
use crate::ready::{SnapshotChunk, SnapshotRequest};
use crate::types::{LogIndex, NodeId, SnapshotMeta};

/// A snapshot being received from the leader.
#[derive(Clone, Debug)]
pub(super) struct IncomingSnapshot {
    meta: SnapshotMeta,
    from: NodeId,
    next_offset: u64,
    complete: bool,
}

impl Core {
    pub(super) fn snapshot_taken(
        &mut self,
        index: LogIndex,
    ) -> Result<SnapshotMeta, SnapshotError> {
        if index > self.log.applied {
            return Err(SnapshotError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        if index <= self.log.snapshot().index {
            return Err(SnapshotError::Stale {
                index,
                current: self.log.snapshot().index,
            });
        }
        let purged = self
            .log
            .compact(index, self.config.snapshot_trailing_entries);
        if purged > LogIndex::ZERO {
            self.pending_purge = Some(self.pending_purge.map_or(purged, |p| p.max(purged)));
        }
        Ok(self.log.snapshot().clone())
    }

    /// Reset the log to the installed snapshot; returns the leader to tell.
    pub(super) fn snapshot_installed(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<NodeId, SnapshotError> {
        let unexpected = SnapshotError::Unexpected {
            index: meta.index,
            term: meta.term,
        };
        if self.pending_snapshot_install.as_ref() != Some(meta) {
            return Err(unexpected);
        }
        self.pending_snapshot_install = None;
        let Some(incoming) = self.incoming_snapshot.take() else {
            unreachable!("a pending install has an incoming snapshot");
        };
        self.log.install_snapshot(meta.clone());
        self.out.snapshot = Some(meta.clone());
        Ok(incoming.from)
    }
}

impl RawNode {
    pub(super) fn on_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        self.on_leader_contact(from);
        let core = &mut self.core;
        let index = meta.index;
        if index <= core.log.commit {
            // We already have everything the snapshot covers.
            core.incoming_snapshot = None;
            let body = MessageBody::AppendResponse {
                index: core.log.commit,
                reject: None,
                read_round: 0,
            };
            core.send_after_persist(from, body);
            return;
        }
        let restart = match &core.incoming_snapshot {
            Some(incoming) => incoming.meta != meta,
            None => true,
        };
        if restart {
            if offset != 0 {
                // A chunk of a snapshot we have not seen the start of: ask
                // for it from the beginning.
                core.send(
                    from,
                    MessageBody::InstallSnapshotResponse {
                        index,
                        next_offset: 0,
                    },
                );
                return;
            }
            core.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                from,
                next_offset: 0,
                complete: false,
            });
        }
        let Some(incoming) = core.incoming_snapshot.as_mut() else {
            unreachable!("set above");
        };
        incoming.from = from;
        if offset != incoming.next_offset || incoming.complete {
            // A duplicate or a gap: say where we are.
            let next_offset = incoming.next_offset;
            core.send(
                from,
                MessageBody::InstallSnapshotResponse { index, next_offset },
            );
            return;
        }
        incoming.next_offset += data.len() as u64;
        let next_offset = incoming.next_offset;
        if done {
            incoming.complete = true;
            core.pending_snapshot_install = Some(meta.clone());
        }
        core.out.snapshot_chunks.push(SnapshotChunk {
            meta,
            offset,
            data,
            done,
        });
        if !done {
            core.send(
                from,
                MessageBody::InstallSnapshotResponse { index, next_offset },
            );
        }
    }
}

impl LeaderState {
    pub(super) fn snapshot_chunk(
        &mut self,
        core: &mut Core,
        to: NodeId,
        index: LogIndex,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        let ReplicationState::Snapshot {
            meta, acked_offset, ..
        } = &progress.state
        else {
            return;
        };
        if meta.index != index || *acked_offset != offset {
            return;
        }
        let meta = meta.clone();
        core.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            },
        );
    }

    pub(super) fn snapshot_unavailable(&mut self, core: &mut Core, to: NodeId, index: LogIndex) {
        let latest = core.log.snapshot().clone();
        let now = core.now;
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        if matches!(&progress.state, ReplicationState::Snapshot { meta, .. } if meta.index == index)
        {
            progress.state = ReplicationState::Snapshot {
                meta: latest.clone(),
                acked_offset: 0,
                requested_at: now,
            };
            core.out.snapshot_requests.push(SnapshotRequest {
                to,
                meta: latest,
                offset: 0,
                max_bytes: core.config.snapshot_chunk_bytes,
            });
        }
    }

    /// The follower needs entries we purged: send the latest snapshot.
    pub(super) fn start_snapshot(&mut self, core: &mut Core, to: NodeId) {
        let meta = core.log.snapshot().clone();
        let now = core.now;
        let Some(progress) = self.progress.get_mut(&to) else {
            unreachable!("only members with progress are replicated to");
        };
        progress.state = ReplicationState::Snapshot {
            meta: meta.clone(),
            acked_offset: 0,
            requested_at: now,
        };
        progress.inflight.clear();
        core.out.snapshot_requests.push(SnapshotRequest {
            to,
            meta,
            offset: 0,
            max_bytes: core.config.snapshot_chunk_bytes,
        });
    }

    /// A chunk or its answer may be lost: ask for the chunk again after an
    /// election timeout without progress.
    pub(super) fn retry_snapshot_sends(&mut self, core: &mut Core) {
        let now = core.now;
        let timeout = core.config.election_timeout_ms;
        let chunk = core.config.snapshot_chunk_bytes;
        for (id, progress) in self.progress.iter_mut() {
            if let ReplicationState::Snapshot {
                meta,
                acked_offset,
                requested_at,
            } = &mut progress.state
            {
                if now.since(*requested_at) >= timeout {
                    *requested_at = now;
                    core.out.snapshot_requests.push(SnapshotRequest {
                        to: *id,
                        meta: meta.clone(),
                        offset: *acked_offset,
                        max_bytes: chunk,
                    });
                }
            }
        }
    }

    /// Precondition (checked by `ignore_reason`): we are sending `from` the
    /// snapshot at `index`.
    pub(super) fn on_install_snapshot_response(
        &mut self,
        core: &mut Core,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
    ) {
        let now = core.now;
        let chunk = core.config.snapshot_chunk_bytes;
        let Some(progress) = self.progress.get_mut(&from) else {
            unreachable!("ignore_reason admits answers from members only");
        };
        let ReplicationState::Snapshot {
            meta,
            acked_offset,
            requested_at,
        } = &mut progress.state
        else {
            unreachable!("ignore_reason admits snapshot answers only while sending one");
        };
        debug_assert_eq!(meta.index, index);
        *acked_offset = next_offset;
        *requested_at = now;
        let meta = meta.clone();
        core.out.snapshot_requests.push(SnapshotRequest {
            to: from,
            meta,
            offset: next_offset,
            max_bytes: chunk,
        });
    }
}

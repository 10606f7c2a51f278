//! Membership: single-server configuration changes, learner promotion and
//! who may campaign.
//!
//! Implements thesis §4.1 (one server at a time, each configuration in
//! effect as soon as it is in the log, committed or not), §4.2.1 (new
//! servers join as learners and are promoted once caught up) and §4.2.2 (a
//! leader may remove itself), with the fix from the Raft mailing list: a
//! leader accepts a change only after committing an entry of its own term,
//! and only once the previous change committed.

use super::{Core, LeaderState, MembershipChange};
use crate::errors::{ConfigChangeError, ProposeError};
use crate::progress::Progress;
use crate::types::{Configuration, LogIndex, MemberRole, NodeId};

impl Core {
    /// The role this server believes it has in the newest configuration it
    /// knows (a reserve learns newer ones from heartbeats only).
    pub(super) fn member_role(&self) -> Option<MemberRole> {
        let (index, config) = self.log.latest_config();
        match &self.reserve_view {
            Some((view_index, view)) if *view_index > index => view.role(self.config.id),
            _ => config.role(self.config.id),
        }
    }

    /// Whether this server may run for leader: it is a voter in its latest
    /// configuration, or that configuration is not known to be committed and
    /// a configuration since the commit index made it a voter.
    ///
    /// The second case matters when a leader demoted or removed itself and
    /// crashed before the change committed: it may hold the only up-to-date
    /// log, and the others, still on an older configuration, need it to lead
    /// (and commit the change) since they cannot win its vote. Who campaigns
    /// never affects safety: votes are always counted in the candidate's
    /// latest configuration.
    pub(super) fn can_campaign(&self) -> bool {
        if self.member_role() == Some(MemberRole::Voter) {
            return true;
        }
        let (version, _) = self.log.latest_config();
        version > self.log.commit && self.log.voter_since(self.log.commit, self.config.id)
    }

    /// The leader of our term replicates its log to us, so its latest
    /// configuration makes us a replicating member: from now on the log's
    /// configurations are ours. A reserve view learned earlier may come
    /// from a configuration that never committed (its leader lost it), and
    /// must not outrank the log for ever.
    pub(super) fn forget_reserve_view(&mut self) {
        self.reserve_view = None;
    }

    /// The log's configuration may have changed: a reserve view it caught up
    /// with is no longer needed.
    pub(super) fn after_config_change(&mut self) {
        let config_index = self.log.latest_config().0;
        if let Some((view_index, _)) = &self.reserve_view {
            if *view_index <= config_index {
                self.reserve_view = None;
            }
        }
    }
}

impl LeaderState {
    /// Keep the progress set equal to the members of the latest
    /// configuration (new members start probing at the end of the log).
    pub(super) fn sync_progress(&mut self, core: &Core) {
        let config = core.log.latest_config().1;
        let next = core.log.last_index().next();
        let now = core.now;
        let self_id = core.config.id;
        self.progress
            .retain(|id, _| config.members.contains_key(id));
        for id in config.members.keys() {
            if *id != self_id {
                self.progress
                    .entry(*id)
                    .or_insert_with(|| Progress::new(next, now));
            }
        }
    }

    pub(super) fn change_membership(
        &mut self,
        core: &mut Core,
        change: MembershipChange,
        address: Option<String>,
        expected_version: Option<LogIndex>,
    ) -> Result<LogIndex, ConfigChangeError> {
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress.into());
        }
        let (version, current) = core.log.latest_config();
        if let Some(expected) = expected_version {
            if expected != version {
                return Err(ConfigChangeError::StaleConfiguration {
                    expected,
                    current: version,
                });
            }
        }
        // The leader must have committed an entry of its own term first (the
        // fix to single-server changes described in the Raft mailing list
        // and thesis errata), and the previous change must be committed:
        // two uncommitted single-server changes can form two majorities
        // that do not overlap.
        #[allow(unused_mut)]
        let mut previous_pending = version > core.log.commit;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::TwoConfigChanges) {
            previous_pending = false;
        }
        if core.log.commit < self.noop_index || previous_pending {
            return Err(ConfigChangeError::ChangeInProgress);
        }
        let mut next = current.clone();
        match change {
            MembershipChange::AddVoter(id) => {
                let new_address = address
                    .as_deref()
                    .is_some_and(|a| current.address(id) != Some(a));
                if current.is_voter(id) && !new_address {
                    return Err(ConfigChangeError::Invalid(format!(
                        "{id:?} is already a voter"
                    )));
                }
                if !current.is_voter(id) {
                    next.members.insert(id, MemberRole::Learner);
                }
            }
            MembershipChange::AddPassive(id) => {
                next.members.insert(id, MemberRole::Passive);
            }
            MembershipChange::AddReserve(id) => {
                next.members.insert(id, MemberRole::Reserve);
            }
            MembershipChange::Remove(id) => {
                if next.members.remove(&id).is_none() {
                    return Err(ConfigChangeError::Invalid(format!(
                        "{id:?} is not a member"
                    )));
                }
                next.addresses.remove(&id);
            }
        }
        if next.members.contains_key(&NodeId(0)) {
            return Err(ConfigChangeError::Invalid("node id 0 is reserved".into()));
        }
        if let Some(address) = address {
            let id = change.target();
            if !matches!(change, MembershipChange::Remove(_)) {
                if address.is_empty() || address.len() > crate::types::MAX_ADDRESS_BYTES {
                    return Err(ConfigChangeError::Invalid(format!(
                        "the address of {id:?} must be 1 to {} bytes long",
                        crate::types::MAX_ADDRESS_BYTES
                    )));
                }
                next.addresses.insert(id, address);
            }
        }
        if next.voter_count() == 0 {
            return Err(ConfigChangeError::Invalid(
                "a configuration needs a voter".into(),
            ));
        }
        if &next == current {
            return Err(ConfigChangeError::Invalid(
                "the change changes nothing".into(),
            ));
        }
        Ok(self.append_config(core, next))
    }

    /// Promote a learner that has caught up (thesis §4.2.1), under the same
    /// rules as an operator's change.
    pub(super) fn maybe_promote_learner(&mut self, core: &mut Core, id: NodeId) {
        let (version, config) = core.log.latest_config();
        if config.role(id) != Some(MemberRole::Learner)
            || self.transfer.is_some()
            || version > core.log.commit
            || core.log.commit < self.noop_index
        {
            return;
        }
        let Some(progress) = self.progress.get(&id) else {
            return;
        };
        // It must have acknowledged an append (a learner that never
        // answered has match index zero, which a short log would otherwise
        // count as caught up) and be within the lag of our last entry.
        if progress.match_index == LogIndex::ZERO
            || progress.match_index.0 + core.config.promote_lag_entries < core.log.last_index().0
        {
            return;
        }
        let mut next: Configuration = config.clone();
        next.members.insert(id, MemberRole::Voter);
        self.append_config(core, next);
    }
}

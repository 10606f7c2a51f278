//! The replica's limits, in one validated struct.

use thiserror::Error;

/// Limits and defaults of a [`crate::replica::Replica`].
///
/// Every server of a cluster must use the same values: they decide outcomes
/// that are recorded per log entry (a command rejected for size on one
/// replica and applied on another would make the replicas diverge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Most sessions open at once; registering more is refused with
    /// `TooManySessions`.
    pub max_sessions: usize,
    /// Most unacknowledged command results cached per session; a command
    /// beyond it is refused with `ResultCacheFull` (not applied, its
    /// sequence not used up) until a keep-alive acknowledges results.
    pub max_cached_results_per_session: usize,
    /// Most unacknowledged events retained per session. A session that
    /// exceeds it is not reading its events: it is expired at that entry.
    pub max_retained_events_per_session: usize,
    /// Largest command payload in bytes; a larger one is answered with
    /// `TooLarge` and its sequence is used up so later commands proceed.
    pub max_command_bytes: usize,
    /// Most timers pending at once (one-shot and periodic together).
    pub max_timers: usize,
    /// How many expired or closed session ids are remembered so that late
    /// requests get `SessionExpired` rather than `UnknownSession`.
    pub max_remembered_sessions: usize,
    /// Timeout for a registration asking for zero (the server default).
    pub default_session_timeout_ms: u64,
    /// Shortest session timeout granted; shorter requests are raised to it.
    pub min_session_timeout_ms: u64,
    /// Longest session timeout granted; longer requests are lowered to it.
    pub max_session_timeout_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            max_cached_results_per_session: 1_024,
            max_retained_events_per_session: 10_000,
            max_command_bytes: 1024 * 1024,
            max_timers: 100_000,
            max_remembered_sessions: 4_096,
            default_session_timeout_ms: 5_000,
            min_session_timeout_ms: 100,
            max_session_timeout_ms: 10 * 60 * 1_000,
        }
    }
}

/// A configuration that [`ReplicaConfig::validate`] rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid replica configuration: {0}")]
pub struct ReplicaConfigError(pub String);

impl ReplicaConfig {
    /// Every setting by name, for comparing servers: a server refuses a
    /// peer whose settings differ (see the peer hello).
    pub fn settings(&self) -> Vec<(String, u64)> {
        let Self {
            max_sessions,
            max_cached_results_per_session,
            max_retained_events_per_session,
            max_command_bytes,
            max_timers,
            max_remembered_sessions,
            default_session_timeout_ms,
            min_session_timeout_ms,
            max_session_timeout_ms,
        } = self.clone();
        [
            ("max_sessions", max_sessions as u64),
            (
                "max_cached_results_per_session",
                max_cached_results_per_session as u64,
            ),
            (
                "max_retained_events_per_session",
                max_retained_events_per_session as u64,
            ),
            ("max_command_bytes", max_command_bytes as u64),
            ("max_timers", max_timers as u64),
            ("max_remembered_sessions", max_remembered_sessions as u64),
            ("default_session_timeout_ms", default_session_timeout_ms),
            ("min_session_timeout_ms", min_session_timeout_ms),
            ("max_session_timeout_ms", max_session_timeout_ms),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// Check that the settings are usable together.
    pub fn validate(&self) -> Result<(), ReplicaConfigError> {
        let positive = [
            ("max_sessions", self.max_sessions),
            (
                "max_cached_results_per_session",
                self.max_cached_results_per_session,
            ),
            (
                "max_retained_events_per_session",
                self.max_retained_events_per_session,
            ),
            ("max_command_bytes", self.max_command_bytes),
            ("max_timers", self.max_timers),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ReplicaConfigError(format!("{name} must be positive")));
            }
        }
        if self.min_session_timeout_ms == 0 {
            return Err(ReplicaConfigError(
                "min_session_timeout_ms must be positive".into(),
            ));
        }
        if self.min_session_timeout_ms > self.max_session_timeout_ms {
            return Err(ReplicaConfigError(format!(
                "min_session_timeout_ms ({}) exceeds max_session_timeout_ms ({})",
                self.min_session_timeout_ms, self.max_session_timeout_ms
            )));
        }
        if !(self.min_session_timeout_ms..=self.max_session_timeout_ms)
            .contains(&self.default_session_timeout_ms)
        {
            return Err(ReplicaConfigError(format!(
                "default_session_timeout_ms ({}) is outside [{}, {}]",
                self.default_session_timeout_ms,
                self.min_session_timeout_ms,
                self.max_session_timeout_ms
            )));
        }
        Ok(())
    }

    /// The timeout granted to a registration asking for `requested_ms`.
    pub fn session_timeout_ms(&self, requested_ms: u64) -> u64 {
        if requested_ms == 0 {
            self.default_session_timeout_ms
        } else {
            requested_ms.clamp(self.min_session_timeout_ms, self.max_session_timeout_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_settings_are_rejected() {
        ReplicaConfig::default().validate().unwrap();
        let mut config = ReplicaConfig {
            max_sessions: 0,
            ..ReplicaConfig::default()
        };
        assert!(config.validate().is_err());
        config.max_sessions = 1;
        config.min_session_timeout_ms = 10_000;
        config.max_session_timeout_ms = 1_000;
        assert!(config.validate().is_err());
        config.max_session_timeout_ms = 20_000;
        config.default_session_timeout_ms = 5_000;
        assert!(config.validate().is_err());
        config.default_session_timeout_ms = 15_000;
        config.validate().unwrap();
        assert_eq!(config.session_timeout_ms(0), 15_000);
        assert_eq!(config.session_timeout_ms(1), 10_000);
        assert_eq!(config.session_timeout_ms(99_000), 20_000);
    }
}

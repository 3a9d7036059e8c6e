//! [`StateName`]: a lifecycle state's name, as the status API, the
//! metrics, the events stream and the CLI spell it.

#[cfg(doc)]
use super::ServiceState;

/// The name of a [`ServiceState`], as the status API, the metrics and the
/// CLI spell it: serialised by serde as `"unknown"`, `"stopped"`,
/// `"starting"`, `"ready"`, `"stopping"`, `"hibernating"`, `"hibernated"`
/// or `"failed"`. A name this
/// version does not know (a newer agent) reads as `Unknown`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    /// See [`ServiceState::Stopped`].
    Stopped,
    /// See [`ServiceState::Starting`].
    Starting,
    /// See [`ServiceState::Ready`].
    Ready,
    /// See [`ServiceState::Stopping`].
    Stopping,
    /// See [`ServiceState::Hibernating`].
    Hibernating,
    /// See [`ServiceState::Hibernated`].
    Hibernated,
    /// See [`ServiceState::Failed`].
    Failed,
    /// See [`ServiceState::Unknown`] (serde's fallback: last).
    #[default]
    #[serde(other)]
    Unknown,
}

impl StateName {
    /// Every state name (the metrics' one-hot gauge).
    pub const ALL: [StateName; 8] = [
        Self::Stopped,
        Self::Starting,
        Self::Ready,
        Self::Stopping,
        Self::Hibernating,
        Self::Hibernated,
        Self::Failed,
        Self::Unknown,
    ];

    /// The wire name (the same as serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Stopping => "stopping",
            Self::Hibernating => "hibernating",
            Self::Hibernated => "hibernated",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for StateName {
    /// The state named `name`; a name this version does not know is
    /// `Unknown`, as when deserialised.
    fn from(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
            .unwrap_or(Self::Unknown)
    }
}

impl PartialEq<str> for StateName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StateName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

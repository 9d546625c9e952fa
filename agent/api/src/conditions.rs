//! The status vocabulary of a Sync: condition types and statuses as kstatus names them, and one
//! [`Reason`] type that says what each outcome means for the Sync: whether it stalls (a retry
//! cannot help until Git or the spec changes) and whether it backs off.

/// `Ready`: the last sync applied its revision completely.
pub const READY: &str = "Ready";
/// `Reconciling`: the agent is still working towards the spec (kstatus).
pub const RECONCILING: &str = "Reconciling";
/// `Stalled`: the agent cannot make progress until Git or the spec changes (kstatus).
pub const STALLED: &str = "Stalled";
/// `Healthy`: the kstatus health of the inventory after the last sync.
pub const HEALTHY: &str = "Healthy";

/// A condition's status `True`.
pub const TRUE: &str = "True";
/// A condition's status `False`.
pub const FALSE: &str = "False";
/// A condition's status `Unknown`.
pub const UNKNOWN: &str = "Unknown";

/// Why a Sync is in the state it is: the reason of its conditions and the result of each entry
/// of its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// The revision was applied; for `Healthy`, every object is current.
    Succeeded,
    /// `Healthy` only: objects are still rolling out.
    Progressing,
    /// The spec asks for something the agent does not do or may not do.
    Unsupported,
    /// A Secret the spec names (decryption keys, repository credentials) could not be used.
    DecryptionKeysFailed,
    /// Fetching the revision failed.
    SourceFailed,
    /// Rendering or decryption failed: nothing was applied.
    RenderFailed,
    /// The API server refused or failed an object: later stages were not applied.
    ApplyFailed,
    /// Objects did not become healthy (a wait), or one has failed (`Healthy`).
    HealthCheckFailed,
    /// A health wait was cut short by a newer revision, spec or request.
    HealthCheckCanceled,
    /// Pruning would delete more than the budget allows: nothing was pruned.
    PruneBudgetExceeded,
    /// The sync did not finish within `spec.timeout`.
    TimedOut,
    /// Writing the Sync's status failed.
    StatusFailed,
    /// The Sync does not exist.
    NotFound,
    /// A dependency (`spec.dependsOn`) is not ready yet.
    DependencyNotReady,
    /// The dependencies form a cycle through this Sync.
    DependencyCycle,
    /// A hook failed or did not finish in time: nothing after it was applied.
    HookFailed,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 16] = [
        Reason::Succeeded,
        Reason::Progressing,
        Reason::Unsupported,
        Reason::DecryptionKeysFailed,
        Reason::SourceFailed,
        Reason::RenderFailed,
        Reason::ApplyFailed,
        Reason::HealthCheckFailed,
        Reason::HealthCheckCanceled,
        Reason::PruneBudgetExceeded,
        Reason::TimedOut,
        Reason::StatusFailed,
        Reason::NotFound,
        Reason::DependencyNotReady,
        Reason::DependencyCycle,
        Reason::HookFailed,
    ];

    /// The CamelCase name written to conditions and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Succeeded => "Succeeded",
            Reason::Progressing => "Progressing",
            Reason::Unsupported => "Unsupported",
            Reason::DecryptionKeysFailed => "DecryptionKeysFailed",
            Reason::SourceFailed => "SourceFailed",
            Reason::RenderFailed => "RenderFailed",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::HealthCheckFailed => "HealthCheckFailed",
            Reason::HealthCheckCanceled => "HealthCheckCanceled",
            Reason::PruneBudgetExceeded => "PruneBudgetExceeded",
            Reason::TimedOut => "TimedOut",
            Reason::StatusFailed => "StatusFailed",
            Reason::NotFound => "NotFound",
            Reason::DependencyNotReady => "DependencyNotReady",
            Reason::DependencyCycle => "DependencyCycle",
            Reason::HookFailed => "HookFailed",
        }
    }

    /// The reason a status names (`None` for a name this agent does not write).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a retry cannot help until Git or the spec changes: the Sync is `Stalled`.
    pub fn stalls(self) -> bool {
        matches!(
            self,
            Reason::Unsupported
                | Reason::RenderFailed
                | Reason::PruneBudgetExceeded
                | Reason::DependencyCycle
        )
    }

    /// Whether this outcome is a failure: counted in `status.failures` and retried after the
    /// backoff (`spec.retry`).
    pub fn backs_off(self) -> bool {
        !matches!(
            self,
            Reason::Succeeded
                | Reason::Progressing
                | Reason::HealthCheckCanceled
                | Reason::DependencyNotReady
                | Reason::DependencyCycle
        )
    }

    /// Whether the last attempt waited for something else (its dependencies, a newer revision)
    /// rather than ending: the Sync goes on as soon as it is triggered, with no interval or
    /// backoff to wait out.
    pub fn waited(self) -> bool {
        matches!(
            self,
            Reason::HealthCheckCanceled | Reason::DependencyNotReady | Reason::DependencyCycle
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_and_says_what_it_means() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            // A stalled Sync waits for a change, not for a backoff, unless it is a failure.
            if r.waited() {
                assert!(!r.backs_off(), "{r}");
            }
        }
        assert_eq!(Reason::parse("Whatever"), None);
        // What a timeout means changed on purpose: transient, retried with backoff.
        assert!(!Reason::TimedOut.stalls() && Reason::TimedOut.backs_off());
        assert!(Reason::RenderFailed.stalls() && Reason::RenderFailed.backs_off());
        assert!(!Reason::HealthCheckCanceled.backs_off() && Reason::HealthCheckCanceled.waited());
        assert!(Reason::DependencyCycle.stalls() && !Reason::DependencyCycle.backs_off());
    }
}

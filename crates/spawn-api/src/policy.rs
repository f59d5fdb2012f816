//! The bounds of the teardown ladder, as they travel in a child's spawn spec.
//!
//! The ladder itself (cancel, terminate, hooks, kill, reap) is run by the actor runtime;
//! a backend only has to make [`Child::terminate`](crate::Child::terminate) and
//! [`Child::kill`](crate::Child::kill) do what they say.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The bounds of the teardown ladder. Sent to every child in its spawn spec, so a whole
/// tree tears down with the same bounds.
///
/// ```
/// use std::time::Duration;
/// use spawn_api::TeardownPolicy;
/// let p = TeardownPolicy::default();
/// assert_eq!(p.cancel_timeout, Duration::from_millis(500));
/// assert_eq!(p.kill_after, Duration::from_millis(1600));
/// let fast = TeardownPolicy { cancel_timeout: Duration::from_millis(50), ..p };
/// assert!(fast.worst_case() < p.worst_case());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownPolicy {
    /// How long a cancel request may take before the child is terminated.
    pub cancel_timeout: Duration,
    /// How long after terminating the child is killed.
    pub kill_after: Duration,
    /// How long after the kill the status may take before the child is reported
    /// abandoned.
    pub reap_timeout: Duration,
    /// How long a new child may take to connect back before its spawn fails.
    pub spawn_timeout: Duration,
}

impl Default for TeardownPolicy {
    fn default() -> Self {
        TeardownPolicy {
            cancel_timeout: Duration::from_millis(500),
            kill_after: Duration::from_millis(1600),
            reap_timeout: Duration::from_secs(2),
            spawn_timeout: Duration::from_secs(30),
        }
    }
}

impl TeardownPolicy {
    /// The longest the ladder can take from the cancel request to a final status
    /// (hooks excluded: they may delay it on purpose).
    pub fn worst_case(&self) -> Duration {
        self.cancel_timeout + self.kill_after + self.reap_timeout
    }
}

//! Why a task stopped: the one error type every command returns.

/// Why a task stopped.
#[derive(Debug)]
pub(crate) enum Error {
    /// The command line asked for something impossible (exit status 2, like clap's own
    /// usage errors).
    Usage(String),
    /// Something needed to carry out the task failed (exit status 1).
    Failed(String),
}

//! How a child ended, as its parent observes it.

use std::any::Any;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// The exit code of a process actor that panicked (as Rust's own default).
pub const EXIT_PANIC: i32 = 101;
/// The exit code of a process actor whose teardown surfaced an error.
pub const EXIT_FAILED: i32 = 1;
/// The exit code of a process that could not become an actor (no parent, bad boot).
pub const EXIT_SETUP: i32 = 70;

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// An in-process child's thread panicked (process children exit with code 101
    /// instead and report the panic over their channel).
    Panicked {
        /// The panic message.
        message: String,
    },
    /// It could not be stopped and was left running (a thread stuck in native code).
    Abandoned {
        /// What it was stuck in.
        reason: String,
    },
    /// Its status could not be collected.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl ChildExit {
    /// Whether the child ended cleanly (exit code 0).
    pub fn success(&self) -> bool {
        matches!(self, ChildExit::Exited(0))
    }
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildExit::Exited(c) => write!(f, "exited with code {c}"),
            ChildExit::Signaled {
                signal,
                core_dumped,
            } => write!(
                f,
                "killed by {}{}",
                signal_name(*signal),
                if *core_dumped { " (core dumped)" } else { "" }
            ),
            ChildExit::Panicked { message } => write!(f, "panicked: {message}"),
            ChildExit::Abandoned { reason } => write!(f, "abandoned: {reason}"),
            ChildExit::Unknown { reason } => write!(f, "status unknown: {reason}"),
        }
    }
}

impl ChildExit {
    /// The [`ChildExit`] of a process's wait status.
    ///
    /// ```
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::ExitStatus;
    /// use spawn_api::ChildExit;
    /// assert_eq!(ChildExit::from_status(ExitStatus::from_raw(3 << 8)), ChildExit::Exited(3));
    /// assert_eq!(
    ///     ChildExit::from_status(ExitStatus::from_raw(9)),
    ///     ChildExit::Signaled { signal: 9, core_dumped: false }
    /// );
    /// ```
    pub fn from_status(status: ExitStatus) -> ChildExit {
        match (status.code(), status.signal()) {
            (Some(code), _) => ChildExit::Exited(code),
            (None, Some(signal)) => ChildExit::Signaled {
                signal,
                core_dumped: status.core_dumped(),
            },
            (None, None) => ChildExit::Unknown {
                reason: format!("unrecognised wait status {:#x}", status.into_raw()),
            },
        }
    }
}

/// The name of a signal number (`9` → `SIGKILL`).
pub fn signal_name(sig: i32) -> String {
    let n = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    n.to_owned()
}

/// The message of a caught panic: its payload when that is a string (as `panic!` makes
/// it), else a placeholder. For backends that catch a child's panic and report
/// [`ChildExit::Panicked`].
///
/// ```
/// let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
/// assert_eq!(spawn_api::panic_message(&*caught), "boom 7");
/// let odd = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
/// assert_eq!(spawn_api::panic_message(&*odd), "panic with a non-string payload");
/// ```
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

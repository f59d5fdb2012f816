//! The spawn-backend contract: how a child actor comes to exist and how its parent
//! supervises it.
//!
//! A [`SpawnBackend`] turns a [`SpawnRequest`] into a running child that will connect
//! back to its parent at `boot.parent_addr`; the [`Child`] it returns is the parent's
//! handle for waiting on, terminating and killing it. A child may be a process (it has a
//! pid) or something in-process such as a thread hosting a sub-interpreter (it has
//! none); the teardown ladder only uses what this trait offers.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use async_trait::async_trait;
use runtime_vars::RuntimeVars;

use crate::brood::Brood;
use crate::error::{SpawnError, signal_name};
use crate::extensions::Extensions;
use crate::id::ActorId;
use crate::wire::ChildBoot;

/// A way to start child actors (`proc`, `fork`, `subint`).
#[async_trait]
pub trait SpawnBackend: Send + Sync + fmt::Debug + 'static {
    /// The backend's key, as used in [`runtime_vars::RuntimeVars::backend`] and
    /// `BROOD_BACKEND`.
    fn key(&self) -> &'static str;

    /// Start a child. It must eventually connect to `req.boot.parent_addr`, or exit.
    ///
    /// The backend may record tree-wide services it started in `req.vars.services`; the
    /// child and its descendants inherit them. Once a child exists the backend must not
    /// await anything that could be cancelled without cleaning the child up.
    ///
    /// # Errors
    /// [`SpawnError::Launch`] or [`SpawnError::Unavailable`] when nothing was started.
    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError>;

    /// Called by [`Brood::enter`] at the top of `main`: if this process was started by
    /// this backend to be an actor (or a helper of the backend), run it to completion
    /// and return the process exit code; otherwise return `None` at once.
    fn enter(&self, brood: &Brood) -> Option<i32> {
        let _ = brood;
        None
    }
}

/// What the parent asks a backend for.
#[derive(Debug)]
pub struct SpawnRequest {
    /// Where the child connects and listens, and how it starts.
    pub boot: ChildBoot,
    /// The vars the parent built for the child; sent in its spawn spec after `spawn`
    /// returns, so the backend may add to them.
    pub vars: RuntimeVars,
    /// The spawning actor's extensions: where a backend keeps per-actor state (a
    /// connection to its helper process).
    pub extensions: Extensions,
    /// The program's brood (registry, transports, backends), for backends that run the
    /// child in this process.
    pub brood: Brood,
    /// Backend-specific options from [`crate::ActorOptions::backend_option`].
    pub options: BTreeMap<String, String>,
    /// What the child's stdout and stderr are.
    pub stdio: ChildStdio,
}

/// Where a process child's standard output and error go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChildStdio {
    /// Shared with the parent (the default).
    #[default]
    Inherit,
    /// Discarded.
    Null,
}

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

/// The parent's handle on one child.
#[async_trait]
pub trait Child: Send + Sync + fmt::Debug {
    /// The child's process id, if it is a process.
    fn pid(&self) -> Option<u32>;

    /// Wait for the child to end and collect its status. Cancel-safe: dropping the
    /// future and calling again loses nothing.
    async fn wait(&mut self) -> ChildExit;

    /// Ask the child to stop now (SIGTERM to a process and its group; an interrupt for
    /// an in-process child). Returns at once; use [`wait`](Child::wait) to see it end.
    fn terminate(&mut self) -> io::Result<()>;

    /// Stop the child by force (SIGKILL; an in-process child that cannot be stopped is
    /// abandoned and [`wait`](Child::wait) then reports [`ChildExit::Abandoned`]).
    /// Returns at once.
    fn kill(&mut self) -> io::Result<()>;
}

/// Called by the teardown ladder before it hard-kills a child.
///
/// `vars` are the vars the parent built for *that child* (from its spawn spec), not the
/// parent's own: a debugger lock, for example, delays the kill only while that child may
/// hold the tree's stdio lock. The ladder waits for the returned future.
#[async_trait]
pub trait TeardownHook: Send + Sync + fmt::Debug + 'static {
    /// Runs once per child, right before the hard step of its teardown.
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars);
}

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
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use runtime_vars::RuntimeVars;

use crate::error::{RemoteError, SpawnError, kinds};
use crate::exit::{ChildExit, EXIT_FAILED, EXIT_PANIC, EXIT_SETUP};
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
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe in this sense: the runtime awaits `spawn`
    /// inside the caller's `start_actor` or `run_in_actor`, and drops the future when
    /// its caller gives up (a cancelled call, a `select!`, a timeout). Dropped at any
    /// await point, the future must leave no child running unsupervised: either nothing
    /// was started, or what was started is killed and reaped without anyone's help
    /// (`spawn-proc`'s spawner thread kills a child whose request was abandoned,
    /// `spawn-fork`'s connection kills the child of a reply nobody waits for,
    /// `spawn-subint` starts its thread without awaiting). Tree-wide services it started
    /// may stay (a retry uses them).
    ///
    /// The runtime never retries a dropped spawn by itself. Once `spawn` has returned,
    /// the runtime hands the [`Child`] to a supervisor without awaiting in between; the
    /// handle is dropped unreaped only if the runtime itself is torn down, and the
    /// backends of this workspace stop their child when that happens.
    ///
    /// # Sandboxes
    ///
    /// When `req.boot.sandbox` is set, the child must run in it (the runtime's
    /// `ActorOptions::sandbox`, tightened by the parent's own): a process backend has the
    /// child apply it before it becomes an actor and records the result in
    /// `req.vars.sandbox`; a backend that cannot sandbox its children fails with
    /// [`SpawnError::SandboxUnsupported`] and starts nothing. The runtime refuses a child
    /// whose vars do not show the sandbox it asked for.
    ///
    /// # Errors
    /// [`SpawnError::Launch`] or [`SpawnError::Unavailable`] when nothing was started;
    /// [`SpawnError::SandboxRefused`] when the kernel refused a part of the sandbox (the
    /// child is reaped).
    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError>;

    /// Called first thing in `main` (the runtime's `Brood::enter`): if this process was
    /// started by this backend to be an actor (or a helper of the backend), run it to
    /// completion through `entry` and return the process exit code; otherwise return
    /// `None` at once.
    fn enter(&self, entry: &ActorEntry) -> Option<i32> {
        let _ = entry;
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
    /// How to run a child actor in this process, for backends that do (a thread, a
    /// fork of this process).
    pub entry: ActorEntry,
    /// Backend-specific options (the runtime's `ActorOptions::backend_option`).
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

/// The parent's handle on one child.
#[async_trait]
pub trait Child: Send + Sync + fmt::Debug {
    /// The child's process id, if it is a process.
    fn pid(&self) -> Option<u32>;

    /// Wait for the child to end and collect its status.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: the runtime polls `wait` in `select!`
    /// against teardown orders and under timeouts at every step of the teardown ladder,
    /// drops the future whenever another branch wins, and calls again later. Dropping the
    /// future must lose nothing: a status collected in a poll that did not return is kept
    /// for the next call. Once `wait` has returned, later calls should return the same
    /// status at once (every backend of this workspace does).
    async fn wait(&mut self) -> ChildExit;

    /// Ask the child to stop now (SIGTERM to a process and its group; an interrupt for
    /// an in-process child). Returns at once; use [`wait`](Child::wait) to see it end.
    fn terminate(&mut self) -> io::Result<()>;

    /// Stop the child by force (SIGKILL; an in-process child that cannot be stopped is
    /// abandoned and [`wait`](Child::wait) then reports [`ChildExit::Abandoned`]).
    /// Returns at once.
    fn kill(&mut self) -> io::Result<()>;
}

/// Called by the teardown ladder before it signals a child: once before the terminate
/// step ([`before_terminate`](TeardownHook::before_terminate)) and once before the hard
/// kill ([`before_hard_reap`](TeardownHook::before_hard_reap)).
///
/// `vars` are the vars the parent built for *that child* (from its spawn spec), not the
/// parent's own: a debugger lock, for example, delays the teardown only while that child
/// may hold the tree's stdio lock, whatever the parent's own debug mode. The ladder waits
/// for the returned futures.
#[async_trait]
pub trait TeardownHook: Send + Sync + fmt::Debug + 'static {
    /// Runs once per child that ignored the cancel request, before any signal reaches
    /// it (SIGTERM, or an interrupt for an in-process child): the place to wait while a
    /// person is debugging that child, which a terminate would end. The default does
    /// nothing.
    ///
    /// # Cancel safety
    ///
    /// As [`before_hard_reap`](TeardownHook::before_hard_reap).
    async fn before_terminate(&self, child: &ActorId, vars: &RuntimeVars) {
        let _ = (child, vars);
    }

    /// Runs once per child, right before the hard step of its teardown.
    ///
    /// # Cancel safety
    ///
    /// The runtime awaits the future to completion, with no timeout of its own: the
    /// ladder, and the actor's shutdown, wait for it as long as it takes (a person may be
    /// debugging the child). It is dropped unfinished only when the actor's runtime goes
    /// away (its process ends, its own parent having killed it, say; an in-process actor
    /// is aborted); the child's handle, dropped with it, then stops the child.
    /// Implementations need not be cancel safe, but must release what they hold (a
    /// lock, say) when dropped, not only at the end of the future.
    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars);
}

/// The actor runtime as a backend sees it: "run this child actor".
///
/// A backend starts something (a process, a fork, a thread) and, on the child's side,
/// hands the child's [`ChildBoot`] to one of these methods; everything after that — the
/// handshake with the parent, the spawn spec, serving calls, tearing down the child's own
/// children — is the runtime's business. The runtime (`actor-core`'s `Brood`) implements
/// it; a backend only ever holds an [`ActorEntry`].
pub trait ActorMain: Send + Sync + fmt::Debug + 'static {
    /// Run the child actor `boot` describes as the whole of this process: build its
    /// runtime, set up logging and SIGTERM handling, serve until it ends, and return the
    /// process exit code ([`ChildOutcome::exit_code`]). For process backends, in the
    /// child process.
    fn run_process(&self, boot: ChildBoot) -> i32;

    /// Serve the child actor `boot` describes on the caller's tokio runtime, beside
    /// whatever else this process runs, with `extensions` as its per-actor state. For
    /// in-process backends. The future ends when the actor does.
    fn serve(
        &self,
        boot: ChildBoot,
        extensions: Extensions,
    ) -> Pin<Box<dyn Future<Output = ChildOutcome> + Send + 'static>>;
}

/// A cheap, cloneable handle on the [`ActorMain`] of this program.
///
/// ```
/// use spawn_api::{ActorEntry, ActorMain, ChildBoot, ChildOutcome, Extensions};
/// use std::{future::Future, pin::Pin};
///
/// #[derive(Debug)]
/// struct Refuse;
/// impl ActorMain for Refuse {
///     fn run_process(&self, _boot: ChildBoot) -> i32 {
///         spawn_api::EXIT_SETUP
///     }
///     fn serve(
///         &self,
///         _boot: ChildBoot,
///         _ext: Extensions,
///     ) -> Pin<Box<dyn Future<Output = ChildOutcome> + Send>> {
///         Box::pin(async { ChildOutcome::SetupFailed("no runtime here".into()) })
///     }
/// }
/// let entry = ActorEntry::new(Refuse);
/// assert_eq!(format!("{entry:?}"), "ActorEntry(Refuse)");
/// ```
#[derive(Clone)]
pub struct ActorEntry(Arc<dyn ActorMain>);

impl ActorEntry {
    /// Wrap the runtime's implementation.
    pub fn new(main: impl ActorMain) -> ActorEntry {
        ActorEntry(Arc::new(main))
    }

    /// See [`ActorMain::run_process`].
    pub fn run_process(&self, boot: ChildBoot) -> i32 {
        self.0.run_process(boot)
    }

    /// See [`ActorMain::serve`].
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: the future carries the actor's orderly shutdown
    /// (its children torn down through the ladder, its failure reported to its parent).
    /// Dropped, that shutdown never happens, and the tasks the actor started on the
    /// runtime (its channels, the calls it serves, its children's supervisors) run on
    /// until that runtime is shut down. Backends run it to completion, or drop it only
    /// together with the runtime it runs on (as `spawn-subint` does when it aborts an
    /// actor): then the actor's channels close, so its parent sees it gone, and its
    /// children get no orderly teardown (their handles stop them when dropped).
    pub async fn serve(&self, boot: ChildBoot, extensions: Extensions) -> ChildOutcome {
        self.0.serve(boot, extensions).await
    }
}

impl fmt::Debug for ActorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ActorEntry").field(&self.0).finish()
    }
}

/// How a child actor's serving ended, on the child's side.
#[derive(Debug)]
pub enum ChildOutcome {
    /// It was cancelled or its parent went away, with nothing failing.
    Clean,
    /// It failed: its teardown surfaced this error (a child of its own failed, say).
    Failed(RemoteError),
    /// It never became an actor: it could not reach its parent or the handshake failed.
    SetupFailed(String),
    /// It asked to exit with this code (the runtime's `ActorCx::exit`).
    Exited(i32),
}

impl ChildOutcome {
    /// The process exit code that says this outcome to a parent reading only a status:
    /// 0, [`EXIT_PANIC`], [`EXIT_FAILED`], [`EXIT_SETUP`] or the code asked for.
    ///
    /// ```
    /// use spawn_api::{ChildOutcome, EXIT_SETUP};
    /// assert_eq!(ChildOutcome::Clean.exit_code(), 0);
    /// assert_eq!(ChildOutcome::SetupFailed("x".into()).exit_code(), EXIT_SETUP);
    /// ```
    pub fn exit_code(&self) -> i32 {
        match self {
            ChildOutcome::Clean => 0,
            ChildOutcome::Failed(e) if e.kind == kinds::PANIC => EXIT_PANIC,
            ChildOutcome::Failed(_) => EXIT_FAILED,
            ChildOutcome::SetupFailed(_) => EXIT_SETUP,
            ChildOutcome::Exited(code) => *code,
        }
    }
}

//! Debug mode: the tree-wide debugger lock ([`lock`]) and the teardown that honours it
//! ([`DebugHook`], installed by [`crate::setup`]).
//!
//! The root of a tree keeps the lock (a [`debug_lock::LockTable`] in its extensions) and
//! serves it to every actor of its tree over a direct channel ([`debug_lock::Acquire`],
//! [`debug_lock::Busy`]). While an actor holds it or waits for it, its ancestors'
//! teardown ladders do not signal it (nor any actor above it): each ladder asks the root,
//! before the terminate and again before the kill, whether the child's subtree holds or
//! waits for the lock — *if the child's own vars say debug mode*, judged from the vars
//! its parent built for it, never the parent's.

use std::sync::Arc;
use std::time::Duration;

use actor_core::{ActorCx, CalleeContext, CallerContext, FnError, Portal, Registry};
use debug_lock::repl::{self, Paused};
use debug_lock::{Acquire, Busy, LockGuard, LockTable, NOT_THE_ROOT, WaitEnd};

pub use debug_lock::repl::Resume;
use spawn_api::{ActorId, RuntimeVars, TeardownHook, async_trait};

/// The functions a root serves for its tree's lock (every actor registers them; only a
/// root answers).
pub fn service() -> Registry {
    Registry::new()
        .context(
            Acquire,
            |cx, path: String, ctx: CalleeContext<Acquire>| async move {
                let table = root_table(&cx)?;
                // Dropped with this call (the caller ended it, was cancelled, or its
                // channel closed): the lock goes to the next waiter.
                let _held = table.acquire(&path).await;
                let mut stream = ctx.started(()).await?;
                while stream.recv().await?.is_some() {}
                Ok(())
            },
        )
        .call(Busy, |cx, path: String| async move {
            Ok(root_table(&cx)?.busy_under(&path))
        })
}

fn root_table(cx: &ActorCx) -> Result<Arc<LockTable>, FnError> {
    if cx.parent().is_some() {
        return Err(FnError::new(
            NOT_THE_ROOT,
            format!(
                "{} is not the root of its tree: ask the root for the debugger lock",
                cx.path()
            ),
        ));
    }
    Ok(cx.extensions().get_or_insert_with(LockTable::default))
}

/// The tree's debugger lock, held by this actor; dropping it (or [`DebugLock::release`])
/// lets the next waiter have it.
#[derive(Debug)]
pub struct DebugLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// This actor is the root: its own table.
    Here(#[allow(dead_code)] LockGuard),
    /// Held over a direct channel to the root.
    AtRoot {
        // Boxed: a context's end is large beside a guard.
        ctx: Box<CallerContext<Acquire>>,
        root: Portal,
    },
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DebugLockError {
    /// The actor's vars name no root address (it is not in a tree).
    #[error("actor {0} knows no root to ask for the debugger lock")]
    NoRoot(String),
    /// The root could not be reached.
    #[error(transparent)]
    Connect(#[from] actor_core::ConnectError),
    /// The root refused or the call failed.
    #[error(transparent)]
    Portal(#[from] actor_core::PortalError),
    /// This actor is the root and its lock table refused (never, in practice).
    #[error("{0}")]
    Fn(FnError),
}

/// Take the tree's debugger lock for this actor, waiting behind earlier requests (first
/// come, first served). The root knows the holder by its path; the lock is released
/// when the returned value is dropped or released, when this actor's channel to the
/// root closes (it exits, crashes or is killed), or when the call is cancelled. While
/// it is held or waited for, no ancestor's teardown signals this actor.
///
/// # Cancel safety
///
/// Cancel safe: dropped while waiting, the request is withdrawn.
///
/// # Errors
/// [`DebugLockError`]: no root address, the root unreachable or refusing.
pub async fn lock(cx: &ActorCx) -> Result<DebugLock, DebugLockError> {
    if cx.parent().is_none() {
        let table = root_table(cx).map_err(DebugLockError::Fn)?;
        return Ok(DebugLock {
            held: Held::Here(table.acquire(cx.path()).await),
        });
    }
    let root = root_addr(cx)?;
    let portal = cx.connect(&root).await?;
    let (ctx, ()) = portal.open_context(Acquire, cx.path().to_owned()).await?;
    Ok(DebugLock {
        held: Held::AtRoot {
            ctx: Box::new(ctx),
            root: portal,
        },
    })
}

fn root_addr(cx: &ActorCx) -> Result<spawn_api::Addr, DebugLockError> {
    cx.vars()
        .root_addr
        .as_deref()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| DebugLockError::NoRoot(cx.path().to_owned()))
}

impl DebugLock {
    /// Release the lock and wait until the root handed it on.
    pub async fn release(self) {
        match self.held {
            Held::Here(guard) => drop(guard),
            Held::AtRoot { mut ctx, root } => {
                let _ = ctx.close_send();
                let _ = ctx.result().await;
                root.close().await;
            }
        }
    }
}

/// Set in an actor's extensions once it logged that `pause()` does nothing there.
struct PauseIgnoredLogged;

/// Stop this actor for a person at the terminal, if it runs in debug mode: take the
/// tree's debugger lock (waiting behind other actors that stopped first), print a
/// banner (actor path, pid, the call it serves and for whom, backtrace) and serve a prompt on the controlling
/// terminal — `c` continue, `bt` backtrace, `vars` the actor's runtime vars, `gdb` how
/// to attach a native debugger to this process, `q` cancel this actor. Like a
/// breakpoint, the prompt holds the actor's thread: nothing else of the actor runs
/// meanwhile, its parent's teardown waits (see [`DebugHook`]), and the terminal's
/// Ctrl-C reaches the prompt instead of the tree.
///
/// Outside debug mode it does nothing (and logs that once per actor); without a
/// controlling terminal it logs why and continues.
///
/// ```no_run
/// # async fn handler(cx: brood::ActorCx) -> Result<(), brood::FnError> {
/// if brood::debug::pause(&cx).await? == brood::debug::Resume::Quit {
///     return Err(brood::FnError::new("Cancelled", "quit from the debugger"));
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`DebugLockError`] if the lock cannot be taken (the root is unreachable).
pub async fn pause(cx: &ActorCx) -> Result<Resume, DebugLockError> {
    stop_here(cx, "pause()").await
}

/// [`pause`], with the reason shown in the banner (an error about to be reported, say).
///
/// # Errors
/// As [`pause`].
pub async fn stop_here(cx: &ActorCx, reason: &str) -> Result<Resume, DebugLockError> {
    if !cx.vars().debug_mode {
        if cx.extensions().get::<PauseIgnoredLogged>().is_none() {
            cx.extensions().insert(PauseIgnoredLogged);
            tracing::info!(actor = %cx.path(), "pause() does nothing: this actor is not in debug mode");
        }
        return Ok(Resume::Continue);
    }
    let tty = match os_wrappers::tty::open_controlling() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(actor = %cx.path(), error = %e, "no terminal to debug on: continuing");
            return Ok(Resume::Continue);
        }
    };
    let held = lock(cx).await?;
    // No cancel request cuts the session short (the parent's teardown waits for it).
    let shield = cx.shield_from_cancel();
    let paused = Paused {
        path: cx.path().to_owned(),
        pid: std::process::id(),
        call: cx.call_name().map(str::to_owned),
        caller: cx.caller().map(ToString::to_string),
        reason: reason.to_owned(),
        backtrace: std::backtrace::Backtrace::force_capture().to_string(),
        vars: format!("{:#?}", cx.vars()),
    };
    let prompt = || {
        let _terminal = TerminalHeld::take(&tty);
        repl::serve(std::io::BufReader::new(&tty), &tty, &paused)
    };
    let resume = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(prompt),
        _ => prompt(),
    };
    held.release().await;
    drop(shield);
    match resume {
        Ok(Resume::Quit) => {
            cx.cancel_actor();
            Ok(Resume::Quit)
        }
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(error = %e, "the debugger prompt failed: continuing");
            Ok(Resume::Continue)
        }
    }
}

/// The terminal, held for a debugger session until dropped (both parts best effort: a
/// terminal that refuses one still serves the session).
pub(crate) struct TerminalHeld {
    // Dropped in this order: the signal keys come back, then the foreground.
    _signals: Option<os_wrappers::tty::SignalsHeld>,
    _foreground: Option<os_wrappers::tty::Foreground>,
}

impl TerminalHeld {
    pub(crate) fn take(tty: &std::fs::File) -> TerminalHeld {
        // A process actor runs in a process group of its own: take the terminal's
        // foreground to read it (a background reader is stopped by SIGTTIN).
        let foreground = os_wrappers::tty::take_foreground(tty)
            .map_err(|e| tracing::debug!(error = %e, "cannot take the terminal's foreground"))
            .ok();
        // Ctrl-C at the terminal now reaches the session as a byte, not the tree as a
        // signal.
        let signals = os_wrappers::tty::hold_signals(tty)
            .map_err(|e| tracing::debug!(error = %e, "cannot hold the terminal's signals"))
            .ok();
        TerminalHeld {
            _signals: signals,
            _foreground: foreground,
        }
    }
}

/// The teardown hook of debug mode: before a child that ignored its cancel request is
/// signalled (terminated, and again before it is killed), wait while that child — if
/// *its own* vars say debug mode — or any actor below it holds or waits for the tree's
/// debugger lock. Installed by [`crate::setup`].
#[derive(Clone, Copy, Debug)]
pub struct DebugHook {
    max_wait: Duration,
}

impl Default for DebugHook {
    fn default() -> DebugHook {
        DebugHook {
            max_wait: debug_lock::DEFAULT_MAX_WAIT,
        }
    }
}

impl DebugHook {
    /// Wait at most `bound` for a subtree to leave the debugger (default: as long as the
    /// lock is held).
    pub fn with_max_wait(bound: Duration) -> DebugHook {
        DebugHook { max_wait: bound }
    }

    async fn wait(&self, child: &ActorId, child_vars: &RuntimeVars) -> WaitEnd {
        // `child_vars` are the vars this actor built for the child's spawn spec; never
        // `runtime_vars::current()` (this actor's own): a parent outside debug mode
        // must still wait for a child in the debugger, and a parent in debug mode must
        // not delay the reap of a child that is not.
        let Some(subtree) = debug_lock::must_wait_for(child_vars) else {
            return WaitEnd::Free;
        };
        let Some(me) = ActorCx::current() else {
            return WaitEnd::Unknown;
        };
        tracing::debug!(%child, %subtree, "teardown asks whether the subtree is in the debugger");
        if let Ok(table) = root_table(&me) {
            return debug_lock::wait_while_busy(self.max_wait, || {
                let busy = table.busy_under(&subtree);
                async move { Ok::<_, std::convert::Infallible>(busy) }
            })
            .await;
        }
        let root = match root_addr(&me) {
            Ok(a) => a,
            Err(_) => return WaitEnd::Unknown,
        };
        let portal = match me.connect(&root).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach the root's debugger lock");
                return WaitEnd::Unknown;
            }
        };
        let end = debug_lock::wait_while_busy(self.max_wait, || {
            let (portal, subtree) = (portal.clone(), subtree.clone());
            async move { portal.run(Busy, subtree).await }
        })
        .await;
        portal.close().await;
        end
    }
}

#[async_trait]
impl TeardownHook for DebugHook {
    async fn before_terminate(&self, child: &ActorId, vars: &RuntimeVars) {
        self.wait(child, vars).await;
    }

    async fn before_hard_reap(&self, child: &ActorId, vars: &RuntimeVars) {
        self.wait(child, vars).await;
    }
}

//! # debug-lock: brood's tree-wide debugger lock
//!
//! Any actor of a tree may stop in a debugger; the terminal is handed to one at a time.
//! The root of the tree keeps a [`LockTable`]: a first-in, first-out lock whose holder
//! and waiters are known by their actor paths. An actor takes it over a direct channel
//! to the root with the [`Acquire`] context (the root sends `started` once the lock is
//! the caller's, and releases it when the context ends — the caller closes it, the
//! caller is cancelled, or its channel closes because it exited, crashed or was killed),
//! and a parent's teardown asks the root with [`Busy`] whether a child's subtree holds
//! or waits for it.
//!
//! The rule the teardown hook follows ([`must_wait_for`]): whether to wait for a child is
//! decided by the vars its parent built for *that child* (its spawn spec), never by the
//! parent's own (`runtime_vars::current()`). A tree may mix debug modes: a parent that is
//! not in debug mode must still wait for a child that is and sits in the debugger, and a
//! parent in debug mode must not delay the reap of a child that is not.
//!
//! ## Who should depend on this crate
//!
//! The facade (`brood`) wires it in: it serves [`Acquire`] and [`Busy`] in every actor
//! (only a root answers them), and installs the teardown hook. It depends only on the
//! contract (`spawn-api`) and `runtime-vars`.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use debug_lock::LockTable;
//! let table = LockTable::default();
//! let held = table.acquire("root/a/leaf").await;
//! assert_eq!(table.busy_under("root/a").as_deref(), Some("root/a/leaf"));
//! assert_eq!(table.busy_under("root/b"), None);
//! drop(held);
//! assert_eq!(table.busy_under("root/a"), None);
//! # });
//! ```

pub mod repl;
mod table;

pub use table::{LockGuard, LockTable};

use std::time::Duration;

use runtime_vars::RuntimeVars;

spawn_api::context!(
    /// Take the tree's debugger lock for the actor at the given path. The root answers
    /// `started` once the caller holds it (waiters are served first come, first served)
    /// and releases it when the context ends: the caller closes its side, returns, is
    /// cancelled, or its channel closes. Served by the root only.
    pub Acquire = "debug.lock": String => started (), in (), out (), return ()
);

spawn_api::call!(
    /// The path of an actor at or under the given path that holds or waits for the
    /// tree's debugger lock, if any. Served by the root only.
    pub Busy = "debug.busy": String => Option<String>
);

/// The kind of the error an actor that is not a root answers [`Acquire`] or [`Busy`]
/// with.
pub const NOT_THE_ROOT: &str = "NotTheRoot";

/// The subtree a teardown hook must wait for before it signals the child whose spawn
/// spec carried `child_vars`: the child's path if *the child* runs in debug mode, else
/// `None` (its teardown goes on at once).
///
/// ```
/// use runtime_vars::RuntimeVars;
/// let root = RuntimeVars::root("root", "proc");
/// let mut child = root.for_child("worker", "uds:/run/b/root.sock");
/// assert_eq!(debug_lock::must_wait_for(&child), None);
/// child.debug_mode = true;
/// assert_eq!(debug_lock::must_wait_for(&child).as_deref(), Some("root/worker"));
/// ```
pub fn must_wait_for(child_vars: &RuntimeVars) -> Option<String> {
    child_vars
        .debug_mode
        .then(|| child_vars.tree_path.join("/"))
}

/// How long a teardown hook waits for a subtree to leave the debugger, by default: for
/// as long as the lock is held (a person is debugging).
pub const DEFAULT_MAX_WAIT: Duration = Duration::MAX;

/// How often a waiting hook asks again.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Wait while `busy` says the subtree holds or waits for the lock, asking every
/// [`POLL_EVERY`], for at most `max_wait`. `busy` answers `Ok(Some(path))` while busy,
/// `Ok(None)` once free, and `Err` when it cannot tell (the root is gone: nobody can
/// hold the lock then). Returns how it ended.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// let mut asked = 0;
/// let end = debug_lock::wait_while_busy(Duration::from_secs(5), || {
///     asked += 1;
///     let busy = asked < 3;
///     async move { Ok::<_, String>(busy.then(|| "root/x".to_owned())) }
/// })
/// .await;
/// assert_eq!(end, debug_lock::WaitEnd::Free);
/// # });
/// ```
pub async fn wait_while_busy<F, Fut, E>(max_wait: Duration, mut busy: F) -> WaitEnd
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, E>>,
    E: std::fmt::Display,
{
    let start = tokio::time::Instant::now();
    let mut logged = false;
    loop {
        match busy().await {
            Ok(None) => return WaitEnd::Free,
            Ok(Some(path)) => {
                if !logged {
                    tracing::warn!(actor = %path, "teardown waits: an actor of this subtree is in the debugger");
                    logged = true;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the root about the debugger lock; not waiting");
                return WaitEnd::Unknown;
            }
        }
        if start.elapsed() >= max_wait {
            tracing::warn!(after = ?max_wait, "teardown stops waiting for the debugger");
            return WaitEnd::TimedOut;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// How [`wait_while_busy`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// Nobody in the subtree holds or waits for the lock.
    Free,
    /// Still busy after the bound.
    TimedOut,
    /// The root could not be asked.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_vars_decide_not_the_parents() {
        let mut parent = RuntimeVars::root("root", "proc");
        parent.debug_mode = true;
        let mut child = parent.for_child("c", "uds:/x");
        child.debug_mode = false;
        assert_eq!(
            must_wait_for(&child),
            None,
            "a child not in debug mode: no wait"
        );
        let mut plain = RuntimeVars::root("root", "proc");
        plain.debug_mode = false;
        let mut dbg = plain.for_child("c", "uds:/x");
        dbg.debug_mode = true;
        assert_eq!(must_wait_for(&dbg).as_deref(), Some("root/c"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_times_out_and_an_unknown_root_does_not_hold() {
        let t = tokio::time::Instant::now();
        let end = wait_while_busy(Duration::from_secs(1), || async {
            Ok::<_, String>(Some("root/x".to_owned()))
        })
        .await;
        assert_eq!(end, WaitEnd::TimedOut);
        assert!(t.elapsed() >= Duration::from_secs(1));
        let end = wait_while_busy(Duration::MAX, || async {
            Err::<Option<String>, _>("gone".to_owned())
        })
        .await;
        assert_eq!(end, WaitEnd::Unknown);
    }
}

//! The runtime variables of a brood actor.
//!
//! A parent builds a [`RuntimeVars`] for every child it spawns (derived from its own
//! with [`RuntimeVars::for_child`], then adjusted by a [`VarsOverride`]) and sends it in
//! the child's spawn spec. The child installs it as *its own* actor scope; code running
//! inside that actor reads it with [`current`].
//!
//! There is no process-global state here: several actors may share one process (the
//! sub-interpreter backend runs each actor on its own thread, and a program may run two
//! root actors). The view is carried by the actor's futures ([`scope`]) and threads
//! ([`enter`]), the way a tokio task-local is, so two actors in one process each see
//! their own vars.
//!
//! ## Who should depend on this crate
//!
//! Nobody needs to name it: the contract re-exports it (`spawn_api::runtime_vars`), the
//! actor runtime too (`actor_core::runtime_vars`), and the `brood` facade as
//! `brood::vars`. Backends and transports use it through `spawn-api`; programs through
//! the facade. It depends on `serde` alone, so that the contract can carry it without
//! anything else; a crate that only reads an actor's vars ([`current`]) and wants no
//! other part of brood may depend on it directly.
//!
//! ```
//! use runtime_vars::{RuntimeVars, VarsOverride};
//!
//! let root = RuntimeVars::root("root", "proc");
//! let mut child = root.for_child("worker", "root@1f");
//! VarsOverride { debug_mode: Some(true), ..Default::default() }.apply(&mut child);
//! assert_eq!(child.tree_path, ["root", "worker"]);
//! assert!(child.debug_mode && !root.debug_mode);
//!
//! let _guard = runtime_vars::enter(child.into());
//! assert_eq!(runtime_vars::current().name(), "worker");
//! ```

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

pub mod sandbox;

/// What a parent builds for a child actor: where the tree lives, how it should behave,
/// and who it is within the tree.
///
/// Addresses are kept in their string form (`"uds:/run/user/1000/brood/ab12.sock"`);
/// `spawn_api::Addr` parses them. Keeping them as text lets this crate stay free of any
/// transport knowledge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVars {
    /// Whether this actor is the root of its tree (it has no parent).
    pub is_root: bool,
    /// The root actor's listening address, `None` in the root itself until it has bound.
    pub root_addr: Option<String>,
    /// Addresses of the tree's registrars (the root is the first one).
    pub registry_addrs: Vec<String>,
    /// The transports this actor may use, by key (`"uds"`, `"shm"`), preferred first:
    /// its own (where it listens, and its children's unless they choose another) first,
    /// then those of its ancestors, nearest first, no key twice. A root lists only its
    /// own. (A child may be given any transport its program configured; see the
    /// runtime's `ActorOptions::transport`.)
    pub enabled_transports: Vec<String>,
    /// Whether the actor runs in debug mode (it may take the tree's stdio lock).
    pub debug_mode: bool,
    /// A `tracing` filter directive (`"info"`, `"brood=debug,warn"`) for the actor's logs.
    pub log_level: String,
    /// The spawn backend that started this actor (`"proc"`, `"fork"`, `"subint"`).
    pub backend: String,
    /// The names of the actors from the root down to this one, this one last.
    pub tree_path: Vec<String>,
    /// The parent's actor id in its display form (`name@uid`); `None` for a root.
    pub parent_id: Option<String>,
    /// Tree-wide services by name (a forkserver's socket, a debugger lock's address),
    /// recorded by the layer that started them and inherited by every descendant.
    pub services: BTreeMap<String, String>,
    /// Free-form settings the user passes down the tree.
    pub user: BTreeMap<String, String>,
    /// The sandbox this actor runs in and what was applied (`None`: no sandbox). Inherited
    /// by children, which may only tighten it.
    pub sandbox: Option<sandbox::SandboxVars>,
}

impl RuntimeVars {
    /// The vars of a new root actor called `name`, spawning through `backend` by default.
    ///
    /// ```
    /// let vars = runtime_vars::RuntimeVars::root("root", "proc");
    /// assert!(vars.is_root);
    /// assert_eq!(vars.path(), "root");
    /// ```
    pub fn root(name: impl Into<String>, backend: impl Into<String>) -> Self {
        RuntimeVars {
            is_root: true,
            root_addr: None,
            registry_addrs: Vec::new(),
            enabled_transports: Vec::new(),
            debug_mode: false,
            log_level: "info".to_owned(),
            backend: backend.into(),
            tree_path: vec![name.into()],
            parent_id: None,
            services: BTreeMap::new(),
            user: BTreeMap::new(),
            sandbox: None,
        }
    }

    /// The vars this actor hands to a child called `name`: everything inherited except
    /// that the child is not a root, its tree path gains its name and its parent is
    /// `parent_id`.
    ///
    /// ```
    /// let root = runtime_vars::RuntimeVars::root("root", "proc");
    /// let child = root.for_child("a", "root@01");
    /// let grandchild = child.for_child("b", "a@02");
    /// assert_eq!(grandchild.path(), "root/a/b");
    /// assert_eq!(grandchild.parent_id.as_deref(), Some("a@02"));
    /// ```
    pub fn for_child(&self, name: impl Into<String>, parent_id: impl Into<String>) -> Self {
        let mut child = self.clone();
        child.is_root = false;
        child.tree_path.push(name.into());
        child.parent_id = Some(parent_id.into());
        child
    }

    /// This actor's own name (the last element of the tree path).
    pub fn name(&self) -> &str {
        self.tree_path.last().map(String::as_str).unwrap_or("")
    }

    /// The tree path joined with `/`, e.g. `root/worker/helper`.
    pub fn path(&self) -> String {
        self.tree_path.join("/")
    }

    /// How deep this actor sits: 0 for the root.
    pub fn depth(&self) -> usize {
        self.tree_path.len().saturating_sub(1)
    }
}

/// Per-child adjustments applied on top of the inherited vars. `None` keeps the
/// inherited value; `user` entries are merged over the inherited map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarsOverride {
    /// Turn debug mode on or off for this child (and, by inheritance, its subtree).
    pub debug_mode: Option<bool>,
    /// Replace the log filter directive.
    pub log_level: Option<String>,
    /// Replace the backend key recorded in the child's vars.
    pub backend: Option<String>,
    /// Replace the list of enabled transports.
    pub enabled_transports: Option<Vec<String>>,
    /// Entries merged into the inherited user map.
    pub user: BTreeMap<String, String>,
}

impl VarsOverride {
    /// No overrides: everything inherited.
    pub fn new() -> VarsOverride {
        VarsOverride::default()
    }

    /// Turn debug mode on or off.
    ///
    /// ```
    /// let o = runtime_vars::VarsOverride::new().debug_mode(true).log_level("debug").user("k", "v");
    /// assert_eq!((o.debug_mode, o.log_level.as_deref()), (Some(true), Some("debug")));
    /// assert_eq!(o.user["k"], "v");
    /// ```
    pub fn debug_mode(mut self, on: bool) -> VarsOverride {
        self.debug_mode = Some(on);
        self
    }

    /// Replace the log filter directive.
    pub fn log_level(mut self, level: impl Into<String>) -> VarsOverride {
        self.log_level = Some(level.into());
        self
    }

    /// Add (or replace) a user var.
    pub fn user(mut self, key: impl Into<String>, value: impl Into<String>) -> VarsOverride {
        self.user.insert(key.into(), value.into());
        self
    }

    /// Apply these overrides to `vars` in place.
    ///
    /// ```
    /// use runtime_vars::{RuntimeVars, VarsOverride};
    /// let mut vars = RuntimeVars::root("r", "proc").for_child("c", "r@1");
    /// let mut o = VarsOverride::default();
    /// o.user.insert("k".into(), "v".into());
    /// o.log_level = Some("debug".into());
    /// o.apply(&mut vars);
    /// assert_eq!(vars.user["k"], "v");
    /// assert_eq!(vars.log_level, "debug");
    /// ```
    pub fn apply(&self, vars: &mut RuntimeVars) {
        if let Some(d) = self.debug_mode {
            vars.debug_mode = d;
        }
        if let Some(l) = &self.log_level {
            vars.log_level.clone_from(l);
        }
        if let Some(b) = &self.backend {
            vars.backend.clone_from(b);
        }
        if let Some(t) = &self.enabled_transports {
            vars.enabled_transports.clone_from(t);
        }
        for (k, v) in &self.user {
            vars.user.insert(k.clone(), v.clone());
        }
    }

    /// Whether these overrides change nothing.
    pub fn is_empty(&self) -> bool {
        *self == VarsOverride::default()
    }
}

/// Returned by [`try_current`] outside of any actor scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotInActor;

impl fmt::Display for NotInActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not running inside a brood actor (no actor scope on this task or thread)")
    }
}

impl std::error::Error for NotInActor {}

thread_local! {
    // The scope of the actor whose code this thread is running *right now*. Set around
    // each poll of a scoped future and for the life of an `enter` guard, then restored,
    // so it never leaks from one actor's task to another's on a shared worker thread.
    static CURRENT: RefCell<Option<Arc<RuntimeVars>>> = const { RefCell::new(None) };
}

/// The running actor's vars.
///
/// # Panics
/// Outside of an actor scope (see [`try_current`] for the fallible form).
///
/// ```
/// use runtime_vars::RuntimeVars;
/// let _g = runtime_vars::enter(RuntimeVars::root("root", "proc").into());
/// assert!(runtime_vars::current().is_root);
/// ```
pub fn current() -> Arc<RuntimeVars> {
    match try_current() {
        Ok(v) => v,
        Err(e) => panic!("runtime_vars::current(): {e}"),
    }
}

/// The running actor's vars, or [`NotInActor`] outside of any actor scope.
///
/// ```
/// assert!(runtime_vars::try_current().is_err());
/// ```
pub fn try_current() -> Result<Arc<RuntimeVars>, NotInActor> {
    CURRENT.with(|c| c.borrow().clone()).ok_or(NotInActor)
}

/// Swaps the thread's current scope on creation and puts the previous one back on drop,
/// including when the scoped code panics.
struct Swap {
    prev: Option<Arc<RuntimeVars>>,
}

impl Swap {
    fn install(vars: Option<Arc<RuntimeVars>>) -> Swap {
        let prev = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), vars));
        Swap { prev }
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

/// Keeps `vars` as this thread's actor scope until dropped. For code that owns a thread
/// (an actor's main thread); async code uses [`scope`] instead.
///
/// The guard is not `Send`: it must be dropped on the thread that created it. Guards
/// nest; dropping one restores the scope that was current before it.
///
/// ```
/// use runtime_vars::RuntimeVars;
/// let outer = runtime_vars::enter(RuntimeVars::root("a", "proc").into());
/// {
///     let _inner = runtime_vars::enter(RuntimeVars::root("b", "proc").into());
///     assert_eq!(runtime_vars::current().name(), "b");
/// }
/// assert_eq!(runtime_vars::current().name(), "a");
/// drop(outer);
/// assert!(runtime_vars::try_current().is_err());
/// ```
pub fn enter(vars: Arc<RuntimeVars>) -> EnterGuard {
    EnterGuard {
        _swap: Swap::install(Some(vars)),
        _not_send: PhantomData,
    }
}

/// Returned by [`enter`]; restores the previous scope when dropped.
#[must_use = "the scope ends when the guard is dropped"]
pub struct EnterGuard {
    _swap: Swap,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for EnterGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnterGuard").finish_non_exhaustive()
    }
}

/// Runs `fut` with `vars` as its actor scope: every poll of the returned future sees
/// `vars` through [`current`], whichever thread polls it.
///
/// Tasks spawned from inside do not inherit the scope by themselves; the actor runtime
/// wraps every task it spawns.
///
/// ```
/// use runtime_vars::RuntimeVars;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let vars = RuntimeVars::root("scoped", "proc");
/// let name = block_on(runtime_vars::scope(vars.into(), async {
///     runtime_vars::current().name().to_owned()
/// }));
/// assert_eq!(name, "scoped");
/// assert!(runtime_vars::try_current().is_err());
/// ```
pub fn scope<F: Future>(vars: Arc<RuntimeVars>, fut: F) -> Scoped<F> {
    Scoped { vars, fut }
}

pin_project_lite::pin_project! {
    /// A future that runs with an actor scope; see [`scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        vars: Arc<RuntimeVars>,
        #[pin]
        fut: F,
    }
}

impl<F> Scoped<F> {
    /// The vars this future runs with.
    pub fn vars(&self) -> &Arc<RuntimeVars> {
        &self.vars
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _swap = Swap::install(Some(this.vars.clone()));
        this.fut.poll(cx)
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("actor", &self.vars.path())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_inherits_and_overrides_apply_to_child_only() {
        let mut root = RuntimeVars::root("root", "proc");
        root.user.insert("team".into(), "a".into());
        root.root_addr = Some("uds:/tmp/x.sock".into());
        let plain = root.for_child("plain", "root@1");
        let mut debug = root.for_child("debug", "root@1");
        VarsOverride {
            debug_mode: Some(true),
            ..Default::default()
        }
        .apply(&mut debug);
        assert!(!root.debug_mode && !plain.debug_mode && debug.debug_mode);
        assert_eq!(plain.user["team"], "a");
        assert_eq!(plain.root_addr, root.root_addr);
        assert!(!plain.is_root);
        assert_eq!(debug.depth(), 1);
    }

    #[test]
    fn vars_round_trip_through_postcard() {
        let mut v = RuntimeVars::root("root", "proc").for_child("c", "root@1");
        v.user.insert("k".into(), "v".into());
        let bytes = postcard::to_allocvec(&v).unwrap();
        let back: RuntimeVars = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn two_threads_see_their_own_scope() {
        let handles: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|name| {
                std::thread::spawn(move || {
                    let _g = enter(RuntimeVars::root(name, "proc").into());
                    for _ in 0..1000 {
                        assert_eq!(current().name(), name);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(try_current().is_err());
    }

    #[test]
    fn scope_is_restored_after_a_panicking_poll() {
        let _outer = enter(RuntimeVars::root("outer", "proc").into());
        let result = std::panic::catch_unwind(|| {
            let fut = scope(RuntimeVars::root("inner", "proc").into(), async {
                assert_eq!(current().name(), "inner");
                panic!("boom");
            });
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut fut = std::pin::pin!(fut);
            let _ = fut.as_mut().poll(&mut cx);
        });
        assert!(result.is_err());
        assert_eq!(current().name(), "outer");
    }

    #[test]
    fn interleaved_scoped_futures_on_one_thread_do_not_mix() {
        use std::task::Poll;
        let mut a = Box::pin(scope(RuntimeVars::root("a", "proc").into(), async {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(current().name().to_owned());
                YieldOnce(false).await;
            }
            seen
        }));
        let mut b = Box::pin(scope(RuntimeVars::root("b", "proc").into(), async {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(current().name().to_owned());
                YieldOnce(false).await;
            }
            seen
        }));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut ra, mut rb) = (None, None);
        while ra.is_none() || rb.is_none() {
            if ra.is_none()
                && let Poll::Ready(v) = a.as_mut().poll(&mut cx)
            {
                ra = Some(v);
            }
            if rb.is_none()
                && let Poll::Ready(v) = b.as_mut().poll(&mut cx)
            {
                rb = Some(v);
            }
            assert!(try_current().is_err());
        }
        assert_eq!(ra.unwrap(), ["a", "a", "a"]);
        assert_eq!(rb.unwrap(), ["b", "b", "b"]);
    }

    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

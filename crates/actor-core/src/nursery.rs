//! [`Nursery`]: the scope that owns child actors.
//!
//! Every child a nursery starts has a supervisor task that owns the backend's
//! [`Child`] handle: it waits for the child to connect back, watches for its exit, runs
//! the teardown ladder when told to, reaps it, removes its endpoint and reports its
//! error. The nursery scope ends only when every supervisor has reaped its child.
//!
//! Semantics (tractor's, with Rust's drop-cancellation):
//! - the body runs; if a child fails meanwhile, the body is cancelled (dropped) and every
//!   other child is torn down (one-cancels-all);
//! - when the body returns `Ok`, `run_in_actor` children are awaited (soft wait), then
//!   `start_actor` children are cancelled through the ladder;
//! - if the nursery future itself is dropped, every child is still torn down by its
//!   supervisor: nothing is orphaned.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_vars::sandbox::Sandbox;
use runtime_vars::{RuntimeVars, VarsOverride};
use tokio::sync::{oneshot, watch};

use crate::actor::{ActorCx, ActorInner};
use crate::children::{ChildSlot, NurseryState};
use crate::conn::{Conn, Peer, Side};
use crate::error::{ChildError, FnError, NurseryError, PortalError};
use crate::handshake::Handshaken;
use crate::portal::Portal;
use crate::teardown::ChildReport;
use crate::teardown::{Step, run_ladder};
use spawn_api::{
    ActorId, Addr, CallFn, Child, ChildBoot, ChildExit, ChildStdio, Frame, Msg, Payload,
    RemoteError, RuntimeFlavor, SpawnError, SpawnRequest, SpawnSpec, Transport, Wire, kinds,
    signal_name,
};

/// How to start one child actor.
///
/// ```
/// use actor_core::ActorOptions;
/// let opts = ActorOptions::new()
///     .vars(|v| v.debug_mode(true).user("shard", "3"))
///     .backend_option("python", "eager")
///     .transport("shm");
/// assert_eq!(opts.vars.debug_mode, Some(true));
/// assert_eq!(opts.transport.as_deref(), Some("shm"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ActorOptions {
    /// The backend key; `None` uses the parent's backend.
    pub backend: Option<String>,
    /// The transport key; `None` uses the parent's transport. See
    /// [`ActorOptions::transport`].
    pub transport: Option<String>,
    /// Changes to the vars the child inherits.
    pub vars: VarsOverride,
    /// Options only the backend understands.
    pub backend_options: BTreeMap<String, String>,
    /// The child's stdout and stderr.
    pub stdio: ChildStdio,
    /// The child's tokio runtime.
    pub runtime: RuntimeFlavor,
    /// The sandbox the child runs in; see [`ActorOptions::sandbox`].
    pub sandbox: Option<Sandbox>,
}

impl ActorOptions {
    /// Default options: the parent's backend, inherited vars, shared stdio, a
    /// current-thread runtime.
    pub fn new() -> ActorOptions {
        ActorOptions::default()
    }

    /// Spawn through the backend with key `key`.
    pub fn backend(mut self, key: impl Into<String>) -> Self {
        self.backend = Some(key.into());
        self
    }

    /// Run the child in `sandbox`: its own Linux namespaces, a read-only view of the
    /// filesystem, resource limits, no capabilities, `no_new_privs` and a seccomp filter
    /// (see [`Sandbox`]; [`Sandbox::new`] is the least-privilege default). The child
    /// applies it to itself before it becomes an actor and reports what the kernel
    /// granted; its vars then say so ([`RuntimeVars::sandbox`]).
    ///
    /// A child of a sandboxed actor runs in its parent's sandbox whatever it asks; what
    /// it asks can only tighten it ([`Sandbox::tightened_by`]).
    ///
    /// Only process backends (`proc`, `fork`) can sandbox a child. The spawn fails with
    /// [`SpawnError::SandboxRefused`] naming the part the kernel or the caller's
    /// privileges refused (unless the sandbox is `best_effort`), and with
    /// [`SpawnError::SandboxUnsupported`] on a backend whose children share their
    /// parent's process (`subint`).
    ///
    /// ```
    /// use actor_core::{ActorOptions, sandbox::{Network, Sandbox}};
    /// let opts = ActorOptions::new()
    ///     .backend("proc")
    ///     .sandbox(Sandbox::new().network(Network::Loopback).memory(256 << 20).tasks(64));
    /// assert_eq!(opts.sandbox.unwrap().limits.tasks, Some(64));
    /// ```
    ///
    /// [`RuntimeVars::sandbox`]: crate::RuntimeVars::sandbox
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Talk to the child over the transport with key `key` (`"uds"`, `"shm"`): the child
    /// listens on it, its own children use it unless they choose another, and the
    /// channel between it and this actor runs over it. Any transport the program
    /// configured may be chosen, whatever its parent uses; an unknown key fails the spawn
    /// with [`SpawnError::UnknownTransport`].
    ///
    /// The child connects back to its parent on the child's transport: a parent whose
    /// own transport is another opens a listener on this one when its first child asks
    /// for it, keeps it until the parent ends, and accepts its children on that
    /// transport there. Nothing else changes: peers reach an actor at the address it
    /// listens on ([`ActorCx::addr`]), over that address's transport.
    ///
    /// The child's [`RuntimeVars::enabled_transports`](runtime_vars::RuntimeVars) lists
    /// its own transport first, then those of its ancestors (nearest first, no key
    /// twice); its `services` map `transport.<key>` to where its parent (or the nearest
    /// ancestor that does) listens on `<key>`, the location new endpoints on that
    /// transport are placed next to.
    ///
    /// ```
    /// use actor_core::ActorOptions;
    /// let opts = ActorOptions::new().transport("shm");
    /// assert_eq!(opts.transport.as_deref(), Some("shm"));
    /// ```
    pub fn transport(mut self, key: impl Into<String>) -> Self {
        self.transport = Some(key.into());
        self
    }

    /// Override the child's runtime vars (debug mode, log filter, user vars); its
    /// subtree inherits them.
    ///
    /// ```
    /// use actor_core::ActorOptions;
    /// let opts = ActorOptions::new().vars(|v| v.debug_mode(true).user("shard", "3"));
    /// assert_eq!(opts.vars.user["shard"], "3");
    /// ```
    pub fn vars(mut self, set: impl FnOnce(VarsOverride) -> VarsOverride) -> Self {
        self.vars = set(std::mem::take(&mut self.vars));
        self
    }

    /// Set a backend-specific option.
    pub fn backend_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.backend_options.insert(key.into(), value.into());
        self
    }

    /// Set the child's stdio.
    pub fn stdio(mut self, stdio: ChildStdio) -> Self {
        self.stdio = stdio;
        self
    }

    /// Set the child's runtime flavor.
    pub fn runtime(mut self, flavor: RuntimeFlavor) -> Self {
        self.runtime = flavor;
        self
    }
}

impl ActorCx {
    /// Open a nursery in this actor: `body` may spawn children, which are all finished,
    /// cancelled or reaped when this returns. See [`Nursery`].
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future drops `body` at its current
    /// await point and, with it, the body's result. Nothing is orphaned: the nursery
    /// closes and every child is torn down in the background by its supervisor, through
    /// the whole ladder (hooks included), as when the body returns. What goes wrong with
    /// those children is not lost either: it is reported when this actor ends, as the
    /// actor's failure (its parent sees it as a [`ChildError`](crate::ChildError); a
    /// root logs it).
    ///
    /// # Errors
    /// [`NurseryError`] with the body's error and every child's error.
    pub async fn open_nursery<R>(
        &self,
        body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
    ) -> Result<R, NurseryError> {
        run_nursery(&self.inner, body).await
    }
}

/// Tears every child down if the nursery future is dropped before it finished.
struct DropGuard {
    state: Option<Arc<NurseryState>>,
    actor: Arc<ActorInner>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            // The supervisors are tasks of the actor: they run the ladders on their own,
            // and what goes wrong is reported when the actor ends.
            state.close_and_order();
            self.actor.adopt_orphan(state);
        }
    }
}

/// A scope that owns child actors.
///
/// Semantics (tractor's, with Rust's drop-cancellation):
/// - the body runs; if a child fails meanwhile, the body is cancelled (dropped) and every
///   other child is torn down (one-cancels-all);
/// - when the body returns `Ok`, `run_in_actor` children are awaited (soft wait), then
///   `start_actor` children are cancelled through the ladder;
/// - if the nursery future itself is dropped, every child is still torn down by its
///   supervisor: nothing is orphaned.
///
/// Opened by [`RootBuilder::run`](crate::RootBuilder::run) and
/// [`ActorCx::open_nursery`](crate::ActorCx::open_nursery), which pass it to their body
/// by reference.
pub struct Nursery {
    actor: Arc<ActorInner>,
    state: Arc<NurseryState>,
}

impl std::fmt::Debug for Nursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nursery")
            .field("actor", &self.actor.path)
            .field("children", &self.state.children.lock().unwrap().len())
            .finish()
    }
}

impl Nursery {
    /// The tree path of the actor that owns this nursery.
    pub fn actor_path(&self) -> &str {
        &self.actor.path
    }

    /// The actor that owns this nursery, as its handlers see it: how a root's body finds
    /// other actors ([`ActorCx::find_actor`]) or opens direct portals.
    ///
    /// ```no_run
    /// # async fn body(nursery: &actor_core::Nursery) -> Result<(), actor_core::FnError> {
    /// let cx = nursery.actor();
    /// for actor in cx.list_actors().await? {
    ///     println!("{} (pid {})", actor.path, actor.pid);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn actor(&self) -> ActorCx {
        ActorCx::of(self.actor.clone())
    }

    /// Another handle on this nursery (for a supervisor's task).
    pub(crate) fn handle(&self) -> Nursery {
        Nursery {
            actor: self.actor.clone(),
            state: self.state.clone(),
        }
    }

    pub(crate) fn state(&self) -> &Arc<NurseryState> {
        &self.state
    }

    pub(crate) fn actor_inner(&self) -> &Arc<ActorInner> {
        &self.actor
    }

    /// Start a supervised child: as [`Nursery::start_actor`], but its end goes to
    /// `watch` instead of failing the nursery.
    pub(crate) async fn start_watched(
        &self,
        name: &str,
        opts: ActorOptions,
        watch: crate::children::ChildWatch,
    ) -> Result<(Arc<ChildSlot>, Portal), SpawnError> {
        let (slot, conn) = self.spawn_watched(name, opts, false, Some(watch)).await?;
        let portal = Portal::new(conn, Some(slot.clone()), self.actor.policy);
        Ok((slot, portal))
    }

    /// Start a child actor called `name` that serves the program's registry until it is
    /// cancelled (at the latest when this nursery's body returns).
    ///
    /// Returns once the child has connected back and proved itself: the [`Portal`] is
    /// ready for calls.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe in that dropping the future never leaves a child
    /// behind. While the backend is starting the child, the backend withdraws it (see
    /// [`SpawnBackend::spawn`](spawn_api::SpawnBackend::spawn)) and the endpoint reserved
    /// for it is removed. Once the backend has returned it, the child is torn down in the
    /// background by its supervisor (killed if its handshake is not done, else through
    /// the ladder) and appears in [`reports`](Nursery::reports). The child is not kept,
    /// though: calling `start_actor` again starts a new one.
    ///
    /// # Errors
    /// [`SpawnError`] if the backend could not start it, it exited before connecting
    /// back, did not connect within the spawn timeout, or the nursery is closing.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actor_core::{ActorOptions, FnError, Nursery};
    ///
    /// actor_core::call!(Add: (i64, i64) => i64);
    ///
    /// async fn body(nursery: &Nursery) -> Result<i64, FnError> {
    ///     let adder = nursery
    ///         .start_actor("adder", ActorOptions::new().vars(|v| v.user("role", "math")))
    ///         .await?;
    ///     assert_eq!(adder.path(), format!("{}/adder", nursery.actor_path()));
    ///     // The child serves calls until the body returns; then the nursery cancels it.
    ///     let a = adder.run(Add, (1, 2)).await?;
    ///     let b = adder.run(Add, (a, 39)).await?;
    ///     Ok(b)
    /// }
    /// # async fn demo(brood: actor_core::Brood) -> Result<(), actor_core::RootError> {
    /// assert_eq!(brood.root().run(body).await?, 42);
    /// # Ok(()) }
    /// ```
    pub async fn start_actor(&self, name: &str, opts: ActorOptions) -> Result<Portal, SpawnError> {
        let (slot, conn) = self.spawn_child(name, opts, false).await?;
        Ok(Portal::new(conn, Some(slot), self.actor.policy))
    }

    /// Start a child actor called `name`, run `function(args)` in it, and end it when the
    /// function returns. The nursery waits for the result before its scope ends; an
    /// error of the function fails the nursery (and cancels the other children).
    ///
    /// Returns once the child has connected back; the function then runs in the
    /// background, and [`RunHandle::result`] waits for what it returned.
    ///
    /// # Cancel safety
    ///
    /// As [`Nursery::start_actor`]: dropping the future before it completes never leaves
    /// a child behind (one already started is torn down in the background), and the
    /// function is not called. Once it has returned the function runs whatever becomes of
    /// the [`RunHandle`].
    ///
    /// # Errors
    /// As [`Nursery::start_actor`]; also [`SpawnError`] if `args` do not encode.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actor_core::{ActorOptions, FnError, Nursery};
    ///
    /// actor_core::call!(Fib: u32 => u64);
    ///
    /// async fn body(nursery: &Nursery) -> Result<u64, FnError> {
    ///     // Two children, each running one function and ending with it.
    ///     let a = nursery.run_in_actor("fib-30", Fib, 30, ActorOptions::new()).await?;
    ///     let b = nursery.run_in_actor("fib-31", Fib, 31, ActorOptions::new()).await?;
    ///     assert_eq!(a.path(), format!("{}/fib-30", nursery.actor_path()));
    ///     Ok(a.result().await? + b.result().await?)
    /// }
    /// # async fn demo(brood: actor_core::Brood) -> Result<(), actor_core::RootError> {
    /// assert_eq!(brood.root().run(body).await?, 2_178_309);
    /// # Ok(()) }
    /// ```
    pub async fn run_in_actor<C: CallFn>(
        &self,
        name: &str,
        _function: C,
        args: C::Args,
        opts: ActorOptions,
    ) -> Result<RunHandle<C::Reply>, SpawnError> {
        let args = Payload::encode(&args)?;
        let (slot, conn) = self.spawn_child(name, opts, true).await?;
        let portal = Portal::new(conn, None, self.actor.policy);
        let (tx, rx) = oneshot::channel();
        let state = self.state.clone();
        let path = slot.path.clone();
        self.actor.spawn_task(async move {
            let r = portal.run_payload(C::NAME, args).await;
            if let Err(PortalError::Remote(e)) = &r
                && !(e.kind == kinds::PANIC && e.origin == slot.path)
            {
                // The child's own panic is reported by the supervisor, with the exit
                // status; anything else (a grandchild's panic it relayed included) is
                // the function's error.
                state.report_error(ChildError::Failed {
                    actor: slot.path.clone(),
                    error: (**e).clone(),
                });
            }
            let _ = tx.send(r);
            slot.order_teardown(None);
        });
        Ok(RunHandle {
            rx,
            path,
            _t: PhantomData,
        })
    }

    /// Cancel every child through the teardown ladder and wait until all are reaped.
    /// The nursery takes no new children afterwards; its body carries on.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. The nursery is closed and every child's teardown
    /// ordered before the first await; dropping the future only stops the waiting: the
    /// supervisors go on with their ladders, and calling `cancel` again (or the end of the
    /// body) waits for the same teardowns, not new ones.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use actor_core::{ActorOptions, FnError, Nursery, SpawnError};
    ///
    /// async fn body(nursery: &Nursery) -> Result<(), FnError> {
    ///     let _a = nursery.start_actor("a", ActorOptions::new()).await?;
    ///     let _b = nursery.start_actor("b", ActorOptions::new()).await?;
    ///     // Bound the wait: the teardown goes on in the background if it takes longer.
    ///     let _ = tokio::time::timeout(Duration::from_secs(10), nursery.cancel()).await;
    ///     nursery.cancel().await; // waits for the same teardowns
    ///     assert_eq!(nursery.live_children(), 0);
    ///     assert_eq!(nursery.reports().len(), 2);
    ///     // Closed for good: no new children.
    ///     assert!(matches!(
    ///         nursery.start_actor("c", ActorOptions::new()).await,
    ///         Err(SpawnError::NurseryClosed)
    ///     ));
    ///     Ok(())
    /// }
    /// # async fn demo(brood: actor_core::Brood) -> Result<(), actor_core::RootError> {
    /// brood.root().run(body).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self) {
        let slots = self.state.close_and_order();
        for s in slots {
            s.reaped().await;
        }
    }

    /// What became of every child reaped so far.
    pub fn reports(&self) -> Vec<ChildReport> {
        self.state.reports.lock().unwrap().clone()
    }

    /// How many children of this nursery's actor were started and have not completed
    /// their handshake yet (diagnostics: a spawn that was given up leaves none behind).
    pub fn spawning(&self) -> usize {
        self.actor.pending.lock().unwrap().len()
    }

    /// How many children were started and are not reaped yet.
    pub fn live_children(&self) -> usize {
        self.state
            .children
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !*s.reaped_tx.borrow())
            .count()
    }

    async fn spawn_child(
        &self,
        name: &str,
        opts: ActorOptions,
        run_in_actor: bool,
    ) -> Result<(Arc<ChildSlot>, Conn), SpawnError> {
        self.spawn_watched(name, opts, run_in_actor, None).await
    }

    /// Start a child whose end is sent to `watch` (a supervisor's) instead of failing the
    /// nursery; see [`Nursery::spawn_child`].
    pub(crate) async fn spawn_watched(
        &self,
        name: &str,
        opts: ActorOptions,
        run_in_actor: bool,
        watch: Option<crate::children::ChildWatch>,
    ) -> Result<(Arc<ChildSlot>, Conn), SpawnError> {
        let actor = &self.actor;
        if self.state.closed.load(Ordering::SeqCst) || actor.cancel.is_cancelled() {
            return Err(SpawnError::NurseryClosed);
        }
        let key = opts
            .backend
            .clone()
            .unwrap_or_else(|| actor.vars.backend.clone());
        let backend = actor.program.backend(&key)?;
        let transport = match &opts.transport {
            Some(t) => actor.program.transport(t)?,
            None => actor.transport.clone(),
        };
        // The child connects back to us on its own transport: listen there first.
        let parent_addr = actor.listen_on(&transport).await?;
        let id = ActorId::new(name);
        let listen_addr = transport.address_for(&id, Some(&parent_addr))?;
        let mut vars = actor.vars.for_child(name, actor.id.to_string());
        opts.vars.apply(&mut vars);
        vars.backend = key;
        // Inherited, tightened by what the child asks; applied by the backend, which
        // records what it got in `vars.sandbox`.
        // One that restricts nothing is none (no backend is asked to apply nothing).
        let sandbox = match (&vars.sandbox, &opts.sandbox) {
            (None, asked) => asked.clone(),
            (Some(inherited), None) => Some(inherited.sandbox.clone()),
            (Some(inherited), Some(asked)) => Some(inherited.sandbox.tightened_by(asked)),
        }
        .filter(Sandbox::restricts_anything);
        child_transports(&mut vars, transport.key(), &actor.listening());
        let path = vars.path();
        // Good for this child's first handshake only (see `crate::handshake`).
        let nonce = spawn_api::auth::Nonce::random();
        let boot = ChildBoot {
            id: id.clone(),
            parent: actor.id.clone(),
            parent_addr,
            listen_addr: listen_addr.clone(),
            path: path.clone(),
            log_level: vars.log_level.clone(),
            runtime: opts.runtime,
            connect_timeout: actor.policy.spawn_timeout,
            secret: actor.secret.clone(),
            nonce,
            sandbox: sandbox.clone(),
        };
        let (hs_tx, hs_rx) = oneshot::channel();
        actor
            .pending
            .lock()
            .unwrap()
            .insert(id.clone(), crate::actor::Pending { nonce, tx: hs_tx });
        // Until a supervisor owns the child: dropping this future (or failing) withdraws
        // the pending handshake and the reserved endpoint.
        let mut reserved = Reserved {
            actor,
            id: Some(id.clone()),
            transport: transport.clone(),
            addr: listen_addr.clone(),
        };
        let mut req = SpawnRequest {
            boot,
            vars,
            extensions: actor.extensions.clone(),
            entry: actor.program.entry(),
            options: opts.backend_options,
            stdio: opts.stdio,
        };
        let spawned = backend.spawn(&mut req).await;
        let vars = req.vars;
        let spec = SpawnSpec {
            child: id.clone(),
            parent: actor.id.clone(),
            vars: vars.clone(),
            teardown: actor.policy,
            limits: actor.limits,
        };
        let child = spawned?;
        if let Some(sandbox) = &sandbox
            && !sandboxed_as_asked(&vars, sandbox)
        {
            // A backend that ignores sandboxes: the child must not run unrestricted. Its
            // handle stops it when dropped.
            drop(child);
            return Err(SpawnError::SandboxUnsupported {
                backend: backend.key(),
                actor: path,
                reason: "the backend started the child without reporting its sandbox",
            });
        }
        // The supervisor owns the child (and its endpoint) from here.
        reserved.id = None;
        tracing::debug!(child = %path, pid = ?child.pid(), "spawned");
        let (order_tx, order_rx) = oneshot::channel();
        let slot = Arc::new(ChildSlot {
            id,
            path,
            vars,
            run_in_actor,
            order: Mutex::new(Some(order_tx)),
            reaped_tx: watch::Sender::new(false),
            watch,
            cancel_reason: Mutex::new(None),
        });
        {
            let mut children = self.state.children.lock().unwrap();
            children.push(slot.clone());
            if self.state.closed.load(Ordering::SeqCst) {
                // Closed while we were spawning: this child is torn down at once.
                slot.order_teardown(None);
            }
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        actor.spawn_task(supervise(ChildTask {
            actor: actor.clone(),
            state: self.state.clone(),
            slot: slot.clone(),
            child,
            handshake: hs_rx,
            ready: ready_tx,
            order: order_rx,
            transport,
            addr: listen_addr,
            spec,
        }));
        // Until the child is handed over: dropping this future (the caller gave up
        // waiting for its handshake) tears it down rather than leaving it running with no
        // portal, and for `run_in_actor`, no function and a scope waiting for it.
        let mut abandon = Abandon(Some(slot.clone()));
        let ready = ready_rx.await;
        abandon.0 = None;
        let conn = ready.map_err(|_| SpawnError::NurseryClosed)??;
        Ok((slot, conn))
    }
}

/// Whether the child's vars say it runs in `sandbox` (applied for it, or inherited
/// unchanged by a child that shares its parent's process).
fn sandboxed_as_asked(vars: &RuntimeVars, sandbox: &Sandbox) -> bool {
    vars.sandbox
        .as_ref()
        .is_some_and(|v| v.sandbox.same_restrictions(sandbox))
}

/// Orders the teardown of a started child whose spawn was given up before it completed.
struct Abandon(Option<Arc<ChildSlot>>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.order_teardown(None);
        }
    }
}

/// A child's pending handshake and endpoint, withdrawn if its spawn does not complete.
struct Reserved<'a> {
    actor: &'a ActorInner,
    id: Option<ActorId>,
    transport: Arc<dyn Transport>,
    addr: Addr,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.actor.pending.lock().unwrap().remove(&id);
            self.transport.cleanup(&self.addr);
        }
    }
}

/// Set the transports of a child's `vars` (inherited from its parent's): its own
/// (`key`) first in `enabled_transports`, then the inherited ones; and, in `services`,
/// where its parent listens on each transport (`listening`, see
/// [`crate::actor::TRANSPORT_SERVICE`]).
fn child_transports(vars: &mut RuntimeVars, key: &str, listening: &[(String, Addr)]) {
    vars.enabled_transports.retain(|k| k != key);
    vars.enabled_transports.insert(0, key.to_owned());
    for (k, addr) in listening {
        vars.services
            .insert(crate::actor::transport_service(k), addr.to_string());
    }
}

/// The result of a [`Nursery::run_in_actor`] child.
pub struct RunHandle<T> {
    rx: oneshot::Receiver<Result<Payload, PortalError>>,
    path: String,
    _t: PhantomData<fn() -> T>,
}

impl<T: Wire> RunHandle<T> {
    /// The child's tree path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Wait for the function's result.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: it takes the handle, so dropping the future loses
    /// the function's result (the value, or the error it returned). The child is not
    /// affected: it finishes its function and is torn down as usual, and an error of the
    /// function still fails the nursery. To wait for the result in a `select!` loop, pin
    /// the future once and poll it by reference:
    ///
    /// ```no_run
    /// # async fn demo(nursery: &actor_core::Nursery) -> Result<(), actor_core::FnError> {
    /// # actor_core::call!(Fib: u32 => u64);
    /// let handle = nursery.run_in_actor("fib", Fib, 40, Default::default()).await?;
    /// let result = handle.result();
    /// tokio::pin!(result);
    /// let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    /// let value = loop {
    ///     tokio::select! {
    ///         r = &mut result => break r?,
    ///         _ = ticks.tick() => println!("still computing"),
    ///     }
    /// };
    /// # let _ = value; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the function failed, [`PortalError::Disconnected`] if
    /// the child died, [`PortalError::Cancelled`] if the nursery was torn down first.
    pub async fn result(self) -> Result<T, PortalError> {
        match self.rx.await {
            Ok(Ok(payload)) => Ok(payload.decode::<T>()?),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PortalError::Cancelled),
        }
    }
}

impl<T> std::fmt::Debug for RunHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("actor", &self.path)
            .finish()
    }
}

struct ChildTask {
    actor: Arc<ActorInner>,
    state: Arc<NurseryState>,
    slot: Arc<ChildSlot>,
    child: Box<dyn Child>,
    handshake: oneshot::Receiver<Handshaken>,
    ready: oneshot::Sender<Result<Conn, SpawnError>>,
    order: oneshot::Receiver<Option<Duration>>,
    /// The child's transport: the channel to it runs over it, and its endpoint is there.
    transport: Arc<dyn Transport>,
    addr: Addr,
    spec: SpawnSpec,
}

/// A supervisor's whole job: connect, watch, tear down, reap, report.
async fn supervise(s: ChildTask) {
    let ChildTask {
        actor,
        state,
        slot,
        mut child,
        handshake,
        ready,
        mut order,
        transport,
        addr,
        spec,
    } = s;
    let pid = child.pid();
    let path = slot.path.clone();
    // A process actor that receives SIGTERM while it has live children keeps tearing
    // them down instead of dying (see `os_wrappers::sigterm`).
    actor
        .live_children
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _alive = LiveChild(&actor.live_children);

    enum Start {
        Connected(Handshaken),
        Exited(ChildExit),
        TimedOut,
        Ordered,
    }
    let start = tokio::select! {
        biased;
        _ = &mut order => Start::Ordered,
        _ = actor.cancel.cancelled() => Start::Ordered,
        hs = handshake => match hs {
            Ok(h) => Start::Connected(h),
            Err(_) => Start::TimedOut,
        },
        exit = child.wait() => Start::Exited(exit),
        _ = tokio::time::sleep(actor.policy.spawn_timeout) => Start::TimedOut,
    };
    let conn = match start {
        Start::Connected(Handshaken {
            peer_info,
            mut sink,
            source,
            ..
        }) => {
            let spec = Frame::control(Msg::SpawnSpec(Box::new(spec)));
            match sink.feed(&spec) {
                Ok(()) => {
                    let _ = sink.flush().await;
                }
                Err(e) => tracing::error!(error = %e, "spawn spec not sent"),
            }
            let conn = Conn::start(
                actor.clone(),
                slot.id.clone(),
                path.clone(),
                peer_info,
                Peer::Child,
                sink,
                source,
                Side::Acceptor,
                transport.max_frame(),
            );
            // Registered before `start_actor` returns: whoever learns of the child from
            // us can find it.
            let info = crate::discovery::child_info(
                &actor,
                &slot.id,
                &path,
                &addr,
                pid,
                &slot.vars.backend,
            );
            crate::discovery::register_child(&actor, info).await;
            let _ = ready.send(Ok(conn.clone()));
            conn
        }
        other => {
            actor.pending.lock().unwrap().remove(&slot.id);
            let (error, exit, step) = match other {
                Start::Exited(exit) => (
                    SpawnError::DiedEarly {
                        actor: path.clone(),
                        exit: exit.clone(),
                    },
                    exit,
                    Step::Finished,
                ),
                Start::TimedOut | Start::Ordered => {
                    let _ = child.kill();
                    let exit = tokio::time::timeout(actor.policy.reap_timeout, child.wait())
                        .await
                        .unwrap_or_else(|_| ChildExit::Abandoned {
                            reason: "no exit status after the kill".to_owned(),
                        });
                    let error = if matches!(other, Start::TimedOut) {
                        SpawnError::Timeout {
                            actor: path.clone(),
                            after: actor.policy.spawn_timeout,
                        }
                    } else {
                        SpawnError::NurseryClosed
                    };
                    (error, exit, Step::Killed)
                }
                Start::Connected(_) => unreachable!(),
            };
            transport.cleanup(&addr);
            state.reports.lock().unwrap().push(ChildReport {
                actor: path.clone(),
                pid,
                exit,
                step,
                teardown: Duration::ZERO,
            });
            let _ = ready.send(Err(error));
            slot.reaped_tx.send_replace(true);
            return;
        }
    };

    let (exit, ordered, step, took) = tokio::select! {
        exit = child.wait() => (exit, false, Step::Finished, Duration::ZERO),
        o = teardown_order(&mut order, &actor) => {
            let started = tokio::time::Instant::now();
            let soft = o.flatten();
            let c2 = conn.clone();
            let cause = spawn_api::CancelCause {
                canceller: actor.path.clone(),
                reason: slot
                    .cancel_reason
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_else(|| format!("actor {} tears down its child {path}", actor.path)),
                actor: true,
            };
            let hooks = actor.program.hooks();
            let key = slot.id.uid();
            let board = &actor.board;
            let me = ActorCx::of(actor.clone());
            let reaped = crate::actor::LADDER_ACTOR.scope(me, run_ladder(
                &mut *child,
                &slot.id,
                // The vars this actor built for the child's spawn spec, never its own
                // (`runtime_vars::current()`): the hooks judge whether *the child* may be
                // in a debugger, and a tree may mix debug modes.
                &slot.vars,
                &actor.policy,
                &hooks,
                soft,
                async move {
                    c2.send_control(Msg::Cancel {
                        cid: None,
                        cause: Some(cause),
                    })
                },
                Some(conn.stopping()),
                &|until| board.set(key, until),
            ))
            .await;
            board.clear(key);
            (reaped.exit, true, reaped.step, started.elapsed())
        }
    };
    // The child's last frames (a reply written just before a clean exit, why it failed)
    // may still be in flight when its exit is seen: read the channel to its end, briefly,
    // before closing it, whatever the code (closing at once on a clean exit lost such a
    // reply). The end comes at once: the child's end of the channel went with it. A
    // child that was abandoned or killed has nothing to wait for.
    if matches!(exit, ChildExit::Exited(_)) {
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    }
    conn.close(&format!("actor {path} {exit}"));
    transport.cleanup(&addr);
    crate::discovery::deregister_child(&actor, &slot.id).await;
    tracing::debug!(child = %path, %exit, ?step, ?took, "reaped");
    let error = classify(&path, &exit, ordered, step, conn.fault());
    // Filed before the error is reported: the error cancels the nursery's body, which
    // may look at the reports as it goes.
    state.reports.lock().unwrap().push(ChildReport {
        actor: path,
        pid,
        exit,
        step,
        teardown: took,
    });
    match &slot.watch {
        // A supervised child: its supervisor decides what its end means.
        Some(w) => {
            let _ = w.tx.send(crate::children::ChildEnded { tag: w.tag, error });
        }
        None => {
            if let Some(e) = error {
                state.report_error(e);
            }
        }
    }
    slot.reaped_tx.send_replace(true);
}

/// Counts a child as alive for as long as its supervisor runs.
struct LiveChild<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for LiveChild<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Resolves with the soft-wait bound when teardown is ordered (or the actor is shutting
/// down, which orders it implicitly).
async fn teardown_order(
    order: &mut oneshot::Receiver<Option<Duration>>,
    actor: &ActorInner,
) -> Option<Option<Duration>> {
    tokio::select! {
        o = order => o.ok(),
        _ = actor.cancel.cancelled() => None,
    }
}

/// Whether a child's end is an error, and which.
fn classify(
    path: &str,
    exit: &ChildExit,
    ordered: bool,
    step: Step,
    fault: Option<RemoteError>,
) -> Option<ChildError> {
    let actor = path.to_owned();
    match exit {
        ChildExit::Exited(0) => None,
        ChildExit::Exited(code) => Some(match fault {
            Some(f) if f.kind == kinds::PANIC => ChildError::Panicked {
                actor,
                message: f.message,
                location: f.traceback,
            },
            Some(f) => ChildError::Failed { actor, error: f },
            None => ChildError::Exited { actor, code: *code },
        }),
        ChildExit::Signaled { signal, .. } => {
            if ordered && step >= Step::Terminated {
                // Our own terminate or kill: the teardown worked.
                None
            } else {
                Some(ChildError::Signaled {
                    actor,
                    signal: *signal,
                    name: signal_name(*signal),
                })
            }
        }
        ChildExit::Panicked { message } => Some(ChildError::Panicked {
            actor,
            message: message.clone(),
            location: None,
        }),
        ChildExit::Abandoned { reason } => Some(ChildError::Abandoned {
            actor,
            reason: reason.clone(),
        }),
        ChildExit::Unknown { reason } => Some(ChildError::StatusUnknown {
            actor,
            reason: reason.clone(),
        }),
    }
}

/// Run `body` in a new nursery of `actor`; see the module docs.
pub(crate) async fn run_nursery<R>(
    actor: &Arc<ActorInner>,
    body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
) -> Result<R, NurseryError> {
    let nursery = Nursery {
        actor: actor.clone(),
        state: Arc::new(NurseryState::new()),
    };
    let mut guard = DropGuard {
        state: Some(nursery.state.clone()),
        actor: actor.clone(),
    };
    let state = nursery.state.clone();
    let body_result = {
        let fut = runtime_vars::scope(actor.vars.clone(), body(&nursery));
        tokio::select! {
            biased;
            _ = state.failed.cancelled() => None,
            _ = actor.cancel.cancelled() => None,
            r = fut => Some(r),
        }
    };
    if let Some(Ok(_)) = &body_result {
        // Soft wait: `run_in_actor` children finish their functions.
        let run_in_actor: Vec<_> = state
            .children
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.run_in_actor)
            .cloned()
            .collect();
        tokio::select! {
            _ = async { for s in &run_in_actor { s.reaped().await } } => {}
            _ = state.failed.cancelled() => {}
            _ = actor.cancel.cancelled() => {}
        }
    }
    // Supervised children go first, each supervisor's in reverse start order.
    state.stop_supervised().await;
    nursery.cancel().await;
    guard.state = None;
    let children = state.take_errors();
    let cancelled = actor.cancel.is_cancelled();
    let body = match body_result {
        Some(Ok(v)) if children.is_empty() => return Ok(v),
        Some(Ok(_)) | None => None,
        Some(Err(e)) => Some(e),
    };
    Err(NurseryError {
        body,
        children,
        cancelled,
        reports: state.reports.lock().unwrap().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_classified() {
        let p = "root/c";
        assert!(classify(p, &ChildExit::Exited(0), false, Step::Finished, None).is_none());
        assert!(matches!(
            classify(p, &ChildExit::Exited(3), false, Step::Finished, None),
            Some(ChildError::Exited { code: 3, .. })
        ));
        let mut panic = RemoteError::new(kinds::PANIC, "boom", p);
        panic.traceback = Some("src/x.rs:1:2".into());
        assert!(matches!(
            classify(
                p,
                &ChildExit::Exited(101),
                false,
                Step::Finished,
                Some(panic)
            ),
            Some(ChildError::Panicked {
                location: Some(_),
                ..
            })
        ));
        let kill = ChildExit::Signaled {
            signal: 9,
            core_dumped: false,
        };
        assert!(matches!(
            classify(p, &kill, false, Step::Finished, None),
            Some(ChildError::Signaled { signal: 9, .. })
        ));
        assert!(classify(p, &kill, true, Step::Killed, None).is_none());
        assert!(matches!(
            classify(p, &kill, true, Step::Cancelled, None),
            Some(ChildError::Signaled { .. })
        ));
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod transport_tests;

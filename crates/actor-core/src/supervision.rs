//! Supervision: restart failed children (Erlang/OTP's supervisors, over actors that are
//! processes, forks or sub-interpreters).
//!
//! A [`Supervisor`] runs inside a nursery ([`Nursery::supervise`]). It starts the
//! children its [`SupervisorSpec`] lists, in order, and watches them: when one ends, its
//! [`Restart`] kind says whether it comes back, and the [`Strategy`] which of its siblings
//! are restarted with it. A child that ends is no longer the nursery's failure: it is
//! the supervisor's to handle. Past the restart intensity (more than `max_restarts`
//! restarts within `within`), the supervisor gives up: it stops every child in reverse
//! start order and fails its nursery with [`SupervisorError::RestartLimit`], naming the
//! child and its last errors, as a child's failure would.
//!
//! Callers reach a child through a [`Supervised`] handle, which follows the child's
//! current incarnation: a call while the child is restarting fails at once with
//! [`PortalError::Restarting`] (or waits up to a bound the caller chose,
//! [`Supervised::waiting`]); a call, stream ([`SupervisedStream`]) or context
//! ([`SupervisedContext`]) of an incarnation that ended fails with
//! [`PortalError::Restarted`], naming it. Every answer says which incarnation gave it
//! ([`Answer`]).
//!
//! When the nursery's scope ends (or its actor is cancelled), the supervisor's children
//! stop first, one after the other in reverse start order, each through the whole
//! teardown ladder (hooks included).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::actor::BoxFuture;
use crate::children::{ChildEnded, ChildSlot, ChildWatch, StopOrder};
use crate::error::{ChildError, PortalError};
use crate::nursery::{ActorOptions, Nursery};
use crate::portal::Portal;
use crate::stream::{CallerContext, ReplyStream};
use spawn_api::{CallFn, ContextFn, Payload, SpawnError, StreamFn};

/// Whether a child that ended is started again (OTP's restart types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restarted, whatever way it ended (a long-lived service).
    #[default]
    Permanent,
    /// Restarted only after a failure (a panic, a non-zero exit, a signal, a failed
    /// start call); a clean end is final.
    Transient,
    /// Never restarted: its end, clean or not, is final (and not a failure of the
    /// supervisor).
    Temporary,
}

/// Which children restart when one has to (OTP's strategies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the child that ended.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (in reverse start order), then all start
    /// again in order.
    OneForAll,
    /// The child that ended and every child started after it.
    RestForOne,
}

/// What each incarnation of a child does once it is up: a call whose error fails the
/// incarnation.
type StartCall = Arc<dyn Fn(Portal) -> BoxFuture<Result<(), PortalError>> + Send + Sync>;

/// One child of a supervisor: its name, how it is started, and whether it comes back.
///
/// ```
/// use std::time::Duration;
/// use actor_core::supervision::{ChildSpec, Restart};
/// use actor_core::ActorOptions;
///
/// actor_core::call!(Warm: u32 => ());
/// actor_core::call!(Job: String => ());
/// // A service that serves calls, warmed up by one call each time it starts.
/// let cache = ChildSpec::new("cache").start_call(Warm, 1024);
/// // A worker that runs one job and is restarted only if the job fails.
/// let job = ChildSpec::new("nightly")
///     .runs(Job, "reindex".into())
///     .restart(Restart::Transient)
///     .options(ActorOptions::new().backend("fork"));
/// # let _ = (cache, job);
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    options: ActorOptions,
    restart: Restart,
    start: Option<StartCall>,
    /// The start call is the child's whole job: the incarnation ends when it returns.
    runs: bool,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("start_call", &self.start.is_some())
            .field("runs", &self.runs)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent child called `name` that serves the program's registry, with the
    /// default [`ActorOptions`].
    pub fn new(name: impl Into<String>) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            options: ActorOptions::new(),
            restart: Restart::Permanent,
            start: None,
            runs: false,
        }
    }

    /// How the child is spawned (backend, transport, sandbox, ...).
    pub fn options(mut self, options: ActorOptions) -> ChildSpec {
        self.options = options;
        self
    }

    /// Whether it comes back after it ended.
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// Call `function(args)` in each incarnation once it is up, before callers reach it;
    /// an error fails the incarnation (and counts toward the restart intensity).
    pub fn start_call<C: CallFn>(mut self, function: C, args: C::Args) -> ChildSpec
    where
        C::Args: Clone + Sync,
    {
        self.start = Some(call_of(function, args));
        self.runs = false;
        self
    }

    /// Make `function(args)` the child's whole job: each incarnation runs it and ends when
    /// it returns, cleanly if it returned `Ok` (a [`Restart::Permanent`] child is then
    /// started again, a [`Restart::Transient`] one is not), as a failure otherwise.
    pub fn runs<C: CallFn>(mut self, function: C, args: C::Args) -> ChildSpec
    where
        C::Args: Clone + Sync,
    {
        self.start = Some(call_of(function, args));
        self.runs = true;
        self
    }
}

fn call_of<C: CallFn>(_function: C, args: C::Args) -> StartCall
where
    C::Args: Clone + Sync,
{
    Arc::new(move |portal: Portal| {
        let args = Payload::encode(&args);
        Box::pin(async move {
            portal.run_payload(C::NAME, args?).await?;
            Ok(())
        })
    })
}

/// A supervisor's children and policy.
///
/// ```
/// use std::time::Duration;
/// use actor_core::supervision::{ChildSpec, Strategy, SupervisorSpec};
/// let spec = SupervisorSpec::new(Strategy::RestForOne)
///     .intensity(5, Duration::from_secs(10))
///     .backoff(Duration::from_millis(10), Duration::from_secs(1))
///     .child(ChildSpec::new("db"))
///     .child(ChildSpec::new("api"));
/// # let _ = spec;
/// ```
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    name: String,
    strategy: Strategy,
    max_restarts: u32,
    within: Duration,
    backoff: Option<(Duration, Duration)>,
    children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A supervisor with `strategy`, no children yet, at most 3 restarts within 5 s, and
    /// no backoff.
    pub fn new(strategy: Strategy) -> SupervisorSpec {
        SupervisorSpec {
            name: "supervisor".to_owned(),
            strategy,
            max_restarts: 3,
            within: Duration::from_secs(5),
            backoff: None,
            children: Vec::new(),
        }
    }

    /// The supervisor's name, for logs, errors and cancel reasons.
    pub fn name(mut self, name: impl Into<String>) -> SupervisorSpec {
        self.name = name.into();
        self
    }

    /// Give up after more than `max_restarts` restarts within `within` (OTP's
    /// intensity and period).
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> SupervisorSpec {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Wait before each restart of a child: `first`, doubling for each restart in a row
    /// that followed a life shorter than the intensity period (`within`), at most `max`;
    /// a child that ran that long starts over at `first`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> SupervisorSpec {
        self.backoff = Some((first, max.max(first)));
        self
    }

    /// Add a child; children start in the order they were added.
    ///
    /// # Panics
    /// If a child of that name is already in the spec.
    pub fn child(mut self, child: ChildSpec) -> SupervisorSpec {
        assert!(
            self.children.iter().all(|c| c.name != child.name),
            "supervisor {}: two children named {:?}",
            self.name,
            child.name
        );
        self.children.push(child);
        self
    }
}

pub use crate::error::SupervisorError;

/// One end of a child incarnation, as the supervisor's history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartRecord {
    /// The child's name.
    pub child: String,
    /// The incarnation that ended (1 for the first).
    pub incarnation: u64,
    /// When it ended.
    pub at: SystemTime,
    /// Why: its error, or that it ended cleanly, or which sibling's restart took it.
    pub why: String,
    /// Whether it failed (as opposed to ending cleanly or being stopped for a sibling).
    pub failed: bool,
    /// Whether it was started again.
    pub restarted: bool,
}

/// A call's answer and the incarnation of the child that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    /// The reply.
    pub value: T,
    /// Which incarnation answered (1 for the first).
    pub incarnation: u64,
}

#[derive(Clone)]
enum Current {
    Up { portal: Portal, incarnation: u64 },
    Restarting { incarnation: u64 },
    Gone { incarnation: u64, why: String },
}

impl Current {
    fn incarnation(&self) -> u64 {
        match self {
            Current::Up { incarnation, .. }
            | Current::Restarting { incarnation }
            | Current::Gone { incarnation, .. } => *incarnation,
        }
    }
}

struct HandleShared {
    name: String,
    path: String,
    current: watch::Sender<Current>,
}

/// A handle on a supervised child that follows its current incarnation
/// ([`Supervisor::child`]). Cheap to clone.
///
/// By default a call while the child is restarting fails at once with
/// [`PortalError::Restarting`]; [`waiting`](Supervised::waiting) makes calls wait up to a
/// bound for the next incarnation instead. A call in flight when its incarnation ends is
/// not retried (it may have run in part): it fails with [`PortalError::Restarted`].
///
/// ```no_run
/// # async fn demo(sup: actor_core::supervision::Supervisor) -> Result<(), actor_core::PortalError> {
/// use std::time::Duration;
/// actor_core::call!(Lookup: String => Option<String>);
/// let db = sup.child("db").expect("a child of that name").waiting(Duration::from_secs(2));
/// let answer = db.run(Lookup, "k".into()).await?;
/// println!("incarnation {} answered {:?}", answer.incarnation, answer.value);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervised {
    shared: Arc<HandleShared>,
    wait: Option<Duration>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("child", &self.shared.path)
            .field("incarnation", &self.incarnation())
            .field("wait", &self.wait)
            .finish()
    }
}

impl Supervised {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The child's tree path (the same for every incarnation).
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    /// The current incarnation (1 for the first; while restarting, the one being
    /// started).
    pub fn incarnation(&self) -> u64 {
        self.shared.current.borrow().incarnation()
    }

    /// Whether an incarnation is up now.
    pub fn is_up(&self) -> bool {
        matches!(*self.shared.current.borrow(), Current::Up { .. })
    }

    /// This handle, with calls that wait up to `bound` for the child to be up again
    /// instead of failing with [`PortalError::Restarting`].
    pub fn waiting(mut self, bound: Duration) -> Supervised {
        self.wait = Some(bound);
        self
    }

    /// The portal of the current incarnation and its number.
    ///
    /// # Errors
    /// [`PortalError::Restarting`] while the child restarts (after the wait bound, if
    /// this handle waits), [`PortalError::NotRunning`] once it will not come back.
    pub async fn portal(&self) -> Result<(Portal, u64), PortalError> {
        let mut rx = self.shared.current.subscribe();
        let deadline = self.wait.map(|w| Instant::now() + w);
        loop {
            let mut now = rx.borrow_and_update().clone();
            if let Current::Up {
                portal,
                incarnation,
            } = &now
                && !portal.is_connected()
            {
                // Its channel is gone: the incarnation is ending and its supervisor has not
                // seen it yet. What comes next is a restart (or the end).
                now = Current::Restarting {
                    incarnation: incarnation + 1,
                };
            }
            match now {
                Current::Up {
                    portal,
                    incarnation,
                } => return Ok((portal, incarnation)),
                Current::Gone { why, .. } => {
                    return Err(PortalError::NotRunning {
                        actor: self.shared.path.clone(),
                        why,
                    });
                }
                Current::Restarting { incarnation } => {
                    let restarting = PortalError::Restarting {
                        actor: self.shared.path.clone(),
                        incarnation,
                    };
                    let Some(deadline) = deadline else {
                        return Err(restarting);
                    };
                    match tokio::time::timeout_at(deadline, rx.changed()).await {
                        Ok(Ok(())) => continue,
                        _ => return Err(restarting),
                    }
                }
            }
        }
    }

    /// Call `function(args)` in the current incarnation.
    ///
    /// # Errors
    /// As [`Supervised::portal`] and [`Portal::run`]; a call whose incarnation ended
    /// while it ran fails with [`PortalError::Restarted`].
    pub async fn run<C: CallFn>(
        &self,
        function: C,
        args: C::Args,
    ) -> Result<Answer<C::Reply>, PortalError> {
        let (portal, incarnation) = self.portal().await?;
        match portal.run(function, args).await {
            Ok(value) => Ok(Answer { value, incarnation }),
            Err(e) => Err(self.explain(e, incarnation).await),
        }
    }

    /// Open the stream `S` in the current incarnation. The stream stays with that
    /// incarnation: if it ends, the stream ends with [`PortalError::Restarted`] naming it.
    ///
    /// # Errors
    /// As [`Supervised::portal`] and [`Portal::open_stream`].
    pub async fn open_stream<S: StreamFn>(
        &self,
        function: S,
        args: S::Args,
    ) -> Result<SupervisedStream<S::Item>, PortalError> {
        let (portal, incarnation) = self.portal().await?;
        match portal.open_stream(function, args).await {
            Ok(inner) => Ok(SupervisedStream {
                inner,
                handle: self.clone(),
                incarnation,
            }),
            Err(e) => Err(self.explain(e, incarnation).await),
        }
    }

    /// Open the context `C` in the current incarnation; as
    /// [`open_stream`](Supervised::open_stream), it ends with
    /// [`PortalError::Restarted`] if that incarnation ends.
    ///
    /// # Errors
    /// As [`Supervised::portal`] and [`Portal::open_context`].
    pub async fn open_context<C: ContextFn>(
        &self,
        function: C,
        args: C::Args,
    ) -> Result<(SupervisedContext<C>, C::Started), PortalError> {
        let (portal, incarnation) = self.portal().await?;
        match portal.open_context(function, args).await {
            Ok((inner, started)) => Ok((
                SupervisedContext {
                    inner,
                    handle: self.clone(),
                    incarnation,
                },
                started,
            )),
            Err(e) => Err(self.explain(e, incarnation).await),
        }
    }

    /// As [`explain`](Supervised::explain), without waiting for the supervisor.
    fn explain_now(&self, e: PortalError, incarnation: u64) -> PortalError {
        if ends_incarnation(&e) && moved_on(&self.shared.current.borrow(), incarnation) {
            return self.restarted(e, incarnation);
        }
        e
    }

    /// The error `e` of something `incarnation` served, saying so if that incarnation
    /// ended: [`PortalError::Restarted`] naming it, its successor and the original
    /// error. A lost channel is the child's end on its way: this waits (at most a few
    /// seconds) for the supervisor to have seen it. Any other error is returned as is.
    pub async fn explain(&self, e: PortalError, incarnation: u64) -> PortalError {
        if !ends_incarnation(&e) {
            return e;
        }
        let mut rx = self.shared.current.subscribe();
        let gone = |c: &Current| moved_on(c, incarnation);
        if !gone(&rx.borrow_and_update()) {
            let _ = tokio::time::timeout(EXPLAIN_WAIT, rx.wait_for(gone)).await;
        }
        if !gone(&rx.borrow()) {
            return e;
        }
        self.restarted(e, incarnation)
    }

    fn restarted(&self, e: PortalError, incarnation: u64) -> PortalError {
        PortalError::Restarted {
            actor: self.shared.path.clone(),
            incarnation,
            cause: e.to_string(),
        }
    }
}

/// A server stream of one incarnation of a supervised child
/// ([`Supervised::open_stream`]): a [`ReplyStream`] whose end, if that incarnation ended,
/// is [`PortalError::Restarted`] naming it.
pub struct SupervisedStream<T> {
    inner: ReplyStream<T>,
    handle: Supervised,
    incarnation: u64,
}

impl<T> std::fmt::Debug for SupervisedStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisedStream")
            .field("child", &self.handle.shared.path)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl<T: spawn_api::Wire> SupervisedStream<T> {
    /// The incarnation the stream runs in.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// As [`ReplyStream::recv`].
    ///
    /// # Errors
    /// As [`ReplyStream::recv`]; [`PortalError::Restarted`] once the incarnation ended.
    pub async fn recv(&mut self) -> Result<Option<T>, PortalError> {
        match self.inner.recv().await {
            Err(e) => Err(self.handle.explain(e, self.incarnation).await),
            ok => ok,
        }
    }

    /// As [`ReplyStream::cancel`].
    ///
    /// # Errors
    /// As [`ReplyStream::cancel`].
    pub async fn cancel(&mut self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.inner.cancel(reason).await
    }

    /// The stream itself (its errors no longer explained).
    pub fn into_inner(self) -> ReplyStream<T> {
        self.inner
    }
}

/// A context of one incarnation of a supervised child ([`Supervised::open_context`]): a
/// [`CallerContext`] whose end, if that incarnation ended, is [`PortalError::Restarted`]
/// naming it.
pub struct SupervisedContext<C: ContextFn> {
    inner: CallerContext<C>,
    handle: Supervised,
    incarnation: u64,
}

impl<C: ContextFn> std::fmt::Debug for SupervisedContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisedContext")
            .field("child", &self.handle.shared.path)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl<C: ContextFn> SupervisedContext<C> {
    /// The incarnation the context runs in.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// As [`CallerContext::recv`].
    ///
    /// # Errors
    /// As [`CallerContext::recv`]; [`PortalError::Restarted`] once the incarnation ended.
    pub async fn recv(&mut self) -> Result<Option<C::Out>, PortalError> {
        match self.inner.recv().await {
            Err(e) => Err(self.handle.explain(e, self.incarnation).await),
            ok => ok,
        }
    }

    /// As [`CallerContext::send`].
    ///
    /// # Errors
    /// As [`CallerContext::send`]; [`PortalError::Restarted`] once the incarnation ended.
    pub async fn send(&self, item: C::In) -> Result<(), PortalError> {
        match self.inner.send(item).await {
            Err(e) => Err(self.handle.explain(e, self.incarnation).await),
            ok => ok,
        }
    }

    /// As [`CallerContext::close_send`].
    ///
    /// # Errors
    /// As [`CallerContext::close_send`]; [`PortalError::Restarted`] if the incarnation's
    /// end was already seen.
    pub fn close_send(&mut self) -> Result<(), PortalError> {
        self.inner
            .close_send()
            .map_err(|e| self.handle.explain_now(e, self.incarnation))
    }

    /// As [`CallerContext::cancel`].
    ///
    /// # Errors
    /// As [`CallerContext::cancel`].
    pub async fn cancel(&mut self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.inner.cancel(reason).await
    }

    /// As [`CallerContext::result`].
    ///
    /// # Errors
    /// As [`CallerContext::result`]; [`PortalError::Restarted`] once the incarnation ended.
    pub async fn result(self) -> Result<C::Return, PortalError> {
        let (handle, incarnation) = (self.handle, self.incarnation);
        match self.inner.result().await {
            Err(e) => Err(handle.explain(e, incarnation).await),
            ok => ok,
        }
    }

    /// The context itself (its errors no longer explained).
    pub fn into_inner(self) -> CallerContext<C> {
        self.inner
    }
}

/// Whether `e` is how a call sees its incarnation end: the channel lost, or the actor
/// cancelled (a sibling's restart stops it that way).
fn ends_incarnation(e: &PortalError) -> bool {
    match e {
        PortalError::Disconnected { .. } => true,
        PortalError::ContextCancelled(c) => c.side == crate::CancelSide::Actor,
        _ => false,
    }
}

/// Whether the child is no longer at `incarnation`.
fn moved_on(c: &Current, incarnation: u64) -> bool {
    match c {
        Current::Up {
            incarnation: now, ..
        } => *now != incarnation,
        Current::Restarting { .. } | Current::Gone { .. } => true,
    }
}

/// How long [`Supervised::explain`] waits for the supervisor to see an incarnation's end
/// whose channel is already gone: a reaped child is seen at once, so this only bounds
/// a child whose teardown is slow.
const EXPLAIN_WAIT: Duration = Duration::from_secs(5);

struct ChildRt {
    spec: ChildSpec,
    incarnation: u64,
    slot: Option<Arc<ChildSlot>>,
    /// The current incarnation is up and watched (an end of it is news).
    alive: bool,
    /// A `runs` child's job failed with this (its end is then a failure).
    job_error: Arc<Mutex<Option<String>>>,
    handle: Arc<HandleShared>,
    /// The last errors of this child, newest last.
    errors: VecDeque<String>,
    /// Restarts in a row that followed a short life (for the backoff).
    streak: u32,
    /// When the current incarnation started.
    started_at: Option<Instant>,
}

impl ChildRt {
    /// Keep `e` among the child's last errors (the newest five).
    fn note_error(&mut self, e: String) {
        self.errors.push_back(e);
        if self.errors.len() > 5 {
            self.errors.pop_front();
        }
    }
}

struct Inner {
    children: Vec<ChildRt>,
    history: Vec<RestartRecord>,
    /// When the restarts within the intensity window happened.
    restarts: VecDeque<Instant>,
    stopping: bool,
}

struct Shared {
    name: String,
    path: String,
    strategy: Strategy,
    max_restarts: u32,
    within: Duration,
    backoff: Option<(Duration, Duration)>,
    inner: Mutex<Inner>,
    ends: mpsc::UnboundedSender<ChildEnded>,
    restarts_total: AtomicU64,
    done: watch::Sender<Option<Result<(), SupervisorError>>>,
    stopped: AtomicBool,
}

impl Shared {
    /// Stop restarting: every child is down for good (`why`); the slots of their last
    /// incarnations, in reverse start order.
    fn halt(&self, why: &str) -> Vec<Arc<ChildSlot>> {
        let mut inner = self.inner.lock().unwrap();
        inner.stopping = true;
        inner
            .children
            .iter_mut()
            .rev()
            .filter_map(|c| {
                c.alive = false;
                set_gone(c, why);
                c.slot.clone()
            })
            .collect()
    }

    /// The supervisor ended without giving up (unless it already ended).
    fn end_ok(&self) {
        self.done.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(Ok(()));
                true
            } else {
                false
            }
        });
    }

    /// The error of giving up on child `name` (`c`).
    fn limit(&self, name: String, c: &ChildRt) -> SupervisorError {
        SupervisorError::RestartLimit {
            supervisor: self.name.clone(),
            child: name,
            max_restarts: self.max_restarts,
            within: self.within,
            last_errors: c.errors.iter().cloned().collect(),
        }
    }
}

impl StopOrder for Shared {
    fn stop_order(&self) -> Vec<Arc<ChildSlot>> {
        let slots = self.halt("its nursery is closing");
        self.end_ok();
        slots
    }
}

fn set_gone(c: &ChildRt, why: &str) {
    c.handle.current.send_replace(Current::Gone {
        incarnation: c.incarnation,
        why: why.to_owned(),
    });
}

fn tag(index: usize, incarnation: u64) -> u64 {
    ((index as u64) << 32) | (incarnation & 0xffff_ffff)
}

fn untag(tag: u64) -> (usize, u64) {
    ((tag >> 32) as usize, tag & 0xffff_ffff)
}

/// A running supervisor ([`Nursery::supervise`]). Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    nursery: Arc<Nursery>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.shared.name)
            .field("strategy", &self.shared.strategy)
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl Nursery {
    /// Start a supervisor in this nursery: its children start now, in order, and are
    /// restarted as `spec` says until the nursery's scope ends, [`Supervisor::stop`] is
    /// called, or the supervisor gives up (then the nursery fails, as with a child's
    /// failure: see [`SupervisorError::RestartLimit`]).
    ///
    /// # Errors
    /// [`SupervisorError::Start`] if a child could not start (the children started
    /// before it are stopped again, in reverse order).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use actor_core::supervision::{ChildSpec, Strategy, SupervisorSpec};
    /// use actor_core::{FnError, Nursery};
    ///
    /// actor_core::call!(Get: String => Option<String>);
    ///
    /// async fn body(nursery: &Nursery) -> Result<(), FnError> {
    ///     let sup = nursery
    ///         .supervise(
    ///             SupervisorSpec::new(Strategy::OneForOne)
    ///                 .intensity(5, Duration::from_secs(10))
    ///                 .child(ChildSpec::new("cache")),
    ///         )
    ///         .await?;
    ///     let cache = sup.child("cache").unwrap().waiting(Duration::from_secs(2));
    ///     // Survives crashes of the cache actor: the handle follows its restarts.
    ///     let hit = cache.run(Get, "key".into()).await?;
    ///     println!("{:?} (incarnation {})", hit.value, hit.incarnation);
    ///     for r in sup.history() {
    ///         println!("{} #{} ended: {}", r.child, r.incarnation, r.why);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn supervise(&self, spec: SupervisorSpec) -> Result<Supervisor, SupervisorError> {
        let (ends_tx, ends_rx) = mpsc::unbounded_channel();
        let path = format!("{}/{}", self.actor_path(), spec.name);
        let children = spec
            .children
            .iter()
            .map(|c| ChildRt {
                spec: c.clone(),
                incarnation: 0,
                slot: None,
                alive: false,
                job_error: Arc::new(Mutex::new(None)),
                handle: Arc::new(HandleShared {
                    name: c.name.clone(),
                    path: format!("{}/{}", self.actor_path(), c.name),
                    current: watch::Sender::new(Current::Restarting { incarnation: 1 }),
                }),
                errors: VecDeque::new(),
                streak: 0,
                started_at: None,
            })
            .collect();
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            path,
            strategy: spec.strategy,
            max_restarts: spec.max_restarts,
            within: spec.within,
            backoff: spec.backoff,
            inner: Mutex::new(Inner {
                children,
                history: Vec::new(),
                restarts: VecDeque::new(),
                stopping: false,
            }),
            ends: ends_tx,
            restarts_total: AtomicU64::new(0),
            done: watch::Sender::new(None),
            stopped: AtomicBool::new(false),
        });
        let sup = Supervisor {
            shared: shared.clone(),
            nursery: Arc::new(self.handle()),
        };
        self.state()
            .supervisors
            .lock()
            .unwrap()
            .push(shared.clone());
        for i in 0..spec.children.len() {
            if let Err(error) = sup.start(i).await {
                let name = spec.children[i].name.clone();
                sup.stop_all("a sibling could not start").await;
                let e = SupervisorError::Start {
                    supervisor: spec.name.clone(),
                    child: name,
                    error,
                };
                shared.done.send_replace(Some(Err(e.clone())));
                return Err(e);
            }
        }
        tracing::info!(supervisor = %shared.path, children = spec.children.len(), strategy = ?spec.strategy, "supervisor started");
        let run = sup.clone();
        self.actor_inner()
            .spawn_task(async move { run.watch(ends_rx).await });
        Ok(sup)
    }
}

impl Supervisor {
    /// The handle on the child called `name`, if the spec has one.
    pub fn child(&self, name: &str) -> Option<Supervised> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .children
            .iter()
            .find(|c| c.spec.name == name)
            .map(|c| Supervised {
                shared: c.handle.clone(),
                wait: None,
            })
    }

    /// Every end of a child incarnation so far, oldest first.
    pub fn history(&self) -> Vec<RestartRecord> {
        self.shared.inner.lock().unwrap().history.clone()
    }

    /// How many incarnations were started again so far (every child counted).
    pub fn restarts(&self) -> u64 {
        self.shared.restarts_total.load(Ordering::Relaxed)
    }

    /// Stop supervising: every child stops, one after the other in reverse start
    /// order, through the whole ladder; returns once all are reaped. Their handles then
    /// answer [`PortalError::NotRunning`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the supervisor stops restarting at the first poll; a teardown already
    /// ordered goes on, and the nursery's end stops the rest in order.
    pub async fn stop(&self) {
        self.stop_all("stopped by its supervisor").await;
        self.shared.end_ok();
    }

    /// Resolves once the supervisor ended: `Ok` after [`stop`](Supervisor::stop) (or its
    /// nursery's end), the error if it gave up.
    ///
    /// # Errors
    /// [`SupervisorError::RestartLimit`] if it gave up.
    pub async fn wait(&self) -> Result<(), SupervisorError> {
        let mut rx = self.shared.done.subscribe();
        let r = rx.wait_for(Option::is_some).await;
        match r {
            Ok(v) => v.clone().expect("waited for it"),
            Err(_) => Ok(()),
        }
    }

    /// Stop every live child in reverse start order, each awaited.
    async fn stop_all(&self, why: &str) {
        let slots = self.shared.halt(why);
        let reason = format!("{} of supervisor {}", why, self.shared.path);
        for s in &slots {
            *s.cancel_reason.lock().unwrap() = Some(reason.clone());
        }
        self.shared.stopped.store(true, Ordering::Release);
        for s in slots {
            s.order_teardown(None);
            s.reaped().await;
        }
    }

    /// Start the next incarnation of child `i`; on failure, why.
    async fn start(&self, i: usize) -> Result<(), String> {
        let (spec, incarnation, handle, job_error) = {
            let mut inner = self.shared.inner.lock().unwrap();
            let c = &mut inner.children[i];
            c.incarnation += 1;
            c.handle.current.send_replace(Current::Restarting {
                incarnation: c.incarnation,
            });
            *c.job_error.lock().unwrap() = None;
            c.started_at = Some(Instant::now());
            (
                c.spec.clone(),
                c.incarnation,
                c.handle.clone(),
                c.job_error.clone(),
            )
        };
        let watch = ChildWatch {
            tx: self.shared.ends.clone(),
            tag: tag(i, incarnation),
        };
        let (slot, portal) = self
            .nursery
            .start_watched(&spec.name, spec.options.clone(), watch)
            .await
            .map_err(|e: SpawnError| e.to_string())?;
        if let Some(call) = &spec.start {
            if spec.runs {
                // The job runs in the background; its end ends the incarnation.
                let call = call.clone();
                let p = portal.clone();
                let slot2 = slot.clone();
                self.nursery.actor_inner().spawn_task(async move {
                    if let Err(e) = call(p).await {
                        *job_error.lock().unwrap() = Some(e.to_string());
                    }
                    slot2.order_teardown(None);
                });
            } else if let Err(e) = call(portal.clone()).await {
                slot.order_teardown(None);
                slot.reaped().await;
                return Err(format!("its start call failed: {e}"));
            }
        }
        {
            let mut inner = self.shared.inner.lock().unwrap();
            let stopping = inner.stopping;
            let c = &mut inner.children[i];
            c.slot = Some(slot.clone());
            c.alive = !stopping;
            if stopping {
                // Started while the supervisor stopped: it stops too.
                slot.order_teardown(None);
                return Err("the supervisor is stopping".to_owned());
            }
        }
        // Counted before it is published: whoever sees the new incarnation sees the count.
        if incarnation > 1 {
            self.shared.restarts_total.fetch_add(1, Ordering::Relaxed);
        }
        handle.current.send_replace(Current::Up {
            portal,
            incarnation,
        });
        tracing::debug!(supervisor = %self.shared.path, child = %spec.name, incarnation, "child up");
        Ok(())
    }

    /// The supervisor's loop: one child end at a time, until it is stopped, gives up,
    /// or its actor shuts down.
    async fn watch(&self, mut ends: mpsc::UnboundedReceiver<ChildEnded>) {
        let mut done = self.shared.done.subscribe();
        let actor = self.nursery.actor_inner().clone();
        loop {
            let end = tokio::select! {
                end = ends.recv() => end,
                _ = done.wait_for(Option::is_some) => return,
                _ = actor.cancel.cancelled() => return,
            };
            let Some(end) = end else { return };
            if self.shared.stopped.load(Ordering::Acquire) {
                continue;
            }
            if let Err(e) = self.on_end(end).await {
                tracing::error!(supervisor = %self.shared.path, error = %e, "supervisor gives up");
                self.stop_all("its supervisor gave up").await;
                self.shared.done.send_replace(Some(Err(e.clone())));
                self.nursery
                    .state()
                    .report_error(ChildError::GaveUp(Box::new(e)));
                return;
            }
            if self.shared.done.borrow().is_some() {
                return;
            }
        }
    }

    /// Handle the end of a child incarnation; `Err` when the supervisor must give up.
    async fn on_end(&self, end: ChildEnded) -> Result<(), SupervisorError> {
        let (i, incarnation) = untag(end.tag);
        let group = {
            let mut inner = self.shared.inner.lock().unwrap();
            if inner.stopping {
                return Ok(());
            }
            let c = &mut inner.children[i];
            if !c.alive || (c.incarnation & 0xffff_ffff) != incarnation {
                // An incarnation this supervisor stopped itself (a sibling's restart).
                return Ok(());
            }
            c.alive = false;
            // A child that ran a whole intensity period starts its backoff over.
            if c.started_at
                .is_none_or(|t| t.elapsed() > self.shared.within)
            {
                c.streak = 0;
            }
            c.streak += 1;
            let job_error = c.job_error.lock().unwrap().take();
            let error = end.error.map(|e| e.to_string()).or(job_error);
            let failed = error.is_some();
            let why = error.clone().unwrap_or_else(|| "ended cleanly".to_owned());
            if let Some(e) = &error {
                c.note_error(e.clone());
            }
            let restart = match c.spec.restart {
                Restart::Permanent => true,
                Restart::Transient => failed,
                Restart::Temporary => false,
            };
            let name = c.spec.name.clone();
            let incarnation = c.incarnation;
            if failed {
                tracing::warn!(supervisor = %self.shared.path, child = %name, incarnation, error = %why, restart, "child failed");
            } else {
                tracing::info!(supervisor = %self.shared.path, child = %name, incarnation, restart, "child ended");
            }
            inner.history.push(RestartRecord {
                child: name.clone(),
                incarnation,
                at: SystemTime::now(),
                why: why.clone(),
                failed,
                restarted: restart,
            });
            if !restart {
                let c = &inner.children[i];
                set_gone(c, &format!("{why} ({:?}: not restarted)", c.spec.restart));
                return Ok(());
            }
            // The restart intensity: past it, the supervisor gives up.
            let now = Instant::now();
            inner.restarts.push_back(now);
            while inner
                .restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.shared.within)
            {
                inner.restarts.pop_front();
            }
            if inner.restarts.len() > self.shared.max_restarts as usize {
                return Err(self.shared.limit(name, &inner.children[i]));
            }
            let n = inner.children.len();
            // Siblings that ended for good (temporary, or transient after a clean end)
            // stay ended: only running ones restart with it.
            let group: Vec<usize> = match self.shared.strategy {
                Strategy::OneForOne => vec![i],
                Strategy::OneForAll => (0..n).collect(),
                Strategy::RestForOne => (i..n).collect(),
            }
            .into_iter()
            .filter(|&j| j == i || inner.children[j].alive)
            .collect();
            // Stopped for the restart: their ends are not news.
            for &j in &group {
                let c = &mut inner.children[j];
                c.alive = false;
                c.handle.current.send_replace(Current::Restarting {
                    incarnation: c.incarnation + 1,
                });
                if j != i {
                    let record = RestartRecord {
                        child: c.spec.name.clone(),
                        incarnation: c.incarnation,
                        at: SystemTime::now(),
                        why: format!("restarted with {name} ({:?})", self.shared.strategy),
                        failed: false,
                        restarted: true,
                    };
                    if let Some(s) = &c.slot {
                        *s.cancel_reason.lock().unwrap() = Some(format!(
                            "restarted by supervisor {} ({:?}) after {name} ended: {why}",
                            self.shared.path, self.shared.strategy
                        ));
                    }
                    inner.history.push(record);
                }
            }
            group
        };
        // Siblings stop first, in reverse start order, each through its ladder.
        for &j in group.iter().rev() {
            if j == i {
                continue;
            }
            let slot = self.shared.inner.lock().unwrap().children[j].slot.clone();
            if let Some(s) = slot {
                s.order_teardown(None);
                s.reaped().await;
            }
        }
        if let Some(wait) = self.backoff(i) {
            tokio::time::sleep(wait).await;
        }
        for &j in &group {
            let mut tries = 0;
            while let Err(why) = self.start(j).await {
                if self.shared.inner.lock().unwrap().stopping {
                    return Ok(());
                }
                tries += 1;
                let (name, errors) = {
                    let mut inner = self.shared.inner.lock().unwrap();
                    let now = Instant::now();
                    inner.restarts.push_back(now);
                    let c = &mut inner.children[j];
                    c.note_error(why.clone());
                    (c.spec.name.clone(), inner.restarts.len())
                };
                tracing::warn!(supervisor = %self.shared.path, child = %name, error = %why, "restart failed");
                if errors > self.shared.max_restarts as usize || tries > self.shared.max_restarts {
                    let inner = self.shared.inner.lock().unwrap();
                    return Err(self.shared.limit(name, &inner.children[j]));
                }
                self.shared.inner.lock().unwrap().children[j].streak += 1;
                if let Some(wait) = self.backoff(j) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(())
    }

    /// The wait before restarting child `i`: `first`, doubled for each restart in a row
    /// that followed a life shorter than the intensity period, at most `max`.
    fn backoff(&self, i: usize) -> Option<Duration> {
        let (first, max) = self.shared.backoff?;
        let streak = self.shared.inner.lock().unwrap().children[i].streak.max(1);
        Some(first.saturating_mul(1 << (streak - 1).min(16)).min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_the_child_and_its_incarnation() {
        assert_eq!(untag(tag(3, 7)), (3, 7));
        assert_eq!(untag(tag(0, 1)), (0, 1));
    }

    #[test]
    #[should_panic(expected = "two children named")]
    fn a_spec_refuses_two_children_of_one_name() {
        let _ = SupervisorSpec::new(Strategy::OneForOne)
            .child(ChildSpec::new("a"))
            .child(ChildSpec::new("a"));
    }

    #[test]
    fn kinds_are_defined() {
        assert_eq!(spawn_api::kinds::RESTART_LIMIT, "brood::RestartLimit");
    }
}

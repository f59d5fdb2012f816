//! The running actor: its identity and scope, its listener, the calls it serves, and
//! its orderly shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use runtime_vars::RuntimeVars;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::children::NurseryState;
use crate::conn::{CallLink, CallStart, Conn, ConnEnv, ConnOwner, Peer, Side};
use crate::error::{ChildError, FnError};
use crate::handshake::{self, Handshaken};
use crate::portal::Portal;
use crate::unwind::CatchUnwind;
use spawn_api::{
    ActorEntry, ActorId, Addr, CallKind, Channel, ChannelLimits, Extensions, Frame, Listener, Msg,
    Nonce, Payload, RemoteError, SpawnBackend, SpawnError, TeardownHook, TeardownPolicy, Transport,
    TransportError, TreeSecret, kinds,
};

/// How long an incoming channel may take to complete its handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an actor adds to the teardown time it announces to its parent, for its own exit
/// after its children are gone.
pub(crate) const STOPPING_MARGIN: Duration = Duration::from_millis(500);

/// Where the ladders an actor runs for its children stand: when each will be over at the
/// latest (`None`: in a teardown hook, which may take as long as it needs). The actor
/// announces the latest to its parent ([`Msg::Stopping`]), so its parent's ladder gives
/// the whole subtree time to tear down in order.
#[derive(Default)]
pub(crate) struct TeardownBoard {
    entries: Mutex<HashMap<u64, Option<Instant>>>,
    changed: watch::Sender<u64>,
}

impl TeardownBoard {
    /// The ladder for child `key` will be over by `until` (`None`: unknown, in a hook).
    pub(crate) fn set(&self, key: u64, until: Option<Instant>) {
        self.entries.lock().unwrap().insert(key, until);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The ladder for child `key` is over.
    pub(crate) fn clear(&self, key: u64) {
        self.entries.lock().unwrap().remove(&key);
        self.changed.send_modify(|n| *n += 1);
    }

    /// `None`: no ladder runs. `Some(None)`: one is in a hook. Else when all are over.
    fn latest(&self) -> Option<Option<Instant>> {
        let entries = self.entries.lock().unwrap();
        if entries.is_empty() {
            return None;
        }
        if entries.values().any(Option::is_none) {
            return Some(None);
        }
        Some(entries.values().flatten().max().copied())
    }
}

/// A child this actor waits for: the nonce its boot carries, and where its channel goes
/// once it proved itself.
pub(crate) struct Pending {
    pub(crate) nonce: Nonce,
    pub(crate) tx: oneshot::Sender<Handshaken>,
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub(crate) type CallHandler =
    Arc<dyn Fn(ActorCx, Payload) -> BoxFuture<Result<Payload, FnError>> + Send + Sync>;
pub(crate) type StreamHandler =
    Arc<dyn Fn(ActorCx, Payload, CallLink) -> BoxFuture<Result<(), FnError>> + Send + Sync>;
pub(crate) type ContextHandler =
    Arc<dyn Fn(ActorCx, Payload, CallLink) -> BoxFuture<Result<Payload, FnError>> + Send + Sync>;

/// A registered handler's code with its types erased.
#[derive(Clone)]
pub(crate) enum Body {
    Call(CallHandler),
    Stream(StreamHandler),
    Context(ContextHandler),
}

/// A registered handler: its code and its types by name.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) body: Body,
    /// The function's types ([`spawn_api::Signature`]) and their hash.
    pub(crate) sig: Arc<(spawn_api::Signature, u64)>,
}

impl Handler {
    pub(crate) fn new(body: Body, types: &[&str]) -> Handler {
        Handler {
            body,
            sig: Arc::new((
                spawn_api::Signature::new(types),
                spawn_api::Signature::hash_of(types),
            )),
        }
    }

    pub(crate) fn kind(&self) -> CallKind {
        match self.body {
            Body::Call(_) => CallKind::Call,
            Body::Stream(_) => CallKind::Stream,
            Body::Context(_) => CallKind::Context,
        }
    }
}

/// What [`BroodBuilder::post_mortem`](crate::BroodBuilder::post_mortem) runs: given the
/// failed actor and why it failed.
pub(crate) type PostMortem = Arc<dyn Fn(ActorCx, String) -> BoxFuture<()> + Send + Sync>;

/// The program an actor belongs to, as the actor uses it: the functions it serves, the
/// backends and transports its children use, the hooks its teardown calls, and the
/// entry that runs a child actor in this process. [`Brood`](crate::Brood) is the one
/// implementation; the actor holds it as this trait so that it does not depend on how a
/// program is built.
pub(crate) trait Program: Send + Sync + 'static {
    /// The handler of the function named `name`.
    fn handler(&self, name: &str) -> Option<Handler>;
    /// The backend with key `key`.
    fn backend(&self, key: &str) -> Result<Arc<dyn SpawnBackend>, SpawnError>;
    /// The transport with key `key`.
    fn transport(&self, key: &str) -> Result<Arc<dyn Transport>, SpawnError>;
    /// The teardown hooks, in order.
    fn hooks(&self) -> Vec<Arc<dyn TeardownHook>>;
    /// What stops a failed handler of an actor in debug mode before its error is
    /// reported ([`BroodBuilder::post_mortem`](crate::BroodBuilder::post_mortem)).
    fn post_mortem(&self) -> Option<PostMortem>;
    /// How a backend runs a child actor of this program in this process.
    fn entry(&self) -> ActorEntry;
}

/// The prefix of the [`RuntimeVars::services`] entries that say where the tree listens
/// on a transport: `transport.<key>` is the address of an actor on this actor's path from
/// the root that listens on `<key>` (its parent, or a nearer ancestor). A new endpoint on
/// that transport is placed next to it ([`Transport::address_for`]'s `near`), so every
/// endpoint of a tree shares the location its first actor on that transport chose.
pub(crate) const TRANSPORT_SERVICE: &str = "transport.";

/// The [`RuntimeVars::services`] key of the tree's location on transport `key`.
pub(crate) fn transport_service(key: &str) -> String {
    format!("{TRANSPORT_SERVICE}{key}")
}

/// A listener an actor opened on a transport other than its own, for children on that
/// transport (see [`ActorInner::listen_on`]).
struct ExtraListener {
    transport: Arc<dyn Transport>,
    addr: Addr,
    /// Whether `addr` was placed as a tree of its own (no actor on this actor's path
    /// listened on that transport): the actor removes that whole tree when it ends.
    own_tree: bool,
    /// Whether the listener is bound (a bind that was dropped or failed leaves only the
    /// reserved address, bound again by the next spawn that needs it).
    bound: bool,
}

/// Everything one actor is. Shared by its tasks; never stored in a static.
pub(crate) struct ActorInner {
    pub(crate) id: ActorId,
    pub(crate) vars: Arc<RuntimeVars>,
    pub(crate) path: String,
    pub(crate) program: Arc<dyn Program>,
    /// The actor's own transport: where it listens (at `addr`), and its children's
    /// unless they choose another ([`ActorOptions::transport`](crate::ActorOptions)).
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) addr: Addr,
    /// Listeners on other transports, opened for children that chose them.
    extra_listeners: Mutex<Vec<ExtraListener>>,
    /// Held while one of `extra_listeners` is being bound: one bind per transport.
    binding: tokio::sync::Mutex<()>,
    pub(crate) policy: TeardownPolicy,
    pub(crate) limits: ChannelLimits,
    /// The tree's secret, proved by both ends of every channel.
    pub(crate) secret: TreeSecret,
    /// Fires when the actor starts shutting down: served calls and nursery bodies end.
    pub(crate) cancel: CancellationToken,
    /// Served calls, child supervisors, `run_in_actor` drivers.
    pub(crate) tasks: TaskTracker,
    /// Channel readers and writers and the accept loop: they outlive `tasks` so that
    /// teardown can still talk to children and final reports reach the parent.
    pub(crate) io_tasks: TaskTracker,
    pub(crate) io_stop: CancellationToken,
    /// New children this actor waits for, by id: the channel that proves it is that
    /// child is handed to its supervisor.
    pub(crate) pending: Mutex<HashMap<ActorId, Pending>>,
    failure: Mutex<Option<RemoteError>>,
    /// The status the actor asked to end with ([`ActorCx::exit`]).
    pub(crate) exit_code: Mutex<Option<i32>>,
    cancel_acks: Mutex<Vec<Conn>>,
    /// Who cancelled the actor and why, once someone did (the first cause is kept).
    cancel_cause: Mutex<Option<spawn_api::CancelCause>>,
    /// Live [`CancelShield`]s, and whether a cancel request waits for them.
    shields: Mutex<Shields>,
    pub(crate) parent: OnceLock<Conn>,
    pub(crate) extensions: Extensions,
    pub(crate) span: tracing::Span,
    /// Connections from peers that are neither the parent nor a child.
    pub(crate) peer_conns: AtomicUsize,
    /// Incoming connections in their handshake.
    handshakes: AtomicUsize,
    pub(crate) board: TeardownBoard,
    /// Nurseries whose scope was dropped (a cancelled call, the actor's own shutdown):
    /// their children are still torn down, and what went wrong with them is reported when
    /// the actor ends.
    orphans: Mutex<Vec<Arc<NurseryState>>>,
    /// Children alive, for the process's SIGTERM policy (see `os_wrappers::sigterm`).
    pub(crate) live_children: Arc<AtomicUsize>,
    /// The registrar's table (a root), lookups' channels, what `Status` reports.
    pub(crate) discovery: crate::discovery_state::Discovery,
    /// Contexts this actor's tasks share by key ([`ActorCx::open_shared_context`]).
    pub(crate) shared: crate::shared::SharedContexts,
}

impl ConnOwner for ActorInner {
    fn path(&self) -> &str {
        &self.path
    }

    fn conn_env(&self) -> ConnEnv {
        ConnEnv {
            limits: self.limits,
            stop: self.io_stop.clone(),
            span: self.span.clone(),
            tasks: self.io_tasks.clone(),
            cancel_wait: self.policy.cancel_timeout.max(Duration::from_millis(50)) * 2,
        }
    }

    fn serve(self: Arc<Self>, conn: &Conn, start: CallStart<'_>, args: Payload) {
        let CallStart {
            cid,
            func,
            kind,
            window: peer_window,
            sig,
        } = start;
        let refuse = |kind: &str, message: String| {
            let error = RemoteError::new(kind, message, self.path.clone());
            conn.send_control(Msg::Error {
                cid: Some(cid),
                error,
            });
        };
        let handler = match self.program.handler(func) {
            Some(h) if h.kind() == kind => h.clone(),
            Some(h) => {
                return refuse(
                    kinds::WRONG_KIND,
                    format!("{func} is a {:?} function, called as a {kind:?}", h.kind()),
                );
            }
            None => {
                // A name we do not know comes from the peer: quote only a bounded part
                // of it back.
                let shown: String = func.chars().take(120).collect();
                return refuse(
                    kinds::NO_SUCH_FUNCTION,
                    format!("actor {} serves no function named {shown:?}", self.path),
                );
            }
        };
        let Some(link) = conn.accept_call(cid, peer_window) else {
            return refuse(
                kinds::TOO_MANY_CALLS,
                format!(
                    "actor {} already serves {} calls on this channel",
                    self.path,
                    conn.limits().max_calls
                ),
            );
        };
        tracing::debug!(cid, func, ?kind, caller = %conn.peer_path(), "serving a call");
        let window = self.limits.window();
        let call: Arc<str> = Arc::from(func);
        let cx = ActorCx {
            inner: self.clone(),
            caller: Some(conn.peer().clone()),
            call: Some(call.clone()),
        };
        let me = self.clone();
        let conn2 = conn.clone();
        let in_flight = self.discovery.serving();
        let state = link.state().clone();
        // The caller's types differ from ours (by name): say ours, so that a value that
        // fails to decode on either side names both.
        let types = (sig != 0 && sig != handler.sig.1).then(|| Box::new(handler.sig.0.clone()));
        let mut link = link;
        link.set_types_differ(types.is_some());
        // A cancelled stream or context gets this long to see its cancellation and end
        // on its own (its end answers `ContextCancelled` at once); a one-shot call has no
        // end to see it through, so it is dropped at once.
        let grace = match kind {
            CallKind::Call => Duration::ZERO,
            CallKind::Stream | CallKind::Context => self.policy.cancel_timeout,
        };
        let fut = async move {
            let _in_flight = in_flight;
            // Acknowledged from the serving task rather than the reader: a quick reply is
            // then queued before the writer runs, and both leave in one write.
            conn2.send_control(Msg::StartAck { cid, window, types });
            enum Done {
                Reply(Payload),
                Stop,
                Return(Payload),
            }
            let work = async move {
                match handler.body {
                    Body::Call(f) => {
                        drop(link);
                        f(cx, args).await.map(Done::Reply)
                    }
                    Body::Stream(f) => f(cx, args, link).await.map(|()| Done::Stop),
                    Body::Context(f) => f(cx, args, link).await.map(Done::Return),
                }
            };
            let cancelled_by_peer = async {
                let c = state.wait().await;
                if c.side == crate::error::CancelSide::This {
                    // This side cancelled: its own function ends when it chooses.
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(grace).await;
            };
            let actor_cancelled = tokio::select! {
                biased;
                r = CatchUnwind::new(work) => Some(r),
                _ = me.cancel.cancelled() => None,
                _ = cancelled_by_peer => Some(Ok(Err(FnError::new(kinds::CANCELLED, "dropped after the cancel's grace")))),
            };
            // A cancelled call (either side) ends with its cancellation: the peer gets an
            // acknowledgement if it asked for one, and nothing else (its end already
            // answers the cancellation).
            if let Some(c) = state.cancelled() {
                tracing::debug!(cid, side = ?c.side, canceller = %c.canceller, "call cancelled");
                if c.side != crate::error::CancelSide::This && state.ack_wanted() {
                    conn2.send_control(Msg::CancelAck { cid: Some(cid) });
                }
                conn2.remove_route(cid);
                return;
            }
            let Some(outcome) = actor_cancelled else {
                let cause = me.cancel_cause();
                tracing::debug!(cid, canceller = %cause.canceller, "call ended by the actor's cancel");
                conn2.send_control(Msg::Cancel {
                    cid: Some(cid),
                    cause: Some(cause),
                });
                conn2.remove_route(cid);
                return;
            };
            // In debug mode a failure stops for a person first (post-mortem), before the
            // caller learns of it; a cancellation is not a failure, and an actor being
            // cancelled (a person typed `q`, say) does not stop again.
            if me.vars.debug_mode
                && !me.cancel.is_cancelled()
                && let Some(stop) = me.program.post_mortem()
            {
                let why = match &outcome {
                    Ok(Err(e)) if e.kind() != kinds::CANCELLED => Some(format!("error {e}")),
                    Err(panic) => Some(format!("panic {}", panic.message)),
                    _ => None,
                };
                if let Some(why) = why {
                    let cx = ActorCx {
                        inner: me.clone(),
                        caller: Some(conn2.peer().clone()),
                        call: Some(call),
                    };
                    stop(cx, why).await;
                }
            }
            let frames = match outcome {
                Ok(Ok(Done::Reply(b))) => vec![Frame::with_parts(Msg::Return { cid }, b)],
                Ok(Ok(Done::Stop)) => vec![Frame::control(Msg::Stop { cid })],
                Ok(Ok(Done::Return(b))) => vec![
                    Frame::control(Msg::Stop { cid }),
                    Frame::with_parts(Msg::Return { cid }, b),
                ],
                Ok(Err(e)) => vec![Frame::control(Msg::Error {
                    cid: Some(cid),
                    error: e.into_remote(&me.path),
                })],
                Err(panic) => {
                    let mut error = RemoteError::new(kinds::PANIC, panic.message, me.path.clone());
                    error.traceback = panic.location;
                    tracing::error!(%error, "handler panicked; the actor ends");
                    me.fail(error.clone());
                    vec![Frame::control(Msg::Error {
                        cid: Some(cid),
                        error,
                    })]
                }
            };
            tracing::debug!(cid, "call done");
            for f in frames {
                match conn2.send(f).await {
                    Err(crate::PortalError::Protocol(e)) => {
                        // A reply too large for the channel becomes an error reply.
                        let error =
                            RemoteError::new(kinds::PROTOCOL, e.to_string(), me.path.clone());
                        conn2.send_control(Msg::Error {
                            cid: Some(cid),
                            error,
                        });
                    }
                    Err(_) => break,
                    Ok(()) => {}
                }
            }
            conn2.remove_route(cid);
        };
        let handle = self.spawn_task(fut);
        conn.set_task(cid, handle.abort_handle());
    }

    /// A peer sent `Cancel { cid: None }`.
    fn cancel_requested_by(&self, conn: &Conn, cause: Option<spawn_api::CancelCause>) {
        tracing::debug!(by = %conn.peer_path(), "actor cancel requested");
        let reason = cause
            .map(|c| c.bounded().reason)
            .unwrap_or_else(|| "cancel requested".to_owned());
        self.note_cancel_cause(conn.peer_path(), &reason);
        self.cancel_acks.lock().unwrap().push(conn.clone());
        let mut shields = self.shields.lock().unwrap();
        if shields.live > 0 {
            // A person is in a debugger session here: the cancel waits for its end.
            shields.deferred = true;
            tracing::warn!(
                "cancel requested during a debugger session: it waits for the session's end"
            );
            return;
        }
        drop(shields);
        self.cancel.cancel();
    }

    /// A channel's reader ended.
    fn conn_closed(&self, conn: &Conn, kind: Peer) {
        if kind == Peer::Other {
            self.peer_conns.fetch_sub(1, Ordering::Relaxed);
        }
        // The channel this actor opened to its parent, and no other: a peer cannot make
        // an actor believe its parent left by claiming the parent's id.
        if let Some(p) = self.parent.get()
            && p.same(conn)
            && !self.cancel.is_cancelled()
        {
            tracing::debug!("parent channel closed; shutting down");
            self.note_cancel_cause(conn.peer_path(), "the channel to its parent closed");
            self.cancel.cancel();
        }
    }
}

/// Everything an actor is made from, gathered before it starts.
pub(crate) struct ActorSetup {
    pub(crate) id: ActorId,
    pub(crate) vars: RuntimeVars,
    pub(crate) program: Arc<dyn Program>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) addr: Addr,
    pub(crate) policy: TeardownPolicy,
    pub(crate) limits: ChannelLimits,
    pub(crate) secret: TreeSecret,
    pub(crate) extensions: Extensions,
    /// Where to count live children (the process actor shares it with its SIGTERM
    /// handler); a fresh counter if `None`.
    pub(crate) live_children: Option<Arc<AtomicUsize>>,
    /// The tree's registrar table, in a root.
    pub(crate) registrar: Option<Arc<crate::registrar::Table>>,
}

impl ActorInner {
    pub(crate) fn new(setup: ActorSetup) -> Arc<ActorInner> {
        let ActorSetup {
            id,
            vars,
            program,
            transport,
            addr,
            policy,
            limits,
            secret,
            extensions,
            live_children,
            registrar,
        } = setup;
        let path = vars.path();
        let span = crate::logging::actor_span(&path);
        Arc::new(ActorInner {
            id,
            vars: Arc::new(vars),
            path,
            program,
            transport,
            addr,
            extra_listeners: Mutex::new(Vec::new()),
            binding: tokio::sync::Mutex::new(()),
            policy,
            limits,
            secret,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            io_tasks: TaskTracker::new(),
            io_stop: CancellationToken::new(),
            pending: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            exit_code: Mutex::new(None),
            cancel_acks: Mutex::new(Vec::new()),
            cancel_cause: Mutex::new(None),
            shields: Mutex::new(Shields::default()),
            parent: OnceLock::new(),
            extensions,
            span,
            peer_conns: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            board: TeardownBoard::default(),
            orphans: Mutex::new(Vec::new()),
            live_children: live_children.unwrap_or_default(),
            discovery: crate::discovery_state::Discovery::new(registrar),
            shared: crate::shared::SharedContexts::default(),
        })
    }

    /// Spawn a task that belongs to this actor: tracked, in its scope and span.
    pub(crate) fn spawn_task<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks
            .spawn(runtime_vars::scope(self.vars.clone(), fut).instrument(self.span.clone()))
    }

    /// Spawn an I/O task of this actor (it outlives the actor's other tasks, until its
    /// I/O stops).
    pub(crate) fn spawn_io<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.io_tasks
            .spawn(runtime_vars::scope(self.vars.clone(), fut).instrument(self.span.clone()));
    }

    /// Where this actor listens on `transport`: its own address on its own transport;
    /// on another, a listener opened on first use and kept until the actor ends (the
    /// channel to a child that chose that transport runs over it, so the child connects
    /// back to it).
    ///
    /// The listener is placed next to the tree's location on that transport (the
    /// `transport.<key>` service of the actor's vars, see [`TRANSPORT_SERVICE`]); with
    /// none, as a tree of its own, which the actor removes when it ends.
    ///
    /// Cancel safe: a bind dropped midway leaves its address reserved (and removed when
    /// the actor ends); the next call binds it again.
    pub(crate) async fn listen_on(
        self: &Arc<Self>,
        transport: &Arc<dyn Transport>,
    ) -> Result<Addr, TransportError> {
        let key = transport.key();
        if key == self.transport.key() {
            return Ok(self.addr.clone());
        }
        let find = |me: &Self| {
            me.extra_listeners
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.transport.key() == key)
                .map(|l| (l.addr.clone(), l.bound))
        };
        if let Some((addr, true)) = find(self) {
            return Ok(addr);
        }
        let _one_bind = self.binding.lock().await;
        let addr = match find(self) {
            Some((addr, true)) => return Ok(addr),
            Some((addr, false)) => addr,
            None => {
                let near = self
                    .vars
                    .services
                    .get(&transport_service(key))
                    .and_then(|a| a.parse::<Addr>().ok())
                    .filter(|a| a.transport() == key);
                let addr = transport.address_for(&self.id, near.as_ref())?;
                self.extra_listeners.lock().unwrap().push(ExtraListener {
                    transport: transport.clone(),
                    addr: addr.clone(),
                    own_tree: near.is_none(),
                    bound: false,
                });
                addr
            }
        };
        let listener = transport.bind(&addr).await?;
        for l in self.extra_listeners.lock().unwrap().iter_mut() {
            if l.transport.key() == key {
                l.bound = true;
            }
        }
        tracing::debug!(%addr, "listening on another transport for a child");
        self.spawn_accept_loop(listener, transport.max_frame());
        Ok(addr)
    }

    /// Where this actor listens on each transport, its own first: what its children
    /// inherit as the tree's locations (see [`TRANSPORT_SERVICE`]).
    pub(crate) fn listening(&self) -> Vec<(String, Addr)> {
        let mut out = vec![(self.transport.key().to_owned(), self.addr.clone())];
        for l in self.extra_listeners.lock().unwrap().iter() {
            if l.bound {
                out.push((l.transport.key().to_owned(), l.addr.clone()));
            }
        }
        out
    }

    /// Remove what this actor's listeners on other transports left behind: their
    /// endpoints, and the trees it started on transports nobody on its path used. Called
    /// once its children are reaped and its listeners closed.
    pub(crate) fn remove_extra_endpoints(&self) {
        for l in self.extra_listeners.lock().unwrap().drain(..) {
            if l.own_tree {
                l.transport.cleanup_tree(&l.addr);
            } else {
                l.transport.cleanup(&l.addr);
            }
        }
    }

    /// Serve incoming channels until the actor's I/O stops; the listener (and its
    /// endpoint) goes away with the loop. `max_frame` is the listener's transport's.
    pub(crate) fn spawn_accept_loop(
        self: &Arc<Self>,
        mut listener: Box<dyn Listener>,
        max_frame: usize,
    ) {
        let me = self.clone();
        self.spawn_io(async move {
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = me.io_stop.cancelled() => break,
                    r = listener.accept() => r,
                };
                match accepted {
                    Ok(ch) => {
                        let busy = me.handshakes.fetch_add(1, Ordering::Relaxed);
                        if busy >= me.limits.max_pending_handshakes as usize {
                            me.handshakes.fetch_sub(1, Ordering::Relaxed);
                            tracing::warn!(
                                limit = me.limits.max_pending_handshakes,
                                "too many handshakes in progress; dropping a new channel"
                            );
                            drop(ch);
                            continue;
                        }
                        let me2 = me.clone();
                        me.spawn_io(async move {
                            me2.clone().handshake_incoming(ch, max_frame).await;
                            me2.handshakes.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Err(TransportError::Closed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "refused an incoming channel");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            drop(listener);
        });
    }

    async fn handshake_incoming(self: Arc<Self>, ch: Box<dyn Channel>, max_frame: usize) {
        let expected = |id: &ActorId| self.pending.lock().unwrap().get(id).map(|p| p.nonce);
        let accepted = tokio::select! {
            _ = self.io_stop.cancelled() => return,
            r = handshake::accept(ch, &self.id, &self.path, &self.secret, &expected, HANDSHAKE_TIMEOUT) => r,
        };
        let hs = match accepted {
            Ok(hs) => hs,
            Err(e) => {
                tracing::debug!(error = %e, "incoming handshake failed");
                return;
            }
        };
        let waiting = self.pending.lock().unwrap().remove(&hs.peer);
        if let Some(p) = waiting {
            // A child we spawned: its supervisor sends the spawn spec (with our answer to
            // its handshake, in one write).
            let _ = p.tx.send(hs);
            return;
        }
        let Handshaken {
            peer,
            peer_info,
            mut sink,
            source,
        } = hs;
        let n = self.peer_conns.fetch_add(1, Ordering::Relaxed);
        if n >= self.limits.max_peer_connections as usize {
            self.peer_conns.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = self.limits.max_peer_connections, "too many peer channels; refusing one");
            let error = RemoteError::new(
                kinds::TOO_MANY_CONNECTIONS,
                format!(
                    "actor {} already has {} peer channels open",
                    self.path, self.limits.max_peer_connections
                ),
                self.path.clone(),
            );
            handshake::refuse(&mut *sink, error).await;
            return;
        }
        tracing::debug!(%peer, "accepted a channel from a peer");
        let path = peer.to_string();
        Conn::start(
            self,
            peer,
            path,
            peer_info,
            Peer::Other,
            sink,
            source,
            Side::Acceptor,
            max_frame,
        );
    }

    /// Remember who cancels this actor and why, unless a cause is already known: the
    /// calls it serves end with that cause ([`crate::ContextCancelled`], side
    /// [`crate::CancelSide::Actor`]).
    pub(crate) fn note_cancel_cause(&self, canceller: &str, reason: &str) {
        let mut c = self.cancel_cause.lock().unwrap();
        if c.is_none() {
            *c = Some(
                spawn_api::CancelCause {
                    canceller: canceller.to_owned(),
                    reason: reason.to_owned(),
                    actor: true,
                }
                .bounded(),
            );
        }
    }

    /// Who cancelled this actor and why (this actor itself, shutting down, if nobody
    /// said).
    pub(crate) fn cancel_cause(&self) -> spawn_api::CancelCause {
        self.cancel_cause
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| spawn_api::CancelCause {
                canceller: self.path.clone(),
                reason: format!("actor {} is shutting down", self.path),
                actor: true,
            })
    }

    /// The actor cannot go on (a handler panicked): remember why and shut down.
    pub(crate) fn fail(&self, error: RemoteError) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(error);
        }
        drop(f);
        self.cancel.cancel();
    }

    /// Keep a dropped nursery's state so its children's errors are reported when the
    /// actor ends.
    pub(crate) fn adopt_orphan(&self, state: Arc<NurseryState>) {
        self.orphans.lock().unwrap().push(state);
    }

    /// Errors of children whose nursery was dropped, taken once.
    fn orphan_errors(&self) -> Vec<ChildError> {
        self.orphans
            .lock()
            .unwrap()
            .drain(..)
            .flat_map(|s| s.take_errors())
            .collect()
    }

    /// Tell the parent how long this actor's teardown of its children may take, again
    /// whenever that changes, until the actor's tasks are done.
    async fn announce_teardown(&self) {
        let Some(parent) = self.parent.get() else {
            return;
        };
        let mut changes = self.board.changed.subscribe();
        let mut announced: Option<Instant> = None;
        loop {
            if let Some(Some(until)) = self.board.latest() {
                let until = until + STOPPING_MARGIN;
                // Later than announced (by more than noise): say so.
                if announced.is_none_or(|a| until > a + Duration::from_millis(50)) {
                    let within = until.saturating_duration_since(Instant::now());
                    tracing::debug!(?within, "announcing the teardown of our children");
                    parent.send_control(Msg::Stopping { within });
                    announced = Some(until);
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait for the actor's tasks (served calls, supervisors running their ladders),
    /// bounded: the latest ladder's end plus room, or without bound while a teardown
    /// hook runs (a person may be debugging a child).
    async fn wait_tasks(&self) {
        let started = Instant::now();
        let mut changes = self.board.changed.subscribe();
        loop {
            let bound = match self.board.latest() {
                Some(None) => None,
                Some(Some(until)) => Some(until + self.policy.worst_case() + STOPPING_MARGIN),
                None => Some(started + self.policy.worst_case() * 2 + Duration::from_secs(5)),
            };
            let timeout = async {
                match bound {
                    Some(b) => tokio::time::sleep_until(b).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.tasks.wait() => return,
                _ = changes.changed() => continue,
                _ = timeout => {
                    tracing::warn!(
                        after = ?started.elapsed(),
                        "actor tasks did not finish in time; stopping anyway"
                    );
                    return;
                }
            }
        }
    }

    /// Shut the actor down in order: end served calls and nurseries (children are torn
    /// down by their supervisors, through the whole ladder), report to the parent, then
    /// stop all I/O. Returns the failure that ended the actor, if any.
    pub(crate) async fn shutdown(self: &Arc<Self>) -> Option<RemoteError> {
        self.cancel.cancel();
        self.tasks.close();
        tokio::select! {
            _ = self.wait_tasks() => {}
            _ = self.announce_teardown() => {}
        }
        let orphaned = self.orphan_errors();
        if !orphaned.is_empty() {
            for e in &orphaned {
                tracing::error!(error = %e, "a child of a cancelled scope failed");
            }
            let mut error = orphaned[0].to_remote();
            error
                .chain
                .extend(orphaned[1..].iter().map(|e| e.to_string()));
            let mut f = self.failure.lock().unwrap();
            if f.is_none() {
                *f = Some(error);
            }
        }
        let failure = self.failure.lock().unwrap().clone();
        if let (Some(p), Some(f)) = (self.parent.get(), &failure) {
            p.send_control(Msg::Error {
                cid: None,
                error: f.clone(),
            });
        }
        for c in self.cancel_acks.lock().unwrap().drain(..) {
            c.send_control(Msg::CancelAck { cid: None });
        }
        self.io_stop.cancel();
        self.io_tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), self.io_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("channels did not close in time");
        }
        // The lookups' portals hold this actor (through their channels): let go of them.
        self.discovery.forget_portals();
        self.remove_extra_endpoints();
        failure
    }
}

/// The running actor, as seen by its own functions: who it is, its runtime vars, and
/// the means to spawn children of its own.
///
/// Every handler receives one. It is cheap to clone and may be moved into tasks.
#[derive(Clone)]
pub struct ActorCx {
    pub(crate) inner: Arc<ActorInner>,
    pub(crate) caller: Option<ActorId>,
    /// The function of the call this context belongs to.
    pub(crate) call: Option<Arc<str>>,
}

impl std::fmt::Debug for ActorCx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorCx")
            .field("actor", &self.inner.path)
            .field("caller", &self.caller)
            .finish()
    }
}

/// Live cancel shields of an actor.
#[derive(Debug, Default)]
struct Shields {
    live: usize,
    /// A cancel request arrived while some were live.
    deferred: bool,
}

/// Holds back cancel requests from other actors while alive
/// ([`ActorCx::shield_from_cancel`]).
#[must_use = "the shield holds cancel requests back only while it lives"]
pub struct CancelShield {
    inner: Arc<ActorInner>,
}

impl std::fmt::Debug for CancelShield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelShield")
            .field("actor", &self.inner.path)
            .finish()
    }
}

impl Drop for CancelShield {
    fn drop(&mut self) {
        let mut s = self.inner.shields.lock().unwrap();
        s.live -= 1;
        if s.live == 0 && std::mem::take(&mut s.deferred) {
            drop(s);
            tracing::debug!("the debugger session ended: the deferred cancel takes effect");
            self.inner.cancel.cancel();
        }
    }
}

tokio::task_local! {
    /// The actor whose teardown ladder is running (see [`ActorCx::current`]).
    pub(crate) static LADDER_ACTOR: ActorCx;
}

impl ActorCx {
    /// The context of `inner` outside any call (no caller, no function).
    pub(crate) fn of(inner: Arc<ActorInner>) -> ActorCx {
        ActorCx {
            inner,
            caller: None,
            call: None,
        }
    }

    /// The actor running the current teardown ladder, inside a
    /// [`TeardownHook`](spawn_api::TeardownHook)'s methods (`None` elsewhere): what a hook
    /// needs to reach other actors (the root's debugger lock, say) as that actor.
    ///
    /// ```
    /// // Outside a hook there is none.
    /// assert!(actor_core::ActorCx::current().is_none());
    /// ```
    pub fn current() -> Option<ActorCx> {
        LADDER_ACTOR.try_with(Clone::clone).ok()
    }

    /// This actor's id.
    pub fn id(&self) -> &ActorId {
        &self.inner.id
    }

    /// Open the context `C` at `portal`'s actor under `key`, or join it if a task of this
    /// actor already opened it there with that key (tractor's `maybe_open_context`). The
    /// first task opens it with `args` (a later task's `args` are not used); every task
    /// gets its own [`SharedContext`](crate::SharedContext) handle: the `started`
    /// value, every item the callee sends from then on, and a way to send. The last
    /// handle to leave closes the context; dropping every handle cancels it. Tasks that
    /// ask while the first is still opening wait for that opening; if it fails, the
    /// next one tries again (a failed open is not kept).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for the opening task: dropped while opening, the context is
    /// cancelled as [`Portal::open_context`] is, and the next task to ask opens anew.
    ///
    /// # Errors
    /// As [`Portal::open_context`], for the task that opens the context.
    ///
    /// ```no_run
    /// # async fn demo(cx: actor_core::ActorCx, feed: actor_core::Portal) -> Result<(), actor_core::PortalError> {
    /// actor_core::context!(Quotes: String => started u64, in (), out f64, return ());
    /// // Any number of tasks of this actor may run this: one context serves them all.
    /// let mut quotes = cx.open_shared_context(&feed, Quotes, "ACME", "ACME".into()).await?;
    /// println!("subscribed (first: {}), {} users", quotes.is_first(), quotes.users());
    /// while let Some(q) = quotes.recv().await? {
    ///     if q > 100.0 {
    ///         break;
    ///     }
    /// }
    /// quotes.leave().await?; // the last one to leave closes the context
    /// # Ok(()) }
    /// ```
    pub async fn open_shared_context<C>(
        &self,
        portal: &Portal,
        function: C,
        key: impl Into<String>,
        args: C::Args,
    ) -> Result<crate::SharedContext<C>, crate::PortalError>
    where
        C: spawn_api::ContextFn,
        C::Started: Clone + Send + Sync,
        C::Out: Clone + Sync,
    {
        self.inner
            .shared
            .open(portal, function, key.into(), args)
            .await
    }

    /// How many shared contexts this actor has open ([`ActorCx::open_shared_context`]).
    pub fn shared_contexts(&self) -> usize {
        self.inner.shared.len()
    }

    /// This actor's tree path (`root/worker`).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// This actor's runtime vars (the ones its parent built for it).
    pub fn vars(&self) -> &Arc<RuntimeVars> {
        &self.inner.vars
    }

    /// Where this actor listens.
    pub fn addr(&self) -> &Addr {
        &self.inner.addr
    }

    /// The actor that made the current call, if this context belongs to a call.
    pub fn caller(&self) -> Option<&ActorId> {
        self.caller.as_ref()
    }

    /// The function of the current call (its wire name), if this context belongs to a
    /// call.
    pub fn call_name(&self) -> Option<&str> {
        self.call.as_deref()
    }

    /// State attached to this actor by the layers above the core (a backend's
    /// sub-interpreter handle, a debugger session). Lives as long as the actor.
    pub fn extensions(&self) -> &Extensions {
        &self.inner.extensions
    }

    /// The teardown bounds this actor applies to its children.
    pub fn policy(&self) -> &TeardownPolicy {
        &self.inner.policy
    }

    /// The bounds on what this actor's peers may make it hold.
    pub fn limits(&self) -> &ChannelLimits {
        &self.inner.limits
    }

    /// A portal to this actor's parent (`None` in a root).
    pub fn parent(&self) -> Option<Portal> {
        self.inner
            .parent
            .get()
            .map(|c| Portal::new(c.clone(), None, self.inner.policy))
    }

    /// Run `fut` as a task of this actor: it sees the actor's runtime vars
    /// ([`runtime_vars::current`]), logs in the actor's span, and is cancelled (dropped)
    /// when the actor shuts down, which waits for it. The handle yields `None` if it was
    /// cancelled that way. (A bare `tokio::spawn` inside a handler runs outside the
    /// actor: `runtime_vars::current()` panics there and nothing stops the task.)
    ///
    /// ```no_run
    /// # async fn demo(cx: actor_core::ActorCx) {
    /// let h = cx.spawn(async { runtime_vars::current().path() });
    /// assert_eq!(h.await.unwrap().as_deref(), Some(cx.path()));
    /// # }
    /// ```
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        self.inner.spawn_task(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                v = fut => Some(v),
            }
        })
    }

    /// Defer cancel requests from other actors (the parent's, say) until the returned
    /// shield is dropped: what a debugger session holds while a person works in it, so
    /// the actor is not shut down under them (the parent's teardown waits for the
    /// session through its hooks). The actor's own [`cancel_actor`](ActorCx::cancel_actor),
    /// its parent's death and its exit are not deferred.
    ///
    /// ```
    /// # fn demo(cx: actor_core::ActorCx) {
    /// let shield = cx.shield_from_cancel();
    /// // ... a session no cancel request may cut short ...
    /// drop(shield); // a cancel requested meanwhile takes effect now
    /// # }
    /// ```
    pub fn shield_from_cancel(&self) -> CancelShield {
        self.inner.shields.lock().unwrap().live += 1;
        CancelShield {
            inner: self.inner.clone(),
        }
    }

    /// Ask this actor to shut down, as if its parent had cancelled it.
    pub fn cancel_actor(&self) {
        let me = &self.inner;
        me.note_cancel_cause(&me.path, "the actor cancelled itself");
        me.cancel.cancel();
    }

    /// Shut this actor down in order (its calls cancelled, its children torn down) and
    /// end it with `code` as its exit status: a process actor's process exits with it, an
    /// in-process actor reports it. Its parent sees a non-zero code as
    /// [`ChildError::Exited`](crate::ChildError::Exited). A root ignores the code (it has no
    /// parent to report to) but shuts down all the same.
    pub fn exit(&self, code: i32) {
        *self.inner.exit_code.lock().unwrap() = Some(code);
        let me = &self.inner;
        me.note_cancel_cause(&me.path, &format!("the actor exits with code {code}"));
        me.cancel.cancel();
    }

    /// Resolves once this actor is shutting down.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only watches the actor's cancellation token, so
    /// dropping the future changes nothing, and a new call resolves at once if the actor
    /// is already shutting down. It is meant for `select!`:
    ///
    /// ```no_run
    /// # async fn demo(cx: actor_core::ActorCx) {
    /// loop {
    ///     tokio::select! {
    ///         _ = cx.cancelled() => break,
    ///         _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => println!("tick"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Whether this actor is shutting down.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

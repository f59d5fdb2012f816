//! The running actor: its identity and scope, its listener, the calls it serves, and
//! its orderly shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use runtime_vars::RuntimeVars;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::TreeSecret;
use crate::brood::Brood;
use crate::conn::{Conn, Side};
use crate::error::{FnError, NurseryError, RemoteError, TransportError, kinds};
use crate::extensions::Extensions;
use crate::id::{ActorId, Addr};
use crate::nursery::{Nursery, run_nursery};
use crate::portal::Portal;
use crate::registry::Handler;
use crate::teardown::TeardownPolicy;
use crate::transport::{Channel, FrameSink, FrameSource, Listener, PeerInfo, Transport};
use crate::unwind::CatchUnwind;
use crate::wire::{CallKind, Cid, Frame, Msg, PROTOCOL_VERSION};

/// How long an incoming channel may take to send its handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel whose handshake is done, handed to whoever waits for that peer.
pub(crate) struct Handshaken {
    pub(crate) peer_info: PeerInfo,
    pub(crate) sink: Box<dyn FrameSink>,
    pub(crate) source: Box<dyn FrameSource>,
}

/// Everything one actor is. Shared by its tasks; never stored in a static.
pub(crate) struct ActorInner {
    pub(crate) id: ActorId,
    pub(crate) vars: Arc<RuntimeVars>,
    pub(crate) path: String,
    pub(crate) brood: Brood,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) addr: Addr,
    pub(crate) policy: TeardownPolicy,
    pub(crate) window: u32,
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
    pub(crate) pending: Mutex<HashMap<ActorId, oneshot::Sender<Handshaken>>>,
    failure: Mutex<Option<RemoteError>>,
    /// The status the actor asked to end with ([`ActorCx::exit`]).
    pub(crate) exit_code: Mutex<Option<i32>>,
    cancel_acks: Mutex<Vec<Conn>>,
    pub(crate) parent: OnceLock<Conn>,
    pub(crate) extensions: Extensions,
    pub(crate) span: tracing::Span,
}

/// Everything an actor is made from, gathered before it starts.
pub(crate) struct ActorSetup {
    pub(crate) id: ActorId,
    pub(crate) vars: RuntimeVars,
    pub(crate) brood: Brood,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) addr: Addr,
    pub(crate) policy: TeardownPolicy,
    pub(crate) window: u32,
    pub(crate) secret: TreeSecret,
    pub(crate) extensions: Extensions,
}

impl ActorInner {
    pub(crate) fn new(setup: ActorSetup) -> Arc<ActorInner> {
        let ActorSetup {
            id,
            vars,
            brood,
            transport,
            addr,
            policy,
            window,
            secret,
            extensions,
        } = setup;
        let path = vars.path();
        let span = crate::logging::actor_span(&path);
        Arc::new(ActorInner {
            id,
            vars: Arc::new(vars),
            path,
            brood,
            transport,
            addr,
            policy,
            window: window.max(2),
            secret,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            io_tasks: TaskTracker::new(),
            io_stop: CancellationToken::new(),
            pending: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            exit_code: Mutex::new(None),
            cancel_acks: Mutex::new(Vec::new()),
            parent: OnceLock::new(),
            extensions,
            span,
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

    fn spawn_io<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.io_tasks
            .spawn(runtime_vars::scope(self.vars.clone(), fut).instrument(self.span.clone()));
    }

    /// Serve incoming channels until the actor's I/O stops; the listener (and its
    /// endpoint) goes away with the loop.
    pub(crate) fn spawn_accept_loop(self: &Arc<Self>, mut listener: Box<dyn Listener>) {
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
                        let me2 = me.clone();
                        me.spawn_io(async move { me2.handshake_incoming(ch).await });
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

    async fn handshake_incoming(self: Arc<Self>, ch: Box<dyn Channel>) {
        let peer_info = ch.peer();
        let (mut sink, mut source) = ch.split();
        let first = tokio::select! {
            _ = self.io_stop.cancelled() => return,
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, source.recv()) => r,
        };
        let refuse = |why: String| RemoteError::new(kinds::PROTOCOL, why, self.path.clone());
        let error = match first {
            Ok(Ok(Some(Frame {
                msg: Msg::Handshake { id, protocol },
                ..
            }))) if protocol == PROTOCOL_VERSION => {
                let reply = Frame::control(Msg::Handshake {
                    id: self.id.clone(),
                    protocol: PROTOCOL_VERSION,
                });
                if sink.feed(&reply).is_err() {
                    return;
                }
                let waiting = self.pending.lock().unwrap().remove(&id);
                match waiting {
                    Some(tx) => {
                        // The reply goes out with the spawn spec, in one write.
                        let _ = tx.send(Handshaken {
                            peer_info,
                            sink,
                            source,
                        });
                    }
                    None => {
                        if sink.flush().await.is_err() {
                            return;
                        }
                        tracing::debug!(peer = %id, "accepted a channel from a peer");
                        let path = id.to_string();
                        Conn::start(&self, id, path, peer_info, sink, source, Side::Acceptor);
                    }
                }
                return;
            }
            Ok(Ok(Some(Frame {
                msg: Msg::Handshake { protocol, .. },
                ..
            }))) => refuse(
                crate::ProtocolError::Version {
                    ours: PROTOCOL_VERSION,
                    theirs: protocol,
                }
                .to_string(),
            ),
            Ok(Ok(Some(other))) => refuse(
                crate::ProtocolError::Unexpected {
                    expected: "Handshake",
                    got: other.msg.kind_name(),
                }
                .to_string(),
            ),
            Ok(Ok(None)) => return,
            Ok(Err(e)) => refuse(e.to_string()),
            Err(_) => refuse(crate::ProtocolError::HandshakeTimeout(HANDSHAKE_TIMEOUT).to_string()),
        };
        tracing::warn!(peer = ?peer_info, %error, "refusing a channel");
        let _ = sink.feed(&Frame::control(Msg::Error { cid: None, error }));
        let _ = sink.close().await;
    }

    /// Start serving a call the peer on `conn` asked for.
    pub(crate) fn start_served(
        self: &Arc<Self>,
        conn: &Conn,
        cid: Cid,
        func: &str,
        kind: CallKind,
        peer_window: u32,
        args: Bytes,
    ) {
        let handler = match self.brood.registry().get(func) {
            Some(h) if h.kind() == kind => h.clone(),
            Some(h) => {
                let error = RemoteError::new(
                    kinds::WRONG_KIND,
                    format!("{func} is a {:?} function, called as a {kind:?}", h.kind()),
                    self.path.clone(),
                );
                conn.send_control(Msg::Error {
                    cid: Some(cid),
                    error,
                });
                return;
            }
            None => {
                let error = RemoteError::new(
                    kinds::NO_SUCH_FUNCTION,
                    format!("actor {} serves no function named {func:?}", self.path),
                    self.path.clone(),
                );
                conn.send_control(Msg::Error {
                    cid: Some(cid),
                    error,
                });
                return;
            }
        };
        tracing::debug!(cid, func, ?kind, caller = %conn.peer_path(), "serving a call");
        let link = conn.accept_call(cid, peer_window, self.window);
        let window = self.window;
        let cx = ActorCx {
            inner: self.clone(),
            caller: Some(conn.peer().clone()),
        };
        let me = self.clone();
        let conn2 = conn.clone();
        let fut = async move {
            // Acknowledged from the serving task rather than the reader: a quick reply is
            // then queued before the writer runs, and both leave in one write.
            conn2.send_control(Msg::StartAck { cid, window });
            enum Done {
                Reply(Bytes),
                Stop,
                Return(Bytes),
            }
            let work = async move {
                match handler {
                    Handler::Call(f) => {
                        drop(link);
                        f(cx, args).await.map(Done::Reply)
                    }
                    Handler::Stream(f) => f(cx, args, link).await.map(|()| Done::Stop),
                    Handler::Context(f) => f(cx, args, link).await.map(Done::Return),
                }
            };
            let outcome = tokio::select! {
                biased;
                r = CatchUnwind::new(work) => r,
                _ = me.cancel.cancelled() => Ok(Err(FnError::new(kinds::CANCELLED, format!("actor {} is shutting down", me.path)))),
            };
            let frames = match outcome {
                Ok(Ok(Done::Reply(b))) => vec![Frame::with_payload(Msg::Return { cid }, b)],
                Ok(Ok(Done::Stop)) => vec![Frame::control(Msg::Stop { cid })],
                Ok(Ok(Done::Return(b))) => vec![
                    Frame::control(Msg::Stop { cid }),
                    Frame::with_payload(Msg::Return { cid }, b),
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
                if let Err(e) = conn2.send(f) {
                    // A reply too large for the channel becomes an error reply.
                    let error = RemoteError::new(kinds::PROTOCOL, e.to_string(), me.path.clone());
                    conn2.send_control(Msg::Error {
                        cid: Some(cid),
                        error,
                    });
                }
            }
            conn2.remove_route(cid);
        };
        let handle = self.spawn_task(fut);
        conn.set_task(cid, handle.abort_handle());
    }

    /// A peer sent `Cancel { cid: None }`.
    pub(crate) fn cancel_requested_by(&self, conn: &Conn) {
        tracing::debug!(by = %conn.peer_path(), "actor cancel requested");
        self.cancel_acks.lock().unwrap().push(conn.clone());
        self.cancel.cancel();
    }

    /// A channel's reader ended.
    pub(crate) fn conn_closed(&self, conn: &Conn) {
        if let Some(p) = self.parent.get()
            && p.peer() == conn.peer()
            && !self.cancel.is_cancelled()
        {
            tracing::debug!("parent channel closed; shutting down");
            self.cancel.cancel();
        }
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

    /// Shut the actor down in order: end served calls and nurseries (children are torn
    /// down by their supervisors), report to the parent, then stop all I/O. Returns the
    /// failure that ended the actor, if any.
    pub(crate) async fn shutdown(self: &Arc<Self>) -> Option<RemoteError> {
        self.cancel.cancel();
        self.tasks.close();
        let bound = self.policy.worst_case() * 2 + Duration::from_secs(5);
        if tokio::time::timeout(bound, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?bound,
                "actor tasks did not finish in time; stopping anyway"
            );
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
}

impl std::fmt::Debug for ActorCx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorCx")
            .field("actor", &self.inner.path)
            .field("caller", &self.caller)
            .finish()
    }
}

impl ActorCx {
    /// This actor's id.
    pub fn id(&self) -> &ActorId {
        &self.inner.id
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

    /// State attached to this actor by the layers above the core (a backend's
    /// sub-interpreter handle, a debugger session). Lives as long as the actor.
    pub fn extensions(&self) -> &Extensions {
        &self.inner.extensions
    }

    /// The teardown bounds this actor applies to its children.
    pub fn policy(&self) -> &TeardownPolicy {
        &self.inner.policy
    }

    /// A portal to this actor's parent (`None` in a root).
    pub fn parent(&self) -> Option<Portal> {
        self.inner
            .parent
            .get()
            .map(|c| Portal::new(c.clone(), None, self.inner.window, self.inner.policy))
    }

    /// Open a nursery in this actor: `body` may spawn children, which are all finished,
    /// cancelled or reaped when this returns. See [`Nursery`].
    ///
    /// # Errors
    /// [`NurseryError`] with the body's error and every child's error.
    pub async fn open_nursery<R>(
        &self,
        body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
    ) -> Result<R, NurseryError> {
        run_nursery(&self.inner, body).await
    }

    /// Ask this actor to shut down, as if its parent had cancelled it.
    pub fn cancel_actor(&self) {
        self.inner.cancel.cancel();
    }

    /// Shut this actor down in order (its calls cancelled, its children torn down) and
    /// end it with `code` as its exit status: a process actor's process exits with it, an
    /// in-process actor reports it. Its parent sees a non-zero code as
    /// [`ChildError::Exited`](crate::ChildError::Exited). A root ignores the code (it has no
    /// parent to report to) but shuts down all the same.
    pub fn exit(&self, code: i32) {
        *self.inner.exit_code.lock().unwrap() = Some(code);
        self.inner.cancel.cancel();
    }

    /// Resolves once this actor is shutting down.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Whether this actor is shutting down.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

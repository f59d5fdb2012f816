//! One established channel between two actors, multiplexing many calls.
//!
//! A [`Conn`] owns two tasks: a writer that drains a queue of frames and writes
//! whatever is ready in one batch, and a reader that routes each incoming frame to the
//! call it belongs to (or starts a served call). Calls in both directions share the
//! channel: the side that connected numbers its calls odd, the other even.
//!
//! Everything a peer controls is bounded ([`ChannelLimits`]):
//! - **Streams** are flow-controlled per call with a window of items *and* bytes: a
//!   receiver announces how much it will hold and credits back what it consumed, so a fast
//!   producer never fills memory and a slow stream never blocks the others on the channel.
//!   A peer's window is capped at ours; credit beyond what is in flight is ignored.
//! - **The write queue** is bounded in bytes: data senders wait for room (back-pressure
//!   to the task that produces), and a peer that stops reading cannot make the queue grow:
//!   past a bound on queued control frames the channel closes.
//! - **Received items** not yet consumed are bounded over the whole channel; the call whose
//!   item would pass the bound fails with [`kinds::OVERLOADED`].
//! - **Calls** a peer has open are bounded; more are refused with
//!   [`kinds::TOO_MANY_CALLS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{CancelSide, ContextCancelled, PortalError};
use spawn_api::{
    ActorId, CallKind, CancelCause, ChannelError, ChannelLimits, Cid, Frame, FrameSink,
    FrameSource, Msg, Payload, PeerInfo, ProtocolError, RemoteError, Window, kinds,
};

/// Stop batching a flush once this much is queued, so one flush does not hold a huge
/// amount of memory.
const FLUSH_BATCH_BYTES: usize = 4 << 20;

/// What a queued frame costs besides its payload: the queue entry itself (its header
/// is a `Msg`) and the buffer it is encoded into.
const FRAME_OVERHEAD: usize = std::mem::size_of::<Queued>() + 32;

/// How long a closing channel waits for the peer to read what was queued before it.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// The longest announcement of a peer's teardown the ladder honours: a bound on how long
/// a lying (or very deep) child can hold its parent's teardown.
pub(crate) const MAX_STOPPING: Duration = Duration::from_secs(120);

/// The actor a channel belongs to, as the channel sees it: the bounds and the task set it
/// runs in, and what to do with what the peer asks of the actor itself. The connection
/// knows nothing else of the actor (the actor runtime implements this).
pub(crate) trait ConnOwner: Send + Sync + 'static {
    /// The actor's tree path: errors the channel reports name it.
    fn path(&self) -> &str;
    /// Where and within which bounds the channel's tasks run.
    fn conn_env(&self) -> ConnEnv;
    /// The peer asked for a new call.
    fn serve(self: Arc<Self>, conn: &Conn, start: CallStart<'_>, args: Payload);
    /// The peer sent `Cancel { cid: None }`: it wants the whole actor to stop.
    fn cancel_requested_by(&self, conn: &Conn, cause: Option<CancelCause>);
    /// The channel's reader ended (the peer left, or the channel failed).
    fn conn_closed(&self, conn: &Conn, kind: Peer);
}

/// What a channel takes from its actor when it starts.
pub(crate) struct ConnEnv {
    /// The bounds on everything the peer controls.
    pub(crate) limits: ChannelLimits,
    /// Cancelled when the actor's I/O stops; the channel closes with it.
    pub(crate) stop: CancellationToken,
    /// The actor's span, for the channel's tasks.
    pub(crate) span: tracing::Span,
    /// Where the reader and writer tasks run (they outlive the actor's other tasks).
    pub(crate) tasks: TaskTracker,
    /// How long a call's cancel waits for the peer's acknowledgement.
    pub(crate) cancel_wait: Duration,
}

/// A call the peer starts, as its [`Msg::Start`] says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallStart<'a> {
    /// The new call's id.
    pub(crate) cid: Cid,
    /// The function's name.
    pub(crate) func: &'a str,
    /// The function's shape, as the caller sees it.
    pub(crate) kind: CallKind,
    /// The caller's receive window.
    pub(crate) window: Window,
    /// The caller's hash of the function's types (0: not said).
    pub(crate) sig: u64,
}

/// What the other end of a channel is to this actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// The actor's parent (the channel it opened at start).
    Parent,
    /// One of the actor's children.
    Child,
    /// Any other actor: counted against the actor's connection limit and closed when
    /// idle.
    Other,
}

/// Credit to send items on one call: the peer's window, and what is in flight.
#[derive(Debug)]
struct SendCredit {
    state: Mutex<CreditState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct CreditState {
    /// The peer's window (capped at ours); `None` until announced.
    window: Option<Window>,
    items_out: u64,
    bytes_out: u64,
    /// Why nothing more may be sent, once that is so.
    closed: Option<PortalError>,
}

impl SendCredit {
    fn new(window: Option<Window>) -> SendCredit {
        SendCredit {
            state: Mutex::new(CreditState {
                window,
                ..CreditState::default()
            }),
            changed: Notify::new(),
        }
    }

    /// Wait until one item of `len` bytes may be sent, and count it as in flight.
    async fn acquire(&self, len: usize) -> Result<(), PortalError> {
        loop {
            // The usual case, credit in hand, takes one uncontended lock.
            if let Some(r) = self.try_take(len) {
                return r;
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = self.try_take(len) {
                return r;
            }
            changed.await;
        }
    }

    /// Take credit for one item of `len` bytes if there is some (or the reason there
    /// never will be); `None`: wait for a change.
    fn try_take(&self, len: usize) -> Option<Result<(), PortalError>> {
        let mut st = self.state.lock().unwrap();
        if let Some(why) = &st.closed {
            return Some(Err(why.clone()));
        }
        let w = st.window?;
        if st.items_out < u64::from(w.items) && st.bytes_out < w.bytes {
            st.items_out += 1;
            st.bytes_out = st.bytes_out.saturating_add(len as u64);
            return Some(Ok(()));
        }
        None
    }

    /// An item that took credit was not sent after all: it is not in flight.
    fn refund(&self, len: usize) {
        let mut st = self.state.lock().unwrap();
        st.items_out = st.items_out.saturating_sub(1);
        st.bytes_out = st.bytes_out.saturating_sub(len as u64);
        drop(st);
        self.changed.notify_waiters();
    }

    fn announce(&self, window: Window) {
        let mut st = self.state.lock().unwrap();
        if st.window.is_none() {
            st.window = Some(window);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// The peer consumed this much. Saturating: credit for more than is in flight
    /// (a confused or hostile peer) is ignored.
    fn credit(&self, items: u32, bytes: u64) {
        let mut st = self.state.lock().unwrap();
        st.items_out = st.items_out.saturating_sub(u64::from(items));
        st.bytes_out = st.bytes_out.saturating_sub(bytes);
        drop(st);
        self.changed.notify_waiters();
    }

    fn close(&self, why: PortalError) {
        let mut st = self.state.lock().unwrap();
        if st.closed.is_none() {
            st.closed = Some(why);
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

/// Credit taken for an item that is not queued yet; given back if it never is.
struct Unsent<'a> {
    credit: &'a SendCredit,
    /// The item's length while it is unsent.
    len: Option<usize>,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(len) = self.len {
            self.credit.refund(len);
        }
    }
}

/// What the peer may still send on one call, as we count it (enforced on receipt).
#[derive(Debug)]
struct RecvCredit {
    window: Window,
    items_out: u64,
    bytes_out: u64,
}

/// Per-call routing state.
struct Route {
    /// Frames for this call's local end.
    inbound: mpsc::UnboundedSender<Frame>,
    /// Credit for the `Yield`s this side sends.
    send: Arc<SendCredit>,
    /// What the peer has in flight toward us.
    recv: RecvCredit,
    /// The task serving this call, for calls the peer started.
    task: Option<AbortHandle>,
    /// The peer started this call (it counts against [`ChannelLimits::max_calls`]).
    served: bool,
    /// Whether and how the call was cancelled, shared with its local end.
    state: Arc<CallState>,
}

/// A call's cancellation, shared by its route and its local end: set once, by whichever
/// side cancels first (or by an actor cancel), and read by every accessor after.
///
/// Every call has one, so it allocates nothing of its own: waiters wait on one
/// `Notify` (woken when the call is cancelled and when the cancel is acknowledged)
/// and check the state they wait for.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    cancelled: std::sync::OnceLock<ContextCancelled>,
    /// The peer acknowledged this side's cancel (or cancelled too).
    acked: AtomicBool,
    /// Woken when `cancelled` is set and when `acked` is.
    changed: Notify,
    /// The peer asked for an acknowledgement of its cancel (a dropped end does not).
    ack_wanted: AtomicBool,
}

impl CallState {
    /// Record `c` unless the call was already cancelled; whether this did it.
    fn set(&self, c: ContextCancelled) -> bool {
        let won = self.cancelled.set(c).is_ok();
        if won {
            self.changed.notify_waiters();
        }
        won
    }

    /// How the call was cancelled, if it was.
    pub(crate) fn cancelled(&self) -> Option<&ContextCancelled> {
        self.cancelled.get()
    }

    /// Resolves with the cancellation once the call is cancelled. Cancel safe.
    pub(crate) async fn wait(&self) -> ContextCancelled {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check: a cancel between the two still wakes it.
            changed.as_mut().enable();
            if let Some(c) = self.cancelled.get() {
                return c.clone();
            }
            changed.await;
        }
    }

    /// The peer acknowledged this side's cancel.
    fn ack(&self) {
        self.acked.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Resolves once the peer acknowledged this side's cancel. Cancel safe.
    async fn acked(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.acked.load(Ordering::SeqCst) {
                return;
            }
            changed.await;
        }
    }

    /// Whether the peer wants to hear when the cancel it asked for is complete.
    pub(crate) fn ack_wanted(&self) -> bool {
        self.ack_wanted.load(Ordering::Relaxed)
    }
}

/// One frame in the write queue, with the share of the write budget it holds.
struct Queued {
    frame: Frame,
    /// Bytes of the write budget a data frame holds until it is written; control frames
    /// hold none (they are counted instead).
    budget: Option<usize>,
}

/// One sender counted as waiting for room in a [`WriteBudget`], for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many bytes of data frames a channel has queued for writing, against its bound.
/// Senders wait while it is used up; the writer gives back what it wrote. Cheaper than a
/// semaphore on the hot path: one atomic add to take, one to give back, and a wake-up only
/// when someone waits.
#[derive(Debug)]
struct WriteBudget {
    queued: AtomicUsize,
    limit: usize,
    waiting: AtomicUsize,
    freed: Notify,
    closed: AtomicBool,
}

impl WriteBudget {
    fn new(limit: usize) -> WriteBudget {
        WriteBudget {
            queued: AtomicUsize::new(0),
            limit: limit.max(1),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Take `n` bytes (at most the whole budget) if they fit, or if nothing is queued (a
    /// frame larger than the budget goes alone).
    fn try_take(&self, n: usize) -> bool {
        let n = n.min(self.limit);
        // Sequentially consistent with `waiting`: a sender that registered as waiting
        // and then found no room is sure to be woken by the next `give`.
        let mut cur = self.queued.load(Ordering::SeqCst);
        loop {
            if cur != 0 && cur + n > self.limit {
                return false;
            }
            match self.queued.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Take `n` bytes, waiting for room; `false` once the channel is closed.
    async fn take(&self, n: usize) -> bool {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take(n) {
                return true;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // Counted while this sender waits, and no longer once it stops waiting, even
            // by being dropped (a cancelled send): `give` wakes only when someone waits.
            let _waiting = Waiting::enter(&self.waiting);
            let fits = self.try_take(n);
            if fits || self.closed.load(Ordering::Acquire) {
                return fits;
            }
            freed.await;
        }
    }

    /// Give back `n` bytes the writer wrote.
    fn give(&self, n: usize) {
        self.queued.fetch_sub(n.min(self.limit), Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.freed.notify_waiters();
    }
}

pub(crate) struct ConnShared {
    pub(crate) peer: ActorId,
    pub(crate) peer_path: String,
    pub(crate) peer_info: PeerInfo,
    kind: Peer,
    out: mpsc::UnboundedSender<Queued>,
    odd: bool,
    next_cid: AtomicU64,
    routes: Mutex<HashMap<Cid, Route>>,
    closed: CancellationToken,
    /// The writer failed: nothing more can be sent, but the reader still drains what
    /// the peer sent before it went away (its last words: a panic report).
    write_failed: AtomicBool,
    close_reason: Mutex<Option<String>>,
    fault: Mutex<Option<RemoteError>>,
    cancel_acked: CancellationToken,
    /// This actor's tree path (a cancel made here names it).
    own_path: String,
    /// How long a call's cancel waits for the peer's acknowledgement.
    cancel_wait: Duration,
    /// When the peer (a child) said its teardown will be over.
    stopping: watch::Sender<Option<tokio::time::Instant>>,
    max_frame: usize,
    limits: ChannelLimits,
    /// Bytes of data frames queued for writing, against their bound.
    send_budget: WriteBudget,
    /// Control frames queued and not yet written.
    control_queued: AtomicUsize,
    /// Bytes of received items not yet taken by their call's local end.
    recv_buffered: AtomicUsize,
    /// Calls the peer has open.
    served_calls: AtomicUsize,
    /// The last time a frame arrived or a call ended (for the idle timeout).
    last_activity: Mutex<tokio::time::Instant>,
}

/// A handle on an established channel. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn {
    shared: Arc<ConnShared>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.shared.peer_path)
            .field("closed", &self.shared.closed.is_cancelled())
            .finish()
    }
}

/// Which side opened the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Connector,
    Acceptor,
}

impl Conn {
    /// Start the reader and writer tasks of a channel whose handshake is done.
    /// `max_frame` is the largest frame the channel's transport carries.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        owner: Arc<dyn ConnOwner>,
        peer: ActorId,
        peer_path: String,
        peer_info: PeerInfo,
        kind: Peer,
        sink: Box<dyn FrameSink>,
        source: Box<dyn FrameSource>,
        side: Side,
        max_frame: usize,
    ) -> Conn {
        let (out, rx) = mpsc::unbounded_channel();
        let env = owner.conn_env();
        let limits = env.limits;
        let shared = Arc::new(ConnShared {
            peer,
            peer_path,
            peer_info,
            kind,
            out,
            odd: side == Side::Connector,
            next_cid: AtomicU64::new(0),
            routes: Mutex::new(HashMap::new()),
            closed: env.stop.child_token(),
            write_failed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            fault: Mutex::new(None),
            cancel_acked: CancellationToken::new(),
            own_path: owner.path().to_owned(),
            cancel_wait: env.cancel_wait,
            stopping: watch::Sender::new(None),
            max_frame,
            limits,
            send_budget: WriteBudget::new(limits.send_buffer),
            control_queued: AtomicUsize::new(0),
            recv_buffered: AtomicUsize::new(0),
            served_calls: AtomicUsize::new(0),
            last_activity: Mutex::new(tokio::time::Instant::now()),
        });
        let conn = Conn { shared };
        env.tasks
            .spawn(writer(conn.clone(), rx, sink).instrument(env.span.clone()));
        env.tasks
            .spawn(reader(conn.clone(), owner, source).instrument(env.span));
        conn
    }

    /// Whether `other` is a handle on this very channel (not merely one to the same
    /// peer id: ids are claims, channels are facts).
    pub(crate) fn same(&self, other: &Conn) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn peer(&self) -> &ActorId {
        &self.shared.peer
    }

    pub(crate) fn peer_path(&self) -> &str {
        &self.shared.peer_path
    }

    /// This actor's tree path.
    pub(crate) fn own_path(&self) -> &str {
        &self.shared.own_path
    }

    pub(crate) fn peer_info(&self) -> &PeerInfo {
        &self.shared.peer_info
    }

    pub(crate) fn limits(&self) -> &ChannelLimits {
        &self.shared.limits
    }

    fn check_size(&self, frame: &Frame) -> Result<(), PortalError> {
        if frame.payload.len() + 4096 > self.shared.max_frame {
            let mut header = bytes::BytesMut::new();
            spawn_api::codec::encode_header(&frame.msg, &mut header)?;
            let len = header.len() + frame.payload.len();
            if len > self.shared.max_frame {
                return Err(ProtocolError::FrameTooLarge {
                    len,
                    max: self.shared.max_frame,
                }
                .into());
            }
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), PortalError> {
        if self.shared.closed.is_cancelled() || self.shared.write_failed.load(Ordering::Relaxed) {
            return Err(self.disconnected());
        }
        Ok(())
    }

    /// Queue a data frame, waiting while the channel's write budget is used up (the
    /// peer reads slower than we produce). A frame larger than the whole budget waits
    /// for an empty queue.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] once the channel is closed, and
    /// [`PortalError::Protocol`] for a frame above the channel's maximum.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), PortalError> {
        self.check_size(&frame)?;
        self.writable()?;
        let want = (frame.payload.len() + FRAME_OVERHEAD).min(self.shared.send_budget.limit);
        let budget = &self.shared.send_budget;
        if !budget.try_take(want) {
            let taken = tokio::select! {
                t = budget.take(want) => t,
                _ = self.shared.closed.cancelled() => false,
            };
            if !taken {
                return Err(self.disconnected());
            }
        }
        if let Err(e) = self.writable() {
            budget.give(want);
            return Err(e);
        }
        self.shared
            .out
            .send(Queued {
                frame,
                budget: Some(want),
            })
            .map_err(|_| {
                budget.give(want);
                self.disconnected()
            })
    }

    /// Queue a control frame (small, made in answer to the peer or to wind down), without
    /// waiting. A peer that does not read makes these pile up: past the limit the channel
    /// closes. Best effort: a closed channel drops the frame.
    pub(crate) fn send_control(&self, msg: Msg) {
        let queued = self.shared.control_queued.fetch_add(1, Ordering::Relaxed) + 1;
        if queued > self.shared.limits.max_queued_control {
            self.shared.control_queued.fetch_sub(1, Ordering::Relaxed);
            if !self.is_closed() {
                tracing::warn!(peer = %self.shared.peer_path, queued, "the peer does not read its channel; closing it");
                self.close("the peer stopped reading (too many control frames queued)");
            }
            return;
        }
        if self
            .shared
            .out
            .send(Queued {
                frame: Frame::control(msg),
                budget: None,
            })
            .is_err()
        {
            self.shared.control_queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The error a call sees when this channel is gone.
    pub(crate) fn disconnected(&self) -> PortalError {
        let reason = self
            .shared
            .close_reason
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "channel closed".to_owned());
        PortalError::Disconnected {
            actor: self.shared.peer_path.clone(),
            reason,
        }
    }

    /// Close the channel: queued frames are still written, then both tasks end and
    /// every call on it sees [`PortalError::Disconnected`].
    pub(crate) fn close(&self, reason: &str) {
        self.set_reason(reason);
        self.shared.closed.cancel();
    }

    fn set_reason(&self, reason: &str) {
        let mut r = self.shared.close_reason.lock().unwrap();
        if r.is_none() {
            *r = Some(reason.to_owned());
        }
    }

    /// Whether this is a channel with an actor that is neither parent nor child.
    pub(crate) fn is_peer(&self) -> bool {
        self.shared.kind == Peer::Other
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves once the channel is closed (by either side).
    pub(crate) async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// The actor-level error the peer reported (`Error { cid: None }`), if any.
    pub(crate) fn fault(&self) -> Option<RemoteError> {
        self.shared.fault.lock().unwrap().clone()
    }

    /// Resolves when the peer acknowledged an actor cancel.
    pub(crate) async fn cancel_acked(&self) {
        self.shared.cancel_acked.cancelled().await
    }

    /// When the peer announced its teardown will be over ([`Msg::Stopping`]).
    pub(crate) fn stopping(&self) -> watch::Receiver<Option<tokio::time::Instant>> {
        self.shared.stopping.subscribe()
    }

    fn next_cid(&self) -> Cid {
        let n = self.shared.next_cid.fetch_add(1, Ordering::Relaxed);
        n * 2 + u64::from(self.shared.odd)
    }

    fn is_ours(&self, cid: Cid) -> bool {
        (cid % 2 == 1) == self.shared.odd
    }

    /// Start a call on this channel; waits while the write budget is used up.
    pub(crate) async fn open_call(
        &self,
        func: &str,
        kind: CallKind,
        sig: u64,
        args: Payload,
    ) -> Result<CallLink, PortalError> {
        let cid = self.next_cid();
        // Registered before the frame is queued: dropped with the future, the link
        // withdraws the call (and cancels it remotely once started).
        let link = self.register(cid, None, false);
        let window = link.window;
        self.send(Frame::with_parts(
            Msg::Start {
                cid,
                func: func.to_owned(),
                kind,
                window,
                sig,
            },
            args,
        ))
        .await?;
        Ok(link)
    }

    /// Register a call the peer started; returns the callee's link, or `None` when the
    /// peer already has as many calls open as allowed.
    pub(crate) fn accept_call(&self, cid: Cid, peer_window: Window) -> Option<CallLink> {
        let limits = self.shared.limits;
        if self.shared.served_calls.fetch_add(1, Ordering::Relaxed) >= limits.max_calls as usize {
            self.shared.served_calls.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(self.register(cid, Some(limits.cap(peer_window)), true))
    }

    /// Route call `cid` and return its local end. `send_window` is the peer's window if
    /// already known; `served`: the peer started the call (the served side's route
    /// outlives its link, so dropping the link neither removes nor cancels it).
    fn register(&self, cid: Cid, send_window: Option<Window>, served: bool) -> CallLink {
        let window = self.shared.limits.window();
        let (tx, rx) = mpsc::unbounded_channel();
        let send = Arc::new(SendCredit::new(send_window));
        let state = Arc::new(CallState::default());
        self.shared.routes.lock().unwrap().insert(
            cid,
            Route {
                inbound: tx,
                send: send.clone(),
                recv: RecvCredit {
                    window,
                    items_out: 0,
                    bytes_out: 0,
                },
                task: None,
                served,
                state: state.clone(),
            },
        );
        CallLink {
            tx: CallSender {
                conn: self.clone(),
                cid,
                send,
                state,
            },
            inbound: rx,
            peer_types: None,
            types_differ: false,
            window,
            consumed_items: 0,
            consumed_bytes: 0,
            caller: !served,
            finished: served,
        }
    }

    /// Remember the task serving `cid` so a `Cancel` can abort it.
    pub(crate) fn set_task(&self, cid: Cid, task: AbortHandle) {
        if let Some(r) = self.shared.routes.lock().unwrap().get_mut(&cid) {
            r.task = Some(task);
        }
    }

    pub(crate) fn remove_route(&self, cid: Cid) {
        let removed = self.shared.routes.lock().unwrap().remove(&cid);
        if let Some(r) = removed {
            self.forget(&r);
        }
    }

    /// Bookkeeping for a route that is gone.
    fn forget(&self, r: &Route) {
        if r.served {
            self.shared.served_calls.fetch_sub(1, Ordering::Relaxed);
        }
        *self.shared.last_activity.lock().unwrap() = tokio::time::Instant::now();
    }

    /// Credit the peer for what the local end of `cid` consumed.
    fn grant(&self, cid: Cid, items: u32, bytes: u64) {
        if let Some(r) = self.shared.routes.lock().unwrap().get_mut(&cid) {
            r.recv.items_out = r.recv.items_out.saturating_sub(u64::from(items));
            r.recv.bytes_out = r.recv.bytes_out.saturating_sub(bytes);
        } else {
            return;
        }
        self.send_control(Msg::Credit { cid, items, bytes });
    }

    /// The send credit of call `cid`, if it is still open.
    fn send_credit(&self, cid: Cid) -> Option<Arc<SendCredit>> {
        let routes = self.shared.routes.lock().unwrap();
        routes.get(&cid).map(|r| r.send.clone())
    }

    /// The callee announced its window in `StartAck`.
    fn on_start_ack(&self, cid: Cid, window: Window) {
        if let Some(s) = self.send_credit(cid) {
            s.announce(self.shared.limits.cap(window));
        }
    }

    /// Route one frame that is not a `Start`. Returns a protocol error that must close
    /// the channel.
    fn route(&self, actor: &dyn ConnOwner, frame: Frame) -> Result<(), ProtocolError> {
        let Some(cid) = frame.msg.cid() else {
            return Err(ProtocolError::Unexpected {
                expected: "a call message",
                got: frame.msg.kind_name(),
            });
        };
        let mut routes = self.shared.routes.lock().unwrap();
        let Some(route) = routes.get_mut(&cid) else {
            // A late frame for a call that already ended or was cancelled.
            tracing::trace!(
                cid,
                msg = frame.msg.kind_name(),
                "frame for a finished call"
            );
            return Ok(());
        };
        match &frame.msg {
            Msg::Yield { .. } => {
                let len = frame.payload.len();
                let w = route.recv.window;
                if route.recv.items_out >= u64::from(w.items) || route.recv.bytes_out >= w.bytes {
                    return Err(ProtocolError::Unexpected {
                        expected: "no Yield beyond the granted window",
                        got: "Yield",
                    });
                }
                route.recv.items_out += 1;
                route.recv.bytes_out = route.recv.bytes_out.saturating_add(len as u64);
                let buffered = self.shared.recv_buffered.fetch_add(len, Ordering::Relaxed) + len;
                if buffered > self.shared.limits.recv_buffer && buffered != len {
                    self.shared.recv_buffered.fetch_sub(len, Ordering::Relaxed);
                    let route = routes.remove(&cid).expect("looked up above");
                    drop(routes);
                    self.overloaded(actor, cid, route);
                    return Ok(());
                }
            }
            // The other side ended the call: nothing more can be sent on it.
            Msg::Return { .. } => route.send.close(PortalError::CallEnded {
                actor: self.shared.peer_path.clone(),
                how: "it returned".to_owned(),
            }),
            Msg::Error { error, .. } => route
                .send
                .close(PortalError::Remote(Box::new(error.clone()))),
            _ => {}
        }
        let len = match &frame.msg {
            Msg::Yield { .. } => frame.payload.len(),
            _ => 0,
        };
        if route.inbound.send(frame).is_err() {
            self.shared.recv_buffered.fetch_sub(len, Ordering::Relaxed);
            if route.served {
                // A served call's handler may drop its end and keep working (every one-shot
                // call does): its route, its place under `max_calls` and the peer's power to
                // cancel it last as long as its task, so the item is merely dropped.
                return Ok(());
            }
            // The local end of our own call is gone: stop the remote side.
            let r = routes.remove(&cid);
            drop(routes);
            if let Some(r) = r {
                self.forget(&r);
            }
            if self.is_ours(cid) {
                self.send_control(Msg::Cancel {
                    cid: Some(cid),
                    cause: None,
                });
            }
        }
        Ok(())
    }

    /// The call `cid` would make the channel hold more received items than allowed: fail
    /// it on both sides, keep the channel.
    fn overloaded(&self, actor: &dyn ConnOwner, cid: Cid, route: Route) {
        let limit = self.shared.limits.recv_buffer;
        tracing::warn!(peer = %self.shared.peer_path, cid, limit, "call failed: the channel's receive buffer is full");
        self.forget(&route);
        let error = RemoteError::new(
            kinds::OVERLOADED,
            format!(
                "actor {} holds {limit} bytes of unconsumed items on its channel with {}; this call's items would pass that",
                actor.path(),
                self.shared.peer_path
            ),
            actor.path(),
        );
        route
            .send
            .close(PortalError::Remote(Box::new(error.clone())));
        let _ = route.inbound.send(Frame::control(Msg::Error {
            cid: Some(cid),
            error: error.clone(),
        }));
        if let Some(t) = route.task {
            t.abort();
        }
        if self.is_ours(cid) {
            self.send_control(Msg::Cancel {
                cid: Some(cid),
                cause: None,
            });
        } else {
            self.send_control(Msg::Error {
                cid: Some(cid),
                error,
            });
        }
    }

    fn on_credit(&self, cid: Cid, items: u32, bytes: u64) {
        if let Some(s) = self.send_credit(cid) {
            s.credit(items, bytes);
        }
    }

    /// The peer cancelled call `cid` (either side's call). The local end learns it at
    /// once; a served call's function is given the grace its serving task allows and
    /// the acknowledgement goes when it ended, any other cancel is acknowledged here.
    fn on_cancel(&self, cid: Cid, cause: Option<CancelCause>) {
        let wants_ack = cause.is_some();
        let cancelled = self.peer_cancel(cause);
        let routes = self.shared.routes.lock().unwrap();
        let Some(route) = routes.get(&cid) else {
            drop(routes);
            // Nothing to cancel any more (it ended, or never was): say so at once.
            if wants_ack {
                self.send_control(Msg::CancelAck { cid: Some(cid) });
            }
            return;
        };
        route
            .send
            .close(PortalError::ContextCancelled(cancelled.clone()));
        let state = route.state.clone();
        let served = route.served;
        drop(routes);
        if wants_ack {
            state.ack_wanted.store(true, Ordering::Relaxed);
        }
        let first = state.set(cancelled);
        if !first {
            // Both sides cancelled: the peer's cancel answers ours.
            state.ack();
        }
        if wants_ack && (!served || !first) {
            self.send_control(Msg::CancelAck { cid: Some(cid) });
        }
    }

    /// What a cancel the peer sent means at this end.
    fn peer_cancel(&self, cause: Option<CancelCause>) -> ContextCancelled {
        let peer = self.shared.peer_path.clone();
        match cause.map(CancelCause::bounded) {
            Some(c) if c.actor => ContextCancelled {
                canceller: c.canceller,
                reason: c.reason,
                side: CancelSide::Actor,
            },
            Some(c) => ContextCancelled {
                canceller: peer,
                reason: c.reason,
                side: CancelSide::Peer,
            },
            None => ContextCancelled {
                canceller: peer,
                reason: "the peer dropped its end without waiting".to_owned(),
                side: CancelSide::Peer,
            },
        }
    }

    fn on_cancel_ack(&self, cid: Cid) {
        if let Some(r) = self.shared.routes.lock().unwrap().get(&cid) {
            r.state.ack();
        }
    }

    fn close_credits(&self) {
        let why = self.disconnected();
        for r in self.shared.routes.lock().unwrap().values() {
            r.send.close(why.clone());
        }
    }

    fn fail_all(&self) {
        let why = self.disconnected();
        let routes = std::mem::take(&mut *self.shared.routes.lock().unwrap());
        for (_, r) in routes {
            self.forget(&r);
            if let Some(t) = r.task {
                t.abort();
            }
            r.send.close(why.clone());
        }
    }

    /// Whether this peer channel has had no open call for the idle timeout.
    fn idle_for(&self) -> Option<Duration> {
        if self.shared.kind != Peer::Other || !self.shared.routes.lock().unwrap().is_empty() {
            return None;
        }
        Some(self.shared.last_activity.lock().unwrap().elapsed())
    }
}

async fn writer(conn: Conn, mut rx: mpsc::UnboundedReceiver<Queued>, mut sink: Box<dyn FrameSink>) {
    let closed = conn.shared.closed.clone();
    // Budget held by frames fed and not yet written.
    let mut held = 0usize;
    let result: Result<(), ChannelError> = async {
        loop {
            let first = tokio::select! {
                biased;
                f = rx.recv() => f,
                _ = closed.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut queued = first.frame.payload.len();
            feed(&conn, &mut *sink, first, &mut held);
            while queued < FLUSH_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(q) => {
                        queued += q.frame.payload.len() + 16;
                        feed(&conn, &mut *sink, q, &mut held);
                    }
                    Err(_) => break,
                }
            }
            // A peer that stops reading blocks the flush; once the channel is closing,
            // it gets a moment, then the channel is dropped (partial frames and all).
            tokio::select! {
                r = sink.flush() => r?,
                _ = async {
                    closed.cancelled().await;
                    tokio::time::sleep(CLOSE_FLUSH).await;
                } => {
                    return Err(ChannelError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the peer did not read for {CLOSE_FLUSH:?} after the channel closed"),
                    )));
                }
            }
            // Written: the budget those frames held is free for the next ones.
            conn.shared.send_budget.give(std::mem::take(&mut held));
            tracing::trace!(peer = %conn.shared.peer_path, bytes = queued, "flushed");
        }
        // Closing: whatever was queued before the close still goes out (a final error
        // report, a cancel acknowledgement) — if the peer reads it soon. A peer that does
        // not read must not keep the channel (and this task) alive.
        while let Ok(q) = rx.try_recv() {
            feed(&conn, &mut *sink, q, &mut held);
        }
        match tokio::time::timeout(CLOSE_FLUSH, sink.close()).await {
            Ok(r) => r,
            Err(_) => Err(ChannelError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer did not read the last frames within {CLOSE_FLUSH:?}"),
            ))),
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(peer = %conn.shared.peer_path, error = %e, "channel write failed");
        conn.set_reason(&format!("write failed: {e}"));
        conn.shared.write_failed.store(true, Ordering::Relaxed);
        // Calls waiting for credit can never send again.
        conn.close_credits();
    }
    // Nothing will be written any more: wake every sender waiting for budget.
    conn.shared.send_budget.close();
    conn.shared.send_budget.give(held);
}

fn feed(conn: &Conn, sink: &mut dyn FrameSink, q: Queued, held: &mut usize) {
    match q.budget {
        Some(n) => *held += n,
        None => {
            conn.shared.control_queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if let Err(e) = sink.feed(&q.frame) {
        // Oversized frames are refused in `Conn::send`; anything else is a bug in a
        // transport. Either way the frame is dropped and the reason logged.
        tracing::warn!(msg = q.frame.msg.kind_name(), error = %e, "frame not sent");
    }
}

async fn reader(conn: Conn, actor: Arc<dyn ConnOwner>, mut source: Box<dyn FrameSource>) {
    let closed = conn.shared.closed.clone();
    let idle_timeout = conn.shared.limits.idle_timeout;
    let is_peer = conn.shared.kind == Peer::Other;
    // One watcher for the channel's life (it completes only once the channel is idle, so
    // a frame being read is never given up for it).
    let idle = async {
        loop {
            tokio::time::sleep(idle_timeout.max(Duration::from_millis(10)) / 4).await;
            if conn.idle_for().is_some_and(|d| d >= idle_timeout) {
                return;
            }
        }
    };
    tokio::pin!(idle);
    let reason = loop {
        let next = tokio::select! {
            biased;
            _ = closed.cancelled() => break None,
            r = source.recv() => r,
            _ = &mut idle, if is_peer => {
                tracing::debug!(peer = %conn.shared.peer_path, "closing an idle peer channel");
                break Some(format!("idle for {idle_timeout:?} with no call"));
            }
        };
        let frame = match next {
            Ok(Some(f)) => {
                tracing::trace!(peer = %conn.shared.peer_path, msg = f.msg.kind_name(), cid = ?f.msg.cid(), "received");
                if is_peer {
                    *conn.shared.last_activity.lock().unwrap() = tokio::time::Instant::now();
                }
                f
            }
            Ok(None) => break Some("the peer closed the channel".to_owned()),
            Err(e) => {
                if let ChannelError::Protocol(p) = &e {
                    report_protocol_error(&conn, &*actor, p);
                }
                break Some(format!("{e}"));
            }
        };
        let result = match frame.msg {
            Msg::Start {
                cid,
                ref func,
                kind,
                window,
                sig,
            } => {
                if conn.is_ours(cid) || conn.shared.routes.lock().unwrap().contains_key(&cid) {
                    Err(ProtocolError::Unexpected {
                        expected: "a new call id of the peer's parity",
                        got: "Start",
                    })
                } else {
                    let func = func.clone();
                    let start = CallStart {
                        cid,
                        func: &func,
                        kind,
                        window,
                        sig,
                    };
                    Arc::clone(&actor).serve(&conn, start, frame.into_payload());
                    Ok(())
                }
            }
            Msg::Credit { cid, items, bytes } => {
                conn.on_credit(cid, items, bytes);
                Ok(())
            }
            Msg::StartAck { cid, window, .. } => {
                conn.on_start_ack(cid, window);
                conn.route(&*actor, frame)
            }
            Msg::Cancel {
                cid: Some(cid),
                cause,
            } => {
                conn.on_cancel(cid, cause);
                Ok(())
            }
            Msg::Cancel { cid: None, cause } => {
                actor.cancel_requested_by(&conn, cause);
                Ok(())
            }
            Msg::CancelAck { cid: None } => {
                conn.shared.cancel_acked.cancel();
                Ok(())
            }
            Msg::CancelAck { cid: Some(cid) } => {
                conn.on_cancel_ack(cid);
                Ok(())
            }
            Msg::Error { cid: None, error } => {
                tracing::debug!(peer = %conn.shared.peer_path, %error, "peer reported an actor error");
                *conn.shared.fault.lock().unwrap() = Some(error);
                Ok(())
            }
            Msg::Stopping { within } if conn.shared.kind == Peer::Child => {
                let until = tokio::time::Instant::now() + within.min(MAX_STOPPING);
                tracing::debug!(peer = %conn.shared.peer_path, ?within, "child announced its teardown");
                conn.shared.stopping.send_replace(Some(until));
                Ok(())
            }
            Msg::Stopping { .. }
            | Msg::Hello { .. }
            | Msg::Challenge { .. }
            | Msg::Answer { .. }
            | Msg::SpawnSpec(_) => Err(ProtocolError::Unexpected {
                expected: "a call message",
                got: frame.msg.kind_name(),
            }),
            _ => conn.route(&*actor, frame),
        };
        if let Err(p) = result {
            report_protocol_error(&conn, &*actor, &p);
            break Some(format!("protocol error: {p}"));
        }
    };
    if let Some(reason) = reason {
        conn.set_reason(&reason);
    }
    conn.shared.closed.cancel();
    conn.fail_all();
    actor.conn_closed(&conn, conn.shared.kind);
}

/// Tell the peer why we are closing the channel, as a typed protocol error.
fn report_protocol_error(conn: &Conn, actor: &dyn ConnOwner, p: &ProtocolError) {
    tracing::warn!(peer = %conn.shared.peer_path, error = %p, "closing channel: protocol error");
    let error = RemoteError::new(kinds::PROTOCOL, p.to_string(), actor.path());
    conn.send_control(Msg::Error { cid: None, error });
}

/// The local end of one call: its inbound frames, its credit, and the bookkeeping that
/// cancels it on drop.
pub(crate) struct CallLink {
    /// The channel, the call, its send credit and its cancellation: what a
    /// [`CallSender`] handed out shares.
    tx: CallSender,
    inbound: mpsc::UnboundedReceiver<Frame>,
    /// The peer's types for the function when they differ from ours by name (the
    /// callee's, from its `StartAck`).
    peer_types: Option<Box<spawn_api::Signature>>,
    /// The peer said its types differ from ours (a callee learns it from the `Start`).
    types_differ: bool,
    window: Window,
    consumed_items: u32,
    consumed_bytes: u64,
    caller: bool,
    finished: bool,
}

impl CallLink {
    pub(crate) fn cid(&self) -> Cid {
        self.tx.cid
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.tx.conn
    }

    /// The call's cancellation state.
    pub(crate) fn state(&self) -> &Arc<CallState> {
        &self.tx.state
    }

    /// The next frame once the call is cancelled: none if this side cancelled (what is
    /// queued is discarded); if the peer did, what it sent before its cancel still comes
    /// first, in order, then the cancellation.
    fn after_cancel(&mut self, c: ContextCancelled) -> Result<Option<Frame>, PortalError> {
        if c.side != CancelSide::This
            && let Ok(f) = self.inbound.try_recv()
        {
            return Ok(Some(f));
        }
        Err(PortalError::ContextCancelled(c))
    }

    /// The callee learned from the `Start` that the caller's types differ from its own.
    pub(crate) fn set_types_differ(&mut self, differ: bool) {
        self.types_differ = differ;
    }

    /// The peer's type at `index` of the function's signature, as far as this side
    /// knows: the peer's own word, else ours when the hashes matched.
    pub(crate) fn peer_type<'a>(&'a self, index: usize, ours: &'a str) -> &'a str {
        match &self.peer_types {
            Some(t) => t.get(index),
            None if self.types_differ => {
                "unknown (the peer was built with other types for this function)"
            }
            None => ours,
        }
    }

    /// The next frame for this call. Taking a `Yield` counts it as consumed: more
    /// credit goes back to the peer every half window. Once the call is cancelled (by
    /// either side) this is the cancellation, at once and every time: frames still
    /// queued are not delivered.
    ///
    /// Cancel safety: cancel-safe (a frame is only taken when returned).
    pub(crate) async fn next(&mut self) -> Result<Frame, PortalError> {
        let next = match self.tx.state.cancelled() {
            Some(c) => self.after_cancel(c.clone())?,
            None => tokio::select! {
                biased;
                c = self.tx.state.wait() => self.after_cancel(c)?,
                f = self.inbound.recv() => f,
            },
        };
        match next {
            Some(f) => {
                if let Msg::StartAck { types: Some(t), .. } = &f.msg {
                    self.peer_types = Some(t.clone());
                    self.types_differ = true;
                }
                if let Msg::Yield { .. } = f.msg {
                    self.consumed(f.payload.len());
                }
                Ok(f)
            }
            None => {
                self.finished = true;
                Err(self.tx.conn.disconnected())
            }
        }
    }

    /// A frame already queued for this call, without waiting (none once this side
    /// cancelled).
    pub(crate) fn try_next(&mut self) -> Option<Frame> {
        if self
            .tx
            .state
            .cancelled()
            .is_some_and(|c| c.side == CancelSide::This)
        {
            return None;
        }
        let f = self.inbound.try_recv().ok()?;
        if let Msg::Yield { .. } = f.msg {
            self.consumed(f.payload.len());
        }
        Some(f)
    }

    fn consumed(&mut self, len: usize) {
        self.tx
            .conn
            .shared
            .recv_buffered
            .fetch_sub(len, Ordering::Relaxed);
        self.consumed_items += 1;
        self.consumed_bytes = self.consumed_bytes.saturating_add(len as u64);
        if self.consumed_items >= (self.window.items / 2).max(1)
            || self.consumed_bytes >= (self.window.bytes / 2).max(1)
        {
            self.tx
                .conn
                .grant(self.tx.cid, self.consumed_items, self.consumed_bytes);
            self.consumed_items = 0;
            self.consumed_bytes = 0;
        }
    }

    /// Send one item, waiting for credit and for room in the channel's write queue.
    ///
    /// Cancel safety: not cancel-safe once credit is taken (the item may be lost and the
    /// window shrinks by one until the call ends); dropping the call is what cancels it.
    pub(crate) async fn send_item(&self, payload: Payload) -> Result<(), PortalError> {
        self.tx.send_item(payload).await
    }

    pub(crate) async fn send_frame(&self, msg: Msg, payload: Payload) -> Result<(), PortalError> {
        self.tx.conn.send(Frame::with_parts(msg, payload)).await
    }

    pub(crate) fn send_stop(&self) -> Result<(), PortalError> {
        self.tx.send_stop()
    }

    /// The call reached its end: dropping the link no longer cancels it.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// A handle that sends on and cancels this call without holding the link.
    pub(crate) fn sender(&self) -> CallSender {
        self.tx.clone()
    }

    /// Cancel the call from this side (see [`CallSender::cancel`]); afterwards dropping
    /// the link sends nothing more.
    pub(crate) async fn cancel(&mut self, reason: String) -> Result<(), PortalError> {
        let r = self.tx.cancel(reason).await;
        self.finished = true;
        r
    }
}

/// Sends on and cancels one call from this side, from wherever the call's end is
/// (another task may be waiting on it for items).
#[derive(Clone)]
pub(crate) struct CallSender {
    conn: Conn,
    cid: Cid,
    send: Arc<SendCredit>,
    state: Arc<CallState>,
}

impl CallSender {
    /// As [`CallLink::send_item`].
    pub(crate) async fn send_item(&self, payload: Payload) -> Result<(), PortalError> {
        let frame = Frame::with_parts(Msg::Yield { cid: self.cid }, payload);
        // A frame that can never go must not take window credit either.
        self.conn.check_size(&frame)?;
        let len = frame.payload.len();
        self.send.acquire(len).await?;
        // Until the frame is queued the credit is ours to give back: a send that fails,
        // or is dropped while the write queue is full, puts nothing in flight.
        let mut unsent = Unsent {
            credit: &self.send,
            len: Some(len),
        };
        let sent = self.conn.send(frame).await;
        if sent.is_ok() {
            unsent.len = None;
        }
        sent
    }

    /// Nothing more can be sent on the call: senders waiting for credit, and later
    /// ones, fail with `why`.
    pub(crate) fn close_sending(&self, why: PortalError) {
        self.send.close(why);
    }

    /// As [`CallLink::send_stop`].
    pub(crate) fn send_stop(&self) -> Result<(), PortalError> {
        self.conn.writable()?;
        self.conn.send_control(Msg::Stop { cid: self.cid });
        Ok(())
    }

    /// The call's cancellation state.
    pub(crate) fn state(&self) -> &Arc<CallState> {
        &self.state
    }

    /// The channel the call runs on.
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Cancel the call: from now on its end answers [`PortalError::ContextCancelled`]
    /// (side [`CancelSide::This`]), the peer is told who cancelled and why, and this
    /// waits until the peer acknowledged (the callee's function ended, or the caller's
    /// end learned it) or both sides cancelled at once, at most the channel's cancel
    /// wait. A call that was already cancelled (by either side) is not cancelled again:
    /// this returns at once.
    ///
    /// Errors: [`PortalError::CancelTimedOut`] without an acknowledgement in time,
    /// [`PortalError::Disconnected`] if the channel closed first.
    pub(crate) async fn cancel(&self, reason: String) -> Result<(), PortalError> {
        let me = ContextCancelled {
            canceller: self.conn.shared.own_path.clone(),
            reason,
            side: CancelSide::This,
        };
        let cause = CancelCause {
            canceller: me.canceller.clone(),
            reason: me.reason.clone(),
            actor: false,
        }
        .bounded();
        if !self.state.set(me.clone()) {
            return Ok(());
        }
        self.send.close(PortalError::ContextCancelled(me));
        self.conn.send_control(Msg::Cancel {
            cid: Some(self.cid),
            cause: Some(cause),
        });
        let wait = self.conn.shared.cancel_wait;
        tokio::select! {
            _ = self.state.acked() => Ok(()),
            _ = self.conn.closed() => Err(self.conn.disconnected()),
            _ = tokio::time::sleep(wait) => Err(PortalError::CancelTimedOut {
                actor: self.conn.peer_path().to_owned(),
                after: wait,
            }),
        }
    }
}

impl Drop for CallLink {
    fn drop(&mut self) {
        // Items never taken no longer count against the channel.
        self.inbound.close();
        while let Ok(f) = self.inbound.try_recv() {
            if let Msg::Yield { .. } = f.msg {
                self.tx
                    .conn
                    .shared
                    .recv_buffered
                    .fetch_sub(f.payload.len(), Ordering::Relaxed);
            }
        }
        // A served call's route outlives its link (the handler may drop its stream
        // early and keep running): the serving task removes it when it ends.
        if self.caller {
            self.tx.conn.remove_route(self.tx.cid);
            if !self.finished && self.tx.state.cancelled().is_none() {
                self.tx.conn.send_control(Msg::Cancel {
                    cid: Some(self.tx.cid),
                    cause: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(items: u32, bytes: u64) -> Window {
        Window { items, bytes }
    }

    #[tokio::test(start_paused = true)]
    async fn credit_beyond_what_is_in_flight_is_ignored() {
        let c = SendCredit::new(Some(window(2, 100)));
        c.acquire(10).await.unwrap();
        c.acquire(10).await.unwrap();
        // A flood of maximal credit: no overflow, no panic, and the window still holds.
        for _ in 0..1_000_000 {
            c.credit(u32::MAX, u64::MAX);
        }
        c.acquire(10).await.unwrap();
        c.acquire(10).await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(1), c.acquire(10)).await;
        assert!(third.is_err(), "a third item in a window of two");
    }

    #[tokio::test(start_paused = true)]
    async fn one_item_may_pass_the_byte_window_then_the_sender_waits() {
        let c = Arc::new(SendCredit::new(Some(window(100, 1000))));
        c.acquire(5000).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_secs(1), c.acquire(1)).await;
        assert!(blocked.is_err(), "the byte window is full");
        c.credit(1, 5000);
        c.acquire(1).await.unwrap();
        // Closing wakes a waiting sender with the reason.
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.acquire(2000).await?;
                c.acquire(1).await
            }
        });
        tokio::task::yield_now().await;
        c.close(PortalError::Cancelled);
        assert!(matches!(waiter.await.unwrap(), Err(PortalError::Cancelled)));
    }

    #[test]
    fn a_peer_window_is_capped_before_it_is_used() {
        let limits = ChannelLimits::default();
        let c = SendCredit::new(Some(limits.cap(window(u32::MAX, u64::MAX))));
        let w = c.state.lock().unwrap().window.unwrap();
        assert_eq!(w, limits.window());
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_write_budget_bounds_what_is_queued_and_wakes_senders() {
        let b = Arc::new(WriteBudget::new(100));
        assert!(b.try_take(60));
        assert!(!b.try_take(60), "past the bound");
        // A frame larger than the whole budget goes alone, once the queue is empty.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.take(500).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.give(60);
        assert!(waiter.await.unwrap(), "woken once the queue emptied");
        assert!(!b.try_take(1), "the big frame holds the whole budget");
        b.give(500);
        assert!(b.try_take(1));
        // Closing wakes waiters with a refusal.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.take(100).await }
        });
        tokio::task::yield_now().await;
        b.close();
        assert!(!waiter.await.unwrap());
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod flow_tests;

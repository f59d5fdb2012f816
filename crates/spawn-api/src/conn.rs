//! One established channel between two actors, multiplexing many calls.
//!
//! A [`Conn`] owns two tasks: a writer that drains a queue of frames and writes
//! whatever is ready in one batch, and a reader that routes each incoming frame to the
//! call it belongs to (or starts a served call). Calls in both directions share the
//! channel: the side that connected numbers its calls odd, the other even.
//!
//! Streams are flow-controlled per call with credits: a receiver announces a window
//! (how many items it will buffer) and grants more as it consumes them, so a fast
//! producer never fills memory and a slow stream never blocks the others on the same
//! channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::actor::ActorInner;
use crate::error::{ChannelError, PortalError, ProtocolError, RemoteError, kinds};
use crate::id::ActorId;
use crate::transport::{FrameSink, FrameSource, PeerInfo};
use crate::wire::{CallKind, Cid, Frame, Msg};

/// Stop batching a flush once this much is queued, so one flush does not hold a huge
/// amount of memory.
const FLUSH_BATCH_BYTES: usize = 4 << 20;

/// Per-call routing state.
struct Route {
    /// Frames for this call's local end.
    inbound: mpsc::UnboundedSender<Frame>,
    /// Credits for the `Yield`s this side may still send.
    credits: Option<Arc<Semaphore>>,
    /// Items this side has allowed the peer to send (window plus grants).
    granted: u64,
    /// Items the peer has sent.
    received: u64,
    /// The task serving this call, for calls the peer started.
    task: Option<AbortHandle>,
}

pub(crate) struct ConnShared {
    pub(crate) peer: ActorId,
    pub(crate) peer_path: String,
    pub(crate) peer_info: PeerInfo,
    out: mpsc::UnboundedSender<Frame>,
    odd: bool,
    next_cid: AtomicU64,
    routes: Mutex<HashMap<Cid, Route>>,
    closed: CancellationToken,
    /// The writer failed: nothing more can be sent, but the reader still drains what
    /// the peer sent before it went away (its last words: a panic report).
    write_failed: std::sync::atomic::AtomicBool,
    close_reason: Mutex<Option<String>>,
    fault: Mutex<Option<RemoteError>>,
    cancel_acked: CancellationToken,
    max_frame: usize,
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
    pub(crate) fn start(
        actor: &Arc<ActorInner>,
        peer: ActorId,
        peer_path: String,
        peer_info: PeerInfo,
        sink: Box<dyn FrameSink>,
        source: Box<dyn FrameSource>,
        side: Side,
    ) -> Conn {
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ConnShared {
            peer,
            peer_path,
            peer_info,
            out,
            odd: side == Side::Connector,
            next_cid: AtomicU64::new(0),
            routes: Mutex::new(HashMap::new()),
            closed: actor.io_stop.child_token(),
            write_failed: std::sync::atomic::AtomicBool::new(false),
            close_reason: Mutex::new(None),
            fault: Mutex::new(None),
            cancel_acked: CancellationToken::new(),
            max_frame: actor.transport.max_frame(),
        });
        let conn = Conn { shared };
        let span = actor.span.clone();
        actor
            .io_tasks
            .spawn(writer(conn.clone(), rx, sink).instrument(span.clone()));
        actor
            .io_tasks
            .spawn(reader(conn.clone(), actor.clone(), source).instrument(span));
        conn
    }

    pub(crate) fn peer(&self) -> &ActorId {
        &self.shared.peer
    }

    pub(crate) fn peer_path(&self) -> &str {
        &self.shared.peer_path
    }

    pub(crate) fn peer_info(&self) -> &PeerInfo {
        &self.shared.peer_info
    }

    /// Queue a frame.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] once the channel is closed, and
    /// [`PortalError::Protocol`] for a frame above the channel's maximum.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), PortalError> {
        if frame.payload.len() + 4096 > self.shared.max_frame {
            let mut header = bytes::BytesMut::new();
            crate::codec::encode_header(&frame.msg, &mut header)?;
            let len = header.len() + frame.payload.len();
            if len > self.shared.max_frame {
                return Err(ProtocolError::FrameTooLarge {
                    len,
                    max: self.shared.max_frame,
                }
                .into());
            }
        }
        if self.shared.closed.is_cancelled() || self.shared.write_failed.load(Ordering::Relaxed) {
            return Err(self.disconnected());
        }
        self.shared.out.send(frame).map_err(|_| self.disconnected())
    }

    /// Queue a control frame, ignoring a closed channel (best effort).
    pub(crate) fn send_control(&self, msg: Msg) {
        let _ = self.shared.out.send(Frame::control(msg));
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

    fn next_cid(&self) -> Cid {
        let n = self.shared.next_cid.fetch_add(1, Ordering::Relaxed);
        n * 2 + u64::from(self.shared.odd)
    }

    fn is_ours(&self, cid: Cid) -> bool {
        (cid % 2 == 1) == self.shared.odd
    }

    /// Start a call on this channel.
    pub(crate) fn open_call(
        &self,
        func: &str,
        kind: CallKind,
        args: Bytes,
        window: u32,
    ) -> Result<CallLink, PortalError> {
        let cid = self.next_cid();
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.routes.lock().unwrap().insert(
            cid,
            Route {
                inbound: tx,
                credits: None,
                granted: u64::from(window),
                received: 0,
                task: None,
            },
        );
        let link = CallLink {
            conn: self.clone(),
            cid,
            inbound: rx,
            credits: None,
            window,
            consumed: 0,
            caller: true,
            finished: false,
        };
        self.send(Frame::with_payload(
            Msg::Start {
                cid,
                func: func.to_owned(),
                kind,
                window,
            },
            args,
        ))?;
        Ok(link)
    }

    /// Register a call the peer started; returns the callee's link.
    pub(crate) fn accept_call(&self, cid: Cid, peer_window: u32, window: u32) -> CallLink {
        let (tx, rx) = mpsc::unbounded_channel();
        let credits = Arc::new(Semaphore::new(peer_window as usize));
        self.shared.routes.lock().unwrap().insert(
            cid,
            Route {
                inbound: tx,
                credits: Some(credits.clone()),
                granted: u64::from(window),
                received: 0,
                task: None,
            },
        );
        CallLink {
            conn: self.clone(),
            cid,
            inbound: rx,
            credits: Some(credits),
            window,
            consumed: 0,
            caller: false,
            finished: true,
        }
    }

    /// Remember the task serving `cid` so a `Cancel` can abort it.
    pub(crate) fn set_task(&self, cid: Cid, task: AbortHandle) {
        if let Some(r) = self.shared.routes.lock().unwrap().get_mut(&cid) {
            r.task = Some(task);
        }
    }

    pub(crate) fn remove_route(&self, cid: Cid) {
        self.shared.routes.lock().unwrap().remove(&cid);
    }

    fn grant(&self, cid: Cid, items: u32) {
        if let Some(r) = self.shared.routes.lock().unwrap().get_mut(&cid) {
            r.granted += u64::from(items);
        } else {
            return;
        }
        self.send_control(Msg::Credit { cid, items });
    }

    /// The credit semaphore for this side's `Yield`s on `cid`, created empty if the
    /// peer has not announced its window yet.
    fn send_credits(&self, cid: Cid) -> Option<Arc<Semaphore>> {
        let mut routes = self.shared.routes.lock().unwrap();
        let r = routes.get_mut(&cid)?;
        Some(
            r.credits
                .get_or_insert_with(|| Arc::new(Semaphore::new(0)))
                .clone(),
        )
    }

    /// The callee announced its window in `StartAck`.
    fn on_start_ack(&self, cid: Cid, window: u32) {
        if let Some(c) = self.send_credits(cid) {
            c.add_permits(window as usize);
        }
    }

    /// Route one frame that is not a `Start`. Returns a protocol error that must close
    /// the channel.
    fn route(&self, frame: Frame) -> Result<(), ProtocolError> {
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
        if let Msg::Yield { .. } = frame.msg {
            route.received += 1;
            if route.received > route.granted {
                return Err(ProtocolError::Unexpected {
                    expected: "no Yield beyond the granted credit",
                    got: "Yield",
                });
            }
        }
        if route.inbound.send(frame).is_err() {
            // The local end is gone: stop the remote side of our own calls.
            routes.remove(&cid);
            drop(routes);
            if self.is_ours(cid) {
                self.send_control(Msg::Cancel { cid: Some(cid) });
            }
        }
        Ok(())
    }

    fn on_credit(&self, cid: Cid, items: u32) {
        if let Some(r) = self.shared.routes.lock().unwrap().get(&cid)
            && let Some(c) = &r.credits
        {
            c.add_permits(items as usize);
        }
    }

    fn on_cancel(&self, cid: Cid) {
        let route = self.shared.routes.lock().unwrap().remove(&cid);
        if let Some(Route {
            task: Some(task), ..
        }) = route
        {
            task.abort();
        }
    }

    fn close_credits(&self) {
        for r in self.shared.routes.lock().unwrap().values() {
            if let Some(c) = &r.credits {
                c.close();
            }
        }
    }

    fn fail_all(&self) {
        let routes = std::mem::take(&mut *self.shared.routes.lock().unwrap());
        for (_, r) in routes {
            if let Some(t) = r.task {
                t.abort();
            }
            if let Some(c) = r.credits {
                c.close();
            }
        }
    }
}

async fn writer(conn: Conn, mut rx: mpsc::UnboundedReceiver<Frame>, mut sink: Box<dyn FrameSink>) {
    let closed = conn.shared.closed.clone();
    let result: Result<(), ChannelError> = async {
        loop {
            let first = tokio::select! {
                biased;
                f = rx.recv() => f,
                _ = closed.cancelled() => None,
            };
            let Some(first) = first else { break };
            feed(&mut *sink, &first);
            let mut queued = first.payload.len();
            while queued < FLUSH_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(f) => {
                        queued += f.payload.len() + 16;
                        feed(&mut *sink, &f);
                    }
                    Err(_) => break,
                }
            }
            sink.flush().await?;
            tracing::trace!(peer = %conn.shared.peer_path, bytes = queued, "flushed");
        }
        // Closing: whatever was queued before the close still goes out (a final error
        // report, a cancel acknowledgement).
        while let Ok(f) = rx.try_recv() {
            feed(&mut *sink, &f);
        }
        sink.close().await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(peer = %conn.shared.peer_path, error = %e, "channel write failed");
        conn.set_reason(&format!("write failed: {e}"));
        conn.shared.write_failed.store(true, Ordering::Relaxed);
        // Calls waiting for credit can never send again.
        conn.close_credits();
    }
}

fn feed(sink: &mut dyn FrameSink, frame: &Frame) {
    if let Err(e) = sink.feed(frame) {
        // Oversized frames are refused in `Conn::send`; anything else is a bug in a
        // transport. Either way the frame is dropped and the reason logged.
        tracing::warn!(msg = frame.msg.kind_name(), error = %e, "frame not sent");
    }
}

async fn reader(conn: Conn, actor: Arc<ActorInner>, mut source: Box<dyn FrameSource>) {
    let closed = conn.shared.closed.clone();
    let reason = loop {
        let next = tokio::select! {
            biased;
            _ = closed.cancelled() => break None,
            r = source.recv() => r,
        };
        let frame = match next {
            Ok(Some(f)) => {
                tracing::trace!(peer = %conn.shared.peer_path, msg = f.msg.kind_name(), cid = ?f.msg.cid(), "received");
                f
            }
            Ok(None) => break Some("the peer closed the channel".to_owned()),
            Err(e) => {
                if let ChannelError::Protocol(p) = &e {
                    report_protocol_error(&conn, &actor, p);
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
            } => {
                if conn.is_ours(cid) {
                    Err(ProtocolError::Unexpected {
                        expected: "a call id of the peer's parity",
                        got: "Start",
                    })
                } else {
                    let func = func.clone();
                    actor.start_served(&conn, cid, &func, kind, window, frame.payload);
                    Ok(())
                }
            }
            Msg::Credit { cid, items } => {
                conn.on_credit(cid, items);
                Ok(())
            }
            Msg::StartAck { cid, window } => {
                conn.on_start_ack(cid, window);
                conn.route(frame)
            }
            Msg::Cancel { cid: Some(cid) } => {
                conn.on_cancel(cid);
                Ok(())
            }
            Msg::Cancel { cid: None } => {
                actor.cancel_requested_by(&conn);
                Ok(())
            }
            Msg::CancelAck { cid: None } => {
                conn.shared.cancel_acked.cancel();
                Ok(())
            }
            Msg::CancelAck { cid: Some(_) } => Ok(()),
            Msg::Error { cid: None, error } => {
                tracing::debug!(peer = %conn.shared.peer_path, %error, "peer reported an actor error");
                *conn.shared.fault.lock().unwrap() = Some(error);
                Ok(())
            }
            Msg::Handshake { .. } | Msg::SpawnSpec(_) => Err(ProtocolError::Unexpected {
                expected: "a call message",
                got: frame.msg.kind_name(),
            }),
            _ => conn.route(frame),
        };
        if let Err(p) = result {
            report_protocol_error(&conn, &actor, &p);
            break Some(format!("protocol error: {p}"));
        }
    };
    if let Some(reason) = reason {
        conn.set_reason(&reason);
    }
    conn.shared.closed.cancel();
    conn.fail_all();
    actor.conn_closed(&conn);
}

/// Tell the peer why we are closing the channel, as a typed protocol error.
fn report_protocol_error(conn: &Conn, actor: &ActorInner, p: &ProtocolError) {
    tracing::warn!(peer = %conn.shared.peer_path, error = %p, "closing channel: protocol error");
    let error = RemoteError::new(kinds::PROTOCOL, p.to_string(), actor.path.clone());
    conn.send_control(Msg::Error { cid: None, error });
}

/// The local end of one call: its inbound frames, its credits, and the bookkeeping that
/// cancels it on drop.
pub(crate) struct CallLink {
    conn: Conn,
    cid: Cid,
    inbound: mpsc::UnboundedReceiver<Frame>,
    credits: Option<Arc<Semaphore>>,
    window: u32,
    consumed: u32,
    caller: bool,
    finished: bool,
}

impl CallLink {
    pub(crate) fn cid(&self) -> Cid {
        self.cid
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The next frame for this call.
    pub(crate) async fn next(&mut self) -> Result<Frame, PortalError> {
        match self.inbound.recv().await {
            Some(f) => Ok(f),
            None => {
                self.finished = true;
                Err(self.conn.disconnected())
            }
        }
    }

    /// Account for one consumed `Yield`, granting more credit every half window.
    pub(crate) fn consumed_item(&mut self) {
        self.consumed += 1;
        if self.consumed >= (self.window / 2).max(1) {
            self.conn.grant(self.cid, self.consumed);
            self.consumed = 0;
        }
    }

    /// Send one item, waiting for credit.
    pub(crate) async fn send_item(&self, payload: Bytes) -> Result<(), PortalError> {
        let credits = match &self.credits {
            Some(c) => c.clone(),
            None => match self.conn.send_credits(self.cid) {
                Some(c) => c,
                None => return Err(self.conn.disconnected()),
            },
        };
        match credits.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(self.conn.disconnected()),
        }
        self.conn
            .send(Frame::with_payload(Msg::Yield { cid: self.cid }, payload))
    }

    pub(crate) fn send_stop(&self) -> Result<(), PortalError> {
        self.conn.send(Frame::control(Msg::Stop { cid: self.cid }))
    }

    /// The call reached its end: dropping the link no longer cancels it.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CallLink {
    fn drop(&mut self) {
        // A served call's route outlives its link (the handler may drop its stream
        // early and keep running): the serving task removes it when it ends.
        if self.caller {
            self.conn.remove_route(self.cid);
            if !self.finished {
                self.conn.send_control(Msg::Cancel {
                    cid: Some(self.cid),
                });
            }
        }
    }
}

//! Typed ends of streams and contexts.
//!
//! | shape | caller holds | callee holds |
//! |---|---|---|
//! | server stream | [`ReplyStream`] (or, fanned out, [`BroadcastStream`]s) | [`StreamTx`] |
//! | context | [`CallerContext`] (or [`ContextSender`] + [`BroadcastStream`]s) | [`CalleeContext`], then [`CalleeStream`] |
//!
//! Every direction is flow-controlled: `send` waits while the receiver's window (items
//! and bytes) is full.
//!
//! A stream or context ends exactly one way — returned, failed, cancelled, or gone with
//! its channel — and once it has, every accessor answers at once with that outcome: a
//! `recv` after the callee's error returns the same error again, `result` after `recv`
//! saw the error returns it too, and a `send` after the other side ended fails with
//! [`PortalError::CallEnded`] (or the error it ended with). Nothing waits on a call that
//! can no longer progress.
//!
//! Either side may cancel (`cancel(reason)` on every end): the other side learns who and
//! why ([`PortalError::ContextCancelled`]), and the canceller waits for its
//! acknowledgement. Dropping an end without cancelling is legal and cancels without
//! waiting.
//!
//! ## Cancel safety
//!
//! | method | cancel safe | if the future is dropped |
//! |---|---|---|
//! | [`ReplyStream::recv`], [`CallerContext::recv`], [`CalleeStream::recv`] | yes | nothing is lost: the next `recv` returns the next item |
//! | [`StreamTx::send`], [`CallerContext::send`], [`CalleeStream::send`] | no | the item is lost; its place in the window is given back (see [`StreamTx::send`]) |
//! | every `cancel` | yes | the cancel was made at the first poll; only the wait for the acknowledgement stops |
//! | [`StreamTx::cancelled`], [`CalleeStream::cancelled`], [`CalleeContext::cancelled`] | yes | nothing happens |
//! | [`ReplyStream::collect`], [`CallerContext::result`] | no | they own the end: dropping them drops it, which cancels the call |
//! | [`CalleeContext::started`] | no | it owns the end: the context can no longer start |

use std::marker::PhantomData;

use std::sync::Arc;

use crate::broadcast::{BoxFuture, BroadcastStream, Canceller, Source};
use crate::conn::{CallLink, CallSender};
use crate::error::{ContextCancelled, MsgSlot, MsgTypeError, PortalError};
use spawn_api::{CodecError, ContextFn, Msg, Payload, RemoteError, StreamFn, Wire, kinds};

/// A value received on `link` did not decode as `ours`, the type at `index` of the
/// function's signature: the typed error names both sides' types.
pub(crate) fn undecodable(
    link: &CallLink,
    function: &str,
    slot: MsgSlot,
    index: usize,
    ours: &str,
    e: CodecError,
) -> PortalError {
    PortalError::MsgType(Box::new(MsgTypeError {
        function: function.to_owned(),
        slot,
        sender: link.conn().peer_path().to_owned(),
        receiver: link.conn().own_path().to_owned(),
        sent_type: link.peer_type(index, ours).to_owned(),
        expected_type: ours.to_owned(),
        detail: e.to_string(),
    }))
}

/// The callee refused our arguments as undecodable ([`kinds::BAD_ARGS`], raised by its
/// runtime, not relayed): the typed error naming both sides' argument types. Any other
/// error is the callee's, unchanged.
pub(crate) fn remote_error(
    link: &CallLink,
    function: &str,
    ours: &str,
    r: RemoteError,
) -> PortalError {
    if r.kind == kinds::BAD_ARGS && r.relays.is_empty() && r.origin == link.conn().peer_path() {
        return PortalError::MsgType(Box::new(MsgTypeError {
            function: function.to_owned(),
            slot: MsgSlot::Args,
            sender: link.conn().own_path().to_owned(),
            receiver: r.origin,
            sent_type: ours.to_owned(),
            expected_type: link.peer_type(0, ours).to_owned(),
            detail: r.message,
        }));
    }
    PortalError::Remote(Box::new(r))
}

/// The cancellation of `link`'s call, if it was cancelled.
fn cancellation(link: &CallLink) -> Option<PortalError> {
    link.state()
        .cancelled()
        .map(|c| PortalError::ContextCancelled(c.clone()))
}

/// The callee's sending end of a server stream.
///
/// A stream function gets one; each [`send`](StreamTx::send) becomes one item of the
/// caller's [`ReplyStream`], in order. Returning `Ok(())` ends the stream (the caller's
/// `recv` then returns `Ok(None)`), returning an error fails it with that error.
///
/// When the caller cancels the stream, `send` fails at once with
/// [`PortalError::ContextCancelled`] (side [`Peer`](crate::CancelSide::Peer)) and
/// [`cancelled`](StreamTx::cancelled) resolves; the function then has the tree's
/// `cancel_timeout` to return before it is dropped. The callee may also end the stream
/// by cancelling it itself ([`cancel`](StreamTx::cancel)).
///
/// ```no_run
/// use actor_core::{ActorCx, FnError, Portal, PortalError, Registry, StreamTx};
///
/// actor_core::stream!(Countdown: u32 => u32);
///
/// // The callee: sends `n`, `n - 1`, ..., `1`.
/// async fn countdown(cx: ActorCx, n: u32, tx: StreamTx<u32>) -> Result<(), FnError> {
///     for i in (1..=n).rev() {
///         if cx.is_cancelled() {
///             break;
///         }
///         // Waits while the caller's window is full: a slow caller slows this loop.
///         tx.send(i).await?;
///     }
///     Ok(())
/// }
///
/// // The caller.
/// async fn caller(portal: &Portal) -> Result<Vec<u32>, PortalError> {
///     portal.open_stream(Countdown, 3).await?.collect().await
/// }
///
/// let registry = Registry::new().stream(Countdown, countdown);
/// # let _ = (registry, caller);
/// ```
pub struct StreamTx<T> {
    link: CallLink,
    _item: PhantomData<fn(T)>,
}

impl<T: Wire> StreamTx<T> {
    pub(crate) fn new(link: CallLink) -> Self {
        StreamTx {
            link,
            _item: PhantomData,
        }
    }

    /// Cancel the stream from the callee's side, saying why: the caller's `recv` fails
    /// with [`PortalError::ContextCancelled`] (side [`Peer`](crate::CancelSide::Peer),
    /// naming this actor and `reason`), and this returns once the caller's end
    /// acknowledged it. After it, `send` fails with the same cancellation (side
    /// [`This`](crate::CancelSide::This)); return from the function (its result is not
    /// sent). Cancelling a stream that was already cancelled returns at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancel is made before the first await; dropping the future only
    /// stops the waiting for the acknowledgement.
    ///
    /// # Errors
    /// [`PortalError::CancelTimedOut`] if the caller did not acknowledge within twice
    /// the tree's cancel timeout, [`PortalError::Disconnected`] if it went away.
    ///
    /// ```
    /// use actor_core::{ActorCx, FnError, Registry, StreamTx};
    /// actor_core::stream!(Until: u64 => u64);
    /// // Streams until the value would pass `limit`, then cancels the stream itself.
    /// async fn until(_cx: ActorCx, limit: u64, tx: StreamTx<u64>) -> Result<(), FnError> {
    ///     for i in 0.. {
    ///         if i * i > limit {
    ///             tx.cancel(format!("{i}² passes {limit}")).await?;
    ///             return Ok(());
    ///         }
    ///         tx.send(i * i).await?;
    ///     }
    ///     Ok(())
    /// }
    /// let _registry = Registry::new().stream(Until, until);
    /// ```
    pub async fn cancel(&self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.link.sender().cancel(reason.into()).await
    }

    /// Resolves once the stream is cancelled, by either side (at once if it already
    /// was), with who cancelled it and why. Cancel safe.
    ///
    /// ```
    /// use actor_core::{ActorCx, FnError, Registry, StreamTx};
    /// actor_core::stream!(Ticks: () => u64);
    /// async fn ticks(_cx: ActorCx, (): (), tx: StreamTx<u64>) -> Result<(), FnError> {
    ///     let mut n = 0;
    ///     loop {
    ///         tokio::select! {
    ///             c = tx.cancelled() => {
    ///                 tracing::info!(canceller = %c.canceller, "stopping: {}", c.reason);
    ///                 return Ok(());
    ///             }
    ///             _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {
    ///                 tx.send(n).await?;
    ///                 n += 1;
    ///             }
    ///         }
    ///     }
    /// }
    /// let _registry = Registry::new().stream(Ticks, ticks);
    /// ```
    pub async fn cancelled(&self) -> ContextCancelled {
        self.link.state().wait().await
    }

    /// The cancellation, if the stream was cancelled.
    pub fn cancellation(&self) -> Option<ContextCancelled> {
        self.link.state().cancelled().cloned()
    }

    /// Send one item; waits while the caller's window is full.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: `item` was moved into the future, so dropping it
    /// loses the item. Nothing else is lost. It may wait at two points, for room in the
    /// caller's window and then, if the channel's write queue is full (the peer reads
    /// slower than this actor writes), for room there; dropped at either, the item was
    /// not sent and the place it took in the window is given back, so a later `send`
    /// (or ending the stream) works as if the dropped one never happened. To wait for a
    /// send in a `select!` loop without losing the item, keep the future (pinned)
    /// across iterations instead of making a new one.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away,
    /// [`PortalError::ContextCancelled`] if either side cancelled the stream,
    /// [`PortalError::Codec`] if the item does not encode.
    ///
    /// ```
    /// use actor_core::{ActorCx, FnError, Registry, StreamTx};
    /// actor_core::stream!(Squares: u64 => u64);
    /// async fn squares(_cx: ActorCx, n: u64, tx: StreamTx<u64>) -> Result<(), FnError> {
    ///     for i in 0..n {
    ///         tx.send(i * i).await?;
    ///     }
    ///     Ok(())
    /// }
    /// let _registry = Registry::new().stream(Squares, squares);
    /// ```
    pub async fn send(&self, item: T) -> Result<(), PortalError> {
        if let Some(e) = cancellation(&self.link) {
            return Err(e);
        }
        self.link.send_item(Payload::encode(&item)?).await
    }
}

impl<T> std::fmt::Debug for StreamTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTx")
            .field("cid", &self.link.cid())
            .finish()
    }
}

/// How a call ended, as its caller saw it.
#[derive(Clone, Debug)]
enum Ended {
    /// Cleanly (the stream stopped, or the context returned).
    Clean,
    /// With this error (the callee's, or the channel's).
    Failed(PortalError),
}

/// The caller's receiving end of a server stream.
///
/// [`cancel`](ReplyStream::cancel) ends the stream before its end and waits until the
/// callee acknowledged (its function ended). Dropping the stream before its end also
/// cancels the callee's function, without waiting: legal, and what happens when a task
/// holding it is dropped.
///
/// ```no_run
/// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
/// actor_core::stream!(Count: u64 => u64);
/// let mut items = portal.open_stream(Count, 10).await?;
/// while let Some(i) = items.recv().await? {
///     println!("{i}");
/// }
/// assert_eq!(items.recv().await?, None, "ended streams stay ended");
/// # Ok(()) }
/// ```
///
/// [`recv`](ReplyStream::recv) is cancel safe, so it can wait in a `select!` loop beside
/// other events; here the stream is cancelled if it goes quiet for a second:
///
/// ```no_run
/// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
/// use std::time::Duration;
/// actor_core::stream!(Events: () => String);
/// let mut events = portal.open_stream(Events, ()).await?;
/// let mut seen = Vec::new();
/// loop {
///     tokio::select! {
///         item = events.recv() => match item? {
///             Some(e) => seen.push(e),
///             None => break, // the callee finished the stream
///         },
///         _ = tokio::time::sleep(Duration::from_secs(1)) => {
///             // The callee's function is cancelled; this waits for its acknowledgement.
///             events.cancel("quiet for a second").await?;
///             break;
///         }
///     }
/// }
/// # let _ = seen; Ok(()) }
/// ```
pub struct ReplyStream<T> {
    link: CallLink,
    ended: Option<Ended>,
    /// The function's wire name, for errors.
    function: &'static str,
    _item: PhantomData<fn() -> T>,
}

impl<T: Wire> ReplyStream<T> {
    pub(crate) fn new<S: StreamFn<Item = T>>(link: CallLink) -> Self {
        ReplyStream {
            link,
            ended: None,
            function: S::NAME,
            _item: PhantomData,
        }
    }

    fn end(&mut self, how: Ended) -> Result<Option<T>, PortalError> {
        self.link.finish();
        self.ended = Some(how.clone());
        match how {
            Ended::Clean => Ok(None),
            Ended::Failed(e) => Err(e),
        }
    }

    /// The next item, or `Ok(None)` once the callee finished the stream. After the
    /// stream ended, answers at once with how it ended (the same error every time).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: an item is taken from the call's queue (and counted
    /// as consumed) only in the poll that returns it, so dropping the future loses
    /// nothing and the next `recv` returns the next item. Use it in a `select!` loop
    /// freely.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the callee failed, [`PortalError::Disconnected`] if it
    /// went away mid-stream, [`PortalError::ContextCancelled`] if either side cancelled
    /// the stream (or the callee's actor was cancelled), [`PortalError::MsgType`] for an
    /// item that does not decode as `T` (the stream goes on).
    pub async fn recv(&mut self) -> Result<Option<T>, PortalError> {
        if let Some(how) = &self.ended {
            return match how {
                Ended::Clean => Ok(None),
                Ended::Failed(e) => Err(e.clone()),
            };
        }
        loop {
            let f = match self.link.next().await {
                Ok(f) => f,
                Err(e) => return self.end(Ended::Failed(e)),
            };
            match f.msg {
                Msg::StartAck { .. } => continue,
                Msg::Yield { .. } => {
                    return f.into_payload().decode::<T>().map(Some).map_err(|e| {
                        let t = std::any::type_name::<T>();
                        undecodable(&self.link, self.function, MsgSlot::Item, 1, t, e)
                    });
                }
                Msg::Stop { .. } | Msg::Return { .. } => return self.end(Ended::Clean),
                Msg::Error { error, .. } => {
                    return self.end(Ended::Failed(PortalError::Remote(Box::new(error))));
                }
                other => {
                    return self.end(Ended::Failed(PortalError::Unexpected {
                        got: other.kind_name(),
                        during: "stream",
                    }));
                }
            }
        }
    }

    /// Collect every remaining item.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: it takes the stream, so dropping the future drops
    /// the items collected so far and the stream itself, which cancels the callee's
    /// function if the stream had not ended (a `Cancel` is sent). Use
    /// [`recv`](ReplyStream::recv) in a loop to keep what arrived.
    ///
    /// # Errors
    /// As [`ReplyStream::recv`].
    pub async fn collect(mut self) -> Result<Vec<T>, PortalError> {
        let mut out = Vec::new();
        while let Some(v) = self.recv().await? {
            out.push(v);
        }
        Ok(out)
    }

    /// Cancel the stream, saying why, and wait until the callee acknowledged: its
    /// function saw the cancellation (its `send` failed with
    /// [`PortalError::ContextCancelled`], side [`Peer`](crate::CancelSide::Peer)) and
    /// ended, or was dropped after the tree's `cancel_timeout`. From the first poll on,
    /// `recv` answers the cancellation (side [`This`](crate::CancelSide::This)); items
    /// not yet received are discarded. A stream that already ended (or was cancelled by
    /// the callee) is left as it is and this returns `Ok(())` at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancel is made at the first poll; dropping the future only stops
    /// the waiting for the acknowledgement.
    ///
    /// # Errors
    /// [`PortalError::CancelTimedOut`] if the callee did not acknowledge within twice
    /// the tree's cancel timeout (its function may still run), and
    /// [`PortalError::Disconnected`] if it went away first.
    pub async fn cancel(&mut self, reason: impl Into<String>) -> Result<(), PortalError> {
        if self.ended.is_none() && self.link.conn().is_closed() {
            // Gone with its channel: it ended, unseen until now.
            self.ended = Some(Ended::Failed(self.link.conn().disconnected()));
        }
        if self.ended.is_some() || self.link.state().cancelled().is_some() {
            return Ok(());
        }
        let r = self.link.cancel(reason.into()).await;
        if let Some(e) = cancellation(&self.link) {
            self.ended = Some(Ended::Failed(e));
        }
        r
    }

    /// The cancellation, if the stream was cancelled (by either side).
    pub fn cancellation(&self) -> Option<ContextCancelled> {
        self.link.state().cancelled().cloned()
    }
}

impl<T> std::fmt::Debug for ReplyStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("cid", &self.link.cid())
            .field("ended", &self.ended)
            .finish()
    }
}

/// The callee's end of a context before it has started: call
/// [`started`](CalleeContext::started) to send the started value and get the stream.
pub struct CalleeContext<C: ContextFn> {
    link: CallLink,
    _c: PhantomData<fn(C)>,
}

impl<C: ContextFn> std::fmt::Debug for CalleeContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalleeContext")
            .field("cid", &self.link.cid())
            .finish()
    }
}

impl<C: ContextFn> CalleeContext<C> {
    pub(crate) fn new(link: CallLink) -> Self {
        CalleeContext {
            link,
            _c: PhantomData,
        }
    }

    /// Send the started value; the caller's `open_context` returns with it.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: it takes the context's end. It waits only while
    /// the channel's write queue is full; dropped then, the value was not sent and the
    /// end is gone: the context can no longer start, and the caller's `open_context`
    /// fails once the function ends.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away,
    /// [`PortalError::ContextCancelled`] if the caller cancelled the context first (it
    /// dropped its `open_context`), [`PortalError::Codec`] if the value does not encode.
    pub async fn started(self, value: C::Started) -> Result<CalleeStream<C>, PortalError> {
        if let Some(e) = cancellation(&self.link) {
            return Err(e);
        }
        tracing::debug!(cid = self.link.cid(), "context started");
        self.link
            .send_frame(
                Msg::Started {
                    cid: self.link.cid(),
                },
                Payload::encode(&value)?,
            )
            .await?;
        Ok(CalleeStream {
            link: self.link,
            in_done: false,
            _c: PhantomData,
        })
    }

    /// Cancel the context before it started, saying why: the caller's `open_context`
    /// fails with [`PortalError::ContextCancelled`] (side
    /// [`Peer`](crate::CancelSide::Peer)). Returns once the caller acknowledged; then
    /// return from the function (its result is not sent).
    ///
    /// # Errors
    /// As [`StreamTx::cancel`].
    pub async fn cancel(self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.link.sender().cancel(reason.into()).await
    }

    /// Resolves once the context is cancelled (at once if it already was), with who
    /// cancelled it and why. Cancel safe.
    pub async fn cancelled(&self) -> ContextCancelled {
        self.link.state().wait().await
    }
}

/// The callee's end of a started context.
pub struct CalleeStream<C: ContextFn> {
    link: CallLink,
    in_done: bool,
    _c: PhantomData<fn(C)>,
}

impl<C: ContextFn> std::fmt::Debug for CalleeStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalleeStream")
            .field("cid", &self.link.cid())
            .field("in_done", &self.in_done)
            .finish()
    }
}

impl<C: ContextFn> CalleeStream<C> {
    /// Send one item to the caller; waits while the caller's window is full.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe, as [`StreamTx::send`]: the item is lost (nothing
    /// else; its place in the caller's window is given back).
    ///
    /// # Errors
    /// As [`StreamTx::send`].
    pub async fn send(&self, item: C::Out) -> Result<(), PortalError> {
        if let Some(e) = cancellation(&self.link) {
            return Err(e);
        }
        self.link.send_item(Payload::encode(&item)?).await
    }

    /// The caller's next item, or `Ok(None)` once the caller closed its side (every time
    /// after that, too, unless the context is cancelled: then the cancellation).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: an item is taken from the call's queue only in the
    /// poll that returns it; dropping the future loses nothing.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away,
    /// [`PortalError::ContextCancelled`] once either side cancelled the context (side
    /// [`Peer`](crate::CancelSide::Peer) when the caller did, naming it and its reason),
    /// [`PortalError::MsgType`] for an item that does not decode as `C::In` (the
    /// context goes on).
    pub async fn recv(&mut self) -> Result<Option<C::In>, PortalError> {
        if self.in_done {
            return match cancellation(&self.link) {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        let f = self.link.next().await?;
        match f.msg {
            Msg::Yield { .. } => f.into_payload().decode::<C::In>().map(Some).map_err(|e| {
                let t = C::types()[2];
                undecodable(&self.link, C::NAME, MsgSlot::Item, 2, t, e)
            }),
            Msg::Stop { .. } => {
                self.in_done = true;
                Ok(None)
            }
            Msg::Error { error, .. } => Err(PortalError::Remote(Box::new(error))),
            other => Err(PortalError::Unexpected {
                got: other.kind_name(),
                during: "context",
            }),
        }
    }

    /// Tell the caller no more items will come (also done when the function returns).
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away,
    /// [`PortalError::ContextCancelled`] if the context was cancelled.
    pub fn close_send(&self) -> Result<(), PortalError> {
        if let Some(e) = cancellation(&self.link) {
            return Err(e);
        }
        self.link.send_stop()
    }

    /// Cancel the context from the callee's side, saying why: the caller's accessors
    /// fail with [`PortalError::ContextCancelled`] (side
    /// [`Peer`](crate::CancelSide::Peer), naming this actor and `reason`), and this
    /// returns once the caller's end acknowledged. Afterwards every accessor here
    /// answers the same cancellation (side [`This`](crate::CancelSide::This)); return
    /// from the function (its result is not sent). A context already cancelled is not
    /// cancelled again: this returns at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancel is made at the first poll; dropping the future only stops
    /// the waiting for the acknowledgement.
    ///
    /// # Errors
    /// As [`StreamTx::cancel`].
    pub async fn cancel(&mut self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.link.cancel(reason.into()).await
    }

    /// Resolves once the context is cancelled, by either side (at once if it already
    /// was), with who cancelled it and why. Cancel safe: wait on it in a `select!` beside
    /// work that does not touch the context.
    pub async fn cancelled(&self) -> ContextCancelled {
        self.link.state().wait().await
    }

    /// The cancellation, if the context was cancelled.
    pub fn cancellation(&self) -> Option<ContextCancelled> {
        self.link.state().cancelled().cloned()
    }
}

/// The caller's end of an open context.
///
/// Both sides send and receive items until each closes its sending side; the callee's
/// function then returns a value, which [`result`](CallerContext::result) waits for.
/// [`cancel`](CallerContext::cancel) ends the context before that and waits for the
/// callee's acknowledgement; dropping this end also cancels the callee's function,
/// without waiting (legal: it is what happens when a task holding it is dropped).
/// Either side may cancel: see [`PortalError::ContextCancelled`] for who did.
///
/// ```no_run
/// use actor_core::{ActorCx, CalleeContext, FnError, Portal, PortalError, Registry};
///
/// actor_core::context!(Echo: String => started String, in String, out String, return u64);
///
/// // The callee: greets, echoes every item it receives, returns how many.
/// async fn echo(_cx: ActorCx, name: String, ctx: CalleeContext<Echo>) -> Result<u64, FnError> {
///     let mut stream = ctx.started(format!("hello {name}")).await?;
///     let mut n = 0;
///     while let Some(line) = stream.recv().await? {
///         stream.send(line).await?;
///         n += 1;
///     }
///     Ok(n)
/// }
///
/// // The caller.
/// async fn caller(portal: &Portal) -> Result<(), PortalError> {
///     let (mut ctx, greeting) = portal.open_context(Echo, "ada".into()).await?;
///     assert_eq!(greeting, "hello ada");
///     ctx.send("a".into()).await?;
///     assert_eq!(ctx.recv().await?.as_deref(), Some("a"));
///     ctx.close_send()?; // the callee's `recv` returns `None`
///     assert_eq!(ctx.result().await?, 1);
///     Ok(())
/// }
///
/// let registry = Registry::new().context(Echo, echo);
/// # let _ = (registry, caller);
/// ```
pub struct CallerContext<C: ContextFn> {
    link: CallLink,
    /// The callee sent `Stop` (or the call ended): no more items will come.
    out_done: bool,
    in_closed: bool,
    /// How the call ended, once it has; a returned value waits here for `result`.
    ended: Option<Ended>,
    value: Option<C::Return>,
    _c: PhantomData<fn(C)>,
}

impl<C: ContextFn> std::fmt::Debug for CallerContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerContext")
            .field("cid", &self.link.cid())
            .field("ended", &self.ended)
            .finish()
    }
}

impl<C: ContextFn> CallerContext<C> {
    pub(crate) fn new(link: CallLink) -> Self {
        CallerContext {
            link,
            out_done: false,
            in_closed: false,
            ended: None,
            value: None,
            _c: PhantomData,
        }
    }

    fn fail(&mut self, e: PortalError) {
        self.out_done = true;
        self.link.finish();
        if self.ended.is_none() {
            self.ended = Some(Ended::Failed(e));
        }
    }

    /// Send one item to the callee; waits while the callee's window is full.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe, as [`StreamTx::send`]: the item is lost (nothing
    /// else; its place in the callee's window is given back).
    ///
    /// # Errors
    /// The error the context ended with, or [`PortalError::CallEnded`] if the callee
    /// already returned; [`PortalError::Disconnected`] if it went away,
    /// [`PortalError::Codec`] if the item does not encode.
    pub async fn send(&self, item: C::In) -> Result<(), PortalError> {
        if let Some(e) = cancellation(&self.link) {
            return Err(e);
        }
        match &self.ended {
            Some(Ended::Failed(e)) => return Err(e.clone()),
            Some(Ended::Clean) => {
                return Err(PortalError::CallEnded {
                    actor: self.link.conn().peer_path().to_owned(),
                    how: "it returned".to_owned(),
                });
            }
            None => {}
        }
        self.link.send_item(Payload::encode(&item)?).await
    }

    /// The callee's next item, or `Ok(None)` once it stopped sending. After the context
    /// failed, returns that error every time.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: each frame it takes from the call's queue is handled
    /// in the same poll (an item returned, the callee's stop, return value or error
    /// recorded), so dropping the future loses nothing; the next `recv` or
    /// [`result`](CallerContext::result) carries on from there.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the callee failed, [`PortalError::Disconnected`] if it
    /// went away, [`PortalError::ContextCancelled`] once either side cancelled the
    /// context (or the callee's actor was cancelled), [`PortalError::MsgType`] for an
    /// item that does not decode as `C::Out` (the context goes on).
    pub async fn recv(&mut self) -> Result<Option<C::Out>, PortalError> {
        while !self.out_done {
            if let Some(item) = self.step().await? {
                return Ok(Some(item));
            }
        }
        if self.ended.is_none()
            && let Some(e) = cancellation(&self.link)
        {
            self.fail(e);
        }
        match &self.ended {
            Some(Ended::Failed(e)) => Err(e.clone()),
            _ => Ok(None),
        }
    }

    /// Take every frame already queued for this context, without waiting: a return
    /// (or error) that arrived decides how the context ended. Queued items are
    /// discarded.
    fn absorb(&mut self) {
        while self.ended.is_none() {
            let Some(f) = self.link.try_next() else { break };
            match f.msg {
                Msg::Return { .. } | Msg::Error { .. } | Msg::Stop { .. } => {
                    // What it decides is recorded in `ended`.
                    let _ = self.handle(f);
                }
                _ => {}
            }
        }
    }

    /// One frame: an item, or `None` after handling a control frame.
    async fn step(&mut self) -> Result<Option<C::Out>, PortalError> {
        let f = match self.link.next().await {
            Ok(f) => f,
            Err(e) => {
                self.fail(e.clone());
                return Err(e);
            }
        };
        self.handle(f)
    }

    fn handle(&mut self, f: spawn_api::Frame) -> Result<Option<C::Out>, PortalError> {
        match f.msg {
            Msg::Yield { .. } => f.into_payload().decode::<C::Out>().map(Some).map_err(|e| {
                let t = C::types()[3];
                undecodable(&self.link, C::NAME, MsgSlot::Item, 3, t, e)
            }),
            Msg::Stop { .. } => {
                self.out_done = true;
                Ok(None)
            }
            Msg::Return { .. } => {
                self.out_done = true;
                self.link.finish();
                match f.into_payload().decode::<C::Return>() {
                    Ok(v) => {
                        self.value = Some(v);
                        self.ended = Some(Ended::Clean);
                    }
                    Err(e) => {
                        let t = C::types()[4];
                        let e = undecodable(&self.link, C::NAME, MsgSlot::Return, 4, t, e);
                        self.fail(e);
                    }
                }
                Ok(None)
            }
            Msg::Error { error, .. } => {
                self.fail(PortalError::Remote(Box::new(error)));
                Ok(None)
            }
            other => {
                let e = PortalError::Unexpected {
                    got: other.kind_name(),
                    during: "context",
                };
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Tell the callee no more items will come.
    ///
    /// # Errors
    /// The error the context ended with ([`PortalError::ContextCancelled`] if it was
    /// cancelled), [`PortalError::Disconnected`] if the callee went away. After a clean
    /// end there is nothing to close: `Ok(())`.
    pub fn close_send(&mut self) -> Result<(), PortalError> {
        if let Some(e) = cancellation(&self.link) {
            return Err(e);
        }
        match &self.ended {
            Some(Ended::Failed(e)) => return Err(e.clone()),
            // Nothing left to close.
            Some(Ended::Clean) => return Ok(()),
            None => {}
        }
        if !self.in_closed {
            self.in_closed = true;
            self.link.send_stop()?;
        }
        Ok(())
    }

    /// Close the sending side and wait for the callee's result, discarding items not
    /// yet received. Answers at once if the context already ended (with the same error
    /// `recv` returned).
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: it takes the context, so dropping the future drops
    /// it. Unless the callee had already returned, a `Cancel` is sent and its function is
    /// dropped; either way the return value is lost (one already received included). The
    /// sending side was closed at the first poll.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the callee failed, [`PortalError::Disconnected`] if it
    /// went away, [`PortalError::ContextCancelled`] if either side cancelled the
    /// context, [`PortalError::MsgType`] if the value does not decode as `C::Return`.
    pub async fn result(mut self) -> Result<C::Return, PortalError> {
        let _ = self.close_send();
        loop {
            if self.ended.is_none()
                && let Some(e) = cancellation(&self.link)
            {
                self.fail(e);
            }
            match &self.ended {
                Some(Ended::Failed(e)) => return Err(e.clone()),
                Some(Ended::Clean) => {
                    return self.value.take().ok_or_else(|| PortalError::CallEnded {
                        actor: self.link.conn().peer_path().to_owned(),
                        how: "its result was already taken".to_owned(),
                    });
                }
                None => {}
            }
            // Errors are recorded in `ended` by `step`.
            let _ = self.step().await;
        }
    }

    /// Cancel the context, saying why, and wait until the callee acknowledged: its
    /// accessors failed with [`PortalError::ContextCancelled`] (side
    /// [`Peer`](crate::CancelSide::Peer), naming this actor and `reason`) and its
    /// function ended, or was dropped after the tree's `cancel_timeout`. From the first
    /// poll on every accessor here answers the cancellation (side
    /// [`This`](crate::CancelSide::This)); items not yet received are discarded. A
    /// context that already ended or was cancelled is left as it is: this returns
    /// `Ok(())` at once. If both sides cancel at once, each side's cancel answers the
    /// other's and both return at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancel is made at the first poll; dropping the future only stops
    /// the waiting for the acknowledgement.
    ///
    /// # Errors
    /// [`PortalError::CancelTimedOut`] if the callee did not acknowledge within twice
    /// the tree's cancel timeout (its function may still run), and
    /// [`PortalError::Disconnected`] if it went away first.
    ///
    /// ```no_run
    /// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
    /// use actor_core::{CancelSide, PortalError};
    /// actor_core::context!(Watch: String => started (), in (), out String, return ());
    /// let (mut ctx, ()) = portal.open_context(Watch, "/var/log".into()).await?;
    /// let first = ctx.recv().await?;
    /// ctx.cancel("seen enough").await?;
    /// let e = ctx.recv().await.unwrap_err();
    /// assert_eq!(e.cancelled().map(|c| c.side), Some(CancelSide::This));
    /// assert!(matches!(ctx.result().await, Err(PortalError::ContextCancelled(_))));
    /// # let _ = first; Ok(()) }
    /// ```
    pub async fn cancel(&mut self, reason: impl Into<String>) -> Result<(), PortalError> {
        self.absorb();
        if self.ended.is_none() && self.link.conn().is_closed() {
            // Gone with its channel: it ended, unseen until now.
            self.fail(self.link.conn().disconnected());
        }
        if self.ended.is_some() || self.link.state().cancelled().is_some() {
            return Ok(());
        }
        let r = self.link.cancel(reason.into()).await;
        if let Some(e) = cancellation(&self.link) {
            self.fail(e);
        }
        r
    }

    /// The cancellation, if the context was cancelled (by either side).
    pub fn cancellation(&self) -> Option<ContextCancelled> {
        self.link.state().cancelled().cloned()
    }
}

// ---------------------------------------------------------------------------------------
// Broadcasts: one stream (or a context's items) fanned out to several receivers.

impl<T: Wire + Send + 'static> Source<T> for ReplyStream<T> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<T>, PortalError>> {
        Box::pin(ReplyStream::recv(self))
    }
}

impl Canceller for CallSender {
    fn cancel(&self, reason: String) -> BoxFuture<'static, Result<(), PortalError>> {
        let me = self.clone();
        Box::pin(async move { me.cancel(reason).await })
    }
}

impl<T: Wire + Clone + Send + 'static> ReplyStream<T> {
    /// Share this stream among several receivers, each of which sees every item: the
    /// returned [`BroadcastStream`] is the first receiver; clone it (or
    /// [`subscribe`](BroadcastStream::subscribe)) for more.
    ///
    /// The stream is read as fast as its fastest receiver reads; the last `capacity`
    /// items are kept for the others. A receiver that falls further behind gets
    /// [`PortalError::Lagged`] with the number of items it lost, then goes on from the
    /// oldest item still kept: memory stays bounded by `capacity` items whatever the
    /// receivers do. Dropping every receiver cancels the stream, as dropping the stream
    /// does; [`BroadcastStream::cancel`] cancels it for all of them.
    ///
    /// ```no_run
    /// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
    /// actor_core::stream!(Prices: String => f64);
    /// let prices = portal.open_stream(Prices, "ACME".into()).await?.broadcast(64);
    /// let mut chart = prices.clone();
    /// let mut alerts = prices;
    /// let a = tokio::spawn(async move { while let Ok(Some(p)) = chart.recv().await { let _ = p; } });
    /// let b = tokio::spawn(async move {
    ///     loop {
    ///         match alerts.recv().await {
    ///             Ok(Some(p)) if p > 100.0 => println!("ACME above 100: {p}"),
    ///             Ok(Some(_)) => {}
    ///             // Fell behind: some prices were skipped, the next is the oldest kept.
    ///             Err(actor_core::PortalError::Lagged { missed }) => eprintln!("skipped {missed}"),
    ///             Ok(None) | Err(_) => break,
    ///         }
    ///     }
    /// });
    /// let _ = (a.await, b.await);
    /// # Ok(()) }
    /// ```
    pub fn broadcast(self, capacity: usize) -> BroadcastStream<T> {
        let canceller: Arc<dyn Canceller> = Arc::new(self.link.sender());
        BroadcastStream::new(Box::new(self), canceller, capacity)
    }
}

/// How a context whose items are broadcast ended, kept for [`ContextSender::result`].
struct ContextEnd<R> {
    /// The return value (taken by the first `result`) or the error.
    outcome: std::sync::Mutex<Option<Result<R, PortalError>>>,
    done: tokio_util::sync::CancellationToken,
}

impl<R> ContextEnd<R> {
    fn set(&self, r: Result<R, PortalError>) {
        let mut o = self.outcome.lock().unwrap();
        if o.is_none() && !self.done.is_cancelled() {
            *o = Some(r);
            drop(o);
            self.done.cancel();
        }
    }
}

/// A context's items as a broadcast source: items until the callee stops sending, then
/// its return (or error) is kept for [`ContextSender::result`].
struct ContextOut<C: ContextFn> {
    ctx: CallerContext<C>,
    end: Arc<ContextEnd<C::Return>>,
}

impl<C: ContextFn> Source<C::Out> for ContextOut<C> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<C::Out>, PortalError>> {
        Box::pin(async move {
            match self.ctx.recv().await {
                Ok(Some(item)) => Ok(Some(item)),
                Ok(None) => {
                    // The callee sent its last item: the broadcast ends with the context.
                    while self.ctx.ended.is_none() {
                        // Errors are recorded in `ended`; each step is cancel safe.
                        let _ = self.ctx.step().await;
                    }
                    match self.ctx.ended.clone() {
                        Some(Ended::Failed(e)) => {
                            self.end.set(Err(e.clone()));
                            Err(e)
                        }
                        _ => {
                            let v = self.ctx.value.take().ok_or_else(|| PortalError::CallEnded {
                                actor: self.ctx.link.conn().peer_path().to_owned(),
                                how: "it returned".to_owned(),
                            });
                            self.end.set(v);
                            Ok(None)
                        }
                    }
                }
                Err(e) => {
                    self.end.set(Err(e.clone()));
                    Err(e)
                }
            }
        })
    }
}

impl<C: ContextFn> Drop for ContextOut<C> {
    fn drop(&mut self) {
        // Every receiver is gone: the context is cancelled with this end (dropped). Its
        // senders outlive it: one waiting for credit must not wait forever.
        let why = PortalError::ContextCancelled(ContextCancelled {
            canceller: self.ctx.link.conn().own_path().to_owned(),
            reason: "every receiver of its broadcast was dropped".to_owned(),
            side: crate::error::CancelSide::This,
        });
        self.ctx.link.sender().close_sending(why.clone());
        self.end.set(Err(why));
    }
}

impl<C: ContextFn> CallerContext<C>
where
    C::Out: Clone,
{
    /// Split the context into a sender that any number of tasks share and a broadcast
    /// of the callee's items (see [`ReplyStream::broadcast`] for the receivers' lag
    /// policy). The context's return value is read with [`ContextSender::result`] once
    /// the receivers have reached the end.
    ///
    /// ```no_run
    /// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
    /// actor_core::context!(Room: String => started (), in String, out String, return u64);
    /// let (ctx, ()) = portal.open_context(Room, "lobby".into()).await?;
    /// let (tx, mut rx) = ctx.broadcast(128);
    /// let mut other = rx.clone();
    /// tx.send("hello".into()).await?;
    /// assert_eq!(rx.recv().await?.as_deref(), Some("hello"));
    /// assert_eq!(other.recv().await?.as_deref(), Some("hello"));
    /// tx.close_send()?;
    /// while rx.recv().await?.is_some() {}
    /// let said = tx.result().await?;
    /// # let _ = said; Ok(()) }
    /// ```
    pub fn broadcast(self, capacity: usize) -> (ContextSender<C>, BroadcastStream<C::Out>) {
        let sender = self.link.sender();
        let end = Arc::new(ContextEnd {
            outcome: std::sync::Mutex::new(None),
            done: tokio_util::sync::CancellationToken::new(),
        });
        let tx = ContextSender {
            tx: sender.clone(),
            end: end.clone(),
            closed: Arc::new(std::sync::atomic::AtomicBool::new(self.in_closed)),
        };
        let out = ContextOut { ctx: self, end };
        let canceller: Arc<dyn Canceller> = Arc::new(sender);
        (tx, BroadcastStream::new(Box::new(out), canceller, capacity))
    }
}

/// The sending side of a context whose items are broadcast
/// ([`CallerContext::broadcast`]). Cheap to clone; every clone sends on the one context.
pub struct ContextSender<C: ContextFn> {
    tx: CallSender,
    end: Arc<ContextEnd<C::Return>>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl<C: ContextFn> Clone for ContextSender<C> {
    fn clone(&self) -> Self {
        ContextSender {
            tx: self.tx.clone(),
            end: self.end.clone(),
            closed: self.closed.clone(),
        }
    }
}

impl<C: ContextFn> std::fmt::Debug for ContextSender<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextSender")
            .field("function", &C::NAME)
            .field("ended", &self.end.done.is_cancelled())
            .finish()
    }
}

impl<C: ContextFn> ContextSender<C> {
    /// The error every accessor answers once the context has ended, if it has.
    fn ended(&self) -> Option<PortalError> {
        if let Some(c) = self.tx.state().cancelled() {
            return Some(PortalError::ContextCancelled(c.clone()));
        }
        if !self.end.done.is_cancelled() {
            return None;
        }
        Some(match &*self.end.outcome.lock().unwrap() {
            Some(Err(e)) => e.clone(),
            _ => PortalError::CallEnded {
                actor: self.tx.conn().peer_path().to_owned(),
                how: "it returned".to_owned(),
            },
        })
    }

    /// Send one item to the callee, as [`CallerContext::send`].
    ///
    /// # Errors
    /// As [`CallerContext::send`].
    pub async fn send(&self, item: C::In) -> Result<(), PortalError> {
        if let Some(e) = self.ended() {
            return Err(e);
        }
        self.tx.send_item(Payload::encode(&item)?).await
    }

    /// Tell the callee no more items will come (the first call does; later ones do
    /// nothing).
    ///
    /// # Errors
    /// The error the context ended with, [`PortalError::Disconnected`] if the callee
    /// went away.
    pub fn close_send(&self) -> Result<(), PortalError> {
        if let Some(e) = self.ended() {
            return match e {
                PortalError::CallEnded { .. } => Ok(()),
                e => Err(e),
            };
        }
        if !self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.tx.send_stop()?;
        }
        Ok(())
    }

    /// Cancel the context for every receiver, as [`CallerContext::cancel`].
    ///
    /// # Errors
    /// As [`CallerContext::cancel`].
    pub async fn cancel(&self, reason: impl Into<String>) -> Result<(), PortalError> {
        if self.end.done.is_cancelled() {
            return Ok(());
        }
        self.tx.cancel(reason.into()).await
    }

    /// The cancellation, if the context was cancelled (by either side).
    pub fn cancellation(&self) -> Option<ContextCancelled> {
        self.tx.state().cancelled().cloned()
    }

    /// Wait for the context's end and take its return value. The end arrives through the
    /// receivers (the broadcast reads the context only as they read): with no receiver
    /// reading, this waits. The first call takes the value; later ones fail with
    /// [`PortalError::CallEnded`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken until the end is there.
    ///
    /// # Errors
    /// The error the context ended with; [`PortalError::ContextCancelled`] if it was
    /// cancelled (also when every receiver was dropped).
    pub async fn result(&self) -> Result<C::Return, PortalError> {
        tokio::select! {
            biased;
            _ = self.end.done.cancelled() => {}
            c = self.tx.state().wait() => {
                self.end.set(Err(PortalError::ContextCancelled(c)));
            }
        }
        let mut o = self.end.outcome.lock().unwrap();
        match o.take() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => {
                *o = Some(Err(e.clone()));
                Err(e)
            }
            None => Err(PortalError::CallEnded {
                actor: self.tx.conn().peer_path().to_owned(),
                how: "its result was already taken".to_owned(),
            }),
        }
    }
}

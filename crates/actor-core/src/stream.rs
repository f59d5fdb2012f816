//! Typed ends of streams and contexts.
//!
//! | shape | caller holds | callee holds |
//! |---|---|---|
//! | server stream | [`ReplyStream`] | [`StreamTx`] |
//! | context | [`CallerContext`] | [`CalleeContext`], then [`CalleeStream`] |
//!
//! Every direction is flow-controlled: `send` waits while the receiver's window (items
//! and bytes) is full. Dropping the caller's end cancels the call in the callee.
//!
//! A stream or context ends exactly one way — returned, failed, or gone with its channel
//! — and once it has, every accessor answers at once with that outcome: a `recv` after
//! the callee's error returns the same error again, `result` after `recv` saw the error
//! returns it too, and a `send` after the other side ended fails with
//! [`PortalError::CallEnded`] (or the error it ended with). Nothing waits on a call that
//! can no longer progress.
//!
//! ## Cancel safety
//!
//! | method | cancel safe | if the future is dropped |
//! |---|---|---|
//! | [`ReplyStream::recv`], [`CallerContext::recv`], [`CalleeStream::recv`] | yes | nothing is lost: the next `recv` returns the next item |
//! | [`StreamTx::send`], [`CallerContext::send`], [`CalleeStream::send`] | no | the item is lost; its place in the window is given back (see [`StreamTx::send`]) |
//! | [`ReplyStream::collect`], [`CallerContext::result`] | no | they own the end: dropping them drops it, which cancels the call |
//! | [`CalleeContext::started`] | no | it owns the end: the context can no longer start |

use std::marker::PhantomData;

use crate::conn::CallLink;
use crate::error::PortalError;
use spawn_api::{ContextFn, Msg, Payload, Wire};

/// The callee's sending end of a server stream.
///
/// A stream function gets one; each [`send`](StreamTx::send) becomes one item of the
/// caller's [`ReplyStream`], in order. Returning `Ok(())` ends the stream (the caller's
/// `recv` then returns `Ok(None)`), returning an error fails it with that error.
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
    /// [`PortalError::CallEnded`] if it cancelled the stream, [`PortalError::Codec`] if
    /// the item does not encode.
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
/// Dropping it (or calling [`cancel`](ReplyStream::cancel)) before the stream ended
/// cancels the function in the callee.
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
///             events.cancel(); // the callee's function is cancelled
///             break;
///         }
///     }
/// }
/// # let _ = seen; Ok(()) }
/// ```
pub struct ReplyStream<T> {
    link: CallLink,
    ended: Option<Ended>,
    _item: PhantomData<fn() -> T>,
}

impl<T: Wire> ReplyStream<T> {
    pub(crate) fn new(link: CallLink) -> Self {
        ReplyStream {
            link,
            ended: None,
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
    /// went away mid-stream, [`PortalError::Codec`] for an item that does not decode (the
    /// stream goes on).
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
                Msg::Yield { .. } => return Ok(Some(f.into_payload().decode::<T>()?)),
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

    /// Stop the stream now; the callee's function is cancelled.
    pub fn cancel(self) {
        drop(self);
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
    /// [`PortalError::Disconnected`] if the caller went away, [`PortalError::Codec`] if
    /// the value does not encode.
    pub async fn started(self, value: C::Started) -> Result<CalleeStream<C>, PortalError> {
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
        self.link.send_item(Payload::encode(&item)?).await
    }

    /// The caller's next item, or `Ok(None)` once the caller closed its side (every time
    /// after that, too).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: an item is taken from the call's queue only in the
    /// poll that returns it; dropping the future loses nothing.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away, [`PortalError::Codec`] for
    /// an item that does not decode.
    pub async fn recv(&mut self) -> Result<Option<C::In>, PortalError> {
        if self.in_done {
            return Ok(None);
        }
        let f = self.link.next().await?;
        match f.msg {
            Msg::Yield { .. } => Ok(Some(f.into_payload().decode::<C::In>()?)),
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
    /// [`PortalError::Disconnected`] if the caller went away.
    pub fn close_send(&self) -> Result<(), PortalError> {
        self.link.send_stop()
    }
}

/// The caller's end of an open context.
///
/// Both sides send and receive items until each closes its sending side; the callee's
/// function then returns a value, which [`result`](CallerContext::result) waits for.
/// Dropping this end (or calling [`cancel`](CallerContext::cancel)) before that
/// cancels the function in the callee.
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
    /// went away.
    pub async fn recv(&mut self) -> Result<Option<C::Out>, PortalError> {
        while !self.out_done {
            if let Some(item) = self.step().await? {
                return Ok(Some(item));
            }
        }
        match &self.ended {
            Some(Ended::Failed(e)) => Err(e.clone()),
            _ => Ok(None),
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
        match f.msg {
            Msg::Yield { .. } => Ok(Some(f.into_payload().decode::<C::Out>()?)),
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
                    Err(e) => self.fail(e.into()),
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
    /// [`PortalError::Disconnected`] if the callee went away.
    pub fn close_send(&mut self) -> Result<(), PortalError> {
        if !self.in_closed {
            self.in_closed = true;
            if self.ended.is_none() {
                self.link.send_stop()?;
            }
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
    /// went away.
    pub async fn result(mut self) -> Result<C::Return, PortalError> {
        let _ = self.close_send();
        loop {
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

    /// Cancel the context; the callee's function is cancelled.
    pub fn cancel(self) {
        drop(self);
    }
}

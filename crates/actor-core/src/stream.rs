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

use std::marker::PhantomData;

use crate::conn::CallLink;
use crate::error::PortalError;
use spawn_api::{ContextFn, Msg, Wire};

/// The callee's sending end of a server stream.
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
    /// Cancel safety: not cancel-safe once it waits for the channel's write queue (the
    /// item may have taken a place in the window without being sent); cancel the whole
    /// stream instead.
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
        self.link.send_item(item.encode()?).await
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
    /// Cancel safety: cancel-safe; no item is lost if the future is dropped.
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
                Msg::Yield { .. } => return Ok(Some(T::decode(f.payload)?)),
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
    /// Cancel safety: not cancel-safe (the value may or may not have been sent).
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
                value.encode()?,
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
    /// Cancel safety: as [`StreamTx::send`].
    ///
    /// # Errors
    /// As [`StreamTx::send`].
    pub async fn send(&self, item: C::Out) -> Result<(), PortalError> {
        self.link.send_item(item.encode()?).await
    }

    /// The caller's next item, or `Ok(None)` once the caller closed its side (every time
    /// after that, too).
    ///
    /// Cancel safety: cancel-safe.
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
            Msg::Yield { .. } => Ok(Some(C::In::decode(f.payload)?)),
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
/// ```no_run
/// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
/// actor_core::context!(Echo: String => started String, in String, out String, return u64);
/// let (mut ctx, greeting) = portal.open_context(Echo, "hi".into()).await?;
/// ctx.send("a".into()).await?;
/// let echoed = ctx.recv().await?;
/// let count = ctx.result().await?;
/// # let _ = (greeting, echoed, count); Ok(()) }
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
    /// Cancel safety: as [`StreamTx::send`].
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
        self.link.send_item(item.encode()?).await
    }

    /// The callee's next item, or `Ok(None)` once it stopped sending. After the context
    /// failed, returns that error every time.
    ///
    /// Cancel safety: cancel-safe.
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
            Msg::Yield { .. } => Ok(Some(C::Out::decode(f.payload)?)),
            Msg::Stop { .. } => {
                self.out_done = true;
                Ok(None)
            }
            Msg::Return { .. } => {
                self.out_done = true;
                self.link.finish();
                match C::Return::decode(f.payload) {
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
    /// Cancel safety: not cancel-safe: dropping it drops (and so cancels) the context.
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

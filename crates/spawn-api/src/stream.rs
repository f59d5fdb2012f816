//! Typed ends of streams and contexts.
//!
//! | shape | caller holds | callee holds |
//! |---|---|---|
//! | server stream | [`ReplyStream`] | [`StreamTx`] |
//! | context | [`CallerContext`] | [`CalleeContext`], then [`CalleeStream`] |
//!
//! Every direction is flow-controlled: `send` waits while the receiver's window is
//! full. Dropping the caller's end cancels the call in the callee.

use std::marker::PhantomData;

use crate::conn::CallLink;
use crate::error::PortalError;
use crate::registry::Context;
use crate::wire::{Msg, Wire};

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

    /// Send one item; waits while the caller's buffer is full.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away, [`PortalError::Codec`] if
    /// the item does not encode.
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

/// The caller's receiving end of a server stream.
pub struct ReplyStream<T> {
    link: CallLink,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T: Wire> ReplyStream<T> {
    pub(crate) fn new(link: CallLink) -> Self {
        ReplyStream {
            link,
            done: false,
            _item: PhantomData,
        }
    }

    /// The next item, or `Ok(None)` once the callee finished the stream.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the callee failed, [`PortalError::Disconnected`] if it
    /// went away mid-stream, [`PortalError::Codec`] for an item that does not decode.
    pub async fn recv(&mut self) -> Result<Option<T>, PortalError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let f = match self.link.next().await {
                Ok(f) => f,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            match f.msg {
                Msg::StartAck { .. } => continue,
                Msg::Yield { .. } => {
                    self.link.consumed_item();
                    return Ok(Some(T::decode(f.payload)?));
                }
                Msg::Stop { .. } | Msg::Return { .. } => {
                    self.done = true;
                    self.link.finish();
                    return Ok(None);
                }
                Msg::Error { error, .. } => {
                    self.done = true;
                    self.link.finish();
                    return Err(PortalError::Remote(Box::new(error)));
                }
                other => {
                    return Err(PortalError::Unexpected {
                        got: other.kind_name(),
                        during: "stream",
                    });
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
            .field("done", &self.done)
            .finish()
    }
}

/// The callee's end of a context before it has started: call
/// [`started`](CalleeContext::started) to send the started value and get the stream.
pub struct CalleeContext<C: Context> {
    link: CallLink,
    _c: PhantomData<fn(C)>,
}

impl<C: Context> CalleeContext<C> {
    pub(crate) fn new(link: CallLink) -> Self {
        CalleeContext {
            link,
            _c: PhantomData,
        }
    }

    /// Send the started value; the caller's `open_context` returns with it.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the caller went away, [`PortalError::Codec`] if
    /// the value does not encode.
    pub async fn started(self, value: C::Started) -> Result<CalleeStream<C>, PortalError> {
        tracing::debug!(cid = self.link.cid(), "context started");
        self.link.conn().send(crate::wire::Frame::with_payload(
            Msg::Started {
                cid: self.link.cid(),
            },
            value.encode()?,
        ))?;
        Ok(CalleeStream {
            link: self.link,
            in_done: false,
            _c: PhantomData,
        })
    }
}

/// The callee's end of a started context.
pub struct CalleeStream<C: Context> {
    link: CallLink,
    in_done: bool,
    _c: PhantomData<fn(C)>,
}

impl<C: Context> CalleeStream<C> {
    /// Send one item to the caller; waits while the caller's buffer is full.
    ///
    /// # Errors
    /// As [`StreamTx::send`].
    pub async fn send(&self, item: C::Out) -> Result<(), PortalError> {
        self.link.send_item(item.encode()?).await
    }

    /// The caller's next item, or `Ok(None)` once the caller closed its side.
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
            Msg::Yield { .. } => {
                self.link.consumed_item();
                Ok(Some(C::In::decode(f.payload)?))
            }
            Msg::Stop { .. } => {
                self.in_done = true;
                Ok(None)
            }
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
pub struct CallerContext<C: Context> {
    link: CallLink,
    out_done: bool,
    in_closed: bool,
    result: Option<Result<C::Return, PortalError>>,
    _c: PhantomData<fn(C)>,
}

impl<C: Context> CallerContext<C> {
    pub(crate) fn new(link: CallLink) -> Self {
        CallerContext {
            link,
            out_done: false,
            in_closed: false,
            result: None,
            _c: PhantomData,
        }
    }

    /// Send one item to the callee; waits while the callee's buffer is full.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the callee went away, [`PortalError::Codec`] if
    /// the item does not encode.
    pub async fn send(&self, item: C::In) -> Result<(), PortalError> {
        self.link.send_item(item.encode()?).await
    }

    /// The callee's next item, or `Ok(None)` once it stopped sending.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the callee failed, [`PortalError::Disconnected`] if it
    /// went away.
    pub async fn recv(&mut self) -> Result<Option<C::Out>, PortalError> {
        while !self.out_done {
            match self.step().await? {
                Some(item) => return Ok(Some(item)),
                None => continue,
            }
        }
        match self.result.take() {
            Some(Err(e)) => Err(e),
            other => {
                self.result = other;
                Ok(None)
            }
        }
    }

    /// One frame: an item, or `None` after handling a control frame.
    async fn step(&mut self) -> Result<Option<C::Out>, PortalError> {
        let f = self.link.next().await?;
        match f.msg {
            Msg::Yield { .. } => {
                self.link.consumed_item();
                Ok(Some(C::Out::decode(f.payload)?))
            }
            Msg::Stop { .. } => {
                self.out_done = true;
                Ok(None)
            }
            Msg::Return { .. } => {
                self.out_done = true;
                self.link.finish();
                self.result = Some(C::Return::decode(f.payload).map_err(Into::into));
                Ok(None)
            }
            Msg::Error { error, .. } => {
                self.out_done = true;
                self.link.finish();
                self.result = Some(Err(PortalError::Remote(Box::new(error))));
                Ok(None)
            }
            other => Err(PortalError::Unexpected {
                got: other.kind_name(),
                during: "context",
            }),
        }
    }

    /// Tell the callee no more items will come.
    ///
    /// # Errors
    /// [`PortalError::Disconnected`] if the callee went away.
    pub fn close_send(&mut self) -> Result<(), PortalError> {
        if !self.in_closed {
            self.in_closed = true;
            self.link.send_stop()?;
        }
        Ok(())
    }

    /// Close the sending side and wait for the callee's result, discarding items not
    /// yet received.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the callee failed, [`PortalError::Disconnected`] if it
    /// went away.
    pub async fn result(mut self) -> Result<C::Return, PortalError> {
        let _ = self.close_send();
        loop {
            if let Some(r) = self.result.take() {
                return r;
            }
            let _ = self.step().await?;
        }
    }

    /// Cancel the context; the callee's function is cancelled.
    pub fn cancel(self) {
        drop(self);
    }
}

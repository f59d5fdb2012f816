//! [`Portal`]: the calling side of a channel to another actor.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::children::ChildSlot;
use crate::conn::{CallLink, Conn};
use crate::error::{MsgSlot, PortalError};
use crate::stream::{CallerContext, ReplyStream};
use spawn_api::{
    ActorId, CallFn, CallKind, ContextFn, Msg, Payload, Signature, StreamFn, TeardownPolicy,
};

/// A handle for calling functions in another actor (tractor's `Portal`).
///
/// Cheap to clone; all clones share one channel, and calls on it run concurrently.
/// Portals to a nursery's children come from
/// [`Nursery::start_actor`](crate::Nursery::start_actor).
///
/// ```no_run
/// # async fn demo(portal: actor_core::Portal) -> Result<(), actor_core::PortalError> {
/// actor_core::call!(Add: (i64, i64) => i64);
/// actor_core::stream!(Count: u32 => u32);
/// let sum = portal.run(Add, (1, 2)).await?;
/// let mut items = portal.open_stream(Count, 3).await?;
/// while let Some(i) = items.recv().await? {
///     println!("{i}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Portal {
    conn: Conn,
    slot: Option<Arc<ChildSlot>>,
    policy: TeardownPolicy,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("actor", &self.conn.peer_path())
            .finish_non_exhaustive()
    }
}

impl Portal {
    pub(crate) fn new(conn: Conn, slot: Option<Arc<ChildSlot>>, policy: TeardownPolicy) -> Portal {
        Portal { conn, slot, policy }
    }

    /// The remote actor's id.
    pub fn actor_id(&self) -> &ActorId {
        self.conn.peer()
    }

    /// The remote actor's tree path (`root/worker`).
    pub fn path(&self) -> &str {
        self.conn.peer_path()
    }

    /// The remote actor's process id, if its transport reports one.
    pub fn peer_pid(&self) -> Option<u32> {
        self.conn.peer_info().pid
    }

    /// Whether the channel to the actor is still open.
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// Call the one-shot function `C` with `args` and wait for its reply.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future cancels the call. A
    /// [`Msg::Cancel`] for it is queued behind its start, and the remote actor drops the
    /// function at its next await point (a start still waiting for room in the write
    /// queue is never sent). Nothing is left behind on either side, but the outcome is
    /// lost: the function may not have run, may have run in part, or may have finished
    /// (a reply already on its way is discarded). Calling again in a `select!` loop calls
    /// the function again; to wait for one call across loop iterations, pin its future
    /// once and poll it by reference.
    ///
    /// # Errors
    /// [`PortalError::Remote`] if the function failed or does not exist (its kind is
    /// then [`spawn_api::kinds::NO_SUCH_FUNCTION`]), [`PortalError::Disconnected`] if the
    /// actor went away, [`PortalError::Codec`] if a value did not encode or decode.
    pub async fn run<C: CallFn>(
        &self,
        _function: C,
        args: C::Args,
    ) -> Result<C::Reply, PortalError> {
        let types = C::types();
        let args = Payload::encode(&args)?;
        let sig = Signature::hash_of(&types);
        let (reply, link) = self.run_sig(C::NAME, sig, types[0], args).await?;
        reply
            .decode::<C::Reply>()
            .map_err(|e| crate::stream::undecodable(&link, C::NAME, MsgSlot::Reply, 1, types[1], e))
    }

    /// Call a one-shot function by name with encoded arguments, for callers that build
    /// payloads themselves (language bridges, tools).
    ///
    /// # Cancel safety
    ///
    /// As [`Portal::run`]: dropping the future cancels the call, and its outcome is lost.
    ///
    /// # Errors
    /// As [`Portal::run`].
    pub async fn run_raw(&self, name: &str, args: Bytes) -> Result<Bytes, PortalError> {
        Ok(self.run_payload(name, Payload::from(args)).await?.bytes)
    }

    /// As [`Portal::run_raw`], with descriptors beside the bytes both ways (see
    /// [`spawn_api::fds`]).
    ///
    /// # Errors
    /// As [`Portal::run`].
    pub async fn run_payload(&self, name: &str, args: Payload) -> Result<Payload, PortalError> {
        Ok(self.run_sig(name, 0, "unknown", args).await?.0)
    }

    /// A one-shot call whose types hash to `sig` (0: not said), `args_type` being its
    /// arguments' type: the reply and the finished link (for typing a reply that does
    /// not decode).
    async fn run_sig(
        &self,
        name: &str,
        sig: u64,
        args_type: &str,
        args: Payload,
    ) -> Result<(Payload, CallLink), PortalError> {
        let mut link = self.conn.open_call(name, CallKind::Call, sig, args).await?;
        loop {
            let f = link.next().await?;
            match f.msg {
                Msg::StartAck { .. } => continue,
                Msg::Return { .. } => {
                    link.finish();
                    return Ok((f.into_payload(), link));
                }
                Msg::Error { error, .. } => {
                    link.finish();
                    return Err(crate::stream::remote_error(&link, name, args_type, error));
                }
                other => {
                    return Err(PortalError::Unexpected {
                        got: other.kind_name(),
                        during: "call",
                    });
                }
            }
        }
    }

    /// Start the streaming function `S` and return its item stream.
    ///
    /// Dropping the stream before its end cancels the function in the remote actor.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future cancels the call as
    /// [`Portal::run`] does (a [`Msg::Cancel`] follows its start; the remote function,
    /// which may already have started and sent items, is dropped, and items already
    /// received are discarded). Calling again starts the function anew.
    ///
    /// # Errors
    /// As [`Portal::run`], for the start of the call.
    pub async fn open_stream<S: StreamFn>(
        &self,
        _function: S,
        args: S::Args,
    ) -> Result<ReplyStream<S::Item>, PortalError> {
        let mut link = self
            .conn
            .open_call(
                S::NAME,
                CallKind::Stream,
                Signature::hash_of(&S::types()),
                Payload::encode(&args)?,
            )
            .await?;
        let f = link.next().await?;
        match f.msg {
            Msg::StartAck { .. } => Ok(ReplyStream::new::<S>(link)),
            Msg::Error { error, .. } => {
                link.finish();
                Err(crate::stream::remote_error(
                    &link,
                    S::NAME,
                    S::types()[0],
                    error,
                ))
            }
            other => Err(PortalError::Unexpected {
                got: other.kind_name(),
                during: "stream start",
            }),
        }
    }

    /// Open the context `C`: waits until the callee sends its `started` value, then
    /// returns the caller's end of the context and that value.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future cancels the context as
    /// [`Portal::run`] cancels a call (a [`Msg::Cancel`] follows its start and the
    /// remote function is dropped). A `started` value already received is lost with it.
    /// Calling again opens a new context.
    ///
    /// # Errors
    /// As [`Portal::run`], for the start of the context.
    pub async fn open_context<C: ContextFn>(
        &self,
        _function: C,
        args: C::Args,
    ) -> Result<(CallerContext<C>, C::Started), PortalError> {
        let mut link = self
            .conn
            .open_call(
                C::NAME,
                CallKind::Context,
                Signature::hash_of(&C::types()),
                Payload::encode(&args)?,
            )
            .await?;
        loop {
            let f = link.next().await?;
            match f.msg {
                Msg::StartAck { .. } => continue,
                Msg::Started { .. } => {
                    let started = f.into_payload().decode::<C::Started>().map_err(|e| {
                        let t = C::types()[1];
                        crate::stream::undecodable(&link, C::NAME, MsgSlot::Started, 1, t, e)
                    })?;
                    return Ok((CallerContext::new(link), started));
                }
                Msg::Error { error, .. } => {
                    link.finish();
                    return Err(crate::stream::remote_error(
                        &link,
                        C::NAME,
                        C::types()[0],
                        error,
                    ));
                }
                other => {
                    return Err(PortalError::Unexpected {
                        got: other.kind_name(),
                        during: "context start",
                    });
                }
            }
        }
    }

    /// Close the channel of a portal opened with
    /// [`ActorCx::connect`](crate::ActorCx::connect): frames already queued are written,
    /// then the channel ends on both sides, the peer's slot is freed, and every call
    /// still open on it ends with [`PortalError::Disconnected`]. Returns once it is
    /// closed. A portal to a child or to the parent is not closed (their channels live as
    /// long as the relationship); this returns at once for them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the close is ordered before the first await.
    pub async fn close(&self) {
        if self.slot.is_some() || !self.conn.is_peer() {
            return;
        }
        self.conn.close("closed by this side");
        self.conn.closed().await;
    }

    /// Cancel the remote actor.
    ///
    /// For a child of one of this actor's nurseries this runs the whole teardown ladder
    /// and returns once the child is reaped (its errors, if any, are reported by its
    /// nursery). For any other actor it sends the cancel request and waits for the
    /// acknowledgement or the channel's end, at most the cancel timeout. Returns whether
    /// the actor is known to be gone or to have acknowledged.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. The request is made before the first await (the
    /// child's teardown ordered, or the cancel request queued); dropping the future only
    /// stops the waiting. The teardown or the cancel goes on, and calling again waits
    /// for the same teardown (for a child) or sends the request once more (otherwise,
    /// which the remote actor answers like the first).
    pub async fn cancel_actor(&self) -> bool {
        if let Some(slot) = &self.slot {
            slot.order_teardown(None);
            slot.reaped().await;
            return true;
        }
        self.conn.send_control(Msg::Cancel {
            cid: None,
            cause: Some(spawn_api::CancelCause {
                canceller: self.conn.own_path().to_owned(),
                reason: "Portal::cancel_actor".to_owned(),
                actor: true,
            }),
        });
        tokio::time::timeout(
            self.policy.cancel_timeout.max(Duration::from_millis(1)),
            async {
                tokio::select! {
                    _ = self.conn.cancel_acked() => {},
                    _ = self.conn.closed() => {},
                }
            },
        )
        .await
        .is_ok()
    }
}

//! What the calling side of the actor runtime sees when something fails, one type per
//! operation: [`FnError`] (what an actor function returns), [`PortalError`] (a call),
//! [`ChildError`] and [`NurseryError`] (a nursery's children). The errors of the layers
//! below ([`RemoteError`], [`SpawnError`], transport and protocol errors) are the
//! contract's, in `spawn_api`.

use std::fmt;

use crate::teardown::ChildReport;
use spawn_api::{CodecError, ForeignError, ProtocolError, RemoteError, SpawnError, kinds};
/// What an actor function (or a nursery body) returns as its error.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it, so `?` works on
/// everything. The conversion keeps the error's type name as its kind and the messages
/// of its source chain; if a [`RemoteError`] is in the chain (a call to another actor
/// failed) that error is relayed unchanged, so the caller sees the original kind and
/// the whole path it took.
///
/// `FnError` does not implement `std::error::Error` itself (that would clash with the
/// blanket conversion, as with `anyhow::Error`); use [`FnError::into_remote`] or its
/// `Display`.
///
/// ```
/// use actor_core::FnError;
/// fn parse(s: &str) -> Result<i64, FnError> {
///     Ok(s.parse::<i64>()?)
/// }
/// let e = parse("x").unwrap_err();
/// assert_eq!(e.kind(), "core::num::error::ParseIntError");
/// let custom = FnError::new("Overflow", "too big");
/// assert_eq!(custom.kind(), "Overflow");
/// ```
#[derive(Clone)]
pub struct FnError {
    // Boxed: results carrying it stay small on the happy path.
    repr: Box<Repr>,
}

#[derive(Clone)]
enum Repr {
    Local {
        kind: String,
        message: String,
        chain: Vec<String>,
        traceback: Option<String>,
    },
    Relayed(RemoteError),
}

impl FnError {
    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> FnError {
        FnError {
            repr: Box::new(Repr::Local {
                kind: kind.into(),
                message: message.into(),
                chain: Vec::new(),
                traceback: None,
            }),
        }
    }

    /// An error with only a message (kind `brood::Error`).
    pub fn msg(message: impl fmt::Display) -> FnError {
        FnError::new(kinds::ERROR, message.to_string())
    }

    /// Attach a traceback (Python) or backtrace text.
    pub fn with_traceback(mut self, tb: impl Into<String>) -> FnError {
        match &mut *self.repr {
            Repr::Local { traceback, .. } => *traceback = Some(tb.into()),
            Repr::Relayed(r) => r.traceback = Some(tb.into()),
        }
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> &str {
        match &*self.repr {
            Repr::Local { kind, .. } => kind,
            Repr::Relayed(r) => &r.kind,
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        match &*self.repr {
            Repr::Local { message, .. } => message,
            Repr::Relayed(r) => &r.message,
        }
    }

    /// The remote error this one relays, if it came from another actor.
    pub fn as_remote(&self) -> Option<&RemoteError> {
        match &*self.repr {
            Repr::Relayed(r) => Some(r),
            Repr::Local { .. } => None,
        }
    }

    /// The wire form, as raised (or relayed) by the actor at tree path `here`.
    pub fn into_remote(self, here: &str) -> RemoteError {
        match *self.repr {
            Repr::Local {
                kind,
                message,
                chain,
                traceback,
            } => RemoteError {
                kind,
                message,
                chain,
                traceback,
                origin: here.to_owned(),
                relays: Vec::new(),
            },
            Repr::Relayed(mut r) => {
                if r.origin != here && r.relays.last().map(String::as_str) != Some(here) {
                    r.relays.push(here.to_owned());
                }
                r
            }
        }
    }

    pub(crate) fn relayed(r: RemoteError) -> FnError {
        FnError {
            repr: Box::new(Repr::Relayed(r)),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for FnError {
    fn from(e: E) -> FnError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            if let Some(r) = err.downcast_ref::<RemoteError>() {
                return FnError::relayed(r.clone());
            }
            // `PortalError::Remote` holds it boxed, and a box is its own error type.
            if let Some(r) = err.downcast_ref::<Box<RemoteError>>() {
                return FnError::relayed((**r).clone());
            }
            // A nested nursery whose body failed: that failure is the error, not the
            // nursery (which is only how it got here).
            if let Some(n) = err.downcast_ref::<NurseryError>() {
                if let Some(body) = &n.body {
                    return body.clone();
                }
                // No body error: the first child's failure is the error, relayed with
                // its own kind and origin (a grandchild's panic stays a panic).
                if let Some(first) = n.children.first() {
                    return FnError::relayed(first.to_remote());
                }
            }
            if let Some(c) = err.downcast_ref::<ChildError>() {
                return FnError::relayed(c.to_remote());
            }
            // The runtime's own typed call errors travel under their brood kinds.
            if let Some(p) = err.downcast_ref::<PortalError>() {
                let kind = match p {
                    PortalError::ContextCancelled(_) => Some(kinds::CONTEXT_CANCELLED),
                    PortalError::MsgType(_) => Some(kinds::MSG_TYPE),
                    PortalError::Lagged { .. } => Some(kinds::LAGGED),
                    _ => None,
                };
                if let Some(kind) = kind {
                    return FnError::new(kind, p.to_string());
                }
            }
            if let Some(e) = err.downcast_ref::<SupervisorError>() {
                let kind = match e {
                    SupervisorError::RestartLimit { .. } => kinds::RESTART_LIMIT,
                    SupervisorError::Start { .. } => kinds::SPAWN,
                };
                return FnError::new(kind, e.to_string());
            }
            // Foreign code's own error (a Python exception): its kind is the one to report.
            if let Some(f) = err.downcast_ref::<ForeignError>() {
                return FnError {
                    repr: Box::new(Repr::Local {
                        kind: f.kind.clone(),
                        message: f.message.clone(),
                        chain: Vec::new(),
                        traceback: f.traceback.clone(),
                    }),
                };
            }
            cur = err.source();
        }
        let mut chain = Vec::new();
        let mut src = e.source();
        while let Some(s) = src {
            chain.push(s.to_string());
            src = s.source();
        }
        FnError {
            repr: Box::new(Repr::Local {
                kind: std::any::type_name::<E>().to_owned(),
                message: e.to_string(),
                chain,
                traceback: None,
            }),
        }
    }
}

impl fmt::Display for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.repr {
            Repr::Local {
                kind,
                message,
                chain,
                ..
            } => {
                write!(f, "{kind}: {message}")?;
                for c in chain {
                    write!(f, "; caused by: {c}")?;
                }
                Ok(())
            }
            Repr::Relayed(r) => fmt::Display::fmt(r, f),
        }
    }
}

impl fmt::Debug for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.repr {
            Repr::Local {
                kind,
                message,
                chain,
                traceback,
            } => f
                .debug_struct("FnError")
                .field("kind", kind)
                .field("message", message)
                .field("chain", chain)
                .field("traceback", traceback)
                .finish(),
            Repr::Relayed(r) => f.debug_tuple("FnError::Relayed").field(r).finish(),
        }
    }
}

/// A call through a [`crate::Portal`] failed.
///
/// Cloneable, so that a stream or context that ended with an error can answer every
/// later accessor with the same error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PortalError {
    /// The remote function failed (or does not exist: see [`kinds`]).
    #[error("{0}")]
    Remote(#[source] Box<RemoteError>),
    /// The channel to the actor closed before the call finished (the actor died, was
    /// cancelled, or broke the protocol).
    #[error("lost contact with actor {actor}: {reason}")]
    Disconnected {
        /// The actor's tree path.
        actor: String,
        /// Why the channel closed.
        reason: String,
    },
    /// The call was cancelled on this side.
    #[error("call cancelled")]
    Cancelled,
    /// The call already ended (the other side returned or failed): nothing more can be
    /// sent on it.
    #[error("the call to {actor} has ended: {how}")]
    CallEnded {
        /// The other actor's tree path.
        actor: String,
        /// How it ended.
        how: String,
    },
    /// An argument or reply did not encode or decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A frame could not be sent (too large for the channel, say).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer sent a message this call did not expect.
    #[error("unexpected {got} message during a {during}")]
    Unexpected {
        /// The message.
        got: &'static str,
        /// The call's shape.
        during: &'static str,
    },
    /// The call, stream or context was cancelled: by this side, by the peer, or by a
    /// cancel of a whole actor. Says who cancelled and why.
    #[error(transparent)]
    ContextCancelled(#[from] ContextCancelled),
    /// This side cancelled the call, and the peer did not acknowledge within the bound
    /// (twice the tree's cancel timeout). The call is cancelled here all the same; the
    /// peer's function may still be running.
    #[error("{actor} did not acknowledge the cancel within {after:?}")]
    CancelTimedOut {
        /// The other actor's tree path.
        actor: String,
        /// How long this side waited.
        after: std::time::Duration,
    },
    /// This subscriber of a [`BroadcastStream`](crate::BroadcastStream) fell further
    /// behind than the broadcast buffer holds: `missed` items are lost for it. The next
    /// `recv` returns the oldest item still buffered.
    #[error("this subscriber fell behind the broadcast buffer: {missed} items are lost for it")]
    Lagged {
        /// How many items this subscriber will never see.
        missed: u64,
    },
    /// A value did not decode as the type this side expects: the two sides were built
    /// with different types for the function (tractor's `MsgTypeError`).
    #[error(transparent)]
    MsgType(Box<MsgTypeError>),
    /// A supervised child is restarting: incarnation `incarnation` is not up yet (a
    /// supervised handle can wait for it instead: `Supervised::waiting`).
    #[error("actor {actor} is restarting (incarnation {incarnation} is not up yet)")]
    Restarting {
        /// The child's tree path.
        actor: String,
        /// The incarnation being started.
        incarnation: u64,
    },
    /// The supervised child's incarnation that served this call, stream or context
    /// ended (its supervisor restarts it, or did): the call is not retried.
    #[error("actor {actor}: incarnation {incarnation} ended while serving this ({cause})")]
    Restarted {
        /// The child's tree path.
        actor: String,
        /// The incarnation that ended.
        incarnation: u64,
        /// What this side saw of its end.
        cause: String,
    },
    /// The supervised child will not run again (it ended for good, or its supervisor
    /// stopped or gave up).
    #[error("actor {actor} is not running: {why}")]
    NotRunning {
        /// The child's tree path.
        actor: String,
        /// Why.
        why: String,
    },
}

/// Which side of a call a cancellation came from, as seen by the side reporting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelSide {
    /// This end cancelled it (`cancel` was called here).
    This,
    /// The other end cancelled it (or dropped its end without waiting).
    Peer,
    /// A whole actor was cancelled (the peer's actor, or this one): its calls ended with it.
    Actor,
}

impl fmt::Display for CancelSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelSide::This => "this side",
            CancelSide::Peer => "the peer",
            CancelSide::Actor => "an actor cancel",
        })
    }
}

/// A call, stream or context ended by cancellation (tractor's `ContextCancelled`).
///
/// ```
/// use actor_core::{CancelSide, ContextCancelled, PortalError};
/// let e = PortalError::from(ContextCancelled {
///     canceller: "root/client".into(),
///     reason: "no longer needed".into(),
///     side: CancelSide::Peer,
/// });
/// assert_eq!(e.cancelled().map(|c| c.side), Some(CancelSide::Peer));
/// assert!(e.to_string().contains("root/client"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled by {canceller} ({side}): {reason}")]
pub struct ContextCancelled {
    /// The tree path of the actor that asked for the cancellation (for an actor cancel,
    /// the actor that cancelled the whole actor, as its peer reported it).
    pub canceller: String,
    /// Why, in the canceller's words.
    pub reason: String,
    /// Where the cancellation came from, seen from this end.
    pub side: CancelSide,
}

/// Which value of a function failed to decode (see [`MsgTypeError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgSlot {
    /// The arguments.
    Args,
    /// A one-shot call's reply.
    Reply,
    /// A stream item (either direction of a context, or a server stream).
    Item,
    /// A context's `started` value.
    Started,
    /// A context's return value.
    Return,
}

/// A value that does not decode as the type this side expects: the caller and callee
/// were built with different types for `function` (another version of the program,
/// say). Names the function and both sides' types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{function}: the {slot:?} sent by {sender} does not decode: {sender} sends {sent_type}, {receiver} expects {expected_type} ({detail})"
)]
pub struct MsgTypeError {
    /// The function's wire name.
    pub function: String,
    /// Which of its values failed.
    pub slot: MsgSlot,
    /// The tree path of the actor that sent the value.
    pub sender: String,
    /// The tree path of the actor that could not decode it.
    pub receiver: String,
    /// The type the sender encoded, by name (`unknown` if the sender did not say).
    pub sent_type: String,
    /// The type the receiver expected, by name.
    pub expected_type: String,
    /// The decoder's message.
    pub detail: String,
}

impl PortalError {
    /// The remote error, if the remote side raised one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            PortalError::Remote(r) => Some(&**r),
            _ => None,
        }
    }

    /// The cancellation, if the call ended by one.
    pub fn cancelled(&self) -> Option<&ContextCancelled> {
        match self {
            PortalError::ContextCancelled(c) => Some(c),
            _ => None,
        }
    }

    /// The type mismatch, if a value did not decode as its function's type.
    pub fn msg_type(&self) -> Option<&MsgTypeError> {
        match self {
            PortalError::MsgType(m) => Some(m),
            _ => None,
        }
    }
}

/// Why a supervisor failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A child could not be started when the supervisor started; the children started
    /// before it were stopped again.
    #[error("supervisor {supervisor}: child {child} could not start: {error}")]
    Start {
        /// The supervisor's name.
        supervisor: String,
        /// The child's name.
        child: String,
        /// Why.
        error: String,
    },
    /// A child needed more restarts than the intensity allows: every child was stopped.
    #[error(
        "supervisor {supervisor} gave up: {child} needed more than {max_restarts} restarts within {within:?}; its last errors: {}",
        last_errors.join("; ")
    )]
    RestartLimit {
        /// The supervisor's name.
        supervisor: String,
        /// The child whose end went past the limit.
        child: String,
        /// The intensity's restarts.
        max_restarts: u32,
        /// The intensity's period.
        within: std::time::Duration,
        /// The last errors of that child, oldest first (at most 5).
        last_errors: Vec<String>,
    },
}

/// How one child of a nursery failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The child's function (`run_in_actor`) or the child itself raised an error.
    #[error("actor {actor} failed: {error}")]
    Failed {
        /// The actor's tree path.
        actor: String,
        /// The error.
        #[source]
        error: RemoteError,
    },
    /// The child panicked.
    #[error("actor {actor} panicked{}: {message}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The actor's tree path.
        actor: String,
        /// The panic message.
        message: String,
        /// `file:line:col`, when known.
        location: Option<String>,
    },
    /// The child exited with a non-zero code on its own.
    #[error("actor {actor} exited with code {code}")]
    Exited {
        /// The actor's tree path.
        actor: String,
        /// The exit code.
        code: i32,
    },
    /// The child was killed by a signal that brood did not send.
    #[error("actor {actor} killed by signal {signal} ({name})")]
    Signaled {
        /// The actor's tree path.
        actor: String,
        /// The signal number.
        signal: i32,
        /// The signal name (`SIGKILL`).
        name: String,
    },
    /// The child could not be stopped (a thread stuck in native code) and was left
    /// behind.
    #[error("actor {actor} abandoned: {reason}")]
    Abandoned {
        /// The actor's tree path.
        actor: String,
        /// What it was stuck in.
        reason: String,
    },
    /// The child's exit status could not be collected.
    #[error("actor {actor} ended with an unknown status: {reason}")]
    StatusUnknown {
        /// The actor's tree path.
        actor: String,
        /// Why the status is unknown.
        reason: String,
    },
    /// The child could not be started.
    #[error("could not start actor {actor}: {source}")]
    Spawn {
        /// The actor's tree path.
        actor: String,
        /// Why.
        #[source]
        source: SpawnError,
    },
    /// A supervisor of this nursery gave up (its restart intensity was passed) after
    /// stopping its children.
    #[error(transparent)]
    GaveUp(Box<SupervisorError>),
}

impl ChildError {
    /// The failed actor's tree path.
    pub fn actor(&self) -> &str {
        match self {
            ChildError::Failed { actor, .. }
            | ChildError::Panicked { actor, .. }
            | ChildError::Exited { actor, .. }
            | ChildError::Signaled { actor, .. }
            | ChildError::Abandoned { actor, .. }
            | ChildError::StatusUnknown { actor, .. }
            | ChildError::Spawn { actor, .. } => actor,
            ChildError::GaveUp(e) => match &**e {
                SupervisorError::Start { supervisor, .. }
                | SupervisorError::RestartLimit { supervisor, .. } => supervisor,
            },
        }
    }

    /// The remote error, for [`ChildError::Failed`].
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            ChildError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// This error as it travels to the actors above: a [`ChildError::Failed`] relays
    /// its remote error; every other kind becomes a [`RemoteError`] whose origin is the
    /// failed actor and whose kind is one of [`kinds`] (a panic is
    /// [`kinds::PANIC`] with its location as traceback).
    ///
    /// ```
    /// use actor_core::{ChildError, kinds};
    /// let e = ChildError::Panicked {
    ///     actor: "root/a/b".into(),
    ///     message: "boom".into(),
    ///     location: Some("src/lib.rs:1:1".into()),
    /// };
    /// let r = e.to_remote();
    /// assert_eq!((r.kind.as_str(), r.origin.as_str()), (kinds::PANIC, "root/a/b"));
    /// ```
    pub fn to_remote(&self) -> RemoteError {
        let (kind, message, traceback) = match self {
            ChildError::Failed { error, .. } => return error.clone(),
            ChildError::Panicked {
                message, location, ..
            } => (kinds::PANIC, message.clone(), location.clone()),
            ChildError::Exited { code, .. } => {
                (kinds::EXITED, format!("exited with code {code}"), None)
            }
            ChildError::Signaled { signal, name, .. } => (
                kinds::SIGNALED,
                format!("killed by signal {signal} ({name})"),
                None,
            ),
            ChildError::Abandoned { reason, .. } => {
                (kinds::ABANDONED, format!("abandoned: {reason}"), None)
            }
            ChildError::StatusUnknown { reason, .. } => (
                kinds::STATUS_UNKNOWN,
                format!("ended with an unknown status: {reason}"),
                None,
            ),
            ChildError::Spawn { source, .. } => (kinds::SPAWN, source.to_string(), None),
            ChildError::GaveUp(e) => (kinds::RESTART_LIMIT, e.to_string(), None),
        };
        let mut r = RemoteError::new(kind, message, self.actor());
        r.traceback = traceback;
        r
    }
}

/// A nursery ended with errors: its body's error (if it failed) and every child error,
/// in the order they happened.
///
/// `source()` is the first child error, so `?` into an [`FnError`] relays a child's
/// remote error up the tree.
#[derive(Debug)]
pub struct NurseryError {
    /// The body's own error, if it returned one.
    pub body: Option<FnError>,
    /// Every child that failed.
    pub children: Vec<ChildError>,
    /// Whether the nursery was cancelled from outside (its actor was cancelled).
    pub cancelled: bool,
    /// What became of every child, in the order they were reaped (the same records as
    /// [`crate::Nursery::reports`], which cannot be read once the body has ended).
    pub reports: Vec<ChildReport>,
}

impl NurseryError {
    /// The first child error whose remote kind is `kind`.
    pub fn find_kind(&self, kind: &str) -> Option<&ChildError> {
        self.children
            .iter()
            .find(|c| c.remote().is_some_and(|r| r.kind == kind))
    }
}

impl fmt::Display for NurseryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cancelled && self.body.is_none() && self.children.is_empty() {
            return f.write_str("nursery cancelled");
        }
        f.write_str("nursery failed")?;
        if let Some(b) = &self.body {
            write!(f, "; body: {b}")?;
        }
        for c in &self.children {
            write!(f, "; {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NurseryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.children
            .first()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_error_in_chain_is_relayed_with_hops() {
        let origin = RemoteError::new("ValueError", "nope", "root/a/b");
        let portal = PortalError::Remote(Box::new(origin.clone()));
        let fe = FnError::from(portal);
        let relayed = fe.into_remote("root/a");
        assert_eq!(relayed.kind, "ValueError");
        assert_eq!(relayed.actor_path(), ["root/a/b", "root/a"]);

        let nursery = NurseryError {
            body: None,
            children: vec![ChildError::Failed {
                actor: "root/a".into(),
                error: relayed,
            }],
            cancelled: false,
            reports: Vec::new(),
        };
        let again = FnError::from(nursery).into_remote("root");
        assert_eq!(again.actor_path(), ["root/a/b", "root/a", "root"]);
    }

    #[test]
    fn local_errors_keep_type_and_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = FnError::from(Outer(std::io::Error::other("inner")));
        let r = e.into_remote("root/x");
        assert!(r.kind.ends_with("Outer"), "{}", r.kind);
        assert_eq!(r.message, "outer");
        assert_eq!(r.chain, ["inner"]);
        assert_eq!(r.origin, "root/x");
    }

    #[test]
    fn a_grandchilds_panic_is_relayed_as_a_panic() {
        let nursery = NurseryError {
            body: None,
            children: vec![ChildError::Panicked {
                actor: "root/child/grandchild".into(),
                message: "boom".into(),
                location: Some("src/x.rs:1:2".into()),
            }],
            cancelled: false,
            reports: Vec::new(),
        };
        let r = FnError::from(nursery).into_remote("root/child");
        assert_eq!(r.kind, kinds::PANIC);
        assert_eq!(r.message, "boom");
        assert_eq!(r.traceback.as_deref(), Some("src/x.rs:1:2"));
        assert_eq!(r.actor_path(), ["root/child/grandchild", "root/child"]);
    }
}

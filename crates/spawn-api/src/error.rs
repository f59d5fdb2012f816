//! Every way brood can fail, as types.
//!
//! - [`RemoteError`]: an error raised in another actor, with its kind, message, source
//!   chain and the actors it crossed. It is the only error that travels on the wire.
//! - [`FnError`]: what an actor function returns; any `std::error::Error` converts into
//!   it with `?`, and a [`RemoteError`] found in the error's chain is relayed as is.
//! - [`PortalError`], [`SpawnError`], [`ChildError`], [`NurseryError`]: what the calling
//!   side sees, one type per operation.
//! - [`ProtocolError`], [`ChannelError`], [`TransportError`], [`CodecError`]: the
//!   layers below.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::ChildExit;

/// A value did not encode or decode (see [`crate::Wire`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode {ty}: {message}")]
    Encode {
        /// The Rust type.
        ty: &'static str,
        /// The encoder's complaint.
        message: String,
    },
    /// The bytes are not a valid value of the type.
    #[error("cannot decode {ty}: {message}")]
    Decode {
        /// The Rust type.
        ty: &'static str,
        /// The decoder's complaint.
        message: String,
    },
}

/// A peer broke the wire protocol. The channel it came on is closed; the actor and its
/// other channels carry on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame's length prefix is above the channel's maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced (or attempted) length.
        len: usize,
        /// The channel's maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: expected {expected} bytes, the stream ended after {received}")]
    Truncated {
        /// Bytes the frame needed, prefix included.
        expected: usize,
        /// Bytes that arrived.
        received: usize,
    },
    /// A frame's header is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// A message could not be encoded.
    #[error("unencodable message: {0}")]
    Encode(String),
    /// A valid message arrived where the protocol does not allow it.
    #[error("unexpected {got} message, expected {expected}")]
    Unexpected {
        /// What the protocol allowed here.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours is {ours}, the peer's is {theirs}")]
    Version {
        /// Our [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The peer did not complete the handshake in time.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
}

/// A channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The operating system refused a read or write.
    #[error("channel I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The channel is closed.
    #[error("channel closed")]
    Closed,
}

impl ChannelError {
    /// The protocol error inside, if this is one.
    pub fn as_protocol(&self) -> Option<&ProtocolError> {
        match self {
            ChannelError::Protocol(p) => Some(p),
            _ => None,
        }
    }
}

/// A transport could not bind, accept or connect.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The peer runs as another user and was refused.
    #[error("peer refused: it runs as uid {peer_uid}, this actor as uid {our_uid}")]
    PeerRefused {
        /// The peer's uid from the kernel's peer credentials.
        peer_uid: u32,
        /// Ours.
        our_uid: u32,
    },
    /// The runtime directory is missing, not ours, or has the wrong mode.
    #[error("runtime directory {path}: {reason}")]
    RuntimeDir {
        /// The directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address this transport cannot use.
    #[error("bad address {addr}: {reason}")]
    BadAddr {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The handshake or first exchange on a new channel failed.
    #[error("channel setup: {0}")]
    Channel(#[from] ChannelError),
    /// The listener was closed.
    #[error("listener closed")]
    Closed,
}

impl TransportError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> TransportError {
        TransportError::Io {
            context: context.into(),
            source,
        }
    }
}

/// An error raised in another actor, as it arrives: the error's kind (its type name, or
/// the Python exception type), its message, the messages of its source chain, a
/// traceback when the origin had one, and the tree paths of the actor that raised it and
/// of every actor that relayed it on the way here.
///
/// ```
/// use spawn_api::RemoteError;
/// let mut e = RemoteError::new("ValueError", "bad input", "root/a/b");
/// e.relays.push("root/a".into());
/// assert_eq!(e.actor_path(), ["root/a/b", "root/a"]);
/// assert!(e.to_string().contains("ValueError: bad input"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The error's kind: a Rust type name, a Python exception type, or one of the
    /// `brood::*` kinds in [`kinds`].
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// The messages of the error's sources, outermost first.
    pub chain: Vec<String>,
    /// A traceback or backtrace from the origin, if it had one.
    pub traceback: Option<String>,
    /// The tree path of the actor where the error was raised.
    pub origin: String,
    /// The tree paths of the actors that relayed it, nearest to the origin first.
    pub relays: Vec<String>,
}

/// Error kinds brood itself raises in [`RemoteError::kind`].
pub mod kinds {
    /// The called function is not registered.
    pub const NO_SUCH_FUNCTION: &str = "brood::NoSuchFunction";
    /// The function exists with another shape (call, stream, context).
    pub const WRONG_KIND: &str = "brood::WrongCallKind";
    /// The arguments did not decode.
    pub const BAD_ARGS: &str = "brood::BadArguments";
    /// The handler panicked.
    pub const PANIC: &str = "brood::Panic";
    /// The call or actor was cancelled.
    pub const CANCELLED: &str = "brood::Cancelled";
    /// The actor broke a protocol rule with this peer.
    pub const PROTOCOL: &str = "brood::ProtocolError";
    /// A generic error made from a message.
    pub const ERROR: &str = "brood::Error";
    /// The peer does not know the tree's secret (or proved it wrong).
    pub const UNAUTHENTICATED: &str = "brood::Unauthenticated";
    /// The peer has as many calls open on the channel as the actor allows.
    pub const TOO_MANY_CALLS: &str = "brood::TooManyCalls";
    /// The actor has as many peer connections open as it allows.
    pub const TOO_MANY_CONNECTIONS: &str = "brood::TooManyConnections";
    /// The call's items would have passed what its channel may buffer; the call failed
    /// so that the actor's memory stays bounded.
    pub const OVERLOADED: &str = "brood::Overloaded";
    /// A descendant actor (named in the error's origin) exited with a non-zero code.
    pub const EXITED: &str = "brood::Exited";
    /// A descendant actor was killed by a signal brood did not send.
    pub const SIGNALED: &str = "brood::Signaled";
    /// A descendant actor could not be stopped and was left behind.
    pub const ABANDONED: &str = "brood::Abandoned";
    /// A descendant actor's exit status could not be collected.
    pub const STATUS_UNKNOWN: &str = "brood::StatusUnknown";
    /// A descendant actor could not be started.
    pub const SPAWN: &str = "brood::SpawnFailed";
}

impl RemoteError {
    /// An error of `kind` with `message`, raised in the actor at tree path `origin`.
    pub fn new(
        kind: impl Into<String>,
        message: impl Into<String>,
        origin: impl Into<String>,
    ) -> RemoteError {
        RemoteError {
            kind: kind.into(),
            message: message.into(),
            chain: Vec::new(),
            traceback: None,
            origin: origin.into(),
            relays: Vec::new(),
        }
    }

    /// The actors the error crossed: its origin, then each relay.
    pub fn actor_path(&self) -> Vec<&str> {
        std::iter::once(self.origin.as_str())
            .chain(self.relays.iter().map(String::as_str))
            .collect()
    }

    /// Whether the error's kind is `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (raised in {}",
            self.kind, self.message, self.origin
        )?;
        for r in &self.relays {
            write!(f, ", relayed by {r}")?;
        }
        f.write_str(")")?;
        for c in &self.chain {
            write!(f, "; caused by: {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

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
/// use spawn_api::FnError;
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
}

impl PortalError {
    /// The remote error, if the remote side raised one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            PortalError::Remote(r) => Some(&**r),
            _ => None,
        }
    }
}

/// Starting a child actor failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No backend with this key is configured.
    #[error("unknown spawn backend {key:?}; known backends: {known}")]
    UnknownBackend {
        /// The requested key.
        key: String,
        /// The configured keys, comma separated.
        known: String,
    },
    /// No transport with this key is configured.
    #[error("unknown transport {key:?}; known transports: {known}")]
    UnknownTransport {
        /// The requested key.
        key: String,
        /// The configured keys, comma separated.
        known: String,
    },
    /// The backend could not start the child.
    #[error("{backend} backend could not start {actor}: {source}")]
    Launch {
        /// The backend key.
        backend: &'static str,
        /// The actor's tree path.
        actor: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The backend is unavailable (its helper died, a resource is missing).
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable {
        /// The backend key.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The child exited before it connected back.
    #[error("{actor} exited before connecting back: {exit}")]
    DiedEarly {
        /// The actor's tree path.
        actor: String,
        /// How it exited.
        exit: ChildExit,
    },
    /// The child did not connect back in time.
    #[error("{actor} did not connect back within {after:?}")]
    Timeout {
        /// The actor's tree path.
        actor: String,
        /// The bound.
        after: Duration,
    },
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The nursery is closing (cancelled or failed) and takes no new children.
    #[error("nursery is closed to new children")]
    NurseryClosed,
    /// The arguments for a `run_in_actor` function did not encode.
    #[error(transparent)]
    Codec(#[from] CodecError),
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
    /// use spawn_api::{ChildError, kinds};
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
    pub reports: Vec<crate::ChildReport>,
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

/// The name of a signal number (`9` → `SIGKILL`).
pub fn signal_name(sig: i32) -> String {
    let n = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    n.to_owned()
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
        struct Outer(#[source] io::Error);
        let e = FnError::from(Outer(io::Error::other("inner")));
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

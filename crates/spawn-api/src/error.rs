//! The errors a backend or a transport reports, and the one error that crosses actors.
//!
//! - [`RemoteError`]: an error raised in another actor, with its kind, message, source
//!   chain and the actors it crossed. It is the only error that travels on the wire;
//!   [`kinds`] lists the kinds brood itself raises.
//! - [`SpawnError`]: a backend could not start a child.
//! - [`ProtocolError`], [`ChannelError`], [`TransportError`], [`CodecError`]: a peer, a
//!   channel, a transport or a value's encoding failed.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::ChildExit;

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
    #[error(
        "protocol version mismatch: the peer speaks brood protocol {theirs}, this actor speaks {ours}; the two programs were built with different versions of brood: build both with the same version of brood"
    )]
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

/// An error raised by foreign code (a Python exception, say) that names its own kind.
///
/// When an actor function fails with one — directly, or anywhere in its error's source
/// chain — the runtime reports the *foreign* kind, message and traceback (`ValueError`,
/// not a Rust type name), as if the function had raised it itself.
///
/// ```
/// use spawn_api::ForeignError;
/// let e = ForeignError::new("ValueError", "bad input").with_traceback("line 1");
/// assert_eq!(e.to_string(), "ValueError: bad input");
/// assert_eq!(e.traceback.as_deref(), Some("line 1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignError {
    /// The error's kind in its own language (`ValueError`, `KeyError`, a class name).
    pub kind: String,
    /// Its message (`str(exception)`).
    pub message: String,
    /// Its formatted traceback, if it has one.
    pub traceback: Option<String>,
}

impl ForeignError {
    /// An error of `kind` with `message` and no traceback.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> ForeignError {
        ForeignError {
            kind: kind.into(),
            message: message.into(),
            traceback: None,
        }
    }

    /// The same error with a traceback.
    pub fn with_traceback(mut self, traceback: impl Into<String>) -> ForeignError {
        self.traceback = Some(traceback.into());
        self
    }
}

impl fmt::Display for ForeignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ForeignError {}

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
    /// A call, stream or context was cancelled by one of its sides or by an actor cancel
    /// (the runtime's `ContextCancelled`, as a remote error once relayed).
    pub const CONTEXT_CANCELLED: &str = "brood::ContextCancelled";
    /// A value did not decode as the type its receiver expects: the two sides were built
    /// with different types for the function.
    pub const MSG_TYPE: &str = "brood::MsgTypeError";
    /// A broadcast subscriber fell behind its buffer and lost items.
    pub const LAGGED: &str = "brood::Lagged";
    /// A supervisor gave up: a child needed more restarts than its intensity allows.
    pub const RESTART_LIMIT: &str = "brood::RestartLimit";
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
    /// The kernel or the caller's privileges refused a part of the child's sandbox (and
    /// the sandbox was not `best_effort`); the child was stopped and reaped.
    #[error("{backend} backend could not sandbox {actor}: {refusal}")]
    SandboxRefused {
        /// The backend key.
        backend: &'static str,
        /// The actor's tree path.
        actor: String,
        /// What was refused, and why.
        refusal: runtime_vars::sandbox::Refusal,
    },
    /// The backend cannot sandbox its children (`subint`: they share their parent's
    /// process); nothing was started.
    #[error("{backend} backend cannot sandbox {actor}: {reason}")]
    SandboxUnsupported {
        /// The backend key.
        backend: &'static str,
        /// The actor's tree path.
        actor: String,
        /// Why.
        reason: &'static str,
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

//! The messages actors exchange and how user values become payload bytes.
//!
//! Every frame is a [`Msg`] header plus an opaque `payload` ([`Frame`]). Headers are
//! postcard-encoded; payloads carry the call's arguments, items and results, encoded by
//! their [`Wire`] impl, and travel as [`Bytes`] so bulk data is never copied element by
//! element (a [`Blob`] payload is not copied at all).

use bytes::Bytes;
use runtime_vars::RuntimeVars;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{Nonce, Proof, TreeSecret};
use crate::error::{CodecError, RemoteError};
use crate::fds::Fds;
use crate::id::{ActorId, Addr};
use crate::limits::{ChannelLimits, Window};
use crate::policy::TeardownPolicy;

/// The protocol version sent in every [`Msg::Hello`] and [`Msg::Challenge`]; peers with
/// another version are refused with a typed protocol error.
pub const PROTOCOL_VERSION: u32 = 3;

/// Call id: numbers one call (a one-shot, a stream or a context) on one channel.
///
/// The side that connected numbers its calls with odd ids and the side that accepted
/// with even ids, so both may start calls on one channel without clashing.
pub type Cid = u64;

/// Which shape of function a [`Msg::Start`] invokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallKind {
    /// One request, one reply ([`crate::CallFn`]).
    Call,
    /// One request, a stream of items back ([`crate::StreamFn`]).
    Stream,
    /// A `started` value, then items both ways, then a result ([`crate::ContextFn`]).
    Context,
}

/// Why a call (or an actor) is being cancelled, as carried by [`Msg::Cancel`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelCause {
    /// The tree path of the actor that asked for the cancellation. For a cancel of one
    /// call the receiver uses the channel's peer instead (a peer cannot speak for another
    /// actor); for an actor cancel (`actor`) it is the actor that cancelled the whole
    /// actor, as the peer reports it.
    pub canceller: String,
    /// Why, in the canceller's words. Receivers keep at most [`CancelCause::MAX_TEXT`]
    /// bytes of it.
    pub reason: String,
    /// The call ends because its whole actor was cancelled, not by itself.
    pub actor: bool,
}

impl CancelCause {
    /// The longest `canceller` or `reason` a receiver keeps, in bytes; longer ones are cut
    /// at a character boundary.
    pub const MAX_TEXT: usize = 1024;

    /// This cause with `canceller` and `reason` cut to [`CancelCause::MAX_TEXT`] bytes.
    ///
    /// ```
    /// use spawn_api::CancelCause;
    /// let c = CancelCause { canceller: "root".into(), reason: "é".repeat(1000), actor: false };
    /// assert!(c.bounded().reason.len() <= CancelCause::MAX_TEXT);
    /// ```
    pub fn bounded(mut self) -> CancelCause {
        cut(&mut self.canceller, Self::MAX_TEXT);
        cut(&mut self.reason, Self::MAX_TEXT);
        self
    }
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A function's types by name, in the order of its shape's values: `[args, reply]` for a
/// call, `[args, item]` for a stream, `[args, started, in, out, return]` for a context.
/// Exchanged only when the two sides' hashes differ, so that a value that does not
/// decode can be reported with both sides' types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The type names (`std::any::type_name`).
    pub types: Vec<String>,
}

impl Signature {
    /// The signature made of these type names.
    pub fn new(types: &[&str]) -> Signature {
        Signature {
            types: types.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// A stable 64-bit hash of the type names (FNV-1a over the names, each followed by a
    /// zero byte): what a [`Msg::Start`] carries.
    ///
    /// ```
    /// use spawn_api::Signature;
    /// let a = Signature::new(&["u32", "u64"]);
    /// assert_eq!(a.hash(), Signature::hash_of(&["u32", "u64"]));
    /// assert_ne!(a.hash(), Signature::hash_of(&["u32", "i64"]));
    /// ```
    pub fn hash(&self) -> u64 {
        let names: Vec<&str> = self.types.iter().map(String::as_str).collect();
        Signature::hash_of(&names)
    }

    /// [`Signature::hash`] of these names, without building a signature.
    pub fn hash_of(types: &[&str]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for t in types {
            for &b in t.as_bytes().iter().chain(std::iter::once(&0u8)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// The type name at `index`, or `unknown`.
    pub fn get(&self, index: usize) -> &str {
        self.types.get(index).map_or("unknown", String::as_str)
    }
}

/// One protocol message. Variants that carry user data leave it in the frame's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// First message on every channel, from the side that connected: who it is, which
    /// protocol it speaks, and its half of the handshake's randomness.
    Hello {
        /// The sender's id.
        id: ActorId,
        /// The sender's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// A fresh nonce the acceptor's proof must cover.
        nonce: Nonce,
        /// A new child's proof, made at once over the nonce its parent gave it in its boot
        /// ([`ChildBoot::nonce`]): the parent can then answer with the spawn spec in the
        /// same write, and the handshake takes one round trip. `None` for any other peer,
        /// which proves itself in [`Msg::Answer`] instead.
        proof: Option<Proof>,
    },
    /// The acceptor's answer to [`Msg::Hello`]: who it is, its nonce, and its proof that
    /// it knows the tree's secret (over both nonces and both ids).
    Challenge {
        /// The sender's id.
        id: ActorId,
        /// The sender's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// A fresh nonce the connector's proof must cover.
        nonce: Nonce,
        /// The acceptor's proof ([`crate::TreeSecret`]).
        proof: Proof,
    },
    /// The connector's proof that it knows the tree's secret. Nothing else is accepted
    /// from it before this arrives and checks out.
    Answer {
        /// The connector's proof.
        proof: Proof,
    },
    /// Parent to child, right after the handshake: everything the child needs to run.
    SpawnSpec(Box<SpawnSpec>),
    /// Invoke function `func`; payload: the encoded arguments.
    Start {
        /// The new call's id.
        cid: Cid,
        /// The registered function name.
        func: String,
        /// The function's shape; a mismatch with the callee's registry is an error.
        kind: CallKind,
        /// How many [`Msg::Yield`]s (and bytes of them) the caller accepts before it
        /// grants more credit.
        window: Window,
        /// The caller's [`Signature::hash`] of the function's types.
        sig: u64,
    },
    /// The callee found the function and started it.
    StartAck {
        /// The call.
        cid: Cid,
        /// How many [`Msg::Yield`]s (and bytes of them) the callee accepts before it
        /// grants more credit.
        window: Window,
        /// The callee's types for the function, by name, sent only when their hash is not
        /// the caller's `sig`: a value that then fails to decode names both sides' types.
        types: Option<Box<Signature>>,
    },
    /// A context's `started` value; payload: the encoded value.
    Started {
        /// The call.
        cid: Cid,
    },
    /// One stream item, either direction; payload: the encoded item.
    Yield {
        /// The call.
        cid: Cid,
    },
    /// Flow control: the receiver of a stream has consumed `items` more
    /// [`Msg::Yield`]s carrying `bytes` bytes, so the sender may have that much more in
    /// flight. A sender that exceeds its window breaks the protocol; credit beyond what
    /// is in flight is ignored.
    Credit {
        /// The call.
        cid: Cid,
        /// Items consumed.
        items: u32,
        /// Bytes of their payloads.
        bytes: u64,
    },
    /// The sender will send no more items on this call.
    Stop {
        /// The call.
        cid: Cid,
    },
    /// The call's result; payload: the encoded value.
    Return {
        /// The call.
        cid: Cid,
    },
    /// The call failed (`cid` set), or the actor itself failed (`cid` is `None`, sent to
    /// the parent just before a crash exit, e.g. a panic).
    Error {
        /// The call, or `None` for an actor-level error.
        cid: Option<Cid>,
        /// What went wrong, where.
        error: RemoteError,
    },
    /// Cancel one call (`cid` set) or the whole actor (`None`, a `CancelActor`). Either
    /// side of a call may cancel it; the other answers with [`Msg::CancelAck`] once its
    /// end is done (the callee's function ended or was dropped).
    Cancel {
        /// The call, or `None` for the actor.
        cid: Option<Cid>,
        /// Who asked and why; `None` when an end was dropped without a word.
        cause: Option<CancelCause>,
    },
    /// The cancellation of `cid` (or of the actor) is complete.
    CancelAck {
        /// The call, or `None` for the actor.
        cid: Option<Cid>,
    },
    /// Child to parent: "I am tearing down my own children; I will be gone within
    /// `within` (hooks aside)". Sent when the child starts stopping with children alive,
    /// and again when a descendant extends it. The parent's ladder waits that long before
    /// it terminates the child, so every descendant's ladder (hooks included) can run.
    Stopping {
        /// How long from now the child's teardown may take.
        within: std::time::Duration,
    },
}

impl Msg {
    /// The call this message belongs to, if any.
    pub fn cid(&self) -> Option<Cid> {
        match self {
            Msg::Start { cid, .. }
            | Msg::StartAck { cid, .. }
            | Msg::Credit { cid, .. }
            | Msg::Started { cid }
            | Msg::Yield { cid }
            | Msg::Stop { cid }
            | Msg::Return { cid } => Some(*cid),
            Msg::Error { cid, .. } | Msg::Cancel { cid, .. } | Msg::CancelAck { cid } => *cid,
            Msg::Hello { .. }
            | Msg::Challenge { .. }
            | Msg::Answer { .. }
            | Msg::SpawnSpec(_)
            | Msg::Stopping { .. } => None,
        }
    }

    /// The variant's name, for logs and protocol errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Challenge { .. } => "Challenge",
            Msg::Answer { .. } => "Answer",
            Msg::Stopping { .. } => "Stopping",
            Msg::SpawnSpec(_) => "SpawnSpec",
            Msg::Start { .. } => "Start",
            Msg::StartAck { .. } => "StartAck",
            Msg::Credit { .. } => "Credit",
            Msg::Started { .. } => "Started",
            Msg::Yield { .. } => "Yield",
            Msg::Stop { .. } => "Stop",
            Msg::Return { .. } => "Return",
            Msg::Error { .. } => "Error",
            Msg::Cancel { .. } => "Cancel",
            Msg::CancelAck { .. } => "CancelAck",
        }
    }
}

/// A header and its payload: the unit a [`crate::Channel`] moves.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The protocol message.
    pub msg: Msg,
    /// User data that belongs to `msg` (empty for control messages).
    pub payload: Bytes,
    /// Descriptors that belong to the payload (see [`crate::fds`]); almost always
    /// empty.
    pub fds: Fds,
}

impl Frame {
    /// A frame without payload.
    pub fn control(msg: Msg) -> Frame {
        Frame {
            msg,
            payload: Bytes::new(),
            fds: Fds::new(),
        }
    }

    /// A frame carrying `payload`.
    pub fn with_payload(msg: Msg, payload: Bytes) -> Frame {
        Frame {
            msg,
            payload,
            fds: Fds::new(),
        }
    }

    /// A frame carrying an encoded value, descriptors included.
    pub fn with_parts(msg: Msg, payload: Payload) -> Frame {
        Frame {
            msg,
            payload: payload.bytes,
            fds: payload.fds,
        }
    }

    /// The payload and its descriptors, taken out of the frame.
    pub fn into_payload(self) -> Payload {
        Payload {
            bytes: self.payload,
            fds: self.fds,
        }
    }
}

/// An encoded value: its bytes and the descriptors it carries ([`crate::fds`]).
///
/// ```
/// use spawn_api::wire::Payload;
/// let p = Payload::encode(&(1u8, "two".to_owned())).unwrap();
/// assert!(p.fds.is_empty());
/// assert_eq!(p.decode::<(u8, String)>().unwrap(), (1, "two".to_owned()));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload {
    /// The encoded bytes.
    pub bytes: Bytes,
    /// The descriptors the bytes refer to by index.
    pub fds: Fds,
}

impl Payload {
    /// Encode `value` with [`Wire::encode_with`].
    ///
    /// # Errors
    /// The value's [`CodecError::Encode`].
    pub fn encode<T: Wire>(value: &T) -> Result<Payload, CodecError> {
        let mut fds = Fds::new();
        let bytes = value.encode_with(&mut fds)?;
        Ok(Payload { bytes, fds })
    }

    /// Decode a `T` with [`Wire::decode_with`].
    ///
    /// # Errors
    /// [`CodecError::Decode`] for bytes (or descriptors) that are not a `T`.
    pub fn decode<T: Wire>(self) -> Result<T, CodecError> {
        T::decode_with(self.bytes, self.fds)
    }

    /// Bytes in the payload (descriptors not counted).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes and no descriptors.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.fds.is_empty()
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload {
            bytes,
            fds: Fds::new(),
        }
    }
}

/// Everything a parent sends its child after the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The child's id (it already knows it from its boot info; this confirms it).
    pub child: ActorId,
    /// The parent's id.
    pub parent: ActorId,
    /// The vars the parent built for this child.
    pub vars: RuntimeVars,
    /// The bounds the child uses when it tears down its own children.
    pub teardown: TeardownPolicy,
    /// The bounds on what the child's peers may make it hold.
    pub limits: ChannelLimits,
}

/// What a spawn backend hands a new child before any channel exists: enough to connect
/// back to its parent and to start logging. The rest arrives in the [`SpawnSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildBoot {
    /// The child's id.
    pub id: ActorId,
    /// The parent's id.
    pub parent: ActorId,
    /// Where the parent listens; its transport is the one the child connects with.
    pub parent_addr: Addr,
    /// Where the child must listen (chosen by the parent, so the parent can clean it up).
    pub listen_addr: Addr,
    /// The child's tree path (`root/a/b`), for log lines before the spec arrives.
    pub path: String,
    /// The child's `tracing` filter directive.
    pub log_level: String,
    /// The tokio runtime the child builds for itself.
    pub runtime: RuntimeFlavor,
    /// How long the child waits for its parent to answer the handshake.
    pub connect_timeout: std::time::Duration,
    /// The tree's secret, which the child proves in every handshake. Travels only
    /// through the backend's private path to the child (never its command line or
    /// environment).
    pub secret: TreeSecret,
    /// The parent's nonce for this child's first handshake, good once: with it the
    /// child proves itself in its `Hello` (see [`Msg::Hello`]).
    pub nonce: Nonce,
    /// The sandbox the child must enter before it becomes an actor (`None`: none, or the
    /// one its parent runs in, which a process child is in already). Only process
    /// backends accept one; see [`SpawnError::SandboxUnsupported`](crate::SpawnError::SandboxUnsupported).
    pub sandbox: Option<runtime_vars::sandbox::Sandbox>,
}

impl ChildBoot {
    /// The largest encoded boot [`ChildBoot::from_bytes`] accepts.
    pub const MAX_ENCODED: usize = 16 * 1024;

    /// The directories a sandboxed child must keep reachable and writable whatever its
    /// filesystem view: those of its parent's address and of its own, when they are
    /// paths (a Unix socket's, say), nearest first, each once.
    ///
    /// ```
    /// # use spawn_api::{ActorId, Addr, ChildBoot, RuntimeFlavor, TreeSecret};
    /// # let boot = ChildBoot {
    /// #     id: ActorId::new("c"),
    /// #     parent: ActorId::new("p"),
    /// #     parent_addr: Addr::new("uds", "/run/brood/t1/p.sock"),
    /// #     listen_addr: Addr::new("uds", "/run/brood/t1/c.sock"),
    /// #     path: "p/c".into(),
    /// #     log_level: "info".into(),
    /// #     runtime: RuntimeFlavor::CurrentThread,
    /// #     connect_timeout: std::time::Duration::from_secs(5),
    /// #     secret: TreeSecret::random(),
    /// #     nonce: spawn_api::Nonce::random(),
    /// #     sandbox: None,
    /// # };
    /// assert_eq!(boot.runtime_dirs(), [std::path::PathBuf::from("/run/brood/t1")]);
    /// ```
    pub fn runtime_dirs(&self) -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<std::path::PathBuf> = Vec::new();
        for addr in [&self.listen_addr, &self.parent_addr] {
            let path = std::path::Path::new(addr.endpoint());
            if let Some(dir) = path.parent().filter(|_| path.is_absolute())
                && !dirs.iter().any(|d| d == dir)
            {
                dirs.push(dir.to_owned());
            }
        }
        dirs
    }

    /// Encode for handing to a new child (over a socket, a pipe, or in memory).
    ///
    /// ```
    /// use spawn_api::{ActorId, Addr, ChildBoot, RuntimeFlavor, TreeSecret};
    /// let boot = ChildBoot {
    ///     id: ActorId::new("c"),
    ///     parent: ActorId::new("p"),
    ///     parent_addr: Addr::new("uds", "/tmp/p.sock"),
    ///     listen_addr: Addr::new("uds", "/tmp/c.sock"),
    ///     path: "p/c".into(),
    ///     log_level: "info".into(),
    ///     runtime: RuntimeFlavor::CurrentThread,
    ///     connect_timeout: std::time::Duration::from_secs(5),
    ///     secret: TreeSecret::random(),
    ///     nonce: spawn_api::Nonce::random(),
    ///     sandbox: None,
    /// };
    /// assert_eq!(ChildBoot::from_bytes(&boot.to_bytes()).unwrap(), boot);
    /// assert!(ChildBoot::from_bytes(b"\xff\xff").is_err());
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("ChildBoot always encodes")
    }

    /// Decode what [`ChildBoot::to_bytes`] produced.
    ///
    /// # Errors
    /// [`CodecError::Decode`] for bytes that are not a boot (or longer than
    /// [`ChildBoot::MAX_ENCODED`]); never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<ChildBoot, CodecError> {
        let bad = |m: String| CodecError::Decode {
            ty: "ChildBoot",
            message: m,
        };
        if bytes.len() > Self::MAX_ENCODED {
            return Err(bad(format!(
                "{} bytes, more than the {} a boot may have",
                bytes.len(),
                Self::MAX_ENCODED
            )));
        }
        match postcard::take_from_bytes::<ChildBoot>(bytes) {
            Ok((boot, [])) => Ok(boot),
            Ok((_, rest)) => Err(bad(format!("{} bytes after the boot", rest.len()))),
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

/// The tokio runtime a child actor runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeFlavor {
    /// One thread does everything: the lowest latency and footprint. A handler that
    /// blocks stalls the actor (the teardown ladder still reaps it).
    #[default]
    CurrentThread,
    /// A work-stealing runtime with this many worker threads.
    MultiThread(usize),
}

impl RuntimeFlavor {
    /// Build a tokio runtime of this flavor, with I/O and time enabled.
    ///
    /// # Errors
    /// The I/O error tokio reports (no more file descriptors, say).
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            RuntimeFlavor::MultiThread(n) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n.max(1))
                .enable_all()
                .build(),
        }
    }
}

/// A value that can be a call's arguments, reply, stream item or `started` value.
///
/// Implemented for every serde type (postcard encoding) and for [`Blob`] (bytes sent as
/// they are, with no copy).
pub trait Wire: Sized + Send + 'static {
    /// Encode to payload bytes.
    fn encode(&self) -> Result<Bytes, CodecError>;
    /// Decode from payload bytes.
    fn decode(bytes: Bytes) -> Result<Self, CodecError>;

    /// Encode to payload bytes, adding the descriptors the value carries to `fds`
    /// (see [`crate::fds`]). What the runtime calls; the default is
    /// [`encode`](Wire::encode), for values that are only bytes.
    fn encode_with(&self, fds: &mut Fds) -> Result<Bytes, CodecError> {
        let _ = fds;
        self.encode()
    }

    /// Decode from payload bytes and the descriptors that came with them. What the
    /// runtime calls; the default is [`decode`](Wire::decode), and descriptors the value
    /// does not claim are closed.
    fn decode_with(bytes: Bytes, fds: Fds) -> Result<Self, CodecError> {
        drop(fds);
        Self::decode(bytes)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Wire for T {
    fn encode(&self) -> Result<Bytes, CodecError> {
        postcard::to_allocvec(self)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                ty: std::any::type_name::<T>(),
                message: e.to_string(),
            })
    }

    fn decode(bytes: Bytes) -> Result<Self, CodecError> {
        postcard::from_bytes(&bytes).map_err(|e| CodecError::Decode {
            ty: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    fn encode_with(&self, fds: &mut Fds) -> Result<Bytes, CodecError> {
        match crate::fds::encoding(fds, || self.encode()) {
            (Err(CodecError::Encode { ty, .. }), Some(why)) => {
                Err(CodecError::Encode { ty, message: why })
            }
            (r, _) => r,
        }
    }

    fn decode_with(bytes: Bytes, fds: Fds) -> Result<Self, CodecError> {
        match crate::fds::decoding(fds, || Self::decode(bytes)) {
            (Err(CodecError::Decode { ty, .. }), Some(why)) => {
                Err(CodecError::Decode { ty, message: why })
            }
            (r, _) => r,
        }
    }
}

/// Raw bytes as a payload: sent and received without encoding or copying. Use it for
/// bulk data (files, frames, tensors) as a whole argument, item or reply.
///
/// ```
/// use spawn_api::{Blob, Wire};
/// let b = Blob::from(vec![1u8, 2, 3]);
/// let bytes = b.encode().unwrap();
/// assert_eq!(&bytes[..], &[1, 2, 3]);
/// assert_eq!(Blob::decode(bytes).unwrap(), b);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Blob(pub Bytes);

impl Blob {
    /// The bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for Blob {
    fn from(b: Bytes) -> Blob {
        Blob(b)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(Bytes::from(v))
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Wire for Blob {
    fn encode(&self) -> Result<Bytes, CodecError> {
        Ok(self.0.clone())
    }

    fn decode(bytes: Bytes) -> Result<Self, CodecError> {
        Ok(Blob(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_values_round_trip() {
        let v = (1u32, "two".to_owned(), vec![3.0f64]);
        let b = v.encode().unwrap();
        assert_eq!(<(u32, String, Vec<f64>)>::decode(b).unwrap(), v);
    }

    #[test]
    fn decode_of_wrong_type_is_typed_error() {
        let b = "hello".to_owned().encode().unwrap();
        let e = <(u64, u64, u64, u64, u64, u64, u64)>::decode(b).unwrap_err();
        assert!(matches!(e, CodecError::Decode { .. }), "{e:?}");
    }

    #[test]
    fn blob_is_not_copied() {
        let data = Bytes::from(vec![7u8; 4096]);
        let out = Blob(data.clone()).encode().unwrap();
        assert_eq!(out.as_ptr(), data.as_ptr());
    }
}

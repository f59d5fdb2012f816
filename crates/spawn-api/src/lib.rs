//! # spawn-api: the contract between brood's actor runtime, its spawn backends and its transports
//!
//! brood gives Rust programs supervised trees of isolated actors. This crate is the small,
//! stable part that the pluggable pieces agree on, readable without the actor runtime:
//!
//! - **spawning** ([`backend`]): a [`SpawnBackend`] turns a [`SpawnRequest`] into a running
//!   [`Child`] that the parent can wait on, terminate and kill; on the child's side it
//!   hands the [`ChildBoot`] to an [`ActorEntry`] ("run this child actor") and never sees
//!   the runtime itself. [`TeardownHook`]s run before a child is killed.
//! - **moving bytes** ([`transport`]): a [`Transport`] binds [`Listener`]s and connects
//!   [`Channel`]s that carry [`Frame`]s, checked and framed by the [`codec`]; [`mem`] is
//!   an in-memory transport, for tests and as a reference for transport authors.
//! - **the wire** ([`wire`], [`id`], [`auth`], [`limits`], [`policy`], [`function`]):
//!   [`ActorId`], [`Addr`], the messages ([`Msg`]), what a child is told when it starts
//!   ([`ChildBoot`], [`SpawnSpec`]), how values are encoded ([`Wire`]), and how a function
//!   an actor serves is named and typed ([`CallFn`], [`StreamFn`], [`ContextFn`] and the
//!   [`call!`], [`stream!`], [`context!`] macros).
//! - **errors** ([`error`], [`exit`]): [`RemoteError`] (the one error that crosses
//!   actors), [`SpawnError`], [`TransportError`], [`ChannelError`], [`ProtocolError`],
//!   [`CodecError`], and [`ChildExit`].
//!
//! ## Who should depend on this crate
//!
//! Authors of a spawn backend or a transport depend on this crate alone (plus
//! `os-wrappers` for Linux system calls, if they need them): never on the actor runtime
//! (`actor-core`) and never on another backend or transport. Programs should depend on
//! the `brood` facade instead, which re-exports what they need.
//!
//! ## The key decision
//!
//! The runtime depends on the contract, never the reverse. A backend's child side gets an
//! [`ActorEntry`] — a handle that runs a child actor from its [`ChildBoot`] — and not the
//! runtime's registry, nursery or connections, so a new backend cannot reach into (or be
//! broken by) the runtime's internals. Everything here is plain data or an object-safe
//! trait, so the runtime can hold backends and transports as `dyn` values chosen at run
//! time (`BROOD_BACKEND`, `BROOD_TRANSPORT`).
//!
//! ## A transport in a few lines
//!
//! ```
//! use spawn_api::{ActorId, Addr, Channel, Listener, Transport, TransportError, async_trait};
//!
//! /// A transport that refuses everything: the smallest thing that fits the contract.
//! #[derive(Debug)]
//! struct Nowhere;
//!
//! #[async_trait]
//! impl Transport for Nowhere {
//!     fn key(&self) -> &'static str {
//!         "nowhere"
//!     }
//!     fn address_for(&self, id: &ActorId, _near: Option<&Addr>) -> Result<Addr, TransportError> {
//!         Ok(Addr::new("nowhere", id.to_string()))
//!     }
//!     async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
//!         Err(TransportError::BadAddr { addr: addr.to_string(), reason: "nowhere".into() })
//!     }
//!     async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
//!         Err(TransportError::BadAddr { addr: addr.to_string(), reason: "nowhere".into() })
//!     }
//!     fn cleanup(&self, _addr: &Addr) {}
//!     fn max_frame(&self) -> usize {
//!         spawn_api::codec::DEFAULT_MAX_FRAME
//!     }
//! }
//!
//! let t = Nowhere;
//! let addr = t.address_for(&ActorId::new("worker"), None).unwrap();
//! assert_eq!(addr.transport(), "nowhere");
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod codec;
pub mod error;
pub mod exit;
pub mod extensions;
pub mod fds;
pub mod function;
pub mod id;
pub mod limits;
pub mod mem;
pub mod policy;
pub mod transport;
pub mod wire;

pub use auth::{Nonce, Proof, ProofRole, TreeSecret};
pub use backend::{
    ActorEntry, ActorMain, Child, ChildOutcome, ChildStdio, SpawnBackend, SpawnRequest,
    TeardownHook,
};
pub use error::{
    ChannelError, CodecError, ForeignError, ProtocolError, RemoteError, SpawnError, TransportError,
    kinds,
};
pub use exit::{ChildExit, EXIT_FAILED, EXIT_PANIC, EXIT_SETUP, panic_message, signal_name};
pub use extensions::Extensions;
pub use fds::{FdError, Fds};
pub use function::{CallFn, ContextFn, StreamFn};
pub use id::{ActorId, Addr, BadActorId, BadAddr};
pub use limits::{ChannelLimits, Window};
pub use policy::TeardownPolicy;
pub use transport::{Channel, FrameSink, FrameSource, Listener, PeerInfo, Transport};
pub use wire::{
    Blob, CallKind, CancelCause, ChildBoot, Cid, Frame, Msg, PROTOCOL_VERSION, Payload,
    RuntimeFlavor, Signature, SpawnSpec, Wire,
};

pub use runtime_vars::{self, RuntimeVars, VarsOverride};

/// Re-exported so implementors of the async traits need not depend on it themselves.
pub use async_trait::async_trait;

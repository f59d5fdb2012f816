//! # spawn-api: brood's contracts and actor core
//!
//! brood gives Rust programs supervised trees of isolated actors. This crate holds
//! everything that does not depend on *how* an actor is started or *how* bytes move:
//!
//! - the contracts that backends and transports implement: [`SpawnBackend`] and
//!   [`Child`]; [`Transport`], [`Listener`], [`Channel`], [`FrameSink`], [`FrameSource`];
//!   and [`TeardownHook`];
//! - the wire: [`ActorId`], [`Addr`], [`Msg`], [`Frame`], [`SpawnSpec`], [`ChildBoot`], the
//!   [`codec`] and the [`Wire`] encoding of user values;
//! - the actor runtime: the [`Registry`] of functions an actor serves ([`Call`],
//!   [`ServerStream`], [`Context`]), [`Root`], [`Nursery`], [`Portal`], streams and
//!   contexts, the [`teardown`] ladder, and typed errors that cross actors
//!   ([`RemoteError`]).
//!
//! Backends (`spawn-proc`, ...) and transports (`ipc-uds`, ...) depend on this crate and
//! never on each other; the `brood` facade wires the usual ones together.
//!
//! ## A tree in a few lines
//!
//! ```no_run
//! use spawn_api::{ActorOptions, Brood, Registry};
//!
//! spawn_api::call!(Add: (i64, i64) => i64);
//!
//! # fn backends(b: spawn_api::BroodBuilder) -> spawn_api::BroodBuilder { b }
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let registry = Registry::new().call(Add, |_cx, (a, b)| async move { Ok(a + b) });
//!     let brood = backends(Brood::builder().registry(registry)).build();
//!     brood.enter(); // children start here and never return
//!
//!     let rt = tokio::runtime::Runtime::new()?;
//!     let sum = rt.block_on(brood.root().run(async |nursery| {
//!         let adder = nursery.start_actor("adder", ActorOptions::new()).await?;
//!         Ok(adder.run(Add, (40, 2)).await?)
//!     }))?;
//!     assert_eq!(sum, 42);
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod actor;
mod auth;
mod backend;
mod brood;
pub mod child;
pub mod codec;
mod conn;
mod error;
mod extensions;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod id;
mod limits;
pub mod logging;
mod nursery;
pub mod pidfd;
mod portal;
mod registry;
mod root;
mod sigterm;
mod stream;
pub mod teardown;
mod transport;
mod unwind;
mod wire;

pub use actor::ActorCx;
pub use auth::{Nonce, Proof, ProofRole, TreeSecret};
pub use backend::{Child, ChildExit, ChildStdio, SpawnBackend, SpawnRequest, TeardownHook};
pub use brood::{BACKEND_ENV, Brood, BroodBuilder, TRANSPORT_ENV};
pub use error::{
    ChannelError, ChildError, CodecError, FnError, NurseryError, PortalError, ProtocolError,
    RemoteError, SpawnError, TransportError, kinds, signal_name,
};
pub use extensions::Extensions;
pub use id::{ActorId, Addr, BadActorId, BadAddr};
pub use limits::{ChannelLimits, Window};
pub use nursery::{ActorOptions, ChildReport, Nursery, RunHandle};
pub use portal::Portal;
pub use registry::{Call, Context, Registry, ServerStream};
pub use root::{Root, RootBuilder, RootError};
pub use stream::{CalleeContext, CalleeStream, CallerContext, ReplyStream, StreamTx};
pub use teardown::{Reaped, Step, TeardownPolicy};
pub use transport::{Channel, FrameSink, FrameSource, Listener, PeerInfo, Transport};
pub use wire::{
    Blob, CallKind, ChildBoot, Cid, Frame, Msg, PROTOCOL_VERSION, RuntimeFlavor, SpawnSpec, Wire,
};

pub use runtime_vars::{self, RuntimeVars, VarsOverride};

/// Re-exported so implementors of the async traits need not depend on it themselves.
pub use async_trait::async_trait;

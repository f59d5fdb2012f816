//! # actor-core: brood's actor runtime
//!
//! Everything that makes a tree of actors work, whichever backend starts them and
//! whichever transport carries their bytes:
//!
//! - the [`Registry`] of functions an actor serves, and the [`ActorCx`] a handler gets;
//! - [`Root`] and [`Brood`] (a program's registry, backends and transports), [`Nursery`]
//!   (a scope whose children are all gone when it ends), [`Portal`] (calls, streams and
//!   contexts to another actor) and the stream and context ends ([`ReplyStream`],
//!   [`StreamTx`], [`CallerContext`], [`CalleeContext`]), which either side may cancel
//!   ([`ContextCancelled`]); [`BroadcastStream`] (one stream, many receivers) and
//!   [`SharedContext`] (one context shared by key among an actor's tasks);
//! - the [`teardown`] ladder and the typed errors a caller sees ([`FnError`],
//!   [`PortalError`], [`ChildError`], [`NurseryError`], [`RootError`], [`MsgTypeError`]).
//!
//! ## Who should depend on this crate
//!
//! Programs depend on the `brood` facade, which re-exports this crate's API at its top.
//! Depend on `actor-core` directly to pick backends and transports yourself (say
//! `actor-core` + `spawn-proc` + `ipc-uds`, with no Python). Backends and transports must
//! not depend on it: they implement `spawn-api`'s contract, and the runtime reaches them
//! only through it (a backend's child side gets an [`ActorEntry`](spawn_api::ActorEntry),
//! which [`Brood`] implements).
//!
//! ## A tree in a few lines
//!
//! ```no_run
//! use actor_core::{ActorOptions, Brood, Registry};
//!
//! actor_core::call!(Add: (i64, i64) => i64);
//!
//! # fn backends(b: actor_core::BroodBuilder) -> actor_core::BroodBuilder { b }
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

#![forbid(unsafe_code)]

mod actor;
mod broadcast;
mod brood;
mod child;
mod children;
mod conn;
mod direct;
pub mod discovery;
mod discovery_state;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
pub mod logging;
mod nursery;
mod portal;
mod registrar;
mod registry;
mod root;
mod shared;
mod stream;
pub mod supervision;
pub mod teardown;
mod unwind;

pub use actor::{ActorCx, CancelShield};
pub use broadcast::BroadcastStream;
pub use brood::{BACKEND_ENV, Brood, BroodBuilder, TRANSPORT_ENV};
pub use direct::ConnectError;
pub use discovery::{ActorInfo, ActorStatus, DiscoveryError};
pub use error::{
    CancelSide, ChildError, ContextCancelled, FnError, MsgSlot, MsgTypeError, NurseryError,
    PortalError,
};
pub use nursery::{ActorOptions, Nursery, RunHandle};
pub use portal::Portal;
pub use registry::Registry;
pub use root::{Root, RootBuilder, RootError};
pub use shared::{SHARED_CAPACITY, SharedContext};
pub use stream::{
    CalleeContext, CalleeStream, CallerContext, ContextSender, ReplyStream, StreamTx,
};
pub use teardown::{ChildReport, Reaped, Step};

// The contract's vocabulary that actor programs use, so they need not name `spawn-api`.
pub use spawn_api::runtime_vars::{self, RuntimeVars, VarsOverride, sandbox};
pub use spawn_api::{
    ActorId, Addr, Blob, CallFn, ChannelLimits, ChildExit, ChildStdio, ContextFn, ForeignError,
    RemoteError, RuntimeFlavor, SpawnError, StreamFn, TeardownPolicy, TransportError, TreeSecret,
    Wire, call, context, kinds, stream,
};

//! # brood: supervised trees of isolated actors
//!
//! A parent opens a *nursery*, spawns child actors into it through a pluggable spawn
//! backend, talks to them over a pluggable localhost transport, and the nursery
//! guarantees that when its scope ends every child has finished, been cancelled or been
//! reaped — with every error surfaced.
//!
//! This crate is the facade: the API a program uses sits at its top (from the runtime,
//! [`runtime`]), and each crate of the house is re-exported as a module, the backends and
//! transports behind features (all on by default). [`setup`] builds a [`Brood`] with every
//! compiled-in backend and transport.
//! ```no_run
//! use brood::{ActorOptions, Registry};
//!
//! brood::call!(Add: (i64, i64) => i64);
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let actors = brood::setup(Registry::new().call(Add, |_cx, (a, b)| async move { Ok(a + b) }));
//!     actors.enter(); // a spawned child runs its actor here and exits
//!
//!     let rt = tokio::runtime::Runtime::new()?;
//!     let sum = rt.block_on(actors.root().run(async |nursery| {
//!         let adder = nursery.start_actor("adder", ActorOptions::new()).await?;
//!         Ok(adder.run(Add, (40, 2)).await?)
//!     }))?;
//!     assert_eq!(sum, 42);
//!     Ok(())
//! }
//! ```
//!
//! | module | crate | what it is |
//! |---|---|---|
//! | [`runtime`] | `actor-core` | the actor runtime: registry, nursery, portal, streams and contexts, the teardown ladder (its API is also at the top of this crate) |
//! | [`api`] | `spawn-api` | the contract a backend or transport implements: traits, wire types, errors |
//! | [`vars`] | `runtime-vars` | the vars a parent builds for each child |
//! | `proc` (feature `proc`) | `spawn-proc` | children as re-executed processes |
//! | `fork` (feature `fork`) | `spawn-fork` | children forked from a single-threaded forkserver |
//! | `subint` (feature `subint`) | `spawn-subint` | children on threads with their own CPython sub-interpreter |
//! | `python` (feature `subint`) | — | the `python` service: run Python in any actor |
//! | `uds` (feature `uds`) | `ipc-uds` | frames over Unix sockets (the default transport) |
//! | `shm` (feature `shm`) | `ipc-shm` | frames through shared-memory rings, set up over a Unix control socket |
//!
//! ## Who should depend on this crate
//!
//! Programs. To leave Python out, turn the `subint` feature off (`default-features = false,
//! features = ["proc", "fork", "uds", "shm"]`). Authors of a backend or transport depend on
//! `spawn-api` alone.

#![forbid(unsafe_code)]

pub use actor_core::discovery;
pub use actor_core::supervision;
pub use actor_core::{
    ActorCx, ActorId, ActorInfo, ActorOptions, ActorStatus, Addr, BACKEND_ENV, Blob,
    BroadcastStream, Brood, BroodBuilder, CallFn, CalleeContext, CalleeStream, CallerContext,
    CancelShield, CancelSide, ChannelLimits, ChildError, ChildExit, ChildReport, ChildStdio,
    ConnectError, ContextCancelled, ContextFn, DiscoveryError, FnError, ForeignError, MsgSlot,
    MsgTypeError, Nursery, NurseryError, Portal, PortalError, Reaped, Registry, RemoteError,
    ReplyStream, Root, RootBuilder, RootError, RunHandle, RuntimeFlavor, RuntimeVars, SpawnError,
    Step, StreamFn, StreamTx, TRANSPORT_ENV, TeardownPolicy, TransportError, TreeSecret,
    VarsOverride, Wire, call, context, kinds, stream,
};
pub use spawn_api::TeardownHook;
/// Re-exported so a [`TeardownHook`] can be implemented without naming the crate.
pub use spawn_api::async_trait;

pub use actor_core as runtime;
pub use actor_core::sandbox;
pub use runtime_vars as vars;
pub use spawn_api as api;

#[cfg(feature = "shm")]
pub use ipc_shm::{self as shm, ShmTransport};
#[cfg(feature = "uds")]
pub use ipc_uds::{self as uds, UdsTransport};
#[cfg(feature = "fork")]
pub use spawn_fork::{self as fork, ForkBackend};
#[cfg(feature = "proc")]
pub use spawn_proc::{self as proc, ProcBackend};
#[cfg(feature = "subint")]
pub use spawn_subint::{self as subint, SubintBackend};

pub mod debug;
#[cfg(feature = "subint")]
pub mod python;

/// A [`BroodBuilder`] serving `registry` with every backend and transport compiled into
/// this build (features `proc`, `fork`, `subint`, `uds`, `shm`), the first of each being
/// the default: `proc`, and `uds` (a root picks `shm` with `BROOD_TRANSPORT=shm` or
/// [`RootBuilder::use_transport`], a child with [`ActorOptions::transport`]). With `subint`, the `python` service (`python.exec`, `python.eval`,
/// `python.call`) is added to the registry, so every actor can run Python.
///
/// # Panics
/// With `subint`, if `registry` already has functions named like the `python` service.
pub fn builder(registry: Registry) -> BroodBuilder {
    let registry = registry.merge(debug::service());
    #[cfg(feature = "subint")]
    let registry = registry.merge(python::service());
    #[allow(unused_mut)]
    let mut b = Brood::builder()
        .registry(registry)
        .hook(debug::DebugHook::default())
        .post_mortem(|cx, why| async move {
            if let Err(e) = debug::stop_here(&cx, &why).await {
                tracing::warn!(error = %e, "cannot stop in the debugger");
            }
        });
    #[cfg(feature = "proc")]
    {
        b = b.backend(ProcBackend::new());
    }
    #[cfg(feature = "fork")]
    {
        b = b.backend(ForkBackend::new());
    }
    #[cfg(feature = "subint")]
    {
        b = b.backend(SubintBackend::new());
    }
    #[cfg(feature = "uds")]
    {
        b = b.transport(UdsTransport::new());
    }
    #[cfg(feature = "shm")]
    {
        b = b.transport(ShmTransport::new());
    }
    b
}

/// [`builder`], built.
pub fn setup(registry: Registry) -> Brood {
    builder(registry).build()
}

//! # brood: supervised trees of isolated actors
//!
//! A parent opens a *nursery*, spawns child actors into it through a pluggable spawn
//! backend, talks to them over a pluggable localhost transport, and the nursery
//! guarantees that when its scope ends every child has finished, been cancelled or been
//! reaped — with every error surfaced.
//!
//! This crate is the facade: it re-exports the core ([`spawn_api`]) and, behind
//! features, the backends and transports (`proc` and `uds` are on by default).
//! [`setup`] builds a [`Brood`] with every compiled-in backend and transport.
//!
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
//! | crate | what it is |
//! |---|---|
//! | [`spawn_api`] | contracts, wire protocol, nursery, portal, teardown ladder |
//! | [`runtime_vars`] | the vars a parent builds for each child |
//! | `spawn_proc` (feature `proc`) | children as re-executed processes |
//! | `spawn_fork` (feature `fork`) | children forked from a single-threaded forkserver |
//! | `spawn_subint` (feature `subint`) | children on threads with their own CPython sub-interpreter, and the `python` service |
//! | `ipc_uds` (feature `uds`) | frames over Unix sockets |

#![warn(missing_docs)]

pub use spawn_api::*;
pub use spawn_api::{call, context, stream};

pub use runtime_vars;
pub use spawn_api;

#[cfg(feature = "uds")]
pub use ipc_uds::{self, UdsTransport};
#[cfg(feature = "fork")]
pub use spawn_fork::{self, ForkBackend};
#[cfg(feature = "proc")]
pub use spawn_proc::{self, ProcBackend};
#[cfg(feature = "subint")]
pub use spawn_subint::{self, SubintBackend};

/// A [`BroodBuilder`] serving `registry` with every backend and transport compiled into
/// this build (features `proc`, `fork`, `subint`, `uds`), the first of each being the
/// default. With `subint`, the `python` service (`python.exec`, `python.eval`,
/// `python.call`) is added to the registry, so every actor can run Python.
///
/// # Panics
/// With `subint`, if `registry` already has functions named like the `python` service.
pub fn builder(registry: Registry) -> BroodBuilder {
    #[cfg(feature = "subint")]
    let registry = registry.merge(spawn_subint::python_service());
    #[allow(unused_mut)]
    let mut b = Brood::builder().registry(registry);
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
    b
}

/// [`builder`], built.
pub fn setup(registry: Registry) -> Brood {
    builder(registry).build()
}
